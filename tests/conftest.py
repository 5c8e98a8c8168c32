"""Fixtures shared by every test module.

Which database: SQLite by default; PostgreSQL when ``TEST_DATABASE_URL`` names
a PostgreSQL server (``make test-postgres``). tests/databases.py creates and
drops the databases; the header of the test report says which one a run uses.

The schema is built the way production builds it, by running the Alembic
migrations (once per test run); each test then gets a fresh app on that
database, and the rows it wrote are deleted afterwards. On SQLite the database
is a file, not ``sqlite://`` in memory, so that a test can open a second
connection, as a second gunicorn worker would (see the race tests).

The fixtures (plain helpers such as ``add_user``, ``PASSWORD`` and
``AuthActions`` are imported from tests/helpers.py):

- ``database_url`` (session): the URL of the shared, migrated test database.
- ``make_app(**overrides)``: a new app on that database with config overrides;
  every row is deleted after the test. ``app``, ``client``, ``runner`` and
  ``auth`` (register/login/logout through the forms) are built on it.
- ``users``: admin and admin1, whose password is PASSWORD.
- ``fresh_database_url``: the URL of a new, *empty* database of the test's own
  (not migrated: run ``upgrade_database(url)``, or ``flask db upgrade`` in a
  subprocess), dropped after the test. For anything that must not share the
  test database: gunicorn (``servers.production_env(tmp_path, url)``), a
  ``flask`` command in a subprocess, a database a test breaks or deletes.
  Several in one test, or one for a whole module: the context manager
  ``databases.fresh_database(folder)``.
- ``migrated_database_url``: the same, its schema brought up to date.
- ``mail_server``: a real SMTP server whose mailbox holds what the app sent.
- ``restore_logging``: for modules that call init_logger/init_email
  (``pytestmark = pytest.mark.usefixtures("restore_logging")``): puts the
  process-global loggers and the mail outbox back after each test.
- ``databases.ON_POSTGRESQL``: for the few assertions that differ by backend;
  ``databases.bug_on_postgresql(reason)``: mark a test failing because of a
  known app bug on PostgreSQL (a strict xfail there, a normal test on SQLite).
"""

import logging
from collections.abc import Callable, Iterator

import pytest
from flask import Flask
from flask.logging import default_handler
from flask.testing import FlaskClient
from jinja2 import FileSystemBytecodeCache
from sqlalchemy import text

from app import create_app
from app.extensions import db
from app.mail import outbox
from app.reporting import COUNT_TASK, ERROR_HANDLER, LOG_HANDLER, SUMMARY_TASK
from tests.databases import (
    ON_POSTGRESQL,
    SHARED_DATABASE_NAME,
    check_server,
    create_database,
    describe,
    drop_database,
    fresh_database,
    upgrade_database,
)
from tests.helpers import AuthActions, add_user, config_for
from tests.servers import SMTPServer, smtp_server


def pytest_configure(config) -> None:
    check_server()


def pytest_report_header(config) -> str:
    return describe()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> Iterator[str]:
    """Create the test database once per run by running every migration; drop it at the end."""
    if ON_POSTGRESQL:
        # Named after the run, so that the report's header can say which one it is.
        url = create_database(SHARED_DATABASE_NAME)
        try:
            upgrade_database(url)
            yield url
        finally:
            drop_database(url)
    else:
        with fresh_database(tmp_path_factory.mktemp("db")) as url:
            upgrade_database(url)
            yield url


@pytest.fixture
def fresh_database_url(tmp_path) -> Iterator[str]:
    """A new, empty database for this test alone (see the module docstring)."""
    with fresh_database(tmp_path) as url:
        yield url


@pytest.fixture(scope="session")
def compiled_templates(tmp_path_factory) -> FileSystemBytecodeCache:
    """Templates compiled once for the whole run: every test builds a new app, and
    compiling its templates again was a third of the time of the in-process tests.
    Jinja checks each template's source against what it compiled, so a test that
    swaps a template in gets it compiled afresh."""
    return FileSystemBytecodeCache(str(tmp_path_factory.mktemp("templates")))


@pytest.fixture
def migrated_database_url(fresh_database_url) -> str:
    """A database of the test's own, its schema up to date (`flask db upgrade`)."""
    upgrade_database(fresh_database_url)
    return fresh_database_url


@pytest.fixture
def make_app(database_url, compiled_templates) -> Iterator[Callable[..., Flask]]:
    """Return a factory for apps on the test database, with config overrides.

    Afterwards every row written to the test database is deleted, children
    before parents, whichever of the apps wrote it; an app given a database of
    its own (SQLALCHEMY_DATABASE_URI=...) is left for its test to dispose of.
    """
    apps = []

    def factory(**overrides) -> Flask:
        app = create_app(config_for(database_url, **overrides))
        app.jinja_env.bytecode_cache = compiled_templates
        apps.append(app)
        return app

    yield factory

    on_test_database = [a for a in apps if a.config["SQLALCHEMY_DATABASE_URI"] == database_url]
    for app in apps:
        with app.app_context():
            db.session.remove()
            if on_test_database and app is on_test_database[0]:
                with db.engine.begin() as connection:
                    if connection.dialect.name == "postgresql":
                        # A lock left behind by a test (a transaction never
                        # ended) would make the DELETE wait forever: fail instead.
                        connection.execute(text("SET LOCAL lock_timeout = '10s'"))
                    for table in reversed(db.metadata.sorted_tables):
                        connection.execute(table.delete())
            db.engine.dispose()


@pytest.fixture
def app(make_app) -> Flask:
    return make_app()


@pytest.fixture
def client(app) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def users(app) -> dict[str, int]:
    """Two users, admin and admin1: the cast of the classic duplicate-username bug."""
    with app.app_context():
        return {name: add_user(name).id for name in ("admin", "admin1")}


@pytest.fixture
def auth(client) -> AuthActions:
    return AuthActions(client)


@pytest.fixture
def mail_server(tmp_path) -> Iterator[SMTPServer]:
    """A real SMTP server on 127.0.0.1, speaking STARTTLS: ``make_app(**mail_server.settings)``.

    Its mailbox holds what the app sent: ``mail_server.mailbox.wait_for(1)``.
    """
    with smtp_server("starttls", tmp_path) as server:
        yield server
        outbox.drain()  # hand queued mails over before the server goes away


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Leave the process-global loggers and the mail outbox as they were.

    init_logger and init_email attach handlers to loggers that outlive any app
    ("app", "blog.mail", "sqlalchemy"...), set their levels, and tune the one
    `outbox` of the process; left behind, one test's handler would write into
    the next test's log file, or mail its errors. Test modules that call them
    use this fixture.
    """
    ours = {LOG_HANDLER, ERROR_HANDLER}
    watched = ["app", "blog.mail", "sqlalchemy", "flask-limiter", "gunicorn.error", "some.library"]
    saved = {
        name: (logging.getLogger(name).level, logging.getLogger(name).propagate) for name in watched
    }
    had_default_handler = default_handler in logging.getLogger("app").handlers
    saved_outbox = (outbox.idle_interval, outbox.drain_timeout)
    yield
    outbox.drain()  # queued mails may still log through the handlers below
    for task in (SUMMARY_TASK, COUNT_TASK):  # forget this test's handler and store
        outbox.on_idle(task, lambda: None)
    outbox.idle_interval, outbox.drain_timeout = saved_outbox
    loggers = [logging.getLogger(), *map(logging.getLogger, logging.Logger.manager.loggerDict)]
    for logger in loggers:
        for handler in [h for h in logger.handlers if h.name in ours]:
            logger.removeHandler(handler)
            handler.close()  # LogFileHandler.close() survives a full disk
    for name, (level, propagate) in saved.items():
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).propagate = propagate
    if had_default_handler:
        logging.getLogger("app").addHandler(default_handler)

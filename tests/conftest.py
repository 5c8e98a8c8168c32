"""Fixtures shared by every test module.

Which database: SQLite by default; PostgreSQL when ``TEST_DATABASE_URL`` names
a PostgreSQL server (``make test-postgres``). tests/databases.py creates and
drops the databases; the header of the test report says which one a run uses.

The schema is built the way production builds it, by running the Alembic
migrations (once per test run); each test then gets a fresh app on that
database, and the rows it wrote are deleted afterwards. On SQLite the database
is a file, not ``sqlite://`` in memory, so that a test can open a second
connection, as a second gunicorn worker would (see the race tests).

Fixtures and helpers for new test modules:

- ``database_url`` (session): the URL of the shared, migrated test database.
- ``make_app(**overrides)``: a new app on that database with config overrides;
  every row is deleted after the test. ``app``, ``client``, ``runner`` and
  ``auth`` (register/login/logout through the forms) are built on it.
- ``users``: admin and admin1, whose password is PASSWORD; ``add_user`` and
  ``add_posts`` insert more inside an app context.
- ``fresh_database_url``: the URL of a new, *empty* database of the test's own
  (not migrated: run ``upgrade_database(url)``, or ``flask db upgrade`` in a
  subprocess), dropped after the test. For anything that must not share the
  test database: gunicorn (``servers.production_env(tmp_path, url)``), a
  ``flask`` command in a subprocess, a database a test breaks or deletes.
  Several in one test, or one for a whole module: the context manager
  ``databases.fresh_database(folder)``.
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
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from databases import (
    MIGRATIONS,
    ON_POSTGRESQL,
    SHARED_DATABASE_NAME,
    check_server,
    create_database,
    describe,
    drop_database,
    fresh_database,
    upgrade_database,
)
from flask import Flask
from flask.logging import default_handler
from flask.testing import FlaskClient
from flask_migrate import upgrade
from servers import SMTPServer, smtp_server
from sqlalchemy import text
from werkzeug.security import generate_password_hash

from app import create_app
from app.extensions import db
from app.mail import outbox
from app.models import Post, User, now_utc
from app.reporting import COUNT_TASK, ERROR_HANDLER, LOG_HANDLER, SUMMARY_TASK
from config import TestingConfig

PASSWORD = "correct-horse-battery"
# Hashed once for the whole run: hashing is slow on purpose (flaskr does the same).
PASSWORD_HASH = generate_password_hash(PASSWORD, method=TestingConfig.PASSWORD_HASH_METHOD)


def pytest_configure(config) -> None:
    check_server()


def pytest_report_header(config) -> str:
    return describe()


def config_for(database_url: str, **overrides) -> type[TestingConfig]:
    """A TestingConfig subclass pointing at `database_url`, with `overrides` applied."""
    return type(
        "TestConfig", (TestingConfig,), {"SQLALCHEMY_DATABASE_URI": database_url, **overrides}
    )


@contextmanager
def app_at_revision(folder: Path, revision: str) -> Iterator[Flask]:
    """An app on a new database migrated only up to `revision`: to test the next
    migration against rows written before it."""
    with fresh_database(folder, "old") as url:
        app = create_app(config_for(url))
        with app.app_context():
            upgrade(directory=str(MIGRATIONS), revision=revision)
        yield app
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


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


@pytest.fixture
def make_app(database_url) -> Iterator[Callable[..., Flask]]:
    """Return a factory for apps on the test database, with config overrides.

    Afterwards every row written to the test database is deleted, children
    before parents, whichever of the apps wrote it; an app given a database of
    its own (SQLALCHEMY_DATABASE_URI=...) is left for its test to dispose of.
    """
    apps = []

    def factory(**overrides) -> Flask:
        app = create_app(config_for(database_url, **overrides))
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


def add_user(username: str, email: str | None = None, about_me: str = "") -> User:
    """Insert a user whose password is PASSWORD (call inside an app context)."""
    user = User(
        username=username,
        email=email or f"{username}@example.com",
        password_hash=PASSWORD_HASH,
        about_me=about_me,
    )
    db.session.add(user)
    db.session.commit()
    return user


def add_posts(user: User, count: int) -> list[Post]:
    """Give `user` `count` posts, numbered 1..count, the last one the newest."""
    start = now_utc() - timedelta(hours=count)
    posts = [
        Post(body=f"post {n} by {user.username}", author=user, timestamp=start + timedelta(hours=n))
        for n in range(1, count + 1)
    ]
    db.session.add_all(posts)
    db.session.commit()
    return posts


@pytest.fixture
def users(app) -> dict[str, int]:
    """Two users, admin and admin1: the cast of the classic duplicate-username bug."""
    with app.app_context():
        return {name: add_user(name).id for name in ("admin", "admin1")}


class AuthActions:
    """Register, log in and log out through the real forms."""

    def __init__(self, client: FlaskClient):
        self._client = client

    def register(self, username="alice", email=None, password=PASSWORD, password2=None):
        return self._client.post(
            "/auth/register",
            data={
                "username": username,
                "email": email or f"{username}@example.com",
                "password": password,
                "password2": password if password2 is None else password2,
            },
        )

    def login(self, username="admin", password=PASSWORD, next_url=None, remember=False):
        url = "/auth/login" if next_url is None else f"/auth/login?next={next_url}"
        data = {"username": username, "password": password}
        if remember:
            data["remember_me"] = "y"
        return self._client.post(url, data=data)

    def logout(self):
        return self._client.post("/auth/logout")


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

"""The databases the tests run on: SQLite files by default, PostgreSQL when
``TEST_DATABASE_URL`` is set.

``TEST_DATABASE_URL`` names a PostgreSQL *server*, through any database on it
that we may connect to, for example::

    TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres

The tests never write into that database. They create databases of their own
next to it, named ``blog_test_<run>`` (the one most tests share) and
``blog_test_<run>_<n>`` (one per server or command that needs a database of
its own), and drop them when they are done, even when a test fails. ``<run>``
is random and the same for every database of one test run, so two runs on the
same server never meet. A run killed with SIGKILL cannot clean up; list what
it left with ``psql -Atc "select datname from pg_database where datname like
'blog_test_%'"``.

Every PostgreSQL test database uses a time zone other than UTC (TEST_TIMEZONE)
on purpose: a server's time zone is the one its machine had when it was
installed, often the local time, and code that only works when the database
happens to be on UTC should fail here rather than in production.
"""

import itertools
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask_migrate import upgrade
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from app import create_app
from app.extensions import db
from config import TestingConfig, database_url

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

# The server named by TEST_DATABASE_URL, normalised the way the app normalises
# DATABASE_URL (postgres:// and postgresql:// mean the psycopg 3 driver); None: SQLite.
_GIVEN_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
SERVER_URL = database_url(_GIVEN_URL) if _GIVEN_URL else None
ON_POSTGRESQL = SERVER_URL is not None

NAME_PREFIX = "blog_test_"
RUN_ID = secrets.token_hex(4)
SHARED_DATABASE_NAME = f"{NAME_PREFIX}{RUN_ID}"  # the session's database, on PostgreSQL
TEST_TIMEZONE = "Asia/Shanghai"  # UTC+8 all year: no daylight saving time to trip on

_numbers = itertools.count(1)


def check_server() -> None:
    """Refuse a TEST_DATABASE_URL we can't use, once, before any test runs.

    Otherwise every test that needs the database would fail with the same
    long traceback.
    """
    if not ON_POSTGRESQL:
        return
    backend = make_url(SERVER_URL).get_backend_name()
    if backend != "postgresql":
        raise pytest.UsageError(
            f"TEST_DATABASE_URL is a {backend} URL, not a PostgreSQL one. Unset it to run "
            "on SQLite, or name a server: postgresql://postgres@127.0.0.1:5432/postgres"
        )
    try:
        with _server_connection() as connection:
            version = connection.dialect.server_version_info
    except OperationalError as error:
        raise pytest.UsageError(f"TEST_DATABASE_URL: cannot connect: {error.orig}") from None
    if version < (13,):
        # DROP DATABASE ... WITH (FORCE) appeared in PostgreSQL 13.
        raise pytest.UsageError(f"TEST_DATABASE_URL: PostgreSQL {version} is too old; 13+.")


def describe() -> str:
    """One line for the test report's header: which database this run uses."""
    if not ON_POSTGRESQL:
        return "database: sqlite (a new file per run)"
    server = make_url(SERVER_URL)
    return (
        f"database: postgresql ({SHARED_DATABASE_NAME} on {server.host}:{server.port or 5432}, "
        f"time zone {TEST_TIMEZONE}; dropped at the end)"
    )


@contextmanager
def _server_connection():
    """A connection to the server's own database, outside any transaction.

    CREATE DATABASE and DROP DATABASE refuse to run inside a transaction, so
    the connection is in AUTOCOMMIT mode. NullPool: nothing stays connected.
    """
    engine = create_engine(SERVER_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()


def create_database(name: str | None = None) -> str:
    """Create an empty PostgreSQL database on the test server; return its URL."""
    name = name or f"{NAME_PREFIX}{RUN_ID}_{next(_numbers)}"
    with _server_connection() as connection:
        # template0 and UTF8: a clean, Unicode database whatever template1 holds.
        # Names can't be bound parameters, so they are quoted; ours are [a-z0-9_].
        connection.execute(text(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'"))
        connection.execute(text(f"ALTER DATABASE \"{name}\" SET timezone TO '{TEST_TIMEZONE}'"))
    return make_url(SERVER_URL).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop a database made by create_database, even while something is connected to it.

    WITH (FORCE) (PostgreSQL 13+) first ends every session still connected:
    a pool left open, a gunicorn worker that didn't exit. Dispose your own
    engines first all the same, or their next use fails on a killed connection.
    """
    name = make_url(url).database
    assert name.startswith(NAME_PREFIX), f"not a test database: {name}"
    with _server_connection() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def fresh_database(folder: Path, name: str = "blog") -> Iterator[str]:
    """Yield the URL of a new, empty database; drop it when the block ends.

    SQLite: the file ``folder/<name>.sqlite`` (pytest deletes its temporary
    folders itself). PostgreSQL: a new database on the TEST_DATABASE_URL
    server (`name` is not used: every database gets a unique name).
    """
    if not ON_POSTGRESQL:
        yield f"sqlite:///{folder / name}.sqlite"
        return
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


def upgrade_database(url: str, revision: str = "head") -> None:
    """Run the migrations on the database at `url`, as `flask db upgrade` does."""
    config = type("UpgradeConfig", (TestingConfig,), {"SQLALCHEMY_DATABASE_URI": url})
    app = create_app(config)
    with app.app_context():
        upgrade(directory=str(MIGRATIONS), revision=revision)
        db.engine.dispose()


def bug_on_postgresql(reason: str) -> pytest.MarkDecorator:
    """Mark a test that fails on PostgreSQL because of a known bug in the app.

    strict=True: once the bug is fixed, the test passes, the run fails with
    XPASS, and whoever fixed it removes the mark.
    """
    return pytest.mark.xfail(ON_POSTGRESQL, reason=f"BUG on PostgreSQL: {reason}", strict=True)

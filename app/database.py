"""How the app talks to its database when things go wrong: timeouts,
reconnecting, telling an outage from a bug, and SQLite settings for several
gunicorn workers.

Flask-SQLAlchemy creates the engine from ``SQLALCHEMY_ENGINE_OPTIONS``;
`configure_database` fills in what a production app needs before it does.
"""

import sqlite3

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import OperationalError

# How long SQLite waits for another worker's write lock before giving up
# with "database is locked", in milliseconds.
SQLITE_BUSY_TIMEOUT_MS = 5000

# PostgreSQL error classes (SQLSTATE) that mean "the server can't serve you
# now", not "your query is wrong": connection exceptions (08xxx), the server
# shutting down or starting up (57P01-57P03), too many connections (53300).
UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")
# What SQLite says when the file is busy or can't be opened.
SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file")


def configure_database(app: Flask) -> None:
    """Add timeouts and reconnection to the engine options (call before db.init_app),
    and tune every SQLite connection (`tune_sqlite`).

    - ``pool_pre_ping``: before lending out a pooled connection, check that it
      still works. After the database restarts, every pooled connection is
      dead; without the ping each one would fail one request, with it the app
      recovers on its own.
    - a connect timeout: when the database host is unreachable, fail within
      seconds (and show the "temporarily unavailable" page) instead of
      hanging the worker until gunicorn kills it.
    - TCP keepalives and a user timeout: the connect timeout covers only new
      connections; a pooled one to a host that vanished would otherwise wait
      for TCP to give up, which takes minutes.
    """
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    timeout = app.config["DATABASE_CONNECT_TIMEOUT"]
    options: dict = {"pool_pre_ping": True}
    if url.get_backend_name() == "postgresql":
        options["connect_args"] = {
            "connect_timeout": timeout,
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": timeout * 1000,  # milliseconds
        }
    # Settings given explicitly win over these defaults.
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = options | app.config.get(
        "SQLALCHEMY_ENGINE_OPTIONS", {}
    )
    # On the Engine class, not this app's engine, which doesn't exist yet:
    # every engine then gets it (others than SQLite's are left alone). Once
    # per process: listening again would run it twice on every connection,
    # and a process can create many apps (the tests do).
    if not event.contains(Engine, "connect", tune_sqlite):
        event.listen(Engine, "connect", tune_sqlite)


def tune_sqlite(dbapi_connection, connection_record) -> None:
    """Make SQLite fit for several processes at once, on every new connection
    (`configure_database` makes it a "connect" listener).

    WAL (write-ahead log) lets readers go on while one process writes, where
    the default journal blocks everyone; the busy timeout makes a writer wait
    for the lock instead of failing at once with "database is locked".
    """
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # stays "memory" for in-memory databases
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def is_unavailable(error: OperationalError) -> bool:
    """Tell an outage (retry later: 503) from a bug that happens to be an
    OperationalError too, such as a missing table (a 500, with its traceback).
    """
    if error.connection_invalidated:  # SQLAlchemy saw the connection drop
        return True
    cause = error.orig
    if isinstance(cause, sqlite3.OperationalError):
        return str(cause).startswith(SQLITE_UNAVAILABLE)
    # psycopg has no SQLSTATE when it never reached a server (refused, timed out).
    sqlstate = getattr(cause, "sqlstate", None)
    return sqlstate is None or sqlstate.startswith(UNAVAILABLE_SQLSTATES)


def database_failure(error: Exception) -> str:
    """The first line of what the database driver said went wrong."""
    cause = getattr(error, "orig", None) or error
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0]

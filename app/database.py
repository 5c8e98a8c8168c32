"""How the app talks to its database when things go wrong: timeouts,
reconnecting, telling an outage from a bug, and SQLite settings for several
gunicorn workers; and how the pages that only read spare PostgreSQL the
transaction around them (`reads_only`).

Flask-SQLAlchemy creates the engine from ``SQLALCHEMY_ENGINE_OPTIONS``;
`configure_database` fills in what a production app needs before it does.
"""

import select
import sqlite3
from collections.abc import Callable
from typing import TypeVar

from flask import Flask, current_app, request
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DisconnectionError, OperationalError

View = TypeVar("View", bound=Callable)

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

    - Reconnecting after the database restarted: every pooled connection is
      dead then, and each would fail one request. On PostgreSQL a connection
      is checked as it leaves the pool (`drop_closed_connection`), which costs
      no round trip; elsewhere by ``pool_pre_ping``, a trivial statement
      first (free on SQLite, a file, but on a server one more round trip on
      every request, which is why PostgreSQL doesn't use it).
    - a connect timeout: when the database host is unreachable, fail within
      seconds (and show the "temporarily unavailable" page) instead of
      hanging the worker until gunicorn kills it.
    - TCP keepalives and a user timeout: the connect timeout covers only new
      connections; a pooled one to a host that vanished would otherwise wait
      for TCP to give up, which takes minutes.
    """
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"])
    timeout = app.config["DATABASE_CONNECT_TIMEOUT"]
    on_postgresql = url.get_backend_name() == "postgresql"
    options: dict = {"pool_pre_ping": not on_postgresql}
    if on_postgresql:
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
    # every engine then gets them (each leaves other databases alone). Once
    # per process: listening again would run them twice on every connection,
    # and a process can create many apps (the tests do).
    for name, listener in (("connect", tune_sqlite), ("checkout", drop_closed_connection)):
        if not event.contains(Engine, name, listener):
            event.listen(Engine, name, listener)


def drop_closed_connection(dbapi_connection, connection_record, connection_proxy) -> None:
    """Refuse a pooled PostgreSQL connection the server has closed (a "checkout" listener).

    A connection that waits in the pool has nothing to read, unless the
    server hung up on it: a restart sends a last message and closes it, which
    makes the socket readable. Looking costs a system call, not a round
    trip. SQLAlchemy takes the DisconnectionError as "throw this one away and
    connect again", so the request goes on with a fresh connection.
    """
    fileno = getattr(dbapi_connection, "fileno", None)
    if fileno is None:  # SQLite: no socket, and pool_pre_ping instead
        return
    if dbapi_connection.closed:
        raise DisconnectionError("the connection was closed")
    if has_something_to_read(fileno()):
        raise DisconnectionError("the database closed the connection while it was in the pool")


def has_something_to_read(fileno: int) -> bool:
    """Whether a socket has data or a hang-up waiting, without waiting for either.

    poll() where there is one: select() refuses a descriptor numbered 1024 or
    more (ValueError), which a worker holding many files or sockets reaches,
    and then every checkout would fail. Windows has no poll(); its select()
    has no such limit.
    """
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fileno, select.POLLIN)
        return bool(poller.poll(0))  # POLLHUP and POLLERR come back unasked
    readable, _, _ = select.select([fileno], [], [], 0)
    return bool(readable)


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


def reads_only(view: View) -> View:
    """Mark a view whose GET only reads, for `read_outside_a_transaction`."""
    view.reads_only = True  # type: ignore[attr-defined]
    return view


def read_outside_a_transaction() -> None:
    """On PostgreSQL, run a reading page's statements without a transaction
    (a before-request function, registered ahead of any that queries).

    Inside one, each request pays two round trips that buy a page nothing:
    BEGIN before its first statement and ROLLBACK at the end. The ROLLBACK
    costs more than its trip: psycopg forgets its prepared statements at
    every rollback, so PostgreSQL would plan each statement afresh every
    time. PostgreSQL's default isolation, READ COMMITTED, gives each
    statement a snapshot of its own inside a transaction too, so the page
    reads exactly what it read before. A write such as `last_seen` is a
    single statement and commits by itself; after a commit the session is
    back to ordinary transactions. Views that write are never marked.
    """
    view = current_app.view_functions.get(request.endpoint or "")
    if request.method != "GET" or not getattr(view, "reads_only", False):
        return
    # Flask-SQLAlchemy's `db`, found through the app: app.extensions imports
    # this module, which can't import it back.
    db = current_app.extensions["sqlalchemy"]
    if db.engine.dialect.name == "postgresql":
        db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})

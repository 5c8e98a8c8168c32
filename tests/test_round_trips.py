"""What each request costs in trips to PostgreSQL (app/database.py).

- The listing pages (`reads_only`) run their statements in autocommit mode
  on PostgreSQL: no BEGIN before them, no ROLLBACK after, and psycopg keeps
  its prepared statements from one request to the next. Views that write
  keep their transactions.
- A pooled connection is checked as it leaves the pool without a statement
  (`drop_closed_connection`): one the server closed is replaced, and the
  request never sees it.

Both are PostgreSQL's: on SQLite a read sends no BEGIN anyway, and the pool
keeps `pool_pre_ping`, which costs nothing there.
"""

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, text
from sqlalchemy.pool import NullPool

from app.extensions import db
from app.models import User
from tests.databases import ON_POSTGRESQL
from tests.helpers import add_posts

on_postgresql_only = pytest.mark.skipif(
    not ON_POSTGRESQL, reason="PostgreSQL's round trips: run with TEST_DATABASE_URL"
)


@contextmanager
def autocommit_per_statement(app: Flask) -> Iterator[list[tuple[str, bool]]]:
    """For each statement the app runs in the block: its first word, and whether
    its connection was in autocommit mode (no transaction around it)."""
    seen: list[tuple[str, bool]] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement.split()[0].upper(), conn.connection.dbapi_connection.autocommit))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", note)


@on_postgresql_only
@pytest.mark.parametrize("path", ["/", "/explore", "/user/admin", "/search?q=post"])
def test_a_listing_page_reads_without_a_transaction(app, client, users, auth, path):
    with app.app_context():
        add_posts(db.session.get_one(User, users["admin"]), 3)
    auth.login()
    client.get("/explore")  # last_seen written: the pages below only read
    with autocommit_per_statement(app) as seen:
        response = client.get(path)
    assert response.status_code == 200
    assert seen, "no statement ran"
    assert all(autocommit for _, autocommit in seen), seen


@on_postgresql_only
def test_a_view_that_writes_keeps_its_transaction(app, client, users, auth):
    auth.login()
    with autocommit_per_statement(app) as seen:
        response = client.post("/", data={"post": "Inside a transaction"})
    assert response.status_code == 302
    inserts = [autocommit for word, autocommit in seen if word == "INSERT"]
    assert inserts == [False]


def backend_pid(app: Flask) -> int:
    """The process id of the server backend behind the app's pooled connection."""
    with app.app_context():
        return db.session.execute(text("SELECT pg_backend_pid()")).scalar_one()


def end_pooled_connection(app: Flask) -> int:
    """End the server side of the app's pooled connection, as a restart does, and
    wait until it is gone; return its backend's process id."""
    pooled_pid = backend_pid(app)  # the connection is back in the pool after this
    with app.app_context():
        # From a connection of its own, outside the app's pool.
        outsider = create_engine(db.engine.url, poolclass=NullPool)
    with outsider.connect() as other:
        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pooled_pid})
        # pg_terminate_backend only signals: wait until the backend has exited and
        # closed its end, as every backend has by the time a restarted server answers.
        gone = text("SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = :pid)")
        for _ in range(500):
            if other.execute(gone, {"pid": pooled_pid}).scalar_one():
                break
            time.sleep(0.01)
    outsider.dispose()
    return pooled_pid


@on_postgresql_only
def test_a_connection_the_server_closed_is_replaced_unseen(app, client, users):
    """The server ends the pooled connection (as a restart does): the next request
    gets a new one, and a page, not an error."""
    assert client.get("/explore").status_code == 200
    pooled_pid = end_pooled_connection(app)
    response = client.get("/explore")
    assert response.status_code == 200
    assert backend_pid(app) != pooled_pid


@contextmanager
def files_open(count: int) -> Iterator[None]:
    """Hold `count` more files open, so that the next socket's number is above them."""
    descriptors = [os.open(os.devnull, os.O_RDONLY) for _ in range(count)]
    try:
        yield
    finally:
        for descriptor in descriptors:
            os.close(descriptor)


@on_postgresql_only
def test_a_connection_numbered_past_select_s_limit_is_checked_too(app, client, users):
    """A worker holding over a thousand files: its database socket is numbered
    past 1023, which select() refuses. Pages still load, and a connection the
    server closed is still replaced."""
    # Unix's: Windows' select() has no such limit, and no `resource` module.
    resource = pytest.importorskip("resource")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        if hard != resource.RLIM_INFINITY and hard < 1200:
            pytest.skip(f"this process may open {hard} files at most")
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    try:
        with app.app_context():
            db.engine.dispose()  # the next connection is made with the files below open
        with files_open(1100):
            assert client.get("/explore").status_code == 200
            with app.app_context():
                socket_number = db.session.connection().connection.dbapi_connection.fileno()
                db.session.remove()
            assert socket_number > 1023
            assert client.get("/explore").status_code == 200  # checked out again
            pooled_pid = end_pooled_connection(app)
            assert client.get("/explore").status_code == 200
            assert backend_pid(app) != pooled_pid
    finally:
        with app.app_context():
            db.engine.dispose()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_only_sqlite_pings_its_pooled_connections(app):
    """A ping is a round trip on PostgreSQL, and nothing on SQLite (a file)."""
    with app.app_context():
        assert db.engine.pool._pre_ping is (not ON_POSTGRESQL)

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


@on_postgresql_only
def test_a_connection_the_server_closed_is_replaced_unseen(app, client, users):
    """The server ends the pooled connection (as a restart does): the next request
    gets a new one, and a page, not an error."""
    assert client.get("/explore").status_code == 200
    with app.app_context():
        pooled_pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        db.session.remove()
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
    response = client.get("/explore")
    assert response.status_code == 200
    with app.app_context():
        new_pid = db.session.execute(text("SELECT pg_backend_pid()")).scalar_one()
    assert new_pid != pooled_pid


def test_only_sqlite_pings_its_pooled_connections(app):
    """A ping is a round trip on PostgreSQL, and nothing on SQLite (a file)."""
    with app.app_context():
        assert db.engine.pool._pre_ping is (not ON_POSTGRESQL)

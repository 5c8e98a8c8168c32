"""Count the SQL statements that a piece of code sends to the database.

A page that runs one query per post (for its author, its avatar, its like
count) is fast with ten rows in a test database and slow with real data; the
number of statements shows it long before a stopwatch does, and it doesn't
depend on the machine. bench/pages.py prints the count for every page it
loads; a test can assert a budget with the same helpers::

    with count_statements(engine) as statements:
        client.get("/explore")
    assert len(statements) <= 4, "\\n".join(statements)

What is counted: every statement SQLAlchemy hands to the driver's cursor,
that is every SELECT, INSERT, UPDATE and DELETE the app runs. What is not:
BEGIN, COMMIT and ROLLBACK (the drivers send those themselves, not through a
cursor), the "SELECT 1" of ``pool_pre_ping`` on checking an SQLite connection
out of the pool, and the PRAGMAs app/database.py runs on each new SQLite connection.
Those are one per request or per connection, never one per row, so they can't
hide the problem this count is for.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import event
from sqlalchemy.engine import Engine

from app.extensions import db


@contextmanager
def count_statements(engine: Engine) -> Iterator[list[str]]:
    """Collect the SQL of every statement `engine` runs inside the block.

    Yields a list that fills as statements run: ``len()`` is the count, and
    the statements themselves say where a surprising count comes from.
    """
    statements: list[str] = []

    # before_cursor_execute fires once per statement, on every connection of
    # the engine, whichever session or pool connection the request uses.
    def record(connection, cursor, statement, parameters, context, executemany) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        # Listeners live as long as the engine: leave none behind to count
        # (and slow down) everything that runs afterwards.
        event.remove(engine, "before_cursor_execute", record)


def statements_for_get(app: Flask, client: FlaskClient, url: str) -> tuple[int, list[str]]:
    """GET `url` with `client`; return the response status and the statements it ran."""
    with app.app_context():
        engine = db.engine  # Flask-SQLAlchemy makes one engine per app, shared by requests
    with count_statements(engine) as statements:
        response = client.get(url)
    return response.status_code, statements

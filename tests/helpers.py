"""Helpers the test modules share: import them from here (conftest.py holds only fixtures).

- ``PASSWORD`` (and its hash, made once): every test user's password.
- ``config_for(url, **overrides)``: a TestingConfig on another database.
- ``app_at_revision(folder, revision)``: an app whose database stops at an
  older migration, to test the next one against the rows it finds.
- ``add_user`` and ``add_posts``: insert rows inside an app context.
- ``AuthActions``: register, log in and log out through the real forms.
- ``source_line(path, start)``: where a line is, for assertions on tracebacks.
- ``outbox_held()``: the mail outbox kept busy for a block, so mails queued in it wait.

Reading pages is in tests/pages.py; servers and processes (gunicorn, SMTP,
Redis, a browser over HTTP) in tests/servers.py; databases in tests/databases.py.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from werkzeug.security import generate_password_hash

from app import create_app
from app.extensions import db
from app.mail import outbox
from app.models import Post, User, now_utc
from config import TestingConfig
from tests.databases import MIGRATIONS, fresh_database

PASSWORD = "correct-horse-battery"
# Hashed once for the whole run: hashing is slow on purpose (flaskr does the same).
PASSWORD_HASH = generate_password_hash(PASSWORD, method=TestingConfig.PASSWORD_HASH_METHOD)


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


def source_line(path: str | Path, start: str) -> int:
    """The number of the one line of `path` that begins with `start` (indentation aside)."""
    lines = Path(path).read_text().splitlines()
    numbers = [n for n, line in enumerate(lines, 1) if line.strip().startswith(start)]
    assert len(numbers) == 1, f"{start!r} begins lines {numbers} of {path}"
    return numbers[0]


@contextmanager
def outbox_held() -> Iterator[None]:
    """Keep the outbox busy until the block ends: mails queued inside wait."""
    release, started = threading.Event(), threading.Event()

    def hold():
        started.set()
        release.wait(30)

    outbox.submit(hold)
    assert started.wait(30), "the outbox did not start"
    try:
        yield
    finally:
        release.set()

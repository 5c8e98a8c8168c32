"""Fixtures shared by every test module.

The schema is built the way production builds it, by running the Alembic
migrations (once per test run); each test then gets a fresh app on that
database, and the rows it wrote are deleted afterwards. The database is a
file, not ``sqlite://`` in memory, so that a test can open a second
connection, as a second gunicorn worker would (see the race tests).
"""

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from werkzeug.security import generate_password_hash

from app import create_app
from app.extensions import db
from app.models import Post, User, now_utc
from config import TestingConfig

PASSWORD = "correct-horse-battery"
# Hashed once for the whole run: hashing is slow on purpose (flaskr does the same).
PASSWORD_HASH = generate_password_hash(PASSWORD, method=TestingConfig.PASSWORD_HASH_METHOD)


def config_for(database_url: str, **overrides) -> type[TestingConfig]:
    """A TestingConfig subclass pointing at `database_url`, with `overrides` applied."""
    return type(
        "TestConfig", (TestingConfig,), {"SQLALCHEMY_DATABASE_URI": database_url, **overrides}
    )


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    """Create the test database once per run by running every migration."""
    path = tmp_path_factory.mktemp("db") / "blog.sqlite"
    url = f"sqlite:///{path}"
    app = create_app(config_for(url))
    with app.app_context():
        upgrade(directory=str(Path(__file__).parent.parent / "migrations"))
        db.engine.dispose()
    return url


@pytest.fixture
def make_app(database_url) -> Iterator[Callable[..., Flask]]:
    """Return a factory for apps on the test database, with config overrides.

    Every row the test wrote is deleted afterwards, children before parents.
    """
    apps = []

    def factory(**overrides) -> Flask:
        app = create_app(config_for(database_url, **overrides))
        apps.append(app)
        return app

    yield factory

    for app in apps:
        with app.app_context():
            db.session.remove()
            if app is apps[0]:
                with db.engine.begin() as connection:
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

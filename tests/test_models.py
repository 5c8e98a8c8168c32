"""The models and the schema under them: the migrations build exactly what the
models describe, the database enforces the rules the forms also check, and the
queries the pages use return the right rows in the right number of statements.
"""

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import PASSWORD, add_posts, add_user
from flask import current_app
from sqlalchemy import Column, MetaData, String, event, func, select, text
from sqlalchemy.exc import IntegrityError
from werkzeug.security import generate_password_hash

from app.extensions import db
from app.models import LAST_SEEN_RESOLUTION, Post, User, followers
from config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

# SQLite cannot reflect indexes on expressions such as lower(username), so
# autogenerate skips these two (with a warning) instead of comparing them.
# test_expression_indexes_exist_in_the_database checks them another way.
EXPRESSION_INDEXES = {"uq_user_username_lower", "uq_user_email_lower"}


@contextmanager
def count_statements() -> Iterator[list[str]]:
    """Collect the SQL statements sent to the database inside the block."""
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def follower_rows() -> list[tuple[int, int]]:
    return db.session.execute(select(followers.c.follower_id, followers.c.followed_id)).all()


def compare_with_database(metadata: MetaData) -> tuple[list, set[str]]:
    """Autogenerate's diff between `metadata` and the migrated database, with the
    settings Flask-Migrate gives migrations/env.py, and the expression indexes it
    had to skip."""
    opts = {"compare_type": current_app.extensions["migrate"].configure_args["compare_type"]}
    with db.engine.connect() as connection, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diff = compare_metadata(MigrationContext.configure(connection, opts=opts), metadata)
    skipped = set()
    for warning in caught:
        message = str(warning.message)
        name = next((name for name in EXPRESSION_INDEXES if name in message), None)
        # Anything other than the known expression-index skip is a real problem.
        assert name is not None and "expression-based index" in message, message
        skipped.add(name)
    return diff, skipped


# --- The migrations match the models -------------------------------------------------


def test_migrations_have_a_single_head():
    """Two heads (from two branches each adding a migration) would stop `flask db upgrade`."""
    assert len(ScriptDirectory(str(MIGRATIONS)).get_heads()) == 1


def test_test_database_is_at_the_head(app):
    head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
    with app.app_context(), db.engine.connect() as connection:
        assert MigrationContext.configure(connection).get_current_revision() == head


def test_migrations_match_the_models(app):
    """`flask db migrate` would find nothing to do: the models and migrations agree."""
    with app.app_context():
        diff, skipped = compare_with_database(db.metadata)
    assert diff == []
    assert skipped == EXPRESSION_INDEXES


def test_the_comparison_notices_a_column_missing_from_the_migrations(app):
    """The check above can fail: a model column without a migration shows up in the diff."""
    metadata = MetaData()
    for table in db.metadata.sorted_tables:
        table.to_metadata(metadata)
    metadata.tables["user"].append_column(Column("nickname", String(20)))
    with app.app_context():
        diff, _ = compare_with_database(metadata)
    assert [(op[0], op[2], op[3].name) for op in diff] == [("add_column", "user", "nickname")]


@pytest.mark.parametrize(
    ("name", "expression"),
    [("uq_user_username_lower", "lower(username)"), ("uq_user_email_lower", "lower(email)")],
)
def test_expression_indexes_exist_in_the_database(app, name, expression):
    """What autogenerate cannot compare on SQLite, read from sqlite_master instead."""
    with app.app_context():
        sql = db.session.scalar(
            text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"),
            {"name": name},
        )
    assert sql is not None, f"index {name} is missing"
    assert sql.upper().startswith("CREATE UNIQUE INDEX")
    assert expression in sql


# --- Case-insensitive uniqueness, enforced by the database ---------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"username": "admin"}, {"username": "Admin"}),
        ({"username": "admin"}, {"username": "ADMIN"}),
        ({"username": "carol", "email": "a@x.com"}, {"username": "dave", "email": "A@x.com"}),
    ],
    ids=["username", "username-upper", "email"],
)
def test_database_refuses_names_differing_only_in_case(app, first, second):
    with app.app_context():
        add_user(**first)
        with pytest.raises(IntegrityError, match="UNIQUE constraint failed"):
            add_user(**second)
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(User)) == 1


def test_by_username_and_by_email_ignore_case(app):
    with app.app_context():
        user_id = add_user("Alice", email="Alice@Example.com").id
        assert db.session.scalar(User.by_username("aLICE")).id == user_id
        assert db.session.scalar(User.by_email("alice@example.COM")).id == user_id
        assert db.session.scalar(User.by_username("alic")) is None


# --- Passwords -----------------------------------------------------------------------


def test_set_password_stores_a_hash_not_the_password(app):
    with app.app_context():
        user = User(username="alice", email="alice@example.com")
        user.set_password(PASSWORD)
        assert PASSWORD not in user.password_hash
        assert user.password_hash.startswith("pbkdf2:sha256:1000$")  # TestingConfig's method


@pytest.mark.parametrize(
    ("attempt", "accepted"),
    [(PASSWORD, True), ("wrong-password", False), (PASSWORD.upper(), False), ("", False)],
)
def test_check_password(app, attempt, accepted):
    with app.app_context():
        user = User(username="alice", email="alice@example.com")
        user.set_password(PASSWORD)
        assert user.check_password(attempt) is accepted


def test_production_hashes_with_scrypt(make_app):
    """Every config but the test one uses scrypt; set_password follows the config."""
    assert Config.PASSWORD_HASH_METHOD == "scrypt"
    assert generate_password_hash("x", method=Config.PASSWORD_HASH_METHOD).startswith("scrypt:")
    app = make_app(PASSWORD_HASH_METHOD=Config.PASSWORD_HASH_METHOD)
    with app.app_context():
        user = User(username="alice", email="alice@example.com")
        user.set_password(PASSWORD)
        assert user.password_hash.startswith("scrypt:")
        assert user.check_password(PASSWORD)


# --- Following -----------------------------------------------------------------------


def test_follow_and_unfollow(app, users):
    with app.app_context():
        admin, admin1 = db.session.get(User, users["admin"]), db.session.get(User, users["admin1"])
        assert not admin.is_following(admin1)

        admin.follow(admin1)
        db.session.commit()
        assert admin.is_following(admin1)
        assert not admin1.is_following(admin)  # following is one-way
        assert follower_rows() == [(users["admin"], users["admin1"])]

        admin.unfollow(admin1)
        db.session.commit()
        assert not admin.is_following(admin1)
        assert follower_rows() == []


def test_following_yourself_is_a_no_op(app, users):
    with app.app_context():
        admin = db.session.get(User, users["admin"])
        admin.follow(admin)
        db.session.commit()
        assert not admin.is_following(admin)
        assert follower_rows() == []


@pytest.mark.parametrize("commit_between", [False, True])
def test_following_twice_leaves_one_row(app, users, commit_between):
    with app.app_context():
        admin, admin1 = db.session.get(User, users["admin"]), db.session.get(User, users["admin1"])
        admin.follow(admin1)
        if commit_between:
            db.session.commit()
        admin.follow(admin1)
        db.session.commit()
        assert follower_rows() == [(users["admin"], users["admin1"])]


def test_unfollowing_someone_not_followed_is_a_no_op(app, users):
    with app.app_context():
        admin, admin1 = db.session.get(User, users["admin"]), db.session.get(User, users["admin1"])
        admin.unfollow(admin1)
        db.session.commit()
        assert follower_rows() == []


# --- Post queries --------------------------------------------------------------------


@pytest.fixture
def cast(app) -> dict[str, int]:
    """me follows friend; stranger is followed by nobody. Each has two posts."""
    with app.app_context():
        me, friend, stranger = add_user("me"), add_user("friend"), add_user("stranger")
        me.follow(friend)
        db.session.commit()
        start = datetime(2024, 1, 1, tzinfo=UTC)
        for hour, author in enumerate([me, friend, stranger, friend, me, stranger]):
            db.session.add(
                Post(body=f"{author.username} at {hour}", author=author, timestamp=start)
            )
            start += timedelta(hours=1)
        db.session.commit()
        return {user.username: user.id for user in (me, friend, stranger)}


def bodies(statement) -> list[str]:
    return [post.body for post in db.session.scalars(statement)]


def test_timeline_has_own_and_followed_posts_newest_first(app, cast):
    with app.app_context():
        me = db.session.get(User, cast["me"])
        assert bodies(Post.timeline(me)) == ["me at 4", "friend at 3", "friend at 1", "me at 0"]


def test_timeline_of_someone_following_nobody_is_their_own_posts(app, cast):
    with app.app_context():
        stranger = db.session.get(User, cast["stranger"])
        assert bodies(Post.timeline(stranger)) == ["stranger at 5", "stranger at 2"]


def test_by_author_is_one_users_posts_newest_first(app, cast):
    with app.app_context():
        friend = db.session.get(User, cast["friend"])
        assert bodies(Post.by_author(friend)) == ["friend at 3", "friend at 1"]


def test_newest_first_is_every_post_by_time(app, cast):
    with app.app_context():
        assert bodies(Post.newest_first()) == [
            "stranger at 5",
            "me at 4",
            "friend at 3",
            "stranger at 2",
            "friend at 1",
            "me at 0",
        ]


def test_newest_first_breaks_timestamp_ties_by_id(app, users):
    """Posts from the same instant keep a stable order (newest id first), so pages don't
    show a post twice or skip one."""
    with app.app_context():
        admin = db.session.get(User, users["admin"])
        same_time = datetime(2024, 1, 1, tzinfo=UTC)
        posts = [Post(body=f"tie {n}", author=admin, timestamp=same_time) for n in range(4)]
        db.session.add_all(posts)
        db.session.commit()
        ids = [post.id for post in posts]
        assert [post.id for post in db.session.scalars(Post.newest_first())] == ids[::-1]


def test_post_authors_come_in_the_same_query_as_the_posts(app, users):
    """No "N+1 queries": showing a page of posts with their authors is one SELECT."""
    with app.app_context():
        add_posts(db.session.get(User, users["admin"]), 3)
        add_posts(db.session.get(User, users["admin1"]), 3)
        db.session.remove()  # start with nothing loaded, as a new request does
        with count_statements() as statements:
            authors = [post.author.username for post in db.session.scalars(Post.newest_first())]
        assert sorted(authors) == ["admin"] * 3 + ["admin1"] * 3
        assert len(statements) == 1, statements


# --- Profiles ------------------------------------------------------------------------


@pytest.fixture
def followers_cast(app) -> dict[str, int]:
    """bob and carol follow alice; alice follows bob; dave follows nobody."""
    with app.app_context():
        alice, bob, carol, dave = (add_user(name) for name in ("alice", "bob", "carol", "dave"))
        bob.follow(alice)
        carol.follow(alice)
        alice.follow(bob)
        db.session.commit()
        return {user.username: user.id for user in (alice, bob, carol, dave)}


@pytest.mark.parametrize(
    ("username", "viewer", "expected"),
    [
        ("alice", "bob", ("alice", 2, 1, True)),
        ("ALICE", "carol", ("alice", 2, 1, True)),
        ("alice", "dave", ("alice", 2, 1, False)),
        ("alice", "alice", ("alice", 2, 1, False)),
        ("alice", None, ("alice", 2, 1, False)),
        ("bob", "alice", ("bob", 1, 1, True)),
        ("dave", "bob", ("dave", 0, 0, False)),
    ],
)
def test_profile_counts_and_followed_by_viewer(app, followers_cast, username, viewer, expected):
    viewer_id = followers_cast[viewer] if viewer else None
    with app.app_context():
        row = db.session.execute(User.profile(username, viewer_id)).one()
        user, follower_count, following_count, followed_by_viewer = row
        assert (user.username, follower_count, following_count, followed_by_viewer) == expected


def test_profile_is_one_statement(app, followers_cast):
    with app.app_context(), count_statements() as statements:
        row = db.session.execute(User.profile("alice", followers_cast["bob"])).one()
        assert row.follower_count == 2
        assert row.followed_by_viewer is True
    assert len(statements) == 1, statements


def test_profile_of_unknown_user_is_no_row(app, followers_cast):
    with app.app_context():
        assert db.session.execute(User.profile("nobody", None)).first() is None


# --- Timestamps ----------------------------------------------------------------------


def test_timestamps_come_back_from_sqlite_timezone_aware_utc(app, users):
    """SQLite stores no time zone; UTCDateTime gives the UTC label back."""
    with app.app_context():
        add_posts(db.session.get(User, users["admin"]), 1)
        db.session.remove()
        user = db.session.get(User, users["admin"])
        post = db.session.scalar(select(Post))
        for value in (user.last_seen, user.created, post.timestamp):
            assert value.tzinfo is not None
            assert value.utcoffset() == timedelta(0)


def test_aware_times_in_other_zones_are_stored_as_the_same_instant(app, users):
    beijing = timezone(timedelta(hours=8))
    moment = datetime(2024, 6, 1, 20, 30, tzinfo=beijing)
    with app.app_context():
        db.session.get(User, users["admin"]).last_seen = moment
        db.session.commit()
        db.session.remove()
        stored = db.session.get(User, users["admin"]).last_seen
    assert stored == moment
    assert stored == datetime(2024, 6, 1, 12, 30, tzinfo=UTC)
    assert stored.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("elapsed", "needs_update"),
    [
        (timedelta(0), False),
        (LAST_SEEN_RESOLUTION - timedelta(microseconds=1), False),
        (LAST_SEEN_RESOLUTION, True),
        (LAST_SEEN_RESOLUTION + timedelta(seconds=1), True),
    ],
)
def test_needs_last_seen_update_at_the_minute_boundary(app, users, elapsed, needs_update):
    """Compared with a last_seen read back from the database, which must be aware."""
    assert timedelta(minutes=1) == LAST_SEEN_RESOLUTION
    seen = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    with app.app_context():
        db.session.get(User, users["admin"]).last_seen = seen
        db.session.commit()
        db.session.remove()
        user = db.session.get(User, users["admin"])
        assert user.needs_last_seen_update(seen + elapsed) is needs_update

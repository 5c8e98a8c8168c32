"""The models and the schema under them: the migrations build exactly what the
models describe, and upgrade (and downgrade) a database that has rows without
losing any; the database enforces the rules the forms also check, fills in a
follow's time for code that doesn't know the column, and never gives out an id
twice; the queries the pages use return the right rows in the right number of
statements.
"""

import sys
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, current_app
from flask_migrate import downgrade, upgrade
from sqlalchemy import (
    Column,
    MetaData,
    String,
    UniqueConstraint,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from werkzeug.security import generate_password_hash

from app.extensions import db
from app.models import (
    CASEFOLD_MAX_GROWTH,
    EMAIL_MAX_LENGTH,
    LAST_SEEN_RESOLUTION,
    USERNAME_MAX_LENGTH,
    Post,
    User,
    followers,
    name_key,
    now_utc,
)
from config import Config
from tests.databases import ON_POSTGRESQL
from tests.helpers import PASSWORD, add_posts, add_user, app_at_revision
from tests.query_count import count_statements

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

# The revision before the lookup keys, when uniqueness was on lower(username).
BEFORE_KEYS = "d2b1e358e28c"

# How each database words a unique-constraint failure (SQLite, then PostgreSQL).
UNIQUE_VIOLATION = r"UNIQUE constraint failed|duplicate key value violates unique constraint"


def follower_rows() -> list[tuple[int, int]]:
    return db.session.execute(select(followers.c.follower_id, followers.c.followed_id)).all()


def compare_with_database(metadata: MetaData) -> list:
    """Autogenerate's diff between `metadata` and the migrated database, with the
    settings Flask-Migrate gives migrations/env.py."""
    opts = current_app.extensions["migrate"].configure_args
    with db.engine.connect() as connection, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        diff = compare_metadata(MigrationContext.configure(connection, opts=opts), metadata)
    # A warning means autogenerate skipped something it cannot compare (on SQLite,
    # an index on an expression such as lower(username)): the diff would be incomplete.
    assert [str(warning.message) for warning in caught] == []
    return diff


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
        assert compare_with_database(db.metadata) == []


def test_the_comparison_notices_a_column_missing_from_the_migrations(app):
    """The check above can fail: a model column without a migration shows up in the diff."""
    metadata = MetaData()
    for table in db.metadata.sorted_tables:
        table.to_metadata(metadata)
    metadata.tables["user"].append_column(Column("nickname", String(20)))
    with app.app_context():
        diff = compare_with_database(metadata)
    assert [(op[0], op[2], op[3].name) for op in diff] == [("add_column", "user", "nickname")]


def test_the_comparison_notices_a_unique_constraint_missing_from_the_models(app):
    """...and so does a unique constraint the migrations create but the models lost."""
    metadata = MetaData()
    for table in db.metadata.sorted_tables:
        table.to_metadata(metadata)
    user = metadata.tables["user"]
    # Found by its column: its name comes from the naming convention only when emitted.
    key_unique = next(
        constraint
        for constraint in user.constraints
        if isinstance(constraint, UniqueConstraint)
        and constraint.columns.keys() == ["username_key"]
    )
    user.constraints.remove(key_unique)
    with app.app_context():
        diff = compare_with_database(metadata)
    assert [(op[0], op[1].name) for op in diff] == [("remove_constraint", "uq_user_username_key")]


def test_the_keys_are_unique_and_required_in_the_database(app):
    """The constraint that makes names unique ignoring case is the database's own."""
    with app.app_context():
        inspector = inspect(db.engine)
        unique = {
            constraint["name"]: constraint["column_names"]
            for constraint in inspector.get_unique_constraints("user")
        }
        nullable = {column["name"]: column["nullable"] for column in inspector.get_columns("user")}
    assert unique == {"uq_user_username_key": ["username_key"], "uq_user_email_key": ["email_key"]}
    assert nullable["username_key"] is False
    assert nullable["email_key"] is False


def user_index_names() -> set[str]:
    """The names of the indexes on "user", including those on an expression.

    SQLAlchemy's inspector reflects an index on an expression such as
    lower(username) on PostgreSQL, but skips it on SQLite (with a warning, an
    error in this suite), so on SQLite we ask SQLite's own catalog.
    """
    if db.engine.dialect.name == "sqlite":
        query = text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'user'")
        return set(db.session.scalars(query))
    return {index["name"] for index in inspect(db.engine).get_indexes("user")}


def test_the_lower_indexes_are_gone(app):
    """The old unique indexes on lower(...) were dropped. Autogenerate cannot see an index
    on an expression on SQLite, so the comparison above would not notice one left over."""
    with app.app_context():
        assert not [name for name in user_index_names() if name.endswith("_lower")]


def test_casefold_growth_fits_the_key_columns():
    """No character casefolds to more than CASEFOLD_MAX_GROWTH characters, so the key of a
    name that fits its column fits the key column (the forms store names NFKC-normalised
    already, so name_key's own NFKC step does not lengthen them)."""
    growth = max(len(chr(code).casefold()) for code in range(sys.maxunicode + 1))
    assert growth == CASEFOLD_MAX_GROWTH
    assert User.username_key.type.length == CASEFOLD_MAX_GROWTH * USERNAME_MAX_LENGTH
    assert User.email_key.type.length == CASEFOLD_MAX_GROWTH * EMAIL_MAX_LENGTH


# --- The migration to lookup keys, on a database that has users ----------------------


@pytest.fixture
def old_app(tmp_path) -> Iterator[Flask]:
    """An app on a new database migrated only up to BEFORE_KEYS."""
    with app_at_revision(tmp_path, BEFORE_KEYS) as app:
        yield app


def insert_the_old_way(username: str, email: str) -> None:
    """Insert a user with plain SQL, as the app did before the key columns existed."""
    db.session.execute(
        text(
            'INSERT INTO "user" (username, email, password_hash, about_me, last_seen, created)'
            " VALUES (:username, :email, 'x', '', '2024-01-01 00:00:00', '2024-01-01 00:00:00')"
        ),
        {"username": username, "email": email},
    )
    db.session.commit()


def user_columns() -> set[str]:
    return {column["name"] for column in inspect(db.engine).get_columns("user")}


def test_upgrade_fills_the_keys_of_existing_users(old_app):
    with old_app.app_context():
        insert_the_old_way("Émile", "Émile@Example.com")
        upgrade(directory=str(MIGRATIONS))
        keys = db.session.execute(select(User.username_key, User.email_key)).one()
        assert tuple(keys) == ("émile", "émile@example.com")
        assert db.session.scalar(User.select_by_username("ÉMILE")).username == "Émile"


def test_downgrade_then_upgrade_again(old_app):
    """The downgrade puts the lower() indexes back, and the upgrade still works after it."""
    with old_app.app_context():
        insert_the_old_way("Émile", "emile@example.com")
        upgrade(directory=str(MIGRATIONS))
        downgrade(directory=str(MIGRATIONS), revision=BEFORE_KEYS)
        db.session.remove()
        assert {"username_key", "email_key"}.isdisjoint(user_columns())
        assert {"uq_user_username_lower", "uq_user_email_lower"} <= user_index_names()

        upgrade(directory=str(MIGRATIONS))
        assert db.session.scalar(User.select_by_username("émile")).username == "Émile"
        assert compare_with_database(db.metadata) == []


# --- The migrations after the look-alike skeletons, on a database that has rows -----

# The revision before the follows got their time (3f6a9c2d1b84); after it come
# the trigram index, pending_email, and AUTOINCREMENT on SQLite's ids.
BEFORE_FOLLOW_TIMES = "7d71888c5ddb"

# What every row keeps through the upgrades and downgrades: its id, its text, its times.
KEPT_COLUMNS = {
    "user": "id, username, email, email_key, password_hash, created",
    "post": "id, body, user_id, timestamp",
    "followers": "follower_id, followed_id",
    "user_session": "id, user_id, token_hash",
}


# The followers table as code written before follows had a time knows it.
FOLLOWERS_WITHOUT_A_TIME = sa.table("followers", sa.column("follower_id"), sa.column("followed_id"))


@pytest.fixture
def app_before_follow_times(tmp_path) -> Iterator[Flask]:
    """An app on a new database migrated only up to BEFORE_FOLLOW_TIMES."""
    with app_at_revision(tmp_path, BEFORE_FOLLOW_TIMES) as app:
        yield app


def insert_rows_the_old_way() -> dict[str, int]:
    """With plain SQL and the columns BEFORE_FOLLOW_TIMES has: ann, ben and cat,
    with posts and following each other, a login of ann's, and dan, the newest
    user, with nothing; the post ids have a gap (a deleted post). Returns the
    users' ids by name."""
    for name in ("ann", "ben", "cat", "dan"):
        db.session.execute(
            text(
                'INSERT INTO "user" (username, email, password_hash, about_me, last_seen,'
                " created, username_key, email_key, username_lower_skeleton,"
                " username_upper_skeleton) VALUES (:name, :email, 'x', '',"
                " '2024-01-01 00:00:00', '2024-01-01 00:00:00', :name, :email, :name, :upper)"
            ),
            {"name": name, "email": f"{name}@example.com", "upper": name.upper()},
        )
    ids = {
        name: user_id
        for name, user_id in db.session.execute(text('SELECT username, id FROM "user"'))
    }
    for number, author in enumerate(["ann", "ben", "ann", "cat", "ben"], 1):
        db.session.execute(
            text(
                "INSERT INTO post (body, timestamp, user_id)"
                " VALUES (:body, '2024-01-01 00:00:00', :author)"
            ),
            {"body": f"post {number}", "author": ids[author]},
        )
    db.session.execute(text("DELETE FROM post WHERE body = 'post 2'"))
    for follower, followed in [("ann", "ben"), ("ben", "ann"), ("cat", "ann")]:
        db.session.execute(
            text("INSERT INTO followers (follower_id, followed_id) VALUES (:follower, :followed)"),
            {"follower": ids[follower], "followed": ids[followed]},
        )
    db.session.execute(
        text(
            "INSERT INTO user_session (user_id, token_hash, password_digest, created)"
            " VALUES (:ann, 'a-token-hash', 'a-digest', '2024-01-01 00:00:00')"
        ),
        {"ann": ids["ann"]},
    )
    db.session.commit()
    return ids


def rows_kept() -> dict[str, list[tuple]]:
    """Every row of the four tables, as KEPT_COLUMNS reads it (plain SQL: any revision)."""
    return {
        name: sorted(map(tuple, db.session.execute(text(f'SELECT {columns} FROM "{name}"'))))
        for name, columns in KEPT_COLUMNS.items()
    }


def migrate(revision: str = "head", down: bool = False) -> None:
    """Upgrade (or downgrade) to `revision`, this session's transaction ended
    first: on PostgreSQL its locks would keep the migration waiting."""
    db.session.remove()
    if down:
        downgrade(directory=str(MIGRATIONS), revision=revision)
    else:
        upgrade(directory=str(MIGRATIONS), revision=revision)
    db.session.remove()


def tables_with_autoincrement() -> set[str]:
    """The SQLite tables that never give out a deleted row's id again."""
    tables = db.session.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    return {name for name, sql in tables if "AUTOINCREMENT" in sql.upper()}


def assert_deleted_ids_are_not_given_out_again(ids: dict[str, int]) -> None:
    """Delete the newest post and the newest user (dan): the next of each gets a new id."""
    newest_post = db.session.scalar(select(func.max(Post.id)))
    assert db.session.scalar(select(func.max(User.id))) == ids["dan"]
    db.session.execute(delete(Post).where(Post.id == newest_post))
    db.session.execute(delete(User).where(User.id == ids["dan"]))
    db.session.commit()
    post = Post(body="after the upgrade", user_id=ids["ann"])
    db.session.add(post)
    db.session.commit()
    assert post.id > newest_post
    assert add_user("eve").id > ids["dan"]


def follow_times() -> list[datetime]:
    return db.session.scalars(select(followers.c.created)).all()


def test_upgrading_a_database_with_rows_keeps_them_and_their_ids(app_before_follow_times):
    """Every user, post, follow and login is still there, with its id; each
    follow gets the time of the upgrade; nobody waits for an address yet; and
    from now on a deleted id is never given out again, on SQLite too."""
    with app_before_follow_times.app_context():
        ids = insert_rows_the_old_way()
        if not ON_POSTGRESQL:
            # The trouble the upgrade ends: SQLite gives the newest row's id out again.
            newest = db.session.scalar(text("SELECT max(id) FROM post"))
            db.session.execute(text("DELETE FROM post WHERE id = :id"), {"id": newest})
            db.session.execute(
                text(
                    "INSERT INTO post (body, timestamp, user_id)"
                    " VALUES ('post 5', '2024-01-01 00:00:00', :ben)"
                ),
                {"ben": ids["ben"]},
            )
            assert db.session.scalar(text("SELECT id FROM post WHERE body = 'post 5'")) == newest
            db.session.commit()
            assert tables_with_autoincrement() == set()
        before = rows_kept()
        assert [len(rows) for rows in before.values()] == [4, 4, 3, 1]

        started = now_utc()
        migrate()
        finished = now_utc()

        assert rows_kept() == before
        times = follow_times()
        assert len(times) == 3
        assert len(set(times)) == 1  # one moment, the upgrade's
        assert started <= times[0] <= finished
        assert db.session.scalars(select(User.pending_email)).all() == [None] * 4
        # A worker still on the old code inserts a follow: the database gives it a time.
        db.session.execute(
            insert(FOLLOWERS_WITHOUT_A_TIME).values(follower_id=ids["ann"], followed_id=ids["cat"])
        )
        db.session.commit()
        new_follow_time = db.session.scalar(
            select(followers.c.created).where(
                followers.c.follower_id == ids["ann"], followers.c.followed_id == ids["cat"]
            )
        )
        assert finished.replace(microsecond=0) <= new_follow_time <= now_utc()
        if not ON_POSTGRESQL:
            assert tables_with_autoincrement() == {"user", "post"}
        assert_deleted_ids_are_not_given_out_again(ids)


def test_downgrading_and_upgrading_again_with_rows(app_before_follow_times):
    """Down to BEFORE_FOLLOW_TIMES and up again, every row kept with its id
    both ways; the schema matches the models again at the end."""
    with app_before_follow_times.app_context():
        ids = insert_rows_the_old_way()
        before = rows_kept()
        migrate()
        migrate(BEFORE_FOLLOW_TIMES, down=True)

        assert rows_kept() == before
        assert "created" not in {c["name"] for c in inspect(db.engine).get_columns("followers")}
        assert "pending_email" not in user_columns()
        if not ON_POSTGRESQL:
            assert tables_with_autoincrement() == set()

        started = now_utc()
        migrate()
        assert rows_kept() == before
        times = follow_times()
        assert len(times) == 3 and all(started <= moment for moment in times)
        if not ON_POSTGRESQL:
            assert tables_with_autoincrement() == {"user", "post"}
        assert compare_with_database(db.metadata) == []
        assert_deleted_ids_are_not_given_out_again(ids)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # lower() keeps "ß" on every database; casefold() makes it "ss".
        ("straße", "STRASSE"),
        # SQLite's lower() changes only A-Z. PostgreSQL's follows the database's
        # locale, and in a UTF-8 one folds "É": its old index refused this pair.
        pytest.param(
            "Émile",
            "émile",
            marks=pytest.mark.skipif(
                ON_POSTGRESQL, reason="PostgreSQL's lower() folds É: the old index refused it"
            ),
        ),
    ],
)
def test_upgrade_refuses_names_the_old_index_let_clash(old_app, first, second):
    """The old index on lower(username) let `first` and `second` both in; the unique key
    cannot hold both, and only a person can choose who keeps the name, so the upgrade
    stops, changing nothing."""
    with old_app.app_context():
        insert_the_old_way(first, "first@example.com")
        insert_the_old_way(second, "second@example.com")
        config = current_app.extensions["migrate"].migrate.get_config(str(MIGRATIONS))
        # Alembic's own command: Flask-Migrate's upgrade() turns the error into an exit.
        clash = rf"usernames differ only in case.*'{first}', '{second}'"
        with pytest.raises(RuntimeError, match=clash):
            command.upgrade(config, "head")
        db.session.remove()
        with db.engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == BEFORE_KEYS
        assert "username_key" not in user_columns()


# --- Case-insensitive uniqueness, enforced by the database ---------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"username": "admin"}, {"username": "Admin"}),
        ({"username": "admin"}, {"username": "ADMIN"}),
        ({"username": "Émile"}, {"username": "émile"}),
        ({"username": "straße"}, {"username": "STRASSE"}),
        ({"username": "carol", "email": "a@x.com"}, {"username": "dave", "email": "A@x.com"}),
        ({"username": "carol", "email": "É@x.com"}, {"username": "dave", "email": "é@x.com"}),
    ],
    ids=[
        "username",
        "username-upper",
        "username-non-ascii",
        "username-casefold",
        "email",
        "email-non-ascii",
    ],
)
def test_database_refuses_names_differing_only_in_case(app, first, second):
    with app.app_context():
        add_user(**first)
        with pytest.raises(IntegrityError, match=UNIQUE_VIOLATION):
            add_user(**second)
        db.session.rollback()
        assert db.session.scalar(select(func.count()).select_from(User)) == 1


def test_select_by_username_and_by_email_ignore_case(app):
    with app.app_context():
        user_id = add_user("Alice", email="Alice@Example.com").id
        assert db.session.scalar(User.select_by_username("aLICE")).id == user_id
        assert db.session.scalar(User.select_by_email("alice@example.COM")).id == user_id
        assert db.session.scalar(User.select_by_username("alic")) is None


def test_select_by_username_and_by_email_ignore_case_beyond_ascii(app):
    with app.app_context():
        user_id = add_user("Élodie", email="Élodie@Example.com").id
        assert db.session.scalar(User.select_by_username("éLODIE")).id == user_id
        assert db.session.scalar(User.select_by_email("élodie@example.com")).id == user_id
        assert db.session.scalar(User.select_by_username("Elodie")) is None  # accents still count


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("admin", "admin"),
        ("Admin", "admin"),
        (" admin ", "admin"),
        ("\uff41\uff44\uff4d\uff49\uff4e", "admin"),  # full-width letters
        ("Émile", "émile"),
        ("STRASSE", "strasse"),
        ("straße", "strasse"),
        ("ΣΊΣΥΦΟΣ", "σίσυφοσ"),  # final sigma and capital sigma fold alike
        ("Alice@Example.COM", "alice@example.com"),
    ],
)
def test_name_key(name, key):
    assert name_key(name) == key


def test_the_keys_follow_the_username_and_email(app):
    """Whenever username or email is set, its key is set too: in User(...) and on a rename."""
    with app.app_context():
        user = add_user("Admin", email="Admin@Example.com")
        assert (user.username_key, user.email_key) == ("admin", "admin@example.com")
        user.username = "Émile"
        user.email = "Émile@Example.com"
        db.session.commit()
        db.session.remove()
        stored = db.session.execute(select(User.username_key, User.email_key)).one()
        assert tuple(stored) == ("émile", "émile@example.com")


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


def test_a_follow_inserted_without_its_time_gets_one_from_the_database(app, users):
    """A worker still running the old code while an upgrade is deployed inserts
    follows without `created`: the column's server default fills it in, and
    the follow shows in the lists with that time. (The model's own default
    would not help: it is Python's, and the old code has no such column.)"""
    with app.app_context():
        started = now_utc()
        db.session.execute(
            insert(FOLLOWERS_WITHOUT_A_TIME).values(
                follower_id=users["admin"], followed_id=users["admin1"]
            )
        )
        db.session.commit()
        finished = now_utc()
        [created] = follow_times()
        # SQLite's CURRENT_TIMESTAMP counts whole seconds.
        assert started.replace(microsecond=0) <= created <= finished
        admin1 = db.session.get(User, users["admin1"])
        [follower] = db.session.scalars(admin1.select_followers()).all()
        assert (follower.id, follower.followed_at) == (users["admin"], created)
    page = app.test_client().get("/user/admin1/followers")
    assert page.status_code == 200
    assert 'href="/user/admin"' in page.text


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
        assert bodies(Post.select_timeline(me)) == [
            "me at 4",
            "friend at 3",
            "friend at 1",
            "me at 0",
        ]


def test_timeline_of_someone_following_nobody_is_their_own_posts(app, cast):
    with app.app_context():
        stranger = db.session.get(User, cast["stranger"])
        assert bodies(Post.select_timeline(stranger)) == ["stranger at 5", "stranger at 2"]


def test_select_by_author_is_one_users_posts_newest_first(app, cast):
    with app.app_context():
        friend = db.session.get(User, cast["friend"])
        assert bodies(Post.select_by_author(friend)) == ["friend at 3", "friend at 1"]


def test_select_newest_first_is_every_post_by_time(app, cast):
    with app.app_context():
        assert bodies(Post.select_newest_first()) == [
            "stranger at 5",
            "me at 4",
            "friend at 3",
            "stranger at 2",
            "friend at 1",
            "me at 0",
        ]


def test_select_newest_first_breaks_timestamp_ties_by_id(app, users):
    """Posts from the same instant keep a stable order (newest id first), so pages don't
    show a post twice or skip one."""
    with app.app_context():
        admin = db.session.get(User, users["admin"])
        same_time = datetime(2024, 1, 1, tzinfo=UTC)
        posts = [Post(body=f"tie {n}", author=admin, timestamp=same_time) for n in range(4)]
        db.session.add_all(posts)
        db.session.commit()
        ids = [post.id for post in posts]
        assert [post.id for post in db.session.scalars(Post.select_newest_first())] == ids[::-1]


def test_post_authors_come_in_the_same_query_as_the_posts(app, users):
    """No "N+1 queries": showing a page of posts with their authors is one SELECT."""
    with app.app_context():
        add_posts(db.session.get(User, users["admin"]), 3)
        add_posts(db.session.get(User, users["admin1"]), 3)
        db.session.remove()  # start with nothing loaded, as a new request does
        with count_statements(db.engine) as statements:
            authors = [
                post.author.username for post in db.session.scalars(Post.select_newest_first())
            ]
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
def test_select_profile_counts_and_followed_by_viewer(
    app, followers_cast, username, viewer, expected
):
    viewer_id = followers_cast[viewer] if viewer else None
    with app.app_context():
        row = db.session.execute(User.select_profile(username, viewer_id)).one()
        user, follower_count, following_count, followed_by_viewer = row
        assert (user.username, follower_count, following_count, followed_by_viewer) == expected


def test_select_profile_is_one_statement(app, followers_cast):
    with app.app_context(), count_statements(db.engine) as statements:
        row = db.session.execute(User.select_profile("alice", followers_cast["bob"])).one()
        assert row.follower_count == 2
        assert row.followed_by_viewer is True
    assert len(statements) == 1, statements


def test_select_profile_of_unknown_user_is_no_row(app, followers_cast):
    with app.app_context():
        assert db.session.execute(User.select_profile("nobody", None)).first() is None


# --- Timestamps ----------------------------------------------------------------------


def test_timestamps_come_back_timezone_aware(app, users):
    """SQLite stores no time zone, and UTCDateTime gives the UTC label back; PostgreSQL's
    timestamptz comes back aware by itself. Either way views can compare with now_utc()."""
    with app.app_context():
        add_posts(db.session.get(User, users["admin"]), 1)
        db.session.remove()
        user = db.session.get(User, users["admin"])
        post = db.session.scalar(select(Post))
        for value in (user.last_seen, user.created, post.timestamp):
            assert value.tzinfo is not None


def test_timestamps_come_back_in_utc(app, users):
    """In UTC whatever zone they were written in, and whatever the database's time zone
    (PostgreSQL hands timestamptz back in the session's; the test databases' is UTC+8)."""
    beijing = timezone(timedelta(hours=8))
    with app.app_context():
        add_posts(db.session.get(User, users["admin"]), 1)
        db.session.get(User, users["admin"]).last_seen = datetime(
            2024, 6, 1, 20, 30, tzinfo=beijing
        )
        db.session.commit()
        db.session.remove()
        user = db.session.get(User, users["admin"])
        post = db.session.scalar(select(Post))
        for value in (user.last_seen, user.created, post.timestamp):
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

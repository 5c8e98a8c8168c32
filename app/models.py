"""Database models: users, their posts, and who follows whom.

The schema itself is created only by the Alembic migrations in `migrations/`;
`tests/test_models.py` checks that the two never drift apart.
"""

import hashlib
import re
import secrets
import unicodedata
from datetime import UTC, datetime, timedelta
from functools import cache

from flask import current_app
from flask_login import UserMixin
from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Select,
    String,
    Table,
    TypeDecorator,
    any_,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.orm import (
    Mapped,
    WriteOnlyMapped,
    mapped_column,
    query_expression,
    relationship,
    validates,
    with_expression,
)
from werkzeug.security import check_password_hash, generate_password_hash

from app.extensions import db
from app.usernames import SKELETON_MAX_GROWTH, lower_skeleton, upper_skeleton

# Column sizes, shared with the forms: PostgreSQL rejects a longer string with
# an error (SQLite silently stores it), so every form field repeats its limit.
USERNAME_MIN_LENGTH = 3
USERNAME_MAX_LENGTH = 64
EMAIL_MAX_LENGTH = 254
ABOUT_ME_MAX_LENGTH = 280
POST_MAX_LENGTH = 280
# A Babel locale name such as "en" or "zh_CN", with room for "zh_Hant_TW".
LOCALE_MAX_LENGTH = 16
# casefold() can make a string longer ("ß" becomes "ss", "ΐ" three code points),
# never by more than this factor, so the key columns are this much wider.
CASEFOLD_MAX_GROWTH = 3

# The largest id a row can have: the id columns are INTEGER, 32 bits on
# PostgreSQL. A larger number in a URL or a token can't be one of our rows, and
# passed on it would make the database fail ("integer out of range", a 500),
# so routes refuse it with a 404 (`<int(max=MAX_ID):...>`) and tokens as invalid.
MAX_ID = 2**31 - 1

# What a LIKE pattern treats specially: its two wildcards, and the escape character.
LIKE_WILDCARD = re.compile(r"[%_\\]")

# Indexes that exist on PostgreSQL only: their migrations do nothing on SQLite.
POSTGRESQL_ONLY_INDEXES = {"ix_post_body_trigram"}

# How stale `last_seen` may get before a request writes it again: one write a
# minute per user instead of one per request.
LAST_SEEN_RESOLUTION = timedelta(minutes=1)


def stored_name(name: str) -> str:
    """Return a username or email address as it is stored and shown: the
    compatibility characters folded (NFKC turns full-width "\uff41dmin" into
    "admin") and the spaces around it trimmed, its case kept.

    The forms store what was typed in this form (`app.forms.stored_name_filter`);
    `name_key` starts from it to compare names.
    """
    return unicodedata.normalize("NFKC", name).strip()


def name_key(name: str) -> str:
    """Return the form of a username or email address that uniqueness and lookups compare.

    Two spellings are the same name when their keys are equal: "Admin", " admin " and
    "\uff41dmin" all give "admin", "Émile" and "ÉMILE" give "émile". The key is computed here
    in Python, not with the database's lower(): SQLite's lower() changes only A-Z, so it
    would let "Émile" and "émile" both register. casefold() rather than lower() because it
    is Unicode's rule for ignoring case ("Straße" and "STRASSE" are the same name).
    """
    return stored_name(name).casefold()


def now_utc() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every database.

    PostgreSQL stores ``timestamp with time zone``. SQLite has no such type and
    hands back naive datetimes, which cannot be compared with aware ones; they
    get their UTC label back here instead of in every template and view.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite
            return value.replace(tzinfo=UTC)
        # PostgreSQL answers in the session's time zone, the server's local one.
        return value.astimezone(UTC)


followers = Table(
    "followers",
    db.metadata,
    Column("follower_id", Integer, ForeignKey("user.id"), primary_key=True),
    Column("followed_id", Integer, ForeignKey("user.id"), primary_key=True),
    # When the follow began: the lists of followers and of people followed
    # show the newest follows first, paged like the posts (app/pagination.py).
    # The server's default is for a follow inserted by code that doesn't know
    # the column: a worker still running the old code during an upgrade.
    Column("created", UTCDateTime, nullable=False, default=now_utc, server_default=func.now()),
    # One index for each list, sorted as it is shown: "who follows me" and
    # "whom do I follow", newest follow first. They serve the counts on a
    # profile too, and the primary key stops a follow being stored twice.
    Index("ix_followers_followed_id_created", "followed_id", "created", "follower_id"),
    Index("ix_followers_follower_id_created", "follower_id", "created", "followed_id"),
)


class User(UserMixin, db.Model):
    # SQLite gives a new row the highest id in use plus one, so it hands out
    # again the id of the newest row once that row is deleted: a stale link
    # (a Delete button in another tab) would then act on the new row.
    # AUTOINCREMENT makes it never reuse one. (PostgreSQL's sequences never do.)
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_MAX_LENGTH))
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH))
    # "Admin" and "admin" are the same user: the database enforces it with a
    # unique constraint on name_key(username), so even two requests racing past
    # the form's check cannot both commit. Lookups by name use this column too.
    # The ORM fills the keys (see `_store_keys`); a Core or bulk INSERT must pass
    # them itself, and NOT NULL turns forgetting them into an error, not a hole.
    username_key: Mapped[str] = mapped_column(
        String(CASEFOLD_MAX_GROWTH * USERNAME_MAX_LENGTH), unique=True
    )
    # What the name looks like in small letters and in capitals (app/usernames.py):
    # the forms refuse a name that looks like another account's. Indexed for that
    # lookup, but not unique: look-alikes registered before the check existed keep
    # their names (a unique index could not even be built on them). Computed from
    # username_key: the ORM sets them in `_store_keys`, and a Core or bulk INSERT
    # that leaves them out gets them from its username_key.
    username_lower_skeleton: Mapped[str] = mapped_column(
        String(SKELETON_MAX_GROWTH * USERNAME_MAX_LENGTH),
        index=True,
        default=lambda context: lower_skeleton(context.get_current_parameters()["username_key"]),
    )
    username_upper_skeleton: Mapped[str] = mapped_column(
        String(SKELETON_MAX_GROWTH * USERNAME_MAX_LENGTH),
        index=True,
        default=lambda context: upper_skeleton(context.get_current_parameters()["username_key"]),
    )
    # The address is stored as typed and only the key is folded: mail goes to
    # the address as typed, and the folded form may be another mailbox
    # ("Straße@example.de" folds to "strasse@example.de").
    email_key: Mapped[str] = mapped_column(
        String(CASEFOLD_MAX_GROWTH * EMAIL_MAX_LENGTH), unique=True
    )
    # A new address waiting for its owner to open the link mailed to it
    # (app/auth/email.py): only the latest one asked for can be confirmed.
    pending_email: Mapped[str | None] = mapped_column(String(EMAIL_MAX_LENGTH))
    password_hash: Mapped[str] = mapped_column(String(256))
    about_me: Mapped[str] = mapped_column(String(ABOUT_ME_MAX_LENGTH), default="")
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    # The language the user picked with the switch in the navigation ("zh_CN"),
    # or None if they never did and their browser's Accept-Language decides.
    locale: Mapped[str | None] = mapped_column(String(LOCALE_MAX_LENGTH))

    # Write-only collections are never loaded whole by accident (a popular
    # user may have thousands of posts); they are read with explicit queries.
    posts: WriteOnlyMapped["Post"] = relationship(back_populates="author")
    following: WriteOnlyMapped["User"] = relationship(
        secondary=followers,
        primaryjoin=(followers.c.follower_id == id),
        secondaryjoin=(followers.c.followed_id == id),
        back_populates="followers",
    )
    followers: WriteOnlyMapped["User"] = relationship(
        secondary=followers,
        primaryjoin=(followers.c.followed_id == id),
        secondaryjoin=(followers.c.follower_id == id),
        back_populates="following",
    )

    # When this user began following, or was followed by, the user whose list
    # they appear in: filled only by select_followers and select_following.
    followed_at: Mapped[datetime | None] = query_expression()

    @validates("username", "email")
    def _store_keys(self, field: str, value: str) -> str:
        """Keep the derived columns in step: set username_key or email_key whenever
        username or email is set (also in User(...)), and the username's skeletons.

        `@validates` is SQLAlchemy's hook for every assignment to these
        attributes; nothing is refused here, and the value is stored as given.
        """
        setattr(self, f"{field}_key", name_key(value))
        if field == "username":
            self.username_lower_skeleton = lower_skeleton(self.username_key)
            self.username_upper_skeleton = upper_skeleton(self.username_key)
        return value

    def __repr__(self) -> str:
        return f"<User {self.username}>"

    def set_password(self, password: str) -> None:
        """Set a new password, and end every login of this user (app/auth/sessions.py).

        Whoever had the old password, or a browser logged in with it, is out.
        """
        method = current_app.config["PASSWORD_HASH_METHOD"]
        self.password_hash = generate_password_hash(password, method=method)
        if self.id is not None:
            db.session.execute(delete(UserSession).where(UserSession.user_id == self.id))

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def password_digest(self) -> str:
        """A short digest of the password hash: it changes whenever the password does."""
        return hashlib.sha256(self.password_hash.encode()).hexdigest()[:16]

    # The token of the login this user was loaded for (app/auth/sessions.py);
    # set on the instance for this request only, never stored (unannotated,
    # so the ORM doesn't take it for a column).
    session_token = None

    def get_id(self) -> str:
        """What Flask-Login keeps in the session and the remember-me cookie:
        "<id>:<token>", the token naming a row of user_session."""
        return f"{self.id}:{self.session_token}"

    def delete_account(self) -> None:
        """Delete this account and everything that is its own: its posts, its
        follows both ways, its logins. The caller commits.

        Statements of their own rather than the ORM's cascades: the write-only
        collections are never loaded, and a user with 50,000 posts is one
        DELETE, not 50,000.
        """
        # Lock the user's row first (PostgreSQL; SQLite writes one at a time
        # anyway): a follow or a post committed between the DELETEs below
        # would otherwise make the last one fail on its foreign key, a 500.
        # Those wait for this transaction now, and fail on that key in their
        # own request, which says so (`commit_follow`, the home page's form).
        db.session.execute(select(User.id).where(User.id == self.id).with_for_update())
        db.session.execute(delete(Post).where(Post.user_id == self.id))
        db.session.execute(
            delete(followers).where(
                or_(followers.c.follower_id == self.id, followers.c.followed_id == self.id)
            )
        )
        db.session.execute(delete(UserSession).where(UserSession.user_id == self.id))
        db.session.execute(delete(User).where(User.id == self.id))

    def avatar_hash(self) -> str:
        """The Gravatar key for this user's address (also picks the SVG avatar's colour).

        MD5 because Gravatar asks for it: a lookup key, not a protection.
        """
        return hashlib.md5(self.email.strip().lower().encode(), usedforsecurity=False).hexdigest()

    def needs_last_seen_update(self, now: datetime) -> bool:
        return now - self.last_seen >= LAST_SEEN_RESOLUTION

    def is_following(self, user: "User") -> bool:
        query = self.following.select().where(User.id == user.id)
        return db.session.scalar(select(query.exists())) is True

    def follow(self, user: "User") -> None:
        if user.id != self.id and not self.is_following(user):
            self.following.add(user)

    def unfollow(self, user: "User") -> None:
        if self.is_following(user):
            self.following.remove(user)

    # The select_* methods return a statement, not rows (Post's too): run it
    # with db.session (scalar, scalars, execute), or give it to paginate().

    @staticmethod
    def select_by_username(username: str) -> Select[tuple["User"]]:
        """Select the user with this name, ignoring case (served by username_key's index)."""
        return select(User).where(User.username_key == name_key(username))

    @staticmethod
    def select_profile(
        username: str, viewer_id: int | None
    ) -> Select[tuple["User", int, int, bool]]:
        """Select a user with their follower and following counts, and whether the
        viewer follows them: everything a profile header needs, in one statement.
        """
        follower_count = (
            select(func.count()).where(followers.c.followed_id == User.id).scalar_subquery()
        )
        following_count = (
            select(func.count()).where(followers.c.follower_id == User.id).scalar_subquery()
        )
        followed_by_viewer = exists().where(
            followers.c.followed_id == User.id, followers.c.follower_id == viewer_id
        )
        return User.select_by_username(username).add_columns(
            follower_count.label("follower_count"),
            following_count.label("following_count"),
            followed_by_viewer.label("followed_by_viewer"),
        )

    @staticmethod
    def select_follow(follower_id: int, followed_id: int) -> Select:
        """Select the row saying that one user follows another (none if they don't)."""
        return select(followers).where(
            followers.c.follower_id == follower_id, followers.c.followed_id == followed_id
        )

    def select_followers(self) -> Select[tuple["User"]]:
        """Select the users following this one, the newest follow first, each
        with `followed_at` (paged with app.pagination.FOLLOWERS_NEWEST_FIRST)."""
        return self._select_follows(listed=followers.c.follower_id, owner=followers.c.followed_id)

    def select_following(self) -> Select[tuple["User"]]:
        """Select the users this one follows, the newest follow first, each
        with `followed_at` (paged with app.pagination.FOLLOWING_NEWEST_FIRST)."""
        return self._select_follows(listed=followers.c.followed_id, owner=followers.c.follower_id)

    def _select_follows(self, listed: Column, owner: Column) -> Select[tuple["User"]]:
        # `owner` is this user's side of each follow, `listed` the other's.
        # Sorted on the follow's own columns, not User's, so that the database
        # reads a page from one of the followers table's indexes.
        return (
            select(User)
            .join(followers, listed == User.id)
            .where(owner == self.id)
            .order_by(followers.c.created.desc(), listed.desc())
            .options(with_expression(User.followed_at, followers.c.created))
            # A user already loaded in this request (the viewer, who may be on
            # the list) would otherwise keep followed_at unset.
            .execution_options(populate_existing=True)
        )

    @staticmethod
    def select_by_email(email: str) -> Select[tuple["User"]]:
        """Select the user with this address, ignoring case (served by email_key's index)."""
        return select(User).where(User.email_key == name_key(email))


def password_matches(user: User | None, password: str) -> bool:
    """Check a password typed to log in; as slow without an account as with one.

    Skipping the hash when the username doesn't exist would make that answer
    come back ten times faster, telling anyone with a stopwatch which
    usernames have accounts. So a missing user's guess is hashed too, against
    a hash made the same way.
    """
    if user is None:
        check_password_hash(stand_in_hash(current_app.config["PASSWORD_HASH_METHOD"]), password)
        return False
    return user.check_password(password)


@cache
def stand_in_hash(method: str) -> str:
    """A hash of a password nobody has, made once per process and hash method."""
    return generate_password_hash(secrets.token_hex(16), method=method)


class UserSession(db.Model):
    """One browser logged in as a user; deleting the row logs it out (app/auth/sessions.py)."""

    __tablename__ = "user_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey(User.id), index=True)
    # The SHA-256 of the token in the cookie, never the token itself.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # User.password_digest() of the password this login was made with: a
    # login that was checking the old password while a reset committed
    # records it after the reset deleted the rows, and this tells it apart.
    password_digest: Mapped[str] = mapped_column(String(16))
    # Indexed: expired logins are deleted by age.
    created: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)


class Post(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String(POST_MAX_LENGTH))
    timestamp: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    user_id: Mapped[int] = mapped_column(ForeignKey(User.id))

    # Every page that shows a post shows its author, so the author comes in the
    # same SELECT (an inner join) instead of one extra query per post.
    author: Mapped[User] = relationship(back_populates="posts", lazy="joined", innerjoin=True)

    # Every list of posts is sorted newest first by (timestamp, id) (the id breaks
    # ties), and app/pagination.py asks for "the next 11 after this (timestamp, id)".
    # An index sorted the same way answers that by reading just those 11 rows.
    __table_args__ = (
        # Explore: every post.
        Index("ix_post_timestamp_id", "timestamp", "id"),
        # A profile (one author), and the timeline: for each author followed, their
        # newest posts, merged (see select_timeline()).
        Index("ix_post_user_id_timestamp_id", "user_id", "timestamp", "id"),
        # Search (select_containing): a trigram index, which PostgreSQL alone has
        # (its migration does nothing on SQLite; app.extensions.in_this_database).
        Index(
            "ix_post_body_trigram",
            "body",
            postgresql_using="gin",
            postgresql_ops={"body": "gin_trgm_ops"},
        ),
        # Ids never reused on SQLite (see User).
        {"sqlite_autoincrement": True},
    )

    def __repr__(self) -> str:
        return f"<Post {self.id} by user {self.user_id}>"

    @staticmethod
    def select_newest_first() -> Select[tuple["Post"]]:
        """Select every post, newest first (the explore page)."""
        return select(Post).order_by(Post.timestamp.desc(), Post.id.desc())

    @staticmethod
    def select_containing(text: str) -> Select[tuple["Post"]]:
        """Select the posts that contain `text`, ignoring case, newest first (search).

        A substring match (LIKE), not word-based full-text search: that splits
        text into words at spaces, and Chinese has no spaces between words.
        `%` and `_` are LIKE's wildcards; typed in a search they mean themselves,
        so they are escaped, as is the escape character itself. On PostgreSQL
        a trigram index (pg_trgm) serves the match for three characters or
        more; SQLite reads the posts one by one (README, "Speed").
        """
        pattern = "%" + LIKE_WILDCARD.sub(r"\\\g<0>", text) + "%"
        return Post.select_newest_first().where(Post.body.ilike(pattern, escape="\\"))

    @staticmethod
    def select_by_author(user: User) -> Select[tuple["Post"]]:
        """Select one user's posts, newest first (their profile page)."""
        return Post.select_newest_first().where(Post.user_id == user.id)

    @staticmethod
    def select_timeline(user: User) -> Select[tuple["Post"]]:
        """Select the posts of the people `user` follows, and their own, newest first.

        Written as one list of authors rather than "mine OR followed", so that
        both databases can read it from an index. SQLite takes each author's
        newest posts from ix_post_user_id_timestamp_id and stops after a page's
        worth per author. PostgreSQL walks the posts newest first and keeps
        those by an author in the list; given the list as a subquery (``IN
        (SELECT ...)``) it joins every post it walks against every author, one
        pair at a time, so it gets the list as an array instead (``= ANY
        (ARRAY(SELECT ...))``), which it builds once and checks in C. For the
        demo user of bench/pages.py, who follows 50 people, EXPLAIN ANALYZE
        went from 4.9 ms to 0.5 ms. Either way a page costs the same with
        50,000 posts or 500,000. What it does grow with is how rare the
        timeline's posts are among all posts: someone who follows nobody and
        never posted makes PostgreSQL walk every post to find none.
        """
        authors = select(followers.c.followed_id).where(followers.c.follower_id == user.id)
        authors = authors.union_all(select(literal(user.id, Integer)))
        if db.engine.dialect.name == "postgresql":
            in_authors = Post.user_id == any_(func.array(authors.scalar_subquery()))
        else:
            in_authors = Post.user_id.in_(authors)
        return Post.select_newest_first().where(in_authors)

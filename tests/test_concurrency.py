"""Two people asking for the same username at the same moment, for real.

The forms check that a username is free before saving it, but a check and a
save are two steps: two requests can both pass the check, then both save.
Only the database can settle that race, with the unique constraint on
``user.username_key``; the loser's IntegrityError is turned back into the
form's own error by `app.forms.commit_or_show_conflict`.

A race needs real concurrency, so these tests run the blog the way it is
deployed: gunicorn with four worker processes, the production config, a
database of its own (SQLite in WAL mode with a busy timeout, or PostgreSQL:
the suite runs on both), and twenty clients that each keep their own cookies
and send their form with its CSRF token, as browsers do. A barrier holds the
twenty threads until every one of them is ready, then lets them all go at
once. Which requests overlap is up to the operating system, so the tests
assert only what must hold whatever the interleaving: one winner, nineteen
polite refusals, no error page, no data lost.

Left to chance, every loser might be stopped by the form's own check, and the
unique constraint would never be tested. So while the racers run, the test
holds the user table's write lock on a connection of its own, as a long
transaction in another process would: the racers check the name (reads are
not blocked) and then wait to write it. The test lets go once two of them are
waiting, which it sees in the blog's log: the blog runs with SQLAlchemy's
statement log on (``LOG_EXTRA_LOGGERS``), and a statement is logged before it
is sent. Two racers that both passed the check, one name in the database: the
unique index refused the other. The log's count of such statements proves it
after the race.
"""

import re
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from app import create_app
from app.extensions import db
from app.models import Post, User, name_key
from tests.databases import fresh_database
from tests.helpers import PASSWORD, add_posts, add_user, config_for
from tests.pages import form_errors
from tests.servers import Browser, Gunicorn, production_env, run_gunicorn, wait_until

# Every test here starts real servers or processes: `make test-fast` skips them.
pytestmark = pytest.mark.system

RACERS = 20  # clients sending the same request at once
WORKERS = 4  # gunicorn worker processes: up to four requests truly in flight
USERNAME_TAKEN = "Please use a different username."
# The statements that write the contested name, as SQLAlchemy logs them
# (the table's name is quoted on PostgreSQL, where "user" is a reserved word).
REGISTER = re.compile(r'INSERT INTO "?user"? \(username, ')
RENAME = re.compile(r'UPDATE "?user"? SET username=')


@dataclass
class Blog:
    server: Gunicorn
    app: Flask  # an app of our own on the same database, to seed it and look inside
    log_file: Path


@pytest.fixture(scope="module")
def blog(tmp_path_factory) -> Iterator[Blog]:
    """gunicorn with four workers serving blog:app on a fresh, migrated database."""
    tmp_path = tmp_path_factory.mktemp("concurrency")
    # The database outlives gunicorn: it is dropped only once the workers are gone.
    with fresh_database(tmp_path) as url:
        # gunicorn's errors, as by default, and every SQL statement the engine
        # sends (values hidden: hide_parameters in production) rather than only
        # SQLAlchemy's warnings: not both, or each statement would be logged twice
        # (once per logger). One file, never rotated, so that the tests read all of it.
        env = production_env(
            tmp_path,
            url,
            LOG_EXTRA_LOGGERS="sqlalchemy.engine.Engine:INFO,gunicorn.error",
            LOG_MAX_BYTES=0,
        )
        with run_gunicorn(env, tmp_path, app="blog:app", workers=WORKERS) as server:
            app = create_app(config_for(url))
            try:
                yield Blog(server, app, Path(env["LOG_DIR"]) / "blog.log")
            finally:
                with app.app_context():
                    db.session.remove()
                    db.engine.dispose()


def spelling(name: str, number: int) -> str:
    """`name` with the case of its letters flipped by the bits of `number`.

    Every racer asks for a different spelling of the same name ("champion",
    "Champion", "cHampion"...): they are all one username, because the unique
    constraint is on the case-folded key, not on the name as typed.
    """
    return "".join(
        char.upper() if number >> position & 1 else char for position, char in enumerate(name)
    )


def logged_writes(blog: Blog, statement: re.Pattern) -> int:
    """How many times the blog's log shows `statement` (sent or about to be)."""
    return sum(1 for line in blog.log_file.read_text().splitlines() if statement.search(line))


@contextmanager
def writes_to_users_held(app: Flask) -> Iterator[None]:
    """Hold the user table's write lock on a connection of our own until the block ends.

    Reading goes on; a request that writes to the table waits (on SQLite, up to
    the busy timeout, 5 s; on PostgreSQL, until we let go).
    """
    with app.app_context(), db.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")  # the database's one write lock
        else:
            # Blocks INSERT, UPDATE and DELETE on the table, not SELECT.
            connection.exec_driver_sql('LOCK TABLE "user" IN SHARE ROW EXCLUSIVE MODE')
        try:
            yield
        finally:
            connection.rollback()


def race(
    blog: Blog, browsers: list[Browser], path: str, forms: list[dict], write: re.Pattern
) -> tuple[list[tuple[int, dict, str]], int]:
    """POST forms[i] from browsers[i] to `path`, all at the same moment, and make
    sure that at least two of them are past the form's check before any can save.

    Everything slow (loading the form for its CSRF token, starting threads)
    happens first; the barrier then releases all the POSTs together, so that
    they reach gunicorn's four workers as closely together as the machine allows.
    The user table's write lock, held meanwhile, is released once the log shows
    two racers about to `write` the name.

    Returns each browser's (status, headers, body), in order, and how many
    racers tried to write the name (passed the form's check).
    """
    tokens = [browser.csrf_token(path) for browser in browsers]
    barrier = threading.Barrier(len(browsers) + 1)  # the racers, and this thread
    writes_before = logged_writes(blog, write)

    def send(number: int) -> tuple[int, dict, str]:
        # The timeout only ends a test that is already broken (a thread that died).
        barrier.wait(timeout=60)
        return browsers[number].request(path, {"csrf_token": tokens[number], **forms[number]})

    with ThreadPoolExecutor(max_workers=len(browsers)) as pool:
        with writes_to_users_held(blog.app):
            answers = [pool.submit(send, number) for number in range(len(browsers))]
            barrier.wait(timeout=60)
            wait_until(
                lambda: logged_writes(blog, write) - writes_before >= 2,
                message="two racers past the form's check, waiting to save",
            )
        answers = [answer.result() for answer in answers]
    return answers, logged_writes(blog, write) - writes_before


def one_winner(answers: list[tuple[int, dict, str]], redirected_to: str) -> int:
    """Check that one racer was saved and the others were told the name is taken;
    return the winner's number.

    One save (a redirect), nineteen forms shown again; no 500, and no 503
    (what SQLite's "database is locked" would become).
    """
    statuses = [status for status, _, _ in answers]
    assert Counter(statuses) == {302: 1, 200: RACERS - 1}, statuses
    winner = statuses.index(302)
    assert answers[winner][1]["Location"] == redirected_to
    for number, (_, _, page) in enumerate(answers):
        if number != winner:
            assert form_errors(page) == {"username": [USERNAME_TAKEN]}, f"racer {number}"
    return winner


def assert_the_unique_index_decided(tried_to_write: int) -> None:
    """Each racer that tried to write the name had passed the form's check; one
    row holds the name (checked by the caller), so the database refused all the
    others. Those the form stopped never tried."""
    refused_by_the_index = tried_to_write - 1
    assert 1 <= refused_by_the_index <= RACERS - 1, tried_to_write


def assert_logs_are_clean(blog: Blog) -> None:
    """No unhandled exception, no outage, no lock error, in gunicorn's output or the app's log.

    A race that escaped `commit_or_show_conflict` would be a 500 with a
    traceback; an SQLite writer that gave up waiting for the lock would be
    "database is locked", which the app reports as an outage (a 503).
    """
    logs = {"gunicorn's output": blog.server.log(), "blog.log": blog.log_file.read_text()}
    for name, text in logs.items():
        # " ERROR: " is the app's log format, "[ERROR]" gunicorn's.
        for sign in (
            "Traceback",
            "database is locked",
            "Database unavailable",
            " ERROR: ",
            "[ERROR]",
        ):
            assert sign not in text, f"{sign!r} in {name}:\n{text}"


def test_twenty_users_rename_themselves_to_the_same_name_at_once(blog):
    """Twenty logged-in users submit "Edit profile" with one new name at the same moment.

    Exactly one rename goes through (a redirect back to the form, as after any
    save); the nineteen others see the form again with "Please use a
    different username.", whether their request lost the race at the form's
    check or at the unique constraint. Nobody gets an error page, the losers
    keep their names, and every user still has every post.
    """
    with blog.app.app_context():
        users = [add_user(f"racer{number:02d}") for number in range(RACERS)]
        for number, user in enumerate(users):
            add_posts(user, 2 + number % 3)  # two to four posts each
        ids = [user.id for user in users]
        posts_before = post_counts()

    browsers = [Browser(blog.server.url) for _ in users]
    for number, browser in enumerate(browsers):
        status, headers, _ = browser.submit(
            "/auth/login", {"username": f"racer{number:02d}", "password": PASSWORD}
        )
        assert (status, headers["Location"]) == (302, "/")

    wanted = [spelling("champion", number) for number in range(RACERS)]
    answers, tried_to_write = race(
        blog,
        browsers,
        "/edit_profile",
        [{"username": name, "about_me": f"I am {name}"} for name in wanted],
        RENAME,
    )

    winner = one_winner(answers, "/edit_profile")

    # The winner's save is real: the redirect leads to the confirmation.
    _, _, page = browsers[winner].request("/edit_profile")
    assert "Your changes have been saved." in page
    assert f"Profile ({wanted[winner]})" in page

    with blog.app.app_context():
        named = db.session.scalars(User.select_by_username("champion")).all()
        assert [(user.id, user.username) for user in named] == [(ids[winner], wanted[winner])]
        for number, user_id in enumerate(ids):
            user = db.session.get(User, user_id)
            if number != winner:
                # The loser's whole change was rolled back, not just the name.
                assert (user.username, user.about_me) == (f"racer{number:02d}", "")
        # Renaming moves no post: they follow the user's id, not the name.
        assert post_counts() == posts_before
    assert_the_unique_index_decided(tried_to_write)
    assert_logs_are_clean(blog)


def test_twenty_people_register_the_same_username_at_once(blog):
    """Twenty visitors submit the registration form with one username at the same moment.

    Each uses their own email address, so only the username can clash.
    Exactly one account is created (a redirect to the login page); the
    nineteen others see "Please use a different username." on the form, no
    error page, and no half-made account is left behind, including for those
    whose INSERT the unique index refused.
    """
    browsers = [Browser(blog.server.url) for _ in range(RACERS)]
    forms = [
        {
            "username": spelling("newcomer", number),
            "email": f"newcomer-{number}@example.com",
            "password": "a-good-password",
            "password2": "a-good-password",
        }
        for number in range(RACERS)
    ]
    answers, tried_to_write = race(blog, browsers, "/auth/register", forms, REGISTER)

    winner = one_winner(answers, "/auth/login")

    with blog.app.app_context():
        keys = [name_key(form["email"]) for form in forms]
        created = db.session.scalars(select(User).where(User.email_key.in_(keys))).all()
        assert [(user.username, user.email) for user in created] == [
            (forms[winner]["username"], forms[winner]["email"])
        ]
        assert db.session.scalar(User.select_by_username("NEWCOMER")).id == created[0].id

    # And the account works: its owner can log in with the password they chose.
    status, headers, _ = browsers[winner].submit(
        "/auth/login", {"username": "newcomer", "password": "a-good-password"}
    )
    assert (status, headers["Location"]) == (302, "/")
    assert_the_unique_index_decided(tried_to_write)
    assert_logs_are_clean(blog)


def post_counts() -> dict[int, int]:
    """How many posts each user has, by user id (inside an app context)."""
    rows = db.session.execute(select(Post.user_id, func.count()).group_by(Post.user_id))
    return dict(rows.all())

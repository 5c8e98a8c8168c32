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
"""

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PASSWORD, add_posts, add_user, config_for
from databases import fresh_database
from flask import Flask
from servers import Browser, Gunicorn, production_env, run_gunicorn
from sqlalchemy import func, select

from app import create_app
from app.extensions import db
from app.models import Post, User, name_key

RACERS = 20  # clients sending the same request at once
WORKERS = 4  # gunicorn worker processes: up to four requests truly in flight
USERNAME_TAKEN = "Please use a different username."


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
        env = production_env(tmp_path, url)
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


def race(browsers: list[Browser], path: str, forms: list[dict]) -> list[tuple[int, dict, str]]:
    """POST forms[i] from browsers[i] to `path`, all at the same moment.

    Everything slow (loading the form for its CSRF token, starting threads)
    happens first; the barrier then releases all the POSTs together, so that
    they reach gunicorn's four workers as closely together as the machine allows.
    Returns each browser's (status, headers, body), in order.
    """
    tokens = [browser.csrf_token(path) for browser in browsers]
    barrier = threading.Barrier(len(browsers))

    def send(number: int) -> tuple[int, dict, str]:
        # The timeout only ends a test that is already broken (a thread that died).
        barrier.wait(timeout=60)
        return browsers[number].request(path, {"csrf_token": tokens[number], **forms[number]})

    with ThreadPoolExecutor(max_workers=len(browsers)) as pool:
        return list(pool.map(send, range(len(browsers))))


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
            assert USERNAME_TAKEN in page, f"racer {number} was not told why"
    return winner


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
    answers = race(
        browsers,
        "/edit_profile",
        [{"username": name, "about_me": f"I am {name}"} for name in wanted],
    )

    winner = one_winner(answers, "/edit_profile")

    # The winner's save is real: the redirect leads to the confirmation.
    _, _, page = browsers[winner].request("/edit_profile")
    assert "Your changes have been saved." in page
    assert f"Profile ({wanted[winner]})" in page

    with blog.app.app_context():
        named = db.session.scalars(User.by_username("champion")).all()
        assert [(user.id, user.username) for user in named] == [(ids[winner], wanted[winner])]
        for number, user_id in enumerate(ids):
            user = db.session.get(User, user_id)
            if number != winner:
                # The loser's whole change was rolled back, not just the name.
                assert (user.username, user.about_me) == (f"racer{number:02d}", "")
        # Renaming moves no post: they follow the user's id, not the name.
        assert post_counts() == posts_before
    assert_logs_are_clean(blog)


def test_twenty_people_register_the_same_username_at_once(blog):
    """Twenty visitors submit the registration form with one username at the same moment.

    Each uses their own email address, so only the username can clash.
    Exactly one account is created (a redirect to the login page); the
    nineteen others see "Please use a different username." on the form, no
    error page, and no half-made account is left behind. Registering hashes
    the password between the form's check and the commit, which keeps the
    window of the race open for a while: this is where the unique constraint
    does the work.
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
    answers = race(browsers, "/auth/register", forms)

    winner = one_winner(answers, "/auth/login")

    with blog.app.app_context():
        keys = [name_key(form["email"]) for form in forms]
        created = db.session.scalars(select(User).where(User.email_key.in_(keys))).all()
        assert [(user.username, user.email) for user in created] == [
            (forms[winner]["username"], forms[winner]["email"])
        ]
        assert db.session.scalar(User.by_username("NEWCOMER")).id == created[0].id

    # And the account works: its owner can log in with the password they chose.
    status, headers, _ = browsers[winner].submit(
        "/auth/login", {"username": "newcomer", "password": "a-good-password"}
    )
    assert (status, headers["Location"]) == (302, "/")
    assert_logs_are_clean(blog)


def post_counts() -> dict[int, int]:
    """How many posts each user has, by user id (inside an app context)."""
    rows = db.session.execute(select(Post.user_id, func.count()).group_by(Post.user_id))
    return dict(rows.all())

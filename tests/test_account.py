"""Your own account, logged in: change the password, change the email address
(at once with mail off, through a mailed link with mail on), delete the account.

Through the Flask test client, in process, on the test database (SQLite, or
PostgreSQL with TEST_DATABASE_URL); the tests with mail on send real mail to a
real SMTP server speaking STARTTLS (the ``mail_server`` fixture) and are
marked ``system``. Each test asserts what a person sees (the page, the form's
errors, the flash, the status) and what the database or the mailbox holds.

- Change password: the current password is checked; the new one follows the
  registration rules; afterwards only the new one logs in, every other
  browser is logged out, this one stays logged in (with a new remember-me
  cookie if it had one, the old cookie dead).
- Change email, mail off: changed at once; an address another account uses
  (ignoring case, with Unicode's case folding) is refused, your own in another
  case is not; a race lost to another request that took the address is the
  form's error, not a 500.
- Change email, mail on: a link to the new address, which the account waits
  to confirm (the form says so); nothing changes until the confirm page's
  button is pressed; the link works once, for a day, only for the latest
  address asked for (going A to B and back to A doesn't revive B's link), and
  dies with a password change; refused links (tampered, expired, forged)
  change nothing; no mail when the request's Host can't be trusted. A reset
  link mailed to the old address stops working once the address changes. The
  link changes the address of the account it names, whoever's browser opens
  it (bob's stays bob's, and bob stays logged in). Your own address in other
  capitals is mailed a link like any new one. A mail server refusing
  connections fails in the background: the page says the link was sent, and
  the log says it wasn't.
- Delete account: posts, follows both ways and logins go with the user; the
  browser is logged out; other people's pages still work; the name is free,
  and a new account taking it gets a new id. On PostgreSQL, a follow
  committed while the account is being deleted waits, then fails in its own
  request, not in the deletion.
- The three forms share one rate limit, per account and per client, counting
  wrong current passwords, and on the email form the answers saying an
  address is taken and the mails sent; typos in the new password or address
  cost nothing. Visitors are sent to log in; CSRF is enforced.
- Hostile input in every field: a form error or one of the site's 4xx
  pages, never a 500, and nothing changed.
"""

import errno
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from io import BytesIO

import pytest
from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from markupsafe import escape
from sqlalchemy import event, func, inspect, or_, select, text
from werkzeug.datastructures import MultiDict
from werkzeug.test import TestResponse

from app.auth.email import _serializer, email_change_token, reset_token
from app.extensions import db
from app.mail import outbox
from app.models import Post, User, UserSession, followers, name_key
from config import Config
from tests.databases import ON_POSTGRESQL
from tests.helpers import PASSWORD, add_posts, add_user
from tests.pages import alerts, csrf_token, form_errors, logged_in_as, page_text
from tests.servers import free_port, wait_until

NEW_PASSWORD = "a-brand-new-password"
WRONG_PASSWORD = "not-the-password"
FORM = "application/x-www-form-urlencoded"

# What the forms say, word for word.
REQUIRED = "This field is required."
NOT_YOUR_PASSWORD = "That isn't your current password."
NEW_PASSWORD_LENGTH = "Field must be between 8 and 128 characters long."
PASSWORD_TOO_LONG = "Field cannot be longer than 128 characters."
PASSWORDS_DIFFER = "The passwords don't match."
EMAIL_TAKEN = "Please use a different email address."
SAME_EMAIL = "That is your address already."
INVALID_EMAIL = "Please enter a valid email address."
EMAIL_TOO_LONG = "Field cannot be longer than 254 characters."

# The flashed messages, as (category, text).
PASSWORD_CHANGED = (
    "success",
    "Your password has been changed. Every other browser has been logged out.",
)
MAIL_NOT_SENT = ("danger", "The confirmation mail could not be sent. Please try again later.")
LINK_REFUSED = ("warning", "That confirmation link is invalid, used or expired.")
RESET_REFUSED = ("warning", "That reset link is invalid or has expired. Please ask for a new one.")
RESET_DONE = ("success", "Your password has been reset. You can log in with it now.")
ACCOUNT_DELETED = ("info", "Your account and your posts have been deleted. Goodbye!")
LOG_IN_FIRST = ("info", "Please log in to access this page.")
INVALID_LOGIN = ("danger", "Invalid username or password.")


def email_changed(email: str) -> tuple[str, str]:
    return ("success", f"Your email address is now {email}.")


def waiting_for(email: str) -> str:
    """What the email form says while a link mailed to `email` is unused."""
    return (
        f"Waiting for you to open the link mailed to {email}. "
        "Asking for another address replaces it."
    )


def link_sent(email: str) -> tuple[str, str]:
    return ("info", f"We have sent a link to {email}. Your address changes when you open it.")


def taken_meanwhile(email: str) -> tuple[str, str]:
    return ("danger", f"Another account uses {email} now. Your address has not changed.")


# The error pages' wording (app/errors.py, app/input_guard.py).
CSRF_MESSAGE = (
    "The form has expired or was sent from another page. Please go back, reload the page "
    "and try again."
)
NUL_MESSAGE = "The request contained a character that isn't allowed (NUL). Please remove it."

CHANGE_PASSWORD = "/auth/change_password"
CHANGE_EMAIL = "/auth/change_email"
DELETE_ACCOUNT = "/auth/delete_account"
CONFIRM_EMAIL = "/auth/confirm_email"
ACCOUNT_FORMS = [CHANGE_PASSWORD, CHANGE_EMAIL, DELETE_ACCOUNT]

# A POST of each form that succeeds, and one that fails the password check.
VALID = {
    CHANGE_PASSWORD: {
        "current_password": PASSWORD,
        "password": NEW_PASSWORD,
        "password2": NEW_PASSWORD,
    },
    CHANGE_EMAIL: {"current_password": PASSWORD, "email": "new@example.com"},
    DELETE_ACCOUNT: {"current_password": PASSWORD},
}
FAILING = {url: {**fields, "current_password": WRONG_PASSWORD} for url, fields in VALID.items()}


# --- The cast, and reading the database ----------------------------------------------------


@pytest.fixture
def cast(app) -> dict[str, int]:
    """alice, bob and carol, with posts and follows; their ids by name.

    alice follows bob, bob follows alice and carol. alice is created last,
    so hers is the highest id: the one a database that reused ids would give
    the next account once hers is deleted (see test_the_username_is_free_again).
    """
    with app.app_context():
        bob, carol = add_user("bob"), add_user("carol")
        alice = add_user("alice")
        add_posts(alice, 3)
        add_posts(bob, 2)
        add_posts(carol, 1)
        alice.follow(bob)
        bob.follow(alice)
        bob.follow(carol)
        db.session.commit()
        return {user.username: user.id for user in (alice, bob, carol)}


def log_in(
    app: Flask, username: str = "alice", password: str = PASSWORD, remember: bool = False
) -> FlaskClient:
    """A new browser, logged in as `username`."""
    browser = app.test_client()
    data = {"username": username, "password": password}
    if remember:
        data["remember_me"] = "y"
    response = browser.post("/auth/login", data=data)
    assert response.headers.get("Location") == "/", alerts(response)
    return browser


@dataclass(frozen=True)
class Account:
    """What the database holds for one user."""

    username: str
    email: str
    email_key: str
    pending_email: str | None  # the address a confirmation link was mailed to
    password_hash: str
    posts: int
    follows: int  # rows of the followers table naming the user, either way
    logins: int


def account(app: Flask, user_id: int) -> Account | None:
    """The user's row and how many rows of their own the other tables hold; None if gone."""
    with app.app_context():
        user = db.session.get(User, user_id)
        counts = [
            db.session.scalar(
                select(func.count()).select_from(Post).where(Post.user_id == user_id)
            ),
            db.session.scalar(
                select(func.count())
                .select_from(followers)
                .where(or_(followers.c.follower_id == user_id, followers.c.followed_id == user_id))
            ),
            db.session.scalar(
                select(func.count()).select_from(UserSession).where(UserSession.user_id == user_id)
            ),
        ]
        if user is None:
            assert counts == [0, 0, 0], f"rows left behind by user {user_id}: {counts}"
            return None
        return Account(
            user.username,
            user.email,
            user.email_key,
            user.pending_email,
            user.password_hash,
            *counts,
        )


def database_rows(app: Flask) -> dict[str, list[tuple]]:
    """Every row the account pages can change, to compare before and after a request.

    (`last_seen` is left out: any page a logged-in user opens may update it.)
    """
    tables = {
        "user": select(
            User.id,
            User.username,
            User.email,
            User.email_key,
            User.pending_email,
            User.password_hash,
        ),
        "post": select(Post.id, Post.user_id, Post.body),
        "followers": select(followers.c.follower_id, followers.c.followed_id),
        "user_session": select(UserSession.user_id, UserSession.token_hash),
    }
    with app.app_context():
        return {
            name: sorted(map(tuple, db.session.execute(query))) for name, query in tables.items()
        }


def password_is(app: Flask, user_id: int, password: str) -> bool:
    with app.app_context():
        return db.session.get(User, user_id).check_password(password)


def assert_error_page(response, status: int, title: str) -> None:
    """The site's own error page for `status`, in its layout."""
    assert response.status_code == status, response.text[:500]
    assert f"<h1>{title}</h1>" in response.text
    assert 'class="navbar-brand"' in response.text


def assert_still_logged_in(browser: FlaskClient, username: str = "alice") -> None:
    page = browser.get("/edit_profile")
    assert page.status_code == 200
    assert logged_in_as(page) == username


def assert_logged_out(browser: FlaskClient) -> None:
    assert logged_in_as(browser.get("/")) is None
    response = browser.get("/edit_profile")
    assert response.headers["Location"] == "/auth/login?next=%2Fedit_profile"


# --- The pages, and who may see them -------------------------------------------------------


def test_edit_profile_links_to_the_three_pages(app, cast):
    page = log_in(app).get("/edit_profile").text
    for url, label in [
        (CHANGE_PASSWORD, "Change password"),
        (CHANGE_EMAIL, "Change email"),
        (DELETE_ACCOUNT, "Delete account"),
    ]:
        assert re.search(rf'<a [^>]*href="{url}">{label}</a>', page), label


@pytest.mark.parametrize(
    ("url", "title", "fields"),
    [
        (CHANGE_PASSWORD, "Change password", ["current_password", "password", "password2"]),
        (CHANGE_EMAIL, "Change email", ["current_password", "email"]),
        (DELETE_ACCOUNT, "Delete account", ["current_password"]),
    ],
)
def test_each_form_shows_its_fields(app, cast, url, title, fields):
    page = log_in(app).get(url)
    assert page.status_code == 200
    assert f"<h1>{title}</h1>" in page.text
    # The page's own form (the navigation has forms too: search, language).
    form = re.search(r'<form action="" method="post"\s+class="form".*?</form>', page.text, re.S)
    inputs = re.findall(r"<input [^>]*>", form.group(0))
    names = [re.search(r'name="([^"]+)"', tag).group(1) for tag in inputs]
    assert names == [*fields, "submit"]  # no csrf_token: the tests turn CSRF off
    # A password field never shows a value back.
    for tag in inputs:
        if 'type="password"' in tag:
            assert 'value=""' in tag, tag


@pytest.mark.parametrize("url", ACCOUNT_FORMS)
def test_visitors_are_sent_to_log_in(app, cast, client, url):
    """GET: to the login page, and back afterwards; POST: to the login page,
    changing nothing (a form's URL is no page to come back to)."""
    before = database_rows(app)
    response = client.get(url)
    assert response.headers["Location"] == "/auth/login?next=" + url.replace("/", "%2F")
    response = client.post(url, data=VALID[url])
    assert response.headers["Location"] == "/auth/login"
    assert alerts(client.get("/auth/login")) == [LOG_IN_FIRST, LOG_IN_FIRST]
    assert database_rows(app) == before


def test_after_logging_in_a_visitor_lands_on_the_form(app, cast, client):
    response = client.get(CHANGE_EMAIL)
    response = client.post(
        response.headers["Location"], data={"username": "alice", "password": PASSWORD}
    )
    assert response.headers["Location"] == CHANGE_EMAIL


# --- Change password -----------------------------------------------------------------------


def change_password(browser: FlaskClient, current=PASSWORD, new=NEW_PASSWORD, repeat=None):
    return browser.post(
        CHANGE_PASSWORD,
        data={
            "current_password": current,
            "password": new,
            "password2": new if repeat is None else repeat,
        },
    )


def test_a_wrong_current_password_changes_nothing(app, cast):
    browser = log_in(app)
    before = database_rows(app)
    response = change_password(browser, current=WRONG_PASSWORD)
    assert response.status_code == 200
    assert form_errors(response) == {"current_password": [NOT_YOUR_PASSWORD]}
    assert alerts(response) == []
    assert database_rows(app) == before
    assert password_is(app, cast["alice"], PASSWORD)
    assert_still_logged_in(browser)


@pytest.mark.parametrize(
    ("current", "new", "repeat", "errors"),
    [
        (PASSWORD, "seven77", None, {"password": [NEW_PASSWORD_LENGTH]}),
        (PASSWORD, "x" * 129, None, {"password": [NEW_PASSWORD_LENGTH]}),
        (PASSWORD, NEW_PASSWORD, "a-different-one", {"password2": [PASSWORDS_DIFFER]}),
        (PASSWORD, NEW_PASSWORD, NEW_PASSWORD.upper(), {"password2": [PASSWORDS_DIFFER]}),
        (PASSWORD, "", "", {"password": [REQUIRED], "password2": [REQUIRED]}),
        (
            WRONG_PASSWORD,
            "short",
            "shorter",
            {
                "current_password": [NOT_YOUR_PASSWORD],
                "password": [NEW_PASSWORD_LENGTH],
                "password2": [PASSWORDS_DIFFER],
            },
        ),
    ],
    ids=["7 characters", "129 characters", "mismatch", "mismatch in case", "empty", "all wrong"],
)
def test_the_new_password_follows_the_registration_rules(app, cast, current, new, repeat, errors):
    browser = log_in(app)
    before = database_rows(app)
    response = change_password(browser, current, new, repeat)
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert database_rows(app) == before
    assert_still_logged_in(browser)


@pytest.mark.parametrize("new", ["eight888", "😀" * 128], ids=["8 characters", "128 characters"])
def test_a_new_password_at_the_limits_is_accepted(app, cast, new):
    response = change_password(log_in(app), new=new)
    assert response.headers["Location"] == "/edit_profile"
    assert password_is(app, cast["alice"], new)


def test_changing_the_password(app, cast):
    """Only the new password logs in; every other browser of alice's is logged
    out, hers stays logged in; nobody else's login is touched."""
    here, elsewhere, bob = log_in(app), log_in(app), log_in(app, "bob")
    assert account(app, cast["alice"]).logins == 2

    response = change_password(here)
    assert response.headers["Location"] == "/edit_profile"
    page = here.get("/edit_profile")
    assert alerts(page) == [PASSWORD_CHANGED]
    assert logged_in_as(page) == "alice"

    assert_logged_out(elsewhere)
    assert_still_logged_in(bob, "bob")
    assert account(app, cast["alice"]).logins == 1  # this browser's new login
    assert account(app, cast["bob"]).logins == 1

    assert alerts(
        app.test_client().post("/auth/login", data={"username": "alice", "password": PASSWORD})
    ) == [INVALID_LOGIN]
    log_in(app, "alice", NEW_PASSWORD)


def test_a_remembered_login_gets_a_new_remember_me_cookie(app, cast):
    """The remember-me cookie names the login, which the change ends: this
    browser gets one for its new login, and a copy of the old one is dead."""
    here = log_in(app, remember=True)
    old_cookie = here.get_cookie("remember_token").value
    copy = app.test_client()
    copy.set_cookie("remember_token", old_cookie)
    assert logged_in_as(copy.get("/")) == "alice"  # the copy works until the change

    assert change_password(here).headers["Location"] == "/edit_profile"

    new_cookie = here.get_cookie("remember_token")
    assert new_cookie is not None and new_cookie.value != old_cookie
    # Without its session cookie (the browser was closed), the new cookie logs it in.
    here.delete_cookie("session")
    assert logged_in_as(here.get("/")) == "alice"
    assert_still_logged_in(here)

    for browser in (copy, app.test_client()):
        browser.set_cookie("remember_token", old_cookie)
        assert_logged_out(browser)


def test_a_login_that_was_not_remembered_gets_no_remember_me_cookie(app, cast):
    here = log_in(app)
    assert change_password(here).headers["Location"] == "/edit_profile"
    assert here.get_cookie("remember_token") is None
    assert_still_logged_in(here)


# --- Change email, mail off ----------------------------------------------------------------


def change_email(browser: FlaskClient, email: str, current: str = PASSWORD):
    return browser.post(CHANGE_EMAIL, data={"current_password": current, "email": email})


def test_without_mail_the_form_says_the_change_is_immediate(app, cast):
    text = page_text(log_in(app).get(CHANGE_EMAIL))
    assert "Your address now: alice@example.com" in text
    assert "it is saved as soon as you submit it." in text
    assert "We will mail a link" not in text


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("new@example.com", "new@example.com"),
        ("  New.Address@Example.com  ", "New.Address@Example.com"),  # spaces trimmed, case kept
        ("\uff4e\uff45\uff57@example.com", "new@example.com"),  # full-width letters folded
    ],
)
def test_without_mail_the_address_changes_at_once(app, cast, typed, stored):
    browser = log_in(app)
    response = change_email(browser, typed)
    assert response.headers["Location"] == "/edit_profile"
    page = browser.get("/edit_profile")
    assert alerts(page) == [email_changed(stored)]
    changed = account(app, cast["alice"])
    assert (changed.email, changed.email_key) == (stored, name_key(stored))
    assert changed.logins == 1  # no one is logged out by it
    assert f"Your address now: {stored}" in page_text(browser.get(CHANGE_EMAIL))


@pytest.mark.parametrize(
    ("theirs", "typed"),
    [
        ("bob@example.com", "bob@example.com"),
        ("bob@example.com", "BOB@Example.COM"),
        ("Émile@example.com", "ÉMILE@example.com"),  # not ASCII: not SQLite's lower()
        ("straße@example.com", "STRASSE@example.com"),  # casefold: ß is ss
        ("STRASSE@example.com", "straße@example.com"),
        ("bob@example.com", "\uff42\uff4f\uff42@example.com"),  # full-width letters
    ],
)
def test_an_address_another_account_uses_is_refused(app, cast, theirs, typed):
    with app.app_context():
        db.session.get(User, cast["bob"]).email = theirs
        db.session.commit()
    browser = log_in(app)
    before = database_rows(app)
    response = change_email(browser, typed)
    assert response.status_code == 200
    assert form_errors(response) == {"email": [EMAIL_TAKEN]}
    assert database_rows(app) == before


@pytest.mark.parametrize("typed", ["ALICE@EXAMPLE.COM", "Alice@example.com", "alice@EXAMPLE.com"])
def test_your_own_address_in_another_case_is_accepted(app, cast, typed):
    browser = log_in(app)
    assert change_email(browser, typed).headers["Location"] == "/edit_profile"
    assert alerts(browser.get("/edit_profile")) == [email_changed(typed)]
    changed = account(app, cast["alice"])
    assert (changed.email, changed.email_key) == (typed, "alice@example.com")


@pytest.mark.parametrize(
    "typed", ["alice@example.com", " alice@example.com ", "\uff41lice@example.com"]
)
def test_the_same_address_is_refused(app, cast, typed):
    browser = log_in(app)
    before = database_rows(app)
    response = change_email(browser, typed)
    assert response.status_code == 200
    assert form_errors(response) == {"email": [SAME_EMAIL]}
    assert database_rows(app) == before


@pytest.mark.parametrize(
    ("current", "email", "errors"),
    [
        (WRONG_PASSWORD, "new@example.com", {"current_password": [NOT_YOUR_PASSWORD]}),
        ("", "new@example.com", {"current_password": [REQUIRED]}),
        (PASSWORD, "", {"email": [REQUIRED]}),
        (PASSWORD, "new", {"email": [INVALID_EMAIL]}),
        (PASSWORD, "new@", {"email": [INVALID_EMAIL]}),
        (PASSWORD, "new@example..com", {"email": [INVALID_EMAIL]}),
        (
            WRONG_PASSWORD,
            "bob@example.com",
            {"current_password": [NOT_YOUR_PASSWORD], "email": [EMAIL_TAKEN]},
        ),
    ],
    ids=["wrong password", "no password", "no address", "no @", "no domain", "two dots", "both"],
)
def test_the_email_form_refuses(app, cast, current, email, errors):
    browser = log_in(app)
    before = database_rows(app)
    response = change_email(browser, email, current)
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert database_rows(app) == before
    assert_still_logged_in(browser)


@contextmanager
def just_before_saving(user_id: int, attribute: str, action: Callable[[], None]) -> Iterator[list]:
    """Run `action` once, when a session is about to write a new `attribute` of
    user `user_id`: after the form's checks passed, before the row is written.

    A "before_flush" hook on the app's sessions (every app's: they come from
    one factory), removed afterwards. The action runs on a thread of its own,
    as in another worker: there it gets its own app context, session and
    connection (a request made on this thread would join the one in progress).
    This thread waits for it. Yields a list that holds True once the action
    has run, for the test to check that the race really took place.
    """
    ran: list[bool] = []

    def before_flush(session, flush_context, instances) -> None:
        for changed in session.dirty:
            if (
                not ran
                and isinstance(changed, User)
                and changed.id == user_id
                and inspect(changed).attrs[attribute].history.has_changes()
            ):
                ran.append(True)
                with ThreadPoolExecutor(max_workers=1) as other_worker:
                    other_worker.submit(action).result(timeout=60)

    event.listen(db.session, "before_flush", before_flush)
    try:
        yield ran
    finally:
        event.remove(db.session, "before_flush", before_flush)


@pytest.mark.parametrize("rival", ["changes theirs", "registers"])
def test_losing_the_race_for_an_address_is_the_forms_error(app, cast, rival):
    """Two requests want one address, and both pass the form's check; the other
    commits first. The database's unique key on the folded address refuses
    alice's UPDATE, and she sees the form's own error: no 500, nothing saved.

    The other request really runs, through the app, on another thread with its
    own session and connection, in the moment between alice's check and her write.
    """
    here = log_in(app)
    bobs_browser, newcomer = log_in(app, "bob"), app.test_client()
    rival_answers = []

    def rival_takes_the_address():
        # Another spelling of the same address: only the folded key can clash.
        if rival == "changes theirs":
            answer = change_email(bobs_browser, "PRIZE@Example.com")
        else:
            answer = newcomer.post(
                "/auth/register",
                data={
                    "username": "dave",
                    "email": "PRIZE@Example.com",
                    "password": PASSWORD,
                    "password2": PASSWORD,
                },
            )
        rival_answers.append(answer)

    with just_before_saving(cast["alice"], "email", rival_takes_the_address) as ran:
        response = change_email(here, "prize@example.com")

    assert ran == [True]
    assert [answer.status_code for answer in rival_answers] == [302]
    assert response.status_code == 200
    assert form_errors(response) == {"email": [EMAIL_TAKEN]}
    assert alerts(response) == []
    assert account(app, cast["alice"]).email == "alice@example.com"
    with app.app_context():
        holder = db.session.scalar(User.select_by_email("prize@example.com"))
        expected = "bob" if rival == "changes theirs" else "dave"
        assert (holder.username, holder.email) == (expected, "PRIZE@Example.com")
    # The failed commit was rolled back: the next request is served as usual.
    assert_still_logged_in(here)
    assert change_email(here, "consolation@example.com").headers["Location"] == "/edit_profile"


# --- Change email, mail on -----------------------------------------------------------------


def confirmation_link(message) -> str:
    """The path of the link in a confirmation mail's plain-text part."""
    text = message.get_body(("plain",)).get_content()
    return re.search(r"http://localhost(/auth/confirm_email/[\w.-]+)", text).group(1)


def open_link(browser: FlaskClient, path: str):
    """Follow a confirmation link: the token goes into the session, out of the
    address; return the confirm page's answer."""
    response = browser.get(path)
    assert response.headers["Location"] == CONFIRM_EMAIL
    return browser.get(CONFIRM_EMAIL)


def assert_link_refused(browser: FlaskClient, path: str) -> None:
    """Opening the link, then pressing the button anyway: refused both times."""
    response = open_link(browser, path)
    assert response.headers["Location"] == "/"
    assert browser.post(CONFIRM_EMAIL).headers["Location"] == "/"
    assert alerts(browser.get("/")) == [LINK_REFUSED, LINK_REFUSED]


def reset_link(message) -> str:
    """The path of the link in a password reset mail's plain-text part."""
    text = message.get_body(("plain",)).get_content()
    return re.search(r"http://localhost(/auth/reset_password/[\w.-]+)", text).group(1)


def mails_sent(mail_server) -> list:
    outbox.drain()  # every queued mail has been handed to the server
    return mail_server.mailbox.messages


@pytest.mark.system
class TestWithMail:
    """Mail on (a real SMTP server with STARTTLS): the new address gets a link,
    and the address changes only when the link's page is confirmed."""

    @pytest.fixture
    def app(self, make_app, mail_server):
        # Neither BASE_URL nor TRUSTED_HOSTS, whatever the environment says:
        # links are then made only on a host naming this machine.
        return make_app(
            **mail_server.settings,
            MAIL_DEFAULT_SENDER="blog@example.com",
            BASE_URL=None,
            TRUSTED_HOSTS=None,
        )

    def ask_for_link(self, browser: FlaskClient, mail_server, email: str) -> str:
        """Send the form; return the path of the link mailed for it."""
        count = len(mail_server.mailbox.messages)
        response = change_email(browser, email)
        assert response.headers["Location"] == "/edit_profile"
        assert alerts(browser.get("/edit_profile")) == [link_sent(email)]
        return confirmation_link(mail_server.mailbox.wait_for(count + 1)[count])

    def test_the_new_address_confirms_the_change(self, app, cast, mail_server):
        here = log_in(app)
        text = page_text(here.get(CHANGE_EMAIL))
        assert (
            "We will mail a link to the new address. Your address changes when you open it." in text
        )

        response = change_email(here, "New.Address@example.com")
        assert response.headers["Location"] == "/edit_profile"
        assert alerts(here.get("/edit_profile")) == [link_sent("New.Address@example.com")]

        [message] = mail_server.mailbox.wait_for(1)
        assert mails_sent(mail_server) == [message]  # one mail, to the new address only
        assert mail_server.mailbox.envelopes[0].rcpt_tos == ["New.Address@example.com"]
        assert (message["To"], message["From"]) == ("New.Address@example.com", "blog@example.com")
        assert message["Subject"] == "Confirm your new email address"
        link = "http://localhost" + confirmation_link(message)
        html = message.get_body(("html",)).get_content()
        assert f'<a href="{link}">click here</a>' in html
        assert f"<p>{link}</p>" in html
        plain = message.get_body(("plain",)).get_content()
        assert "To make New.Address@example.com the address of your account" in plain
        assert "The link works once, for 24 hours." in plain
        waiting = account(app, cast["alice"])
        assert (waiting.email, waiting.pending_email) == (
            "alice@example.com",  # not yet
            "New.Address@example.com",
        )

        path = link.removeprefix("http://localhost")
        token = path.rpartition("/")[2]
        response = here.get(path)
        assert response.headers["Location"] == CONFIRM_EMAIL  # the token is out of the address
        with here.session_transaction() as session:
            assert session["email_change_token"] == token
        page = here.get(CONFIRM_EMAIL)
        assert page.status_code == 200
        assert "Make New.Address@example.com the address of the account alice?" in page_text(page)
        assert token not in page.text
        assert account(app, cast["alice"]).email == "alice@example.com"  # still not

        response = here.post(CONFIRM_EMAIL)
        assert response.headers["Location"] == "/"
        assert alerts(here.get("/")) == [email_changed("New.Address@example.com")]
        changed = account(app, cast["alice"])
        assert (changed.email, changed.email_key, changed.pending_email) == (
            "New.Address@example.com",
            "new.address@example.com",
            None,
        )
        with here.session_transaction() as session:
            assert "email_change_token" not in session
        assert_still_logged_in(here)

        # The link works once.
        assert_link_refused(here, path)
        assert account(app, cast["alice"]) == changed
        assert mails_sent(mail_server) == [message]

    def test_the_link_works_in_a_browser_that_is_not_logged_in(self, app, cast, mail_server):
        """The mail may be read on another device: the link is the proof, no login needed."""
        here = log_in(app)
        path = self.ask_for_link(here, mail_server, "phone@example.com")
        phone = app.test_client()
        assert "Make phone@example.com the address of the account alice?" in page_text(
            open_link(phone, path)
        )
        assert phone.post(CONFIRM_EMAIL).headers["Location"] == "/"
        assert alerts(phone.get("/")) == [email_changed("phone@example.com")]
        assert account(app, cast["alice"]).email == "phone@example.com"
        assert logged_in_as(phone.get("/")) is None
        assert_still_logged_in(here)

    def test_a_link_opened_while_logged_in_as_someone_else(self, app, cast, mail_server):
        """alice's link, opened in bob's browser (a shared computer): the link names
        the account, so alice's address changes, not bob's, and bob stays bob."""
        alice = log_in(app)
        path = self.ask_for_link(alice, mail_server, "alice.new@example.com")
        bobs_browser = log_in(app, "bob")
        bob_before = account(app, cast["bob"])

        page = open_link(bobs_browser, path)
        assert page.status_code == 200
        assert "Make alice.new@example.com the address of the account alice?" in page_text(page)
        assert logged_in_as(page) == "bob"
        assert bobs_browser.post(CONFIRM_EMAIL).headers["Location"] == "/"
        home = bobs_browser.get("/")
        assert alerts(home) == [email_changed("alice.new@example.com")]
        assert logged_in_as(home) == "bob"

        changed = account(app, cast["alice"])
        assert (changed.email, changed.email_key, changed.pending_email) == (
            "alice.new@example.com",
            "alice.new@example.com",
            None,
        )
        assert account(app, cast["bob"]) == bob_before
        assert_still_logged_in(bobs_browser, "bob")
        assert_still_logged_in(alice)

    def test_your_own_address_in_other_capitals_is_mailed_a_link(self, app, cast, mail_server):
        """ALICE@EXAMPLE.COM is alice's own mailbox (the same email_key), so it is no
        address "taken" by an account, and not the same text as hers either: like any
        new address, it is mailed a link, and it is stored as typed once confirmed."""
        here = log_in(app)
        response = change_email(here, "ALICE@EXAMPLE.COM")
        assert response.headers["Location"] == "/edit_profile"
        assert alerts(here.get("/edit_profile")) == [link_sent("ALICE@EXAMPLE.COM")]
        [message] = mail_server.mailbox.wait_for(1)
        assert mail_server.mailbox.envelopes[0].rcpt_tos == ["ALICE@EXAMPLE.COM"]
        assert message["To"] == "ALICE@EXAMPLE.COM"
        waiting = account(app, cast["alice"])
        assert (waiting.email, waiting.email_key, waiting.pending_email) == (
            "alice@example.com",
            "alice@example.com",
            "ALICE@EXAMPLE.COM",
        )
        assert waiting_for("ALICE@EXAMPLE.COM") in page_text(here.get(CHANGE_EMAIL))

        self.confirm(here, confirmation_link(message), "ALICE@EXAMPLE.COM")
        changed = account(app, cast["alice"])
        assert (changed.email, changed.email_key, changed.pending_email) == (
            "ALICE@EXAMPLE.COM",
            "alice@example.com",  # the same mailbox: the key is unchanged
            None,
        )
        assert mails_sent(mail_server) == [message]

    def confirm(self, browser: FlaskClient, path: str, email: str) -> None:
        """Open the link `path` and press the button: the address is now `email`."""
        assert open_link(browser, path).status_code == 200
        assert browser.post(CONFIRM_EMAIL).headers["Location"] == "/"
        assert alerts(browser.get("/")) == [email_changed(email)]

    def test_the_form_shows_the_address_waiting_for_its_link(self, app, cast, mail_server):
        here = log_in(app)
        assert "Waiting for you" not in page_text(here.get(CHANGE_EMAIL))

        first = self.ask_for_link(here, mail_server, "first@example.com")
        text = page_text(here.get(CHANGE_EMAIL))
        assert "Your address now: alice@example.com" in text
        assert waiting_for("first@example.com") in text
        assert account(app, cast["alice"]).pending_email == "first@example.com"

        self.ask_for_link(here, mail_server, "second@example.com")
        text = page_text(here.get(CHANGE_EMAIL))
        assert waiting_for("second@example.com") in text
        assert "first@example.com" not in text  # replaced, not added

        # The first link is dead: the page still waits for the second.
        assert_link_refused(here, first)
        assert waiting_for("second@example.com") in page_text(here.get(CHANGE_EMAIL))

    @pytest.mark.parametrize(
        "address",
        [
            "o'brien&co@example.com",  # characters HTML must escape
            # The longest address the form takes: 64 + 1 + 189 = 254 characters.
            "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com",
        ],
        ids=["HTML characters", "254 characters"],
    )
    def test_the_waiting_address_is_stored_and_shown_whole(self, app, cast, mail_server, address):
        here = log_in(app)
        path = self.ask_for_link(here, mail_server, address)
        assert account(app, cast["alice"]).pending_email == address
        # In the page's HTML escaped ("o&#39;brien&amp;co"), never as markup.
        assert waiting_for(str(escape(address))) in here.get(CHANGE_EMAIL).text
        self.confirm(here, path, address)
        changed = account(app, cast["alice"])
        assert (changed.email, changed.pending_email) == (address, None)

    def test_asking_for_another_address_kills_the_earlier_link(self, app, cast, mail_server):
        """A typo corrected at once leaves no live link at the mistyped address."""
        here = log_in(app)
        typo = self.ask_for_link(here, mail_server, "alcie@example.com")
        corrected = self.ask_for_link(here, mail_server, "alice@example.org")
        assert [m["To"] for m in mails_sent(mail_server)] == [
            "alcie@example.com",
            "alice@example.org",
        ]
        before = database_rows(app)
        assert_link_refused(here, typo)
        assert database_rows(app) == before
        assert account(app, cast["alice"]).email == "alice@example.com"

        self.confirm(here, corrected, "alice@example.org")
        changed = account(app, cast["alice"])
        assert (changed.email, changed.pending_email) == ("alice@example.org", None)
        assert "Waiting for you" not in page_text(here.get(CHANGE_EMAIL))
        # Neither link works now: the used one, nor the one it replaced.
        assert_link_refused(here, typo)
        assert_link_refused(here, corrected)
        assert account(app, cast["alice"]) == changed

    def test_going_back_to_the_old_address_does_not_revive_the_first_link(
        self, app, cast, mail_server
    ):
        """alice@example.com to b@example.com, then back: the first link was made
        while the account had the address it has again, and still is refused."""
        here = log_in(app)
        to_b = self.ask_for_link(here, mail_server, "b@example.com")
        self.confirm(here, to_b, "b@example.com")
        back_to_a = self.ask_for_link(here, mail_server, "alice@example.com")
        self.confirm(here, back_to_a, "alice@example.com")
        changed = account(app, cast["alice"])
        assert (changed.email, changed.pending_email) == ("alice@example.com", None)

        for used in (to_b, back_to_a):
            assert_link_refused(here, used)
        assert account(app, cast["alice"]) == changed
        assert len(mails_sent(mail_server)) == 2

    def test_a_change_without_mail_kills_the_waiting_link(self, app, cast, mail_server, make_app):
        """The link was mailed while mail was on; mail is turned off, and the
        address is changed at once: the link mailed before is refused."""
        here = log_in(app)
        path = self.ask_for_link(here, mail_server, "mailed@example.com")
        without_mail = make_app()
        browser = log_in(without_mail)
        assert waiting_for("mailed@example.com") in page_text(browser.get(CHANGE_EMAIL))
        assert change_email(browser, "direct@example.com").headers["Location"] == "/edit_profile"
        changed = account(app, cast["alice"])
        assert (changed.email, changed.pending_email) == ("direct@example.com", None)
        assert "Waiting for you" not in page_text(browser.get(CHANGE_EMAIL))

        assert_link_refused(here, path)
        assert account(app, cast["alice"]) == changed

    def test_a_password_change_kills_a_pending_link(self, app, cast, mail_server):
        """Whoever took over a logged-in browser asked for the link; the owner
        changed the password: the link is worth nothing now."""
        here = log_in(app)
        path = self.ask_for_link(here, mail_server, "intruder@example.com")
        assert change_password(here).headers["Location"] == "/edit_profile"
        here.get("/edit_profile")  # the flash
        assert_link_refused(here, path)
        assert account(app, cast["alice"]).email == "alice@example.com"

    @pytest.mark.parametrize(
        ("change", "new_email", "works"),
        [
            ("confirmed", "elsewhere@example.com", False),
            ("asked for only", "elsewhere@example.com", True),
            ("confirmed", "ALICE@Example.COM", True),  # the same mailbox, in capitals
        ],
        ids=["another address", "a change not confirmed", "the address in capitals"],
    )
    def test_a_reset_link_dies_when_the_address_changes(
        self, app, cast, mail_server, change, new_email, works
    ):
        """A reset link mailed to the old address is refused once the account
        has another one: whoever still reads the old mailbox can't take the
        account back with it. An address asked for but not confirmed, or the
        same one in other capitals, changes nothing for it."""
        visitor = app.test_client()
        response = visitor.post("/auth/reset_password_request", data={"email": "alice@example.com"})
        assert response.headers["Location"] == "/auth/login"
        [mail] = mail_server.mailbox.wait_for(1)
        assert mail["To"] == "alice@example.com"
        reset_path = reset_link(mail)

        here = log_in(app)
        link = self.ask_for_link(here, mail_server, new_email)
        if change == "confirmed":
            self.confirm(here, link, new_email)
        visitor.get("/auth/login")  # the reset request's flash, read

        response = visitor.get(reset_path)
        assert response.headers["Location"] == "/auth/reset_password"
        page = visitor.get("/auth/reset_password")
        new_password = {"password": NEW_PASSWORD, "password2": NEW_PASSWORD}
        if works:
            assert page.status_code == 200
            response = visitor.post("/auth/reset_password", data=new_password)
            assert response.headers["Location"] == "/auth/login"
            assert alerts(visitor.get("/auth/login")) == [RESET_DONE]
            assert password_is(app, cast["alice"], NEW_PASSWORD)
        else:
            assert page.headers["Location"] == "/auth/reset_password_request"
            response = visitor.post("/auth/reset_password", data=new_password)
            assert response.headers["Location"] == "/auth/reset_password_request"
            assert alerts(visitor.get("/auth/login")) == [RESET_REFUSED, RESET_REFUSED]
            assert password_is(app, cast["alice"], PASSWORD)
            assert_still_logged_in(here)

    def test_an_address_taken_before_the_confirmation(self, app, cast, mail_server):
        """Someone registers with the address between the mail and the click:
        the unique key refuses it, and the page says so; no 500."""
        here = log_in(app)
        path = self.ask_for_link(here, mail_server, "contested@example.com")
        with app.app_context():
            dave = add_user("dave", "Contested@Example.com").id
        assert open_link(here, path).status_code == 200
        response = here.post(CONFIRM_EMAIL)
        assert response.headers["Location"] == "/"
        assert alerts(here.get("/")) == [taken_meanwhile("contested@example.com")]
        assert account(app, cast["alice"]).email == "alice@example.com"
        assert account(app, dave).email == "Contested@Example.com"
        assert_still_logged_in(here)

    def test_a_refused_form_sends_no_mail(self, app, cast, mail_server):
        here = log_in(app)
        for email, current, errors in [
            ("bob@example.com", PASSWORD, {"email": [EMAIL_TAKEN]}),
            ("alice@example.com", PASSWORD, {"email": [SAME_EMAIL]}),
            ("new@example.com", WRONG_PASSWORD, {"current_password": [NOT_YOUR_PASSWORD]}),
        ]:
            response = change_email(here, email, current)
            assert (response.status_code, form_errors(response)) == (200, errors)
        assert mails_sent(mail_server) == []

    def test_no_mail_when_the_host_cannot_be_trusted(self, app, cast, mail_server, caplog):
        """A Host header any client can forge would put someone else's site in
        the link: no mail, the user is told, the log says why."""
        here = log_in(app)
        # The browser sends its session cookie to whatever host it talks to.
        here.set_cookie("session", here.get_cookie("session").value, domain="evil.example")
        before = database_rows(app)
        with caplog.at_level("WARNING", logger="blog.mail"):
            response = here.post(
                CHANGE_EMAIL,
                data={"current_password": PASSWORD, "email": "new@example.com"},
                headers={"Host": "evil.example"},
            )
        assert response.status_code == 200
        assert alerts(response) == [MAIL_NOT_SENT]
        assert form_errors(response) == {}
        assert mails_sent(mail_server) == []
        assert database_rows(app) == before
        assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
            (
                "blog.mail",
                "WARNING",
                "Email change confirmation not mailed: the request was addressed to host "
                "'evil.example', which any client can forge, so a link on it could hand the "
                "token to someone else. Set BASE_URL to the site's address, or TRUSTED_HOSTS "
                "to the host names it serves.",
            )
        ]

    def test_base_url_makes_the_link_whatever_the_host(self, make_app, mail_server):
        app = make_app(
            **mail_server.settings,
            MAIL_DEFAULT_SENDER="blog@example.com",
            BASE_URL="https://blog.example.com/",
        )
        with app.app_context():
            add_user("alice")
        here = log_in(app)
        here.set_cookie("session", here.get_cookie("session").value, domain="evil.example")
        response = here.post(
            CHANGE_EMAIL,
            data={"current_password": PASSWORD, "email": "new@example.com"},
            headers={"Host": "evil.example"},
        )
        assert response.status_code == 302
        text = mail_server.mailbox.wait_for(1)[0].get_body(("plain",)).get_content()
        assert re.search(r"^https://blog\.example\.com/auth/confirm_email/[\w.-]+\r?$", text, re.M)
        assert "evil.example" not in text


# --- Confirmation links that must not work (made here, without mail) ----------------------


def link_for(app: Flask, user_id: int, email: str) -> str:
    """The path a confirmation mail would carry, made as the app makes it: the
    account now waits for `email` (its pending_email), and the token names it."""
    with app.app_context():
        user = db.session.get(User, user_id)
        user.pending_email = email
        db.session.commit()
        return f"/auth/confirm_email/{email_change_token(user, email)}"


@pytest.mark.parametrize(
    ("age", "works"),
    [
        (Config.EMAIL_CHANGE_TOKEN_MAX_AGE - 60, True),
        (Config.EMAIL_CHANGE_TOKEN_MAX_AGE + 1, False),
        (30 * 24 * 60 * 60, False),
        (-60 * 60, False),  # made in the future: a clock or a key gone wrong
    ],
    ids=["a minute short of a day", "a day and a second", "a month", "an hour from now"],
)
def test_an_old_link_has_expired(app, cast, monkeypatch, age, works):
    """The token carries the time it was made (itsdangerous's timestamp): made
    with the clock set back by `age` seconds, it is checked at the real time."""
    made_at = int(time.time()) - age
    with monkeypatch.context() as clock:
        clock.setattr(TimestampSigner, "get_timestamp", lambda signer: made_at)
        path = link_for(app, cast["alice"], "new@example.com")
    browser = log_in(app)
    if works:
        assert open_link(browser, path).status_code == 200
        assert browser.post(CONFIRM_EMAIL).headers["Location"] == "/"
        assert account(app, cast["alice"]).email == "new@example.com"
    else:
        assert_link_refused(browser, path)
        assert account(app, cast["alice"]).email == "alice@example.com"


def signed(app: Flask, payload, salt: str = "email-change", key: str | None = None) -> str:
    """A token with any payload, signed with the site's key (or `key`): what only
    someone holding SECRET_KEY could make, for the checks after the signature's."""
    with app.app_context():
        serializer = _serializer(salt) if key is None else URLSafeTimedSerializer(key, salt=salt)
        return serializer.dumps(payload)


def tamper(token: str) -> str:
    return token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")


BAD_TOKENS = {
    "signature changed": lambda app, good, ids: tamper(good),
    "payload changed": lambda app, good, ids: (
        good[:5] + ("B" if good[5] == "A" else "A") + good[6:]
    ),
    "not a token": lambda app, good, ids: "not-a-token",
    "5000 characters": lambda app, good, ids: "x" * 5000,
    "another key": lambda app, good, ids: signed(
        app, {"id": ids["alice"], "email": "new@example.com"}, key="another-secret-key"
    ),
    "a reset token": lambda app, good, ids: reset_token_of(app, ids["alice"]),
    "a list": lambda app, good, ids: signed(app, [ids["alice"], "new@example.com"]),
    "a string id": lambda app, good, ids: signed(app, {"id": str(ids["alice"])}),
    "no such user": lambda app, good, ids: signed(app, {"id": 10**9, "email": "new@example.com"}),
    "no address": lambda app, good, ids: copy_payload(app, good, email=None),
    "a number for an address": lambda app, good, ids: copy_payload(app, good, email=5),
    "another user's": lambda app, good, ids: copy_payload(app, good, id=ids["bob"]),
    "another address": lambda app, good, ids: copy_payload(app, good, email="other@example.com"),
    "the address in capitals": lambda app, good, ids: copy_payload(
        app, good, email="NEW@EXAMPLE.COM"
    ),
    "no password digest": lambda app, good, ids: copy_payload(app, good, pw=None),
}


def reset_token_of(app: Flask, user_id: int) -> str:
    with app.app_context():
        return reset_token(db.session.get(User, user_id))


def copy_payload(app: Flask, token: str, **changes) -> str:
    """`token`'s payload with `changes` (None removes a key), signed again."""
    with app.app_context():
        payload = _serializer("email-change").loads(token)
    payload = {**payload, **changes}
    return signed(app, {key: value for key, value in payload.items() if value is not None})


@pytest.mark.parametrize("spoil", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
def test_a_spoiled_link_is_refused(app, cast, spoil):
    good = link_for(app, cast["alice"], "new@example.com").rpartition("/")[2]
    browser = log_in(app)
    before = database_rows(app)
    assert_link_refused(browser, f"/auth/confirm_email/{spoil(app, good, cast)}")
    assert database_rows(app) == before
    # The good one still works: the refusals were the spoiling's doing.
    assert open_link(browser, f"/auth/confirm_email/{good}").status_code == 200


@pytest.mark.parametrize("user_id", [0, -1, 2**31, 2**63, True, 1.0, "1"])
def test_a_signed_link_naming_an_id_no_user_can_have_is_refused(app, cast, user_id):
    """Only someone holding SECRET_KEY could make these: still a refusal, not a 500
    (an id past the id column's 32 bits would fail the lookup itself)."""
    path = f"/auth/confirm_email/{signed(app, {'id': user_id, 'email': 'new@example.com'})}"
    assert_link_refused(log_in(app), path)


@pytest.mark.parametrize(
    ("path", "status", "title", "message"),
    [
        ("/auth/confirm_email/%00", 400, "Bad request", NUL_MESSAGE),
        ("/auth/confirm_email/a%2Fb", 404, "Page not found", "Sorry, that page doesn't exist."),
        ("/auth/confirm_email/", 404, "Page not found", "Sorry, that page doesn't exist."),
    ],
)
def test_hostile_link_paths_are_error_pages(app, cast, path, status, title, message):
    browser = log_in(app)
    response = browser.get(path)
    assert_error_page(response, status, title)
    assert message in page_text(response)
    with browser.session_transaction() as session:
        assert "email_change_token" not in session


@pytest.mark.parametrize("path", ["/auth/confirm_email/%FF%FE", "/auth/confirm_email/%C3%A9"])
def test_a_link_that_is_not_ascii_is_refused(app, cast, path):
    assert_link_refused(log_in(app), path)


def test_the_confirm_page_without_a_link(app, cast, client):
    """Nothing in the session: the page refuses, for a visitor and for alice."""
    for browser in (client, log_in(app)):
        assert browser.get(CONFIRM_EMAIL).headers["Location"] == "/"
        assert browser.post(CONFIRM_EMAIL).headers["Location"] == "/"
        assert alerts(browser.get("/")) == [LINK_REFUSED, LINK_REFUSED]
    assert account(app, cast["alice"]).email == "alice@example.com"


def test_a_link_dies_when_the_address_changes_another_way(app, cast):
    path = link_for(app, cast["alice"], "later@example.com")
    browser = log_in(app)
    assert change_email(browser, "sooner@example.com").headers["Location"] == "/edit_profile"
    browser.get("/edit_profile")  # the flash
    assert_link_refused(browser, path)
    assert account(app, cast["alice"]).email == "sooner@example.com"


def test_a_link_for_a_deleted_account_is_refused(app, cast):
    path = link_for(app, cast["alice"], "new@example.com")
    browser = log_in(app)
    assert browser.post(DELETE_ACCOUNT, data=VALID[DELETE_ACCOUNT]).status_code == 302
    browser.get("/")  # the flash
    assert_link_refused(browser, path)


# --- Delete account ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "errors"),
    [
        (WRONG_PASSWORD, {"current_password": [NOT_YOUR_PASSWORD]}),
        (PASSWORD.upper(), {"current_password": [NOT_YOUR_PASSWORD]}),
        ("", {"current_password": [REQUIRED]}),
    ],
    ids=["wrong", "wrong case", "empty"],
)
def test_a_wrong_password_deletes_nothing(app, cast, current, errors):
    browser = log_in(app)
    before = database_rows(app)
    response = browser.post(DELETE_ACCOUNT, data={"current_password": current})
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert database_rows(app) == before
    kept = account(app, cast["alice"])
    assert (kept.username, kept.posts, kept.follows, kept.logins) == ("alice", 3, 2, 1)
    assert_still_logged_in(browser)


def test_deleting_an_account(app, cast):
    """Her posts, her follows both ways and every login of hers go with her;
    this browser and her others are logged out; bob's and carol's rows stay,
    and every page that showed her still works, without her."""
    here, elsewhere, bobs_browser = log_in(app), log_in(app, remember=True), log_in(app, "bob")
    remembered = elsewhere.get_cookie("remember_token").value
    bob_before, carol_before = account(app, cast["bob"]), account(app, cast["carol"])
    assert account(app, cast["alice"]).posts == 3
    assert "post 3 by alice" in bobs_browser.get("/").text  # bob's timeline shows hers

    response = here.post(DELETE_ACCOUNT, data={"current_password": PASSWORD})
    assert response.headers["Location"] == "/"
    page = here.get("/")
    assert alerts(page) == [ACCOUNT_DELETED]
    assert logged_in_as(page) is None

    assert account(app, cast["alice"]) is None  # and no post, follow or login of hers
    # bob lost his follow of alice and hers of him, nothing else.
    assert account(app, cast["bob"]) == Account(
        **{**bob_before.__dict__, "follows": bob_before.follows - 2}
    )
    assert account(app, cast["carol"]) == carol_before
    with app.app_context():
        bob_follows = db.session.execute(select(followers.c.follower_id, followers.c.followed_id))
        assert list(map(tuple, bob_follows)) == [(cast["bob"], cast["carol"])]

    assert_logged_out(here)
    assert_logged_out(elsewhere)  # its session, and its remember-me cookie alone
    alone = app.test_client()
    alone.set_cookie("remember_token", remembered)
    assert_logged_out(alone)

    for url in ["/", "/explore", "/user/bob", "/user/bob/followers", "/user/bob/following"]:
        page = bobs_browser.get(url)
        assert page.status_code == 200, url
        assert "alice" not in page.text, url
    assert "post 2 by bob" in bobs_browser.get("/").text
    assert "carol" in bobs_browser.get("/user/bob/following").text
    assert "post 1 by carol" in app.test_client().get("/explore").text
    assert_error_page(bobs_browser.get("/user/alice"), 404, "Page not found")
    assert_error_page(bobs_browser.get("/user/alice/followers"), 404, "Page not found")


def connections_waiting_for_a_lock(engine) -> int:
    """How many connections to this PostgreSQL database are waiting for a lock."""
    with engine.connect() as connection:
        return connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )


@dataclass
class Race:
    """How a follow sent while an account was being deleted went."""

    deletion: TestResponse  # the answer to the deletion's POST
    follow: TestResponse | Exception  # the follow's answer, or what it raised (a 500)
    follow_waited: bool  # seen waiting for a lock before the deletion went on


def follow_while_deleting(
    app: Flask, deleting: FlaskClient, following: FlaskClient, url: str, data: dict | None = None
) -> Race:
    """POST the delete form in `deleting`; at its last statement (her posts,
    follows and logins deleted, her row not yet, nothing committed), POST
    `url` (a follow; or a post, with `data`) in `following`, on a thread of its own with its own
    connection, as another worker would. The deletion goes on once the follow
    is seen waiting for a lock, or is done; at most 30 seconds each way.
    """
    with app.app_context():
        engine = db.engine
    answers, waited = [], []

    def follow() -> None:
        try:
            answers.append(following.post(url, data=data))
        except Exception as error:  # the test app lets it through: a 500 in production
            answers.append(error)

    rival = threading.Thread(target=follow)

    def start_the_follow_before_her_row_goes(conn, cursor, statement, *args) -> None:
        if waited or not statement.startswith('DELETE FROM "user"'):
            return
        rival.start()
        wait_until(
            lambda: not rival.is_alive() or connections_waiting_for_a_lock(engine) > 0,
            timeout=30,
            message="the follow to wait for a lock",
        )
        waited.append(rival.is_alive())

    event.listen(engine, "before_cursor_execute", start_the_follow_before_her_row_goes)
    try:
        deletion = deleting.post(DELETE_ACCOUNT, data={"current_password": PASSWORD})
    finally:
        event.remove(engine, "before_cursor_execute", start_the_follow_before_her_row_goes)
        if rival.ident is not None:
            rival.join(timeout=30)
    assert not rival.is_alive(), "the follow is still waiting"
    [answer] = answers
    return Race(deletion, answer, waited == [True])


only_on_postgresql = pytest.mark.skipif(
    not ON_POSTGRESQL,
    reason="SQLite runs one writing transaction at a time: no follow can come in between",
)
# Who follows whom while alice deletes her account (neither follow exists yet).
FOLLOWS_DURING_DELETION = pytest.mark.parametrize(
    ("rival", "url"),
    [
        ("carol", "/follow/alice"),
        ("alice", "/follow/carol"),
    ],
    ids=["someone follows her", "she follows someone in another tab"],
)


@only_on_postgresql
@FOLLOWS_DURING_DELETION
def test_a_follow_made_while_the_account_is_deleted_waits_and_fails(app, cast, rival, url):
    """The deletion locks her row first, so a follow committed meanwhile (of
    her, or by her) waits for it; the account goes, and the follow, whose user
    is gone, fails in its own request, without a 500. (Without the lock the
    follow would get in first, and the deletion's last DELETE would fail on
    the follow's foreign key: a 500 for her.)"""
    here, rivals_browser = log_in(app), log_in(app, rival)
    race = follow_while_deleting(app, here, rivals_browser, url)
    assert race.follow_waited

    assert race.deletion.headers["Location"] == "/"
    assert alerts(here.get("/")) == [ACCOUNT_DELETED]
    assert account(app, cast["alice"]) is None  # no post, follow or login of hers left
    with app.app_context():
        follows = db.session.execute(select(followers.c.follower_id, followers.c.followed_id))
        assert list(map(tuple, follows)) == [(cast["bob"], cast["carol"])]

    assert not isinstance(race.follow, Exception), f"the follow failed with {race.follow!r}"
    profile = url.replace("/follow/", "/user/")
    assert (race.follow.status_code, race.follow.headers["Location"]) == (302, profile)
    page = rivals_browser.get(profile)
    if rival == "carol":
        assert_error_page(page, 404, "Page not found")  # alice is gone
        assert_still_logged_in(rivals_browser, "carol")
    else:
        assert page.status_code == 200
        assert logged_in_as(page) is None  # her other tab is logged out too


@only_on_postgresql
@FOLLOWS_DURING_DELETION
def test_a_follow_that_failed_for_a_deleted_account_is_not_announced(app, cast, rival, url):
    """Whoever sent the follow isn't told it was made: it wasn't."""
    here, rivals_browser = log_in(app), log_in(app, rival)
    race = follow_while_deleting(app, here, rivals_browser, url)
    assert not isinstance(race.follow, Exception), f"the follow failed with {race.follow!r}"
    assert alerts(rivals_browser.get(race.follow.headers["Location"])) == []


@only_on_postgresql
def test_a_post_written_while_the_account_is_deleted_is_refused_kindly(app, cast):
    """Her other tab posts while the deletion runs: the post waits for her row's
    lock, then fails on its foreign key; that tab says so, with no 500, and
    nothing of hers is left."""
    here, other_tab = log_in(app), log_in(app)
    race = follow_while_deleting(app, here, other_tab, "/", data={"post": "One last word"})
    assert race.follow_waited
    assert race.deletion.headers["Location"] == "/"
    assert account(app, cast["alice"]) is None
    assert not isinstance(race.follow, Exception), f"the post failed with {race.follow!r}"
    assert (race.follow.status_code, race.follow.headers["Location"]) == (302, "/")
    assert alerts(other_tab.get("/")) == [
        ("warning", "Your account no longer exists: the post was not saved.")
    ]


def test_the_username_is_free_again(app, cast):
    """A new account may take the name (and address); it gets an id of its own
    (alice's was the highest: SQLite would hand it out again without
    AUTOINCREMENT), starts empty, and the old account's cookies log nobody in."""
    old = log_in(app, remember=True)
    old_remember = old.get_cookie("remember_token").value
    old_session = old.get_cookie("session").value
    assert old.post(DELETE_ACCOUNT, data={"current_password": PASSWORD}).status_code == 302

    newcomer = app.test_client()
    response = newcomer.post(
        "/auth/register",
        data={
            "username": "Alice",
            "email": "alice@example.com",
            "password": NEW_PASSWORD,
            "password2": NEW_PASSWORD,
        },
    )
    assert response.headers["Location"] == "/auth/login"
    with app.app_context():
        new_id = db.session.scalar(User.select_by_username("alice")).id
    assert new_id > cast["alice"]  # a new id, on every database: ids are never reused
    assert account(app, new_id) == Account(
        "Alice", "alice@example.com", "alice@example.com", None,
        account(app, new_id).password_hash, posts=0, follows=0, logins=0,
    )  # fmt: skip
    profile = newcomer.get("/user/alice")
    assert profile.status_code == 200
    assert "post 1 by alice" not in profile.text

    for cookie in [("remember_token", old_remember), ("session", old_session)]:
        browser = app.test_client()
        browser.set_cookie(*cookie)
        assert_logged_out(browser)
    log_in(app, "alice", NEW_PASSWORD)


# --- The rate limit on password checks ----------------------------------------------------


def assert_too_many_requests(response) -> None:
    assert_error_page(response, 429, "Too many requests")
    assert 0 <= int(response.headers["Retry-After"]) <= 60


def assert_wrong_password(response) -> None:
    """The form again, with one error: the current password's (what FAILING gets)."""
    assert response.status_code == 200, response.status
    assert form_errors(response) == {"current_password": [NOT_YOUR_PASSWORD]}


def test_the_three_forms_share_one_count_of_failures(make_app):
    """A failure on each form, and the fourth try on any of them is refused,
    with the right password too; showing the forms is never limited."""
    app = make_app(AUTH_RATE_LIMIT_PER_ACCOUNT="3 per minute")
    with app.app_context():
        alice = add_user("alice").id
    browser = log_in(app)
    for url in ACCOUNT_FORMS:
        assert_wrong_password(browser.post(url, data=FAILING[url]))
    before = database_rows(app)
    for url in ACCOUNT_FORMS:
        assert_too_many_requests(browser.post(url, data=FAILING[url]))
        assert_too_many_requests(browser.post(url, data=VALID[url]))
        assert browser.get(url).status_code == 200
    assert database_rows(app) == before
    assert password_is(app, alice, PASSWORD)
    assert_still_logged_in(browser)


def test_successful_posts_do_not_count(make_app):
    """Against a limit of 3: two failures, five changes that go through (each one
    stored), and a third failure is still answered; the fourth is not."""
    app = make_app(AUTH_RATE_LIMIT_PER_ACCOUNT="3 per minute")
    with app.app_context():
        alice = add_user("alice").id
    browser = log_in(app)
    assert_wrong_password(browser.post(CHANGE_EMAIL, data=FAILING[CHANGE_EMAIL]))
    assert_wrong_password(browser.post(CHANGE_PASSWORD, data=FAILING[CHANGE_PASSWORD]))
    assert account(app, alice).email == "alice@example.com"
    assert password_is(app, alice, PASSWORD)

    for number in range(3):
        address = f"new{number}@example.com"
        assert change_email(browser, address).headers["Location"] == "/edit_profile"
        assert alerts(browser.get("/edit_profile")) == [email_changed(address)]
        assert account(app, alice).email == address
    for current, new in [(PASSWORD, "password-two"), ("password-two", "password-three")]:
        assert change_password(browser, current, new).headers["Location"] == "/edit_profile"
        assert alerts(browser.get("/edit_profile")) == [PASSWORD_CHANGED]
        assert password_is(app, alice, new)

    assert_wrong_password(browser.post(DELETE_ACCOUNT, data=FAILING[DELETE_ACCOUNT]))
    assert_too_many_requests(browser.post(DELETE_ACCOUNT, data=FAILING[DELETE_ACCOUNT]))
    changed = account(app, alice)  # not deleted
    assert changed.email == "new2@example.com"
    assert password_is(app, alice, "password-three")


# Answers to a typo in the new password or address: none of them counts.
TYPOS = [
    (
        CHANGE_PASSWORD,
        {"password": "seven77", "password2": "seven77"},
        {"password": [NEW_PASSWORD_LENGTH]},
    ),
    (CHANGE_PASSWORD, {"password2": "a-different-one"}, {"password2": [PASSWORDS_DIFFER]}),
    (
        CHANGE_PASSWORD,
        {"password": "", "password2": ""},
        {"password": [REQUIRED], "password2": [REQUIRED]},
    ),
    (
        CHANGE_PASSWORD,
        {"password": "x" * 129, "password2": "x" * 129},
        {"password": [NEW_PASSWORD_LENGTH]},
    ),
    (CHANGE_EMAIL, {"email": "new@"}, {"email": [INVALID_EMAIL]}),
    (CHANGE_EMAIL, {"email": ""}, {"email": [REQUIRED]}),
    (CHANGE_EMAIL, {"email": " alice@example.com "}, {"email": [SAME_EMAIL]}),
]

# Both limits low, or one of them: each counts the same things.
LOW_LIMITS = {
    "per account": {
        "AUTH_RATE_LIMIT_PER_ACCOUNT": "3 per minute",
        "AUTH_RATE_LIMIT_PER_CLIENT": "100 per minute",
    },
    "per client": {
        "AUTH_RATE_LIMIT_PER_ACCOUNT": "100 per minute",
        "AUTH_RATE_LIMIT_PER_CLIENT": "3 per minute",
    },
}


@pytest.mark.parametrize("limits", LOW_LIMITS.values(), ids=LOW_LIMITS.keys())
def test_typos_in_the_new_password_or_address_cost_nothing(make_app, limits):
    """Seven typos, twice over, with the right current password, against a
    limit of 3: each one gets its form error, and then the changes go through."""
    app = make_app(**limits)
    with app.app_context():
        alice = add_user("alice").id
    browser = log_in(app)
    before = database_rows(app)
    for _ in range(2):
        for url, fields, errors in TYPOS:
            response = browser.post(url, data={**VALID[url], **fields})
            assert response.status_code == 200, (url, fields)
            assert form_errors(response) == errors, (url, fields)
    assert database_rows(app) == before
    assert change_email(browser, "new@example.com").headers["Location"] == "/edit_profile"
    assert change_password(browser).headers["Location"] == "/edit_profile"
    changed = account(app, alice)
    assert (changed.email, password_is(app, alice, NEW_PASSWORD)) == ("new@example.com", True)


@pytest.mark.parametrize("limits", LOW_LIMITS.values(), ids=LOW_LIMITS.keys())
def test_saying_an_address_is_taken_counts(make_app, limits):
    """Each answer that an address has an account counts, with the right
    password too: the form can't be used to test address after address. A
    POST with a wrong password as well counts once, not twice."""
    app = make_app(**limits)
    with app.app_context():
        alice = add_user("alice").id
        add_user("bob")
    browser = log_in(app)
    response = change_email(browser, "bob@example.com", WRONG_PASSWORD)
    assert form_errors(response) == {
        "current_password": [NOT_YOUR_PASSWORD],
        "email": [EMAIL_TAKEN],
    }
    for typed in ("bob@example.com", "BOB@example.com"):
        assert form_errors(change_email(browser, typed)) == {"email": [EMAIL_TAKEN]}
    before = database_rows(app)
    assert_too_many_requests(change_email(browser, "carol@example.com"))
    assert_too_many_requests(change_email(browser, "bob@example.com"))
    assert_too_many_requests(change_password(browser))
    assert browser.get(CHANGE_EMAIL).status_code == 200
    assert database_rows(app) == before
    assert account(app, alice).email == "alice@example.com"


@pytest.mark.system
def test_each_confirmation_mail_counts(make_app, mail_server):
    """Nobody can have the site mail an address over and over: with a limit of
    2, the third mail asked for is the 429 page, and no mail goes out for it.
    A mail that could not be sent (no trusted host for its link) costs nothing."""
    app = make_app(
        **mail_server.settings,
        MAIL_DEFAULT_SENDER="blog@example.com",
        BASE_URL=None,
        TRUSTED_HOSTS=None,
        AUTH_RATE_LIMIT_PER_ACCOUNT="2 per minute",
    )
    with app.app_context():
        alice = add_user("alice").id
    browser = log_in(app)
    # Sent to a host a link can't be made on, the session cookie along.
    browser.set_cookie("session", browser.get_cookie("session").value, domain="evil.example")
    for _ in range(3):
        response = browser.post(
            CHANGE_EMAIL, data=VALID[CHANGE_EMAIL], headers={"Host": "evil.example"}
        )
        assert (response.status_code, alerts(response)) == (200, [MAIL_NOT_SENT])
        assert form_errors(response) == {}
    assert mails_sent(mail_server) == []
    assert account(app, alice).pending_email is None

    for address in ("first@example.com", "second@example.com"):
        assert change_email(browser, address).headers["Location"] == "/edit_profile"
        assert alerts(browser.get("/edit_profile")) == [link_sent(address)]
        waiting = account(app, alice)
        assert (waiting.email, waiting.pending_email) == ("alice@example.com", address)
    assert_too_many_requests(change_email(browser, "third@example.com"))
    assert [m["To"] for m in mails_sent(mail_server)] == [
        "first@example.com",
        "second@example.com",
    ]
    waiting = account(app, alice)
    assert (waiting.email, waiting.pending_email) == ("alice@example.com", "second@example.com")


@pytest.mark.system
def test_a_mail_server_refusing_connections(make_app, caplog):
    """Mail on, but nothing listens on the mail server's port. The request only
    queues the mail, so the user is told the link was sent, and the address
    waits for it; the outbox's failure goes to the log. Each attempt counts
    against the limit all the same (2 here): the site did try to mail."""
    app = make_app(
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=free_port(),  # nothing listens there
        MAIL_USE_TLS=False,
        MAIL_USE_SSL=False,
        MAIL_USERNAME=None,
        MAIL_TIMEOUT=2,
        MAIL_DEFAULT_SENDER="blog@example.com",
        BASE_URL=None,
        TRUSTED_HOSTS=None,
        AUTH_RATE_LIMIT_PER_ACCOUNT="2 per minute",
    )
    with app.app_context():
        alice = add_user("alice").id
    browser = log_in(app)
    with caplog.at_level("WARNING", logger="blog.mail"):
        for address in ("first@example.com", "second@example.com"):
            response = change_email(browser, address)
            assert response.headers["Location"] == "/edit_profile"
            assert alerts(browser.get("/edit_profile")) == [link_sent(address)]
            waiting = account(app, alice)
            assert (waiting.email, waiting.pending_email) == ("alice@example.com", address)
        assert waiting_for("second@example.com") in page_text(browser.get(CHANGE_EMAIL))
        assert_too_many_requests(change_email(browser, "third@example.com"))
        outbox.drain()  # the mails queued have been tried
    waiting = account(app, alice)
    assert (waiting.email, waiting.pending_email) == ("alice@example.com", "second@example.com")
    # What the operating system says ("[Errno 111] Connection refused" on Linux).
    refused = (
        f"refused: {ConnectionRefusedError(errno.ECONNREFUSED, os.strerror(errno.ECONNREFUSED))}"
    )
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        ("blog.mail", "ERROR", f"Mail to first@example.com not sent: {refused}"),
        ("blog.mail", "ERROR", f"Mail to second@example.com not sent: {refused}"),
    ]


def browser_at(app: Flask, address: str, username: str) -> FlaskClient:
    """A browser on the client address `address`, logged in as `username`."""
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = address
    response = browser.post("/auth/login", data={"username": username, "password": PASSWORD})
    assert response.headers["Location"] == "/"
    return browser


def test_the_count_per_account_follows_the_user_across_addresses(make_app):
    app = make_app(
        AUTH_RATE_LIMIT_PER_ACCOUNT="3 per minute", AUTH_RATE_LIMIT_PER_CLIENT="100 per minute"
    )
    with app.app_context():
        add_user("alice")
        add_user("bob")
    laptop, phone = browser_at(app, "10.0.0.1", "alice"), browser_at(app, "10.0.0.2", "alice")
    before = database_rows(app)
    for browser in (laptop, laptop, phone):
        assert_wrong_password(browser.post(CHANGE_PASSWORD, data=FAILING[CHANGE_PASSWORD]))
    for browser in (laptop, phone):
        assert_too_many_requests(browser.post(CHANGE_EMAIL, data=FAILING[CHANGE_EMAIL]))
    # Another account, on the laptop's address, has its own count.
    bob = browser_at(app, "10.0.0.1", "bob")
    assert_wrong_password(bob.post(CHANGE_EMAIL, data=FAILING[CHANGE_EMAIL]))
    rows = database_rows(app)
    # bob's login is the one new row: no password, no address changed.
    assert rows["user"] == before["user"]
    assert set(before["user_session"]) < set(rows["user_session"])
    assert len(rows["user_session"]) == len(before["user_session"]) + 1


def test_the_count_per_client_covers_every_account_on_it(make_app):
    app = make_app(
        AUTH_RATE_LIMIT_PER_ACCOUNT="100 per minute", AUTH_RATE_LIMIT_PER_CLIENT="3 per minute"
    )
    with app.app_context():
        add_user("alice")
        add_user("bob")
    alice, bob = browser_at(app, "10.0.0.1", "alice"), browser_at(app, "10.0.0.1", "bob")
    before = database_rows(app)
    for browser in (alice, alice, bob):
        assert_wrong_password(browser.post(DELETE_ACCOUNT, data=FAILING[DELETE_ACCOUNT]))
    for browser in (alice, bob):
        assert_too_many_requests(browser.post(CHANGE_PASSWORD, data=FAILING[CHANGE_PASSWORD]))
    # The same account from another address is not held back.
    elsewhere = browser_at(app, "10.0.0.2", "alice")
    assert_wrong_password(elsewhere.post(CHANGE_PASSWORD, data=FAILING[CHANGE_PASSWORD]))
    rows = database_rows(app)
    # The second login of alice's is the one new row: both accounts are there, unchanged.
    assert rows["user"] == before["user"]
    assert set(before["user_session"]) < set(rows["user_session"])
    assert len(rows["user_session"]) == len(before["user_session"]) + 1


# --- CSRF ----------------------------------------------------------------------------------


@pytest.fixture
def csrf_app(make_app):
    return make_app(WTF_CSRF_ENABLED=True)


def log_in_with_token(app: Flask) -> FlaskClient:
    browser = app.test_client()
    token = csrf_token(browser.get("/auth/login"))
    response = browser.post(
        "/auth/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token}
    )
    assert response.headers["Location"] == "/"
    return browser


@pytest.mark.parametrize("url", ACCOUNT_FORMS)
def test_a_form_without_its_csrf_token_is_refused(csrf_app, url):
    with csrf_app.app_context():
        add_user("alice")
    browser = log_in_with_token(csrf_app)
    before = database_rows(csrf_app)
    for token in [{}, {"csrf_token": "forged"}, {"csrf_token": ""}]:
        response = browser.post(url, data={**VALID[url], **token})
        assert_error_page(response, 400, "Bad request")
        assert CSRF_MESSAGE in page_text(response)
        assert database_rows(csrf_app) == before
    # With the token the page gave, the same form goes through.
    token = csrf_token(browser.get(url))
    assert browser.post(url, data={**VALID[url], "csrf_token": token}).status_code == 302


def test_the_confirm_button_without_its_csrf_token_is_refused(csrf_app):
    """Otherwise another site could press it for a visitor holding a link in their session."""
    with csrf_app.app_context():
        alice = add_user("alice").id
    browser = log_in_with_token(csrf_app)
    page = open_link(browser, link_for(csrf_app, alice, "new@example.com"))
    for token in [{}, {"csrf_token": "forged"}]:
        assert_error_page(browser.post(CONFIRM_EMAIL, data=token), 400, "Bad request")
        assert account(csrf_app, alice).email == "alice@example.com"
    response = browser.post(CONFIRM_EMAIL, data={"csrf_token": csrf_token(page)})
    assert response.headers["Location"] == "/"
    assert account(csrf_app, alice).email == "new@example.com"


# --- Hostile input -------------------------------------------------------------------------

# Every field of the three forms, as (form, field).
FIELDS = [(url, field) for url, fields in VALID.items() for field in fields]


FIELD_IDS = [f"{url.rpartition('/')[2]}-{field}" for url, field in FIELDS]


@pytest.fixture
def alice_browser(app, cast) -> FlaskClient:
    return log_in(app)


def assert_nothing_changed(app: Flask, before: dict, browser: FlaskClient) -> None:
    assert database_rows(app) == before
    assert_still_logged_in(browser)


def too_long(field: str, length: int) -> str:
    """A value of `length` characters for `field`, otherwise well-formed."""
    if field == "email":
        return "a" * (length - len("@example.com")) + "@example.com"
    return "😀" * length  # four bytes each in UTF-8: characters are what count


# What each field says when its value is too long (the other fields valid).
TOO_LONG_ERRORS = {
    "current_password": {"current_password": [PASSWORD_TOO_LONG]},  # (and not hashed)
    "password": {"password": [NEW_PASSWORD_LENGTH], "password2": [PASSWORDS_DIFFER]},
    "password2": {"password2": [PASSWORDS_DIFFER]},
    "email": {"email": [EMAIL_TOO_LONG, INVALID_EMAIL]},
}
LIMITS = {"current_password": 128, "password": 128, "password2": 128, "email": 254}


@pytest.mark.parametrize("length", ["one too many", 50_000])
@pytest.mark.parametrize(("url", "field"), FIELDS, ids=FIELD_IDS)
def test_a_very_long_value_is_a_form_error(app, alice_browser, url, field, length):
    length = LIMITS[field] + 1 if length == "one too many" else length
    before = database_rows(app)
    response = alice_browser.post(url, data={**VALID[url], field: too_long(field, length)})
    assert response.status_code == 200
    assert form_errors(response) == TOO_LONG_ERRORS[field]
    assert_nothing_changed(app, before, alice_browser)


@pytest.mark.parametrize(("url", "field"), FIELDS, ids=FIELD_IDS)
def test_a_nul_in_any_field_is_the_400_page(app, alice_browser, url, field):
    before = database_rows(app)
    value = VALID[url][field]
    response = alice_browser.post(url, data={**VALID[url], field: value[:3] + "\x00" + value[3:]})
    assert_error_page(response, 400, "Bad request")
    assert NUL_MESSAGE in page_text(response)
    assert_nothing_changed(app, before, alice_browser)


@pytest.mark.parametrize("url", ACCOUNT_FORMS)
def test_a_body_that_is_not_utf8_is_an_empty_form(app, alice_browser, url):
    """Werkzeug can't read a urlencoded body with bytes that aren't UTF-8: no field at all."""
    before = database_rows(app)
    body = "&".join(f"{name}={value}" for name, value in VALID[url].items()).encode()
    response = alice_browser.post(url, data=body + b"&x=\xff\xfe", content_type=FORM)
    assert response.status_code == 200
    assert form_errors(response) == {field: [REQUIRED] for field in VALID[url]}
    assert_nothing_changed(app, before, alice_browser)


@pytest.mark.parametrize("url", ACCOUNT_FORMS)
def test_a_password_with_bytes_that_are_not_utf8_is_a_wrong_password(app, alice_browser, url):
    """In a multipart body each bad byte is read as U+FFFD: a password nobody has."""
    before = database_rows(app)
    boundary = "hostile-boundary"
    parts = [
        (
            name,
            PASSWORD.encode()[:5] + b"\xff\xfe" if name == "current_password" else value.encode(),
        )
        for name, value in VALID[url].items()
    ]
    body = (
        b"".join(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
            + value
            + b"\r\n"
            for name, value in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    response = alice_browser.post(
        url, data=body, content_type=f"multipart/form-data; boundary={boundary}"
    )
    assert response.status_code == 200
    assert form_errors(response) == {"current_password": [NOT_YOUR_PASSWORD]}
    assert_nothing_changed(app, before, alice_browser)


def test_escapes_of_bytes_that_are_not_utf8_stay_as_they_were_sent(app, cast):
    """In a urlencoded body, "%FF%FE" can't be decoded as UTF-8: Werkzeug keeps the
    escapes as sent, and "new%FF%FE@example.com" is a valid address ("%" may be
    part of one). Saved as read, no 500."""
    browser = log_in(app)
    body = f"current_password={PASSWORD}&email=new%FF%FE@example.com".encode()
    response = browser.post(CHANGE_EMAIL, data=body, content_type=FORM)
    assert response.headers["Location"] == "/edit_profile"
    assert account(app, cast["alice"]).email == "new%FF%FE@example.com"


WRONG_THEN_RIGHT = [WRONG_PASSWORD, PASSWORD]
NOT_YOURS = {"current_password": [NOT_YOUR_PASSWORD]}
MISMATCH = {"password2": [PASSWORDS_DIFFER]}


@pytest.mark.parametrize(
    ("url", "field", "values", "errors"),
    [
        (CHANGE_PASSWORD, "current_password", WRONG_THEN_RIGHT, NOT_YOURS),
        (CHANGE_EMAIL, "current_password", WRONG_THEN_RIGHT, NOT_YOURS),
        (DELETE_ACCOUNT, "current_password", WRONG_THEN_RIGHT, NOT_YOURS),
        (CHANGE_PASSWORD, "password2", ["not-the-same", NEW_PASSWORD], MISMATCH),
        (CHANGE_EMAIL, "email", ["bob@example.com", "new@example.com"], {"email": [EMAIL_TAKEN]}),
    ],
    ids=["change password", "change email", "delete account", "password2", "email"],
)
def test_a_field_sent_twice_counts_once_the_first_time(
    app, alice_browser, url, field, values, errors
):
    """The first value is the field's (as WTForms reads it); the second is not
    a second chance to guess the password."""
    before = database_rows(app)
    items = [(name, value) for name, value in VALID[url].items() if name != field]
    items += [(field, value) for value in values]
    response = alice_browser.post(url, data=MultiDict(items))
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert_nothing_changed(app, before, alice_browser)


def test_the_first_of_two_addresses_is_the_one_saved(app, cast):
    browser = log_in(app)
    items = [
        ("current_password", PASSWORD),
        ("email", "first@example.com"),
        ("email", "second@example.com"),
    ]
    assert browser.post(CHANGE_EMAIL, data=MultiDict(items)).headers["Location"] == "/edit_profile"
    assert account(app, cast["alice"]).email == "first@example.com"


# Each field missing (the others valid), and what the form says.
MISSING = [
    (CHANGE_PASSWORD, "current_password", {"current_password": [REQUIRED]}),
    (CHANGE_PASSWORD, "password", {"password": [REQUIRED], "password2": [PASSWORDS_DIFFER]}),
    (CHANGE_PASSWORD, "password2", {"password2": [REQUIRED]}),
    (CHANGE_EMAIL, "current_password", {"current_password": [REQUIRED]}),
    (CHANGE_EMAIL, "email", {"email": [REQUIRED]}),
    (DELETE_ACCOUNT, "current_password", {"current_password": [REQUIRED]}),
]


@pytest.mark.parametrize(
    ("url", "field", "errors"), MISSING, ids=[f"{u.rpartition('/')[2]}-{f}" for u, f, _ in MISSING]
)
@pytest.mark.parametrize("how", ["left out", "sent as a file"])
def test_a_missing_field_is_required(app, alice_browser, url, field, errors, how):
    """Left out of the body, or sent as a file upload where text belongs
    (only the form's text fields are read): the field is required."""
    before = database_rows(app)
    data = {name: value for name, value in VALID[url].items() if name != field}
    if how == "sent as a file":
        data[field] = (BytesIO(VALID[url][field].encode()), "password.txt")
    response = alice_browser.post(url, data=data, content_type="multipart/form-data")
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert_nothing_changed(app, before, alice_browser)


@pytest.mark.parametrize("url", ACCOUNT_FORMS)
def test_an_empty_body_is_an_empty_form(app, alice_browser, url):
    before = database_rows(app)
    response = alice_browser.post(url)
    assert response.status_code == 200
    assert form_errors(response) == {field: [REQUIRED] for field in VALID[url]}
    assert_nothing_changed(app, before, alice_browser)


@pytest.mark.parametrize(
    "body",
    [None, "[1, 2]", '"a string"', '{"current_password": 123, "email": ["a", "b"]}', "{not json"],
    ids=["the valid fields", "a list", "a string", "wrong types", "broken"],
)
@pytest.mark.parametrize("url", ACCOUNT_FORMS)
def test_a_json_body_is_an_empty_form(app, alice_browser, url, body):
    """Only a form body is read: even the right fields, as JSON, are no form."""
    before = database_rows(app)
    body = json.dumps(VALID[url]) if body is None else body
    response = alice_browser.post(url, data=body, content_type="application/json")
    assert response.status_code == 200
    assert form_errors(response) == {field: [REQUIRED] for field in VALID[url]}
    assert_nothing_changed(app, before, alice_browser)


@pytest.mark.parametrize("url", ACCOUNT_FORMS)
def test_a_body_over_the_limit_is_the_413_page(app, alice_browser, url):
    before = database_rows(app)
    data = {**VALID[url], "padding": "x" * (1024 * 1024)}
    response = alice_browser.post(url, data=data)
    assert_error_page(response, 413, "Request too large")
    assert_nothing_changed(app, before, alice_browser)


@pytest.mark.parametrize("url", ACCOUNT_FORMS)
def test_the_fields_in_the_query_string_change_nothing(app, alice_browser, url):
    """A link (or an image on another site) can only GET: the form, nothing done."""
    before = database_rows(app)
    query = "&".join(f"{name}={value}" for name, value in VALID[url].items())
    response = alice_browser.get(f"{url}?{query}")
    assert response.status_code == 200
    assert form_errors(response) == {}
    assert_nothing_changed(app, before, alice_browser)
    # Nor does a POST whose fields are in the address instead of the body.
    response = alice_browser.post(f"{url}?{query}")
    assert form_errors(response) == {field: [REQUIRED] for field in VALID[url]}
    assert_nothing_changed(app, before, alice_browser)

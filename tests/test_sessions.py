"""Logins that end when they should, against the production app under gunicorn.

Flask's session is a signed cookie, so without help a copy saved before
logging out would go on working after it. These tests copy a browser's
cookies and replay them from another address (127.0.0.2) with another user
agent, the way a thief would, before and after the owner logs out; and they
check what the database holds (app/auth/sessions.py keeps one row per login).
"""

import http.client
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app.auth.sessions import load_user, record_login
from app.extensions import db
from app.models import User
from config import database_url
from tests.databases import fresh_database
from tests.helpers import PASSWORD as CONFTEST_PASSWORD
from tests.helpers import add_user
from tests.pages import alerts, logged_in_as
from tests.query_count import statements_for_get
from tests.servers import Browser, production_env, run_gunicorn

PASSWORD = "a-good-password"
THIEF_ADDRESS = "127.0.0.2"  # loopback too, but another client address
FORM_EXPIRED = "The form has expired or was sent from another page."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """gunicorn with the production config, and an engine to look into its database."""
    tmp_path = tmp_path_factory.mktemp("sessions")
    with fresh_database(tmp_path) as url:
        # Registering is rate-limited per address, and every test here
        # registers from 127.0.0.1: the limit itself is tested below.
        env = production_env(tmp_path, url, REGISTRATION_RATE_LIMIT="1000 per minute")
        engine = sa.create_engine(database_url(url))
        try:
            with run_gunicorn(env, tmp_path, app="blog:app") as gunicorn:
                yield gunicorn.url, engine
        finally:
            engine.dispose()


def register_and_log_in(url: str, username: str, remember: bool = False) -> Browser:
    browser = Browser(url)
    status, headers, _ = browser.submit(
        "/auth/register",
        {
            "username": username,
            "email": f"{username}@example.com",
            "password": PASSWORD,
            "password2": PASSWORD,
        },
    )
    assert (status, headers["Location"]) == (302, "/auth/login")
    return log_in(browser, username, remember)


def log_in(browser: Browser, username: str, remember: bool = False) -> Browser:
    fields = {"username": username, "password": PASSWORD}
    if remember:
        fields["remember_me"] = "y"
    status, headers, _ = browser.submit("/auth/login", fields)
    assert (status, headers["Location"]) == (302, "/")
    return browser


def post_from_page(browser: Browser, page_path: str, action: str) -> tuple[int, dict, str]:
    """POST a button's form found on `page_path` (its CSRF token included), as a click does."""
    return browser.request(action, {"csrf_token": browser.csrf_token(page_path)})


def cookies(browser: Browser) -> dict[str, str]:
    return {cookie.name: cookie.value for cookie in browser.cookies}


def replay(url: str, path: str, cookie_values: dict[str, str]) -> tuple[int, dict, str]:
    """GET `path` with copied cookies, from another address and another browser."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(
        host, int(port), timeout=30, source_address=(THIEF_ADDRESS, 0)
    )
    try:
        header = "; ".join(f"{name}={value}" for name, value in cookie_values.items())
        connection.request("GET", path, headers={"Cookie": header, "User-Agent": "curl/8.0"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode()
    finally:
        connection.close()


def logins_of(engine: sa.Engine, username: str) -> int:
    """How many login rows the database holds for `username`."""
    with engine.connect() as connection:
        return connection.execute(
            sa.text(
                'SELECT count(*) FROM user_session JOIN "user" ON "user".id = user_session.user_id'
                " WHERE username = :username"
            ),
            {"username": username},
        ).scalar_one()


@pytest.mark.system
def test_a_copied_cookie_works_until_logout_then_never_again(server):
    url, engine = server
    owner = register_and_log_in(url, "copied", remember=True)
    copied = cookies(owner)
    assert set(copied) == {"session", "remember_token"}
    assert logins_of(engine, "copied") == 1

    # While the owner is logged in, the copy is as good as the original:
    # that is what makes stealing it worth something, and this test able to fail.
    for name in ("session", "remember_token"):
        status, _, page = replay(url, "/", {name: copied[name]})
        assert (status, logged_in_as(page)) == (200, "copied"), name

    status, headers, _ = post_from_page(owner, "/", "/auth/logout")
    assert (status, headers["Location"]) == (302, "/")
    assert logins_of(engine, "copied") == 0
    # The owner's own browser was told to forget both cookies.
    assert "remember_token" not in cookies(owner)
    assert logged_in_as(owner.request("/")[2]) is None

    for replayed in ({"session": copied["session"]}, {"remember_token": copied["remember_token"]}):
        replayed_names = sorted(replayed)
        status, _, page = replay(url, "/", replayed)
        assert (status, logged_in_as(page)) == (200, None), replayed_names
        status, headers, _ = replay(url, "/edit_profile", replayed)
        assert status == 302, replayed_names
        assert headers["Location"].startswith("/auth/login?next="), replayed_names
    status, _, page = replay(url, "/", copied)
    assert (status, logged_in_as(page)) == (200, None)


@pytest.mark.system
def test_logging_out_in_one_browser_leaves_the_others_logged_in(server):
    url, engine = server
    laptop = register_and_log_in(url, "twobrowsers")
    phone = log_in(Browser(url), "twobrowsers")
    assert logins_of(engine, "twobrowsers") == 2

    post_from_page(laptop, "/", "/auth/logout")

    assert logged_in_as(laptop.request("/")[2]) is None
    assert logged_in_as(phone.request("/")[2]) == "twobrowsers"
    assert logins_of(engine, "twobrowsers") == 1


@pytest.mark.system
def test_log_out_everywhere_else(server):
    url, engine = server
    here = register_and_log_in(url, "everywhere")
    elsewhere = [log_in(Browser(url), "everywhere") for _ in range(2)]
    stolen = cookies(elsewhere[0])
    someone_else = register_and_log_in(url, "bystander")
    assert logins_of(engine, "everywhere") == 3

    status, headers, _ = post_from_page(here, "/edit_profile", "/auth/logout_elsewhere")
    assert (status, headers["Location"]) == (302, "/edit_profile")
    status, _, page = here.request("/edit_profile")
    assert status == 200
    assert alerts(page) == [("info", "You have been logged out of 2 other browsers.")]
    assert logged_in_as(page) == "everywhere"

    for browser in elsewhere:
        assert logged_in_as(browser.request("/")[2]) is None
    assert logged_in_as(replay(url, "/", stolen)[2]) is None
    assert logged_in_as(someone_else.request("/")[2]) == "bystander"
    assert logins_of(engine, "everywhere") == 1
    assert logins_of(engine, "bystander") == 1

    # Nothing left to end: said as it is, and this browser stays logged in.
    post_from_page(here, "/edit_profile", "/auth/logout_elsewhere")
    page = here.request("/edit_profile")[2]
    assert alerts(page) == [("info", "You have been logged out of 0 other browsers.")]
    assert logins_of(engine, "everywhere") == 1


@pytest.mark.system
def test_log_out_everywhere_else_refuses_what_a_form_would_not_send(server):
    url, engine = server
    browser = register_and_log_in(url, "refuser")
    log_in(Browser(url), "refuser")

    status, _, page = browser.request("/auth/logout_elsewhere", {})  # no CSRF token
    assert status == 400
    assert FORM_EXPIRED in page
    status, _, page = browser.request("/auth/logout_elsewhere", {"csrf_token": "forged"})
    assert status == 400
    status, _, _ = browser.request("/auth/logout_elsewhere")  # a link can't do it
    assert status == 405
    assert logins_of(engine, "refuser") == 2

    token = browser.csrf_token("/edit_profile")
    anonymous = Browser(url)
    status, _, _ = anonymous.request("/auth/logout_elsewhere", {"csrf_token": token})
    assert status == 400  # the token belongs to another session
    status, headers, _ = anonymous.request(
        "/auth/logout_elsewhere", {"csrf_token": anonymous.csrf_token("/auth/login")}
    )
    assert (status, headers["Location"].split("?")[0]) == (302, "/auth/login")
    assert logins_of(engine, "refuser") == 2


@pytest.mark.system
def test_a_csrf_token_from_before_login_is_refused_after_it(server):
    """Login starts a fresh session: a token planted or read before it is worth nothing."""
    url, engine = server
    register_and_log_in(url, "fresh")  # the account; this browser is done with
    browser = Browser(url)
    old_token = browser.csrf_token("/auth/login")
    status, headers, _ = browser.request(
        "/auth/login", {"csrf_token": old_token, "username": "fresh", "password": PASSWORD}
    )
    assert (status, headers["Location"]) == (302, "/")

    status, _, page = browser.request("/", {"csrf_token": old_token, "post": "planted"})
    assert status == 400
    assert FORM_EXPIRED in page
    status, _, page = browser.request("/auth/logout", {"csrf_token": old_token})
    assert status == 400
    assert logged_in_as(browser.request("/")[2]) == "fresh"

    status, _, _ = browser.submit("/", {"post": "written after login"})
    assert status == 302
    with engine.connect() as connection:
        bodies = connection.execute(sa.text("SELECT body FROM post")).scalars().all()
    assert "planted" not in bodies
    assert "written after login" in bodies


@pytest.mark.system
def test_the_language_chosen_before_login_survives_the_fresh_session(server):
    url, _ = server
    register_and_log_in(url, "linguist")
    browser = Browser(url)
    status, _, _ = post_from_page(browser, "/auth/login", "/language/zh_CN")
    assert status == 302
    log_in(browser, "linguist")
    page = browser.request("/")[2]
    assert '<html lang="zh-CN">' in page
    assert "个人主页（linguist）" in page  # noqa: RUF001 (the catalogue's full-width brackets)


@pytest.mark.system
def test_a_login_older_than_the_remember_me_cookie_has_expired(server):
    """No login outlives REMEMBER_COOKIE_DURATION (30 days), whatever cookie it kept."""
    url, engine = server
    browser = register_and_log_in(url, "oldtimer", remember=True)
    copied = cookies(browser)
    month_ago = datetime.now(UTC) - timedelta(days=30, minutes=1)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE user_session SET created = :t"), {"t": month_ago})

    assert logged_in_as(browser.request("/")[2]) is None
    assert logged_in_as(replay(url, "/", {"remember_token": copied["remember_token"]})[2]) is None
    # The next login anywhere clears out the expired rows.
    log_in(Browser(url), "oldtimer")
    assert logins_of(engine, "oldtimer") == 1


@pytest.mark.parametrize(
    "cookie",
    [
        {"remember_token": ""},
        {"remember_token": "garbage"},
        {"remember_token": "1|" + "0" * 128},
        {"remember_token": "1:" + "x" * 5000 + "|" + "0" * 128},
        {"remember_token": "%FF%FE|\u00e9"},
        {"session": "not.a.signed.cookie"},
        {"session": "." + "A" * 4000},
        {"session": "", "remember_token": "1|"},
    ],
    ids=repr,
)
@pytest.mark.system
def test_forged_login_cookies_are_anonymous_not_errors(server, cookie):
    url, _ = server
    status, _, page = replay(url, "/", cookie)
    assert (status, logged_in_as(page)) == (200, None)


# --- In-process: a login racing a reset, and what a dead login costs ----------------------


def test_a_login_checked_against_the_old_password_ends_with_it(make_app):
    """A login that checked the old password while a reset committed is no login.

    The reset deletes the account's login rows; a login that was checking
    the old password at that moment writes its row a moment later. The row
    keeps the digest of the password it was made with, which no longer
    matches: without that, the thief who had the old password could loop
    logins through the reset and stay logged in for a month.
    """
    app = make_app()
    with app.app_context():
        user_id = add_user("racer").id
    with app.app_context():
        checked = db.session.get(User, user_id)  # the login request, old password checked
        with app.app_context():  # meanwhile, another request resets the password
            owner = db.session.get(User, user_id)
            owner.set_password("a-brand-new-password")
            db.session.commit()
        record_login(checked)  # the login request goes on and writes its row
        with app.test_request_context():  # the next page, with the cookie it got
            assert load_user(checked.get_id()) is None
    with app.test_request_context():  # a login made after the reset works
        user = db.session.get(User, user_id)
        record_login(user)
        assert load_user(user.get_id()) == user


def log_in_client(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    response = client.post(
        "/auth/login",
        data={"username": username, "password": CONFTEST_PASSWORD, "remember_me": "y"},
    )
    assert response.status_code == 302
    return client


def test_a_page_loads_its_logged_in_user_in_one_statement(make_app):
    app = make_app()
    with app.app_context():
        add_user("counted")
    client = log_in_client(app, "counted")
    client.get("/explore")  # the first page may also record last_seen
    status, statements = statements_for_get(app, client, "/explore")
    user_loads = [s for s in statements if "user_session" in s]
    assert (status, len(user_loads)) == (200, 1), statements


def test_a_browser_whose_login_ended_forgets_it_at_once(make_app):
    """Its next page clears the remember-me cookie and the session's claim, so
    the pages after it cost what a visitor's do, and are not marked private."""
    app = make_app()
    with app.app_context():
        add_user("ended")
    here, there = log_in_client(app, "ended"), log_in_client(app, "ended")
    assert here.post("/auth/logout_elsewhere").status_code == 302
    assert there.get_cookie("remember_token") is not None

    status, statements = statements_for_get(app, there, "/explore")
    assert status == 200
    assert len([s for s in statements if "user_session" in s]) == 1  # the session's claim
    assert there.get_cookie("remember_token") is None
    with there.session_transaction() as session:
        assert "_user_id" not in session

    _, visitor = statements_for_get(app, app.test_client(), "/explore")
    response = there.get("/explore")
    assert response.headers.get("Cache-Control") != "private, no-store"
    status, statements = statements_for_get(app, there, "/explore")
    assert (status, len(statements)) == (200, len(visitor))

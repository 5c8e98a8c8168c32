"""Forgot your password? A reset link by mail, end to end, with a real SMTP server."""

import logging
import re
import time

import pytest
from flask.testing import FlaskClient

from app.auth.email import reset_token
from app.extensions import db
from app.mail import outbox
from app.models import User
from tests.helpers import PASSWORD, add_user
from tests.pages import alerts, form_errors
from tests.servers import free_port, wait_until

# Every test here starts real servers or processes: `make test-fast` skips them.
pytestmark = pytest.mark.system

NEW_PASSWORD = "a-brand-new-password"
# The flashed messages, word for word.
ON_ITS_WAY = ("info", "If that address has an account, a mail with a reset link is on its way.")
RESET_DONE = ("success", "Your password has been reset. You can log in with it now.")
LINK_REFUSED = ("warning", "That reset link is invalid or has expired. Please ask for a new one.")


@pytest.fixture
def app(make_app, mail_server):
    return make_app(**mail_server.settings, MAIL_DEFAULT_SENDER="blog@example.com")


@pytest.fixture
def alice(app) -> int:
    with app.app_context():
        return add_user("alice", "Alice@Example.com").id


def request_reset(client, email: str):
    return client.post("/auth/reset_password_request", data={"email": email})


def reset_link(message) -> str:
    """The path of the link in a reset mail's plain-text part."""
    text = message.get_body(("plain",)).get_content()
    return re.search(r"http://localhost(/auth/reset_password/\S+)", text).group(1)


def open_link(client, path: str):
    """Follow a reset link: the token goes into the session, out of the address."""
    response = client.get(path)
    assert response.headers["Location"] == "/auth/reset_password"
    return client.get("/auth/reset_password")


def set_password(client, path: str, password: str = NEW_PASSWORD, password2: str | None = None):
    """Follow the reset link `path`, then send the form with a new password."""
    open_link(client, path)
    data = {"password": password, "password2": password if password2 is None else password2}
    return client.post("/auth/reset_password", data=data)


def test_reset_password_end_to_end(client, auth, alice, mail_server):
    assert client.get("/auth/login").text.count("/auth/reset_password_request") == 1
    assert client.get("/auth/reset_password_request").status_code == 200

    response = request_reset(client, "alice@example.com")  # any case finds the account
    assert response.headers["Location"] == "/auth/login"
    assert alerts(client.get("/auth/login")) == [ON_ITS_WAY]

    message = mail_server.mailbox.wait_for(1)[0]
    assert message["To"] == "Alice@Example.com"
    assert message["Subject"] == "Reset your password"
    assert message.get_body(("html",)) is not None
    path = reset_link(message)

    page = open_link(client, path)
    assert page.status_code == 200
    assert path.rpartition("/")[2] not in page.text  # the token is in no page or address
    response = set_password(client, path)
    assert response.headers["Location"] == "/auth/login"
    assert alerts(client.get("/auth/login")) == [RESET_DONE]

    assert alerts(auth.login("alice", PASSWORD)) == [("danger", "Invalid username or password.")]
    assert auth.login("alice", NEW_PASSWORD).headers["Location"] == "/"


def test_a_reset_link_works_only_once(app, client, alice, mail_server):
    request_reset(client, "alice@example.com")
    path = reset_link(mail_server.mailbox.wait_for(1)[0])
    assert set_password(client, path).headers["Location"] == "/auth/login"
    assert alerts(client.get("/auth/login")) == [RESET_DONE]

    response = set_password(client, path, "yet-another-password")
    assert response.headers["Location"] == "/auth/reset_password_request"
    # Refused when the link is opened, and again when the form is sent all the same.
    assert alerts(client.get("/auth/reset_password_request")) == [LINK_REFUSED, LINK_REFUSED]
    with app.app_context():
        assert db.session.get(User, alice).check_password(NEW_PASSWORD)


def test_unknown_address_gets_the_same_answer_and_no_mail(client, alice, mail_server):
    known = request_reset(client, "alice@example.com")
    unknown = request_reset(client, "nobody@example.com")
    assert known.headers["Location"] == unknown.headers["Location"] == "/auth/login"
    outbox.drain()  # every queued mail has been handed to the server
    assert [m["To"] for m in mail_server.mailbox.messages] == ["Alice@Example.com"]


@pytest.mark.parametrize(
    ("password", "password2", "errors"),
    [
        ("short", "short", {"password": ["Field must be between 8 and 128 characters long."]}),
        ("x" * 129, "x" * 129, {"password": ["Field must be between 8 and 128 characters long."]}),
        (NEW_PASSWORD, "something-else", {"password2": ["The passwords don't match."]}),
        (
            "",
            "",
            {"password": ["This field is required."], "password2": ["This field is required."]},
        ),
    ],
)
def test_new_password_is_validated(app, client, alice, password, password2, errors):
    with app.app_context():
        path = f"/auth/reset_password/{reset_token(db.session.get(User, alice))}"
    response = set_password(client, path, password, password2)
    assert response.status_code == 200
    assert form_errors(response) == errors
    # The password is unchanged: the old one still works.
    with app.app_context():
        assert db.session.get(User, alice).check_password(PASSWORD)


@pytest.mark.parametrize(
    ("email", "errors"),
    [
        ("", {"email": ["This field is required."]}),
        ("alice", {"email": ["Please enter a valid email address."]}),
        ("alice@", {"email": ["Please enter a valid email address."]}),
    ],
)
def test_the_address_is_validated_and_nothing_is_sent(client, alice, mail_server, email, errors):
    response = request_reset(client, email)
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert alerts(response) == []  # not "...on its way": nothing is
    outbox.drain()
    assert mail_server.mailbox.messages == []


def tamper(token: str) -> str:
    return token[:-3] + ("aaa" if not token.endswith("aaa") else "bbb")


@pytest.mark.parametrize("spoil", [tamper, lambda token: "not-a-token", lambda token: "x" * 3000])
def test_a_tampered_link_is_refused(app, client, alice, spoil):
    with app.app_context():
        token = reset_token(db.session.get(User, alice))
    response = open_link(client, f"/auth/reset_password/{spoil(token)}")
    assert response.headers["Location"] == "/auth/reset_password_request"


def test_the_form_without_a_link_is_refused(client, alice):
    response = client.get("/auth/reset_password")
    assert response.headers["Location"] == "/auth/reset_password_request"


def test_a_link_signed_with_another_key_is_refused(make_app, client, alice):
    other = make_app(SECRET_KEY="some-other-secret-key")
    with other.app_context():
        token = reset_token(db.session.get(User, alice))
    response = open_link(client, f"/auth/reset_password/{token}")
    assert response.headers["Location"] == "/auth/reset_password_request"


def test_an_expired_link_is_refused(make_app, alice):
    app = make_app(RESET_TOKEN_MAX_AGE=1)
    with app.app_context():
        token = reset_token(db.session.get(User, alice))
    time.sleep(2.1)  # itsdangerous counts whole seconds
    client = app.test_client()
    response = open_link(client, f"/auth/reset_password/{token}")
    assert response.headers["Location"] == "/auth/reset_password_request"
    assert alerts(client.get("/auth/reset_password_request")) == [LINK_REFUSED]


def test_logged_in_users_are_sent_home(client, auth, users):
    auth.login()
    assert client.get("/auth/reset_password_request").headers["Location"] == "/"
    assert open_link(client, "/auth/reset_password/anything").headers["Location"] == "/"


def test_a_reset_logs_out_every_other_browser(app, client, alice, mail_server):
    """Someone who had the password (a stolen laptop) loses their session, and
    a remember-me cookie copied from it is worth nothing either."""
    thief = app.test_client()
    login = {"username": "alice", "password": PASSWORD, "remember_me": "y"}
    assert thief.post("/auth/login", data=login).status_code == 302
    assert "Profile (alice)" in thief.get("/").text
    copied = thief.get_cookie("remember_token").value

    def remembered() -> FlaskClient:
        """Another browser with nothing but a copy of the remember-me cookie."""
        browser = app.test_client()
        browser.set_cookie("remember_token", copied)
        return browser

    assert "Profile (alice)" in remembered().get("/").text

    request_reset(client, "alice@example.com")
    set_password(client, reset_link(mail_server.mailbox.wait_for(1)[0]))

    for browser in (thief, remembered()):
        assert "Profile (alice)" not in browser.get("/").text
        assert browser.get("/edit_profile").headers["Location"].startswith("/auth/login")


def test_links_use_base_url_not_the_host_a_client_sends(make_app, mail_server, alice):
    """With BASE_URL set, a forged Host header can't send the token elsewhere."""
    app = make_app(
        **mail_server.settings,
        MAIL_DEFAULT_SENDER="blog@example.com",
        BASE_URL="https://blog.example.com/",
    )
    client = app.test_client()
    client.post(
        "/auth/reset_password_request",
        data={"email": "alice@example.com"},
        headers={"Host": "evil.example"},
    )
    text = mail_server.mailbox.wait_for(1)[0].get_body(("plain",)).get_content()
    assert "https://blog.example.com/auth/reset_password/" in text
    assert "evil.example" not in text


class Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_mail_failure_is_logged_and_the_user_sees_the_same_answer(make_app, alice):
    app = make_app(MAIL_SERVER="127.0.0.1", MAIL_PORT=free_port(), MAIL_TIMEOUT=2)
    records = Records()
    mail_log = logging.getLogger("blog.mail")
    mail_log.addHandler(records)
    try:
        client = app.test_client()
        response = request_reset(client, "alice@example.com")
        assert response.headers["Location"] == "/auth/login"
        assert alerts(client.get("/auth/login")) == [ON_ITS_WAY]
        wait_until(lambda: records.messages, message="the failure to be logged")
        assert len(records.messages) == 1
        assert "Alice@Example.com" in records.messages[0]
        assert "refused" in records.messages[0]
    finally:
        mail_log.removeHandler(records)

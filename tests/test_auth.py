"""Registering, logging in and out: the forms, their error messages, and the
redirects a browser follows afterwards (including the ones it must not follow).
"""

from urllib.parse import quote

import pytest
from flask import session
from flask_login import current_user
from sqlalchemy import func, insert, select

from app.auth import forms as auth_forms
from app.extensions import db
from app.models import User, name_key
from tests.helpers import PASSWORD, PASSWORD_HASH, AuthActions
from tests.pages import alerts, csrf_token, form_errors, page_text

# "admin" in full-width letters (U+FF41...), which NFKC folds back to plain "admin".
FULLWIDTH_ADMIN = "\uff41\uff44\uff4d\uff49\uff4e"

# The messages under a form's fields, word for word as the user reads them.
REQUIRED = "This field is required."
USERNAME_LENGTH = "Field must be between 3 and 64 characters long."
USERNAME_CHARACTERS = "Use only letters, digits, dots, dashes and underscores."
PASSWORD_LENGTH = "Field must be between 8 and 128 characters long."
INVALID_EMAIL = "Please enter a valid email address."
USERNAME_TAKEN = "Please use a different username."
EMAIL_TAKEN = "Please use a different email address."
INVALID_LOGIN = "Invalid username or password."


def count_users(app, username: str) -> int:
    """How many rows hold `username`, ignoring case (as the unique constraint compares)."""
    with app.app_context():
        return db.session.scalar(
            select(func.count()).where(User.username_key == name_key(username))
        )


# --- register -------------------------------------------------------------------------------


def test_register_page_renders(client):
    response = client.get("/auth/register")
    assert response.status_code == 200
    assert "Register" in page_text(response)
    assert 'name="password2"' in page_text(response)


def test_register_creates_user_and_redirects_to_login(app, client, auth):
    response = auth.register(username="alice", email="alice@example.com")
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login"

    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == "alice"))
        assert user is not None
        assert user.email == "alice@example.com"
        assert user.password_hash != PASSWORD  # only a hash is stored...
        assert user.check_password(PASSWORD)  # ...and it is the hash of the password

    response = client.get("/auth/login")
    assert alerts(response) == [
        ("success", "Congratulations, you are now a registered user! Please sign in.")
    ]


@pytest.mark.parametrize(
    ("username", "email", "password", "password2", "errors"),
    [
        ("", "a@example.com", PASSWORD, PASSWORD, {"username": [REQUIRED]}),
        ("alice", "", PASSWORD, PASSWORD, {"email": [REQUIRED]}),
        ("alice", "a@example.com", "", "", {"password": [REQUIRED], "password2": [REQUIRED]}),
        ("   ", "a@example.com", PASSWORD, PASSWORD, {"username": [REQUIRED]}),
        ("al", "a@example.com", PASSWORD, PASSWORD, {"username": [USERNAME_LENGTH]}),
        ("a" * 65, "a@example.com", PASSWORD, PASSWORD, {"username": [USERNAME_LENGTH]}),
        ("a b", "a@example.com", PASSWORD, PASSWORD, {"username": [USERNAME_CHARACTERS]}),
        ("a/b", "a@example.com", PASSWORD, PASSWORD, {"username": [USERNAME_CHARACTERS]}),
        ("alice", "not-an-email", PASSWORD, PASSWORD, {"email": [INVALID_EMAIL]}),
        (
            "alice",
            "a" * 243 + "@example.com",
            PASSWORD,
            PASSWORD,
            # Too long, and (its part before the @ being over 64 characters) invalid too.
            {"email": ["Field cannot be longer than 254 characters.", INVALID_EMAIL]},
        ),
        ("alice", "a@example.com", "short", "short", {"password": [PASSWORD_LENGTH]}),
        ("alice", "a@example.com", "x" * 129, "x" * 129, {"password": [PASSWORD_LENGTH]}),
        (
            "alice",
            "a@example.com",
            PASSWORD,
            PASSWORD + "!",
            {"password2": ["The passwords don't match."]},
        ),
    ],
)
def test_register_validates_input(app, client, username, email, password, password2, errors):
    data = {"username": username, "email": email, "password": password, "password2": password2}
    response = client.post("/auth/register", data=data)
    assert response.status_code == 200
    assert form_errors(response) == errors
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 0


@pytest.mark.parametrize(
    ("username", "email", "errors"),
    [
        ("Admin", "new@example.com", {"username": [USERNAME_TAKEN]}),
        ("admin1 ", "new@example.com", {"username": [USERNAME_TAKEN]}),  # spaces trimmed
        (FULLWIDTH_ADMIN, "new@example.com", {"username": [USERNAME_TAKEN]}),  # full-width
        ("newcomer", "ADMIN@example.com", {"email": [EMAIL_TAKEN]}),
        ("newcomer", FULLWIDTH_ADMIN + "@example.com", {"email": [EMAIL_TAKEN]}),
    ],
)
def test_register_refuses_taken_name_or_email(app, users, auth, username, email, errors):
    """A taken name or address is refused however it is typed: case, spaces, full-width."""
    response = auth.register(username=username, email=email)
    assert response.status_code == 200
    assert form_errors(response) == errors
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(User)) == 2


def test_register_keeps_what_was_typed(auth):
    """A mistake in one field doesn't wipe the others; passwords are never sent back."""
    response = auth.register(username="a b", email="kept@example.com", password="secret-123")
    text = page_text(response)
    assert 'value="a b"' in text
    assert 'value="kept@example.com"' in text
    assert "secret-123" not in text


@pytest.mark.parametrize("path", ["/auth/register", "/auth/login"])
def test_logged_in_user_is_sent_home(users, client, auth, path):
    auth.login()
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_register_race_shows_form_error(app, auth, monkeypatch):
    """Two workers register "bob" at the same moment: the loser sees the form error.

    Our form's check runs just before the other worker commits, so it passes;
    then our commit hits the unique index. No 500, one bob.
    """
    real_check = auth_forms.username_is_taken
    other_worker_done = False

    def check_just_before_the_other_worker_commits(username):
        nonlocal other_worker_done
        if other_worker_done:
            return real_check(username)
        other_worker_done = True
        with db.engine.begin() as other_connection:  # a second connection, like a second worker
            # A Core INSERT skips the model's @validates, so it passes the keys itself.
            other_connection.execute(
                insert(User).values(
                    username=username,
                    username_key=name_key(username),
                    email="first-bob@example.com",
                    email_key=name_key("first-bob@example.com"),
                    password_hash=PASSWORD_HASH,
                )
            )
        return False

    monkeypatch.setattr(auth_forms, "username_is_taken", check_just_before_the_other_worker_commits)

    response = auth.register(username="bob", email="second-bob@example.com")
    assert other_worker_done
    assert response.status_code == 200
    assert form_errors(response) == {"username": [USERNAME_TAKEN]}
    assert count_users(app, "bob") == 1
    with app.app_context():
        bob = db.session.scalar(User.select_by_username("bob"))
        assert bob.email == "first-bob@example.com"


def test_register_then_login_with_non_ascii_name(client, auth):
    """Usernames may use letters of any script, so "Émile" must be able to log in."""
    assert auth.register(username="Émile").headers["Location"] == "/auth/login"
    response = auth.login("Émile")
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_register_refuses_non_ascii_name_differing_only_in_case(app, auth):
    auth.register(username="Émile")
    response = auth.register(username="émile", email="other-emile@example.com")
    assert form_errors(response) == {"username": [USERNAME_TAKEN]}
    assert count_users(app, "émile") == 1


# --- login ----------------------------------------------------------------------------------


def test_login_page_renders(client):
    response = client.get("/auth/login")
    assert response.status_code == 200
    assert 'name="remember_me"' in page_text(response)


@pytest.mark.parametrize("username", ["admin", "ADMIN", " admin ", FULLWIDTH_ADMIN])
def test_login(users, client, auth, username):
    """Names are matched ignoring case, surrounding spaces and full-width letters."""
    with client:
        response = auth.login(username)
        assert response.status_code == 302
        assert response.headers["Location"] == "/"
        assert session["_user_id"].partition(":")[0] == str(users["admin"])
        assert current_user.username == "admin"

    assert "Profile (admin)" in page_text(client.get("/"))


@pytest.mark.parametrize(
    ("username", "password"),
    [("admin", "wrong-password"), ("nobody", PASSWORD)],
)
def test_login_failure_does_not_tell_which_part_was_wrong(users, client, auth, username, password):
    with client:
        response = auth.login(username, password)
        assert response.status_code == 200
        assert alerts(response) == [("danger", INVALID_LOGIN)]
        assert form_errors(response) == {}  # no field is to blame
        assert "_user_id" not in session


@pytest.mark.parametrize(
    ("username", "password", "errors"),
    [
        ("", PASSWORD, {"username": [REQUIRED]}),
        ("admin", "", {"password": [REQUIRED]}),
        ("a" * 65, PASSWORD, {"username": ["Field cannot be longer than 64 characters."]}),
        ("admin", "x" * 129, {"password": ["Field cannot be longer than 128 characters."]}),
    ],
)
def test_login_validates_input(users, auth, username, password, errors):
    response = auth.login(username, password)
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert alerts(response) == []  # the form is not even checked against the accounts


def test_remember_me_sets_cookie(users, client, auth):
    auth.login(remember=True)
    assert client.get_cookie("remember_token") is not None


def test_without_remember_me_no_cookie(users, client, auth):
    auth.login()
    assert client.get_cookie("remember_token") is None


def test_login_follows_next(users, auth):
    response = auth.login(next_url=quote("/user/admin", safe=""))
    assert response.status_code == 302
    assert response.headers["Location"] == "/user/admin"


@pytest.mark.parametrize(
    "next_url",
    [
        "//evil.example",
        "https://evil.example",
        "https:evil.example",
        "/\\evil.example",
        "///evil.example",
        "javascript:alert(1)",
        "/\t/evil.example",  # sent as /%09/evil.example; browsers drop the tab
        "/\n/evil.example",
    ],
)
def test_login_refuses_redirect_to_other_sites(users, auth, next_url):
    response = auth.login(next_url=quote(next_url, safe=""))
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


# --- login_required -------------------------------------------------------------------------


def test_login_required(users, client, auth):
    """An anonymous visitor is sent to log in, and then back where they were going."""
    response = client.get("/edit_profile")
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login?next=%2Fedit_profile"

    response = client.get(response.headers["Location"])
    assert alerts(response) == [("info", "Please log in to access this page.")]

    response = auth.login(next_url="%2Fedit_profile")
    assert response.headers["Location"] == "/edit_profile"


# --- logout ---------------------------------------------------------------------------------


def test_logout(users, client, auth):
    auth.login()
    with client:
        response = auth.logout()
        assert response.status_code == 302
        assert response.headers["Location"] == "/"
        assert "_user_id" not in session

    response = client.get("/")
    assert alerts(response) == [("info", "You have been logged out.")]
    text = page_text(response)
    assert "Log in" in text
    assert "Profile (admin)" not in text


def test_logout_by_get_is_not_allowed(users, client, auth):
    """A link or an <img> on another site must not log people out."""
    auth.login()
    response = client.get("/auth/logout")
    assert response.status_code == 405
    assert "Profile (admin)" in page_text(client.get("/"))


# --- CSRF -----------------------------------------------------------------------------------


@pytest.fixture
def csrf_app(make_app):
    """An app that checks CSRF tokens, as production does."""
    return make_app(WTF_CSRF_ENABLED=True)


@pytest.fixture
def csrf_client(csrf_app):
    return csrf_app.test_client()


@pytest.fixture
def csrf_users(csrf_app):
    with csrf_app.app_context():
        admin = User(username="admin", email="admin@example.com", password_hash=PASSWORD_HASH)
        db.session.add(admin)
        db.session.commit()
        return {"admin": admin.id}


def csrf_login(client) -> None:
    token = csrf_token(client.get("/auth/login"))
    response = client.post(
        "/auth/login", data={"csrf_token": token, "username": "admin", "password": PASSWORD}
    )
    assert response.headers["Location"] == "/"


REGISTRATION = {
    "username": "carol",
    "email": "carol@example.com",
    "password": PASSWORD,
    "password2": PASSWORD,
}


def test_register_without_csrf_token_is_refused(csrf_app, csrf_client):
    response = AuthActions(csrf_client).register(username="carol")
    assert response.status_code == 400
    assert "The form has expired" in page_text(response)
    assert count_users(csrf_app, "carol") == 0


def test_register_with_csrf_token(csrf_app, csrf_client):
    token = csrf_token(csrf_client.get("/auth/register"))
    response = csrf_client.post("/auth/register", data={"csrf_token": token, **REGISTRATION})
    assert response.headers["Location"] == "/auth/login"
    assert count_users(csrf_app, "carol") == 1


def test_login_without_csrf_token_is_refused(csrf_users, csrf_client):
    with csrf_client:
        response = AuthActions(csrf_client).login()
        assert response.status_code == 400
        assert "The form has expired" in page_text(response)
        assert "_user_id" not in session


def test_login_with_csrf_token(csrf_users, csrf_client):
    with csrf_client:
        csrf_login(csrf_client)
        assert session["_user_id"].partition(":")[0] == str(csrf_users["admin"])


def test_logout_without_csrf_token_is_refused(csrf_users, csrf_client):
    """Otherwise any site could log our users out with a hidden form."""
    csrf_login(csrf_client)
    response = AuthActions(csrf_client).logout()
    assert response.status_code == 400
    assert "The form has expired" in page_text(response)
    assert "Profile (admin)" in page_text(csrf_client.get("/"))


def test_logout_with_csrf_token(csrf_users, csrf_client):
    csrf_login(csrf_client)
    token = csrf_token(csrf_client.get("/"))  # the hidden input in base.html's logout form
    response = csrf_client.post("/auth/logout", data={"csrf_token": token})
    assert response.headers["Location"] == "/"
    assert "Log in" in page_text(csrf_client.get("/"))

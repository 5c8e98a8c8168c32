"""Security headers and rate limits (app/security.py), and the session cookies' flags.

Most tests use the Flask test client on an app of their own, and with it a new
in-memory count of attempts. The test client's requests come from 127.0.0.1;
``environ_base={"REMOTE_ADDR": ...}`` makes one come from another address (a
WSGI environ value, as a server would set it; nothing goes over the network).
The last test runs the blog under gunicorn with its production config, behind
a pretend HTTPS proxy.
"""

import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from http.client import HTTPMessage
from http.cookiejar import CookieJar, DefaultCookiePolicy

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, select, text
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.security import check_password_hash

from app.extensions import db
from app.models import User
from config import ConfigError, database_url
from tests.failing_routes import add_failing_routes
from tests.helpers import PASSWORD, AuthActions, add_posts, add_user
from tests.pages import alerts, form_errors
from tests.servers import Browser, NoRedirect, production_env, run_gunicorn

# Small limits, so that a test reaches them in a few requests.
PER_CLIENT = 6
PER_ACCOUNT = 3
LIMITS = {
    "AUTH_RATE_LIMIT_PER_CLIENT": f"{PER_CLIENT} per minute",
    "AUTH_RATE_LIMIT_PER_ACCOUNT": f"{PER_ACCOUNT} per minute",
}
OTHER_CLIENT = {"REMOTE_ADDR": "10.0.0.2"}
THIRD_CLIENT = {"REMOTE_ADDR": "10.0.0.3"}
JSON = {"Accept": "application/json"}
INVALID_LOGIN = "Invalid username or password."
REQUIRED = "This field is required."
INVALID_EMAIL = "Please enter a valid email address."
# What the login page shows for a wrong name or password: a flashed message, no field to blame.
WRONG_LOGIN = ({}, [("danger", INVALID_LOGIN)])


@pytest.fixture
def app(make_app) -> Flask:
    """The blog with small rate limits; failing routes answer with the 500 page."""
    app = make_app(**LIMITS, PROPAGATE_EXCEPTIONS=False)
    add_failing_routes(app)
    return app


def login(client: FlaskClient, username: str, password: str = "wrong-password", **kwargs):
    return client.post("/auth/login", data={"username": username, "password": password}, **kwargs)


def request_reset(client: FlaskClient, email: str, **kwargs):
    return client.post("/auth/reset_password_request", data={"email": email}, **kwargs)


def fail_logins(client: FlaskClient, username: str, times: int, **kwargs) -> None:
    """Fail to log in as `username` `times` times, each answered with the form again."""
    for _ in range(times):
        response = login(client, username, **kwargs)
        assert response.status_code == 200
        assert alerts(response) == [("danger", INVALID_LOGIN)]


def assert_too_many_requests(response, limit_seconds: int = 60) -> None:
    """The 429 page in the site's layout, saying when to come back."""
    assert response.status_code == 429
    assert "<h1>Too many requests</h1>" in response.text
    assert "Please wait a moment and try again." in response.text
    assert 0 <= int(response.headers["Retry-After"]) <= limit_seconds


def logged_in(client: FlaskClient) -> bool:
    return "Log out" in client.get("/explore").text


# --- Security headers ---------------------------------------------------------------------

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; base-uri 'self'; object-src 'none'; frame-ancestors 'none'"
)


def assert_security_headers(response) -> None:
    assert response.headers["Content-Security-Policy"] == POLICY
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["X-Frame-Options"] == "DENY"


def test_headers_on_a_page(client):
    response = client.get("/explore")
    assert response.status_code == 200
    assert_security_headers(response)


def test_headers_on_the_404_page(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert_security_headers(response)


def test_headers_on_the_500_page(client):
    response = client.get("/_test/fail")
    assert response.status_code == 500
    assert "An unexpected error has occurred" in response.text
    assert_security_headers(response)


def test_headers_on_json_errors(client):
    response = client.get("/no/such/page", headers=JSON)
    assert response.json["status"] == 404
    assert_security_headers(response)


@pytest.mark.parametrize("path", ["css/bootstrap.min.css", "js/bootstrap.min.js"])
def test_headers_on_static_files(client, path):
    response = client.get(f"/bootstrap/static/{path}")
    assert response.status_code == 200
    assert_security_headers(response)


def test_gravatar_images_are_allowed_only_when_gravatar_is_on(make_app):
    assert "gravatar" not in make_app().test_client().get("/").headers["Content-Security-Policy"]
    policy = make_app(USE_GRAVATAR=True).test_client().get("/").headers["Content-Security-Policy"]
    assert "img-src 'self' data: https://www.gravatar.com;" in policy


class PageResources(HTMLParser):
    """What a page asks the browser to load, run or post to, as the CSP sees it."""

    def __init__(self):
        super().__init__()
        self.urls: list[tuple[str, str]] = []  # (the directive that governs it, URL)
        self.inline: list[str] = []  # what the policy would block outright

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            if "src" in attrs:
                self.urls.append(("script-src", attrs["src"]))
            else:
                self.inline.append("an inline <script>")
        elif tag == "link" and attrs.get("rel") == "stylesheet":
            self.urls.append(("style-src", attrs["href"]))
        elif tag == "style":
            self.inline.append("a <style> block")
        elif tag == "img":
            self.urls.append(("img-src", attrs["src"]))
        elif tag == "form":
            self.urls.append(("form-action", attrs.get("action") or ""))
        for name in attrs:
            if name == "style" or name.startswith("on"):
                self.inline.append(f"a {name}= attribute on <{tag}>")


CSS_URL = re.compile(r"""url\(\s*["']?([^"')]+)""")


def allowed_by(policy: str, directive: str, url: str) -> bool:
    """True if `policy` lets a page load `url` under `directive` (enough CSP for our pages)."""
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    sources = directives.get(directive, directives["default-src"]).split()
    same_origin = url == "" or (url.startswith("/") and not url.startswith("//"))
    return (
        ("'self'" in sources and same_origin)
        or ("data:" in sources and url.startswith("data:"))
        or any(url.startswith(source + "/") for source in sources if source.startswith("https:"))
    )


@pytest.mark.parametrize("use_gravatar", [False, True])
def test_every_page_works_under_the_policy(make_app, use_gravatar):
    """Every stylesheet, script, image and form target is allowed, and is really there.

    With nosniff, the browser also refuses a stylesheet or script served with the
    wrong Content-Type, so that is checked too.
    """
    app = make_app(USE_GRAVATAR=use_gravatar)
    with app.app_context():
        add_posts(add_user("admin"), 2)
        add_posts(add_user("bob"), 2)
    client = app.test_client()
    pages = ["/explore", "/auth/login", "/auth/register", "/auth/reset_password_request"]
    pages += ["/no/such/page"]
    checked = []
    for logged_in_pages in (False, True):
        if logged_in_pages:
            assert login(client, "admin", PASSWORD).status_code == 302
            pages = ["/", "/explore", "/user/admin", "/user/bob", "/edit_profile"]
        for path in pages:
            response = client.get(path)
            assert response.status_code in (200, 404), path
            policy = response.headers["Content-Security-Policy"]
            resources = PageResources()
            resources.feed(response.text)
            assert resources.inline == [], path
            for directive, url in resources.urls:
                assert allowed_by(policy, directive, url), (path, directive, url)
                checked.append(directive)
                if directive in ("script-src", "style-src"):
                    asset = client.get(url)
                    assert asset.status_code == 200, url
                    expected = "text/css" if directive == "style-src" else "javascript"
                    assert expected in asset.content_type, url
                if directive == "style-src":
                    # What the stylesheet loads in turn: Bootstrap's icons, all data: SVGs.
                    for image in CSS_URL.findall(asset.text):
                        assert allowed_by(policy, "img-src", image), image
                        checked.append("img-src in CSS")
    expected = {"script-src", "style-src", "img-src in CSS", "form-action"}
    if use_gravatar:  # otherwise avatars are inline SVGs, not images
        expected.add("img-src")
    assert expected <= set(checked)


def test_our_policy_checker_refuses_what_the_browser_would():
    """The checker above is only worth something if it can fail."""
    assert not allowed_by(POLICY, "script-src", "https://cdn.jsdelivr.net/bootstrap.js")
    assert not allowed_by(POLICY, "script-src", "//cdn.example/x.js")
    assert not allowed_by(POLICY, "img-src", "https://www.gravatar.com/avatar/x")
    assert not allowed_by(POLICY, "form-action", "https://evil.example/steal")
    resources = PageResources()
    resources.feed('<p style="color: red" onclick="go()">x</p><script>go()</script>')
    assert len(resources.inline) == 3


# --- Rate limits: logging in -------------------------------------------------------------


def test_login_is_refused_after_too_many_failures_for_one_account(client, users):
    fail_logins(client, "admin", PER_ACCOUNT)
    response = login(client, "admin", PASSWORD)  # even the right password
    assert_too_many_requests(response)
    assert not logged_in(client)


def test_the_account_is_the_same_whatever_its_case_or_spacing(client, users):
    for spelling in ("admin", "Admin", " ADMIN "):
        fail_logins(client, spelling, 1)
    assert_too_many_requests(login(client, "\uff41dmin", PASSWORD))  # full-width "a"


def test_other_accounts_from_the_same_client_until_the_client_limit(client, users):
    fail_logins(client, "admin", PER_ACCOUNT)
    assert_too_many_requests(login(client, "admin", PASSWORD))

    # admin1 is not limited: its owner can still log in from here.
    fail_logins(client, "admin1", 2)
    assert login(client, "admin1", PASSWORD).status_code == 302
    client.post("/auth/logout", follow_redirects=True)  # as a browser does: read its message

    # The client has failed PER_CLIENT - 1 times so far: one more, then it is refused
    # for every account, even one it never tried.
    fail_logins(client, "carol", PER_CLIENT - PER_ACCOUNT - 2)
    assert_too_many_requests(login(client, "dave"))
    # ...but only that client.
    fail_logins(client, "dave", 1, environ_base=OTHER_CLIENT)


def test_another_client_cannot_go_on_guessing_the_same_account(client, users):
    fail_logins(client, "admin", PER_ACCOUNT, environ_base=OTHER_CLIENT)
    assert_too_many_requests(login(client, "admin", PASSWORD, environ_base=THIRD_CLIENT))
    assert_too_many_requests(login(client, "admin", PASSWORD))
    # The other client may still try other accounts.
    fail_logins(client, "admin1", 1, environ_base=OTHER_CLIENT)


def test_showing_the_login_form_does_not_count(client, users):
    for _ in range(PER_CLIENT + 1):
        assert client.get("/auth/login").status_code == 200
    fail_logins(client, "admin", PER_ACCOUNT)
    assert_too_many_requests(login(client, "admin"))


def test_logging_in_successfully_does_not_count(client, users):
    """A classroom can log in to the demo account from one address."""
    for _ in range(PER_CLIENT + 1):
        assert login(client, "admin", PASSWORD).status_code == 302
        client.post("/auth/logout", follow_redirects=True)  # as a browser does: read its message
    fail_logins(client, "admin", PER_ACCOUNT)


def test_json_clients_get_a_json_429(client, users):
    fail_logins(client, "admin", PER_ACCOUNT)
    response = login(client, "admin", headers=JSON)
    assert response.status_code == 429
    assert response.json["error"] == "Too many requests"
    assert response.json["status"] == 429
    assert "Retry-After" in response.headers


def test_the_429_page_has_the_security_headers(client, users):
    fail_logins(client, "admin", PER_ACCOUNT)
    assert_security_headers(login(client, "admin"))


def test_health_checks_and_pages_are_never_limited(client, users):
    fail_logins(client, "admin", PER_ACCOUNT)
    fail_logins(client, "carol", PER_CLIENT - PER_ACCOUNT)
    assert login(client, "admin").status_code == 429
    for _ in range(PER_CLIENT + 1):
        for path in ("/healthz", "/explore", "/auth/login"):
            response = client.get(path)
            assert response.status_code == 200
            assert "X-RateLimit-Limit" not in response.headers


# --- Rate limits: asking for a password-reset mail ------------------------------------------


def test_reset_requests_are_limited_per_address(client):
    for _ in range(PER_ACCOUNT):
        assert request_reset(client, "alice@example.com").status_code == 302
    assert_too_many_requests(request_reset(client, "Alice@Example.COM"))
    assert_too_many_requests(request_reset(client, "alice@example.com", environ_base=OTHER_CLIENT))
    # Another address is not limited by alice's.
    assert request_reset(client, "bob@example.com").status_code == 302


def test_reset_requests_are_limited_per_client(client):
    for number in range(PER_CLIENT):
        assert request_reset(client, f"person{number}@example.com").status_code == 302
    assert_too_many_requests(request_reset(client, "someone-else@example.com"))
    response = request_reset(client, "someone-else@example.com", environ_base=OTHER_CLIENT)
    assert response.status_code == 302


def test_showing_the_reset_form_does_not_count(client):
    for _ in range(PER_CLIENT + 1):
        assert client.get("/auth/reset_password_request").status_code == 200
    assert request_reset(client, "alice@example.com").status_code == 302


# --- Rate limits: registering ---------------------------------------------------------------

REGISTRATIONS = 4


def register(client: FlaskClient, username: str, email: str | None = None, **kwargs):
    data = {"username": username, "email": email or f"{username}@example.com"}
    data |= {"password": PASSWORD, "password2": PASSWORD}
    return client.post("/auth/register", data=data, **kwargs)


@pytest.fixture
def registering(make_app) -> Flask:
    """An app that lets one address register REGISTRATIONS times a minute."""
    return make_app(REGISTRATION_RATE_LIMIT=f"{REGISTRATIONS} per minute")


def usernames(app: Flask) -> list[str]:
    """The usernames in the database, in the order they registered."""
    with app.app_context():
        return list(db.session.scalars(select(User.username).order_by(User.id)))


def test_registrations_are_limited_per_client(registering):
    client = registering.test_client()
    for number in range(REGISTRATIONS):
        assert register(client, f"member{number}").status_code == 302
    assert_too_many_requests(register(client, "one_too_many"))
    assert usernames(registering) == [f"member{number}" for number in range(REGISTRATIONS)]
    # Another address registers as usual.
    assert register(client, "next_door", environ_base=OTHER_CLIENT).status_code == 302
    assert usernames(registering)[-1] == "next_door"


def test_refused_registrations_count_too(registering):
    """Testing which addresses have accounts costs a try each, as an account does."""
    client = registering.test_client()
    assert register(client, "owner", "taken@example.com").status_code == 302
    for number in range(REGISTRATIONS - 1):
        response = register(client, f"prober{number}", "taken@example.com")
        assert form_errors(response) == {"email": ["Please use a different email address."]}
    assert_too_many_requests(register(client, "prober", "taken@example.com"))
    assert usernames(registering) == ["owner"]


def test_an_ipv6_client_is_its_64_network(registering):
    """One subscriber's /64 holds countless addresses: it is one client.

    The addresses come through a proxy (PROXY_COUNT=1), as behind nginx.
    """
    registering.config["PROXY_COUNT"] = 1
    registering.wsgi_app = ProxyFix(registering.wsgi_app, x_for=1)
    client = registering.test_client()

    def register_from(address: str, username: str):
        return register(client, username, headers={"X-Forwarded-For": address})

    for number in range(REGISTRATIONS):
        response = register_from(f"2001:db8:1:2::{number + 1:x}", f"v6member{number}")
        assert response.status_code == 302
    assert_too_many_requests(register_from("2001:db8:1:2:ffff:ffff:ffff:ffff", "v6_too_many"))
    assert register_from("2001:db8:1:3::1", "next_network").status_code == 302
    # IPv4, and IPv4 written as IPv6, are counted by address, as before.
    assert register_from("203.0.113.5", "v4member").status_code == 302
    assert register_from("::ffff:203.0.113.6", "mapped").status_code == 302
    assert usernames(registering)[-3:] == ["next_network", "v4member", "mapped"]


# What the last X-Forwarded-For entry may hold when the client wrote it: a proxy that
# appends the address it saw never sends these, but one misconfigured (or PROXY_COUNT
# set with no proxy at all) passes on whatever came.
NOT_ADDRESSES = [
    "",
    " ",
    "unknown",
    "not-an-address",
    "999.1.1.1",
    "1.2.3.4.5",
    "203.0.113.7:8080",
    "[2001:db8::1]",
    "2001:db8::1%",
    "fe80::1%eth0",
    "::ffff:203.0.113.7%x",
    "\u202e203.0.113.7",
    "😀",
    "'; DROP TABLE user; --",
    "x" * 4000,
    "203.0.113.7, not-an-address",
    "not-an-address, 203.0.113.7",
    ",,,",
]


@pytest.mark.parametrize("forwarded_for", NOT_ADDRESSES)
def test_a_forwarded_address_that_is_not_one_is_still_limited(make_app, forwarded_for):
    """Behind a proxy (PROXY_COUNT=1), whatever the forwarded address is, registering
    from it is counted against it: the one past the limit gets the 429 page, never a 500."""
    app = make_app(REGISTRATION_RATE_LIMIT=f"{REGISTRATIONS} per minute", PROXY_COUNT=1)
    client = app.test_client()
    headers = {"X-Forwarded-For": forwarded_for}
    for number in range(REGISTRATIONS):
        assert register(client, f"forwarded{number}", headers=headers).status_code == 302
    assert_too_many_requests(register(client, "one_too_many", headers=headers))
    assert usernames(app) == [f"forwarded{number}" for number in range(REGISTRATIONS)]


def test_two_forwarded_for_headers_are_read_as_one_list(make_app):
    """A client that adds an X-Forwarded-For header of its own before the proxy's:
    the last address is the one counted, whatever the first header says."""
    app = make_app(REGISTRATION_RATE_LIMIT=f"{REGISTRATIONS} per minute", PROXY_COUNT=1)
    client = app.test_client()
    for number in range(REGISTRATIONS):
        forged = [("X-Forwarded-For", f"198.51.100.{number}"), ("X-Forwarded-For", "203.0.113.9")]
        assert register(client, f"doubled{number}", headers=forged).status_code == 302
    forged = [("X-Forwarded-For", "198.51.100.99"), ("X-Forwarded-For", "203.0.113.9")]
    assert_too_many_requests(register(client, "one_too_many", headers=forged))
    other = [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-For", "203.0.113.10")]
    assert register(client, "another_client", headers=other).status_code == 302


def test_typos_and_taken_usernames_do_not_count(registering):
    """Twenty people racing for one name from one office all get an answer."""
    client = registering.test_client()
    assert register(client, "popular").status_code == 302
    for number in range(REGISTRATIONS + 2):
        response = register(client, "popular", f"racer{number}@example.com")
        assert form_errors(response) == {"username": ["Please use a different username."]}
        response = register(client, f"typo{number}", "not-an-address")
        assert form_errors(response) == {"email": [INVALID_EMAIL]}
    for number in range(REGISTRATIONS - 1):
        assert register(client, f"member{number}").status_code == 302
    assert_too_many_requests(register(client, "one_too_many"))
    assert usernames(registering) == ["popular"] + [f"member{n}" for n in range(REGISTRATIONS - 1)]


def test_showing_the_registration_form_does_not_count(registering):
    client = registering.test_client()
    for _ in range(REGISTRATIONS + 1):
        assert client.get("/auth/register").status_code == 200
    assert register(client, "patient").status_code == 302
    assert usernames(registering) == ["patient"]


# --- Bad input: a message or a 4xx, never a 500 ------------------------------------------

FORM = "application/x-www-form-urlencoded"
# A body, its content type, what the form then shows ({field: messages}, flashed
# messages), and the limit that stops it: the account's if the body names one,
# otherwise the client's (a request naming no account can't guess anyone's
# password, but it still counts). A body that isn't valid UTF-8, or isn't a
# form at all, reads as an empty form.
NOTHING_TYPED = ({"username": [REQUIRED], "password": [REQUIRED]}, [])
NAME_TOO_LONG = ({"username": ["Field cannot be longer than 64 characters."]}, [])
MALFORMED = {
    "no username": ({"password": "x"}, None, ({"username": [REQUIRED]}, []), PER_CLIENT),
    "no fields at all": ({}, None, NOTHING_TYPED, PER_CLIENT),
    "a 10,000-character username": (
        {"username": "a" * 10_000, "password": "x"},
        None,
        NAME_TOO_LONG,
        PER_ACCOUNT,
    ),
    "a 10,000-character username, multipart": (
        {"username": "a" * 10_000, "password": "x"},
        "multipart/form-data",
        NAME_TOO_LONG,
        PER_ACCOUNT,
    ),
    "invalid UTF-8 bytes": (
        b"username=\xff\xfe\xfdadmin&password=\xc3",
        FORM,
        NOTHING_TYPED,
        PER_CLIENT,
    ),
    "invalid UTF-8, percent-encoded": (
        "username=%ff%feadmin&password=%c3",
        FORM,
        WRONG_LOGIN,
        PER_ACCOUNT,
    ),
    "a username given twice": (
        "username=admin&username=admin1&password=x",
        FORM,
        WRONG_LOGIN,
        PER_ACCOUNT,
    ),
    "JSON, not a form": (
        '{"username": "admin", "password": "x"}',
        "application/json",
        NOTHING_TYPED,
        PER_CLIENT,
    ),
    "not even a body": (b"", FORM, NOTHING_TYPED, PER_CLIENT),
}


@pytest.mark.parametrize(
    "body, content_type, shown, limit", MALFORMED.values(), ids=MALFORMED.keys()
)
def test_malformed_logins_never_500(client, users, body, content_type, shown, limit):
    """Each is shown the form again with what was wrong, until its limit: then the 429 page."""
    kwargs = {"data": body} | ({"content_type": content_type} if content_type else {})
    for _ in range(limit):
        response = client.post("/auth/login", **kwargs)
        assert response.status_code == 200
        assert (form_errors(response), alerts(response)) == shown
    assert_too_many_requests(client.post("/auth/login", **kwargs))


@pytest.mark.parametrize(
    ("body", "errors", "limit"),
    [
        ({}, {"email": [REQUIRED]}, PER_CLIENT),
        (
            {"email": "a" * 10_000 + "@example.com"},
            {"email": ["Field cannot be longer than 254 characters.", INVALID_EMAIL]},
            PER_ACCOUNT,
        ),
        # Not valid UTF-8: it reads as an empty form, which names no account.
        (b"email=\xff\xfe@example.com", {"email": [REQUIRED]}, PER_CLIENT),
    ],
    ids=["no email", "a 10,000-character email", "invalid UTF-8 bytes"],
)
def test_malformed_reset_requests_never_500(client, body, errors, limit):
    """Each is shown the form with its error, until its limit: then, and only then, the 429 page."""
    for _ in range(limit):
        response = client.post("/auth/reset_password_request", data=body, content_type=FORM)
        assert response.status_code == 200
        assert form_errors(response) == errors
    response = client.post("/auth/reset_password_request", data=body, content_type=FORM)
    assert_too_many_requests(response)


def test_a_body_over_the_size_limit_is_a_413(client):
    response = client.post("/auth/login", data=b"username=" + b"a" * 2_000_000, content_type=FORM)
    assert response.status_code == 413


# --- Configuration -------------------------------------------------------------------------


def test_rate_limits_can_be_turned_off(make_app, users):
    client = make_app(**LIMITS, RATELIMIT_ENABLED=False).test_client()
    fail_logins(client, "admin", PER_ACCOUNT + 2)


def test_turning_limits_off_in_one_app_does_not_leak_into_the_next(make_app, users):
    """Flask-Limiter has one limiter per process; every app sets RATELIMIT_ENABLED again."""
    make_app(RATELIMIT_ENABLED=False)
    client = make_app(**LIMITS).test_client()
    fail_logins(client, "admin", PER_ACCOUNT)
    assert login(client, "admin").status_code == 429


@pytest.mark.parametrize(
    "name", ["AUTH_RATE_LIMIT_PER_CLIENT", "AUTH_RATE_LIMIT_PER_ACCOUNT", "REGISTRATION_RATE_LIMIT"]
)
def test_a_limit_that_is_not_a_limit_is_refused_at_startup(make_app, name):
    with pytest.raises(ConfigError, match=name):
        make_app(**{name: "5 per fortnight"})


# --- Cookies -------------------------------------------------------------------------------


def set_cookies(response) -> dict[str, str]:
    """The Set-Cookie headers of `response`, by cookie name."""
    headers = response.headers.get_all("Set-Cookie")
    return {header.split("=", 1)[0]: header for header in headers}


def test_session_and_remember_cookies_are_httponly_and_samesite(client, auth, users):
    cookies = set_cookies(auth.login(remember=True))
    assert set(cookies) == {"session", "remember_token"}
    for header in cookies.values():
        assert "; HttpOnly" in header
        assert "; SameSite=Lax" in header
        assert "; Secure" not in header  # not in development: it is plain HTTP


def test_cookies_are_secure_when_asked(make_app, users):
    """The production config ties both to SESSION_COOKIE_SECURE; test_as_deployed checks that."""
    client = make_app(SESSION_COOKIE_SECURE=True, REMEMBER_COOKIE_SECURE=True).test_client()
    cookies = set_cookies(AuthActions(client).login(remember=True))
    assert set(cookies) == {"session", "remember_token"}
    assert all("; Secure" in header for header in cookies.values())


def test_cookies_are_secure_whenever_the_request_is_https(client, users):
    """Without SESSION_COOKIE_SECURE: Secure over HTTPS, and only then."""
    data = {"username": "admin", "password": PASSWORD, "remember_me": "y"}
    over_https = set_cookies(client.post("/auth/login", data=data, base_url="https://localhost"))
    assert set(over_https) == {"session", "remember_token"}
    assert all(header.count("; Secure") == 1 for header in over_https.values())


# --- As deployed: gunicorn, the production config, behind an HTTPS proxy -------------------


class ProxiedBrowser:
    """A browser at `address`, as gunicorn sees it behind an HTTPS reverse proxy.

    The browser spoke HTTPS to the proxy, so it sends its Secure cookies; the
    proxy's hop to gunicorn is plain HTTP, with X-Forwarded-For and -Proto.
    """

    def __init__(self, base_url: str, address: str):
        self.base_url = base_url
        self.headers = {"X-Forwarded-For": address, "X-Forwarded-Proto": "https"}
        policy = DefaultCookiePolicy(secure_protocols=("https", "wss", "http"))
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(CookieJar(policy)), NoRedirect
        )

    def request(
        self, path: str, data: dict | None = None, referer: str | None = None
    ) -> tuple[int, HTTPMessage, str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        headers = self.headers | ({"Referer": referer} if referer else {})
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers)
        try:
            with self.opener.open(request, timeout=10) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read().decode()

    def submit(self, path: str, fields: dict) -> tuple[int, HTTPMessage, str]:
        """GET the page with the form, then POST it with its CSRF token."""
        status, _, page = self.request(path)
        assert status == 200, page
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page)
        assert token, "the form has no CSRF token"
        # Over HTTPS, Flask-WTF also wants the Referer to be one of our pages, and
        # browsers send it (Referrer-Policy: same-origin keeps it for our own site).
        referer = f"https://{urllib.parse.urlsplit(self.base_url).netloc}{path}"
        return self.request(path, {"csrf_token": token.group(1), **fields}, referer)


@pytest.mark.system
def test_as_deployed(tmp_path, fresh_database_url):
    """gunicorn with one worker, behind a proxy.

    The per-account limit is the production default, 5 failures a minute; the
    per-client limit is lowered to 7 through the environment, to reach it quickly.
    """
    env = production_env(
        tmp_path,
        fresh_database_url,
        PROXY_COUNT=1,
        SESSION_COOKIE_SECURE=1,
        AUTH_RATE_LIMIT_PER_CLIENT="7 per minute",
    )
    with run_gunicorn(env, tmp_path, app="blog:app", workers=1) as server:
        attacker = ProxiedBrowser(server.url, "203.0.113.1")
        for name in ("victim", "bystander"):
            fields = {"username": name, "email": f"{name}@example.com"}
            fields |= {"password": PASSWORD, "password2": PASSWORD}
            assert attacker.submit("/auth/register", fields)[0] == 302

        def guess(username: str) -> dict[str, str]:
            return {"username": username, "password": "a-wrong-guess"}

        for _ in range(5):
            status, _, page = attacker.submit("/auth/login", guess("victim"))
            assert (status, alerts(page)) == (200, [("danger", INVALID_LOGIN)])
        right = {"username": "victim", "password": PASSWORD}
        status, headers, page = attacker.submit("/auth/login", right)
        assert status == 429
        assert "<h1>Too many requests</h1>" in page
        assert 0 <= int(headers["Retry-After"]) <= 60
        assert headers["Content-Security-Policy"] == POLICY

        # Two more failures make 7 for this client: then every account is refused to it.
        for name in ("someone", "someone-else"):
            assert attacker.submit("/auth/login", guess(name))[0] == 200
        assert attacker.submit("/auth/login", guess("bystander"))[0] == 429

        # Another address (the proxy's X-Forwarded-For, believed because
        # PROXY_COUNT=1) is a client of its own: the victim's account is still
        # limited, the bystander's isn't.
        other = ProxiedBrowser(server.url, "198.51.100.7")
        assert other.submit("/auth/login", right)[0] == 429
        bystander = {"username": "bystander", "password": PASSWORD, "remember_me": "y"}
        status, headers, _ = other.submit("/auth/login", bystander)
        assert status == 302
        cookies = {header.split("=", 1)[0]: header for header in headers.get_all("Set-Cookie")}
        assert set(cookies) == {"session", "remember_token"}
        for header in cookies.values():
            assert "; Secure" in header
            assert "; HttpOnly" in header
            assert "; SameSite=Lax" in header

        status, headers, _ = other.request("/bootstrap/static/css/bootstrap.min.css")
        assert (status, headers["X-Content-Type-Options"]) == (200, "nosniff")
        assert other.request("/healthz")[0] == 200


@pytest.mark.system
def test_twelve_registrations_in_a_row_under_several_workers(tmp_path, fresh_database_url):
    """The production default, 5 a minute per address, whichever worker answers.

    Each registration is a new connection, so gunicorn's workers share them:
    counted in each worker's memory, twelve in a row would all get through.
    """
    env = production_env(tmp_path, fresh_database_url)
    with run_gunicorn(env, tmp_path, app="blog:app", workers=4) as server:
        answers = []
        for number in range(12):
            browser = Browser(server.url)
            fields = {"username": f"signup{number}", "email": f"signup{number}@example.com"}
            fields |= {"password": PASSWORD, "password2": PASSWORD}
            status, headers, page = browser.submit("/auth/register", fields)
            answers.append(status)
            if status == 429:
                assert "<h1>Too many requests</h1>" in page
                assert 0 <= int(headers["Retry-After"]) <= 60
    assert answers == [302] * 5 + [429] * 7
    engine = create_engine(database_url(fresh_database_url))
    try:
        with engine.connect() as connection:
            names = connection.execute(text('SELECT username FROM "user" ORDER BY id'))
            assert names.scalars().all() == [f"signup{number}" for number in range(5)]
    finally:
        engine.dispose()


def password_checks(view) -> int:
    """How many times `view()` checks a password hash (werkzeug's check_password_hash).

    Counted with the interpreter's profiling hook, which sees every Python call.
    """
    calls = []

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is check_password_hash.__code__:
            calls.append(frame)

    sys.setprofile(profile)
    try:
        view()
    finally:
        sys.setprofile(None)
    return len(calls)


def test_a_failed_login_checks_a_hash_for_a_missing_user_too(client, users):
    """Nobody can tell with a stopwatch which usernames have accounts.

    Checking a password is the slow part of a login (scrypt in production, by
    design): skipping it for a username that doesn't exist would make that
    failure about ten times faster (bench/timing.py prints both times).
    """

    def fail_as(username: str):
        return lambda: fail_logins(client, username, 1)

    assert password_checks(fail_as("admin")) == 1
    assert password_checks(fail_as("nobody-at-all")) == 1

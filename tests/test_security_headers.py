"""Strict-Transport-Security and Cache-Control (app/security.py), as deployed.

Every test talks to gunicorn running the blog with its production config, on
a database of its own, through HTTP only: forms with their CSRF tokens, and
cookies, the way a browser does.

- Strict-Transport-Security (HSTS) tells the browser to use only HTTPS for the
  site for HSTS_MAX_AGE seconds. It goes on every response to a request that
  came over HTTPS, and on none over plain HTTP. Behind nginx, gunicorn itself
  is spoken to in plain HTTP: the app knows the browser used HTTPS from
  nginx's X-Forwarded-Proto, believed only with PROXY_COUNT set. The tests
  send that header themselves, as nginx would (or as a client forging it).
- ``Cache-Control: private, no-store`` goes on every response rendered for a
  logged-in user, so that neither a shared cache nor the browser's back
  button after logging out shows one person's pages to another. Static files
  keep their usual caching, and so do a visitor's pages.
"""

import http.client
import re
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from email.message import Message
from http.cookiejar import CookieJar, DefaultCookiePolicy

import pytest

from tests.databases import fresh_database
from tests.servers import (
    BIN,
    ROOT,
    NoRedirect,
    clean_env,
    free_port,
    production_env,
    run_gunicorn,
)

# Every test here starts real servers or processes: `make test-fast` skips them.
pytestmark = pytest.mark.system

YEAR = "max-age=31536000"  # HSTS_MAX_AGE's default, one year
NO_STORE = "private, no-store"
HTTPS = {"X-Forwarded-Proto": "https"}
STATIC = "/bootstrap/static/css/bootstrap.min.css"
PASSWORD = "a-good-password"
# A client that isn't the proxy. gunicorn has a list of proxies of its own
# (forwarded_allow_ips, 127.0.0.1 by default) whose X-Forwarded-Proto it
# would believe whatever PROXY_COUNT says, but for gunicorn.conf.py:
# see test_gunicorn_does_not_believe_a_local_forger.
NOT_THE_PROXY = "127.0.0.2"

# One response of each kind, as a visitor gets it, with its status code.
RESPONSES = {
    "/explore": 200,  # a page
    "/edit_profile": 302,  # a redirect, to the login form
    "/no/such/page": 404,
    "/auth/logout": 405,  # logging out is POST only
    "/_test/fail": 500,  # a bug (tests/gunicorn_app.py)
    STATIC: 200,
}


@dataclass
class Response:
    status: int
    headers: Message
    text: str

    def hsts(self) -> list[str]:
        """Every Strict-Transport-Security header: a browser must get one at most."""
        return self.headers.get_all("Strict-Transport-Security") or []

    def cache_control(self) -> str:
        return ", ".join(self.headers.get_all("Cache-Control") or [])


class Client:
    """A browser: cookies, no automatic redirects, CSRF tokens read from the forms.

    `headers` go with every request: ``X-Forwarded-Proto: https`` makes it a
    browser behind an HTTPS proxy. Its cookies are then Secure, and are sent
    all the same, since the browser's own connection was HTTPS. `address`:
    the client's own address (any 127.x.y.z reaches gunicorn on 127.0.0.1).
    """

    class _FromAddress(urllib.request.HTTPHandler):
        def __init__(self, address: str):
            super().__init__()
            self.address = address

        def http_open(self, request):
            return self.do_open(
                http.client.HTTPConnection, request, source_address=(self.address, 0)
            )

    def __init__(
        self, base_url: str, headers: dict[str, str] | None = None, address: str = "127.0.0.1"
    ):
        self.base_url = base_url
        self.headers = headers or {}
        self.cookies = CookieJar(DefaultCookiePolicy(secure_protocols=("https", "http")))
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies),
            NoRedirect,
            self._FromAddress(address),
        )

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        return self._send(urllib.request.Request(self.base_url + path), headers or {})

    def post(self, path: str, fields: dict[str, str], form_page: str) -> Response:
        """POST `fields` to `path`, as sent from the form on `form_page`."""
        body = urllib.parse.urlencode(fields).encode()
        # Over HTTPS, Flask-WTF refuses a form whose Referer isn't one of our pages.
        scheme = self.headers.get("X-Forwarded-Proto", "http")
        referer = f"{scheme}://{urllib.parse.urlsplit(self.base_url).netloc}{form_page}"
        return self._send(
            urllib.request.Request(self.base_url + path, data=body), {"Referer": referer}
        )

    def submit(self, path: str, fields: dict[str, str], action: str | None = None) -> Response:
        """GET the form on `path`, then POST `fields` and its CSRF token to `action` (`path`)."""
        page = self.get(path)
        assert page.status == 200, page.text
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text)
        assert token, f"no CSRF token on {path}"
        return self.post(action or path, {"csrf_token": token.group(1), **fields}, path)

    def cookie(self, name: str) -> str:
        return next(cookie.value for cookie in self.cookies if cookie.name == name)

    def _send(self, request: urllib.request.Request, headers: dict[str, str]) -> Response:
        for name, value in (self.headers | headers).items():
            request.add_header(name, value)
        try:
            with self.opener.open(request, timeout=30) as answer:
                return Response(answer.status, answer.headers, answer.read().decode())
        except urllib.error.HTTPError as error:
            return Response(error.code, error.headers, error.read().decode())


def register(client: Client, username: str) -> None:
    fields = {"username": username, "email": f"{username}@example.com"}
    response = client.submit(
        "/auth/register", fields | {"password": PASSWORD, "password2": PASSWORD}
    )
    assert (response.status, response.headers["Location"]) == (302, "/auth/login")


def log_in(client: Client, username: str, remember: bool = False) -> Response:
    fields = {"username": username, "password": PASSWORD} | (
        {"remember_me": "y"} if remember else {}
    )
    response = client.submit("/auth/login", fields)
    assert (response.status, response.headers["Location"]) == (302, "/")
    return response


def log_out(client: Client) -> Response:
    """Log out with the button every page has (a form posting to /auth/logout)."""
    response = client.submit("/", {}, action="/auth/logout")
    assert (response.status, response.headers["Location"]) == (302, "/")
    return response


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    """The blog served over plain HTTP, with no proxy in front (PROXY_COUNT unset)."""
    tmp_path = tmp_path_factory.mktemp("plain")
    # Every test here registers from 127.0.0.1: more than the default 5 a minute.
    env = {"REGISTRATION_RATE_LIMIT": "100 per minute"}
    with (
        fresh_database(tmp_path) as database_url,
        run_gunicorn(production_env(tmp_path, database_url, **env), tmp_path, workers=1) as server,
    ):
        yield server.url


@pytest.fixture(scope="module")
def proxied_server(tmp_path_factory):
    """The blog behind one proxy (PROXY_COUNT=1), which says whether the browser used HTTPS.

    One worker is enough: the rate limits' counts (the 429 test) are in a SQLite file
    in LOG_DIR, which more workers would share.
    """
    tmp_path = tmp_path_factory.mktemp("proxied")
    env = {"PROXY_COUNT": 1, "AUTH_RATE_LIMIT_PER_ACCOUNT": "1 per minute"}
    with (
        fresh_database(tmp_path) as database_url,
        run_gunicorn(production_env(tmp_path, database_url, **env), tmp_path, workers=1) as server,
    ):
        yield server.url


# --- Strict-Transport-Security ----------------------------------------------------------


@pytest.mark.parametrize(("path", "status"), RESPONSES.items())
def test_no_hsts_over_plain_http(plain_server, path, status):
    response = Client(plain_server).get(path)
    assert response.status == status
    assert response.hsts() == []


@pytest.mark.parametrize(("path", "status"), RESPONSES.items())
def test_no_hsts_for_a_forged_forwarded_proto(plain_server, path, status):
    """Without a proxy (PROXY_COUNT unset), X-Forwarded-Proto comes from the
    client and proves nothing: a client on the network, with gunicorn exposed."""
    response = Client(plain_server, HTTPS, address=NOT_THE_PROXY).get(path)
    assert response.status == status
    assert response.hsts() == []


def test_gunicorn_does_not_believe_a_local_forger(plain_server):
    """Any process on the server's machine can say "https" to gunicorn on 127.0.0.1.

    By default gunicorn believes it (its forwarded_allow_ips is 127.0.0.1) and
    sets the request's scheme to https before the app, and PROXY_COUNT, have a
    say; gunicorn.conf.py turns that off (forwarded_allow_ips, secure_scheme_headers).
    """
    assert Client(plain_server, HTTPS).get("/explore").hsts() == []


@pytest.mark.parametrize(("path", "status"), RESPONSES.items())
def test_hsts_on_every_response_over_https(proxied_server, path, status):
    response = Client(proxied_server, HTTPS).get(path)
    assert response.status == status
    assert response.hsts() == [YEAR]


@pytest.mark.parametrize(("path", "status"), RESPONSES.items())
def test_no_hsts_when_the_proxy_says_plain_http(proxied_server, path, status):
    """nginx's server on port 80 sends X-Forwarded-Proto: http."""
    response = Client(proxied_server, {"X-Forwarded-Proto": "http"}).get(path)
    assert response.status == status
    assert response.hsts() == []


def test_hsts_on_form_errors_over_https(proxied_server):
    """The 400 of a form without its CSRF token, and the 429 of too many failed logins."""
    client = Client(proxied_server, HTTPS)
    refused = client.post("/auth/login", {"username": "x", "password": "y"}, "/auth/login")
    assert refused.status == 400
    assert "The form has expired" in refused.text
    assert refused.hsts() == [YEAR]

    guess = {"username": "nobody-at-all", "password": "a-wrong-guess"}
    assert client.submit("/auth/login", guess).status == 200  # the form again, counted
    limited = client.submit("/auth/login", guess)
    assert limited.status == 429
    assert "<h1>Too many requests</h1>" in limited.text
    assert limited.hsts() == [YEAR]


@pytest.mark.parametrize(
    "proto",
    ["", "HTTPS, http", "javascript:", "https" * 1000, "http, " * 500 + "ftp"],
    ids=["empty", "https then the proxy's http", "javascript", "very long", "long list"],
)
@pytest.mark.parametrize(("path", "status"), RESPONSES.items())
def test_odd_forwarded_proto_is_never_https_nor_a_500(proxied_server, proto, path, status):
    """The proxy's own entry is the last one, and only "https" means HTTPS.

    nginx replaces whatever the client sent, but a proxy that appends to it, or
    a misconfigured one, could pass any of these on.
    """
    response = Client(proxied_server, {"X-Forwarded-Proto": proto}).get(path)
    assert response.status == status
    assert response.hsts() == []


@pytest.mark.parametrize(
    ("max_age", "expected"), [("0", []), ("120", ["max-age=120"])], ids=["off", "two minutes"]
)
def test_hsts_max_age_setting(tmp_path, fresh_database_url, max_age, expected):
    env = production_env(tmp_path, fresh_database_url, PROXY_COUNT=1, HSTS_MAX_AGE=max_age)
    with run_gunicorn(env, tmp_path, workers=1) as server:
        client = Client(server.url, HTTPS)
        for path, status in RESPONSES.items():
            response = client.get(path)
            assert (path, response.status, response.hsts()) == (path, status, expected)


def startup_command_env(**settings: object) -> dict[str, str]:
    """A production environment with `settings`, and no .env file read: only these count."""
    env = clean_env(
        FLASK_APP="blog.py",
        FLASK_CONFIG="production",
        SECRET_KEY="a-test-secret-that-is-long-enough-for-production",
        DATABASE_URL="sqlite:///unused.sqlite",
        **settings,
    )
    # python-dotenv's switch (config.py) and Flask's (the `flask` command).
    return env | {"PYTHON_DOTENV_DISABLED": "1", "FLASK_SKIP_DOTENV": "1"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "HSTS_MAX_AGE=-1 is negative: use 0 to turn it off."),
        ("a year", "HSTS_MAX_AGE='a year' is not a whole number."),
    ],
    ids=["negative", "not a number"],
)
@pytest.mark.parametrize(
    "command",
    [
        [sys.executable, "-c", "import blog"],
        [BIN / "flask", "routes"],
        # --preload: gunicorn's master loads the app itself, and stops with it.
        [BIN / "gunicorn", "--preload", "--workers", "1", "blog:app"],
    ],
    ids=["import blog", "flask", "gunicorn"],
)
def test_a_bad_hsts_max_age_is_refused_at_startup(command, value, message):
    """Exit status 3 (gunicorn's "cannot boot"), one line saying what to fix, no traceback."""
    if command[0] == BIN / "gunicorn":
        command = [*command[:-1], "--bind", f"127.0.0.1:{free_port()}", command[-1]]
    result = subprocess.run(
        command,
        cwd=ROOT,
        env=startup_command_env(HSTS_MAX_AGE=value),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3, result.stderr
    assert f"Configuration error: {message}\n" in result.stderr
    assert "Traceback" not in result.stderr


# --- Cache-Control ------------------------------------------------------------------------


def test_pages_of_a_logged_in_user_are_never_stored(plain_server):
    client = Client(plain_server)
    register(client, "reader")
    assert log_in(client, "reader").cache_control() == NO_STORE  # the redirect after it

    for path in ("/", "/index", "/explore", "/user/reader", "/edit_profile", "/no/such/page"):
        response = client.get(path)
        assert (path, response.status) == (path, 404 if path == "/no/such/page" else 200)
        assert "Profile (reader)" in response.text  # rendered for the user
        assert (path, response.cache_control()) == (path, NO_STORE)

    for path, status in (("/auth/login", 302), ("/_test/fail", 500), ("/auth/logout", 405)):
        response = client.get(path)
        assert (path, response.status, response.cache_control()) == (path, status, NO_STORE)

    # A form sent back with its errors, and a post written (the redirect after it).
    invalid = client.submit("/edit_profile", {"username": "", "about_me": ""})
    assert (invalid.status, invalid.cache_control()) == (200, NO_STORE)
    posted = client.submit("/", {"post": "Only for my followers' eyes"})
    assert (posted.status, posted.cache_control()) == (302, NO_STORE)


def test_static_files_keep_their_caching_for_a_logged_in_user(plain_server):
    visitor = Client(plain_server).get(STATIC)
    client = Client(plain_server)
    register(client, "styled")
    log_in(client, "styled")
    static = client.get(STATIC)
    assert static.status == visitor.status == 200
    assert "no-store" not in static.cache_control()
    assert static.cache_control() == visitor.cache_control()
    # The app's own static route too (the app has no files there: a 404).
    missing = client.get("/static/no-such-file.css")
    assert missing.status == 404
    assert "no-store" not in missing.cache_control()


def test_a_visitors_pages_may_be_stored(plain_server):
    """Nothing in them belongs to one person (here, a visitor who never logged in)."""
    register(Client(plain_server), "author")
    visitor = Client(plain_server)
    for path, status in [
        ("/", 200),
        ("/explore", 200),
        ("/auth/login", 200),
        ("/user/author", 200),
        ("/edit_profile", 302),
        ("/no/such/page", 404),
    ]:
        response = visitor.get(path)
        assert (path, response.status) == (path, status)
        assert (path, "no-store" in response.cache_control()) == (path, False)


def test_after_logging_out_pages_may_be_stored_again(plain_server):
    client = Client(plain_server)
    register(client, "leaver")
    log_in(client, "leaver")
    assert client.get("/explore").cache_control() == NO_STORE

    assert "no-store" not in log_out(client).cache_control()
    for path in ("/", "/explore", "/user/leaver", "/auth/login", "/no/such/page"):
        response = client.get(path)
        assert "Profile (leaver)" not in response.text  # a visitor's page
        assert (path, "no-store" in response.cache_control()) == (path, False)


def test_a_remembered_login_is_not_stored_either(plain_server):
    """A new browser session with only the remember-me cookie: logged in again, no-store."""
    first = Client(plain_server)
    register(first, "returning")
    log_in(first, "returning", remember=True)
    returning = Client(plain_server)
    response = returning.get("/", {"Cookie": f"remember_token={first.cookie('remember_token')}"})
    assert response.status == 200
    assert "Profile (returning)" in response.text
    assert response.cache_control() == NO_STORE


def test_logged_in_over_https_both_headers(proxied_server):
    client = Client(proxied_server, HTTPS)
    register(client, "secure")
    log_in(client, "secure")
    page = client.get("/user/secure")
    assert (page.status, page.hsts(), page.cache_control()) == (200, [YEAR], NO_STORE)
    static = client.get(STATIC)
    assert static.hsts() == [YEAR]
    assert "no-store" not in static.cache_control()


def test_database_outage_for_a_logged_in_user_is_a_503_not_stored(plain_server, tmp_path):
    """Deciding "logged in" must not load the user: the database is down.

    The user logs in while the database is up; then the same site (same
    SECRET_KEY, so their cookie is still good) runs on a database nobody
    answers for. Their pages are the 503 page, never a 500, and not stored;
    a visitor's 503 page may be. (Asking Flask-Login's `current_user` would
    try the database again: a 500 where the view itself never loaded the user.)
    """
    client = Client(plain_server, HTTPS)
    register(client, "unlucky")
    log_in(client, "unlucky")
    nothing_listens = f"postgresql://postgres@127.0.0.1:{free_port()}/blog"
    env = production_env(tmp_path, nothing_listens, PROXY_COUNT=1, DATABASE_CONNECT_TIMEOUT=2)
    with run_gunicorn(env, tmp_path, workers=1, upgrade=False, ready_path=STATIC) as outage:
        client.base_url = outage.url
        # The health check never loads the user: nor may the headers added after it.
        health = client.get("/healthz")
        assert (health.status, health.cache_control()) == (503, NO_STORE)
        for path in ("/", "/explore", "/user/unlucky", "/edit_profile"):
            response = client.get(path)
            assert (path, response.status) == (path, 503)
            assert "Temporarily unavailable" in response.text
            assert (response.cache_control(), response.hsts()) == (NO_STORE, [YEAR])
        static = client.get(STATIC)
        assert (static.status, "no-store" in static.cache_control()) == (200, False)

        visitor = Client(outage.url, HTTPS).get("/explore")
        assert visitor.status == 503
        assert (visitor.hsts(), "no-store" in visitor.cache_control()) == ([YEAR], False)

"""Links in password-reset mails, whatever Host header a client sends.

A reset link is built from the request's address unless BASE_URL is set, and
the Host header is the client's choice: sent with ``Host: evil.example``, a
request for someone else's reset would get them a genuine mail whose link
hands their token to evil.example. The rules (app/auth/email.py): BASE_URL
when set; else the request's host if TRUSTED_HOSTS is set (Flask refuses any
other with a 400 page); else only a host naming this machine; else no mail,
the same page, and a warning in the log.

Against the blog as it runs in production: gunicorn with the production
config, one worker (so that its one outbox thread sends the mails in the order
they were asked for), a real SMTP server, on SQLite or PostgreSQL. Requests
are written byte by byte, so that the Host header can be anything, or missing.

Also: `flask check-deploy` on those settings, and the reset request doing the
same work with or without an account (the difference in time told who has one).
"""

import http.client
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from conftest import add_user, config_for
from databases import fresh_database, upgrade_database
from flask import template_rendered
from pages import alerts
from query_count import count_statements
from servers import (
    BIN,
    ROOT,
    Browser,
    Gunicorn,
    env_settings,
    production_env,
    run_gunicorn,
    smtp_server,
    wait_until,
)

from app import create_app
from app.extensions import db
from app.mail import outbox

NEW_PASSWORD = "a-brand-new-password"
ALICE = "alice@example.com"  # whose reset a forged Host asks for
MARKER = "marker@example.com"  # asked for after a request, to know its mails have all come
ON_ITS_WAY = ("info", "If that address has an account, a mail with a reset link is on its way.")
NOT_MAILED = (
    "WARNING: Password reset not mailed: the request was addressed to host {host}, which any "
    "client can forge, so a link on it could hand the token to someone else. Set BASE_URL to "
    "the site's address, or TRUSTED_HOSTS to the host names it serves. [in "
)
# The 400 page, as a reader sees it.
BAD_REQUEST = [
    "<title>Bad request · Blog</title>",
    "<h1>Bad request</h1>",
    '<p class="lead">The request could not be understood. Please check it and try again.</p>',
    '<a href="/">Back to the home page</a>',
    '<a class="nav-link" href="/auth/login">Log in</a>',
]
# Stands for the server's own address, 127.0.0.1:<port>, which tests don't know in advance.
OWN = "own address"
LONG_HOST = "a" * 300  # its one part is longer than the 63 letters a host name allows
UNICODE_HOST = "évil.example"
# Generous: each test asks for several mails, and every one counts.
LIMITS = {
    "AUTH_RATE_LIMIT_PER_CLIENT": "1000 per minute",
    "AUTH_RATE_LIMIT_PER_ACCOUNT": "1000 per minute",
}


# --- A client that can send any Host ----------------------------------------------


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    text: str


class RawClient:
    """An HTTP client that writes its requests itself, byte by byte, so that the
    Host header can be anything, twice, or missing; it keeps the session cookie
    as a browser on 127.0.0.1 would."""

    def __init__(self, server: Gunicorn):
        self.port = urlsplit(server.url).port
        self.own_host = f"127.0.0.1:{self.port}"
        self.cookies: dict[str, str] = {}

    def request(
        self,
        method: str,
        path: str,
        host: str | None,
        fields: dict | None = None,
        version: str = "HTTP/1.1",
        extra_headers: tuple[str, ...] = (),
    ) -> Answer:
        """Send one request with this Host header (None: no Host header at all)."""
        body = urlencode(fields).encode() if fields is not None else b""
        head = [f"{method} {path} {version}"]
        if host is not None:
            head.append(f"Host: {host}")
        head += extra_headers
        if self.cookies:
            head.append("Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        if fields is not None:
            head += [
                "Content-Type: application/x-www-form-urlencoded",
                f"Content-Length: {len(body)}",
            ]
        head.append("Connection: close")
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            sock.sendall("\r\n".join(head).encode() + b"\r\n\r\n" + body)
            response = http.client.HTTPResponse(sock)
            response.begin()
            answer = Answer(response.status, response.headers, response.read().decode())
        for cookie in answer.headers.get_all("Set-Cookie") or []:
            name, _, value = cookie.partition(";")[0].partition("=")
            if value:
                self.cookies[name] = value
            else:  # deleted
                self.cookies.pop(name, None)
        return answer

    def get(self, path: str) -> Answer:
        return self.request("GET", path, self.own_host)

    def ask_for_reset(self, email: str, host: str | None = OWN, **options) -> Answer:
        """Open the form on the server's own address, then send it with this Host."""
        page = self.get("/auth/reset_password_request")
        token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page.text).group(1)
        host = self.own_host if host == OWN else host
        fields = {"csrf_token": token, "email": email}
        return self.request("POST", "/auth/reset_password_request", host, fields, **options)


def mails_caused_by(smtp, client: RawClient, ask: Callable[[], Answer]) -> tuple[Answer, list]:
    """Make a request; return its answer and every mail it caused.

    The server has one worker, whose one outbox thread sends mails in the
    order they were asked for: once the mail asked for next (to MARKER) has
    arrived, any mail caused by this request has arrived before it. No waiting
    for a mail that might yet come.
    """
    before = len(smtp.mailbox.messages)
    answer = ask()
    client.ask_for_reset(MARKER)
    wait_until(
        lambda: any(m["To"] == MARKER for m in smtp.mailbox.messages[before:]),
        message="the marker's mail",
    )
    mails = smtp.mailbox.messages[before:]
    assert mails[-1]["To"] == MARKER
    return answer, mails[:-1]


def links_in(message) -> list[str]:
    """Every URL in a mail's plain-text part."""
    return re.findall(r"\S+://\S+", message.get_body(("plain",)).get_content())


def log_lines(server: Gunicorn, answer: Answer) -> list[str]:
    """The lines the blog logged (LOG_DIR/blog.log) while serving `answer`."""
    log = server.output.parent / "logs" / "blog.log"
    return [line for line in log.read_text().splitlines() if answer.headers["X-Request-ID"] in line]


def assert_bad_request_page(server: Gunicorn, answer: Answer) -> None:
    """The site's own 400 page, rendered whole, and nothing logged as an error."""
    assert answer.status == 400
    for fragment in BAD_REQUEST:
        assert fragment in answer.text, answer.text
    assert "evil" not in answer.text
    assert log_lines(server, answer) == []
    assert "Traceback" not in (server.output.parent / "logs" / "blog.log").read_text()
    assert "Traceback" not in server.log()


# --- The servers ------------------------------------------------------------------


@pytest.fixture(scope="module")
def site_database(tmp_path_factory) -> Iterator[str]:
    """A database for the module's servers, with the accounts the tests ask for."""
    with fresh_database(tmp_path_factory.mktemp("db")) as url:
        upgrade_database(url)
        app = create_app(config_for(url))
        with app.app_context():
            for name in ("alice", "marker", "bob", "carol"):
                add_user(name)
            db.engine.dispose()
        yield url


@pytest.fixture(scope="module")
def smtp(tmp_path_factory):
    with smtp_server("plain", tmp_path_factory.mktemp("smtp")) as server:
        yield server


@contextmanager
def blog(folder: Path, database_url: str, smtp, **settings) -> Iterator[Gunicorn]:
    """The blog under gunicorn, mail on, BASE_URL and TRUSTED_HOSTS blank unless given."""
    env = production_env(
        folder,
        database_url,
        BASE_URL="",
        TRUSTED_HOSTS="",
        MAIL_DEFAULT_SENDER="blog@example.com",
        **LIMITS,
        **env_settings(smtp.settings),
    )
    env |= settings
    with run_gunicorn(env, folder, workers=1, upgrade=False) as server:
        yield server


@pytest.fixture(scope="module")
def open_site(tmp_path_factory, site_database, smtp) -> Iterator[Gunicorn]:
    """Neither BASE_URL nor TRUSTED_HOSTS: what a new server starts with."""
    with blog(tmp_path_factory.mktemp("open"), site_database, smtp) as server:
        yield server


@pytest.fixture(scope="module")
def base_url_site(tmp_path_factory, site_database, smtp) -> Iterator[Gunicorn]:
    with blog(
        tmp_path_factory.mktemp("base"), site_database, smtp, BASE_URL="https://blog.example.com"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def trusted_site(tmp_path_factory, site_database, smtp) -> Iterator[Gunicorn]:
    with blog(
        tmp_path_factory.mktemp("trusted"), site_database, smtp, TRUSTED_HOSTS="127.0.0.1"
    ) as server:
        yield server


def reset_and_log_in(server: Gunicorn, link: str, username: str) -> None:
    """Follow a reset link as its owner would, set a new password, and log in with it."""
    browser = Browser(server.url)
    assert link.startswith(server.url + "/auth/reset_password/")
    status, headers, _ = browser.request(link.removeprefix(server.url))
    assert (status, headers["Location"]) == (302, "/auth/reset_password")
    fields = {"password": NEW_PASSWORD, "password2": NEW_PASSWORD}
    status, headers, _ = browser.submit("/auth/reset_password", fields)
    assert (status, headers["Location"]) == (302, "/auth/login")
    status, headers, _ = browser.submit(
        "/auth/login", {"username": username, "password": NEW_PASSWORD}
    )
    assert (status, headers["Location"]) == (302, "/")
    assert f"Profile ({username})" in browser.request("/")[2]


# --- Neither BASE_URL nor TRUSTED_HOSTS -------------------------------------------


def test_a_forged_host_gets_no_mail_and_the_same_page(open_site, smtp):
    client = RawClient(open_site)
    forged, mails = mails_caused_by(
        smtp, client, lambda: client.ask_for_reset(ALICE, host="evil.example")
    )
    assert mails == []
    assert (forged.status, forged.headers["Location"]) == (302, "/auth/login")
    assert alerts(client.get("/auth/login").text) == [ON_ITS_WAY]
    # Why, and what to do about it, is in the log, with the request it concerns.
    [line] = log_lines(open_site, forged)
    assert NOT_MAILED.format(host="'evil.example'") in line

    # A good request for the same account: its mail goes, the page is the same.
    good, mails = mails_caused_by(smtp, client, lambda: client.ask_for_reset(ALICE))
    assert [m["To"] for m in mails] == [ALICE]
    assert (good.status, good.headers["Location"], good.text) == (
        forged.status,
        forged.headers["Location"],
        forged.text,
    )
    assert alerts(client.get("/auth/login").text) == [ON_ITS_WAY]
    assert log_lines(open_site, good) == []


def test_a_request_for_this_machine_gets_a_link_that_works(open_site, smtp):
    client = RawClient(open_site)
    answer, mails = mails_caused_by(smtp, client, lambda: client.ask_for_reset("bob@example.com"))
    assert answer.status == 302
    [mail] = mails
    [link] = links_in(mail)
    reset_and_log_in(open_site, link, "bob")


# What each site does with a Host: a link on this machine (its start given), no
# mail (None), or the 400 page (400). Never a link anywhere else, never a 500.
HOSTILE_HOSTS = [
    # (Host header, HTTP version, other headers), the open site, the trusted site
    ((None, "HTTP/1.0", ()), OWN, OWN),  # no Host: gunicorn gives its own address
    ((None, "HTTP/1.1", ()), OWN, OWN),
    (("", "HTTP/1.1", ()), None, 400),
    (("evil.example", "HTTP/1.1", ()), None, 400),
    (("evil.example", "HTTP/1.0", ()), None, 400),
    (("EVIL.example:8080", "HTTP/1.1", ()), None, 400),
    (("a@evil.example", "HTTP/1.1", ()), None, 400),
    (("evil.example:80@127.0.0.1", "HTTP/1.1", ()), None, 400),
    (("127.0.0.1@evil.example", "HTTP/1.1", ()), None, 400),
    (("[::1]", "HTTP/1.1", ()), "http://[::1]/", 400),
    (("[::1]:5000", "HTTP/1.1", ()), "http://[::1]:5000/", 400),
    (("[2001:db8::1]", "HTTP/1.1", ()), None, 400),
    (("[::ffff:127.0.0.1]", "HTTP/1.1", ()), None, 400),
    ((LONG_HOST, "HTTP/1.1", ()), 400, 400),  # no host name at all: Werkzeug refuses it
    ((UNICODE_HOST, "HTTP/1.1", ()), None, 400),
    (("localhost.", "HTTP/1.1", ()), None, 400),
    (("localhost.evil.example", "HTTP/1.1", ()), None, 400),
    (("127.0.0.1.nip.io", "HTTP/1.1", ()), None, 400),
    (("localhost:99999", "HTTP/1.1", ()), None, 400),
    (("LOCALHOST:5000", "HTTP/1.1", ()), "http://localhost:5000/", 400),
    (("127.0.0.1:80", "HTTP/1.1", ()), "http://127.0.0.1/", "http://127.0.0.1/"),
    # Without PROXY_COUNT, X-Forwarded-Host is ignored, whichever way round.
    (("evil.example", "HTTP/1.1", ("X-Forwarded-Host: localhost",)), None, 400),
    (("localhost", "HTTP/1.1", ("X-Forwarded-Host: evil.example",)), "http://localhost/", 400),
]


def hostile_cases(site: int) -> list:
    """HOSTILE_HOSTS as pytest parameters for one site (1: open, 2: trusted)."""
    cases = []
    for row in HOSTILE_HOSTS:
        host, version, headers = row[0]
        name = "no Host" if host is None else repr(host[:30])
        cases.append(pytest.param(row[0], row[site], id=" ".join([name, version, *headers])))
    return cases


def check_hostile_host(server: Gunicorn, smtp, sent: tuple, expected) -> None:
    """Ask for Alice's reset with a hostile Host; check the page, the mails and the log."""
    host, version, extra = sent
    client = RawClient(server)
    answer, mails = mails_caused_by(
        smtp,
        client,
        lambda: client.ask_for_reset(ALICE, host, version=version, extra_headers=extra),
    )
    if expected == 400:
        assert_bad_request_page(server, answer)
        assert mails == []
        return
    assert (answer.status, answer.headers["Location"]) == (302, "/auth/login")
    if expected is None:
        assert mails == []
        # The header as gunicorn hands it on: bytes read as Latin-1, as WSGI says.
        as_received = host.encode().decode("latin-1")
        [line] = log_lines(server, answer)
        assert NOT_MAILED.format(host=repr(as_received)) in line
        return
    start = server.url + "/" if expected == OWN else expected
    [mail] = mails
    [link] = links_in(mail)
    assert link.startswith(start + "auth/reset_password/"), link
    assert log_lines(server, answer) == []


@pytest.mark.parametrize(("sent", "expected"), hostile_cases(site=1))
def test_hostile_hosts_never_get_a_link_elsewhere(open_site, smtp, sent, expected):
    check_hostile_host(open_site, smtp, sent, expected)


def test_two_host_headers_are_refused_by_gunicorn(open_site, smtp):
    client = RawClient(open_site)
    answer, mails = mails_caused_by(
        smtp,
        client,
        lambda: client.ask_for_reset(ALICE, extra_headers=("Host: evil.example",)),
    )
    assert answer.status == 400  # gunicorn's own page: the request never reaches the blog
    assert mails == []


# --- BASE_URL ---------------------------------------------------------------------


def test_with_base_url_the_link_is_on_it_whatever_the_host(base_url_site, smtp):
    client = RawClient(base_url_site)
    answer, mails = mails_caused_by(
        smtp, client, lambda: client.ask_for_reset(ALICE, host="evil.example")
    )
    assert (answer.status, answer.headers["Location"]) == (302, "/auth/login")
    [mail] = mails
    [link] = links_in(mail)
    assert link.startswith("https://blog.example.com/auth/reset_password/")
    assert "evil" not in mail.as_string()
    # The token in it is a real one: opened on this server, it shows the form.
    browser = Browser(base_url_site.url)
    status, headers, _ = browser.request(link.removeprefix("https://blog.example.com"))
    assert (status, headers["Location"]) == (302, "/auth/reset_password")
    status, _, page = browser.request("/auth/reset_password")
    assert status == 200
    assert 'name="password2"' in page


# --- TRUSTED_HOSTS ----------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_an_untrusted_host_gets_the_400_page(trusted_site, method):
    client = RawClient(trusted_site)
    client.get("/explore")  # a session, as a visitor has
    fields = {"email": ALICE} if method == "POST" else None
    answer = client.request(method, "/auth/reset_password_request", "evil.example", fields)
    assert_bad_request_page(trusted_site, answer)
    # The page's own links work: they are paths, on whatever host the reader used.
    assert client.get("/").status == 200


def test_a_trusted_host_gets_a_link_that_works(trusted_site, smtp):
    client = RawClient(trusted_site)
    answer, mails = mails_caused_by(smtp, client, lambda: client.ask_for_reset("carol@example.com"))
    assert (answer.status, answer.headers["Location"]) == (302, "/auth/login")
    [mail] = mails
    [link] = links_in(mail)
    reset_and_log_in(trusted_site, link, "carol")


@pytest.mark.parametrize(("sent", "expected"), hostile_cases(site=2))
def test_hostile_hosts_against_trusted_hosts(trusted_site, smtp, sent, expected):
    check_hostile_host(trusted_site, smtp, sent, expected)


# --- flask check-deploy -----------------------------------------------------------

RESET_WARNING = (
    "Neither BASE_URL nor TRUSTED_HOSTS is set: password-reset mails go out only for "
    "requests addressed to localhost, as any other Host header may be forged. Set BASE_URL "
    "to the site's address (https://blog.example.com), or TRUSTED_HOSTS to the host names "
    "it serves."
)


@pytest.mark.parametrize(
    ("settings", "problems", "warnings"),
    [
        ({}, [], [RESET_WARNING]),
        ({"BASE_URL": "https://blog.example.com"}, [], []),
        ({"TRUSTED_HOSTS": "blog.example.com"}, [], []),
        ({"BASE_URL": "https://blog.example.com", "TRUSTED_HOSTS": "blog.example.com"}, [], []),
        ({"BASE_URL": "https://blog.example.com:8443", "TRUSTED_HOSTS": ".example.com"}, [], []),
        (
            {"BASE_URL": "https://www.blog.example.com", "TRUSTED_HOSTS": "blog.example.com"},
            [
                "BASE_URL's host 'www.blog.example.com' is not in TRUSTED_HOSTS: the site "
                "would refuse the links in its own mails."
            ],
            [],
        ),
        # Mail off: no reset mail at all, so nothing to say about its links.
        (
            {"MAIL_SERVER": ""},
            ["ADMINS or MAIL_SERVER is not set: nobody is told about errors."],
            [],
        ),
    ],
    ids=["neither", "base-url", "trusted-hosts", "both", "suffix", "base-url-untrusted", "no-mail"],
)
def test_check_deploy_on_base_url_and_trusted_hosts(
    tmp_path, site_database, settings, problems, warnings
):
    env = production_env(
        tmp_path,
        site_database,
        SESSION_COOKIE_SECURE="1",
        ADMINS="admin@example.com",
        MAIL_SERVER="127.0.0.1",  # never contacted: check-deploy only reads the settings
        BASE_URL="",
        TRUSTED_HOSTS="",
        REDIS_URL="",
        WEB_CONCURRENCY="1",  # one worker: rate limits in memory are counted in one place
    )
    result = subprocess.run(
        [BIN / "flask", "check-deploy"],
        cwd=ROOT,
        env=env | settings,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stdout.splitlines()
    assert [line.removeprefix("PROBLEM: ") for line in lines if line.startswith("PROBLEM")] == (
        problems
    )
    assert [line.removeprefix("WARNING: ") for line in lines if line.startswith("WARNING")] == (
        warnings
    )
    assert result.returncode == (1 if problems else 0), result.stdout + result.stderr


# --- The same work with or without an account -------------------------------------


@contextmanager
def templates_rendered(app) -> Iterator[list[str]]:
    """Collect the names of the templates `app` renders inside the block, in any thread."""
    names: list[str] = []

    def record(sender, template, context, **extra) -> None:
        names.append(template.name)

    with template_rendered.connected_to(record, app):
        yield names


@contextmanager
def outbox_held() -> Iterator[None]:
    """Keep the mail outbox busy until the block ends, so that nothing it does
    (looking an account up, rendering the mail) happens inside the block."""
    release = threading.Event()
    outbox.submit(release.wait)
    try:
        yield
    finally:
        release.set()


@pytest.mark.parametrize(
    ("account_language", "page_language", "subject", "minutes_line"),
    [
        ("zh_CN", None, "重置密码", "该链接只能使用一次，30 分钟内有效。"),  # noqa: RUF001
        (None, "zh-CN", "重置密码", "该链接只能使用一次，30 分钟内有效。"),  # noqa: RUF001
        ("en", "zh-CN", "Reset your password", "The link works once, for 30 minutes."),
        (None, None, "Reset your password", "The link works once, for 30 minutes."),
    ],
    ids=["account-chinese", "page-chinese", "account-english-page-chinese", "english"],
)
def test_the_request_does_the_same_work_with_or_without_an_account(
    make_app, tmp_path, account_language, page_language, subject, minutes_line
):
    """The same SQL and the same templates, so the same time: the lookup, the
    token and the mail are the outbox's work, after the answer has gone. The
    mail is still in the account's language, else the page's."""
    with smtp_server("plain", tmp_path) as smtp:
        app = make_app(**smtp.settings, RESET_TOKEN_MAX_AGE=1800)
        with app.app_context():
            add_user("mei").locale = account_language
            db.session.commit()
            engine = db.engine
        client = app.test_client()
        headers = {"Accept-Language": page_language} if page_language else {}
        work = {}
        with outbox_held():
            for email in ("mei@example.com", "nobody@example.com"):
                with count_statements(engine) as statements, templates_rendered(app) as templates:
                    response = client.post(
                        "/auth/reset_password_request", data={"email": email}, headers=headers
                    )
                assert response.headers["Location"] == "/auth/login"
                work[email] = (statements, templates)
        assert work["mei@example.com"] == work["nobody@example.com"] == ([], [])
        outbox.drain()
        [message] = smtp.mailbox.messages
    assert message["To"] == "mei@example.com"
    assert message["Subject"] == subject
    plain = message.get_body(("plain",)).get_content()
    assert minutes_line in plain
    [link] = links_in(message)
    assert link.startswith("http://localhost/auth/reset_password/")

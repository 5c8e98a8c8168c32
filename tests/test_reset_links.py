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

Also: `flask check-deploy` on those settings; the reset request doing the
same work with or without an account (the difference in time told who has one);
what BASE_URL may be (the app refuses to start on one that can't begin a link);
TRUSTED_HOSTS checking host names but not ports; and the database failing when
the outbox looks the account up.
"""

import http.client
import re
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from flask import template_rendered

from app import create_app
from app.extensions import db
from app.mail import outbox
from config import ConfigError
from tests.databases import ON_POSTGRESQL, fresh_database, upgrade_database
from tests.helpers import add_user, config_for, outbox_held
from tests.pages import alerts
from tests.query_count import count_statements
from tests.servers import (
    BIN,
    ROOT,
    Browser,
    Gunicorn,
    env_settings,
    free_port,
    production_env,
    run_gunicorn,
    smtp_server,
    wait_until,
)

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


@pytest.mark.system
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


@pytest.mark.system
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
@pytest.mark.system
def test_hostile_hosts_never_get_a_link_elsewhere(open_site, smtp, sent, expected):
    check_hostile_host(open_site, smtp, sent, expected)


@pytest.mark.system
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


@pytest.mark.system
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
@pytest.mark.system
def test_an_untrusted_host_gets_the_400_page(trusted_site, method):
    client = RawClient(trusted_site)
    client.get("/explore")  # a session, as a visitor has
    fields = {"email": ALICE} if method == "POST" else None
    answer = client.request(method, "/auth/reset_password_request", "evil.example", fields)
    assert_bad_request_page(trusted_site, answer)
    # The page's own links work: they are paths, on whatever host the reader used.
    assert client.get("/").status == 200


@pytest.mark.system
def test_a_trusted_host_gets_a_link_that_works(trusted_site, smtp):
    client = RawClient(trusted_site)
    answer, mails = mails_caused_by(smtp, client, lambda: client.ask_for_reset("carol@example.com"))
    assert (answer.status, answer.headers["Location"]) == (302, "/auth/login")
    [mail] = mails
    [link] = links_in(mail)
    reset_and_log_in(trusted_site, link, "carol")


@pytest.mark.parametrize(("sent", "expected"), hostile_cases(site=2))
@pytest.mark.system
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
@pytest.mark.system
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
@pytest.mark.system
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


# --- What BASE_URL may be -----------------------------------------------------------

HOW_TO_WRITE_IT = (
    "write the site's address, e.g. https://blog.example.com "
    "(a port and a path may follow: https://example.com:8443/blog)."
)
NO_SCHEME = "does not start with http:// or https:// and a host name"
QUERY = "has a query (?) or a fragment (#), which would land in the middle of each link"
# (BASE_URL, what the startup error says about it). These used to start the app,
# then give links that lead nowhere (//blog.example.com/auth/..., https:///auth/...,
# http://alert(1)/auth/...) or make the mail job fail (a query, a port that isn't one).
BAD_BASE_URLS = [
    ("blog.example.com", NO_SCHEME),
    ("//blog.example.com", NO_SCHEME),
    ("https:blog.example.com", NO_SCHEME),
    ("https://", NO_SCHEME),
    ("ftp://blog.example.com", NO_SCHEME),
    ("javascript:alert(1)", NO_SCHEME),
    ("https://blog.example.com?lang=en", QUERY),
    ("https://x?y", QUERY),
    ("https://blog.example.com/#top", QUERY),
    ("https://blog.example.com/?", QUERY),
    (
        "https://blog.example.com:notaport",
        "is not a URL (Port could not be cast to integer value as 'notaport')",
    ),
    ("https://blog.example.com:99999", "is not a URL (Port out of range 0-65535)"),
    ("https://blog.example.com:0", "has port 0"),
    ("https://[::1", "is not a URL (Invalid IPv6 URL)"),
    (" https://blog.example.com", "has a space or a control character in it"),
    ("https://blog.example.com\n", "has a space or a control character in it"),
    ("https://blog.example.com/my blog", "has a space or a control character in it"),
]


def base_url_error(url: str, problem: str) -> str:
    return f"BASE_URL={url!r} {problem}: {HOW_TO_WRITE_IT}"


@pytest.mark.parametrize(("url", "problem"), BAD_BASE_URLS, ids=[repr(u) for u, _ in BAD_BASE_URLS])
def test_a_base_url_that_cannot_start_a_link_is_refused(url, problem):
    with pytest.raises(ConfigError) as refused:
        create_app(config_for("sqlite://", BASE_URL=url))
    assert str(refused.value) == base_url_error(url, problem)


def test_a_base_url_with_a_password_is_refused_without_repeating_it():
    """The message goes to the terminal and the service's log: not the password."""
    with pytest.raises(ConfigError) as refused:
        create_app(config_for("sqlite://", BASE_URL="https://editor:s3cret@blog.example.com"))
    assert str(refused.value) == f"BASE_URL has a user name or a password in it: {HOW_TO_WRITE_IT}"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("blog.example.com", NO_SCHEME),
        ("https://x?y", QUERY),
        ("https://blog.example.com:99999", "is not a URL (Port out of range 0-65535)"),
    ],
    ids=["no scheme", "query", "bad port"],
)
@pytest.mark.system
def test_the_flask_command_refuses_a_bad_base_url(tmp_path, url, problem):
    """Exit status 3 and one line saying what to write, no traceback."""
    env = production_env(tmp_path, f"sqlite:///{tmp_path / 'unused.sqlite'}", BASE_URL=url)
    result = subprocess.run(
        [BIN / "flask", "routes"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stderr) == (
        3,
        f"Configuration error: {base_url_error(url, problem)}\n",
    )
    assert result.stdout == ""


@pytest.mark.system
def test_gunicorn_refuses_a_bad_base_url(tmp_path):
    """gunicorn's master reads a worker's exit status 3 as "cannot boot" and
    stops, with the same status, instead of starting workers for ever."""
    env = production_env(
        tmp_path, f"sqlite:///{tmp_path / 'unused.sqlite'}", BASE_URL="blog.example.com"
    )
    command = [BIN / "gunicorn", "--workers", "1", "--bind", f"127.0.0.1:{free_port()}"]
    result = subprocess.run(
        [*command, "--no-control-socket", "blog:app"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # a gunicorn that started would run until then, and fail the test
    )
    assert result.returncode == 3, result.stderr
    assert f"Configuration error: {base_url_error('blog.example.com', NO_SCHEME)}\n" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("base_url", "link_start"),
    [
        ("https://blog.example.com/", "https://blog.example.com/auth/reset_password/"),
        ("https://blog.example.com:8443", "https://blog.example.com:8443/auth/reset_password/"),
        ("https://example.com/blog", "https://example.com/blog/auth/reset_password/"),
        ("http://example.com:8080/blog/", "http://example.com:8080/blog/auth/reset_password/"),
        ("HTTPS://Blog.Example.com", "https://blog.example.com/auth/reset_password/"),
    ],
    ids=["trailing slash", "port", "path", "port, path and slash", "capitals"],
)
@pytest.mark.system
def test_a_base_url_with_a_port_or_a_path_gives_links_that_work(
    make_app, tmp_path, base_url, link_start
):
    """The mail as the outbox writes and sends it; its token opens the form."""
    with smtp_server("plain", tmp_path) as smtp:
        app = make_app(**smtp.settings, BASE_URL=base_url)
        with app.app_context():
            add_user("mei")
        client = app.test_client()
        response = client.post("/auth/reset_password_request", data={"email": "mei@example.com"})
        assert response.headers["Location"] == "/auth/login"
        [mail] = smtp.mailbox.wait_for(1)
    assert mail["To"] == "mei@example.com"
    [link] = links_in(mail)
    assert link.startswith(link_start), link
    token = link.removeprefix(link_start)
    # The blog serves what follows BASE_URL's own path (a proxy in front takes
    # that part off): the token in the link opens the form.
    response = client.get(f"/auth/reset_password/{token}")
    assert response.headers["Location"] == "/auth/reset_password"
    assert 'name="password2"' in client.get("/auth/reset_password").text


# --- TRUSTED_HOSTS checks host names, not ports ----------------------------------------


@pytest.mark.parametrize(
    ("base_url", "link_start"),
    [
        ("", "http://blog.example.com:6666/auth/reset_password/"),
        ("https://blog.example.com", "https://blog.example.com/auth/reset_password/"),
    ],
    ids=["no BASE_URL", "BASE_URL"],
)
@pytest.mark.system
def test_trusted_hosts_lets_any_port_through_and_base_url_decides_the_link(
    tmp_path, site_database, smtp, base_url, link_start
):
    """What the README says of TRUSTED_HOSTS: Werkzeug compares the host name
    only, so a Host with any port is answered, and without BASE_URL the link
    in the mail carries that port."""
    # 127.0.0.1 too: where the tests open the form and see that the server is up.
    hosts = "blog.example.com,127.0.0.1"
    with blog(tmp_path, site_database, smtp, TRUSTED_HOSTS=hosts, BASE_URL=base_url) as server:
        client = RawClient(server)
        answer, mails = mails_caused_by(
            smtp, client, lambda: client.ask_for_reset(ALICE, host="blog.example.com:6666")
        )
        assert (answer.status, answer.headers["Location"]) == (302, "/auth/login")
        [mail] = mails
        assert mail["To"] == ALICE
        [link] = links_in(mail)
        assert link.startswith(link_start), link
        # The host name is what is checked: another one, on the same port, is refused.
        assert_bad_request_page(server, client.request("GET", "/", "evil.example:6666"))


# --- The database unavailable when the outbox looks the account up --------------------

ADMIN = "admin@example.com"
STATIC_FILE = "/bootstrap/static/css/bootstrap.min.css"  # answers without the database


@contextmanager
def blog_on_its_own(folder: Path, database_url: str, smtp) -> Iterator[Gunicorn]:
    """The blog under gunicorn, mailing its errors to ADMIN, ready once a
    static file answers: its database may not."""
    env = production_env(
        folder,
        database_url,
        ADMINS=ADMIN,
        BASE_URL="",
        TRUSTED_HOSTS="",
        REDIS_URL="",
        MAIL_DEFAULT_SENDER="blog@example.com",
        DATABASE_CONNECT_TIMEOUT=2,
        **env_settings(smtp.settings),
    )
    with run_gunicorn(env, folder, workers=1, upgrade=False, ready_path=STATIC_FILE) as server:
        yield server


def lines_with(server: Gunicorn, text: str) -> list[str]:
    log = server.output.parent / "logs" / "blog.log"
    return [line for line in log.read_text().splitlines() if text in line]


@pytest.mark.parametrize(
    "outage", ["sqlite-file-gone", "postgresql-down"], ids=["sqlite", "postgresql"]
)
@pytest.mark.system
def test_a_database_outage_in_the_outbox_is_a_line_each_and_one_mail_to_the_admins(
    tmp_path, outage
):
    """The reset request needs no database (the outbox looks the account up),
    so the person asking sees the usual page. The outbox then finds the
    database gone: one ERROR line each time, saying so as the 503 page's line
    does, without a traceback; and one mail to the admins, who would otherwise
    never hear of it, however many resets the outage stops (storm control)."""
    if outage == "sqlite-file-gone":
        database_url = f"sqlite:///{tmp_path / 'gone' / 'blog.sqlite'}"
        failure = "unable to open database file"
    else:
        port = free_port()  # nothing listens there
        database_url = f"postgresql://postgres@127.0.0.1:{port}/blog"
        failure = f'connection failed: connection to server at "127.0.0.1", port {port} failed: '
        failure += "Connection refused"
    not_mailed = f"Password reset not mailed: the database is unavailable: {failure}"
    with (
        smtp_server("plain", tmp_path) as smtp,
        blog_on_its_own(tmp_path, database_url, smtp) as server,
    ):
        client = RawClient(server)
        for email in (ALICE, "bob@example.com", ALICE):
            answer = client.ask_for_reset(email)
            assert (answer.status, answer.headers["Location"]) == (302, "/auth/login")
            assert alerts(client.get("/auth/login").text) == [ON_ITS_WAY]
        wait_until(lambda: len(lines_with(server, " ERROR: ")) >= 3, message="three lines")
        # Stopped as systemd stops it: the worker finishes its outbox first.
        assert server.stop() == 0

    lines = lines_with(server, " ERROR: ")
    assert len(lines) == 3, lines
    for line in lines:
        assert f" ERROR: {not_mailed} [in {ROOT / 'app' / 'auth' / 'email.py'}:" in line
        assert line.endswith("[request -]")  # the outbox's, after the request
    assert "Traceback" not in (server.output.parent / "logs" / "blog.log").read_text()
    assert "Traceback" not in server.log()
    # Only the admins' mail, once: no reset mail could be written.
    [mail] = smtp.mailbox.messages
    assert (mail["To"], mail["Subject"]) == (ADMIN, f"[Blog] {not_mailed}")
    assert "Traceback" not in mail.get_body(("plain",)).get_content()


@pytest.mark.system
def test_a_bug_in_the_outbox_keeps_its_traceback(tmp_path, fresh_database_url):
    """A database without its tables is no outage: on SQLite an
    OperationalError too ("no such table"), which must not pass for one."""
    with (
        smtp_server("plain", tmp_path) as smtp,
        blog_on_its_own(tmp_path, fresh_database_url, smtp) as server,
    ):
        client = RawClient(server)
        answer = client.ask_for_reset(ALICE)
        assert (answer.status, answer.headers["Location"]) == (302, "/auth/login")
        wait_until(lambda: lines_with(server, "Mail job failed"), message="the job's failure")
    log = (server.output.parent / "logs" / "blog.log").read_text()
    assert "the database is unavailable" not in log
    if ON_POSTGRESQL:
        raised = 'sqlalchemy.exc.ProgrammingError: (psycopg.errors.UndefinedTable) relation "user"'
    else:
        raised = "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) no such table: user"
    assert "| Traceback (most recent call last):" in log
    assert f"| {raised}" in log
    assert smtp.mailbox.messages == []

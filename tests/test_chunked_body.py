"""Bodies sent with ``Transfer-Encoding: chunked``: no Content-Length, so their
size is only known once they are read (app/input_guard.py, `Request.stream`).

Over MAX_CONTENT_LENGTH (1 MiB), such a body must get the same 413 page as a
body that says its length up front, and change nothing; under it, the form
works as with any other body. Hostile chunking (tiny chunks, a chunk-size line
that lies, a body cut short, Content-Length besides) gets a 4xx or works:
never a 500, never a traceback in gunicorn's log.

Everything real, on 127.0.0.1: gunicorn with the production config, the
requests written byte for byte on a socket (or by urllib, which sends an
iterable body chunked), and Werkzeug's development server, which decodes
chunked bodies its own way. Flask's test client sends no chunked bodies: it
never sets ``wsgi.input_terminated``, so Werkzeug reads such a body as empty.
"""

import http.client
import io
import re
import socket
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import pytest
from flask import Flask, request
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.serving import make_server

from app import create_app
from app.extensions import db
from app.models import Post, User
from config import database_url as sqlalchemy_url
from tests.databases import fresh_database
from tests.helpers import PASSWORD, add_user, config_for
from tests.servers import Browser, Gunicorn, production_env, run_gunicorn

LIMIT = 1024 * 1024  # config.py's MAX_CONTENT_LENGTH
FORM = "application/x-www-form-urlencoded"
TOO_LARGE_TITLE = "Request too large"
TOO_LARGE_MESSAGE = "What you sent is too large."
BAD_REQUEST_TITLE = "Bad request"
POST_SAVED = "Your post is now live!"


# --- Writing and reading HTTP by hand ---------------------------------------------------------


def chunked(body: bytes, size: int = 64 * 1024) -> bytes:
    """`body` in chunked transfer coding: chunks of `size` bytes, then the last, empty one."""
    pieces = [body[start : start + size] for start in range(0, len(body), size)]
    return b"".join(b"%x\r\n%b\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"


def form_of_size(size: int, **fields: str) -> bytes:
    """`fields` urlencoded in a body of exactly `size` bytes.

    A `filler` field after the first field (the CSRF token) makes up the size,
    so the fields after it are at the very end: a body cut short cuts them.
    """
    first, *rest = (urllib.parse.urlencode({name: value}) for name, value in fields.items())
    head, tail = f"{first}&filler=".encode(), "".join(f"&{field}" for field in rest).encode()
    filler = size - len(head) - len(tail)
    assert filler >= 0, "the fields alone are longer than the size asked for"
    return head + b"x" * filler + tail


@dataclass
class Answer:
    """What a server answered: the status (None for no answer), the headers, the page."""

    status: int | None
    headers: Message
    page: str

    @property
    def title(self) -> str | None:
        """The page's heading, as a reader sees it."""
        heading = re.search(r"<h1[^>]*>(.*?)</h1>", self.page, re.S)
        return " ".join(heading[1].split()) if heading else None


class _Recorded:
    """Bytes received, offered to http.client as if they were its socket."""

    def __init__(self, data: bytes):
        self.data = data

    def makefile(self, mode: str) -> io.BytesIO:
        return io.BytesIO(self.data)


def send_raw(url: str, request: bytes, close_early: bool = False) -> Answer:
    """Send `request` exactly as given, on a connection of its own, and read the answer.

    close_early: stop sending there (half-close), as a client that gives up
    mid-body. The server may answer before it has read everything (a 413),
    so a send that fails is not an error: the answer is still read.
    """
    address = urllib.parse.urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=60) as connection:
        try:
            connection.sendall(request)
            if close_early:
                connection.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed without reading the rest
        received = b""
        while data := connection.recv(65536):
            received += data
    if not received:
        return Answer(None, Message(), "")
    response = http.client.HTTPResponse(_Recorded(received))
    response.begin()
    return Answer(response.status, response.headers, response.read().decode())


def request_head(path: str, *headers: str, cookie: str = "") -> bytes:
    """A POST's request line and headers, up to the blank line; the body is up to the caller."""
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Type: {FORM}", *headers]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    return "\r\n".join([*lines, "", ""]).encode()


def cookie_header(browser: Browser) -> str:
    """The browser's cookies, as its next request would send them."""
    [jar] = [
        handler.cookiejar for handler in browser.opener.handlers if hasattr(handler, "cookiejar")
    ]
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in jar)


def get_with_cookies(url: str, path: str, set_cookies: list[str]) -> Answer:
    """GET `path` with the cookies of these Set-Cookie headers."""
    cookie = "; ".join(header.split(";", 1)[0] for header in set_cookies)
    return send_raw(
        url, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n\r\n".encode()
    )


def post_chunked(browser: Browser, path: str, pieces: Iterable[bytes]) -> Answer:
    """POST `pieces` as a chunked body, with the browser's cookies, as urllib sends
    any body it can't measure (an iterable): one chunk a piece."""
    request = urllib.request.Request(
        browser.base_url + path, data=iter(pieces), headers={"Content-Type": FORM}
    )
    try:
        with browser.opener.open(request, timeout=browser.timeout) as response:
            return Answer(response.status, response.headers, response.read().decode())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers, error.read().decode())


# --- One production server for the module -----------------------------------------------------


@dataclass
class Site:
    """The blog under gunicorn, with one user (alice, PASSWORD), and a look at its database."""

    server: Gunicorn
    app: Flask  # an app on the same database, to read what was saved
    log_file: Path  # the app's log (LOG_DIR/blog.log)

    def posts(self) -> list[str]:
        """Every post saved, oldest first."""
        with self.app.app_context():
            return list(db.session.scalars(select(Post.body).order_by(Post.id)))

    def usernames(self) -> list[str]:
        """Every account, oldest first."""
        with self.app.app_context():
            return list(db.session.scalars(select(User.username).order_by(User.id)))

    def logged_in_browser(self) -> Browser:
        browser = Browser(self.server.url)
        status, headers, _ = browser.submit(
            "/auth/login", {"username": "alice", "password": PASSWORD}
        )
        assert (status, headers["Location"]) == (302, "/")
        return browser


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    tmp_path = tmp_path_factory.mktemp("chunked")
    with (
        fresh_database(tmp_path) as url,
        run_gunicorn(production_env(tmp_path, url), tmp_path) as server,
    ):
        app = create_app(config_for(sqlalchemy_url(url)))
        with app.app_context():
            add_user("alice")
        try:
            yield Site(server, app, tmp_path / "logs" / "blog.log")
        finally:
            with app.app_context():
                db.engine.dispose()


@pytest.fixture
def clean_log(site) -> Iterator[None]:
    """Whatever the test sent, no traceback in gunicorn's output, no error in the app's log."""
    output_before, log_before = len(site.server.log()), len(site.log_file.read_text())
    yield
    assert "Traceback" not in site.server.log()[output_before:]
    log = site.log_file.read_text()[log_before:]
    assert "Traceback" not in log
    assert " ERROR: " not in log


def assert_too_large_page(answer: Answer) -> None:
    """`answer` is the site's own 413 page, in its layout."""
    assert answer.status == 413, answer.page
    assert answer.title == TOO_LARGE_TITLE
    assert TOO_LARGE_MESSAGE in answer.page
    assert 'class="navbar-brand"' in answer.page


# --- Under the limit: the form works ----------------------------------------------------------


@pytest.mark.system
def test_logging_in_with_a_chunked_body_works(site, clean_log):
    """The login form, sent in three chunks that split a field name and a value."""
    browser = Browser(site.server.url)
    body = urllib.parse.urlencode(
        {"csrf_token": browser.csrf_token("/auth/login"), "username": "alice", "password": PASSWORD}
    ).encode()
    answer = post_chunked(browser, "/auth/login", [body[:5], body[5:-3], body[-3:]])
    assert (answer.status, answer.headers["Location"]) == (302, "/")
    status, _, page = browser.request("/")
    assert status == 200
    assert 'name="post"' in page  # the post form: only a logged-in user has it


@pytest.mark.system
def test_a_chunked_post_is_saved_exactly(site, clean_log):
    """Chunk boundaries inside a percent escape and inside a Chinese character's
    UTF-8 bytes: the post is saved as typed, whole."""
    browser = site.logged_in_browser()
    text = "Chunked & fine: 分块传输 100% + more"
    body = urllib.parse.urlencode({"csrf_token": browser.csrf_token("/"), "post": text}).encode()
    middle = body.index(b"%E5") + 1  # between "%" and "E5"
    answer = post_chunked(
        browser, "/index", [body[:middle], body[middle : middle + 7], body[middle + 7 :]]
    )
    assert (answer.status, answer.headers["Location"]) == (302, "/")
    assert site.posts()[-1] == text
    assert POST_SAVED in browser.request("/")[2]


@pytest.mark.system
def test_a_chunked_body_of_exactly_the_limit_is_read_whole(site, clean_log):
    """1 MiB to the byte, the post last: saved, with its last character."""
    browser = site.logged_in_browser()
    body = form_of_size(LIMIT, csrf_token=browser.csrf_token("/"), post="at the limit, whole")
    answer = send_raw(
        site.server.url,
        request_head("/index", "Transfer-Encoding: chunked", cookie=cookie_header(browser))
        + chunked(body),
    )
    assert (answer.status, answer.headers["Location"]) == (302, "/")
    assert site.posts()[-1] == "at the limit, whole"


@pytest.mark.system
def test_many_tiny_chunks_under_the_limit_work(site, clean_log):
    """One byte a chunk: slow to parse, but a body all the same."""
    browser = site.logged_in_browser()
    body = form_of_size(3000, csrf_token=browser.csrf_token("/"), post="one byte a chunk")
    answer = send_raw(
        site.server.url,
        request_head("/index", "Transfer-Encoding: chunked", cookie=cookie_header(browser))
        + chunked(body, size=1),
    )
    assert (answer.status, answer.headers["Location"]) == (302, "/")
    assert site.posts()[-1] == "one byte a chunk"


# --- Over the limit: the 413 page, and nothing saved ------------------------------------------


@pytest.mark.parametrize("size", [LIMIT + 1, 3 * LIMIT], ids=["limit+1", "3MiB"])
@pytest.mark.system
def test_a_chunked_post_over_the_limit_gets_the_413_page(site, clean_log, size):
    """Cut at the limit, the form would still validate (a post with its last
    character missing, or none): the 413 page instead, and no post saved."""
    browser = site.logged_in_browser()
    before = site.posts()
    body = form_of_size(size, csrf_token=browser.csrf_token("/"), post="over the limit")
    answer = send_raw(
        site.server.url,
        request_head("/index", "Transfer-Encoding: chunked", cookie=cookie_header(browser))
        + chunked(body),
    )
    assert_too_large_page(answer)
    assert site.posts() == before


@pytest.mark.system
def test_a_chunked_post_over_the_limit_from_urllib_gets_the_413_page(site, clean_log):
    """The same from an ordinary HTTP client: urllib sending the form in chunks."""
    browser = site.logged_in_browser()
    before = site.posts()
    body = form_of_size(LIMIT + 1, csrf_token=browser.csrf_token("/"), post="over, from urllib")
    answer = post_chunked(browser, "/index", [body[:LIMIT], body[LIMIT:]])
    assert_too_large_page(answer)
    assert site.posts() == before


@pytest.mark.parametrize("size", [LIMIT + 1, 3 * LIMIT], ids=["limit+1", "3MiB"])
@pytest.mark.system
def test_a_chunked_login_over_the_limit_gets_the_413_page(site, clean_log, size):
    """The 413 page, and nobody logged in: the home page, with the cookie it
    set, is a visitor's (no post form)."""
    browser = Browser(site.server.url)
    token = browser.csrf_token("/auth/login")
    body = form_of_size(size, csrf_token=token, username="alice", password=PASSWORD)
    answer = send_raw(
        site.server.url,
        request_head("/auth/login", "Transfer-Encoding: chunked", cookie=cookie_header(browser))
        + chunked(body),
    )
    assert_too_large_page(answer)
    home = get_with_cookies(site.server.url, "/", answer.headers.get_all("Set-Cookie") or [])
    assert home.status == 200
    assert 'name="post"' not in home.page
    assert 'href="/auth/login"' in home.page


@pytest.mark.system
def test_a_chunked_registration_over_the_limit_gets_the_413_page(site, clean_log):
    """No account is created."""
    browser = Browser(site.server.url)
    token = browser.csrf_token("/auth/register")
    fields = {"username": "bob", "email": "bob@example.com", "password": PASSWORD}
    body = form_of_size(LIMIT + 1, csrf_token=token, **fields, password2=PASSWORD)
    answer = send_raw(
        site.server.url,
        request_head("/auth/register", "Transfer-Encoding: chunked", cookie=cookie_header(browser))
        + chunked(body),
    )
    assert_too_large_page(answer)
    assert site.usernames() == ["alice"]


# --- Hostile chunking: a 4xx, never a 500 -----------------------------------------------------


@pytest.mark.system
def test_many_tiny_chunks_over_the_limit_get_the_413_page(site, clean_log):
    """A megabyte in 16-byte chunks: counted by what they carry, not by how many."""
    browser = site.logged_in_browser()
    before = site.posts()
    body = form_of_size(LIMIT + 1, csrf_token=browser.csrf_token("/"), post="tiny and too many")
    answer = send_raw(
        site.server.url,
        request_head("/index", "Transfer-Encoding: chunked", cookie=cookie_header(browser))
        + chunked(body, size=16),
    )
    assert_too_large_page(answer)
    assert site.posts() == before


@pytest.mark.system
def test_a_huge_declared_chunk_is_cut_at_the_limit(site, clean_log):
    """A chunk announced as 2 GiB, over a megabyte of it sent, and the connection
    kept open: the 413 page, without waiting for the rest."""
    browser = site.logged_in_browser()
    before = site.posts()
    body = form_of_size(LIMIT + 64 * 1024, csrf_token=browser.csrf_token("/"), post="huge chunk")
    answer = send_raw(
        site.server.url,
        request_head("/index", "Transfer-Encoding: chunked", cookie=cookie_header(browser))
        + b"7fffffff\r\n"
        + body,
    )
    assert_too_large_page(answer)
    assert site.posts() == before


def size_line_too_short(token: str) -> bytes:
    """The size line says 16 bytes; the chunk goes on, so its end isn't where it says."""
    return b"10\r\n" + form_of_size(200, csrf_token=token, post="lie") + b"\r\n0\r\n\r\n"


def size_line_too_long(token: str) -> bytes:
    """The size line says 4096 bytes; 200 come, then the last chunk, read as data."""
    return b"1000\r\n" + form_of_size(200, csrf_token=token, post="lie") + b"\r\n0\r\n\r\n"


def huge_chunk_little_data(token: str) -> bytes:
    """A chunk announced as 2 GiB, of which 200 bytes come."""
    return b"7fffffff\r\n" + form_of_size(200, csrf_token=token, post="huge")


def size_of_24_digits(token: str) -> bytes:
    """A chunk size of 24 hexadecimal digits (about 6e28 bytes)."""
    return b"f" * 24 + b"\r\n" + form_of_size(200, csrf_token=token, post="huger")


def size_not_hexadecimal(token: str) -> bytes:
    return b"zz\r\n" + form_of_size(200, csrf_token=token, post="zz") + b"\r\n0\r\n\r\n"


def cut_mid_chunk(token: str) -> bytes:
    """The first 3000 bytes of a 5000-byte chunk."""
    return chunked(form_of_size(5000, csrf_token=token, post="cut short"))[:3000]


def no_last_chunk(token: str) -> bytes:
    """Every chunk, but not the empty one that ends the body."""
    return chunked(form_of_size(5000, csrf_token=token, post="no end"))[: -len(b"0\r\n\r\n")]


# Broken chunked bodies, and whether the client then stops sending (or waits for the answer).
BROKEN_BODIES = [
    (size_line_too_short, False),
    (size_line_too_long, True),
    (huge_chunk_little_data, True),
    (size_of_24_digits, True),
    (size_not_hexadecimal, False),
    (cut_mid_chunk, True),
    (no_last_chunk, True),
]


@pytest.mark.parametrize(
    ("body", "close_early"),
    [pytest.param(body, close, id=body.__name__) for body, close in BROKEN_BODIES],
)
@pytest.mark.system
def test_a_broken_chunked_body_gets_the_400_page(site, clean_log, body, close_early):
    """The client's mistake: the site's 400 page, and no post saved."""
    browser = site.logged_in_browser()
    before = site.posts()
    answer = send_raw(
        site.server.url,
        request_head("/index", "Transfer-Encoding: chunked", cookie=cookie_header(browser))
        + body(browser.csrf_token("/")),
        close_early=close_early,
    )
    assert answer.status == 400, answer.page
    assert answer.title == BAD_REQUEST_TITLE
    assert site.posts() == before


@pytest.mark.parametrize("size", [200, LIMIT + 1], ids=["small", "limit+1"])
@pytest.mark.system
def test_chunked_and_a_content_length_together_are_refused_by_gunicorn(site, clean_log, size):
    """Which of the two to believe is how requests are smuggled past a proxy:
    gunicorn refuses the request itself (its own bare 400) before the app sees it."""
    browser = site.logged_in_browser()
    before = site.posts()
    body = form_of_size(size, csrf_token=browser.csrf_token("/"), post="both lengths")
    answer = send_raw(
        site.server.url,
        request_head(
            "/index",
            "Content-Length: 10",
            "Transfer-Encoding: chunked",
            cookie=cookie_header(browser),
        )
        + chunked(body),
    )
    assert answer.status == 400
    assert site.posts() == before


# --- Werkzeug's development server ------------------------------------------------------------


@pytest.fixture
def dev_server(make_app) -> Iterator[tuple[str, Flask]]:
    """`flask run`'s server (threaded, as `flask run` is), on the test database."""
    app = make_app(RATELIMIT_ENABLED=False)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}", app
    finally:
        server.shutdown()
        thread.join()


def registered(app: Flask) -> list[str]:
    """Every account on the development server's database, oldest first."""
    with app.app_context():
        return list(db.session.scalars(select(User.username).order_by(User.id)))


@pytest.mark.parametrize(
    ("size", "status"), [(LIMIT, 302), (LIMIT + 1, 413)], ids=["the limit", "limit+1"]
)
@pytest.mark.system
def test_the_development_server_measures_chunked_bodies_too(dev_server, size, status):
    """Werkzeug's server decodes the chunks itself: the same limit, to the byte.

    Connection: close, because this server otherwise keeps the connection open
    for a next request, and the answer is read up to the connection's end.
    """
    url, app = dev_server
    fields = {"username": "carol", "email": "carol@example.com", "password": PASSWORD}
    body = form_of_size(size, **fields, password2=PASSWORD)
    answer = send_raw(
        url,
        request_head("/auth/register", "Transfer-Encoding: chunked", "Connection: close")
        + chunked(body),
    )
    assert answer.status == status, answer.page
    if status == 413:
        assert_too_large_page(answer)
        assert registered(app) == []
    else:
        assert answer.headers["Location"] == "/auth/login"
        assert registered(app) == ["carol"]


# --- The refusal sticks -----------------------------------------------------------------------


def test_a_body_refused_for_its_size_stays_refused(app):
    """Read again after the 413 (by an error handler, a logger...), the body must
    not go on from where it was cut: the tail would pass for a whole form."""
    tail = b"&username=tail"
    body = b"username=head&filler=" + b"x" * LIMIT + tail
    with app.test_request_context(
        "/auth/login",
        method="POST",
        content_type=FORM,
        input_stream=io.BytesIO(body),
        # As gunicorn passes on a chunked body: decoded, and saying so.
        headers={"Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    ):
        for _attempt in range(2):
            with pytest.raises(RequestEntityTooLarge):
                request.form  # noqa: B018 (reading it parses the body)

"""deploy/nginx.conf, run by a real nginx in front of the real blog under gunicorn.

The file is a site (server blocks for the http context), as it is copied into
/etc/nginx/sites-available; each test includes it in a minimal nginx.conf of
its own, after moving what it names into tmp_path: certbot's certificate
becomes one for blog.example.com from a throwaway certificate authority
(trustme), ports 80 and 443 become free ports on 127.0.0.1, the log folder,
certbot's webroot and gunicorn's address become the test's own. Nothing else
is moved: Bootstrap's files come through the app, wherever the running
Python installed them. nginx then runs as the user running the tests, in the
foreground, stopped at the end of the module.

A client speaks TLS to that nginx as a browser would: it trusts the test CA
and names blog.example.com in the handshake (SNI), though it connects to
127.0.0.1. gunicorn runs the production config with PROXY_COUNT=1, as the
file's header asks, but without SESSION_COOKIE_SECURE, so that a Secure
cookie shows the app knew the browser used HTTPS.

The whole module is skipped when nginx isn't installed.
"""

import http.client
import mimetypes
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

import flask_bootstrap
import pytest
import trustme

from app import create_app
from app.extensions import db
from tests.databases import fresh_database
from tests.helpers import PASSWORD, add_user, config_for
from tests.servers import ROOT, free_port, production_env, run_gunicorn, wait_until

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
# Every test here starts nginx (and gunicorn): `make test-fast` skips them.
pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        NGINX is None, reason="nginx is not installed (Debian/Ubuntu: apt-get install nginx-light)"
    ),
]

SITE = ROOT / "deploy" / "nginx.conf"
HOST = "blog.example.com"
HSTS = "max-age=31536000"  # the file's value, which must be the only one a browser gets
STATIC = "/bootstrap/static/css/bootstrap.min.css"
BOOTSTRAP_STATIC = Path(flask_bootstrap.__file__).parent / "static" / "bootstrap5"
CERTBOT_LIVE = f"/etc/letsencrypt/live/{HOST}/"
OVER_ONE_MIB = 1024 * 1024 + 1


# --- The configuration ------------------------------------------------------------------


def write_certificate(folder: Path) -> trustme.CA:
    """certbot's two files for HOST, made by a new test CA, in `folder`; return the CA."""
    ca = trustme.CA()
    certificate = ca.issue_cert(HOST)
    # fullchain.pem, as certbot writes it: the certificate, then the chain above it.
    (folder / "fullchain.pem").write_bytes(
        b"".join(pem.bytes() for pem in certificate.cert_chain_pems)
    )
    certificate.private_key_pem.write_to_path(str(folder / "privkey.pem"))
    return ca


def write_site(folder: Path, replacements: dict[str, str]) -> Path:
    """deploy/nginx.conf with each regex of `replacements` replaced, written into `folder`.

    Every pattern must be found: if the file changes, the test says so rather
    than running nginx on a production path.
    """
    site = SITE.read_text()
    for pattern, replacement in replacements.items():
        site, count = re.subn(pattern, replacement, site)
        assert count, f"{pattern!r} is not in {SITE}"
    path = folder / "blog.conf"
    path.write_text(site)
    return path


def write_main_config(folder: Path, site: Path, foreground: bool = False) -> Path:
    """A minimal nginx.conf including `site`, everything it writes kept in `folder`."""
    temp_paths = "\n".join(
        f"    {kind}_temp_path {folder}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    lines = [
        # As root, nginx would run its workers as nobody, who may not read tmp_path.
        "user root;" if os.geteuid() == 0 else "",
        "daemon off;" if foreground else "",  # a child of the test, stopped by it
        "worker_processes 1;",
        f"pid {folder}/nginx.pid;",
        f"error_log {folder}/error.log;",
        "events {}",
        "http {",
        # For requests no server of the site logs itself.
        f"    access_log {folder}/access.log;",
        temp_paths,
        f"    include {site};",
        "}",
    ]
    path = folder / "nginx.conf"
    path.write_text("\n".join(lines) + "\n")
    return path


def nginx_command(folder: Path, config: Path, *options: str) -> list[str]:
    """The command running nginx on `config`, its prefix and first error log in `folder`."""
    # -e: the error log before the configuration is read (default: /var/log/nginx).
    return [NGINX, *options, "-p", str(folder), "-e", f"{folder}/error.log", "-c", str(config)]


def test_nginx_conf_is_valid(tmp_path):
    """`nginx -t` on deploy/nginx.conf, with a test certificate where certbot's would be.

    `nginx -t` parses everything and opens the certificates and the log
    files, but binds no port, so the ports stay 80 and 443.
    """
    write_certificate(tmp_path)
    site = write_site(tmp_path, {CERTBOT_LIVE: f"{tmp_path}/", "/var/log/nginx/": f"{tmp_path}/"})
    done = subprocess.run(
        nginx_command(tmp_path, write_main_config(tmp_path, site), "-t"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


# --- nginx running in front of gunicorn ---------------------------------------------------


@dataclass
class Site:
    http_port: int
    https_port: int
    tls: ssl.SSLContext  # a browser's: trusts the test CA, checks the host name
    logs: Path
    challenge: Path  # certbot's webroot/.well-known/acme-challenge


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes

    def hsts(self) -> list[str]:
        """Every Strict-Transport-Security header: a browser must get exactly one."""
        return self.headers.get_all("Strict-Transport-Security") or []

    def cookie(self, name: str) -> str:
        """The Set-Cookie header for cookie `name`, attributes included."""
        [cookie] = [c for c in self.headers.get_all("Set-Cookie") or [] if c.startswith(name + "=")]
        return cookie


@contextmanager
def run_nginx(folder: Path, config: Path, port: int) -> Iterator[None]:
    """nginx in the foreground until the block ends; ready when `port` takes connections."""
    with open(folder / "nginx.out", "w") as out:
        process = subprocess.Popen(
            nginx_command(folder, config), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60  # only ends a start that hangs
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = (folder / "nginx.out").read_text()
                    raise AssertionError(f"nginx did not start:\n{output}") from None
                time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    """deploy/nginx.conf served by nginx, in front of gunicorn with PROXY_COUNT=1.

    The app's own HSTS age differs from the file's, so that a copy of it
    getting past nginx would show.
    """
    tmp_path = tmp_path_factory.mktemp("nginx")
    folder = tmp_path / "nginx"
    webroot = tmp_path / "certbot"
    challenge = webroot / ".well-known" / "acme-challenge"
    for path in (folder, challenge):
        path.mkdir(parents=True)
    ca = write_certificate(folder)
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    http_port, https_port = free_port(), free_port()

    with fresh_database(tmp_path) as url:
        env = production_env(tmp_path, url, PROXY_COUNT=1, HSTS_MAX_AGE=600)
        with run_gunicorn(env, tmp_path, app="blog:app", workers=1) as gunicorn:
            app = create_app(config_for(url))
            with app.app_context():
                add_user("visitor")
                db.engine.dispose()
            site_file = write_site(
                folder,
                {
                    r"listen 80\b": f"listen 127.0.0.1:{http_port}",
                    r"listen 443\b": f"listen 127.0.0.1:{https_port}",
                    CERTBOT_LIVE: f"{folder}/",
                    "/var/log/nginx/": f"{folder}/",
                    "/var/www/certbot": str(webroot),
                    "127.0.0.1:8000": gunicorn.url.removeprefix("http://"),
                },
            )
            config = write_main_config(folder, site_file, foreground=True)
            with run_nginx(folder, config, https_port):
                yield Site(http_port, https_port, tls, folder, challenge)


def https_request(
    site: Site,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    server_name: str = HOST,
) -> Reply:
    """Send one request over TLS to nginx, naming `server_name` in the handshake."""
    connection = http.client.HTTPSConnection(server_name, site.https_port, timeout=30)
    # Connected by hand: blog.example.com is not in any DNS, and http.client
    # uses an existing socket as it is.
    connection.sock = site.tls.wrap_socket(
        socket.create_connection(("127.0.0.1", site.https_port), timeout=30),
        server_hostname=server_name,
    )
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def http_request(
    site: Site, path: str, host: str = HOST, headers: dict[str, str] | None = None
) -> Reply:
    """Send one GET over plain HTTP (port 80's stand-in), for `host`."""
    connection = http.client.HTTPConnection("127.0.0.1", site.http_port, timeout=30)
    try:
        connection.request("GET", path, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def raw_exchange(port: int, request: bytes) -> bytes:
    """Send `request` as is over plain TCP; return every byte of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def access_log_line(site: Site, marker: str) -> str:
    """The one line of the blog's access log naming `marker`.

    nginx writes it once the response has gone out, so it may come a moment
    after the client has read the response.
    """
    log = site.logs / "blog.access.log"
    wait_until(lambda: marker in log.read_text(), message=f"the log line of {marker}")
    [line] = [line for line in log.read_text().splitlines() if marker in line]
    return line


# One response of each kind over HTTPS: the app's and nginx's own.
RESPONSES = {
    "page": ("GET", "/explore", None, 200),
    "redirect": ("GET", "/edit_profile", None, 302),
    "not-found": ("GET", "/no/such/page", None, 404),
    "static": ("GET", STATIC, None, 200),
    "too-big": ("POST", "/auth/login", b"x" * OVER_ONE_MIB, 413),
}


@pytest.mark.parametrize(("method", "path", "body", "status"), RESPONSES.values(), ids=RESPONSES)
def test_exactly_one_hsts_header_on_every_response(site, method, path, body, status):
    """nginx's header, once: the app's copy (another age here) is hidden, in
    every location (none has an add_header of its own, which would drop the
    server's)."""
    reply = https_request(site, path, method, body=body)
    assert reply.status == status
    assert reply.hsts() == [HSTS]


def test_a_page_comes_from_the_app_with_nginx_request_id(site):
    """The page is the app's, and the request id the app answers with is the
    one nginx logged: X-Request-ID is passed on, and believed (PROXY_COUNT=1)."""
    marker = secrets.token_hex(8)
    reply = https_request(site, f"/explore?probe={marker}")
    assert reply.status == 200
    assert b"<h1>Welcome to the blog</h1>" in reply.body
    request_id = reply.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)  # nginx's $request_id
    assert access_log_line(site, marker).endswith(f"request_id={request_id}")


def test_redirects_and_404s_come_from_the_app(site):
    """Passed on as the app made them: its relative Location, its 404 page."""
    redirect = https_request(site, "/edit_profile")
    assert (redirect.status, redirect.headers["Location"]) == (
        302,
        "/auth/login?next=%2Fedit_profile",
    )
    missing = https_request(site, "/no/such/page")
    assert missing.status == 404
    assert b"<h1>Page not found</h1>" in missing.body


def linked_files(page: bytes) -> list[str]:
    """The stylesheets and scripts a page links, as the browser would fetch them."""
    return re.findall(rb'<(?:link rel="stylesheet" href|script src)="([^"]+)"', page)


def test_the_files_a_page_links_are_bootstraps(site):
    """What the test below fetches is what the pages link (Bootstrap-Flask's
    load_css and load_js in app/templates/base.html)."""
    page = https_request(site, "/auth/login")
    assert page.status == 200
    assert linked_files(page.body) == [
        b"/bootstrap/static/css/bootstrap.min.css",
        b"/bootstrap/static/umd/popper.min.js",
        b"/bootstrap/static/js/bootstrap.min.js",
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/bootstrap/static/css/bootstrap.min.css",
        "/bootstrap/static/umd/popper.min.js",
        "/bootstrap/static/js/bootstrap.min.js",
    ],
)
def test_bootstraps_files_come_through_the_app_whatever_the_python(site, path):
    """The installed package's files, through gunicorn (the app's request id
    and its nosniff, once), kept by browsers for a week (expires 7d replaces
    the app's no-cache), with nginx's HSTS header: from the site as it is
    deployed, with no path to the package to adjust for a Python version."""
    reply = https_request(site, path)
    assert reply.status == 200
    assert reply.body == (BOOTSTRAP_STATIC / path.removeprefix("/bootstrap/static/")).read_bytes()
    # The type Flask gives (from the mimetypes module, which for .js follows
    # the system's /etc/mime.types): what counts is that it is declared.
    assert reply.headers["Content-Type"] == f"{mimetypes.guess_type(path)[0]}; charset=utf-8"
    assert reply.headers["Content-Type"].startswith(
        ("text/css", "text/javascript", "application/javascript")
    )
    assert reply.headers.get_all("Cache-Control") == ["max-age=604800"]
    assert reply.headers.get_all("X-Content-Type-Options") == ["nosniff"]
    assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["X-Request-ID"])
    assert reply.hsts() == [HSTS]


def test_a_missing_static_file_is_the_apps_404(site):
    """The app answers for the whole folder: a file Bootstrap-Flask doesn't
    have, or a path climbing out of it, is its 404 page, not a file from disk."""
    for path in ("/bootstrap/static/css/no-such.css", "/bootstrap/static/../../config.py"):
        reply = https_request(site, path)
        assert reply.status == 404, path
        assert b"<h1>Page not found</h1>" in reply.body


@pytest.mark.parametrize("path", ["/auth/login", "/auth/register", "/no/such/page"])
def test_a_body_over_one_mib_gets_nginx_413(site, path):
    """nginx answers before the app is asked: its own page, with the header."""
    reply = https_request(site, path, "POST", body=b"x" * OVER_ONE_MIB)
    assert reply.status == 413
    assert b"<title>413 Request Entity Too Large</title>" in reply.body
    assert b"<hr><center>nginx/" in reply.body
    assert reply.headers["X-Request-ID"] is None
    assert reply.hsts() == [HSTS]


def test_a_body_of_one_mib_reaches_the_app(site):
    """The limit is 1 MiB exactly: at it, nginx passes the body on, and the
    app answers (this one has no CSRF token: the app's 400 page)."""
    reply = https_request(
        site,
        "/auth/login",
        "POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        body=b"x" * (OVER_ONE_MIB - 1),
    )
    assert reply.status == 400
    assert b"<h1>Bad request</h1>" in reply.body


def test_logging_in_over_https_sets_secure_cookies(site):
    """The app sees HTTPS through X-Forwarded-Proto: its cookies are Secure,
    though SESSION_COOKIE_SECURE is off here; and Flask-WTF's HTTPS check that
    the form came from the same host passes, since nginx passes the Host on."""
    form = https_request(site, "/auth/login")
    assert form.status == 200
    session = form.cookie("session")
    token = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', form.body)
    assert token, "the login form has no CSRF token"
    fields = f"csrf_token={token.group(1).decode()}&username=visitor&password={PASSWORD}"
    reply = https_request(
        site,
        "/auth/login",
        "POST",
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": session.split(";")[0],
            "Referer": f"https://{HOST}/auth/login",
        },
        body=fields.encode(),
    )
    assert (reply.status, reply.headers["Location"]) == (302, "/")
    for cookie in (session, reply.cookie("session")):  # before and after logging in
        assert "Secure" in [attribute.strip() for attribute in cookie.split(";")[1:]]


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/", f"https://{HOST}/"),
        ("/explore?page=2", f"https://{HOST}/explore?page=2"),
        ("/auth/login", f"https://{HOST}/auth/login"),
        ("/.well-known/other", f"https://{HOST}/.well-known/other"),
    ],
)
def test_plain_http_moves_to_https(site, path, location):
    """301: browsers and search engines remember the HTTPS address for good."""
    reply = http_request(site, path)
    assert (reply.status, reply.headers["Location"]) == (301, location)
    assert reply.hsts() == []  # browsers ignore it over plain HTTP


def test_plain_http_redirect_for_an_oddly_spelled_host(site):
    """nginx compares host names in lower case, without a final dot, and
    names the host that way in the redirect."""
    for host in ("BLOG.Example.COM", f"{HOST}."):
        reply = http_request(site, "/explore", host=host)
        assert (reply.status, reply.headers["Location"]) == (301, f"https://{HOST}/explore")


def test_acme_challenge_is_served_from_certbot_webroot(site):
    """Let's Encrypt fetches certbot's file over plain HTTP: served as is,
    not redirected; a token with no file is nginx's 404, not the app's."""
    token = secrets.token_urlsafe(32)
    (site.challenge / token).write_text(f"{token}.key-authorization")
    reply = http_request(site, f"/.well-known/acme-challenge/{token}")
    assert (reply.status, reply.body) == (200, f"{token}.key-authorization".encode())
    missing = http_request(site, "/.well-known/acme-challenge/no-such-token")
    assert missing.status == 404
    assert b"<hr><center>nginx/" in missing.body


def test_reset_tokens_never_reach_nginx_logs(site):
    """A reset link, over HTTPS (the app's redirect) or typed in over plain
    HTTP (nginx's): its path is logged without the token, in every log."""
    token = secrets.token_urlsafe(32)
    # The user agent is logged as sent: it finds each request's line.
    agents = {scheme: f"{scheme}-{secrets.token_hex(8)}" for scheme in ("https", "http")}
    path = f"/auth/reset_password/{token}"
    assert https_request(site, path, headers={"User-Agent": agents["https"]}).status == 302
    assert http_request(site, path, headers={"User-Agent": agents["http"]}).status == 301
    for scheme, status in (("https", 302), ("http", 301)):
        line = access_log_line(site, agents[scheme])
        assert f'"GET /auth/reset_password/[redacted] HTTP/1.1" {status}' in line
    logs = {log.name: log.read_text() for log in site.logs.glob("*.log")}
    assert all(token not in text for text in logs.values()), logs


@pytest.mark.parametrize(
    ("request_line", "host"),
    [
        ("GET / HTTP/1.1", "other.example.com"),
        ("GET / HTTP/1.1", "127.0.0.1"),
        ("GET / HTTP/1.1", "blog.example.com.evil.example"),
        ("GET / HTTP/1.0", None),  # no host name at all
        # The host of an absolute URI wins over the Host header.
        ("GET http://blog.example.com.evil.example/ HTTP/1.1", HOST),
    ],
    ids=["other-host", "address", "longer-name", "no-host", "absolute-uri"],
)
def test_other_host_names_get_no_answer_over_http(site, request_line, host):
    """Port 80's default server closes the connection without a byte (444)."""
    host_header = f"Host: {host}\r\n" if host else ""
    # Connection: close, so that a server that does answer ends the exchange at once.
    request = f"{request_line}\r\n{host_header}Connection: close\r\n\r\n"
    assert raw_exchange(site.http_port, request.encode()) == b""


@pytest.mark.parametrize(
    "server_name", ["other.example.com", "127.0.0.1", "blog.example.com.evil.example"]
)
def test_other_host_names_are_refused_in_the_tls_handshake(site, server_name):
    """Port 443's default server refuses the handshake: no certificate shown.
    An address (127.0.0.1) is no host name in a handshake: none is sent."""
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        https_request(site, "/", server_name=server_name)


@pytest.mark.parametrize("host", ["other.example.com", "127.0.0.1"])
def test_another_host_after_a_handshake_for_the_blog_gets_no_answer(site, host):
    """The handshake names the blog, the Host header another site: nginx picks
    the server by the Host header, the default one, which closes the connection."""
    with pytest.raises(http.client.RemoteDisconnected):
        https_request(site, "/explore", headers={"Host": host})

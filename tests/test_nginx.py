"""deploy/nginx.conf, run by a real nginx in front of the real blog under gunicorn.

The file is a site of Debian's nginx package, and every test runs it the way
the file's header installs it: in sites-available, linked into sites-enabled,
inside Debian's own nginx.conf. Each test copies this machine's /etc/nginx
(Debian's stock files: nginx.conf, mime.types, the modules and the default
site) into tmp_path and builds that layout there, with or without Debian's
default site enabled; the copy's nginx.conf is changed only to keep what
nginx writes (pid, logs, temporary files) in tmp_path. /etc/nginx itself is
only read.

What the site names moves into tmp_path too: certbot's certificate becomes
one for blog.example.com from a throwaway certificate authority (trustme),
ports 80 and 443 become free ports on 127.0.0.1 and ::1, the log folder,
/var/www/html (the webroot certbot uses) and gunicorn's address become the
test's own, and /srv/blog/deploy (the error pages) becomes this checkout's
deploy/. Nothing else is moved: Bootstrap's files come through the app,
wherever the running Python installed them. nginx then runs as the user
running the tests, in the foreground, stopped when its fixture ends.

A client speaks TLS to that nginx as a browser would: it trusts the test CA
and names blog.example.com in the handshake (SNI), though it connects to
127.0.0.1, on a port that is not 443, as a site on another port would be.
gunicorn runs the production config with PROXY_COUNT=1, as the file's header
asks, but without SESSION_COOKIE_SECURE, so that a Secure cookie shows the
app knew the browser used HTTPS.

The whole module is skipped when nginx or Debian's configuration isn't installed.
"""

import gzip
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
from tests.servers import ROOT, free_port, free_ports, production_env, run_gunicorn, wait_until

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
DEBIAN_NGINX = Path("/etc/nginx")
DEBIAN_DEFAULT_SITE = DEBIAN_NGINX / "sites-available" / "default"
# Every test here starts nginx (and gunicorn): `make test-fast` skips them.
pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        NGINX is None, reason="nginx is not installed (Debian/Ubuntu: apt-get install nginx-light)"
    ),
    pytest.mark.skipif(
        not (DEBIAN_NGINX / "nginx.conf").is_file() or not DEBIAN_DEFAULT_SITE.is_file(),
        reason="Debian's nginx configuration is not in /etc/nginx (apt-get install nginx-light)",
    ),
]

SITE = ROOT / "deploy" / "nginx.conf"
TOO_LARGE_PAGE = (ROOT / "deploy" / "nginx-too-large.html").read_bytes()
UNAVAILABLE_PAGE = (ROOT / "deploy" / "nginx-unavailable.html").read_bytes()
HOST = "blog.example.com"
HSTS = "max-age=31536000"  # the file's value, which must be the only one a browser gets
BOOTSTRAP_STATIC = Path(flask_bootstrap.__file__).parent / "static" / "bootstrap5"
# The URLs app/templates/base.html writes: each file with its version.
BOOTSTRAP, POPPER = (
    flask_bootstrap.Bootstrap5.bootstrap_version,
    flask_bootstrap.Bootstrap5.popper_version,
)
CSS = f"/bootstrap/static/css/bootstrap.min.css?v={BOOTSTRAP}"
POPPER_JS = f"/bootstrap/static/umd/popper.min.js?v={POPPER}"
BOOTSTRAP_JS = f"/bootstrap/static/js/bootstrap.min.js?v={BOOTSTRAP}"
CERTBOT_LIVE = f"/etc/letsencrypt/live/{HOST}/"
OVER_ONE_MIB = 1024 * 1024 + 1
A_YEAR = "max-age=31536000"


def has_ipv6_loopback() -> bool:
    """True if this machine can listen on ::1 (a container may have no IPv6)."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


IPV6 = has_ipv6_loopback()
needs_ipv6 = pytest.mark.skipif(not IPV6, reason="no IPv6 on this machine")


# --- The configuration, in Debian's layout --------------------------------------------


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


def replaced(text: str, replacements: dict[str, str], name: str) -> str:
    """`text` with each regex of `replacements` replaced, ^ and $ matching at lines.

    Every pattern must be found: if a file changes, the test says so rather
    than running nginx on a production path.
    """
    for pattern, replacement in replacements.items():
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        assert count, f"{pattern!r} is not in {name}"
    return text


def blog_site(replacements: dict[str, str]) -> str:
    """deploy/nginx.conf with `replacements` made."""
    return replaced(SITE.read_text(), replacements, str(SITE))


def debian_default_site(replacements: dict[str, str] | None = None) -> str:
    """Debian's default site, as its package installs it, with `replacements` made."""
    return replaced(DEBIAN_DEFAULT_SITE.read_text(), replacements or {}, str(DEBIAN_DEFAULT_SITE))


def debian_layout(folder: Path, sites: dict[str, str], foreground: bool = False) -> Path:
    """Debian's /etc/nginx copied into `folder`, with `sites` (name: text) in
    sites-available and linked into sites-enabled, and nothing else enabled;
    return the copy's nginx.conf.

    The stock nginx.conf is changed only where it writes: its pid file, its
    logs and nginx's temporary files go to `folder`.
    """
    etc = folder / "etc-nginx"
    # Links followed: sites-enabled/default and the modules point into /etc and /usr.
    shutil.copytree(DEBIAN_NGINX, etc)
    for enabled in ("sites-enabled", "conf.d"):  # this machine's own sites, if any: not ours
        shutil.rmtree(etc / enabled)
        (etc / enabled).mkdir()
    for name, text in sites.items():
        (etc / "sites-available" / name).write_text(text)
        (etc / "sites-enabled" / name).symlink_to(etc / "sites-available" / name)
    temp_paths = "".join(
        f"\n\t{kind}_temp_path {folder}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    config = replaced(
        (DEBIAN_NGINX / "nginx.conf").read_text(),
        {
            # As root, nginx would run its workers as www-data, who may not read
            # tmp_path; as anyone else, it would warn that it can't switch user.
            r"^user www-data;$": "user root;" if os.geteuid() == 0 else "",
            r"/run/nginx\.pid": f"{folder}/nginx.pid",
            r"/var/log/nginx/": f"{folder}/",
            r"/etc/nginx/": f"{etc}/",
            r"^http \{$": "http {" + temp_paths,
        },
        str(DEBIAN_NGINX / "nginx.conf"),
    )
    if foreground:
        config = "daemon off;  # a child of the test, stopped by it\n" + config
    path = etc / "nginx.conf"
    path.write_text(config)
    return path


def nginx_command(folder: Path, config: Path, *options: str) -> list[str]:
    """The command running nginx on `config`, its first error log in `folder`."""
    # -e: the error log before the configuration is read (default: /var/log/nginx).
    # No -p: relative paths (the modules) stay relative to Debian's prefix.
    return [NGINX, *options, "-e", f"{folder}/error.log", "-c", str(config)]


def nginx_test(folder: Path, config: Path) -> subprocess.CompletedProcess:
    """`nginx -t` on `config`: it parses everything and opens the certificates and
    the log files, but binds no port."""
    return subprocess.run(
        nginx_command(folder, config, "-t"), capture_output=True, text=True, timeout=60
    )


def syntax_ok(config: Path) -> str:
    """What `nginx -t` prints for a configuration it accepts without a warning."""
    return (
        f"nginx: the configuration file {config} syntax is ok\n"
        f"nginx: configuration file {config} test is successful\n"
    )


@pytest.mark.parametrize(
    "with_default_site", [True, False], ids=["beside-debians-default-site", "alone"]
)
def test_nginx_conf_is_valid_in_debians_layout(tmp_path, with_default_site):
    """`nginx -t` passes, without a warning, on the site installed as its header
    says, with a test certificate where certbot's would be: beside Debian's
    default site, as the package installs it, and once that is removed. The
    ports stay 80 and 443, on IPv4 and IPv6."""
    write_certificate(tmp_path)
    sites = {"blog": blog_site({CERTBOT_LIVE: f"{tmp_path}/", "/var/log/nginx/": f"{tmp_path}/"})}
    if with_default_site:
        sites["default"] = debian_default_site()
    config = debian_layout(tmp_path, sites)
    done = nginx_test(tmp_path, config)
    assert (done.returncode, done.stderr) == (0, syntax_ok(config))


def test_the_layout_refuses_a_second_default_server_for_port_80(tmp_path):
    """What the site avoids, shown in the same layout: a site that claims port
    80's default_server beside Debian's default site fails `nginx -t`. So the
    layout is Debian's for real, and the test above would catch the claim."""
    write_certificate(tmp_path)
    catch_all = "    listen 80;\n    listen [::]:80;\n    server_tokens off;  # nginx's version"
    site = blog_site({CERTBOT_LIVE: f"{tmp_path}/", "/var/log/nginx/": f"{tmp_path}/"})
    assert site.count(catch_all) == 1
    site = site.replace(catch_all, catch_all.replace("listen 80;", "listen 80 default_server;"))
    default = debian_default_site()
    config = debian_layout(tmp_path, {"blog": site, "default": default})
    done = nginx_test(tmp_path, config)
    # sites-enabled/blog is read first, so Debian's own line is the second claim.
    line = default.splitlines().index("\tlisten 80 default_server;") + 1
    assert (done.returncode, done.stderr) == (
        1,
        f"nginx: [emerg] a duplicate default server for 0.0.0.0:80 in "
        f"{config.parent}/sites-enabled/default:{line}\n"
        f"nginx: configuration file {config} test failed\n",
    )


# --- nginx running -----------------------------------------------------------------------


@dataclass
class Site:
    http_port: int
    https_port: int
    tls: ssl.SSLContext  # a browser's: trusts the test CA, checks the host name
    logs: Path
    webroot: Path  # /var/www/html's stand-in

    @property
    def challenge(self) -> Path:
        """The folder certbot --webroot writes Let's Encrypt's check into."""
        return self.webroot / ".well-known" / "acme-challenge"


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

    def vary(self) -> list[str]:
        """Every name the Vary headers list, whichever header lists it."""
        headers = self.headers.get_all("Vary") or []
        return [name.strip() for header in headers for name in header.split(",")]


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


def ipv6_listen(port: int) -> str:
    """What `listen [::]:80` becomes: ::1 on the test's port, or a comment without IPv6."""
    return f"listen [::1]:{port}" if IPV6 else "# no IPv6 here: listen [::]"


@contextmanager
def nginx_site(
    folder: Path,
    upstream: str,
    sites: tuple[str, ...] = ("blog",),
    error_pages: Path = ROOT / "deploy",
    changes: dict[str, str] | None = None,
) -> Iterator[Site]:
    """nginx in Debian's layout with `sites` enabled ("blog": deploy/nginx.conf,
    "default": Debian's), on free ports, proxying to `upstream` (host:port).

    `error_pages` stands for /srv/blog/deploy; `changes` are more replacements
    in deploy/nginx.conf.
    """
    folder.mkdir(parents=True)
    webroot = folder / "www"
    (webroot / ".well-known" / "acme-challenge").mkdir(parents=True)
    ca = write_certificate(folder)
    tls = ssl.create_default_context()
    ca.configure_trust(tls)
    # Two different ports: the same one twice would make nginx treat the
    # plain-HTTP server as a TLS one, which has no certificate.
    http_port, https_port = free_ports(2)
    texts = {}
    if "blog" in sites:
        texts["blog"] = blog_site(
            {
                r"listen 80;": f"listen 127.0.0.1:{http_port};",
                r"listen 443 ssl": f"listen 127.0.0.1:{https_port} ssl",
                r"listen \[::\]:80;": f"{ipv6_listen(http_port)};",
                r"listen \[::\]:443 ssl": f"{ipv6_listen(https_port)} ssl",
                CERTBOT_LIVE: f"{folder}/",
                "/var/log/nginx/": f"{folder}/",
                "/var/www/html": str(webroot),
                "/srv/blog/deploy": str(error_pages),
                "127.0.0.1:8000": upstream,
                **(changes or {}),
            }
        )
    if "default" in sites:
        texts["default"] = debian_default_site(
            {
                r"listen 80 default_server;": f"listen 127.0.0.1:{http_port} default_server;",
                r"listen \[::\]:80 default_server;": f"{ipv6_listen(http_port)} default_server;",
                r"root /var/www/html;": f"root {webroot};",
            }
        )
    config = debian_layout(folder, texts, foreground=True)
    with run_nginx(folder, config, http_port):
        yield Site(http_port, https_port, tls, folder, webroot)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    """deploy/nginx.conf served by nginx, in front of gunicorn with PROXY_COUNT=1,
    in the layout its header ends with: Debian's default site removed.

    The app's own HSTS age differs from the file's, so that a copy of it
    getting past nginx would show.
    """
    tmp_path = tmp_path_factory.mktemp("nginx")
    with fresh_database(tmp_path) as url:
        env = production_env(tmp_path, url, PROXY_COUNT=1, HSTS_MAX_AGE=600)
        with run_gunicorn(env, tmp_path, app="blog:app", workers=1) as gunicorn:
            app = create_app(config_for(url))
            with app.app_context():
                add_user("visitor")
                db.engine.dispose()
            with nginx_site(tmp_path / "nginx", gunicorn.url.removeprefix("http://")) as site:
                yield site


def connect(port: int, address: str) -> socket.socket:
    """A TCP connection to nginx on `port` of `address` (127.0.0.1 or ::1)."""
    return socket.create_connection((address, port), timeout=30)


def https_request(
    site: Site,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    server_name: str = HOST,
    address: str = "127.0.0.1",
) -> Reply:
    """Send one request over TLS to nginx, naming `server_name` in the handshake.

    The Host header is the browser's: the name and the port
    (blog.example.com:PORT), unless `headers` gives one.
    """
    connection = http.client.HTTPSConnection(server_name, site.https_port, timeout=30)
    # Connected by hand: blog.example.com is not in any DNS, and http.client
    # uses an existing socket as it is.
    connection.sock = site.tls.wrap_socket(
        connect(site.https_port, address), server_hostname=server_name
    )
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def http_request(
    site: Site,
    path: str,
    host: str = HOST,
    headers: dict[str, str] | None = None,
    address: str = "127.0.0.1",
) -> Reply:
    """Send one GET over plain HTTP (port 80's stand-in), for `host`."""
    connection = http.client.HTTPConnection(address, site.http_port, timeout=30)
    try:
        connection.request("GET", path, headers={"Host": host, **(headers or {})})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def raw_exchange(port: int, request: bytes, address: str = "127.0.0.1") -> bytes:
    """Send `request` as is over plain TCP; return every byte of the answer."""
    with connect(port, address) as sock:
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
    "static": ("GET", CSS, None, 200),
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


@pytest.mark.parametrize(("method", "path", "body", "status"), RESPONSES.values(), ids=RESPONSES)
def test_nginx_names_no_version_over_https(site, method, path, body, status):
    """server_tokens off: "Server: nginx", on the app's responses and nginx's own."""
    reply = https_request(site, path, method, body=body)
    assert (reply.status, reply.headers.get_all("Server")) == (status, ["nginx"])


def test_nginx_names_no_version_over_http(site):
    """Port 80: the redirect, and the 400 page of a garbled request, which the
    first server (no host name to go by) answers."""
    redirect = http_request(site, "/explore")
    assert (redirect.status, redirect.headers.get_all("Server")) == (301, ["nginx"])
    garbled = raw_exchange(site.http_port, b"NOT HTTP AT ALL\r\n\r\n")
    assert garbled.startswith(b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\n")
    assert b"<hr><center>nginx</center>" in garbled


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
    return [
        url.decode()
        for url in re.findall(rb'<(?:link rel="stylesheet" href|script src)="([^"]+)"', page)
    ]


def test_the_files_a_page_links_are_bootstraps_with_their_versions(site):
    """What the tests below fetch is what the pages link (app/templates/base.html):
    each URL names the version of its file, so an upgrade changes the URL."""
    page = https_request(site, "/auth/login")
    assert page.status == 200
    assert linked_files(page.body) == [CSS, POPPER_JS, BOOTSTRAP_JS]


def bootstrap_file(url: str) -> bytes:
    """The file of the installed Bootstrap-Flask that `url` names."""
    path = url.removeprefix("/bootstrap/static/").partition("?")[0]
    return (BOOTSTRAP_STATIC / path).read_bytes()


@pytest.mark.parametrize("path", [CSS, POPPER_JS, BOOTSTRAP_JS])
def test_bootstraps_files_come_through_the_app_whatever_the_python(site, path):
    """The installed package's files, through gunicorn (the app's request id
    and its nosniff, once), kept by browsers for a year (the URL has the
    version, and `expires` replaces the app's no-cache), with nginx's HSTS
    header: from the site as it is deployed, with no path to the package to
    adjust for a Python version."""
    reply = https_request(site, path)
    assert reply.status == 200
    assert reply.body == bootstrap_file(path)
    # The type Flask gives (from the mimetypes module, which for .js follows
    # the system's /etc/mime.types): what counts is that it is declared.
    content_type = mimetypes.guess_type(path.partition("?")[0])[0]
    assert reply.headers["Content-Type"] == f"{content_type}; charset=utf-8"
    assert reply.headers["Content-Type"].startswith(
        ("text/css", "text/javascript", "application/javascript")
    )
    assert reply.headers.get_all("Cache-Control") == [A_YEAR]
    assert reply.headers["Content-Encoding"] is None  # this client asked for no gzip
    assert reply.headers.get_all("X-Content-Type-Options") == ["nosniff"]
    assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["X-Request-ID"])
    assert reply.hsts() == [HSTS]


@pytest.mark.parametrize(
    "path",
    ["/bootstrap/static/css/bootstrap.min.css", "/bootstrap/static/css/bootstrap.min.css?v="],
    ids=["no-version", "empty-version"],
)
def test_a_bootstrap_url_without_a_version_is_checked_each_time(site, path):
    """No version in the URL, no year in the cache: the app's no-cache stays,
    and asking again with the ETag costs a 304, without the file."""
    reply = https_request(site, path)
    assert reply.status == 200
    assert reply.body == bootstrap_file(path)
    assert reply.headers.get_all("Cache-Control") == ["no-cache"]
    assert reply.headers["Expires"] is None
    again = https_request(site, path, headers={"If-None-Match": reply.headers["ETag"]})
    assert (again.status, again.body) == (304, b"")


@pytest.mark.parametrize("path", [CSS, POPPER_JS, BOOTSTRAP_JS])
def test_bootstraps_files_are_compressed(site, path):
    """gzip for a browser that accepts it, with Vary: Accept-Encoding so that
    a cache on the way keeps the two forms apart; still kept for a year."""
    reply = https_request(site, path, headers={"Accept-Encoding": "gzip"})
    assert reply.status == 200
    assert reply.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(reply.body) == bootstrap_file(path)
    assert "Accept-Encoding" in reply.vary()
    assert reply.headers.get_all("Cache-Control") == [A_YEAR]


@pytest.mark.parametrize("path", ["/explore", "/auth/login", "/no/such/page"])
def test_pages_are_never_compressed(site, path):
    """Debian's nginx.conf compresses HTML; the site turns that off for the
    blog's pages, which hold a CSRF token next to text others chose (BREACH)."""
    reply = https_request(site, path, headers={"Accept-Encoding": "gzip"})
    assert reply.headers["Content-Encoding"] is None
    assert reply.body.startswith(b"<!doctype html>")


def test_a_missing_static_file_is_the_apps_404(site):
    """The app answers for the whole folder: a file Bootstrap-Flask doesn't
    have, or a path climbing out of it, is its 404 page, not a file from disk."""
    for path in ("/bootstrap/static/css/no-such.css", "/bootstrap/static/../../config.py"):
        reply = https_request(site, path)
        assert reply.status == 404, path
        assert b"<h1>Page not found</h1>" in reply.body


@pytest.mark.parametrize("path", ["/auth/login", "/auth/register", "/no/such/page"])
def test_a_body_over_one_mib_gets_nginx_413_with_the_sites_page(site, path):
    """nginx answers before the app is asked: the status is its 413, the page
    deploy/nginx-too-large.html, with the header (no request id: the app never
    saw the request)."""
    reply = https_request(site, path, "POST", body=b"x" * OVER_ONE_MIB)
    assert (reply.status, reply.body) == (413, TOO_LARGE_PAGE)
    assert reply.headers["Content-Type"] == "text/html"
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


def log_in(site: Site, referer: str, host: str | None = None) -> tuple[Reply, Reply]:
    """The login form, then logging in as visitor with its token, sending
    `referer` (and `host` as the Host header, else the browser's); return both replies."""
    headers = {"Host": host} if host else {}
    form = https_request(site, "/auth/login", headers=headers)
    assert form.status == 200
    token = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', form.body)
    assert token, "the login form has no CSRF token"
    fields = f"csrf_token={token.group(1).decode()}&username=visitor&password={PASSWORD}"
    reply = https_request(
        site,
        "/auth/login",
        "POST",
        headers={
            **headers,
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": form.cookie("session").split(";")[0],
            "Referer": referer,
        },
        body=fields.encode(),
    )
    return form, reply


@pytest.mark.parametrize("host", [None, "BLOG.Example.COM"], ids=["as-sent", "upper-case"])
def test_logging_in_over_https_on_another_port(site, host):
    """The site here is on a port other than 443, which the browser writes in
    its Host and Referer headers. Flask-WTF's check over HTTPS that the form
    came from the same host passes only if the app is told that port too
    (X-Forwarded-Host with it; $host alone drops it, and failed every form);
    the name is the one nginx matched, in lower case. The app sees HTTPS
    through X-Forwarded-Proto: its cookies are Secure, though
    SESSION_COOKIE_SECURE is off here."""
    port = site.https_port
    assert port != 443
    form, reply = log_in(site, f"https://{HOST}:{port}/auth/login", host=host and f"{host}:{port}")
    assert (reply.status, reply.headers["Location"]) == (302, "/")
    for cookie in (form.cookie("session"), reply.cookie("session")):  # before and after
        assert "Secure" in [attribute.strip() for attribute in cookie.split(";")[1:]]


@pytest.mark.parametrize(
    "referer",
    [
        f"https://{HOST}/auth/login",
        f"https://{HOST}:1/auth/login",
        f"https://{HOST}:abc/auth/login",
        "https://evil.example/",
    ],
    ids=["no-port", "other-port", "garbled-port", "other-host"],
)
def test_a_form_from_another_origin_is_refused(site, referer):
    """The port counts: a Referer without it (port 443), or with another one, is
    another origin, and the app's 400 page refuses the form; so is one whose
    port is no number."""
    _, reply = log_in(site, referer)
    assert reply.status == 400
    assert b"<h1>Bad request</h1>" in reply.body


@pytest.mark.parametrize(
    "port", [":0", ":065535", ":abc", ":"], ids=["zero", "zero-first", "letters", "empty"]
)
def test_a_host_header_port_that_is_no_port_is_dropped(site, port):
    """Only a port number reaches the app: anything else after the host name
    is left out, as when a browser on port 443 writes none, so the form from
    the port-less address passes."""
    _, reply = log_in(site, f"https://{HOST}/auth/login", host=f"{HOST}{port}")
    assert (reply.status, reply.headers["Location"]) == (302, "/")


def test_a_host_header_port_past_65535_is_the_apps_400(site):
    """A number reaches the app as it is, and the app judges it: no port, so
    no host it will build a URL or check a form with (its 400 page)."""
    port = ":99999"
    _, reply = log_in(site, f"https://{HOST}{port}/auth/login", host=f"{HOST}{port}")
    assert reply.status == 400
    assert b"<h1>Bad request</h1>" in reply.body


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
    assert b"<hr><center>nginx</center>" in missing.body


@pytest.mark.parametrize("link", ["reset_password", "confirm_email"])
def test_tokens_of_mailed_links_never_reach_nginx_logs(site, link):
    """A reset or email-change link, over HTTPS (the app's redirect) or typed in
    over plain HTTP (nginx's): its path is logged without the token, in every log."""
    token = secrets.token_urlsafe(32)
    # The user agent is logged as sent: it finds each request's line.
    agents = {scheme: f"{scheme}-{secrets.token_hex(8)}" for scheme in ("https", "http")}
    path = f"/auth/{link}/{token}"
    assert https_request(site, path, headers={"User-Agent": agents["https"]}).status == 302
    assert http_request(site, path, headers={"User-Agent": agents["http"]}).status == 301
    for scheme, status in (("https", 302), ("http", 301)):
        line = access_log_line(site, agents[scheme])
        assert f'"GET /auth/{link}/[redacted] HTTP/1.1" {status}' in line
    logs = {log.name: log.read_text() for log in site.logs.glob("*.log")}
    assert all(token not in text for text in logs.values()), logs


OTHER_HOSTS = {
    "other-host": ("GET / HTTP/1.1", "other.example.com"),
    "address": ("GET / HTTP/1.1", "127.0.0.1"),
    "longer-name": ("GET / HTTP/1.1", "blog.example.com.evil.example"),
    "no-host": ("GET / HTTP/1.0", None),  # no host name at all
    # The host of an absolute URI wins over the Host header.
    "absolute-uri": ("GET http://blog.example.com.evil.example/ HTTP/1.1", HOST),
}


def request_for(request_line: str, host: str | None) -> bytes:
    """A request with `request_line` for `host` (no Host header if None)."""
    host_header = f"Host: {host}\r\n" if host else ""
    # Connection: close, so that a server that does answer ends the exchange at once.
    return f"{request_line}\r\n{host_header}Connection: close\r\n\r\n".encode()


@pytest.mark.parametrize(("request_line", "host"), OTHER_HOSTS.values(), ids=OTHER_HOSTS)
def test_other_host_names_get_no_answer_over_http(site, request_line, host):
    """The first server of port 80, the default one once Debian's default site
    is removed, closes the connection without a byte (444)."""
    assert raw_exchange(site.http_port, request_for(request_line, host)) == b""


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


@needs_ipv6
def test_the_site_answers_over_ipv6(site):
    """listen [::]: the same servers on IPv6: the blog over HTTPS, the redirect
    over HTTP, and the refusals of other host names on both."""
    page = https_request(site, "/explore", address="::1")
    assert page.status == 200
    assert b"<h1>Welcome to the blog</h1>" in page.body
    redirect = http_request(site, "/explore", address="::1")
    assert (redirect.status, redirect.headers["Location"]) == (301, f"https://{HOST}/explore")
    assert raw_exchange(site.http_port, request_for("GET / HTTP/1.1", "other"), "::1") == b""
    with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
        https_request(site, "/", server_name="other.example.com", address="::1")


# --- When the app doesn't answer ----------------------------------------------------------


@pytest.fixture(scope="module")
def unwell_site(tmp_path_factory) -> Iterator[Site]:
    """The site in front of an app whose database is missing (every page is
    its 503), with the test routes (tests/gunicorn_app.py), and nginx waiting
    only a second for an answer."""
    tmp_path = tmp_path_factory.mktemp("nginx-unwell")
    # SQLite can't open a file in a folder that doesn't exist: the app's outage.
    missing = f"sqlite:///{tmp_path / 'missing' / 'blog.sqlite'}"
    env = production_env(tmp_path, missing, PROXY_COUNT=1)
    static = "/bootstrap/static/css/bootstrap.min.css"  # answers without the database
    with (
        run_gunicorn(env, tmp_path, upgrade=False, ready_path=static) as gunicorn,
        nginx_site(
            tmp_path / "nginx",
            gunicorn.url.removeprefix("http://"),
            changes={r"proxy_read_timeout 35s;": "proxy_read_timeout 1s;"},
        ) as site,
    ):
        yield site


def test_the_apps_own_503_page_passes_through(unwell_site):
    """nginx's page is only for nginx's errors: the app's 503 (its database is
    away) keeps its page, its Retry-After and its request id."""
    reply = https_request(unwell_site, "/explore")
    assert reply.status == 503
    assert b"<h1>Temporarily unavailable</h1>" in reply.body
    assert b"The site can't reach its database right now." in reply.body
    assert reply.headers["Retry-After"] == "30"
    assert re.fullmatch(r"[0-9a-f]{32}", reply.headers["X-Request-ID"])
    assert reply.hsts() == [HSTS]


def test_an_answer_too_slow_gets_the_sites_504_page(unwell_site):
    """Past proxy_read_timeout (1 s here, 35 s in the file), nginx gives up
    waiting: a 504, with deploy/nginx-unavailable.html and the header."""
    reply = https_request(unwell_site, "/_test/sleep/3")
    assert (reply.status, reply.body) == (504, UNAVAILABLE_PAGE)
    assert reply.headers["Content-Type"] == "text/html"
    assert reply.headers.get_all("Server") == ["nginx"]
    assert reply.hsts() == [HSTS]


@pytest.mark.parametrize("path", ["/explore", CSS, "/healthz"])
def test_no_app_listening_gets_the_sites_502_page(tmp_path, path):
    """gunicorn stopped, or restarting: nothing listens on its port. Every
    location gives a 502 with deploy/nginx-unavailable.html and the header,
    instead of nginx's bare page."""
    with nginx_site(tmp_path / "nginx", f"127.0.0.1:{free_port()}") as site:
        reply = https_request(site, path)
    assert (reply.status, reply.body) == (502, UNAVAILABLE_PAGE)
    assert reply.headers["Content-Type"] == "text/html"
    assert reply.hsts() == [HSTS]


def test_missing_error_pages_leave_nginxs_own_with_the_right_status(tmp_path):
    """If nginx can't read the site's pages (another checkout folder, say), its
    own bare pages show, with the status of the error: not a 404 for the page."""
    with nginx_site(
        tmp_path / "nginx", f"127.0.0.1:{free_port()}", error_pages=tmp_path / "no-such-folder"
    ) as site:
        unavailable = https_request(site, "/explore")
        too_large = https_request(site, "/auth/login", "POST", body=b"x" * OVER_ONE_MIB)
    assert unavailable.status == 502
    assert b"<title>502 Bad Gateway</title>" in unavailable.body
    assert too_large.status == 413
    assert b"<title>413 Request Entity Too Large</title>" in too_large.body


# --- Beside Debian's default site -------------------------------------------------------


# What Debian's default site shows: its index.nginx-debian.html, a stand-in.
WELCOME_PAGE = b"<title>Welcome to nginx!</title>\n"


def test_the_first_certificate_comes_through_debians_default_site(tmp_path):
    """Before the site is enabled (nginx refuses it without its certificate),
    Debian's default site serves /var/www/html on port 80 for every host name:
    certbot --webroot -w /var/www/html answers Let's Encrypt's check there,
    with nginx running, and the site serves the same folder for renewals."""
    with nginx_site(tmp_path / "nginx", "127.0.0.1:1", sites=("default",)) as site:
        token = secrets.token_urlsafe(32)
        (site.challenge / token).write_text(f"{token}.key-authorization")
        reply = http_request(site, f"/.well-known/acme-challenge/{token}")
    assert (reply.status, reply.body) == (200, f"{token}.key-authorization".encode())


def test_the_site_beside_debians_default_site(tmp_path):
    """Left enabled, Debian's default site answers other host names on port 80
    (its welcome page); the blog's host name still goes to the blog, and a
    request naming no host at all to the site's first server, which closes it."""
    with nginx_site(tmp_path / "nginx", "127.0.0.1:1", sites=("blog", "default")) as site:
        (site.webroot / "index.nginx-debian.html").write_bytes(WELCOME_PAGE)
        other = http_request(site, "/", host="other.example.com")
        blog = http_request(site, "/explore")
        token = secrets.token_urlsafe(32)
        (site.challenge / token).write_text(f"{token}.key-authorization")
        challenge = http_request(site, f"/.well-known/acme-challenge/{token}")
        no_host = raw_exchange(site.http_port, request_for("GET / HTTP/1.0", None))
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            https_request(site, "/", server_name="other.example.com")
    assert (other.status, other.body) == (200, WELCOME_PAGE)
    assert (blog.status, blog.headers["Location"]) == (301, f"https://{HOST}/explore")
    assert (challenge.status, challenge.body) == (200, f"{token}.key-authorization".encode())
    assert no_host == b""

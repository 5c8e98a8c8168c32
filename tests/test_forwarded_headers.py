"""Headers a proxy sets, sent by a client instead, to the real blog under gunicorn.

gunicorn.conf.py leaves every forwarded header to the app: gunicorn trusts no
address (`forwarded_allow_ips`), believes no scheme header
(`secure_scheme_headers`) and takes no environ key from one
(`forwarder_headers`). The app believes the proxy's X-Forwarded-Proto only
when PROXY_COUNT says a proxy is there (ProxyFix, app/__init__.py).

By gunicorn's defaults, a process on 127.0.0.1 is a trusted proxy, and nginx
is on 127.0.0.1 and passes on every header of the client's but the ones it
sets itself (deploy/nginx.conf sets X-Forwarded-Proto, not X-Forwarded-Ssl or
X-Forwarded-Protocol). So a client that sent ``X-Forwarded-Ssl: on`` with
``X-Forwarded-Proto: http`` got gunicorn's bare 400 "Contradictory scheme
headers"; ``X-Forwarded-Proto: https`` made a plain HTTP request count as
HTTPS even with PROXY_COUNT=0; and a ``SCRIPT_NAME`` header (which nginx drops
for its underscore, but any local process can send) moved the site under
another path, or got a bare 500. gunicorn trusts a client on a Unix socket
whatever `forwarded_allow_ips` says, hence the other two settings.

Each request here goes straight to gunicorn from 127.0.0.1, where nginx's
come from, and must get the app's own page, HTTPS exactly when PROXY_COUNT=1
and the last X-Forwarded-Proto says https (the Strict-Transport-Security
header, sent over HTTPS only, tells which).
"""

import http.client
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import pages
from tests.databases import fresh_database
from tests.servers import BIN, ROOT, production_env, run_gunicorn, wait_until

pytestmark = pytest.mark.system

HSTS = "max-age=600"  # what the app sends with HSTS_MAX_AGE=600 below
PAGE = "/explore"

Headers = list[tuple[str, str]]


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str

    def page(self) -> str:
        """The body with its forms' CSRF tokens blanked: the one part that
        differs from request to request."""
        return pages.CSRF_TOKEN.sub(lambda match: match[0].replace(match[1], ""), self.body)


def get(connect, path: str, headers: Headers) -> Reply:
    """GET `path` with `headers` as given, repeats and odd names included,
    over the socket `connect()` opens."""
    connection = http.client.HTTPConnection("127.0.0.1", timeout=30)
    connection.sock = connect()
    try:
        connection.putrequest("GET", path)
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read().decode())
    finally:
        connection.close()


@dataclass
class Server:
    """A gunicorn serving the blog, how to reach it, and what it printed."""

    connect: Callable[[], socket.socket]
    output: Path
    proxy_count: int

    def log(self) -> str:
        return self.output.read_text()


def tcp(port: int):
    return lambda: socket.create_connection(("127.0.0.1", port), timeout=30)


def unix(path: Path):
    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(30)
        sock.connect(str(path))
        return sock

    return connect


@contextmanager
def gunicorn_on_unix_socket(env: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    """gunicorn with the production config, bound to a Unix socket (as
    GUNICORN_BIND=unix:... would), until the block ends."""
    path = tmp_path / "blog.sock"
    output = tmp_path / "gunicorn-unix.out"
    command = [BIN / "gunicorn", "--workers", "1", "--bind", f"unix:{path}"]
    command += ["--no-control-socket", "blog:app"]
    with open(output, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Server(unix(path), output, int(env["PROXY_COUNT"]))
    try:
        deadline = time.monotonic() + 120  # only ends a start that hangs
        while True:
            try:
                get(server.connect, PAGE, [])
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"gunicorn did not start:\n{server.log()}") from None
                time.sleep(0.1)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[dict[str, Server]]:
    """The blog under gunicorn three ways: on TCP with PROXY_COUNT=1 (behind
    nginx) and 0 (no proxy), and on a Unix socket with PROXY_COUNT=1."""
    tmp_path = tmp_path_factory.mktemp("forwarded")
    with fresh_database(tmp_path) as url:

        def env(proxy_count: int) -> dict[str, str]:
            return production_env(tmp_path, url, PROXY_COUNT=proxy_count, HSTS_MAX_AGE=600)

        with (
            run_gunicorn(env(1), tmp_path, app="blog:app", workers=1) as behind_nginx,
            run_gunicorn(env(0), tmp_path, app="blog:app", workers=1, upgrade=False) as alone,
            gunicorn_on_unix_socket(env(1), tmp_path) as on_socket,
        ):
            yield {
                "tcp, PROXY_COUNT=1": Server(
                    tcp(int(behind_nginx.url.rsplit(":", 1)[1])), behind_nginx.output, 1
                ),
                "tcp, PROXY_COUNT=0": Server(
                    tcp(int(alone.url.rsplit(":", 1)[1])), alone.output, 0
                ),
                "unix socket, PROXY_COUNT=1": on_socket,
            }


SERVERS = ["tcp, PROXY_COUNT=1", "tcp, PROXY_COUNT=0", "unix socket, PROXY_COUNT=1"]

# (headers, whether the app may count the request as HTTPS behind a counted proxy)
CLIENT_HEADERS = {
    # gunicorn's defaults: "Contradictory scheme headers", a bare 400.
    "ssl on, proto http": ([("X-Forwarded-Ssl", "on"), ("X-Forwarded-Proto", "http")], False),
    "protocol ssl, proto http": (
        [("X-Forwarded-Protocol", "ssl"), ("X-Forwarded-Proto", "http")],
        False,
    ),
    # What gunicorn gets through nginx over HTTPS when the client sends X-Forwarded-Ssl.
    "ssl off, proto https": ([("X-Forwarded-Ssl", "off"), ("X-Forwarded-Proto", "https")], True),
    "protocol garbage, proto https": (
        [("X-Forwarded-Protocol", "garbage"), ("X-Forwarded-Proto", "https")],
        True,
    ),
    # gunicorn's defaults: HTTPS from 127.0.0.1, whatever PROXY_COUNT says.
    "ssl on alone": ([("X-Forwarded-Ssl", "on")], False),
    "protocol ssl alone": ([("X-Forwarded-Protocol", "ssl")], False),
    "ssl empty": ([("X-Forwarded-Ssl", "")], False),
    "ssl huge": ([("X-Forwarded-Ssl", "on" * 2000)], False),
    # Two of them: gunicorn's defaults refuse it, ProxyFix believes the last (nginx's).
    "proto twice, https then http": (
        [("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")],
        False,
    ),
    "proto https": ([("X-Forwarded-Proto", "https")], True),
    # RFC 7239's header: neither gunicorn nor ProxyFix reads it.
    "forwarded proto https": ([("Forwarded", "for=203.0.113.9;proto=https")], False),
    # gunicorn's defaults: SCRIPT_NAME and PATH_INFO from a trusted peer go into
    # the environ; a SCRIPT_NAME the path doesn't start with was a bare 500, one
    # it does moved the site (links, redirects) under it.
    "script name elsewhere": ([("SCRIPT_NAME", "/nope")], False),
    "script name of the page": ([("SCRIPT_NAME", PAGE)], False),
    "script name empty": ([("SCRIPT_NAME", "")], False),
    "path info": ([("PATH_INFO", "/auth/login")], False),
}


@pytest.fixture(scope="module")
def plain_pages(servers) -> dict[str, str]:
    """Each server's page for a request with no forwarded header at all."""
    plain = {}
    for name, server in servers.items():
        reply = get(server.connect, PAGE, [])
        assert reply.status == 200, reply.body
        plain[name] = reply.page()
    return plain


@pytest.mark.parametrize("server_name", SERVERS)
@pytest.mark.parametrize("case", CLIENT_HEADERS)
def test_forwarded_headers_from_a_client_get_the_apps_page(servers, plain_pages, server_name, case):
    server = servers[server_name]
    headers, https_behind_a_proxy = CLIENT_HEADERS[case]
    output_before = len(server.log())

    reply = get(server.connect, PAGE, headers)

    assert reply.status == 200, reply.body
    # Byte for byte the page without the headers: no gunicorn error page, and
    # no link moved under a SCRIPT_NAME.
    assert reply.page() == plain_pages[server_name]
    assert len(reply.headers["X-Request-ID"]) == 32  # the app's own id
    expected_hsts = [HSTS] if https_behind_a_proxy and server.proxy_count else []
    assert reply.headers.get_all("Strict-Transport-Security", []) == expected_hsts
    output = server.log()[output_before:]
    assert "Invalid request" not in output
    assert "Traceback" not in output


@pytest.mark.parametrize("server_name", SERVERS[:2])
def test_the_tcp_servers_run_the_projects_gunicorn_conf(servers, server_name):
    """run_gunicorn names no config: gunicorn, started in the project's folder,
    reads ./gunicorn.conf.py by itself. Its access log format (the request id
    at the end of each line) shows it did."""
    server = servers[server_name]
    reply = get(server.connect, PAGE, [])
    request_id = reply.headers["X-Request-ID"]
    # gunicorn writes the line once the response has gone out.
    wait_until(lambda: request_id in server.log(), message="the access log line")
    [line] = [line for line in server.log().splitlines() if request_id in line]
    assert line.startswith("127.0.0.1 - - [")
    assert line.endswith(f"ms request_id={request_id}")


def test_gunicorn_conf_trusts_no_forwarded_header(tmp_path):
    """What the tests above rely on, as gunicorn reads the file: even with
    FORWARDED_ALLOW_IPS, gunicorn's own variable for the first setting, in the
    environment."""
    result = subprocess.run(
        [BIN / "gunicorn", "--print-config", "blog:app"],
        cwd=ROOT,
        env=production_env(tmp_path, f"sqlite:///{tmp_path / 'unused.sqlite'}")
        | {"FORWARDED_ALLOW_IPS": "*"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    printed = dict(re.findall(r"^(\w+) += (.*)$", result.stdout, re.MULTILINE))
    names = ["forwarded_allow_ips", "secure_scheme_headers", "forwarder_headers", "proxy_protocol"]
    assert {name: printed[name] for name in names} == {
        "forwarded_allow_ips": "[]",
        "secure_scheme_headers": "{}",
        "forwarder_headers": "[]",
        "proxy_protocol": "off",
    }

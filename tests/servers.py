"""Real servers for the tests, all on 127.0.0.1.

- gunicorn serving the blog with its production config (`run_gunicorn`), and
  a browser's worth of HTTP client for it (`Browser`);
- an SMTP server, aiosmtpd, plain, with STARTTLS or with implicit TLS, its
  certificate made by a throwaway certificate authority (trustme)
  (`smtp_server`);
- a tarpit: a port that accepts connections and never says a word (`tarpit`);
- a stand-in for Sentry's ingestion endpoint (`sentry_receiver`).
"""

import asyncio
import email
import gzip
import http.server
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from http.cookiejar import CookieJar
from pathlib import Path

import redis
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from app.lab.sandbox import sentry_events
from tests import pages

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The Redis server the tests share (.ci/run starts one if none answers), in a
# database of their own that they may empty: not the 0 a local blog would use.
REDIS_URL = os.environ.get("TEST_REDIS_URL") or "redis://127.0.0.1:6379/15"
SMTP_USER = "blog@example.com"
SMTP_PASSWORD = "smtp-authorization-code"


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different ports nobody listens on: each socket is held until all
    are picked, since a port just closed may be handed out again at once."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def wait_until(condition, timeout: float = 15, message: str = "condition") -> None:
    """Poll `condition` until it is true; fail the test after `timeout` seconds.

    The timeout only bounds a test that is already failing: no assertion here
    depends on how fast anything was.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.05)


def clean_env(**settings: object) -> dict[str, str]:
    """This process's environment without any of the app's settings, plus `settings`."""
    prefixes = ("FLASK_", "MAIL_", "SECRET", "DATABASE", "LOG_", "SENTRY_", "ADMIN", "RESET_")
    prefixes += ("REDIS_", "RATELIMIT_", "PROXY_", "GUNICORN_", "WEB_CONCURRENCY", "BABEL_")
    prefixes += ("BASE_URL", "TRUSTED_HOSTS", "HSTS_", "SESSION_COOKIE_", "REMEMBER_COOKIE_")
    prefixes += ("AUTH_RATE_LIMIT", "REGISTRATION_RATE_LIMIT", "USE_GRAVATAR", "POSTS_PER_PAGE")
    prefixes += ("MAX_CONTENT_LENGTH", "EXTERNAL_DEBUGGER")
    env = {key: value for key, value in os.environ.items() if not key.startswith(prefixes)}
    env.update({key: str(value) for key, value in settings.items()})
    return env


@dataclass
class Gunicorn:
    url: str
    process: subprocess.Popen
    output: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Stop gunicorn the way systemd does, and return its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.output.read_text()


def production_env(tmp_path: Path, database_url: str, **settings: object) -> dict[str, str]:
    """The environment of a production deployment on `database_url`, logging to tmp_path/logs.

    Give it a database of its own, not the shared test database: conftest's
    `fresh_database_url` fixture, or `databases.fresh_database` for a module.
    """
    return clean_env(
        FLASK_APP="blog.py",
        FLASK_CONFIG="production",
        SECRET_KEY="a-test-secret-that-is-long-enough-for-production",
        DATABASE_URL=database_url,
        LOG_DIR=tmp_path / "logs",
        **settings,
    )


# What `flask check-deploy` wants of a production setup, beyond production_env's.
GOOD_SETTINGS = {
    "SESSION_COOKIE_SECURE": "1",
    "ADMINS": "admin@example.com",
    # Never contacted: check-deploy reads the settings, it sends nothing.
    "MAIL_SERVER": "127.0.0.1",
    "BASE_URL": "https://blog.example.com",
    # Rate limits shared by every worker (only pinged by check-deploy).
    "REDIS_URL": REDIS_URL,
}


def deploy_env(tmp_path: Path, database_url: str, **settings: object) -> dict[str, str]:
    """A production environment (production_env) with every optional setting blank.

    Blank, not absent: config.py (and the `flask` command) load a .env file,
    which only fills in variables that are absent; a developer's own .env must
    not change what these tests see.
    """
    # Not WEB_CONCURRENCY: gunicorn itself fails to start on a blank one.
    blanks = dict.fromkeys([*GOOD_SETTINGS, "LOG_TO_STDOUT", "PROXY_COUNT", "FLASK_DEBUG"], "")
    env = production_env(tmp_path, database_url, **blanks)
    # Updated afterwards: production_env's own keys (SECRET_KEY, LOG_DIR...) may change too.
    return env | {key: str(value) for key, value in settings.items()}


def problems_listed(result: subprocess.CompletedProcess, prefix: str = "PROBLEM: ") -> list[str]:
    """The problems `flask check-deploy` printed, one per line."""
    return [line[len(prefix) :] for line in result.stdout.splitlines() if line.startswith(prefix)]


def warnings_listed(result: subprocess.CompletedProcess) -> list[str]:
    return problems_listed(result, prefix="WARNING: ")


@contextmanager
def run_gunicorn(
    env: dict[str, str],
    tmp_path: Path,
    app: str = "tests.gunicorn_app:app",
    workers: int = 2,
    preload: bool = False,
    upgrade: bool = True,
    ready_path: str = "/explore",
) -> Iterator[Gunicorn]:
    """Run `flask db upgrade`, then gunicorn, until the block ends.

    gunicorn is ready when `ready_path` answers; for an app whose database
    never answers, pass ``upgrade=False`` and a static file.

    `app` defaults to tests/gunicorn_app.py: the real blog plus routes that
    fail or log on demand.
    """
    if upgrade:
        done = subprocess.run(
            [BIN / "flask", "db", "upgrade"], cwd=ROOT, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"flask db upgrade failed:\n{done.stdout}{done.stderr}"
    port = free_port()
    command = [
        BIN / "gunicorn",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--no-control-socket",  # several gunicorns at once would share one
        *(["--preload"] if preload else []),
        app,
    ]
    output = tmp_path / f"gunicorn-{port}.out"
    with open(output, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Gunicorn(f"http://127.0.0.1:{port}", process, output)
    try:
        # Every worker imports the app at once, about 2 s of CPU each: on a busy
        # machine that can pass 30 s. The bound only ends a start that hangs.
        deadline = time.monotonic() + 120
        while True:
            try:
                # A probe given up on is still served later by a booting worker.
                urllib.request.urlopen(server.url + ready_path, timeout=10).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"gunicorn did not start:\n{server.log()}") from None
                time.sleep(0.1)
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- gunicorn on a copy of gunicorn.conf.py, with a .env of the test's own ------------


@dataclass
class GunicornRun:
    process: subprocess.Popen
    errors: Path  # gunicorn's own log (stderr)

    def error_log(self) -> str:
        return self.errors.read_text()

    def worker_pids(self) -> set[int]:
        """The master's children: its workers, and nothing else."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return {int(pid) for pid in children.read_text().split()}

    def booted_pids(self) -> set[int]:
        return {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", self.error_log())}


def project_copy(tmp_path: Path, dotenv: str) -> Path:
    """gunicorn.conf.py copied into tmp_path, with `dotenv` as the .env beside it."""
    folder = tmp_path / "project"
    folder.mkdir(exist_ok=True)
    (folder / "gunicorn.conf.py").write_text((ROOT / "gunicorn.conf.py").read_text())
    (folder / ".env").write_text(dotenv)
    return folder / "gunicorn.conf.py"


def gunicorn_command(config: Path, *options: str) -> list:
    """gunicorn on `config`, serving the blog from the project's folder.

    --chdir makes the project the app's folder, as WorkingDirectory does in
    the unit; the .env gunicorn.conf.py reads is the one beside `config`.
    """
    return [BIN / "gunicorn", "-c", config, "--chdir", ROOT, "--no-control-socket", *options]


def gunicorn_env(tmp_path: Path, **settings: object) -> dict[str, str]:
    """A production environment without GUNICORN_* or WEB_CONCURRENCY (clean_env
    drops them), on a database the static files never touch."""
    return production_env(tmp_path, f"sqlite:///{tmp_path / 'unused.sqlite'}", **settings)


def stop(run: GunicornRun) -> None:
    if run.process.poll() is None:
        run.process.terminate()
        try:
            run.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            run.process.kill()
            run.process.wait()


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand a redirect back as it came, so that a test sees its status and Location."""

    def redirect_request(self, *args, **kwargs):
        return None


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    """GET `url` for real, not following redirects: (status, headers, body), whatever the status."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read().decode()


def flask_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run `flask <args>` as an admin would, in the project's folder."""
    return subprocess.run(
        [BIN / "flask", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


class Browser:
    """Just enough of a browser: cookies, no automatic redirects, CSRF tokens from forms."""

    def __init__(self, base_url: str, timeout: float = 30):
        self.base_url = base_url
        self.timeout = timeout  # generous: requests may queue for busy workers
        self.cookies = CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), NoRedirect
        )

    def request(
        self, path: str, data: dict | None = None, headers: dict | None = None
    ) -> tuple[int, dict, str]:
        """GET `path` (POST `data` if given); return status, headers and page."""
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers or {})
        try:
            with self.opener.open(request, timeout=self.timeout) as response:
                return response.status, dict(response.headers), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read().decode()

    def csrf_token(self, path: str) -> str:
        """GET the page with the form and return its CSRF token."""
        status, _, page = self.request(path)
        assert status == 200, page
        return pages.csrf_token(page)

    def submit(self, path: str, fields: dict) -> tuple[int, dict, str]:
        """GET the page with the form, then POST it with its CSRF token."""
        return self.request(path, {"csrf_token": self.csrf_token(path), **fields})


class Mailbox:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self, delay: float = 0):
        self.delay = delay  # seconds to sit on each message before accepting it
        self.messages: list[EmailMessage] = []
        self.envelopes = []

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        self.envelopes.append(envelope)
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def wait_for(self, count: int, timeout: float = 15) -> list[EmailMessage]:
        wait_until(lambda: len(self.messages) >= count, timeout, f"{count} mail(s)")
        return self.messages


@dataclass
class SMTPServer:
    port: int
    mailbox: Mailbox
    settings: dict[str, object] = field(default_factory=dict)  # the app's MAIL_* config


def authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@contextmanager
def smtp_server(
    mode: str, tmp_path: Path, delay: float = 0, password: str = SMTP_PASSWORD
) -> Iterator[SMTPServer]:
    """An SMTP server on 127.0.0.1 in `mode` "plain", "starttls" or "ssl".

    STARTTLS and SSL require a login (as 163.com, QQ Mail and every
    submission port do); the app is configured to trust the test CA through
    MAIL_CA_FILE, so the certificate is really verified.
    """
    mailbox = Mailbox(delay)
    port = free_port()
    settings: dict[str, object] = {
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": port,
        "MAIL_USE_TLS": mode == "starttls",
        "MAIL_USE_SSL": mode == "ssl",
        "MAIL_TIMEOUT": 5,
    }
    options: dict[str, object] = {}
    if mode != "plain":
        ca = trustme.CA()
        ca_file = tmp_path / f"smtp-ca-{port}.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
        options = {"authenticator": authenticate, "auth_required": True}
        if mode == "starttls":
            options |= {"tls_context": server_context, "require_starttls": True}
        else:
            # aiosmtpd doesn't count implicit TLS as TLS for auth_require_tls.
            options |= {"ssl_context": server_context, "auth_require_tls": False}
        settings |= {
            "MAIL_USERNAME": SMTP_USER,
            "MAIL_PASSWORD": password,
            "MAIL_CA_FILE": str(ca_file),
        }
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **options)
    controller.start()
    try:
        yield SMTPServer(port, mailbox, settings)
    finally:
        controller.stop()


@contextmanager
def tarpit() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung mail server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)
    held: list[socket.socket] = []
    stopping = threading.Event()

    def accept_forever():
        while not stopping.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stopping.set()
        listener.close()
        for connection in held:
            connection.close()


def env_settings(settings: dict[str, object]) -> dict[str, str]:
    """App settings as environment variables (booleans as 1/0)."""
    return {
        key: ("1" if value else "0") if isinstance(value, bool) else str(value)
        for key, value in settings.items()
    }


@dataclass
class SentryReceiver:
    """What a stand-in for Sentry's ingestion endpoint received."""

    dsn: str
    envelopes: list[bytes] = field(default_factory=list)

    def events(self) -> list[dict]:
        """The error events in the envelopes received so far."""
        return sentry_events(self.envelopes)


@contextmanager
def sentry_receiver() -> Iterator[SentryReceiver]:
    """An HTTP server on 127.0.0.1 that accepts what sentry-sdk sends."""
    port = free_port()
    receiver = SentryReceiver(dsn=f"http://public-key@127.0.0.1:{port}/1")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            receiver.envelopes.append(body)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):  # keep the test output quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def redis_server(port: int | None = None) -> Iterator[str]:
    """A Redis server of the test's own on 127.0.0.1 (keeping nothing on disk),
    for tests that stop it; yields its URL. The shared one is REDIS_URL."""
    port = port or free_port()
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"

    def answers() -> bool:
        try:
            return redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        except redis.RedisError:
            return False

    try:
        wait_until(answers, message=f"redis-server on port {port}")
        yield url
    finally:
        process.terminate()
        process.wait(10)

"""The deployment pieces: gunicorn.conf.py, `flask check-deploy`, /healthz,
ProxyFix, the NUL-character guard, and the systemd unit in deploy/ (nginx's
file has tests/test_nginx.py).

Everything real, all on 127.0.0.1: gunicorn started the way the systemd unit
starts it (``gunicorn -c gunicorn.conf.py blog:app``, from the project's
folder), `flask` commands in subprocesses, an aiosmtpd server for the mail.
The in-process tests build the app with conftest's fixtures and, where the
log file or the error mail matters, call `init_logger` and `init_email`
themselves, as `create_app` does in production.

Nothing here measures time: a `timeout` only bounds a test that is already
failing (tests/servers.py's `wait_until`).
"""

import http.client
import re
import secrets
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from app import create_app
from app.extensions import db
from app.logger import init_email, init_logger
from app.mail import outbox
from app.models import Post, User
from app.security import security_headers
from config import database_url as sqlalchemy_url
from tests.databases import fresh_database, upgrade_database
from tests.helpers import PASSWORD, add_user, config_for
from tests.servers import (
    BIN,
    GOOD_SETTINGS,
    ROOT,
    Gunicorn,
    deploy_env,
    env_settings,
    flask_command,
    free_port,
    http_get,
    problems_listed,
    smtp_server,
    wait_until,
    warnings_listed,
)

ADMIN = "admin@example.com"
# One line of gunicorn.conf.py's access log: the usual combined format, the
# time taken, and the request id at the very end.
ACCESS_LINE = re.compile(
    r'^127\.0\.0\.1 - - \[[^\]]+\] "(?P<request>[^"]*)" (?P<status>\d{3}) (?:\d+|-) '
    r'"(?P<referer>[^"]*)" "(?:[^"\\]|\\.)*" \d+ms request_id=(?P<request_id>\S+)$'
)  # (gunicorn writes a quote inside the User-Agent as \")

# init_logger and init_email change process-global state: conftest restores it.
pytestmark = pytest.mark.usefixtures("restore_logging")


# --- Fixtures and helpers -----------------------------------------------------


def without_flask_config(env: dict[str, str]) -> dict[str, str]:
    """`env` without FLASK_CONFIG, to see what gunicorn.conf.py chooses by itself.

    Absent, not blank: gunicorn.conf.py sets it only if it is absent.
    """
    return {key: value for key, value in env.items() if key != "FLASK_CONFIG"}


def answers(base_url: str) -> bool:
    """True once a server answers at `base_url` (any HTTP status will do)."""
    try:
        urllib.request.urlopen(base_url + "/healthz", timeout=2).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


@dataclass
class ConfiguredGunicorn(Gunicorn):
    """gunicorn started with gunicorn.conf.py; `output` is its stdout (the access
    log, as the config sends it there), `errors` its stderr (gunicorn's own log)."""

    errors: Path

    def error_log(self) -> str:
        return self.errors.read_text()


def gunicorn_command(*options: str, app: str = "blog:app") -> list:
    # --no-control-socket: gunicorn's control socket has one default path,
    # which several servers started by the test suite at once would share.
    return [BIN / "gunicorn", "-c", "gunicorn.conf.py", "--no-control-socket", *options, app]


@contextmanager
def gunicorn_with_config(
    env: dict[str, str], tmp_path: Path, *options: str, app: str = "blog:app"
) -> Iterator[ConfiguredGunicorn]:
    """Run gunicorn as the systemd unit does, from the project's folder, until the block ends.

    Unlike servers.run_gunicorn, no --bind or --workers on the command line:
    they would win over gunicorn.conf.py, whose GUNICORN_BIND and
    WEB_CONCURRENCY are what is being tested.
    """
    port = free_port()
    env = {**env, "GUNICORN_BIND": f"127.0.0.1:{port}"}
    stdout, stderr = tmp_path / f"gunicorn-{port}.out", tmp_path / f"gunicorn-{port}.err"
    with open(stdout, "w") as out, open(stderr, "w") as err:
        process = subprocess.Popen(
            gunicorn_command(*options, app=app), cwd=ROOT, env=env, stdout=out, stderr=err
        )
    server = ConfiguredGunicorn(f"http://127.0.0.1:{port}", process, stdout, stderr)

    def started() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{server.error_log()}")
        return answers(server.url)

    try:
        wait_until(started, timeout=30, message="gunicorn to answer")
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def closed_port_database_url() -> str:
    """A PostgreSQL URL where nothing listens: the database server is down.

    PostgreSQL on both backends' runs (psycopg is always installed): a refused
    connection fails at once, where SQLite would simply create a new file.
    """
    return f"postgresql://postgres@127.0.0.1:{free_port()}/blog"


# --- 1. gunicorn.conf.py ------------------------------------------------------


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
@pytest.mark.system
def test_gunicorn_conf_defaults_to_production_and_refuses_the_dev_secret_key(tmp_path, preload):
    """Without FLASK_CONFIG, gunicorn.conf.py picks production, which refuses to
    run without a SECRET_KEY: a clear message and exit status 3, no restart loop.

    The development config would have started with its built-in key: the
    refusal is how we see which config gunicorn.conf.py chose. Without
    --preload a worker exits with 3 and the master stops ("Worker failed to
    boot"); with --preload the master itself loads the app and exits with 3.
    """
    # One worker: when several fail to boot at once, gunicorn 27's master can
    # meet a second failure while halting for the first, and crash with a
    # traceback and exit status 1 instead of 3 (a race in gunicorn, not the app).
    env = deploy_env(
        tmp_path, f"sqlite:///{tmp_path / 'unused.sqlite'}", SECRET_KEY="", WEB_CONCURRENCY=1
    )
    port = free_port()
    env = without_flask_config(env) | {"GUNICORN_BIND": f"127.0.0.1:{port}"}
    options = ["--preload"] if preload else []
    errors = tmp_path / "gunicorn.err"
    with open(errors, "w") as err:
        process = subprocess.Popen(
            gunicorn_command(*options), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        # Were the default development, gunicorn would start and serve: stop
        # waiting as soon as it answers, rather than at the timeout.
        wait_until(
            lambda: process.poll() is not None or answers(f"http://127.0.0.1:{port}"),
            timeout=60,
            message="gunicorn to exit",
        )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = errors.read_text()
    assert process.returncode == 3, stderr
    assert "Configuration error: SECRET_KEY is not set" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
@pytest.mark.system
def test_gunicorn_conf_serves_and_logs_as_documented(tmp_path, migrated_database_url, preload):
    """`gunicorn -c gunicorn.conf.py blog:app`, bound and sized from the environment.

    - GUNICORN_BIND and WEB_CONCURRENCY decide the address and the number of workers;
    - each access-log line (stdout) ends with the request id of the X-Request-ID
      header, the reference the app also logs and shows on its 500 page;
    - gunicorn's own messages reach the app's log file (LOG_EXTRA_LOGGERS'
      default includes gunicorn.error under gunicorn);
    - the token of a password-reset or email-change link in the path (or the
      Referer) is blanked out of the access log, and is written nowhere else either.
    """
    env = without_flask_config(deploy_env(tmp_path, migrated_database_url, WEB_CONCURRENCY=2))
    token = f"SOMETOKEN{secrets.token_hex(8)}"
    options = ["--preload"] if preload else []
    with gunicorn_with_config(env, tmp_path, *options) as server:
        status, headers, page = http_get(server.url + "/explore")
        assert status == 200
        assert "<title>" in page
        explore_id = headers["X-Request-ID"]

        status, headers, _ = http_get(
            server.url + f"/auth/reset_password/{token}",
            headers={"Referer": f"https://mail.example.com/auth/reset_password/{token}"},
        )
        assert status == 302  # the view moves the token into the session
        reset_id = headers["X-Request-ID"]
        status, headers, _ = http_get(
            server.url + f"/auth/confirm_email/{token}",
            headers={"Referer": f"https://mail.example.com/auth/confirm_email/{token}"},
        )
        assert status == 302  # likewise
        confirm_id = headers["X-Request-ID"]
        # A User-Agent that would start a line of its own where U+0085 breaks lines.
        forged = b'curl\x85127.0.0.1 - - "GET /forged HTTP/1.1" 200\x9b2K'
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nUser-Agent: "
        assert raw_request(server.url, request + forged + b"\r\n\r\n") == 200
        # A line is written once the response has been sent: wait for it.
        for text in (f"request_id={reset_id}", f"request_id={confirm_id}", "GET /forged"):
            wait_until(lambda text=text: text in server.log(), message="the access log")

        assert server.stop() == 0  # SIGTERM, as systemd stops it

    access = {}
    for line in server.log().splitlines():
        match = ACCESS_LINE.match(line)
        assert match, f"not an access-log line: {line!r}"
        access[match["request_id"]] = match
    assert access[explore_id]["request"] == "GET /explore HTTP/1.1"
    assert access[explore_id]["status"] == "200"
    assert access[reset_id]["request"] == "GET /auth/reset_password/[redacted] HTTP/1.1"
    assert access[reset_id]["referer"] == "https://mail.example.com/auth/reset_password/[redacted]"
    assert access[confirm_id]["request"] == "GET /auth/confirm_email/[redacted] HTTP/1.1"
    assert access[confirm_id]["referer"] == "https://mail.example.com/auth/confirm_email/[redacted]"
    [healthz] = [line for line in server.log().splitlines() if "GET /forged" in line]
    assert '"curl\\x85127.0.0.1 - - \\"GET /forged HTTP/1.1\\" 200\\x9b2K"' in healthz

    errors = server.error_log()
    assert errors.count("Booting worker with pid") == 2  # WEB_CONCURRENCY
    assert f"Listening at: {server.url}" in errors  # GUNICORN_BIND
    log = (tmp_path / "logs" / "blog.log").read_text()
    # "Booting worker" is logged before a worker has loaded the app (and its log
    # handler); "Worker exiting", on the way out, comes after.
    assert "Worker exiting (pid:" in log
    if preload:
        # With --preload the master has loaded the app too, so even its own
        # messages reach the file.
        assert "Handling signal: term" in log
    for text in (server.log(), errors, log):
        assert token not in text


def raw_request(base_url: str, data: bytes) -> int | None:
    """Send `data` exactly as given, on a connection of its own: the status of
    the answer, or None if the server closed the connection without one."""
    address = urllib.parse.urlsplit(base_url)
    with socket.create_connection((address.hostname, address.port), timeout=30) as connection:
        connection.sendall(data)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
    return int(status[1]) if status else None


@pytest.mark.system
def test_a_malformed_chunked_body_is_the_clients_mistake_not_a_500(tmp_path, migrated_database_url):
    """A body sent with Transfer-Encoding: chunked whose chunk size isn't a number.

    Behind nginx this never reaches gunicorn (nginx reads the whole body, and
    refuses a broken one itself); exposed directly, with GUNICORN_BIND=0.0.0.0
    as gunicorn.conf.py offers, it does. gunicorn only finds the mistake when
    the app reads the body, and raises from inside the app's request. A
    client's mistake is a 400, and no reason to log an ERROR or mail the
    admins: anyone could fill their inbox.
    """
    env = without_flask_config(deploy_env(tmp_path, migrated_database_url, WEB_CONCURRENCY=1))
    with gunicorn_with_config(env, tmp_path) as server:
        status = raw_request(
            server.url,
            b"POST /auth/login HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n"
            b"\r\n"
            b"zz\r\nusername=a\r\n0\r\n\r\n",  # "zz": not a hexadecimal chunk size
        )
        assert server.stop() == 0

    assert " ERROR: " not in (tmp_path / "logs" / "blog.log").read_text()
    assert status == 400


# --- 2. A worker stuck past the timeout ------------------------------------------


@dataclass
class TimeoutRun:
    """What one request that outlived gunicorn's worker timeout left behind."""

    status: int | None  # gunicorn's 500, or None: the connection closed without an answer
    access_log: str  # gunicorn's stdout
    error_log: str  # gunicorn's stderr
    log: str  # the app's blog.log
    mails: list


@pytest.fixture(scope="module")
def timeout_run(tmp_path_factory) -> TimeoutRun:
    """gunicorn.conf.py with GUNICORN_TIMEOUT=2, one worker, no --preload, error
    mail to ADMIN; one request to a view that sleeps for 10 seconds.

    Run once for the tests below, which each read a different part of it.
    """
    tmp_path = tmp_path_factory.mktemp("timeout")
    with fresh_database(tmp_path) as url, smtp_server("plain", tmp_path) as smtp:
        upgrade_database(url)
        env = deploy_env(
            tmp_path,
            url,
            ADMINS=ADMIN,
            GUNICORN_TIMEOUT=2,
            WEB_CONCURRENCY=1,
            **env_settings(smtp.settings),
        )
        with gunicorn_with_config(
            without_flask_config(env), tmp_path, app="tests.gunicorn_app:app"
        ) as server:
            try:
                status = http_get(server.url + "/_test/sleep/10")[0]
            except (OSError, http.client.HTTPException):  # RemoteDisconnected is both
                status = None
            log_file = tmp_path / "logs" / "blog.log"
            wait_until(lambda: "timed out, stuck here" in log_file.read_text(), message="the log")
            wait_until(
                lambda: any("timed out, stuck" in m["Subject"] for m in smtp.mailbox.messages),
                message="the error mail",
            )
            # The master starts a new worker: the site is back by itself.
            wait_until(lambda: http_get(server.url + "/healthz")[0] == 200, message="a new worker")
            assert server.stop() == 0
    return TimeoutRun(
        status, server.log(), server.error_log(), log_file.read_text(), smtp.mailbox.messages
    )


@pytest.mark.system
def test_a_worker_stuck_past_the_timeout_says_where_in_the_log_and_by_mail(timeout_run):
    """gunicorn's master kills the stuck worker with SIGABRT; the client gets
    no page of ours (gunicorn's bare 500, or today a closed connection: see
    the test below). Before it dies, the worker runs gunicorn.conf.py's
    worker_abort hook, which logs the stack it was stuck in through the app's
    logger: into blog.log, and into an error mail.

    The master's own "WORKER TIMEOUT" line says only which pid, and without
    --preload reaches stderr alone: the master has no app, so none of the
    app's handlers. That is why the hook exists.
    """
    assert timeout_run.status in (None, 500)
    assert "WORKER TIMEOUT" in timeout_run.error_log
    assert "WORKER TIMEOUT" not in timeout_run.log

    log = timeout_run.log
    assert re.search(r"ERROR: Worker \d+ timed out, stuck here", log)
    entry = log[log.index("timed out, stuck here") :]
    # The stack names the view that was stuck, and the request is on the line.
    assert "in sleep_for" in entry
    assert "time.sleep(seconds)" in entry
    assert "GET /_test/sleep/10 from 127.0.0.1" in entry

    [message] = [m for m in timeout_run.mails if "timed out, stuck here" in m["Subject"]]
    assert message["To"] == ADMIN
    text = message.get_body(("plain",)).get_content()
    assert "in sleep_for" in text
    assert "/_test/sleep/10" in text


@pytest.mark.system
def test_a_request_that_ends_in_gunicorns_error_path_is_still_in_the_access_log(timeout_run):
    """When a request ends in gunicorn's own error handling (here: its worker
    timed out), gunicorn answers 500 and writes an access-log line for it,
    built from a smaller environ than usual: without PATH_INFO, so the "U"
    atom is None. The access-log class must cope with that, or the logging
    itself raises: then the line is lost, the client's connection is simply
    closed, and the admins get an extra error mail about a TypeError in
    gunicorn.conf.py besides the one about the slow view.
    """
    assert "TypeError" not in timeout_run.error_log
    assert not [m for m in timeout_run.mails if "TypeError" in m["Subject"]]
    assert timeout_run.status == 500
    assert '"GET /_test/sleep/10 HTTP/1.1" 500' in timeout_run.access_log


# --- 3. flask check-deploy ------------------------------------------------------


@pytest.mark.system
def test_check_deploy_lists_every_problem_of_a_minimal_configuration(
    tmp_path, migrated_database_url
):
    """Only a (short) SECRET_KEY and a DATABASE_URL: the app starts, but
    check-deploy lists each thing that is unsafe or missing, and fails.

    SESSION_COOKIE_SECURE off is no problem yet: nothing says the site is on
    HTTPS (tests/test_commands.py has both sides of it)."""
    env = deploy_env(tmp_path, migrated_database_url, SECRET_KEY="short-but-not-the-dev-key")
    result = flask_command(env, "check-deploy")

    assert result.returncode != 0
    assert problems_listed(result) == [
        "SECRET_KEY is the development default or shorter than 32 characters.",
        "ADMINS or MAIL_SERVER is not set: nobody is told about errors.",
    ]
    assert warnings_listed(result) == [
        "SESSION_COOKIE_SECURE is off: right while the site is served over plain HTTP (with "
        "it on, browsers would never send the session cookie back, and every form would fail "
        "as expired), and cookies are Secure anyway on requests the app sees as HTTPS (behind "
        "a proxy, that needs PROXY_COUNT). Once the site is on HTTPS, set "
        "SESSION_COOKIE_SECURE=1 and BASE_URL=https://... in .env, and restart the app."
    ]
    assert "2 problem(s) found." in result.stderr


@pytest.mark.system
def test_check_deploy_passes_a_good_configuration(tmp_path, migrated_database_url):
    """A long key, Secure cookies, someone told about errors, BASE_URL, an
    up-to-date schema and a writable log folder: nothing to report, exit 0."""
    env = deploy_env(tmp_path, migrated_database_url, **GOOD_SETTINGS)
    result = flask_command(env, "check-deploy")

    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "No problems found."


@pytest.mark.system
def test_check_deploy_warns_of_rate_limits_counted_by_each_worker(tmp_path, migrated_database_url):
    env = deploy_env(tmp_path, migrated_database_url, **GOOD_SETTINGS)
    env |= {"REDIS_URL": "", "RATELIMIT_STORAGE_URI": "memory://", "WEB_CONCURRENCY": "4"}
    result = flask_command(env, "check-deploy")

    # A warning, not a problem: one host with memory:// works, only looser.
    assert result.returncode == 0, result.stdout + result.stderr
    assert warnings_listed(result) == [
        "Rate limits are counted in memory by each of 4 workers: a client gets up to that "
        "many times each limit. Unset RATELIMIT_STORAGE_URI (memory://) to count them in "
        "one place."
    ]
    assert result.stdout.splitlines()[-1] == "No problems found."

    env["WEB_CONCURRENCY"] = "1"  # one worker: memory is one place
    assert warnings_listed(flask_command(env, "check-deploy")) == []

    # The default without REDIS_URL: the workers share a SQLite file in LOG_DIR.
    env |= {"RATELIMIT_STORAGE_URI": "", "WEB_CONCURRENCY": "4"}
    assert warnings_listed(flask_command(env, "check-deploy")) == []


@pytest.mark.system
def test_check_deploy_warns_of_a_redis_that_does_not_answer(tmp_path, migrated_database_url):
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = deploy_env(tmp_path, migrated_database_url, **{**GOOD_SETTINGS, "REDIS_URL": url})
    result = flask_command(env, "check-deploy")

    assert result.returncode == 0, result.stdout + result.stderr
    [warning] = warnings_listed(result)
    assert warning.startswith("REDIS_URL doesn't answer (Error 111 connecting to 127.0.0.1:")
    assert warning.endswith(
        "storm control and rate limits fall back to each process's memory until it does."
    )


@pytest.mark.parametrize(
    ("settings", "warning"),
    [
        (
            {"MAIL_USE_SSL": "1", "MAIL_PORT": "25"},
            "MAIL_USE_SSL is on with MAIL_PORT=25, a port for plain SMTP or STARTTLS: "
            "implicit TLS is usually on 465 (or use MAIL_USE_TLS with 587).",
        ),
        (
            {"MAIL_USE_SSL": "1", "MAIL_PORT": "587"},
            "MAIL_USE_SSL is on with MAIL_PORT=587, a port for plain SMTP or STARTTLS: "
            "implicit TLS is usually on 465 (or use MAIL_USE_TLS with 587).",
        ),
        (
            {"MAIL_USE_TLS": "1", "MAIL_PORT": "465"},
            "MAIL_USE_TLS (STARTTLS) is on with MAIL_PORT=465, the port for implicit TLS: "
            "use MAIL_USE_SSL with 465, or STARTTLS with 587.",
        ),
        ({"MAIL_USE_SSL": "1", "MAIL_PORT": "465"}, None),
        ({"MAIL_USE_TLS": "1", "MAIL_PORT": "587"}, None),
        ({"MAIL_USE_TLS": "1", "MAIL_PORT": "2525"}, None),
    ],
    ids=["SSL on 25", "SSL on 587", "STARTTLS on 465", "SSL on 465", "STARTTLS on 587", "2525"],
)
@pytest.mark.system
def test_check_deploy_and_the_log_warn_of_a_mail_port_for_the_other_tls_mode(
    tmp_path, migrated_database_url, settings, warning
):
    env = deploy_env(tmp_path, migrated_database_url, **{**GOOD_SETTINGS, **settings})
    result = flask_command(env, "check-deploy")

    assert result.returncode == 0, result.stdout + result.stderr
    assert warnings_listed(result) == ([warning] if warning else [])
    # Said at startup too, in the log, where an admin looks when no mail comes.
    log = (tmp_path / "logs" / "blog.log").read_text()
    if warning:
        assert f"WARNING: {warning} [in " in log
    else:
        assert "WARNING" not in log


@pytest.mark.system
def test_check_deploy_lists_pending_migrations(tmp_path, fresh_database_url):
    """A new, empty database: the schema was never built (`flask db upgrade`)."""
    env = deploy_env(tmp_path, fresh_database_url, **GOOD_SETTINGS)
    result = flask_command(env, "check-deploy")

    assert result.returncode != 0
    assert problems_listed(result) == [
        "The database schema is not up to date: run `flask db upgrade`."
    ]


@pytest.mark.system
def test_check_deploy_lists_a_log_directory_it_cannot_write(tmp_path, migrated_database_url):
    """LOG_DIR below a regular file: no directory can ever be made there.

    Why not a directory without write permission (chmod 500)? The tests may
    run as root, and root writes anywhere regardless of permission bits; a
    path through a regular file fails for everyone. (That is also why the
    check really tries to write, rather than reading the permissions.)
    """
    not_a_directory = tmp_path / "a-regular-file"
    not_a_directory.write_text("")
    log_dir = not_a_directory / "logs"
    env = deploy_env(tmp_path, migrated_database_url, **GOOD_SETTINGS, LOG_DIR=log_dir)
    result = flask_command(env, "check-deploy")

    assert result.returncode != 0
    assert problems_listed(result) == [f"The log directory {log_dir} is not writable."]
    # The app itself still started, logging to stderr instead (app/logger.py).
    assert f"Cannot open the log file {log_dir / 'blog.log'}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("flask_config", ["development", None], ids=["development", "unset"])
@pytest.mark.system
def test_check_deploy_lists_a_configuration_that_is_not_production(
    tmp_path, migrated_database_url, flask_config
):
    """FLASK_CONFIG=development, or unset (the `flask` command's default is
    development, unlike gunicorn.conf.py's): said first, since every other
    check assumes the production config."""
    env = deploy_env(tmp_path, migrated_database_url, **GOOD_SETTINGS)
    if flask_config is None:
        env = without_flask_config(env)
    else:
        env["FLASK_CONFIG"] = flask_config
    result = flask_command(env, "check-deploy")

    assert result.returncode != 0
    problems = problems_listed(result)
    assert problems[0] == "FLASK_CONFIG is not 'production': the checks below assume it is."


@pytest.mark.system
def test_check_deploy_says_when_the_database_cannot_be_reached(tmp_path):
    """The database server is down: one line that says so, not a traceback."""
    url = closed_port_database_url()
    env = deploy_env(tmp_path, url, **GOOD_SETTINGS, DATABASE_CONNECT_TIMEOUT=1)
    result = flask_command(env, "check-deploy")

    assert result.returncode != 0
    [problem] = problems_listed(result)
    assert problem.startswith("The database can't be reached: ")
    assert "Connection refused" in problem
    assert "Traceback" not in result.stdout + result.stderr


# --- 4. /healthz ------------------------------------------------------------------


def test_healthz_answers_ok_when_the_database_does(client):
    """A load balancer's question, "can you serve?", answered with JSON."""
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.is_json
    assert response.json["status"] == "ok"


def test_healthz_is_never_rate_limited_and_has_the_security_headers(make_app):
    """A monitor polls /healthz all day from one address: it must never get a 429.

    The login limit is set to 1 a minute, and shown to work at the end, so
    the 100 answers prove /healthz is outside the limits, not that limiting
    was off.
    """
    app = make_app(AUTH_RATE_LIMIT_PER_CLIENT="1 per minute")
    client = app.test_client()
    expected_headers = security_headers(use_gravatar=False)

    for _ in range(100):
        response = client.get("/healthz")
        assert response.status_code == 200
        for name, value in expected_headers.items():
            assert response.headers[name] == value

    wrong = {"username": "nobody", "password": "a-wrong-guess"}
    assert client.post("/auth/login", data=wrong).status_code == 200  # one failure: allowed
    assert client.post("/auth/login", data=wrong).status_code == 429  # the second: limited


@pytest.mark.system
def test_healthz_reports_a_database_outage_as_503_a_warning_and_no_mail(tmp_path):
    """The database server is down: /healthz says 503 (with Retry-After, as the
    error pages do) so the load balancer stops sending traffic.

    Logged as a WARNING, never an ERROR: monitors poll every few seconds, and
    an error mail per poll would bury the one mail about the outage that the
    failing pages send. A working mail setup is shown at the end, so "no
    mail" means none was sent, not that none could be.
    """
    with smtp_server("plain", tmp_path) as smtp:
        log_dir = tmp_path / "logs"
        config = config_for(
            # As config.py reads DATABASE_URL: postgresql:// means psycopg 3.
            sqlalchemy_url(closed_port_database_url()),
            DATABASE_CONNECT_TIMEOUT=1,
            LOG_DIR=str(log_dir),
            ADMINS=[ADMIN],
            **smtp.settings,
        )
        app = create_app(config)
        init_logger(app)
        assert init_email(app) is not None
        client = app.test_client()

        for _ in range(2):  # two polls: two warnings, still no mail
            response = client.get("/healthz")
            assert response.status_code == 503
            assert response.json == {"status": "unavailable", "database": "unreachable"}
            assert response.headers["Retry-After"] == "30"
            assert response.headers["X-Content-Type-Options"] == "nosniff"

        outbox.drain()
        assert smtp.mailbox.messages == []
        log = (log_dir / "blog.log").read_text()
        assert log.count(" WARNING: Health check: ") == 2
        assert " ERROR: " not in log
        assert " CRITICAL: " not in log

        app.logger.error("A real error, to show that error mail works here")
        [message] = smtp.mailbox.wait_for(1)
        assert "A real error" in message["Subject"]
        with app.app_context():
            db.engine.dispose()


# --- 5. ProxyFix: whom to believe about the client's address and scheme -----------------

# What nginx in front sends: the scheme and host the browser used, and in
# X-Forwarded-For whatever the client sent itself (here a made-up address)
# followed by the address nginx saw, which is the only one it vouches for.
FORWARDED = {
    "X-Forwarded-For": "198.51.100.66, 203.0.113.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "blog.example.com",
}


@pytest.mark.parametrize(
    ("proxy_count", "client_address", "secure"),
    [(0, "127.0.0.1", False), (1, "203.0.113.9", True)],
    ids=["no-proxy", "one-proxy"],
)
def test_forwarded_headers_are_believed_only_from_the_proxies_we_have(
    make_app, tmp_path, proxy_count, client_address, secure
):
    """PROXY_COUNT=0 (no proxy): X-Forwarded-* come from the client and are
    ignored, or anyone could log in as 203.0.113.9 and dodge the rate limits.
    PROXY_COUNT=1: the one proxy's headers are believed, only its own entry of
    X-Forwarded-For (the last), never the one the client wrote before it.

    The address is checked where an admin sees it, the log line's "from ...";
    the scheme through the Secure attribute the app puts on cookies over HTTPS.
    """
    log_dir = tmp_path / "logs"
    app = make_app(PROXY_COUNT=proxy_count, LOG_DIR=str(log_dir))

    def where():
        app.logger.warning("where is the client?")
        return "logged"

    app.add_url_rule("/_test/where", view_func=where)
    init_logger(app)
    client = app.test_client()  # connects from 127.0.0.1, like nginx on the same machine

    assert client.get("/_test/where", headers=FORWARDED).status_code == 200
    [line] = [line for line in (log_dir / "blog.log").read_text().splitlines() if "where" in line]
    assert f"GET /_test/where from {client_address} user" in line

    # Any response that sets the session cookie: here, opening a reset link.
    response = client.get("/auth/reset_password/some-token", headers=FORWARDED)
    [cookie] = response.headers.getlist("Set-Cookie")
    assert cookie.startswith("session=")
    assert ("; Secure" in cookie) == secure


@pytest.mark.parametrize(
    ("proxy_count", "link_start"),
    [
        (0, "http://localhost/auth/reset_password/"),
        (1, "https://blog.example.com/auth/reset_password/"),
    ],
    ids=["no-proxy", "one-proxy"],
)
@pytest.mark.system
def test_reset_mail_link_follows_the_proxy_scheme_and_host(
    make_app, tmp_path, proxy_count, link_start
):
    """Without BASE_URL, the link in a reset mail is built from the request
    (its host checked against TRUSTED_HOSTS): behind an HTTPS proxy
    (PROXY_COUNT=1) it must be https on the public host, not http on whatever
    gunicorn was asked for. With PROXY_COUNT=0 the same headers change nothing."""
    with smtp_server("plain", tmp_path) as smtp:
        app = make_app(
            PROXY_COUNT=proxy_count,
            BASE_URL=None,
            TRUSTED_HOSTS=["localhost", "blog.example.com"],
            MAIL_DEFAULT_SENDER="blog@example.com",
            **smtp.settings,
        )
        with app.app_context():
            add_user("alice")
        response = app.test_client().post(
            "/auth/reset_password_request", data={"email": "alice@example.com"}, headers=FORWARDED
        )
        assert response.status_code == 302
        [message] = smtp.mailbox.wait_for(1)
        outbox.drain()
    text = message.get_body(("plain",)).get_content()
    assert re.search(re.escape(link_start) + r"\S+", text), text


# --- 6. NUL characters ------------------------------------------------------------


def bad_request_for_nul(response) -> bool:
    """The site's 400 page, saying what was wrong: not a bare 400, not a 500."""
    return (
        response.status_code == 400
        and "<h1>Bad request</h1>" in response.text
        and "(NUL)" in response.text
    )


@pytest.mark.parametrize(
    "url",
    ["/user/a%00b", "/explore?page=1%00", "/explore?q=a&q=%00", "/explore?a%00=1"],
    ids=["path", "query-value", "repeated-query-value", "query-name"],
)
def test_a_nul_in_the_url_is_a_400(client, url):
    """PostgreSQL can't store or even compare U+0000 in text: a NUL that reached
    a query would be a 500 there (SQLite accepts it, which hides the bug).
    So the app refuses it in any part of the URL before any view runs."""
    assert bad_request_for_nul(client.get(url))


def with_nul(value: str) -> str:
    return value[:1] + "\x00" + value[1:]


# Every field of every form, each with valid values except for the one NUL.
REGISTRATION = {
    "username": "nulcheck",
    "email": "nulcheck@example.com",
    "password": PASSWORD,
    "password2": PASSWORD,
}
FORMS = {
    "login": ("/auth/login", {"username": "admin", "password": PASSWORD}, False),
    "register": ("/auth/register", REGISTRATION, False),
    "post": ("/index", {"post": "a post that must not be saved"}, True),
    "edit-profile": ("/edit_profile", {"username": "admin", "about_me": "changed"}, True),
}
FORM_FIELDS = [(form, field) for form, (_, fields, _) in FORMS.items() for field in fields]


def saved_rows() -> tuple:
    """What the database holds that a form could change."""
    users = db.session.execute(
        select(User.username, User.email, User.about_me, User.password_hash).order_by(User.id)
    ).all()
    return users, db.session.scalar(select(func.count()).select_from(Post))


@pytest.mark.parametrize(("form", "field"), FORM_FIELDS, ids=[f"{f}-{n}" for f, n in FORM_FIELDS])
def test_a_nul_in_any_form_field_is_a_400_and_nothing_is_saved(
    app, client, auth, users, form, field
):
    """A NUL in one field of an otherwise valid form: the 400 page, and the
    database unchanged (nobody registered, no post, no profile change, and
    for the login form, nobody logged in)."""
    url, fields, needs_login = FORMS[form]
    if needs_login:
        assert auth.login().status_code == 302
    with app.app_context():
        before = saved_rows()

    response = client.post(url, data={**fields, field: with_nul(fields[field])})

    assert bad_request_for_nul(response)
    with app.app_context():
        assert saved_rows() == before
    if not needs_login:
        # Not logged in: the profile page sends us to the login form.
        assert client.get("/edit_profile").status_code == 302


# --- 7. The systemd unit -----------------------------------------------------------------


@pytest.mark.system
def test_systemd_unit_is_valid(tmp_path):
    """`systemd-analyze verify` on deploy/blog.service, moved into tmp_path.

    It checks that every command the unit runs exists and is executable, so
    /srv/blog becomes a folder in tmp_path whose .venv/bin holds the commands
    of the environment running these tests. It exits 0 on unknown keys and
    bad values, only printing a warning that names the file: so any line
    about our unit is a failure.
    """
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    unit = (ROOT / "deploy" / "blog.service").read_text()
    project = tmp_path / "srv" / "blog"
    (project / ".venv" / "bin").mkdir(parents=True)
    commands = set(re.findall(r"/srv/blog/\.venv/bin/(\S+)", unit))
    assert commands == {"flask", "gunicorn"}
    for command in commands:
        (project / ".venv" / "bin" / command).symlink_to(BIN / command)
    (tmp_path / "blog.service").write_text(unit.replace("/srv/blog", str(project)))

    done = subprocess.run(
        [analyze, "verify", str(tmp_path / "blog.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "blog.service" not in output, output


# --- 8. flask check-deploy and a rate-limit store that can't be used -------------------

COUNTED_IN_MEMORY = (
    "each worker counts them in its own memory instead, so a client gets each limit once "
    "per worker."
)
FIX_THE_FILE = (
    "Make its folder writable (LOG_DIR, by default), or set RATELIMIT_STORAGE_URI to a "
    "file that can be written (or to Redis)."
)


def check_deploy_without_redis(tmp_path: Path, database_url: str, **settings) -> list[str]:
    """Run `flask check-deploy` with GOOD_SETTINGS but no REDIS_URL; return its
    warnings, after checking that it found no problem."""
    env = deploy_env(tmp_path, database_url, **{**GOOD_SETTINGS, "REDIS_URL": "", **settings})
    result = flask_command(env, "check-deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "No problems found."
    return warnings_listed(result)


@pytest.mark.system
def test_check_deploy_lists_a_log_dir_it_cannot_write_even_with_the_log_on_stdout(
    tmp_path, migrated_database_url
):
    """LOG_TO_STDOUT, so the log doesn't go to LOG_DIR: but without REDIS_URL
    storm control's store is there (a problem) and so is the rate limits'
    default file, which every worker would count on its own (a warning).

    LOG_DIR below a regular file, not a chmod: the tests may run as root.
    """
    log_dir = tmp_path / "a-regular-file" / "logs"
    log_dir.parent.write_text("")
    env = deploy_env(
        tmp_path,
        migrated_database_url,
        **{**GOOD_SETTINGS, "REDIS_URL": ""},
        LOG_TO_STDOUT="1",
        LOG_DIR=log_dir,
    )
    result = flask_command(env, "check-deploy")

    assert result.returncode != 0
    assert problems_listed(result) == [
        f"The log directory {log_dir} is not writable. The log goes to stdout "
        "(LOG_TO_STDOUT), but without REDIS_URL storm control keeps its store there "
        "(errors.sqlite3): each worker would count errors in its own memory, and "
        "`flask errors` would list none of them."
    ]
    assert warnings_listed(result) == [
        f"Rate limits can't be counted in the file {log_dir / 'rate-limits.sqlite3'}: "
        f"{COUNTED_IN_MEMORY} {FIX_THE_FILE}"
    ]
    # With REDIS_URL, nothing the app needs is in LOG_DIR any more.
    result = flask_command(env | {"REDIS_URL": GOOD_SETTINGS["REDIS_URL"]}, "check-deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (problems_listed(result), warnings_listed(result)) == ([], [])


@pytest.mark.parametrize("kind", ["missing folder", "not a database"])
@pytest.mark.system
def test_check_deploy_warns_of_a_rate_limit_file_that_cannot_be_used(
    tmp_path, migrated_database_url, kind
):
    notes = "These are notes, not a database.\n" * 100
    if kind == "missing folder":
        path = tmp_path / "no-such-folder" / "rate-limits.sqlite3"
    else:
        path = tmp_path / "rate-limits.sqlite3"
        path.write_text(notes)
    warnings = check_deploy_without_redis(
        tmp_path, migrated_database_url, RATELIMIT_STORAGE_URI=f"sqlite:///{path}"
    )
    assert warnings == [
        f"Rate limits can't be counted in the file {path}: {COUNTED_IN_MEMORY} {FIX_THE_FILE}"
    ]
    # The check made nothing and spoilt nothing.
    if kind == "missing folder":
        assert not path.parent.exists()
    else:
        assert path.read_text() == notes


@pytest.mark.system
def test_check_deploy_warns_of_a_rate_limit_redis_that_does_not_answer(
    tmp_path, migrated_database_url
):
    """Another Redis than REDIS_URL's (here, none): its URL may hold a password,
    so the warning names the setting, not the URL."""
    uri = f"redis://:a-redis-password@127.0.0.1:{free_port()}/1"
    warnings = check_deploy_without_redis(
        tmp_path, migrated_database_url, RATELIMIT_STORAGE_URI=uri
    )
    assert warnings == [
        f"Rate limits can't be counted in RATELIMIT_STORAGE_URI: {COUNTED_IN_MEMORY} "
        "Check that its server answers, or unset RATELIMIT_STORAGE_URI."
    ]


@pytest.mark.system
def test_check_deploy_says_nothing_of_a_rate_limit_file_that_works(tmp_path, migrated_database_url):
    """LOG_TO_STDOUT with a LOG_DIR that exists, and a file of one's choosing."""
    (tmp_path / "logs").mkdir()
    assert check_deploy_without_redis(tmp_path, migrated_database_url, LOG_TO_STDOUT="1") == []
    path = tmp_path / "limits" / "rate-limits.sqlite3"
    path.parent.mkdir()
    uri = f"sqlite:///{path}"
    assert (
        check_deploy_without_redis(tmp_path, migrated_database_url, RATELIMIT_STORAGE_URI=uri) == []
    )

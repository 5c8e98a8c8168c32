"""Production logging: the log file, its line format, the request id, redaction,
what happens when the file can't be written, and rotation under real gunicorn.

The in-process tests build an app with `make_app` and call `init_logger`
themselves, as `create_app` does in production (it skips it when testing).
The gunicorn tests run the real production app (tests/gunicorn_app.py) with
several worker processes writing one log file.
"""

import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask, request

from app.logger import extra_loggers, init_logger
from tests.helpers import PASSWORD
from tests.servers import ROOT, Gunicorn, clean_env, production_env, run_gunicorn, wait_until

# One log line: the Mega-Tutorial's "%(asctime)s %(levelname)s: %(message)s [in path:line]",
# then the request: its id, and inside a request who asked for what.
LINE = re.compile(
    r"(?P<asctime>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<level>[A-Z]+): (?P<message>.*) "
    r"\[in (?P<path>/\S+\.py):(?P<lineno>\d+)\] "
    r"\[request (?P<request_id>-|[A-Za-z0-9][A-Za-z0-9._:-]+)"
    r"(?: (?P<method>[A-Z]+) (?P<url_path>/\S*) from (?P<remote>\S+) user (?P<user>.+))?\]"
)
GENERATED_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex
SECRET_KEY = "a-test-secret-key-nobody-may-read"

# init_logger changes process-global loggers: conftest puts them back after each test.
pytestmark = pytest.mark.usefixtures("restore_logging")


# --- Fixtures and helpers -----------------------------------------------------


def add_logging_routes(app: Flask) -> None:
    """Routes that log on demand (added before the app's first request)."""

    def hello():
        app.logger.warning("hello")
        return "hello"

    def info():
        app.logger.info("an info line")
        return "info"

    def leak():
        # The view parses the form first, as a real view would: the redaction
        # only looks at a body that has already been read.
        password = request.form["password"]
        app.logger.error(
            "login failed: secret key %s, password %s, cookie header %s",
            app.config["SECRET_KEY"],
            password,
            request.headers["Cookie"],
        )
        return "leaked?"

    app.add_url_rule("/hello", view_func=hello)
    app.add_url_rule("/info", view_func=info)
    app.add_url_rule("/leak", view_func=leak, methods=["POST"])


def logged_app(make_app, log_dir: Path, **overrides) -> Flask:
    """A test app with the test routes and the production log handler on LOG_DIR."""
    app = make_app(LOG_DIR=str(log_dir), **overrides)
    add_logging_routes(app)
    init_logger(app)
    return app


@pytest.fixture
def log_dir(tmp_path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def app(make_app, log_dir) -> Flask:
    """Overrides conftest's app, so that `client`, `auth` and `users` use this one."""
    return logged_app(make_app, log_dir)


def log_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def lines_with(path: Path, text: str) -> list[str]:
    return [line for line in log_lines(path) if text in line]


# --- The log file and its lines ----------------------------------------------


def test_log_file_is_log_dir_slash_log_file_with_one_startup_line(app, log_dir):
    log_file = log_dir / app.config["LOG_FILE"]
    assert log_file == log_dir / "blog.log"
    [startup] = lines_with(log_file, "Blog startup")
    assert f"Blog startup (pid {os.getpid()})" in startup
    # Outside a request there is no id, method or user to report.
    match = LINE.fullmatch(startup)
    assert match, startup
    assert match["level"] == "INFO"
    assert match["request_id"] == "-"
    assert match["method"] is None
    assert startup.endswith("[request -]")


def test_request_line_carries_format_request_id_method_path_address_and_user(client, log_dir):
    response = client.get("/hello")
    assert response.status_code == 200
    # The id a user quotes from the response is the one in the log.
    reference = response.headers["X-Request-ID"]

    [line] = lines_with(log_dir / "blog.log", ": hello ")
    match = LINE.fullmatch(line)
    assert match, line
    assert match["level"] == "WARNING"
    assert match["message"] == "hello"
    # The line's "[in path:line]" points at the call in this file.
    assert match["path"] == __file__
    assert match["request_id"] == reference
    assert (match["method"], match["url_path"]) == ("GET", "/hello")
    assert match["remote"] == "127.0.0.1"
    assert match["user"] == "-"  # nobody is logged in


def test_request_line_names_the_logged_in_user(client, auth, users, log_dir):
    assert auth.login("admin").status_code == 302
    client.get("/hello")
    [line] = lines_with(log_dir / "blog.log", ": hello ")
    assert LINE.fullmatch(line)["user"] == "admin"


# --- The request id -------------------------------------------------------------


def test_a_sane_request_id_from_a_proxy_we_were_told_about_is_kept(make_app, log_dir):
    # As nginx's $request_id or Heroku's router would send it.
    client = logged_app(make_app, log_dir, PROXY_COUNT=1).test_client()
    response = client.get("/hello", headers={"X-Request-ID": "proxy-id:0001.a_b"})
    assert response.headers["X-Request-ID"] == "proxy-id:0001.a_b"
    [line] = lines_with(log_dir / "blog.log", ": hello ")
    assert LINE.fullmatch(line)["request_id"] == "proxy-id:0001.a_b"


def test_a_request_id_from_a_client_is_never_adopted(client, log_dir):
    # Without a proxy, X-Request-ID comes from whoever sent the request: they
    # could choose their error's reference, or give two failures one reference.
    first = client.get("/hello", headers={"X-Request-ID": "chosen-by-client"})
    second = client.get("/hello", headers={"X-Request-ID": "chosen-by-client"})

    references = [first.headers["X-Request-ID"], second.headers["X-Request-ID"]]
    assert all(GENERATED_ID.fullmatch(reference) for reference in references)
    assert references[0] != references[1]
    lines = lines_with(log_dir / "blog.log", ": hello ")
    assert [LINE.fullmatch(line)["request_id"] for line in lines] == references
    assert "chosen-by-client" not in (log_dir / "blog.log").read_text()


@pytest.mark.parametrize(
    "incoming",
    ["bad id", "x" * 200, "xyz"],  # not hex: never part of a generated id by chance
    ids=["with a space", "200 characters", "3 characters"],
)
def test_insane_request_id_is_replaced_even_from_a_proxy(make_app, log_dir, incoming):
    client = logged_app(make_app, log_dir, PROXY_COUNT=1).test_client()
    response = client.get("/hello", headers={"X-Request-ID": incoming})
    generated = response.headers["X-Request-ID"]
    assert GENERATED_ID.fullmatch(generated)
    # The log uses the replacement too: what a client sends can't forge log lines.
    [line] = lines_with(log_dir / "blog.log", ": hello ")
    assert LINE.fullmatch(line)["request_id"] == generated
    assert incoming not in line


@pytest.mark.parametrize(("path", "status"), [("/hello", 200), ("/no/such/page", 404)])
def test_every_response_has_a_request_id(client, path, status):
    response = client.get(path)
    assert response.status_code == status
    assert GENERATED_ID.fullmatch(response.headers["X-Request-ID"])


def test_two_requests_get_different_ids(client):
    first = client.get("/hello").headers["X-Request-ID"]
    second = client.get("/hello").headers["X-Request-ID"]
    assert first != second


# --- Level, secrets, other libraries' loggers ----------------------------------


def test_log_level_warning_drops_info_lines(make_app, log_dir):
    client = logged_app(make_app, log_dir, LOG_LEVEL="WARNING").test_client()
    client.get("/info")
    client.get("/hello")
    text = (log_dir / "blog.log").read_text()
    assert "an info line" not in text
    assert "Blog startup" not in text  # an INFO line too
    assert ": hello " in text


def test_default_log_level_info_keeps_info_lines(client, log_dir):
    client.get("/info")
    assert lines_with(log_dir / "blog.log", "an info line")


def test_secrets_never_reach_the_log(make_app, log_dir):
    app = logged_app(make_app, log_dir, SECRET_KEY=SECRET_KEY)
    client = app.test_client()
    client.set_cookie("flavour", "chocolate-chip-cookie")
    response = client.post("/leak", data={"password": PASSWORD})
    assert response.status_code == 200

    [line] = lines_with(log_dir / "blog.log", "login failed")
    assert "[redacted]" in line
    for secret in (SECRET_KEY, PASSWORD, "chocolate-chip-cookie", "flavour="):
        assert secret not in line
    assert SECRET_KEY not in (log_dir / "blog.log").read_text()


def test_extra_loggers_get_the_handler_not_the_root_logger(make_app, log_dir):
    root_handlers = list(logging.getLogger().handlers)
    logged_app(make_app, log_dir, LOG_EXTRA_LOGGERS="sqlalchemy:WARNING,some.library")

    logging.getLogger("some.library").warning("a warning from some library")
    assert lines_with(log_dir / "blog.log", "a warning from some library")
    # The root logger belongs to whoever runs the app (here: pytest).
    assert logging.getLogger().handlers == root_handlers
    assert logging.getLogger("sqlalchemy").level == logging.WARNING


def test_default_extra_loggers_outside_gunicorn(make_app, monkeypatch):
    monkeypatch.delenv("SERVER_SOFTWARE", raising=False)
    names = [logger.name for logger in extra_loggers(make_app(LOG_EXTRA_LOGGERS=None))]
    assert names == ["sqlalchemy", "flask-limiter"]
    assert logging.getLogger("flask-limiter").level == logging.WARNING


def test_default_extra_loggers_under_gunicorn_include_its_error_log(make_app, monkeypatch):
    # gunicorn's master puts this in os.environ when it starts.
    monkeypatch.setenv("SERVER_SOFTWARE", "gunicorn/27.0.1")
    names = [logger.name for logger in extra_loggers(make_app(LOG_EXTRA_LOGGERS=None))]
    assert names == ["sqlalchemy", "flask-limiter", "gunicorn.error"]


def test_init_logger_twice_keeps_one_handler(app, client, log_dir):
    init_logger(app)
    assert [h.name for h in app.logger.handlers].count("blog-log") == 1
    client.get("/hello")
    assert len(lines_with(log_dir / "blog.log", ": hello ")) == 1


# --- When the log can't be written ------------------------------------------------


def test_unwritable_log_dir_falls_back_to_stderr(make_app, tmp_path, capsys):
    # We run as root, and root writes through any chmod; a directory that
    # sits under a regular file can't be created by anyone.
    (tmp_path / "afile").write_text("not a directory")
    log_dir = tmp_path / "afile" / "logs"

    client = logged_app(make_app, log_dir).test_client()  # must not raise
    assert client.get("/hello").status_code == 200

    stderr = capsys.readouterr().err
    [report] = [line for line in stderr.splitlines() if "Cannot open the log file" in line]
    assert str(log_dir / "blog.log") in report
    # The records still go somewhere: stderr, in the same format.
    [line] = [line for line in stderr.splitlines() if ": hello " in line]
    assert LINE.fullmatch(line)


def test_disk_full_is_reported_once_and_requests_go_on(make_app, log_dir, capsys):
    # Every write to /dev/full fails with ENOSPC, as on a full disk.
    log_dir.mkdir()
    (log_dir / "blog.log").symlink_to("/dev/full")

    client = logged_app(make_app, log_dir).test_client()  # its startup line fails
    statuses = [client.get("/hello").status_code for _ in range(20)]
    assert statuses == [200] * 20

    stderr = capsys.readouterr().err
    assert stderr.count("Cannot write the log file") == 1
    assert str(log_dir / "blog.log") in stderr
    assert "No space left on device" in stderr


def test_init_logger_again_on_a_full_disk_does_not_raise(make_app, log_dir, capsys):
    log_dir.mkdir()
    (log_dir / "blog.log").symlink_to("/dev/full")
    app = logged_app(make_app, log_dir)
    # "A logging problem must never stop the app from starting", and calling
    # init_logger again is documented to replace what it installed.
    init_logger(app)
    assert app.test_client().get("/hello").status_code == 200


@pytest.mark.system
def test_default_log_dir_is_absolute_under_the_project(tmp_path):
    # Started from another directory (as systemd or a shell elsewhere would),
    # the default must still be the project's logs/, not <cwd>/logs.
    result = subprocess.run(
        [sys.executable, "-c", "from config import Config; print(Config.LOG_DIR)"],
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == str(ROOT / "logs")


# --- Under real gunicorn --------------------------------------------------------------


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status


def numbers_in(path: Path) -> list[int]:
    return [int(n) for n in re.findall(r"numbered line (\d{6})", path.read_text())]


def worker_pids(server: Gunicorn) -> set[str]:
    """The pids of the workers gunicorn has started, from its own output."""
    return set(re.findall(r"Booting worker with pid: (\d+)", server.log()))


def startup_pids(log_file: Path) -> set[str]:
    """The pids of the processes that created the app and logged to `log_file`."""
    text = log_file.read_text() if log_file.exists() else ""
    return set(re.findall(r"Blog startup \(pid (\d+)\)", text))


@contextmanager
def four_workers(env: dict[str, str], tmp_path: Path) -> Iterator[Gunicorn]:
    """gunicorn with four workers, each of which has created the app.

    Each worker imports the app, about two seconds of CPU, and run_gunicorn
    waits 30 s for the first answer: four workers importing at once on a
    busy machine (another test run on the same two cores) can take longer
    than that. So gunicorn starts with one worker, which answers sooner, and
    is given three more with SIGTTIN, as an admin scales up a running server;
    the waits for those are bounded only to end a start that hangs.
    """
    with run_gunicorn(env, tmp_path, workers=1) as server:
        for count in (2, 3, 4):
            server.process.send_signal(signal.SIGTTIN)
            # One signal at a time: signals sent before gunicorn has handled
            # the first one would count as one.
            wait_until(
                lambda count=count: len(worker_pids(server)) == count,
                timeout=120,
                message=f"gunicorn starting worker {count}",
            )
        log_file = Path(env["LOG_DIR"]) / "blog.log"
        wait_until(
            lambda: len(worker_pids(server)) == 4 and worker_pids(server) <= startup_pids(log_file),
            timeout=120,
            message="four workers started",
        )
        yield server


@pytest.mark.system
def test_rotation_under_four_workers_loses_and_duplicates_nothing(tmp_path, fresh_database_url):
    """The rotation proof: 4 processes, 1,000 lines, 10 KB files.

    The lines are sent once all four workers have started, so that four
    processes really share the file.
    """
    max_bytes = 10240
    env = production_env(
        tmp_path, fresh_database_url, LOG_MAX_BYTES=max_bytes, LOG_BACKUP_COUNT=200
    )
    with four_workers(env, tmp_path) as server:
        urls = [f"{server.url}/_test/log/{n}" for n in range(1, 1001)]
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(get, urls))
        assert statuses == [200] * 1000
        # Stopping first means every worker has written and closed its file.
        assert server.stop() == 0

    log_dir = tmp_path / "logs"
    backups = sorted(
        (p for p in log_dir.glob("blog.log.*") if p.suffix[1:].isdigit()),
        key=lambda p: int(p.suffix[1:]),
    )
    assert len(backups) > 1
    # Numbered .1, .2, ... without a gap; no temporary file left behind.
    assert [int(p.suffix[1:]) for p in backups] == list(range(1, len(backups) + 1))
    files = [log_dir / "blog.log", *backups]  # newest first
    assert sorted(log_dir.glob("blog.log*")) == sorted(files)

    for path in files:
        lines = log_lines(path)
        # Every line is a whole record: no record was cut or interleaved with
        # another worker's.
        for line in lines:
            assert LINE.fullmatch(line), f"{path.name}: {line!r}"
        # The size is checked before each write, under the lock: a file may
        # pass the limit only with its last line.
        size = path.stat().st_size
        assert size - len(lines[-1].encode()) - 1 < max_bytes, path.name

    # No line lost, none written twice.
    counts = Counter(n for path in files for n in numbers_in(path))
    assert sorted(counts) == list(range(1, 1001))
    assert set(counts.values()) == {1}

    # Rotated in order: blog.log.(k+1) is older than blog.log.k. With 16
    # requests in flight, neighbouring numbers are logged in any order, so
    # the ranges of two files overlap a little and timestamps tie; but a few
    # stragglers can't move the median of a file's ~60 numbers. (mtimes are
    # no good either: a rename keeps the mtime, and many files share a tick.)
    medians = [statistics.median(numbers_in(path)) for path in files if numbers_in(path)]
    assert medians == sorted(medians, reverse=True)


@pytest.mark.system
def test_log_to_stdout_under_gunicorn_writes_no_file(tmp_path, fresh_database_url):
    env = production_env(tmp_path, fresh_database_url, LOG_TO_STDOUT=1)
    with run_gunicorn(env, tmp_path, workers=1) as server:
        assert get(f"{server.url}/_test/log/7") == 200
        assert server.stop() == 0
    output = server.log()
    assert "Blog startup" in output
    [line] = [line for line in output.splitlines() if "numbered line 000007" in line]
    match = LINE.fullmatch(line)
    assert match, line
    assert match["url_path"] == "/_test/log/7"
    assert not (tmp_path / "logs" / "blog.log").exists()


@pytest.mark.system
def test_every_worker_and_gunicorn_itself_log_to_the_file(tmp_path, fresh_database_url):
    log_file = tmp_path / "logs" / "blog.log"
    # four_workers waits until each of the four workers gunicorn reports
    # (from its master's own output) has its startup line in the file.
    with four_workers(production_env(tmp_path, fresh_database_url), tmp_path) as server:
        workers = worker_pids(server)
        assert server.stop() == 0

    # `flask db upgrade` created the app too, so its process has a startup
    # line of its own: the file holds more than the workers' lines.
    assert workers < startup_pids(log_file)
    # gunicorn's own log (gunicorn.error) goes to the same file: each worker's
    # "Worker exiting" line, logged after the app (and its handler) loaded.
    for pid in workers:
        [line] = lines_with(log_file, f"Worker exiting (pid: {pid})")
        assert "/gunicorn/" in LINE.fullmatch(line)["path"]

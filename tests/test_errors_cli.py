# ruff: noqa: RUF001 (the Chinese output's punctuation is full-width)
"""`flask errors` and `flask errors show REFERENCE` (app/reporting/cli.py).

What the admin on the server sees: the errors in the store, newest first,
and every log line of the request a user quotes, traceback included, in the
admin's language. Against what real gunicorn workers wrote, run as the admin
runs it (a subprocess, with the database gone), and in-process through
`app.test_cli_runner()` against what the app's own log handler and store
wrote, for the edges: rotated files, a store that is missing or broken,
references nobody should paste.

Times are shown in local time; the tests set the time zone to UTC+8
("CST-8" is a POSIX zone: it needs no time zone database).
"""

import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask

from app.logger import init_email, init_logger
from app.mail import outbox
from app.reporting import STORE_FILE
from app.reporting.storm import FIELDS, KEEP_FOR, ErrorGroup, StormControl
from tests.failing_routes import add_failing_routes
from tests.helpers import source_line
from tests.servers import BIN, ROOT, Browser, production_env, run_gunicorn, wait_until

pytestmark = pytest.mark.usefixtures("restore_logging")

TZ = "CST-8"
WINDOW = 600
NOT_A_REFERENCE = (
    "Error: Invalid value for REFERENCE: a reference is 8 to 128 letters, digits or . _ : - "
    "(from the error page or the X-Request-ID header).\n"
)
MAIL_OFF = "Mail: off (MAIL_SERVER or ADMINS is not set)"


def utc8(timestamp: float) -> str:
    """`timestamp` as the commands show it in UTC+8."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(timestamp + 8 * 3600))


@pytest.fixture
def utc_plus_8(monkeypatch):
    """Show the in-process commands' local times in UTC+8 (tzset: setting TZ is not enough)."""
    monkeypatch.setenv("TZ", TZ)
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def read_store(path: Path) -> dict[str, ErrorGroup]:
    """The store's groups by title ({} while a worker is still creating it)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute(f"SELECT {', '.join(FIELDS)} FROM error_groups").fetchall()
    except sqlite3.Error:
        return {}
    return {group.title: group for group in (ErrorGroup(*row) for row in rows)}


def lines_of(reference: str, *files: Path) -> list[str]:
    """What `grep` finds of one request in `files`: its first lines and its
    traceback lines (not the repeats that point to it)."""
    return [
        line
        for path in files
        for line in path.read_text(errors="replace").splitlines()
        if f"[request {reference} " in line or line.startswith(f"  {reference} | ")
    ]


# --- Against real gunicorn workers -----------------------------------------------------


def flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run `flask ARGS` as the admin does, on the server, in local time UTC+8."""
    return subprocess.run(
        [BIN / "flask", *args],
        cwd=ROOT,
        env={**env, "TZ": TZ},
        capture_output=True,
        text=True,
        timeout=120,
    )


def fail(browser: Browser, path: str) -> str:
    """GET a path that fails: a 500; return the reference the user was given."""
    status, headers, _ = browser.request(path)
    assert status == 500
    return headers["X-Request-ID"]


@pytest.mark.system
def test_the_admin_lists_and_shows_what_two_workers_logged(tmp_path, fresh_database_url):
    env = production_env(tmp_path, fresh_database_url, MAIL_ERROR_WINDOW=WINDOW)
    logs = tmp_path / "logs"
    store = logs / STORE_FILE
    with run_gunicorn(env, tmp_path, workers=2) as server:
        browser = Browser(server.url)
        references = []
        # One at a time, each recorded before the next: the store keeps the
        # last reference of each error in the order the workers report them.
        for path, title in [
            ("/_test/fail", "ZeroDivisionError: division by zero"),
            ("/_test/fail", "ZeroDivisionError: division by zero"),
            ("/_test/fail-differently", "KeyError: 'missing'"),
        ]:
            reference = fail(browser, path)
            references.append(reference)
            wait_until(
                lambda t=title, r=reference: (
                    (g := read_store(store).get(t)) is not None
                    and g.last_reference == r
                    and g.mail == "off"
                ),
                message=f"{reference} in the store",
            )

    # The admin's shell, with the database gone: only the files are needed.
    admin_env = {**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'gone' / 'blog.sqlite'}"}
    groups = read_store(store)
    division, key = groups["ZeroDivisionError: division by zero"], groups["KeyError: 'missing'"]
    assert (division.total, division.window_count, key.total) == (2, 2, 1)
    routes = ROOT / "tests" / "failing_routes.py"
    # Where each error was raised, as both listings name it.
    key_where = f"tests/failing_routes.py:{source_line(routes, 'return {}[')}"
    division_where = f"tests/failing_routes.py:{source_line(routes, 'return str(1 / 0)')}"
    listing = flask(admin_env, "errors")
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout == (
        f"Errors recorded in {store}, the most recently seen first:\n"
        "\n"
        "KeyError: 'missing'\n"
        f"  Where: {key_where}\n"
        "  Occurrences: 1 in the current window, 1 in total\n"
        f"  First seen: {utc8(key.first_seen)}\n"
        f"  Last seen: {utc8(key.last_seen)}\n"
        f"  Last reference: {references[2]}\n"
        f"  {MAIL_OFF}\n"
        "\n"
        "ZeroDivisionError: division by zero\n"
        f"  Where: {division_where}\n"
        "  Occurrences: 2 in the current window, 2 in total\n"
        f"  First seen: {utc8(division.first_seen)}\n"
        f"  Last seen: {utc8(division.last_seen)}\n"
        f"  Last reference: {references[1]}\n"
        f"  {MAIL_OFF}\n"
    )
    assert not (tmp_path / "gone").exists()

    chinese = flask({**admin_env, "ADMIN_LOCALE": "zh_CN"}, "errors", "--limit", "1")
    assert chinese.returncode == 0, chinese.stderr
    assert chinese.stdout == (
        f"{store} 中记录的错误，最近发生的在前：\n"
        "\n"
        "KeyError: 'missing'\n"
        f"  位置：{key_where}\n"
        "  次数：当前窗口内 1 次，共 1 次\n"
        f"  首次出现：{utc8(key.first_seen)}\n"
        f"  最近出现：{utc8(key.last_seen)}\n"
        f"  最近的错误编号：{references[2]}\n"
        "  邮件：未开启（没有设置 MAIL_SERVER 或 ADMINS）\n"
        "\n"
        "共 2 个错误，显示了 1 个；用 --limit 查看更多。\n"
    )

    # The first of each error in a worker has its traceback with it.
    log_file = logs / "blog.log"
    for reference, path, last_line in [
        (references[0], "/_test/fail", "ZeroDivisionError: division by zero"),
        (references[2], "/_test/fail-differently", "KeyError: 'missing'"),
    ]:
        shown = flask(admin_env, "errors", "show", reference)
        assert shown.returncode == 0, shown.stderr
        lines = shown.stdout.splitlines()
        assert lines == lines_of(reference, log_file)
        assert lines[0].endswith(f"[request {reference} GET {path} from 127.0.0.1 user -]")
        assert lines[1] == f"  {reference} | Traceback (most recent call last):"
        assert lines[-1] == f"  {reference} | {last_line}"

    hostile = flask(admin_env, "errors", "show", "abc\ndef12345")
    assert hostile.returncode == 2
    assert hostile.stderr == (
        "Usage: flask errors show [OPTIONS] REFERENCE\n"
        "Try 'flask errors show --help' for help.\n\n" + NOT_A_REFERENCE
    )

    unknown = flask(admin_env, "errors", "show", "0123456789abcdef")
    assert unknown.returncode == 1
    assert unknown.stdout == ""
    assert unknown.stderr == f"Error: No log line of request 0123456789abcdef in {log_file}.\n"


@pytest.mark.system
def test_a_repeat_shows_the_traceback_logged_before_rotation(tmp_path, fresh_database_url):
    """One worker, so that the second failure is a repeat of the first (the
    traceback is written once per worker per window), and a log rotated every
    few lines, so that the first failure's traceback is in an older file by then."""
    env = production_env(
        tmp_path,
        fresh_database_url,
        MAIL_ERROR_WINDOW=WINDOW,
        LOG_MAX_BYTES=3000,
        LOG_BACKUP_COUNT=50,
    )
    logs = tmp_path / "logs"
    with run_gunicorn(env, tmp_path, workers=1) as server:
        browser = Browser(server.url)
        first = fail(browser, "/_test/fail")
        number = 0
        while first in (logs / "blog.log").read_text():
            number += 1
            assert number < 1000, "the log file never rotated"
            assert browser.request(f"/_test/log/{number}")[0] == 200
        repeat = fail(browser, "/_test/fail")

    rotated = sorted(logs.glob("blog.log.*"), key=lambda p: -int(p.suffix[1:]))
    assert len(rotated) >= 1
    files = [*rotated, logs / "blog.log"]
    traceback = [line for line in lines_of(first, *files) if line.startswith("  ")]
    assert traceback[0] == f"  {first} | Traceback (most recent call last):"
    assert traceback[-1] == f"  {first} | ZeroDivisionError: division by zero"
    [repeat_line] = lines_of(repeat, logs / "blog.log")
    assert f"[traceback: see request {first}]" in repeat_line

    shown = flask(env, "errors", "show", repeat)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [
        repeat_line,
        "",
        f"The traceback, logged with request {first}:",
        *traceback,
    ]
    # The first request's own lines, not those of the repeats that point to it.
    shown = flask(env, "errors", "show", first)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == lines_of(first, *files)
    assert repeat not in shown.stdout

    chinese = flask({**env, "ADMIN_LOCALE": "zh_CN"}, "errors", "show", repeat[:8])
    assert chinese.returncode == 0, chinese.stderr
    assert chinese.stdout.splitlines() == [
        repeat_line,
        "",
        f"堆栈跟踪（记录在请求 {first} 中）：",
        *traceback,
    ]


# --- In-process: the app's own log handler and store ---------------------------------


@pytest.fixture
def log_dir(tmp_path) -> Path:
    """The app's LOG_DIR; not created, so that a test can tell whether anything created it."""
    return tmp_path / "logs"


@pytest.fixture
def logging_app(make_app, log_dir):
    """Return a factory: the blog with failing routes, logging and recording
    its errors as in production (mail off)."""

    def build(**overrides) -> Flask:
        app = make_app(
            PROPAGATE_EXCEPTIONS=False,
            LOG_DIR=str(log_dir),
            MAIL_ERROR_WINDOW=WINDOW,
            **overrides,
        )

        def note():
            app.logger.warning("a note in the log")
            return "noted"

        add_failing_routes(app)
        app.add_url_rule("/note", view_func=note)
        init_logger(app)
        init_email(app)
        return app

    return build


def get(app: Flask, path: str, reference: str | None = None) -> str:
    """GET `path` (with a proxy's request id, if given); return the request's id."""
    headers = {"X-Request-ID": reference} if reference else {}
    response = app.test_client().get(path, headers=headers)
    assert response.status_code == (500 if path == "/_test/fail" else 200)
    return response.headers["X-Request-ID"]


def invoke(app: Flask, *args: str):
    """Run `flask errors ARGS` against `app`, in this process."""
    return app.test_cli_runner().invoke(args=["errors", *args])


def log_notes_until(app: Flask, done: Callable[[], bool]) -> None:
    """Log a note at a time until `done()`, to rotate the log as far as a test needs.

    At most a thousand: a log that never rotates fails the test, not hangs it.
    """
    for _ in range(1000):
        if done():
            return
        get(app, "/note")
    raise AssertionError("the log never rotated that far")


def test_no_store_means_no_errors_and_nothing_is_created(make_app, log_dir):
    app = make_app(LOG_DIR=str(log_dir))
    result = invoke(app)
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"No errors have been recorded: {log_dir / STORE_FILE} does not exist "
        "(is LOG_DIR the server's?).\n"
    )
    assert not log_dir.exists()


def test_the_listing_says_everything_about_each_error(make_app, log_dir, utc_plus_8):
    log_dir.mkdir()
    storm = StormControl(str(log_dir / STORE_FILE), WINDOW)
    t = 1767225600  # 2026-01-01 08:00:00 in UTC+8: long enough ago for every window to close
    storm.admit("k1", "s", t, title="ZeroDivisionError: division by zero", location="app/a.py:1",
                reference="first-of-one")  # fmt: skip
    storm.mail_sent("k1", t + 2)
    storm.admit("k1", "s", t + 10, reference="second-of-one")
    storm.admit("k2", "s", t + 60, title="KeyError: 'x'", location="app/b.py:2",
                reference="only-two")  # fmt: skip
    storm.mail_failed("k2", t + 61)
    now = time.time()
    storm.admit("k3", "s", now - 5, title="OSError: \x1b[2Jgone", location="app/c.py:3",
                reference="first-of-three")  # fmt: skip
    storm.mail_off("k3")
    storm.admit("k3", "s", now - 1, reference="second-of-three")
    storm.admit("k4", "s", t + 30, title="TypeError: t", location="app/d.py:4",
                reference="four-4444")  # fmt: skip

    result = invoke(make_app(LOG_DIR=str(log_dir), MAIL_ERROR_WINDOW=WINDOW))
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"Errors recorded in {log_dir / STORE_FILE}, the most recently seen first:\n"
        "\n"
        "OSError: \\x1b[2Jgone\n"  # a terminal escape in a message is shown, not obeyed
        "  Where: app/c.py:3\n"
        "  Occurrences: 2 in the current window, 2 in total\n"
        f"  First seen: {utc8(now - 5)}\n"
        f"  Last seen: {utc8(now - 1)}\n"
        "  Last reference: second-of-three\n"
        f"  {MAIL_OFF}\n"
        "\n"
        "KeyError: 'x'\n"
        "  Where: app/b.py:2\n"
        "  Occurrences: 0 in the current window, 1 in total\n"
        "  First seen: 2026-01-01 08:01:00\n"
        "  Last seen: 2026-01-01 08:01:00\n"
        "  Last reference: only-two\n"
        "  Mail: failed (the log file says why)\n"
        "\n"
        "TypeError: t\n"
        "  Where: app/d.py:4\n"
        "  Occurrences: 0 in the current window, 1 in total\n"
        "  First seen: 2026-01-01 08:00:30\n"
        "  Last seen: 2026-01-01 08:00:30\n"
        "  Last reference: four-4444\n"
        "  Mail: not yet\n"
        "\n"
        "ZeroDivisionError: division by zero\n"
        "  Where: app/a.py:1\n"
        "  Occurrences: 0 in the current window, 2 in total\n"
        "  First seen: 2026-01-01 08:00:00\n"
        "  Last seen: 2026-01-01 08:00:10\n"
        "  Last reference: second-of-one\n"
        "  Mail: sent at 2026-01-01 08:00:02\n"
    )

    result = invoke(make_app(LOG_DIR=str(log_dir), ADMIN_LOCALE="zh_CN"), "--limit", "2")
    assert result.exit_code == 0, result.output
    assert result.output == (
        f"{log_dir / STORE_FILE} 中记录的错误，最近发生的在前：\n"
        "\n"
        "OSError: \\x1b[2Jgone\n"
        "  位置：app/c.py:3\n"
        "  次数：当前窗口内 2 次，共 2 次\n"
        f"  首次出现：{utc8(now - 5)}\n"
        f"  最近出现：{utc8(now - 1)}\n"
        "  最近的错误编号：second-of-three\n"
        "  邮件：未开启（没有设置 MAIL_SERVER 或 ADMINS）\n"
        "\n"
        "KeyError: 'x'\n"
        "  位置：app/b.py:2\n"
        "  次数：当前窗口内 0 次，共 1 次\n"
        "  首次出现：2026-01-01 08:01:00\n"
        "  最近出现：2026-01-01 08:01:00\n"
        "  最近的错误编号：only-two\n"
        "  邮件：发送失败（原因见日志文件）\n"
        "\n"
        "共 4 个错误，显示了 2 个；用 --limit 查看更多。\n"
    )
    result = invoke(make_app(LOG_DIR=str(log_dir), ADMIN_LOCALE="zh_CN"), "--limit", "4")
    assert result.output.splitlines()[-1] == "  邮件：已于 2026-01-01 08:00:02 发送"
    assert "  邮件：尚未发送" in result.output.splitlines()


@pytest.mark.parametrize("limit", ["0", "-1", "x"])
def test_the_limit_must_be_a_positive_number(make_app, log_dir, limit):
    result = invoke(make_app(LOG_DIR=str(log_dir)), "--limit", limit)
    assert result.exit_code == 2
    assert "Invalid value for '--limit'" in result.output
    assert not log_dir.exists()


def test_an_emptied_store_has_no_errors(make_app, log_dir):
    log_dir.mkdir()
    storm = StormControl(str(log_dir / STORE_FILE), WINDOW)
    storm.admit("k1", "s", 1000.0, title="E", location="app/a.py:1")
    storm.forget_old(2000.0 + KEEP_FOR)
    result = invoke(make_app(LOG_DIR=str(log_dir)))
    assert result.exit_code == 0, result.output
    assert result.output == f"No errors are recorded in {log_dir / STORE_FILE}.\n"


def test_a_corrupt_store_is_reported_not_a_traceback(make_app, log_dir):
    log_dir.mkdir()
    store = log_dir / STORE_FILE
    store.write_bytes(b"this is no SQLite database\n" * 200)
    result = invoke(make_app(LOG_DIR=str(log_dir)))
    assert result.exit_code == 1
    assert result.output == (
        f"Error: The error store {store} can't be read: file is not a database\n"
    )
    assert store.read_bytes() == b"this is no SQLite database\n" * 200


def test_the_listing_does_not_wait_for_a_worker_writing_the_store(logging_app, log_dir):
    """During a storm the workers write the store all the time: the listing
    reads beside them, and writes nothing itself."""
    app = logging_app()
    reference = get(app, "/_test/fail")
    outbox.drain()  # the store is written from the background
    store = log_dir / STORE_FILE
    before = store.read_bytes()
    worker = sqlite3.connect(store, isolation_level=None)
    worker.execute("BEGIN IMMEDIATE")  # a worker's write transaction, under way
    try:
        result = invoke(app)
    finally:
        worker.execute("ROLLBACK")
        worker.close()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    raised_at = source_line(ROOT / "tests" / "failing_routes.py", "return str(1 / 0)")
    assert lines[2:4] == [
        "ZeroDivisionError: division by zero",
        f"  Where: tests/failing_routes.py:{raised_at}",
    ]
    assert lines[4] == "  Occurrences: 1 in the current window, 1 in total"
    assert lines[7:] == [f"  Last reference: {reference}", f"  {MAIL_OFF}"]
    assert store.read_bytes() == before


def test_show_prints_the_request_and_its_traceback(logging_app, log_dir):
    app = logging_app()
    first, repeat = get(app, "/_test/fail"), get(app, "/_test/fail")
    log_file = log_dir / "blog.log"
    first_lines = lines_of(first, log_file)
    assert first_lines[1:2] == [f"  {first} | Traceback (most recent call last):"]
    [repeat_line] = lines_of(repeat, log_file)
    assert (
        f" ERROR: Exception on /_test/fail [GET] [traceback: see request {first}] " in repeat_line
    )

    result = invoke(app, "show", first)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == first_lines

    result = invoke(app, "show", repeat[:8])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        repeat_line,
        "",
        f"The traceback, logged with request {first}:",
        *first_lines[1:],
    ]


def test_a_prefix_matching_several_requests_shows_them_all_and_says_so(logging_app, log_dir):
    # A proxy's ids (PROXY_COUNT): two that share their first characters.
    app = logging_app(PROXY_COUNT=1)
    one = get(app, "/_test/fail", "shared-prefix-0001")
    two = get(app, "/note", "shared-prefix-0002")
    result = invoke(app, "show", "shared-prefix")
    assert result.exit_code == 0, result.output
    log_file = log_dir / "blog.log"
    assert result.output.splitlines() == [
        "Several requests match shared-prefix: shared-prefix-0001, shared-prefix-0002.",
        *lines_of(one, log_file),
        *lines_of(two, log_file),
    ]


def test_the_lines_of_one_request_across_rotated_files_oldest_first(logging_app, log_dir):
    """A request id that a proxy reused (a retry) has lines in files far apart;
    a rotated file deleted in between is no obstacle."""
    app = logging_app(PROXY_COUNT=1, LOG_MAX_BYTES=1000, LOG_BACKUP_COUNT=10)
    reference = "retried-request-01"
    get(app, "/_test/fail", reference)
    log_notes_until(app, (log_dir / "blog.log.2").exists)
    get(app, "/note", reference)
    (log_dir / "blog.log.1").unlink()
    older = lines_of(reference, log_dir / "blog.log.2")
    newer = lines_of(reference, log_dir / "blog.log")
    assert older[1] == f"  {reference} | Traceback (most recent call last):"
    assert len(newer) == 1 and " WARNING: a note in the log " in newer[0]

    result = invoke(app, "show", reference)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == older + newer


@pytest.mark.parametrize(
    "reference",
    [
        "",
        "abc",
        "a b c d e f g h",
        "x" * 200,
        "../../etc/passwd",
        "abc\ndef12345",
        "%s%s%s%s%s",
        "\x1b[2J0123456789",
        "0123456789\x00",
    ],
)
def test_a_reference_that_is_not_one_is_a_usage_error(logging_app, reference):
    app = logging_app()
    get(app, "/_test/fail")
    result = invoke(app, "show", reference)
    assert result.exit_code == 2
    assert result.output.startswith("Usage: ")
    assert result.output.endswith("\n\n" + NOT_A_REFERENCE)


def test_a_reference_is_required(make_app):
    result = invoke(make_app(), "show")
    assert result.exit_code == 2
    assert "Error: Missing argument 'REFERENCE'." in result.output


def test_the_usage_error_in_chinese(make_app):
    result = invoke(make_app(ADMIN_LOCALE="zh_CN"), "show", "abc")
    assert result.exit_code == 2
    assert result.output.endswith(
        "Error: Invalid value for REFERENCE: 错误编号由 8 到 128 个字母、数字或 . _ : - 组成"
        "（见错误页面或 X-Request-ID 响应头）。\n"
    )


def test_a_reference_not_in_the_log_names_the_files_searched(logging_app, log_dir):
    app = logging_app(LOG_MAX_BYTES=1000)
    get(app, "/_test/fail")
    get(app, "/note")
    assert (log_dir / "blog.log.1").exists()
    result = invoke(app, "show", "0123456789abcdef")
    assert result.exit_code == 1
    assert result.output == (
        "Error: No log line of request 0123456789abcdef in "
        f"{log_dir / 'blog.log.1'}, {log_dir / 'blog.log'}.\n"
    )
    chinese = invoke(logging_app(ADMIN_LOCALE="zh_CN"), "show", "0123456789abcdef")
    assert chinese.exit_code == 1
    assert chinese.output == (
        f"Error: 在 {log_dir / 'blog.log.1'}, {log_dir / 'blog.log'} 中"
        "找不到请求 0123456789abcdef 的日志。\n"
    )


def test_without_a_log_file_show_says_so(make_app, log_dir):
    result = invoke(make_app(LOG_DIR=str(log_dir)), "show", "0123456789abcdef")
    assert result.exit_code == 1
    assert result.output == (
        f"Error: No log file: {log_dir / 'blog.log'} does not exist (is LOG_DIR the server's?).\n"
    )
    assert not log_dir.exists()


@pytest.mark.parametrize(
    ("locale", "message"),
    [
        (
            "en",
            "Error: The log goes to standard output (LOG_TO_STDOUT), not to a file: "
            "search your log collector for the reference.\n",
        ),
        (
            "zh_CN",
            "Error: 日志写到标准输出（LOG_TO_STDOUT），不写文件："
            "请在日志收集系统中搜索该错误编号。\n",
        ),
    ],
)
def test_a_log_on_standard_output_is_searched_elsewhere(make_app, log_dir, locale, message):
    app = make_app(LOG_TO_STDOUT=True, LOG_DIR=str(log_dir), ADMIN_LOCALE=locale)
    result = invoke(app, "show", "0123456789abcdef")
    assert result.exit_code == 1
    assert result.output == message


def test_undecodable_bytes_in_the_log_are_replaced(logging_app, log_dir):
    app = logging_app()
    log_file = log_dir / "blog.log"
    with open(log_file, "ab") as file:  # as a program writing Latin-1 into our log would
        file.write(
            b"2026-01-01 00:00:00,000 INFO: caf\xe9 [in /srv/menu.py:1] "
            b"[request cafe-latin-1 GET /menu from 127.0.0.1 user -]\n\xff\xfe\n"
        )
    reference = get(app, "/_test/fail")

    result = invoke(app, "show", "cafe-latin-1")
    assert result.exit_code == 0, result.output
    assert result.output == (
        "2026-01-01 00:00:00,000 INFO: caf\ufffd [in /srv/menu.py:1] "
        "[request cafe-latin-1 GET /menu from 127.0.0.1 user -]\n"
    )
    result = invoke(app, "show", reference)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == lines_of(reference, log_file)


def test_a_traceback_rotated_away_is_said_to_be_gone(logging_app, log_dir):
    app = logging_app(LOG_MAX_BYTES=1000, LOG_BACKUP_COUNT=1)
    first = get(app, "/_test/fail")
    # One rotated file kept: a few rotations later, no file has the first traceback.
    log_notes_until(
        app, lambda: not any(first in path.read_text() for path in log_dir.glob("blog.log*"))
    )
    repeat = get(app, "/_test/fail")
    result = invoke(app, "show", repeat)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        *lines_of(repeat, log_dir / "blog.log"),
        "",
        f"The traceback, logged with request {first}, is no longer in the log files.",
    ]


def test_a_path_cannot_pass_its_lines_off_as_another_requests(logging_app, log_dir):
    # A visitor who knows (or guesses) a reference writes it into a failing
    # URL, dressed as our own end of line, with a pointer to its traceback.
    app = logging_app()
    victim = get(app, "/_test/fail")
    forged = f" [in /srv/x.py:1] [request {victim} GET /admin from 203.0.113.9 user admin]"
    response = app.test_client().get(
        "/_test/fail-with/x" + forged + f" [traceback: see request {victim}]"
    )
    assert response.status_code == 500
    attacker = response.headers["X-Request-ID"]
    log_file = log_dir / "blog.log"
    # The path is written with its brackets as in a URL: nothing of it can end a line.
    assert (
        f"GET /_test/fail-with/x %5Bin /srv/x.py:1%5D %5Brequest {victim} " in log_file.read_text()
    )

    result = invoke(app, "show", victim)

    assert result.exit_code == 0, result.output
    assert "203.0.113.9" not in result.output
    assert all(victim in line for line in result.output.splitlines())
    assert result.output.splitlines()[0].endswith(
        f"[request {victim} GET /_test/fail from 127.0.0.1 user -]"
    )
    result = invoke(app, "show", attacker)
    assert result.exit_code == 0, result.output
    # Its own lines, its own traceback (a ValueError): no other request's.
    assert f"  {attacker} | ValueError: " in result.output
    assert f"  {victim} | " not in result.output
    assert "Several requests match" not in result.output

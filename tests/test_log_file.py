"""The log line's promises (app/reporting/log_file.py), in a real log file.

- Nothing a visitor sends can forge a line: control characters in the path,
  the query, a message or an exception are written escaped, and the only
  line breaks are a traceback's, each continuation line tagged.
- Every line of a record carries its reference, so that
  ``grep <reference> logs/blog.log*`` finds the traceback too.
- A bug's traceback is written once per window (per process); its repeats
  are still logged, each with its reference, pointing at the one that has it.

The same under real gunicorn workers: tests/test_error_storms.py.
"""

import io
import logging
import re
import time
from pathlib import Path

import pytest
from flask import Flask, request

from app.logger import init_logger
from app.reporting.fingerprint import fingerprint
from app.reporting.log_file import (
    CONTINUATION_LINE,
    FIRST_LINE_END,
    LogFileHandler,
    RequestFormatter,
    escape_controls,
)
from tests.failing_routes import add_failing_routes

pytestmark = pytest.mark.usefixtures("restore_logging")

RECORD_START = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL): "
)
CONTINUATION = re.compile(r"  (?P<reference>[A-Za-z0-9._:-]+) \| ")
FORGED = "2026-01-01 00:00:00,000 ERROR: forged"


def add_routes(app: Flask) -> None:
    @app.route("/echo/<path:anything>")
    def echo(anything):
        app.logger.warning("visited %s with %s", request.path, request.args.get("q", ""))
        return "ok"

    add_failing_routes(app)


@pytest.fixture
def log_file(tmp_path) -> Path:
    return tmp_path / "logs" / "blog.log"


def logged_app(make_app, log_file: Path, **overrides) -> Flask:
    # PROPAGATE_EXCEPTIONS off: a view's exception becomes the 500 page, as in production.
    app = make_app(LOG_DIR=str(log_file.parent), PROPAGATE_EXCEPTIONS=False, **overrides)
    add_routes(app)
    init_logger(app)
    return app


@pytest.fixture
def client(make_app, log_file):
    return logged_app(make_app, log_file, MAIL_ERROR_WINDOW=600).test_client()


def lines(log_file: Path) -> list[str]:
    return log_file.read_text(encoding="utf-8").split("\n")[:-1]


def assert_nothing_forged(log_file: Path) -> None:
    for line in lines(log_file):
        assert RECORD_START.match(line) or CONTINUATION.match(line), repr(line)


# --- Escaping -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("a\nb", r"a\nb"),
        ("a\r\nb", r"a\r\nb"),
        ("\x1b[31mred", r"\x1b[31mred"),
        ("tab\there", r"tab\there"),
        ("nul\x00", r"nul\x00"),
        ("del\x7f", r"del\x7f"),
        ("next line\x85", r"next line\x85"),
        ("line\u2028separator\u2029", r"line\u2028separator\u2029"),
        ("中文 ✓ café", "中文 ✓ café"),
        ("back\\slash", "back\\slash"),
    ],
)
def test_control_characters_are_written_as_python_writes_them(text, escaped):
    assert escape_controls(text) == escaped


def test_a_forged_line_in_the_path_and_the_query_stays_on_its_line(client, log_file):
    # A route matches no LF in the path (a 404, never logged), but CR and ESC.
    response = client.get(
        "/echo/x%0D%1B[2K" + FORGED.replace(" ", "%20"),
        query_string={"q": "\n" + FORGED + "\u2028"},
    )
    assert response.status_code == 200

    [line] = [line for line in lines(log_file) if "visited" in line]
    assert f"visited /echo/x\\r\\x1b[2K{FORGED} with \\n{FORGED}\\u2028 [in " in line
    # ...and in the request part of the line too, its brackets as in a URL.
    assert f"GET /echo/x\\r\\x1b%5B2K{FORGED} from 127.0.0.1" in line
    assert_nothing_forged(log_file)


def test_a_forged_line_in_a_failing_path_stays_on_its_line(client, log_file):
    # Flask's own "Exception on <path> [GET]" message carries the path.
    response = client.get(
        "/_test/fail-with/x%0D" + FORGED.replace(" ", "%20"), query_string={"more": "\n" + FORGED}
    )
    assert response.status_code == 500
    reference = response.headers["X-Request-ID"]

    text = log_file.read_text()
    assert f"ERROR: Exception on /_test/fail-with/x\\r{FORGED} [GET]" in text
    # The exception's message is part of the traceback: its line break is
    # one of the record's, so the rest is a tagged continuation line.
    assert (
        f"\n  {reference} | ValueError: bad input x\\r{FORGED}\n  {reference} | {FORGED}\n" in text
    )
    assert_nothing_forged(log_file)


# --- Every line carries the reference -------------------------------------------


def test_every_line_of_a_500_carries_its_reference(client, log_file):
    response = client.get("/_test/fail")
    reference = response.headers["X-Request-ID"]

    record = [line for line in lines(log_file) if reference in line]
    first, *traceback = record
    assert RECORD_START.match(first)
    assert first.endswith(f"[request {reference} GET /_test/fail from 127.0.0.1 user -]")
    assert traceback[0] == f"  {reference} | Traceback (most recent call last):"
    assert traceback[-1] == f"  {reference} | ZeroDivisionError: division by zero"
    assert all(line.startswith(f"  {reference} | ") for line in traceback)
    # Nothing of the record is left without it.
    assert len(record) == len(lines(log_file)) - 1  # all but the startup line


def test_a_record_outside_a_request_tags_its_lines_with_a_dash(make_app, log_file):
    app = logged_app(make_app, log_file, MAIL_ERROR_WINDOW=600)
    for _ in range(2):
        try:
            {}["missing"]
        except KeyError:
            app.logger.exception("Cleaning up failed")

    text = log_file.read_text()
    # No reference to point at: outside a request, every traceback is written.
    assert text.count("  - | Traceback (most recent call last):\n") == 2
    assert text.count("  - | KeyError: 'missing'\n") == 2
    assert_nothing_forged(log_file)


def test_a_stack_is_tagged_like_a_traceback(make_app, log_file):
    app = logged_app(make_app, log_file)
    app.logger.error("Where am I?", stack_info=True)

    first, *stack = lines(log_file)[1:]
    assert "ERROR: Where am I? [in " in first
    assert stack[0] == "  - | Stack (most recent call last):"
    assert all(line.startswith("  - | ") for line in stack)


def test_secrets_are_redacted_in_continuation_lines_too(make_app, log_file):
    app = logged_app(make_app, log_file, SECRET_KEY="a-secret-nobody-may-read")
    client = app.test_client()
    client.get("/_test/fail-with/a-secret-nobody-may-read")

    text = log_file.read_text()
    assert "a-secret-nobody-may-read" not in text
    assert "| ValueError: bad input [redacted]" in text


# --- One traceback per bug per window -------------------------------------------


def test_a_repeat_points_at_the_reference_that_has_the_traceback(client, log_file):
    first, second, third = (client.get("/_test/fail").headers["X-Request-ID"] for _ in range(3))

    text = log_file.read_text()
    assert text.count("Traceback (most recent call last)") == 1
    assert f"  {first} | ZeroDivisionError: division by zero" in text
    for repeat in (second, third):
        [line] = [line for line in lines(log_file) if repeat in line]
        assert (
            f"ERROR: Exception on /_test/fail [GET] [traceback: see request {first}] [in " in line
        )
        assert line.endswith(f"[request {repeat} GET /_test/fail from 127.0.0.1 user -]")


def test_each_bug_gets_its_own_traceback(client, log_file):
    for path in (
        "/_test/fail",
        "/_test/fail-differently",
        "/_test/fail",
        "/_test/fail-differently",
    ):
        client.get(path)

    text = log_file.read_text()
    assert text.count("Traceback (most recent call last)") == 2
    assert text.count("| ZeroDivisionError: division by zero\n") == 1
    assert text.count("| KeyError: 'missing'\n") == 1


def test_the_traceback_is_written_again_once_the_window_has_passed(make_app, log_file):
    client = logged_app(make_app, log_file, MAIL_ERROR_WINDOW=1).test_client()
    first = client.get("/_test/fail").headers["X-Request-ID"]
    client.get("/_test/fail")
    time.sleep(1.1)
    third = client.get("/_test/fail").headers["X-Request-ID"]

    text = log_file.read_text()
    assert text.count("Traceback (most recent call last)") == 2
    assert f"  {first} | Traceback" in text
    assert f"  {third} | Traceback" in text


@pytest.mark.parametrize(("window", "tracebacks"), [({}, 3), ({"repeat_window": 600}, 1)])
def test_a_formatter_without_a_window_writes_every_traceback(app, window, tracebacks):
    # RequestFormatter's own default, for a project that wants every one.
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RequestFormatter([], **window))
    logger = logging.getLogger("test.formatter")
    logger.addHandler(handler)
    try:
        for _ in range(3):
            with app.test_request_context("/_test/fail"):
                try:
                    {}["missing"]
                except KeyError:
                    logger.exception("Failed")
    finally:
        logger.removeHandler(handler)

    assert stream.getvalue().count("Traceback (most recent call last)") == tracebacks


def test_standard_output_gets_the_same_lines(make_app, log_file, capsys):
    client = logged_app(make_app, log_file, LOG_TO_STDOUT=True).test_client()
    response = client.get("/_test/fail-with/x%0D" + FORGED.replace(" ", "%20"))
    reference = response.headers["X-Request-ID"]

    out = capsys.readouterr().out
    assert f"ERROR: Exception on /_test/fail-with/x\\r{FORGED} [GET]" in out
    assert f"  {reference} | ValueError: bad input x\\r{FORGED}\n" in out
    for line in out.splitlines():
        assert RECORD_START.match(line) or CONTINUATION.match(line), repr(line)
    assert not log_file.exists()


def test_other_libraries_records_are_escaped_too(make_app, log_file):
    logged_app(make_app, log_file, LOG_EXTRA_LOGGERS="some.library")
    logging.getLogger("some.library").warning("a library says %s", "one\ntwo")

    [line] = [line for line in lines(log_file) if "a library says" in line]
    assert "a library says one\\ntwo [in " in line
    assert_nothing_forged(log_file)


def test_a_formatter_remembers_at_most_a_thousand_bugs():
    formatter = RequestFormatter([], repeat_window=600)
    for number in range(2500):  # 2,500 bugs, each logged from its own line
        record = logging.LogRecord("app", logging.ERROR, "x.py", number, "bug", (), None)
        record.request_id = f"ref-{number}"  # as format() sets it
        formatter.traceback_logged_before(record)
        assert len(formatter.tracebacks) <= 1000
    # The most recent one is still known.
    assert formatter.traceback_logged_before(record) == "ref-2499"


def test_what_the_log_writes_is_what_flask_errors_reads(client, log_file):
    first, repeat = (client.get("/_test/fail").headers["X-Request-ID"] for _ in range(2))
    forged = client.get(f"/_test/fail-with/x] [in /srv/x.py:1] [request {first} GET /]")
    text = log_file.read_text()
    assert "x%5D %5Bin /srv/x.py:1%5D %5Brequest " in text

    by_reference: dict[str, list[str]] = {}
    for line in lines(log_file):
        tag = CONTINUATION_LINE.match(line) or FIRST_LINE_END.search(line)
        assert tag, line  # every line is one of ours, and names its request
        by_reference.setdefault(tag["reference"], []).append(line)
    assert len(by_reference[first]) > 2  # the first line and the traceback
    [repeat_line] = by_reference[repeat]
    assert FIRST_LINE_END.search(repeat_line)["earlier"] == first
    [forged_first, *forged_traceback] = by_reference[forged.headers["X-Request-ID"]]
    assert FIRST_LINE_END.search(forged_first)["earlier"] is None
    assert forged_traceback


def test_an_exception_never_raised_still_has_its_line(make_app, log_file):
    app = logged_app(make_app, log_file)
    error = ValueError("made, not raised")
    app.logger.error("Found a problem", exc_info=(ValueError, error, None))

    assert lines(log_file)[-1] == "  - | ValueError: made, not raised"


def test_a_traceback_and_a_stack_each_start_their_own_lines(make_app, log_file):
    app = logged_app(make_app, log_file)
    try:
        {}["missing"]
    except KeyError:
        app.logger.exception("Failed", stack_info=True)

    logged = lines(log_file)
    at = logged.index("  - | KeyError: 'missing'")
    assert logged[at + 1] == "  - | Stack (most recent call last):"


def test_a_record_that_cannot_be_formatted_is_reported_as_logging_does(make_app, log_file, capsys):
    # Not the file's fault (a bug in a logging call): logging's own report, every time.
    logged_app(make_app, log_file, LOG_EXTRA_LOGGERS="some.library")
    library = logging.getLogger("some.library")
    library.propagate = False  # pytest's own handler would raise instead of reporting
    for _ in range(2):
        library.warning("%d users", "many")

    err = capsys.readouterr().err
    assert err.count("--- Logging error ---") == 2
    assert "TypeError: %d format: a real number is required, not str" in err
    assert "Cannot write the log file" not in err  # the file is fine


def test_a_replaced_log_handler_is_closed(make_app, log_file):
    app = logged_app(make_app, log_file)
    [old] = [handler for handler in app.logger.handlers if isinstance(handler, LogFileHandler)]
    assert old.stream is not None

    init_logger(app)  # documented to replace what it installed

    assert old.stream is None  # its file closed, not left open behind the new one
    [new] = [handler for handler in app.logger.handlers if isinstance(handler, LogFileHandler)]
    assert new is not old


def test_closing_on_a_full_disk_raises_nothing(tmp_path):
    (tmp_path / "blog.log").symlink_to("/dev/full")
    handler = LogFileHandler(str(tmp_path / "blog.log"), maxBytes=1000, backupCount=1)
    handler.stream = handler.do_open()  # as the first write opens it
    handler.stream.write("a line the disk has no room for\n")  # still in the buffer

    handler.close()  # flushing fails with ENOSPC; a new handler must still take over


def test_a_full_memory_forgets_the_expired_tracebacks_first():
    formatter = RequestFormatter([], repeat_window=600)
    formatter.tracebacks = {f"expired-{n}": (f"old-{n}", 0.0) for n in range(990)}
    formatter.tracebacks |= {f"current-{n}": (f"new-{n}", 4e9) for n in range(10)}
    record = logging.LogRecord("app", logging.ERROR, "x.py", 1, "bug", (), None)
    record.request_id = "the-newest"

    formatter.traceback_logged_before(record)

    assert sorted(formatter.tracebacks) == sorted(
        [f"current-{n}" for n in range(10)] + [fingerprint(record)]
    )

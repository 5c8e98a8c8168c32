"""Error storms, end to end: real gunicorn workers, a real SMTP server, the real log files.

What storm control and the log promise when a bug is hit again and again:

- the first occurrence is mailed at once and the repeats arrive as one
  summary with their exact count, even when the worker that mailed the first
  one was recycled (max_requests) or killed, or the whole app restarted, and
  even when the mail server refused the summary for a while;
- the log keeps the history through a storm: every reference is in the files,
  the traceback once per worker process and window, each repeat pointing at
  the reference that has it, and the lines logged before the storm are still
  there;
- nothing a visitor sends forges a log line;
- a client can't choose its reference unless a proxy we were told about sets
  it; and `grep <reference> blog.log*` finds the request and its traceback.

The storms use a short MAIL_ERROR_WINDOW, so that their windows close within
seconds. Each mail's Message-ID names the process that sent it (Python's
`make_msgid`), which tells whether a summary came from a worker that was
there during the storm or from one that took its place.
"""

import email
import http.client
import os
import re
import signal
import sqlite3
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import closing, contextmanager
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from tests.servers import (
    Gunicorn,
    Mailbox,
    free_port,
    production_env,
    run_gunicorn,
    smtp_server,
    wait_until,
)

# Every test here starts real servers or processes: `make test-fast` skips them.
pytestmark = pytest.mark.system

ADMIN = "admin@example.com"
BUG = "ZeroDivisionError: division by zero"
TRACEBACK = "Traceback (most recent call last):"
# For an app whose database has no tables: every page that reads it fails, so
# gunicorn's readiness is probed on a file that needs no database.
STATIC_FILE = "/bootstrap/static/css/bootstrap.min.css"
# Each check of a summary's arrival may wait this long: a window, the outbox's
# next look at it, a worker booting on a busy machine. It only bounds a
# failing test.
MAIL_TIMEOUT = 60

# Every line of a log file is the start of a record or one of its continuations.
RECORD_START = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL): "
)
CONTINUATION = re.compile(r"  [A-Za-z0-9._:-]+ \| ")
# How an escaped control character looks in the log: \r, \n, \x1b, \u2028.
ESCAPE = re.compile(r"\\(r|n|t|x[0-9a-f]{2}|u[0-9a-f]{4})")
GENERATED_ID = re.compile(r"[0-9a-f]{32}")  # uuid4().hex


# --- Helpers ------------------------------------------------------------------


def get(url: str, headers: dict | None = None) -> tuple[int, dict, str]:
    """GET `url`; return the status, the headers and the body, whatever the status."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), error.read().decode()


def fail(server: Gunicorn) -> str:
    """Hit the bug once; return the reference the user was given."""
    status, headers, page = get(server.url + "/_test/fail")
    assert status == 500, page
    return headers["X-Request-ID"]


def subject_of(reference: str) -> str:
    """The subject of the mail about the bug's occurrence `reference`."""
    return f"[Blog] {BUG} (error {reference})"


def summary_subject(reference: str, repeats: int) -> str:
    """The subject of the summary of `repeats` more occurrences after the mail
    about `reference`."""
    return f"{subject_of(reference)} [repeated {repeats} times]"


def storm_subjects(first: str, repeats: int) -> list[str]:
    """The subjects of the mails one storm makes, and of no more: the one about
    its first occurrence `first`, then the summary of the `repeats` after it."""
    return [subject_of(first), summary_subject(first, repeats)]


def subjects(messages: list[EmailMessage]) -> list[str]:
    """The subjects of `messages`, in the order they arrived."""
    return [message["Subject"] for message in messages]


def sender_pid(message: EmailMessage) -> int:
    """The process that sent `message`: make_msgid writes <time.pid.random@domain>."""
    return int(message["Message-ID"].strip("<>").split(".")[1])


def worker_pids(server: Gunicorn) -> set[int]:
    """The pids of gunicorn's workers right now: the master's children."""
    done = subprocess.run(
        ["ps", "--ppid", str(server.process.pid), "-o", "pid="],
        capture_output=True,
        text=True,
    )
    return {int(pid) for pid in done.stdout.split()}


def booted_workers(server: Gunicorn) -> set[int]:
    """Every worker gunicorn has started so far, from its own output."""
    return {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", server.log())}


def occurrences_stored(log_dir: Path) -> int:
    """How many occurrences of all bugs the shared store has counted."""
    with closing(sqlite3.connect(log_dir / "errors.sqlite3")) as db:
        return sum(total for (total,) in db.execute("SELECT total FROM error_groups"))


def wait_for_count(log_dir: Path, total: int) -> None:
    """Wait until the shared store has counted `total` occurrences in all.

    A worker counts in memory first: until its count is in the store, the
    count dies with the worker.
    """
    wait_until(lambda: occurrences_stored(log_dir) == total, message=f"a count of {total}")


def log_files(log_dir: Path) -> list[Path]:
    """The log file and its rotated copies, by name (not oldest first)."""
    return sorted(log_dir.glob("blog.log*"))


def log_text(log_dir: Path) -> str:
    """Everything the log files hold, for tests that search it, not read it in order."""
    return "".join(path.read_text(encoding="utf-8") for path in log_files(log_dir))


def mail_env(tmp_path: Path, database_url: str, port: int, window: int, **settings) -> dict:
    """Production settings mailing ADMIN through the server on `port`."""
    return production_env(
        tmp_path,
        database_url,
        ADMINS=ADMIN,
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=port,
        MAIL_TIMEOUT=5,
        MAIL_ERROR_WINDOW=window,
        **settings,
    )


def fail_repeatedly(server: Gunicorn, mailbox: Mailbox, repeats: int) -> str:
    """Hit the bug once and wait for its mail, then `repeats` times more; return
    the first one's reference.

    The repeats come after the first mail went out, inside its window: all they
    may add is one summary.
    """
    first = fail(server)
    mailbox.wait_for(1)
    for _ in range(repeats):
        fail(server)
    return first


class FickleMailbox(Mailbox):
    """A mailbox whose server refuses every mail (451, try again later) while
    `refusing` is set, as a provider does when it throttles a sender."""

    def __init__(self):
        super().__init__()
        self.refusing = False
        self.refused: list[EmailMessage] = []

    async def handle_DATA(self, server, session, envelope):
        if self.refusing:
            self.refused.append(email.message_from_bytes(envelope.content, policy=policy.default))
            return "451 4.3.0 try again later"
        return await super().handle_DATA(server, session, envelope)


@contextmanager
def fickle_smtp_server() -> Iterator[tuple[int, FickleMailbox]]:
    """A plain SMTP server on 127.0.0.1 that refuses mail when told to; (port, mailbox)."""
    mailbox = FickleMailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, mailbox
    finally:
        controller.stop()


# --- The summary outlives the worker that mailed the first occurrence ----------


def test_the_summary_arrives_though_the_worker_that_mailed_first_was_recycled(
    tmp_path, fresh_database_url
):
    repeats = 7
    with smtp_server("plain", tmp_path) as smtp:
        env = mail_env(
            tmp_path,
            fresh_database_url,
            smtp.port,
            window=6,
            # Each worker is replaced after 3 requests, so that the storm's
            # workers are all gone before its window closes.
            GUNICORN_CMD_ARGS="--max-requests 3 --max-requests-jitter 0",
        )
        with run_gunicorn(env, tmp_path, workers=2) as server:
            first = fail_repeatedly(server, smtp.mailbox, repeats)
            mailed = smtp.mailbox.messages[0]
            assert mailed["Subject"] == subject_of(first)
            # Every worker so far, those recycled during the storm included.
            stormed = worker_pids(server) | booted_workers(server)
            assert sender_pid(mailed) in stormed

            def all_recycled() -> bool:
                if not worker_pids(server) & stormed:
                    return True
                assert get(server.url + "/healthz")[0] == 200  # one request closer
                return False

            # Before the window closes, every worker of the storm is replaced
            # by one that has seen no error: the summary can only come from those.
            wait_until(all_recycled, timeout=60, message="the workers of the storm recycled")
            _, summary = smtp.mailbox.wait_for(2, timeout=MAIL_TIMEOUT)
            assert server.stop() == 0
        assert subjects(smtp.mailbox.messages) == storm_subjects(first, repeats)
    assert sender_pid(summary) not in stormed


def test_the_summary_arrives_though_the_workers_of_the_storm_were_killed(
    tmp_path, fresh_database_url
):
    repeats = 9
    log_dir = tmp_path / "logs"
    with smtp_server("plain", tmp_path) as smtp:
        env = mail_env(tmp_path, fresh_database_url, smtp.port, window=6)
        with run_gunicorn(env, tmp_path, workers=2) as server:
            first = fail_repeatedly(server, smtp.mailbox, repeats)
            # The repeats were counted in the workers' memory; once they are
            # in the shared store, nothing is lost with the processes.
            wait_for_count(log_dir, 1 + repeats)
            wait_until(lambda: len(worker_pids(server)) == 2, message="both workers up")
            stormed = worker_pids(server)
            assert len(smtp.mailbox.messages) == 1  # the window is still open
            for pid in stormed:
                os.kill(pid, signal.SIGKILL)  # no worker_exit, no atexit, nothing
            wait_until(
                lambda: len(worker_pids(server) - stormed) == 2,
                timeout=120,
                message="gunicorn replacing the killed workers",
            )
            _, summary = smtp.mailbox.wait_for(2, timeout=MAIL_TIMEOUT)
            assert server.stop() == 0
        assert subjects(smtp.mailbox.messages) == storm_subjects(first, repeats)
    assert sender_pid(summary) not in stormed


def test_the_summary_arrives_after_a_restart_of_the_whole_app(tmp_path, fresh_database_url):
    repeats = 5
    log_dir = tmp_path / "logs"
    with smtp_server("plain", tmp_path) as smtp:
        env = mail_env(tmp_path, fresh_database_url, smtp.port, window=6)
        with run_gunicorn(env, tmp_path, workers=2) as before:
            first = fail_repeatedly(before, smtp.mailbox, repeats)
            wait_for_count(log_dir, 1 + repeats)
            assert before.stop() == 0  # SIGTERM, as a deploy or a reboot sends it
        # Stopped while the window was still open: nobody has sent the summary.
        assert len(smtp.mailbox.messages) == 1

        # The app comes back and nobody hits the bug again; only the readiness
        # probe reaches it.
        with run_gunicorn(env, tmp_path, workers=2, upgrade=False) as after:
            smtp.mailbox.wait_for(2, timeout=MAIL_TIMEOUT)
            assert after.stop() == 0
        assert subjects(smtp.mailbox.messages) == storm_subjects(first, repeats)


# --- A summary the mail server refused ----------------------------------------


def test_a_refused_summary_loses_no_count(tmp_path, fresh_database_url):
    """The server takes the first mail, then refuses everything for a while:
    the summary and the next occurrence's mail fail; once it accepts again,
    one mail carries every occurrence no mail has reported."""
    before_refusal, during_refusal = 4, 3
    log_dir = tmp_path / "logs"
    with fickle_smtp_server() as (port, mailbox):
        # RETRY_AFTER is min(60 s, window): retries come every 2 s.
        env = mail_env(tmp_path, fresh_database_url, port, window=2)
        # One worker, so that the occurrences reach storm control in the order sent.
        with run_gunicorn(env, tmp_path, workers=1) as server:
            first = fail(server)
            mailbox.wait_for(1)
            mailbox.refusing = True
            for _ in range(before_refusal):
                fail(server)
            refused_summary = summary_subject(first, before_refusal)
            wait_until(
                lambda: f"Error mail {refused_summary!r} not sent: rejected" in log_text(log_dir),
                timeout=MAIL_TIMEOUT,
                message="the summary refused",
            )

            # The window has closed: the next occurrence is mailed, and refused too.
            reopened = fail(server)
            for _ in range(during_refusal - 1):
                fail(server)
            wait_until(
                lambda: (
                    f"Error mail {subject_of(reopened)!r} not sent: rejected" in log_text(log_dir)
                ),
                timeout=MAIL_TIMEOUT,
                message="the next occurrence's mail refused",
            )
            total = 1 + before_refusal + during_refusal
            wait_for_count(log_dir, total)
            assert refused_summary in subjects(mailbox.refused)
            assert subject_of(reopened) in subjects(mailbox.refused)

            mailbox.refusing = False
            mailbox.wait_for(2, timeout=MAIL_TIMEOUT)
            assert server.stop() == 0
    # The summary names the latest mail about the bug, the refused one.
    assert subjects(mailbox.messages) == [
        subject_of(first),
        summary_subject(reopened, before_refusal + during_refusal),
    ]


# --- The log through a storm ----------------------------------------------------


def test_a_storm_of_ten_thousand_errors_keeps_the_history(tmp_path, fresh_database_url):
    """The default rotation (LOG_MAX_BYTES, LOG_BACKUP_COUNT) is left as it is:
    what is kept of the history is what a real deployment keeps."""
    storm, concurrency, marker = 10_000, 8, 424242
    log_dir = tmp_path / "logs"
    # Mail off (no MAIL_SERVER): the log is what this is about. One window for
    # the whole storm, so that each worker process logs the traceback once.
    env = production_env(tmp_path, fresh_database_url, MAIL_ERROR_WINDOW=600)
    references: list[str] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def client(count: int, host: str, port: int) -> None:
        """Hit the bug `count` times over one connection; keep the statuses and references."""
        connection = http.client.HTTPConnection(host, port, timeout=60)
        mine, codes = [], []
        try:
            for _ in range(count):
                # Reconnects by itself when the sync worker closes the connection.
                connection.request("GET", "/_test/fail")
                response = connection.getresponse()
                response.read()
                codes.append(response.status)
                mine.append(response.getheader("X-Request-ID"))
        finally:
            connection.close()
            with lock:
                references.extend(mine)
                statuses.extend(codes)

    with run_gunicorn(env, tmp_path, workers=2) as server:
        assert get(f"{server.url}/_test/log/{marker}")[0] == 200
        host, port = server.url.removeprefix("http://").split(":")
        clients = [
            threading.Thread(target=client, args=(storm // concurrency, host, int(port)))
            for _ in range(concurrency)
        ]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        assert server.stop() == 0
    assert statuses == [500] * storm
    assert len(set(references)) == storm

    text = log_text(log_dir)
    assert f"numbered line {marker:06d}" in text
    logged = set(re.findall(r"\[request ([0-9a-f]{32}) GET /_test/fail from ", text))
    assert set(references) <= logged, f"{len(set(references) - logged)} references lost"

    # The traceback once per worker process (max_requests recycles them during
    # the storm), each with the reference of the request that had it.
    with_traceback = re.findall(rf"^  ([0-9a-f]{{32}}) \| {re.escape(TRACEBACK)}$", text, re.M)
    assert text.count(TRACEBACK) == len(with_traceback) == len(set(with_traceback))
    assert 1 <= len(with_traceback) <= len(booted_workers(server))
    for reference in with_traceback:
        assert f"  {reference} | {BUG}\n" in text
    # Every repeat says where its traceback is, and it is there.
    pointed_at = re.findall(r"\[traceback: see request ([0-9a-f]{32})\]", text)
    assert len(pointed_at) == storm - len(with_traceback)
    assert set(pointed_at) <= set(with_traceback)


# --- Nobody forges a log line ----------------------------------------------------


def test_no_request_forges_a_log_line(tmp_path, fresh_database_url):
    """Control characters a visitor puts in a URL or a header end up escaped.

    The database is left without its tables, so that every page that reads it
    fails: a 500, logged with its traceback, on a path the visitor chose
    (/_test/fail's path is fixed; its query string isn't logged). A proxy
    is declared, so the client's X-Forwarded-For becomes the logged address.
    """
    forged = "2026-01-01 00:00:00,000 ERROR: forged"
    quoted = urllib.parse.quote(forged, safe=":,")
    # Line breaks and a terminal escape, as a URL carries them, and as they look escaped.
    breaks = {
        "%0D%0A": r"\r\n",
        "%0A": r"\n",
        "%1B[31m": r"\x1b[31m",
        "%C2%85": r"\x85",  # NEL
        "%E2%80%A8": r"\u2028",  # LINE SEPARATOR
    }
    log_dir = tmp_path / "logs"
    env = production_env(tmp_path, fresh_database_url, PROXY_COUNT=1)
    with run_gunicorn(env, tmp_path, workers=1, upgrade=False, ready_path=STATIC_FILE) as server:
        host, port = server.url.removeprefix("http://").split(":")

        def status_of(path: str, headers: dict | None = None) -> int:
            """GET `path`, exactly as written, with `headers`; return the status."""
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            try:
                connection.request("GET", path, headers=headers or {})
                response = connection.getresponse()
                response.read()
                return response.status
            finally:
                connection.close()

        for raw in breaks:
            assert status_of(f"/user/{raw}{quoted}") == 500
            assert status_of(f"/no/such/page/{raw}{quoted}") == 404
            assert status_of(f"/_test/fail?x={raw}{quoted}") == 500
        # Header values can't hold CR or LF over HTTP; a C1 control or a Unicode
        # line separator they can (gunicorn answers 400 to the C0 ones).
        # (No comma in it: the proxy's header is a comma-separated list.)
        address = forged.replace(",", ".")
        for value in ("\x85" + address, "\u2028".encode() + address.encode()):
            assert status_of("/_test/fail", {"X-Forwarded-For": value}) == 500
        assert server.stop() == 0

    text = log_text(log_dir)
    lines = text.splitlines()
    for line in lines:
        assert RECORD_START.match(line) or CONTINUATION.match(line), repr(line)
    for escaped in breaks.values():
        assert f"ERROR: Exception on /user/{escaped}{forged} [GET]" in text
    assert [line for line in lines if line.startswith("2026-01-01 00:00:00")] == []
    # "forged" is only ever in a line where an escaped control character comes before it.
    forging = [line for line in lines if "forged" in line]
    assert len(forging) == len(breaks) + 2
    for line in forging:
        assert ESCAPE.search(line[: line.index("forged")]), line


# --- The reference: who chooses it, and what it finds ----------------------------


def test_a_clients_reference_is_ignored_unless_a_proxy_is_declared(tmp_path, fresh_database_url):
    chosen = "client-chosen-reference-0001"
    for proxies in (0, 1):
        folder = tmp_path / f"proxies-{proxies}"
        log_dir = folder / "logs"
        env = production_env(folder, fresh_database_url, PROXY_COUNT=proxies)
        with run_gunicorn(env, folder, workers=1) as server:
            status, headers, page = get(server.url + "/_test/fail", {"X-Request-ID": chosen})
            assert server.stop() == 0
        assert status == 500
        reference = headers["X-Request-ID"]
        text = log_text(log_dir)
        if proxies == 0:
            # Anyone could send the header: the app makes its own reference.
            assert GENERATED_ID.fullmatch(reference), reference
            assert chosen not in page
            assert chosen not in text
        else:
            # A proxy we were told about set it: its log and ours show the same reference.
            assert reference == chosen
        assert f"<code>{reference}</code>" in page
        assert f"[request {reference} GET /_test/fail from 127.0.0.1 user -]" in text
        assert f"  {reference} | {BUG}\n" in text


def test_grep_for_a_reference_prints_the_request_and_its_traceback(tmp_path, fresh_database_url):
    log_dir = tmp_path / "logs"
    env = production_env(tmp_path, fresh_database_url)
    with run_gunicorn(env, tmp_path, workers=1) as server:
        reference = fail(server)
        repeat = fail(server)
        assert server.stop() == 0

    def grep(text: str) -> list[str]:
        """What the README tells the admin to type, in the log directory."""
        found = subprocess.run(
            f"grep {text} blog.log*", shell=True, cwd=log_dir, capture_output=True, text=True
        )
        assert found.returncode == 0, found.stderr
        return found.stdout.splitlines()

    # A repeat is one line, which names the reference to grep for next.
    [repeat_line] = grep(repeat)
    assert (
        f"Exception on /_test/fail [GET] [traceback: see request {reference}] [in " in repeat_line
    )
    # The first's reference finds its own lines first, then the repeat's line
    # again, by its pointer: what is left is the first request's own.
    found = grep(reference)
    assert found[0] != repeat_line
    assert repeat_line in found
    lines = [line for line in found if line != repeat_line]
    assert re.fullmatch(
        rf"{RECORD_START.pattern}Exception on /_test/fail \[GET\] \[in \S+:\d+\] "
        rf"\[request {reference} GET /_test/fail from 127\.0\.0\.1 user -\]",
        lines[0],
    ), lines[0]
    assert lines[1] == f"  {reference} | {TRACEBACK}"
    assert lines[-1] == f"  {reference} | {BUG}"
    assert all(line.startswith(f"  {reference} | ") for line in lines[1:])
    # The line of code that raised, as the traceback quotes it.
    assert f"  {reference} |     return str(1 / 0)" in lines

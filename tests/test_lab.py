"""`flask lab NAME`: every experiment of the fault lab, run as a learner runs it.

Each run is `python -m flask lab NAME --json` in a process of its own, in the
project's folder, in development, with the learner's own database (migrated
and filled by `flask db upgrade` and `flask seed`) and log folder. The tests
read its report and assert what the user got (status, page, headers) and what
the operator got (log records, mails, Sentry events, findings); then that the
learner's database, log folder and temporary folder are as they were.

A run takes seconds (it builds a blog, starts a mail server and waits for
mails), so every run of the module is started once, at the start, several at
a time (`lab_runs`), and the tests read their results as they finish.
"""

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from html import unescape
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, select
from sqlalchemy.pool import NullPool

from app.reporting import STORE_FILE
from tests.databases import fresh_database
from tests.pages import form_errors, page_text
from tests.servers import ROOT, SMTPServer, clean_env, flask_command, smtp_server

pytestmark = pytest.mark.system

# The learner's own admin address, for --real-mail.
LEARNER_ADMIN = "you@example.com"
# Where the lab's blog sends its mails when the learner has no server of their own.
LAB_ADMIN = "admin@lab.example"
APP_500_HEADING = "An unexpected error has occurred"
ZERO_DIVISION = "ZeroDivisionError: division by zero"
FAILING_PAGE = "/lab-faults/average-words"
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
STARTUP_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO: Blog startup \(pid \d+\) "
    r"\[in .*app/logger\.py:\d+\] \[request -\]$"
)
CJK = re.compile("[\u4e00-\u9fff]")
EXPERIMENT_NAMES = (
    "'unhandled', 'double-fault', 'username-race', 'mail-tarpit', 'error-storm', "
    "'database-down', 'bad-input', 'debug-mode'"
)
DEVELOPMENT_ONLY = (
    "Error: The lab runs in development only (FLASK_CONFIG=development): it starts "
    "servers and breaks things on purpose."
)
REAL_MAIL_REFUSED = (
    "Error: --real-mail needs MAIL_SERVER and ADMINS set (in .env): they say where to send."
)
PRODUCTION_SECRET = "a-test-secret-that-is-long-enough-for-production"


@dataclass(frozen=True)
class Command:
    """One `flask lab` run: its arguments, and what it changes in the learner's environment."""

    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    # False for a run refused before any lab is made: it leaves no folder at all.
    makes_lab: bool = True


# The experiments, each run once; the tests below share their reports.
EXPERIMENT_RUNS = {
    "unhandled": Command(("unhandled", "--json")),
    "double-fault": Command(("double-fault", "--json")),
    "username-race": Command(("username-race", "--json")),
    "mail-tarpit": Command(("mail-tarpit", "--json")),
    "storm-of-20": Command(("error-storm", "--count", "20", "--json")),
    "storm-of-1": Command(("error-storm", "--count", "1", "--json")),
    "database-down": Command(("database-down", "--json")),
    "bad-input": Command(("bad-input", "--json")),
    "debug-mode": Command(("debug-mode", "--json")),
    "bad-input-in-chinese": Command(("bad-input", "--json", "--lang", "zh_CN")),
    "bad-input-as-text": Command(("bad-input",)),
    "bad-input-logging-to-stdout": Command(("bad-input", "--json"), {"LOG_TO_STDOUT": "1"}),
}

# Configs that are not development, and environments that try to turn the lab on anyway.
CONFIG_REFUSALS = {
    "testing": {"FLASK_CONFIG": "testing"},
    "production": {"FLASK_CONFIG": "production", "SECRET_KEY": PRODUCTION_SECRET},
    "testing-with-LAB_ENABLED": {"FLASK_CONFIG": "testing", "LAB_ENABLED": "1"},
    "production-with-LAB_ENABLED": {
        "FLASK_CONFIG": "production",
        "SECRET_KEY": PRODUCTION_SECRET,
        "LAB_ENABLED": "1",
    },
}

# Arguments click refuses (exit status 2), and the error line it prints for each.
USAGE_ERRORS = {
    "unknown-name": (("nope",), f"'nope' is not one of {EXPERIMENT_NAMES}."),
    "empty-name": (("",), f"'' is not one of {EXPERIMENT_NAMES}."),
    "name-in-capitals": (("Unhandled",), f"'Unhandled' is not one of {EXPERIMENT_NAMES}."),
    "no-name": ((), "Missing argument"),
    "count-0": (("error-storm", "--count", "0"), "'--count': 0 is not in the range 1<=x<=500."),
    "count-501": (
        ("error-storm", "--count", "501"),
        "'--count': 501 is not in the range 1<=x<=500.",
    ),
    "count-negative": (
        ("error-storm", "--count", "-1"),
        "'--count': -1 is not in the range 1<=x<=500.",
    ),
    "count-word": (
        ("error-storm", "--count", "abc"),
        "'--count': 'abc' is not a valid integer range.",
    ),
    "count-float": (
        ("error-storm", "--count", "1e3"),
        "'--count': '1e3' is not a valid integer range.",
    ),
    "count-empty": (
        ("error-storm", "--count", ""),
        "'--count': '' is not a valid integer range.",
    ),
    # Python's int() reads "1_000" as 1000: still over the limit.
    "count-underscored": (
        ("error-storm", "--count", "1_000"),
        "'--count': 1000 is not in the range 1<=x<=500.",
    ),
    # Over Python's limit on the digits of an int (4300): refused, not a crash.
    "count-huge": (
        ("error-storm", "--count", "9" * 5000),
        f"'--count': '{'9' * 5000}' is not a valid integer range.",
    ),
    "unknown-language": (
        ("unhandled", "--lang", "xx"),
        "'--lang': 'xx' is not one of 'en', 'zh_CN'.",
    ),
    "language-with-hyphen": (
        ("unhandled", "--lang", "zh-CN"),
        "'--lang': 'zh-CN' is not one of 'en', 'zh_CN'.",
    ),
}

# --real-mail without a complete mail setup of the learner's own.
REAL_MAIL_REFUSALS = {
    "no-mail-server": {},
    "no-admins": {"MAIL_SERVER": "127.0.0.1"},
    "no-mail-server-but-admins": {"ADMINS": LEARNER_ADMIN},
}


def all_commands(smtp: SMTPServer) -> dict[str, Command]:
    """Every run of the module, by name (the refusals' names say what is refused)."""
    commands = dict(EXPERIMENT_RUNS)
    # The learner's own mail server: the test's SMTP server, plain SMTP on 127.0.0.1.
    commands["real-mail"] = Command(
        ("unhandled", "--json", "--real-mail"),
        {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": str(smtp.port), "ADMINS": LEARNER_ADMIN},
    )
    for name, env in CONFIG_REFUSALS.items():
        commands[f"config-{name}"] = Command(("unhandled", "--json"), env, makes_lab=False)
    for name, (args, _) in USAGE_ERRORS.items():
        commands[f"usage-{name}"] = Command((*args, "--json"), makes_lab=False)
    for name, env in REAL_MAIL_REFUSALS.items():
        commands[f"real-mail-{name}"] = Command(
            ("unhandled", "--json", "--real-mail"), env, makes_lab=False
        )
    return commands


# --- The learner's blog, and the runs ---------------------------------------------------


@dataclass
class Learner:
    """The learner's own blog: its environment, database, log and temporary folders,
    and what they held before any lab ran."""

    env: dict[str, str]
    database_url: str
    log_dir: Path
    tmp_dir: Path
    rows_before: dict[str, list[tuple]]
    log_files_before: set[str]
    log_before: str


def database_rows(url: str) -> dict[str, list[tuple]]:
    """Every row of every table of the database at `url` (alembic_version too), sorted."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as connection:
            return {
                table.name: sorted(map(tuple, connection.execute(select(table))), key=repr)
                for table in metadata.sorted_tables
            }
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def learner(tmp_path_factory) -> Iterator[Learner]:
    """A learner's blog in development: migrated, with demo users and posts in it."""
    folder = tmp_path_factory.mktemp("learner")
    log_dir, tmp_dir = folder / "logs", folder / "tmp"
    tmp_dir.mkdir()
    with fresh_database(folder, "learner") as url:
        env = clean_env(
            FLASK_CONFIG="development",
            DATABASE_URL=url,
            LOG_DIR=log_dir,
            # The lab's throwaway folders go here, where the tests can look for them.
            TMPDIR=tmp_dir,
            # Blank, not absent: a developer's .env (which fills in only what is
            # absent) must not give the learner a mail server, Sentry, or a log on stdout.
            MAIL_SERVER="",
            ADMINS="",
            SENTRY_DSN="",
            LOG_TO_STDOUT="",
            FLASK_DEBUG="",
        )
        for command in (("db", "upgrade"), ("seed", "--users", "2", "--posts", "3")):
            done = flask_command(env, *command)
            assert done.returncode == 0, done.stdout + done.stderr
        rows = database_rows(url)
        # The comparison at the end means something only if there is something to compare.
        assert (len(rows["user"]), len(rows["post"])) == (2, 3)
        yield Learner(
            env=env,
            database_url=url,
            log_dir=log_dir,
            tmp_dir=tmp_dir,
            rows_before=rows,
            log_files_before={path.name for path in log_dir.iterdir()},
            log_before=(log_dir / "blog.log").read_text(encoding="utf-8"),
        )


@dataclass(frozen=True)
class Finished:
    """What one `flask lab` process printed, and how it ended."""

    returncode: int
    stdout: str
    stderr: str

    def report(self) -> dict:
        """The --json report: the one JSON object the command printed."""
        assert self.returncode == 0, self.stdout + self.stderr
        return json.loads(self.stdout)


class LabRuns:
    """Every `flask lab` run of the module, started at once, a few at a time.

    While they run, a thread watches the learner's temporary folder, to see
    each lab's folder come (and, at the end, that none is left).
    """

    def __init__(self, learner: Learner, commands: dict[str, Command]):
        self.commands = commands
        self.lab_folders_seen: set[str] = set()
        self._tmp_dir = learner.tmp_dir
        # Watching before the first run starts, so that no lab's folder comes and goes unseen.
        self._watching = threading.Event()
        self._watching.set()
        self._watcher = threading.Thread(target=self._watch_tmp_dir, daemon=True)
        self._watcher.start()
        # Most of a run is waiting (for mails, for a window to close): more
        # runs than cores at a time.
        self._executor = ThreadPoolExecutor(max_workers=max(4, 2 * (os.cpu_count() or 1)))
        self._futures: dict[str, Future] = {
            name: self._executor.submit(run_lab, learner.env | command.env, command.args)
            for name, command in commands.items()
        }

    def _watch_tmp_dir(self) -> None:
        """Note every lab folder in the temporary folder, until told to stop."""
        while self._watching.is_set():
            self.lab_folders_seen.update(
                name for name in os.listdir(self._tmp_dir) if name.startswith("blog-lab-")
            )
            time.sleep(0.01)

    def result(self, name: str) -> Finished:
        """How the run `name` ended (waits for it)."""
        return self._futures[name].result()

    def report(self, name: str) -> dict:
        """The --json report of the run `name` (waits for it)."""
        return self.result(name).report()

    def wait_for_all(self) -> None:
        """Wait for every run, then stop watching the temporary folder."""
        for future in self._futures.values():
            future.result()
        self._watching.clear()
        self._watcher.join()

    def close(self) -> None:
        """Stop watching; let the runs still going finish, and start no more."""
        self._watching.clear()
        self._executor.shutdown(wait=True, cancel_futures=True)


def run_lab(env: dict[str, str], args: tuple[str, ...]) -> Finished:
    """`python -m flask lab ARGS` as a learner runs it, in the project's folder."""
    done = subprocess.run(
        [sys.executable, "-m", "flask", "lab", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return Finished(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def learner_smtp(tmp_path_factory) -> Iterator[SMTPServer]:
    """The learner's own mail server, for --real-mail (plain SMTP on 127.0.0.1)."""
    with smtp_server("plain", tmp_path_factory.mktemp("smtp")) as server:
        yield server


@pytest.fixture(scope="module")
def lab_runs(learner, learner_smtp) -> Iterator[LabRuns]:
    """Every run of the module, started now; the tests wait for the ones they read."""
    runs = LabRuns(learner, all_commands(learner_smtp))
    try:
        yield runs
    finally:
        runs.close()


# --- Reading a report ----------------------------------------------------------------


def heading(page: str) -> str | None:
    """The page's first <h1>, as a person reads it."""
    found = re.search(r"<h1[^>]*>(.*?)</h1>", page, re.S)
    return unescape(found.group(1)).strip() if found else None


def all_records(report: dict) -> list[str]:
    """Every log record the report shows: the requests' and the background's."""
    requests = [record for response in report["responses"] for record in response["log"]]
    return requests + report["log"]


def errors_in(records: list[str]) -> list[str]:
    """The records logged at level ERROR."""
    return [record for record in records if " ERROR: " in record.partition("\n")[0]]


def log_time(record: str) -> datetime:
    """When a record was written, from its first line."""
    found = LOG_TIME.match(record)
    assert found, record
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f")


def finding(report: dict, label_part: str) -> dict:
    """The one finding whose label contains `label_part`."""
    found = [f for f in report["findings"] if label_part in f["label"]]
    assert len(found) == 1, report["findings"]
    return found[0]


def assert_traceback_record(record: str, reference: str, last_line: str) -> None:
    """An ERROR record of request `reference`: its traceback's lines are tagged
    with the reference, and the last is `last_line`."""
    first, *continuation = record.split("\n")
    assert " ERROR: " in first
    assert f"[request {reference} " in first
    assert continuation[0] == f"  {reference} | Traceback (most recent call last):"
    assert all(line.startswith(f"  {reference} | ") for line in continuation), record
    assert continuation[-1] == f"  {reference} | {last_line}"


# --- 1. An unhandled exception ---------------------------------------------------------


def test_unhandled_the_user_gets_the_500_page_with_a_reference(lab_runs):
    report = lab_runs.report("unhandled")
    assert report["experiment"] == "unhandled"
    [response] = report["responses"]
    reference = response["request_id"]
    assert (response["method"], response["path"], response["status"]) == ("GET", FAILING_PAGE, 500)
    assert response["headers"]["X-Request-ID"] == reference
    assert re.fullmatch(r"[0-9a-f]{32}", reference)
    assert heading(response["page"]) == APP_500_HEADING
    # The reference to quote, and Sentry's own beside it.
    [event] = report["sentry"]
    assert (
        f"Error reference: <code>{reference}</code> · <code>{event['event_id']}</code>."
        in response["page"]
    )


def test_unhandled_the_operator_gets_the_traceback_a_mail_and_a_sentry_event(lab_runs):
    report = lab_runs.report("unhandled")
    [response] = report["responses"]
    reference = response["request_id"]

    [record] = response["log"]
    assert re.match(rf"{LOG_TIME.pattern}ERROR: Exception on {FAILING_PAGE} \[GET\] ", record)
    assert_traceback_record(record, reference, ZERO_DIVISION)
    assert errors_in(report["log"]) == []

    [mail] = report["mails"]
    assert (mail["from"], mail["to"]) == ("blog@lab.example", LAB_ADMIN)
    assert mail["subject"] == f"[Blog] {ZERO_DIVISION} (error {reference})"
    assert mail["text"].rstrip().splitlines()[-1] == ZERO_DIVISION
    assert f"Request id:     {reference}" in mail["text"].splitlines()
    assert re.search(rf"{ZERO_DIVISION}\s*</pre>", mail["html"])
    assert report["mail_note"] is None

    [event] = report["sentry"]
    assert (event["level"], event["exception"], event["environment"]) == (
        "error",
        ZERO_DIVISION,
        "lab",
    )
    assert event["tags"] == {"request_id": reference}
    assert report["findings"] == []


# --- 2. The double fault ---------------------------------------------------------------


def test_double_fault_the_naive_handler_leaves_the_user_the_servers_bare_page(lab_runs):
    report = lab_runs.report("double-fault")
    app_handler, naive_handler = report["responses"]
    path = "/lab-faults/rename-unchecked/bob"
    assert [(r["method"], r["path"], r["status"]) for r in report["responses"]] == [
        ("GET", path, 500),
        ("GET", path, 500),
    ]
    assert heading(app_handler["page"]) == APP_500_HEADING
    assert app_handler["headers"]["X-Request-ID"] == app_handler["request_id"]
    # Werkzeug's page: none of the app's layout, no reference to quote.
    assert heading(naive_handler["page"]) == "Internal Server Error"
    assert "<title>500 Internal Server Error</title>" in naive_handler["page"]
    assert APP_500_HEADING not in naive_handler["page"]
    assert "navbar" not in naive_handler["page"]
    assert naive_handler["request_id"] not in naive_handler["page"]
    assert "X-Request-ID" not in naive_handler["headers"]


def test_double_fault_the_second_traceback_is_in_no_log_and_no_mail(lab_runs):
    report = lab_runs.report("double-fault")
    second = finding(report, "second traceback")
    assert "sqlalchemy.exc.PendingRollbackError: " in second["text"]
    assert "in naive_internal_error" in second["text"]
    records = all_records(report)
    assert not any("PendingRollbackError" in record for record in records)
    assert not any(second["text"] in record for record in records)
    assert not any("PendingRollbackError" in mail["text"] for mail in report["mails"])
    # Both requests' own records: the first fault, the IntegrityError.
    for response in report["responses"]:
        [record] = response["log"]
        assert f"[request {response['request_id']} GET " in record
        assert "sqlalchemy.exc.IntegrityError: (sqlite3.IntegrityError) UNIQUE constraint" in record
    # Sentry's WSGI middleware sees the exception that reached the server.
    exceptions = [event["exception"] for event in report["sentry"]]
    assert sum(e.startswith("PendingRollbackError: ") for e in exceptions) == 1
    assert {
        event["tags"].get("request_id")
        for event in report["sentry"]
        if event["exception"].startswith("IntegrityError: ")
    } == {response["request_id"] for response in report["responses"]}


def test_double_fault_one_mail_and_no_sql_parameters_anywhere(lab_runs):
    report = lab_runs.report("double-fault")
    first = report["responses"][0]
    [mail] = report["mails"]
    assert mail["to"] == LAB_ADMIN
    assert mail["subject"].startswith("[Blog] IntegrityError: (sqlite3.IntegrityError) UNIQUE")
    assert mail["subject"].endswith(f"(error {first['request_id']})")
    hidden = "[SQL parameters hidden due to hide_parameters=True]"
    assert hidden in first["log"][0]
    assert hidden in mail["text"].splitlines()
    # Production's hide_parameters: not "[parameters: ('bob', ...)]" with the new name.
    everything = [
        *all_records(report),
        mail["subject"],
        mail["text"],
        mail["html"],
        *(event["exception"] for event in report["sentry"]),
        *(f["text"] for f in report["findings"]),
    ]
    assert not [text for text in everything if "parameters: (" in text]
    assert not [text for text in everything if "parameters: ('bob'" in text]


# --- 3. The duplicate-username race ----------------------------------------------------


def test_username_race_one_wins_the_other_sees_the_form_error(lab_runs):
    report = lab_runs.report("username-race")
    responses = sorted(report["responses"], key=lambda r: r["status"])
    assert [(r["method"], r["path"], r["status"]) for r in responses] == [
        ("POST", "/edit_profile", 200),
        ("POST", "/edit_profile", 302),
    ]
    loser, winner = responses
    assert winner["headers"]["Location"] == "/edit_profile"
    assert form_errors(loser["page"]) == {"username": ["Please use a different username."]}
    assert {r["label"] for r in responses} == {
        "alice renames themselves to carol",
        "bob renames themselves to carol",
    }


def test_username_race_the_database_refused_and_the_form_caught_it(lab_runs):
    report = lab_runs.report("username-race")
    [caught] = report["findings"]
    first, *frames = caught["text"].split("\n")
    assert first == "IntegrityError: UNIQUE constraint failed: user.username_key"
    assert re.fullmatch(r"app/user/routes\.py:\d+ in edit_profile", frames[0])
    assert re.fullmatch(r"app/forms\.py:\d+ in commit_or_show_conflict", frames[-1])
    assert "commit_or_show_conflict" in caught["label"]
    # Nobody got a 500: nothing logged as an error, nothing mailed, nothing in Sentry.
    assert 500 not in [r["status"] for r in report["responses"]]
    assert errors_in(all_records(report)) == []
    assert (report["mails"], report["sentry"]) == ([], [])


# --- 4. A mail server that never answers -----------------------------------------------


def test_mail_tarpit_the_page_comes_back_before_the_outbox_gives_up(lab_runs):
    report = lab_runs.report("mail-tarpit")
    [response] = report["responses"]
    reference = response["request_id"]
    assert response["status"] == 500
    assert heading(response["page"]) == APP_500_HEADING
    assert report["mails"] == []

    note = re.fullmatch(
        r"No mail: the server never answered, and the outbox gave up after (\d+\.\d) s "
        r"\(MAIL_TIMEOUT is (\d+) s in the lab\), in the background\.",
        report["mail_note"],
    )
    assert note, report["mail_note"]
    gave_up_after, timeout = float(note.group(1)), int(note.group(2))
    # The outbox can't give up before the timeout; the user waited for none of it.
    assert gave_up_after >= timeout
    assert response["waited_ms"] < gave_up_after * 1000

    [request_error] = response["log"]
    assert_traceback_record(request_error, reference, ZERO_DIVISION)
    [not_sent] = [record for record in report["log"] if "not sent" in record]
    assert " ERROR: Error mail '[Blog] " in not_sent
    assert f"(error {reference})' not sent: timed out" in not_sent
    assert not_sent.endswith("[request -]")
    assert log_time(request_error) < log_time(not_sent)


# --- 5. An error storm -------------------------------------------------------------------


def test_error_storm_the_first_and_the_last_of_twenty(lab_runs):
    report = lab_runs.report("storm-of-20")
    first, last = report["responses"]
    assert [(r["label"], r["status"]) for r in report["responses"]] == [
        ("Error 1 of 20", 500),
        ("Error 20 of 20", 500),
    ]
    assert heading(first["page"]) == heading(last["page"]) == APP_500_HEADING
    # The first request's record has the traceback; a repeat points to it.
    [first_record] = first["log"]
    assert_traceback_record(first_record, first["request_id"], ZERO_DIVISION)
    [last_record] = last["log"]
    assert "\n" not in last_record
    assert f"[traceback: see request {first['request_id']}]" in last_record
    assert f"[request {last['request_id']} GET {FAILING_PAGE} " in last_record
    # One record for each of the 18 requests between.
    assert report["log_left_out"] == 18
    # Sentry had an event for each; those of the shown two are listed.
    assert sorted(e["tags"]["request_id"] for e in report["sentry"]) == sorted(
        [first["request_id"], last["request_id"]]
    )
    assert report["sentry_left_out"] == 18
    storm = finding(report, "The storm")
    assert re.fullmatch(r"20 requests in \d+\.\d\d s; the users got: 500 × 20\.", storm["text"])  # noqa: RUF001


def test_error_storm_one_mail_then_a_summary_of_the_rest(lab_runs):
    report = lab_runs.report("storm-of-20")
    first = report["responses"][0]
    subject = f"[Blog] {ZERO_DIVISION} (error {first['request_id']})"
    assert [(m["to"], m["subject"]) for m in report["mails"]] == [
        (LAB_ADMIN, subject),
        (LAB_ADMIN, f"{subject} [repeated 19 times]"),
    ]
    assert report["mails"][1]["text"].startswith("This error happened 19 more times")
    # The summary waits for storm control's window to close; the first mail doesn't.
    assert report["mails"][0]["arrived_ms"] < report["mails"][1]["arrived_ms"]
    counted = finding(report, "storm control counted")
    assert re.match(rf"{ZERO_DIVISION} at app/lab/faults\.py:\d+: 20 times\b", counted["text"]), (
        counted["text"]
    )


def test_error_storm_of_one_is_one_mail_and_no_summary(lab_runs):
    report = lab_runs.report("storm-of-1")
    [response] = report["responses"]
    assert (response["label"], response["status"]) == ("Error 1 of 1", 500)
    assert report["log_left_out"] == 0
    [mail] = report["mails"]
    assert mail["subject"] == f"[Blog] {ZERO_DIVISION} (error {response['request_id']})"
    assert "repeated" not in mail["subject"]
    counted = finding(report, "storm control counted")
    assert re.fullmatch(
        rf"{ZERO_DIVISION} at app/lab/faults\.py:\d+: 1 time; 0 not yet in a mail\.",
        counted["text"],
    )
    storm = finding(report, "The storm")
    assert re.fullmatch(r"1 request in \d+\.\d\d s; the user got: 500 × 1\.", storm["text"])  # noqa: RUF001


# --- 6. The database unreachable -------------------------------------------------------


def test_database_down_503_then_back(lab_runs):
    report = lab_runs.report("database-down")
    before, down, after = report["responses"]
    assert [(r["path"], r["status"]) for r in report["responses"]] == [
        ("/explore", 200),
        ("/explore", 503),
        ("/explore", 200),
    ]
    assert down["headers"]["Retry-After"] == "30"
    assert "Retry-After" not in before["headers"]
    assert "Retry-After" not in after["headers"]
    assert heading(down["page"]) == "Temporarily unavailable"
    assert (
        "The site can't reach its database right now. Please try again in a minute."
        in page_text(down["page"])
    )
    assert heading(after["page"]) == heading(before["page"])
    assert before["log"] == after["log"] == []


def test_database_down_one_line_in_the_log_and_one_mail(lab_runs):
    report = lab_runs.report("database-down")
    down = report["responses"][1]
    reference = down["request_id"]
    [record] = down["log"]
    assert "\n" not in record  # no traceback
    assert re.match(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR: Database unavailable: "
        r"unable to open database file \[in ",
        record,
    ), record
    assert f"[request {reference} GET /explore from 127.0.0.1 " in record
    [mail] = report["mails"]
    assert mail["to"] == LAB_ADMIN
    assert (
        mail["subject"]
        == f"[Blog] Database unavailable: unable to open database file (error {reference})"
    )
    assert "Traceback" not in mail["text"]
    [event] = report["sentry"]
    assert event["tags"] == {"request_id": reference}


# --- 7. Bad input ----------------------------------------------------------------------


def test_bad_input_400_400_413_and_nothing_for_the_operator(lab_runs):
    report = lab_runs.report("bad-input")
    nul, not_utf8, too_big = report["responses"]
    assert [(r["method"], r["path"], r["status"]) for r in report["responses"]] == [
        ("GET", "/search?q=a%00b", 400),
        ("GET", "/explore", 400),
        ("POST", "/auth/login", 413),
    ]
    assert heading(nul["page"]) == "Bad request"
    assert (
        "The request contained a character that isn't allowed (NUL). Please remove it."
        in page_text(nul["page"])
    )
    assert heading(not_utf8["page"]) == "Bad request"
    assert "NUL" not in page_text(not_utf8["page"])
    assert heading(too_big["page"]) == "Request too large"
    assert report["mails"] == []
    assert report["mail_note"] == (
        "No mail: a bad request is the client's mistake, not a bug to report."
    )
    assert errors_in(all_records(report)) == []
    assert report["sentry"] == []


# --- 8. Debug mode -----------------------------------------------------------------------


def test_debug_mode_the_debugger_page_instead_of_the_500_page(lab_runs):
    report = lab_runs.report("debug-mode")
    without, with_debugger = report["responses"]
    assert [(r["path"], r["status"]) for r in report["responses"]] == [
        (FAILING_PAGE, 500),
        (FAILING_PAGE, 500),
    ]
    assert heading(without["page"]) == APP_500_HEADING
    page = with_debugger["page"]
    assert APP_500_HEADING not in page
    assert f"<title>{ZERO_DIVISION}" in page
    assert "// Werkzeug Debugger</title>" in page
    assert "The debugger caught an exception in your WSGI application." in page
    assert ZERO_DIVISION in page
    # The console: anyone who sees this page can run Python on the server.
    assert "EVALEX = true" in page


def test_debug_mode_production_refuses_it_and_only_the_500_is_reported(lab_runs):
    report = lab_runs.report("debug-mode")
    without, with_debugger = report["responses"]
    refusal = finding(report, "FLASK_DEBUG=1")
    assert refusal["text"] == (
        "Debug mode is on (FLASK_DEBUG or --debug). Never run production with the debugger: "
        "anyone who can trigger an error gets a Python shell on the server."
    )
    [event] = report["sentry"]
    assert event["tags"] == {"request_id": without["request_id"]}
    [mail] = report["mails"]
    assert mail["subject"] == f"[Blog] {ZERO_DIVISION} (error {without['request_id']})"
    assert with_debugger["log"] == []
    assert len(errors_in(all_records(report))) == 1


# --- Mail to the learner's own server ----------------------------------------------------


def test_real_mail_goes_to_the_learners_server_and_admins(lab_runs, learner_smtp):
    report = lab_runs.report("real-mail")
    [response] = report["responses"]
    assert response["status"] == 500
    assert report["mails"] == []  # nothing reached the lab's own mail server
    assert report["mail_note"] == (
        f"Sent through your mail server (127.0.0.1) to {LEARNER_ADMIN}: look in that inbox."
    )
    [message] = learner_smtp.mailbox.wait_for(1)
    assert message["To"] == LEARNER_ADMIN
    assert message["Subject"] == f"[Blog] {ZERO_DIVISION} (error {response['request_id']})"
    assert ZERO_DIVISION in message.get_body(("plain",)).get_content()
    assert [envelope.rcpt_tos for envelope in learner_smtp.mailbox.envelopes] == [[LEARNER_ADMIN]]


@pytest.mark.parametrize("name", REAL_MAIL_REFUSALS)
def test_real_mail_needs_a_mail_server_and_admins(lab_runs, name):
    result = lab_runs.result(f"real-mail-{name}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == REAL_MAIL_REFUSED
    assert result.stdout == ""


# --- Refusals and hostile arguments ----------------------------------------------------


@pytest.mark.parametrize("name", CONFIG_REFUSALS)
def test_the_lab_runs_in_development_only(lab_runs, name):
    result = lab_runs.result(f"config-{name}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == DEVELOPMENT_ONLY
    assert result.stdout == ""


@pytest.mark.parametrize("name", USAGE_ERRORS)
def test_arguments_click_refuses(lab_runs, name):
    result = lab_runs.result(f"usage-{name}")
    _, error = USAGE_ERRORS[name]
    assert result.returncode == 2
    assert result.stderr.startswith("Usage: python -m flask lab [OPTIONS] ")
    [error_line] = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert error in error_line
    assert result.stdout == ""


# --- Languages and the text output -----------------------------------------------------


def test_labels_in_chinese(lab_runs):
    english = lab_runs.report("bad-input")
    chinese = lab_runs.report("bad-input-in-chinese")
    assert [r["status"] for r in chinese["responses"]] == [400, 400, 413]
    pairs = [
        *zip(
            [r["label"] for r in english["responses"]],
            [r["label"] for r in chinese["responses"]],
            strict=True,
        ),
        (english["mail_note"], chinese["mail_note"]),
    ]
    for in_english, in_chinese in pairs:
        assert CJK.search(in_chinese), in_chinese
        assert in_chinese != in_english


def test_text_output_shows_the_title_and_what_each_request_got(lab_runs):
    result = lab_runs.result("bad-input-as-text")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Bad input"
    statuses = [line for line in lines if re.fullmatch(r"(GET|POST) \S+: \d{3}, after .* ms", line)]
    assert [re.sub(r"after [\d.]+ ms", "after … ms", line) for line in statuses] == [
        "GET /search?q=a%00b: 400, after … ms",
        "GET /explore: 400, after … ms",
        "POST /auth/login: 413, after … ms",
    ]
    assert "A NUL character in a search" in lines
    assert "No mail: a bad request is the client's mistake, not a bug to report." in lines


def test_with_the_log_on_stdout_the_json_is_the_last_line(lab_runs):
    """With LOG_TO_STDOUT the learner's blog logs its startup line to stdout
    before the command runs; the report is still one line of JSON, the last."""
    finished = lab_runs.result("bad-input-logging-to-stdout")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    *before, last = finished.stdout.splitlines()
    assert [line for line in before if not STARTUP_LINE.match(line)] == []
    assert len(before) == 1
    report = json.loads(last)
    assert [r["status"] for r in report["responses"]] == [400, 400, 413]


# --- What the lab leaves behind ----------------------------------------------------------


def test_the_lab_leaves_the_learners_blog_as_it_was(lab_runs, learner):
    lab_runs.wait_for_all()
    # The learner's rows: the lab's blog has a database of its own.
    assert database_rows(learner.database_url) == learner.rows_before
    # The learner's log folder: no lab log, no error store, and in the
    # learner's log only the lines every `flask` command writes at startup.
    log_files = {path.name for path in learner.log_dir.iterdir()}
    assert log_files == learner.log_files_before
    assert "lab.log" not in log_files
    assert STORE_FILE not in log_files
    log = (learner.log_dir / "blog.log").read_text(encoding="utf-8")
    assert log.startswith(learner.log_before)
    added = log[len(learner.log_before) :].splitlines()
    assert added
    assert [line for line in added if not STARTUP_LINE.match(line)] == []
    # The temporary folder: every lab made its folder there, and deleted it.
    labs = sum(command.makes_lab for command in lab_runs.commands.values())
    assert len(lab_runs.lab_folders_seen) == labs
    assert os.listdir(learner.tmp_dir) == []

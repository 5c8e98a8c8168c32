"""Storm control and fingerprints, at their edges (app/reporting/storm.py, fingerprint.py).

When a hundred users hit the same bug, the admins get one mail, then a count.
That promise rests on two small pieces, checked here directly, without an app:

- `fingerprint()` names the bug behind a log record. The same bug must get
  the same name every time, in every worker; two different bugs must get two
  names, or the second one is never mailed, only counted under the first.
- `StormControl` decides, in a SQLite file that every worker shares, which
  occurrence is mailed and which is only counted, and when a count is due;
  a repeat it already holds back is counted in memory and added to the file
  later, and a summary is claimed until it is known to be sent.
  Times are passed in as plain numbers (seconds), so these tests choose the
  clock and check each edge of a window to the millisecond without waiting.

The last section mails through a real SMTP server (aiosmtpd on 127.0.0.1) with
`ErrorMailHandler.deliver` and `send_summaries` called directly, at chosen
times. The whole way from a request to the mailbox, the outbox thread and
gunicorn workers included, is in tests/test_error_mail.py.
"""

import dataclasses
import hashlib
import logging
import os
import re
import sqlite3
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from email.message import EmailMessage
from pathlib import Path

import pytest

from app.mail import MailSettings, outbox
from app.reporting import STORE_FILE
from app.reporting.error_mail import ErrorMailHandler, ErrorReport
from app.reporting.fingerprint import APP_DIR, fingerprint, origin
from app.reporting.request_id import request_id
from app.reporting.storm import CLAIM_FOR, KEEP_FOR, StormControl
from tests.servers import SMTPServer, free_port, smtp_server

WINDOW = 10.0  # seconds
KEY = "0123456789abcdef"  # a fingerprint
SUBJECT = "[Blog] ZeroDivisionError: division by zero"
ADMIN = "admin@example.com"
HELD_BACK = "held back: the same error was mailed less than a window ago"


# --- Helpers --------------------------------------------------------------------


def new_storm(tmp_path: Path, window: float = WINDOW) -> StormControl:
    return StormControl(str(tmp_path / STORE_FILE), window)


def rows(storm: StormControl) -> list[tuple]:
    """What the store holds, read through a connection of its own, as another
    worker would read it (only what was committed): each bug's window start,
    its unreported count and the subject a summary would name."""
    with closing(sqlite3.connect(storm.path)) as db:
        return db.execute(
            "SELECT fingerprint, window_start, unreported, subject FROM error_groups ORDER BY 1"
        ).fetchall()


def counts(storm: StormControl) -> list[tuple]:
    """Each bug's occurrences: in all, in its current window, and its last reference."""
    with closing(sqlite3.connect(storm.path)) as db:
        return db.execute(
            "SELECT fingerprint, total, window_count, last_reference FROM error_groups ORDER BY 1"
        ).fetchall()


@pytest.fixture
def mail_log() -> Iterator[list[str]]:
    """What the "blog.mail" logger says during the test, as "LEVEL message" lines."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(f"{record.levelname} {record.getMessage()}")

    handler = Collect()
    logger = logging.getLogger("blog.mail")
    logger.addHandler(handler)
    yield lines
    logger.removeHandler(handler)


def record(
    msg: str = "Disk %s almost full",
    args: tuple = ("/var",),
    name: str = "app",
    pathname: str = "/srv/blog/app/tasks.py",
    lineno: int = 42,
    func: str = "clean_up",
    exc_info=None,
    **extra,
) -> logging.LogRecord:
    """A log record as `logging.getLogger(name).error(msg, *args)` makes it."""
    made = logging.LogRecord(name, logging.ERROR, pathname, lineno, msg, args, exc_info, func)
    made.__dict__.update(extra)  # what extra={...} adds
    return made


def logged(function: Callable[[], object], **fields) -> logging.LogRecord:
    """The record of `logger.exception(...)` in the handler of what `function()` raised."""
    try:
        function()
    except Exception:
        return record(exc_info=sys.exc_info(), **fields)
    raise AssertionError(f"{function} did not raise")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def code_in(filename: str, source: str, **names) -> dict:
    """The functions of `source`, compiled as if written in `filename`: their
    frames in a traceback name that file (which need not exist). `names` are
    what the code can call."""
    namespace = dict(names)
    exec(compile(textwrap.dedent(source), filename, "exec"), namespace)
    return namespace


# A library (not this app's code) and two files of this app's code, each
# function on the line numbered in its comment.
LIBRARY = "/opt/libraries/shop/client.py"
VIEWS = os.path.join(APP_DIR, "shop_views.py")
MODELS = os.path.join(APP_DIR, "shop_models.py")
library = code_in(
    LIBRARY,
    """\
    def call(function):
        return function()  # line 2
    def fail():
        raise LookupError("no such product")  # line 4
    """,
)
models = code_in(
    MODELS,
    """\
    def load():
        return fail()  # line 2
    def check(error):
        raise error  # line 4
    def check_again(error):
        raise error  # line 6
    """,
    fail=library["fail"],
)
views = code_in(
    VIEWS,
    """\
    def show():
        return call(load)  # line 2
    """,
    call=library["call"],
    load=models["load"],
)


def where(frame) -> tuple[str, int, str] | None:
    return None if frame is None else (frame.filename, frame.lineno, frame.name)


# --- 1. Where an exception comes from: origin() --------------------------------


def test_origin_is_the_innermost_frame_of_this_apps_code():
    # views.show -> library call -> models.load -> library fail, which raises.
    # The library line is where every bug that reaches it would be; the app's
    # innermost line is the one that tells bugs apart.
    raised = logged(views["show"])

    assert where(origin(raised)) == (MODELS, 2, "load")


def test_origin_without_any_app_frame_is_the_innermost_frame_of_all():
    raised = logged(library["fail"])

    assert where(origin(raised)) == (LIBRARY, 4, "fail")


def test_origin_is_none_without_a_traceback():
    assert origin(record()) is None
    # logger.exception() outside an except block.
    assert origin(record(exc_info=(None, None, None))) is None
    # An exception logged without having been raised.
    error = ValueError("card declined")
    assert origin(record(exc_info=(ValueError, error, None))) is None


# --- 2. Naming the bug: fingerprint() -------------------------------------------
#
# The exact keys are part of the contract: the state file outlives a
# deployment, and during a graceful restart old and new workers share it. A
# fingerprint that changed from one release to the next would make every
# ongoing storm mail once more.


def test_a_fingerprint_is_16_hex_digits():
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint(record()))
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint(logged(views["show"])))


def test_a_plain_message_is_named_by_its_logger_place_and_text_before_its_arguments():
    assert fingerprint(record()) == digest("app at /srv/blog/app/tasks.py:42: Disk %s almost full")
    # The arguments vary with each occurrence (ids, paths): they don't count.
    assert fingerprint(record(args=("/home",))) == fingerprint(record())
    # Each of the rest does.
    others = [
        record(name="app.auth"),
        record(pathname="/srv/blog/app/models.py"),
        record(lineno=43),
        record(msg="Disk %s full"),
    ]
    assert len({fingerprint(other) for other in [record(), *others]}) == 5


def test_an_exception_is_named_by_its_type_and_where_this_apps_code_raised_it():
    raised = logged(views["show"])

    assert fingerprint(raised) == digest(f"builtins.LookupError at {MODELS}:load:2")
    # The log message and the logger don't count: Flask logs every 500 from one line.
    assert fingerprint(logged(views["show"], msg="Exception on /b", name="x")) == fingerprint(
        raised
    )


def test_the_exception_message_does_not_count():
    first = logged(lambda: models["check"](KeyError("basket 1")))
    second = logged(lambda: models["check"](KeyError("basket 2")))

    assert fingerprint(first) == fingerprint(second)


def test_one_type_from_two_lines_or_two_types_from_one_line_are_two_bugs():
    key_error = logged(lambda: models["check"](KeyError("basket")))
    elsewhere = logged(lambda: models["check_again"](KeyError("basket")))
    value_error = logged(lambda: models["check"](ValueError("basket")))

    assert fingerprint(key_error) != fingerprint(elsewhere)
    assert fingerprint(key_error) != fingerprint(value_error)


class Shop:
    class NotFound(LookupError):
        pass


class Cart:
    class NotFound(LookupError):
        pass


def test_two_exception_types_of_one_name_are_two_bugs():
    # Same __name__, another class around it (__qualname__) or another module.
    shop = logged(lambda: models["check"](Shop.NotFound()))
    cart = logged(lambda: models["check"](Cart.NotFound()))
    assert fingerprint(shop) != fingerprint(cart)

    in_shop = type("NotFound", (LookupError,), {"__module__": "shop"})
    in_cart = type("NotFound", (LookupError,), {"__module__": "cart"})
    assert fingerprint(logged(lambda: models["check"](in_shop()))) != fingerprint(
        logged(lambda: models["check"](in_cart()))
    )


def test_an_exception_never_raised_is_named_by_its_type_and_where_it_was_logged():
    # logger.error("...", exc_info=error): there is no traceback to look into.
    error = ValueError("card declined")
    unraised = record(exc_info=(ValueError, error, None), pathname="/srv/blog/app/pay.py", lineno=7)

    assert fingerprint(unraised) == digest("builtins.ValueError at /srv/blog/app/pay.py:clean_up:7")
    # Another place is another bug; another type from the same line too.
    assert fingerprint(record(exc_info=(ValueError, error, None), lineno=8)) != fingerprint(
        record(exc_info=(ValueError, error, None), lineno=7)
    )
    other = KeyError("card")
    assert fingerprint(record(exc_info=(KeyError, other, None))) != fingerprint(
        record(exc_info=(ValueError, error, None))
    )


def test_logger_exception_outside_an_except_block_is_named_like_a_plain_message():
    assert fingerprint(record(exc_info=(None, None, None))) == fingerprint(record())


def test_a_caller_can_name_the_bug_itself():
    # logger.error(..., extra={"fingerprint": "payments"}), as with Sentry.
    assert fingerprint(record(fingerprint="payments")) == "payments"
    assert fingerprint(logged(views["show"], fingerprint="payments")) == "payments"
    # An empty name names nothing.
    assert fingerprint(record(fingerprint="")) == fingerprint(record())


# --- 3. The window: admit() and mail_failed() ----------------------------------


def test_a_window_holds_repeats_back_to_its_last_millisecond(tmp_path):
    storm = new_storm(tmp_path)  # a 10-second window

    # The first occurrence is mailed; no earlier one to count.
    assert storm.admit(KEY, SUBJECT, 100) == 0
    assert storm.admit(KEY, SUBJECT, 109.999) is None  # counted, not mailed
    assert rows(storm) == [(KEY, 100.0, 1, SUBJECT)]
    # The window has closed: mailed, with the count of the held-back one.
    assert storm.admit(KEY, SUBJECT, 110) == 1
    # A new window, counted from zero.
    assert rows(storm) == [(KEY, 110.0, 0, SUBJECT)]
    assert storm.admit(KEY, SUBJECT, 115) is None
    assert storm.admit(KEY, SUBJECT, 120) == 1


def test_every_occurrence_is_counted_with_its_reference(tmp_path):
    storm = new_storm(tmp_path)
    for now, reference in [(100, "ref-one"), (101, "ref-two"), (105, "ref-three")]:
        storm.admit(KEY, SUBJECT, now, reference=reference)
    assert counts(storm) == [(KEY, 3, 3, "ref-three")]  # three in all, three in this window

    storm.admit(KEY, SUBJECT, 110, reference="ref-four")
    # Four in all; the last opened a new window, of which it is the only one.
    assert counts(storm) == [(KEY, 4, 1, "ref-four")]


def test_a_group_keeps_what_it_was_told_until_told_better(tmp_path):
    storm = new_storm(tmp_path)
    storm.admit(KEY, SUBJECT, 100)  # outside a request, nothing said about it
    [group] = storm.all_groups()
    assert (group.title, group.location, group.last_reference) == ("", "", "")

    storm.admit(KEY, SUBJECT, 110, title="KeyError: 'x'", location="app/a.py:1")
    storm.admit(KEY, SUBJECT, 120)  # a new window, told nothing new
    [group] = storm.all_groups()
    assert (group.title, group.location) == ("KeyError: 'x'", "app/a.py:1")


def test_each_bug_has_a_window_of_its_own(tmp_path):
    storm = new_storm(tmp_path)
    assert storm.admit(KEY, SUBJECT, 100) == 0
    assert storm.admit("another-bug", "[Blog] KeyError", 101) == 0
    assert storm.admit(KEY, SUBJECT, 102) is None
    assert storm.admit("another-bug", "[Blog] KeyError", 103) is None


@pytest.mark.parametrize(
    ("window", "retry_after"),
    [(10, 10), (300, 60)],
    ids=["window under a minute", "window over a minute"],
)
def test_a_failed_mail_is_retried_after_a_minute_or_the_window_if_shorter(
    tmp_path, window, retry_after
):
    storm = new_storm(tmp_path, window)
    assert storm.admit(KEY, SUBJECT, 1000) == 0
    # That mail didn't go out: its occurrence is one nobody has heard of.
    storm.mail_failed(KEY, 1000, unreported=1)

    # A dead mail server is not tried again for every error...
    assert storm.admit(KEY, SUBJECT, 1000 + retry_after - 0.001) is None
    # ...but from then on: the failed one and the held-back one are counted.
    assert storm.admit(KEY, SUBJECT, 1000 + retry_after) == 2


@pytest.mark.parametrize("window", [10, 300])
def test_a_failed_mails_count_is_also_due_in_a_summary_from_the_retry_time(tmp_path, window):
    storm = new_storm(tmp_path, window)
    storm.admit(KEY, SUBJECT, 1000)
    storm.mail_failed(KEY, 1000, unreported=1)
    retry_at = 1000 + min(60, window)

    assert storm.closed_windows(retry_at - 0.001) == []
    assert storm.closed_windows(retry_at) == [(KEY, SUBJECT, 1)]


def test_after_a_failed_mail_this_worker_asks_the_store_again_at_the_retry_time(tmp_path):
    storm = new_storm(tmp_path, window=300)
    storm.admit(KEY, SUBJECT, 1000)  # this worker now holds repeats until 1300...
    storm.mail_failed(KEY, 1000)  # ...but the mail failed: retry at 1060

    assert storm.count_if_held(KEY, 1059.999, "ref") is None  # counted in memory
    assert storm.count_if_held(KEY, 1060, "ref") is False  # the store decides: mail again


def test_a_failed_mail_with_nothing_unreported_leaves_the_count_as_it_was(tmp_path):
    storm = new_storm(tmp_path)
    storm.admit(KEY, SUBJECT, 1000)
    storm.admit(KEY, SUBJECT, 1001)

    storm.mail_failed(KEY, 1002)

    assert rows(storm) == [(KEY, 1002.0, 1, SUBJECT)]


# --- 4. Summaries: closed_windows(), summary_sent(), summary_failed() -----------


def test_closed_windows_claims_each_count_once_its_window_has_closed(tmp_path):
    storm = new_storm(tmp_path)
    for bug, subject, times in [("a", "A", [100, 101]), ("b", "B", [100, 102, 103])]:
        for now in times:
            storm.admit(bug, subject, now)
    storm.admit("quiet", "Q", 100)  # mailed once and never again: no summary

    before = rows(storm)
    assert storm.closed_windows(109.999) == []  # still open: nothing to claim
    assert rows(storm) == before

    assert sorted(storm.closed_windows(110)) == [("a", "A", 1), ("b", "B", 2)]
    # Claimed: no other worker sends them while this one does.
    assert storm.closed_windows(110.5) == []
    # Sent: nothing left to report; the bugs are still listed (flask errors).
    storm.summary_sent("a", 1, 111)
    storm.summary_sent("b", 2, 111)
    assert rows(storm) == [("a", 100.0, 0, "A"), ("b", 100.0, 0, "B"), ("quiet", 100.0, 0, "Q")]
    assert storm.closed_windows(200) == []


def test_a_count_another_worker_claimed_since_we_looked_is_not_claimed_twice(tmp_path):
    storm, other = new_storm(tmp_path), new_storm(tmp_path)
    for now in (100, 101):
        storm.admit(KEY, SUBJECT, now)
    as_we_looked = storm.groups.all()
    assert other.closed_windows(110) == [(KEY, SUBJECT, 1)]  # the other worker was quicker

    storm.groups.all = lambda: as_we_looked  # our look came before its claim
    assert storm.closed_windows(110) == []


def test_a_summary_whose_mail_failed_keeps_its_count_for_a_later_summary(tmp_path):
    storm = new_storm(tmp_path)
    for now in (100, 101, 102):
        storm.admit(KEY, SUBJECT, now)
    assert storm.closed_windows(110) == [(KEY, SUBJECT, 2)]

    storm.summary_failed(KEY, 111)

    assert rows(storm) == [(KEY, 100.0, 2, SUBJECT)]
    # Tried again after RETRY_AFTER (here the 10-second window, which is shorter).
    assert storm.closed_windows(120.999) == []
    storm.admit(KEY, SUBJECT, 100.5)  # a late count from a worker's memory
    assert storm.closed_windows(121) == [(KEY, SUBJECT, 3)]
    storm.summary_sent(KEY, 3, 122)
    assert rows(storm) == [(KEY, 100.0, 0, SUBJECT)]


def test_a_summary_whose_mail_failed_is_counted_in_the_next_occurrences_mail(tmp_path):
    storm = new_storm(tmp_path)
    for now in (100, 101, 102):
        storm.admit(KEY, SUBJECT, now)
    assert storm.closed_windows(110) == [(KEY, SUBJECT, 2)]
    storm.summary_failed(KEY, 111)

    # The bug happens again before the retry: its mail carries the two.
    assert storm.admit(KEY, SUBJECT, 112) == 2
    assert storm.closed_windows(200) == []


def test_a_claim_lapses_when_its_worker_dies_before_sending(tmp_path):
    storm = new_storm(tmp_path)
    for now in (100, 101):
        storm.admit(KEY, SUBJECT, now)
    assert storm.closed_windows(110) == [(KEY, SUBJECT, 1)]
    # That worker never says sent or failed (SIGKILL, a power cut).

    # Claimed for two minutes: far longer than a mail takes, even a slow one.
    assert CLAIM_FOR == 120
    assert storm.closed_windows(110 + 119.999) == []
    assert new_storm(tmp_path).closed_windows(110 + 120) == [(KEY, SUBJECT, 1)]


@pytest.mark.parametrize(("now", "counted"), [(229.999, 0), (230, 1)])
def test_a_mail_once_a_claim_has_lapsed_counts_what_it_claimed(tmp_path, now, counted):
    storm = new_storm(tmp_path)
    for when in (100, 101):
        storm.admit(KEY, SUBJECT, when)
    assert storm.closed_windows(110) == [(KEY, SUBJECT, 1)]  # claimed until 230, never sent

    # In flight, the summary will count it; lapsed, the next mail does.
    assert storm.admit(KEY, SUBJECT, now) == counted


def test_a_mail_during_a_summary_counts_only_what_the_summary_does_not(tmp_path):
    storm = new_storm(tmp_path)
    for now in (100, 101, 102):
        storm.admit(KEY, SUBJECT, now)
    assert storm.closed_windows(110) == [(KEY, SUBJECT, 2)]  # being sent

    # Meanwhile the bug happens again: a new window, and its mail must not
    # repeat the two that the summary reports.
    assert storm.admit(KEY, SUBJECT, 111) == 0
    assert storm.admit(KEY, SUBJECT, 112) is None
    storm.summary_sent(KEY, 2, 113)

    assert rows(storm) == [(KEY, 111.0, 1, SUBJECT)]
    assert storm.closed_windows(121) == [(KEY, SUBJECT, 1)]


def test_a_bug_whose_window_is_open_keeps_its_window_and_count(tmp_path):
    storm = new_storm(tmp_path)
    storm.admit("old", "O", 100)
    storm.admit(KEY, SUBJECT, 105)
    storm.admit(KEY, SUBJECT, 106)

    assert storm.closed_windows(110) == []
    assert rows(storm) == [(KEY, 105.0, 1, SUBJECT), ("old", 100.0, 0, "O")]
    assert storm.admit(KEY, SUBJECT, 114.999) is None
    assert storm.closed_windows(115) == [(KEY, SUBJECT, 2)]


def test_a_bug_quiet_for_a_week_is_forgotten_unless_a_count_is_due(tmp_path):
    assert KEEP_FOR == 7 * 24 * 3600  # what the README promises
    storm = new_storm(tmp_path)
    storm.admit("quiet", "Q", 100)
    storm.admit(KEY, SUBJECT, 100)
    storm.admit(KEY, SUBJECT, 101)  # unreported: kept until a summary reports it
    storm.admit("recent", "R", 101 + KEEP_FOR)

    assert storm.closed_windows(100 + KEEP_FOR) == [(KEY, SUBJECT, 1)]
    assert [row[0] for row in rows(storm)] == [KEY, "quiet", "recent"]
    storm.summary_sent(KEY, 1, 100 + KEEP_FOR)
    assert storm.closed_windows(101.001 + KEEP_FOR) == []
    assert [row[0] for row in rows(storm)] == ["recent"]


def test_a_summary_names_the_latest_mails_subject(tmp_path):
    # The subject carries the request's reference: the summary points at the
    # latest mail the admins got.
    storm = new_storm(tmp_path)
    storm.admit(KEY, "[Blog] Error (error 1)", 100)
    storm.admit(KEY, "[Blog] Error (error 2)", 110)
    storm.admit(KEY, "[Blog] Error (error 3)", 111)

    assert storm.closed_windows(120) == [(KEY, "[Blog] Error (error 2)", 1)]


# --- 5. Repeats counted in memory: count_if_held() and flush_counts() ------------


def test_a_repeat_is_counted_in_memory_once_the_window_is_known_open(tmp_path):
    storm = new_storm(tmp_path)
    # Not known yet: the caller must ask the store.
    assert storm.count_if_held(KEY, 100, "ref-0") is False
    storm.admit(KEY, SUBJECT, 100, reference="ref-0")

    # None for the first count since the last flush (the caller queues one),
    # True for the next ones, until the window closes.
    assert storm.count_if_held(KEY, 101, "ref-1") is None
    assert storm.count_if_held(KEY, 109.999, "ref-2") is True
    assert storm.count_if_held(KEY, 110, "ref-3") is False
    assert counts(storm) == [(KEY, 1, 1, "ref-0")]  # nothing in the store yet

    storm.flush_counts()

    assert counts(storm) == [(KEY, 3, 3, "ref-2")]
    assert rows(storm) == [(KEY, 100.0, 2, SUBJECT)]
    storm.flush_counts()  # nothing new: nothing changes
    assert counts(storm) == [(KEY, 3, 3, "ref-2")]
    assert storm.count_if_held(KEY, 102, "ref-4") is None  # empty again


def test_memory_counts_reach_the_summary(tmp_path):
    storm = new_storm(tmp_path)
    storm.admit(KEY, SUBJECT, 100)
    for now in range(101, 106):
        storm.count_if_held(KEY, now, f"ref-{now}")
    storm.flush_counts()

    assert storm.closed_windows(110) == [(KEY, SUBJECT, 5)]


def test_a_flush_learns_a_shorter_window_from_the_store(tmp_path):
    # Another worker's mail failed: the store now retries sooner than this
    # worker thought. After its next flush, this worker asks the store again.
    storm, other = new_storm(tmp_path, window=300), new_storm(tmp_path, window=300)
    storm.admit(KEY, SUBJECT, 1000)
    other.mail_failed(KEY, 1000)  # retry at 1060
    storm.count_if_held(KEY, 1001, "ref")

    storm.flush_counts()

    assert storm.count_if_held(KEY, 1059.999, "ref") is None
    assert storm.count_if_held(KEY, 1060, "ref") is False


def test_memory_counts_of_a_bug_the_store_forgot_start_it_again(tmp_path):
    storm = new_storm(tmp_path)
    storm.admit(KEY, SUBJECT, 100)
    storm.count_if_held(KEY, 101, "ref-1")
    Path(storm.path).unlink()  # an admin deleted the file
    (tmp_path / f"{STORE_FILE}-wal").unlink(missing_ok=True)
    storm.groups._pid = None  # reconnect, as a new worker would

    storm.flush_counts()

    assert counts(storm) == [(KEY, 1, 1, "ref-1")]


def test_a_forked_worker_does_not_inherit_the_memory_counts(tmp_path):
    storm = new_storm(tmp_path)
    storm.admit(KEY, SUBJECT, 100)
    storm.count_if_held(KEY, 101, "parent")

    pid = os.fork()
    if pid == 0:  # the worker: its own counts, and it asks the store again
        try:
            fresh = storm.count_if_held(KEY, 102, "child") is False
            storm.flush_counts()
            os._exit(0 if fresh else 1)
        finally:
            os._exit(2)
    assert os.waitpid(pid, 0)[1] == 0

    storm.flush_counts()
    assert counts(storm) == [(KEY, 2, 2, "parent")]


# --- 6. One store for every worker, and what if it can't be kept -----------------


def test_workers_share_the_state_through_the_file(tmp_path):
    first, second = new_storm(tmp_path), new_storm(tmp_path)

    assert first.admit(KEY, SUBJECT, 100) == 0
    assert second.admit(KEY, SUBJECT, 101) is None
    assert first.admit(KEY, SUBJECT, 102) is None
    # Only one of them claims the count, so only one sends the summary.
    assert second.closed_windows(110) == [(KEY, SUBJECT, 2)]
    assert first.closed_windows(110) == []


def test_the_state_survives_a_restarted_worker(tmp_path):
    assert new_storm(tmp_path).admit(KEY, SUBJECT, 100) == 0

    assert new_storm(tmp_path).admit(KEY, SUBJECT, 101) is None


def test_a_forked_worker_opens_its_own_connection_and_shares_the_state(tmp_path):
    # gunicorn --preload: the master made the StormControl, each worker is a
    # fork of it. A SQLite connection must not cross a fork.
    storm = new_storm(tmp_path)
    assert storm.admit(KEY, SUBJECT, 100) == 0
    inherited = storm.groups._connection

    pid = os.fork()
    if pid == 0:  # the worker
        try:
            held = storm.admit(KEY, SUBJECT, 101) is None
            reconnected = storm.groups._connection is not inherited
            os._exit(0 if held and reconnected else 1)
        finally:
            os._exit(2)
    assert os.waitpid(pid, 0)[1] == 0

    assert storm.admit(KEY, SUBJECT, 102) is None
    assert storm.closed_windows(110) == [(KEY, SUBJECT, 2)]


def test_the_outbox_thread_may_change(tmp_path, mail_log):
    # The outbox's thread stops when drained and a new one starts with the
    # next mail: the connection must serve the new thread too.
    storm = new_storm(tmp_path)
    storm.admit(KEY, SUBJECT, 100)
    decided = []

    thread = threading.Thread(target=lambda: decided.append(storm.admit(KEY, SUBJECT, 101)))
    thread.start()
    thread.join(10)

    assert decided == [None]
    assert mail_log == []
    assert rows(storm) == [(KEY, 100.0, 1, SUBJECT)]


def test_a_worker_waits_for_another_workers_decision(tmp_path):
    # Two workers must not both read "not mailed yet" and both mail: the
    # decision takes the write lock before it reads.
    storm, other = new_storm(tmp_path), new_storm(tmp_path)
    other.admit(KEY, SUBJECT, 100)
    decided = []
    with other.groups._transaction():  # the other worker is deciding
        thread = threading.Thread(target=lambda: decided.append(storm.admit(KEY, SUBJECT, 101)))
        thread.start()
        thread.join(0.3)
        assert thread.is_alive(), "admit() did not wait for the other worker"
    thread.join(10)

    assert decided == [None]


def test_the_state_file_is_set_up_for_storms_and_for_several_workers(tmp_path):
    storm = new_storm(tmp_path)
    storm.admit(KEY, SUBJECT, 100)
    connection = storm.groups._connection

    # A storm is many counts a second: WAL with synchronous=NORMAL doesn't
    # wait for the disk on each one.
    with closing(sqlite3.connect(storm.path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert connection.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL
    # A worker waits up to 10 seconds for another's decision (milliseconds
    # here) before it gives up on the file and keeps its counts in memory.
    assert connection.execute("PRAGMA busy_timeout").fetchone() == (10000,)


def test_an_unusable_state_file_falls_back_to_memory_and_says_so_once(tmp_path, mail_log):
    # A regular file where the log folder should be: the state file can't be made.
    (tmp_path / "logs").write_text("not a folder")
    path = str(tmp_path / "logs" / STORE_FILE)
    storm = StormControl(path, WINDOW)

    # Failing open: no storm control would be better than no error mail.
    assert storm.admit(KEY, SUBJECT, 100) == 0
    assert mail_log == [
        f"ERROR Error store {path} unusable (unable to open database file); keeping it in memory"
    ]
    # And storm control goes on, in memory, without saying it again.
    assert storm.admit(KEY, SUBJECT, 105) is None
    assert storm.admit(KEY, SUBJECT, 110) == 1
    assert storm.admit(KEY, SUBJECT, 111) is None
    assert storm.closed_windows(120) == [(KEY, SUBJECT, 1)]
    assert len(mail_log) == 1

    # Memory is the last resort: a database error there is raised, not
    # another fallback that would forget the counts.
    def broken_query(group):
        raise sqlite3.OperationalError("no such table: error_grops")

    with pytest.raises(sqlite3.OperationalError):
        storm._store("update", KEY, broken_query)
    assert len(mail_log) == 1


def test_a_failure_inside_a_change_rolls_it_back_and_propagates(tmp_path, mail_log):
    storm = new_storm(tmp_path)
    assert storm.admit(KEY, SUBJECT, 100) == 0

    def change_then_fail(group):
        group.unreported = 99
        raise RuntimeError("failed half-way")

    with pytest.raises(RuntimeError, match="failed half-way"):
        storm._store("update", KEY, change_then_fail)

    assert rows(storm) == [(KEY, 100.0, 0, SUBJECT)]
    # Not a problem of the store: it is still used, and nothing says otherwise.
    assert storm.path == str(tmp_path / STORE_FILE)
    assert mail_log == []
    assert storm.admit(KEY, SUBJECT, 101) is None
    assert rows(storm) == [(KEY, 100.0, 1, SUBJECT)]


def test_a_database_error_in_memory_rolls_back_and_propagates(mail_log):
    storm = StormControl(":memory:", WINDOW)
    assert storm.admit(KEY, SUBJECT, 100) == 0

    def change_then_fail(group):
        group.unreported = 99
        raise sqlite3.IntegrityError("as if a constraint failed")

    with pytest.raises(sqlite3.IntegrityError):
        storm._store("update", KEY, change_then_fail)

    assert mail_log == []
    # The earlier state: held back, then counted once.
    assert storm.admit(KEY, SUBJECT, 101) is None
    assert storm.closed_windows(110) == [(KEY, SUBJECT, 1)]


# --- 7. What the mails say (a real SMTP server) --------------------------------


@pytest.fixture
def smtp(tmp_path) -> Iterator[SMTPServer]:
    with smtp_server("plain", tmp_path) as server:
        yield server


def mailer(mail_settings: dict, storm: StormControl) -> ErrorMailHandler:
    """The error-mail handler as init_email makes it, called directly here."""
    settings = MailSettings.from_config(mail_settings)
    return ErrorMailHandler(settings, [ADMIN], "[Blog]", storm, secrets=[])


def report(created: float) -> ErrorReport:
    """One occurrence of the bug KEY, at `created`."""
    return ErrorReport(
        fingerprint=KEY,
        subject=SUBJECT,
        headline="ZeroDivisionError: division by zero",
        location="app/main/routes.py:12",
        reference=f"ref-{created:g}",
        fields=[("Message type", "ERROR")],
        request=None,
        traceback="",
        created=created,
    )


def body(message: EmailMessage, subtype: str = "plain") -> str:
    return message.get_body((subtype,)).get_content().replace("\r\n", "\n")


@pytest.mark.system
def test_the_first_mail_has_no_count_and_a_later_one_has_exactly_the_count(smtp, tmp_path):
    handler = mailer(smtp.settings, new_storm(tmp_path))
    before = time.time()

    handler.deliver(report(100))
    assert handler.last_outcome == f"delivered to {ADMIN}"
    for now in (104, 109):
        handler.deliver(report(now))
        assert handler.last_outcome == HELD_BACK
    handler.deliver(report(110))
    assert handler.last_outcome == f"delivered to {ADMIN}"

    first, later = smtp.mailbox.messages
    assert first["Subject"] == later["Subject"] == SUBJECT
    assert body(first) == "Error\nMessage type:   ERROR\n"
    assert body(first, "html").startswith("<h2>Error</h2>")
    note = "This error also happened 2 more times since the last mail about it."
    assert body(later) == f"{note}\n\nError\nMessage type:   ERROR\n"
    assert body(later, "html").startswith(f"<p><strong>{note}</strong></p>\n<h2>Error</h2>")
    # A delivered mail leaves the window as the mail opened it.
    assert rows(handler.storm) == [(KEY, 110.0, 0, SUBJECT)]
    [group] = handler.storm.all_groups()
    assert (group.title, group.location, group.total) == (
        "ZeroDivisionError: division by zero",
        "app/main/routes.py:12",
        4,
    )
    assert (group.mail, group.last_reference) == ("sent", "ref-110")
    assert before <= group.mailed_at <= time.time()


def test_with_mail_off_every_error_is_still_recorded(tmp_path):
    handler = ErrorMailHandler(None, [], "[Blog]", new_storm(tmp_path), secrets=[])
    start = time.time() - 60

    for now in (start, start + 1, start + 10):
        handler.deliver(report(now))
    handler.send_summaries()  # nothing to send it with: the count stays

    [group] = handler.storm.all_groups()
    assert (group.total, group.window_count, group.unreported, group.mail) == (3, 1, 0, "off")
    handler.deliver(report(start + 11))  # held back: a count due, with nothing to mail it
    handler.send_summaries()
    [group] = handler.storm.all_groups()
    assert (group.unreported, group.claimed, group.claimed_until) == (1, 0, 0.0)

    handler.deliver(report(start - KEEP_FOR))  # a late one: changes nothing but the total
    assert handler.storm.all_groups()[0].last_reference == f"ref-{start + 10:g}"


def test_with_mail_off_a_bug_quiet_for_a_week_is_forgotten(tmp_path):
    handler = ErrorMailHandler(None, [], "[Blog]", new_storm(tmp_path), secrets=[])
    old, recent = time.time() - KEEP_FOR - 1, time.time() - 100
    for seconds in (0, 1):  # the second one held back: a count no mail will report
        handler.deliver(dataclasses.replace(report(old + seconds), fingerprint="old-bug"))
    handler.deliver(report(recent))
    assert handler.storm.all_groups()[1].unreported == 1

    handler.send_summaries()

    assert [group.fingerprint for group in handler.storm.all_groups()] == [KEY]


@pytest.mark.system
def test_an_occurrence_whose_mail_failed_is_counted_in_the_next_mail(smtp, tmp_path, mail_log):
    nobody_listens = {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": free_port(), "MAIL_TIMEOUT": 2}
    nobody_listens |= {"MAIL_USE_TLS": False, "MAIL_USE_SSL": False}
    handler = mailer(nobody_listens, new_storm(tmp_path))
    start = time.time()  # mail_failed() reads the clock: these times are real ones

    handler.deliver(report(start))
    assert handler.last_outcome.startswith("not sent: refused")
    assert [line.split(" not sent: ")[0] for line in mail_log] == [f"ERROR Error mail {SUBJECT!r}"]
    assert handler.storm.all_groups()[0].mail == "failed"
    handler.deliver(report(start + 5))  # within the retry delay
    assert handler.last_outcome == HELD_BACK

    handler.settings = MailSettings.from_config(smtp.settings)  # the mail server is back
    handler.deliver(report(start + WINDOW + 1))

    [message] = smtp.mailbox.messages
    # The one whose mail failed and the held-back one.
    note = "This error also happened 2 more times since the last mail about it."
    assert body(message).startswith(f"{note}\n\n")


@pytest.mark.system
def test_a_summary_says_how_many_were_not_mailed_and_goes_out_once(smtp, tmp_path):
    handler = mailer(smtp.settings, new_storm(tmp_path))
    start = time.time() - 60  # send_summaries() reads the clock: this window has closed
    for now in (start, start + 1, start + 2):
        handler.deliver(report(now))

    handler.send_summaries()
    handler.send_summaries()

    first, summary = smtp.mailbox.messages
    assert first["Subject"] == SUBJECT
    assert summary["Subject"] == f"{SUBJECT} [repeated 2 times]"
    assert summary.get_content_type() == "text/plain"
    assert body(summary) == (
        "This error happened 2 more times that were not mailed one by one "
        "(at most one mail per error every 10 seconds). "
        f"The log file has every occurrence.\n\n{SUBJECT}\n"
    )
    assert rows(handler.storm)[0][2] == 0


@pytest.mark.system
def test_a_summary_whose_mail_failed_arrives_later_with_its_count(smtp, tmp_path, mail_log):
    # The count must survive the failed mail: it used to be forgotten as
    # soon as the summary was claimed.
    handler = mailer(smtp.settings, new_storm(tmp_path))
    start = time.time() - 300  # long closed; the retry delay (10 s) counts from now
    for now in (start, start + 1, start + 2, start + 3):
        handler.deliver(report(now))
    working = handler.settings
    handler.settings = MailSettings.from_config(
        {**smtp.settings, "MAIL_PORT": free_port(), "MAIL_TIMEOUT": 2}
    )

    handler.send_summaries()  # refused

    assert [line.split(" not sent: ")[0] for line in mail_log] == [
        f"ERROR Error mail '{SUBJECT} [repeated 3 times]'"
    ]
    assert rows(handler.storm)[0][2] == 3
    handler.settings = working
    handler.send_summaries()  # too soon: the retry waits RETRY_AFTER (here the window)
    assert len(smtp.mailbox.messages) == 1
    # Due again after RETRY_AFTER, not only once a claim has lapsed (CLAIM_FOR).
    assert handler.storm.closed_windows(time.time() + WINDOW - 1) == []
    assert handler.storm.closed_windows(time.time() + WINDOW + 1) == [(KEY, SUBJECT, 3)]

    handler.storm.summary_failed(KEY, time.time() - WINDOW)  # as if the retry time had come
    handler.send_summaries()

    _, summary = smtp.mailbox.messages
    assert summary["Subject"] == f"{SUBJECT} [repeated 3 times]"
    assert rows(handler.storm)[0][2] == 0


# --- 8. In the request: emit() counts a held-back repeat in memory -----------------


@pytest.fixture
def queued(monkeypatch) -> list[Callable[[], None]]:
    """The jobs handed to the outbox, kept for the test to run when it chooses
    (the background thread would run them at a moment of its own)."""
    jobs: list[Callable[[], None]] = []
    monkeypatch.setattr(outbox, "submit", jobs.append)
    return jobs


def run_all(jobs: list[Callable[[], None]]) -> None:
    while jobs:
        jobs.pop(0)()


def test_a_held_back_repeat_costs_the_request_a_count_and_one_flush_job(tmp_path, app, queued):
    handler = ErrorMailHandler(None, [], "[Blog]", new_storm(tmp_path, 600), secrets=[])
    failure = logged(views["show"])

    with app.test_request_context("/shop"):
        handler.emit(failure)
        first = request_id()
    assert len(queued) == 1  # the first occurrence: captured, decided in the outbox
    run_all(queued)
    assert counts(handler.storm) == [(fingerprint(failure), 1, 1, first)]

    references = []
    for _ in range(3):
        with app.test_request_context("/shop"):
            handler.emit(failure)
            references.append(request_id())
        assert handler.last_outcome == HELD_BACK
    # Counted in memory: one job queued to add the counts, none per repeat.
    assert queued == [handler.storm.flush_counts]
    assert counts(handler.storm) == [(fingerprint(failure), 1, 1, first)]

    run_all(queued)
    assert counts(handler.storm) == [(fingerprint(failure), 4, 4, references[-1])]
    # Outside a request there is no reference: the last one stays.
    handler.emit(failure)
    run_all(queued)
    assert counts(handler.storm) == [(fingerprint(failure), 5, 5, references[-1])]


def test_a_handler_that_fails_says_so_and_raises_nothing(tmp_path, monkeypatch, capsys):
    # Reporting an error must never raise a second one in the request; but
    # the failure is reported the way logging reports a broken handler.
    def no_threads_left(job):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(outbox, "submit", no_threads_left)
    handler = ErrorMailHandler(None, [], "[Blog]", new_storm(tmp_path), secrets=[])

    handler.emit(logged(views["show"]))

    err = capsys.readouterr().err
    assert err.startswith("--- Logging error ---\n")
    assert "RuntimeError: can't start new thread" in err


@pytest.mark.system
def test_a_bug_the_store_lost_mid_storm_gets_a_summary_with_a_subject(smtp, tmp_path):
    # Its window was open in this worker's memory when its row went (an admin
    # emptied the file): the counts start it again, without a subject.
    storm = new_storm(tmp_path)
    start = time.time() - 60
    storm.admit(KEY, SUBJECT, start)
    storm.count_if_held(KEY, start + 1, "ref-1")
    with closing(sqlite3.connect(storm.path)) as db, db:
        db.execute("DELETE FROM error_groups")
    storm.count_if_held(KEY, start + 2, "ref-2")
    storm.flush_counts()

    mailer(smtp.settings, storm).send_summaries()

    [summary] = smtp.mailbox.messages
    assert summary["Subject"] == f"[Blog] {KEY} [repeated 2 times]"
    [group] = storm.all_groups()
    assert (group.title, group.location, group.window_start) == ("", "", start + 2)

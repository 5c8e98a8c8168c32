"""Error mails: what goes into them, and how many go out.

`ErrorMailHandler` is a logging handler for ERROR records. In the request's
thread it only *captures* the error (the request is still there to describe);
the background outbox of app/mail.py then decides, with `StormControl`,
whether to mail it, and mails it.

Storm control answers a well-known warning: when many users hit the same bug,
error mails become overwhelming, and an inbox full of copies hides the one new
error that matters. Sentry groups duplicates; we do the small version of it.

The mail is in the admins' language (``ADMIN_LOCALE``), never the visitor's:
it is written in the outbox, long after the request, inside the
`in_admin_language` context that app/logger.py passes in. Only the words are
translated; what the app, Python and the database said (the exception, the
traceback, log messages) stays as they said it.
"""

import hashlib
import html
import logging
import os
import sqlite3
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from app.log_context import describe_request, redact, request_secrets
from app.mail import MailError, MailSettings, build_message, log, outbox, send

# Frames from these files are "this app's code" when fingerprinting.
APP_DIR = str(Path(__file__).resolve().parent)

# The labels of app/log_context.py's describe_request(), as the mail shows them.
REQUEST_LABELS = {
    "Method": _l("Method"),
    "URL": _l("URL"),
    "Endpoint": _l("Endpoint"),
    "User": _l("User"),
    "Remote address": _l("Remote address"),
    "User agent": _l("User agent"),
    "Request id": _l("Request id"),
}


def origin(record: logging.LogRecord) -> traceback.FrameSummary | None:
    """Where the record's exception was raised: the innermost frame of this
    app's code, else the innermost frame of all. None without an exception."""
    if not record.exc_info or record.exc_info[1] is None:
        return None
    frames = traceback.extract_tb(record.exc_info[2])
    ours = [frame for frame in frames if frame.filename.startswith(APP_DIR)]
    return (ours or frames or [None])[-1]


def fingerprint(record: logging.LogRecord) -> str:
    """Name the bug behind `record`, the same way every time it happens.

    For an exception: its type plus where this app's code raised it (where
    it was logged, if it was never raised), so that "division by zero in
    views.py line 12" is one bug however the message varies (ids,
    usernames). For a plain error message: where it was logged
    and its text before the arguments were filled in. A caller can also name
    the bug itself, as with Sentry: ``extra={"fingerprint": "..."}``.
    """
    if getattr(record, "fingerprint", None):  # logger.error(..., extra={"fingerprint": ...})
        return str(record.fingerprint)
    if record.exc_info and record.exc_info[1] is not None:
        exc_type = record.exc_info[0]
        frame = origin(record)
        # An exception logged without having been raised has no traceback:
        # then where it was logged tells the bugs apart (as the mail's Location).
        place = (
            f"{frame.filename}:{frame.name}:{frame.lineno}"
            if frame
            else f"{record.pathname}:{record.funcName}:{record.lineno}"
        )
        key = f"{exc_type.__module__}.{exc_type.__qualname__} at {place}"
    else:
        key = f"{record.name} at {record.pathname}:{record.lineno}: {record.msg}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class StormControl:
    """Decide which error mails go out: the first of each bug in a window.

    Later occurrences of the same fingerprint within `window` seconds are
    only counted; the count goes out in a summary once the window has closed
    (or in the next mail about that bug, whichever comes first).

    The counts live in a small SQLite file, because every gunicorn worker is
    a separate process with its own memory, and the state must outlive a
    worker that is restarted. SQLite is in the standard library, needs no
    server, and its locking makes "count or send" one atomic decision across
    processes. The file sits in the log directory, which every worker can
    already write to. If it can't be used (a read-only file left by a
    command run as root...), storm control goes on in memory, per process:
    failing open, because no storm control is better than no error mail.
    """

    SCHEMA = """CREATE TABLE IF NOT EXISTS error_mail (
        fingerprint TEXT PRIMARY KEY,
        window_start REAL NOT NULL,
        repeats INTEGER NOT NULL,
        subject TEXT NOT NULL)"""
    # After a mail that failed, the next occurrence is mailed again, but not
    # sooner than this: a dead mail server must not be tried for every error.
    RETRY_AFTER = 60.0

    def __init__(self, path: str, window: float):
        self.path = path
        self.window = window
        self._pid: int | None = None

    def admit(self, key: str, subject: str, now: float) -> int | None:
        """Record one occurrence of `key` at `now`.

        :return: None if the mail is held back (counted instead), else the
            number of earlier occurrences that no mail has mentioned yet.
        """

        def count_or_open_window(db: sqlite3.Connection) -> int | None:
            row = db.execute(
                "SELECT window_start, repeats FROM error_mail WHERE fingerprint = ?", (key,)
            ).fetchone()
            if row is not None and now - row[0] < self.window:
                db.execute(
                    "UPDATE error_mail SET repeats = repeats + 1 WHERE fingerprint = ?", (key,)
                )
                return None
            db.execute("INSERT OR REPLACE INTO error_mail VALUES (?, ?, 0, ?)", (key, now, subject))
            return row[1] if row else 0

        return self._in_transaction(count_or_open_window)

    def closed_windows(self, now: float) -> list[tuple[str, str, int]]:
        """Claim the counts of windows that have closed: (key, subject, repeats).

        Claimed in one transaction, so that of several workers only one
        sends each summary.
        """

        def claim(db: sqlite3.Connection) -> list[tuple[str, str, int]]:
            rows = db.execute(
                "SELECT fingerprint, subject, repeats FROM error_mail "
                "WHERE repeats > 0 AND window_start <= ?",
                (now - self.window,),
            ).fetchall()
            db.executemany(
                "UPDATE error_mail SET repeats = 0 WHERE fingerprint = ?", [(r[0],) for r in rows]
            )
            # Forget bugs that have been quiet for a whole window.
            db.execute(
                "DELETE FROM error_mail WHERE repeats = 0 AND window_start <= ?",
                (now - self.window,),
            )
            return rows

        return self._in_transaction(claim)

    def mail_failed(self, key: str, now: float, unreported: int = 0) -> None:
        """A mail about `key` didn't go out: mail the next occurrence (after
        RETRY_AFTER), and keep the `unreported` count for it."""
        retry_at = now + min(self.RETRY_AFTER, self.window)
        self._in_transaction(
            lambda db: db.execute(
                "UPDATE error_mail SET window_start = ?, repeats = repeats + ? "
                "WHERE fingerprint = ?",
                (retry_at - self.window, unreported, key),
            )
        )

    def _in_transaction(self, work):
        """Run `work(connection)` in one write transaction; fall back to memory."""
        try:
            with self._transaction() as db:
                return work(db)
        except sqlite3.Error as error:
            if self.path == ":memory:":
                raise
            log.error("Error-mail state %s unusable (%s); keeping it in memory", self.path, error)
            self.path, self._pid = ":memory:", None
            with self._transaction() as db:
                return work(db)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # Only the outbox thread uses this, one per process; a connection must
        # not cross a fork (SQLite's rule), hence a new one in a new process.
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._connection = sqlite3.connect(
                self.path, timeout=10, isolation_level=None, check_same_thread=False
            )
            # WAL with synchronous=NORMAL: no disk flush on every count (a
            # storm is many counts a second); a power cut may lose the last few.
            self._connection.execute("PRAGMA journal_mode=WAL")
            self._connection.execute("PRAGMA synchronous=NORMAL")
            self._connection.execute(self.SCHEMA)
        db = self._connection
        # IMMEDIATE takes the write lock up front, so two workers can't both
        # read "not mailed yet" and both mail. (isolation_level=None above:
        # we begin transactions ourselves.)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


@dataclass(frozen=True)
class ErrorReport:
    """What an error mail says, redacted."""

    fingerprint: str
    subject: str
    fields: list[tuple[str, str]]
    request: dict[str, str] | None
    traceback: str
    created: float


class ErrorMailHandler(logging.Handler):
    """Mail ERROR records to the admins, from the background, with storm control."""

    def __init__(
        self,
        settings: MailSettings,
        admins: list[str],
        subject_prefix: str,
        storm: StormControl,
        secrets: list[str],
        in_admin_language: Callable[[], AbstractContextManager] = nullcontext,
    ):
        super().__init__(logging.ERROR)
        self.settings = settings
        self.admins = admins
        self.subject_prefix = subject_prefix
        self.storm = storm
        self.secrets = secrets
        # Entered around everything the outbox writes (app.i18n.in_language).
        self.in_admin_language = in_admin_language
        # What happened to the last error, for `flask test-error` to print.
        self.last_outcome: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # Only what needs the request is read here, in the request's
            # thread (the request is gone by the time the outbox runs); the
            # rest waits for the outbox, so that the error page goes out first.
            message = record.getMessage()
            details = describe_request()
            secrets = self.secrets + request_secrets()

            def write_and_send() -> None:
                with self.in_admin_language():
                    self.deliver(self.capture(record, message, details, secrets))

            outbox.submit(write_and_send)
        except Exception:
            # Never let reporting an error raise a second one in the request.
            self.handleError(record)

    def capture(
        self,
        record: logging.LogRecord,
        message: str,
        details: dict[str, str] | None,
        secrets: list[str],
    ) -> ErrorReport:
        """Everything the mail will say about `record` (in the outbox), redacted once."""
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            headline = f"{type(error).__name__}: {error}"
            trace = "".join(traceback.format_exception(*record.exc_info))
        else:
            headline = message
            trace = record.stack_info or ""
        # Redacted before it is cut short: a secret cut in two no longer matches.
        headline = redact(headline, secrets).strip()
        headline = headline.splitlines()[0][:150] if headline else record.levelname
        reference = " " + _("(error %(id)s)", id=details["Request id"]) if details else ""
        # Where it went wrong: where the exception was raised, if there is one,
        # rather than where it was logged (Flask logs every 500 from one line).
        frame = origin(record)
        pathname, lineno = (
            (frame.filename, frame.lineno) if frame else (record.pathname, record.lineno)
        )
        fields = [
            (_("Message type"), record.levelname),
            (_("Location"), f"{pathname}:{lineno}"),
            (_("Module"), Path(pathname).stem),
            (_("Function"), frame.name if frame else record.funcName or "-"),
            (_("Time"), time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(record.created))),
            (_("Message"), message),
        ]
        return ErrorReport(
            fingerprint=fingerprint(record),
            subject=redact(f"{self.subject_prefix} {headline}{reference}", secrets),
            fields=[(label, redact(value, secrets)) for label, value in fields],
            request=(
                {str(REQUEST_LABELS.get(k, k)): redact(v, secrets) for k, v in details.items()}
                if details
                else None
            ),
            traceback=redact(trace, secrets),
            created=record.created,
        )

    def deliver(self, report: ErrorReport) -> None:
        """Mail `report` unless storm control holds it back (runs in the outbox)."""
        earlier = self.storm.admit(report.fingerprint, report.subject, report.created)
        if earlier is None:
            self.last_outcome = "held back: the same error was mailed less than a window ago"
            return
        note = (
            _(
                "This error also happened %(count)d more times since the last mail about it.",
                count=earlier,
            )
            if earlier
            else ""
        )
        text, body_html = render_report(report, note)
        if not self.send(report.subject, text, body_html):
            # Nobody got it: mail the next occurrence, counting this one.
            self.storm.mail_failed(report.fingerprint, time.time(), unreported=earlier + 1)

    def send_summaries(self) -> None:
        """Mail the counts of errors whose storm-control window has closed."""
        for key, subject, repeats in self.storm.closed_windows(time.time()):
            with self.in_admin_language():
                summary = _(
                    "This error happened %(count)d more times that were not mailed one by one "
                    "(at most one mail per error every %(window)s seconds). "
                    "The log file has every occurrence.",
                    count=repeats,
                    window=f"{self.storm.window:g}",
                )
                repeated = _("[repeated %(count)d times]", count=repeats)
            if not self.send(f"{subject} {repeated}", f"{summary}\n\n{subject}\n", None):
                self.storm.mail_failed(key, time.time(), unreported=repeats)

    def send(self, subject: str, text: str, body_html: str | None) -> bool:
        """Send one mail to the admins now; log a failure. True if it was delivered."""
        message = build_message(self.settings, self.admins, subject, text, body_html)
        try:
            send(self.settings, message)
        except MailError as error:
            self.last_outcome = f"not sent: {error}"
            # Logged to the "blog.mail" logger, which writes to the log file
            # but has no mail handler: a failing mail never mails itself.
            log.error("Error mail %r not sent: %s", subject, error)
            return False
        self.last_outcome = f"delivered to {', '.join(self.admins)}"
        return True


def render_report(report: ErrorReport, note: str) -> tuple[str, str]:
    """The mail's plain-text and HTML bodies: what went wrong and where, the
    request it happened in, then the traceback."""
    sections = [(_("Error"), report.fields)]
    if report.request:
        sections.append((_("Request"), list(report.request.items())))
    text_parts = [note] if note else []
    html_parts = [f"<p><strong>{html.escape(note)}</strong></p>"] if note else []
    for title, rows in sections:
        text_parts.append(title + "\n" + "\n".join(f"{label + ':':<16}{v}" for label, v in rows))
        cells = "".join(
            f"<tr><th style='text-align:right'>{html.escape(label)}:</th>"
            f"<td>{html.escape(value)}</td></tr>"
            for label, value in rows
        )
        html_parts.append(f"<h2>{html.escape(title)}</h2><table>{cells}</table>")
    if report.traceback:
        text_parts.append(report.traceback)
        heading = html.escape(_("Traceback"))
        html_parts.append(f"<h2>{heading}</h2><pre>{html.escape(report.traceback)}</pre>")
    return "\n\n".join(text_parts) + "\n", "\n".join(html_parts)

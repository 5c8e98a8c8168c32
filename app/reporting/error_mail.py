"""Error mails: what goes into them, and when they go out.

`ErrorMailHandler` is a logging handler for ERROR records. In the request's
thread it does as little as it can: a repeat that storm control already holds
back is counted in memory (app/reporting/storm.py); anything else is
*captured* (the request is still there to describe) and handed to the
background outbox of app/mail.py, which records it in the store, decides
whether to mail it, and mails it.

With mail off (no MAIL_SERVER or no ADMINS) the handler still records every
error in the store, so that `flask errors` can list them.

The mail is in the admins' language (``ADMIN_LOCALE``), never the visitor's:
it is written in the outbox, long after the request, inside the
`in_admin_language` context that app/logger.py passes in. Only the words are
translated; what the app, Python and the database said (the exception, the
traceback, log messages) stays as they said it.
"""

import html
import logging
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from app.mail import MailError, MailSettings, build_message, log, outbox, send
from app.reporting.fingerprint import APP_DIR, fingerprint, origin
from app.reporting.log_context import describe_request, redact, request_secrets
from app.reporting.request_id import request_id
from app.reporting.storm import StormControl

# The labels of app/reporting/log_context.py's describe_request(), as the mail shows them.
REQUEST_LABELS = {
    "Method": _l("Method"),
    "URL": _l("URL"),
    "Endpoint": _l("Endpoint"),
    "User": _l("User"),
    "Remote address": _l("Remote address"),
    "User agent": _l("User agent"),
    "Request id": _l("Request id"),
}


@dataclass(frozen=True)
class ErrorReport:
    """What an error mail says, redacted."""

    fingerprint: str
    subject: str
    headline: str  # the exception, or the message: one line
    location: str  # file:line where it went wrong, relative to the project
    reference: str  # the request id, or "" outside a request
    fields: list[tuple[str, str]]
    request: dict[str, str] | None
    traceback: str
    created: float


class ErrorMailHandler(logging.Handler):
    """Record ERROR records in the store, and mail the admins about them (if
    `settings` is given) from the background, with storm control."""

    def __init__(
        self,
        settings: MailSettings | None,
        admins: list[str],
        subject_prefix: str,
        storm: StormControl,
        secrets: list[str],
        in_admin_language: Callable[[], AbstractContextManager] = nullcontext,
    ):
        super().__init__(logging.ERROR)
        self.settings = settings if admins else None
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
            key = fingerprint(record)
            held = self.storm.count_if_held(key, record.created, request_id() or "")
            if held is None:  # the first count since the last flush
                outbox.submit(self.storm.flush_counts)
            if held is not False:
                self.last_outcome = "held back: the same error was mailed less than a window ago"
                return
            # Only what needs the request is read here, in the request's
            # thread (the request is gone by the time the outbox runs); the
            # rest waits for the outbox, so that the error page goes out first.
            message = record.getMessage()
            details = describe_request()
            secrets = self.secrets + request_secrets()

            def write_and_send() -> None:
                with self.in_admin_language():
                    self.deliver(self.capture(record, key, message, details, secrets))

            outbox.submit(write_and_send)
        except Exception:
            # Never let reporting an error raise a second one in the request.
            self.handleError(record)

    def capture(
        self,
        record: logging.LogRecord,
        key: str,
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
        reference = details["Request id"] if details else ""
        in_subject = " " + _("(error %(id)s)", id=reference) if reference else ""
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
            fingerprint=key,
            subject=redact(f"{self.subject_prefix} {headline}{in_subject}", secrets),
            headline=headline,
            location=f"{project_path(pathname)}:{lineno}",
            reference=reference,
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
        """Record `report` in the store, and mail it unless storm control holds
        it back (runs in the outbox)."""
        earlier = self.storm.admit(
            report.fingerprint,
            report.subject,
            report.created,
            title=report.headline,
            location=report.location,
            reference=report.reference,
        )
        if earlier is None:
            self.last_outcome = "held back: the same error was mailed less than a window ago"
            return
        if self.settings is None:
            self.storm.mail_off(report.fingerprint)
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
        if self.send(report.subject, text, body_html):
            self.storm.mail_sent(report.fingerprint, time.time())
        else:
            # Nobody got it: mail the next occurrence, counting this one.
            self.storm.mail_failed(report.fingerprint, time.time(), unreported=earlier + 1)

    def send_summaries(self) -> None:
        """Mail the counts of errors whose storm-control window has closed
        (runs in the outbox, every few seconds, in every worker)."""
        if self.settings is None:
            # Nothing to mail with: the counts stay in the store, for `flask errors`.
            self.storm.forget_old(time.time(), unreported_too=True)
            return
        for key, subject, count in self.storm.closed_windows(time.time()):
            # A bug the store lost while workers were counting it has no subject.
            subject = subject or f"{self.subject_prefix} {key}"
            with self.in_admin_language():
                summary = _(
                    "This error happened %(count)d more times that were not mailed one by one "
                    "(at most one mail per error every %(window)s seconds). "
                    "The log file has every occurrence.",
                    count=count,
                    window=f"{self.storm.window:g}",
                )
                repeated = _("[repeated %(count)d times]", count=count)
            if self.send(f"{subject} {repeated}", f"{summary}\n\n{subject}\n", None):
                self.storm.summary_sent(key, count, time.time())
            else:
                self.storm.summary_failed(key, time.time())

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


def project_path(pathname: str) -> str:
    """`pathname` relative to the project ("app/main/routes.py"), if it is in it."""
    project = str(Path(APP_DIR).parent) + "/"
    return pathname.removeprefix(project)


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

"""The log line: what it says, that nobody can forge one, and the file it goes to.

Three promises, kept by `RequestFormatter` for every record, whoever logged it
(the app, Flask, gunicorn, SQLAlchemy):

- **Nothing forges a line.** A request path, a header or any other input may
  hold CR, LF or other control characters; written raw, a visitor could make
  a line that starts at column 0 and looks like ours. The message and the
  request are written with control characters escaped (``\\n`` as the two
  characters ``\\`` and ``n``), and the only line breaks are the ones a
  traceback needs, each continuation line indented and tagged.
- **Every line of a record carries its reference.** The first line ends with
  ``[request <id> ...]``; each further line (the traceback) starts with
  ``  <id> | ``, so ``grep <reference> logs/blog.log*`` finds them all.
- **A storm does not erase the history.** When many requests hit the same
  bug, each is still logged with its reference, but the traceback only the
  first time per window (per worker process): a repeat says which reference
  has it. A thousand copies of one traceback would otherwise rotate every
  earlier line out of the files within seconds.
"""

import logging
import re
import sys
import time
from contextlib import suppress

from concurrent_log_handler import ConcurrentRotatingFileHandler
from flask import request

from app.reporting.fingerprint import fingerprint
from app.reporting.log_context import current_user_label, redact, request_secrets
from app.reporting.request_id import request_id

# The Mega-Tutorial's format, extended with the request: the id a user can quote, and
# who asked for what.
LOG_FORMAT = (
    "%(asctime)s %(levelname)s: %(message)s [in %(pathname)s:%(lineno)d] "
    "[request %(request_id)s%(request)s]"
)
# How a line after a record's first starts: indented, and tagged with the reference.
CONTINUATION = "  {reference} | "
# Reading the lines back (`flask errors show`). A first line is read from its
# end, which is always ours: the message before it may hold anything a
# visitor sent, "[request <someone else's id>" included, but the request
# part has no brackets of its own (a path's are written %5B and %5D), so
# nothing can pass for the end. A repeat's pointer ends the message.
REQUEST_ID = r"[A-Za-z0-9._:-]+"
FIRST_LINE_END = re.compile(
    rf"(?: \[traceback: see request (?P<earlier>{REQUEST_ID})\])?"
    rf" \[in [^\[\]]*:\d+\] \[request (?P<reference>{REQUEST_ID}|-)(?: [^\[\]]*)?\]$"
)
CONTINUATION_LINE = re.compile(rf"  (?P<reference>{REQUEST_ID}) \| ")
# C0 and C1 control characters, DEL, and the Unicode line and paragraph
# separators: each ends or rewrites a line in some viewer.
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# At most this many bugs' tracebacks are remembered per process.
MAX_REMEMBERED = 1000


def escape_controls(text: str) -> str:
    r"""`text` with every control character written as Python writes it: \n, \x1b."""
    return CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode(), text)


class RequestFormatter(logging.Formatter):
    """Add the request to each line (the pattern in Flask's logging docs), blank
    out secrets, escape control characters, and write a traceback once per
    bug per `repeat_window` seconds."""

    def __init__(self, secrets: list[str], repeat_window: float = 0):
        super().__init__(LOG_FORMAT)
        self.secrets = secrets
        self.repeat_window = repeat_window
        # fingerprint -> (reference of the record whose traceback was written, until when)
        self.tracebacks: dict[str, tuple[str, float]] = {}

    def format(self, record: logging.LogRecord) -> str:
        record.request_id = request_id() or "-"
        record.request = ""
        if record.request_id != "-":  # inside a request
            record.request = escape_controls(
                f" {request.method} {request.path} from {request.remote_addr} "
                f"user {current_user_label()}"
            )
            record.request = record.request.replace("[", "%5B").replace("]", "%5D")
        record.message = escape_controls(record.getMessage())
        details = ""
        if record.exc_info and record.exc_info[1] is not None:
            earlier = self.traceback_logged_before(record)
            if earlier:
                record.message += f" [traceback: see request {escape_controls(earlier)}]"
            else:
                details = self.formatException(record.exc_info)
        if record.stack_info:
            details += ("\n" if details else "") + self.formatStack(record.stack_info)
        record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        if details:
            prefix = CONTINUATION.format(reference=record.request_id)
            # Split at LF only: a CR (or any other line break) inside an
            # exception's message is escaped like the rest, not a new line.
            for line in details.split("\n"):
                text += "\n" + prefix + escape_controls(line)
        return redact(text, self.secrets + request_secrets())

    def traceback_logged_before(self, record: logging.LogRecord) -> str | None:
        """The reference whose lines hold this bug's traceback, if this process
        wrote it less than `repeat_window` seconds ago; else remember this one
        (with a window of 0, it is forgotten at once: every traceback is written)."""
        key, now = fingerprint(record), time.time()
        earlier = self.tracebacks.get(key)
        if earlier and earlier[1] > now and earlier[0] != "-":
            return earlier[0]
        if len(self.tracebacks) >= MAX_REMEMBERED:
            # Forget the expired, and if that isn't enough, the older half.
            current = [(k, v) for k, v in self.tracebacks.items() if v[1] > now]
            if len(current) >= MAX_REMEMBERED:
                current = current[-(MAX_REMEMBERED // 2) :]
            self.tracebacks = dict(current)
        self.tracebacks[key] = (record.request_id, now + self.repeat_window)


class LogFileHandler(ConcurrentRotatingFileHandler):
    """concurrent-log-handler's rotating file, which reports a failure once.

    Several gunicorn workers write the same file. The standard
    RotatingFileHandler rotates without asking the others, so lines get lost
    or land in the wrong file; this one takes a lock file around each write
    and rotation.

    When a write fails (disk full, directory gone), the standard handler
    prints a traceback to stderr for every record; one message is enough,
    and the request that was logging goes on regardless.
    """

    reported = False

    def close(self) -> None:
        # Closing flushes what a failed write left behind; on a full disk that
        # fails again, and must not stop a new handler from taking over.
        with suppress(OSError):
            super().close()

    def handleError(self, record: logging.LogRecord) -> None:
        if not isinstance(sys.exc_info()[1], OSError):
            # Not the file's fault (a bad format string...): the usual report.
            super().handleError(record)
            return
        if not self.reported:
            self.reported = True
            error = sys.exc_info()[1]
            print(
                f"Cannot write the log file {self.baseFilename}: {error!r}. "
                "Requests go on; further log failures are not reported.",
                file=sys.stderr,
            )

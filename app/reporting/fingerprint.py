"""Naming the bug behind a log record, the same way in every process.

Storm control counts occurrences per name, the log writes one traceback per
name per window, and `flask errors` lists one line per name: two different
bugs must get two names, and one bug one name however its message varies.
"""

import hashlib
import logging
import traceback
from pathlib import Path

# Frames from files under this folder (the app package) are "this app's code".
APP_DIR = str(Path(__file__).resolve().parent.parent)


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

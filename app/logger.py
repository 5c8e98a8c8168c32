"""Logging and error reporting for production: the log file, error mail, Sentry.

`create_app` calls these when the app is neither in debug nor in testing
mode (``not app.debug and not app.testing``: the look-alike
``not (app.debug and app.testing)`` found in tutorials is true almost always, so its mails went
out from the developer's laptop). Tests call them directly.

Each function only reads ``app.config``, and calling it again replaces what
it installed before instead of adding a second copy of every handler.
"""

import logging
import os
import sys
from contextlib import suppress
from functools import partial
from pathlib import Path

import sentry_sdk
from concurrent_log_handler import ConcurrentRotatingFileHandler
from flask import Flask, request
from flask.logging import default_handler
from sentry_sdk.integrations.flask import FlaskIntegration

from app.error_mail import ErrorMailHandler, StormControl
from app.i18n import in_language
from app.log_context import (
    config_secrets,
    current_user_label,
    redact,
    redact_values,
    request_secrets,
)
from app.mail import MailSettings, outbox
from app.mail import log as mail_log
from app.request_id import request_id

# The Mega-Tutorial's format, extended with the request: the id a user can quote, and
# who asked for what.
LOG_FORMAT = (
    "%(asctime)s %(levelname)s: %(message)s [in %(pathname)s:%(lineno)d] "
    "[request %(request_id)s%(request)s]"
)


class RequestFormatter(logging.Formatter):
    """Add the request to each line (the pattern in Flask's logging docs), and
    blank out secrets."""

    def __init__(self, secrets: list[str]):
        super().__init__(LOG_FORMAT)
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        record.request_id = request_id() or "-"
        record.request = ""
        if record.request_id != "-":  # inside a request
            record.request = (
                f" {request.method} {request.path} from {request.remote_addr} "
                f"user {current_user_label()}"
            )
        return redact(super().format(record), self.secrets + request_secrets())


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


def init_logger(app: Flask) -> logging.Handler:
    """Send the app's log records (and some libraries') to the log file or stdout."""
    handler = make_log_handler(app)
    handler.setFormatter(RequestFormatter(config_secrets(app.config)))
    handler.name = "blog-log"
    level = logging.getLevelNamesMapping()[app.config["LOG_LEVEL"]]

    # Flask's own handler writes to stderr; ours replaces it, so that every
    # line is written once, in one format.
    app.logger.removeHandler(default_handler)
    app.logger.setLevel(level)
    # The mail module's own failures go to the same file, not back to mail.
    mail_log.setLevel(logging.INFO)
    mail_log.propagate = False
    for logger in [app.logger, mail_log, *extra_loggers(app)]:
        replace_handler(logger, handler)
    app.logger.info("Blog startup (pid %d)", os.getpid())
    return handler


def make_log_handler(app: Flask) -> logging.Handler:
    """A handler for stdout with LOG_TO_STDOUT, else for the rotating log file.

    If the log file can't be opened (a read-only or missing directory), say
    so once and log to stderr instead: a logging problem must never stop the
    app from starting.
    """
    if app.config["LOG_TO_STDOUT"]:
        return logging.StreamHandler(sys.stdout)
    path = Path(app.config["LOG_DIR"]) / app.config["LOG_FILE"]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return LogFileHandler(
            path,
            maxBytes=app.config["LOG_MAX_BYTES"],
            backupCount=app.config["LOG_BACKUP_COUNT"],
            encoding="utf-8",
        )
    except OSError as error:
        print(f"Cannot open the log file {path}: {error}. Logging to stderr.", file=sys.stderr)
        return logging.StreamHandler(sys.stderr)


def extra_loggers(app: Flask) -> list[logging.Logger]:
    """The other libraries' loggers named in LOG_EXTRA_LOGGERS, levels set.

    Flask's logging advice: attach handlers to the loggers you care about, rather
    than configuring the root logger, which belongs to whoever runs the app.
    """
    setting = app.config["LOG_EXTRA_LOGGERS"]
    if setting is None:
        setting = "sqlalchemy:WARNING"
        # gunicorn sets SERVER_SOFTWARE when it starts.
        if "gunicorn" in os.environ.get("SERVER_SOFTWARE", ""):
            setting += ",gunicorn.error"
    loggers = []
    for entry in filter(None, (part.strip() for part in setting.split(","))):
        name, _, level = entry.partition(":")
        logger = logging.getLogger(name.strip())
        if level:
            logger.setLevel(level.strip().upper())
        loggers.append(logger)
    return loggers


def replace_handler(logger: logging.Logger, handler: logging.Handler) -> None:
    """Attach `handler`, removing an earlier one of the same name first."""
    remove_handler(logger, handler.name)
    logger.addHandler(handler)


def remove_handler(logger: logging.Logger, name: str) -> None:
    for old in [h for h in logger.handlers if h.name == name]:
        logger.removeHandler(old)
        old.close()  # closing twice (it may be on several loggers) is harmless


def init_email(app: Flask) -> ErrorMailHandler | None:
    """Mail ERROR records to ADMINS, if a mail server and admins are configured."""
    settings = MailSettings.from_config(app.config)
    if settings is None or not app.config["ADMINS"]:
        for logger in [app.logger, *extra_loggers(app)]:
            remove_handler(logger, "blog-mail")  # from an earlier call with mail on
        return None
    window = app.config["MAIL_ERROR_WINDOW"]
    storm = StormControl(str(Path(app.config["LOG_DIR"]) / "error-mail.sqlite3"), window)
    handler = ErrorMailHandler(
        settings,
        admins=app.config["ADMINS"],
        subject_prefix=app.config["MAIL_SUBJECT_PREFIX"],
        storm=storm,
        secrets=config_secrets(app.config),
        # The admins' language, whoever's request failed: the outbox has no request.
        in_admin_language=partial(in_language, app, app.config["ADMIN_LOCALE"]),
    )
    handler.name = "blog-mail"
    # A worker that stops finishes what it queued, within two timeouts.
    outbox.drain_timeout = 2 * settings.timeout + 5
    # Check for closed windows a few times per window.
    outbox.idle_interval = min(10.0, max(0.2, window / 4))
    outbox.on_idle("error-mail-summaries", handler.send_summaries)
    for logger in [app.logger, *extra_loggers(app)]:
        replace_handler(logger, handler)
    return handler


def init_sentry(app: Flask) -> bool:
    """Report errors to Sentry too, if SENTRY_DSN is set."""
    if not app.config["SENTRY_DSN"]:
        return False
    secrets = config_secrets(app.config)

    def prepare(event, hint):
        # Runs in the thread that captured the event, inside the request: the
        # place to add our reference, and to blank out secrets. Sentry's own
        # scrubber blanks fields *named* like passwords; a password inside an
        # exception message or a local variable gets through it.
        if request_id():
            event.setdefault("tags", {})["request_id"] = request_id()
        return redact_values(event, secrets + request_secrets())

    sentry_sdk.init(
        dsn=app.config["SENTRY_DSN"],
        integrations=[FlaskIntegration()],
        environment=app.config["SENTRY_ENVIRONMENT"],
        release=app.config["SENTRY_RELEASE"],
        # No IP addresses, cookies or user names, and no request bodies
        # (they carry passwords), to a third party.
        send_default_pii=False,
        max_request_body_size="never",
        before_send=prepare,
    )
    return True

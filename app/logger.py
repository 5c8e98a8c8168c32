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
from functools import partial
from pathlib import Path

import sentry_sdk
from flask import Flask
from flask.logging import default_handler
from sentry_sdk.integrations.flask import FlaskIntegration

from app.i18n import in_language
from app.mail import MailSettings, outbox, port_mismatch
from app.mail import log as mail_log
from app.reporting import (
    COUNT_TASK,
    ERROR_HANDLER,
    LOG_HANDLER,
    SUMMARY_TASK,
)
from app.reporting.error_mail import ErrorMailHandler
from app.reporting.log_context import config_secrets, redact_values, request_secrets
from app.reporting.log_file import LogFileHandler, RequestFormatter
from app.reporting.request_id import request_id
from app.reporting.storm import StormControl, store_location


def init_logger(app: Flask) -> logging.Handler:
    """Send the app's log records (and some libraries') to the log file or stdout."""
    handler = make_log_handler(app)
    # A bug's traceback once per storm-control window, per worker process.
    repeat_window = app.config["MAIL_ERROR_WINDOW"]
    handler.setFormatter(RequestFormatter(config_secrets(app.config), repeat_window))
    handler.name = LOG_HANDLER
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
        # Flask-Limiter says when its Redis stops answering (once, not per request).
        setting = "sqlalchemy:WARNING,flask-limiter:WARNING"
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


def init_email(app: Flask) -> ErrorMailHandler:
    """Record ERROR records for `flask errors`, and mail them to ADMINS if a
    mail server and admins are configured."""
    settings = MailSettings.from_config(app.config)
    window = app.config["MAIL_ERROR_WINDOW"]
    storm = StormControl(store_location(app.config), window)
    handler = ErrorMailHandler(
        settings,
        admins=app.config["ADMINS"],
        subject_prefix=app.config["MAIL_SUBJECT_PREFIX"],
        storm=storm,
        secrets=config_secrets(app.config),
        # The admins' language, whoever's request failed: the outbox has no request.
        in_admin_language=partial(in_language, app, app.config["ADMIN_LOCALE"]),
    )
    handler.name = ERROR_HANDLER
    if settings is not None and (mismatch := port_mismatch(settings)):
        app.logger.warning("%s", mismatch)
    if settings is not None:
        # A worker that stops finishes what it queued, within two timeouts.
        outbox.drain_timeout = 2 * settings.timeout + 5
    # Check for closed windows a few times per window, and add the counts a
    # storm left in memory even if a job to do so was dropped.
    outbox.idle_interval = min(10.0, max(0.2, window / 4))
    outbox.on_idle(SUMMARY_TASK, handler.send_summaries)
    outbox.on_idle(COUNT_TASK, storm.flush_counts)
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

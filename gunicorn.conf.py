"""gunicorn's settings for the blog: `gunicorn -c gunicorn.conf.py blog:app`.

Every value can be changed from the environment or the project's .env, so the
same file serves a small VPS and a bigger machine.
"""

import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from dotenv import load_dotenv
from gunicorn.glogging import Logger

# The .env beside this file, the one config.py loads. gunicorn's master runs
# this file before any worker imports the app (and config.py), so without
# this line GUNICORN_BIND or WEB_CONCURRENCY in .env would never be seen.
# As in config.py, a variable already in the environment wins over the file,
# and that includes one read from it before: a reload (HUP) runs this file
# again, which adds variables new to .env but changes none. The workers
# inherit the master's environment. After changing a value, restart gunicorn.
load_dotenv(Path(__file__).resolve().parent / ".env")

# gunicorn is how the blog runs in production: make that the default, so a
# forgotten FLASK_CONFIG can't quietly serve the development configuration.
os.environ.setdefault("FLASK_CONFIG", "production")


def configuration_error(message: str) -> NoReturn:
    """Stop gunicorn before it starts, with exit status 3 as blog.py does for
    the app's settings: systemd then doesn't restart it in a loop
    (RestartPreventExitStatus=3 in deploy/blog.service)."""
    print(f"Configuration error: {message}", file=sys.stderr)
    sys.exit(3)  # SystemExit passes gunicorn's `except Exception`: no traceback


def setting(name: str, default: str) -> str:
    """A setting from the environment; blank counts as unset, as in config.py
    (a line `GUNICORN_TIMEOUT=` copied into .env means "the default")."""
    return os.environ.get(name, "").strip() or default


def whole_number(name: str, default: int, minimum: int) -> int:
    """A whole-number setting of at least `minimum`; anything else stops gunicorn."""
    value = setting(name, str(default))
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < minimum:
        configuration_error(f"{name}={value!r} is not a whole number of at least {minimum}.")
    return number


# Behind nginx on the same machine; set GUNICORN_BIND=0.0.0.0:8000 to expose it.
bind = setting("GUNICORN_BIND", "127.0.0.1:8000")
# Sync workers: one request at a time each, simple and predictable for a
# database-backed app. Two per core is plenty for a small VPS. (gunicorn
# reads WEB_CONCURRENCY by itself too, but before this file, so not from .env.)
workers = whole_number("WEB_CONCURRENCY", 2 * (os.cpu_count() or 1), minimum=1)
worker_class = "sync"
# What the proxy in front says (X-Forwarded-Proto, X-Forwarded-For...) is the
# app's to believe, and only when PROXY_COUNT says a proxy is there (ProxyFix,
# in app/__init__.py); gunicorn is to believe nobody. By default it trusts any
# process on 127.0.0.1, and nginx there passes on whatever a client sends
# besides the headers it sets itself. A client's X-Forwarded-Ssl that disagreed
# with X-Forwarded-Proto then got gunicorn's bare 400 "Contradictory scheme
# headers", X-Forwarded-Proto: https made a plain HTTP request HTTPS before
# the app had a say, and a SCRIPT_NAME header (nginx drops it for its
# underscore; any local process can send it) moved every link of the site
# under another path, or got a bare 500. So no address is trusted, and, as
# gunicorn trusts a client on a Unix socket (GUNICORN_BIND=unix:...) whatever
# that list says, there is no header to trust anyway.
# tests/test_forwarded_headers.py sends each of them.
forwarded_allow_ips = ""
secure_scheme_headers = {}
forwarder_headers = ""
# A request that takes longer than this is killed (and logged by gunicorn);
# on SIGTERM, workers get graceful_timeout seconds to finish their request
# and to send the error mails still queued (app/mail.py drains at exit).
timeout = whole_number("GUNICORN_TIMEOUT", 30, minimum=0)  # 0: no limit
graceful_timeout = whole_number("GUNICORN_GRACEFUL_TIMEOUT", 30, minimum=0)
# Restart each worker after this many requests (plus jitter, so they don't all
# restart at once): a slow memory leak can't grow for ever.
max_requests = whole_number("GUNICORN_MAX_REQUESTS", 1000, minimum=0)  # 0: never
max_requests_jitter = 100

# The access log, on stdout, ends with the request id, the reference on the
# 500 page and in the app's log, so one grep finds a request in both.
accesslog = setting("GUNICORN_ACCESS_LOG", "-")  # "-": stdout, or a file's path
access_log_format = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms '
    "request_id=%({x-request-id}o)s"
)


class AccessLogWithoutSecrets(Logger):
    """gunicorn's logger, with the tokens of links in mails (a password reset,
    a new email address) blanked out of the access log, and control
    characters escaped in it as in the app's log.

    The token is in the path of the link in the mail; for as long as it is
    valid (an hour, a day), anyone who reads the log could use it. And a User-Agent or a
    Referer may hold characters that some readers take for a line break
    (U+0085, U+2028): written raw, a client could forge a line.
    """

    MAILED_TOKEN = re.compile(r"(/auth/(?:reset_password|confirm_email)/)[^\s?\"]+")

    def atoms(self, resp, req, environ, request_time):
        # Imported here, in the worker that serves the request, not in the master.
        from app.reporting.log_file import escape_controls

        atoms = super().atoms(resp, req, environ, request_time)
        for name, value in atoms.items():
            # gunicorn leaves some atoms None when it answers an error itself.
            if isinstance(value, str):
                atoms[name] = escape_controls(value)
        for name in ("r", "U", "f"):  # request line, path, referer
            if isinstance(atoms.get(name), str):
                atoms[name] = self.MAILED_TOKEN.sub(r"\1[redacted]", atoms[name])
        return atoms


logger_class = AccessLogWithoutSecrets

# gunicorn 27's control socket (for `gunicornc`) isn't used here, and it would
# need a writable home directory, which the systemd unit doesn't give.
control_socket_disable = True

# gunicorn's own error log goes to stderr, and the app attaches its log file
# and error-mail handlers to the "gunicorn.error" logger too (app/logger.py,
# LOG_EXTRA_LOGGERS): a worker killed for a timeout is in blog.log and mailed.
errorlog = "-"
loglevel = setting("GUNICORN_LOG_LEVEL", "info")
# gunicorn would silently read any other word as "info".
if loglevel.lower() not in ("debug", "info", "warning", "error", "critical"):
    configuration_error(
        f"GUNICORN_LOG_LEVEL={loglevel!r} is not one of debug, info, warning, error, critical."
    )


def post_worker_init(worker):
    """Start the mail outbox's thread in each new worker (app/mail.py).

    It would start with the first mail anyway; started now, its periodic jobs
    run in every worker from the beginning: the summaries of error storms go
    out even when the worker that mailed the first error has been recycled
    (max_requests) or killed, and after a restart of the whole app. A thread
    started before the fork (in the master, with --preload) would not exist
    in the workers, hence this hook rather than starting it at import.
    """
    from app.mail import outbox

    outbox.start()


def worker_abort(worker):
    """A worker stuck for longer than `timeout` gets SIGABRT and dies: say
    where it was stuck, through the app's handlers (log file, error mail).

    gunicorn reports the timeout in its master process, which has no app
    (without --preload) and so none of the app's handlers; this runs in the
    worker itself, just before it exits.
    """
    # This runs in a signal handler, on top of the frame that was stuck.
    stack = "".join(traceback.format_stack())
    from app.reporting import APP_LOGGER

    logging.getLogger(APP_LOGGER).error("Worker %s timed out, stuck here:\n%s", worker.pid, stack)


def worker_exit(server, worker):
    """Send the error mails still queued before a worker goes (on SIGTERM, or
    after max_requests). The same runs at interpreter exit; doing it here makes
    it explicit and happens before gunicorn's own shutdown logging."""
    from app.mail import outbox

    outbox.drain()

"""gunicorn's settings for the blog: `gunicorn -c gunicorn.conf.py blog:app`.

Every value can be changed from the environment, so the same file serves a
small VPS and a bigger machine.
"""

import os

# Behind nginx on the same machine; set GUNICORN_BIND=0.0.0.0:8000 to expose it.
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Sync workers: one request at a time each, simple and predictable for a
# database-backed app. Two per core is plenty for a small VPS.
workers = int(os.environ.get("WEB_CONCURRENCY", str(2 * (os.cpu_count() or 1))))
worker_class = "sync"
# A request that takes longer than this is killed (and logged by gunicorn);
# on SIGTERM, workers get graceful_timeout seconds to finish their request
# and to send the error mails still queued (app/mail.py drains at exit).
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# Restart each worker after this many requests (plus jitter, so they don't all
# restart at once): a slow memory leak can't grow for ever.
max_requests = int(os.environ.get("GUNICORN_MAX_REQUESTS", "1000"))
max_requests_jitter = 100

# The access log, on stdout, ends with the request id, the reference on the
# 500 page and in the app's log, so one grep finds a request in both.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "-")
access_log_format = (
    '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms '
    "request_id=%({x-request-id}o)s"
)
# gunicorn's own error log goes to stderr, and the app attaches its log file
# and error-mail handlers to the "gunicorn.error" logger too (app/logger.py,
# LOG_EXTRA_LOGGERS): a worker killed for a timeout is in blog.log and mailed.
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")

# Nothing needs a post_fork hook: the error-mail sender starts its thread in
# each worker on first use (a thread started before the fork would not exist
# in the workers, with --preload), and the log handler reopens its lock file
# after a fork. Both work with and without --preload.


def worker_exit(server, worker):
    """Send the error mails still queued before a worker goes (on SIGTERM, or
    after max_requests). The same runs at interpreter exit; doing it here makes
    it explicit and happens before gunicorn's own shutdown logging."""
    from app.mail import outbox

    outbox.drain()

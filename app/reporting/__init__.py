"""What happens to an error after it is raised: the log line, the mail, the count.

`app/logger.py` is the front door: `create_app` calls its `init_logger`,
`init_email` and `init_sentry`, and they put these modules to work. In the
order an error travels through them:

1. `request_id`: every request gets an id when it starts, the reference a
   user quotes from the 500 page. Taken from ``X-Request-ID`` only when a
   proxy we were told about (``PROXY_COUNT``) sets it.
2. `log_context`: what a log line or a mail may say about the request
   (method, URL, user, address) and the secrets it must never say.
3. `fingerprint`: names the bug behind a log record (exception type plus the
   line of this app's code that raised it), the same way in every process.
4. `log_file`: the log line itself. Control characters escaped (no forged
   lines), every line of a record tagged with its reference, and a traceback
   written once per bug per window, repeats pointing at the reference that
   has it; and the rotating file that several workers share.
5. `storm`: the shared count of each bug (a SQLite file next to the log, or
   Redis), which decides which occurrence is mailed and which only counted,
   claims the summaries that are due, and is what `flask errors` reads.
6. `error_mail`: the logging handler that records every ERROR record in the
   store and mails the admins the first of each bug per window, then a
   summary with the count. Its work runs in the background outbox.
7. `cli`: `flask errors` and `flask errors show REFERENCE`, for the admin on
   the server, working from the store and the log files alone.

To lift it into another project, take this package and `app/logger.py`,
and bring along what they use from outside:

- `app/mail.py`: the SMTP transport and the per-process outbox thread
  (shared with password-reset mail), and `app/i18n.py`'s `in_language`, so
  that mails are in the admins' language;
- in `create_app`: `register_request_id(app)`, then `init_logger`,
  `init_email` and `init_sentry`; and `errors_command` among the CLI commands;
- in `gunicorn.conf.py`: `post_worker_init` (start each worker's outbox: the
  summaries depend on it) and `worker_exit` (send what is still queued);
- the settings: LOG_DIR, LOG_FILE, LOG_MAX_BYTES, LOG_BACKUP_COUNT,
  LOG_LEVEL, LOG_TO_STDOUT, LOG_EXTRA_LOGGERS, the MAIL_* ones, ADMINS,
  ADMIN_LOCALE, PROXY_COUNT, REDIS_URL, SENTRY_*; and the messages in
  app/translations for a language other than English;
- the packages: Flask, Flask-Babel, Flask-Login (only through
  `log_context.current_user_label`), SQLAlchemy (to name a user without a
  query, and to find the database password to redact), concurrent-log-handler,
  redis and sentry-sdk.
"""

# The names of the handlers `app/logger.py` installs: calling an init_*
# function again replaces the handler of the same name instead of adding one.
LOG_HANDLER = "blog-log"
ERROR_HANDLER = "blog-errors"
# The outbox's periodic jobs (app/mail.py `Outbox.on_idle`).
SUMMARY_TASK = "error-summaries"
COUNT_TASK = "error-counts"
# The shared store's file, in LOG_DIR, when it is a SQLite file.
STORE_FILE = "errors.sqlite3"
# The logger Flask gives the app (named after the package): gunicorn's hooks
# log through it before any app object is at hand.
APP_LOGGER = "app"

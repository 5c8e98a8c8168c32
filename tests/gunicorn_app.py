"""The blog exactly as gunicorn serves it, plus a few routes that fail or log on demand.

Only the tests load this module (``gunicorn --pythonpath tests gunicorn_app:app``),
so the real app never has these routes.
"""

import logging
import os
import time
from logging.handlers import SMTPHandler

from flask import request

from app.extensions import csrf
from blog import app


@app.route("/_test/fail")
def fail():
    """A bug: the same exception from the same line every time."""
    return str(1 / 0)


@app.route("/_test/fail-differently")
def fail_differently():
    """Another bug, so that storm control must tell the two apart."""
    return {}["missing"]


@app.post("/_test/fail-with-secret")
@csrf.exempt
def fail_with_secret():
    """A bug whose message carries the password the user just typed."""
    raise ValueError(f"could not check password {request.form['password']!r}")


@app.route("/_test/log/<int:number>")
def log_line(number: int):
    """Log one numbered line, for the log rotation test."""
    app.logger.info("numbered line %06d", number)
    return "logged"


if os.environ.get("BENCH_STDLIB_SMTPHANDLER"):
    # For bench/errors.py only: the tutorials' approach, the standard SMTPHandler
    # attached to the app logger, to compare against app/reporting/error_mail.py.
    mail_handler = SMTPHandler(
        (app.config["MAIL_SERVER"], app.config["MAIL_PORT"]),
        "blog@example.com",
        app.config["ADMINS"],
        "Blog failure",
        timeout=app.config["MAIL_TIMEOUT"],
    )
    mail_handler.setLevel(logging.ERROR)
    for handler in [h for h in app.logger.handlers if h.name == "blog-errors"]:
        app.logger.removeHandler(handler)
    app.logger.addHandler(mail_handler)


@app.route("/_test/sleep/<int:seconds>")
def sleep_for(seconds: int):
    """Hold the worker for `seconds`: longer than GUNICORN_TIMEOUT, it is killed
    mid-request, for the worker-timeout test (tests/test_deploy.py)."""
    time.sleep(seconds)
    return "awake"

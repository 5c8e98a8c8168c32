"""Routes that fail, or log, on demand: the tests' way to make the blog break.

The in-process tests add them to their app (``add_failing_routes(app)``, before
its first request); tests/gunicorn_app.py adds them to the blog that gunicorn
serves. They live under /_test/, and only the tests ever add them.
"""

import time

from flask import Flask, abort, request
from flask_login import current_user

from app.extensions import csrf, db


def add_failing_routes(app: Flask) -> None:
    """Add the /_test/ routes to `app`."""

    @app.route("/_test/fail")
    def fail():
        """A bug: the same exception from the same line every time."""
        return str(1 / 0)

    @app.route("/_test/fail-differently")
    def fail_differently():
        """Another bug, so that storm control must tell the two apart."""
        return {}["missing"]

    @app.route("/_test/fail-with/<path:text>")
    def fail_with(text: str):
        """A bug whose message holds what the visitor wrote in the URL (and in
        ?more=): a try at forging log lines, or a secret a log must not show."""
        raise ValueError(f"bad input {text}{request.args.get('more', '')}")

    @app.post("/_test/fail-with-secret")
    @csrf.exempt
    def fail_with_secret():
        """A careless view: its exception message drags in everything at hand,
        which is how secrets end up in error mails and Sentry. Only the first
        line goes into a mail's subject; the rest is in the body and the traceback."""
        password = request.form["password"]
        message = (
            f"no score for password {password}\n"
            f"form {request.form.to_dict()}, cookies {request.headers.get('Cookie')}, "
            f"secret key {app.config['SECRET_KEY']}, mail password {app.config['MAIL_PASSWORD']}"
        )
        raise ValueError(message)

    @app.post("/_test/fail-with-long-message")
    @csrf.exempt
    def fail_with_long_message():
        """A mail's subject keeps 150 characters of "ValueError: <message>"; the
        password starts at character 144, so the cut falls in the middle of it."""
        raise ValueError(f"{'x' * 130} {request.form['password']}")

    @app.route("/_test/fail-with-markup")
    def fail_with_markup():
        """A message that a mail's HTML part must escape."""
        raise ValueError("<script>alert('mail')</script>")

    @app.route("/_test/forbidden")
    def forbidden():
        """A 403, for the error pages."""
        abort(403)

    @app.route("/_test/rename-to-admin1")
    def rename_to_admin1():
        """The duplicate-username bug (app/forms.py) without the form's check: the
        flush fails on the unique index and nothing catches the IntegrityError."""
        current_user.username = "admin1"
        db.session.flush()

    @app.route("/_test/log/<int:number>")
    def log_line(number: int):
        """Log one numbered line, for the log rotation tests."""
        app.logger.info("numbered line %06d", number)
        return "logged"

    @app.route("/_test/sleep/<int:seconds>")
    def sleep_for(seconds: int):
        """Hold the worker for `seconds`: longer than GUNICORN_TIMEOUT, it is
        killed mid-request, for the worker-timeout test (tests/test_deploy.py)."""
        time.sleep(seconds)
        return "awake"

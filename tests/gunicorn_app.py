"""The blog exactly as gunicorn serves it, plus the routes that fail or log on
demand (tests/failing_routes.py).

Only the tests load this module (``gunicorn tests.gunicorn_app:app``), so the
real app never has these routes.
"""

import logging
import os
from logging.handlers import SMTPHandler

from blog import app
from tests.failing_routes import add_failing_routes

add_failing_routes(app)

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

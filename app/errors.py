"""Error pages that cannot themselves crash.

The handlers are registered on the app, not on a blueprint: a blueprint's
handlers never see routing errors (an unknown URL has no blueprint), nor
errors raised in other blueprints.

Rules every handler here follows:

- The 500 handler rolls the session back before anything else: after a failed
  flush the session refuses every query until it is rolled back, and the 500
  page of the duplicate-username bug crashed on exactly that (app/forms.py,
  `commit_or_show_conflict`, tells the story).
- Nothing in ``base.html`` or ``errors/*.html`` queries the database; the
  navigation's username is worked out in Python, inside a try (see
  `app.templating.navigation_username`), so the page renders even when the
  database is down.
- A client that asks for JSON gets JSON with the same status code.
"""

from contextlib import suppress
from urllib.parse import urlsplit

import sentry_sdk
from flask import (
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    make_response,
    render_template,
    request,
)
from flask.globals import request_ctx
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_wtf.csrf import CSRFError
from markupsafe import escape
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, InternalServerError

from app.database import database_failure, is_unavailable
from app.extensions import db, login_manager
from app.reporting.request_id import request_id

# What a person is told: a title and a sentence for each status we expect.
ERRORS = {
    400: (
        _l("Bad request"),
        _l("The request could not be understood. Please check it and try again."),
    ),
    403: (_l("Forbidden"), _l("You don't have permission to do that.")),
    404: (
        _l("Page not found"),
        _l("Sorry, that page doesn't exist. The link may be broken or the page removed."),
    ),
    405: (_l("Method not allowed"), _l("That action isn't allowed here.")),
    413: (_l("Request too large"), _l("What you sent is too large.")),
    429: (_l("Too many requests"), _l("Please wait a moment and try again.")),
    503: (
        _l("Temporarily unavailable"),
        _l("The site can't reach its database right now. Please try again in a minute."),
    ),
    500: (
        _l("An unexpected error has occurred"),
        _l("Something went wrong on our side. It has been logged for us to look into."),
    ),
}
UNWORDED_ERROR = _l("The request could not be completed.")
# The last resort, when even the 500 template failed. Both languages, written
# out: a broken catalogue may be why we are here, so nothing is translated.
FALLBACK_500_PAGE = """<!doctype html>
<html lang="en"><meta charset="utf-8"><title>Server error</title>
<h1>An unexpected error has occurred</h1>
<p>Something went wrong on our side. It has been logged for us to look into.</p>
<p>Error reference: <code>{reference}</code>. Please quote it when you contact us.</p>
<p><a href="/">Back to the home page</a></p>
<p lang="zh-CN">发生意外错误，错误已记录。错误编号：<code>{reference}</code>，联系我们时请提供。
<a href="/">返回首页</a></p></html>
"""  # noqa: RUF001 (Chinese punctuation: full-width commas and colons are right here)
# What the 503 page tells clients (and crawlers) about when to come back.
RETRY_AFTER_SECONDS = 30
CSRF_MESSAGE = _l(
    "The form has expired or was sent from another page. Please go back, reload the page "
    "and try again."
)


def wants_json() -> bool:
    """True if the client prefers JSON to HTML (an API client, not a browser).

    Browsers ask for text/html explicitly; ``Accept: */*`` (curl) ties and gets HTML.
    """
    accept = request.accept_mimetypes
    return accept["application/json"] > accept["text/html"]


def error_response(
    status: int, title: str, message: str, template: str = "errors/error.html", **context
) -> Response:
    """Render an error page, or a JSON body for a client that asked for JSON.

    Both carry the request id, the reference a user can quote to the admins.
    """
    context["request_id"] = request_id()
    bind_urls_if_host_refused()
    if wants_json():
        body = jsonify(error=str(title), message=str(message), status=status, **context)
    else:
        body = render_template(template, status=status, title=title, message=message, **context)
    return make_response(body, status)


def bind_urls_if_host_refused() -> None:
    """Let `url_for` work on the page that refuses a request's Host header.

    Flask checks the Host header while it makes the request's URL adapter: a
    host not in TRUSTED_HOSTS, or not a host name at all (a part longer than
    63 letters), is a 400, and the request has no adapter, so every `url_for`
    in base.html would fail and turn the 400 page into a 500. The page's links
    are paths, which don't depend on the host, so the URL map is bound to no
    host at all: the refused one must not appear anywhere, and reading it
    (``request.host``) would raise the refusal again.
    """
    if request_ctx.url_adapter is None:
        request_ctx.url_adapter = current_app.url_map.bind(
            "", script_name=request.script_root, url_scheme=request.scheme
        )


def handle_http_error(error: HTTPException):
    """Show any HTTP error (400, 403, 404, 405, 413, ...) in the site's layout."""
    # A status we don't word ourselves (401, 415, ...) still gets a page in the
    # reader's language; Werkzeug's wording is English only.
    title, message = ERRORS.get(error.code, (_("Error %(code)s", code=error.code), UNWORDED_ERROR))
    template = "errors/404.html" if error.code == 404 else "errors/error.html"
    response = error_response(error.code, title, message, template)
    # Keep what Werkzeug put on the response: 405's Allow header, 429's Retry-After.
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers.setdefault(name, value)
    return response


def handle_csrf_error(error: CSRFError):
    """Tell the user their form expired instead of showing a bare 400, and
    tell the log why it was refused."""
    # The reason is one of Flask-WTF's own sentences ("The CSRF token is
    # missing.", "The referrer does not match the host."), never the token.
    # Over HTTPS Flask-WTF also compares the Referer's origin with the
    # request's: both are logged, so that a proxy dropping the port from the
    # host (every form then fails) shows at a glance. INFO, not WARNING: an
    # old tab or an expired session does this every day.
    current_app.logger.info(
        "Form refused by the CSRF check: %s (Referer %s, request to %s)",
        error.description,
        origin(request.referrer),
        origin(request.host_url),
    )
    return error_response(400, ERRORS[400][0], CSRF_MESSAGE)


def origin(url: str | None) -> str:
    """`url` cut down to scheme://host:port for the log: its path may hold a
    token (a password-reset link's does), its user part a password."""
    if not url:
        return "none"
    try:
        parts = urlsplit(url)
    except ValueError:  # unbalanced brackets: "https://[::1"
        return "without an origin"
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}" if parts.scheme and host else "without an origin"


def handle_internal_error(error: InternalServerError):
    """Show the 500 page for an unhandled exception.

    `error.original_exception` is what the view raised (None when a view called
    ``abort(500)``); Flask has already logged it with its traceback.
    """
    # Undo the failed transaction first, so that rendering the page can use the
    # database again. If the database is gone, rolling back fails too: swallow
    # that, the page must still render.
    with suppress(Exception):
        db.session.rollback()
    # Sentry's own reference for this error, when Sentry is configured.
    sentry_event_id = sentry_sdk.last_event_id()
    try:
        return error_response(
            500, *ERRORS[500], template="errors/500.html", sentry_event_id=sentry_event_id
        )
    except Exception:
        # The page meant to report a failure failed too (a broken template, a
        # missing translation...). Flask would answer with its bare default;
        # we log the second failure and send a page that needs nothing at all.
        current_app.logger.exception("The 500 page itself failed to render")
        page = FALLBACK_500_PAGE.format(reference=escape(request_id()))
        return page, 500, {"Content-Type": "text/html; charset=utf-8"}


def handle_database_unavailable(error: OperationalError | PoolTimeout):
    """Say "temporarily unavailable" (503) when the database can't be reached.

    A handler chosen by the exception's class, as Flask's docs describe: the
    database driver's connection errors arrive as SQLAlchemy's
    OperationalError (and a full connection pool as its TimeoutError),
    whichever view was running. The app recovers by itself when the database
    is back: a pooled connection is checked before it is lent out
    (app/database.py, `configure_database`).
    """
    if isinstance(error, OperationalError) and not is_unavailable(error):
        # An OperationalError that is a bug (a missing table...), not an
        # outage: raised again, it goes to the 500 handler with its traceback.
        raise error
    with suppress(Exception):
        db.session.rollback()
    # The user can't be loaded either: say so once, or the page's navigation
    # would try the database again and wait out another connect timeout.
    g._login_user = login_manager.anonymous_user()
    # One line, without the traceback: an outage fails in every view at once,
    # and this single logging call gives every occurrence the same
    # fingerprint, so storm control mails it once per window.
    current_app.logger.error("Database unavailable: %s", database_failure(error))
    response = error_response(503, *ERRORS[503])
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def handle_malformed_request(error: Exception):
    """A body gunicorn can't parse (a broken chunked upload) is the client's
    fault: the 400 page, not a 500 and an error mail."""
    return error_response(400, *ERRORS[400])


def gunicorn_parse_error() -> type[Exception] | None:
    """gunicorn's exception for a request it can't parse; None where gunicorn
    can't be imported, and so can't raise it: on Windows its modules need
    `fcntl`, and the blog runs there with `flask run`."""
    try:
        from gunicorn.http.errors import ParseException
    except ImportError:
        return None
    return ParseException


def register_error_handlers(app: Flask) -> None:
    parse_error = gunicorn_parse_error()
    if parse_error is not None:
        app.register_error_handler(parse_error, handle_malformed_request)
    app.register_error_handler(OperationalError, handle_database_unavailable)
    app.register_error_handler(PoolTimeout, handle_database_unavailable)
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(CSRFError, handle_csrf_error)
    app.register_error_handler(InternalServerError, handle_internal_error)

"""What a log line or an error mail says about the request, and what it must never say.

Both are written while something is already going wrong, so nothing here may
raise or touch the database: the user is named only if Flask-Login has
already loaded them, and the request body is read only if the view already
parsed it.
"""

import re
from collections.abc import Iterable, Mapping
from urllib.parse import unquote_plus, urlencode, urlsplit

from flask import g, has_request_context, request, session
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from werkzeug.datastructures import iter_multi_items
from werkzeug.exceptions import SecurityError

from app.reporting.request_id import request_id

REDACTED = "[redacted]"
# Form fields and URL parts whose values never appear in a log or a mail.
SENSITIVE_NAME = re.compile(r"pass|secret|token|csrf|key|auth|cookie|session", re.IGNORECASE)
# Shorter values would blot out ordinary words.
MIN_SECRET_LENGTH = 4


def current_user_label() -> str:
    """The logged-in user's name, or their id, or "-"; never loads anything."""
    user = g.get("_login_user")  # where Flask-Login keeps the user it loaded
    if user is not None and user.is_authenticated:
        # After a rollback the instance is expired and reading .username would
        # query the database; inspect() reads what is loaded without doing so.
        state = inspect(user)
        return state.dict.get("username") or f"id {state.identity[0]}"
    # The session holds "id:token" (User.get_id); the token is the login's
    # credential, never part of a log line.
    user_id = str(session.get("_user_id") or "") if has_request_context() else ""
    user_id = user_id.partition(":")[0]
    return f"id {user_id}" if user_id else "-"


def describe_request() -> dict[str, str] | None:
    """The request's particulars for a log line or a mail, or None outside a request."""
    if not has_request_context():
        return None
    return {
        "Method": request.method,
        "URL": safe_url(),
        "Endpoint": request.endpoint or "-",
        "User": current_user_label(),
        "Remote address": request.remote_addr or "-",
        "User agent": request.user_agent.string or "-",
        "Request id": request_id() or "-",
    }


def safe_url() -> str:
    """The request's URL with the values of sensitive query arguments blanked.

    Redacting by value isn't enough here: the URL holds them percent-encoded
    ("correct+horse"), not as the form field held them ("correct horse").
    """
    query = [
        (name, REDACTED if SENSITIVE_NAME.search(name) else value)
        for name, value in request.args.items(multi=True)
    ]
    try:
        base_url = request.base_url
    except SecurityError:  # a Host that TRUSTED_HOSTS refuses: reading it raises again
        base_url = request.path
    return base_url + (f"?{urlencode(query, safe='[]')}" if query else "")


def config_secrets(config: Mapping) -> list[str]:
    """The secret values in the app's configuration."""
    secrets = [config.get("SECRET_KEY"), config.get("MAIL_PASSWORD")]
    database_url = config.get("SQLALCHEMY_DATABASE_URI")
    if database_url:
        secrets.append(make_url(database_url).password)
    # Redis's password, in REDIS_URL or a rate-limit storage of its own.
    for url in dict.fromkeys(
        filter(None, [config.get("REDIS_URL"), config.get("RATELIMIT_STORAGE_URI")])
    ):
        secrets.append(urlsplit(url).password)
    return [str(secret) for secret in secrets if secret]


def request_secrets() -> list[str]:
    """Secret values the current request carries: passwords and tokens in its
    form, query or URL, and its Cookie and Authorization headers."""
    if not has_request_context():
        return []
    secrets = [request.headers.get("Cookie"), request.headers.get("Authorization")]
    secrets += request.cookies.values()
    # Only a body the view has already parsed: parsing it here could fail
    # (too large, malformed), and an unparsed body can't have leaked anyway.
    form = vars(request._get_current_object()).get("form", {})
    # Every value of a repeated name (?token=a&token=b), not only the first.
    for source in (form, request.args, request.view_args or {}):
        secrets += [
            value for name, value in iter_multi_items(source) if SENSITIVE_NAME.search(name)
        ]
    # And each as the query string spells it ("correct+horse"): Sentry
    # reports the query string as it came.
    for pair in request.query_string.decode("latin-1").split("&"):
        name, _, value = pair.partition("=")
        if SENSITIVE_NAME.search(unquote_plus(name)):
            secrets.append(value)
    return [str(secret) for secret in secrets if secret]


def redact(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in `text` with [redacted]."""
    # Longest first, so that a secret containing another is replaced whole.
    for secret in sorted(set(secrets), key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH:
            text = text.replace(secret, REDACTED)
    return text


def redact_values(data, secrets: list[str]):
    """`redact` every string inside nested dicts and lists (a Sentry event)."""
    if isinstance(data, str):
        return redact(data, secrets)
    if isinstance(data, dict):
        return {key: redact_values(value, secrets) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [redact_values(value, secrets) for value in data]
    return data

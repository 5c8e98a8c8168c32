"""One check before every view: no NUL characters anywhere in the request.

PostgreSQL cannot store U+0000 in text and raises an error for it, so a NUL
in a form field, the query string or the URL would end as a 500 wherever it
reached the database (SQLite stores it, which is how such bugs hide in
development). Nobody types a NUL; rejecting it once, here, is simpler and
safer than a validator on every field and every URL parameter.
"""

from flask import Flask, request
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import BadRequest

from app.errors import ERRORS, error_response

NUL = "\x00"
NUL_MESSAGE = _l("The request contained a character that isn't allowed (NUL). Please remove it.")


class NulCharacter(BadRequest):
    """The request carried a NUL character."""


def reject_nul_characters() -> None:
    """:raise NulCharacter: if the path, the query or a form field holds a NUL."""
    try:
        sources = [request.args]
        if request.method in ("POST", "PUT", "PATCH"):
            sources.append(request.form)
        # items(multi=True): every value of a repeated field (?q=a&q=b), not just the first.
        values = [request.path] + [
            text for source in sources for item in source.items(multi=True) for text in item
        ]
    except UnicodeDecodeError:
        # Raw bytes that aren't UTF-8 in the query string (gunicorn refuses
        # them itself; other servers pass them on).
        raise BadRequest() from None
    if any(NUL in value for value in values):
        raise NulCharacter()


def handle_nul_character(error: NulCharacter):
    return error_response(400, ERRORS[400][0], NUL_MESSAGE)


def register_input_guard(app: Flask) -> None:
    app.before_request(reject_nul_characters)
    app.register_error_handler(NulCharacter, handle_nul_character)

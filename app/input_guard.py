"""Checks on what a request sends, before any view reads it.

No NUL characters anywhere in the request: PostgreSQL cannot store U+0000 in
text and raises an error for it, so a NUL in a form field, the query string
or the URL would end as a 500 wherever it reached the database (SQLite stores
it, which is how such bugs hide in development). Nobody types a NUL;
rejecting it once, here, is simpler and safer than a validator on every
field and every URL parameter.

No body over MAX_CONTENT_LENGTH, however it is sent: see `Request.stream`.
"""

import io
from typing import IO

from flask import Flask, request
from flask import Request as FlaskRequest
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import BadRequest, ClientDisconnected, RequestEntityTooLarge
from werkzeug.utils import cached_property

from app.errors import ERRORS, error_response

NUL = "\x00"
NUL_MESSAGE = _l("The request contained a character that isn't allowed (NUL). Please remove it.")
# How much of a body to ask the server for at a time.
READ_SIZE = 64 * 1024


class NulCharacter(BadRequest):
    """The request carried a NUL character."""


class Request(FlaskRequest):
    """Flask's request, refusing a chunked body over the limit as it refuses any other."""

    # Why the body was refused, if it was (see `stream`).
    _body_refused: Exception | None = None

    @cached_property
    def stream(self) -> IO[bytes]:
        """The body, at most MAX_CONTENT_LENGTH bytes of it.

        :raise RequestEntityTooLarge: if a body sent without a Content-Length
            (``Transfer-Encoding: chunked``) turns out to be longer.

        A body with a Content-Length over the limit is refused before it is
        read; one without can only be measured by reading it. Werkzeug reads
        it through a stream that stops at the limit, but a urlencoded form is
        read whole, and a whole read stops there *silently*: the rest of the
        body is dropped and the first megabyte is processed as if it were all
        of it (a form saved with a field cut short). So such a body is read
        here, one byte past the limit at most, and then handed on as if it had
        come with its Content-Length.
        """
        limit = self.max_content_length
        # The server sets wsgi.input_terminated when it decodes chunked bodies
        # itself (gunicorn, Werkzeug's development server); without it Werkzeug
        # reads no body at all, which is safe.
        if (
            self.content_length is not None
            or limit is None
            or "wsgi.input_terminated" not in self.environ
        ):
            return super().stream
        if self._body_refused is not None:
            raise self._body_refused
        try:
            body = read_at_most(self.input_stream, limit + 1)
            if len(body) > limit:
                raise RequestEntityTooLarge()
        except Exception as error:
            # Refused once, refused for good: read again, the body would go on
            # from where it was cut, and its tail would pass for all of it.
            self._body_refused = error
            raise
        return io.BytesIO(body)


def read_at_most(stream: IO[bytes], size: int) -> bytes:
    """Read `stream` to its end, or until `size` bytes, whichever comes first.

    :raise ClientDisconnected: (a 400) if the client went away mid-body.
    """
    body = bytearray()
    while len(body) < size:
        try:
            # One read may return less than asked for before the end
            # (a chunk at a time): only an empty one is the end.
            data = stream.read(min(READ_SIZE, size - len(body)))
        except (OSError, ValueError):
            # What Werkzeug's own stream does too: a body cut short (gunicorn's
            # NoMoreData is an OSError) is the client's doing, not a 500.
            raise ClientDisconnected() from None
        if not data:
            break
        body += data
    return bytes(body)


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
    # Every request the app handles is built from this class, the test client's too.
    app.request_class = Request
    app.before_request(reject_nul_characters)
    app.register_error_handler(NulCharacter, handle_nul_character)

"""A request id for every request: the reference a user can quote.

It is in every log line of the request, in the error mail, on the 500 page and
in the ``X-Request-ID`` response header, so that "error reference 3f9c…" from a
user's message leads an admin straight to the log lines and the mail.
"""

import re
import uuid

from flask import Flask, Response, current_app, g, has_request_context, request

HEADER = "X-Request-ID"

# A proxy in front (nginx's $request_id, Heroku's router) may already have
# given the request an id; keep it, so both logs agree. But only a proxy we
# were told about (PROXY_COUNT), which sets the header itself: from a client,
# the header would let anyone choose their error's reference, or give two
# unrelated failures the same one. And only an id that looks like one (not
# too long, no spaces or newlines that would forge log lines).
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{7,127}")


def request_id() -> str | None:
    """Return this request's id (made on first use), or None outside a request."""
    if not has_request_context():
        return None
    if "request_id" not in g:
        incoming = request.headers.get(HEADER, "") if current_app.config["PROXY_COUNT"] else ""
        g.request_id = incoming if SANE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    return g.request_id


def assign_request_id() -> None:
    # A before-request function that returns a value ends the request with
    # it, so this one must return None rather than the id.
    request_id()


def add_request_id_header(response: Response) -> Response:
    response.headers[HEADER] = request_id()
    return response


def register_request_id(app: Flask) -> None:
    # request_id() also makes the id on first use, so a request that fails in
    # an earlier before-request function (CSRFProtect's) has one all the same.
    app.before_request(assign_request_id)
    app.after_request(add_request_id_header)

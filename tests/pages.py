"""Reading a page the way a person does: its text, the messages under each form
field, and the flashed alerts, as text (entities decoded, whitespace collapsed);
the CSRF token its forms carry, as a browser sends it back; and whose name the
navigation shows (`logged_in_as`).

Tests compare them whole (``form_errors(page) == {"username": [...]}``), so
that a message that changed, or a second one that appeared, is noticed; a
fragment found with ``in`` would miss both.

At the end, failing to log in over HTTP, as the rate-limit tests do, and the
two pages that can answer it.
"""

import html
import re
from html.parser import HTMLParser
from typing import TYPE_CHECKING

from flask_bootstrap import Bootstrap5

if TYPE_CHECKING:  # servers.py reads CSRF tokens with this module: no import cycle at run time
    from tests.servers import Browser

# The stylesheet every page links, with the version that keeps browsers' copies fresh.
STYLESHEET_LINK = f'href="/bootstrap/static/css/bootstrap.min.css?v={Bootstrap5.bootstrap_version}"'

# The hidden input, as Flask-WTF renders it and as the templates write it by hand.
CSRF_TOKEN = re.compile(r'<input[^>]*\bname="csrf_token"[^>]*\bvalue="([^"]+)"')


def page_html(page) -> str:
    """`page`'s HTML, whether it is a test client's response or the HTML itself."""
    return page if isinstance(page, str) else page.get_data(as_text=True)


def page_text(page) -> str:
    """The page as a person reads it: ``don&#39;t`` becomes ``don't``."""
    return html.unescape(page_html(page))


def csrf_token(page) -> str:
    """The CSRF token of the first form on the page that carries one.

    `page` is its HTML, or a test client's response, which must be the page served (200).
    """
    if not isinstance(page, str):
        assert page.status_code == 200, page.status
    match = CSRF_TOKEN.search(page_html(page))
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


class _PageReader(HTMLParser):
    """Collects the messages under each form field, and the flashed alerts."""

    def __init__(self):
        super().__init__(convert_charrefs=True)  # "don&#39;t" reads "don't"
        self.field: str | None = None  # the last field seen: its messages follow it
        self.errors: dict[str, list[str]] = {}
        self.alerts: list[tuple[str, str]] = []
        self._collecting: tuple[str, str] | None = None  # ("error", field) or ("alert", kind)
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag in ("input", "textarea", "select") and attrs.get("name"):
            self.field = attrs["name"]
        elif tag == "div" and "invalid-feedback" in classes:
            self._collecting, self._text = ("error", self.field), []
        elif tag == "div" and attrs.get("role") == "alert":
            kind = next((c.removeprefix("alert-") for c in classes if c.startswith("alert-")), "")
            self._collecting, self._text = ("alert", kind), []

    def handle_data(self, data):
        if self._collecting:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "div" and self._collecting:
            what, name = self._collecting
            text = " ".join("".join(self._text).split())
            if what == "error":
                self.errors.setdefault(name, []).append(text)
            else:
                self.alerts.append((name, text))
            self._collecting = None


def read_page(page) -> _PageReader:
    reader = _PageReader()
    reader.feed(page_html(page))
    return reader


def form_errors(page) -> dict[str, list[str]]:
    """The messages a page shows under its form's fields: {field name: [message, ...]}.

    `page` is a response or its HTML. Exactly what the reader sees, entities decoded.
    """
    return read_page(page).errors


def alerts(page) -> list[tuple[str, str]]:
    """The flashed messages on a page, as (category, text): ("danger", "Invalid ...")."""
    return read_page(page).alerts


# --- Failing to log in, as the rate-limit tests do --------------------------------------


def logged_in_as(page) -> str | None:
    """Whose name the navigation shows, or None for an anonymous visitor."""
    page = page_html(page)
    found = re.search(r"Profile \(([^)]+)\)", page)
    if found:
        return found.group(1)
    assert ">Log in</a>" in page, page[:500]
    return None


INVALID_LOGIN = [("danger", "Invalid username or password.")]


def fail_to_log_in(browser: "Browser", username: str) -> tuple[int, dict, str]:
    """Submit the login form with a wrong password for `username`; return the response."""
    return browser.submit("/auth/login", {"username": username, "password": "a-wrong-guess"})


def assert_login_failed(response: tuple[int, dict, str]) -> None:
    """The login form again, saying the name or password was wrong."""
    status, _, page = response
    assert (status, alerts(page)) == (200, INVALID_LOGIN)


def assert_too_many_requests(response: tuple[int, dict, str]) -> None:
    """The page that says to slow down, and when to try again (within the minute)."""
    status, headers, page = response
    assert status == 429, page
    assert "<h1>Too many requests</h1>" in page
    assert 0 <= int(headers["Retry-After"]) <= 60

"""Where a redirect may send the browser back to: only a page on this site.

Logging in (``?next=``) and switching the language both return the visitor
to the page they came from, and both take that page from the client, which
an attacker can choose: an unchecked one makes our site the first hop of a
phishing link ("open redirect").
"""

from urllib.parse import quote, urlsplit

from flask import request


def safe_next_url(target: str | None) -> str | None:
    """Return `target` if it is a path on this site, else None.

    The usual ``urlsplit(target).netloc == ""`` test is not enough: browsers
    read ``/\\evil.example`` and ``///evil.example`` as other hosts, and
    ``https:evil.example`` has no netloc but a scheme. So we accept only a
    single leading slash, no backslash, and no whitespace or control
    characters (browsers drop tabs and newlines, which turns ``/\\t/evil`` into
    ``//evil``). What passes is a path on this site: a URL that starts with
    one "/" has no scheme and no host.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in target):
        return None
    return target


def page_before() -> str | None:
    """The page on this site that the request came from (its Referer), or None."""
    try:
        parts = urlsplit(request.referrer or "")
    except ValueError:  # a header the client made up, such as "http://["
        return None
    if parts.netloc != request.host:
        return None
    return safe_next_url(parts.path + (f"?{parts.query}" if parts.query else ""))


def current_page() -> str:
    """This request's path and query, for a form that should come back here.

    Percent-encoded as it was sent ("/user/a%20b", not the decoded
    ``request.full_path``), so that `safe_next_url` accepts it on the way back.
    """
    path = quote(request.script_root + request.path)
    query = request.query_string.decode("latin-1")
    return f"{path}?{query}" if query else path

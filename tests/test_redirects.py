"""Where the blog sends a browser back to: only ever a page on this site.

Logging in (``?next=``), the language switch (its form's ``next``) and the
login a follow button leads to (the Referer) all redirect to a page named by
the client, which an attacker can choose. app/redirects.py decides which
names are pages on this site. These tests pin each of its rules on its own:

- `safe_next_url`: refused when empty, without a leading "/", with "//" at
  the start, with a backslash anywhere, with any whitespace or control
  character (browsers drop some and read others as "/", which turns a path
  into another host); accepted otherwise, verbatim: queries, percent-encoding,
  letters of any script. Each value is checked directly, and the ones that
  matter most through the login form too, where a refused one ends on "/";
- `page_before`: the Referer, only from this host and port, its query kept;
- `current_page`: the address the language switch comes back to, as it was
  sent (percent-encoded, the query untouched, under the app's script root).

Fast on purpose: most checks are direct calls, inside a request context where
one is needed.
"""

from urllib.parse import quote

import pytest

from app.redirects import current_page, page_before, safe_next_url
from tests.helpers import PASSWORD

# Every character that counts as a control or whitespace: ASCII's C0 controls
# (0-31), the space and DEL (127), and Unicode's spaces beyond ASCII.
CONTROLS = [chr(n) for n in range(32)] + ["\x7f"]
SPACES = [" ", "\x85", "\xa0", "\u1680", "\u2003", "\u2028", "\u2029", "\u3000"]

REFUSED = {
    "nothing": None,
    "empty": "",
    "a relative path": "explore",
    "a relative path with a slash in it": "explore/",
    "a host": "//evil.example",
    "a host, three slashes": "///evil.example",
    "a host after a backslash": "/\\evil.example",
    "two backslashes": "\\\\evil.example",
    "a backslash further on": "/user/admin\\x",
    "a backslash at the end": "/explore\\",
    "a scheme and a host": "https://evil.example",
    "a scheme without a host": "https:evil.example",
    "a script": "javascript:alert(1)",
    "a space": "/a b",
    "a tab, dropped by browsers": "/\t/evil.example",
    "a line feed, dropped by browsers": "/\n/evil.example",
    "a vertical tab": "/\x0b/evil.example",
    "SOH, which urlsplit keeps": "/\x01/evil.example",
    "ESC, not whitespace": "/\x1b[31m",
    "DEL, which urlsplit keeps": "/\x7f/evil.example",
    "DEL at the end": "/explore\x7f",
    "a no-break space": "/a\xa0b",
    "an ideographic space": "/a\u3000b",
    "a space before the slash": " /explore",
}

ACCEPTED = [
    "/",
    "/explore",
    "/explore?page=2",
    "/user/admin?page=2&before=1714979289123456-5",
    "/user/a%20b",  # percent-encoded, left so
    "/user/%C3%89mile",
    "/user/Émile",  # letters of any script
    "/user/Ωμέγα",
    "/user/用户",
    "/~admin/!$&'()*+,;=:@",  # "~" (126) is the last printable ASCII character
    "/a:b",  # a colon after the slash is no scheme
    "/explore?next=//evil.example",  # "//" further on is part of the path's query
    "/explore#top",
]


@pytest.mark.parametrize("target", REFUSED.values(), ids=REFUSED)
def test_refused_targets(target):
    assert safe_next_url(target) is None


@pytest.mark.parametrize("char", CONTROLS + SPACES, ids=lambda char: f"U+{ord(char):04X}")
def test_any_control_or_whitespace_character_is_refused(char):
    """Wherever it is: at the start of the path, in the middle, in the query."""
    for target in (f"/{char}/evil.example", f"/explore{char}x", f"/explore?q={char}"):
        assert safe_next_url(target) is None, repr(target)


@pytest.mark.parametrize("target", ACCEPTED)
def test_accepted_targets_are_returned_verbatim(target):
    assert safe_next_url(target) == target


@pytest.mark.parametrize("char", [chr(n) for n in range(33, 127) if chr(n) not in "/\\"])
def test_every_printable_ascii_character_is_accepted(char):
    """From "!" (33) to "~" (126): no limit of the control characters' range is one off."""
    assert safe_next_url(f"/a{char}b") == f"/a{char}b"


# --- Through the login form -------------------------------------------------------------------

THROUGH_LOGIN = [
    ("/\x01/evil.example", "/"),
    ("/\x7f/evil.example", "/"),
    ("/\x0b/evil.example", "/"),
    ("/a b", "/"),
    ("//evil.example", "/"),
    ("/\\evil.example", "/"),
    ("https:evil.example", "/"),
    ("", "/"),
    ("/explore?page=2", "/explore?page=2"),
    ("/user/a%20b", "/user/a%20b"),
    ("/user/Émile", "/user/%C3%89mile"),  # sent on percent-encoded, as a Location must be
]


@pytest.mark.parametrize(("next_url", "location"), THROUGH_LOGIN)
def test_login_goes_to_next_only_if_it_is_on_this_site(users, auth, next_url, location):
    response = auth.login(next_url=quote(next_url, safe=""))
    assert response.status_code == 302
    assert response.headers["Location"] == location


def test_an_anonymous_follow_comes_back_to_the_same_page_after_login(client, users):
    """Page 2 of explore, "Follow" pressed while logged out: log in, then back to page 2,
    its query string kept (the follow's own URL only takes POST)."""
    response = client.post("/follow/admin1", headers={"Referer": "http://localhost/explore?page=2"})
    assert response.headers["Location"] == "/auth/login?next=%2Fexplore%3Fpage%3D2"
    login = client.post(
        response.headers["Location"], data={"username": "admin", "password": PASSWORD}
    )
    assert login.headers["Location"] == "/explore?page=2"


# --- page_before: the Referer ------------------------------------------------------------------

REFERERS = [
    (None, None),
    ("", None),
    ("http://localhost/explore", "/explore"),
    ("http://localhost/explore?page=2&before=1-2", "/explore?page=2&before=1-2"),  # query kept
    ("http://localhost/explore?", "/explore"),  # an empty query adds no "?"
    ("http://localhost/explore#top", "/explore"),  # the fragment never reaches a server
    ("https://localhost/user/a%20b", "/user/a%20b"),  # as sent, still encoded
    ("http://localhost", None),  # no path: nothing to go back to
    ("http://localhost//evil.example/", None),  # a path that safe_next_url refuses
    ("http://localhost/a\\b", None),
    ("http://evil.example/explore", None),  # another host
    ("http://localhost:8080/explore", None),  # another port
    ("http://localhost.evil.example/explore", None),
    ("http://evil.example@localhost/explore", None),  # a user name in the host part
    ("/explore", None),  # relative: not what browsers send
    ("http://[", None),  # not a URL: urlsplit raises ValueError
    ("http://[not-an-ip]/explore", None),
]


@pytest.mark.parametrize(("referer", "expected"), REFERERS)
def test_page_before_is_the_referer_on_this_site(app, referer, expected):
    headers = {} if referer is None else {"Referer": referer}
    with app.test_request_context("/follow/admin", method="POST", headers=headers):
        assert page_before() == expected


def test_page_before_compares_the_port_too(app):
    """Served on port 8080: a Referer on 8080 is this site, one without a port isn't."""
    same = {"Referer": "http://localhost:8080/explore?page=2"}
    with app.test_request_context(base_url="http://localhost:8080/", headers=same):
        assert page_before() == "/explore?page=2"
    other = {"Referer": "http://localhost/explore?page=2"}
    with app.test_request_context(base_url="http://localhost:8080/", headers=other):
        assert page_before() is None


# --- current_page: where the language switch comes back to ---------------------------------

CURRENT_PAGES = [
    ("/explore", "", "/explore"),
    ("/explore", "page=2", "/explore?page=2"),
    ("/explore", "page=2&before=1-2&page=3", "/explore?page=2&before=1-2&page=3"),
    # The query exactly as sent: neither decoded nor encoded again.
    ("/explore", "q=a%20b+c&x=%2F%3F", "/explore?q=a%20b+c&x=%2F%3F"),
    ("/user/a%20b", "", "/user/a%20b"),
    ("/user/%C3%89mile", "x=1", "/user/%C3%89mile?x=1"),
]


@pytest.mark.parametrize(("path", "query", "expected"), CURRENT_PAGES)
def test_current_page_is_the_address_as_sent(app, path, query, expected):
    with app.test_request_context(path, environ_overrides={"QUERY_STRING": query}):
        assert current_page() == expected
        # ...which is what safe_next_url lets through on the way back.
        assert safe_next_url(current_page()) == expected


def test_current_page_includes_the_script_root(app):
    """Served under /blog (SCRIPT_NAME, set by the server), the address starts with it."""
    with app.test_request_context("/user/a%20b?page=2", base_url="http://localhost/blog/"):
        assert current_page() == "/blog/user/a%20b?page=2"


def test_current_page_reads_raw_bytes_one_character_each(app):
    """Bytes that aren't UTF-8 in the query (gunicorn refuses them, not every server does):
    read one character a byte, as WSGI hands them over, never a decoding error."""
    with app.test_request_context("/explore", environ_overrides={"QUERY_STRING": "page=\xff"}):
        assert current_page() == "/explore?page=\xff"


def test_a_query_of_raw_bytes_still_gets_its_400_page(client):
    """Every page's language switch reads the query; its 400 page included."""
    response = client.get("/explore", environ_overrides={"QUERY_STRING": "page=\xff"})
    assert response.status_code == 400
    assert "<h1>Bad request</h1>" in response.text

"""Hostile input on every form and every URL parameter: a message or a 4xx, never a 500.

What a visitor can send is not limited to what our forms let them type: very
long strings, NUL and other control characters, bytes that are not UTF-8,
right-to-left overrides, emoji, SQL and HTML. Whatever arrives, the blog must
answer with the form and a message saying what is wrong, or with one of its
own error pages (400, 404, 413...); never with a 500, and never by losing or
changing what was saved before.

PostgreSQL makes this matter more than SQLite: it refuses a string longer
than its column (a DataError) and any NUL character in text, where SQLite
stores both without a word. A form that forgets a limit works in development
and fails in production, so every test here runs on both databases (see
tests/conftest.py), and one section ("PostgreSQL's limits") tries every field
of every form at its column's limit, one character past it, and with a NUL.

Most tests are property-based (Hypothesis): instead of a handful of inputs we
chose, Hypothesis generates many, aimed at the corners (empty, huge, exactly
at a limit, one past it, control characters, invalid bytes), and checks that
each answer has the *property* we want. When one fails, Hypothesis shrinks it
to the smallest input that still fails and prints it.

How to read these tests:

- `FUZZ` holds the settings every property test shares. derandomize=True:
  the same examples on every run, so CI is reproducible and a failure in CI
  fails the same way on your machine.
- A test's fixtures are made once for all its examples (not once per
  example), so rows written by one example are still there for the next.
  Every check is therefore relative: it measures the database before and
  after its own request.
- The fuzzed apps have rate limits off (`app` below): hundreds of failed
  logins in a few seconds are what the limits exist to stop, and every one
  would become a 429 instead of exercising the form. Two tests at the end
  check that the 429 page is a proper 4xx page too (logging in, and the
  forms that ask a logged-in user for their password).
- The last section keeps, as explicit tests, the inputs that these tests
  found to be 500s (all fixed since): files and JSON where a form expects
  text, a malformed Referer, raw bytes in the query string.
"""

import calendar
import itertools
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from io import BytesIO
from typing import NamedTuple
from urllib.parse import quote, urlencode, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, assume, event, example, given, note, settings
from hypothesis import strategies as st
from markupsafe import escape
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import DataError
from werkzeug.datastructures import Headers
from werkzeug.sansio.multipart import Data, Epilogue, Field, MultipartEncoder

from app.auth.email import reset_token
from app.extensions import db
from app.models import (
    ABOUT_ME_MAX_LENGTH,
    EMAIL_MAX_LENGTH,
    MAX_ID,
    POST_MAX_LENGTH,
    USERNAME_MAX_LENGTH,
    Post,
    User,
    followers,
    name_key,
    now_utc,
    stored_name,
)
from tests import pages
from tests.databases import ON_POSTGRESQL
from tests.helpers import PASSWORD, PASSWORD_HASH, add_posts, add_user

FUZZ = settings(
    # Enough to reach the corners on every form, few enough that the whole
    # file runs in well under a minute on each database.
    max_examples=40,
    # Timing is not the property under test: the first request of an app is
    # slower (templates compile), and PostgreSQL is slower than SQLite.
    deadline=None,
    derandomize=True,
    # Derandomized, there are no failures of earlier runs to remember and replay.
    # (Hypothesis still keeps a cache in .hypothesis/, which git-ignores itself.)
    database=None,
    suppress_health_check=[
        # One app and one database for all of a test's examples, on purpose (see above).
        HealthCheck.function_scoped_fixture,
        # Strings of 100,000 characters are slow to generate, and meant.
        HealthCheck.too_slow,
        HealthCheck.large_base_example,
        HealthCheck.data_too_large,
    ],
)

MAX_CONTENT_LENGTH = 1024 * 1024  # config.py's default
MAX_FORM_MEMORY_SIZE = 500_000  # Flask's default: the largest multipart text field
FORM = "application/x-www-form-urlencoded"
# The titles of the site's error pages (app/errors.py) that bad input may earn.
ERROR_TITLES = {
    400: "Bad request",
    403: "Forbidden",
    404: "Page not found",
    405: "Method not allowed",
    413: "Request too large",
    429: "Too many requests",
}
NUL_MESSAGE = "The request contained a character that isn't allowed (NUL)."
INVALID_LOGIN = "Invalid username or password."
REQUIRED = "This field is required."
WRONG_PASSWORD = "That isn't your current password."
# Every message a form may answer bad input with, word for word: under a field, or
# (a failed login) in a flash. Anything else on a form that came back is a bug.
FORM_MESSAGES = {
    REQUIRED,
    INVALID_LOGIN,
    "Field must be between 3 and 64 characters long.",  # a username
    "Field must be between 8 and 128 characters long.",  # a new password
    *(f"Field cannot be longer than {n} characters." for n in (64, 128, 254, 280)),
    "Use only letters, digits, dots, dashes and underscores.",
    "Please enter a valid email address.",
    "Please use a different username.",
    "Use letters from one writing system only, not a mix such as Latin and Cyrillic.",
    "This username looks too much like an existing one. Please use a different username.",
    "Please use a different email address.",
    "The passwords don't match.",
    WRONG_PASSWORD,  # the current password, asked for by the account's own forms
    "That is your address already.",  # a new email address that is the old one
}
# Look-alikes, written as escapes so that the source shows what they are.
FULL_WIDTH_ADMIN = "\uff21\uff24\uff2d\uff29\uff2e"  # "ADMIN" in full-width letters
FULL_WIDTH_ADMIN1 = "\uff41\uff44\uff4d\uff49\uff4e\uff11"  # "admin1", full width
ARABIC_INDIC_ONE, FULL_WIDTH_ONE = "\u0661", "\uff11"


@pytest.fixture
def app(make_app) -> Flask:
    """The blog with its rate limits off, and bugs answered with the 500 page.

    PROPAGATE_EXCEPTIONS=False: in testing mode Flask re-raises a view's
    exception in the test; we want what a visitor gets, the 500 page, so
    that "no 500" is checked literally. The traceback is still logged, and
    pytest shows it under "Captured log call" when a test fails.
    """
    return make_app(RATELIMIT_ENABLED=False, PROPAGATE_EXCEPTIONS=False)


# --- Hostile input -------------------------------------------------------------------------

# Values we want tried often: Hypothesis picks among them, besides drawing its own.
SPECIALS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x00" * 3,
    "\t\r\n\x0b\x0c",
    "\x1b[31mred\x1b[0m",  # a terminal escape: mischief in logs
    "\x7f\x80\x9f",  # DEL and C1 controls: not ASCII controls, not whitespace either
    "\u0085\u2028\u2029",  # line breaks that only Unicode knows
    "\u200b\u200d\ufeff",  # zero-width characters and a byte-order mark
    "\ufffe\uffff",  # noncharacters
    "'; DROP TABLE user; --",
    "' OR '1'='1",
    '" OR ""="',
    "admin'--",
    "%",
    "_",  # the LIKE wildcards
    "\\",
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "{{ 7*7 }}{% raw %}",  # template syntax must stay text
    "\u202egnp.exe",  # a right-to-left override: "exe.png" on screen
    "مرحبا بالعالم",
    "שלום",
    "😀" * 100,
    "\U0001f469\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466",  # 1 emoji, 7 code points
    "e\u0301" * 10,  # combining accents
    f"\ufb00 \ufb01 \ufb03 {FULL_WIDTH_ADMIN} {FULL_WIDTH_ADMIN1}",  # NFKC makes these ASCII
    "İstanbul ΐ ß",  # casefold() makes these longer
    "x" * 100_000,
    "é" * 100_000,
    # 520 kB: over Flask's MAX_FORM_MEMORY_SIZE as a multipart field, and over
    # MAX_CONTENT_LENGTH percent-encoded (12 bytes a character): a 413 either way.
    "😀" * 130_000,
]

# A character repeated to just below, at and just past each limit the forms
# enforce; in several widths: ASCII, two bytes, four bytes (PostgreSQL counts
# characters, not bytes), and "ΐ", which casefold() turns into three.
LIMITS = sorted({USERNAME_MAX_LENGTH, EMAIL_MAX_LENGTH, POST_MAX_LENGTH, ABOUT_ME_MAX_LENGTH, 128})
at_the_limits = st.builds(
    lambda char, length: char * length,
    st.sampled_from(["a", "é", "😀", "ΐ", "\u202e"]),
    st.sampled_from([n + delta for n in LIMITS for delta in (-1, 0, 1)]),
)
# Bytes that are not UTF-8: a lone continuation byte, bytes that never occur,
# a truncated sequence, an encoded surrogate, an "overlong" NUL (Java's), a
# code point past U+10FFFF.
INVALID_UTF8 = [b"\x80", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\xc0\x80", b"\xf4\x90\x80\x80"]
invalid_utf8 = st.builds(
    lambda before, bad, after: before + bad + after,
    st.binary(max_size=20),
    st.sampled_from(INVALID_UTF8),
    st.binary(max_size=20),
)
hostile_text = st.one_of(
    st.sampled_from(SPECIALS),
    # Any Unicode text at all (every code point but surrogates, which UTF-8
    # can't encode): control characters and NUL included.
    st.text(),
    at_the_limits,
    # Something ordinary around something nasty.
    st.builds(
        lambda before, special, after: before + special + after,
        st.text(max_size=20),
        st.sampled_from(SPECIALS),
        st.text(max_size=20),
    ),
)
# What a field may carry: text (sent as UTF-8), or bytes that are not UTF-8.
hostile = st.one_of(hostile_text, invalid_utf8)
# Values the forms accept (mostly: a random name may be taken already, or change
# under NFKC), in any script and up to the limit. A form gets valid values with
# some fields (maybe none, maybe all) replaced by hostile ones: a form with one
# bad field is checked on that field alone, and one with none reaches the
# database, which is where PostgreSQL's limits bite.
# No NUL, and no surrogates (Cs): UTF-8 can't encode them, so no form can send one.
text_without_nul = st.characters(exclude_characters="\x00", exclude_categories=["Cs"])
valid_username = st.from_regex(r"[\w.-]{3,64}", fullmatch=True)
valid_password = st.text(text_without_nul, min_size=8, max_size=128)
SAME = object()  # for password2: the same as password
hostile_email = st.one_of(
    hostile,
    st.builds(
        "{}@{}".format,
        hostile_text,
        st.sampled_from(["example.com", "例え.jp", "xn--e1afmkfd.xn--p1ai", "[127.0.0.1]"]),
    ),
)


@st.composite
def forms(draw, valid: dict, hostile_fields: dict | None = None) -> dict:
    """A form's fields: `valid` values, some of them replaced by hostile ones (from
    `hostile_fields`, by default `hostile`)."""
    spoiled = draw(st.sets(st.sampled_from(sorted(valid))))
    hostile_fields = hostile_fields or {}
    return {
        name: draw(hostile_fields.get(name, hostile) if name in spoiled else strategy)
        for name, strategy in valid.items()
    }


def with_password2(fields: dict) -> dict:
    """`fields`, with SAME in password2 replaced by the password."""
    if fields.get("password2") is SAME:
        return {**fields, "password2": fields["password"]}
    return fields


# Fields nobody asked for, with hostile names (short ones: in a multipart body the name
# is in the part's header, and a header of 500 kB is a 413 of its own, another story).
hostile_names = st.one_of(
    st.sampled_from([s for s in SPECIALS if len(s) < 200]), st.text(max_size=30)
)
extra_fields = st.lists(st.tuples(hostile_names, hostile), max_size=2)
# How the body is sent: percent-encoded (what browsers do), multipart (forms
# with enctype="multipart/form-data"), or urlencoded with raw, unescaped bytes.
encodings = st.sampled_from(["urlencoded", "multipart", "raw"])


# --- Sending a form and checking the answer -------------------------------------------------

BOUNDARY = b"hostile-boundary-7MA4YWxkTrZu0gW"


@dataclass
class Sent:
    """What the server gets to see of a form we sent."""

    # The fields as the server decodes them; None for a value we can't
    # predict exactly (bytes that are not UTF-8).
    fields: dict[str, str | None]
    nul: bool  # a NUL reaches the form: the answer must be the 400 page
    too_big: bool  # over a size limit: the answer must be the 413 page


def as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def urlencoded_body(items: list[tuple[str, bytes]]) -> bytes:
    """What a browser sends: every name and value percent-encoded."""
    return urlencode(items).encode("ascii")


def raw_body(items: list[tuple[str, bytes]]) -> bytes:
    """A urlencoded body with the values' bytes left as they are: only what would
    change the body's structure (``%&=+``) is escaped."""
    values = [re.sub(rb"[%&=+]", lambda m: b"%%%02X" % m[0][0], value) for _, value in items]
    names = [quote(name, safe="").encode("ascii") for name, _ in items]
    return b"&".join(name + b"=" + value for name, value in zip(names, values, strict=True))


def multipart_body(items: list[tuple[str, bytes]]) -> bytes:
    """A multipart/form-data body, written by Werkzeug's encoder (the test client's).

    Names go in a part's header, where quotes and line breaks would break it:
    they are percent-encoded. Values go as they are, bytes that aren't UTF-8 too.
    """
    encoder = MultipartEncoder(BOUNDARY)
    body = b""
    for name, value in items:
        assume(BOUNDARY not in value)
        body += encoder.send_event(Field(name=quote(name, safe=""), headers=Headers()))
        body += encoder.send_event(Data(data=value, more_data=False))
    return body + encoder.send_event(Epilogue(data=b""))


ENCODINGS = {
    "urlencoded": (urlencoded_body, FORM),
    "raw": (raw_body, FORM),
    "multipart": (multipart_body, f"multipart/form-data; boundary={BOUNDARY.decode()}"),
}


def what_the_server_sees(
    fields: dict[str, str | bytes], items: list[tuple[str, bytes]], encoding: str, body: bytes
) -> Sent:
    """How Werkzeug will read `body`: names, values, and the limits they pass."""
    if encoding == "raw" and not utf8(body):
        seen = []  # a urlencoded body that isn't UTF-8 is read as an empty form
    else:
        # Werkzeug replaces bytes that aren't UTF-8 in a value; multipart names
        # arrive percent-encoded, as we sent them.
        seen = [
            (
                quote(name, safe="") if encoding == "multipart" else name,
                value.decode("utf-8", "replace"),
            )
            for name, value in items
        ]
    too_big = len(body) > MAX_CONTENT_LENGTH or (
        encoding == "multipart" and any(len(value) > MAX_FORM_MEMORY_SIZE for _, value in items)
    )
    return Sent(
        # A field's value as the form gets it (the first one, if a name repeats).
        fields={
            name: value if isinstance(value, str) and seen else None
            for name, value in fields.items()
        },
        nul=any("\x00" in name + value for name, value in seen),
        too_big=too_big,
    )


def send_form(
    client: FlaskClient,
    url: str,
    fields: dict[str, str | bytes],
    encoding: str = "urlencoded",
    extras: list[tuple[str, str | bytes]] = (),
):
    """POST `fields` (and `extras`) to `url` as `encoding`; return (response, Sent).

    The body is built here, not by the test client, which would refuse or
    re-encode what we mean to send (bytes that aren't UTF-8, raw or not).
    """
    items = [(name, as_bytes(value)) for name, value in [*fields.items(), *extras]]
    encode, content_type = ENCODINGS[encoding]
    body = encode(items)
    note(f"POST {url} as {encoding}, {len(body)} bytes")
    response = client.post(url, data=body, content_type=content_type)
    return response, what_the_server_sees(fields, items, encoding, body)


def utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def h1(response) -> str | None:
    match = re.search(r"<h1>(.*?)</h1>", response.text, re.DOTALL)
    return match and match.group(1).strip()


def assert_error_page(response, status: int) -> None:
    """`response` is the site's own page for `status`, in its layout, with its title."""
    assert response.status_code == status, describe(response)
    # A status the site doesn't word itself (say, 415) keeps Werkzeug's title.
    assert h1(response) == ERROR_TITLES.get(status, h1(response) or "a title"), describe(response)
    assert 'class="navbar-brand"' in response.text  # the site's layout, not a bare page


def assert_form_shows_why(response) -> None:
    """A form that came back (200) says what was wrong, under a field or in an error
    flash, in one of the forms' own messages."""
    assert response.status_code == 200, describe(response)
    messages = [message for _, message in form_errors(response)] + flashes(response)
    assert messages, describe(response)
    assert set(messages) <= FORM_MESSAGES, describe(response)


def check_form_answer(response, sent: Sent) -> bool:
    """The property every form POST must have; return True if the form accepted it.

    - never a 500;
    - too large: the 413 page; a NUL anywhere: the 400 page, saying so;
    - otherwise the form again, saying what is wrong (200), or accepted (302).
    """
    assert response.status_code < 500, describe(response)
    # event(): `pytest --hypothesis-show-statistics` counts the outcomes, to
    # check that the strategies reach every branch, acceptance included.
    if sent.too_big:
        event("413: too large")
        assert_error_page(response, 413)
        return False
    if sent.nul:
        event("400: NUL")
        assert_error_page(response, 400)
        assert NUL_MESSAGE in response.text
        return False
    if response.status_code == 302:
        event("302: accepted")
        return True
    event("200: the form says why")
    assert_form_shows_why(response)
    return False


def check_page_answer(response, allowed: tuple[int, ...] = (200, 302)) -> None:
    """A GET (or a form-less POST) with bad input: a normal answer or an error page."""
    assert response.status_code < 500, describe(response)
    if response.status_code >= 400:
        assert_error_page(response, response.status_code)
    else:
        assert response.status_code in allowed, describe(response)


def form_errors(response) -> list[tuple[str, str]]:
    """The errors under the fields of a form that came back: [(field, message)], in order."""
    return [
        (field, message)
        for field, messages in pages.form_errors(response).items()
        for message in messages
    ]


def flashes(response, category: str = "danger") -> list[str]:
    """The flashed messages of `category` at the top of the page: by default, the errors
    (not, say, the "Congratulations" of an earlier example's registration, which the
    redirect that we don't follow would have shown)."""
    return [text for kind, text in pages.alerts(response) if kind == category]


def describe(response) -> str:
    """What to print when an assertion about `response` fails: the status, the page's
    title and the messages on it (the start of a page is only its <head>)."""
    messages = re.findall(r'(?:invalid-feedback[^>]*|role="alert")>([^<]*)<', response.text)
    location = response.headers.get("Location")
    return f"{response.status_code} <h1>{h1(response)!r} {messages} Location: {location!r}"


# --- Reading the database ----------------------------------------------------------------


class UserRow(NamedTuple):
    username: str
    email: str
    password_hash: str
    about_me: str


def user_rows(app) -> dict[int, UserRow]:
    """Every user as the database holds them: id -> (username, email, password_hash, about_me)."""
    with app.app_context():
        stmt = select(User.id, User.username, User.email, User.password_hash, User.about_me)
        return {row[0]: UserRow(*row[1:]) for row in db.session.execute(stmt)}


def post_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Post))


def newest_post_body(app) -> str:
    with app.app_context():
        return db.session.scalar(Post.select_newest_first().with_only_columns(Post.body).limit(1))


def post_ids(app) -> set[int]:
    with app.app_context():
        return set(db.session.scalars(select(Post.id)))


def follow_rows(app) -> set[tuple[int, int]]:
    """Every follow: (follower id, followed id)."""
    with app.app_context():
        return set(db.session.execute(select(followers.c.follower_id, followers.c.followed_id)))


# --- Every form, fuzzed ----------------------------------------------------------------------


@FUZZ
@given(
    fields=forms(
        {
            "username": valid_username,
            "email": st.emails(),
            "password": valid_password,
            "password2": st.just(SAME),
        },
        {"email": hostile_email},
    ),
    extras=extra_fields,
    encoding=encodings,
)
@example(  # the classic: a name that differs from a taken one only in width and case
    fields={"username": FULL_WIDTH_ADMIN, "email": "x@example.com", "password": PASSWORD},
    extras=[],
    encoding="urlencoded",
)
@example(  # the longest name whose lookup key (casefolded) fills its column exactly
    fields={"username": "ΐ" * 64, "email": "greek@example.com", "password": PASSWORD},
    extras=[],
    encoding="urlencoded",
)
def test_register(app, client, users, fields, extras, encoding):
    """Registering: a form error, the 400/413 page, or one new user; others untouched."""
    fields = with_password2({"password2": SAME, **fields})
    before = user_rows(app)
    response, sent = send_form(client, "/auth/register", fields, encoding, extras)
    accepted = check_form_answer(response, sent)

    after = user_rows(app)
    # Nobody else's account changed: FULL_WIDTH_ADMIN must not become admin's new name.
    assert {id_: after[id_] for id_ in before} == before
    assert len(after) == len(before) + accepted
    if accepted and None not in sent.fields.values():
        (new,) = set(after) - set(before)
        username, email = after[new].username, after[new].email
        assert username == stored_name(sent.fields["username"])
        assert email == stored_name(sent.fields["email"])


@FUZZ
@given(
    fields=forms(
        {
            # admin's name, as typed in several ways that all mean admin.
            "username": st.sampled_from(["admin", "ADMIN", " admin ", FULL_WIDTH_ADMIN]),
            "password": st.just(PASSWORD),
            "remember_me": st.sampled_from(["y", ""]),
        }
    ),
    next_url=hostile_text,
    extras=extra_fields,
    encoding=encodings,
)
def test_login(app, client, users, fields, next_url, extras, encoding):
    """Logging in: "invalid username or password", a form error, the 400/413 page, or in."""
    url = f"/auth/login?next={quote(next_url, safe='')}"
    response, sent = send_form(client, url, fields, encoding, extras)
    # A NUL in the query string is refused like one in the body (unless the body is too large:
    # reading it, to look for NULs, is what finds that out first).
    sent = replace(sent, nul=sent.nul or "\x00" in next_url)
    if check_form_answer(response, sent):
        client.post("/auth/logout")  # for the next example


# Ways to make "a path on this site" lead elsewhere in a browser.
REDIRECT_TRICKS = [
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    " //evil.example",
    "\x01//evil.example",
    "https://evil.example",
    "https:evil.example",
    "javascript:alert(1)",
    "/%2F/evil.example",
    "/\uff0f/evil.example",  # a full-width solidus
    "/\x80evil",
]


@FUZZ
@given(next_url=st.one_of(hostile_text, st.sampled_from(REDIRECT_TRICKS)))
@example(next_url="/user/admin?page=2")
def test_login_redirects_only_within_the_site(app, client, users, next_url):
    """Whatever `next` says, a successful login lands on this site."""
    url = f"/auth/login?next={quote(next_url, safe='')}"
    response = client.post(url, data={"username": "admin", "password": PASSWORD})
    if "\x00" in next_url:
        assert_error_page(response, 400)
        return
    assert response.status_code == 302, describe(response)
    client.post("/auth/logout")
    assert_on_this_site(response.headers["Location"])


def assert_on_this_site(location: str) -> None:
    """A browser sent to `location` stays on this site."""
    # Read the Location the way a browser does (the WHATWG URL rules): it drops
    # tabs and line breaks and leading controls, and takes "\" for "/".
    for char in "\t\n\r":
        location = location.replace(char, "")
    location = location.lstrip("".join(map(chr, range(33)))).replace("\\", "/")
    parts = urlsplit(location)
    assert not location.startswith("//"), location
    assert parts.scheme in ("", "http") and parts.netloc in ("", "localhost"), location


@FUZZ
@given(
    fields=forms(
        {"email": st.one_of(st.just("admin@example.com"), st.emails())}, {"email": hostile_email}
    ),
    extras=extra_fields,
    encoding=encodings,
)
def test_reset_password_request(app, client, users, fields, extras, encoding):
    """Asking for a reset link: a form error, the 400/413 page, or the same "on its way"."""
    before = user_rows(app)
    response, sent = send_form(client, "/auth/reset_password_request", fields, encoding, extras)
    if check_form_answer(response, sent):
        assert response.headers["Location"] == "/auth/login"
    assert user_rows(app) == before


@FUZZ
@given(
    fields=forms({"password": valid_password, "password2": st.just(SAME)}),
    extras=extra_fields,
    encoding=encodings,
)
@example(fields={"password": "😀" * 128, "password2": SAME}, extras=[], encoding="multipart")
def test_reset_password(app, client, users, fields, extras, encoding):
    """Setting a new password through a real reset link: it changes only if accepted."""
    with app.app_context():
        admin = db.session.get(User, users["admin"])
        token = reset_token(admin)  # a new link each time: a used one stops working
    # The link puts the token in the session and redirects to the form.
    assert client.get(f"/auth/reset_password/{token}").status_code == 302
    before = user_rows(app)
    response, sent = send_form(
        client, "/auth/reset_password", with_password2(fields), encoding, extras
    )
    accepted = check_form_answer(response, sent)

    after = user_rows(app)
    changed = {id_ for id_ in before if after[id_] != before[id_]}
    assert changed == ({users["admin"]} if accepted else set())
    if accepted and sent.fields["password"] is not None:
        with app.app_context():
            assert db.session.get(User, users["admin"]).check_password(sent.fields["password"])


@pytest.fixture
def admin_client(client, auth, users) -> FlaskClient:
    """A client logged in as admin (once: it stays logged in for every example)."""
    assert auth.login().status_code == 302
    return client


@FUZZ
@given(
    fields=forms({"post": st.text(text_without_nul, min_size=1, max_size=POST_MAX_LENGTH)}),
    extras=extra_fields,
    encoding=encodings,
)
@example(fields={"post": "<script>alert(1)</script>"}, extras=[], encoding="urlencoded")
@example(fields={"post": "😀" * POST_MAX_LENGTH}, extras=[], encoding="urlencoded")
@example(fields={"post": "😀" * (POST_MAX_LENGTH + 1)}, extras=[], encoding="multipart")
def test_post(app, admin_client, fields, extras, encoding):
    """Posting: one new post if accepted, none otherwise; and it is shown as text."""
    before = post_count(app)
    response, sent = send_form(admin_client, "/", fields, encoding, extras)
    accepted = check_form_answer(response, sent)

    assert post_count(app) == before + accepted
    if accepted:
        stored = newest_post_body(app)
        if sent.fields["post"] is not None:
            assert stored == sent.fields["post"].strip()
        # The newest post is first on the explore page, escaped.
        assert str(escape(stored)) in admin_client.get("/explore").text


@FUZZ
@given(
    fields=forms(
        {
            "username": st.one_of(st.just("admin"), valid_username),
            "about_me": st.text(text_without_nul, max_size=ABOUT_ME_MAX_LENGTH),
        }
    ),
    extras=extra_fields,
    encoding=encodings,
)
@example(fields={"username": "admin1", "about_me": "taken"}, extras=[], encoding="urlencoded")
@example(
    fields={"username": FULL_WIDTH_ADMIN1, "about_me": "taken, in full width"},
    extras=[],
    encoding="urlencoded",
)
@example(
    fields={"username": "admin", "about_me": "é" * (ABOUT_ME_MAX_LENGTH + 1)},
    extras=[],
    encoding="multipart",
)
def test_edit_profile(app, admin_client, users, fields, extras, encoding):
    """Editing the profile: the row changes only when the form accepts, and only ours."""
    before = user_rows(app)
    response, sent = send_form(admin_client, "/edit_profile", fields, encoding, extras)
    accepted = check_form_answer(response, sent)

    after = user_rows(app)
    admin = users["admin"]
    assert {id_: after[id_] for id_ in before if id_ != admin} == {
        id_: row for id_, row in before.items() if id_ != admin
    }, "another user's row changed"
    unchanged = ("email", "password_hash")
    assert [getattr(after[admin], f) for f in unchanged] == [
        getattr(before[admin], f) for f in unchanged
    ], "email or password changed"
    if not accepted:
        assert after[admin] == before[admin]
    elif None not in sent.fields.values():
        name, about = after[admin].username, after[admin].about_me
        assert (name, about) == (stored_name(sent.fields["username"]), sent.fields["about_me"])


@FUZZ
@given(
    fields=forms(
        {
            "current_password": st.just(PASSWORD),
            "password": valid_password,
            "password2": st.just(SAME),
        }
    ),
    extras=extra_fields,
    encoding=encodings,
)
@example(
    fields={"current_password": PASSWORD, "password": "😀" * 128, "password2": SAME},
    extras=[],
    encoding="multipart",
)
def test_change_password(app, admin_client, users, fields, extras, encoding):
    """Changing the password: admin's hash changes only if the form accepts, nobody
    else's row at all; accepted, this browser stays logged in."""
    admin = users["admin"]
    before = user_rows(app)
    url = "/auth/change_password"
    response, sent = send_form(admin_client, url, with_password2(fields), encoding, extras)
    accepted = check_form_answer(response, sent)

    after = user_rows(app)
    changed = {id_ for id_ in before if after[id_] != before[id_]}
    assert changed == ({admin} if accepted else set())
    if not accepted:
        return
    assert response.headers["Location"] == "/edit_profile"
    assert after[admin]._replace(password_hash="") == before[admin]._replace(password_hash="")
    if sent.fields["password"] is not None:
        with app.app_context():
            assert db.session.get(User, admin).check_password(sent.fields["password"])
    assert pages.logged_in_as(admin_client.get("/edit_profile")) == "admin"
    # PASSWORD again, for the next example's current password. Set by hand, the new
    # hash ends this login (a login is valid only with the password it was made
    # with), so log in again, as the admin_client fixture did.
    with app.app_context():
        db.session.execute(update(User).where(User.id == admin).values(password_hash=PASSWORD_HASH))
        db.session.commit()
    login = admin_client.post("/auth/login", data={"username": "admin", "password": PASSWORD})
    assert login.status_code == 302


# Addresses admin may ask for: its own (the same, or in another case, which is allowed),
# and admin1's in the ways that all mean admin1's.
NEW_EMAILS = [
    "admin@example.com",
    "ADMIN@Example.COM",
    "admin1@example.com",
    "ADMIN1@EXAMPLE.COM",
    f"{FULL_WIDTH_ADMIN1}@example.com",
    " admin1@example.com ",
]


@FUZZ
@given(
    fields=forms(
        {
            "current_password": st.just(PASSWORD),
            "email": st.one_of(st.sampled_from(NEW_EMAILS), st.emails()),
        },
        {"email": hostile_email},
    ),
    extras=extra_fields,
    encoding=encodings,
)
@example(  # admin1's address in full width: NFKC makes it admin1's exactly
    fields={"current_password": PASSWORD, "email": f"{FULL_WIDTH_ADMIN1}@example.com"},
    extras=[],
    encoding="urlencoded",
)
@example(
    fields={"current_password": PASSWORD, "email": "é" * 64 + "@example.com"},
    extras=[],
    encoding="multipart",
)
def test_change_email(app, admin_client, users, fields, extras, encoding):
    """Changing the email address with mail off (the test config): it changes at once if
    the form accepts, and only admin's; never to an address another account has."""
    admin = users["admin"]
    before = user_rows(app)
    response, sent = send_form(admin_client, "/auth/change_email", fields, encoding, extras)
    accepted = check_form_answer(response, sent)

    after = user_rows(app)
    changed = {id_ for id_ in before if after[id_] != before[id_]}
    assert changed == ({admin} if accepted else set())
    # No two accounts share an address, whatever its case or width.
    assert len({name_key(row.email) for row in after.values()}) == len(after)
    if not accepted:
        return
    assert response.headers["Location"] == "/edit_profile"
    assert after[admin]._replace(email="") == before[admin]._replace(email="")
    if sent.fields["email"] is not None:
        assert after[admin].email == stored_name(sent.fields["email"])


@pytest.fixture
def new_account(app, users):
    """Return make() -> (client, user id): a new account for each call, logged in on a
    client of its own, with two posts and a follow each way with admin (all of which
    deleting the account must remove)."""
    numbers = itertools.count(1)

    def make() -> tuple[FlaskClient, int]:
        username = f"leaver{next(numbers)}"
        with app.app_context():
            user = add_user(username)
            add_posts(user, 2)
            admin = db.session.get(User, users["admin"])
            user.follow(admin)
            admin.follow(user)
            db.session.commit()
            user_id = user.id
        client = app.test_client()
        login = client.post("/auth/login", data={"username": username, "password": PASSWORD})
        assert login.status_code == 302
        return client, user_id

    return make


@FUZZ
@given(
    fields=forms({"current_password": st.just(PASSWORD)}),
    extras=extra_fields,
    encoding=encodings,
)
def test_delete_account(app, new_account, fields, extras, encoding):
    """Deleting an account: if the form accepts, that account goes with its posts and its
    follows, and it is logged out; otherwise nothing at all changes. Nobody else's rows
    change either way."""
    client, me = new_account()
    users_before, posts_before, follows_before = user_rows(app), post_ids(app), follow_rows(app)
    response, sent = send_form(client, "/auth/delete_account", fields, encoding, extras)
    accepted = check_form_answer(response, sent)

    if not accepted:
        assert (user_rows(app), post_ids(app)) == (users_before, posts_before)
        assert follow_rows(app) == follows_before
        assert pages.logged_in_as(client.get("/edit_profile")) is not None
        return
    assert response.headers["Location"] == "/"
    assert user_rows(app) == {id_: row for id_, row in users_before.items() if id_ != me}
    assert len(posts_before - post_ids(app)) == 2  # its own two, and only those
    assert follow_rows(app) == {row for row in follows_before if me not in row}
    assert pages.logged_in_as(client.get("/")) is None


# --- Every URL parameter, fuzzed ----------------------------------------------------------

# The pages that take ?page=, and who looks at them: admin has 15 posts, ten
# a page, so pages 1 and 2 exist on each (the anonymous "/" is the explore page).
# A search for "BY Admin" finds all 15 ("by admin", whatever the case).
SEARCH_ALL = "/search?q=BY%20Admin"
PAGED = [
    (path, logged_in)
    for path in ("/", "/index", "/explore", "/user/admin", SEARCH_ALL)
    for logged_in in (False, True)
]
# The lists of people, paged the same way: 15 people follow admin, and admin follows 15.
PEOPLE_LISTS = [
    (path, logged_in)
    for path in ("/user/admin/followers", "/user/admin/following")
    for logged_in in (False, True)
]


def with_query(path: str, query: str) -> str:
    """`path` with `query` added to the query it may have already (a search's q)."""
    return f"{path}{'&' if '?' in path else '?'}{query}"


def add_follows(user: User, count: int) -> None:
    """Make fan1..fan<count> follow `user`, and `user` follow idol1..idol<count>; the nth
    of each an hour after the one before (call inside an app context)."""
    start = now_utc() - timedelta(hours=count)
    rows = []
    for n in range(1, count + 1):
        fan, idol = add_user(f"fan{n}"), add_user(f"idol{n}")
        created = start + timedelta(hours=n)
        rows.append({"follower_id": fan.id, "followed_id": user.id, "created": created})
        rows.append({"follower_id": user.id, "followed_id": idol.id, "created": created})
    db.session.execute(insert(followers), rows)
    db.session.commit()


@pytest.fixture
def paged_clients(app, users) -> dict[bool, FlaskClient]:
    """{logged_in: client}, with 15 posts by admin, 15 followers of admin and 15 people
    admin follows (who have no posts: admin's timeline is admin's posts still)."""
    with app.app_context():
        admin = db.session.get(User, users["admin"])
        add_posts(admin, 15)
        add_follows(admin, 15)
    anonymous, admin = app.test_client(), app.test_client()
    login = admin.post("/auth/login", data={"username": "admin", "password": PASSWORD})
    assert login.status_code == 302
    return {False: anonymous, True: admin}


PER_PAGE = 10  # config.py's POSTS_PER_PAGE


class ListedPost(NamedTuple):
    """A post where a listing puts it: its cursor's two numbers, then which post it is."""

    micros: int  # its timestamp, in microseconds since 1970
    id: int
    number: int  # the n of "post n by admin"

    @property
    def position(self) -> tuple[int, int]:
        return self.micros, self.id


@pytest.fixture
def listed_posts(app, paged_clients) -> list[ListedPost]:
    """admin's posts as every listing orders them, newest first."""
    with app.app_context():
        rows = db.session.execute(select(Post.timestamp, Post.id, Post.body))
        posts = [
            ListedPost(
                micros=calendar.timegm(ts.utctimetuple()) * 1_000_000 + ts.microsecond,
                id=id_,
                number=int(body.split()[1]),
            )
            for ts, id_, body in rows
        ]
    return sorted(posts, reverse=True)


# The rules of app/pagination.py, written out plainly: what a listing must answer.


def page_number(page: str) -> int | None:
    """1 to 7 ASCII digits, from 1 to 1,000,000; None for anything else."""
    if not 1 <= len(page) <= 7 or not set(page) <= set("0123456789"):
        return None
    return int(page) if 1 <= int(page) <= 1_000_000 else None


def cursor_position(cursor: str) -> tuple[int, int] | None:
    """(microseconds, id) from "<1 to 17 ASCII digits>-<1 to 18 ASCII digits>"; else None."""
    micros, dash, post_id = cursor.partition("-")
    for digits, most in ((micros, 17), (post_id, 18)):
        if not dash or not 1 <= len(digits) <= most or not set(digits) <= set("0123456789"):
            return None
    return int(micros), int(post_id)


def expected_listing(posts, page: str | None, before: str | None, after: str | None):
    """(status, the numbers of the posts shown) for a listing of `posts` (newest first).

    "before" wins over "after"; an "after" page shows the posts nearest the cursor; an
    empty page is a 404, except page 1 (the list of nothing, or a cursor past the end).
    """
    number = page_number("1" if page is None else page)
    if number is None:
        return 404, []
    if before is not None or after is not None:
        cursor = cursor_position(before if before is not None else after)
        if cursor is None:
            return 404, []
        if before is not None:
            shown = [post for post in posts if post.position < cursor][:PER_PAGE]
        else:
            shown = [post for post in posts if post.position > cursor][-PER_PAGE:]
    else:
        shown = posts[(number - 1) * PER_PAGE : number * PER_PAGE]
    if not shown and number > 1:
        return 404, []
    return 200, [post.number for post in shown]


def expected_page_status(page: str | bytes) -> int:
    """Pages 1 and 2 exist; anything else that isn't a NUL is a page that doesn't (404)."""
    if isinstance(page, bytes):
        return 400 if b"\x00" in page else 404  # not UTF-8: never a number
    if "\x00" in page:
        return 400
    return 200 if page_number(page) in (1, 2) else 404


# Values a visitor might type, and their cousins: signs, exponents, overflow, other
# scripts' digits (str.isdigit() is True for them and for "²"; int() takes them).
NAMED_PAGES = [
    "-1", "0", "1e400", "99999999999999999999", "abc", "", " 1", "1 ", "+1", "1.0", "0x1",
    "1_0", ARABIC_INDIC_ONE, "²", FULL_WIDTH_ONE, "NaN", "inf", "3", "1000001", "0000002", "%FF",
    "00000002", "1/2", "1 2", "2 ",
]  # fmt: skip


@pytest.mark.parametrize("page", NAMED_PAGES)
def test_named_bad_pages(paged_clients, page):
    """Each of those page values, on every paged URL: a page or a 404, never a 500."""
    expected = expected_page_status(page)
    for path, logged_in in [*PAGED, *PEOPLE_LISTS]:
        response = paged_clients[logged_in].get(with_query(path, urlencode({"page": page})))
        where = f"{path}?page={page!r}, logged in: {logged_in}"
        if expected == 200:
            assert response.status_code == 200, f"{where}: {describe(response)}"
        else:
            assert response.status_code == expected, f"{where}: {describe(response)}"
            assert_error_page(response, expected)


@FUZZ
@given(
    where=st.sampled_from([*PAGED, *PEOPLE_LISTS]),
    page=st.one_of(hostile, st.integers().map(str), st.sampled_from(NAMED_PAGES)),
    junk=st.lists(st.tuples(hostile_names, hostile_text), max_size=2),
)
def test_page_parameter(paged_clients, where, page, junk):
    """Any ?page=, of any size (and any other parameter beside it): page 1 or 2, the 404
    page, or the NUL 400."""
    path, logged_in = where
    query = urlencode([("page", page), *junk], quote_via=quote)
    response = paged_clients[logged_in].get(with_query(path, query))
    event(f"{response.status_code}")
    if any("\x00" in name + value for name, value in junk):
        assert_error_page(response, 400)
        return
    expected = expected_page_status(page)
    if expected == 200:
        assert response.status_code == 200, describe(response)
    else:
        assert_error_page(response, expected)


@dataclass(frozen=True)
class Near:
    """The cursor of one of admin's posts (0, the newest, to 14), its microseconds and
    its id moved by -1, 0 or +1: the cursors the links carry, and their neighbours."""

    post: int
    micros: int
    id: int

    def text(self, posts) -> str:
        micros, post_id = posts[self.post].position
        return f"{micros + self.micros}-{post_id + self.id}"


# Cursors that look right, around each limit: 17 digits of microseconds (18 would pass
# the year 9999), 18 of id (2**63 - 1, the largest a 64-bit column holds, has 19).
EDGES = [0, 1, 9, 10**16, 10**17 - 1, 10**17, 10**18 - 1, 10**18, 2**63 - 1, 2**63, 10**19]
NAMED_CURSORS = [
    "1 2-3", "1/2-3", "1-2 3", "1-2/3", "+1-2", "1-+2", "1- 2", " 1-2", "1-2 ", "1_0-2",
    f"{ARABIC_INDIC_ONE}-{ARABIC_INDIC_ONE}", "-1", "1-", "-", "1-2-3", "1.5-2", "0x1-2",
    f"{'9' * 17}-1", f"{'9' * 18}-1", f"1-{'9' * 18}", f"1-{'9' * 19}", "00000000000000001-1",
    f"1-{10**18}", f"1-{2**63 - 1}", f"1-{2**63}",
]  # fmt: skip
named_pages = st.sampled_from(NAMED_PAGES)
# Pages 1 and 2 exist; 3 and MAX_PAGE only after a cursor, and MAX_PAGE + 1 never.
good_pages = st.sampled_from(["1", "2", "3", "1000000", "1000001"])
edge_numbers = st.one_of(st.sampled_from(EDGES), st.integers(min_value=0, max_value=10**20))
moved = st.sampled_from([0, 0, -1, 1])  # mostly the post's own cursor
near = st.builds(Near, st.integers(0, 14), moved, moved)
# Hostile values, short ones only: three parameters of 100,000 characters make slow
# examples and find nothing that one doesn't (test_page_parameter sends those).
short_hostile = st.one_of(
    st.sampled_from([text for text in SPECIALS if len(text) < 100]),
    st.text(max_size=40),
    invalid_utf8,
)


def weighted(*strategies: st.SearchStrategy) -> st.SearchStrategy:
    """A value of one of `strategies`, each as likely as its share of the list (name
    one twice to make it twice as likely; st.one_of would count it once)."""
    return st.sampled_from(strategies).flatmap(lambda strategy: strategy)


cursors = weighted(
    short_hostile,
    st.sampled_from(NAMED_CURSORS),
    st.builds("{}-{}".format, edge_numbers, edge_numbers),
    st.from_regex(r"[0-9]{1,19}-[0-9]{1,20}", fullmatch=True),  # leading zeros too
    # Three times as likely: the cursors that lead somewhere.
    near,
    near,
    near,
)


def sometimes(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """None (a parameter left out) half the time, else a value of `strategy`. (In a plain
    one_of, None would be one choice among all of `strategy`'s own: rare.)"""
    return st.booleans().flatmap(lambda present: strategy if present else st.none())


LATEST = f"{'9' * 17}-1"  # newer than every post


def posts_shown(response) -> list[int]:
    """The numbers of the posts on a listing, top to bottom."""
    return [int(n) for n in re.findall(r"post (\d+) by admin", response.text)]


@pytest.mark.parametrize("cursor", NAMED_CURSORS)
def test_named_bad_cursors(paged_clients, listed_posts, cursor):
    """Each of those cursors, as "before" and as "after", on every paged URL: the page
    the rules give (only a cursor of the right shape makes one) or the 404 page."""
    for path, logged_in in PAGED:
        for name in ("before", "after"):
            query = urlencode({name: cursor})
            response = paged_clients[logged_in].get(with_query(path, query))
            where = f"{path}?{name}={cursor!r}, logged in: {logged_in}"
            cursors = {"before": None, "after": None, name: cursor}
            status, shown = expected_listing(listed_posts, None, **cursors)
            if status == 404:
                assert_error_page(response, 404)
            else:
                assert response.status_code == 200, f"{where}: {describe(response)}"
                assert posts_shown(response) == shown, where


@settings(FUZZ, max_examples=150)
@given(
    where=st.sampled_from(PAGED),
    page=sometimes(weighted(good_pages, good_pages, short_hostile, named_pages)),
    before=sometimes(cursors),
    after=sometimes(cursors),
    junk=st.lists(st.tuples(hostile_names, short_hostile), max_size=2),
)
# Once 500s: an empty page built its "Older" link from a last post it didn't have.
@example(where=("/explore", False), page=None, before=None, after=LATEST, junk=[])
@example(where=("/", True), page=None, before="0-0", after="0-0", junk=[])
@example(where=("/user/admin", False), page="1", before="1-1", after=LATEST, junk=[])
def test_listing_parameters(paged_clients, listed_posts, where, page, before, after, junk):
    """Any ?page=, ?before= and ?after=, alone or together (and any other parameter
    beside them): exactly the page the rules give, with exactly its posts, or the 404
    page; the NUL 400 for a NUL anywhere; never a 500."""
    path, logged_in = where
    params = {"page": page, "before": before, "after": after}
    params = {
        name: value.text(listed_posts) if isinstance(value, Near) else value
        for name, value in params.items()
        if value is not None
    }
    query = urlencode([*params.items(), *junk], quote_via=quote)
    response = paged_clients[logged_in].get(with_query(path, query))
    # What the server reads: bytes that aren't UTF-8 with a replacement character.
    seen = {
        name: value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        for name, value in params.items()
    }
    junk_seen = [name + as_bytes(value).decode("utf-8", "replace") for name, value in junk]
    if any("\x00" in text for text in [*seen.values(), *junk_seen]):
        event("400: NUL")
        assert_error_page(response, 400)
        return
    status, shown = expected_listing(
        listed_posts, seen.get("page"), seen.get("before"), seen.get("after")
    )
    event(f"{status}" + (f" with {len(shown)} posts" if status == 200 else ""))
    if status == 404:
        assert_error_page(response, 404)
        return
    assert response.status_code == 200, describe(response)
    assert posts_shown(response) == shown


def sent_and_seen(params: dict, items) -> tuple[list[tuple[str, str | bytes]], dict[str, str]]:
    """The parameters given (None: left out; a Near: the cursor of one of `items`) as
    they are sent, and as the server reads them (bytes that aren't UTF-8 with a
    replacement character)."""
    sent = [
        (name, value.text(items) if isinstance(value, Near) else value)
        for name, value in params.items()
        if value is not None
    ]
    seen = {
        name: value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        for name, value in sent
    }
    return sent, seen


# --- The lists of people: ?page=, ?before= and ?after= as on the lists of posts ------------


def micros_since_1970(moment) -> int:
    return calendar.timegm(moment.utctimetuple()) * 1_000_000 + moment.microsecond


@pytest.fixture
def listed_people(app, users, paged_clients) -> dict[str, list[ListedPost]]:
    """Each list of people, newest follow first: {path: [(the follow's time, the person's
    id, the n of fan<n> or idol<n>)]}; a cursor names a person's place the same way
    a post's place: a time, then an id."""
    admin = users["admin"]
    with app.app_context():
        names = dict(db.session.execute(select(User.id, User.username)).all())
        follows = db.session.execute(
            select(followers.c.created, followers.c.follower_id, followers.c.followed_id)
        ).all()
    lists: dict[str, list[ListedPost]] = {
        "/user/admin/followers": [],
        "/user/admin/following": [],
    }
    for created, follower, followed in follows:
        path, person = (
            ("/user/admin/followers", follower)
            if followed == admin
            else ("/user/admin/following", followed)
        )
        number = int(names[person].removeprefix("fan").removeprefix("idol"))
        lists[path].append(ListedPost(micros_since_1970(created), person, number))
    return {path: sorted(people, reverse=True) for path, people in lists.items()}


def people_shown(response) -> list[int]:
    """The n of each fan<n> or idol<n> that a list of people shows, top to bottom."""
    return [int(n) for n in re.findall(r">(?:fan|idol)(\d+)</a>", response.text)]


@pytest.mark.parametrize("cursor", NAMED_CURSORS)
def test_named_bad_cursors_on_the_lists_of_people(paged_clients, listed_people, cursor):
    """Each of the named cursors, as "before" and as "after", on the lists of followers
    and of people followed: the page the rules give, or the 404 page."""
    for path, logged_in in PEOPLE_LISTS:
        for name in ("before", "after"):
            response = paged_clients[logged_in].get(with_query(path, urlencode({name: cursor})))
            where = f"{path}?{name}={cursor!r}, logged in: {logged_in}"
            cursors = {"before": None, "after": None, name: cursor}
            status, shown = expected_listing(listed_people[path], None, **cursors)
            if status == 404:
                assert_error_page(response, 404)
            else:
                assert response.status_code == 200, f"{where}: {describe(response)}"
                assert people_shown(response) == shown, where


@settings(FUZZ, max_examples=100)
@given(
    where=st.sampled_from(PEOPLE_LISTS),
    page=sometimes(weighted(good_pages, good_pages, short_hostile, named_pages)),
    before=sometimes(cursors),
    after=sometimes(cursors),
)
@example(where=PEOPLE_LISTS[0], page=None, before=None, after=LATEST)
@example(where=PEOPLE_LISTS[3], page="2", before=Near(9, 0, 0), after=None)
def test_people_list_parameters(paged_clients, listed_people, where, page, before, after):
    """Any ?page=, ?before= and ?after=, alone or together, on the lists of followers and
    of people followed: exactly the people the rules give, or the 404 page; the NUL 400
    for a NUL; never a 500."""
    path, logged_in = where
    people = listed_people[path]
    sent, seen = sent_and_seen({"page": page, "before": before, "after": after}, people)
    response = paged_clients[logged_in].get(with_query(path, urlencode(sent, quote_via=quote)))
    if any("\x00" in value for value in seen.values()):
        event("400: NUL")
        assert_error_page(response, 400)
        return
    status, shown = expected_listing(
        people, seen.get("page"), seen.get("before"), seen.get("after")
    )
    event(f"{status}" + (f" with {len(shown)} people" if status == 200 else ""))
    if status == 404:
        assert_error_page(response, 404)
        return
    assert response.status_code == 200, describe(response)
    assert people_shown(response) == shown


# --- Search: ?q=, alone and with ?page=, ?before= and ?after= ------------------------------

EMPTY_SEARCH = "Type a word or a phrase to search the posts for."
TOO_LONG_SEARCH = "Search for at most 280 characters: no post is longer."
# Characters outside ASCII whose lower case is an ASCII letter ("İ" is "i", the Kelvin
# sign "k"). PostgreSQL's ILIKE lowers them too, so "ADMİN" finds admin's posts there;
# SQLite's lower() and LIKE change A-Z only.
LOWERED_TO_ASCII = {"\u0130": "i", "\u212a": "k"}
# Searches for some, all or none of admin's posts ("post <n> by admin"): in other
# cases, with LIKE's wildcards and escape (which must find themselves only), with
# spaces around (trimmed), and in other scripts.
SEARCH_WORDS = [
    "BY Admin", "post 1", "POST 1 BY ADMIN", "5 by", "1", "Po", " admin ", "by  admin",
    "%", "_", "\\", "post%", "p_st", "post 1_", "%%%", "\u0130", "ADM\u0130N", "\u212a",
    "admin!", "ΐ", "ß", "管理员",
]  # fmt: skip
search_words = st.sampled_from(SEARCH_WORDS)


def matches(query: str, body: str) -> bool:
    """Whether the search for `query` finds a post of admin's (all ASCII): a substring,
    case aside, and every character literal."""
    if ON_POSTGRESQL:
        query = "".join(LOWERED_TO_ASCII.get(char, char) for char in query)
    ascii_lowered = "".join(char.lower() if char.isascii() else char for char in query)
    return ascii_lowered in body.lower()


def search_results(response) -> list[int]:
    """The numbers of the posts a search found, top to bottom: read from the posts
    themselves, not from the search words shown above them."""
    return [
        int(n)
        for n in re.findall(r"<article.*?<p[^>]*>post (\d+) by admin</p>", response.text, re.S)
    ]


@settings(FUZZ, max_examples=150)
@given(
    logged_in=st.booleans(),
    # Mostly words that find posts; else anything, of any size, UTF-8 or not.
    q=weighted(search_words, search_words, hostile),
    page=sometimes(weighted(good_pages, good_pages, short_hostile, named_pages)),
    before=sometimes(cursors),
    after=sometimes(cursors),
    # A second q, which the search ignores (the first one counts).
    second_q=sometimes(short_hostile),
)
@example(logged_in=False, q="", page="abc", before=None, after=None, second_q="admin")
@example(logged_in=True, q=" \t\n", page=None, before="x", after=None, second_q=None)
@example(logged_in=False, q="x" * 281, page=None, before=None, after=None, second_q=None)
@example(logged_in=False, q=f" {'a' * 280} ", page=None, before=None, after=None, second_q=None)
@example(logged_in=True, q="%", page=None, before=None, after=None, second_q=None)
@example(logged_in=True, q="post 1", page="2", before=Near(9, 0, 0), after=None, second_q=None)
@example(logged_in=False, q="ADM\u0130N", page=None, before=None, after=None, second_q=None)
@example(logged_in=False, q="post 1", page=None, before=None, after=LATEST, second_q=None)
@example(logged_in=False, q=b"\xff", page=None, before=None, after=None, second_q=None)
@example(logged_in=False, q="a\x00b", page=None, before=None, after=None, second_q=None)
def test_search_parameters(
    paged_clients, listed_posts, logged_in, q, page, before, after, second_q
):
    """Any ?q= (empty, huge, NUL, not UTF-8...), alone or with ?page=, ?before= and
    ?after=: an empty or too long search says so (and reads nothing else); any other
    shows exactly the posts that contain it, case aside, paged by the listing's rules,
    or the 404 page; a NUL anywhere is the 400 page; never a 500."""
    params = {"q": q, "page": page, "before": before, "after": after}
    sent, seen = sent_and_seen(params, listed_posts)
    if second_q is not None:
        sent.append(("q", second_q))
    url = with_query("/search", urlencode(sent, quote_via=quote))
    response = paged_clients[logged_in].get(url)
    second_seen = as_bytes(second_q or "").decode("utf-8", "replace")
    if any("\x00" in value for value in [*seen.values(), second_seen]):
        event("400: NUL")
        assert_error_page(response, 400)
        return
    query = seen["q"].strip()
    if not query or len(query) > POST_MAX_LENGTH:
        event("200: empty" if not query else "200: too long")
        assert response.status_code == 200, describe(response)
        text = pages.page_text(response)
        assert (EMPTY_SEARCH in text, TOO_LONG_SEARCH in text) == (not query, bool(query))
        assert search_results(response) == []
        return
    found = [post for post in listed_posts if matches(query, f"post {post.number} by admin")]
    status, shown = expected_listing(found, seen.get("page"), seen.get("before"), seen.get("after"))
    event(f"{status}" + (f" with {len(shown)} posts" if status == 200 else ""))
    if status == 404:
        assert_error_page(response, 404)
        return
    assert response.status_code == 200, describe(response)
    assert search_results(response) == shown
    assert ("No post contains that." in response.text) == (not shown)


# URLs with a name (or a token) in their path, and the method each takes.
NAMED_IN_PATH = [
    ("GET", "/user/{}"),
    ("POST", "/follow/{}"),
    ("POST", "/unfollow/{}"),
    ("GET", "/auth/reset_password/{}"),
    ("GET", "/user/{}/followers"),
    ("GET", "/user/{}/following"),
    ("GET", "/auth/confirm_email/{}"),
    # A post's id: only whole numbers up to MAX_ID name one (none exists here).
    ("GET", "/post/{}/delete"),
    ("POST", "/post/{}/delete"),
]
# What else might be typed for an id: signs, exponents, the largest id and one past it,
# a number too long for int() to read, other scripts' digits.
NAMED_IDS = [
    "0", "1", "-1", "+1", "1e3", "0x1", " 1", str(MAX_ID), str(MAX_ID + 1), "9" * 5000,
    ARABIC_INDIC_ONE, FULL_WIDTH_ONE, "²",
]  # fmt: skip


# (A 100,000-character token goes into the session cookie, which Werkzeug warns is more
# than a browser keeps; the browser then shows "invalid or expired link", which is right.)
# Ten examples per URL, or near enough.
@settings(FUZZ, max_examples=10 * len(NAMED_IN_PATH))
@given(
    route=st.sampled_from(NAMED_IN_PATH),
    name=st.one_of(
        hostile,
        st.sampled_from(["admin1", "ADMIN1", FULL_WIDTH_ADMIN1, ".", ".."]),
        st.sampled_from(NAMED_IDS),
    ),
    logged_in=st.booleans(),
)
@pytest.mark.filterwarnings("ignore:The 'session' cookie is too large")
def test_names_in_the_path(app, users, route, name, logged_in):
    """A hostile name in a URL's path: a page, a redirect, a 404 or the NUL 400."""
    client = app.test_client()
    if logged_in:
        client.post("/auth/login", data={"username": "admin", "password": PASSWORD})
    method, template = route
    # In a path, a name must be percent-encoded ("/" included, or it splits the path).
    path = template.format(quote(name, safe=""))
    response = client.open(path, method=method, follow_redirects=method == "GET")
    event(f"{method} {template}: {response.status_code}")
    if b"\x00" in as_bytes(name):
        assert_error_page(response, 400)
    else:
        check_page_answer(response, allowed=(200, 302))


# Deleting a post: an id in the path, and where to go back to afterwards (`next`).

# `next` values that are plainly pages of this site: the redirect goes exactly there.
ON_SITE = ["/", "/explore", "/user/admin?page=2", "/search?q=100%25", "/user/a%20b"]


def post_id_in_path(segment: str) -> int | None:
    """The post id that /post/<segment>/delete names, or None (the 404 page).

    Werkzeug's int converter takes any decimal digits, other scripts' too (as
    int() does: "\u0661" is 1), up to the route's max, MAX_ID; a number too long
    for int() to read names nothing either.
    """
    if not segment or not all(char.isdecimal() for char in segment):
        return None
    try:
        number = int(segment)
    except ValueError:  # more than int()'s 4,300 digits
        return None
    return number if number <= MAX_ID else None


def post_author(app, post_id: int) -> int | None:
    """The id of the post's author, or None if there is no such post."""
    with app.app_context():
        return db.session.scalar(select(Post.user_id).where(Post.id == post_id))


def cancel_link(response) -> str:
    """Where the confirm page's Cancel button leads, as the browser reads its href."""
    match = re.search(r'href="([^"]*)">Cancel</a>', response.text)
    assert match, describe(response)
    return pages.page_text(match.group(1))


@pytest.fixture
def post_targets(app, users) -> dict[str, int]:
    """admin1's post, which admin may not delete, and the id of a post deleted already."""
    with app.app_context():
        admin1 = db.session.get(User, users["admin1"])
        theirs, gone = add_posts(admin1, 2)
        db.session.delete(gone)
        db.session.commit()
        return {"theirs": theirs.id, "gone": gone.id}


post_targets_by_name = st.sampled_from(["mine", "theirs", "gone"])


@settings(FUZZ, max_examples=80)
@given(
    # Mostly ids of real posts (three times as likely), else anything.
    target=weighted(
        post_targets_by_name,
        post_targets_by_name,
        post_targets_by_name,
        st.sampled_from(NAMED_IDS),
        short_hostile,
    ),
    method=st.sampled_from(["GET", "POST"]),
    next_url=sometimes(
        st.one_of(st.sampled_from(ON_SITE), st.sampled_from(REDIRECT_TRICKS), hostile_text)
    ),
    in_form=st.booleans(),
)
@example(target="theirs", method="POST", next_url="/explore", in_form=True)
@example(target="mine", method="POST", next_url="//evil.example", in_form=True)
@example(target="gone", method="GET", next_url="/user/admin?page=2", in_form=False)
@example(target=str(MAX_ID + 1), method="GET", next_url=None, in_form=False)
def test_delete_post_parameters(
    app, admin_client, users, post_targets, target, method, next_url, in_form
):
    """Deleting a post, with any id in the path and any `next` (in the query string, or
    in the form as the confirm page posts it): admin's own post is asked about (GET) or
    deleted (POST); someone else's is the 403 page; one that isn't there sends admin back
    saying so; a bad id is the 404 page, a NUL the 400 page. Back is always a page of this
    site, and no other post is ever lost."""
    with app.app_context():
        mine = add_posts(db.session.get(User, users["admin"]), 1)[0].id
    ids = {"mine": mine, **post_targets}
    segment = str(ids[target]) if target in ids else target
    in_form = in_form and method == "POST" and next_url is not None
    query = "" if next_url is None or in_form else f"?next={quote(next_url, safe='')}"
    url = f"/post/{quote(segment, safe='')}/delete{query}"
    seen = as_bytes(segment).decode("utf-8", "replace")  # as the server decodes the path
    post_id = post_id_in_path(seen)
    author = None if post_id is None else post_author(app, post_id)  # before it is deleted
    before = post_ids(app)
    response = admin_client.open(url, method=method, data={"next": next_url} if in_form else None)

    if "\x00" in seen + (next_url or ""):
        event("400: NUL")
        assert_error_page(response, 400)
        assert post_ids(app) == before
        return
    if post_id is None:
        event("404: no id")
        assert_error_page(response, 404)
    elif author not in (None, users["admin"]):
        event("403: someone else's")
        assert_error_page(response, 403)
    elif author is not None and method == "GET":
        event("200: the confirm page")
        assert response.status_code == 200, describe(response)
        assert h1(response) == "Delete this post?"
        back = cancel_link(response)
    else:
        event("302: deleted" if author else "302: not there")
        assert response.status_code == 302, describe(response)
        back = response.headers["Location"]
        with admin_client.session_transaction() as session:
            # Taken, so that the next example's page doesn't show them.
            flashed = session.pop("_flashes", [])
        if author:
            assert flashed == [("success", "Your post has been deleted.")]
        else:
            message = "That post no longer exists. It may have been deleted already."
            assert flashed == [("info", message)]
    if response.status_code in (200, 302):
        assert_on_this_site(back)
        if next_url is None or next_url in ON_SITE:
            assert back == (next_url or "/")
    deleted = {post_id} if author and method == "POST" and response.status_code == 302 else set()
    assert post_ids(app) == before - deleted


# --- Too large: the 413 page ------------------------------------------------------------------

# Every URL that takes a POST, and whether it needs a logged-in user.
POST_URLS = [
    ("/auth/login", False),
    ("/auth/register", False),
    ("/auth/reset_password_request", False),
    ("/auth/reset_password", False),
    ("/", True),
    ("/index", True),
    ("/edit_profile", True),
    ("/follow/admin1", True),
    ("/unfollow/admin1", True),
    ("/auth/logout", True),
    ("/auth/change_password", True),
    ("/auth/change_email", True),
    ("/auth/confirm_email", False),
    ("/auth/delete_account", True),
    ("/post/1/delete", True),
]


def body_of_size(size: int) -> bytes:
    """A urlencoded body of exactly `size` bytes."""
    return b"post=" + b"x" * (size - len(b"post="))


@pytest.mark.parametrize(("url", "logged_in"), POST_URLS)
def test_a_body_over_the_limit_gets_the_413_page(make_app, url, logged_in):
    """One byte over MAX_CONTENT_LENGTH: the 413 page; at the limit: not a 413."""
    app = make_app(MAX_CONTENT_LENGTH=1000, RATELIMIT_ENABLED=False, PROPAGATE_EXCEPTIONS=False)
    with app.app_context():
        add_user("admin")
        add_user("admin1")
    client = app.test_client()
    if logged_in:
        client.post("/auth/login", data={"username": "admin", "password": PASSWORD})

    response = client.post(url, data=body_of_size(1001), content_type=FORM)
    assert_error_page(response, 413)
    assert "What you sent is too large." in response.text
    # multipart is counted the same way, before it is parsed.
    files = {"post": "x" * 1000}
    assert_error_page(client.post(url, data=files, content_type="multipart/form-data"), 413)
    assert client.post(url, data=body_of_size(1000), content_type=FORM).status_code != 413


def test_the_default_limit_is_one_mebibyte(app, client):
    """At the default MAX_CONTENT_LENGTH (1 MiB): 1 MiB is read (and refused by the
    form), 1 MiB + 1 byte is the 413 page."""
    assert app.config["MAX_CONTENT_LENGTH"] == MAX_CONTENT_LENGTH
    url = "/auth/register"
    at_limit = client.post(url, data=body_of_size(MAX_CONTENT_LENGTH), content_type=FORM)
    assert at_limit.status_code == 200, describe(at_limit)
    # Read whole: a "post" field the form doesn't have, and none of the ones it has.
    fields = ["username", "email", "password", "password2"]
    assert form_errors(at_limit) == [(field, REQUIRED) for field in fields]
    over = client.post(url, data=body_of_size(MAX_CONTENT_LENGTH + 1), content_type=FORM)
    assert_error_page(over, 413)


def test_a_multipart_field_over_the_form_memory_limit_gets_the_413_page(client):
    """Under 1 MiB in all, but one text field over Flask's MAX_FORM_MEMORY_SIZE: 413 too."""
    data = {"username": "x" * (MAX_FORM_MEMORY_SIZE + 1), "password": "x"}
    response = client.post("/auth/login", data=data, content_type="multipart/form-data")
    assert_error_page(response, 413)


# --- User content is text, never markup ---------------------------------------------------

PAYLOADS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "'><svg onload=alert(1)>",
    "</p></article><h1>fake</h1>",
]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_posts_and_about_me_are_shown_as_text(app, admin_client, users, payload):
    """Markup in a post or an about-me shows as text on every page that shows it."""
    post = f"look: {payload}"
    assert admin_client.post("/", data={"post": post}).status_code == 302
    about_me = f"me: {payload}"
    profile = {"username": "admin", "about_me": about_me}
    assert admin_client.post("/edit_profile", data=profile).status_code == 302

    for path in ("/", "/index", "/explore", "/user/admin"):
        page = admin_client.get(path).text
        assert str(escape(post)) in page, path
        assert payload not in page, path
    assert str(escape(about_me)) in admin_client.get("/user/admin").text


# Markup without a "/": a name with one has no profile URL (the URL rule's
# <username> stops at "/"), which isn't what this test is about.
NAME_PAYLOADS = ["<img src=x onerror=alert(1)>", '"><svg onload=alert(1)>', "<b title='x'>b"]


@pytest.mark.parametrize("payload", NAME_PAYLOADS)
def test_a_username_with_markup_is_shown_as_text(app, admin_client, users, payload):
    """The forms refuse such a name, but one stored by other means (an older version, a
    script, a bulk import) must still show as text: in the profile, in the author of a
    post, in the avatar's label and in the flash after following."""
    with app.app_context():
        add_posts(add_user(payload, email="markup@example.com"), 1)
    profile_url = f"/user/{quote(payload, safe='')}"
    pages = {
        "explore": admin_client.get("/explore").text,
        "profile": admin_client.get(profile_url).text,
        "followed": admin_client.post(
            f"/follow/{quote(payload, safe='')}", follow_redirects=True
        ).text,
        "timeline": admin_client.get("/").text,  # admin now follows them
    }
    for name, page in pages.items():
        assert str(escape(payload)) in page, name
        assert payload not in page, name


@FUZZ
@given(
    before=st.text(max_size=50),
    payload=st.sampled_from([*PAYLOADS, "{{ 7*7 }}", "&lt;already escaped&gt;"]),
    after=st.text(max_size=50),
)
def test_any_accepted_post_is_shown_exactly_as_typed(app, admin_client, before, payload, after):
    """Whatever text surrounds the markup, the page shows the post escaped, character for
    character: no markup, no template evaluated ("{{ 7*7 }}" stays, no 49), no entity
    decoded ("&lt;" shows as "&lt;")."""
    body = before + payload + after
    response = admin_client.post("/", data={"post": body})
    if response.status_code != 302:  # refused, e.g. NUL or too long: not this test's point
        assert response.status_code in (200, 400)
        return
    page = admin_client.get("/explore").text
    assert str(escape(body.strip())) in page
    if payload in PAYLOADS:
        assert payload not in page


# --- PostgreSQL's limits: a form error or a 400, never a DataError ---------------------------

ASCII_EMAIL_254 = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"
NEW_PASSWORD = {"password": PASSWORD, "password2": PASSWORD}
# What a field says one character past its limit, word for word.
NAME_LENGTH = "Field must be between 3 and 64 characters long."
NEW_PASSWORD_LENGTH = "Field must be between 8 and 128 characters long."
EMAIL_TOO_LONG = [  # an address that long isn't a valid one either
    ("email", "Field cannot be longer than 254 characters."),
    ("email", "Please enter a valid email address."),
]
# (Not also "That isn't your current password.": a password that long is never hashed.)
CURRENT_PASSWORD_TOO_LONG = [("current_password", "Field cannot be longer than 128 characters.")]


@dataclass(frozen=True)
class FieldAtItsLimit:
    """One field of one form, and what it must answer at its column's limit.

    `longest` is the longest value the field accepts (the form's limit and the
    column's are the same); `rest` fills the other fields validly. One character
    more must get `too_long`, the form's errors as (field, message); None for a
    field without a length limit (a checkbox: only its NUL is tested).

    A current password can't be right at its longest (the account's is PASSWORD):
    `never_right` is what the form says to it instead, with no length error.
    """

    name: str
    url: str
    field: str
    longest: str
    rest: dict[str, str]
    too_long: list[tuple[str, str]] | None
    logged_in: bool = False
    never_right: list[tuple[str, str]] | None = None

    def post(self, client: FlaskClient, value: str):
        """POST the form with `value` in the field (and, for a new password, in its
        repetition too: the same mistake typed twice, so that only `value` is wrong)."""
        rest = self.rest
        if self.field == "password" and "password2" in rest:
            rest = {**rest, "password2": value}
        return client.post(self.url, data={**rest, self.field: value})


EVERY_FIELD = [
    FieldAtItsLimit(
        "register username", "/auth/register", "username", "é" * 64,
        rest={"email": "new@example.com", **NEW_PASSWORD},
        too_long=[("username", NAME_LENGTH)],
    ),
    FieldAtItsLimit(
        "register email", "/auth/register", "email", ASCII_EMAIL_254,
        rest={"username": "newcomer", **NEW_PASSWORD},
        too_long=EMAIL_TOO_LONG,
    ),
    FieldAtItsLimit(
        "register password", "/auth/register", "password", "😀" * 128,
        rest={"username": "newcomer", "email": "new@example.com", "password2": "😀" * 128},
        too_long=[("password", NEW_PASSWORD_LENGTH)],
    ),
    FieldAtItsLimit(
        "login username", "/auth/login", "username", "é" * 64,
        rest={"password": "x"},
        too_long=[("username", "Field cannot be longer than 64 characters.")],
    ),
    FieldAtItsLimit(
        "login password", "/auth/login", "password", "😀" * 128,
        rest={"username": "admin"},
        too_long=[("password", "Field cannot be longer than 128 characters.")],
    ),
    FieldAtItsLimit(
        "login remember_me", "/auth/login", "remember_me", "y",
        rest={"username": "admin", "password": "x"},
        too_long=None,
    ),
    FieldAtItsLimit(
        "reset request email", "/auth/reset_password_request", "email", ASCII_EMAIL_254,
        rest={},
        too_long=EMAIL_TOO_LONG,
    ),
    FieldAtItsLimit(
        "reset password", "/auth/reset_password", "password", "😀" * 128,
        rest={"password2": "😀" * 128},
        too_long=[("password", NEW_PASSWORD_LENGTH)],
    ),
    FieldAtItsLimit(
        "post", "/", "post", "😀" * POST_MAX_LENGTH,
        rest={},
        too_long=[("post", "Field cannot be longer than 280 characters.")],
        logged_in=True,
    ),
    FieldAtItsLimit(
        "edit username", "/edit_profile", "username", "ΐ" * 64,
        rest={"about_me": ""},
        too_long=[("username", NAME_LENGTH)],
        logged_in=True,
    ),
    FieldAtItsLimit(
        "edit about_me", "/edit_profile", "about_me", "😀" * ABOUT_ME_MAX_LENGTH,
        rest={"username": "admin"},
        too_long=[("about_me", "Field cannot be longer than 280 characters.")],
        logged_in=True,
    ),
    FieldAtItsLimit(
        "change password current_password", "/auth/change_password", "current_password",
        "😀" * 128,
        rest=NEW_PASSWORD,
        too_long=CURRENT_PASSWORD_TOO_LONG,
        logged_in=True,
        never_right=[("current_password", WRONG_PASSWORD)],
    ),
    FieldAtItsLimit(
        "change password password", "/auth/change_password", "password", "😀" * 128,
        rest={"current_password": PASSWORD, "password2": "😀" * 128},
        too_long=[("password", NEW_PASSWORD_LENGTH)],
        logged_in=True,
    ),
    FieldAtItsLimit(
        "change email current_password", "/auth/change_email", "current_password", "😀" * 128,
        rest={"email": "new@example.com"},
        too_long=CURRENT_PASSWORD_TOO_LONG,
        logged_in=True,
        never_right=[("current_password", WRONG_PASSWORD)],
    ),
    FieldAtItsLimit(
        "change email email", "/auth/change_email", "email", ASCII_EMAIL_254,
        rest={"current_password": PASSWORD},
        too_long=EMAIL_TOO_LONG,
        logged_in=True,
    ),
    FieldAtItsLimit(
        "delete account current_password", "/auth/delete_account", "current_password",
        "😀" * 128,
        rest={},
        too_long=CURRENT_PASSWORD_TOO_LONG,
        logged_in=True,
        never_right=[("current_password", WRONG_PASSWORD)],
    ),
]  # fmt: skip
LIMITED_FIELDS = [case for case in EVERY_FIELD if case.too_long is not None]
# Forms whose longest values are still refused as a whole (a wrong password): checked
# for the absence of a length error instead.
NEVER_ACCEPTED = {"/auth/login"}


def by_name(case) -> str:
    """A table row's name, as pytest shows it: test_x[register username]."""
    return case.name


@pytest.fixture
def form_client(app, users):
    """Return client(url, logged_in): a client ready to post to `url`."""

    def prepare(url: str, logged_in: bool) -> FlaskClient:
        client = app.test_client()
        if logged_in:
            client.post("/auth/login", data={"username": "admin", "password": PASSWORD})
        if url == "/auth/reset_password":
            with app.app_context():
                token = reset_token(db.session.get(User, users["admin"]))
            client.get(f"/auth/reset_password/{token}")
        return client

    return prepare


@pytest.mark.parametrize("case", LIMITED_FIELDS, ids=by_name)
def test_one_character_too_many_is_a_form_error(app, form_client, case: FieldAtItsLimit):
    """One character over the column's length: the form's error under that field (not
    PostgreSQL's DataError, a 500), on both databases; and nothing is written."""
    client = form_client(case.url, case.logged_in)
    before, posts = user_rows(app), post_count(app)
    response = case.post(client, case.longest + case.longest[-1])

    assert response.status_code == 200, describe(response)
    assert form_errors(response) == case.too_long
    assert (user_rows(app), post_count(app)) == (before, posts)


@pytest.mark.parametrize("case", EVERY_FIELD, ids=by_name)
def test_a_nul_in_any_field_is_the_400_page(app, form_client, case: FieldAtItsLimit):
    """A NUL in an otherwise valid value: the 400 page that says so (PostgreSQL can't
    store it), on both databases; and nothing is written."""
    client = form_client(case.url, case.logged_in)
    before, posts = user_rows(app), post_count(app)
    response = case.post(client, case.longest[:3] + "\x00" + case.longest[3:])

    assert_error_page(response, 400)
    assert NUL_MESSAGE in response.text
    assert (user_rows(app), post_count(app)) == (before, posts)


@pytest.mark.parametrize("case", EVERY_FIELD, ids=by_name)
def test_every_field_accepts_its_longest_value(app, form_client, case: FieldAtItsLimit):
    """At exactly the limit, in characters of up to four bytes: accepted and stored whole
    (PostgreSQL's varchar(n) counts characters, as the forms do, not bytes)."""
    response = case.post(form_client(case.url, case.logged_in), case.longest)
    if case.url in NEVER_ACCEPTED:
        # The wrong password, and no error under any field.
        assert response.status_code == 200, describe(response)
        assert (form_errors(response), flashes(response)) == ([], [INVALID_LOGIN])
        return
    if case.never_right is not None:
        # The wrong current password, and no length error.
        assert response.status_code == 200, describe(response)
        assert form_errors(response) == case.never_right
        return
    assert response.status_code == 302, describe(response)
    if case.url != "/auth/reset_password_request":  # the one form that stores nothing
        assert stored(app, case.longest), f"{case.longest[:10]!r}... is not in the database"


def stored(app, value: str) -> bool:
    """Is `value` in the database, as a text column or as a user's password?"""
    with app.app_context():
        texts = [User.username, User.email, User.about_me, Post.body]
        if any(db.session.scalar(select(column).where(column == value)) for column in texts):
            return True
        return any(user.check_password(value) for user in db.session.scalars(select(User)))


def test_postgresql_really_refuses_these(app):
    """Why the tests above matter: on PostgreSQL the database itself refuses a string one
    over its column and a NUL (a 500, if a form let them through); SQLite stores both."""
    too_long = "x" * (USERNAME_MAX_LENGTH + 1)
    for n, username in enumerate([too_long, "a\x00b"]):
        # Core, not the ORM: straight to the database, past every check of ours.
        email = f"canary{n}@example.com"
        row = {"username": username, "username_key": f"canary{n}", "email": email}
        row |= {"email_key": email, "password_hash": "x", "about_me": ""}
        with app.app_context():
            if ON_POSTGRESQL:
                with pytest.raises(DataError):
                    db.session.execute(insert(User).values(row))
                db.session.rollback()
            else:
                db.session.execute(insert(User).values(row))
                db.session.commit()
                stored = db.session.scalar(select(User.username).filter_by(email=email))
                assert stored == username  # as long, and with its NUL: no error at all


# --- Rate limits: a 4xx page too ----------------------------------------------------------


def test_too_many_hostile_logins_get_the_429_page(make_app):
    """With the limits on, hostile logins are counted like any other failure and end in
    the 429 page: a 4xx in the site's layout, never a 500."""
    app = make_app(
        AUTH_RATE_LIMIT_PER_CLIENT="3 per minute",
        AUTH_RATE_LIMIT_PER_ACCOUNT="3 per minute",
        PROPAGATE_EXCEPTIONS=False,
    )
    client = app.test_client()
    names = ["'; DROP TABLE user; --", "<script>", "\u202egnp.exe", "😀" * 100]
    statuses = [
        client.post("/auth/login", data={"username": name, "password": "x"}).status_code
        for name in names
    ]
    assert statuses == [200, 200, 200, 429]
    response = client.post("/auth/login", data={"username": "x" * 100_000, "password": "x"})
    assert_error_page(response, 429)


def test_too_many_hostile_password_checks_get_the_429_page(make_app):
    """The three forms that ask a logged-in user for their password share one count:
    hostile wrong passwords, spread over them, end in the 429 page (one too long to be
    anyone's password is refused without counting), and the account is still there,
    its password unchanged."""
    app = make_app(
        AUTH_RATE_LIMIT_PER_CLIENT="3 per minute",
        AUTH_RATE_LIMIT_PER_ACCOUNT="3 per minute",
        PROPAGATE_EXCEPTIONS=False,
    )
    with app.app_context():
        add_user("admin")
    client = app.test_client()
    assert (
        client.post("/auth/login", data={"username": "admin", "password": PASSWORD}).status_code
        == 302
    )
    before = user_rows(app)
    attempts = [
        ("/auth/change_password", {"current_password": "'; DROP TABLE user; --", **NEW_PASSWORD}),
        ("/auth/change_email", {"current_password": "😀" * 129, "email": "new@example.com"}),
        ("/auth/change_email", {"current_password": "<script>", "email": "new@example.com"}),
        ("/auth/delete_account", {"current_password": "\u202egnp.exe"}),
        ("/auth/delete_account", {"current_password": PASSWORD}),  # too late, even right
    ]
    statuses = [client.post(url, data=fields).status_code for url, fields in attempts]
    assert statuses == [200, 200, 200, 200, 429]
    response = client.post("/auth/change_password", data={"current_password": "x" * 100_000})
    assert_error_page(response, 429)
    assert user_rows(app) == before


# --- Inputs these tests once found to be 500s (see the module docstring) --------------------


@dataclass(frozen=True)
class OddBody:
    """A form posted in a shape no browser sends, and the fields it must come back
    saying are required (the others filled validly, or not sent)."""

    name: str
    url: str
    body: dict | str  # fields, None where the field is sent as a file; or a JSON text
    required: list[str]
    logged_in: bool = False


# A text field sent as a *file* part of a multipart body. Flask-WTF reads
# request.files together with request.form, so the field's data was a
# FileStorage, and the field's filter or validator (stored_name(), str.strip(),
# len()) raised a TypeError; app.forms.BaseForm reads the form body only.
# The file's field is empty, as if missing.
FILE_IN_A_TEXT_FIELD = [
    OddBody("login", "/auth/login", {"username": None, "password": "x"}, ["username"]),
    OddBody(
        "register", "/auth/register",
        {"username": None, "email": "a@example.com", **NEW_PASSWORD}, ["username"],
    ),
    OddBody("reset request", "/auth/reset_password_request", {"email": None}, ["email"]),
    OddBody(
        "reset password", "/auth/reset_password",
        {"password": None, "password2": "x"}, ["password"],
    ),
    OddBody("post", "/", {"post": None}, ["post"], logged_in=True),
    OddBody(
        "edit profile", "/edit_profile",
        {"username": None, "about_me": "x"}, ["username"], logged_in=True,
    ),
    OddBody(
        "change password", "/auth/change_password",
        {"current_password": None, **NEW_PASSWORD}, ["current_password"], logged_in=True,
    ),
    OddBody(
        "change email", "/auth/change_email",
        {"current_password": PASSWORD, "email": None}, ["email"], logged_in=True,
    ),
    OddBody(
        "delete account", "/auth/delete_account",
        {"current_password": None}, ["current_password"], logged_in=True,
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", FILE_IN_A_TEXT_FIELD, ids=by_name)
def test_a_file_in_a_text_field_is_a_form_error(form_client, case: OddBody):
    """A file where text belongs: the form again, saying that the field is required."""
    data = {
        name: (BytesIO(b"admin"), "a.txt") if value is None else value
        for name, value in case.body.items()
    }
    client = form_client(case.url, case.logged_in)
    response = client.post(case.url, data=data, content_type="multipart/form-data")
    assert response.status_code == 200, describe(response)
    errors = [(field, REQUIRED) for field in case.required]
    if case.url == "/auth/reset_password":  # "x" doesn't repeat the (missing) password
        errors.append(("password2", "The passwords don't match."))
    assert form_errors(response) == errors


# JSON bodies. Flask-WTF fills a form from a JSON body too
# (ImmutableMultiDict(request.get_json())). Values that aren't strings crashed
# the filters, a body that isn't an object crashed the MultiDict, and strings
# in it were never seen by the NUL guard (app/input_guard.py reads
# request.form only): on PostgreSQL a NUL in a post was a DataError.
# app.forms.BaseForm reads the form body only: a JSON body is an empty form.
JSON_BODIES = [
    OddBody(
        "a number for a name", "/auth/login",
        '{"username": 123, "password": "x"}', ["username", "password"],
    ),
    OddBody(
        "an object for a name", "/auth/login",
        '{"username": {"a": 1}, "password": "x"}', ["username", "password"],
    ),
    OddBody(
        "a list, not an object", "/auth/register",
        "[1, 2]", ["username", "email", "password", "password2"],
    ),
    OddBody(
        "a string, not an object", "/auth/reset_password_request",
        '"a@example.com"', ["email"],
    ),
    OddBody("a NUL in a post", "/", '{"post": "a\\u0000b"}', ["post"], logged_in=True),
    OddBody(
        "a NUL in about_me", "/edit_profile",
        '{"username": "admin", "about_me": "a\\u0000b"}', ["username"], logged_in=True,
    ),
    OddBody(
        "a NUL in a new address", "/auth/change_email",
        f'{{"current_password": "{PASSWORD}", "email": "a\\u0000@example.com"}}',
        ["current_password", "email"], logged_in=True,
    ),
    OddBody(
        "a number for the current password", "/auth/delete_account",
        '{"current_password": 123}', ["current_password"], logged_in=True,
    ),
    OddBody(
        "a list for a new password", "/auth/change_password",
        f'{{"current_password": "{PASSWORD}", "password": ["x"], "password2": ["x"]}}',
        ["current_password", "password", "password2"], logged_in=True,
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", JSON_BODIES, ids=by_name)
def test_a_json_body_is_read_as_an_empty_form(app, form_client, case: OddBody):
    """A JSON body, from a client that isn't a browser: the form again, every field of it
    required; never a 500, and nothing written (with a NUL, nothing at all)."""
    client = form_client(case.url, case.logged_in)
    before, posts = user_rows(app), post_count(app)
    response = client.post(case.url, data=case.body, content_type="application/json")
    assert response.status_code == 200, describe(response)
    assert form_errors(response) == [(field, REQUIRED) for field in case.required]
    assert (user_rows(app), post_count(app)) == (before, posts)


@pytest.mark.parametrize("referer", ["http://[", "http://[not-an-ip]/user/admin"])
@pytest.mark.parametrize("url", ["/follow/admin", "/unfollow/admin"])
def test_a_malformed_referer_sends_a_visitor_to_log_in(client, users, url, referer):
    """Not logged in, with a Referer that isn't a URL: the login page, as without one."""
    response = client.post(url, headers={"Referer": referer})
    assert response.status_code == 302, describe(response)
    assert urlsplit(response.headers["Location"]).path == "/auth/login"


@pytest.mark.parametrize("query", ["page=\xff", "next=\xc3", "page=2&x=\xe9"])
def test_raw_bytes_in_the_query_string_get_the_400_page(client, query):
    """WSGI hands the app the query string's bytes as latin-1 text (PEP 3333). Bytes
    that aren't UTF-8 can't be read as the text of a parameter: a request we can't
    understand, the 400 page (gunicorn refuses them itself; other servers pass them on)."""
    response = client.get("/explore", environ_overrides={"QUERY_STRING": query})
    assert_error_page(response, 400)
    assert "The request could not be understood." in response.text


def test_the_same_bytes_percent_encoded_are_a_page_that_does_not_exist(client):
    """Percent-encoded, as browsers send them, they are read (with a replacement
    character for each byte that isn't UTF-8): a page "\ufffd", which doesn't exist."""
    response = client.get("/explore?page=%FF")
    assert_error_page(response, 404)

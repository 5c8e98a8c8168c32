"""A form refused by the CSRF check says why in the app's log (app/errors.py,
`handle_csrf_error`), in the real log file.

One INFO line per refused request, with the request's id and particulars as
every line has them, giving Flask-WTF's reason and, for the checks it makes
over HTTPS, the two origins it compared: the Referer's and the request's. A
proxy that forwards the host without its port fails every form on a port
other than 443, and that line is how an admin finds out. Never the token,
the session cookie, or what a Referer holds beyond its origin (a reset link's
path holds a token). The visitor's page is the same whatever the reason.
"""

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

import app.errors
from app.logger import init_logger
from tests.helpers import source_line
from tests.pages import CSRF_TOKEN, csrf_token

pytestmark = pytest.mark.usefixtures("restore_logging")

SITE = "https://blog.example.com"
LOGIN = "/auth/login"
FIELDS = {"username": "alice", "password": "a-password"}
LOG_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO: (?P<message>.*) "
    r"\[in (?P<source>[^\]]*)\] \[request (?P<request_id>\w+) (?P<request>[^\]]*)\]"
)
PAGE_TITLE = "Bad request"
PAGE_MESSAGE = (
    "The form has expired or was sent from another page. Please go back, reload the page "
    "and try again."
)


@pytest.fixture
def log_file(tmp_path) -> Path:
    return tmp_path / "logs" / "blog.log"


@pytest.fixture
def csrf_app(make_app, log_file) -> Flask:
    """An app that checks CSRF tokens and logs to `log_file`, as in production."""
    app = make_app(WTF_CSRF_ENABLED=True, LOG_DIR=str(log_file.parent))
    init_logger(app)
    return app


def logged_lines(log_file: Path, request_id: str) -> list[dict[str, str]]:
    """Every line the log holds for `request_id`, read into its parts."""
    found = []
    for line in log_file.read_text(encoding="utf-8").splitlines():
        match = LOG_LINE.fullmatch(line)
        if match and match["request_id"] == request_id:
            found.append(match.groupdict())
        else:
            assert f"[request {request_id} " not in line, line
    return found


def refusal_logged(message: str, path: str = LOGIN) -> list[dict[str, str]]:
    """The one line a refusal of a POST to `path` leaves, its id left to compare."""
    line = source_line(app.errors.__file__, "current_app.logger.info(")
    return [
        {
            "message": f"Form refused by the CSRF check: {message}",
            "source": f"{app.errors.__file__}:{line}",
            "request": f"POST {path} from 127.0.0.1 user -",
        }
    ]


def without_id(lines: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{key: value for key, value in line.items() if key != "request_id"} for line in lines]


def token_and_client(
    csrf_app: Flask, base_url: str = "http://localhost"
) -> tuple[str, FlaskClient]:
    """A client that has shown the login form, and the token the form gave it."""
    client = csrf_app.test_client()
    return csrf_token(client.get(LOGIN, base_url=base_url)), client


def refused_page(response) -> str:
    """The page, its request id and CSRF tokens blanked: what differs between requests."""
    assert response.status_code == 400, response.text
    page = response.text.replace(response.headers["X-Request-ID"], "")
    return CSRF_TOKEN.sub(lambda match: match[0].replace(match[1], ""), page)


# --- Each reason, in the log --------------------------------------------------------------


def test_a_missing_token(csrf_app, log_file):
    response = csrf_app.test_client().post(LOGIN, data=FIELDS)
    lines = logged_lines(log_file, response.headers["X-Request-ID"])
    assert without_id(lines) == refusal_logged(
        "The CSRF token is missing. (Referer none, request to http://localhost)"
    )


def test_a_token_that_is_not_one(csrf_app, log_file):
    _, client = token_and_client(csrf_app)
    response = client.post(LOGIN, data={**FIELDS, "csrf_token": "not-a-token-at-all"})
    lines = logged_lines(log_file, response.headers["X-Request-ID"])
    assert without_id(lines) == refusal_logged(
        "The CSRF token is invalid. (Referer none, request to http://localhost)"
    )
    assert "not-a-token-at-all" not in log_file.read_text()


def test_a_token_without_its_session(csrf_app, log_file):
    """The session cookie didn't come back: what a Secure cookie over plain HTTP does."""
    token, _ = token_and_client(csrf_app)
    response = csrf_app.test_client().post(LOGIN, data={**FIELDS, "csrf_token": token})
    lines = logged_lines(log_file, response.headers["X-Request-ID"])
    assert without_id(lines) == refusal_logged(
        "The CSRF session token is missing. (Referer none, request to http://localhost)"
    )
    assert token not in log_file.read_text()


def test_another_sessions_token(csrf_app, log_file):
    theirs, _ = token_and_client(csrf_app)
    _, client = token_and_client(csrf_app)
    response = client.post(LOGIN, data={**FIELDS, "csrf_token": theirs})
    lines = logged_lines(log_file, response.headers["X-Request-ID"])
    assert without_id(lines) == refusal_logged(
        "The CSRF tokens do not match. (Referer none, request to http://localhost)"
    )
    session_cookie = client.get_cookie("session").value
    assert theirs not in log_file.read_text()
    assert session_cookie not in log_file.read_text()


def test_a_referer_with_the_port_the_proxy_dropped(csrf_app, log_file):
    """Over HTTPS on port 8443, behind a proxy that forwards the host without
    its port: the token is good, the origins differ by the port."""
    token, client = token_and_client(csrf_app, SITE)
    response = client.post(
        LOGIN,
        base_url=SITE,
        data={**FIELDS, "csrf_token": token},
        headers={"Referer": "https://blog.example.com:8443/auth/login"},
        environ_base={"wsgi.url_scheme": "https"},
    )
    lines = logged_lines(log_file, response.headers["X-Request-ID"])
    assert without_id(lines) == refusal_logged(
        "The referrer does not match the host. "
        "(Referer https://blog.example.com:8443, request to https://blog.example.com)"
    )
    assert token not in log_file.read_text()
    assert client.get_cookie("session", domain="blog.example.com").value not in (
        log_file.read_text()
    )


def test_no_referer_over_https(csrf_app, log_file):
    token, client = token_and_client(csrf_app, SITE)
    response = client.post(LOGIN, base_url=SITE, data={**FIELDS, "csrf_token": token})
    lines = logged_lines(log_file, response.headers["X-Request-ID"])
    assert without_id(lines) == refusal_logged(
        "The referrer header is missing. (Referer none, request to https://blog.example.com)"
    )


@pytest.mark.parametrize(
    ("referer", "logged"),
    [
        ("https://blog.example.com:notaport/auth/login", "https://blog.example.com:notaport"),
        ("https://blog.example.com:99999/auth/login", "https://blog.example.com:99999"),
        ("https://[::1/auth/login", "without an origin"),
        ("https://blog.example.com:-1/", "https://blog.example.com:-1"),
    ],
)
def test_a_referer_whose_port_is_no_port_is_refused_not_a_500(csrf_app, log_file, referer, logged):
    """Over HTTPS with a good token, Flask-WTF reads the Referer's port, which
    raised ValueError (a 500 and an error mail) for these: now the form is
    refused, as for any Referer from elsewhere."""
    token, client = token_and_client(csrf_app, SITE)
    response = client.post(
        LOGIN,
        base_url=SITE,
        data={**FIELDS, "csrf_token": token},
        headers={"Referer": referer},
        environ_base={"wsgi.url_scheme": "https"},
    )
    assert response.status_code == 400
    lines = logged_lines(log_file, response.headers["X-Request-ID"])
    assert without_id(lines) == refusal_logged(
        "The referrer does not match the host. "
        f"(Referer {logged}, request to https://blog.example.com)"
    )
    assert "Traceback" not in log_file.read_text()


def test_a_good_form_logs_nothing(csrf_app, log_file):
    """The same client and token, with the Referer a browser sends: no line at all."""
    token, client = token_and_client(csrf_app, SITE)
    response = client.post(
        LOGIN,
        base_url=SITE,
        data={**FIELDS, "csrf_token": token},
        headers={"Referer": f"{SITE}/auth/login"},
    )
    assert response.status_code == 200  # the form again: no such user
    assert logged_lines(log_file, response.headers["X-Request-ID"]) == []


# --- What a Referer may carry, cut to its origin ------------------------------------------


@pytest.mark.parametrize(
    ("referer", "logged"),
    [
        # A reset link's path holds a token; a user part, a password.
        (
            "https://someone:hunter2-secret@evil.example:8443/auth/reset_password/tok.en.value?q=1",
            "https://evil.example:8443",
        ),
        ("https://[2001:db8::1]:8443/page", "https://[2001:db8::1]:8443"),
        ("", "none"),
        ("not a url at all", "without an origin"),
        ("javascript:alert(1)", "without an origin"),
        ("https://[::1/unbalanced", "without an origin"),
        ("//blog.example.com/no-scheme", "without an origin"),
        ("https://" + "h" * 5000 + ".example/", "https://" + "h" * 5000 + ".example"),
        # Escaped as everything in a line is (app/reporting/log_file.py).
        ("https://evil\x1b.example/", "https://evil\\x1b.example"),
        # Brackets that are no IPv6 address: urlsplit refuses the netloc.
        ("https://blog.example.com[31m/", "without an origin"),
    ],
)
def test_only_the_referers_origin_is_logged(csrf_app, log_file, referer, logged):
    """Any Referer a client sends, with a refusal that doesn't read it (no
    token over plain HTTP): the line says its origin and nothing more."""
    response = csrf_app.test_client().post(LOGIN, data=FIELDS, headers={"Referer": referer})
    lines = logged_lines(log_file, response.headers["X-Request-ID"])
    assert without_id(lines) == refusal_logged(
        f"The CSRF token is missing. (Referer {logged}, request to http://localhost)"
    )
    for secret in ("hunter2-secret", "tok.en.value", "someone"):
        assert secret not in log_file.read_text()


def test_the_line_is_info_and_goes_with_the_log_level(make_app, log_file):
    """LOG_LEVEL=WARNING, as an admin who wants only problems sets it: no line."""
    app = make_app(WTF_CSRF_ENABLED=True, LOG_DIR=str(log_file.parent), LOG_LEVEL="WARNING")
    init_logger(app)
    response = app.test_client().post(LOGIN, data=FIELDS)
    assert response.status_code == 400
    app.logger.warning("After the refused form")
    [line] = log_file.read_text(encoding="utf-8").splitlines()
    assert " WARNING: After the refused form [in " in line


# --- The visitor's page -------------------------------------------------------------------


def test_the_page_is_the_same_whatever_the_reason(csrf_app):
    """The reason is for the log: every refusal gets the one page, which says
    nothing of tokens or referrers."""
    missing = csrf_app.test_client().post(LOGIN, data=FIELDS)
    token, client = token_and_client(csrf_app, SITE)
    wrong_port = client.post(
        LOGIN,
        base_url=SITE,
        data={**FIELDS, "csrf_token": token},
        headers={"Referer": "https://blog.example.com:8443/auth/login"},
    )
    invalid = csrf_app.test_client().post(LOGIN, data={**FIELDS, "csrf_token": "x" * 40})

    page = refused_page(missing)
    assert re.findall(r"<h1>(.*?)</h1>", page) == [PAGE_TITLE]
    assert re.findall(r'<p class="lead">(.*?)</p>', page) == [PAGE_MESSAGE]
    assert refused_page(wrong_port) == refused_page(invalid) == page
    for reason in ("The CSRF token", "The referrer", "8443"):
        assert reason not in page


def test_a_json_client_gets_the_same_answer(csrf_app):
    response = csrf_app.test_client().post(
        LOGIN, data=FIELDS, headers={"Accept": "application/json"}
    )
    assert response.status_code == 400
    assert response.json == {
        "error": PAGE_TITLE,
        "message": PAGE_MESSAGE,
        "status": 400,
        "request_id": response.headers["X-Request-ID"],
    }

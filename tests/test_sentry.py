"""Sentry, when SENTRY_DSN is set: the blog under gunicorn reports its errors to a
stand-in for Sentry's ingestion endpoint on 127.0.0.1, with real envelopes
sent by sentry-sdk."""

import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.databases import fresh_database
from tests.servers import production_env, run_gunicorn, sentry_receiver, wait_until

# Every test here starts real servers or processes: `make test-fast` skips them.
pytestmark = pytest.mark.system

PASSWORD = "sentry-must-never-see-this"
COOKIE = "session-cookie-sentry-must-never-see"
CLIENT_IP = "203.0.113.77"  # a documentation address: it can only come from the request


@pytest.fixture(scope="module")
def sentry_and_server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sentry")
    with sentry_receiver() as receiver, fresh_database(tmp_path) as database_url:
        env = production_env(
            tmp_path, database_url, SENTRY_DSN=receiver.dsn, SENTRY_RELEASE="blog@1.2.3", ADMINS=""
        )
        with run_gunicorn(env, tmp_path, workers=1) as server:
            yield receiver, server


def fail(
    server, path: str, data: dict | None = None, headers: dict | None = None
) -> tuple[str, str]:
    """Request a failing page; return the 500 page and its X-Request-ID."""
    body = urllib.parse.urlencode(data).encode() if data else None
    request = urllib.request.Request(server.url + path, data=body, headers=headers or {})
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=10)
    assert raised.value.code == 500
    return raised.value.read().decode(), raised.value.headers["X-Request-ID"]


def event_for(receiver, request_id: str) -> dict:
    """Wait for the event Sentry received for the request with this id."""

    def matching():
        return [e for e in receiver.events() if e.get("tags", {}).get("request_id") == request_id]

    wait_until(matching, message=f"a Sentry event tagged {request_id}")
    return matching()[0]


def test_an_error_reaches_sentry_with_its_request_id(sentry_and_server):
    receiver, server = sentry_and_server
    page, request_id = fail(server, "/_test/fail")
    event = event_for(receiver, request_id)

    exception = event["exception"]["values"][-1]
    assert exception["type"] == "ZeroDivisionError"
    assert exception["mechanism"]["type"] == "flask"
    assert event["environment"] == "production"
    assert event["release"] == "blog@1.2.3"
    # The 500 page gives both references: ours and Sentry's.
    assert request_id in page
    assert event["event_id"] in page


def test_sentry_never_receives_the_password(sentry_and_server):
    receiver, server = sentry_and_server
    _, request_id = fail(server, "/_test/fail-with-secret", {"password": PASSWORD})
    event = event_for(receiver, request_id)

    assert event["exception"]["values"][-1]["type"] == "ValueError"
    everything = b"".join(receiver.envelopes).decode()
    assert PASSWORD not in everything


def test_sentry_never_receives_a_password_sent_in_the_query_string(sentry_and_server):
    # A login form that forgot method="post" puts the password in the URL.
    # Sentry reports the query string as it came, percent-encoded
    # ("correct+horse+battery"), and every value of a repeated argument.
    receiver, server = sentry_and_server
    query = urllib.parse.urlencode(
        [("password", "correct horse battery!"), ("token", "first-token"), ("token", "2nd-token")]
    )
    _, request_id = fail(server, f"/_test/fail?{query}")
    event = event_for(receiver, request_id)

    assert event["request"]["query_string"] == (
        "password=[redacted]&token=[redacted]&token=[redacted]"
    )
    everything = b"".join(receiver.envelopes).decode()
    for secret in (
        "correct+horse+battery%21",
        "correct horse battery!",
        "first-token",
        "2nd-token",
    ):
        assert secret not in everything


def test_sentry_receives_no_ip_address_and_no_cookie(sentry_and_server):
    # send_default_pii=False: a visitor's address and cookies are personal
    # data, and the session cookie is a login. The request carries both,
    # the address as a proxy passes it on.
    receiver, server = sentry_and_server
    _, request_id = fail(
        server,
        "/_test/fail",
        headers={"Cookie": f"session={COOKIE}; theme=dark", "X-Forwarded-For": CLIENT_IP},
    )
    event = event_for(receiver, request_id)

    assert "user" not in event  # where the SDK would put {"ip_address": ...}
    assert "cookies" not in event["request"]
    # Of the server's environment, only its own name and port.
    port = str(urllib.parse.urlsplit(server.url).port)
    assert event["request"]["env"] == {"SERVER_NAME": "127.0.0.1", "SERVER_PORT": port}
    headers = event["request"]["headers"]
    assert headers["Cookie"] == "[Filtered]"
    assert headers["X-Forwarded-For"] == ""
    everything = b"".join(receiver.envelopes).decode()
    assert COOKIE not in everything
    assert CLIENT_IP not in everything

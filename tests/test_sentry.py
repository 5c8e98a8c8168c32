"""Sentry, when SENTRY_DSN is set: the blog under gunicorn reports its errors to a
stand-in for Sentry's ingestion endpoint on 127.0.0.1, with real envelopes
sent by sentry-sdk."""

import json
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest
from databases import fresh_database
from servers import production_env, run_gunicorn, sentry_receiver, wait_until

PASSWORD = "sentry-must-never-see-this"


@pytest.fixture(scope="module")
def sentry_and_server(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("sentry")
    with sentry_receiver() as receiver, fresh_database(tmp_path) as database_url:
        env = production_env(
            tmp_path, database_url, SENTRY_DSN=receiver.dsn, SENTRY_RELEASE="blog@1.2.3", ADMINS=""
        )
        with run_gunicorn(env, tmp_path, workers=1) as server:
            yield receiver, server


def fail(server, path: str, data: dict | None = None) -> tuple[str, str]:
    """Request a failing page; return the 500 page and its X-Request-ID."""
    body = urllib.parse.urlencode(data).encode() if data else None
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(server.url + path, data=body, timeout=10)
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
    # send_default_pii=False: no client IP address or cookies either.
    assert "127.0.0.1" not in json.dumps(event.get("user", {}))
    assert not re.search(r'"Cookie"', json.dumps(event.get("request", {})))

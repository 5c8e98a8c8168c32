"""What counts as a secret, and what a log line or an error mail says about a request.

app/reporting/log_context.py decides which values never leave the app: the log file,
the error mail and Sentry all blank out what `config_secrets` and
`request_secrets` return, with `redact`. A secret it fails to name is sent
in clear to a mailbox or a third party, and nothing on any page shows it: so
these tests pin each rule by its exact result, one name and one edge at a
time.

They call the functions directly, inside ``app.test_request_context(...)``:
a request as Flask builds it, without a server, so that the module is
checked in a fraction of a second. The tests that the log file, the mail
and Sentry really apply these rules are in test_logger.py,
test_error_mail.py and test_sentry.py.
"""

from collections.abc import Iterator

import pytest
from flask import Flask, g, request, session
from flask_login import current_user

from app import create_app
from app.auth.sessions import record_login
from app.extensions import db
from app.reporting.log_context import (
    config_secrets,
    current_user_label,
    describe_request,
    redact,
    redact_values,
    request_secrets,
    safe_url,
)
from tests.helpers import add_user, config_for
from tests.query_count import count_statements

# One field name for each word that makes a name sensitive, in the cases and
# places a real form or URL has them: the word may be anywhere in the name,
# in any case.
SENSITIVE_NAMES = [
    "Password",
    "PASSWORD",
    "client_secret",
    "api_token",
    "csrf",
    "api_key",
    "Authorization_x",
    "cookie_x",
    "session_id",
]
SECRET = "hunter2-but-longer"


@pytest.fixture(scope="module")
def app(database_url) -> Iterator[Flask]:
    """One app for every test here that writes nothing (conftest's `app` is
    made anew for each test; these run hundreds of times in a row)."""
    app = create_app(config_for(database_url))
    yield app
    with app.app_context():
        db.engine.dispose()


# --- Which names are sensitive ----------------------------------------------


@pytest.mark.parametrize("name", SENSITIVE_NAMES)
def test_a_form_field_with_a_sensitive_name_is_a_secret(app, name):
    with app.test_request_context("/index", method="POST", data={name: SECRET, "q": "tea"}):
        assert request.form[name] == SECRET  # the view parsed the form
        assert request_secrets() == [SECRET]


@pytest.mark.parametrize("name", SENSITIVE_NAMES)
def test_a_query_argument_with_a_sensitive_name_is_blanked_in_the_url(app, name):
    with app.test_request_context(f"/explore?{name}={SECRET}&page=2"):
        assert safe_url() == f"http://localhost/explore?{name}=[redacted]&page=2"
        assert request_secrets() == [SECRET, SECRET]  # as Flask decodes it, as the URL spells it


def test_ordinary_names_are_not_secrets(app):
    with app.test_request_context(
        "/explore?q=green+tea&page=2&tag=a", method="POST", data={"body": "a post"}
    ):
        assert request.form["body"] == "a post"  # the view parsed the form
        assert request_secrets() == []
        assert safe_url() == "http://localhost/explore?q=green+tea&page=2&tag=a"


def test_a_form_the_view_did_not_parse_is_left_unread(app):
    # Parsing here could fail (too large, malformed) while an error is being
    # reported; a body nobody read can't have leaked into a message either.
    with app.test_request_context("/index", method="POST", data={"password": SECRET}):
        assert request_secrets() == []
        assert "form" not in vars(request._get_current_object())


# --- The request's secrets ---------------------------------------------------


def test_the_authorization_header_is_a_secret(app):
    with app.test_request_context("/explore", headers={"Authorization": "Bearer abc.def.ghi"}):
        assert request_secrets() == ["Bearer abc.def.ghi"]


def test_the_cookie_header_and_each_cookie_value_are_secrets(app):
    # A message may quote one cookie, or all of them as the header had them.
    cookie = "session=eyJfZnJlc2giOmZhbHNlfQ; remember_token=7|9f86d081884c"
    with app.test_request_context("/explore", headers={"Cookie": cookie}):
        assert request_secrets() == [cookie, "eyJfZnJlc2giOmZhbHNlfQ", "7|9f86d081884c"]


def test_the_token_in_a_password_reset_link_is_a_secret(app):
    with app.test_request_context("/auth/reset_password/eyJyZXNldCI6MX0.aBc-12_x"):
        assert request.endpoint == "auth.reset_password_link"
        assert request_secrets() == ["eyJyZXNldCI6MX0.aBc-12_x"]


def test_every_value_of_a_repeated_sensitive_argument_is_a_secret(app):
    with app.test_request_context("/explore?token=first-token&token=second-token"):
        assert sorted(request_secrets()) == [
            "first-token",
            "first-token",
            "second-token",
            "second-token",
        ]
    with app.test_request_context(
        "/index", method="POST", data={"password": ["first-pass", "second-pass"]}
    ):
        assert request.form.getlist("password") == ["first-pass", "second-pass"]
        assert request_secrets() == ["first-pass", "second-pass"]


def test_a_query_secret_is_also_a_secret_as_the_url_spells_it(app):
    # Sentry reports the query string as it came: "correct+horse", which
    # redacting "correct horse" would leave in clear.
    with app.test_request_context("/explore?pass%77ord=correct+horse%21&page=2"):
        assert request_secrets() == ["correct horse!", "correct+horse%21"]
        assert safe_url() == "http://localhost/explore?password=[redacted]&page=2"


def test_a_sensitive_name_without_a_value_adds_nothing(app):
    with app.test_request_context("/explore?token=&password"):
        assert request_secrets() == []


def test_an_unknown_url_has_no_secrets(app):
    # A 404 has no view_args at all (None, not {}).
    with app.test_request_context("/no/such/page"):
        assert request.view_args is None
        assert request_secrets() == []


def test_outside_a_request_there_are_no_request_secrets(app):
    assert request_secrets() == []
    with app.app_context():  # a CLI command, the outbox thread
        assert request_secrets() == []


# --- The configuration's secrets ---------------------------------------------


def test_the_secret_key_the_mail_password_and_the_database_password_are_secrets():
    config = {
        "SECRET_KEY": "the-secret-key",
        "MAIL_PASSWORD": "smtp-code",
        "SQLALCHEMY_DATABASE_URI": "postgresql://blog:db-pass-word@db.example.com/blog",
    }
    assert config_secrets(config) == ["the-secret-key", "smtp-code", "db-pass-word"]


def test_redis_passwords_are_secrets():
    config = {
        "SECRET_KEY": "the-secret-key",
        "REDIS_URL": "rediss://:redis-pass-1@cache.example:6380/0",
        "RATELIMIT_STORAGE_URI": "redis://limits:redis-pass-2@other.example/1",
    }
    assert config_secrets(config) == ["the-secret-key", "redis-pass-1", "redis-pass-2"]
    # The same URL twice is one secret; memory:// and a URL without one add nothing.
    same = "redis://:redis-pass-1@cache.example/0"
    assert config_secrets({"REDIS_URL": same, "RATELIMIT_STORAGE_URI": same}) == ["redis-pass-1"]
    assert (
        config_secrets({"REDIS_URL": "redis://cache/0", "RATELIMIT_STORAGE_URI": "memory://"}) == []
    )


def test_a_database_url_without_a_password_adds_nothing():
    config = {
        "SECRET_KEY": "the-secret-key",
        "SQLALCHEMY_DATABASE_URI": "postgresql://blog@db/blog",
    }
    assert config_secrets(config) == ["the-secret-key"]
    assert config_secrets({"SQLALCHEMY_DATABASE_URI": "sqlite:////srv/blog/app.db"}) == []


def test_missing_configuration_keys_are_fine():
    assert config_secrets({}) == []
    assert config_secrets({"SECRET_KEY": None, "MAIL_PASSWORD": ""}) == []


# --- redact ------------------------------------------------------------------


def test_a_value_of_the_minimum_length_is_redacted_and_a_shorter_one_is_not():
    # Shorter values would blot out ordinary words: "a", "on", "the".
    assert redact("the cat sat", ["cat"]) == "the cat sat"
    assert redact("the cats sat", ["cats"]) == "the [redacted] sat"


def test_every_occurrence_is_redacted():
    assert redact("hunter22 and hunter22", ["hunter22"]) == "[redacted] and [redacted]"


def test_a_secret_that_contains_another_is_redacted_whole():
    # Shortest first would leave "pass" + "[redacted]" behind; the longest
    # goes first, whatever order or alphabet the secrets come in.
    assert redact("login password9 failed", ["word", "password9"]) == "login [redacted] failed"
    assert redact("login password9 failed", ["password9", "word"]) == "login [redacted] failed"
    assert redact("login password9 failed", ["pass", "password9"]) == "login [redacted] failed"


def test_duplicate_secrets_are_fine():
    assert redact("key hunter22", ["hunter22", "hunter22", "hunter22"]) == "key [redacted]"


def test_redact_values_redacts_strings_in_nested_dicts_lists_and_tuples():
    event = {
        "message": "bad hunter22",
        "request": {"headers": {"Cookie": "hunter22"}, "args": ("x", "hunter22 again")},
        "frames": [{"vars": {"password": "'hunter22'"}}, ["hunter22"]],
    }
    assert redact_values(event, ["hunter22"]) == {
        "message": "bad [redacted]",
        # JSON has no tuples: a tuple comes back as a list.
        "request": {"headers": {"Cookie": "[redacted]"}, "args": ["x", "[redacted] again"]},
        "frames": [{"vars": {"password": "'[redacted]'"}}, ["[redacted]"]],
    }


def test_redact_values_passes_other_values_through_unchanged():
    event = {"lineno": 42, "in_app": True, "handled": False, "parent": None, "ratio": 2.5}
    assert redact_values(event, ["hunter22"]) == event
    assert redact_values([42, None, 2.5], ["42"]) == [42, None, 2.5]


# --- safe_url ----------------------------------------------------------------


def test_a_url_without_a_query_has_no_question_mark(app):
    with app.test_request_context("/explore"):
        assert safe_url() == "http://localhost/explore"


def test_repeated_query_arguments_survive(app):
    with app.test_request_context("/explore?tag=a&tag=b&password=x&password=y"):
        assert safe_url() == (
            "http://localhost/explore?tag=a&tag=b&password=[redacted]&password=[redacted]"
        )


# --- Who asked for what --------------------------------------------------------


@pytest.fixture
def user_app(make_app) -> Flask:
    """An app of the test's own, for the tests that add a user or change the config."""
    return make_app()


@pytest.fixture
def susan(user_app) -> tuple[int, str]:
    """A user's id, and what a login puts in her session: "id:token" (User.get_id)."""
    with user_app.app_context():
        user = add_user("susan")
        record_login(user)
        return user.id, user.get_id()


def test_an_anonymous_request_is_described_exactly(app):
    app.config["PROXY_COUNT"] = 1  # so that the X-Request-ID header is believed
    with app.test_request_context(
        "/explore?page=2&password=hunter22",
        method="GET",
        headers={"User-Agent": "Mozilla/5.0 (test)", "X-Request-ID": "req-1234abcd"},
        environ_base={"REMOTE_ADDR": "203.0.113.9"},
    ):
        assert describe_request() == {
            "Method": "GET",
            "URL": "http://localhost/explore?page=2&password=[redacted]",
            "Endpoint": "main.explore",
            "User": "-",
            "Remote address": "203.0.113.9",
            "User agent": "Mozilla/5.0 (test)",
            "Request id": "req-1234abcd",
        }


def test_an_unknown_url_and_a_bare_request_are_described_with_dashes(app):
    app.config["PROXY_COUNT"] = 1
    with app.test_request_context(
        "/no/such/page", method="POST", headers={"X-Request-ID": "req-5678efgh"}
    ):
        assert describe_request() == {
            "Method": "POST",
            "URL": "http://localhost/no/such/page",
            "Endpoint": "-",
            "User": "-",
            "Remote address": "-",
            "User agent": "-",
            "Request id": "req-5678efgh",
        }


def test_outside_a_request_there_is_nothing_to_describe(app):
    with app.app_context():
        assert describe_request() is None
        assert current_user_label() == "-"


def test_a_logged_in_user_is_named(user_app, susan):
    _, session_id = susan
    user_app.config["PROXY_COUNT"] = 1
    with user_app.test_request_context("/explore", headers={"X-Request-ID": "req-1234abcd"}):
        session["_user_id"] = session_id
        assert current_user.username == "susan"  # the view loaded the user
        assert describe_request() == {
            "Method": "GET",
            "URL": "http://localhost/explore",
            "Endpoint": "main.explore",
            "User": "susan",
            "Remote address": "-",
            "User agent": "-",
            "Request id": "req-1234abcd",
        }


def test_a_refused_host_is_described_by_the_path(user_app):
    """TRUSTED_HOSTS refuses the Host: the URL can't be built, and the record still can."""
    app = user_app
    app.config["TRUSTED_HOSTS"] = ["blog.example.com"]
    with app.test_request_context("/explore?token=abcdef", headers={"Host": "evil.example"}):
        assert describe_request()["URL"] == "/explore?token=[redacted]"


def test_a_user_nobody_loaded_is_named_by_the_id_in_the_session(app):
    # The database was down, or the request failed before the view ran: the
    # session says who it is, as "id:token"; the token stays out of the log.
    app.config["PROXY_COUNT"] = 1
    with app.test_request_context("/explore", headers={"X-Request-ID": "req-1234abcd"}):
        session["_user_id"] = "7:Xq3v9bW2kLmN8pRt"
        assert describe_request() == {
            "Method": "GET",
            "URL": "http://localhost/explore",
            "Endpoint": "main.explore",
            "User": "id 7",
            "Remote address": "-",
            "User agent": "-",
            "Request id": "req-1234abcd",
        }


def test_an_expired_user_is_named_by_id_without_a_query(user_app, susan):
    # After a rollback (the 500 handler's first step) reading .username would
    # query the database, which may be what failed.
    user_id, session_id = susan
    with user_app.test_request_context("/explore"):
        session["_user_id"] = session_id
        assert current_user.username == "susan"
        db.session.rollback()
        with count_statements(db.engine) as statements:
            assert current_user_label() == f"id {user_id}"
        assert statements == []


def test_an_anonymous_user_loaded_by_the_view_is_a_dash(app):
    with app.test_request_context("/explore"):
        assert current_user.is_anonymous  # the view asked, and nobody is logged in
        assert g._login_user is not None
        assert current_user_label() == "-"

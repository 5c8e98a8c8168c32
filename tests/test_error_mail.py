"""Error mails, end to end: a real SMTP server (plain, STARTTLS, SSL with a
certificate from a throwaway CA), real gunicorn workers, a real hung server.

What an admin must be able to rely on, and what these tests check:

- a 500 becomes one mail that says what broke, where, and for whom, and never
  carries a secret (app/reporting/error_mail.py);
- the user's page never waits for the mail server, and a mail that can't be
  sent is logged once, in the log file, not mailed;
- storm control: the same bug a hundred times is one mail and one summary,
  across every worker process;
- a worker that is stopped sends what it had queued before it exits;
- `flask test-email` and `flask test-error` tell the truth.

The in-process tests build the app with `make_app` and call `init_logger`
and `init_email` themselves, as `create_app` does in production.
"""

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from flask import Flask

from app.logger import init_email, init_logger
from app.mail import outbox
from app.reporting import ERROR_HANDLER
from app.reporting.error_mail import ErrorMailHandler
from tests import failing_routes
from tests.failing_routes import add_failing_routes
from tests.helpers import outbox_held, source_line
from tests.pages import csrf_token
from tests.servers import (
    Mailbox,
    env_settings,
    flask_command,
    free_port,
    http_get,
    production_env,
    run_gunicorn,
    smtp_server,
    tarpit,
    wait_until,
)

ADMIN = "admin@example.com"
PREFIX = "[博客异常]"  # non-ASCII on purpose: the subject must arrive intact
SECRET_KEY = "error-mail-test-secret-key-nobody-may-read"
TYPED_PASSWORD = "hunter2-typed-into-the-form"
BROWSER = "Mozilla/5.0 (error-mail test browser)"
HELD_BACK = "held back"

# The SSL server requires AUTH over implicit TLS, which aiosmtpd does not
# count as TLS, so it warns about "AUTH without TLS": not so here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS"),
    # init_logger and init_email change process-global state: conftest restores it.
    pytest.mark.usefixtures("restore_logging"),
]


# --- Fixtures and helpers -----------------------------------------------------


@pytest.fixture
def log_dir(tmp_path) -> Path:
    return tmp_path / "logs"


@pytest.fixture
def build_app(make_app, log_dir):
    """Return a factory: the blog with the failing routes, its log file and error
    mail set up as in production, mailing ADMIN through `mail_settings`."""

    def build(mail_settings: dict, **overrides) -> Flask:
        app = make_app(
            PROPAGATE_EXCEPTIONS=False,  # a view's exception becomes the 500 page
            ADMINS=[ADMIN],
            LOG_DIR=str(log_dir),
            MAIL_SUBJECT_PREFIX=PREFIX,
            SECRET_KEY=SECRET_KEY,
            **{**mail_settings, **overrides},
        )
        add_failing_routes(app)
        init_logger(app)
        assert init_email(app) is not None
        return app

    return build


@pytest.fixture
def smtp(request, tmp_path):
    """An SMTP server, plain unless a test parametrizes it (indirect=True)."""
    with smtp_server(getattr(request, "param", "plain"), tmp_path) as server:
        yield server
        outbox.drain()  # before the server goes away


@pytest.fixture
def app(smtp, build_app) -> Flask:
    """Overrides conftest's app, so that `client`, `auth` and `users` use this one."""
    return build_app(smtp.settings)


def mail_handler(app: Flask) -> ErrorMailHandler:
    return next(h for h in app.logger.handlers if h.name == ERROR_HANDLER)


def plain_settings(port: int, **overrides) -> dict:
    """MAIL_* settings for an unencrypted server on 127.0.0.1:`port`."""
    return {
        "MAIL_SERVER": "127.0.0.1",
        "MAIL_PORT": port,
        "MAIL_USE_TLS": False,
        "MAIL_USE_SSL": False,
        "MAIL_TIMEOUT": 2,
        **overrides,
    }


def wait_for_outbox() -> None:
    """Return once the outbox has run every job queued before this call.

    It runs jobs one at a time, in order, so a job queued now runs last.
    """
    done = threading.Event()
    outbox.submit(done.set)
    assert done.wait(30), "the outbox is stuck"


def assert_serves_and_holds_the_repeat_back(client, handler) -> None:
    """After a mail that couldn't be sent: the app still serves, and the same error
    again is held back, as a failing mail server is tried again only after
    StormControl.RETRY_AFTER."""
    assert client.get("/_test/fail").status_code == 500
    assert client.get("/explore").status_code == 200
    wait_for_outbox()
    assert handler.last_outcome.startswith(HELD_BACK)


@contextmanager
def errors_dated(app: Flask, when: float) -> Iterator[None]:
    """Date every record the app logs in the block at `when`, however long the
    block takes: storm control counts its windows in the records' own time."""

    def date(record: logging.LogRecord) -> bool:
        record.created = when
        return True

    app.logger.addFilter(date)
    try:
        yield
    finally:
        app.logger.removeFilter(date)


def body(message: EmailMessage, subtype: str = "plain") -> str:
    """A mail's text/plain or text/html part, with the wire's CRLFs made plain newlines."""
    return message.get_body((subtype,)).get_content().replace("\r\n", "\n")


def field(text: str, label: str) -> str:
    """The value of a "Label:   value" line in a mail's plain-text body."""
    found = re.search(rf"^{re.escape(label)}:\s+(.*)$", text, re.MULTILINE)
    assert found, f"no {label!r} line in:\n{text}"
    return found.group(1)


def everything_in(message: EmailMessage, raw: bytes) -> str:
    """The mail as sent (bytes on the wire) and as read (decoded headers and parts).

    Both: a body sent as base64 or quoted-printable hides a secret from a
    search of the raw bytes, but not from the admin who opens the mail.
    """
    decoded = [str(message["Subject"])]
    decoded += [part.get_content() for part in message.walk() if not part.is_multipart()]
    return raw.decode("utf-8", "replace") + "\n".join(decoded)


def log_text(log_dir: Path) -> str:
    """The log file and its rotated copies (blog.log.1, ...)."""
    return "".join(path.read_text() for path in sorted(log_dir.glob("blog.log*")))


def failure_lines(log_dir: Path) -> list[str]:
    """The log lines that say an error mail was not sent."""
    if not log_dir.exists():
        return []
    return [line for line in log_text(log_dir).splitlines() if " not sent: " in line]


@contextmanager
def broken_mail_server(kind: str, tmp_path: Path) -> Iterator[dict]:
    """MAIL_* settings for a mail server that can't take our mail."""
    if kind == "no MAIL_SERVER":
        yield {}  # mail is off
    elif kind == "closed port":
        yield plain_settings(free_port())  # nothing listens there
    elif kind == "wrong password":
        with smtp_server("starttls", tmp_path, password="wrong") as server:
            yield server.settings
    else:
        raise ValueError(kind)


# --- 1. One mail per error, with everything but secrets -------------------------


@pytest.mark.parametrize("smtp", ["plain", "starttls", "ssl"], indirect=True)
@pytest.mark.system
def test_a_500_mails_the_admins_what_broke_and_no_secrets(smtp, app, client, auth, users):
    auth.login()
    # auth.login() posts without a CSRF token, so protection goes on only now:
    # from here the pages carry a real token, and the POST below must send it.
    app.config["WTF_CSRF_ENABLED"] = True
    page = client.get("/").text
    token = csrf_token(page)
    session_cookie = client.get_cookie("session").value

    response = client.post(
        "/_test/fail-with-secret",
        data={"password": TYPED_PASSWORD, "csrf_token": token},
        headers={"User-Agent": BROWSER},
    )

    assert response.status_code == 500
    request_id = response.headers["X-Request-ID"]
    message = smtp.mailbox.wait_for(1)[0]
    subject = message["Subject"]
    assert subject.startswith(f"{PREFIX} ValueError: no score for password ")
    assert subject.endswith(f"(error {request_id})")  # the reference on the user's page
    # The login is the account's (163.com and QQ Mail refuse any other sender).
    assert message["From"] == smtp.settings.get("MAIL_USERNAME", "blog@127.0.0.1")
    assert message["To"] == ADMIN
    assert message.get_content_type() == "multipart/alternative"
    parts = [part.get_content_type() for part in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]

    text = body(message)
    raised_at = source_line(failing_routes.__file__, "raise ValueError(message)")
    # Where it broke: the line that raised, not the line in Flask that logged it.
    assert field(text, "Location") == f"{failing_routes.__file__}:{raised_at}"
    assert field(text, "Module") == "failing_routes"
    assert field(text, "Function") == "fail_with_secret"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}", field(text, "Time"))
    assert "Traceback (most recent call last):" in text
    assert f'File "{failing_routes.__file__}", line {raised_at}, in fail_with_secret' in text
    assert field(text, "Method") == "POST"
    assert field(text, "URL") == "http://localhost/_test/fail-with-secret"
    assert field(text, "Endpoint") == "fail_with_secret"
    assert field(text, "User") == "admin"
    assert field(text, "Remote address") == "127.0.0.1"
    assert field(text, "User agent") == BROWSER
    assert field(text, "Request id") == request_id
    html_body = body(message, "html")
    assert request_id in html_body
    assert "fail_with_secret" in html_body

    secrets = {
        "SECRET_KEY": SECRET_KEY,
        "MAIL_PASSWORD": smtp.settings.get("MAIL_PASSWORD"),
        "the typed password": TYPED_PASSWORD,
        "the CSRF token": token,
        "the session cookie": session_cookie,
    }
    sent = everything_in(message, smtp.mailbox.envelopes[0].content)
    for name, secret in secrets.items():
        if secret:  # the plain server has no password
            assert secret not in sent, f"{name} is in the mail"
    assert "[redacted]" in text  # they were there, and were blotted out


@pytest.mark.system
def test_a_secret_cut_by_the_subject_length_limit_is_still_redacted(smtp, app, client):
    response = client.post("/_test/fail-with-long-message", data={"password": TYPED_PASSWORD})

    assert response.status_code == 500
    message = smtp.mailbox.wait_for(1)[0]
    assert message["Subject"].startswith(f"{PREFIX} ValueError: xxx")
    sent = everything_in(message, smtp.mailbox.envelopes[0].content)
    assert TYPED_PASSWORD[:6] not in sent


@pytest.mark.system
def test_a_password_in_the_query_string_is_redacted_from_the_url(smtp, app, client):
    # A login form that forgot method="post" sends the password in the URL.
    response = client.get("/_test/fail", query_string={"password": "correct horse battery"})

    assert response.status_code == 500
    message = smtp.mailbox.wait_for(1)[0]
    text = body(message)
    assert field(text, "URL") == "http://localhost/_test/fail?password=[redacted]"


@pytest.mark.system
def test_the_html_part_escapes_what_it_shows(smtp, app, client):
    """An exception message or a User-Agent is not markup in the admin's mail reader."""
    response = client.get(
        "/_test/fail-with-markup", headers={"User-Agent": "<img src=x onerror=alert(1)>"}
    )

    assert response.status_code == 500
    message = smtp.mailbox.wait_for(1)[0]
    html_body = body(message, "html")
    assert "&lt;script&gt;alert(&#x27;mail&#x27;)&lt;/script&gt;" in html_body
    assert "&lt;img src=x onerror=alert(1)&gt;" in html_body
    assert "<script>" not in html_body
    assert "<img" not in html_body
    # Plain text needs no escaping: it shows the characters as they were.
    text = body(message)
    assert "ValueError: <script>alert('mail')</script>" in text


# --- 2. Certificates are verified ---------------------------------------------


@pytest.mark.system
def test_a_server_certificate_that_cannot_be_verified_gets_no_mail(build_app, tmp_path, log_dir):
    with smtp_server("ssl", tmp_path) as smtp:
        # Without MAIL_CA_FILE only the system's CAs are trusted, and the test
        # CA is not one of them: the connection must be refused by us.
        app = build_app(smtp.settings, MAIL_CA_FILE=None)
        response = app.test_client().get("/_test/fail")

        assert response.status_code == 500
        assert "An unexpected error has occurred" in response.text
        handler = mail_handler(app)
        wait_until(lambda: handler.last_outcome is not None, message="the mail's outcome")
        assert handler.last_outcome.startswith("not sent: TLS failed")
        outbox.drain()
        assert smtp.mailbox.messages == []
    [line] = failure_lines(log_dir)
    assert "not sent: TLS failed" in line
    assert "CERTIFICATE_VERIFY_FAILED" in line


# --- 3. A mail server that fails never holds the page -----------------------


@pytest.mark.system
def test_a_hung_mail_server_does_not_hold_the_error_page(build_app, log_dir):
    with tarpit() as port:
        app = build_app(plain_settings(port, MAIL_TIMEOUT=2))
        client = app.test_client()
        handler = mail_handler(app)

        response = client.get("/_test/fail")

        # The page is back while the mail still waits for the server's greeting.
        assert response.status_code == 500
        assert handler.last_outcome is None
        assert failure_lines(log_dir) == []
        wait_until(lambda: handler.last_outcome is not None, message="the mail's outcome")
        assert handler.last_outcome.startswith("not sent: timed out")

        assert_serves_and_holds_the_repeat_back(client, handler)
        # Every queued job is done: had the failure line been mailed, that
        # mail would have timed out too and written a second one.
        outbox.drain()
    [line] = failure_lines(log_dir)
    assert "not sent: timed out" in line


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("closed port", "refused"), ("wrong password", "authentication failed")],
)
@pytest.mark.system
def test_an_undeliverable_error_mail_is_logged_once(build_app, tmp_path, log_dir, kind, reason):
    with broken_mail_server(kind, tmp_path) as settings:
        app = build_app(settings)
        client = app.test_client()
        handler = mail_handler(app)

        # These failures take no time at all, so keep the outbox busy: the
        # page must come back while its mail is still queued behind.
        with outbox_held():
            response = client.get("/_test/fail")
            assert response.status_code == 500
            assert handler.last_outcome is None
            assert failure_lines(log_dir) == []
        wait_until(lambda: handler.last_outcome is not None, message="the mail's outcome")
        assert handler.last_outcome.startswith(f"not sent: {reason}")

        assert_serves_and_holds_the_repeat_back(client, handler)
        outbox.drain()
    # One line, from the "blog.mail" logger, which has no mail handler: had it
    # one, mailing the failure would fail and log a second line.
    [line] = failure_lines(log_dir)
    assert f"not sent: {reason}" in line
    assert log_text(log_dir).count("ERROR: Exception on /_test/fail [GET]") == 2


@contextmanager
def a_failed_mail_then_the_server_back(build_app) -> Iterator[tuple]:
    """An error whose mail was refused; then the mail server comes back on its
    port, and the retry delay (the window: 1 second) passes.

    Yields the client, the mail handler, the refused mail's request id and the
    server's mailbox. The summary check runs only when the test calls it (the
    outbox's own would run at a time of its choosing).
    """
    port = free_port()
    app = build_app(plain_settings(port), MAIL_ERROR_WINDOW=1)
    outbox.drain()  # the outbox starts afresh with the next mail, and reads this:
    outbox.idle_interval = 3600  # (restore_logging puts it back)
    client = app.test_client()
    handler = mail_handler(app)
    response = client.get("/_test/fail")
    wait_for_outbox()  # the mail failed and storm control knows
    assert handler.last_outcome.startswith("not sent: refused")

    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        time.sleep(1.1)  # past the retry delay
        yield client, handler, response.headers["X-Request-ID"], mailbox
    finally:
        controller.stop()


@pytest.mark.system
def test_an_error_whose_mail_failed_is_counted_in_its_next_mail(build_app):
    """A failed mail doesn't count as sent: the next occurrence after the retry
    delay is mailed, and says that one more went unreported."""
    with a_failed_mail_then_the_server_back(build_app) as (client, handler, _, mailbox):
        assert client.get("/_test/fail").status_code == 500
        wait_for_outbox()

        [message] = mailbox.messages
        assert "repeated" not in message["Subject"]
        note = "This error also happened 1 more times since the last mail about it."
        assert body(message).startswith(f"{note}\n\nError\n")
        # Counted once: a window later, no summary is due.
        assert handler.storm.closed_windows(time.time() + 1) == []


@pytest.mark.system
def test_an_error_whose_mail_failed_is_counted_in_a_summary_if_that_comes_first(build_app):
    """The retry delay is also when its window closes: if the summary check
    runs before the error happens again, the summary carries the count, and
    the next mail has none."""
    with a_failed_mail_then_the_server_back(build_app) as (client, handler, failed_id, mailbox):
        handler.send_summaries()
        assert client.get("/_test/fail").status_code == 500
        wait_for_outbox()

        summary, message = mailbox.messages
        failed_subject = f"{PREFIX} ZeroDivisionError: division by zero (error {failed_id})"
        assert summary["Subject"] == f"{failed_subject} [repeated 1 times]"
        assert body(summary) == (
            "This error happened 1 more times that were not mailed one by one "
            "(at most one mail per error every 1 seconds). "
            f"The log file has every occurrence.\n\n{failed_subject}\n"
        )
        assert "repeated" not in message["Subject"]
        assert body(message).startswith("Error\n")


# --- 4. Storm control, in one process -----------------------------------------


@pytest.mark.system
def test_fifty_identical_errors_make_one_mail_and_one_summary(build_app, smtp, log_dir):
    app = build_app(smtp.settings, MAIL_ERROR_WINDOW=2)
    client = app.test_client()

    # All fifty in one window, however slowly a busy machine serves them: they
    # are dated at one moment, and decided only once all are queued (the
    # summary check, which runs in the outbox too, can't come in between).
    with outbox_held(), errors_dated(app, time.time()):
        for _ in range(50):
            assert client.get("/_test/fail").status_code == 500

    # One mail; when the window closes, the outbox (idle) sends the count.
    first, summary = smtp.mailbox.wait_for(2)
    outbox.drain()
    assert len(smtp.mailbox.messages) == 2
    assert first["Subject"].startswith(f"{PREFIX} ZeroDivisionError: division by zero (error ")
    assert summary["Subject"] == f"{first['Subject']} [repeated 49 times]"
    assert "This error happened 49 more times" in summary.get_content()
    # Storm control only holds back mail: the log has every occurrence.
    assert log_text(log_dir).count("ERROR: Exception on /_test/fail [GET]") == 50


@pytest.mark.system
def test_two_different_bugs_make_two_mails(build_app, smtp):
    app = build_app(smtp.settings)
    client = app.test_client()

    for path in [
        "/_test/fail",
        "/_test/fail-differently",
        "/_test/fail",
        "/_test/fail-differently",
    ]:
        assert client.get(path).status_code == 500

    wait_for_outbox()
    subjects = sorted(message["Subject"] for message in smtp.mailbox.messages)
    assert len(subjects) == 2
    assert subjects[0].startswith(f"{PREFIX} KeyError: 'missing'")
    assert subjects[1].startswith(f"{PREFIX} ZeroDivisionError: division by zero")


def subjects(mailbox: Mailbox) -> list[str]:
    """The subjects of the mails received, sorted (the outbox may send in any order)."""
    return sorted(message["Subject"] for message in mailbox.messages)


@pytest.mark.system
def test_an_error_message_without_an_exception_is_mailed(app, smtp):
    app.logger.error("Disk %s almost full", "/var")

    [message] = smtp.mailbox.wait_for(1)
    assert message["Subject"] == f"{PREFIX} Disk /var almost full"
    text = body(message)
    logged_at = source_line(__file__, 'app.logger.error("Disk')
    assert field(text, "Location") == f"{__file__}:{logged_at}"
    assert field(text, "Function") == "test_an_error_message_without_an_exception_is_mailed"
    # No request, no traceback: the mail ends with the message.
    assert text.endswith("\nMessage:        Disk /var almost full\n")
    assert "Request" not in text


@pytest.mark.system
def test_two_different_error_messages_make_two_mails(app, smtp):
    for message in ["Disk almost full", "Queue is stuck", "Disk almost full"]:
        app.logger.error(message)  # the third is the first again: held back

    wait_for_outbox()
    assert subjects(smtp.mailbox) == [f"{PREFIX} Disk almost full", f"{PREFIX} Queue is stuck"]


@pytest.mark.system
def test_two_messages_with_one_fingerprint_make_one_mail(app, smtp):
    # Two lines, two texts, but the caller says they are one bug.
    app.logger.error("Card %s declined", 1, extra={"fingerprint": "payment-provider"})
    app.logger.error("Refund %s declined", 2, extra={"fingerprint": "payment-provider"})

    wait_for_outbox()
    assert subjects(smtp.mailbox) == [f"{PREFIX} Card 1 declined"]


def raise_and_log(app: Flask, error: Exception) -> None:
    """Raise `error` (always from the same line) and log it as Flask logs a 500."""
    try:
        raise error
    except Exception:
        app.logger.exception("Exception on /checkout [POST]")


@pytest.mark.system
def test_one_exception_type_from_two_lines_or_two_types_from_one_line_make_two_mails(app, smtp):
    for error in [KeyError("basket"), ValueError("quantity"), KeyError("basket 2")]:
        raise_and_log(app, error)  # the second KeyError is the first again: held back
    try:
        raise ValueError("first line")
    except ValueError:
        app.logger.exception("Exception on /checkout [POST]")
    try:
        raise ValueError("second line")
    except ValueError:
        app.logger.exception("Exception on /checkout [POST]")

    wait_for_outbox()
    assert subjects(smtp.mailbox) == [
        f"{PREFIX} KeyError: 'basket'",
        f"{PREFIX} ValueError: first line",
        f"{PREFIX} ValueError: quantity",
        f"{PREFIX} ValueError: second line",
    ]


@pytest.mark.system
def test_an_exception_logged_without_being_raised_is_mailed(app, smtp):
    # No traceback: where it was logged stands for where it happened.
    app.logger.error("Payment failed", exc_info=ValueError("card declined"))
    app.logger.error("Refund failed", exc_info=ValueError("card declined"))  # another place

    wait_for_outbox()
    first, second = smtp.mailbox.messages
    assert first["Subject"] == second["Subject"] == f"{PREFIX} ValueError: card declined"
    text = body(first)
    logged_at = source_line(__file__, 'app.logger.error("Payment')
    assert field(text, "Location") == f"{__file__}:{logged_at}"
    # The "traceback" is the exception alone.
    assert text.endswith("\nMessage:        Payment failed\n\nValueError: card declined\n\n")


# --- 5. Storm control, across processes ---------------------------------------


@pytest.mark.system
def test_storm_control_is_shared_by_separate_gunicorn_servers(tmp_path, fresh_database_url):
    """Two servers, one LOG_DIR: one storm-control file, so one mail and one summary."""
    with smtp_server("plain", tmp_path) as smtp:
        env = production_env(
            tmp_path,
            fresh_database_url,
            ADMINS=ADMIN,
            MAIL_ERROR_WINDOW=3,
            **env_settings(smtp.settings),
        )
        with (
            run_gunicorn(env, tmp_path, workers=1) as first,
            run_gunicorn(env, tmp_path, workers=1, upgrade=False) as second,
        ):
            for _ in range(10):
                for server in (first, second):
                    assert http_get(server.url + "/_test/fail")[0] == 500

            immediate, summary = smtp.mailbox.wait_for(2)
            # Stopping the servers lets their workers finish: nothing else was queued.
            assert first.stop() == 0
            assert second.stop() == 0
        assert len(smtp.mailbox.messages) == 2
    assert "ZeroDivisionError: division by zero" in immediate["Subject"]
    assert "repeated" not in immediate["Subject"]
    assert summary["Subject"] == f"{immediate['Subject']} [repeated 19 times]"


# --- 6. A stopping worker sends what it queued --------------------------------


@pytest.mark.parametrize("preload", [False, True], ids=["no-preload", "preload"])
@pytest.mark.system
def test_a_stopping_worker_sends_its_queued_mail_first(tmp_path, fresh_database_url, preload):
    # The server sits on each mail for 2 seconds: it is in flight when we stop.
    with smtp_server("plain", tmp_path, delay=2) as smtp:
        env = production_env(
            tmp_path, fresh_database_url, ADMINS=ADMIN, **env_settings(smtp.settings)
        )
        with run_gunicorn(env, tmp_path, workers=1, preload=preload) as server:
            status, _, _ = http_get(server.url + "/_test/fail")
            assert status == 500
            # The page came back before the server accepted the mail.
            assert smtp.mailbox.messages == []

            assert server.stop() == 0  # SIGTERM, as systemd sends it
        [message] = smtp.mailbox.messages
    assert "ZeroDivisionError" in message["Subject"]


# --- 7. flask test-email and flask test-error ----------------------------------


@pytest.mark.system
def test_flask_test_email_delivers_a_test_mail(tmp_path, fresh_database_url):
    with smtp_server("starttls", tmp_path) as smtp:
        env = production_env(tmp_path, fresh_database_url, ADMINS=ADMIN, MAIL_SUBJECT_PREFIX=PREFIX)
        result = flask_command({**env, **env_settings(smtp.settings)}, "test-email")

        assert result.returncode == 0, result.stderr
        assert "(STARTTLS)" in result.stdout
        assert "Delivered." in result.stdout
        [message] = smtp.mailbox.messages
    assert message["Subject"] == f"{PREFIX} Test mail"
    assert message["To"] == ADMIN


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("closed port", "Not delivered: refused"),
        ("wrong password", "Not delivered: authentication failed"),
        ("no MAIL_SERVER", "MAIL_SERVER is not set, so mail is off."),
    ],
)
@pytest.mark.system
def test_flask_test_email_says_why_it_failed(tmp_path, fresh_database_url, kind, says):
    with broken_mail_server(kind, tmp_path) as settings:
        env = production_env(tmp_path, fresh_database_url, ADMINS=ADMIN, **env_settings(settings))
        result = flask_command(env, "test-email")

    assert result.returncode != 0
    assert says in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.system
def test_flask_test_error_mails_every_time_storm_control_or_not(tmp_path, fresh_database_url):
    with smtp_server("plain", tmp_path) as smtp:
        env = production_env(tmp_path, fresh_database_url, ADMINS=ADMIN, MAIL_SUBJECT_PREFIX=PREFIX)
        env |= env_settings(smtp.settings)

        first = flask_command(env, "test-error")
        assert first.returncode == 0, first.stderr
        assert first.stdout == (
            f"Logged to: {tmp_path / 'logs' / 'blog.log'}\n"
            f"Error mail: delivered to {ADMIN}\n"
            "Sentry: off (SENTRY_DSN is not set).\n"
        )
        [message] = smtp.mailbox.messages
        assert message["Subject"].startswith(f"{PREFIX} RuntimeError: This is a test error")

        # Run again within the window (600 seconds by default): each test
        # error has a fingerprint of its own, so storm control lets it through,
        # and an admin who just fixed the settings sees the result at once.
        second = flask_command(env, "test-error")
        assert second.returncode == 0, second.stderr
        assert second.stdout == first.stdout
        assert len(smtp.mailbox.messages) == 2
    assert log_text(tmp_path / "logs").count("ERROR: Test error") == 2


@pytest.mark.system
def test_flask_test_error_explains_when_the_log_level_drops_errors(tmp_path, fresh_database_url):
    with smtp_server("plain", tmp_path) as smtp:
        env = production_env(tmp_path, fresh_database_url, ADMINS=ADMIN, LOG_LEVEL="CRITICAL")
        result = flask_command({**env, **env_settings(smtp.settings)}, "test-error")

    assert "Traceback" not in result.stderr
    assert result.returncode == 1
    # The ERROR record never reached the mail handler: say why, not "None".
    assert result.stdout == (
        f"Logged to: {tmp_path / 'logs' / 'blog.log'}\n"
        "Error mail: not sent: LOG_LEVEL drops ERROR records\n"
        "Sentry: off (SENTRY_DSN is not set).\n"
    )

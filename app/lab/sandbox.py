"""The lab's sandbox: a throwaway blog, with a mail server and a Sentry of its own.

Every experiment runs in a `Lab`: a temporary folder holding a new SQLite
database (built by the migrations, as production builds it), the log file and
storm control's store; an SMTP server on 127.0.0.1 that keeps what it is sent;
and an HTTP server on 127.0.0.1 that takes what sentry-sdk sends. The blog
inside is `create_app` with a config pointing at all of these, so what the
experiment shows comes from the app's real handlers, logger, outbox and storm
control, and nothing touches the learner's own database, logs or inbox.

A lab runs in a process of its own (`flask lab`, which the /lab page starts):
the loggers, the mail outbox and Sentry are set up once per process, and a
lab blog's handlers must not mix into the learner's development server.
"""

import email
import gzip
import http.server
import json
import logging
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from pathlib import Path

import flask_migrate
import sentry_sdk
from aiosmtpd.controller import Controller
from flask import Flask, request_started
from flask.testing import FlaskClient
from flask_babel import lazy_gettext as _l

from app.extensions import db
from app.lab.faults import bp as faults_bp
from app.logger import remove_handler
from app.mail import outbox
from app.models import User
from app.reporting import APP_LOGGER, ERROR_HANDLER, LOG_HANDLER
from app.reporting.cli import request_ids
from app.reporting.request_id import request_id
from app.reporting.storm import ErrorGroup, open_store, store_location
from config import DEV_SECRET_KEY, DevelopmentConfig

# The admins of the lab's blog: a reserved domain (RFC 2606), so that even a
# real mail server would never deliver there.
LAB_ADMIN = "admin@lab.example"
# The lab's accounts, in its own throwaway database.
LAB_USERS = ("alice", "bob")
LAB_PASSWORD = "lab-password"
# Short enough to watch a storm's window close while the page waits.
LAB_ERROR_WINDOW = 3
LAB_MAIL_TIMEOUT = 3
# How long a run waits for the mails and log lines it expects.
WAIT_SECONDS = 15


@contextmanager
def quiet_migrations() -> Iterator[None]:
    """Run Alembic without its messages, and without the console handler its
    logging config adds to the root logger: the app's records would go there too."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        root.handlers[:] = handlers
        root.setLevel(level)


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class ReceivedMail:
    """A mail as the lab's SMTP server received it, and when."""

    message: EmailMessage
    arrived: float  # time.monotonic()


class MailSink:
    """An SMTP server on 127.0.0.1 that keeps every mail instead of delivering it."""

    def __init__(self):
        self.mails: list[ReceivedMail] = []
        self.port = free_port()
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content, policy=policy.default)
        self.mails.append(ReceivedMail(message, time.monotonic()))
        return "250 OK"

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


class Tarpit:
    """A mail server that accepts connections and never says a word.

    The worst a mail server can do: refusing is quick to notice, silence is
    noticed only when the timeout runs out.
    """

    def __init__(self):
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(50)
        self.port = self._listener.getsockname()[1]
        self._held: list[socket.socket] = []

    def start(self) -> None:
        threading.Thread(target=self._accept_forever, daemon=True).start()

    def _accept_forever(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:  # closed by stop()
                return
            self._held.append(connection)

    def stop(self) -> None:
        self._listener.close()
        for connection in self._held:
            connection.close()


class SentryReceiver:
    """An HTTP server on 127.0.0.1 that takes what sentry-sdk would send to Sentry."""

    def __init__(self):
        self.envelopes: list[bytes] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.envelopes.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # not to stderr: the lab reports what matters
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://lab@127.0.0.1:{self._server.server_address[1]}/1"

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def events(self) -> list[dict]:
        """The error events received (`sentry_events`)."""
        return sentry_events(self.envelopes)


def sentry_events(envelopes: list[bytes]) -> list[dict]:
    """The error events in what sentry-sdk sent: an envelope is a header line,
    then pairs of an item's header and its payload."""
    found = []
    for envelope in envelopes:
        lines = envelope.split(b"\n")
        for header, payload in zip(lines[1::2], lines[2::2], strict=False):
            if json.loads(header).get("type") == "event":
                found.append(json.loads(payload))
    return found


@dataclass
class Response:
    """What a user got from one request, and how long they waited for it."""

    label: str
    method: str
    path: str
    status: int
    headers: dict[str, str]
    page: str
    started: float  # time.monotonic()
    waited_ms: float
    request_id: str = ""
    log: list[str] = field(default_factory=list)


# The response headers a learner should look at.
HEADERS_SHOWN = ("X-Request-ID", "Retry-After", "Content-Type", "Location")


@dataclass
class Finding:
    """Something else the experiment shows: a traceback, a count, a message."""

    label: str
    text: str


class Lab:
    """A throwaway blog and the servers it reports to; use it as a context manager."""

    def __init__(self, mail_settings: dict | None = None, language: str = "en"):
        # The learner's own mail server (MAIL_* settings), or None for the lab's.
        self.real_mail = mail_settings
        # The language the lab's browser asks for ("en", "zh_CN"): the pages
        # it shows are in the learner's language, as the labels around them.
        self.language = language
        self.folder = Path(tempfile.mkdtemp(prefix="blog-lab-"))
        self.sink = MailSink()
        self.sentry = SentryReceiver()
        self.responses: list[Response] = []
        self.findings: list[Finding] = []
        self.mail_note: str | None = None
        self._migrated = False
        # The id of each request, by thread: read as it starts, since a
        # request that crashes the server sends no X-Request-ID back.
        self._request_ids = threading.local()
        # Requests timed but not shown (the middle of a storm): their log
        # lines are counted, not listed.
        self._left_out: set[str] = set()

    def __enter__(self) -> "Lab":
        # `flask lab` built the learner's own blog first, whose log file and
        # error mail handlers sit on several loggers (SQLAlchemy's too): take
        # them all off, so that nothing the lab logs reaches the learner's
        # log, error store or admins. The lab's blog installs its own.
        for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
            if isinstance(logger, logging.Logger):
                for name in (LOG_HANDLER, ERROR_HANDLER):
                    remove_handler(logger, name)
        self.sink.start()
        self.sentry.start()
        request_started.connect(self._note_request_id)
        return self

    def _note_request_id(self, sender, **extra) -> None:
        self._request_ids.current = request_id()

    def __exit__(self, *exc_info) -> None:
        # Let the outbox finish (or give up on) what it holds, so that the
        # process can end; then close the servers.
        request_started.disconnect(self._note_request_id)
        outbox.drain(LAB_MAIL_TIMEOUT + 2)
        sentry_sdk.flush(2)
        self.sink.stop()
        self.sentry.stop()
        # The log handler holds the log file open: close it before deleting
        # the folder (Windows refuses to delete an open file).
        for handler in logging.getLogger(APP_LOGGER).handlers:
            handler.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    @property
    def log_path(self) -> Path:
        return self.folder / "lab.log"

    @property
    def database_file(self) -> Path:
        # In a folder of its own, which database-down moves away for a request.
        return self.folder / "database" / "lab.db"

    def settings(self, **overrides) -> dict:
        """The lab blog's config: everything in the lab's folder, mail to its sink."""
        mail = self.real_mail or {
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": self.sink.port,
            "MAIL_USE_TLS": False,
            "MAIL_USE_SSL": False,
            "MAIL_USERNAME": None,
            "MAIL_PASSWORD": None,
            "ADMINS": [LAB_ADMIN],
        }
        return (
            {
                # Production's error handling: no debugger, no test mode.
                "DEBUG": False,
                "TESTING": False,
                "SECRET_KEY": DEV_SECRET_KEY,
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{self.database_file}",
                "LOG_DIR": str(self.folder),
                "LOG_FILE": self.log_path.name,
                "LOG_TO_STDOUT": False,
                "LOG_LEVEL": "INFO",
                "LOG_EXTRA_LOGGERS": "",
                "REDIS_URL": None,
                "RATELIMIT_STORAGE_URI": "memory://",
                "MAIL_TIMEOUT": LAB_MAIL_TIMEOUT,
                "MAIL_ERROR_WINDOW": LAB_ERROR_WINDOW,
                "MAIL_DEFAULT_SENDER": "blog@lab.example",
                "SENTRY_DSN": self.sentry.dsn,
                "SENTRY_ENVIRONMENT": "lab",
                # The lab's own requests send no CSRF token; CSRF has nothing to
                # show here (the learner's /lab page checks it on every button).
                "WTF_CSRF_ENABLED": False,
                "NOTE_UNCOUNTED_PROXY": False,
                "LAB_ENABLED": False,
                "TRUSTED_HOSTS": None,
                "PROXY_COUNT": 0,
                "BASE_URL": None,
                # As in production: no SQL parameters (a password hash...) in
                # exception messages, so none in the log or the mail.
                "SQLALCHEMY_ENGINE_OPTIONS": {"hide_parameters": True},
            }
            | mail
            | overrides
        )

    def app(self, setup: Callable[[Flask], None] | None = None, **overrides) -> Flask:
        """A blog on the lab's database; `setup` adds what the experiment needs
        (a route that fails) before its first request."""
        # Imported here, not at the top: the app package imports the lab.
        from app import MIGRATIONS_DIR, create_app

        config = type("LabConfig", (DevelopmentConfig,), self.settings(**overrides))
        app = create_app(config)
        app.register_blueprint(faults_bp)
        if setup is not None:
            setup(app)
        if not self._migrated:
            self.database_file.parent.mkdir()
            with app.app_context(), quiet_migrations():
                flask_migrate.upgrade(directory=str(MIGRATIONS_DIR))
                for name in LAB_USERS:
                    user = User(username=name, email=f"{name}@lab.example")
                    user.set_password(LAB_PASSWORD)
                    db.session.add(user)
                db.session.commit()
            self._migrated = True
        return app

    def client(self, app: Flask, login_as: str | None = None) -> FlaskClient:
        """A browser on the lab blog, logged in as `login_as` if given."""
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = "127.0.0.1"
        client.environ_base["HTTP_ACCEPT_LANGUAGE"] = self.language.replace("_", "-")
        if login_as is not None:
            answer = client.post(
                "/auth/login", data={"username": login_as, "password": LAB_PASSWORD}
            )
            if answer.status_code != 302:
                raise RuntimeError(f"The lab could not log in as {login_as}: {answer.status}")
        return client

    def request(
        self,
        client: FlaskClient,
        label: str,
        method: str,
        path: str,
        keep: bool = True,
        **options,
    ) -> Response:
        """Send one request, and note what came back and how long it took
        (`keep` False: time it, but leave it out of the report)."""
        self._request_ids.current = ""
        started = time.monotonic()
        answer = client.open(path, method=method, **options)
        page = answer.get_data(as_text=True)
        response = Response(
            label=label,
            method=method,
            path=path,
            status=answer.status_code,
            headers={name: value for name in HEADERS_SHOWN if (value := answer.headers.get(name))},
            page=page,
            started=started,
            waited_ms=round((time.monotonic() - started) * 1000, 1),
            request_id=self._request_ids.current,
        )
        if keep:
            self.responses.append(response)
        else:
            self._left_out.add(response.request_id)
        return response

    def add_response(
        self,
        label: str,
        method: str,
        path: str,
        status: int,
        page: str,
        started: float | None = None,
    ) -> None:
        """Note a response that didn't come from the lab blog's own handling:
        the page the server sends when the app itself crashed, the debugger's."""
        now = time.monotonic()
        self.responses.append(
            Response(
                label=label,
                method=method,
                path=path,
                status=status,
                headers={},
                page=page,
                started=now if started is None else started,
                waited_ms=0.0 if started is None else round((now - started) * 1000, 1),
                request_id=getattr(self._request_ids, "current", ""),
            )
        )

    def note(self, label: str, text: str) -> None:
        self.findings.append(Finding(label, text))

    # --- What the operator got ----------------------------------------------------

    def log_records(self) -> list[str]:
        """The lab blog's log, one entry per record (a traceback stays with its line)."""
        if not self.log_path.exists():
            return []
        records: list[str] = []
        for line in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") and records:
                records[-1] += "\n" + line
            else:
                records.append(line)
        return records

    def wait_for(self, condition: Callable[[], bool], timeout: float = WAIT_SECONDS) -> bool:
        """Wait until `condition()` holds; False if it never did."""
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def expect_mails(self, count: int, timeout: float = WAIT_SECONDS) -> None:
        """Wait for `count` mails to reach the lab's sink; with the learner's own
        mail server, wait for the outbox to be done and say where they went."""
        if self.real_mail is None:
            if not self.wait_for(lambda: len(self.sink.mails) >= count, timeout):
                self.mail_note = _l(
                    "%(count)d mail(s) expected, %(received)d received when the lab "
                    "stopped waiting.",
                    count=count,
                    received=len(self.sink.mails),
                )
            return
        outbox.drain(timeout)
        failures = [r for r in self.log_records() if "not sent" in r]
        self.mail_note = (
            failures[-1]
            if failures
            else _l(
                "Sent through your mail server (%(server)s) to %(admins)s: look in that inbox.",
                server=self.real_mail["MAIL_SERVER"],
                admins=", ".join(self.real_mail["ADMINS"]),
            )
        )

    @contextmanager
    def tarpit(self) -> Iterator[int]:
        """A mail server that never answers, for as long as the block runs; yields its port."""
        pit = Tarpit()
        pit.start()
        try:
            yield pit.port
        finally:
            pit.stop()

    def wait_for_log(self, text: str, timeout: float = WAIT_SECONDS) -> bool:
        return self.wait_for(lambda: any(text in r for r in self.log_records()), timeout)

    def error_groups(self) -> list[ErrorGroup]:
        """What storm control counted (the store `flask errors` reads)."""
        location = store_location({"REDIS_URL": None, "LOG_DIR": str(self.folder)})
        return open_store(location).all()

    def report(self) -> dict:
        """Everything the run showed, for the /lab page and `flask lab --json`."""
        # Whatever the outbox still holds is sent (or given up on) first, so
        # that "no mail" means none was sent, not none yet.
        outbox.drain(LAB_MAIL_TIMEOUT + 2)
        sentry_sdk.flush(2)
        by_request: dict[str, list[str]] = {}
        background = []
        for record in self.log_records():
            ids = request_ids(record.partition("\n")[0])
            if ids and ids[0] != "-":
                by_request.setdefault(ids[0], []).append(record)
            else:
                background.append(record)
        for response in self.responses:
            response.log = by_request.get(response.request_id, [])
        # Sentry's events, but those of requests left out (a storm's middle).
        events = self.sentry.events()
        shown_events = [
            event
            for event in events
            if event.get("tags", {}).get("request_id") not in self._left_out
        ]
        first_request = min((r.started for r in self.responses), default=time.monotonic())
        return {
            "responses": [
                {
                    "label": str(r.label),
                    "method": r.method,
                    "path": r.path,
                    "status": r.status,
                    "headers": r.headers,
                    "request_id": r.request_id,
                    "page": r.page,
                    "waited_ms": r.waited_ms,
                    "log": r.log,
                }
                for r in self.responses
            ],
            # Lines no request is tagged with: the mail thread's, the startup's.
            "log": background,
            "log_left_out": sum(len(by_request.get(i, [])) for i in self._left_out),
            "mails": [
                mail_report(mail, after=mail.arrived - first_request) for mail in self.sink.mails
            ],
            "mail_note": None if self.mail_note is None else str(self.mail_note),
            "sentry": [sentry_summary(event) for event in shown_events],
            "sentry_left_out": len(events) - len(shown_events),
            "findings": [{"label": str(f.label), "text": str(f.text)} for f in self.findings],
        }


def mail_report(mail: ReceivedMail, after: float) -> dict:
    """A received mail as the page shows it: headers, both parts, when it came."""
    message = mail.message
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    return {
        "from": str(message["From"]),
        "to": str(message["To"]),
        "subject": str(message["Subject"]),
        "text": text.get_content() if text else "",
        "html": html.get_content() if html else None,
        "arrived_ms": round(after * 1000, 1),
    }


def sentry_summary(event: dict) -> dict:
    """The parts of a Sentry event a learner can read at a glance."""
    values = event.get("exception", {}).get("values", [])
    if values:
        what = f"{values[-1].get('type', '')}: {values[-1].get('value', '')}"
    else:  # a logged error without an exception: its message
        what = event.get("logentry", {}).get("formatted") or event.get("message", "")
    return {
        "event_id": event.get("event_id", ""),
        "level": event.get("level", ""),
        "exception": what,
        "tags": event.get("tags", {}),
        "transaction": event.get("transaction", ""),
        "environment": event.get("environment", ""),
    }

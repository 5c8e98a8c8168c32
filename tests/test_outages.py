"""When the database goes away, and comes back.

What a reader of the blog and its admin must be able to rely on:

- pages answer with a 503 "Temporarily unavailable" page and a Retry-After
  header, quickly: the connect timeout (DATABASE_CONNECT_TIMEOUT) bounds the
  wait for a database that doesn't answer, and each request waits for it
  once, not once per query;
- the outage is logged at ERROR, one line per failed page, without a
  traceback (it is not a bug), and mailed to the admins once, not once per
  request; /healthz reports it too, as a WARNING only;
- the app recovers on its own when the database is back, with no restart,
  and people who were logged in still are (app/database.py checks each pooled
  connection as it leaves the pool: `drop_closed_connection` on PostgreSQL);
- a bug that happens to be a database error (a missing table) is still a bug:
  the 500 page, with its traceback in the log, never a 503.

How the database is made to go away. The shared PostgreSQL server can't be
stopped (the rest of the suite runs on it), so the tests put a `Cable` of
their own between gunicorn and PostgreSQL: a small TCP forwarder that the test
can unplug (new connections are refused and open ones are cut, as when the
server stops) and plug back in on the same port. Those two tests need a real
PostgreSQL server behind the cable, so they run with TEST_DATABASE_URL only
(`make test-postgres`). With nothing behind it the same class is a tarpit: it
accepts connections and never says a word, like a database host that has
dropped off the network; only the connect timeout gets a request out of that.
The tarpit tests need no PostgreSQL server, so they run on every run (the app
is pointed at a PostgreSQL URL either way).

The promises that don't depend on PostgreSQL (the 503 page, one mail for the
whole outage, healing with no restart, a session that survives) are also
checked with an SQLite file whose folder is missing, then back: no server at
all, so `make test` checks them too.

No assertion here depends on how long anything took. "Quickly" is checked by
counting: the tarpit counts the connections the app opens, and a request that
opens exactly one has waited for exactly one connect timeout.
"""

import json
import logging
import re
import socket
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from sqlalchemy.engine import make_url

from app import create_app
from app.extensions import db
from app.reporting import STORE_FILE
from tests.databases import ON_POSTGRESQL, SERVER_URL, upgrade_database
from tests.helpers import AuthActions, config_for
from tests.servers import (
    Browser,
    Gunicorn,
    env_settings,
    production_env,
    run_gunicorn,
    smtp_server,
    wait_until,
)

ADMIN = "admin@example.com"
UNAVAILABLE = "Temporarily unavailable"
SERVER_ERROR = "An unexpected error has occurred"
# What the app logs, in its log file's format ("<time> LEVEL: message [...]").
OUTAGE_LINE = " ERROR: Database unavailable: "
HEALTH_LINE = " WARNING: Health check: "
needs_postgresql = pytest.mark.skipif(
    not ON_POSTGRESQL,
    reason="unplugs a cable between gunicorn and a real PostgreSQL server: "
    "run with TEST_DATABASE_URL (make test-postgres); on SQLite, "
    "test_a_missing_sqlite_file_gives_503s_one_mail_and_heals_itself checks the outage",
)


# --- A network cable the test can pull ----------------------------------------


class Cable:
    """A TCP forwarder on 127.0.0.1 standing between the app and its database.

    The app connects to `port`; each connection is relayed to `upstream`
    byte for byte, both ways. The test can

    - `pull_plug()`: stop listening and cut every open connection, as when the
      database server stops: connections in the app's pool are dead, and new
      ones are refused;
    - `plug_in()`: listen again, on the same port, as when the server is back;
    - `cut_connections()`: cut the open connections but go on listening, as
      when the server restarts between two requests.

    With no `upstream` it is a tarpit: it accepts connections and never
    answers, like a host that has vanished from the network.
    """

    def __init__(self, upstream: tuple[str, int] | None = None):
        self.upstream = upstream
        self.port = 0  # chosen by the first plug_in, then kept
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()  # every socket we hold, both sides
        self._clients: set[socket.socket] = set()  # the app's side of each connection
        self._peers: list[tuple[str, int]] = []  # who connected, in the order accepted
        self._probes: set[tuple[str, int]] = set()  # our own connections (see `connections`)

    def plug_in(self) -> None:
        listener = socket.socket()
        # The port we give up in pull_plug has connections in TIME_WAIT on it;
        # SO_REUSEADDR lets us listen on it again at once.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def pull_plug(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone may not.
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self.cut_connections()

    def cut_connections(self) -> None:
        with self._lock:
            sockets = list(self._open)
        self._close(*sockets)

    def live_connections(self) -> int:
        """How many of the app's connections are open through the cable now."""
        with self._lock:
            return len(self._clients)

    def connections(self) -> int:
        """How many connections the app has opened to the cable so far, exactly.

        A connection counts once the cable's thread has accepted it, a moment
        after the app connected. To be sure every earlier connection has been
        counted, we connect once ourselves and wait until that probe has been
        accepted: the listening socket hands out connections in the order
        they arrived, so everything before the probe has been accepted too.
        """
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            address = probe.getsockname()
            with self._lock:
                self._probes.add(address)
            probe.connect(("127.0.0.1", self.port))
            wait_until(lambda: address in self._peers, message="the probe connection")
        with self._lock:
            return sum(peer not in self._probes for peer in self._peers)

    def close(self) -> None:
        self.pull_plug()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                connection, peer = listener.accept()
            except OSError:
                return  # the plug was pulled
            with self._lock:
                if listener is not self._listener:
                    connection.close()
                    return
                self._peers.append(peer)
                if peer in self._probes:
                    connection.close()  # only counted, never relayed
                    continue
                self._open.add(connection)
                self._clients.add(connection)
            if self.upstream is not None:
                threading.Thread(target=self._relay, args=(connection,), daemon=True).start()
            # As a tarpit: keep the connection open and say nothing.

    def _relay(self, client: socket.socket) -> None:
        try:
            server = socket.create_connection(self.upstream, timeout=10)
        except OSError:
            self._close(client)
            return
        server.settimeout(None)
        with self._lock:
            if client not in self._open:  # cut while we were connecting
                server.close()
                return
            self._open.add(server)
        threading.Thread(target=self._pump, args=(server, client), daemon=True).start()
        self._pump(client, server)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                target.sendall(data)
        # One side hung up (or was cut): hang up the other side too.
        self._close(source, target)

    def _close(self, *sockets: socket.socket) -> None:
        with self._lock:
            for sock in sockets:
                self._open.discard(sock)
                self._clients.discard(sock)
        for sock in sockets:
            # shutdown() first: it wakes a thread blocked in recv() on this socket.
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@contextmanager
def cable(upstream: tuple[str, int] | None = None) -> Iterator[Cable]:
    wire = Cable(upstream)
    wire.plug_in()
    try:
        yield wire
    finally:
        wire.close()


def through(wire: Cable, database_url: str) -> str:
    """`database_url` with the cable's address instead of the server's."""
    url = make_url(database_url).set(host="127.0.0.1", port=wire.port)
    return url.render_as_string(hide_password=False)


def tarpit_url(wire: Cable) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:{wire.port}/unreachable"


# --- A browser, and gunicorn without a database -----------------------------------


def two_at_once(base_url: str, path: str) -> list[tuple[int, dict, str]]:
    """GET `path` twice at the same time, so that (often) each worker serves one.

    A sync worker serves one request at a time, so while one is busy the
    other must take the second request; if the first is done before the
    second arrives, the same worker may take both, and the caller tries again.
    """
    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(lambda _: Browser(base_url).request(path), range(2)))


def both_workers_connected(server: Gunicorn, wire: Cable) -> bool:
    """Send two requests at once (all must work); True if both workers now hold a connection.

    A worker keeps its database connection in its pool between requests, and
    uses one at a time: two connections open through the cable mean two workers.
    """
    for status, _, page in two_at_once(server.url, "/explore"):
        assert status == 200, title(page)
    return wire.live_connections() >= 2


def session_cookie(secret_key: str, user_id: str) -> str:
    """A session cookie saying "user `user_id` is logged in", signed with `secret_key`.

    Flask's session is a cookie signed with SECRET_KEY, nothing more: any app
    with the same key makes one the blog accepts. No login is possible while
    the database is unreachable, so this is how a test gets a visitor who
    logged in before the outage. The digest after the id is wrong, which
    doesn't matter: the user can't be loaded anyway.
    """
    signer = Flask("cookie-maker")
    signer.secret_key = secret_key
    serializer = SecureCookieSessionInterface().get_signing_serializer(signer)
    return serializer.dumps({"_user_id": user_id, "_fresh": True})


def title(page: str) -> str:
    """A page's <title>: enough to tell which page came back when a test fails."""
    found = re.search(r"<title>(.*?)</title>", page)
    return found.group(1) if found else page[:200]


def log_lines(log_file: Path, marker: str) -> list[str]:
    return [line for line in log_file.read_text().splitlines() if marker in line]


def startup_lines(log_file: Path) -> list[str]:
    """The "Blog startup (pid N)" lines: one per process that created the app."""
    return log_lines(log_file, "Blog startup (pid ")


def assert_no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text
        assert "Exception on " not in text, text  # how Flask logs an unhandled exception


def assert_unavailable_page(status: int, headers: dict, page: str) -> None:
    assert status == 503, title(page)
    assert headers["Retry-After"] == "30"
    assert UNAVAILABLE in page
    assert "<!doctype html>" in page  # the full page, in the site's layout


def assert_unavailable_health(status: int, headers: dict, body: str) -> None:
    assert status == 503, body
    assert headers["Retry-After"] == "30"
    assert json.loads(body)["status"] == "unavailable"


# --- PostgreSQL stops and starts, under gunicorn -------------------------------


@pytest.fixture
def postgresql_cable() -> Iterator[Cable]:
    """A cable plugged into the test PostgreSQL server."""
    server = make_url(SERVER_URL)
    with cable((server.host or "127.0.0.1", server.port or 5432)) as wire:
        yield wire


@needs_postgresql
def test_a_database_restart_between_requests_goes_unnoticed(
    tmp_path, fresh_database_url, postgresql_cable
):
    """PostgreSQL restarts while no request is running: nobody sees an error.

    Every connection in every worker's pool is dead afterwards. Unchecked,
    each would fail the next request that borrows it; the app checks a
    connection as it leaves the pool (`drop_closed_connection`: the server
    closed it, so its socket is readable), drops it and opens a new one. The
    cable tells us that both workers held a connection when it was cut, and
    that both have opened a new one since.
    """
    env = production_env(tmp_path, through(postgresql_cable, fresh_database_url))
    with run_gunicorn(env, tmp_path, app="blog:app", workers=2) as server:
        wait_until(
            lambda: both_workers_connected(server, postgresql_cable),
            message="both workers holding a connection",
        )
        before = postgresql_cable.connections()

        postgresql_cable.cut_connections()

        def both_reconnected() -> bool:
            for status, _, page in two_at_once(server.url, "/explore"):
                # Every request, including each worker's first on a dead connection.
                assert status == 200, title(page)
            return postgresql_cable.connections() >= before + 2

        wait_until(both_reconnected, message="both workers reconnecting")
    assert_no_traceback(server.log(), (tmp_path / "logs" / "blog.log").read_text())


@needs_postgresql
def test_an_outage_gives_503s_one_mail_and_heals_itself(
    tmp_path, fresh_database_url, postgresql_cable
):
    """PostgreSQL stops for a while, under gunicorn with two workers, then comes back.

    During the outage every page is the 503 page with Retry-After, for
    visitors and logged-in users alike, and /healthz says 503 too. Each failed
    page is one ERROR line in the log, without a traceback; the health checks
    are WARNINGs. The admins get exactly one mail however many pages failed:
    every failure is the same log call, so storm control counts the repeats
    instead of mailing them. When the database is back, the very next request
    works, no worker was restarted, and the logged-in user still is.
    """
    log_file = tmp_path / "logs" / "blog.log"
    with smtp_server("plain", tmp_path) as smtp:
        env = production_env(
            tmp_path,
            through(postgresql_cable, fresh_database_url),
            DATABASE_CONNECT_TIMEOUT=2,
            ADMINS=ADMIN,
            MAIL_ERROR_WINDOW=60,  # longer than the test: no summary mail comes
            **env_settings(smtp.settings),
        )
        with run_gunicorn(env, tmp_path, app="blog:app", workers=2) as server:
            # 1. Everything works.
            visitor, member = Browser(server.url), Browser(server.url)
            fields = {"email": "member@example.com", "password": "a-good-password"}
            status, _, _ = member.submit(
                "/auth/register", {"username": "member", "password2": fields["password"], **fields}
            )
            assert status == 302
            status, _, _ = member.submit(
                "/auth/login", {"username": "member", "password": fields["password"]}
            )
            assert status == 302
            status, _, _ = member.submit("/", {"post": "Written before the outage"})
            assert status == 302
            status, _, page = member.request("/")
            assert (status, "Profile (member)" in page) == (200, True)
            assert "Written before the outage" in visitor.request("/explore")[2]
            status, _, body = visitor.request("/healthz")
            assert (status, json.loads(body)["status"]) == (200, "ok")
            # Both workers are up and each has a connection in its pool, to be
            # found dead when the plug is pulled.
            wait_until(
                lambda: both_workers_connected(server, postgresql_cable),
                message="both workers holding a connection",
            )
            started = startup_lines(log_file)

            # 2. The database goes away.
            postgresql_cable.pull_plug()
            failed_pages = 0

            def fail_some_pages(rounds: int) -> None:
                nonlocal failed_pages
                for _ in range(rounds):
                    assert_unavailable_page(*visitor.request("/explore"))
                    assert_unavailable_page(*member.request("/"))
                    failed_pages += 2

            fail_some_pages(3)
            health_checks = 3
            for _ in range(health_checks):
                assert_unavailable_health(*visitor.request("/healthz"))

            # 3. It is in the log: one ERROR line per failed page, no traceback;
            # the health checks are WARNINGs. (The line is written before the
            # response is sent; waiting only covers the file being flushed.)
            wait_until(lambda: len(log_lines(log_file, OUTAGE_LINE)) >= failed_pages)
            assert len(log_lines(log_file, OUTAGE_LINE)) == failed_pages
            assert len(log_lines(log_file, HEALTH_LINE)) == health_checks
            errors = log_lines(log_file, " ERROR: ")
            assert all(OUTAGE_LINE in line for line in errors), "\n".join(errors)
            assert_no_traceback(log_file.read_text(), server.log())

            # ... and in the admins' mailbox, once.
            mail = smtp.mailbox.wait_for(1)[0]
            assert mail["Subject"].startswith("[Blog] Database unavailable: ")
            text = mail.get_body(("plain",)).get_content()
            assert "Traceback" not in text

            # More failures in the same window: counted, not mailed. To know
            # that every one of them has been through storm control, we read
            # its count: each worker's outbox thread adds one per occurrence to
            # the shared SQLite file in the log directory (app/reporting/error_mail.py).
            fail_some_pages(2)
            wait_until(
                lambda: outage_repeats(tmp_path / "logs") == failed_pages - 1,
                message=f"storm control counting {failed_pages - 1} repeats",
            )
            assert subjects(smtp.mailbox) == [mail["Subject"]]

            # 4. The database is back. No polling: the very next request must
            # work, in whichever worker, because each one checks a pooled
            # connection before using it (app/database.py).
            postgresql_cable.plug_in()
            status, _, page = member.request("/")
            assert status == 200, title(page)
            assert "Profile (member)" in page  # still logged in
            assert "Written before the outage" in page

            wait_until(
                lambda: both_workers_connected(server, postgresql_cable),
                message="both workers serving again",
            )
            status, _, body = visitor.request("/healthz")
            assert (status, json.loads(body)["status"]) == (200, "ok")

            # Healed, not restarted: no worker created the app again.
            assert server.process.poll() is None
            assert startup_lines(log_file) == started
            assert subjects(smtp.mailbox) == [mail["Subject"]]
    assert_no_traceback(log_file.read_text(), server.log())


def subjects(mailbox) -> list[str]:
    return [message["Subject"] for message in mailbox.messages]


def outage_repeats(log_dir: Path) -> int | None:
    """How many repeats of the outage storm control has counted (None: none yet).

    Read-only, and briefly: the workers lock the file to write it.
    """
    path = log_dir / STORE_FILE
    if not path.exists():
        return None
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = connection.execute("SELECT subject, unreported FROM error_groups").fetchall()
    finally:
        connection.close()
    counts = [repeats for subject, repeats in rows if "Database unavailable" in subject]
    return counts[0] if counts else None


# --- An SQLite file that can't be opened, then can: on both runs -------------


def log_in_with_a_post(database_url: str, secret_key: str) -> str:
    """Register "member", log in and write a post; return the session cookie's value.

    Done in this process, through the real forms, by an app with the
    production SECRET_KEY: the cookie is exactly what gunicorn's workers
    would have given the member at login.
    """
    app = create_app(config_for(database_url, SECRET_KEY=secret_key))
    try:
        client = app.test_client()
        auth = AuthActions(client)
        assert auth.register("member").status_code == 302
        assert auth.login("member").status_code == 302
        assert client.post("/", data={"post": "Written before the outage"}).status_code == 302
        return client.get_cookie("session").value
    finally:
        with app.app_context():
            db.engine.dispose()


@pytest.mark.system
def test_a_missing_sqlite_file_gives_503s_one_mail_and_heals_itself(tmp_path):
    """The folder of the SQLite file is missing when gunicorn starts, then it is back.

    SQLite's outage: the file can't be opened ("unable to open database
    file"), as when the disk that holds it isn't mounted yet after a reboot.
    No server is involved, so this runs on every run and keeps the promises
    of the PostgreSQL outage test above in `make test` too. The database is
    missing from the start because a worker keeps its SQLite connection open
    between requests, and an open file goes on working when its folder is
    renamed: only opening a connection can meet this outage.

    During the outage every page is the 503 page, for visitors and a member
    who logged in earlier alike, and /healthz says 503; each failed page is
    one ERROR line without a traceback, the health checks are WARNINGs, and
    the admins get exactly one mail. When the folder is back, the very next
    request works, no worker was restarted, and the member is still logged in.
    """
    data, away = tmp_path / "data", tmp_path / "data-away"
    data.mkdir()
    database_url = f"sqlite:///{data / 'blog.sqlite'}"
    upgrade_database(database_url)
    log_file = tmp_path / "logs" / "blog.log"
    with smtp_server("plain", tmp_path) as smtp:
        env = production_env(
            tmp_path,
            database_url,
            ADMINS=ADMIN,
            MAIL_ERROR_WINDOW=60,  # longer than the test: no summary mail comes
            **env_settings(smtp.settings),
        )
        member_session = {
            "Cookie": f"session={log_in_with_a_post(database_url, env['SECRET_KEY'])}"
        }

        # 1. The database goes away before gunicorn starts.
        data.rename(away)
        ready = "/bootstrap/static/css/bootstrap.min.css"
        with run_gunicorn(env, tmp_path, app="blog:app", upgrade=False, ready_path=ready) as server:
            # Both workers have created the app (one startup line each).
            wait_until(lambda: len(startup_lines(log_file)) == 2, message="both workers' startup")
            started = startup_lines(log_file)
            visitor, member = Browser(server.url), Browser(server.url)
            failed_pages, request_ids = 0, []

            def fail_some_pages(rounds: int) -> None:
                nonlocal failed_pages
                for _ in range(rounds):
                    status, headers, page = visitor.request("/explore")
                    assert_unavailable_page(status, headers, page)
                    request_ids.append(headers["X-Request-ID"])
                    status, headers, page = member.request("/", headers=member_session)
                    assert_unavailable_page(status, headers, page)
                    request_ids.append(headers["X-Request-ID"])
                    # The member couldn't be loaded: the visitor's navigation.
                    assert "Log in" in page
                    assert "Profile (member)" not in page
                    failed_pages += 2

            fail_some_pages(3)
            health_checks = 3
            for _ in range(health_checks):
                assert_unavailable_health(*visitor.request("/healthz"))

            # 2. In the log: one ERROR line per failed page, saying what SQLite
            # said, and no traceback; the health checks are WARNINGs.
            wait_until(lambda: len(log_lines(log_file, OUTAGE_LINE)) >= failed_pages)
            outage = log_lines(log_file, OUTAGE_LINE)
            assert len(outage) == failed_pages
            assert all(f"{OUTAGE_LINE}unable to open database file [in " in line for line in outage)
            assert len(log_lines(log_file, HEALTH_LINE)) == health_checks
            errors = log_lines(log_file, " ERROR: ")
            assert all(OUTAGE_LINE in line for line in errors), "\n".join(errors)
            assert_no_traceback(log_file.read_text(), server.log())

            # ... and in the admins' mailbox, once: the mail of one of the
            # failed pages, whichever reached storm control first.
            mail = smtp.mailbox.wait_for(1)[0]
            subject = "[Blog] Database unavailable: unable to open database file (error {})"
            assert mail["Subject"] in {subject.format(request_id) for request_id in request_ids}
            assert "Traceback" not in mail.get_body(("plain",)).get_content()

            # More failures in the same window: counted, not mailed.
            fail_some_pages(2)
            wait_until(
                lambda: outage_repeats(tmp_path / "logs") == failed_pages - 1,
                message=f"storm control counting {failed_pages - 1} repeats",
            )
            assert subjects(smtp.mailbox) == [mail["Subject"]]

            # 3. The database is back. No polling: the very next request works.
            away.rename(data)
            status, _, page = member.request("/", headers=member_session)
            assert status == 200, title(page)
            assert "Profile (member)" in page  # still logged in
            assert "Written before the outage" in page
            for _ in range(3):
                for status, _, page in two_at_once(server.url, "/explore"):
                    assert status == 200, title(page)
                    assert "Written before the outage" in page
            status, _, body = visitor.request("/healthz")
            assert (status, json.loads(body)["status"]) == (200, "ok")

            # Healed, not restarted: no worker created the app again.
            assert server.process.poll() is None
            assert startup_lines(log_file) == started
            assert subjects(smtp.mailbox) == [mail["Subject"]]
    assert len(log_lines(log_file, OUTAGE_LINE)) == failed_pages
    assert_no_traceback(log_file.read_text(), server.log())


# --- An unreachable database host, on both runs ------------------------------


@pytest.mark.system
def test_unreachable_database_under_gunicorn(tmp_path):
    """The database host doesn't answer at all: the connect timeout ends the wait.

    A tarpit accepts the connection and never answers, so without a connect
    timeout psycopg would wait 130 seconds (its default) and gunicorn would
    kill the worker first. Each request, a visitor's, a logged-in user's or
    the health check's, opens exactly one connection, so it waits out exactly
    one timeout: the logged-in user's page doesn't try again to show their
    name in the navigation.
    """
    with cable() as tarpit:
        env = production_env(tmp_path, tarpit_url(tarpit), DATABASE_CONNECT_TIMEOUT=2)
        # No `flask db upgrade` (it would wait for the database too), and ready
        # when a static file answers: no page that needs the database ever will.
        ready = "/bootstrap/static/css/bootstrap.min.css"
        with run_gunicorn(env, tmp_path, app="blog:app", upgrade=False, ready_path=ready) as server:
            visitor = Browser(server.url)
            assert tarpit.connections() == 0

            assert_unavailable_page(*visitor.request("/explore"))
            assert tarpit.connections() == 1

            cookie = session_cookie(env["SECRET_KEY"], "1:0123456789abcdef")
            status, headers, page = visitor.request("/", headers={"Cookie": f"session={cookie}"})
            assert_unavailable_page(status, headers, page)
            assert tarpit.connections() == 2
            # The user couldn't be loaded, so the page shows the visitor's navigation.
            assert "Log in" in page

            assert_unavailable_health(*visitor.request("/healthz"))
            assert tarpit.connections() == 3

    log_file = tmp_path / "logs" / "blog.log"
    assert len(log_lines(log_file, OUTAGE_LINE)) == 2
    assert len(log_lines(log_file, HEALTH_LINE)) == 1
    assert "timeout" in log_lines(log_file, OUTAGE_LINE)[0]
    assert_no_traceback(log_file.read_text(), server.log())


@pytest.fixture
def unreachable_app(make_app) -> Iterator[tuple[Flask, Cable]]:
    """An app in this process whose database is a tarpit."""
    with cable() as tarpit:
        app = make_app(
            SQLALCHEMY_DATABASE_URI=tarpit_url(tarpit),
            # psycopg rounds anything under 2 seconds up to 2.
            DATABASE_CONNECT_TIMEOUT=1,
            # The error handlers must run, as in production, not re-raise into the test.
            PROPAGATE_EXCEPTIONS=False,
        )
        yield app, tarpit


@pytest.mark.system
def test_unreachable_database_in_process(unreachable_app, caplog):
    """The same, through Flask's test client: HTML and JSON, anonymous and logged in.

    The test client lets us log someone in by writing the session directly.
    Each failed page logs one ERROR, the health check a WARNING only.
    """
    app, tarpit = unreachable_app
    client = app.test_client()
    caplog.set_level(logging.WARNING, logger="app")

    response = client.get("/explore")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert UNAVAILABLE in response.text
    assert tarpit.connections() == 1

    response = client.get("/explore", headers={"Accept": "application/json"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert (response.json["status"], response.json["error"]) == (503, UNAVAILABLE)
    assert tarpit.connections() == 2

    with client.session_transaction() as session:
        session["_user_id"] = "1:whatever"
    response = client.get("/")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "30"
    assert UNAVAILABLE in response.text
    assert "Log in" in response.text
    assert tarpit.connections() == 3  # one timeout, not a second one for the navigation

    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json == {"status": "unavailable", "database": "unreachable"}
    assert tarpit.connections() == 4

    records = [(r.levelname, r.getMessage().partition(":")[0]) for r in caplog.records]
    assert records == [("ERROR", "Database unavailable")] * 3 + [("WARNING", "Health check")]
    assert all(record.exc_info is None for record in caplog.records)


# --- A bug is not an outage ---------------------------------------------------


def test_a_missing_table_is_a_500_not_a_503(fresh_database_url, caplog):
    """A database without the blog's tables (the migrations never ran) is a bug.

    The database answers, so it isn't "temporarily unavailable", and a retry
    won't help: the 500 page, and the traceback in the log for whoever fixes
    it. On SQLite "no such table" is an OperationalError, the same class as a
    lost connection, so app/database.py's is_unavailable must tell them
    apart; on PostgreSQL it is a ProgrammingError.
    """
    app = create_app(config_for(fresh_database_url, PROPAGATE_EXCEPTIONS=False))
    try:
        client = app.test_client()
        response = client.get("/explore")
        assert response.status_code == 500
        assert SERVER_ERROR in response.text
        assert "Retry-After" not in response.headers

        with client.session_transaction() as session:
            session["_user_id"] = "1:whatever"
        response = client.get("/")  # loading the user fails first
        assert response.status_code == 500
        assert SERVER_ERROR in response.text
    finally:
        with app.app_context():
            db.engine.dispose()

    assert "Database unavailable" not in caplog.text
    unhandled = [record for record in caplog.records if record.exc_info]
    assert [record.getMessage() for record in unhandled] == [
        "Exception on /explore [GET]",
        "Exception on / [GET]",
    ]

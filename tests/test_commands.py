"""The admin's commands in app/commands.py: what `flask check-deploy` says about
how gunicorn is reached (its bind address, a proxy that PROXY_COUNT doesn't
count, and whether it is on this machine), about the rate limits and reset
links, about SESSION_COOKIE_SECURE before and after HTTPS, and about the files
the app writes in LOG_DIR; `flask users set-password`; the names `flask shell`
starts with. (Its other checks: tests/test_deploy.py.)

Each command is run the way an admin runs it, `flask` in a subprocess in the
project's folder, against a database of the test's own; a proxy is noticed by
a real gunicorn, and check-deploy then reads what it noted in the same LOG_DIR.
Files another user owns are really theirs (chown), and check-deploy runs as a
user they stop. The many hostile values of the smaller pieces (gunicorn's bind
syntax, the note's contents, the peer's address and the header's value, files
that aren't files, names and passwords) are tried in-process, where one
costs milliseconds: with Flask's CLI runner, the test client, or the functions
themselves.
"""

import errno
import json
import logging
import os
import pwd
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask import g

from app import create_app
from app.commands import (
    PROXY_NOTE,
    bind_reaches_network,
    describe_proxy_note,
    gunicorn_bind_problem,
    gunicorn_workers,
    gunicorn_workers_problem,
    log_dir_problems,
    password_problem,
    read_proxy_note,
    served_over_https,
)
from app.extensions import db
from app.models import Post, User, UserSession
from app.reporting import APP_LOGGER
from tests.helpers import PASSWORD, AuthActions, add_user, config_for
from tests.pages import logged_in_as
from tests.servers import (
    BIN,
    GOOD_SETTINGS,
    ROOT,
    Browser,
    deploy_env,
    flask_command,
    http_get,
    problems_listed,
    run_gunicorn,
    warnings_listed,
)

NEW_PASSWORD = "a-brand-new-password"
# gunicorn.conf.py's default number of workers.
DEFAULT_WORKERS = 2 * (os.cpu_count() or 1)


IN_A_CONTAINER = (
    "(In a container, these are the container's own addresses: if its port is published "
    "on 127.0.0.1 only, as compose.yaml does, no other machine reaches it.)"
)


def open_to_the_network(bind: str) -> str:
    """The warning for gunicorn that other machines reach with no proxy in front."""
    return (
        f"GUNICORN_BIND={bind} listens on addresses other machines can reach, and "
        "PROXY_COUNT=0 says no proxy is in front. gunicorn's sync workers serve one request "
        "at a time each, so a few slow clients can tie them all up. Put nginx in front "
        "(deploy/nginx.conf), bind gunicorn to 127.0.0.1:8000 (the default) and set "
        f"PROXY_COUNT=1. {IN_A_CONTAINER}"
    )


def around_the_proxy(bind: str, proxy_count: int) -> str:
    """The warning for gunicorn that other machines reach without the counted proxy."""
    return (
        f"GUNICORN_BIND={bind} listens on addresses other machines can reach, around the "
        f"proxy that PROXY_COUNT={proxy_count} counts: they can send X-Forwarded-For "
        "themselves and pass for any address. If the proxy is on this machine, bind "
        "gunicorn to 127.0.0.1:8000 (the default); if not, let only the proxy reach that "
        f"port (a firewall). {IN_A_CONTAINER}"
    )


def unusable_bind(shown: str, reason: str) -> str:
    """The problem of a GUNICORN_BIND gunicorn can't start on (`shown`: as quoted)."""
    return (
        f"GUNICORN_BIND={shown} is not an address gunicorn can listen on ({reason}): use "
        "HOST:PORT (127.0.0.1:8000, the default when it is unset), [IPv6]:PORT or unix:PATH."
    )


EVERY_VISITOR_IS_THE_PROXY = (
    "the app takes every visitor for the proxy: they share one rate limit (one client's "
    "failed logins lock everyone out) and the log can't tell them apart"
)


def uncounted_proxy(details: str, note: Path, peer: str = "unknown") -> str:
    """The warning for requests that came with X-Forwarded-For while PROXY_COUNT
    was 0, from a `peer` on "this machine", on "another machine", or "unknown"."""
    said = (
        f"Requests with an X-Forwarded-For header reached the app while PROXY_COUNT was 0{details}."
    )
    set_it = "Set PROXY_COUNT to the number of proxies (1 behind deploy/nginx.conf)."
    return {
        "this machine": (
            f"{said} They came from this machine, where a proxy is in front: nginx, most "
            f"likely. So {EVERY_VISITOR_IS_THE_PROXY}. {set_it} If there is none (a test on "
            f"this machine sent the header itself), delete {note}."
        ),
        "another machine": (
            f"{said} They came from another machine: if it is a proxy in front (a load "
            f"balancer), {EVERY_VISITOR_IS_THE_PROXY}. {set_it} If there is none, a client "
            f"sent the header itself: delete {note}."
        ),
        "unknown": (
            f"{said} If a proxy such as nginx is in front, {EVERY_VISITOR_IS_THE_PROXY}. "
            f"{set_it} If there is none, a client sent the header itself: delete {note}."
        ),
    }[peer]


# The log's line, by where the request with X-Forwarded-For came from.
PROXY_LOG_MESSAGES = {
    "this machine": (
        "A request came with X-Forwarded-For from this machine, but PROXY_COUNT is 0: a "
        "proxy here (nginx, most likely) is in front, and the app sees every visitor at its "
        "address, under one rate limit. Set PROXY_COUNT (1 behind deploy/nginx.conf); "
        "`flask check-deploy` says so too. (Logged once per process.)"
    ),
    "another machine": (
        "A request came with X-Forwarded-For from another machine, but PROXY_COUNT is 0: "
        "if that is a proxy in front, the app sees every visitor at its address, under one "
        "rate limit, so set PROXY_COUNT to the number of proxies (if not, the client sent "
        "the header itself); `flask check-deploy` says so too. (Logged once per process.)"
    ),
    "unknown": (
        "A request came with X-Forwarded-For, but PROXY_COUNT is 0: if a proxy is in front, "
        "the app sees every visitor at the proxy's address, under one rate limit. Set "
        "PROXY_COUNT (1 behind deploy/nginx.conf); `flask check-deploy` says so too. "
        "(Logged once per process.)"
    ),
}
# gunicorn in these tests is reached on 127.0.0.1, as nginx on the same machine reaches it.
PROXY_LOG_MESSAGE = PROXY_LOG_MESSAGES["this machine"]


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess:
    """`flask check-deploy` as the admin runs it; never a traceback, whatever it finds."""
    result = flask_command(env, "check-deploy")
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


def passes_with(result: subprocess.CompletedProcess, warnings: list[str]) -> None:
    """check-deploy found no problem (exit 0) and printed exactly `warnings`."""
    assert result.returncode == 0, result.stdout + result.stderr
    assert warnings_listed(result) == warnings
    assert result.stdout.splitlines()[-1] == "No problems found."


# --- 1. check-deploy: where gunicorn listens (GUNICORN_BIND) ---------------------------


@pytest.mark.parametrize("bind", ["0.0.0.0:8000", "[::]:8000", ":8000", "tcp://0.0.0.0:8000"])
@pytest.mark.system
def test_check_deploy_warns_of_gunicorn_open_to_the_network_with_no_proxy(
    tmp_path, migrated_database_url, bind
):
    """Every interface, IPv4 or IPv6 (":8000" is every one too, to bind()), and
    PROXY_COUNT 0: a warning, not a problem (a test server may mean it)."""
    env = deploy_env(tmp_path, migrated_database_url, **GOOD_SETTINGS, GUNICORN_BIND=bind)
    passes_with(check_deploy(env), [open_to_the_network(bind)])


@pytest.mark.parametrize(
    "bind",
    [
        None,
        "",
        "127.0.0.1:8000",
        " localhost:8000 ",
        "127.0.0.2:80",
        "[::1]:8000",
        "unix:/run/blog.sock",
    ],
    ids=["unset", "blank", "default", "localhost", "127.0.0.2", "ipv6-loopback", "unix-socket"],
)
@pytest.mark.system
def test_check_deploy_says_nothing_of_a_bind_only_this_machine_reaches(
    tmp_path, migrated_database_url, bind
):
    """The whole of 127.0.0.0/8 is loopback; a Unix socket has no network address.
    Blank is unset, and spaces around it don't count, as in gunicorn.conf.py."""
    settings = GOOD_SETTINGS if bind is None else {**GOOD_SETTINGS, "GUNICORN_BIND": bind}
    env = deploy_env(tmp_path, migrated_database_url, **settings)
    assert ("GUNICORN_BIND" in env) == (bind is not None)
    passes_with(check_deploy(env), [])


@pytest.mark.system
def test_check_deploy_warns_of_gunicorn_reachable_around_the_counted_proxy(
    tmp_path, migrated_database_url
):
    """PROXY_COUNT=1 believes X-Forwarded-For: whoever reaches gunicorn directly
    chooses their address. Bound to loopback, only this machine's nginx can."""
    env = deploy_env(
        tmp_path, migrated_database_url, **GOOD_SETTINGS, PROXY_COUNT=1, GUNICORN_BIND="[::]:80"
    )
    passes_with(check_deploy(env), [around_the_proxy("[::]:80", 1)])

    env["GUNICORN_BIND"] = "127.0.0.1:8000"
    passes_with(check_deploy(env), [])


@pytest.mark.parametrize(
    ("bind", "problem"),
    [
        # One address only: gunicorn.conf.py doesn't split lists, and gunicorn
        # stops at once ("Error: '8000,0.0.0.0' is not a valid port number.").
        (
            "127.0.0.1:8000,0.0.0.0:9000",
            unusable_bind(
                "'127.0.0.1:8000,0.0.0.0:9000'", "'8000,0.0.0.0' is not a valid port number"
            ),
        ),
        (
            "8000",
            unusable_bind("'8000'", "a number alone is a host, not a port: write 127.0.0.1:8000"),
        ),
        (
            "no-such-host.invalid:8000",
            unusable_bind(
                "'no-such-host.invalid:8000'",
                "the host name 'no-such-host.invalid' can't be resolved",
            ),
        ),
    ],
    ids=["several", "port-alone", "unresolvable"],
)
@pytest.mark.system
def test_check_deploy_lists_a_bind_gunicorn_cannot_start_on(
    tmp_path, migrated_database_url, bind, problem
):
    """A problem (gunicorn won't serve), said before gunicorn is started; no warning."""
    env = deploy_env(tmp_path, migrated_database_url, **GOOD_SETTINGS, GUNICORN_BIND=bind)
    result = check_deploy(env)

    assert result.returncode == 1
    assert problems_listed(result) == [problem]
    assert warnings_listed(result) == []
    assert result.stderr.splitlines()[-1] == "Error: 1 problem(s) found."


@pytest.mark.system
def test_check_deploy_lists_a_worker_count_gunicorn_refuses(tmp_path, migrated_database_url):
    env = deploy_env(tmp_path, migrated_database_url, **GOOD_SETTINGS, WEB_CONCURRENCY="four")
    result = check_deploy(env)

    assert result.returncode == 1
    assert problems_listed(result) == [
        "WEB_CONCURRENCY='four' is not a whole number of at least 1: gunicorn.conf.py "
        "refuses to start with it."
    ]


@pytest.mark.parametrize(
    ("value", "workers", "shown"),
    [
        ("", DEFAULT_WORKERS, None),
        ("   ", DEFAULT_WORKERS, None),
        (" 3 ", 3, None),
        ("1", 1, None),
        ("0", DEFAULT_WORKERS, "'0'"),
        ("-2", DEFAULT_WORKERS, "'-2'"),
        ("1.5", DEFAULT_WORKERS, "'1.5'"),
        ("four", DEFAULT_WORKERS, "'four'"),
        # More digits than int() reads (4,300): gunicorn.conf.py refuses it too.
        ("9" * 5000, DEFAULT_WORKERS, "'" + "9" * 76 + "..."),
    ],
    ids=["blank", "spaces", "3", "1", "0", "negative", "fraction", "word", "huge"],
)
def test_the_worker_count_is_read_as_gunicorn_conf_reads_it(monkeypatch, value, workers, shown):
    """`shown`: the value as the problem quotes it; None if gunicorn.conf.py takes it."""
    monkeypatch.setenv("WEB_CONCURRENCY", value)
    assert gunicorn_workers() == workers
    if shown is None:
        assert gunicorn_workers_problem() is None
    else:
        assert gunicorn_workers_problem() == (
            f"WEB_CONCURRENCY={shown} is not a whole number of at least 1: "
            "gunicorn.conf.py refuses to start with it."
        )


# What gunicorn's own parser (gunicorn.util.parse_address) makes of each, and then
# where bind() puts it. None: an inherited socket, whose address nobody can tell.
REACHES_NETWORK = {
    "0.0.0.0:8000": True,
    "0.0.0.0": True,  # no port: gunicorn's default, 8000
    "[::]:8000": True,
    "[]:8000": True,  # "" is every interface
    "tcp://0.0.0.0:8000": True,
    "10.0.0.5:8000": True,
    "[::ffff:8.8.8.8]:80": True,
    "[fe80::1%lo]:8000": True,  # link-local: the machines on that link
    "127.0.0.1:8000": False,
    "127.0.0.2:80": False,
    "127.255.255.254:1": False,
    "LOCALHOST:8000": False,  # gunicorn lowercases the host
    "tcp://localhost": False,
    "[::1]:8000": False,
    "[::ffff:127.0.0.1]:8000": False,  # an IPv4 loopback address, written as IPv6
    "unix:/run/blog.sock": False,
    "unix:///run/blog.sock": False,
    "unix:": False,
    "fd://3": None,
}


@pytest.mark.parametrize(("bind", "reaches"), REACHES_NETWORK.items(), ids=list(REACHES_NETWORK))
def test_bind_reaches_network_reads_a_bind_as_gunicorn_does(bind, reaches):
    assert bind_reaches_network(bind) is reaches
    assert gunicorn_bind_problem(bind) is None


UNUSABLE = {
    "": ("''", "it is blank"),
    "127.0.0.1:": ("'127.0.0.1:'", "'' is not a valid port number"),
    "127.0.0.1:http": ("'127.0.0.1:http'", "'http' is not a valid port number"),
    "127.0.0.1:99999": ("'127.0.0.1:99999'", "99999 is not a port number"),
    "127.0.0.1:-1": ("'127.0.0.1:-1'", "-1 is not a port number"),
    "[::1": ("'[::1'", "'' is not a valid port number"),
    "fd://three": ("'fd://three'", "'three' is not a valid file descriptor"),
    "0.0.0.0:8000 127.0.0.1:8000": (
        "'0.0.0.0:8000 127.0.0.1:8000'",
        "'8000 127.0.0.1' is not a valid port number",
    ),
    "127.0.0.1 :8000": ("'127.0.0.1 :8000'", "the host name '127.0.0.1 ' can't be resolved"),
    "blog\n.example:80": (
        "'blog\\n.example:80'",
        "the host name 'blog\\n.example' can't be resolved",
    ),
    "ünïcode.invalid:80": (
        "'ünïcode.invalid:80'",
        "the host name 'ünïcode.invalid' can't be resolved",
    ),
    "x" * 5000 + ":80": (
        "'" + "x" * 76 + "...",
        "the host name '" + "x" * 76 + "... can't be resolved",
    ),
}


@pytest.mark.parametrize(("bind", "expected"), UNUSABLE.items(), ids=range(len(UNUSABLE)))
def test_a_bind_gunicorn_cannot_start_on_is_a_problem_never_an_exception(bind, expected):
    shown, reason = expected
    assert gunicorn_bind_problem(bind) == unusable_bind(shown, reason)


# --- 2. check-deploy: a proxy in front that PROXY_COUNT doesn't count -------------------


def proxy_log_lines(log_dir: Path) -> list[str]:
    """The log's lines that say a request came with X-Forwarded-For."""
    lines = (log_dir / "blog.log").read_text().splitlines()
    return [line for line in lines if "X-Forwarded-For" in line]


def noted_at(note: Path) -> str:
    """The time the note gives, as check-deploy prints it."""
    moment = datetime.fromisoformat(json.loads(note.read_text())["noted_at"])
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}"


@pytest.mark.system
def test_a_proxy_that_proxy_count_does_not_count_is_noted_for_check_deploy(
    tmp_path, fresh_database_url
):
    """gunicorn as nginx would reach it, PROXY_COUNT left at 0: once a request
    comes with X-Forwarded-For, the log says so (once per worker), a note lands
    in LOG_DIR, and check-deploy, another process, warns of it.

    Requests without the header leave nothing; the header's value (a client's
    choice) is in neither the note nor the log.
    """
    log_dir = tmp_path / "logs"
    note = log_dir / PROXY_NOTE
    env = deploy_env(tmp_path, fresh_database_url, **GOOD_SETTINGS)
    with run_gunicorn(env, tmp_path, app="blog:app", workers=1) as server:
        assert http_get(server.url + "/explore")[0] == 200
        assert not note.exists()
        passes_with(check_deploy(env), [])

        for _ in range(3):
            status, _, _ = http_get(server.url + "/explore", {"X-Forwarded-For": "203.0.113.77"})
            assert status == 200
        assert server.stop() == 0

    assert json.loads(note.read_text()).keys() == {"noted_at", "from"}
    assert json.loads(note.read_text())["from"] == "127.0.0.1"
    [line] = proxy_log_lines(log_dir)
    assert f" WARNING: {PROXY_LOG_MESSAGE} [in " in line
    assert "203.0.113.77" not in note.read_text() + (log_dir / "blog.log").read_text()

    details = f" (noted at {noted_at(note)} UTC, in a request from 127.0.0.1)"
    passes_with(check_deploy(env), [uncounted_proxy(details, note, "this machine")])
    # Once PROXY_COUNT counts the proxy, the note is old news.
    passes_with(check_deploy(env | {"PROXY_COUNT": "1"}), [])


@pytest.mark.system
def test_a_counted_proxy_leaves_no_note(tmp_path, fresh_database_url):
    log_dir = tmp_path / "logs"
    env = deploy_env(tmp_path, fresh_database_url, **GOOD_SETTINGS, PROXY_COUNT=1)
    with run_gunicorn(env, tmp_path, app="blog:app", workers=1) as server:
        status, _, _ = http_get(server.url + "/explore", {"X-Forwarded-For": "203.0.113.77"})
        assert status == 200
        assert server.stop() == 0

    assert not (log_dir / PROXY_NOTE).exists()
    assert proxy_log_lines(log_dir) == []
    passes_with(check_deploy(env), [])


@pytest.mark.system
def test_a_log_dir_that_cannot_be_written_still_serves_and_logs_the_proxy(
    tmp_path, fresh_database_url
):
    """LOG_TO_STDOUT, LOG_DIR below a regular file (no note can be written, even
    as root): the request is served all the same, and the log on stdout says it."""
    log_dir = tmp_path / "a-regular-file" / "logs"
    log_dir.parent.write_text("")
    env = deploy_env(
        tmp_path, fresh_database_url, **GOOD_SETTINGS, LOG_TO_STDOUT=1, LOG_DIR=log_dir
    )
    with run_gunicorn(env, tmp_path, app="blog:app", workers=1) as server:
        for _ in range(2):
            status, _, _ = http_get(server.url + "/explore", {"X-Forwarded-For": "203.0.113.77"})
            assert status == 200
        assert server.stop() == 0
        output = server.log()

    assert output.count(PROXY_LOG_MESSAGE) == 1, output
    assert "Traceback" not in output


def test_tests_leave_no_note(make_app, tmp_path):
    """Test apps send the header on purpose: no note, or it would land in the
    project's own logs/ and a developer's check-deploy would warn of it."""
    app = make_app(LOG_DIR=str(tmp_path))
    response = app.test_client().get("/explore", headers={"X-Forwarded-For": "203.0.113.77"})
    assert response.status_code == 200
    assert list(tmp_path.iterdir()) == []


# A test app that watches for X-Forwarded-For as the running app does (test
# apps don't: tests send the header on purpose).
WATCHING = {"NOTE_UNCOUNTED_PROXY": True}


class KeptRecords(logging.Handler):
    """Keeps the message of every record it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def app_log() -> Iterator[list[str]]:
    """The messages the app's logger is given during the test (the test app
    has no log file: `create_app` sets one up only outside tests)."""
    handler = KeptRecords()
    logger = logging.getLogger(APP_LOGGER)
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


def read_note(path: Path) -> dict[str, str]:
    """The note the app wrote, after checking that it holds a time and nothing
    but a time and the peer's address."""
    note = json.loads(path.read_text())
    assert note.keys() == {"noted_at", "from"}
    assert datetime.fromisoformat(note["noted_at"]).utcoffset() == timedelta(0)
    return note


PEERS = {
    "IPv4 loopback": ("127.0.0.1", "this machine"),
    "another loopback": ("127.200.0.9", "this machine"),
    "IPv6 loopback": ("::1", "this machine"),
    "mapped loopback": ("::ffff:127.0.0.1", "this machine"),
    "another host": ("203.0.113.5", "another machine"),
    "link-local with a zone": ("fe80::1%eth0", "another machine"),
    "mapped other host": ("::ffff:10.0.0.2", "another machine"),
    "no address (a Unix socket)": ("", "unknown"),
    "garbage": ("not an address", "unknown"),
    "loopback and a NUL": ("127.0.0.1\x00", "unknown"),
    "loopback and a line": ("127.0.0.1\nWARNING: forged", "unknown"),
    "huge": ("1" * 100_000, "unknown"),
}


@pytest.mark.parametrize(("peer", "where"), PEERS.values(), ids=list(PEERS))
def test_the_log_says_whether_the_forwarded_request_came_from_this_machine(
    make_app, tmp_path, app_log, peer, where
):
    """The peer (REMOTE_ADDR, from the server) on loopback is a proxy on this
    machine: nginx, most likely. Anything that isn't an IP address can't be
    placed; the note keeps at most 64 characters of it."""
    app = make_app(**WATCHING, LOG_DIR=str(tmp_path / "logs"))
    response = app.test_client().get(
        "/explore", headers={"X-Forwarded-For": "198.51.100.7"}, environ_base={"REMOTE_ADDR": peer}
    )
    assert response.status_code == 200
    assert app_log == [PROXY_LOG_MESSAGES[where]]
    assert read_note(tmp_path / "logs" / PROXY_NOTE)["from"] == peer[:64]


FORWARDED_FOR = {
    "empty": "",
    "NUL": "203.0.113.7\x00, 10.0.0.1",
    "lines": "203.0.113.7\r\nWARNING: forged",
    # As a WSGI server hands on bytes that aren't UTF-8: each byte a Latin-1 character.
    "not UTF-8": b"\xff\xfe203.0.113.7\xc3".decode("latin-1"),
    "huge": "203.0.113.7, " * 8_000,
}


@pytest.mark.parametrize("value", FORWARDED_FOR.values(), ids=list(FORWARDED_FOR))
def test_any_forwarded_for_value_is_served_noted_once_and_never_written(
    make_app, tmp_path, app_log, value
):
    """Whatever the header holds: the page, one line in the log, a note with
    the peer, and the value (a client's choice) in neither."""
    app = make_app(**WATCHING, LOG_DIR=str(tmp_path / "logs"))
    client = app.test_client()
    for _ in range(2):
        # As the environ, past the test client's own checks of header values.
        response = client.get("/explore", environ_overrides={"HTTP_X_FORWARDED_FOR": value})
        assert response.status_code == 200
    assert app_log == [PROXY_LOG_MESSAGE]
    note = tmp_path / "logs" / PROXY_NOTE
    assert read_note(note)["from"] == "127.0.0.1"
    assert "203.0.113.7" not in note.read_text()


@pytest.mark.parametrize("kind", ["below a regular file", "the note a folder"])
def test_a_note_that_cannot_be_written_never_fails_a_request(make_app, tmp_path, app_log, kind):
    """LOG_DIR that can't be made (even by root), or a folder where the note
    goes: the requests are served, and the log still says it, once."""
    if kind == "below a regular file":
        log_dir = tmp_path / "a-regular-file" / "logs"
        log_dir.parent.write_text("")
    else:
        log_dir = tmp_path / "logs"
        (log_dir / PROXY_NOTE).mkdir(parents=True)
    app = make_app(**WATCHING, LOG_DIR=str(log_dir))
    client = app.test_client()
    for _ in range(2):
        response = client.get("/explore", headers={"X-Forwarded-For": "203.0.113.77"})
        assert response.status_code == 200
    assert app_log == [PROXY_LOG_MESSAGE]


def test_a_counted_proxy_is_not_watched_for(make_app, tmp_path, app_log):
    app = make_app(**WATCHING, PROXY_COUNT=1, LOG_DIR=str(tmp_path))
    response = app.test_client().get("/explore", headers={"X-Forwarded-For": "203.0.113.77"})
    assert response.status_code == 200
    assert (app_log, list(tmp_path.iterdir())) == ([], [])


NOTED_PEERS = {
    "unreadable": (b'{"noted_at": "2026-05-02T10:\xff', "", "unknown"),
    "this machine": (
        b'{"noted_at": "2026-05-02T10:14:03+00:00", "from": "::1"}',
        " (noted at 2026-05-02 10:14:03 UTC, in a request from ::1)",
        "this machine",
    ),
    "another machine": (
        b'{"noted_at": "2026-05-02T10:14:03+00:00", "from": "10.0.0.2"}',
        " (noted at 2026-05-02 10:14:03 UTC, in a request from 10.0.0.2)",
        "another machine",
    ),
    "no address": (
        b'{"noted_at": "2026-05-02T10:14:03+00:00", "from": ""}',
        " (noted at 2026-05-02 10:14:03 UTC)",
        "unknown",
    ),
    "a number": (b'{"from": 2130706433}', "", "unknown"),
}


@pytest.mark.parametrize(("text", "details", "peer"), NOTED_PEERS.values(), ids=list(NOTED_PEERS))
@pytest.mark.system
def test_check_deploy_says_where_the_noted_request_came_from(
    tmp_path, migrated_database_url, text, details, peer
):
    """A note from this machine is a proxy here for sure; one from another
    machine may be a client's own header; one cut short by two workers
    writing at once, or not ours, still says a request came with the header."""
    note = tmp_path / "logs" / PROXY_NOTE
    note.parent.mkdir()
    note.write_bytes(text)
    env = deploy_env(tmp_path, migrated_database_url, **GOOD_SETTINGS)
    passes_with(check_deploy(env), [uncounted_proxy(details, note, peer)])


NOTES = {
    "ours": (
        '{"noted_at": "2026-05-02T10:14:03+00:00", "from": "127.0.0.1"}',
        " (noted at 2026-05-02 10:14:03 UTC, in a request from 127.0.0.1)",
    ),
    "another zone": (
        '{"noted_at": "2026-05-02T18:14:03+08:00", "from": "::1"}',
        " (noted at 2026-05-02 10:14:03 UTC, in a request from ::1)",
    ),
    "no address": (
        '{"noted_at": "2026-05-02T10:14:03+00:00", "from": ""}',
        " (noted at 2026-05-02 10:14:03 UTC)",
    ),
    "no zone": (
        '{"noted_at": "2026-05-02T10:14:03", "from": "10.0.0.2"}',
        " (in a request from 10.0.0.2)",
    ),
    "empty": ("", ""),
    "not json": ("proxy seen", ""),
    "a list": ('["2026-05-02T10:14:03+00:00", "127.0.0.1"]', ""),
    "wrong types": ('{"noted_at": 1746180843, "from": 2130706433}', ""),
    "nulls": ('{"noted_at": null, "from": null}', ""),
    "markup and lines": (
        '{"noted_at": "yesterday\\n", "from": "<b>127.0.0.1</b>\\nWARNING: x"}',
        "",
    ),
    "huge": (json.dumps({"noted_at": "9" * 100_000, "from": "1" * 100_000}), ""),
}


@pytest.mark.parametrize(("text", "details"), NOTES.values(), ids=list(NOTES))
def test_a_note_says_only_what_reads_as_a_time_and_an_address(tmp_path, text, details):
    note = tmp_path / PROXY_NOTE
    note.write_text(text)
    assert describe_proxy_note(read_proxy_note(note)) == details


def test_no_note_and_a_note_that_is_a_folder(tmp_path):
    note = tmp_path / PROXY_NOTE
    assert read_proxy_note(note) is None
    # LOG_DIR below a regular file: no note can be there.
    (tmp_path / "a-regular-file").write_text("")
    assert read_proxy_note(tmp_path / "a-regular-file" / PROXY_NOTE) is None
    note.mkdir()
    assert read_proxy_note(note) == {}


# --- 3. check-deploy: rate limits off, reset links over plain HTTP ----------------------


@pytest.mark.parametrize(
    ("settings", "warnings"),
    [
        (
            {"RATELIMIT_ENABLED": "0"},
            [
                "RATELIMIT_ENABLED is off: failed logins, password-reset requests and "
                "registrations are not limited, so passwords can be guessed as fast as the "
                "server answers."
            ],
        ),
        ({"RATELIMIT_ENABLED": "1"}, []),
        (
            {"BASE_URL": "http://blog.example.com"},
            [
                "BASE_URL starts with http://: the password-reset links in mails would carry "
                "their token over the network unencrypted, before any redirect to HTTPS. "
                "Use https://."
            ],
        ),
        ({"BASE_URL": "https://blog.example.com:8443/blog"}, []),
    ],
    ids=["rate-limits-off", "rate-limits-on", "base-url-http", "base-url-https"],
)
@pytest.mark.system
def test_check_deploy_warns_of_rate_limits_off_and_reset_links_over_http(
    tmp_path, migrated_database_url, settings, warnings
):
    env = deploy_env(tmp_path, migrated_database_url, **{**GOOD_SETTINGS, **settings})
    passes_with(check_deploy(env), warnings)


# --- 4. check-deploy: SESSION_COOKIE_SECURE before and after HTTPS ----------------------

COOKIES_NOT_YET_SECURE = (
    "SESSION_COOKIE_SECURE is off: right while the site is served over plain HTTP (with it "
    "on, browsers would never send the session cookie back, and every form would fail as "
    "expired), and cookies are Secure anyway on requests the app sees as HTTPS (behind a "
    "proxy, that needs PROXY_COUNT). Once the site is on HTTPS, set SESSION_COOKIE_SECURE=1 "
    "and BASE_URL=https://... in .env, and restart the app."
)
COOKIES_NOT_SECURE_ON_HTTPS = (
    "SESSION_COOKIE_SECURE is off, but BASE_URL says the site is served over HTTPS: set "
    "SESSION_COOKIE_SECURE=1, so that no cookie is ever sent over plain HTTP (without it, "
    "cookies are Secure only on requests the app sees as HTTPS, which behind a proxy needs "
    "PROXY_COUNT)."
)
RESET_LINKS_OVER_HTTP = (
    "BASE_URL starts with http://: the password-reset links in mails would carry their token "
    "over the network unencrypted, before any redirect to HTTPS. Use https://."
)


@pytest.mark.parametrize(
    ("settings", "problems", "warnings"),
    [
        ({"SESSION_COOKIE_SECURE": "", "BASE_URL": ""}, [], [COOKIES_NOT_YET_SECURE]),
        (
            {"SESSION_COOKIE_SECURE": "0", "BASE_URL": "http://blog.example.com"},
            [],
            [COOKIES_NOT_YET_SECURE, RESET_LINKS_OVER_HTTP],
        ),
        (
            {"SESSION_COOKIE_SECURE": "", "BASE_URL": "https://blog.example.com"},
            [COOKIES_NOT_SECURE_ON_HTTPS],
            [],
        ),
        (
            {"SESSION_COOKIE_SECURE": "off", "BASE_URL": "HTTPS://blog.example.com:8443/blog"},
            [COOKIES_NOT_SECURE_ON_HTTPS],
            [],
        ),
        ({"SESSION_COOKIE_SECURE": "1", "BASE_URL": ""}, [], []),
    ],
    ids=["plain-http", "http-base-url", "https-base-url", "https-upper-case", "secure"],
)
@pytest.mark.system
def test_check_deploy_wants_secure_cookies_once_the_site_is_on_https(
    tmp_path, migrated_database_url, settings, problems, warnings
):
    """A first deployment on plain HTTP passes with a warning (Secure cookies
    would break every form there); once BASE_URL says https://, cookies that
    aren't always Secure are a problem. TRUSTED_HOSTS keeps the reset links'
    own warning out of the way."""
    env = deploy_env(
        tmp_path,
        migrated_database_url,
        **{**GOOD_SETTINGS, "TRUSTED_HOSTS": "blog.example.com", **settings},
    )
    result = check_deploy(env)

    assert (problems_listed(result), warnings_listed(result)) == (problems, warnings)
    assert result.returncode == (1 if problems else 0), result.stdout + result.stderr


@pytest.mark.parametrize(
    ("base_url", "https"),
    [
        (None, False),
        ("", False),
        ("http://blog.example.com", False),
        ("https://blog.example.com", True),
        ("HTTPS://blog.example.com", True),
        ("https://blog.example.com:8443/blog", True),
        ("ftp://blog.example.com", False),
        ("//blog.example.com", False),
        ("blog.example.com", False),
    ],
)
def test_only_an_https_base_url_says_the_site_is_on_https(base_url, https):
    assert served_over_https({"BASE_URL": base_url}) is https


# --- 5. check-deploy: the files the app writes in LOG_DIR --------------------------------

NO_LOG = "the app would log nothing to it, not even the traceback of a 500."
ERRORS_IN_MEMORY = (
    "each worker would count errors in its own memory, and `flask errors` would list none of them."
)
# The files the running app writes in LOG_DIR, named as the app names them
# (concurrent-log-handler's lock: a dot, two underscores, no .log).
LOG_FILES = {"blog.log": "The log file", ".__blog.lock": "The log file's lock"}
STORE_FILES = dict.fromkeys(
    ["errors.sqlite3", "errors.sqlite3-wal", "errors.sqlite3-shm"], "Storm control's store"
)


def unwritable(what: str, path: Path, reason: str, user: str, chown: bool = False) -> str:
    """check-deploy's problem with a file the app writes that `user` can't write."""
    consequence = {
        "The log file": NO_LOG,
        "The log file's lock": (
            "the app takes it for each line it writes, so it would log nothing, not even the "
            "traceback of a 500."
        ),
        "Storm control's store": ERRORS_IN_MEMORY,
    }[what]
    problem = f"{what} {path} can't be written by {user} ({reason}): {consequence}"
    if chown:
        problem += f" If a command run as root made it: chown {user}: {path}"
    return problem


def log_settings(log_dir: Path, **settings: object) -> dict[str, object]:
    """The settings log_dir_problems reads: a log file and no Redis, unless `settings` say."""
    return {
        "LOG_DIR": str(log_dir),
        "LOG_FILE": "blog.log",
        "LOG_TO_STDOUT": False,
        "REDIS_URL": None,
        **settings,
    }


@pytest.mark.system
def test_check_deploy_lists_the_files_a_command_run_as_root_left_in_log_dir(
    tmp_path, migrated_database_url
):
    """The first deployment's trap: `flask` commands run as root before the
    service's user existed made the log, its lock and storm control's store;
    the service, another user, then logs nothing. check-deploy, run as that
    user, names each file, and passes once they are given back.

    The files are the app's own, made by `flask test-error` (the log line and
    the error store), then given to another user (nobody). The tests run as
    root, whom permission bits don't stop: check-deploy then runs without the
    capabilities that let root write other users' files (setpriv), as an
    ordinary user would be stopped. (Run as another user, the tests make the
    files read-only instead.)
    """
    log_dir = tmp_path / "logs"
    env = deploy_env(tmp_path, migrated_database_url, **{**GOOD_SETTINGS, "REDIS_URL": ""})
    made = flask_command(env | {"MAIL_SERVER": "", "ADMINS": ""}, "test-error")
    assert made.returncode == 0, made.stdout + made.stderr
    files = {name: log_dir / name for name in [*LOG_FILES, *STORE_FILES]}
    existing = {name: path for name, path in files.items() if path.exists()}
    # SQLite removes its -wal and -shm files when the last connection closes.
    assert set(existing) >= {"blog.log", ".__blog.lock", "errors.sqlite3"}
    contents = {name: path.read_bytes() for name, path in existing.items()}
    command = [BIN / "flask", "check-deploy"]
    if os.geteuid() == 0:
        for path in existing.values():
            os.chown(path, NOBODY, NOBODY)
        command = [*WITHOUT_ROOTS_OVERRIDES, *command]
    else:
        for path in existing.values():
            path.chmod(0o444)
    user = pwd.getpwuid(os.geteuid()).pw_name

    def check() -> subprocess.CompletedProcess:
        """check-deploy, run as a user who can't write the files given away."""
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )

    result = check()
    assert result.returncode == 1, result.stdout + result.stderr
    denied = os.strerror(errno.EACCES)
    assert problems_listed(result) == [
        unwritable({**LOG_FILES, **STORE_FILES}[name], path, denied, user, chown=True)
        for name, path in existing.items()
    ]
    assert "Traceback" not in result.stderr
    # The check wrote nothing into them.
    assert {name: path.read_bytes() for name, path in existing.items()} == contents

    # What the problem says to do: give the files to the user who runs the app.
    for path in existing.values():
        os.chown(path, os.geteuid(), os.getegid())
        path.chmod(0o644)
    result = check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert problems_listed(result) == []


# Root without the capabilities that let it write, read and change other users'
# files: permission bits and owners then stop it as they stop anyone else.
WITHOUT_ROOTS_OVERRIDES = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]
NOBODY = 65534  # the user and group "nobody" on Debian


def test_what_stops_root_too_is_listed_for_each_file(tmp_path):
    """A folder where a file should be, a symbolic link to where nothing can be
    made, a named pipe (which must not hold the check up): each stops any
    user, root included, and each is named with the system's reason."""
    (tmp_path / "blog.log").mkdir()
    (tmp_path / ".__blog.lock").symlink_to("/proc/blog-lock")
    os.mkfifo(tmp_path / "errors.sqlite3")
    (tmp_path / "errors.sqlite3-wal").mkdir()
    user = pwd.getpwuid(os.geteuid()).pw_name

    assert log_dir_problems(log_settings(tmp_path)) == [
        unwritable("The log file", tmp_path / "blog.log", os.strerror(errno.EISDIR), user),
        unwritable(
            "The log file's lock",
            tmp_path / ".__blog.lock",
            "a symbolic link to /proc/blog-lock, which can't be made",
            user,
        ),
        unwritable(
            "Storm control's store",
            tmp_path / "errors.sqlite3",
            os.strerror(errno.ENXIO),  # a pipe with no reader, opened without waiting
            user,
        ),
        unwritable(
            "Storm control's store",
            tmp_path / "errors.sqlite3-wal",
            os.strerror(errno.EISDIR),
            user,
        ),
    ]
    # The log on stdout: its files aren't checked. Redis: nor are the store's.
    assert log_dir_problems(log_settings(tmp_path, LOG_TO_STDOUT=True)) == [
        unwritable("Storm control's store", path, os.strerror(code), user)
        for path, code in [
            (tmp_path / "errors.sqlite3", errno.ENXIO),
            (tmp_path / "errors.sqlite3-wal", errno.EISDIR),
        ]
    ]
    assert log_dir_problems(log_settings(tmp_path, REDIS_URL="redis://127.0.0.1/0")) == [
        unwritable("The log file", tmp_path / "blog.log", os.strerror(errno.EISDIR), user),
        unwritable(
            "The log file's lock",
            tmp_path / ".__blog.lock",
            "a symbolic link to /proc/blog-lock, which can't be made",
            user,
        ),
    ]


def test_files_that_can_be_written_or_made_are_no_problem(tmp_path):
    """Files the user can write, a symbolic link to a file that can be made
    (the app would make it: the check doesn't), and none at all."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    (log_dir / "blog.log").symlink_to(elsewhere / "blog.log")
    (log_dir / ".__blog.lock").write_text("")
    (log_dir / "errors.sqlite3").write_bytes(b"SQLite format 3\x00")

    assert log_dir_problems(log_settings(log_dir)) == []
    assert list(elsewhere.iterdir()) == []
    assert sorted(path.name for path in log_dir.iterdir()) == [
        ".__blog.lock",
        "blog.log",
        "errors.sqlite3",
    ]
    assert log_dir_problems(log_settings(tmp_path / "new" / "logs")) == []


@pytest.mark.parametrize(
    ("log_file", "lock"),
    [("blog.log", ".__blog.lock"), ("site.txt", ".__site.txt.lock"), ("a/b.log", "a/.__b.lock")],
)
def test_the_lock_checked_is_the_one_the_log_file_takes(tmp_path, log_file, lock):
    """concurrent-log-handler names the lock after the log file: the lock is
    found whatever LOG_FILE is."""
    (tmp_path / lock).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / lock).mkdir()
    user = pwd.getpwuid(os.geteuid()).pw_name
    assert log_dir_problems(log_settings(tmp_path, LOG_FILE=log_file)) == [
        unwritable("The log file's lock", tmp_path / lock, os.strerror(errno.EISDIR), user)
    ]


def test_nothing_is_checked_or_made_with_the_log_on_stdout_and_redis(tmp_path):
    """LOG_TO_STDOUT and REDIS_URL: the app needs nothing in LOG_DIR (the
    proxy note fails quietly), so LOG_DIR isn't made, nor must it be writable."""
    log_dir = tmp_path / "a-regular-file" / "logs"
    log_dir.parent.write_text("")
    settings = log_settings(log_dir, LOG_TO_STDOUT=True, REDIS_URL="redis://127.0.0.1/0")
    assert log_dir_problems(settings) == []
    settings = log_settings(tmp_path / "logs", LOG_TO_STDOUT=True, REDIS_URL="redis://127.0.0.1/0")
    assert log_dir_problems(settings) == []
    assert not (tmp_path / "logs").exists()


# --- 6. flask users set-password ----------------------------------------------------------


def set_password(
    env: dict[str, str], *args: str | bytes, stdin: bytes
) -> subprocess.CompletedProcess:
    """`flask users set-password ARGS` as a script runs it, the password on stdin.

    In a session of its own: no controlling terminal, which the password prompt
    would otherwise read (getpass opens /dev/tty) instead of stdin.
    """
    return subprocess.run(
        [BIN / "flask", "users", "set-password", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        timeout=60,
        start_new_session=True,
    )


def log_in(browser: Browser, username: str, password: str) -> bool:
    """Log in through the real form; True if it let us in."""
    status, headers, _ = browser.submit("/auth/login", {"username": username, "password": password})
    return (status, headers.get("Location")) == (302, "/")


@pytest.mark.system
def test_set_password_lets_the_new_password_in_and_ends_every_login(tmp_path, fresh_database_url):
    """The whole story, with the real server and the real command: Alice is
    logged in (one browser remembered); the admin sets her a new password from
    the server; both browsers are logged out, the old password no longer works
    and the new one does. (Cookies not Secure-only: the browser speaks plain HTTP.)"""
    env = deploy_env(tmp_path, fresh_database_url)
    with run_gunicorn(env, tmp_path, app="blog:app") as server:
        app = create_app(config_for(fresh_database_url))
        with app.app_context():
            add_user("alice")
            db.engine.dispose()
        browser, remembered = Browser(server.url), Browser(server.url)
        assert log_in(browser, "alice", PASSWORD)
        status, headers, _ = remembered.submit(
            "/auth/login", {"username": "alice", "password": PASSWORD, "remember_me": "y"}
        )
        assert (status, headers["Location"]) == (302, "/")
        assert (
            logged_in_as(browser.request("/explore")[2])
            == logged_in_as(remembered.request("/explore")[2])
            == "alice"
        )

        result = set_password(env, "ALICE", stdin=f"{NEW_PASSWORD}\n{NEW_PASSWORD}\n".encode())

        assert result.returncode == 0, result.stderr
        assert result.stdout.decode() == (
            "Password set for alice; every login of theirs has been ended.\n"
        )
        assert NEW_PASSWORD not in (result.stdout + result.stderr).decode()
        assert logged_in_as(browser.request("/explore")[2]) is None
        assert logged_in_as(remembered.request("/explore")[2]) is None
        assert not log_in(Browser(server.url), "alice", PASSWORD)
        assert log_in(Browser(server.url), "alice", NEW_PASSWORD)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        ((b"nobody",), b"", "There is no user named 'nobody'."),
        # Not UTF-8 on the command line: Python reads it with a surrogate.
        ((b"al\xffice",), b"", "There is no user named 'al\\udcffice'."),
        ((b"alice\x1b[2J",), b"", "There is no user named 'alice\\x1b[2J'."),
        (
            (b"alice",),
            b"\xff\xfe-not-utf-8\n\xff\xfe-not-utf-8\n",
            "The password is not UTF-8 text. Nothing was changed.",
        ),
        (
            (b"alice",),
            b"short\nshort\n",
            "The password is too short: at least 8 characters. Nothing was changed.",
        ),
    ],
    ids=["unknown", "not-utf-8-name", "escape-sequence", "not-utf-8-password", "too-short"],
)
@pytest.mark.system
def test_set_password_refuses_from_the_command_line_without_a_traceback(
    tmp_path, migrated_database_url, args, stdin, message
):
    """What only a real command line and a real stdin can send."""
    app = create_app(config_for(migrated_database_url))
    with app.app_context():
        user = add_user("alice")
        hash_before = user.password_hash
    env = deploy_env(tmp_path, migrated_database_url)
    result = set_password(env, *args, stdin=stdin)

    assert result.returncode == 1
    assert result.stderr.decode().splitlines()[-1] == f"Error: {message}"
    assert "Traceback" not in result.stderr.decode()
    assert result.stdout == b""
    with app.app_context():
        assert db.session.scalar(User.select_by_username("alice")).password_hash == hash_before
        db.engine.dispose()


def invoke_set_password(app, name: str, *answers: str):
    """`flask users set-password NAME` through Flask's CLI runner, typing `answers`."""
    answers_typed = "".join(f"{answer}\n" for answer in answers)
    return app.test_cli_runner().invoke(args=["users", "set-password", name], input=answers_typed)


def password_hash_of(app, name: str) -> str:
    """The password hash stored for the user `name`."""
    with app.app_context():
        return db.session.scalar(User.select_by_username(name)).password_hash


PROMPTS = "New password: \nRepeat for confirmation: \n"


@pytest.mark.parametrize(
    "name", ["admin", "ADMIN", " Admin ", "admin\n", "\uff41\uff44\uff4d\uff49\uff4e"]
)
def test_set_password_finds_the_user_as_the_login_form_does(app, users, name):
    """Case, full-width letters and spaces around it (a line break is one), as
    logging in ignores them."""
    result = invoke_set_password(app, name, NEW_PASSWORD, NEW_PASSWORD)

    assert result.exit_code == 0, result.output
    assert (
        result.output == PROMPTS + "Password set for admin; every login of theirs has been ended.\n"
    )
    with app.app_context():
        admin = db.session.get(User, users["admin"])
        assert admin.check_password(NEW_PASSWORD)
        assert not db.session.get(User, users["admin1"]).check_password(NEW_PASSWORD)


def test_set_password_ends_a_login_of_the_test_client(app, users):
    """The same through the test client: its session cookie names an ended login."""
    client = app.test_client()
    auth = AuthActions(client)
    assert auth.login("admin").status_code == 302
    assert "Log out" in client.get("/explore").text

    assert invoke_set_password(app, "admin", NEW_PASSWORD, NEW_PASSWORD).exit_code == 0

    assert "Log out" not in client.get("/explore").text
    assert auth.login("admin", PASSWORD).status_code == 200  # the form again: refused
    assert auth.login("admin", NEW_PASSWORD).status_code == 302


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("nobody", "'nobody'"),
        ("", "''"),
        ("   ", "'   '"),
        ("ad\x00min", "'ad\\x00min'"),
        ("ad\x1b[31mmin", "'ad\\x1b[31mmin'"),
        ("ad\u202emin", "'ad\\u202emin'"),
        ("\udcff", "'\\udcff'"),
        ("a" * 65, "'" + "a" * 65 + "'"),
        ("a" * 100_000, "'" + "a" * 76 + "..."),
    ],
    ids=[
        "unknown",
        "empty",
        "spaces",
        "nul",
        "escape",
        "bidi",
        "surrogate",
        "65",
        "huge",
    ],
)
def test_set_password_refuses_a_name_no_account_has(app, users, name, shown):
    """A message and exit status 1, before any password is asked for; never a traceback."""
    result = invoke_set_password(app, name, NEW_PASSWORD, NEW_PASSWORD)

    assert result.exit_code == 1
    assert result.output == f"Error: There is no user named {shown}.\n"
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("1234567", "The password is too short: at least 8 characters."),
        ("p" * 129, "The password is too long: at most 128 characters."),
        (" " * 8, "The password is only spaces."),
        ("\t" * 10, "The password is only spaces."),
        ("pass\x00word", "The password has a NUL character, which no login form can send."),
    ],
    ids=["7", "129", "spaces", "tabs", "nul"],
)
def test_set_password_refuses_what_the_reset_form_refuses(app, users, password, message):
    before = password_hash_of(app, "admin")
    result = invoke_set_password(app, "admin", password, password)

    assert result.exit_code == 1
    assert result.output == PROMPTS + f"Error: {message} Nothing was changed.\n"
    assert password_hash_of(app, "admin") == before


def test_set_password_refuses_a_password_that_is_not_utf8(app, users):
    """Bytes that aren't UTF-8 on stdin: the prompt can't read them (strict
    decoding), or reads them as surrogates (the C locale); refused either way."""
    before = password_hash_of(app, "admin")
    typed = b"p\xffssword\np\xffssword\n"
    result = app.test_cli_runner().invoke(args=["users", "set-password", "admin"], input=typed)

    assert result.exit_code == 1
    assert result.output == (
        "New password: \nError: The password is not UTF-8 text. Nothing was changed.\n"
    )
    assert password_problem("p\udcffssword") == "The password is not UTF-8 text."
    assert password_hash_of(app, "admin") == before


@pytest.mark.parametrize("length", [8, 128])
def test_set_password_takes_the_lengths_the_reset_form_takes(app, users, length):
    password = "p" * length
    assert invoke_set_password(app, "admin", password, password).exit_code == 0
    client = app.test_client()
    assert AuthActions(client).login("admin", password).status_code == 302


def test_set_password_asks_again_when_the_two_differ(app, users):
    """click's confirmation: it says so and asks again; at the end of the input
    (a script, or Ctrl-D) it gives up, and nothing changes."""
    before = password_hash_of(app, "admin")
    result = invoke_set_password(app, "admin", NEW_PASSWORD, NEW_PASSWORD + "!")

    assert result.exit_code == 1
    assert result.output == (
        PROMPTS + "Error: The two entered values do not match.\nNew password: \n\nAborted!\n"
    )
    assert password_hash_of(app, "admin") == before

    result = invoke_set_password(
        app, "admin", "first-try-1", "first-try-2", NEW_PASSWORD, NEW_PASSWORD
    )
    assert result.exit_code == 0
    assert result.output == (
        PROMPTS
        + "Error: The two entered values do not match.\n"
        + PROMPTS
        + "Password set for admin; every login of theirs has been ended.\n"
    )


# --- 7. flask shell --------------------------------------------------------------------


def test_the_shell_starts_with_the_database_and_the_models(app):
    """Flask-SQLAlchemy adds `db` and every model (SQLAlchemy(add_models_to_shell=True))."""
    with app.app_context():
        names = app.make_shell_context()
    assert names == {
        "app": app,
        "g": g,
        "db": db,
        "User": User,
        "Post": Post,
        "UserSession": UserSession,
    }


@pytest.mark.system
def test_flask_shell_has_db_user_and_post_ready(tmp_path, migrated_database_url):
    """`flask shell` as an admin starts it, reading what is typed from stdin."""
    app = create_app(config_for(migrated_database_url))
    with app.app_context():
        add_user("alice")
        db.engine.dispose()
    env = deploy_env(tmp_path, migrated_database_url)
    typed = "print(type(db).__name__, User.__name__, Post.__name__)\n"
    typed += "print(db.session.scalars(db.select(User.username)).all())\n"
    result = subprocess.run(
        [BIN / "flask", "shell"],
        cwd=ROOT,
        env=env,
        input=typed,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == ">>> SQLAlchemy User Post\n>>> ['alice']\n>>> "

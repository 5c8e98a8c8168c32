"""The admin's commands in app/commands.py: what `flask check-deploy` says about
how gunicorn is reached (its bind address, a proxy that PROXY_COUNT doesn't
count) and about the rate limits and reset links; `flask users set-password`;
the names `flask shell` starts with. (Its other checks: tests/test_deploy.py.)

Each command is run the way an admin runs it, `flask` in a subprocess in the
project's folder, against a database of the test's own; a proxy is noticed by
a real gunicorn, and check-deploy then reads what it noted in the same LOG_DIR.
The many hostile values of the smaller pieces (gunicorn's bind syntax, the
note's contents, names and passwords) are tried in-process, where one
costs milliseconds: with Flask's CLI runner, or the functions themselves.
"""

import json
import os
import subprocess
from datetime import UTC, datetime
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
    password_problem,
    read_proxy_note,
)
from app.extensions import db
from app.models import Post, User, UserSession
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


def uncounted_proxy(details: str, note: Path) -> str:
    """The warning for requests that came with X-Forwarded-For while PROXY_COUNT was 0."""
    return (
        f"Requests with an X-Forwarded-For header reached the app while PROXY_COUNT was "
        f"0{details}. If a proxy such as nginx is in front, the app takes every visitor for "
        "the proxy: they share one rate limit (one client's failed logins lock everyone "
        "out) and the log can't tell them apart. Set PROXY_COUNT to the number of proxies "
        f"(1 behind deploy/nginx.conf). If there is none, a client sent the header itself: "
        f"delete {note}."
    )


PROXY_LOG_MESSAGE = (
    "A request came with X-Forwarded-For, but PROXY_COUNT is 0: if a proxy is in front, "
    "the app sees every visitor at the proxy's address, under one rate limit. Set "
    "PROXY_COUNT (1 behind deploy/nginx.conf); `flask check-deploy` says so too. "
    "(Logged once per process.)"
)


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
    passes_with(check_deploy(env), [uncounted_proxy(details, note)])
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


@pytest.mark.system
def test_check_deploy_warns_of_a_note_it_cannot_read(tmp_path, migrated_database_url):
    """Cut short by two workers writing at once, or not ours: it still says a
    request came with the header, with no time and no address."""
    note = tmp_path / "logs" / PROXY_NOTE
    note.parent.mkdir()
    note.write_bytes(b'{"noted_at": "2026-05-02T10:\xff')
    env = deploy_env(tmp_path, migrated_database_url, **GOOD_SETTINGS)
    passes_with(check_deploy(env), [uncounted_proxy("", note)])


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


# --- 4. flask users set-password ----------------------------------------------------------


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


# --- 5. flask shell --------------------------------------------------------------------


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

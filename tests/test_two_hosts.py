"""The blog on two hosts sharing one Redis (REDIS_URL): storm control and the
rate limits count across both, and an outage of Redis loses no request.

A "host" here is a gunicorn of its own (two workers) with a log directory of
its own, as on two machines; both serve the same database. With REDIS_URL set,
storm control keeps its groups in Redis instead of the SQLite file in LOG_DIR
(app/reporting/storm.py), and Flask-Limiter counts failed logins there instead
of in each worker's memory (config.py, app/security.py).

The tests that share tests/servers.py's REDIS_URL (a database of the test
suite's own) empty it before and after. The outage test starts a redis-server
of its own, kills it in the middle of the traffic and starts it again on the
same port.

Nothing here measures time: a timeout only bounds a test that is already
failing, and the bounds on how often an outage is logged are worked out from
how long the outage lasted.
"""

import json
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import pytest
import redis

from tests.pages import assert_login_failed, assert_too_many_requests, fail_to_log_in
from tests.servers import (
    REDIS_URL,
    Browser,
    Gunicorn,
    Mailbox,
    env_settings,
    free_port,
    production_env,
    run_gunicorn,
    smtp_server,
    wait_until,
)

# Every test here starts real servers or processes: `make test-fast` skips them.
pytestmark = pytest.mark.system

ADMIN = "admin@example.com"
PREFIX = "[Blog]"  # the default MAIL_SUBJECT_PREFIX
WINDOW = 3  # MAIL_ERROR_WINDOW, seconds; also the store's retry delay (min(60, window))
WORKERS = 2  # per host
DIVISION = f"{PREFIX} ZeroDivisionError: division by zero (error "
MISSING_KEY = f"{PREFIX} KeyError: 'missing' (error "
SERVER_ERROR = "<h1>An unexpected error has occurred</h1>"
LIMITER_FALLBACK = "Rate limit storage unreachable - falling back to in-memory storage"
# The first line of a log record ("<time> LEVEL: message [in file:line] [request ...]").
RECORD = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+): (?P<message>.*) "
    r"\[in [^\]]+:\d+\] \[request .*\]$"
)
SEE_TRACEBACK = re.compile(r" \[traceback: see request [^\]]+\]$")


# --- Hosts, Redis and what they say -------------------------------------------


@dataclass
class Host:
    """One of the two hosts: its gunicorn and the folder it logs to."""

    name: str
    server: Gunicorn
    log_dir: Path

    @property
    def url(self) -> str:
        """Where its gunicorn answers."""
        return self.server.url

    def log(self) -> str:
        """Its log file, blog.log (not the rotated copies)."""
        return (self.log_dir / "blog.log").read_text()

    def problems(self) -> list[str]:
        """The log's WARNING, ERROR and CRITICAL records: "LEVEL: message".

        Without the pointer a repeated exception's line carries instead of its
        traceback ("[traceback: see request <id>]"): which line has the
        traceback depends on which worker served which request.
        """
        found = []
        for line in self.log().splitlines():
            record = RECORD.match(line)
            if record and record["level"] in ("WARNING", "ERROR", "CRITICAL"):
                message = SEE_TRACEBACK.sub("", record["message"])
                found.append(f"{record['level']}: {message}")
        return found


@contextmanager
def two_hosts(tmp_path: Path, database_url: str, **settings: object) -> Iterator[list[Host]]:
    """Two gunicorns on one database, each logging to a folder of its own."""
    # Blank rather than absent where not given: a developer's .env must not
    # fill them in (config.py loads it, and it only sets absent variables).
    settings = {"REDIS_URL": "", "RATELIMIT_STORAGE_URI": "", **settings}
    hosts: list[Host] = []
    with ExitStack() as stack:
        for name in ("host-a", "host-b"):
            folder = tmp_path / name
            folder.mkdir()
            env = production_env(folder, database_url, **settings)
            # The first one migrates the database, the second finds it ready.
            server = stack.enter_context(
                run_gunicorn(env, folder, workers=WORKERS, upgrade=not hosts)
            )
            hosts.append(Host(name, server, folder / "logs"))
        yield hosts


def stop(hosts: list[Host]) -> None:
    """Stop both hosts as systemd does: their workers finish what they queued,
    and nothing more is written to their logs after this."""
    for host in hosts:
        assert host.server.stop() == 0, host.server.log()


def mail_settings(smtp) -> dict[str, str]:
    """The settings that mail ADMIN through `smtp`, with storm control's window at WINDOW."""
    return {"ADMINS": ADMIN, "MAIL_ERROR_WINDOW": str(WINDOW), **env_settings(smtp.settings)}


@pytest.fixture
def shared_redis() -> Iterator[redis.Redis]:
    """The test suite's Redis database (REDIS_URL), emptied before and after."""
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    client.flushdb()
    try:
        yield client
    finally:
        client.flushdb()
        client.close()


class PrivateRedis:
    """A redis-server of the test's own, on a port of its own, that it may kill."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it, on the same port as before if it ran already, and wait until it answers."""
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        with open(self.folder / f"redis-{self.port}.out", "a") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        wait_until(self.answers, message=f"redis-server on port {self.port}")

    def kill(self) -> None:
        """Stop it as a crash would: no goodbye to its clients."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def answers(self) -> bool:
        """Whether it answers a PING; fail the test if it exited instead."""
        client = redis.Redis(port=self.port, socket_connect_timeout=1, socket_timeout=1)
        try:
            return client.ping()
        except redis.RedisError:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.process.returncode}") from None
            return False
        finally:
            client.close()

    def client(self) -> redis.Redis:
        """A client for it, to look at what the hosts stored."""
        return redis.Redis(port=self.port, decode_responses=True)


@pytest.fixture
def private_redis(tmp_path) -> Iterator[PrivateRedis]:
    """A PrivateRedis, started; killed after the test if it is still running."""
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


def stored_groups(client: redis.Redis) -> dict[str, dict[str, str]]:
    """Storm control's groups in Redis (RedisGroups' layout), by title."""
    groups = {}
    for key in client.smembers("blog:errors"):
        fields = client.hgetall(f"blog:errors:{key}")
        groups[fields["title"]] = fields
    return groups


def fail(host: Host, path: str = "/_test/fail") -> str:
    """Hit a bug on `host`: the 500 page; return its reference."""
    status, headers, page = Browser(host.url).request(path)
    assert status == 500, page
    assert SERVER_ERROR in page
    return headers["X-Request-ID"]


def mails_about(mailbox: Mailbox, subject_start: str) -> tuple[list[str], list[str]]:
    """The subjects of the mails about one bug: (first mails, summaries)."""
    subjects = [m["Subject"] for m in mailbox.messages if m["Subject"].startswith(subject_start)]
    summaries = [subject for subject in subjects if subject.endswith(" times]")]
    return [subject for subject in subjects if subject not in summaries], summaries


def summary_of(message: EmailMessage, count: int) -> str:
    """The subject of the summary of `count` more occurrences after `message`."""
    return f"{message['Subject']} [repeated {count} times]"


# --- Storm control across hosts -------------------------------------------------


def test_twenty_errors_on_two_hosts_make_one_mail_and_one_summary(
    tmp_path, fresh_database_url, shared_redis
):
    with (
        smtp_server("plain", tmp_path) as smtp,
        two_hosts(
            tmp_path, fresh_database_url, REDIS_URL=REDIS_URL, **mail_settings(smtp)
        ) as hosts,
    ):
        references = [fail(hosts[number % 2]) for number in range(20)]

        first, summary = smtp.mailbox.wait_for(2, timeout=30)
        assert first["Subject"] in {f"{DIVISION}{reference})" for reference in references}
        assert summary["Subject"] == summary_of(first, 19)
        assert summary.get_content().startswith("This error happened 19 more times")
        # A summary check runs every WINDOW / 4 seconds in every worker of
        # both hosts: after a few more of them, still nothing else.
        time.sleep(2)
        assert len(smtp.mailbox.messages) == 2

        stop(hosts)
        assert len(smtp.mailbox.messages) == 2
    [group] = stored_groups(shared_redis).values()
    assert group["title"] == "ZeroDivisionError: division by zero"
    assert (group["total"], group["unreported"], group["mail"]) == ("20", "0", "sent")
    # Storm control holds back mail, not log lines: each host logged its ten.
    for host in hosts:
        assert host.problems() == ["ERROR: Exception on /_test/fail [GET]"] * 10
        assert not (host.log_dir / "errors.sqlite3").exists()


def test_without_redis_each_host_mails_its_own(tmp_path, fresh_database_url):
    """What REDIS_URL buys: without it, each host's store is a file in its own
    LOG_DIR, so the same storm is one mail and one summary per host."""
    with (
        smtp_server("plain", tmp_path) as smtp,
        two_hosts(tmp_path, fresh_database_url, **mail_settings(smtp)) as hosts,
    ):
        for number in range(20):
            fail(hosts[number % 2])

        smtp.mailbox.wait_for(4, timeout=30)
        time.sleep(2)  # a few more summary checks, for a fifth mail to show up if one would
        stop(hosts)
        firsts, summaries = mails_about(smtp.mailbox, DIVISION)
        assert len(smtp.mailbox.messages) == 4
    assert len(firsts) == 2
    assert sorted(summaries) == sorted(f"{subject} [repeated 9 times]" for subject in firsts)
    for host in hosts:
        assert (host.log_dir / "errors.sqlite3").exists()
        assert host.problems() == ["ERROR: Exception on /_test/fail [GET]"] * 10


# --- Rate limits across hosts ---------------------------------------------------


def test_the_per_client_login_limit_counts_on_both_hosts(
    tmp_path, fresh_database_url, shared_redis
):
    """Five failures a minute from one address, wherever they land.

    Counted in each worker's memory, the four workers would let 20 through.
    """
    limits = {
        "AUTH_RATE_LIMIT_PER_CLIENT": "5 per minute",
        "AUTH_RATE_LIMIT_PER_ACCOUNT": "100 per minute",
    }
    with two_hosts(tmp_path, fresh_database_url, REDIS_URL=REDIS_URL, **limits) as hosts:
        browsers = [Browser(host.url) for host in hosts]
        for attempt in range(1, 10):
            response = fail_to_log_in(browsers[attempt % 2], f"someone-{attempt}")
            if attempt <= 5:
                assert_login_failed(response)
            else:
                assert_too_many_requests(response)
        # Only the failed logins counted: pages are still served on both.
        for browser in browsers:
            assert browser.request("/explore")[0] == 200
            assert browser.request("/auth/login")[0] == 200
        stop(hosts)
    assert shared_redis.keys("LIMITS*") != []
    for host in hosts:
        assert host.problems() == []


class BrowserAt(Browser):
    """A browser at `address`, as the app sees it behind one proxy (PROXY_COUNT=1)."""

    def __init__(self, base_url: str, address: str):
        super().__init__(base_url)
        self.address = address

    def request(self, path, data=None, headers=None):
        return super().request(path, data, {"X-Forwarded-For": self.address, **(headers or {})})


def test_the_per_account_login_limit_counts_on_both_hosts(
    tmp_path, fresh_database_url, shared_redis
):
    """Three failures a minute for one account, from any address, on any host."""
    limits = {
        "AUTH_RATE_LIMIT_PER_CLIENT": "100 per minute",
        "AUTH_RATE_LIMIT_PER_ACCOUNT": "3 per minute",
        "PROXY_COUNT": "1",
    }
    with two_hosts(tmp_path, fresh_database_url, REDIS_URL=REDIS_URL, **limits) as hosts:
        for attempt in range(1, 8):
            browser = BrowserAt(hosts[attempt % 2].url, f"203.0.113.{attempt}")
            response = fail_to_log_in(browser, "victim")
            if attempt <= 3:
                assert_login_failed(response)
            else:
                assert_too_many_requests(response)
        # The addresses that were refused may still try other accounts.
        for attempt in (6, 7):
            browser = BrowserAt(hosts[attempt % 2].url, f"203.0.113.{attempt}")
            assert_login_failed(fail_to_log_in(browser, "bystander"))
        stop(hosts)
    for host in hosts:
        assert host.problems() == []


# --- Redis goes away in the middle, and comes back ------------------------------


def test_redis_stopping_mid_run_loses_no_request(tmp_path, fresh_database_url, private_redis):
    """Redis killed in the middle of the traffic, then started again.

    While it is gone every request is still answered as usual; storm control
    and the rate limits fall back to each worker's memory (failing open: some
    extra mails and logins rather than none), and each says so in the log once
    in a while, not for every request. Once it is back, and the store's retry
    delay (WINDOW) has passed, the hosts share their counts again.
    """
    settings = {
        "REDIS_URL": private_redis.url,
        "AUTH_RATE_LIMIT_PER_CLIENT": "5 per minute",
        "AUTH_RATE_LIMIT_PER_ACCOUNT": "100 per minute",
    }
    with (
        smtp_server("plain", tmp_path) as smtp,
        two_hosts(tmp_path, fresh_database_url, **settings, **mail_settings(smtp)) as hosts,
    ):
        browsers = [Browser(host.url) for host in hosts]

        # Redis up: the client reaches its limit of failed logins on both hosts.
        for attempt in range(1, 7):
            browser = browsers[attempt % 2]
            assert browser.request("/explore")[0] == 200
            response = fail_to_log_in(browser, f"before-{attempt}")
            if attempt <= 5:
                assert_login_failed(response)
            else:
                assert_too_many_requests(response)
        with private_redis.client() as client:
            assert client.keys("LIMITS*") != []

        killed_at = time.time()
        private_redis.kill()
        errors = 0
        for attempt in range(1, 6):
            for host, browser in zip(hosts, browsers, strict=True):
                status, _, page = browser.request("/explore")
                assert status == 200, page
                status, _, page = browser.request("/healthz")
                assert (status, json.loads(page)) == (200, {"status": "ok", "database": "ok"})
                # Counted in memory by each worker, from zero: five failures
                # per host can't reach any worker's limit of five.
                assert_login_failed(fail_to_log_in(browser, f"during-{attempt}"))
                for _ in range(4):
                    fail(host)
                    errors += 1
        errors_ended_at = time.time()
        # Storm control fails open: mails come, not one per error.
        wait_until(lambda: mails_about(smtp.mailbox, DIVISION)[0], message="a mail in the outage")

        private_redis.start()
        back_at = time.time()
        # Past the store's retry delay, and a summary check later, every worker
        # has gone back to Redis.
        time.sleep(WINDOW + 1.5)
        for host in hosts:
            fail(host, "/_test/fail-differently")
            fail(host, "/_test/fail-differently")

        wait_until(
            lambda: mails_about(smtp.mailbox, MISSING_KEY)[1],
            timeout=30,
            message="the summary of the bug hit once Redis was back",
        )
        time.sleep(2)  # nothing more comes, from either host
        stop(hosts)

    # The bug hit after the outage: one mail and one summary, from both hosts' four.
    firsts, summaries = mails_about(smtp.mailbox, MISSING_KEY)
    assert len(firsts) == 1
    assert summaries == [f"{firsts[0]} [repeated 3 times]"]
    with private_redis.client() as client:
        group = stored_groups(client)["KeyError: 'missing'"]
    assert (group["total"], group["unreported"]) == ("4", "0")
    subjects = [message["Subject"] for message in smtp.mailbox.messages]
    assert [s for s in subjects if not s.startswith((DIVISION, MISSING_KEY))] == []

    # The bug hit during the outage: at least one mail, at most one per worker
    # per window while the errors lasted, far fewer than the errors.
    firsts, _ = mails_about(smtp.mailbox, DIVISION)
    error_windows = int((errors_ended_at - killed_at) // WINDOW) + 1
    assert 1 <= len(firsts) <= 2 * WORKERS * error_windows
    assert len(firsts) < errors

    outage = re.compile(
        rf"ERROR: Error store {re.escape(private_redis.url)} unusable \(.+\); "
        r"keeping it in memory$"
    )
    outage_windows = int((back_at - killed_at) // WINDOW) + 1
    for host in hosts:
        problems = host.problems()
        store_lines = [line for line in problems if outage.match(line)]
        assert 1 <= len(store_lines) <= WORKERS * outage_windows, store_lines
        assert len(store_lines) < errors / 2
        limiter_lines = [line for line in problems if line == f"WARNING: {LIMITER_FALLBACK}"]
        # One per worker that took a login while Redis was gone: five logins, at most two lines.
        assert 1 <= len(limiter_lines) <= WORKERS, limiter_lines
        errors_logged = [line for line in problems if line.startswith("ERROR: Exception on ")]
        assert (
            errors_logged
            == ["ERROR: Exception on /_test/fail [GET]"] * (errors // 2)
            + ["ERROR: Exception on /_test/fail-differently [GET]"] * 2
        )
        # A worker that counted in memory says so when it hands its counts to
        # Redis, once it answers: at most once per worker per window of the outage.
        recovered = [
            line
            for line in problems
            if line == f"WARNING: Error store {private_redis.url} answers again; "
            "the counts kept in memory are in it"
        ]
        assert len(recovered) <= WORKERS * outage_windows
        unexplained = set(problems) - {*store_lines, *limiter_lines, *errors_logged, *recovered}
        assert unexplained == set()

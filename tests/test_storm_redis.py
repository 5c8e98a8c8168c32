"""Storm control in Redis (REDIS_URL): one count for every worker of every host.

The decisions are the ones tests/test_storm_control.py checks in a SQLite
file; here, that they hold when the store is a real Redis server: shared by
two "hosts" (two StormControl objects, as two machines would make them), one
decision among processes that race, and failing open, logged once per
window, when Redis stops answering, then back to Redis when it answers again.
Whole gunicorn instances on two hosts: tests/test_two_hosts.py.
"""

import logging
import os
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
import redis

from app.mail import MailSettings
from app.reporting.error_mail import ErrorMailHandler
from app.reporting.storm import (
    KEEP_FOR,
    RETRY_AFTER,
    ErrorGroup,
    RedisGroups,
    StormControl,
    open_store,
)
from tests.servers import (
    BIN,
    REDIS_URL,
    ROOT,
    free_port,
    production_env,
    redis_server,
    smtp_server,
    tarpit,
)

# Every test here talks to a real Redis server, the shared one (database 15,
# emptied before and after each test: two tests at once would empty each
# other's counts) or ones they start, and some fork: `make test-fast` skips them.
pytestmark = pytest.mark.system

WINDOW = 10.0
KEY = "0123456789abcdef"
SUBJECT = "[Blog] ZeroDivisionError: division by zero"


@pytest.fixture
def shared() -> Iterator[str]:
    """The shared Redis server's test database, emptied before and after."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()


@pytest.fixture
def mail_log() -> Iterator[list[str]]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Collect()
    logging.getLogger("blog.mail").addHandler(handler)
    yield lines
    logging.getLogger("blog.mail").removeHandler(handler)


def test_two_hosts_share_one_window_and_one_summary(shared):
    host_a, host_b = StormControl(shared, WINDOW), StormControl(shared, WINDOW)

    assert host_a.admit(KEY, SUBJECT, 100, title="ZeroDivisionError", reference="a-1") == 0
    assert host_b.admit(KEY, SUBJECT, 101, reference="b-1") is None
    assert host_a.admit(KEY, SUBJECT, 102, reference="a-2") is None

    assert host_b.closed_windows(110) == [(KEY, SUBJECT, 2)]
    assert host_a.closed_windows(110) == []  # claimed by the other host
    host_b.summary_sent(KEY, 2, 111)
    [group] = host_a.all_groups()
    assert (group.total, group.unreported, group.last_reference, group.mail) == (
        3,
        0,
        "a-2",
        "sent",
    )


def test_the_keys_are_named_for_the_blog(shared):
    StormControl(shared, WINDOW).admit(KEY, SUBJECT, 100)
    client = redis.Redis.from_url(shared, decode_responses=True)
    assert sorted(client.keys("*")) == ["blog:errors", f"blog:errors:{KEY}"]


def test_a_redis_that_never_answers_is_given_up_on(mail_log):
    # A tarpit accepts the connection and never answers (a hung server, a
    # firewall that drops): the outbox must not wait for ever.
    with tarpit() as port:
        storm = StormControl(f"redis://127.0.0.1:{port}/0", WINDOW)
        decided = []
        thread = threading.Thread(target=lambda: decided.append(storm.admit(KEY, SUBJECT, 100)))
        thread.start()
        thread.join(60)
    assert decided == [0]  # failed open: mailed
    assert mail_log[0].startswith(f"Error store redis://127.0.0.1:{port}/0 unusable (Timeout")


def test_memory_counts_from_two_hosts_add_up(shared):
    host_a, host_b = StormControl(shared, WINDOW), StormControl(shared, WINDOW)
    host_a.admit(KEY, SUBJECT, 100)
    host_b.admit(KEY, SUBJECT, 100.5)  # host B now knows the window is open
    for now in (101, 102, 103):
        host_a.count_if_held(KEY, now, f"a-{now}")
        host_b.count_if_held(KEY, now + 0.5, f"b-{now}")

    host_a.flush_counts()
    host_b.flush_counts()

    assert host_a.closed_windows(110) == [(KEY, SUBJECT, 7)]


def test_racing_processes_mail_a_bug_once(shared):
    # Four processes, as four workers on two hosts, decide about the same
    # bug at the same moment, fifty times each: one mail, 199 counts.
    readers, writers = [], []
    for _ in range(4):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                storm = StormControl(shared, WINDOW)
                mailed = sum(
                    storm.admit(KEY, SUBJECT, 100 + i / 100) is not None for i in range(50)
                )
                os.write(write, str(mailed).encode())
            finally:
                os._exit(0)
        os.close(write)
        readers.append(read)
        writers.append(pid)
    mailed = []
    for read, pid in zip(readers, writers, strict=True):
        os.waitpid(pid, 0)
        mailed.append(int(os.read(read, 16) or b"-1"))
        os.close(read)

    assert sum(mailed) == 1
    [group] = StormControl(shared, WINDOW).all_groups()
    assert (group.total, group.unreported) == (200, 199)


def test_every_field_survives_the_round_trip(shared):
    store = RedisGroups(shared)
    group = ErrorGroup(
        fingerprint=KEY,
        title="KeyError: 'ü' 中文",
        location="app/main/routes.py:12",
        subject=SUBJECT,
        first_seen=1796000000.123456,
        last_seen=1796000001.5,
        total=12,
        window_start=1796000000.25,
        window_count=3,
        unreported=2,
        claimed=1,
        claimed_until=1796000100.0,
        last_reference="3f9c",
        mail="sent",
        mailed_at=1796000000.75,
    )

    store.update(KEY, lambda old: (group, None))

    assert store.all() == [group]


def test_old_groups_are_forgotten_unless_a_count_is_due(shared):
    storm = StormControl(shared, WINDOW)
    storm.admit("quiet", "Q", 100)
    storm.admit(KEY, SUBJECT, 100)
    storm.admit(KEY, SUBJECT, 101)

    storm.forget_old(102 + KEEP_FOR)

    assert [group.fingerprint for group in storm.all_groups()] == [KEY]
    assert redis.Redis.from_url(shared).smembers(RedisGroups.INDEX) == {KEY.encode()}


def test_the_password_in_redis_url_is_not_in_the_store_name():
    storm = StormControl("redis://:hunter2-secret@127.0.0.1:6379/3", WINDOW)
    assert storm.path == "redis://127.0.0.1:6379/3"


def test_an_unreachable_redis_fails_open_and_says_so_once_per_window(mail_log):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens
    storm = StormControl(url, WINDOW)
    start = time.time()

    # Mailed (no storm control is better than no error mail), then storm
    # control goes on in this process's memory.
    assert storm.admit(KEY, SUBJECT, start) == 0
    assert storm.admit(KEY, SUBJECT, start + 1) is None
    assert storm.admit("another-bug", SUBJECT, start + 2) == 0

    assert len(mail_log) == 1
    assert mail_log[0].startswith(f"Error store {url} unusable (Error 111 connecting to")
    assert mail_log[0].endswith("; keeping it in memory")


def test_back_to_redis_when_it_answers_again_with_what_memory_counted(mail_log):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    storm = StormControl(url, window=2)  # tried again after min(RETRY_AFTER, window)
    assert RETRY_AFTER > 2
    start = time.time()
    for now in (start, start + 0.1, start + 0.2):  # Redis isn't there: memory
        storm.admit(KEY, SUBJECT, now, reference=f"ref-{now}")
    assert len(mail_log) == 1

    with redis_server(port):
        time.sleep(2.1)
        other_host = StormControl(url, window=2)
        assert storm.admit("new-bug", SUBJECT, time.time()) == 0  # in Redis now
        assert other_host.admit("new-bug", SUBJECT, time.time()) is None
        groups = {group.fingerprint: group for group in other_host.all_groups()}
        # What memory counted is in Redis, for the summary and flask errors.
        assert sorted(groups) == [KEY, "new-bug"]
        assert (groups[KEY].total, groups[KEY].unreported) == (3, 2)
        assert groups[KEY].last_reference == f"ref-{start + 0.2}"
        assert other_host.closed_windows(time.time() + 2) == [
            (KEY, SUBJECT, 2),
            ("new-bug", SUBJECT, 1),
        ]
        # Handed over once: the next decisions don't add it again.
        storm.admit("new-bug", SUBJECT, time.time())
        assert {g.fingerprint: g.total for g in other_host.all_groups()}[KEY] == 3
    assert mail_log[1:] == [f"Error store {url} answers again; the counts kept in memory are in it"]


def test_redis_stopping_mid_storm_loses_no_decision(mail_log):
    with redis_server() as url:
        storm = StormControl(url, WINDOW)
        assert storm.admit(KEY, SUBJECT, 100) == 0
    # Stopped. The next decisions are made in memory: nothing raises.
    assert storm.admit(KEY, SUBJECT, 101) == 0  # memory has no window yet: fail open
    assert storm.admit(KEY, SUBJECT, 102) is None
    assert storm.closed_windows(111) == [(KEY, SUBJECT, 1)]
    assert len(mail_log) == 1


def test_flask_errors_reads_the_groups_from_redis(shared, tmp_path, fresh_database_url):
    storm = StormControl(shared, WINDOW)
    storm.admit(
        KEY,
        SUBJECT,
        time.time(),
        title="ZeroDivisionError: division by zero",
        location="app/main/routes.py:12",
        reference="ref-in-redis",
    )
    env = production_env(tmp_path, fresh_database_url, REDIS_URL=shared)

    result = subprocess.run(
        [BIN / "flask", "errors"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Errors recorded in {shared}, the most recently seen first:"
    assert "ZeroDivisionError: division by zero" in lines
    assert "  Where: app/main/routes.py:12" in lines
    assert "  Last reference: ref-in-redis" in lines


def test_flask_errors_says_when_redis_does_not_answer(tmp_path, fresh_database_url):
    url = f"redis://127.0.0.1:{free_port()}/0"
    env = production_env(tmp_path, fresh_database_url, REDIS_URL=url)

    result = subprocess.run(
        [BIN / "flask", "errors"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )

    assert result.returncode == 1
    assert result.stderr.startswith(f"Error: The error store {url} can't be read: Error 111")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "fields",
    [
        {"foo": "bar"},  # another program's hash under our name
        {"fingerprint": "abc", "title": "T", "location": "x", "subject": "S", "first_seen": "1"},
        {
            "fingerprint": "abc",
            "title": "T",
            "location": "x",
            "subject": "S",
            "first_seen": "soon",
            "last_seen": "1",
        },
    ],
    ids=["not ours", "a field missing", "a damaged value"],
)
def test_a_damaged_group_in_redis_stops_nothing_else(shared, fields):
    client = redis.Redis.from_url(shared)
    client.hset(RedisGroups.PREFIX + "abc", mapping=fields)
    client.sadd(RedisGroups.INDEX, "abc")
    storm = StormControl(shared, WINDOW)
    storm.admit(KEY, SUBJECT, 100)
    storm.admit(KEY, SUBJECT, 101)

    # Every other bug's summary still goes out, and the listing still works.
    assert storm.closed_windows(110) == [(KEY, SUBJECT, 1)]
    assert [group.fingerprint for group in storm.all_groups()] == [KEY]
    # The damaged one is written over by the next occurrence of that bug.
    assert storm.admit("abc", "[Blog] Again", 120) == 0
    assert {group.fingerprint for group in storm.all_groups()} == {KEY, "abc"}


def test_a_bug_redis_lost_mid_storm_still_gets_a_summary_with_a_subject(shared, tmp_path):
    # The window was open in this worker's memory when the bug's key went
    # (FLUSHDB, eviction): the counts start it again, without a subject.
    storm = StormControl(shared, WINDOW)
    storm.admit(KEY, SUBJECT, time.time() - 30)
    storm._held_until[KEY] = time.time() + 60  # as if the window were still open here
    redis.Redis.from_url(shared).flushdb()
    storm.count_if_held(KEY, time.time() - 20, "ref-1")
    storm.count_if_held(KEY, time.time() - 20, "ref-2")
    storm.flush_counts()

    with smtp_server("plain", tmp_path) as smtp:
        settings = MailSettings.from_config(smtp.settings)
        handler = ErrorMailHandler(settings, ["admin@example.com"], "[Blog]", storm, secrets=[])
        handler.send_summaries()

        [summary] = smtp.mailbox.messages
    assert summary["Subject"] == f"[Blog] {KEY} [repeated 2 times]"


# --- Both stores keep the same contract ---------------------------------------------


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path, shared):
    return open_store(str(tmp_path / "errors.sqlite3") if request.param == "sqlite" else shared)


def test_a_change_that_returns_no_group_writes_nothing(store):
    assert store.update("absent", lambda group: (None, ("saw", group))) == ("saw", None)
    assert store.all() == []


def test_a_new_group_starts_with_no_reference_and_no_mail(store, tmp_path):
    storm = StormControl(store.location, WINDOW)
    storm.admit(KEY, SUBJECT, 100)  # outside a request: no reference

    [group] = storm.all_groups()
    assert (group.last_reference, group.mail, group.mailed_at) == ("", "", 0.0)
    assert (group.claimed, group.claimed_until) == (0, 0.0)


def test_a_handover_cut_short_hands_each_group_over_once(monkeypatch, mail_log):
    with redis_server() as url:
        storm = StormControl(url, WINDOW)
        # Redis "stops answering": two bugs counted in memory.
        real_update = storm.groups.update
        monkeypatch.setattr(storm.groups, "update", fail_with(redis.ConnectionError("down")))
        for key in ("bug-a", "bug-b"):
            storm.admit(key, SUBJECT, time.time())
        # It answers again, but fails once more half-way through the handover.
        calls = []

        def second_call_fails(key, change):
            calls.append(key)
            if len(calls) == 2:
                raise redis.ConnectionError("down again")
            return real_update(key, change)

        monkeypatch.setattr(storm.groups, "update", second_call_fails)
        storm._retry_store_at = 0  # the retry is due
        storm.admit("bug-c", SUBJECT, time.time())  # goes to memory: the handover failed
        monkeypatch.setattr(storm.groups, "update", real_update)
        storm._retry_store_at = 0
        storm.admit("bug-c", SUBJECT, time.time())

        totals = {
            group.fingerprint: group.total for group in StormControl(url, WINDOW).all_groups()
        }
    assert totals == {"bug-a": 1, "bug-b": 1, "bug-c": 2}


def fail_with(error: Exception):
    def fail(*args, **kwargs):
        raise error

    return fail

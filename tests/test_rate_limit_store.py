"""Rate limits counted in a SQLite file that every worker of a host shares
(app/rate_limit_store.py), the default when REDIS_URL is unset.

First the storage itself, on a real file: two storage objects on one file
stand for two gunicorn workers, and a forked child for a worker forked from
a master that loaded the app (--preload). Then the blog as deployed: gunicorn
with four workers and the production config, where a client gets each limit
once in all, not once per worker as with ``memory://``; and a file that can't
be used, where the limits go on in memory and no login fails.

The blog on PostgreSQL counts in the same file: these tests run on both.
Nothing here measures time; the one wait is for a one-second window to end.
"""

import hashlib
import multiprocessing
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from limits.storage import storage_from_string

from app.rate_limit_store import SQLiteStorage
from app.reporting.log_context import config_secrets
from tests.pages import assert_login_failed, assert_too_many_requests, fail_to_log_in
from tests.servers import (
    ROOT,
    Browser,
    production_env,
    run_gunicorn,
    wait_until,
)

MINUTE = 60
LIMITER_FALLBACK = "WARNING: Rate limit storage unreachable - falling back to in-memory storage"
# AUTH_RATE_LIMIT_PER_ACCOUNT's first number, "5 per minute; 20 per hour" (config.py).
PER_ACCOUNT = 5


def storage_at(path: Path) -> SQLiteStorage:
    """A storage on the file at `path`, made from its URI as Flask-Limiter makes it."""
    return storage_from_string(f"sqlite:///{path}", socket_timeout=2, socket_connect_timeout=2)


def rows(path: Path) -> dict[str, tuple[int, float]]:
    """What the file holds, read with a connection of its own: key -> (hits, expires_at)."""
    with sqlite3.connect(path) as db:
        found = db.execute("SELECT key, hits, expires_at FROM rate_limits").fetchall()
    return {key: (hits, expires_at) for key, hits, expires_at in found}


def end_windows(path: Path, *keys: str) -> None:
    """Move the end of these keys' windows a second into the past: as if the minute had passed."""
    with sqlite3.connect(path) as db:
        db.executemany(
            "UPDATE rate_limits SET expires_at = ? WHERE key = ?",
            [(time.time() - 1, key) for key in keys],
        )


# --- The URI ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/srv/blog/logs/rate-limits.sqlite3", "/srv/user:not-a-password@host/limits.sqlite3"]
)
def test_the_files_uri_adds_no_secret_to_redact(path):
    """What the log redacts (app/reporting/log_context.py): a file's URI has no password."""
    config = {"SECRET_KEY": "k", "RATELIMIT_STORAGE_URI": f"sqlite:///{path}"}
    assert config_secrets(config) == ["k"]


@pytest.mark.parametrize(
    ("uri", "path"),
    [
        ("sqlite:///rate-limits.sqlite3", "rate-limits.sqlite3"),
        ("sqlite:////var/log/blog/rate-limits.sqlite3", "/var/log/blog/rate-limits.sqlite3"),
        ("sqlite:///C:\\blog\\logs\\rate-limits.sqlite3", "C:\\blog\\logs\\rate-limits.sqlite3"),
        ("sqlite:///logs/my limits.sqlite3", "logs/my limits.sqlite3"),
    ],
)
def test_the_uri_names_the_file_as_sqlalchemys_urls_do(uri, path):
    """Relative to the working directory after three slashes, absolute after four;
    opening nothing yet (the file needn't exist)."""
    assert storage_from_string(uri).path == path


@pytest.mark.parametrize("uri", ["sqlite://", "sqlite:///", "sqlite://host/limits.sqlite3"])
@pytest.mark.system
def test_a_uri_that_names_no_file_is_refused_at_startup(tmp_path, fresh_database_url, uri):
    result = start_the_blog(tmp_path, fresh_database_url, RATELIMIT_STORAGE_URI=uri)
    assert result.returncode == 3, result.stderr
    assert result.stderr == (
        f"Configuration error: RATELIMIT_STORAGE_URI={uri!r} names no file: use "
        "sqlite:///relative/path.sqlite3 or sqlite:////absolute/path.sqlite3.\n"
    )


@pytest.mark.parametrize("strategy", ["moving-window", "sliding-window-counter"])
@pytest.mark.system
def test_another_strategy_is_refused_at_startup(tmp_path, strategy):
    """Only fixed windows are counted in the file: another strategy stops the
    app with a message, rather than being ignored."""
    result = create_app_with(RATELIMIT_STRATEGY=strategy)
    assert result.stdout == (
        f"ConfigError: RATELIMIT_STRATEGY={strategy!r} needs REDIS_URL (or memory://): the "
        "SQLite file that counts the rate limits without it (rate-limits-never-opened.sqlite3) "
        "does only 'fixed-window'.\n"
    )


@pytest.mark.system
def test_the_fixed_window_strategy_may_be_named(tmp_path):
    assert create_app_with(RATELIMIT_STRATEGY="fixed-window").stdout == "started\n"


def create_app_with(**settings: str) -> subprocess.CompletedProcess:
    """Create the app with the SQLite storage and `settings` (which the
    environment can't set) in a process of its own: Flask-Limiter's one limiter
    per process would keep a failed app's strategy for the next app."""
    script = f"""
from app import create_app
from config import ConfigError, TestingConfig

class Settings(TestingConfig):
    RATELIMIT_STORAGE_URI = "sqlite:///rate-limits-never-opened.sqlite3"
for name, value in {settings!r}.items():
    setattr(Settings, name, value)
try:
    create_app(Settings)
    print("started")
except ConfigError as error:
    print(f"ConfigError: {{error}}")
"""
    return subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )


def start_the_blog(tmp_path: Path, database_url: str, **settings: str):
    """Import blog.py as gunicorn does, with the production config; nothing is served."""
    env = production_env(tmp_path, database_url, REDIS_URL="", **settings)
    return subprocess.run(
        [sys.executable, "-c", "import blog"], cwd=ROOT, env=env, capture_output=True, text=True
    )


# --- The storage, on a real file ---------------------------------------------------------


def test_two_workers_count_in_one_window(tmp_path):
    path = tmp_path / "rate-limits.sqlite3"
    first, second = storage_at(path), storage_at(path)

    before = time.time()
    assert first.incr("k", MINUTE) == 1
    assert second.incr("k", MINUTE) == 2
    assert first.incr("k", MINUTE, amount=3) == 5
    assert (first.get("k"), second.get("k")) == (5, 5)
    assert second.get("another") == 0

    # The window began with the first hit; the later ones don't move its end.
    [(hits, expires_at)] = rows(path).values()
    assert hits == 5
    assert before + MINUTE <= expires_at <= time.time() + MINUTE
    assert first.get_expiry("k") == second.get_expiry("k") == expires_at


def test_a_window_that_has_ended_starts_again(tmp_path):
    path = tmp_path / "rate-limits.sqlite3"
    first, second = storage_at(path), storage_at(path)
    for _ in range(3):
        first.incr("k", MINUTE)

    end_windows(path, "k")
    assert second.get("k") == 0
    assert second.get_expiry("k") <= time.time()  # no window: it "ends" now

    before = time.time()
    assert second.incr("k", MINUTE) == 1
    assert first.get("k") == 1
    assert first.get_expiry("k") >= before + MINUTE


def test_a_one_second_window_ends_by_itself(tmp_path):
    storage = storage_at(tmp_path / "rate-limits.sqlite3")
    assert storage.incr("k", 1) == 1
    assert storage.incr("k", 1) == 2
    wait_until(lambda: storage.get("k") == 0, timeout=10, message="the window to end")
    assert storage.incr("k", 1) == 1


def test_ended_windows_are_deleted_now_and_then(tmp_path):
    """The file holds the open windows, not every key ever counted."""
    path = tmp_path / "rate-limits.sqlite3"
    old = storage_at(path)
    for number in range(500):
        old.incr(f"client-{number}", MINUTE)
    old.incr("still-open", MINUTE)
    end_windows(path, *(f"client-{number}" for number in range(500)))
    assert len(rows(path)) == 501

    # A worker's first count deletes them...
    worker = storage_at(path)
    assert worker.incr("new", MINUTE) == 1
    assert sorted(rows(path)) == ["new", "still-open"]

    # ...and again no sooner than a minute later: not a DELETE per hit.
    old.incr("client-0", MINUTE)
    end_windows(path, "client-0")
    worker.incr("new", MINUTE)
    assert sorted(rows(path)) == ["client-0", "new", "still-open"]
    assert worker.get("client-0") == 0  # ended, whether deleted or not


@pytest.mark.parametrize(
    "key",
    ["'; DROP TABLE rate_limits; --", "nul\x00byte", "\u00e9\u4e2d\U0001f600" * 300, "x" * 8000],
    ids=["sql", "nul", "unicode", "8000-chars"],
)
def test_any_key_is_counted_as_itself(tmp_path, key):
    """Keys are bound parameters, never SQL: whatever a client address or a
    name turns into, it is one key of its own."""
    path = tmp_path / "rate-limits.sqlite3"
    storage = storage_at(path)
    storage.incr("neighbour", MINUTE)
    assert storage.incr(key, MINUTE) == 1
    assert storage.incr(key, MINUTE) == 2
    assert (storage.get(key), storage.get("neighbour")) == (2, 1)
    assert rows(path)[key][0] == 2


def test_clear_forgets_one_key_and_reset_every_key(tmp_path):
    path = tmp_path / "rate-limits.sqlite3"
    first, second = storage_at(path), storage_at(path)
    first.incr("a", MINUTE)
    first.incr("b", MINUTE)
    first.incr("b", MINUTE)
    first.incr("ended", MINUTE)
    end_windows(path, "ended")

    second.clear("a")
    assert (first.get("a"), first.get("b")) == (0, 2)
    second.clear("never-counted")

    assert second.reset() == 1  # the open windows: "b"; "ended" was over already
    assert rows(path) == {}
    assert first.incr("b", MINUTE) == 1


def test_threads_counting_at_once_lose_no_hit(tmp_path):
    """Sixteen threads, on two storage objects (two workers), 50 hits each:
    every count from 1 to 800 is handed out exactly once."""
    path = tmp_path / "rate-limits.sqlite3"
    storages = [storage_at(path), storage_at(path)]
    start = threading.Barrier(16)
    counts: list[int] = []
    errors: list[BaseException] = []

    def hit(storage: SQLiteStorage) -> None:
        start.wait()
        try:
            mine = [storage.incr("k", MINUTE) for _ in range(50)]
        except BaseException as error:  # reported below, not lost in the thread
            errors.append(error)
            return
        counts.extend(mine)

    threads = [threading.Thread(target=hit, args=(storages[n % 2],)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(counts) == list(range(1, 801))
    assert storages[0].get("k") == 800


def count_in_child(storage: SQLiteStorage, results) -> None:
    """A forked worker's hits on the storage object it inherited."""
    counts = [storage.incr("k", MINUTE) for _ in range(200)]
    # How many connections it inherited and left alone: the parent's one.
    results.put((counts, len(storage._inherited)))


def test_a_forked_child_opens_its_own_connection(tmp_path):
    """As a worker forked by a gunicorn master that used the storage: the child
    counts through a connection of its own, at the same time as the parent."""
    path = tmp_path / "rate-limits.sqlite3"
    storage = storage_at(path)
    assert storage.incr("k", MINUTE) == 1  # the parent's connection is open now

    fork = multiprocessing.get_context("fork")
    results = fork.Queue()
    child = fork.Process(target=count_in_child, args=(storage, results))
    child.start()
    parent_counts = [storage.incr("k", MINUTE) for _ in range(200)]
    child_counts, inherited = results.get(timeout=60)
    child.join(60)

    assert child.exitcode == 0
    assert inherited == 1
    assert sorted([1, *parent_counts, *child_counts]) == list(range(1, 402))
    # The parent's connection still works, and the file is sound.
    assert storage.incr("k", MINUTE) == 402
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def not_a_database(tmp_path: Path) -> Path:
    path = tmp_path / "rate-limits.sqlite3"
    path.write_text("These are not the rate limits you are looking for.\n" * 100)
    return path


def inside_a_file(tmp_path: Path) -> Path:
    """A path whose folder is a file: no file can be created there, not even by root."""
    (tmp_path / "logs").write_text("a file where the folder should be\n")
    return tmp_path / "logs" / "rate-limits.sqlite3"


def in_a_missing_folder(tmp_path: Path) -> Path:
    return tmp_path / "no-such-folder" / "rate-limits.sqlite3"


UNUSABLE = [not_a_database, inside_a_file, in_a_missing_folder]


@pytest.mark.parametrize("unusable", UNUSABLE, ids=lambda f: f.__name__)
def test_a_file_that_cannot_be_used_fails_the_check(tmp_path, unusable):
    """Flask-Limiter then counts in memory, and asks `check` again now and then."""
    storage = storage_at(unusable(tmp_path))
    assert storage.check() is False
    with pytest.raises(storage.base_exceptions):
        storage.incr("k", MINUTE)
    with pytest.raises(storage.base_exceptions):
        storage.get("k")
    assert storage.check() is False  # still, after failed attempts

    assert storage_at(tmp_path / "usable.sqlite3").check() is True


# --- As deployed: gunicorn, four workers, production config ------------------------------


def account_key(username: str) -> str:
    """How app/security.py names an account in the counts' keys."""
    return "account:" + hashlib.sha256(username.encode()).hexdigest()


@pytest.mark.system
def test_four_workers_let_one_client_fail_exactly_the_limit(tmp_path, fresh_database_url):
    """Five failed logins for one account, then the 429 page, whichever of the
    four workers served them: each request comes on a new connection (urllib
    keeps none open), and gunicorn's workers take them as they come.

    Counted in memory, each worker would let five through (the next test).
    """
    env = production_env(tmp_path, fresh_database_url, REDIS_URL="", RATELIMIT_STORAGE_URI="")
    with run_gunicorn(env, tmp_path, workers=4) as server:
        browser = Browser(server.url)
        for _ in range(PER_ACCOUNT):
            assert_login_failed(fail_to_log_in(browser, "victim"))
        for _ in range(10):
            assert_too_many_requests(fail_to_log_in(browser, "victim"))
        # Another account from the same client: its own count (the client's is at 5 of 20).
        assert_login_failed(fail_to_log_in(browser, "someone-else"))
        assert server.stop() == 0, server.log()

    # The file in LOG_DIR holds what was counted: the five failures for the
    # victim (per minute and per hour), and six for the client; refusals don't count.
    counts = {
        key: hits for key, (hits, _) in rows(tmp_path / "logs" / "rate-limits.sqlite3").items()
    }
    victim, client = account_key("victim"), "127.0.0.1"
    assert counts == {
        f"LIMITER/{victim}/auth.login/5/1/minute": 5,
        f"LIMITER/{victim}/auth.login/20/1/hour": 5,
        f"LIMITER/{account_key('someone-else')}/auth.login/5/1/minute": 1,
        f"LIMITER/{account_key('someone-else')}/auth.login/20/1/hour": 1,
        f"LIMITER/{client}/auth.login/20/1/minute": 6,
        f"LIMITER/{client}/auth.login/200/1/hour": 6,
    }


@pytest.mark.system
def test_counted_in_memory_each_worker_lets_the_limit_through(tmp_path, fresh_database_url):
    """What memory:// does with four workers: a worker refuses only once it has
    seen five failures itself, so more than five get through. How many depends on
    which worker takes each connection; a run here typically lets 10 to 13 of 15
    through. Only the bound that always holds is asserted."""
    env = production_env(
        tmp_path, fresh_database_url, REDIS_URL="", RATELIMIT_STORAGE_URI="memory://"
    )
    with run_gunicorn(env, tmp_path, workers=4) as server:
        browser = Browser(server.url)
        responses = [fail_to_log_in(browser, "victim") for _ in range(PER_ACCOUNT + 10)]
    for response in responses[:PER_ACCOUNT]:
        assert_login_failed(response)
    for response in responses[PER_ACCOUNT:]:
        if response[0] == 200:
            assert_login_failed(response)
        else:
            assert_too_many_requests(response)
    assert not (tmp_path / "logs" / "rate-limits.sqlite3").exists()


@pytest.mark.parametrize("unusable", [not_a_database, inside_a_file], ids=lambda f: f.__name__)
@pytest.mark.system
def test_a_file_that_cannot_be_used_leaves_the_limits_to_memory(
    tmp_path, fresh_database_url, unusable
):
    """Never a 500 on the login form: the first count fails, Flask-Limiter logs
    one warning and counts in memory (exactly, with one worker), and logging
    in with the right password still works."""
    (tmp_path / "broken").mkdir()
    broken = unusable(tmp_path / "broken")
    uri = f"sqlite:///{broken}"
    env = production_env(tmp_path, fresh_database_url, REDIS_URL="", RATELIMIT_STORAGE_URI=uri)
    with run_gunicorn(env, tmp_path, workers=1) as server:
        browser = Browser(server.url)
        fields = {"username": "reader", "email": "reader@example.com"}
        fields |= {"password": "a-good-password", "password2": "a-good-password"}
        assert browser.submit("/auth/register", fields)[0] == 302

        for _ in range(PER_ACCOUNT):
            assert_login_failed(fail_to_log_in(browser, "victim"))
        assert_too_many_requests(fail_to_log_in(browser, "victim"))
        right = {"username": "reader", "password": "a-good-password"}
        status, headers, _ = browser.submit("/auth/login", right)
        assert (status, headers["Location"]) == (302, "/")
        assert server.stop() == 0, server.log()

    log = (tmp_path / "logs" / "blog.log").read_text()
    problems = [line for line in log.splitlines() if " WARNING: " in line or " ERROR: " in line]
    assert len(problems) == 1, log
    assert LIMITER_FALLBACK in problems[0]

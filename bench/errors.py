"""Benchmark the error path: `make bench-errors` (or `.venv/bin/python -m bench.errors`).

It runs the blog under gunicorn with its production config on 127.0.0.1 and
prints, side by side, from one run:

1. the median time to serve a 500 page with no mail configured, with the mail
   server a tarpit (accepts connections, never answers), and with the
   standard logging.handlers.SMTPHandler against the same tarpit (the usual
   tutorial approach), and the ratio of each to the first (goal for ours: <= 1.2);
2. the wall time of 1,000 identical errors at concurrency 8 with mail on,
   against the same burst with mail off (goal: <= 1.2: a repeat that storm
   control holds back costs little more than a counter increment), and how
   many mails they produce (goal: 1, plus one summary);
3. a storm of 10,000 errors: the mails it produces, the bytes it adds to the
   log files, and whether a line logged before it is still there;
4. two hosts (two gunicorn instances, each with its own log directory)
   sharing one Redis through REDIS_URL: the mails for 20 identical errors
   spread over both, against the same without Redis;
5. how many log lines are lost when 4 workers log 1,000 numbered lines into a
   file that rotates every 10 KB (goal: 0).

The figures are printed, not asserted: speed is measured here, not in tests.
"""

import os
import re
import statistics
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis

from tests.servers import (
    env_settings,
    production_env,
    run_gunicorn,
    smtp_server,
    tarpit,
    wait_until,
)

MAIL_TIMEOUT = 2


def sqlite_url(folder: Path) -> str:
    """A new SQLite database in `folder`: the error path doesn't depend on the database."""
    return f"sqlite:///{folder / 'blog.sqlite'}"


def get(url: str) -> float:
    """Request `url`, return the seconds it took (a 500 is the expected answer)."""
    start = time.perf_counter()
    try:
        urllib.request.urlopen(url, timeout=30).read()
    except urllib.error.HTTPError as error:
        error.read()
    return time.perf_counter() - start


def median_latency(tmp: Path, count: int, **settings) -> float:
    """Median seconds for `count` sequential 500 pages, under `settings`."""
    env = production_env(tmp, sqlite_url(tmp), ADMINS="admin@example.com", **settings)
    with run_gunicorn(env, tmp, workers=2) as server:
        get(server.url + "/_test/fail")  # warm up both the worker and the mail path
        return statistics.median(get(server.url + "/_test/fail") for _ in range(count))


def error_path_latency(root: Path) -> list[tuple[str, float]]:
    rows = [("no mail configured", median_latency(root / "nomail", 200))]
    with tarpit() as port:
        dead = {"MAIL_SERVER": "127.0.0.1", "MAIL_PORT": port, "MAIL_TIMEOUT": MAIL_TIMEOUT}
        rows.append(("ours, mail server a tarpit", median_latency(root / "tarpit", 200, **dead)))
        rows.append(
            (
                "stdlib SMTPHandler, same tarpit",
                median_latency(root / "stdlib", 5, BENCH_STDLIB_SMTPHANDLER=1, **dead),
            )
        )
    return rows


def burst(url: str, errors: int, concurrency: int = 8) -> float:
    """Send `errors` requests to `url` at `concurrency`; return the wall time in seconds."""
    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda _: get(url), range(errors)))
    return time.perf_counter() - start


def storm_cost(root: Path, errors: int = 1000, rounds: int = 3, window: int = 5) -> dict:
    """The same bursts with mail off and on, alternating; the mails of the first burst."""
    times: dict[str, list[float]] = {"off": [], "on": []}
    with smtp_server("plain", root) as smtp:
        mail_on = env_settings(smtp.settings) | {"ADMINS": "admin@example.com"}
        for round_number in range(rounds):
            for mode, settings in (("off", {}), ("on", mail_on)):
                folder = root / f"{mode}-{round_number}"
                env = production_env(folder, sqlite_url(root), MAIL_ERROR_WINDOW=window, **settings)
                with run_gunicorn(env, folder, workers=2) as server:
                    times[mode].append(burst(server.url + "/_test/fail", errors))
                    if mode == "on" and round_number == 0:
                        # The summary goes out once the window has closed.
                        wait_until(lambda: len(smtp.mailbox.messages) >= 2, timeout=window + 30)
                        time.sleep(2)  # would a third one come?
                        subjects = [str(message["Subject"]) for message in smtp.mailbox.messages]
    return {
        "off": statistics.median(times["off"]),
        "on": statistics.median(times["on"]),
        "mails": len(subjects),
        "last": subjects[-1],
    }


def big_storm(root: Path, errors: int = 10_000) -> dict:
    """`errors` identical errors with mail on: mails during the storm, log bytes, history."""
    with smtp_server("plain", root) as smtp:
        env = production_env(
            root,
            sqlite_url(root),
            ADMINS="admin@example.com",
            MAIL_ERROR_WINDOW=600,
            **env_settings(smtp.settings),
        )
        with run_gunicorn(env, root, workers=2) as server:
            get(server.url + "/_test/log/1")  # the line that must survive the storm
            logs = root / "logs"
            before = sum(path.stat().st_size for path in logs.glob("blog.log*"))
            seconds = burst(server.url + "/_test/fail", errors)
            time.sleep(1)  # the outbox adds the last counts
            server.stop()
        after = sum(path.stat().st_size for path in logs.glob("blog.log*"))
        kept = any("numbered line 000001" in path.read_text() for path in logs.glob("blog.log*"))
        tracebacks = sum(
            path.read_text().count("Traceback (most recent call last)")
            for path in logs.glob("blog.log*")
        )
        return {
            "seconds": seconds,
            "mails": len(smtp.mailbox.messages),
            "bytes": after - before,
            "kept": kept,
            "tracebacks": tracebacks,
        }


def two_hosts(root: Path, redis_url: str | None, errors: int = 20, window: int = 3) -> int:
    """Mails for `errors` identical errors spread over two hosts, within one window."""
    with smtp_server("plain", root) as smtp:
        shared = {"REDIS_URL": redis_url} if redis_url else {}
        hosts = []
        for name in ("a", "b"):
            folder = root / name
            env = production_env(
                folder,
                sqlite_url(root),
                ADMINS="admin@example.com",
                MAIL_ERROR_WINDOW=window,
                **env_settings(smtp.settings),
                **shared,
            )
            hosts.append(run_gunicorn(env, folder, workers=2))
        with hosts[0] as host_a, hosts[1] as host_b:
            for number in range(errors):
                get((host_a, host_b)[number % 2].url + "/_test/fail")
            time.sleep(1)  # the first mails; the summaries come after the window
            return len(smtp.mailbox.messages)


def lost_log_lines(root: Path, lines: int = 1000) -> tuple[int, int, int]:
    """Log `lines` numbered lines from 4 workers; return (lost, duplicated, files)."""
    env = production_env(root, sqlite_url(root), LOG_MAX_BYTES=10240, LOG_BACKUP_COUNT=500)
    with run_gunicorn(env, root, workers=4) as server:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda n: get(f"{server.url}/_test/log/{n}"), range(1, lines + 1)))
        server.stop()
    files = list((root / "logs").glob("blog.log*"))
    found = [int(n) for f in files for n in re.findall(r"numbered line (\d+)", f.read_text())]
    return lines - len(set(found)), len(found) - len(set(found)), len(files)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("nomail", "tarpit", "stdlib", "storm", "big", "hosts", "rotation"):
            (root / name).mkdir()

        latency = error_path_latency(root)
        baseline = latency[0][1]
        print(f"\n1. Median 500-page latency (mail timeout {MAIL_TIMEOUT} s)")
        for label, seconds in latency:
            print(f"   {label:<34} {seconds * 1000:9.2f} ms   ratio {seconds / baseline:7.2f}")

        cost = storm_cost(root / "storm")
        print("\n2. 1,000 identical errors at concurrency 8 (2 workers; median of 3 bursts each)")
        print(f"   wall time, mail off                {cost['off']:9.2f} s    ratio    1.00")
        ratio = cost["on"] / cost["off"]
        print(f"   wall time, mail on                 {cost['on']:9.2f} s    ratio {ratio:7.2f}")
        print(f"   mails delivered                    {cost['mails']:9d}   (last: {cost['last']})")

        storm = big_storm(root / "big")
        print(
            "\n3. 10,000 identical errors at concurrency 8 (2 workers, mail on, 10-minute window)"
        )
        print(f"   wall time                          {storm['seconds']:9.2f} s")
        print(f"   mails during the storm             {storm['mails']:9d}")
        print(
            f"   log bytes added                    {storm['bytes']:9d}   "
            f"({storm['bytes'] / 10_000:.0f} per error, {storm['tracebacks']} tracebacks)"
        )
        print(f"   line logged before still there     {'yes' if storm['kept'] else 'NO':>9}")

        print("\n4. 20 identical errors over two hosts (2 workers each), within one window")
        # A database of the benchmark's own, which it empties: not the tests' 15.
        redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
        try:
            redis.Redis.from_url(redis_url, socket_connect_timeout=2).flushdb()
        except redis.RedisError as error:
            print(f"   skipped: no Redis at {redis_url} ({error}); set BENCH_REDIS_URL")
        else:
            with_redis = two_hosts(root / "hosts" / "redis", redis_url)
            print(f"   mails, sharing Redis (REDIS_URL)   {with_redis:9d}")
        without = two_hosts(root / "hosts" / "alone", None)
        print(f"   mails, each host on its own        {without:9d}")

        lost, duplicated, files = lost_log_lines(root / "rotation")
        print("\n5. 1,000 numbered log lines from 4 workers, rotating every 10 KB")
        print(f"   lines lost {lost}, duplicated {duplicated}, across {files} files")


if __name__ == "__main__":
    main()

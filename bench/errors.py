"""Benchmark the error path: `make bench-errors` (or `.venv/bin/python bench/errors.py`).

It runs the blog under gunicorn with its production config on 127.0.0.1 and
prints, side by side, from one run:

1. the median time to serve a 500 page with no mail configured, with the mail
   server a tarpit (accepts connections, never answers), and with the
   standard logging.handlers.SMTPHandler against the same tarpit (the usual
   tutorial approach), and the ratio of each to the first (goal for ours: <= 1.2);
2. how many mails 1,000 identical errors at concurrency 8 produce (goal: 1,
   plus one summary);
3. how many log lines are lost when 4 workers log 1,000 numbered lines into a
   file that rotates every 10 KB (goal: 0).

The figures are printed, not asserted: speed is measured here, not in tests.
"""

import re
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from servers import (
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


def mails_for_identical_errors(root: Path, errors: int = 1000, window: int = 5) -> tuple[int, str]:
    """Send `errors` identical errors at concurrency 8; count the mails that arrive."""
    with smtp_server("plain", root) as smtp:
        env = production_env(
            root,
            sqlite_url(root),
            ADMINS="admin@example.com",
            MAIL_ERROR_WINDOW=window,
            **env_settings(smtp.settings),
        )
        with run_gunicorn(env, root, workers=2) as server:
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda _: get(server.url + "/_test/fail"), range(errors)))
            # The summary goes out once the window has closed.
            wait_until(lambda: len(smtp.mailbox.messages) >= 2, timeout=window + 30)
            time.sleep(2)  # would a third one come?
        subjects = [str(message["Subject"]) for message in smtp.mailbox.messages]
    return len(subjects), subjects[-1]


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
        for name in ("nomail", "tarpit", "stdlib", "storm", "rotation"):
            (root / name).mkdir()

        latency = error_path_latency(root)
        baseline = latency[0][1]
        print(f"\n1. Median 500-page latency (mail timeout {MAIL_TIMEOUT} s)")
        for label, seconds in latency:
            print(f"   {label:<34} {seconds * 1000:9.2f} ms   ratio {seconds / baseline:7.2f}")

        mails, last_subject = mails_for_identical_errors(root / "storm")
        print("\n2. 1,000 identical errors at concurrency 8 (2 workers)")
        print(f"   mails delivered                    {mails:9d}   (last: {last_subject})")

        lost, duplicated, files = lost_log_lines(root / "rotation")
        print("\n3. 1,000 numbered log lines from 4 workers, rotating every 10 KB")
        print(f"   lines lost {lost}, duplicated {duplicated}, across {files} files")


if __name__ == "__main__":
    main()

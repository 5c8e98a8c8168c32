"""Benchmark the blog's pages: `make bench`, or `.venv/bin/python -m bench.pages`.

Run it from the project root, as a module: that is how it imports the tests'
helpers (tests/servers.py, tests/query_count.py, tests/databases.py).

Each page is loaded for 10 seconds at concurrency 16 by wrk (`apt-get install
wrk`), under gunicorn with the production config and 2 sync workers, logged in
as the demo user of `flask seed --users 1000 --posts 50000 --follows 50`: on
SQLite, on PostgreSQL when a server answers (TEST_DATABASE_URL, by default the
local one; a database of its own, dropped at the end), and on SQLite again
with 10x the posts. For each page it prints:

- requests per second, also as a fraction of a bare Flask hello-world's under
  the same gunicorn ("x hello"): nothing the blog does can be faster on this
  machine, so the ratio means the same on a laptop and on a server;
- the median and 99th percentile latency. With 16 requests in flight and 2
  workers, 14 wait in gunicorn's queue, so p50 is mostly queueing;
- the SQL statements of one request, counted in this process with Flask's
  test client on the same database: the count doesn't depend on the machine,
  and shows one query per post long before a stopwatch does.

Page 200 is the one a reader reaches by clicking "Older posts" 199 times: its
URL carries a cursor (app/pagination.py). Typed as ?page=200, the app reads it
with OFFSET: a row of its own. Search is measured three times: for a word in about
a quarter of the posts, where the first page's matches come soon, and for
words in RARE_POSTS of them, where a database without an index for them reads
every post.

The targets are printed next to the figures, never asserted: speed is measured
here, not in tests. The exit status is 1 if a request under load failed.
Options: --seconds and --concurrency change the load, --quick is a 2-second
smoke run, --no-postgres and --no-large skip those parts.
"""

import argparse
import html
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from flask import Flask
from sqlalchemy import select

from app import create_app
from app.commands import DEMO_PASSWORD
from app.extensions import db
from app.models import Post
from config import TestingConfig
from tests.query_count import statements_for_get
from tests.servers import BIN, ROOT, Browser, Gunicorn, production_env, run_gunicorn

# A blog with some history, where a page that reads or counts every row shows it.
USERS, POSTS, FOLLOWS = 1_000, 50_000, 50
LARGE_POSTS = 10 * POSTS
LARGE = f"SQLite, {LARGE_POSTS:,} posts"
WORKERS = 2
DEEP_PAGE = 200
PROFILE_USER = "alice1"  # the second user `flask seed` makes, with about 50 posts
# Search: a word in about a quarter of the posts `flask seed` writes, and a
# sentence in none of them, added to RARE_POSTS posts here. In Chinese, the
# reason search matches substrings rather than words; searched for by a phrase
# of four characters and by a word of two, which a trigram index can't serve.
COMMON_WORD = "rollback"
RARE_SENTENCE = "回滚之后再渲染错误页面。"
RARE_PHRASE, RARE_WORD = "错误页面", "回滚"
RARE_POSTS = 20

RATIO_MIN, RATIO_AIM = 0.05, 0.1
STATEMENTS_MAX = 4
SLOWDOWN_MAX = 1.5

# Long, because a slow page at concurrency 16 waits behind 15 others: wrk's
# default 2 seconds would count as failures the very requests that show it.
REQUEST_TIMEOUT = 30
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
# gunicorn.conf.py restarts each worker after about 1,000 requests (a guard
# against leaks): under this load, every few seconds on a fast page and never
# on a slow one, so start-up time would land in some rows only. The benchmark
# switches that one setting off; everything else is production's.
GUNICORN_SETTINGS = {"GUNICORN_MAX_REQUESTS": 0}
WRK_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


@dataclass
class Row:
    """One page's figures."""

    database: str
    page: str
    rate: float  # requests per second
    p50: float  # seconds
    p99: float
    failed: int  # answers of 400 and above, and requests with no answer
    statements: int | None = None  # None for hello-world, which has no database


def run_wrk(url: str, cookie: str, args) -> tuple[float, float, float, int]:
    """Load `url` with wrk; return requests per second, p50 and p99 latency, failed requests."""
    # One thread sends tens of thousands of requests a second: more would only
    # take CPU from gunicorn, which runs on the same cores.
    command = ["wrk", "--threads=1", f"--connections={args.concurrency}", "--latency"]
    command += [f"--duration={args.seconds}s", f"--timeout={REQUEST_TIMEOUT}s"]
    output = subprocess.run(
        [*command, "--header", f"Cookie: {cookie}", url], capture_output=True, text=True, check=True
    ).stdout

    def latency(percent: int) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(\w+)$", output, re.M).groups()
        return float(value) * WRK_UNITS[unit]

    # wrk prints these two lines only when they count something.
    errors = re.search(r"Socket errors: (.*)", output)  # connect 0, read 0, write 0, timeout 0
    statuses = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    failed = sum(map(int, re.findall(r"\d+", errors[1]))) if errors else 0
    failed += int(statuses[1]) if statuses else 0
    rate = float(re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)[1])
    return rate, latency(50), latency(99), failed


def load_page(server: Gunicorn, browser: Browser, database: str, page: str, path: str, args) -> Row:
    """Load one page with wrk, with `browser`'s cookies; return its Row."""
    # A few requests first: a worker's first one pays for loading templates and
    # connecting to the database, which is start-up, not the page. They also
    # check that the page is there: wrk counts only statuses from 400 up as
    # failures, so a redirect to the login page would fill a row with fast 302s.
    for _ in range(2 * WORKERS):
        status, _, _ = browser.request(path)
        if status != 200:
            raise RuntimeError(f"{path} answered {status} before the load")
    cookie = "; ".join(f"{cookie.name}={cookie.value}" for cookie in browser.cookies)
    return Row(database, page, *run_wrk(server.url + path, cookie, args))


def flask(env: dict[str, str], *command: str) -> None:
    """Run a `flask` command as a deployment would."""
    done = subprocess.run(
        [BIN / "flask", *command], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"flask {' '.join(command)} failed:\n{done.stdout}{done.stderr}")


def pages(large: bool) -> list[tuple[str, str, int]]:
    """(label, URL, clicks on "Older posts" from that URL) for each page to load."""
    deep = DEEP_PAGE - 1
    index = [
        ("index, page 1", "/", 0),
        (f"index, page {DEEP_PAGE}", "/", deep),
        (f"index, ?page={DEEP_PAGE} typed", f"/?page={DEEP_PAGE}", 0),
    ]
    if large:  # the index alone shows how a page's cost grows with the data
        return index
    return [
        *index,
        ("explore, page 1", "/explore", 0),
        (f"explore, page {DEEP_PAGE}", "/explore", deep),
        (f"explore, ?page={DEEP_PAGE} typed", f"/explore?page={DEEP_PAGE}", 0),
        (f"profile ({PROFILE_USER})", f"/user/{PROFILE_USER}", 0),
        (f"search, common ({COMMON_WORD})", f"/search?q={quote(COMMON_WORD)}", 0),
        ("search, rare (4 chars)", f"/search?q={quote(RARE_PHRASE)}", 0),
        ("search, rare (2 chars)", f"/search?q={quote(RARE_WORD)}", 0),
    ]


def bench_app(database_url: str) -> Flask:
    """The app, in this process, on the benchmark's database.

    TestingConfig logs nowhere and needs no CSRF token to log in; the
    statements a page runs don't depend on the configuration class.
    """
    overrides = {"SQLALCHEMY_DATABASE_URI": database_url, "RATELIMIT_ENABLED": False}
    return create_app(type("BenchConfig", (TestingConfig,), overrides))


def add_rare_posts(app: Flask) -> None:
    """Put RARE_SENTENCE in RARE_POSTS of the seeded posts, spread over the blog's history."""
    with app.app_context():
        posts = db.session.scalars(select(Post).order_by(Post.id).limit(RARE_POSTS * 100)).all()
        for post in posts[::100]:
            post.body = RARE_SENTENCE + post.body
        db.session.commit()


def count_statements(app: Flask, large: bool) -> list[tuple[str, str, int]]:
    """Each page's label, final URL and the SQL statements of one GET of it,
    through Flask's test client: a deep page's URL is found by clicking, as a reader does."""
    client = app.test_client()
    client.post("/auth/login", data={"username": "demo", "password": DEMO_PASSWORD})
    client.get("/")  # the first request also writes last_seen: count a reader's ordinary one
    counted = []
    for label, path, clicks in pages(large):
        for _ in range(clicks):
            older = re.search(r'href="([^"#]+)">[^<]*Older posts', client.get(path).text)
            if older is None:
                raise RuntimeError(f"{label}: the list ends before page {DEEP_PAGE}")
            path = html.unescape(older[1])
        status, statements = statements_for_get(app, client, path)
        if status != 200:
            raise RuntimeError(f"{path} answered {status} to the test client")
        counted.append((label, path, len(statements)))
    with app.app_context():
        db.engine.dispose()  # PostgreSQL can't drop a database we're still connected to
    return counted


def measure_blog(
    database: str, url: str, posts: int, folder: Path, args, hello: float
) -> list[Row]:
    """Fill the database at `url` (`flask seed`), count each page's statements, load each page."""
    env = production_env(folder, url, **GUNICORN_SETTINGS)
    flask(env, "db", "upgrade")
    flask(env, "seed", "--users", str(USERS), "--posts", str(posts), "--follows", str(FOLLOWS))
    app = bench_app(url)
    add_rare_posts(app)
    counted = count_statements(app, large=posts > POSTS)
    rows = []
    with run_gunicorn(env, folder, app="blog:app", workers=WORKERS, upgrade=False) as server:
        browser = Browser(server.url, timeout=REQUEST_TIMEOUT)
        login = browser.submit("/auth/login", {"username": "demo", "password": DEMO_PASSWORD})
        if login[0] != 302:
            raise RuntimeError(f"logging in over HTTP answered {login[0]}")
        for label, path, statements in counted:
            row = load_page(server, browser, database, label, path, args)
            row.statements = statements
            print_row(row, hello)
            rows.append(row)
        server.stop()
    return rows


def measure_postgresql(folder: Path, args, hello: float) -> list[Row]:
    """The blog on a new PostgreSQL database, dropped at the end; no rows if none answers."""
    from pytest import UsageError

    # tests/databases.py reads the server's URL when it is imported.
    os.environ["TEST_DATABASE_URL"] = os.environ.get("TEST_DATABASE_URL") or DEFAULT_POSTGRES
    from tests import databases

    try:
        databases.check_server()
    except UsageError as error:
        print(f"PostgreSQL: skipped: {error}")
        return []
    with databases.fresh_database(folder) as url:
        return measure_blog("PostgreSQL", url, POSTS, folder, args, hello)


def measure_hello_world(folder: Path, args) -> Row:
    """The ceiling: bench/hello_world.py under exactly the gunicorn settings the blog gets."""
    env = production_env(folder, "sqlite://", **GUNICORN_SETTINGS)
    ceiling = {"app": "bench.hello_world:app", "workers": WORKERS, "ready_path": "/"}
    with run_gunicorn(env, folder, upgrade=False, **ceiling) as server:
        row = load_page(server, Browser(server.url), "-", "hello-world (the ceiling)", "/", args)
        server.stop()
    print_row(row, row.rate)
    return row


def mark(ok: bool) -> str:
    return "ok" if ok else "MISS"


def print_row(row: Row, hello: float) -> None:
    ratio = row.rate / hello
    ratio_text, sql_text = f"{ratio:.3f}", "-"
    if row.statements is not None:
        ratio_text += f" {'ok+' if ratio >= RATIO_AIM else mark(ratio >= RATIO_MIN)}"
        sql_text = f"{row.statements} {mark(row.statements <= STATEMENTS_MAX)}"
    print(
        f"{row.database:<21} {row.page:<25} {row.rate:7.1f} {row.p50 * 1000:6.1f} "
        f"{row.p99 * 1000:6.1f}  {ratio_text:<10} {sql_text:<6} {row.failed:6d}",
        flush=True,
    )


def print_summary(rows: list[Row]) -> None:
    """How much longer a request takes on a deep page, and with 10x the posts."""
    rate = {(row.database, row.page): row.rate for row in rows}

    def slowdown(base: tuple[str, str], other: tuple[str, str]) -> str:
        return f"{rate[base] / rate[other]:.2f}x {mark(rate[base] / rate[other] <= SLOWDOWN_MAX)}"

    print(f"\nTime per request, page {DEEP_PAGE} against page 1 (target <= {SLOWDOWN_MAX}x):")
    for database in dict.fromkeys(row.database for row in rows[1:]):
        found = []
        for name in ("index", "explore"):
            first, deep = (database, f"{name}, page 1"), (database, f"{name}, page {DEEP_PAGE}")
            if first in rate:
                found.append(f"{name} {slowdown(first, deep)}")
        print(f"   {database}: {', '.join(found)}")
    if (LARGE, "index, page 1") in rate and ("SQLite", "index, page 1") in rate:
        print(f"The index at {LARGE_POSTS:,} posts against {POSTS:,} (target <= {SLOWDOWN_MAX}x):")
        for page in ("index, page 1", f"index, page {DEEP_PAGE}"):
            print(f"   {page}: {slowdown(('SQLite', page), (LARGE, page))}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="load per page (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (16)")
    parser.add_argument("--quick", action="store_true", help="2 s per page: a smoke run")
    parser.add_argument("--no-postgres", dest="postgres", action="store_false")
    parser.add_argument("--no-large", dest="large", action="store_false", help=f"skip {LARGE}")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 2
    return args


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("The benchmark loads pages with wrk: apt-get install wrk (or brew install wrk).")
    # Anything else running takes its share of the same cores: a load average
    # well above 0 before the run means noisy figures.
    load_before = os.getloadavg()[0]
    print(
        f"{USERS:,} users, {POSTS:,} posts, {FOLLOWS} follows per user. Targets: x hello >= "
        f"{RATIO_MIN} (aim {RATIO_AIM}: ok+), SQL statements per request <= {STATEMENTS_MAX}.\n"
        f"\n{'database':<21} {'page':<25} {'req/s':>7} {'p50 ms':>6} {'p99 ms':>6} "
        f" {'x hello':<10} {'SQL':<6} {'failed':>6}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        folders = {name: Path(tmp, name) for name in ("hello", "sqlite", "postgres", "large")}
        for folder in folders.values():
            folder.mkdir()
        rows = [measure_hello_world(folders["hello"], args)]
        hello = rows[0].rate
        sqlite = f"sqlite:///{folders['sqlite'] / 'blog.sqlite'}"
        rows += measure_blog("SQLite", sqlite, POSTS, folders["sqlite"], args, hello)
        if args.postgres:
            rows += measure_postgresql(folders["postgres"], args, hello)
        if args.large:
            large = f"sqlite:///{folders['large'] / 'blog.sqlite'}"
            rows += measure_blog(LARGE, large, LARGE_POSTS, folders["large"], args, hello)
    print_summary(rows)
    print(
        f"\nMachine: {os.cpu_count()} cores ({platform.machine()}, {platform.system()} "
        f"{platform.release()}), Python {platform.python_version()}; wrk on the same cores.\n"
        f"Load average (1 min) before the run: {load_before:.2f}.\n"
        f"Load: {args.seconds} s per page at concurrency {args.concurrency}, gunicorn with "
        f"{WORKERS} sync workers (gunicorn.conf.py, max_requests off)."
    )
    failed = sum(row.failed for row in rows)
    if failed:
        print(f"\nFAILED: {failed} requests under load got no 2xx answer (column 'failed').")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

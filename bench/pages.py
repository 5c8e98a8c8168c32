"""Benchmark the blog's pages: `make bench`, or `.venv/bin/python -m bench.pages`.

Run it from the project root, as a module: that is how it imports the tests'
helpers (tests/servers.py, tests/query_count.py, tests/databases.py).

Each page is loaded for 10 seconds at concurrency 16 by wrk (`apt-get install
wrk`), under gunicorn with the production config and 2 sync workers, logged in
as the demo user of `flask seed --users 1000 --posts 50000 --follows 50`: on
SQLite, on PostgreSQL when a server answers (TEST_DATABASE_URL, by default the
local one; a database of its own, dropped at the end), and on SQLite again
with 10x the posts. Every listing page is measured at 10 and at 25 posts a
page (POSTS_PER_PAGE): one gunicorn per page size, on the same database, and
the two rows of a page one after the other. For each page it prints:

- requests per second, also as a fraction of a bare Flask hello-world's under
  the same gunicorn ("x hello"): nothing the blog does can be faster on this
  machine, so the ratio means the same on a laptop and on a server;
- the median and 99th percentile latency. With 16 requests in flight and 2
  workers, 14 wait in gunicorn's queue, so p50 is mostly queueing;
- the SQL statements of one request, counted in this process with Flask's
  test client on the same database: the count doesn't depend on the machine,
  and shows one query per post long before a stopwatch does. It must not
  change with the page size either.

Page 200 is the one a reader reaches by clicking "Older posts" 199 times: its
URL carries a cursor (app/pagination.py). Typed as ?page=200, the app reads it
with OFFSET: a row of its own. The demo user's timeline (the index) holds
about 2,580 posts, 104 pages of 25: with more than 10 posts a page, its deep
page is the one as many posts in as page 200 of 10 (page 80 of 25). Search is
measured three times, at the first page size only: for a word in about a
quarter of the posts, where the first page's matches come soon, and for words
in RARE_POSTS of them, where a database without an index for them reads every
post.

The targets are printed next to the figures, never asserted: speed is measured
here, not in tests. At the end, the listing pages (index, explore, a profile)
slower than LISTING_MIN of hello-world are listed. The exit status is 1 if a
request under load failed. Options: --seconds and --concurrency change the
load, --quick is a 2-second smoke run, --per-page N (repeatable) chooses the
page sizes, --no-sqlite, --no-postgres and --no-large skip those parts.
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
from contextlib import ExitStack
from dataclasses import dataclass
from itertools import zip_longest
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
# config.py's default page size, and a larger one a blog might well choose.
PAGE_SIZES = (10, 25)
# Explore must still have a page 200: 200 pages of 100 are 20,000 of its 50,000 posts.
PER_PAGE_MAX = 100
# How far into the demo user's timeline its deep page is, in posts: page 200
# of 10. The timeline (about 2,580 posts) has no page 200 at 25 a page.
INDEX_DEPTH = DEEP_PAGE * 10
PROFILE_USER = "alice1"  # the second user `flask seed` makes, with about 50 posts
# Search: a word in about a quarter of the posts `flask seed` writes, and a
# sentence in none of them, added to RARE_POSTS posts here. In Chinese, the
# reason search matches substrings rather than words; searched for by a phrase
# of four characters and by a word of two, which a trigram index can't serve.
COMMON_WORD = "rollback"
RARE_SENTENCE = "回滚之后再渲染错误页面。"
RARE_PHRASE, RARE_WORD = "错误页面", "回滚"
RARE_POSTS = 20

# x hello: the listing pages must reach LISTING_MIN; search, which may have
# to read every post, SEARCH_MIN (SEARCH_AIM earns "ok+").
LISTING_MIN = 0.1
SEARCH_MIN, SEARCH_AIM = 0.05, 0.1
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
DATABASE_WIDTH, PAGE_WIDTH = 21, 36  # the table's first two columns


@dataclass(frozen=True)
class Page:
    """A page to load, and how a reader reaches it."""

    kind: str  # the same at every page size ("index, deep"), where the name may not be
    name: str  # in the table ("index, page 200")
    path: str
    clicks: int = 0  # on "Older posts", starting from `path`
    search: bool = False  # search is held to a target of its own

    @property
    def target(self) -> float:
        return SEARCH_MIN if self.search else LISTING_MIN


HELLO = Page("hello", "hello-world (the ceiling)", "/")


@dataclass
class Row:
    """One page's figures, at one page size."""

    database: str
    page: Page
    per_page: int | None  # None for hello-world, which has no pages
    rate: float  # requests per second
    p50: float  # seconds
    p99: float
    failed: int  # answers of 400 and above, and requests with no answer
    statements: int | None = None  # None for hello-world, which has no database

    @property
    def label(self) -> str:
        return (
            self.page.name if self.per_page is None else f"{self.page.name} ({self.per_page}/page)"
        )


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


def load_page(
    server: Gunicorn, browser: Browser, path: str, args
) -> tuple[float, float, float, int]:
    """Load one page with wrk, with `browser`'s cookies; return run_wrk's figures."""
    # A few requests first: a worker's first one pays for loading templates and
    # connecting to the database, which is start-up, not the page. They also
    # check that the page is there: wrk counts only statuses from 400 up as
    # failures, so a redirect to the login page would fill a row with fast 302s.
    for _ in range(2 * WORKERS):
        status, _, _ = browser.request(path)
        if status != 200:
            raise RuntimeError(f"{path} answered {status} before the load")
    cookie = "; ".join(f"{cookie.name}={cookie.value}" for cookie in browser.cookies)
    return run_wrk(server.url + path, cookie, args)


def flask(env: dict[str, str], *command: str) -> None:
    """Run a `flask` command as a deployment would."""
    done = subprocess.run(
        [BIN / "flask", *command], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"flask {' '.join(command)} failed:\n{done.stdout}{done.stderr}")


def deep_page(list_name: str, per_page: int) -> int:
    """The page number measured deep into a list: page 200, or for the index, no
    further in than page 200 of 10 (INDEX_DEPTH posts), which its timeline reaches."""
    if list_name == "index":
        return min(DEEP_PAGE, INDEX_DEPTH // per_page)
    return DEEP_PAGE


def pages(per_page: int, large: bool, search: bool) -> list[Page]:
    """The pages to load at `per_page` posts a page; search pages only if `search`."""
    lists = [("index", "/")] if large else [("index", "/"), ("explore", "/explore")]
    listed = []
    for name, path in lists:
        deep = deep_page(name, per_page)
        listed += [
            Page(f"{name}, page 1", f"{name}, page 1", path),
            Page(f"{name}, deep", f"{name}, page {deep}", path, clicks=deep - 1),
            Page(f"{name}, typed", f"{name}, ?page={deep} typed", f"{path}?page={deep}"),
        ]
    if large:  # the index alone shows how a page's cost grows with the data
        return listed
    listed.append(Page("profile", f"profile ({PROFILE_USER})", f"/user/{PROFILE_USER}"))
    if search:
        listed += [
            Page(
                "search, common",
                f"search, common ({COMMON_WORD})",
                f"/search?q={quote(COMMON_WORD)}",
                search=True,
            ),
            Page(
                "search, rare 4",
                "search, rare (4 chars)",
                f"/search?q={quote(RARE_PHRASE)}",
                search=True,
            ),
            Page(
                "search, rare 2",
                "search, rare (2 chars)",
                f"/search?q={quote(RARE_WORD)}",
                search=True,
            ),
        ]
    return listed


def bench_app(database_url: str, per_page: int) -> Flask:
    """The app, in this process, on the benchmark's database, at `per_page` posts a page.

    TestingConfig logs nowhere and needs no CSRF token to log in; the
    statements a page runs don't depend on the configuration class.
    """
    overrides = {
        "SQLALCHEMY_DATABASE_URI": database_url,
        "RATELIMIT_ENABLED": False,
        "POSTS_PER_PAGE": per_page,
    }
    return create_app(type("BenchConfig", (TestingConfig,), overrides))


def add_rare_posts(app: Flask) -> None:
    """Put RARE_SENTENCE in RARE_POSTS of the posts, spread over the blog's history."""
    with app.app_context():
        posts = db.session.scalars(select(Post).order_by(Post.id).limit(RARE_POSTS * 100)).all()
        for post in posts[::100]:
            post.body = RARE_SENTENCE + post.body
        db.session.commit()


def count_statements(app: Flask, planned: list[Page]) -> list[tuple[Page, str, int]]:
    """Each page, its final URL and the SQL statements of one GET of it, through
    Flask's test client: a deep page's URL is found by clicking, as a reader does."""
    client = app.test_client()
    client.post("/auth/login", data={"username": "demo", "password": DEMO_PASSWORD})
    client.get("/")  # the first request also writes last_seen: count a reader's ordinary one
    counted = []
    for page in planned:
        path = page.path
        for _ in range(page.clicks):
            older = re.search(r'href="([^"#]+)">[^<]*Older posts', client.get(path).text)
            if older is None:
                raise RuntimeError(f"{page.name}: the list ends before page {page.clicks + 1}")
            path = html.unescape(older[1])
        status, statements = statements_for_get(app, client, path)
        if status != 200:
            raise RuntimeError(f"{page.name}: {path} answered {status} to the test client")
        counted.append((page, path, len(statements)))
    with app.app_context():
        db.engine.dispose()  # PostgreSQL can't drop a database we're still connected to
    return counted


def side_by_side(plans: dict[int, list]) -> list[tuple[int, object]]:
    """(page size, item) in the table's order: each page at every size, one after the other.

    The plans list the same pages in the same order at every size, except search,
    which only the first size has, at the end.
    """
    order = []
    for items in zip_longest(*plans.values()):
        order += [
            (per_page, item)
            for per_page, item in zip(plans, items, strict=True)
            if item is not None
        ]
    return order


def start_blog(
    stack: ExitStack, env: dict[str, str], folder: Path, per_page: int
) -> tuple[Gunicorn, Browser]:
    """gunicorn serving the blog at `per_page` posts a page until `stack` closes,
    and a Browser logged in to it as the demo user."""
    server = stack.enter_context(
        run_gunicorn(
            env | {"POSTS_PER_PAGE": str(per_page)},
            folder,
            app="blog:app",
            workers=WORKERS,
            upgrade=False,
        )
    )
    browser = Browser(server.url, timeout=REQUEST_TIMEOUT)
    login = browser.submit("/auth/login", {"username": "demo", "password": DEMO_PASSWORD})
    if login[0] != 302:
        raise RuntimeError(f"logging in over HTTP answered {login[0]}")
    return server, browser


def measure_blog(
    database: str, url: str, posts: int, folder: Path, args, hello: float
) -> list[Row]:
    """Fill the database at `url` (`flask seed`), count each page's statements, load each page."""
    env = production_env(folder, url, **GUNICORN_SETTINGS)
    flask(env, "db", "upgrade")
    flask(env, "seed", "--users", str(USERS), "--posts", str(posts), "--follows", str(FOLLOWS))
    apps = {per_page: bench_app(url, per_page) for per_page in args.per_page}
    first = args.per_page[0]
    add_rare_posts(apps[first])
    large = posts > POSTS
    # Search at the first size only: its rows are about how it finds posts (an
    # index, or reading every post), and three more rows per size would
    # lengthen the run. tests/test_query_budget.py counts its statements at
    # every size.
    plans = {
        per_page: count_statements(app, pages(per_page, large, search=per_page == first))
        for per_page, app in apps.items()
    }
    rows = []
    # One gunicorn per page size, all started before the first load: the idle
    # ones take no CPU, and a page's rows at each size are measured one after
    # the other, under the same conditions, not minutes apart.
    with ExitStack() as stack:
        servers = {per_page: start_blog(stack, env, folder, per_page) for per_page in plans}
        for per_page, (page, path, statements) in side_by_side(plans):
            server, browser = servers[per_page]
            figures = load_page(server, browser, path, args)
            row = Row(database, page, per_page, *figures, statements=statements)
            print_row(row, hello)
            rows.append(row)
        for server, _ in servers.values():
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
        row = Row("-", HELLO, None, *load_page(server, Browser(server.url), "/", args))
        server.stop()
    print_row(row, row.rate)
    return row


def mark(ok: bool) -> str:
    return "ok" if ok else "MISS"


def ratio_mark(page: Page, ratio: float) -> str:
    """ok or MISS against the page's target; search at SEARCH_AIM earns ok+."""
    if page.search and ratio >= SEARCH_AIM:
        return "ok+"
    return mark(ratio >= page.target)


def format_row(row: Row, hello: float) -> str:
    """One line of the table."""
    ratio = row.rate / hello
    ratio_text, sql_text = f"{ratio:.3f}", "-"
    if row.statements is not None:
        ratio_text += f" {ratio_mark(row.page, ratio)}"
        sql_text = f"{row.statements} {mark(row.statements <= STATEMENTS_MAX)}"
    return (
        f"{row.database:<{DATABASE_WIDTH}} {row.label:<{PAGE_WIDTH}} {row.rate:7.1f} "
        f"{row.p50 * 1000:6.1f} {row.p99 * 1000:6.1f}  {ratio_text:<10} {sql_text:<6} "
        f"{row.failed:6d}"
    )


def print_row(row: Row, hello: float) -> None:
    print(format_row(row, hello), flush=True)


def header(args) -> str:
    """What was measured and the targets, then the table's column names."""
    sizes = " and ".join(str(per_page) for per_page in args.per_page)
    return (
        f"{USERS:,} users, {POSTS:,} posts, {FOLLOWS} follows per user; {sizes} posts a page "
        f"(POSTS_PER_PAGE).\nTargets: x hello >= {LISTING_MIN} for the listing pages (index, "
        f"explore, a profile), >= {SEARCH_MIN} for search ({SEARCH_AIM}: ok+);\nSQL statements "
        f"per request <= {STATEMENTS_MAX}, the same at every page size.\n"
        f"\n{'database':<{DATABASE_WIDTH}} {'page':<{PAGE_WIDTH}} {'req/s':>7} {'p50 ms':>6} "
        f"{'p99 ms':>6}  {'x hello':<10} {'SQL':<6} {'failed':>6}"
    )


def summary(rows: list[Row], hello: float) -> list[str]:
    """The lines after the table: deep pages, 10x the posts, statements by page size,
    and the listing pages that miss their target."""
    measured = [row for row in rows if row.per_page is not None]
    by_kind = {(row.database, row.per_page, row.page.kind): row for row in measured}
    databases = list(dict.fromkeys(row.database for row in measured))
    sizes = list(dict.fromkeys(row.per_page for row in measured))
    lines = []

    def slowdown(base: Row, other: Row) -> str:
        return f"{base.rate / other.rate:.2f}x {mark(base.rate / other.rate <= SLOWDOWN_MAX)}"

    deep_lines = []
    for database in databases:
        for per_page in sizes:
            found = []
            for name in ("index", "explore"):
                first = by_kind.get((database, per_page, f"{name}, page 1"))
                deep = by_kind.get((database, per_page, f"{name}, deep"))
                if first and deep:
                    found.append(f"{deep.page.name}: {slowdown(first, deep)}")
            if found:
                deep_lines.append(f"   {database}, {per_page}/page: {'; '.join(found)}")
    if deep_lines:
        lines += [f"Time per request, the deep page against page 1 (target <= {SLOWDOWN_MAX}x):"]
        lines += deep_lines

    large_lines = []
    for per_page in sizes:
        for kind in ("index, page 1", "index, deep"):
            small, large = (by_kind.get((name, per_page, kind)) for name in ("SQLite", LARGE))
            if small and large:
                large_lines.append(f"   {large.label}: {slowdown(small, large)}")
    if large_lines:
        lines += [
            f"The index at {LARGE_POSTS:,} posts against {POSTS:,} (target <= {SLOWDOWN_MAX}x):"
        ]
        lines += large_lines

    if len(sizes) > 1:
        lines.append(
            f"SQL statements per request at {', '.join(map(str, sizes[1:]))} posts a page "
            f"against {sizes[0]} (target: the same):"
        )
        for database in databases:
            changed = []
            for row in measured:
                base = by_kind.get((database, sizes[0], row.page.kind))
                if row.database == database and base and row.statements != base.statements:
                    changed.append(f"{row.label} {base.statements} -> {row.statements}")
            lines.append(f"   {database}: " + (f"MISS: {'; '.join(changed)}" if changed else "ok"))

    listing = [row for row in measured if not row.page.search]
    missed = [row for row in listing if row.rate / hello < LISTING_MIN]
    lines.append(
        f"Listing pages below {LISTING_MIN}x hello-world: {len(missed)} of {len(listing)}"
        + (":" if missed else ".")
    )
    lines += [
        f"   {row.database:<{DATABASE_WIDTH}} {row.label:<{PAGE_WIDTH}} {row.rate / hello:.3f}x"
        for row in missed
    ]
    return lines


def page_size(text: str) -> int:
    """--per-page's value: a whole number from 1 to PER_PAGE_MAX."""
    # int() alone would also take " 25", "2_5" and digits of other scripts.
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not a whole number of posts: {text!r}")
    value = int(text)
    if not 1 <= value <= PER_PAGE_MAX:
        raise argparse.ArgumentTypeError(
            f"{value} is not from 1 to {PER_PAGE_MAX} (explore must still have a page {DEEP_PAGE})"
        )
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="load per page (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (16)")
    parser.add_argument("--quick", action="store_true", help="2 s per page: a smoke run")
    parser.add_argument(
        "--per-page",
        type=page_size,
        action="append",
        metavar="N",
        help="posts a page (POSTS_PER_PAGE); repeat for several (default: "
        f"{' and '.join(map(str, PAGE_SIZES))}); search is measured at the first only",
    )
    parser.add_argument(
        "--no-sqlite", dest="sqlite", action="store_false", help=f"skip SQLite at {POSTS:,} posts"
    )
    parser.add_argument("--no-postgres", dest="postgres", action="store_false")
    parser.add_argument("--no-large", dest="large", action="store_false", help=f"skip {LARGE}")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 2
    # In the order given, each once: the first is the one search is measured at.
    args.per_page = list(dict.fromkeys(args.per_page or PAGE_SIZES))
    return args


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("The benchmark loads pages with wrk: apt-get install wrk (or brew install wrk).")
    # Anything else running takes its share of the same cores: a load average
    # well above 0 before the run means noisy figures.
    load_before = os.getloadavg()[0]
    print(header(args))
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:
        folders = {name: Path(tmp, name) for name in ("hello", "sqlite", "postgres", "large")}
        for folder in folders.values():
            folder.mkdir()
        rows = [measure_hello_world(folders["hello"], args)]
        hello = rows[0].rate
        if args.sqlite:
            sqlite = f"sqlite:///{folders['sqlite'] / 'blog.sqlite'}"
            rows += measure_blog("SQLite", sqlite, POSTS, folders["sqlite"], args, hello)
        if args.postgres:
            rows += measure_postgresql(folders["postgres"], args, hello)
        if args.large:
            large = f"sqlite:///{folders['large'] / 'blog.sqlite'}"
            rows += measure_blog(LARGE, large, LARGE_POSTS, folders["large"], args, hello)
    print("", *summary(rows, hello), sep="\n")
    print(
        f"\nMachine: {os.cpu_count()} cores ({platform.machine()}, {platform.system()} "
        f"{platform.release()}), Python {platform.python_version()}; wrk on the same cores.\n"
        f"Load average (1 min) before the run: {load_before:.2f}.\n"
        f"Load: {args.seconds} s per page at concurrency {args.concurrency}, gunicorn with "
        f"{WORKERS} sync workers (gunicorn.conf.py, max_requests off), one per page size."
    )
    failed = sum(row.failed for row in rows)
    if failed:
        print(f"\nFAILED: {failed} requests under load got no 2xx answer (column 'failed').")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

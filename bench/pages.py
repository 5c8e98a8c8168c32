"""Benchmark the blog's pages: `make bench` (or `.venv/bin/python bench/pages.py`).

What it measures, all on 127.0.0.1, in one run:

1. A ceiling: a bare Flask hello-world under the same gunicorn settings as
   the blog (production config, 2 sync workers). Nothing the blog does can be
   faster than this on this machine, so every page is reported as a fraction
   of it; that ratio means the same thing on a laptop and on a server, where
   requests per second alone would not.
2. The blog's pages on SQLite with 1,000 users, 50,000 posts and 50 follows
   per user (`flask seed`), logged in as the demo user: the index (the posts
   of the people you follow) at page 1 and page 200, explore (every post) at
   page 1 and page 200, and a profile. Page 200 is the one a reader reaches
   by clicking "Older posts" 199 times (its URL carries a cursor); the same
   page typed as ?page=200, which the app reads with OFFSET, gets a row of
   its own. Each page gets about 10 seconds of load
   at concurrency 16 from `wrk` when it is installed (Debian: `apt-get install
   wrk`), else from a small Python load generator in this file.
3. The same pages on PostgreSQL, when a server answers (TEST_DATABASE_URL, by
   default postgresql://postgres@127.0.0.1:5432/postgres; a database of its
   own, dropped at the end).
4. The index again at 10x the posts (500,000), to show how its cost grows
   with the data: a page that reads only the rows it shows costs the same at
   any size; one that sorts or counts the whole table gets 10x slower.

For each page it prints requests per second, the median (p50) and 99th
percentile (p99) latency, the ratio to hello-world's requests per second, the
SQL statements one request runs, and the peak memory (RSS) of a worker. Next
to the numbers are the targets from the issue: at least 0.05x hello-world
(aim for 0.1x), at most 4 statements, page 200 no slower than 1.5x page 1,
and 500,000 posts no slower than 1.5x 50,000.

Why these three kinds of figures:
- Requests per second under load is what a server can take; the latencies
  are what one reader waits. At concurrency 16 on 2 workers, 14 requests wait
  in gunicorn's queue at any moment, so p50 is mostly queueing: about
  16 / (requests per second).
- The statement count doesn't depend on the machine and catches the classic
  mistake (one query per post, per author, per avatar) even in a test
  database of ten rows. gunicorn can't count them, so they are counted in
  this process with Flask's test client against the same database
  (tests/query_count.py, which a test can use as well).
- Peak RSS (VmHWM in /proc) shows a page that loads too much into memory:
  a whole table fetched to show ten rows is slow and big.

The figures are printed, not asserted: speed is measured here, not in tests,
and the targets are for the humans reading the table. The run fails (exit
status 1) only if something failed to run: a server that didn't start, or a
request under load that didn't get a 2xx answer.

Flags: --seconds and --concurrency change the load; --quick is a 2-second
smoke run; --no-wrk uses the Python load generator even when wrk is there;
--no-postgres and --no-large skip parts 3 and 4; --show-sql prints the
statements each page ran.
"""

import argparse
import html
import os
import platform
import re
import secrets
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.cookiejar import CookieJar
from pathlib import Path

# The tests' helpers (servers, query_count), and the app itself for counting
# statements in this process (`python -m pytest` puts the project on the path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from query_count import statements_for_get
from servers import BIN, ROOT, Gunicorn, production_env, run_gunicorn

# The sizes of the issue: a blog with some history, where a page that reads
# or counts every row shows it.
USERS = 1_000
POSTS = 50_000
FOLLOWS = 50
LARGE_POSTS = 10 * POSTS
WORKERS = 2
# A page deep in the list: OFFSET makes the database walk past every row
# before it, so page 200 costs what page 1 does only if an index serves it.
DEEP_PAGE = 200
PROFILE_USER = "alice1"  # the second user `flask seed` makes, with ~50 posts

# The targets (printed next to the numbers, never asserted).
RATIO_MIN, RATIO_AIM = 0.05, 0.1
STATEMENTS_MAX = 4
SLOWDOWN_MAX = 1.5

# How long one request may take under load before it counts as failed. Long,
# because a slow page at concurrency 16 waits behind 15 others: an index
# page that pages with OFFSET and COUNT(*) (0.5 s a request) would time out wrk's default 2 seconds.
REQUEST_TIMEOUT = 30

DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"

HELLO_WORLD = '''\
"""The ceiling: the least a Flask app can do for a request."""

from flask import Flask

app = Flask(__name__)


# Every path, because run_gunicorn waits for /explore to answer before it returns.
@app.route("/", defaults={"path": ""})
@app.route("/<path:path>")
def hello(path):
    return "Hello, World!"
'''

# wrk runs this in each of its threads. response() sees every answer, so a
# redirect to the login page counts as a failure too (wrk's own error count
# only has statuses >= 400); done() runs once, at the end, and prints one line
# for us to parse, with the latency percentiles in microseconds.
WRK_SCRIPT = """\
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local failed = 0
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d errors=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    failed, e.connect + e.read + e.write + e.timeout))
end
"""


class RunFailed(Exception):
    """Something the benchmark needs didn't work; the run exits with status 1."""


@dataclass
class Load:
    """What a load generator measured for one URL."""

    requests: int
    seconds: float
    p50: float  # seconds
    p99: float
    non2xx: int  # answers that weren't 2xx (a redirect to /auth/login, a 404, a 500)
    errors: int  # requests with no answer at all: refused, reset, timed out

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


@dataclass
class Row:
    label: str
    path: str
    load: Load
    statements: int | None  # None for hello-world, which has no database
    peak_rss_kb: int | None
    note: str = ""


@dataclass
class Table:
    title: str
    rows: list[Row] = field(default_factory=list)

    def rate(self, label: str) -> float | None:
        return next((row.load.rate for row in self.rows if row.label == label), None)


# --- Load generators ---------------------------------------------------------------------


def load_with_wrk(url: str, cookie: str, seconds: float, concurrency: int, tmp: Path) -> Load:
    """Load `url` with wrk: C, event-driven, so the generator is never the bottleneck."""
    script = tmp / "bench.lua"
    script.write_text(WRK_SCRIPT)
    command = [
        "wrk",
        # One thread sends tens of thousands of requests a second; more would
        # only take CPU from the server on a small machine.
        "--threads=1",
        f"--connections={concurrency}",
        f"--duration={max(1, round(seconds))}s",
        f"--timeout={REQUEST_TIMEOUT}s",
        f"--script={script}",
        *(["--header", f"Cookie: {cookie}"] if cookie else []),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    found = re.search(r"^BENCH (.*)$", done.stdout, re.MULTILINE)
    if done.returncode != 0 or not found:
        raise RunFailed(f"wrk failed on {url}:\n{done.stdout}{done.stderr}")
    values = dict(pair.split("=") for pair in found.group(1).split())
    return Load(
        requests=int(values["requests"]),
        seconds=int(values["duration_us"]) / 1e6,
        p50=int(values["p50_us"]) / 1e6,
        p99=int(values["p99_us"]) / 1e6,
        non2xx=int(values["non2xx"]),
        errors=int(values["errors"]),
    )


def load_with_python(url: str, cookie: str, seconds: float, concurrency: int) -> Load:
    """Load `url` from `concurrency` threads, each sending one request after another.

    Each request is a new connection that asks the server to close it after
    the answer (``Connection: close``), and the answer is read to the end.
    gunicorn's sync workers close every connection after one answer anyway,
    whatever the client asks, so keep-alive would buy nothing. And a raw
    socket rather than http.client: http.client parses every header with the
    email package, which costs more CPU than hello-world costs gunicorn, on
    the same cores the server needs. Even so, the threads share one core (the
    GIL), so near the ceiling this generator, not the server, can be what
    limits the count; wrk has no such limit.
    """
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        + (f"Cookie: {cookie}\r\n" if cookie else "")
        + "Connection: close\r\n\r\n"
    ).encode()
    start = threading.Barrier(concurrency + 1)
    deadline = 0.0  # set before the threads pass the barrier
    latencies: list[float] = []
    counts = {"non2xx": 0, "errors": 0}
    lock = threading.Lock()

    def send_requests() -> None:
        mine: list[float] = []
        non2xx = errors = 0
        start.wait()
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                with socket.create_connection(
                    (parts.hostname, parts.port), timeout=REQUEST_TIMEOUT
                ) as connection:
                    connection.sendall(request)
                    # recv() until it returns b"": the server has sent all and closed.
                    answer = b"".join(iter(lambda: connection.recv(65536), b""))
            except OSError:
                errors += 1
                continue
            mine.append(time.perf_counter() - began)
            status = re.match(rb"HTTP/1\.[01] (\d{3}) ", answer)
            if not status:
                errors += 1
            elif not status.group(1).startswith(b"2"):
                non2xx += 1
        # One lock per thread at the end, not one per request: the threads
        # should spend their time on HTTP, not on each other.
        with lock:
            latencies.extend(mine)
            counts["non2xx"] += non2xx
            counts["errors"] += errors

    threads = [threading.Thread(target=send_requests) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    began = time.perf_counter()
    deadline = began + seconds
    start.wait()
    for thread in threads:
        thread.join()
    # Requests started before the deadline finish after it: count their time too.
    elapsed = time.perf_counter() - began
    if len(latencies) < 2:
        raise RunFailed(f"only {len(latencies)} answers from {url} in {seconds} s")
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return Load(len(latencies), elapsed, cuts[49], cuts[98], counts["non2xx"], counts["errors"])


# --- Memory of gunicorn's workers ----------------------------------------------------------


def worker_pids(master: int) -> list[int]:
    """The processes whose parent is gunicorn's master: its workers."""
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:  # a process that just ended
            continue
        if re.search(rf"^PPid:\s+{master}$", text, re.MULTILINE):
            pids.append(int(status.parent.name))
    return pids


def reset_peak_rss(pids: list[int]) -> bool:
    """Start each worker's VmHWM (peak RSS) over from its current RSS.

    Writing 5 to /proc/<pid>/clear_refs does that (Linux 4.0+). Without it
    the peak would be the highest since the worker started, so every row
    would carry the peak of the pages loaded before it.
    """
    try:
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_kb(pids: list[int]) -> int | None:
    """The largest VmHWM among `pids`, in kB."""
    peaks = []
    for pid in pids:
        try:
            found = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
        except OSError:
            continue
        if found:
            peaks.append(int(found.group(1)))
    return max(peaks, default=None)


# --- One page under load -------------------------------------------------------------------


def warm_up(url: str, cookie: str) -> None:
    """A few requests before timing, which also check that the page answers 200.

    A worker's first request pays for loading templates and connecting to the
    database; that is start-up cost, not the page's. And a page that 404s
    should stop the run with a clear message, not fill a table row with
    thousands of fast 404s.
    """
    for _ in range(2 * WORKERS):
        request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:
                response.read()
                status = response.status
                final_url = response.url
        except urllib.error.HTTPError as error:
            status, final_url = error.code, url
        if status != 200 or final_url != url:
            raise RunFailed(f"{url} answered {status} (ended at {final_url}) before the load")


def measure_page(server: Gunicorn, label: str, path: str, cookie: str, args, tmp: Path) -> Row:
    """Load one page for args.seconds; its row has no statement count yet."""
    url = server.url + path
    warm_up(url, cookie)
    # The workers are the same processes for every page of a server: look
    # them up again anyway, in case one was restarted.
    pids = worker_pids(server.process.pid)
    reset = reset_peak_rss(pids)
    if args.wrk:
        load = load_with_wrk(url, cookie, args.seconds, args.concurrency, tmp)
    else:
        load = load_with_python(url, cookie, args.seconds, args.concurrency)
    note = "" if reset else "peak RSS since the worker started: /proc refused the reset"
    return Row(label, path, load, None, peak_rss_kb(worker_pids(server.process.pid)), note)


# --- The blog: seed, count statements, log in, load ----------------------------------------


def run_flask(env: dict[str, str], *command: str) -> str:
    """Run a `flask` command as a deployment would; return its output."""
    done = subprocess.run(
        [BIN / "flask", *command], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RunFailed(f"flask {' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def seed(env: dict[str, str], posts: int) -> tuple[float, str, str]:
    """Create the schema and seed it; return the seconds `flask seed` took and its login."""
    run_flask(env, "db", "upgrade")
    began = time.perf_counter()
    output = run_flask(
        env, "seed", "--users", str(USERS), "--posts", str(posts), "--follows", str(FOLLOWS)
    )
    seconds = time.perf_counter() - began
    # The command prints the login of a user with a full feed; read it rather
    # than repeat it here, so a change to the demo data `flask seed` makes can't leave us behind.
    found = re.search(r"Log in as '([^']+)' with password '([^']+)'", output)
    if not found:
        raise RunFailed(f"flask seed printed no login:\n{output}")
    return seconds, found.group(1), found.group(2)


def count_statements_per_page(
    database_url: str, username: str, password: str, pages: list["BlogPage"]
) -> dict[str, list[str]]:
    """Log in with Flask's test client, find each page's URL, and count the
    statements of one GET of it; return the statements per URL.

    A page reached by its links gets its `path` filled in here (see BlogPage).
    """
    # Imported here, not at the top: app code, which the load generators and
    # the hello-world part don't need.
    from app import create_app
    from app.extensions import db
    from config import TestingConfig

    # The statements a page runs don't depend on the configuration class;
    # TestingConfig's only differences that matter here are that it logs
    # nowhere and needs no CSRF token to log in. The database is the one
    # gunicorn will serve; this runs before the load, never during it.
    config = type(
        "BenchConfig",
        (TestingConfig,),
        {"SQLALCHEMY_DATABASE_URI": database_url, "RATELIMIT_ENABLED": False},
    )
    app = create_app(config)
    client = app.test_client()
    login = client.post("/auth/login", data={"username": username, "password": password})
    if login.status_code != 302:
        raise RunFailed(f"logging in with the test client answered {login.status_code}")

    counted = {}
    try:
        for page in pages:
            if page.clicks:
                follow_older_links(client, page)
            # The first request after logging in also writes last_seen (at most
            # once a minute); count the second, a reader's ordinary request.
            client.get(page.path)
            status, statements = statements_for_get(app, client, page.path)
            if status != 200:
                raise RunFailed(f"{page.path} answered {status} to the test client")
            counted[page.path] = statements
    finally:
        with app.app_context():
            db.engine.dispose()  # PostgreSQL can't drop a database we're still connected to
    return counted


def follow_older_links(client, page: "BlogPage") -> None:
    """Click "Older posts" page.clicks times from page.start, as a reader would, and
    set page.path to where that lands: the URL with the cursor of page DEEP_PAGE.

    If the list ends first, the last page is measured instead, and page.note says so.
    """
    path = page.start
    for clicks in range(page.clicks):
        older = re.search(
            r'<a class="page-link" href="([^"#]+)">[^<]*Older posts', client.get(path).text
        )
        if older is None:
            page.note = f"page {DEEP_PAGE} doesn't exist: measured page {clicks + 1}, the last"
            break
        path = html.unescape(older.group(1))
    page.path = path


def log_in_over_http(base_url: str, username: str, password: str) -> str:
    """Log in as a browser does; return the Cookie header that keeps us logged in.

    GET the form (it sets the session cookie that holds the CSRF secret),
    POST it back with the token from the page, and keep the cookies. A failed
    login would count against the rate limit; a successful one never does.
    """
    cookies = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
    page = opener.open(f"{base_url}/auth/login", timeout=REQUEST_TIMEOUT).read().decode()
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page)
    if not token:
        raise RunFailed("no csrf_token on the login page")
    form = {"csrf_token": token.group(1), "username": username, "password": password}
    data = urllib.parse.urlencode(form).encode()
    landing = opener.open(f"{base_url}/auth/login", data=data, timeout=REQUEST_TIMEOUT)
    body = landing.read().decode()
    if "/auth/logout" not in body:  # only a logged-in page has the log-out button
        raise RunFailed(f"logging in as {username} over HTTP failed (ended at {landing.url})")
    return "; ".join(f"{cookie.name}={cookie.value}" for cookie in cookies)


@dataclass
class BlogPage:
    """A page to load. `start` is its URL, or for a deep page the first page of its
    list, from which a reader clicks "Older posts" `clicks` times to reach it."""

    label: str
    start: str
    clicks: int = 0
    path: str = ""
    note: str = ""

    def __post_init__(self):
        self.path = self.path or self.start


def blog_pages(large: bool) -> list[BlogPage]:
    """The pages to load. Page DEEP_PAGE is reached through its links, which carry a
    cursor (app/pagination.py); typed as ?page=N it is read with OFFSET, also measured."""
    deep = DEEP_PAGE - 1
    pages = [
        BlogPage("index, page 1", "/"),
        BlogPage(f"index, page {DEEP_PAGE}", "/", clicks=deep),
        BlogPage(f"index, ?page={DEEP_PAGE} typed", f"/?page={DEEP_PAGE}"),
    ]
    if not large:
        pages += [
            BlogPage("explore, page 1", "/explore"),
            BlogPage(f"explore, page {DEEP_PAGE}", "/explore", clicks=deep),
            BlogPage(f"explore, ?page={DEEP_PAGE} typed", f"/explore?page={DEEP_PAGE}"),
            BlogPage(f"profile ({PROFILE_USER}), page 1", f"/user/{PROFILE_USER}"),
        ]
    return pages


def measure_blog(
    title: str, database_url: str, posts: int, args, tmp: Path, hello: float, large: bool = False
) -> Table:
    """Seed `database_url`, count each page's statements, then load each page under gunicorn."""
    env = production_env(tmp, database_url, **args.gunicorn_env)
    seconds, username, password = seed(env, posts)
    table = Table(f"{title}: {USERS:,} users, {posts:,} posts, {FOLLOWS} follows per user")
    print_title(f"{table.title} (flask seed: {seconds:.1f} s)")

    pages = blog_pages(large)
    counted = count_statements_per_page(database_url, username, password, pages)
    with run_gunicorn(env, tmp, app="blog:app", workers=WORKERS, upgrade=False) as server:
        cookie = log_in_over_http(server.url, username, password)
        for page in pages:
            row = measure_page(server, page.label, page.path, cookie, args, tmp)
            row.statements = len(counted[row.path])
            row.note = row.note or page.note
            table.rows.append(row)
            print_row(row, hello)
            if args.show_sql:
                for statement in counted[row.path]:
                    print("      " + " ".join(statement.split()))
        server.stop()
    print_slowdowns(table)
    return table


def measure_hello_world(args, tmp: Path) -> Row:
    """The ceiling, under exactly the gunicorn settings the blog gets."""
    folder = tmp / "hello"
    folder.mkdir()
    (folder / "hello_world.py").write_text(HELLO_WORLD)
    # PYTHONPATH rather than --chdir: gunicorn must start in the project, or
    # it wouldn't read gunicorn.conf.py, and the settings would differ.
    env = production_env(tmp, "sqlite://", PYTHONPATH=folder, **args.gunicorn_env)
    with run_gunicorn(env, tmp, app="hello_world:app", workers=WORKERS, upgrade=False) as server:
        row = measure_page(server, "hello-world (the ceiling)", "/", "", args, tmp)
        server.stop()
    return row


# --- PostgreSQL ----------------------------------------------------------------------------


def measure_postgresql(args, hello: float, tmp: Path) -> Table | None:
    """The blog on a new PostgreSQL database, dropped at the end; None if there is no server."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError

    server = make_url(args.postgres_url)
    if server.get_backend_name() != "postgresql":
        print(f"\nPostgreSQL: skipped, {server.render_as_string()} is not a PostgreSQL URL.")
        return None
    # A plain TCP connection first: a firewalled host would make the
    # database driver wait for its own, much longer, timeout.
    try:
        socket.create_connection((server.host or "localhost", server.port or 5432), 3).close()
    except OSError as error:
        print(f"\nPostgreSQL: skipped, nothing answers at {server.host}:{server.port} ({error}).")
        return None

    # tests/databases.py reads TEST_DATABASE_URL when it is imported.
    os.environ["TEST_DATABASE_URL"] = args.postgres_url
    import databases

    try:
        with databases._server_connection() as connection:
            connection.exec_driver_sql("SELECT 1")
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0]
        print(f"\nPostgreSQL: skipped, can't connect to {args.postgres_url} ({reason}).")
        return None

    name = f"blog_bench_{secrets.token_hex(4)}"
    url = databases.create_database(name)
    try:
        return measure_blog("PostgreSQL", url, POSTS, args, tmp, hello)
    finally:
        # databases.drop_database only drops the tests' blog_test_* databases;
        # the same statement, for ours. FORCE: even if a worker is still connected.
        assert name.startswith("blog_bench_")
        with databases._server_connection() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- Printing ------------------------------------------------------------------------------

HEADER = (
    f"   {'page':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
    f"{'x hello':>12} {'SQL/req':>9} {'peak RSS':>9} {'failed':>7}"
)


def print_title(title: str) -> None:
    print(f"\n{title}\n{HEADER}", flush=True)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def print_row(row: Row, hello: float) -> None:
    load = row.load
    ratio = load.rate / hello
    if row.statements is None:
        ratio_text, sql_text = f"{ratio:.3f}", "-"
    else:
        mark = "ok+" if ratio >= RATIO_AIM else "ok" if ratio >= RATIO_MIN else "MISS"
        ratio_text = f"{ratio:.3f} {mark:<4}"
        sql_text = f"{row.statements} {verdict(row.statements <= STATEMENTS_MAX):<4}"
    rss = f"{row.peak_rss_kb / 1024:.0f} MB" if row.peak_rss_kb else "?"
    failed = load.non2xx + load.errors
    print(
        f"   {row.label:<28} {load.rate:8.1f} {load.p50 * 1000:8.1f} {load.p99 * 1000:8.1f} "
        f"{ratio_text:>12} {sql_text:>9} {rss:>9} {failed:7d}",
        flush=True,
    )
    if row.note:
        print(f"      ({row.note})", flush=True)


def slowdown(base: float | None, other: float | None) -> str:
    """How many times longer a request takes at `other`'s rate than at `base`'s."""
    if not base or not other:
        return "-"
    factor = base / other
    return f"{factor:.2f}x the time per request ({verdict(factor <= SLOWDOWN_MAX)})"


def print_slowdowns(table: Table) -> None:
    for name in ("index", "explore"):
        first = table.rate(f"{name}, page 1")
        deep = table.rate(f"{name}, page {DEEP_PAGE}")
        if first and deep:
            print(f"   {name}: page {DEEP_PAGE} takes {slowdown(first, deep)}", flush=True)


def print_growth(small: Table, large: Table) -> None:
    print(f"\nIndex at {LARGE_POSTS:,} posts against {POSTS:,} (target <= {SLOWDOWN_MAX}x):")
    for label in ("index, page 1", f"index, page {DEEP_PAGE}"):
        print(f"   {label}: {slowdown(small.rate(label), large.rate(label))}")


def print_targets() -> None:
    print(
        f"\nTargets (for reading, not asserted): x hello >= {RATIO_MIN} "
        f"(aim {RATIO_AIM}: 'ok+'), at most {STATEMENTS_MAX} SQL statements "
        f"per page,\npage {DEEP_PAGE} no slower than {SLOWDOWN_MAX}x page 1, "
        f"{LARGE_POSTS:,} posts no slower than {SLOWDOWN_MAX}x {POSTS:,}."
    )


def print_machine(args, load_average_before: float) -> None:
    generator = "wrk" if args.wrk else "Python threads (bench/pages.py)"
    print(
        f"\nMachine: {os.cpu_count()} cores ({platform.machine()}, {platform.system()} "
        f"{platform.release()}), Python {platform.python_version()}; the load generator, "
        f"{generator}, runs on the same cores."
    )
    # Everything else running on the machine takes its share of the same
    # cores: a load average well above 0 before the run means noisy figures.
    # (Not after it: by then it counts this run's own load.)
    print(f"Load average (1 min) before the run: {load_average_before:.2f}.")
    print(
        f"Load: {args.seconds:g} s per page at concurrency {args.concurrency}, "
        f"gunicorn with {WORKERS} sync workers ({args.gunicorn_note})."
    )
    python = os.path.relpath(sys.executable) if sys.executable.startswith(os.getcwd()) else "python"
    command = shlex.join([python, *sys.argv])
    if "MAKELEVEL" in os.environ:  # set for every command that make runs
        command = f"make bench, which ran: {command}"
    print(f"Command: {command}")


# --- Main ----------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="load per page (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (16)")
    parser.add_argument("--quick", action="store_true", help="2 s per page: a smoke run")
    parser.add_argument("--no-wrk", dest="wrk", action="store_false", help="Python generator")
    parser.add_argument("--no-postgres", dest="postgres", action="store_false")
    parser.add_argument("--no-large", dest="large", action="store_false", help="skip 500k posts")
    parser.add_argument("--show-sql", action="store_true", help="print each page's statements")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("TEST_DATABASE_URL") or DEFAULT_POSTGRES,
        help=f"a PostgreSQL server to create the database on (default {DEFAULT_POSTGRES})",
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds = 2
    # `wrk --version` exits with status 1, so look for the program instead of running it.
    args.wrk = args.wrk and shutil.which("wrk") is not None
    # The production gunicorn.conf.py restarts each worker after about 1,000
    # requests (a guard against leaks). Under this load that would be every
    # few seconds for the fast pages and never for the slow ones, and start-up
    # time would land in some rows and not others: the benchmark measures
    # pages, so it switches that one setting off.
    args.gunicorn_env = {"GUNICORN_MAX_REQUESTS": 0}
    args.gunicorn_note = "gunicorn.conf.py, max_requests off"
    return args


def main() -> int:
    args = parse_args()
    load_average_before = os.getloadavg()[0]
    failures: list[str] = []
    tables: list[Table] = []
    with tempfile.TemporaryDirectory(prefix="bench-pages-") as tmp:

        def section(name: str, measure, *arguments):
            """Run one part in a folder of its own; a failure is reported and the
            other parts still run, so one broken database doesn't hide the rest."""
            folder = Path(tmp) / name
            folder.mkdir()
            try:
                result = measure(*arguments, folder)
            except Exception as error:
                traceback.print_exc()
                failures.append(f"{name}: {error}")
                return None
            if isinstance(result, Table):
                tables.append(result)
            return result

        print_targets()
        hello_row = section("hello", measure_hello_world, args)
        if hello_row is None:
            print("\nNo ceiling: hello-world didn't run, so nothing else can be compared.")
            return 1
        tables.append(Table("hello-world", [hello_row]))
        hello = hello_row.load.rate
        print_title("Ceiling: a bare Flask hello-world under the same gunicorn")
        print_row(hello_row, hello)

        def sqlite(title: str, posts: int, large: bool, folder: Path) -> Table:
            url = f"sqlite:///{folder / 'blog.sqlite'}"
            return measure_blog(title, url, posts, args, folder, hello, large)

        small = section("sqlite", sqlite, "SQLite", POSTS, False)
        if args.postgres:
            section("postgres", measure_postgresql, args, hello)
        if args.large:
            large = section("sqlite-large", sqlite, "SQLite, 10x the posts", LARGE_POSTS, True)
            if small and large:
                print_growth(small, large)

    print_machine(args, load_average_before)
    failed = sum(row.load.non2xx + row.load.errors for table in tables for row in table.rows)
    if failed:
        failures.append(f"{failed} requests under load got no 2xx answer (column 'failed')")
    if failures:
        print("\nFAILED to run:\n" + "\n".join(f"   {failure}" for failure in failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

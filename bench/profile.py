"""Where a page's time goes: `make profile` (or `.venv/bin/python -m bench.profile`).

Fills a temporary database at the benchmark's size (bench/pages.py: 1,000
users, 50,000 posts, 50 follows each), built by the migrations as production
builds it: an SQLite file by default, or with --database-url a new database on
that PostgreSQL server, dropped at the end. Then it logs in as the demo user
with Flask's test client and, for each hot page:

- times a few hundred requests without any profiler: the plain milliseconds
  per request, the figure to compare between runs and with bench/pages.py;
- runs as many again under pyinstrument, a sampling profiler: it looks at the
  call stack every 0.2 ms and prints the tree of calls that the samples landed
  in, with their seconds. Looking costs time: a request under the profiler
  takes about twice as long, spread over the whole tree.

No gunicorn and no network here: what is left is the app's own work, the part
that code changes can speed up.

Flags: --page PATH (repeatable; default: the index, explore and a profile),
--requests N per page (default 300), --per-page N posts a page
(POSTS_PER_PAGE, default 10), --database-url URL (a PostgreSQL server, such as
postgresql://postgres@127.0.0.1:5432/postgres), --html to write pyinstrument's
HTML reports into test-artifacts/ instead of printing text.
"""

import argparse
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from pyinstrument import Profiler
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app import create_app
from app.commands import DEMO_PASSWORD, seed_database
from app.extensions import db
from bench.pages import FOLLOWS, POSTS, PROFILE_USER, USERS
from config import WHOLE_NUMBER_RANGES, TestingConfig, database_url

ROOT = Path(__file__).resolve().parent.parent

PAGES = ["/", "/explore", f"/user/{PROFILE_USER}"]
SAMPLE_INTERVAL = 0.0002  # seconds
WARM_UP = 20  # requests per page before any is counted
# The page sizes the app itself accepts (config.py).
PER_PAGE_LIMITS = {name: (low, high) for name, low, high, _ in WHOLE_NUMBER_RANGES}[
    "POSTS_PER_PAGE"
]


def page_size(text: str) -> int:
    """--per-page's value: a page size the app accepts."""
    low, high = PER_PAGE_LIMITS
    # int() alone would also take " 25", "2_5" and digits of other scripts.
    if not text.isascii() or not text.isdigit() or not low <= int(text) <= high:
        raise argparse.ArgumentTypeError(f"not a whole number from {low} to {high}: {text!r}")
    return int(text)


def request_count(text: str) -> int:
    """--requests's value: at least one, or there is no time to divide."""
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a whole number from 1 up: {text!r}")
    return int(text)


def postgresql_server(text: str) -> str:
    """--database-url's value: the URL of a PostgreSQL server, as TEST_DATABASE_URL takes it."""
    example = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        backend = make_url(database_url(text.strip())).get_backend_name()
    except (ArgumentError, ValueError):
        raise argparse.ArgumentTypeError(f"not a database URL: {text!r}; e.g. {example}") from None
    if backend != "postgresql":
        raise argparse.ArgumentTypeError(
            f"a {backend} URL, not a PostgreSQL one: {text!r}; e.g. {example} "
            "(without --database-url, the profile runs on SQLite)"
        )
    return text.strip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--page", action="append", dest="pages", help="a path to profile")
    parser.add_argument(
        "--requests", type=request_count, default=300, help="requests per page (300)"
    )
    parser.add_argument(
        "--per-page", type=page_size, default=10, metavar="N", help="posts a page (10)"
    )
    parser.add_argument(
        "--database-url",
        type=postgresql_server,
        metavar="URL",
        help="a PostgreSQL server to profile on, in a new database dropped at the end "
        "(default: a temporary SQLite file)",
    )
    parser.add_argument("--html", action="store_true", help="HTML reports in test-artifacts/")
    return parser.parse_args(argv)


@contextmanager
def new_database(folder: Path, server_url: str | None) -> Iterator[tuple[str, str, str]]:
    """Yield the URL of a new, empty database, the database's name and a line saying what it is.

    SQLite: a file in `folder`. PostgreSQL: a database of its own on the
    server at `server_url`, dropped when the block ends.
    """
    if server_url is None:
        yield f"sqlite:///{folder / 'blog.sqlite'}", "SQLite", "SQLite (a temporary file)"
        return
    from pytest import UsageError

    # tests/databases.py reads the server's URL when it is first imported.
    os.environ["TEST_DATABASE_URL"] = server_url
    from tests import databases

    if database_url(server_url) != databases.SERVER_URL:
        raise RuntimeError("tests.databases was imported earlier, for another server")
    try:
        databases.check_server()
    except UsageError as error:
        sys.exit(f"--database-url {server_url}: {str(error).removeprefix('TEST_DATABASE_URL: ')}")
    with databases.fresh_database(folder) as url:
        server = make_url(url)
        where = f"{server.database} on {server.host}:{server.port or 5432}"
        yield url, "PostgreSQL", f"PostgreSQL (database {where}, dropped at the end)"


def filled_app(url: str, per_page: int) -> Flask:
    """The app on the empty database at `url`, migrated and filled as bench/pages.py's."""
    # Imported here: tests/databases.py must first learn the server's URL (new_database).
    from tests.databases import upgrade_database

    upgrade_database(url)
    # The testing config: it logs nowhere, needs no CSRF token to log in,
    # and doesn't rate-limit a few hundred requests.
    overrides = {
        "SQLALCHEMY_DATABASE_URI": url,
        "RATELIMIT_ENABLED": False,
        "POSTS_PER_PAGE": per_page,
    }
    app = create_app(type("ProfileConfig", (TestingConfig,), overrides))
    with app.app_context():
        seed_database(USERS, POSTS, FOLLOWS, seed=2018)
    return app


def warm_up(client: FlaskClient, path: str) -> None:
    """Compile the page's templates and open connections: not the page's cost.
    Stop on a page that isn't there: its error page would be profiled instead."""
    for _ in range(WARM_UP):
        status = client.get(path).status_code
        if status != 200:
            sys.exit(f"{path} answered {status}, not 200: nothing to profile")


def milliseconds_per_request(client: FlaskClient, path: str, requests: int) -> float:
    """The plain time of a request for `path`, over `requests` of them, without the profiler."""
    start = time.perf_counter()
    for _ in range(requests):
        client.get(path)
    return (time.perf_counter() - start) / requests * 1000


def report_name(path: str, database: str, per_page: int) -> str:
    """The HTML report's file name: one per page, database and page size.

    Letters and digits only from the path: a --page of "/../x" must not
    write outside test-artifacts/.
    """
    page = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "index"
    return f"profile_{page}_{database.lower()}_{per_page}.html"


def profile_pages(app: Flask, paths: list[str], args, database: str) -> dict[str, float]:
    """Time, then profile, each page as the demo user; return the plain ms per request of each."""
    client = app.test_client()
    client.post("/auth/login", data={"username": "demo", "password": DEMO_PASSWORD})
    plain = {}
    for path in paths:
        warm_up(client, path)
        plain[path] = milliseconds_per_request(client, path, args.requests)
        profiler = Profiler(interval=SAMPLE_INTERVAL)
        with profiler:
            for _ in range(args.requests):
                client.get(path)
        profiled = profiler.last_session.duration / args.requests * 1000
        print(
            f"\n=== {path}: {plain[path]:.1f} ms a request without the profiler, "
            f"{profiled:.1f} ms with it"
        )
        if args.html:
            folder = ROOT / "test-artifacts"
            folder.mkdir(exist_ok=True)
            report = folder / report_name(path, database, args.per_page)
            report.write_text(profiler.output_html())
            print(f"    report: {os.path.relpath(report)}")
        else:
            print(profiler.output_text(color=False, short_mode=True))
    return plain


def main() -> int:
    args = parse_args()
    paths = args.pages or PAGES
    with (
        tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp,
        new_database(Path(tmp), args.database_url) as (url, database, where),
    ):
        print(f"Profiling on {where}, {args.per_page} posts a page.", flush=True)
        app = filled_app(url, args.per_page)
        try:
            plain = profile_pages(app, paths, args, database)
        finally:
            with app.app_context():
                db.engine.dispose()  # PostgreSQL can't drop a database we're connected to
    width = max(len(path) for path in paths)
    print(
        f"Milliseconds per request without the profiler ({database}, {args.per_page} posts "
        f"a page, the mean of {args.requests}):"
    )
    for path in paths:
        print(f"   {path:<{width}} {plain[path]:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

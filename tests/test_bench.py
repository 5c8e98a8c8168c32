"""The benchmark scripts in bench/ are run by hand (`make bench`...), never by the
suite: each takes minutes. They import the tests' helpers (tests/servers.py,
tests/query_count.py), so a helper renamed or moved would break them unnoticed
until someone measured again. This checks that each still imports, that their
options refuse what they can't use, that bench/pages.py's tables say what was
measured, that every page it plans to load exists at every page size on the
benchmark's data, and (a system test) that bench/profile.py runs to the end on
this run's database and leaves no database behind."""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from bench import pages as bench_pages
from bench import profile as bench_profile
from bench.pages import LARGE, Page, Row
from tests.databases import ON_POSTGRESQL, SERVER_URL

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
SCRIPTS = sorted(path.stem for path in BENCH.glob("*.py") if path.stem != "__init__")


def test_there_are_benchmarks_to_check():
    assert {"pages", "errors", "hello_world", "profile"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_benchmark_imports(script):
    module = importlib.import_module(f"bench.{script}")
    assert module.__doc__, f"bench/{script}.py says what it measures in its docstring"


# --- bench/pages.py: options ------------------------------------------------------------


def test_pages_measures_10_and_25_posts_a_page_by_default():
    args = bench_pages.parse_args([])
    assert args.per_page == [10, 25]
    assert (args.seconds, args.sqlite, args.postgres, args.large) == (10, True, True, True)


def test_pages_quick_run_keeps_the_page_sizes_given():
    args = bench_pages.parse_args(["--quick", "--per-page", "25", "--no-large", "--no-sqlite"])
    assert (args.seconds, args.per_page, args.sqlite, args.large) == (2, [25], False, False)


def test_pages_page_sizes_keep_their_order_once_each():
    # The first size is the one search is measured at.
    args = bench_pages.parse_args(["--per-page", "25", "--per-page", "10", "--per-page", "25"])
    assert args.per_page == [25, 10]


@pytest.mark.parametrize(
    "value", ["0", "101", "-1", "abc", "", " 25", "2_5", "1e1", "25.0", "٢٥", "²", "9" * 5000]
)
def test_pages_refuses_a_page_size_it_cannot_measure(value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_pages.parse_args(["--per-page", value])
    assert exit_info.value.code == 2
    assert "argument --per-page" in capsys.readouterr().err


def test_pages_accepts_the_smallest_and_largest_page_sizes():
    assert bench_pages.parse_args(["--per-page", "1", "--per-page", "100"]).per_page == [1, 100]


# --- bench/pages.py: the pages it loads -------------------------------------------------


def names(planned: list[Page]) -> list[str]:
    return [page.name for page in planned]


def test_pages_at_10_a_page_go_to_page_200_and_search_three_times():
    planned = bench_pages.pages(10, large=False, search=True)
    assert names(planned) == [
        "index, page 1",
        "index, page 200",
        "index, ?page=200 typed",
        "explore, page 1",
        "explore, page 200",
        "explore, ?page=200 typed",
        "profile (alice1)",
        "search, common (rollback)",
        "search, rare (4 chars)",
        "search, rare (2 chars)",
    ]
    assert [page.clicks for page in planned[:3]] == [0, 199, 0]
    assert planned[2].path == "/?page=200"
    assert [page.search for page in planned] == [False] * 7 + [True] * 3


def test_pages_at_25_a_page_go_as_deep_into_the_timeline_as_page_200_of_10():
    """The demo user's timeline has about 104 pages of 25: its deep page is the
    one 2,000 posts in, page 80. Explore has 2,000 pages of 25: page 200."""
    planned = bench_pages.pages(25, large=False, search=False)
    assert names(planned) == [
        "index, page 1",
        "index, page 80",
        "index, ?page=80 typed",
        "explore, page 1",
        "explore, page 200",
        "explore, ?page=200 typed",
        "profile (alice1)",
    ]
    assert [page.clicks for page in planned] == [0, 79, 0, 0, 199, 0, 0]
    # The same kinds as at 10 a page: the summary compares them.
    at_10 = bench_pages.pages(10, large=False, search=False)
    assert [page.kind for page in planned] == [page.kind for page in at_10]


def test_pages_with_10x_the_posts_load_the_index_only():
    assert names(bench_pages.pages(25, large=True, search=True)) == [
        "index, page 1",
        "index, page 80",
        "index, ?page=80 typed",
    ]


def test_side_by_side_puts_each_page_at_every_size_together_and_search_last():
    plans = {10: ["a10", "b10", "search10"], 25: ["a25", "b25"]}
    assert bench_pages.side_by_side(plans) == [
        (10, "a10"),
        (25, "a25"),
        (10, "b10"),
        (25, "b25"),
        (10, "search10"),
    ]


def test_every_planned_page_exists_at_both_sizes_within_the_statement_budget(
    migrated_database_url,
):
    """The benchmark's data and its page plan, in-process: a page missing at one
    size would stop `make bench` minutes in, after filling the databases."""
    url = migrated_database_url
    apps = {per_page: bench_pages.bench_app(url, per_page) for per_page in (10, 25)}
    sizes = ["--users", "1000", "--posts", "50000", "--follows", "50"]
    assert (bench_pages.USERS, bench_pages.POSTS, bench_pages.FOLLOWS) == (1000, 50000, 50)
    result = apps[10].test_cli_runner().invoke(args=["seed", *sizes])
    assert result.exit_code == 0, result.output
    bench_pages.add_rare_posts(apps[10])
    counted = {
        per_page: bench_pages.count_statements(app, bench_pages.pages(per_page, False, True))
        for per_page, app in apps.items()
    }
    for per_page, planned in counted.items():
        for page, path, statements in planned:
            assert 1 <= statements <= bench_pages.STATEMENTS_MAX, (per_page, page.name)
            if page.clicks:  # reached by clicking Older: the URL carries a cursor
                query = parse_qs(urlsplit(path).query)
                assert query.keys() == {"page", "before"}, path
                assert query["page"] == [str(page.clicks + 1)], path
                assert re.fullmatch(r"[0-9]+-[0-9]+", query["before"][0]), path
    # No more statements for a larger page: the same count at 25 a page as at 10.
    statements_by_kind = {
        per_page: {page.kind: statements for page, _, statements in planned}
        for per_page, planned in counted.items()
    }
    assert statements_by_kind[25] == statements_by_kind[10]
    assert len(statements_by_kind[10]) == 10


# --- bench/pages.py: the table and the summary ------------------------------------------

HELLO_RATE = 4000.0
INDEX_1, INDEX_DEEP, SEARCH_RARE, PROFILE = (
    bench_pages.pages(10, False, True)[index] for index in (0, 1, 9, 6)
)
INDEX_DEEP_25 = bench_pages.pages(25, False, False)[1]


def row(database, page, per_page, rate, statements=2) -> Row:
    return Row(database, page, per_page, rate, 0.0521, 0.0744, 0, statements=statements)


def test_a_listing_row_below_a_tenth_of_hello_world_misses():
    line = bench_pages.format_row(row("SQLite", INDEX_1, 25, 396.0), HELLO_RATE)
    assert line == (
        "SQLite                index, page 1 (25/page)                396.0   52.1   74.4"
        "  0.099 MISS 2 ok        0"
    )
    assert bench_pages.format_row(row("SQLite", INDEX_1, 25, 400.0), HELLO_RATE).endswith(
        "  0.100 ok   2 ok        0"
    )


def test_search_keeps_its_own_target():
    line = bench_pages.format_row(row("PostgreSQL", SEARCH_RARE, 10, 200.0, 5), HELLO_RATE)
    assert line == (
        "PostgreSQL            search, rare (2 chars) (10/page)       200.0   52.1   74.4"
        "  0.050 ok   5 MISS      0"
    )
    for rate, verdict in ((199.0, "MISS"), (400.0, "ok+")):
        line = bench_pages.format_row(row("PostgreSQL", SEARCH_RARE, 10, rate), HELLO_RATE)
        assert f" {verdict} " in line


def test_the_hello_world_row_has_no_target():
    hello = Row("-", bench_pages.HELLO, None, HELLO_RATE, 0.0036, 0.0086, 0)
    assert bench_pages.format_row(hello, HELLO_RATE) == (
        "-                     hello-world (the ceiling)             4000.0    3.6    8.6"
        "  1.000      -           0"
    )


def test_the_summary_lists_the_listing_rows_that_miss_and_statements_that_grow():
    rows = [
        row("SQLite", INDEX_1, 10, 500.0),
        row("SQLite", INDEX_1, 25, 380.0),
        row("SQLite", INDEX_DEEP, 10, 490.0),
        row("SQLite", INDEX_DEEP_25, 25, 200.0),
        row("SQLite", PROFILE, 10, 450.0, statements=3),
        row("SQLite", PROFILE, 25, 440.0, statements=4),
        row("SQLite", SEARCH_RARE, 10, 50.0),  # far below 0.1x, but search: not listed
        row(LARGE, INDEX_1, 10, 400.0),
        row(LARGE, INDEX_1, 25, 380.0),
    ]
    assert bench_pages.summary(rows, HELLO_RATE) == [
        "Time per request, the deep page against page 1 (target <= 1.5x):",
        "   SQLite, 10/page: index, page 200: 1.02x ok",
        "   SQLite, 25/page: index, page 80: 1.90x MISS",
        "The index at 500,000 posts against 50,000 (target <= 1.5x):",
        "   index, page 1 (10/page): 1.25x ok",
        "   index, page 1 (25/page): 1.00x ok",
        "SQL statements per request at 25 posts a page against 10 (target: the same):",
        "   SQLite: MISS: profile (alice1) (25/page) 3 -> 4",
        "   SQLite, 500,000 posts: ok",
        "Listing pages below 0.1x hello-world: 3 of 8:",
        "   SQLite                index, page 1 (25/page)              0.095x",
        "   SQLite                index, page 80 (25/page)             0.050x",
        "   SQLite, 500,000 posts index, page 1 (25/page)              0.095x",
    ]


def test_the_summary_puts_both_lists_on_one_line_and_flags_fewer_statements_too():
    """A count that changes with the page size either way is a query that depends on it."""
    explore_1, explore_deep = bench_pages.pages(10, False, False)[3:5]
    rows = [
        row("PostgreSQL", INDEX_1, 10, 800.0),
        row("PostgreSQL", INDEX_DEEP, 10, 800.0),
        row("PostgreSQL", explore_1, 10, 600.0, statements=3),
        row("PostgreSQL", explore_deep, 10, 300.0),
        row("PostgreSQL", explore_1, 25, 600.0, statements=2),
    ]
    assert bench_pages.summary(rows, HELLO_RATE)[:4] == [
        "Time per request, the deep page against page 1 (target <= 1.5x):",
        "   PostgreSQL, 10/page: index, page 200: 1.00x ok; explore, page 200: 2.00x MISS",
        "SQL statements per request at 25 posts a page against 10 (target: the same):",
        "   PostgreSQL: MISS: explore, page 1 (25/page) 3 -> 2",
    ]


def test_the_summary_of_one_page_size_with_no_miss():
    rows = [row("PostgreSQL", INDEX_1, 25, 800.0), row("PostgreSQL", INDEX_DEEP_25, 25, 790.0)]
    assert bench_pages.summary(rows, HELLO_RATE) == [
        "Time per request, the deep page against page 1 (target <= 1.5x):",
        "   PostgreSQL, 25/page: index, page 80: 1.01x ok",
        "Listing pages below 0.1x hello-world: 0 of 2.",
    ]


def test_the_header_names_the_page_sizes_and_the_targets():
    header = bench_pages.header(bench_pages.parse_args(["--per-page", "25"])).splitlines()
    assert header[0] == (
        "1,000 users, 50,000 posts, 50 follows per user; 25 posts a page (POSTS_PER_PAGE)."
    )
    assert "x hello >= 0.1 for the listing pages" in header[1]
    assert ">= 0.05 for search" in header[1]
    assert header[2] == "SQL statements per request <= 4, the same at every page size."


# --- bench/profile.py -------------------------------------------------------------------


def test_profile_defaults_to_sqlite_at_10_posts_a_page():
    args = bench_profile.parse_args([])
    assert (args.database_url, args.per_page, args.requests, args.pages) == (None, 10, 300, None)


def test_profile_takes_a_postgresql_server_and_a_page_size():
    url = "postgresql://postgres@127.0.0.1:5432/postgres"
    args = bench_profile.parse_args(["--database-url", url, "--per-page", "1000"])
    assert (args.database_url, args.per_page) == (url, 1000)
    # The spelling hosting platforms hand out is a PostgreSQL URL too.
    legacy = "postgres://user:secret@db.example.com/blog"
    assert bench_profile.parse_args(["--database-url", legacy]).database_url == legacy


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--database-url", "sqlite:///blog.db", "a sqlite URL, not a PostgreSQL one"),
        ("--database-url", "mysql://root@127.0.0.1/blog", "a mysql URL, not a PostgreSQL one"),
        ("--database-url", "", "a sqlite URL, not a PostgreSQL one"),
        ("--database-url", "127.0.0.1:5432", "not a database URL"),
        ("--database-url", "postgresql://host:notaport/db", "not a database URL"),
        ("--per-page", "0", "not a whole number from 1 to 1000"),
        ("--per-page", "1001", "not a whole number from 1 to 1000"),
        ("--per-page", "-5", "not a whole number from 1 to 1000"),
        ("--per-page", "٢٥", "not a whole number from 1 to 1000"),
        ("--per-page", "2_5", "not a whole number from 1 to 1000"),
        ("--requests", "0", "not a whole number from 1 up"),
        ("--requests", "ten", "not a whole number from 1 up"),
    ],
)
def test_profile_refuses_what_it_cannot_use(option, value, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench_profile.parse_args([option, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {option}" in error
    assert message in error


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/", "profile_index_sqlite_10.html"),
        ("/explore", "profile_explore_sqlite_10.html"),
        ("/user/alice1", "profile_user_alice1_sqlite_10.html"),
        ("/../../etc/passwd", "profile_etc_passwd_sqlite_10.html"),
        ("/search?q=回滚", "profile_search_q_sqlite_10.html"),
    ],
)
def test_profile_reports_are_named_inside_their_folder(path, name):
    assert bench_profile.report_name(path, "SQLite", 10) == name


def run_profile(*options: str) -> subprocess.CompletedProcess:
    """bench/profile.py in a subprocess, on this run's database server."""
    server = ["--database-url", os.environ["TEST_DATABASE_URL"]] if ON_POSTGRESQL else []
    return subprocess.run(
        [sys.executable, "-m", "bench.profile", *server, *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )


def database_left_behind(output: str) -> list[str]:
    """The PostgreSQL database that a profile's first line names, if it still exists."""
    name = re.search(r"database (blog_test_\w+) on ", output)[1]
    engine = create_engine(SERVER_URL, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            query = text("SELECT datname FROM pg_database WHERE datname = :name")
            return list(connection.scalars(query, {"name": name}))
    finally:
        engine.dispose()


@pytest.mark.system
def test_profile_prints_the_plain_time_and_the_tree_of_each_page():
    done = run_profile("--per-page", "25", "--requests", "3", "--page", "/", "--page", "/explore")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    if ON_POSTGRESQL:
        assert re.fullmatch(
            r"Profiling on PostgreSQL \(database blog_test_\w+ on [\w.-]+:\d+, dropped at the "
            r"end\), 25 posts a page\.",
            lines[0],
        )
        assert database_left_behind(done.stdout) == []
    else:
        assert lines[0] == "Profiling on SQLite (a temporary file), 25 posts a page."
    timed = r"=== {}: \d+\.\d ms a request without the profiler, \d+\.\d ms with it"
    assert [line for line in lines if line.startswith("===")] == [
        line for line in lines if re.fullmatch(timed.format("(/|/explore)"), line)
    ]
    assert len([line for line in lines if line.startswith("===")]) == 2
    assert "index  app/main/routes.py" in done.stdout  # pyinstrument's tree, down to the view
    database = "PostgreSQL" if ON_POSTGRESQL else "SQLite"
    assert lines[-3] == (
        f"Milliseconds per request without the profiler ({database}, 25 posts a page, "
        "the mean of 3):"
    )
    assert re.fullmatch(r"   /         +\d+\.\d", lines[-2])
    assert re.fullmatch(r"   /explore +\d+\.\d", lines[-1])


@pytest.mark.system
def test_profile_stops_at_a_page_that_is_not_there_and_cleans_up():
    done = run_profile("--requests", "2", "--page", "/no-such-page")
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == "/no-such-page answered 404, not 200: nothing to profile"
    assert "Milliseconds per request" not in done.stdout
    if ON_POSTGRESQL:
        assert database_left_behind(done.stdout) == []

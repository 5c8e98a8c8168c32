"""Searching the posts: the search box, what it finds, and what it refuses.

- What matches: any part of a post (a substring, so Chinese, which has no spaces
  between words, works), ignoring the case of ASCII letters, and on PostgreSQL of
  every letter ("ÉMILE" finds "émile" there, not on SQLite); ``%``, ``_`` and ``\\``
  typed mean themselves, not LIKE's wildcards and escape. Results are newest first.
- What is not searched: an empty or blank query (a prompt to type something), and
  one longer than any post can be (a message, and no SQL run for it).
- Paging: the Older and Newer links keep the query, however it has to be encoded,
  and show each match exactly once.
- Hostile input: a NUL, bytes that aren't UTF-8, q given twice, q with bad paging
  parameters: a page or a 4xx, never a 500; markup typed in the query is text.
- The box is in the navigation of every page, error pages included, and shows the
  query on its results page.
- On PostgreSQL, the migration created the trigram index, and the search's own
  statement uses it for a rare word, and for a rare Chinese phrase, once the table
  holds a few thousand posts.
"""

import html
import random
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from flask import Flask
from sqlalchemy import event, func, insert, select, text

from app.extensions import db
from app.models import Post, User
from tests.databases import ON_POSTGRESQL
from tests.helpers import add_user
from tests.pages import page_text
from tests.query_count import count_statements

PROMPT = "Type a word or a phrase to search the posts for."
TOO_LONG = "Search for at most 280 characters: no post is longer."
NO_MATCH = "No post contains that."
START = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

# The posts of `library`, oldest first, one minute apart.
LIBRARY = [
    "我今天学习了Flask的错误处理",
    "100% sure",
    "100 percent sure",
    "snake_case names",
    "snake case names",
    "C:\\temp\\new folder",
    "Hello World",
    "hello again, world",
    "x" * 280,
]


# --- Helpers ------------------------------------------------------------------------------


def add_posts_at(author: User, bodies: list[str]) -> None:
    """Give `author` these posts, oldest first, a minute apart from START."""
    db.session.add_all(
        Post(body=body, author=author, timestamp=START + timedelta(minutes=n))
        for n, body in enumerate(bodies)
    )
    db.session.commit()


def results(response) -> list[str]:
    """The bodies of the posts found, top to bottom; [] when none was."""
    assert response.status_code == 200, response.status
    assert "Posts containing" in page_text(response)
    return [
        html.unescape(body)
        for body in re.findall(r'<p class="mb-0 text-break">(.*?)</p>', response.text, re.S)
    ]


def message(response) -> str:
    """The sentence under the search form: a prompt, a problem, or what was searched for."""
    assert response.status_code == 200, response.status
    found = re.search(r'</form>\s*<p class="text-body-secondary">(.*?)</p>', response.text, re.S)
    return html.unescape(found[1])


def search_boxes(response) -> list[str]:
    """The value of every search box on the page (the navigation's, then the page's own)."""
    forms = re.findall(
        r'<form[^>]*role="search" action="/search" method="get">(.*?)</form>', response.text, re.S
    )
    boxes = []
    for form in forms:
        box = re.search(r'<input class="form-control[^"]*" type="search" name="q"[^>]*>', form)
        assert box, form
        boxes.append(html.unescape(re.search(r'value="([^"]*)"', box[0])[1]))
    return boxes


def older_link(response) -> str | None:
    found = re.search(r'class="page-link" href="([^"]*)">[^<]*Older posts', response.text)
    if found is None:
        return None
    return None if found[1] == "#" else html.unescape(found[1])


def search(client, query: str, **params):
    return client.get("/search", query_string={"q": query, **params})


@pytest.fixture
def library(app, users) -> None:
    """admin1 wrote LIBRARY, oldest first."""
    with app.app_context():
        add_posts_at(db.session.get(User, users["admin1"]), LIBRARY)


# --- What matches -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("错误", ["我今天学习了Flask的错误处理"]),
        ("学习了Flask的", ["我今天学习了Flask的错误处理"]),
        ("flask", ["我今天学习了Flask的错误处理"]),
        ("hello", ["hello again, world", "Hello World"]),
        ("HELLO", ["hello again, world", "Hello World"]),
        ("o wOR", ["Hello World"]),
        ("WORLD", ["hello again, world", "Hello World"]),
        ("sure", ["100 percent sure", "100% sure"]),
        ("zebra", []),
    ],
)
def test_a_substring_anywhere_ignoring_ascii_case(client, library, query, found):
    response = search(client, query)
    assert results(response) == found
    if not found:
        assert NO_MATCH in page_text(response)


def test_letters_beyond_ascii_ignore_case_on_postgresql_only(app, client, users):
    """A search for "ÉMILE" finds "émile" on PostgreSQL, and not on SQLite.

    Both run ILIKE, but differently. PostgreSQL folds case by the database's
    character type (LC_CTYPE): in a UTF-8 locale, "É" and "é" are one letter.
    The test databases take the server's default, C.UTF-8 here; under plain C
    this test would fail, and so would the site's search. SQLite has no ILIKE:
    SQLAlchemy writes ``lower(body) LIKE lower(?)``, and SQLite's lower() folds
    A-Z only, leaving "É" as it is. "emile", without the accent, is found by
    neither: case is ignored, accents are not.
    """
    with app.app_context():
        add_posts_at(db.session.get(User, users["admin"]), ["émile", "emile"])
    response = search(client, "ÉMILE")
    if ON_POSTGRESQL:
        assert results(response) == ["émile"]
    else:
        assert results(response) == []
        assert NO_MATCH in page_text(response)
    # The same letters as typed, lower case: both databases find the one post.
    assert results(search(client, "ÉMILE".lower())) == ["émile"]


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("%", ["100% sure"]),  # a wildcard would match every post
        ("100%", ["100% sure"]),
        ("0% s", ["100% sure"]),
        ("%%", []),
        ("_", ["snake_case names"]),  # a wildcard would match any character
        ("e_c", ["snake_case names"]),  # ...such as the space in "snake case"
        ("\\", ["C:\\temp\\new folder"]),  # the escape character, alone
        ("\\t", ["C:\\temp\\new folder"]),  # a backslash, then "t": not a tab
        ("C:\\temp", ["C:\\temp\\new folder"]),
        ("\\%", []),  # a backslash then a percent sign: no post has them together
        ("\\_", []),
        ("p\\", ["C:\\temp\\new folder"]),  # a backslash at the end escapes nothing
    ],
)
def test_wildcards_and_the_escape_character_are_literal(client, library, query, found):
    assert results(search(client, query)) == found


def test_results_are_newest_first(app, client, users):
    """By when they were written, not by id: the oldest post inserted last."""
    with app.app_context():
        author = db.session.get(User, users["admin"])
        db.session.add_all(
            [
                Post(body="tea at two", author=author, timestamp=START + timedelta(hours=2)),
                Post(body="tea at three", author=author, timestamp=START + timedelta(hours=3)),
                Post(body="tea at one", author=author, timestamp=START + timedelta(hours=1)),
            ]
        )
        db.session.commit()
    assert results(search(client, "tea")) == ["tea at three", "tea at two", "tea at one"]


def test_posts_of_everyone_are_searched_logged_in_or_not(app, client, auth, library):
    """Search is not the timeline: admin follows nobody, and finds admin1's posts."""
    assert results(search(client, "错误")) == ["我今天学习了Flask的错误处理"]
    auth.login("admin")
    assert results(search(client, "错误")) == ["我今天学习了Flask的错误处理"]


# --- What is not searched -----------------------------------------------------------------


@pytest.mark.parametrize("query", ["", " ", "\t\n ", "\u3000", "\xa0"])
def test_a_blank_query_asks_for_something_to_search(client, library, query):
    """Spaces of any kind around the query are trimmed; nothing left is a prompt."""
    response = search(client, query)
    assert message(response) == PROMPT
    assert "Posts containing" not in page_text(response)
    assert "<article" not in response.text


def test_no_query_at_all_asks_for_something_to_search(client, library):
    response = client.get("/search")
    assert message(response) == PROMPT
    assert "<title>Search · Blog</title>" in page_text(response)
    assert search_boxes(response) == ["", ""]


def test_a_query_longer_than_any_post_is_not_run(app, client, library):
    with app.app_context():
        engine = db.engine
    with count_statements(engine) as statements:
        response = search(client, "x" * 281)
    assert message(response) == TOO_LONG
    assert "<article" not in response.text
    assert [s for s in statements if "FROM post" in s] == []


@pytest.mark.parametrize("query", ["x" * 280, " " + "x" * 280 + " "])
def test_a_query_of_280_characters_is_run(client, library, query):
    """280 is the longest post: such a query may find one (spaces around it trimmed)."""
    assert results(search(client, query)) == ["x" * 280]


@pytest.mark.parametrize("query", ["%" * 281, "错" * 281, "😀" * 281, "x" * 100_000])
def test_long_queries_of_any_characters_get_the_at_most_message(client, library, query):
    """Characters, not bytes, are counted: 281 Chinese characters or emoji are too many."""
    assert message(search(client, query)) == TOO_LONG


@pytest.mark.parametrize("query", ["%" * 280, "错" * 280, "😀" * 280])
def test_280_characters_of_any_kind_are_searched(client, library, query):
    response = search(client, query)
    assert results(response) == []
    assert NO_MATCH in page_text(response)


# --- Paging -------------------------------------------------------------------------------


def test_the_older_links_keep_the_query_and_show_each_match_once(make_app, users):
    """A query a URL must encode ("&", "#", "%", "+", Chinese), three posts a page,
    eight matches among posts that don't match."""
    query = "R&D #1+1 100% 错误"
    app = make_app(POSTS_PER_PAGE=3)
    with app.app_context():
        bodies = []
        for n in range(1, 9):
            bodies += [f"{query} note {n}", f"R&D #1 note {n}"]  # the second doesn't match
        add_posts_at(db.session.get(User, users["admin"]), bodies)
    client = app.test_client()

    seen, pages, url = [], 0, f"/search?q={quote(query)}"
    while url:
        response = client.get(url)
        pages += 1
        assert search_boxes(response) == [query, query]
        seen += results(response)
        url = older_link(response)
        if url:
            assert parse_qs(urlsplit(url).query)["q"] == [query]
    assert pages == 3
    assert seen == [f"{query} note {n}" for n in range(8, 0, -1)]


def test_page_numbers_typed_by_hand_and_the_newer_link(make_app, users):
    app = make_app(POSTS_PER_PAGE=3)
    with app.app_context():
        add_posts_at(db.session.get(User, users["admin"]), [f"tea {n}" for n in range(1, 8)])
    client = app.test_client()
    assert results(search(client, "tea", page="2")) == ["tea 4", "tea 3", "tea 2"]
    third = search(client, "tea", page="3")
    assert results(third) == ["tea 1"]
    newer = html.unescape(re.search(r'class="page-link" href="([^"]*)">[^<]*Newer', third.text)[1])
    assert parse_qs(urlsplit(newer).query)["q"] == ["tea"]
    assert results(client.get(newer)) == ["tea 4", "tea 3", "tea 2"]
    response = search(client, "tea", page="4")
    assert response.status_code == 404


# --- Hostile input ------------------------------------------------------------------------


@pytest.mark.parametrize("query_string", ["q=a%00b", "q=%00", "q=tea&before=%00"])
def test_a_nul_is_the_400_page(client, library, query_string):
    response = client.get(f"/search?{query_string}")
    assert response.status_code == 400
    assert "The request contained a character that isn't allowed (NUL)." in page_text(response)


@pytest.mark.parametrize("query_string", ["q=\xff", "q=\xc3", "q=ok&q=\xe9"])
def test_raw_bytes_that_are_not_utf8_are_the_400_page(client, library, query_string):
    response = client.get("/search", environ_overrides={"QUERY_STRING": query_string})
    assert response.status_code == 400
    assert "The request could not be understood." in page_text(response)


def test_percent_encoded_bytes_that_are_not_utf8_are_searched_for_as_typed(client, library):
    """Browsers percent-encode; Werkzeug leaves an escape that isn't UTF-8 as it was
    ("%FF"), which is then searched for like any text."""
    response = client.get("/search?q=%FF")
    assert results(response) == []
    assert search_boxes(response) == ["%FF", "%FF"]


def test_raw_utf8_bytes_in_the_query_string_are_read_as_text(client, library):
    """A client that sends UTF-8 unencoded (no browser does) finds the same."""
    raw = "q=" + "错误".encode().decode("latin-1")  # WSGI's way of carrying the bytes
    response = client.get("/search", environ_overrides={"QUERY_STRING": raw})
    assert results(response) == ["我今天学习了Flask的错误处理"]


def test_q_given_twice_searches_for_the_first(client, library):
    response = client.get("/search?q=错误&q=hello")
    assert results(response) == ["我今天学习了Flask的错误处理"]
    assert search_boxes(response) == ["错误", "错误"]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"q": "sure", "page": "0"}, 404),
        ({"q": "sure", "page": "-1"}, 404),
        ({"q": "sure", "page": "abc"}, 404),
        ({"q": "sure", "page": "99999999999999999999"}, 404),
        ({"q": "sure", "page": "2"}, 404),  # two matches: one page
        ({"q": "sure", "before": "abc"}, 404),
        ({"q": "sure", "after": "1-"}, 404),
        ({"q": "sure", "before": "1-99999999999999999999"}, 404),
        ({"q": "sure", "page": "2", "before": "0-1"}, 404),
        ({"q": "sure", "before": "abc", "after": "0-1"}, 404),  # "before" is read first
        ({"q": "zebra", "page": "2"}, 404),
        ({"q": "sure", "before": "99999999999999999-1"}, 200),  # older than the year 5138
        ({"q": "sure", "after": "0-1", "before": "99999999999999999-1"}, 200),
    ],
)
def test_q_with_paging_parameters_is_a_page_or_not_found(client, library, params, status):
    response = client.get("/search", query_string=params)
    assert response.status_code == status
    if status == 200:
        assert results(response) == ["100 percent sure", "100% sure"]
    else:
        assert "<h1>Page not found</h1>" in response.text


@pytest.mark.parametrize("query", ["", "x" * 281])
def test_paging_parameters_beside_a_query_that_is_not_run_are_ignored(client, library, query):
    """No query, no list: there is no page 0 to refuse, only the message."""
    response = client.get("/search", query_string={"q": query, "page": "0", "before": "x"})
    assert message(response) == (PROMPT if not query else TOO_LONG)


@pytest.mark.parametrize(
    "query", ["' OR 1=1 --", "%' OR '1'='1", "\\'; DROP TABLE post; --", "*", ".*", "[a-z]"]
)
def test_sql_and_regex_syntax_are_plain_text(app, client, library, users, query):
    """Each finds the one post that holds it as text, and nothing else: not every
    post (SQL or a wildcard let loose), not the posts a pattern would match."""
    with app.app_context():
        add_posts_at(db.session.get(User, users["admin1"]), [f"it says {query} here"])
    assert results(search(client, query)) == [f"it says {query} here"]


def test_markup_in_the_query_is_shown_as_text(client, library):
    query = '"><script>alert(1)</script>'
    response = search(client, query)
    raw = response.text
    assert "<script>alert(1)" not in raw
    # Both boxes hold the whole query: a quote that closed the value="..." would cut it.
    assert search_boxes(response) == [query, query]
    assert message(response) == f"Posts containing “{query}”, newest first:"
    assert f"<title>Search: {query} · Blog</title>" in page_text(response)
    assert "<title>Search: &#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt; · Blog</title>" in raw


# --- The search box -----------------------------------------------------------------------


# Pages of every kind, (URL, status), for a visitor and for admin logged in.
EVERYONES_PAGES = [
    ("/", 200),
    ("/explore", 200),
    ("/user/admin1", 200),
    ("/user/admin1/followers", 200),
    ("/user/admin1/following", 200),
    ("/no/such/page", 404),
    ("/explore?page=0", 404),
    ("/user/nobody", 404),
]
VISITORS_PAGES = [
    ("/auth/login", 200),
    ("/auth/register", 200),
    ("/auth/reset_password_request", 200),
]
MEMBERS_PAGES = [("/edit_profile", 200), ("/auth/change_password", 200), ("/follow/admin1", 405)]


@pytest.mark.parametrize(("url", "status"), EVERYONES_PAGES + VISITORS_PAGES)
def test_the_search_box_is_in_the_navigation_of_every_page(client, library, url, status):
    response = client.get(url)
    assert response.status_code == status
    assert search_boxes(response) == [""]


@pytest.mark.parametrize(("url", "status"), EVERYONES_PAGES + MEMBERS_PAGES)
def test_the_search_box_is_in_the_navigation_of_every_page_logged_in(
    client, auth, library, url, status
):
    auth.login("admin")
    response = client.get(url)
    assert response.status_code == status
    assert search_boxes(response) == [""]


def test_the_search_box_is_on_the_forbidden_page(app, client, auth, library):
    auth.login("admin")
    with app.app_context():
        post_id = db.session.scalar(select(func.min(Post.id)))  # every post is admin1's
    response = client.get(f"/post/{post_id}/delete")
    assert response.status_code == 403
    assert search_boxes(response) == [""]


def test_the_results_page_shows_the_query_in_both_boxes(client, library):
    response = search(client, "  错误 ")
    assert search_boxes(response) == ["错误", "错误"]  # trimmed, as searched
    assert message(response) == "Posts containing “错误”, newest first:"
    assert "<title>Search: 错误 · Blog</title>" in page_text(response)


def test_the_box_searches_with_a_get_named_q(client, library):
    """A GET form: the results have an address to bookmark; "q" is what the view reads."""
    nav = re.search(r"<nav.*?</nav>", client.get("/").text, re.S)[0]
    form = re.search(r'<form[^>]*role="search"[^>]*>', nav)[0]
    assert 'action="/search"' in form
    assert 'method="get"' in form
    assert 'maxlength="280"' in re.search(r'<input[^>]*name="q"[^>]*>', nav)[0]


# --- PostgreSQL's trigram index -----------------------------------------------------------

postgresql_only = pytest.mark.skipif(not ON_POSTGRESQL, reason="a PostgreSQL index")


@postgresql_only
def test_the_migration_created_the_trigram_index(app):
    with app.app_context():
        extensions = db.session.scalars(text("SELECT extname FROM pg_extension")).all()
        index = db.session.scalar(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_post_body_trigram'")
        )
    assert "pg_trgm" in extensions
    assert index == "CREATE INDEX ix_post_body_trigram ON public.post USING gin (body gin_trgm_ops)"


# A vocabulary for posts that look like posts: lengths vary, words repeat, and
# none of them shares a trigram with the rare posts' words.
WORDS = (
    "today learned flask python blog coffee morning error handling database query index "
    "garden weather train music book friend city river walk lunch rain"
).split()
# What is searched for, and the one post among thousands that holds it.
RARE_POSTS = {
    "xylophone": "my first xylophone lesson",
    # Four characters that no other post holds, ending a sentence: Chinese has no
    # spaces, so pg_trgm takes the whole sentence for one word, and the trigrams
    # of the phrase ("错误页", "误页面") are among that word's.
    "错误页面": "今天第一次见到错误页面",
}
POSTS_FOR_THE_PLANNER = 5000


def realistic_posts(author_id: int, count: int) -> list[dict]:
    """`count` posts of 15 to 40 words (at most 280 characters), the same on every run."""
    rng = random.Random(20250601)
    return [
        {
            "body": " ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 40)))[:280],
            "user_id": author_id,
            "timestamp": START + timedelta(minutes=n),
        }
        for n in range(count)
    ]


def plan_of_the_search(app: Flask, query: str) -> str:
    """Search through the app, then EXPLAIN the statement it ran for the posts, with
    the values it ran it with: the planner's choice for the search as it really runs."""
    with app.app_context():
        engine = db.engine
    searches = []

    def record(connection, cursor, statement, parameters, context, executemany) -> None:
        if "ILIKE" in statement:
            searches.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        response = app.test_client().get("/search", query_string={"q": query})
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert results(response) == [RARE_POSTS[query]]
    [(statement, parameters)] = searches
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
        return "\n".join(row[0] for row in rows)


def trigrams_of(app: Flask, phrase: str) -> list[str]:
    """The trigrams pg_trgm makes of `phrase` on this server. It keeps only the
    characters the database's locale calls letters or digits: under a locale
    such as C (not C.UTF-8), Chinese characters are neither, and it makes none."""
    with app.app_context():
        return db.session.scalar(select(func.show_trgm(phrase)))


@postgresql_only
@pytest.mark.parametrize("query", RARE_POSTS)
def test_a_search_for_something_rare_uses_the_trigram_index(make_app, migrated_database_url, query):
    """A few thousand posts, statistics up to date (VACUUM ANALYZE, as autovacuum or
    the demo-data command leaves them): the planner reads the trigram index, not
    every post, for a rare English word and for a rare Chinese phrase alike.

    The database is the test's own: the planner's statistics it leaves behind would
    otherwise describe the shared database's post table to the tests that follow.
    Every input of the plan is fixed (the rows, generated alike on every run, are few
    enough for ANALYZE to read them all), so the plan is the same on every run.
    """
    app = make_app(SQLALCHEMY_DATABASE_URI=migrated_database_url)
    try:
        if not trigrams_of(app, query):
            pytest.skip(f"pg_trgm makes no trigrams of {query!r} in this server's locale")
        with app.app_context():
            author = add_user("writer")
            rows = realistic_posts(author.id, POSTS_FOR_THE_PLANNER)
            for n, body in enumerate(RARE_POSTS.values(), start=1):
                rows[len(rows) * n // 3]["body"] = body
            db.session.execute(insert(Post), rows)
            db.session.commit()
            # VACUUM can't run in a transaction; it also moves GIN's pending entries
            # into the index proper, which the planner's cost estimate reads.
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE post")
        plan = plan_of_the_search(app, query)
        assert "Index Scan on ix_post_body_trigram" in plan, plan
        assert "Seq Scan on post" not in plan, plan
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()

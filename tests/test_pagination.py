"""The Newer/Older links of a list of posts, and the URL parameters behind them.

app/pagination.py pages with cursors: the "Older posts" link carries the
position of the last post shown (``?page=2&before=<microseconds>-<id>``), the
"Newer posts" link that of the first (``after=``), and ``?page=N`` on its own
still works for bookmarks. These tests pin, with three posts a page:

- the links themselves, to the character: a cursor is the post's exact
  microseconds since 1970 and its id (computed here from the database's rows,
  not with the app's code), and page 2's "Newer" is the list's own URL;
- where the pages end: 6 posts make two full pages and page 2 offers no
  "Older" link; 7 posts make a third page of one; 3 posts need no links;
- what the parameters accept: every malformed cursor or page number is the
  404 page, including those that only the exact shape of the patterns (ASCII
  digits; at most 17 and 18 of them in a cursor, 7 in a page number) keeps
  away from int(), datetime and the database, where they would be 500s;
- any combination answers with a page or a 404, even an empty page (a cursor
  newer than every post), which then offers no links.

The pages are the explore page, a profile (whose URL has a username in it)
and the home page, which a visitor gets as the explore page under another URL;
the logged-in timeline is in tests/test_main.py. Most tests share one blog of
seven posts (`seven`), built once: this file runs in a few seconds.
"""

import calendar
import html
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from app import create_app
from app.extensions import db
from app.models import Post
from tests.databases import fresh_database, upgrade_database
from tests.helpers import add_user, config_for
from tests.query_count import statements_for_get

PER_PAGE = 3
LISTS = ["/explore", "/user/admin", "/"]
# 17 digits of microseconds, the most a cursor has: the year 5138, later than every post.
LATEST = "9" * 17
LARGEST_ID = 2**63 - 1  # what a 64-bit id column holds; 19 digits


@dataclass
class Blog:
    client: FlaskClient
    cursors: dict[int, str]  # post number -> its cursor, from the database's row

    def get(self, url: str, query: dict[str, str] | None = None):
        """GET `url` with `query` (percent-encoded); "{c5}" in either stands for post 5's
        cursor."""
        names = {f"c{n}": cursor for n, cursor in self.cursors.items()}
        if query is not None:
            query = {name: value.format(**names) for name, value in query.items()}
        return self.client.get(url.format(**names), query_string=query)


def cursor_of(timestamp: datetime, post_id: int) -> str:
    """A post's position as a link writes it: whole microseconds since 1970, "-", the id."""
    micros = calendar.timegm(timestamp.utctimetuple()) * 1_000_000 + timestamp.microsecond
    return f"{micros}-{post_id}"


def build(app: Flask, count: int, step: timedelta = timedelta(hours=1)) -> Blog:
    """Give `app`'s blog `count` posts by admin ("post 1 by admin".."post <count>", the
    last the newest), each `step` after the one before, at times with microseconds."""
    start = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    with app.app_context():
        author = add_user("admin")
        db.session.add_all(
            Post(body=f"post {n} by admin", author=author, timestamp=start + n * step)
            for n in range(1, count + 1)
        )
        db.session.commit()
        rows = db.session.execute(select(Post.body, Post.timestamp, Post.id))
        cursors = {int(body.split()[1]): cursor_of(ts, id_) for body, ts, id_ in rows}
    return Blog(app.test_client(), cursors)


@pytest.fixture(scope="module")
def seven(tmp_path_factory) -> Iterator[Blog]:
    """A visitor on a blog of 7 posts, three a page: pages of 3, 3 and 1.

    Built once for the tests that only read it, on a database of its own (the
    shared one is emptied after each test that uses `blog`).
    """
    with fresh_database(tmp_path_factory.mktemp("seven")) as url:
        upgrade_database(url)
        app = create_app(config_for(url, POSTS_PER_PAGE=PER_PAGE))
        yield build(app, 7)
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def blog(make_app) -> Callable[..., Blog]:
    """Return blog(count, step=1 hour): a visitor on a new blog of `count` posts."""
    return lambda count, step=timedelta(hours=1): build(
        make_app(POSTS_PER_PAGE=PER_PAGE), count, step
    )


def posts_on(response) -> list[int]:
    """The numbers of the posts on the page, top to bottom."""
    assert response.status_code == 200, response.status_code
    return [int(n) for n in re.findall(r"post (\d+) by admin", response.text)]


def links(response) -> dict[str, str | None] | None:
    """{"Newer": url, "Older": url}, None for a disabled one; None if the page has no
    Newer/Older links at all."""
    found = re.findall(r'class="page-link" href="([^"]*)">[^<]*(Newer|Older) posts', response.text)
    if not found:
        return None
    assert [label for _, label in found] == ["Newer", "Older"], found
    return {label: None if url == "#" else html.unescape(url) for url, label in found}


def assert_not_found(response) -> None:
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.text


# --- The links ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", LISTS)
def test_walking_the_links_down_and_back_up(seven, path):
    """Pages of 3, 3 and 1, and every link on them to the character, cursors included."""
    c = seven.cursors
    first = seven.get(path)
    assert posts_on(first) == [7, 6, 5]
    # No "Newer" on page 1; "Older" starts after its last post, post 5.
    assert links(first) == {"Newer": None, "Older": f"{path}?page=2&before={c[5]}"}

    second = seven.get(links(first)["Older"])
    assert posts_on(second) == [4, 3, 2]
    # Page 1 is the list's own URL, with no page number and no cursor.
    assert links(second) == {"Newer": path, "Older": f"{path}?page=3&before={c[2]}"}

    third = seven.get(links(second)["Older"])
    assert posts_on(third) == [1]  # the 7th post, alone
    assert links(third) == {"Newer": f"{path}?page=2&after={c[1]}", "Older": None}

    # Back up: the same page 2, with its "Older" link (to the page we came from).
    back = seven.get(links(third)["Newer"])
    assert posts_on(back) == [4, 3, 2]
    assert links(back) == links(second)


@pytest.mark.parametrize("path", LISTS)
def test_page_numbers_typed_by_hand_get_the_same_links(seven, path):
    """?page=2 and ?page=3 (a bookmark, or typed): the same posts and links as by cursor."""
    c = seven.cursors
    second = seven.get(path, {"page": "2"})
    assert posts_on(second) == [4, 3, 2]
    assert links(second) == {"Newer": path, "Older": f"{path}?page=3&before={c[2]}"}
    third = seven.get(path, {"page": "3"})
    assert posts_on(third) == [1]
    assert links(third) == {"Newer": f"{path}?page=2&after={c[1]}", "Older": None}
    assert_not_found(seven.get(path, {"page": "4"}))


@pytest.mark.parametrize("path", LISTS)
def test_only_a_typed_page_further_in_reads_through_offset(seven, path):
    """Page 1, the one read most, takes the newest rows with a plain LIMIT, as a
    cursor's page does. Only ?page=N past 1 skips rows with OFFSET, which it
    does in a subquery of ids (``post.id IN (SELECT post.id ... OFFSET ?)``);
    ?page=1 typed is page 1. (SQLite writes "OFFSET 0" after every LIMIT,
    so the subquery is what tells the two apart.)"""
    app = seven.client.application
    for url, skips in [(path, False), (f"{path}?page=1", False), (f"{path}?page=2", True)]:
        status, statements = statements_for_get(app, seven.client, url)
        assert status == 200, url
        through_offset = [sql for sql in statements if re.search(r"\.id IN \(SELECT", sql)]
        assert bool(through_offset) is skips, (url, statements)
    assert posts_on(seven.get(path, {"page": "1"})) == posts_on(seven.get(path)) == [7, 6, 5]


def test_the_links_start_from_the_first_and_the_last_post_shown(seven):
    """A page of three from the middle: "Newer" continues from its first post, "Older"
    from its last. (Its page number is only a label, carried on by one either way.)"""
    c = seven.cursors
    middle = seven.get("/explore", {"page": "3", "before": "{c5}"})
    assert posts_on(middle) == [4, 3, 2]
    assert links(middle) == {
        "Newer": f"/explore?page=2&after={c[4]}",
        "Older": f"/explore?page=4&before={c[2]}",
    }


def test_a_cursor_is_exact_to_the_microsecond(blog):
    """Posts one microsecond apart: the cursor is the post's exact microseconds, so the
    "Older" links skip and repeat no post (a cursor rounded to the millisecond would)."""
    close = blog(7, step=timedelta(microseconds=1))
    # 2024-05-06 07:08:09.123456 UTC, plus 5 microseconds.
    assert close.cursors[5].split("-")[0] == str(1_714_979_289_123_456 + 5)
    seen, url = [], "/explore"
    while url:
        response = close.get(url)
        seen += posts_on(response)
        url = links(response)["Older"]
    assert seen == [7, 6, 5, 4, 3, 2, 1]


def test_six_posts_make_two_pages_and_the_second_has_no_older_link(blog):
    """Two full pages: page 2 ends the list, reached by cursor or by number (an "Older"
    link there would lead past the end, to a 404)."""
    six = blog(6)
    first = six.get("/explore")
    assert posts_on(first) == [6, 5, 4]
    assert links(first) == {"Newer": None, "Older": f"/explore?page=2&before={six.cursors[4]}"}
    for second in (six.get(links(first)["Older"]), six.get("/explore", {"page": "2"})):
        assert posts_on(second) == [3, 2, 1]
        assert links(second) == {"Newer": "/explore", "Older": None}
    assert_not_found(six.get("/explore", {"page": "3"}))


def test_four_posts_make_a_second_page_of_one(blog):
    """One post more than a page holds: an "Older" link, to that post."""
    four = blog(4)
    first = four.get("/explore")
    assert links(first) == {"Newer": None, "Older": f"/explore?page=2&before={four.cursors[2]}"}
    assert posts_on(four.get(links(first)["Older"])) == [1]


@pytest.mark.parametrize(("count", "posts"), [(3, [3, 2, 1]), (0, [])])
def test_a_single_page_has_no_links(blog, count, posts):
    """Three posts (one full page) or none: no Newer/Older links at all."""
    response = blog(count).get("/explore")
    assert posts_on(response) == posts
    assert links(response) is None


# --- What the parameters accept -------------------------------------------------------------

# (query, the posts shown): each limit, from the inside. "{c5}" stands for post 5's cursor.
GOOD_QUERIES = [
    ({"before": "{c5}"}, [4, 3, 2]),  # strictly before: post 5 itself isn't shown
    ({"page": "2", "after": "{c1}"}, [4, 3, 2]),  # strictly after, the three nearest
    ({"page": "2", "after": "{c4}"}, [7, 6, 5]),
    ({"before": f"{LATEST}-1"}, [7, 6, 5]),  # 17 digits of microseconds: the most
    ({"before": f"{LATEST}-{'9' * 18}"}, [7, 6, 5]),  # 18 digits of id: the most
    ({"before": "0-0"}, []),  # one digit each; 1970: page 1 of nothing, not an error
    ({"page": "1"}, [7, 6, 5]),
    ({"page": "0000002"}, [4, 3, 2]),  # 7 digits: the most a page number has
    ({"page": "1000000", "before": "{c4}"}, [3, 2, 1]),  # MAX_PAGE: still a page
    ({"before": "{c5}", "after": "{c1}"}, [4, 3, 2]),  # "before" wins, "after" is ignored...
    ({"before": "{c5}", "after": "not-a-cursor"}, [4, 3, 2]),  # ...even when it isn't one
]


@pytest.mark.parametrize(("query", "posts"), GOOD_QUERIES)
def test_cursors_and_page_numbers_at_their_limits(seven, query, posts):
    assert posts_on(seven.get("/explore", query)) == posts


# Values that int() would take (" 2", "+2", "1_0", Arabic-Indic digits...) or that
# datetime or the database would choke on: each is the 404 page, whatever it gets wrong
# (a character, a number of digits, a range), rather than a 500 further down.
BAD_QUERIES = [
    {"before": "1 2-3"},
    {"before": "1/2-3"},
    {"before": "1-2 3"},
    {"before": "1-2/3"},
    {"after": "1 2-3"},
    {"after": "1-2/3"},
    {"before": "+1-2"},
    {"before": "1-+2"},
    {"before": "1- 2"},
    {"before": "1_0-2"},
    {"before": "\u0661-\u0662"},
    {"before": "-1"},  # no microseconds
    {"before": "1-"},  # no id
    {"after": ""},
    {"before": f"{'9' * 18}-1"},  # 18 digits of microseconds: past the year 9999
    {"before": "1-1000000000000000000"},  # 19 digits of id, though under 2**63
    {"before": f"1-{LARGEST_ID}"},  # 19 digits too
    {"before": f"1-{LARGEST_ID + 1}"},  # more than a 64-bit id column holds
    {"page": "1/2"},
    {"page": "1 2"},
    {"page": "+2"},
    {"page": "\u0662"},
    {"page": "00000002"},  # 8 digits, though it means 2
    {"page": "0"},
    {"page": ""},
    {"page": "1000001", "before": "{c4}"},  # one past MAX_PAGE, though there are posts
    {"page": "4"},  # past the end, by number
    {"page": "2", "before": "0-0"},  # past the end, by cursor
    {"page": "2", "after": f"{LATEST}-1"},  # nothing newer, past page 1
]


@pytest.mark.parametrize("query", BAD_QUERIES)
def test_a_malformed_cursor_or_page_is_not_found(seven, query):
    assert_not_found(seven.get("/explore", query))


# --- Empty pages ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        {"after": f"{LATEST}-1"},  # newer than every post
        {"before": "0-0", "after": f"{LATEST}-1"},
        {"before": "0-0", "after": "0-0"},
    ],
)
@pytest.mark.parametrize("path", LISTS)
def test_an_empty_first_page_is_a_page_without_links(seven, path, query):
    """A hand-made cursor with no post on its side: page 1 of nothing, as on an empty
    blog, with no "Older" link (there is no last post for it to start from)."""
    response = seven.get(path, query)
    assert posts_on(response) == []
    assert "No posts yet." in response.text
    assert links(response) is None


def test_with_before_and_after_the_older_link_follows_before(seven):
    """ "before" wins over "after": the page offers an "Older" link only if there are
    older posts, as with "before" alone."""
    end = seven.get("/explore", {"before": "{c4}", "after": "{c1}"})
    assert posts_on(end) == [3, 2, 1]
    assert links(end) is None
    middle = seven.get("/explore", {"before": "{c7}", "after": "{c1}"})
    assert posts_on(middle) == [6, 5, 4]
    assert links(middle) == {"Newer": None, "Older": f"/explore?page=2&before={seven.cursors[4]}"}

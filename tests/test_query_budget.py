"""A guard on every listing page: a fixed, small number of SQL statements.

The classic slow page runs one query per item (for a post's author, a
person's avatar or the time they followed): fast with ten rows in a test,
slow with real data. Counting statements catches it on any machine, without
a stopwatch: the count must stay within the budget and must not depend on how
many items a page shows or which page it is.

The listing pages are those of posts (the timeline, explore, a profile,
search results) and of people (someone's followers, the people they follow).
Each is measured on page 1, on page 2 reached by its Older link (a cursor)
and on page 2 typed by hand (?page=2, which pages with OFFSET).
"""

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert

from app.extensions import db
from app.models import User, followers, name_key
from tests.helpers import PASSWORD, PASSWORD_HASH, add_posts, add_user
from tests.query_count import statements_for_get

# The most statements a listing page may run, whatever its size or depth.
BUDGET = 4
PAGE_SIZES = (10, 50)
# Enough people on each list of author7's for two full pages of the largest size.
FANS = 2 * max(PAGE_SIZES)
# The listing pages (the reader is logged in, so "/" is their timeline). Every
# post's body contains "post" ("post 3 by author7"), so the search finds them all.
LISTING_PAGES = [
    "/",
    "/explore",
    "/user/author7",
    "/user/author7/followers",
    "/user/author7/following",
    "/search?q=post",
]


def with_page_number(url: str, number: int) -> str:
    """`url` with ?page=N added, after the query it may already have (a search's q)."""
    return f"{url}{'&' if '?' in url else '?'}page={number}"


def add_fans(author: User, count: int) -> None:
    """`count` new users who follow `author` and whom `author` follows back, each
    follow at a time of its own: bulk INSERTs, a few statements for any count."""
    names = [f"fan{n}" for n in range(count)]
    # A Core INSERT skips the model's @validates, so the rows carry their keys.
    fan_ids = db.session.scalars(
        insert(User).returning(User.id, sort_by_parameter_order=True),
        [
            {
                "username": name,
                "username_key": name_key(name),
                "email": f"{name}@example.com",
                "email_key": name_key(f"{name}@example.com"),
                "password_hash": PASSWORD_HASH,
            }
            for name in names
        ],
    ).all()
    start = datetime(2025, 1, 1, tzinfo=UTC)
    follows = []
    for n, fan_id in enumerate(fan_ids):
        moment = start + timedelta(minutes=n)
        follows.append({"follower_id": fan_id, "followed_id": author.id, "created": moment})
        follows.append({"follower_id": author.id, "followed_id": fan_id, "created": moment})
    db.session.execute(insert(followers), follows)
    db.session.commit()


@pytest.fixture
def statements_per_page(make_app):
    """Measure, for each page size and page number, the statements of each listing page.

    Twelve authors each write enough posts for two full pages of the largest
    size on every listing; the reader follows them all, so their timeline is
    as full as explore. author7 has FANS followers, and follows them all back,
    so both of author7's lists of people have two full pages too.
    """
    counts: dict[tuple[str, int, int | str], int] = {}
    setup_app = make_app()
    with setup_app.app_context():
        reader = add_user("reader")
        authors = [add_user(f"author{n}") for n in range(12)]
        for author in authors:
            add_posts(author, 2 * max(PAGE_SIZES))  # two pages of author7's profile, too
            reader.follow(author)
        db.session.commit()
        add_fans(authors[7], FANS)

    for size in PAGE_SIZES:
        app = make_app(POSTS_PER_PAGE=size)
        client = app.test_client()
        client.post("/auth/login", data={"username": "reader", "password": PASSWORD})
        client.get("/")  # the first request may also record last_seen: not a listing cost
        for url in LISTING_PAGES:
            # Page 2 as the Older link gives it (a cursor) and as typed (?page=2, OFFSET).
            older = re.search(r'href="([^"]*before=[^"]*)"', client.get(url).text).group(1)
            for page, page_url in [
                (1, url),
                (2, html.unescape(older)),
                ("2 typed", with_page_number(url, 2)),
            ]:
                status, statements = statements_for_get(app, client, page_url)
                assert status == 200, page_url
                counts[url, size, page] = len(statements)
    return counts


@pytest.mark.parametrize("url", LISTING_PAGES)
def test_listing_pages_stay_within_the_budget(statements_per_page, url):
    counts = {key: n for key, n in statements_per_page.items() if key[0] == url}
    assert max(counts.values()) <= BUDGET, counts


@pytest.mark.parametrize("url", LISTING_PAGES)
def test_the_count_does_not_depend_on_page_size_or_number(statements_per_page, url):
    """One query per item (or per author) would make 50 items cost more than 10."""
    counts = {key: n for key, n in statements_per_page.items() if key[0] == url}
    assert len(set(counts.values())) == 1, counts

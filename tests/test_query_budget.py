"""A guard on every page that lists posts: a fixed, small number of SQL statements.

The classic slow page runs one query per post (for its author or avatar): fast
with ten rows in a test, slow with real data. Counting statements catches it
on any machine, without a stopwatch: the count must stay within the budget
and must not depend on how many posts a page shows or which page it is.
"""

import html
import re

import pytest

from app.extensions import db
from tests.helpers import PASSWORD, add_posts, add_user
from tests.query_count import statements_for_get

# The most statements a listing page may run, whatever its size or depth.
BUDGET = 4
PAGE_SIZES = (10, 50)
# The pages that list posts (the reader is logged in, so "/" is their timeline).
LISTING_PAGES = ["/", "/explore", "/user/author7"]


@pytest.fixture
def statements_per_page(make_app):
    """Measure, for each page size and page number, the statements of each listing page.

    Twelve authors each write enough posts for two full pages of the largest
    size on every listing; the reader follows them all, so their timeline is
    as full as explore.
    """
    counts: dict[tuple[str, int, int], int] = {}
    setup_app = make_app()
    with setup_app.app_context():
        reader = add_user("reader")
        authors = [add_user(f"author{n}") for n in range(12)]
        for author in authors:
            add_posts(author, 2 * max(PAGE_SIZES))  # two pages of author7's profile, too
            reader.follow(author)
        db.session.commit()

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
                ("2 typed", f"{url}?page=2"),
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
    """One query per post (or per author) would make 50 posts cost more than 10."""
    counts = {key: n for key, n in statements_per_page.items() if key[0] == url}
    assert len(set(counts.values())) == 1, counts

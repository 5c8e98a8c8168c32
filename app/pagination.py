"""Paging through lists (posts, followers, search results): page 200 costs what page 1 costs.

The two usual ways to page both get slower as the data grows:
- `db.paginate` runs a COUNT(*) over every matching row on each request, only
  to print "page 3 of 5000". A blog needs Newer/Older links, so we fetch one
  row more than a page holds: if it comes back, there is an older page.
- OFFSET makes the database read and throw away every row before the page:
  page 200 of 10 posts reads 2,010 rows to show 10.

So the Newer/Older links carry a cursor, the position of a post in the list
(keyset pagination): "Older posts" asks for the posts that come after the last
one shown, ``WHERE (timestamp, id) < (:timestamp, :id) ORDER BY timestamp
DESC, id DESC LIMIT 11``, which the post indexes (sorted on the same columns)
answer by reading only the rows shown, whichever page it is. The id breaks ties
between posts written in the same microsecond, so no post is skipped or shown
twice.

``?page=N`` on its own (a bookmark, or typed by hand) still works, with
OFFSET; in the links the page number is only a label.

Lists of people page the same way: a follower list is sorted by when each
follow began, newest first, so its cursor is a (time, id) pair too
(`ListOrder` says which columns a list is sorted by).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import abort, request, url_for
from sqlalchemy import ColumnElement, Select, tuple_

from app.extensions import db
from app.models import Post, followers

# Far beyond any real blog, and small enough that (page * per_page) can never
# overflow the database's OFFSET (a 500 waiting for someone to type 9999999999999999999).
MAX_PAGE = 1_000_000

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Cursor:
    """An item's place in a newest-first list, written in URLs as "<microseconds>-<id>".

    Whole microseconds since 1970 rather than an ISO date: they survive the
    round trip through a URL exactly, with nothing to escape.
    """

    timestamp: datetime
    id: int

    @classmethod
    def parse(cls, text: str) -> "Cursor":
        """Read a cursor from a URL.

        :raise 404: if it isn't one of ours: a bad link is a page that doesn't
            exist, not a server error.
        """
        # 17 digits of microseconds reach the year 5138. An id of 18 digits
        # always fits the 64-bit integer the database drivers send (whose
        # largest value has 19), and the database compares it with the 32-bit
        # id column without complaint (it only sorts, never looks a row up):
        # a longer number can't be one of ours, and passed on it would make the
        # driver fail, not the page.
        match = re.fullmatch(r"([0-9]{1,17})-([0-9]{1,18})", text)
        if match is None:
            abort(404)
        micros, post_id = (int(number) for number in match.groups())
        return cls(EPOCH + micros * MICROSECOND, post_id)

    def __str__(self) -> str:
        return f"{(self.timestamp - EPOCH) // MICROSECOND}-{self.id}"


@dataclass(frozen=True)
class ListOrder:
    """How a list is sorted, newest first: by a time, then an id to break ties.

    The two columns are the ones the list's index is sorted by, so that the
    database reads a page from the index; `cursor` reads the same two values
    back from an item shown.
    """

    timestamp: ColumnElement
    id: ColumnElement
    cursor: Callable[[Any], Cursor]


# Every list of posts: explore, a timeline, a profile, search results.
POSTS_NEWEST_FIRST = ListOrder(
    Post.timestamp, Post.id, lambda post: Cursor(post.timestamp, post.id)
)
# Someone's followers, by when each follow began (User.select_followers).
FOLLOWERS_NEWEST_FIRST = ListOrder(
    followers.c.created, followers.c.follower_id, lambda user: Cursor(user.followed_at, user.id)
)
# The people someone follows, likewise (User.select_following).
FOLLOWING_NEWEST_FIRST = ListOrder(
    followers.c.created, followers.c.followed_id, lambda user: Cursor(user.followed_at, user.id)
)


@dataclass
class Page:
    items: list[Any]
    number: int
    has_next: bool
    order: ListOrder = POSTS_NEWEST_FIRST
    # Query arguments every link to another page keeps (a search's "q").
    kept_args: dict[str, str] = field(default_factory=dict)

    @property
    def has_prev(self) -> bool:
        return self.number > 1

    def prev_url(self) -> str:
        """The newer page: the posts just before the first one shown."""
        if self.number == 2:
            return self._url()  # page 1 is the list's own URL
        return self._url(page=self.number - 1, after=self.order.cursor(self.items[0]))

    def next_url(self) -> str:
        """The older page: the posts just after the last one shown."""
        return self._url(page=self.number + 1, before=self.order.cursor(self.items[-1]))

    def _url(self, **args) -> str:
        # The same view with the same path arguments (a profile's username).
        return url_for(request.endpoint, **request.view_args, **self.kept_args, **args)


def requested_page() -> int:
    """Return the page number in ``?page=N`` (default 1).

    :raise 404: if it isn't a whole number between 1 and MAX_PAGE.
    """
    raw = request.args.get("page", "1")
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= MAX_PAGE:
        abort(404)
    return int(raw)


def paginate(
    query: Select,
    per_page: int,
    order: ListOrder = POSTS_NEWEST_FIRST,
    kept_args: dict[str, str] | None = None,
) -> Page:
    """Run `query` (a select sorted newest first by `order`) for the requested page,
    in one statement.

    :raise 404: for a page past the end (page 1 of an empty list is fine).
    """
    number = requested_page()
    position = (order.timestamp, order.id)
    if "before" in request.args:  # (and an "after" beside it is ignored)
        cursor = Cursor.parse(request.args["before"])
        query = query.where(tuple_(*position) < tuple_(cursor.timestamp, cursor.id))
        rows = db.session.scalars(query.limit(per_page + 1)).all()
        has_next = len(rows) > per_page
    elif "after" in request.args:
        # The same list read from the other end, from the cursor towards the
        # newest item, then turned back around.
        cursor = Cursor.parse(request.args["after"])
        query = query.where(tuple_(*position) > tuple_(cursor.timestamp, cursor.id))
        oldest_first = query.order_by(None).order_by(*(column.asc() for column in position))
        rows = db.session.scalars(oldest_first.limit(per_page)).all()[::-1]
        # Coming back from an older page, there is an older page: that one. Unless
        # nothing is newer than the cursor (a link made by hand): an empty page has
        # no last post for an "Older" link to start from.
        has_next = bool(rows)
    elif number == 1:
        # The first page, the one read most: the newest rows, straight from the
        # index, as a cursor's page reads them.
        rows = db.session.scalars(query.limit(per_page + 1)).all()
        has_next = len(rows) > per_page
    else:
        # OFFSET still reads every row before the page, so let it read as little
        # as it can: the ids alone, from the index; then fetch just the rows shown.
        skipped = query.with_only_columns(order.id).offset((number - 1) * per_page)
        page_ids = skipped.limit(per_page + 1).scalar_subquery()
        rows = db.session.scalars(query.where(order.id.in_(page_ids))).all()
        has_next = len(rows) > per_page
    if not rows and number > 1:
        abort(404)
    return Page(
        items=list(rows[:per_page]),
        number=number,
        has_next=has_next,
        order=order,
        kept_args=kept_args or {},
    )

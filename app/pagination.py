"""Paging through lists of posts: page 200 costs what page 1 costs.

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
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import abort, request, url_for
from sqlalchemy import Select, tuple_

from app.extensions import db
from app.models import Post

# Far beyond any real blog, and small enough that (page * per_page) can never
# overflow the database's OFFSET (a 500 waiting for someone to type 9999999999999999999).
MAX_PAGE = 1_000_000

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class Cursor:
    """A post's place in a newest-first list, written in URLs as "<microseconds>-<id>".

    Whole microseconds since 1970 rather than an ISO date: they survive the
    round trip through a URL exactly, with nothing to escape.
    """

    timestamp: datetime
    id: int

    @classmethod
    def of(cls, post: Post) -> "Cursor":
        return cls(post.timestamp, post.id)

    @classmethod
    def parse(cls, text: str) -> "Cursor":
        """Read a cursor from a URL.

        :raise 404: if it isn't one of ours: a bad link is a page that doesn't
            exist, not a server error.
        """
        # 17 digits of microseconds reach the year 5138, and an id of 18
        # digits always fits the database's 64-bit integer column (whose
        # largest value has 19): a longer number can't be one of our posts,
        # and passed on it would make the database driver fail, not the page.
        match = re.fullmatch(r"([0-9]{1,17})-([0-9]{1,18})", text)
        if match is None:
            abort(404)
        micros, post_id = (int(number) for number in match.groups())
        return cls(EPOCH + micros * MICROSECOND, post_id)

    def __str__(self) -> str:
        return f"{(self.timestamp - EPOCH) // MICROSECOND}-{self.id}"


@dataclass
class Page:
    items: list[Post]
    number: int
    has_next: bool

    @property
    def has_prev(self) -> bool:
        return self.number > 1

    def prev_url(self) -> str:
        """The newer page: the posts just before the first one shown."""
        if self.number == 2:
            return self._url()  # page 1 is the list's own URL
        return self._url(page=self.number - 1, after=Cursor.of(self.items[0]))

    def next_url(self) -> str:
        """The older page: the posts just after the last one shown."""
        return self._url(page=self.number + 1, before=Cursor.of(self.items[-1]))

    @staticmethod
    def _url(**args) -> str:
        # The same view with the same path arguments (a profile's username).
        return url_for(request.endpoint, **request.view_args, **args)


def requested_page() -> int:
    """Return the page number in ``?page=N`` (default 1).

    :raise 404: if it isn't a whole number between 1 and MAX_PAGE.
    """
    raw = request.args.get("page", "1")
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= MAX_PAGE:
        abort(404)
    return int(raw)


def paginate(posts: Select, per_page: int) -> Page:
    """Run `posts` (a select of Post, newest first) for the requested page, in one query.

    :raise 404: for a page past the end (page 1 of an empty list is fine).
    """
    number = requested_page()
    position = (Post.timestamp, Post.id)
    if "before" in request.args:  # (and an "after" beside it is ignored)
        cursor = Cursor.parse(request.args["before"])
        posts = posts.where(tuple_(*position) < tuple_(cursor.timestamp, cursor.id))
        rows = db.session.scalars(posts.limit(per_page + 1)).all()
        has_next = len(rows) > per_page
    elif "after" in request.args:
        # The same list read from the other end, from the cursor towards the
        # newest post, then turned back around.
        cursor = Cursor.parse(request.args["after"])
        posts = posts.where(tuple_(*position) > tuple_(cursor.timestamp, cursor.id))
        oldest_first = posts.order_by(None).order_by(*(column.asc() for column in position))
        rows = db.session.scalars(oldest_first.limit(per_page)).all()[::-1]
        # Coming back from an older page, there is an older page: that one. Unless
        # nothing is newer than the cursor (a link made by hand): an empty page has
        # no last post for an "Older" link to start from.
        has_next = bool(rows)
    else:
        # OFFSET still reads every row before the page, so let it read as little
        # as it can: the ids alone, from the index; then fetch just the rows shown.
        skipped = posts.with_only_columns(Post.id).offset((number - 1) * per_page)
        page_ids = skipped.limit(per_page + 1).scalar_subquery()
        rows = db.session.scalars(posts.where(Post.id.in_(page_ids))).all()
        has_next = len(rows) > per_page
    if not rows and number > 1:
        abort(404)
    return Page(items=list(rows[:per_page]), number=number, has_next=has_next)

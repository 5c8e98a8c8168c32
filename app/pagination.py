"""Paging through post lists without counting the whole table.

`db.paginate` runs a COUNT(*) over every matching row on each request so that
it can print "page 3 of 5000". A blog only needs Newer/Older links, so we fetch
one row more than a page holds: if it comes back, there is a next page.
"""

import re
from dataclasses import dataclass
from typing import Any

from flask import abort, request
from sqlalchemy import Select

from app.extensions import db

# Far beyond any real blog, and small enough that (page * per_page) can never
# overflow the database's OFFSET (a 500 waiting for someone to type 9999999999999999999).
MAX_PAGE = 1_000_000


@dataclass
class Page:
    items: list[Any]
    number: int
    has_next: bool

    @property
    def has_prev(self) -> bool:
        return self.number > 1


def requested_page() -> int:
    """Return the page number in ``?page=N`` (default 1).

    :raise 404: if it isn't a whole number between 1 and MAX_PAGE; a bad page
        is a page that doesn't exist, not a server error.
    """
    raw = request.args.get("page", "1")
    if not re.fullmatch(r"[0-9]{1,7}", raw) or not 1 <= int(raw) <= MAX_PAGE:
        abort(404)
    return int(raw)


def paginate(stmt: Select, per_page: int) -> Page:
    """Run `stmt` for the requested page, in one query.

    :raise 404: for a page past the end (page 1 of an empty list is fine).
    """
    number = requested_page()
    rows = db.session.scalars(stmt.limit(per_page + 1).offset((number - 1) * per_page)).all()
    if not rows and number > 1:
        abort(404)
    return Page(items=list(rows[:per_page]), number=number, has_next=len(rows) > per_page)

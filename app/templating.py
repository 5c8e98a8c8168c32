"""What templates get besides their view's variables: the navigation's
username, avatars, and relative dates with the exact time in the site's zone.

The HTML built here is an f-string in ``Markup``, and every value that isn't
the app's own (a username, a translated text) goes through ``escape()`` on
the way in, so a username such as ``"><script>`` stays text. (``Markup(...)
.format()`` escapes every value by itself, with no call to forget, but costs
several times as much: these run for every post of every page.)"""

import math
import re
from contextlib import suppress
from datetime import datetime, timedelta
from functools import lru_cache

from babel import dates
from flask import Flask, current_app, g
from flask_babel import get_locale, get_timezone
from flask_login import current_user
from markupsafe import Markup, escape
from pytz import BaseTzInfo
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db
from app.models import User, now_utc
from app.security import GRAVATAR


def navigation_username() -> str | None:
    """Return the logged-in user's name for the navigation bar, or None.

    Never raises, and runs once per request. On a normal page the user is
    already loaded, so this costs nothing. On an error page it may not be:
    after a rollback `current_user.username` is re-read from the database, and
    if the database is down that read fails again. The page then shows the
    anonymous navigation rather than crashing a second time.
    """
    if "nav_username" not in g:
        try:
            g.nav_username = current_user.username if current_user.is_authenticated else None
        except SQLAlchemyError:
            g.nav_username = None
            with suppress(SQLAlchemyError):
                db.session.rollback()
    return g.nav_username


def avatar(user: User, size: int = 48) -> Markup:
    """An avatar for `user`: an SVG with their initial, drawn here.

    It makes no request to anyone. With ``USE_GRAVATAR`` on it is a Gravatar
    image instead, which tells Gravatar who reads which page.
    """
    digest = user.avatar_hash()
    return avatar_markup(user.username, digest, size, current_app.config["USE_GRAVATAR"])


@lru_cache(maxsize=4096)
def avatar_markup(username: str, digest: str, size: int, use_gravatar: bool) -> Markup:
    """`avatar`'s HTML, made once per user and size: the same authors fill page
    after page, and an avatar is made from these four values and nothing else."""
    if use_gravatar:
        url = f"{GRAVATAR}/avatar/{digest}?d=identicon&s={size}"
        return Markup(
            f'<img class="rounded" src="{escape(url)}" width="{size:d}" height="{size:d}" alt="">'
        )
    name = escape(username)
    initial = escape(username[:1].upper())
    hue = int(digest[:4], 16) % 360
    return Markup(
        f'<svg class="rounded" width="{size:d}" height="{size:d}" viewBox="0 0 48 48" '
        f'role="img" aria-label="{name}">'
        f'<rect width="48" height="48" fill="hsl({hue}, 45%, 45%)"/>'
        '<text x="24" y="32" font-size="24" text-anchor="middle" fill="#fff" '
        f'font-family="sans-serif">{initial}</text></svg>'
    )


# The zone field of a date pattern (z, zzz), outside the pattern's 'quoted text'.
QUOTED_TEXT = re.compile(r"('[^']*')")
ZONE_FIELD = re.compile(r"z+")


def utc_offset(local: datetime) -> str:
    """The offset from UTC of a time in some zone: "UTC", "UTC+08:00", "UTC-03:30"."""
    offset = local.utcoffset()
    if not offset:
        return "UTC"
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def long_pattern(language: str, zone_text: str) -> str:
    """The language's "long" date and time pattern, with `zone_text` in place of its
    zone field: "MMMM d, y, h:mm:ss a 'UTC-05:00'", "y年M月d日 'UTC-05:00' HH:mm:ss".

    Babel's own text for the zone is wrong in a few zones: a negative offset
    that isn't whole hours is an hour out (St. John's, UTC-03:30, becomes
    "-0430"), and Dublin's summer time is called "GMT" (the tz database counts
    Irish summer time as standard time, and winter as the exception). The
    offset, worked out here, is right in every zone; and it is what Babel
    shows for most zones anyway ("+0800" for Beijing): only a few, such as
    the US zones in English (EST, PDT), have an abbreviation.
    """
    time_pattern = dates.get_time_format("long", language).pattern
    pieces = QUOTED_TEXT.split(time_pattern)  # quoted text at the odd positions
    pieces[::2] = [ZONE_FIELD.sub(f"'{zone_text}'", piece) for piece in pieces[::2]]
    date_pattern = dates.get_date_format("long", language).pattern
    return (
        dates.get_datetime_format("long", language)
        .replace("{0}", "".join(pieces))
        .replace("{1}", date_pattern)
    )


@lru_cache(maxsize=256)
def exact_time_pattern(language: str, zone_text: str) -> dates.DateTimePattern:
    """`long_pattern`, parsed: once per language and offset, not once per post.

    Parsing the pattern is most of what formatting a date costs, and a page
    of posts needs the same one for every post (a zone has an offset or two a
    year). Bounded: languages times offsets is a handful in practice.
    """
    return dates.parse_pattern(long_pattern(language, zone_text))


# format_timedelta's `threshold`: 50 minutes are "1 hour", 45 are "45 minutes".
RELATIVE_THRESHOLD = 0.85


@lru_cache(maxsize=1024)
def relative_text(language: str, future: bool, unit: str, count: int) -> str:
    """ "in 3 minutes" or "3 minutes ago", in `language`: Babel's text, cached.

    A page of posts shows a few such texts many times ("2 hours ago"), and
    Babel looks each up in its locale data afresh: several times the cost
    of the dictionary lookup here. `DateWriter.relative` rounds as Babel
    would, and this asks Babel for exactly that unit and count (granularity
    `unit`, a threshold never reached), so the text is Babel's own.
    tests/test_timezone.py compares the two over every rounding boundary.
    """
    seconds = count * dict(dates.TIMEDELTA_UNITS)[unit]
    return dates.format_timedelta(
        seconds if future else -seconds,
        granularity=unit,
        threshold=math.inf,
        add_direction=True,
        locale=language,
    )


class DateWriter:
    """Writes this request's dates: its language, the site's zone and "now",
    looked up once a request (`date_writer`) rather than once a post.

    Flask-Babel's own functions (format_timedelta, to_user_timezone) look up
    the language and zone at every call, through Flask's context-locals:
    about a quarter of what a post's two dates cost. One "now" also makes
    every post on a page measured from the same moment.
    """

    def __init__(self) -> None:
        # The language's code ("zh_CN"), not its Locale: the caches below are
        # keyed by it, and Flask-Babel makes a new Locale for every request,
        # which compares with the cached one field by field, twice a post.
        self.language = str(get_locale())
        self.zone = get_timezone()  # the site's, BABEL_DEFAULT_TIMEZONE
        self.now = now_utc()

    def relative(self, moment: datetime) -> str:
        """ "3 minutes ago", as Babel's format_timedelta writes it (`relative_text`)."""
        delta = moment - self.now
        seconds = delta.days * 86400 + delta.seconds  # whole seconds, as Babel counts them
        for unit, unit_seconds in dates.TIMEDELTA_UNITS:  # years first
            # Babel's rounding: the largest unit the time is at least 0.85 of,
            # in a whole number of them.
            count = abs(seconds) / unit_seconds
            if count >= RELATIVE_THRESHOLD or unit == "second":
                if unit == "second" and count:
                    count = max(count, 1)  # "1 second ago", never "0 seconds", but at 0
                return relative_text(self.language, seconds >= 0, unit, round(count))
        raise AssertionError("the loop ends at seconds")

    def exact(self, moment: datetime) -> str:
        """`moment` as the page's language writes a date and time, in the site's
        zone, named by its offset at that moment: "January 15, 2025, 7:34:56 AM
        UTC-05:00", and in July "UTC-04:00".

        The conversion is Flask-Babel's to_user_timezone (a pytz zone needs its
        normalize() across a change of offset); the parsed pattern then writes
        the local time, as Flask-Babel's format_datetime would. A zone for each
        reader would be a ``timezone_selector`` given to ``babel.init_app``,
        asked once a request like the locale; this blog has one zone for everybody.
        """
        return exact_text(moment, self.language, self.zone)


@lru_cache(maxsize=4096)
def exact_text(moment: datetime, language: str, zone: BaseTzInfo) -> str:
    """`DateWriter.exact`'s text, made once per post, language and zone.

    What it writes depends on these three and nothing else, and the same posts
    are shown again and again: the newest ones are on the first page of every
    list, the page read most. Writing it was a third of what a post on a page
    cost (Babel formats its seven fields one by one), and looking it up here is
    a tenth of that. A post shown for the first time costs what it did; the
    cache holds the last 4,096 (a few hundred kilobytes per worker).
    """
    local = zone.normalize(moment.astimezone(zone))
    return exact_time_pattern(language, utc_offset(local)).apply(local, language)


def date_writer() -> DateWriter:
    """This request's DateWriter, made on first use.

    It keeps the language the request started with, as Flask-Babel keeps its
    own until ``refresh()``: a page is rendered in one language.
    """
    if "date_writer" not in g:
        g.date_writer = DateWriter()
    return g.date_writer


def exact_time(moment: datetime) -> str:
    """`moment` written in full (`DateWriter.exact`), in the language and zone
    in force now (inside ``force_locale`` too)."""
    return DateWriter().exact(moment)


def time_ago(moment: datetime) -> Markup:
    """ "3 minutes ago", with the exact date and time shown on hover.

    The exact time says which zone it is in: readers are in many zones, and a
    bare "4:18 AM" would be eight hours off in Beijing. The relative text and
    the ``datetime`` attribute, an instant with its offset, are the same
    whatever the site's zone.
    """
    writer = date_writer()
    relative = escape(writer.relative(moment))
    exact = escape(writer.exact(moment))
    return Markup(f'<time datetime="{moment.isoformat()}" title="{exact}">{relative}</time>')


def register_template_helpers(app: Flask) -> None:
    """Give every template `nav_username`, `avatar()`, `get_locale()` and the `time_ago` filter."""
    app.context_processor(lambda: {"nav_username": navigation_username()})
    app.add_template_global(navigation_username)  # for macros, which see no context
    app.add_template_global(avatar)
    app.add_template_global(get_locale)
    app.add_template_filter(time_ago, "time_ago")

"""What templates get besides their view's variables: the navigation's
username, avatars, and relative dates.

The HTML built here is built with ``Markup(...).format()``: the template is
trusted markup, and every value put into it is escaped on the way in, so a
username such as ``"><script>`` stays text, with no call to forget."""

from contextlib import suppress
from datetime import datetime

from flask import Flask, current_app, g
from flask_babel import format_datetime, format_timedelta, get_locale
from flask_login import current_user
from markupsafe import Markup
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
    if current_app.config["USE_GRAVATAR"]:
        url = f"{GRAVATAR}/avatar/{digest}?d=identicon&s={size}"
        image = '<img class="rounded" src="{url}" width="{size}" height="{size}" alt="">'
        return Markup(image).format(url=url, size=size)
    drawing = (
        '<svg class="rounded" width="{size}" height="{size}" viewBox="0 0 48 48" '
        'role="img" aria-label="{name}">'
        '<rect width="48" height="48" fill="hsl({hue}, 45%, 45%)"/>'
        '<text x="24" y="32" font-size="24" text-anchor="middle" fill="#fff" '
        'font-family="sans-serif">{initial}</text></svg>'
    )
    return Markup(drawing).format(
        size=size,
        name=user.username,
        hue=int(digest[:4], 16) % 360,
        initial=user.username[:1].upper(),
    )


def time_ago(moment: datetime) -> Markup:
    """ "3 minutes ago", with the exact date and time shown on hover.

    The exact time is in UTC and says so ("long" includes the zone): readers
    are in many zones, and a bare "4:18 AM" would be eight hours off in Beijing.
    """
    exact = format_datetime(moment, "long")
    relative = format_timedelta(moment - now_utc(), add_direction=True)
    return Markup('<time datetime="{iso}" title="{exact}">{relative}</time>').format(
        iso=moment.isoformat(), exact=exact, relative=relative
    )


def register_template_helpers(app: Flask) -> None:
    """Give every template `nav_username`, `avatar()`, `get_locale()` and the `time_ago` filter."""
    app.context_processor(lambda: {"nav_username": navigation_username()})
    app.add_template_global(avatar)
    app.add_template_global(get_locale)
    app.add_template_filter(time_ago, "time_ago")

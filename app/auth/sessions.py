"""Logins the server can end: one database row per logged-in browser.

Flask keeps its session in a cookie signed with SECRET_KEY. The server holds
no copy, so it can't take one back: a cookie copied before logging out (from
a shared computer, a proxy's log, malware) would go on logging in until it
expired, and so would a remember-me cookie, for a year by Flask-Login's default.

So each login gets a row in ``user_session``, and what Flask-Login keeps in
the session and the remember-me cookie (``User.get_id``) is "<user id>:<token>",
a random token whose SHA-256 digest names the row. Logging out deletes the
row; a copied cookie then names nothing and its bearer is anonymous. The
same row lets a user end their other logins ("log out everywhere else"),
and a new password end them all.

Why this rather than the alternatives:

- A server-side session store (Flask-Session with Redis) moves every
  session's contents off the cookie, and makes Redis a dependency of every
  page, where this blog works without it.
- Flask-Login's "alternative id" (a per-user token that changes on logout)
  would log the user out in every browser whenever they log out in one.

The cost: loading the user, which every logged-in page does anyway, joins one
indexed row (still one statement), and logging in writes one row. The
database keeps only the token's digest, so a copy of the database can't be
turned into cookies.
"""

import hashlib
import secrets
from datetime import timedelta

from flask import current_app, request, session
from flask_login import COOKIE_NAME, current_user, login_user, logout_user
from sqlalchemy import bindparam, delete, select

from app.extensions import db
from app.models import User, UserSession, now_utc

# What survives logging in and out: the language chosen in this browser
# (app/i18n.py). Everything else is dropped, the CSRF token included, so a
# token someone planted or read before the login is worth nothing after it.
KEPT_ACROSS_LOGIN = ("locale", "locale_chosen")


def token_digest(token: str) -> str:
    """What the database keeps of a login's token."""
    return hashlib.sha256(token.encode()).hexdigest()


def login_lifetime() -> timedelta:
    """How long a login lasts at most: as long as a remember-me cookie does."""
    return current_app.config["REMEMBER_COOKIE_DURATION"]


def start_session(user: User, remember: bool) -> None:
    """Log `user` in, in a session that starts afresh, with a row of its own."""
    _clear_session()
    record_login(user)
    login_user(user, remember=remember)


def record_login(user: User) -> None:
    """Add a login row for `user`; `user.get_id()` then names it."""
    token = secrets.token_urlsafe(32)
    # The digest of the password hash that was just checked, as loaded then.
    login = UserSession(
        user_id=user.id, token_hash=token_digest(token), password_digest=user.password_digest()
    )
    db.session.add(login)
    # Logins nobody ended (a browser closed, not logged out) are deleted at
    # the next login anyone makes, rather than by a job of their own.
    db.session.execute(
        delete(UserSession).where(UserSession.created < now_utc() - login_lifetime())
    )
    db.session.commit()
    user.session_token = token


def login_is_remembered() -> bool:
    """True if this browser holds a remember-me cookie (its login outlives the session)."""
    return current_app.config.get("REMEMBER_COOKIE_NAME", COOKIE_NAME) in request.cookies


def end_session() -> None:
    """Log out of this browser: the login's row goes, and the session starts afresh."""
    if current_user.is_authenticated:
        db.session.execute(
            delete(UserSession).where(
                UserSession.token_hash == token_digest(current_user.session_token)
            )
        )
        db.session.commit()
    _clear_session()
    # After the clear: Flask-Login notes in the session that the remember-me
    # cookie must be deleted from the browser too.
    logout_user()


def end_other_sessions(user: User) -> int:
    """End every login of `user` but this one; return how many there were."""
    ended = db.session.execute(
        delete(UserSession).where(
            UserSession.user_id == user.id,
            UserSession.token_hash != token_digest(user.session_token),
        )
    )
    db.session.commit()
    return ended.rowcount


def _clear_session() -> None:
    """Empty the session but for what must carry over (KEPT_ACROSS_LOGIN)."""
    kept = {key: session[key] for key in KEPT_ACROSS_LOGIN if key in session}
    session.clear()
    session.update(kept)


# The statement `load_user` runs on every request of a logged-in user, built
# once: building a statement and working out its cache key (SQLAlchemy's key
# for the compiled SQL) cost more than running it on SQLite, and a statement
# kept in a module keeps its key. The values come as bound parameters.
LOGIN_ROW = (
    select(User, UserSession.password_digest)
    .join(UserSession, UserSession.user_id == User.id)
    .where(
        User.id == bindparam("user_id"),
        UserSession.token_hash == bindparam("token_hash"),
        UserSession.created >= bindparam("not_before"),
    )
)


def load_user(session_id: str) -> User | None:
    """Flask-Login's user loader (`create_app` registers it): turn what
    User.get_id() put in the session back into a User, in one statement.

    None (an anonymous visitor) when the login was ended, has expired, was
    made with a password that has changed since, or was never one of ours.
    """
    user_id, _, token = session_id.partition(":")
    row = None
    if user_id.isascii() and user_id.isdigit() and token:
        row = db.session.execute(
            LOGIN_ROW,
            {
                "user_id": int(user_id),
                "token_hash": token_digest(token),
                "not_before": now_utc() - login_lifetime(),
            },
        ).first()
    if row is None or row.password_digest != row.User.password_digest():
        forget_ended_login()
        return None
    row.User.session_token = token
    return row.User


def forget_ended_login() -> None:
    """Drop what names an ended login from this browser's cookies.

    Otherwise every later page would look it up again, twice (the session's
    copy, then the remember-me cookie's), and mark itself private.
    """
    session.pop("_user_id", None)
    if login_is_remembered():
        session["_remember"] = "clear"  # Flask-Login deletes the cookie from the browser

"""Password-reset links: a signed, time-limited token, and the mail that carries it.

The token is signed with SECRET_KEY (itsdangerous, which Flask uses for its
own session cookie), so nobody can make one for another user; it expires after
RESET_TOKEN_MAX_AGE seconds; and it carries a digest of the current password
hash, so it stops working as soon as it has been used once.
"""

from flask import current_app, render_template, url_for
from flask_babel import _, force_locale, get_locale
from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.extensions import db
from app.mail import MailSettings, build_message, log, send_in_background
from app.models import User


def _serializer() -> URLSafeTimedSerializer:
    # The salt keeps these tokens apart from anything else signed with the key.
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="password-reset")


def reset_token(user: User) -> str:
    return _serializer().dumps({"id": user.id, "pw": user.password_digest()})


def user_from_reset_token(token: str) -> User | None:
    """The user a valid, unexpired, unused token was made for, else None."""
    try:
        data = _serializer().loads(token, max_age=current_app.config["RESET_TOKEN_MAX_AGE"])
    except BadSignature:  # tampered with, or expired (SignatureExpired is a BadSignature)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("id"), int):
        return None
    user = db.session.get(User, data["id"])
    if user is None or data.get("pw") != user.password_digest():
        return None  # the password was changed since: the link was used already
    return user


def external_url(endpoint: str, **values) -> str:
    """A full URL for a mail, on BASE_URL when it is set.

    Without it, Flask takes the host from the request's Host header, which
    the client chooses: someone asking for a reset of *your* account with
    ``Host: evil.example`` would get you a genuine mail whose link hands your
    token to evil.example.
    """
    base_url = current_app.config["BASE_URL"]
    if base_url:
        return base_url.rstrip("/") + url_for(endpoint, **values)
    return url_for(endpoint, _external=True, **values)


def send_password_reset_email(user: User) -> None:
    """Mail `user` a reset link, in the background; a failure is only logged.

    The person asking sees the same page whether or not this works, as they
    do whether or not the address has an account.
    """
    settings = MailSettings.from_config(current_app.config)
    if settings is None:
        log.warning("Password reset for user %s not mailed: mail is off", user.id)
        return
    link = external_url("auth.reset_password_link", token=reset_token(user))
    minutes = current_app.config["RESET_TOKEN_MAX_AGE"] // 60
    context = {"user": user, "link": link, "minutes": minutes}
    # In the language the account's owner chose, if they did; else in the
    # language of the page the link was asked for on.
    with force_locale(user.locale or get_locale()):
        message = build_message(
            settings,
            [user.email],
            _("Reset your password"),
            render_template("email/reset_password.txt", **context),
            render_template("email/reset_password.html", **context),
        )
    send_in_background(settings, message)

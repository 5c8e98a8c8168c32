"""Links sent by mail: password resets, and confirming a new email address.

Each link carries a signed, time-limited token, and a mail carries the link.

A reset token is signed with SECRET_KEY (itsdangerous, which Flask uses for
its own session cookie), so nobody can make one for another user; it expires
after RESET_TOKEN_MAX_AGE seconds; and it carries a digest of the current
password hash, so it stops working as soon as it has been used once, and of
the current address, so that a link mailed to an address the account has
left behind stops working too.

An email-change token names the account and the new address, which the
account keeps as its `pending_email` until the link is used: it works for
that address only, so once (confirming clears it), and only for the latest
address asked for (a typo corrected at once leaves no live link behind). It
carries a digest of the password too: a password changed since (an account
taken back from whoever asked for the change) kills it.

Asking for a link must not tell anyone who has an account: not by what the
page says, and not by how long it takes. So the request does the same work
whatever address was typed: it decides where the link may point and queues a
job with the address. The outbox thread (app/mail.py) then looks the account
up, makes the token and writes the mail, or does nothing if there is no such
account, after the answer has gone.
"""

import hashlib
import re
from email.message import EmailMessage
from functools import partial

from flask import Flask, current_app, render_template, request, url_for
from flask_babel import _, force_locale
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from app.database import database_failure, is_unavailable
from app.extensions import db
from app.i18n import current_language
from app.mail import MailSettings, build_message, deliver, log, outbox
from app.models import MAX_ID, User

# A Host header that names the machine the request came in on, with any port.
# Exactly these: "localhost." or "localhost.evil.example" are other hosts.
THIS_MACHINE = re.compile(r"(localhost|127\.0\.0\.1|\[::1\])(:[0-9]+)?", re.IGNORECASE)


def _serializer(purpose: str = "password-reset") -> URLSafeTimedSerializer:
    # The salt keeps each kind of token apart from anything else signed with the key.
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=purpose)


def reset_token(user: User) -> str:
    return _serializer().dumps(
        {"id": user.id, "pw": user.password_digest(), "to": _digest(user.email_key)}
    )


def user_from_reset_token(token: str) -> User | None:
    """The user a valid, unexpired, unused token was made for, else None."""
    try:
        data = _serializer().loads(token, max_age=current_app.config["RESET_TOKEN_MAX_AGE"])
    except BadSignature:  # tampered with, or expired (SignatureExpired is a BadSignature)
        return None
    if not names_a_user_id(data):
        return None
    user = db.session.get(User, data["id"])
    if user is None or data.get("pw") != user.password_digest():
        return None  # the password was changed since: the link was used already
    if data.get("to") != _digest(user.email_key):
        return None  # mailed to an address the account no longer has
    return user


def email_change_token(user: User, new_email: str) -> str:
    return _serializer("email-change").dumps(
        {"id": user.id, "email": new_email, "pw": user.password_digest()}
    )


def email_change_from_token(token: str) -> tuple[User, str] | None:
    """The user and new address a valid, unexpired, unused token was made for, else None."""
    max_age = current_app.config["EMAIL_CHANGE_TOKEN_MAX_AGE"]
    try:
        data = _serializer("email-change").loads(token, max_age=max_age)
    except BadSignature:
        return None
    if not names_a_user_id(data):
        return None
    user = db.session.get(User, data["id"])
    if (
        user is None
        or user.pending_email is None
        or data.get("email") != user.pending_email  # used, or another address asked for since
        or data.get("pw") != user.password_digest()  # the password changed since
    ):
        return None
    return user, user.pending_email


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def names_a_user_id(data: object) -> bool:
    """True if a token's data is a dict whose "id" could be a user's.

    Only our own signed tokens get this far, but an id out of the column's
    range would make the lookup fail with a 500 instead of a refusal.
    """
    user_id = data.get("id") if isinstance(data, dict) else None
    return type(user_id) is int and 1 <= user_id <= MAX_ID


def link_base() -> str | None:
    """Where links in a mail about this request start ("https://blog.example.com/"),
    or None if no address can be trusted.

    Flask builds external URLs from the request's Host header, which the
    client chooses: someone asking for a reset of *your* account with
    ``Host: evil.example`` would get you a genuine mail whose link hands your
    token to evil.example. So the request's own address is used only when
    Flask has checked its host against TRUSTED_HOSTS (refusing others with a
    400), or when it names this machine: that keeps `flask run` and a first
    test of a new server working, and a forged ``Host: localhost`` only
    points the victim at their own computer. BASE_URL, when set, wins.
    """
    config = current_app.config
    if config["BASE_URL"]:
        return config["BASE_URL"]
    if config["TRUSTED_HOSTS"] is not None or THIS_MACHINE.fullmatch(request.host):
        return request.url_root
    return None


def link_base_or_warn(mail: str) -> str | None:
    """`link_base()`, or None after logging why `mail` ("Password reset") can't be sent."""
    base = link_base()
    if base is None:
        log.warning(
            "%s not mailed: the request was addressed to host %r, which any client can "
            "forge, so a link on it could hand the token to someone else. Set BASE_URL to "
            "the site's address, or TRUSTED_HOSTS to the host names it serves.",
            mail,
            # The header as sent: request.host is "" for one Werkzeug finds malformed.
            request.headers.get("Host", ""),
        )
    return base


def send_email_change_link(settings: MailSettings, user: User, new_email: str) -> bool:
    """Make `new_email` the address `user` waits to confirm (and commit), and
    mail it the link that confirms it, in the background.

    :return: False, after logging why, if no link could be made (see `link_base`).
    """
    base = link_base_or_warn("Email change confirmation")
    if base is None:
        return False
    user.pending_email = new_email  # any link mailed before stops working
    db.session.commit()
    # A request addressed to the trusted base, as the outbox thread makes one
    # for a reset link, so that the link names the site's real address.
    with current_app.test_request_context(base_url=base):
        token = email_change_token(user, new_email)
        link = url_for("auth.confirm_email_link", token=token, _external=True)
    hours = current_app.config["EMAIL_CHANGE_TOKEN_MAX_AGE"] // 3600
    context = {"user": user, "new_email": new_email, "link": link, "hours": hours}
    message = build_message(
        settings,
        [new_email],
        _("Confirm your new email address"),
        render_template("email/confirm_email.txt", **context),
        render_template("email/confirm_email.html", **context),
    )
    outbox.submit(partial(deliver, settings, message))
    return True


def send_password_reset_email(email: str) -> None:
    """Mail a reset link to the account with this address, if there is one, in the background.

    The person asking sees the same page whatever happens here: whether the
    address has an account, whether mail is on, whether the link could be
    built, whether the mail gets through. Only the log tells the admin.
    """
    settings = MailSettings.from_config(current_app.config)
    if settings is None:
        log.warning("Password reset not mailed: mail is off (MAIL_SERVER is not set)")
        return
    base = link_base_or_warn("Password reset")
    if base is None:
        return
    app = current_app._get_current_object()  # the app itself, for the outbox thread
    # The page's language goes along, for an account whose owner never chose one.
    outbox.submit(partial(mail_reset_link, app, settings, email, current_language(), base))


def mail_reset_link(
    app: Flask, settings: MailSettings, email: str, language: str, base: str
) -> None:
    """Look the account up and mail it a reset link; the outbox thread runs this."""
    try:
        message = write_reset_mail(app, settings, email, language, base)
    except (OperationalError, PoolTimeout) as error:
        if isinstance(error, OperationalError) and not is_unavailable(error):
            raise  # a bug (a missing table...): the outbox logs it with its traceback
        # An outage, told apart and logged as app/errors.py does for requests:
        # one line on the app's logger, without a traceback. ERROR, not
        # WARNING: someone asked for a mail that will never come, so the admins
        # should hear of it, and ERROR is what reaches them. The message is
        # fixed, so every occurrence has one fingerprint and storm control
        # mails an outage once per window, however many resets it stops.
        app.logger.error(
            "Password reset not mailed: the database is unavailable: %s", database_failure(error)
        )
        return
    if message is not None:
        deliver(settings, message)


def write_reset_mail(
    app: Flask, settings: MailSettings, email: str, language: str, base: str
) -> EmailMessage | None:
    """The reset mail for the account with this address; None if there is none.

    The outbox thread has no request, and `url_for` and `render_template`
    need one: `test_request_context` makes one up, addressed to `base`, as
    Flask's quickstart does to build URLs outside a request. It is never
    dispatched, and it has ended before an outage is logged, so that the
    error mail doesn't describe it as a visitor's request.
    """
    with app.test_request_context(base_url=base):
        user = db.session.scalar(User.select_by_email(email))
        if user is None:
            return None  # nobody to mail; the person asking was told the same as if there were
        link = url_for("auth.reset_password_link", token=reset_token(user), _external=True)
        context = {"user": user, "link": link, "minutes": app.config["RESET_TOKEN_MAX_AGE"] // 60}
        # In the language the account's owner chose, if they did; else in the
        # language of the page the link was asked for on.
        with force_locale(user.locale or language):
            return build_message(
                settings,
                [user.email],
                _("Reset your password"),
                render_template("email/reset_password.txt", **context),
                render_template("email/reset_password.html", **context),
            )

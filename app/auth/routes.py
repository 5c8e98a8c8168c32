"""The auth blueprint's views: register, log in, log out (of this browser or of
all the others), reset a forgotten password; and, logged in, change your
password or email address, or delete your account. Each form is handled the
usual way (validate, do the work, commit, flash, redirect). And `login_first`,
where Flask-Login sends a visitor who must log in (`create_app` registers it).
"""

from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import _, ngettext
from flask_login import current_user, login_required, login_url
from sqlalchemy.exc import IntegrityError

from app.auth.email import (
    email_change_from_token,
    send_email_change_link,
    send_password_reset_email,
    user_from_reset_token,
)
from app.auth.forms import (
    EMAIL_TAKEN,
    ChangeEmailForm,
    ChangePasswordForm,
    DeleteAccountForm,
    LoginForm,
    RegistrationForm,
    ResetPasswordForm,
    ResetPasswordRequestForm,
)
from app.auth.sessions import (
    end_other_sessions,
    end_session,
    login_is_remembered,
    start_session,
)
from app.extensions import db, login_manager
from app.forms import commit_or_show_conflict
from app.mail import MailSettings
from app.models import User, password_matches
from app.redirects import page_before, safe_next_url
from app.security import (
    count_against_password_checks,
    limit_auth_attempts,
    limit_password_checks,
    limit_registrations,
    login_failed,
)

bp = Blueprint("auth", __name__)


def login_first():
    """Send a visitor who must log in to the login page, and back afterwards.

    Flask-Login's default handler sends them back to the URL they asked for,
    which for a form's POST (follow, unfollow) is a URL that only accepts
    POST: after logging in, the browser would GET it and meet a 405. Those go
    back to the page the form was on instead.
    """
    flash(login_manager.login_message, login_manager.login_message_category)
    next_url = request.full_path.rstrip("?") if request.method == "GET" else page_before()
    return redirect(login_url(login_manager.login_view, next_url=next_url))


@bp.route("/login", methods=["GET", "POST"])
@limit_auth_attempts(account_field="username", count_if=login_failed)
def login():
    """Log a user in, then send them back where they were going."""
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.scalar(User.select_by_username(form.username.data))
        if not password_matches(user, form.password.data):
            # One message for both cases, so the form doesn't reveal who has an account.
            flash(_("Invalid username or password."), "danger")
        else:
            start_session(user, remember=form.remember_me.data)
            return redirect(safe_next_url(request.args.get("next")) or url_for("main.index"))
    return render_template("auth/login.html", title=_("Log in"), form=form)


@bp.route("/logout", methods=["POST"])
def logout():
    """Log the current user out.

    POST only, so that no link or image on another site can log people out;
    the CSRF token is checked by CSRFProtect before this view runs.
    """
    end_session()
    flash(_("You have been logged out."), "info")
    return redirect(url_for("main.index"))


@bp.route("/logout_elsewhere", methods=["POST"])
@login_required
def logout_elsewhere():
    """Log the current user out of every other browser they are logged in on."""
    count = end_other_sessions(current_user)
    flash(
        ngettext(
            "You have been logged out of %(num)d other browser.",
            "You have been logged out of %(num)d other browsers.",
            count,
        ),
        "info",
    )
    return redirect(url_for("user.edit_profile"))


@bp.route("/register", methods=["GET", "POST"])
@limit_registrations
def register():
    """Create an account."""
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = RegistrationForm()
    if form.validate_on_submit():
        user = User(username=form.username.data, email=form.email.data)
        user.set_password(form.password.data)
        db.session.add(user)
        if commit_or_show_conflict(form):
            flash(_("Congratulations, you are now a registered user! Please sign in."), "success")
            return redirect(url_for("auth.login"))
    # Telling that an address has an account counts against the rate limit
    # on registering (app/security.py's registration_counts).
    g.told_address_is_taken = EMAIL_TAKEN in form.email.errors
    return render_template("auth/register.html", title=_("Register"), form=form)


@bp.route("/reset_password_request", methods=["GET", "POST"])
@limit_auth_attempts(account_field="email")
def reset_password_request():
    """Mail a password-reset link to an account's address."""
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    form = ResetPasswordRequestForm()
    if form.validate_on_submit():
        # No lookup here: the outbox looks the address up after the answer has
        # gone, so this request takes as long with an account as without one.
        send_password_reset_email(form.email.data)
        # The same answer either way, so the form doesn't reveal who has an account.
        flash(_("If that address has an account, a mail with a reset link is on its way."), "info")
        return redirect(url_for("auth.login"))
    return render_template(
        "auth/reset_password_request.html", title=_("Reset your password"), form=form
    )


@bp.route("/reset_password/<token>")
def reset_password_link(token: str):
    """Open the link from a reset mail, then go on without the token in the address.

    Keeping it in the session instead means it isn't written to the access
    log again, nor sent in the Referer header by the pages that follow.
    """
    session["reset_token"] = token
    return redirect(url_for("auth.reset_password"))


@bp.route("/reset_password", methods=["GET", "POST"])
def reset_password():
    """Set a new password, with the link from a reset mail."""
    if current_user.is_authenticated:
        return redirect(url_for("main.index"))
    user = user_from_reset_token(session.get("reset_token", ""))
    if user is None:
        flash(_("That reset link is invalid or has expired. Please ask for a new one."), "warning")
        return redirect(url_for("auth.reset_password_request"))
    form = ResetPasswordForm()
    if form.validate_on_submit():
        user.set_password(form.password.data)
        db.session.commit()
        session.pop("reset_token")
        flash(_("Your password has been reset. You can log in with it now."), "success")
        return redirect(url_for("auth.login"))
    return render_template("auth/reset_password.html", title=_("Reset your password"), form=form)


@bp.route("/change_password", methods=["GET", "POST"])
@login_required
@limit_password_checks
def change_password():
    """Change your password; every other browser logged in as you is logged out."""
    form = ChangePasswordForm(current_user)
    if form.validate_on_submit():
        user = current_user._get_current_object()  # the User itself, not Flask-Login's proxy
        remember = login_is_remembered()
        user.set_password(form.password.data)  # ends every login of this user, this one too
        start_session(user, remember=remember)  # so this browser gets a new one (and commits)
        flash(
            _("Your password has been changed. Every other browser has been logged out."),
            "success",
        )
        return redirect(url_for("user.edit_profile"))
    return render_template("auth/change_password.html", title=_("Change password"), form=form)


@bp.route("/change_email", methods=["GET", "POST"])
@login_required
@limit_password_checks
def change_email():
    """Change your email address: once the new address confirms it, or at once if mail is off."""
    settings = MailSettings.from_config(current_app.config)
    form = ChangeEmailForm(current_user)
    if form.validate_on_submit():
        if settings is None:
            # No mail to confirm it with: the password is all the proof there is.
            current_user.email = form.email.data
            current_user.pending_email = None
            if commit_or_show_conflict(form):
                flash(_("Your email address is now %(email)s.", email=form.email.data), "success")
                return redirect(url_for("user.edit_profile"))
        elif send_email_change_link(settings, current_user._get_current_object(), form.email.data):
            # Each mail counts against the rate limit: nobody can mail an address over and over.
            count_against_password_checks()
            flash(
                _(
                    "We have sent a link to %(email)s. Your address changes when you open it.",
                    email=form.email.data,
                ),
                "info",
            )
            return redirect(url_for("user.edit_profile"))
        else:
            flash(_("The confirmation mail could not be sent. Please try again later."), "danger")
    if EMAIL_TAKEN in form.email.errors:
        count_against_password_checks()  # it told that an address has an account
    return render_template(
        "auth/change_email.html", title=_("Change email"), form=form, mail_is_on=bool(settings)
    )


@bp.route("/confirm_email/<token>")
def confirm_email_link(token: str):
    """Open the link from a confirmation mail, then go on without the token in the
    address (as `reset_password_link` does)."""
    session["email_change_token"] = token
    return redirect(url_for("auth.confirm_email"))


@bp.route("/confirm_email", methods=["GET", "POST"])
def confirm_email():
    """Ask to confirm a new email address (GET), then make it the account's (POST).

    A button, not the link alone: mail systems open the links in a mail to
    check them for malware, and that visit must not change anything.
    """
    found = email_change_from_token(session.get("email_change_token", ""))
    if found is None:
        flash(_("That confirmation link is invalid, used or expired."), "warning")
        return redirect(url_for("main.index"))
    user, new_email = found
    if request.method == "GET":
        return render_template(
            "auth/confirm_email.html",
            title=_("Confirm your new email address"),
            user=user,
            new_email=new_email,
        )
    user.email = new_email
    user.pending_email = None
    try:
        db.session.commit()
    except IntegrityError:
        # Someone registered with the address (or changed theirs to it) since
        # the mail was sent: the unique constraint on email_key refused it.
        db.session.rollback()
        flash(
            _("Another account uses %(email)s now. Your address has not changed.", email=new_email),
            "danger",
        )
        return redirect(url_for("main.index"))
    session.pop("email_change_token")
    flash(_("Your email address is now %(email)s.", email=new_email), "success")
    return redirect(url_for("main.index"))


@bp.route("/delete_account", methods=["GET", "POST"])
@login_required
@limit_password_checks
def delete_account():
    """Delete your account, with your posts and follows, for good."""
    form = DeleteAccountForm(current_user)
    if form.validate_on_submit():
        current_user.delete_account()
        db.session.commit()
        end_session()
        flash(_("Your account and your posts have been deleted. Goodbye!"), "info")
        return redirect(url_for("main.index"))
    return render_template("auth/delete_account.html", title=_("Delete account"), form=form)

"""Form pieces shared by several blueprints: the base form, username rules
and the empty form.

Registration (auth) and profile editing (user) accept the same usernames, so
the rules live here once instead of in two blueprints that must agree.
"""

from flask import request
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy.exc import IntegrityError
from wtforms import SubmitField
from wtforms.validators import DataRequired, Length, Regexp

from app.extensions import db
from app.models import USERNAME_MAX_LENGTH, USERNAME_MIN_LENGTH, User, clean_name

USERNAME_TAKEN = _l("Please use a different username.")


class Form(FlaskForm):
    """The base of every form in the blog: its fields come from the form body only.

    Flask-WTF also fills fields from uploaded files and from JSON bodies. None
    of our forms takes either, and a file, a number or a list where a field
    expects text fails inside the validators: a 500 for anyone with curl.
    """

    def __init__(self, *args, **kwargs):
        if not args and "formdata" not in kwargs:
            kwargs["formdata"] = request.form if request.method == "POST" else None
        super().__init__(*args, **kwargs)


def normalize_name(value: str | None) -> str | None:
    """Form filter: tidy a name or address with `app.models.clean_name`.

    An empty or missing value (a GET has none) is passed through for the validators.
    """
    return clean_name(value) if value else value


username_validators = [
    DataRequired(),
    Length(min=USERNAME_MIN_LENGTH, max=USERNAME_MAX_LENGTH),
    # Letters (any script), digits, dot, dash and underscore: a name is part of
    # the profile URL, so no slashes, spaces or control characters.
    Regexp(r"^[\w.-]+$", message=_l("Use only letters, digits, dots, dashes and underscores.")),
]


def username_is_taken(username: str) -> bool:
    """Tell whether another account already uses this name, ignoring case."""
    return db.session.scalar(User.by_username(username)) is not None


class EmptyForm(Form):
    """A form with only a CSRF token and a button, for POST-only actions
    (follow, unfollow, log out)."""

    submit = SubmitField(_l("Submit"))


def commit_or_show_conflict(form: FlaskForm) -> bool:
    """Commit the session; on a unique-constraint clash show it on the form.

    The form's ``validate_<field>`` checks run before the commit, but two
    requests can pass them at the same moment and race to commit the same
    username. The unique index lets only one win; the loser gets an
    IntegrityError. We roll back (the session is unusable until we do, which
    is what broke the 500 page in the classic tutorial bug) and validate again: the
    winner's row is committed now, so the same check that would have caught it
    puts "Please use a different username." on the form.

    :return: True if the commit went through, False if the form now has errors.
    :raise IntegrityError: if validation still passes, i.e. a constraint the
        form knows nothing about failed; that is a bug, and a 500 is right.
    """
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        if form.validate():
            raise
        return False
    return True

"""Form pieces shared by several blueprints: the base form, username rules,
and the commit that turns a lost race for a name into a form error.

Registration (auth) and profile editing (user) accept the same usernames, so
the rules live here once instead of in two blueprints that must agree. The
profile form edits a name someone already has: it keeps it in
`original_username`, and the rules below let an account keep its own name.
"""

from flask import request
from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from wtforms import Field, ValidationError
from wtforms.validators import DataRequired, Length, Regexp

from app.extensions import db
from app.models import USERNAME_MAX_LENGTH, USERNAME_MIN_LENGTH, User, name_key, stored_name
from app.usernames import lower_skeleton, mixes_scripts, upper_skeleton

USERNAME_TAKEN = _l("Please use a different username.")
USERNAME_MIXES_SCRIPTS = _l(
    "Use letters from one writing system only, not a mix such as Latin and Cyrillic."
)
USERNAME_LOOKS_TAKEN = _l(
    "This username looks too much like an existing one. Please use a different username."
)


class BaseForm(FlaskForm):
    """The base of every form in the blog: its fields come from the form body only.

    Flask-WTF also fills fields from uploaded files and from JSON bodies. None
    of our forms takes either, and a file, a number or a list where a field
    expects text fails inside the validators: a 500 for anyone with curl.
    """

    def __init__(self, *args, **kwargs):
        if not args and "formdata" not in kwargs:
            kwargs["formdata"] = request.form if request.method == "POST" else None
        super().__init__(*args, **kwargs)


def stored_name_filter(value: str | None) -> str | None:
    """Form filter: turn a typed name or address into `app.models.stored_name`'s form.

    An empty or missing value (a GET has none) is passed through for the validators.
    """
    return stored_name(value) if value else value


def is_own_name(form: FlaskForm, username: str) -> bool:
    """Tell whether `username` is the name the form is editing, in any case."""
    original = getattr(form, "original_username", None)
    return original is not None and name_key(username) == name_key(original)


def one_script(form: FlaskForm, field: Field) -> None:
    """Validator: refuse a name that mixes scripts (app/usernames.py explains why).

    Skipped when the name is refused already (one clear message) and when an
    account keeps its own: a name registered before this rule stays usable.
    """
    if field.errors or is_own_name(form, field.data):
        return
    if mixes_scripts(field.data):
        raise ValidationError(USERNAME_MIXES_SCRIPTS)


def not_a_look_alike(form: FlaskForm, field: Field) -> None:
    """Validator: refuse a name that looks like another account's (see `username_looks_taken`).

    Skipped as `one_script` is, so that two accounts whose names looked alike
    before this rule can both still save their profiles.
    """
    if field.errors or is_own_name(form, field.data):
        return
    if username_looks_taken(field.data, getattr(form, "original_username", None)):
        raise ValidationError(USERNAME_LOOKS_TAKEN)


username_validators = [
    DataRequired(),
    Length(min=USERNAME_MIN_LENGTH, max=USERNAME_MAX_LENGTH),
    # Letters (any script), digits, dot, dash and underscore: a name is part of
    # the profile URL, so no slashes, spaces or control characters.
    Regexp(r"^[\w.-]+$", message=_l("Use only letters, digits, dots, dashes and underscores.")),
    one_script,
    not_a_look_alike,
]


def username_is_taken(username: str) -> bool:
    """Tell whether another account already uses this name, ignoring case."""
    return db.session.scalar(User.select_by_username(username)) is not None


def username_looks_taken(username: str, own_username: str | None = None) -> bool:
    """Tell whether another account's name looks like this one: the same skeleton
    in small letters or in capitals (app/usernames.py).

    Two names are left out: this very name in another case, which is
    `username_is_taken`'s to refuse with its own message, and `own_username`,
    the name being edited, since looking like yourself is no imitation.

    The skeleton columns are indexed but not unique, so two people registering
    look-alikes at the same moment could both succeed; only the exact name
    (username_key) has a constraint that settles races.
    """
    key = name_key(username)
    not_counted = [key] if own_username is None else [key, name_key(own_username)]
    look_alike = (
        select(User.id)
        .where(
            or_(
                User.username_lower_skeleton == lower_skeleton(key),
                User.username_upper_skeleton == upper_skeleton(key),
            ),
            User.username_key.not_in(not_counted),
        )
        .limit(1)
    )
    return db.session.scalar(look_alike) is not None


def commit_or_show_conflict(form: FlaskForm) -> bool:
    """Commit the session; on a unique-constraint clash show it on the form.

    This is where the blog ends the duplicate-username bug, the one the Flask
    Mega-Tutorial's chapter on error handling starts from: a profile editor
    that commits a new username unchecked, so renaming "admin" to the taken
    "admin1" fails the commit with an IntegrityError, a 500. Worse, a custom
    500 page then crashes as well unless something rolls back first: its
    navigation reads `current_user.username` from a session that refuses
    every query after a failed flush. Here the forms check the name first
    (``validate_username``), the 500 handler rolls back before anything else
    (app/errors.py), and this function handles what a check can't see:

    Two requests can pass the form's checks at the same moment and race to
    commit the same username. The unique index lets only one win; the loser
    gets an IntegrityError. We roll back (the session is unusable until we do)
    and validate again: the winner's row is committed now, so the same check
    that would have caught it puts "Please use a different username." on the form.

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

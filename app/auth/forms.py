"""The auth blueprint's forms: log in, register, ask for a reset link, set a new
password; and, for a logged-in user, change the password or the email address,
or delete the account.

The username rules come from app/forms.py, which profile editing shares; the
email and password rules are written once below for the forms that use each,
so their limits can't drift apart. The last three forms ask for the current
password (`CurrentPasswordForm`): whoever finds a browser left logged in can
read the blog as its owner, but not take the account over or delete it.
"""

from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, PasswordField, StringField, SubmitField, ValidationError
from wtforms.validators import DataRequired, Email, EqualTo, Length

from app.extensions import db
from app.forms import (
    USERNAME_TAKEN,
    BaseForm,
    stored_name_filter,
    username_is_taken,
    username_validators,
)
from app.models import EMAIL_MAX_LENGTH, USERNAME_MAX_LENGTH, User, name_key
from app.security import count_against_password_checks

EMAIL_TAKEN = _l("Please use a different email address.")
WRONG_PASSWORD = _l("That isn't your current password.")
SAME_EMAIL = _l("That is your address already.")

# Not a column (only the hash is stored), but hashing a megabyte-long password
# on every attempt is an easy way to tie up a worker.
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 128

# An email address: when registering, and when asking for a reset link. Our own
# message, in the words the form's label uses ("Email"), in every language.
email_validators = [
    DataRequired(),
    Length(max=EMAIL_MAX_LENGTH),
    Email(message=_l("Please enter a valid email address.")),
]

# Choosing a password: when registering, resetting it and changing it.
new_password_validators = [
    DataRequired(),
    Length(min=PASSWORD_MIN_LENGTH, max=PASSWORD_MAX_LENGTH),
]
repeat_password_validators = [
    DataRequired(),
    EqualTo("password", message=_l("The passwords don't match.")),
]


class LoginForm(BaseForm):
    username = StringField(
        _l("Username"),
        validators=[DataRequired(), Length(max=USERNAME_MAX_LENGTH)],
        filters=[stored_name_filter],
    )
    password = PasswordField(
        _l("Password"), validators=[DataRequired(), Length(max=PASSWORD_MAX_LENGTH)]
    )
    remember_me = BooleanField(_l("Remember me"))
    submit = SubmitField(_l("Log in"))


class RegistrationForm(BaseForm):
    username = StringField(
        _l("Username"), validators=username_validators, filters=[stored_name_filter]
    )
    email = StringField(
        _l("Email"),
        validators=email_validators,
        filters=[stored_name_filter],
    )
    password = PasswordField(_l("Password"), validators=new_password_validators)
    password2 = PasswordField(_l("Repeat password"), validators=repeat_password_validators)
    submit = SubmitField(_l("Register"))

    def validate_username(self, field):
        if username_is_taken(field.data):
            raise ValidationError(USERNAME_TAKEN)

    def validate_email(self, field):
        refuse_taken_email(field.data)


def refuse_taken_email(email: str) -> None:
    """Validator body: refuse an address another account uses, ignoring case.

    This tells whoever registers that an address has an account, which the
    login and reset forms never do. Hiding it would protect no one: if the
    form pretended to succeed, logging in to the new account would work only
    if the address had been free. Only confirming every address by mail
    before the account exists would close that, and mail is optional here.
    So the form says it plainly, for the person who forgot they had an
    account, and the rate limits (app/security.py) slow down a machine
    testing addresses.
    """
    if db.session.scalar(User.select_by_email(email)) is not None:
        raise ValidationError(EMAIL_TAKEN)


class ResetPasswordRequestForm(BaseForm):
    email = StringField(
        _l("Email"),
        validators=email_validators,
        filters=[stored_name_filter],
    )
    submit = SubmitField(_l("Send me a reset link"))


class ResetPasswordForm(BaseForm):
    password = PasswordField(_l("New password"), validators=new_password_validators)
    password2 = PasswordField(_l("Repeat password"), validators=repeat_password_validators)
    submit = SubmitField(_l("Set password"))


class CurrentPasswordForm(BaseForm):
    """A form that a logged-in user confirms with their current password.

    Given the user it acts for (`user`), as the profile form is given the
    name it edits.
    """

    current_password = PasswordField(
        _l("Current password"), validators=[DataRequired(), Length(max=PASSWORD_MAX_LENGTH)]
    )

    def __init__(self, user: User, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user

    def validate_current_password(self, field):
        if field.errors:
            return  # too long: not worth hashing (see PASSWORD_MAX_LENGTH)
        if not self.user.check_password(field.data):
            count_against_password_checks()  # a guess, for the rate limit (app/security.py)
            raise ValidationError(WRONG_PASSWORD)


class ChangePasswordForm(CurrentPasswordForm):
    password = PasswordField(_l("New password"), validators=new_password_validators)
    password2 = PasswordField(_l("Repeat password"), validators=repeat_password_validators)
    submit = SubmitField(_l("Change password"))


class ChangeEmailForm(CurrentPasswordForm):
    email = StringField(
        _l("New email"),
        validators=email_validators,
        filters=[stored_name_filter],
    )
    submit = SubmitField(_l("Change email"))

    def validate_email(self, field):
        if field.data == self.user.email:
            raise ValidationError(SAME_EMAIL)
        if name_key(field.data) != self.user.email_key:  # (your own, in another case, is yours)
            refuse_taken_email(field.data)


class DeleteAccountForm(CurrentPasswordForm):
    submit = SubmitField(_l("Delete my account"))

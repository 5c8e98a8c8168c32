"""The user blueprint's one form: editing your profile, your username and about-me text.

It accepts the usernames registering does (the rules are in app/forms.py), and
is given the name it edits (`original_username`), which is yours to keep.
"""

from flask_babel import lazy_gettext as _l
from wtforms import StringField, SubmitField, TextAreaField, ValidationError
from wtforms.validators import Length

from app.forms import (
    USERNAME_TAKEN,
    BaseForm,
    stored_name_filter,
    username_is_taken,
    username_validators,
)
from app.models import ABOUT_ME_MAX_LENGTH, name_key


class EditProfileForm(BaseForm):
    username = StringField(
        _l("Username"), validators=username_validators, filters=[stored_name_filter]
    )
    about_me = TextAreaField(_l("About me"), validators=[Length(max=ABOUT_ME_MAX_LENGTH)])
    submit = SubmitField(_l("Save"))

    def __init__(self, original_username: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.original_username = original_username

    def validate_username(self, field):
        # Keeping your own name, or changing only its case, is not a clash.
        # The same comparison as the unique constraint's, so the two always agree.
        changed = name_key(field.data) != name_key(self.original_username)
        if changed and username_is_taken(field.data):
            raise ValidationError(USERNAME_TAKEN)

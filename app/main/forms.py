"""The main blueprint's one form: writing a post on the home page.

Its length limit is the column's own constant (app/models.py), so a post the
form accepts always fits in the database.
"""

from flask_babel import lazy_gettext as _l
from wtforms import SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length

from app.forms import BaseForm
from app.models import POST_MAX_LENGTH


def strip(value: str | None) -> str | None:
    return value.strip() if value else value


class PostForm(BaseForm):
    post = TextAreaField(
        _l("Say something"),
        validators=[DataRequired(), Length(max=POST_MAX_LENGTH)],
        filters=[strip],
    )
    submit = SubmitField(_l("Post"))

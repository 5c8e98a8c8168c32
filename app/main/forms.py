from flask_babel import lazy_gettext as _l
from wtforms import SubmitField, TextAreaField
from wtforms.validators import DataRequired, Length

from app.forms import Form
from app.models import POST_MAX_LENGTH


def strip(value: str | None) -> str | None:
    return value.strip() if value else value


class PostForm(Form):
    post = TextAreaField(
        _l("Say something"),
        validators=[DataRequired(), Length(max=POST_MAX_LENGTH)],
        filters=[strip],
    )
    submit = SubmitField(_l("Post"))

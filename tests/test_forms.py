"""app/forms.py, the form pieces that registration and profile editing share,
called directly inside a request context: fast and precise.

What is pinned here, and why it matters to a user:

- `BaseForm` reads its fields from the posted form only. Not from a GET (a GET
  shows the form, it submits nothing), not from uploaded files, not from a
  JSON body: a file or a JSON list where a text field is expected would
  otherwise reach the validators and end in a 500.
- `stored_name_filter` tidies what was typed (spaces, full-width letters) and
  passes an empty or missing value through for the validators to refuse.
- `username_validators`: the exact length limits, and which characters a
  name may have (a name is part of the profile's URL), with the exact message
  the form shows.
- `username_is_taken` ignores case, as the unique constraint does.
- `commit_or_show_conflict`: a clash the form can explain becomes the form's
  own error; anything else is a bug and is raised; either way the session is
  rolled back and serves the next query.

The pages that show these messages are tested in test_auth.py and test_user.py,
with `form_errors` and `alerts` from tests/pages.py: they read a page the way a
person does, so that a message is compared whole, not found as a fragment.
"""

import io

import pytest
from flask import Flask
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from werkzeug.datastructures import MultiDict
from wtforms import StringField

from app.auth.forms import RegistrationForm
from app.extensions import db
from app.forms import (
    BaseForm,
    commit_or_show_conflict,
    stored_name_filter,
    username_is_taken,
    username_validators,
)
from app.models import USERNAME_MAX_LENGTH, USERNAME_MIN_LENGTH, User, name_key
from app.user.forms import EditProfileForm
from tests.helpers import PASSWORD_HASH, add_user
from tests.pages import alerts, form_errors

REQUIRED = "This field is required."
WRONG_LENGTH = (
    f"Field must be between {USERNAME_MIN_LENGTH} and {USERNAME_MAX_LENGTH} characters long."
)
WRONG_CHARACTERS = "Use only letters, digits, dots, dashes and underscores."
USERNAME_TAKEN = "Please use a different username."
EMAIL_TAKEN = "Please use a different email address."


def test_the_page_reader_finds_each_message_under_its_field():
    """The helpers above are only worth something if they read what is there, and only that."""
    page = """
        <div class="alert alert-danger" role="alert">Invalid username or password.</div>
        <input type="hidden" name="csrf_token" value="x">
        <input class="form-control is-invalid" name="username" value="al">
        <div class="invalid-feedback d-block">Too short.</div>
        <div class="invalid-feedback d-block">Bad characters.</div>
        <textarea name="about_me">hi</textarea>
        <input name="password2"><div class="invalid-feedback">They don&#39;t match.</div>
    """
    assert form_errors(page) == {
        "username": ["Too short.", "Bad characters."],
        "password2": ["They don't match."],
    }
    assert alerts(page) == [("danger", "Invalid username or password.")]


# --- BaseForm: fields from the posted form only ---------------------------------------------


class NameForm(BaseForm):
    """A form with the username rules that registration and profile editing share."""

    username = StringField("Username", validators=username_validators, filters=[stored_name_filter])


def test_a_post_fills_the_fields_from_the_form_body(app):
    with app.test_request_context("/", method="POST", data={"username": "alice"}):
        form = NameForm()
        assert form.username.data == "alice"
        assert form.validate()


def test_a_get_reads_nothing_not_even_a_body(app):
    """A GET shows the form: whatever comes with it is not a submission."""
    with app.test_request_context("/?username=query", method="GET", data={"username": "body"}):
        assert NameForm().username.data is None
        # Values the view gives for display (edit_profile's current name) are kept.
        assert NameForm(data={"username": "shown"}).username.data == "shown"


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"username": (io.BytesIO(b"alice"), "name.txt")}},
        {"json": {"username": "alice"}},
        {"json": {"username": ["alice", "bob"]}},
    ],
    ids=["an uploaded file", "a JSON body", "a JSON list"],
)
def test_files_and_json_bodies_are_not_form_data(app, body):
    """Only a form body counts: the field stays empty and says so, no 500."""
    with app.test_request_context("/", method="POST", **body):
        form = NameForm()
        assert form.username.data is None
        assert not form.validate()
        assert form.errors == {"username": [REQUIRED]}


def test_form_data_given_by_the_caller_wins(app):
    """Passed explicitly, by position or by name, the caller's data is used, not the body's."""
    with app.test_request_context("/", method="POST", data={"username": "from-body"}):
        given = MultiDict({"username": "given"})
        assert NameForm(given).username.data == "given"
        assert NameForm(formdata=given).username.data == "given"
        assert NameForm(formdata=None).username.data is None


# --- stored_name_filter ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("  admin  ", "admin"),
        ("\uff41\uff44\uff4d\uff49\uff4e", "admin"),  # full-width letters fold to plain ones
        ("Émile", "Émile"),  # case is kept: only the key ignores it
        ("E\u0301mile", "Émile"),  # an accent typed as a separate mark is composed
        ("   ", ""),
        ("", ""),  # nothing typed: left for DataRequired to refuse
        (None, None),  # a GET: no value at all
    ],
)
def test_stored_name_filter(typed, stored):
    assert stored_name_filter(typed) == stored


# --- username_validators --------------------------------------------------------------------


def errors_for(app: Flask, username: str | None) -> dict[str, list[str]]:
    """The errors a form with the shared username rules shows for `username` (None: not sent)."""
    data = {} if username is None else {"username": username}
    with app.test_request_context("/", method="POST", data=data):
        form = NameForm()
        form.validate()
        return form.errors


@pytest.mark.parametrize(
    "username",
    [
        "a" * USERNAME_MIN_LENGTH,  # the shortest allowed
        "a" * USERNAME_MAX_LENGTH,  # the longest allowed
        "Émile",
        "Ωμέγα",  # Greek
        "Дмитрий",  # Cyrillic
        "李小龙",  # Chinese, three characters: long enough
        "user123",
        "١٢٣",  # Arabic-Indic digits are digits too
        "first.last",
        "first-last",
        "first_last",
        "._-",  # any mix of the allowed characters, even without a letter
    ],
)
def test_usernames_that_are_accepted(app, username):
    assert errors_for(app, username) == {}


@pytest.mark.parametrize(
    "username",
    ["a" * (USERNAME_MIN_LENGTH - 1), "a" * (USERNAME_MAX_LENGTH + 1), "李小", "é" * 65],
)
def test_usernames_of_the_wrong_length(app, username):
    assert errors_for(app, username) == {"username": [WRONG_LENGTH]}


@pytest.mark.parametrize(
    "username",
    [
        "first last",  # a space inside (spaces around are trimmed)
        "first/last",  # a slash would change the profile's URL
        "ab/",  # the whole name must match, not only its start...
        "/ab",  # ...nor only its end
        "first\\last",
        "first\tlast",
        "first\nlast",
        "first@last",
        "first?last",
        "first#last",
        "first%last",
        "first+last",
        "first:last",
        "first'last",
        "<script>",
        "first\u200blast",  # a zero-width space: invisible, but not a letter
        "first\x00last",
    ],
)
def test_usernames_with_other_characters_are_refused(app, username):
    assert errors_for(app, username) == {"username": [WRONG_CHARACTERS]}


def test_a_name_can_break_both_rules(app):
    assert errors_for(app, "a/") == {"username": [WRONG_LENGTH, WRONG_CHARACTERS]}


@pytest.mark.parametrize("username", [None, "", "   "], ids=["not sent", "empty", "only spaces"])
def test_a_username_is_required(app, username):
    """One message, not three: DataRequired stops the other checks."""
    assert errors_for(app, username) == {"username": [REQUIRED]}


# --- username_is_taken ----------------------------------------------------------------------


def test_username_is_taken_ignores_case_and_look_alikes(app):
    with app.app_context():
        add_user("Émile")
        for spelling in ("Émile", "émile", "ÉMILE", " Émile ", "E\u0301MILE"):
            assert username_is_taken(spelling), spelling
        for other in ("Emile", "Émil", "Émile2"):
            assert not username_is_taken(other), other


# --- commit_or_show_conflict ----------------------------------------------------------------


def insert_from_another_worker(username: str, email: str) -> None:
    """Commit a user through a connection of its own, as a second worker would.

    A Core INSERT skips the model's @validates, so it passes the keys itself.
    """
    with db.engine.begin() as connection:
        connection.execute(
            insert(User).values(
                username=username,
                username_key=name_key(username),
                email=email,
                email_key=name_key(email),
                password_hash=PASSWORD_HASH,
            )
        )


def user_rows() -> list[tuple[str, str]]:
    """(username, email) of every user, read through the session (it must be usable)."""
    return [tuple(row) for row in db.session.execute(select(User.username, User.email))]


REGISTRATION = {
    "username": "bob",
    "email": "bob@example.com",
    "password": "a-good-password",
    "password2": "a-good-password",
}


def test_a_commit_that_goes_through_returns_true(app):
    with app.test_request_context("/", method="POST", data=REGISTRATION):
        form = RegistrationForm()
        assert form.validate()
        db.session.add(User(username="bob", email="bob@example.com", password_hash=PASSWORD_HASH))
        assert commit_or_show_conflict(form) is True
        assert form.errors == {}
    # Committed, not only flushed: another connection sees it.
    with app.app_context(), db.engine.connect() as connection:
        assert connection.scalar(select(func.count()).where(User.username == "bob")) == 1


@pytest.mark.parametrize(
    ("rival", "errors"),
    [
        (("Bob", "first-bob@example.com"), {"username": [USERNAME_TAKEN]}),
        (("robert", "BOB@example.com"), {"email": [EMAIL_TAKEN]}),
    ],
    ids=["the username", "the email address"],
)
def test_a_clash_the_form_explains_becomes_its_error(app, rival, errors):
    """The form's checks found the name free; another worker committed it before us."""
    with app.test_request_context("/", method="POST", data=REGISTRATION):
        form = RegistrationForm()
        assert form.validate()
        insert_from_another_worker(*rival)
        db.session.add(User(username="bob", email="bob@example.com", password_hash=PASSWORD_HASH))

        assert commit_or_show_conflict(form) is False
        assert form.errors == errors
        # Rolled back: our user is gone from the session, which answers the next query.
        assert list(db.session.new) == []
        assert user_rows() == [rival]


def test_a_clash_the_form_cannot_explain_is_raised(app):
    """The profile form knows nothing about email addresses: a clash there is a bug."""
    with app.app_context():
        admin, other = add_user("admin"), add_user("other")
        admin_id, other_email = admin.id, other.email
    with app.test_request_context("/", method="POST", data={"username": "admin", "about_me": ""}):
        form = EditProfileForm("admin")
        assert form.validate()
        db.session.get(User, admin_id).email = other_email  # violates the unique email_key

        with pytest.raises(IntegrityError):
            commit_or_show_conflict(form)
        # The session was rolled back before raising: it serves the error page's queries.
        assert list(db.session.dirty) == []
        assert user_rows() == [("admin", "admin@example.com"), ("other", "other@example.com")]


def test_a_missing_value_is_raised_too(app):
    """A NOT NULL column the form doesn't fill (here the password hash): a bug, not a clash."""
    with app.test_request_context("/", method="POST", data=REGISTRATION):
        form = RegistrationForm()
        assert form.validate()
        db.session.add(User(username="bob", email="bob@example.com"))

        with pytest.raises(IntegrityError):
            commit_or_show_conflict(form)
        assert list(db.session.new) == []
        assert user_rows() == []

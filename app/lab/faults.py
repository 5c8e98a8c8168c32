"""Views that fail on purpose, and the naive error handler: the lab's blog only.

`app.lab.sandbox.Lab.app` adds this blueprint to the throwaway blog an
experiment runs; the learner's blog never has these routes. Each view is a
bug of the kind the guide explains, kept as small as the bug itself.
"""

from flask import Blueprint, render_template
from flask_login import current_user, login_required
from sqlalchemy import select

from app.errors import ERRORS
from app.extensions import db
from app.models import Post

bp = Blueprint("lab_faults", __name__, url_prefix="/lab-faults")


def average_words(posts: list[Post]) -> float:
    """Words per post: the bug is the missing case of no posts at all."""
    return sum(len(post.body.split()) for post in posts) / len(posts)


@bp.route("/average-words")
def average_words_page():
    """A page with an unhandled exception: the lab's accounts have no posts."""
    posts = db.session.scalars(select(Post)).all()
    return f"{average_words(posts):.1f} words per post"


@bp.route("/rename-unchecked/<username>")
@login_required
def rename_unchecked(username: str):
    """The Mega-Tutorial's bug: save a new username without checking it is free."""
    current_user.username = username
    db.session.commit()  # IntegrityError if the name is taken: the first fault
    return f"Renamed to {username}"


def naive_internal_error(error):
    """A 500 handler as many apps write it: no rollback, and a page that queries.

    The page offers the latest posts, a friendly touch; but after a failed
    flush the session refuses every query until someone rolls it back, so the
    query raises again inside the handler: the second fault. Flask then has
    no handler left, and the server sends its own bare page.
    """
    latest = db.session.scalars(select(Post).order_by(Post.timestamp.desc()).limit(3)).all()
    title, message = ERRORS[500]
    return render_template(
        "errors/500.html", status=500, title=title, message=message, latest=latest
    ), 500

"""Who may do what: the app's authorization rules, in one place.

Logging in tells the app who someone is (app/auth); these rules say what
they may do once it knows. Each rule is a plain function of the user and the
thing they want to act on, and a view calls `require` with it before changing
anything: a "no" is the 403 page. (A template shows a button only to those it
would work for, but that is a courtesy: a form can be posted by hand.)

The next rule goes here as well: editing a post, or a moderator who may
delete anyone's.
"""

from flask import abort

from app.models import Post, User


def may_delete_post(user: User, post: Post) -> bool:
    """Only a post's author may delete it."""
    return user.is_authenticated and post.user_id == user.id


def require(allowed: bool) -> None:
    """Stop the request with the 403 page unless `allowed`.

    :raise 403: (app/errors.py renders it, in the page's language).
    """
    if not allowed:
        abort(403)

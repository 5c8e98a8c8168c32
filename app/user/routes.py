"""The user blueprint's views: a profile page with its posts, the lists of a
user's followers and of the people they follow, editing your own profile, and
following or unfollowing someone (POST only, each a button on the profile page
carrying the CSRF token).
"""

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import _
from flask_login import current_user, login_required
from sqlalchemy import Select
from sqlalchemy.exc import IntegrityError

from app.database import reads_only
from app.extensions import db
from app.forms import commit_or_show_conflict
from app.models import Post, User
from app.pagination import (
    FOLLOWERS_NEWEST_FIRST,
    FOLLOWING_NEWEST_FIRST,
    ListOrder,
    paginate,
)
from app.user.forms import EditProfileForm

bp = Blueprint("user", __name__)


@bp.route("/user/<username>")
@reads_only
def profile(username: str):
    """Show a user's profile and their posts, newest first."""
    viewer_id = current_user.id if current_user.is_authenticated else None
    row = db.session.execute(User.select_profile(username, viewer_id)).first()
    if row is None:
        abort(404)
    user, follower_count, following_count, followed_by_viewer = row
    page = paginate(Post.select_by_author(user), current_app.config["POSTS_PER_PAGE"])
    return render_template(
        "user/profile.html",
        title=user.username,
        user=user,
        follower_count=follower_count,
        following_count=following_count,
        followed_by_viewer=followed_by_viewer,
        page=page,
    )


@bp.route("/user/<username>/followers")
@reads_only
def followers(username: str):
    """List the people following a user, the newest follow first."""
    user = db.first_or_404(User.select_by_username(username))
    title = _("People following %(username)s", username=user.username)
    return follow_list(user, user.select_followers(), FOLLOWERS_NEWEST_FIRST, title)


@bp.route("/user/<username>/following")
@reads_only
def following(username: str):
    """List the people a user follows, the newest follow first."""
    user = db.first_or_404(User.select_by_username(username))
    title = _("People %(username)s follows", username=user.username)
    return follow_list(user, user.select_following(), FOLLOWING_NEWEST_FIRST, title)


def follow_list(user: User, people: Select, order: ListOrder, title: str) -> str:
    """Render the requested page of `people`, a list of `user`'s follows sorted by `order`."""
    page = paginate(people, current_app.config["POSTS_PER_PAGE"], order)
    return render_template("user/follows.html", title=title, user=user, page=page)


@bp.route("/edit_profile", methods=["GET", "POST"])
@login_required
def edit_profile():
    """Change the logged-in user's username and about-me text."""
    form = EditProfileForm(current_user.username)
    if form.validate_on_submit():
        current_user.username = form.username.data
        current_user.about_me = form.about_me.data
        if commit_or_show_conflict(form):
            flash(_("Your changes have been saved."), "success")
            return redirect(url_for("user.edit_profile"))
    elif request.method == "GET":
        form.username.data = current_user.username
        form.about_me.data = current_user.about_me
    return render_template("user/edit_profile.html", title=_("Edit profile"), form=form)


@bp.route("/follow/<username>", methods=["POST"])
@login_required
def follow(username: str):
    """Follow a user."""
    user = db.first_or_404(User.select_by_username(username))
    # Read before the commit: if it fails, the rollback expires both users, and
    # a row deleted meanwhile can't be read again.
    follower_id, followed_id, name = current_user.id, user.id, user.username
    if followed_id == follower_id:
        flash(_("You cannot follow yourself."), "warning")
    else:
        current_user.follow(user)
        if commit_follow(follower_id, followed_id):
            flash(_("You are following %(username)s.", username=name), "success")
    return redirect(url_for("user.profile", username=name))


@bp.route("/unfollow/<username>", methods=["POST"])
@login_required
def unfollow(username: str):
    """Stop following a user."""
    user = db.first_or_404(User.select_by_username(username))
    current_user.unfollow(user)
    db.session.commit()
    flash(_("You are not following %(username)s anymore.", username=user.username), "info")
    return redirect(url_for("user.profile", username=user.username))


def commit_follow(follower_id: int, followed_id: int) -> bool:
    """Commit a follow; return whether it is in the database now.

    A double-click can send two: the second one's primary-key clash means the
    follow exists, which is what was asked. A foreign-key clash means one of
    the two accounts was deleted meanwhile (`User.delete_account`): there is
    no follow, and nobody should be told there is.
    """
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return db.session.execute(User.select_follow(follower_id, followed_id)).first() is not None
    return True

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import _
from flask_login import current_user

from app.extensions import db
from app.main.forms import PostForm
from app.models import Post, now_utc
from app.pagination import paginate

bp = Blueprint("main", __name__)


@bp.before_app_request
def record_last_seen():
    """Note when a logged-in user was last active, at most once a minute.

    Writing on every request would turn every page view into a database write
    (and on SQLite, a lock); a minute's precision is all "last seen" needs.
    """
    if request.endpoint is None or request.endpoint.endswith("static"):
        return  # static files and 404s don't need the user loaded
    now = now_utc()
    if current_user.is_authenticated and current_user.needs_last_seen_update(now):
        current_user.last_seen = now
        db.session.commit()


# url_for("main.index") builds the first rule registered, the innermost decorator: "/".
@bp.route("/index", methods=["GET", "POST"])
@bp.route("/", methods=["GET", "POST"])
def index():
    """Show the post form and the timeline; visitors get the explore page."""
    if not current_user.is_authenticated:
        return explore()
    form = PostForm()
    if form.validate_on_submit():
        db.session.add(Post(body=form.post.data, author=current_user))
        db.session.commit()
        flash(_("Your post is now live!"), "success")
        return redirect(url_for("main.index"))
    page = paginate(Post.timeline(current_user), current_app.config["POSTS_PER_PAGE"])
    return render_template("main/index.html", title=_("Home"), form=form, page=page)


@bp.route("/explore")
def explore():
    """Show every post, newest first."""
    page = paginate(Post.newest_first(), current_app.config["POSTS_PER_PAGE"])
    return render_template("main/explore.html", title=_("Explore"), page=page)

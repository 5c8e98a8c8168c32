"""The main blueprint's views: the home page (post form and timeline), explore,
deleting a post, search, the language switch and the health check; and
`record_last_seen`, which runs before every request of the app, not only this
blueprint's.
"""

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import _
from flask_login import current_user, login_required
from sqlalchemy import delete, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from app.database import database_failure, reads_only
from app.extensions import db
from app.main.forms import PostForm
from app.models import MAX_ID, POST_MAX_LENGTH, Post, now_utc
from app.pagination import paginate
from app.permissions import may_delete_post, require
from app.redirects import page_before, safe_next_url
from config import LANGUAGES

bp = Blueprint("main", __name__)


@bp.before_app_request
def record_last_seen():
    """Note when a logged-in user was last active, at most once a minute.

    Writing on every request would turn every page view into a database write
    (and on SQLite, a lock); a minute's precision is all "last seen" needs.
    """
    if request.endpoint in (None, "main.healthz") or request.endpoint.endswith("static"):
        # 404s, static files and health checks don't need the user loaded
        # (a health check must answer for the database, not fail on it).
        return
    now = now_utc()
    if current_user.is_authenticated and current_user.needs_last_seen_update(now):
        current_user.last_seen = now
        db.session.commit()


# url_for("main.index") builds the first rule registered, the innermost decorator: "/".
@bp.route("/index", methods=["GET", "POST"])
@bp.route("/", methods=["GET", "POST"])
@reads_only
def index():
    """Show the post form and the timeline; visitors get the explore page."""
    if not current_user.is_authenticated:
        return explore()
    form = PostForm()
    if form.validate_on_submit():
        db.session.add(Post(body=form.post.data, author=current_user))
        try:
            db.session.commit()
        except IntegrityError:
            # The one constraint a new post can break is its author's foreign
            # key (PostgreSQL): the account was deleted, in another tab, while
            # this was on its way (`User.delete_account`).
            db.session.rollback()
            flash(_("Your account no longer exists: the post was not saved."), "warning")
            return redirect(url_for("main.index"))
        flash(_("Your post is now live!"), "success")
        return redirect(url_for("main.index"))
    page = paginate(Post.select_timeline(current_user), current_app.config["POSTS_PER_PAGE"])
    return render_template("main/index.html", title=_("Home"), form=form, page=page)


@bp.route("/explore")
@reads_only
def explore():
    """Show every post, newest first."""
    page = paginate(Post.select_newest_first(), current_app.config["POSTS_PER_PAGE"])
    return render_template("main/explore.html", title=_("Explore"), page=page)


@bp.route(f"/post/<int(max={MAX_ID}):post_id>/delete", methods=["GET", "POST"])
@login_required
def delete_post(post_id: int):
    """Ask to confirm deleting one of your posts (GET), then delete it (POST).

    A page of its own asks, so that it works without JavaScript. Either way
    the user goes back to the page they were on (``next``).
    """
    back = safe_next_url(request.values.get("next")) or url_for("main.index")
    post = db.session.get(Post, post_id)
    if post is None:
        # Deleted in another tab, most likely: nothing is lost, so say so and go back.
        flash(_("That post no longer exists. It may have been deleted already."), "info")
        return redirect(back)
    require(may_delete_post(current_user, post))
    if request.method == "GET":
        return render_template(
            "main/delete_post.html", title=_("Delete post"), post=post, back=back
        )
    # Two tabs can both get this far: the one whose DELETE finds no row lost.
    deleted = db.session.execute(delete(Post).where(Post.id == post.id)).rowcount
    db.session.commit()
    if deleted:
        flash(_("Your post has been deleted."), "success")
    else:
        flash(_("That post no longer exists. It may have been deleted already."), "info")
    return redirect(back)


@bp.route("/search")
@reads_only
def search():
    """Show the posts that contain what was typed in the search box, newest first."""
    searched = request.args.get("q", "").strip()
    page = problem = None
    if not searched:
        problem = _("Type a word or a phrase to search the posts for.")
    elif len(searched) > POST_MAX_LENGTH:
        # No post is longer, so nothing could match: no need to ask the database.
        problem = _(
            "Search for at most %(num)d characters: no post is longer.", num=POST_MAX_LENGTH
        )
    else:
        page = paginate(
            Post.select_containing(searched),
            current_app.config["POSTS_PER_PAGE"],
            kept_args={"q": searched},
        )
    title = _("Search: %(query)s", query=searched) if searched else _("Search")
    return render_template(
        "main/search.html", title=title, search_query=searched, problem=problem, page=page
    )


@bp.route("/language/<code>", methods=["POST"])
def set_language(code: str):
    """Switch the site to another language, then go back to the same page.

    POST, with the CSRF token the navigation's form carries, so that no other
    site can switch it for you. The choice goes into the session, where every
    page reads it without the database, and for a logged-in user onto their
    account too, where the next login finds it (app/i18n.py).
    """
    if code not in LANGUAGES:
        abort(404)
    session["locale"] = code
    if not current_user.is_authenticated:
        session["locale_chosen"] = True  # logging in next saves it (app/i18n.py)
    elif current_user.locale != code:
        current_user.locale = code
        db.session.commit()
    # The form says which page it was on; the Referer is the next best guess.
    back = safe_next_url(request.form.get("next")) or page_before()
    return redirect(back or url_for("main.index"))


@bp.route("/healthz")
def healthz():
    """Tell a load balancer or monitor whether the app and its database answer."""
    try:
        if db.engine.dialect.name == "postgresql":
            # A check that hangs is as bad as a failed one: cap the query.
            db.session.execute(text("SET LOCAL statement_timeout = '2s'"))
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError as error:
        db.session.rollback()
        # A warning, not an error: monitors poll this every few seconds, and
        # the outage itself is reported (and mailed) by the pages that fail.
        current_app.logger.warning("Health check: %s", database_failure(error))
        return {"status": "unavailable", "database": "unreachable"}, 503, {"Retry-After": "30"}
    return {"status": "ok", "database": "ok"}

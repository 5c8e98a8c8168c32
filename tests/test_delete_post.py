"""Deleting your own post: the Delete link, the confirm page, the POST, and everything
that can go wrong on the way.

- The Delete link is on your own posts only, on every list of posts (your timeline,
  explore, your profile, search results), and never for a visitor; its ``next`` is
  the page it is on, a cursor page 2 included, and that is where you end up.
- The confirm page (GET) shows the post and a Cancel link back, and deletes nothing;
  the POST deletes exactly that post, and needs the form's CSRF token.
- Someone else's post is the 403 page, for GET and POST alike, and stays; a visitor
  is sent to log in first.
- A post that no longer exists (deleted in another tab, deleted by another request
  between loading it and deleting it, or never there) is a flash and a way back,
  never a 500; an id that can't be a post is the 404 page. A new post never gets
  the id of a deleted one, so a Delete left open for the old post can't delete it.
- ``next`` is checked: whatever points off the site (``//evil.example``,
  ``/\\evil.example``, a tab or newline a browser would drop...) sends you to "/",
  with the same flash as any other page would get, a post already gone included.
  Given both in the URL and in the form, the URL's is the one used (and checked).
"""

import html
import re
from datetime import timedelta
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, event, select

from app.extensions import db
from app.models import Post, User, now_utc
from tests.helpers import PASSWORD, AuthActions
from tests.pages import alerts, csrf_token, page_text

DELETED = [("success", "Your post has been deleted.")]
GONE = [("info", "That post no longer exists. It may have been deleted already.")]
HOSTILE_NEXT = [
    "//evil.example",
    "///evil.example",
    "https://evil.example",
    "https:evil.example",
    "javascript:alert(1)",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",  # browsers drop tabs and newlines: "//evil.example"
    "/\n/evil.example",
    "/\r\n/evil.example",
    " /explore",
    "evil.example",
    "//evil.example/" + "a" * 10_000,
]

# The bodies of the posts of `blog`, newest first; admin follows admin1.
ADMIN_NEW, ADMIN1_POST, ADMIN_OLD = "admin's newer post", "admin1's post", "admin's older post"


# --- Helpers ------------------------------------------------------------------------------


def add_post(username: str, body: str, minutes_ago: int) -> int:
    """Give `username` a post written `minutes_ago`; return its id (inside an app context)."""
    author = db.session.scalar(User.select_by_username(username))
    post = Post(body=body, author=author, timestamp=now_utc() - timedelta(minutes=minutes_ago))
    db.session.add(post)
    db.session.commit()
    return post.id


def post_bodies(app: Flask) -> list[str]:
    """The bodies of every post the database holds, sorted."""
    with app.app_context():
        return sorted(db.session.scalars(select(Post.body)))


def posts_shown(response) -> list[tuple[str, str | None]]:
    """The posts on a page, top to bottom: (body, the URL of its Delete link or None)."""
    assert response.status_code == 200, response.status
    shown = []
    for article in re.findall(r"<article.*?</article>", response.text, re.S):
        body = re.search(r'<p class="mb-0 text-break">(.*?)</p>', article, re.S).group(1)
        link = re.search(r'<a class="link-danger[^"]*" href="([^"]*)">Delete</a>', article)
        shown.append((html.unescape(body), html.unescape(link.group(1)) if link else None))
    return shown


def delete_link(post_id: int, next_url: str) -> tuple[str, dict[str, list[str]]]:
    """What a Delete link must point to, as (path, query): the post's delete page, and
    the page it is on as ``next``."""
    return f"/post/{post_id}/delete", {"next": [next_url]}


def link_parts(url: str) -> tuple[str, dict[str, list[str]]]:
    parts = urlsplit(url)
    return parts.path, parse_qs(parts.query)


def confirm_form(response, post_id: int) -> tuple[dict[str, str], str]:
    """The confirm page's form: ({field name: value}, the Cancel link's URL)."""
    assert response.status_code == 200, response.status
    form = re.search(
        rf'<form action="/post/{post_id}/delete" method="post"[^>]*>(.*?)</form>',
        response.text,
        re.S,
    )
    assert form, "no form posting to the post's delete URL"
    fields = {
        name: html.unescape(value)
        for name, value in re.findall(
            r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form[1]
        )
    }
    cancel = re.search(r'<a class="btn[^"]*" href="([^"]*)">Cancel</a>', form[1])
    return fields, html.unescape(cancel[1])


def ask_to_delete(client: FlaskClient, method: str, post_id: int | str, next_url: str):
    """GET the confirm page or POST the deletion, with `next_url` where the page puts
    it: in the URL for the GET (the Delete link's), in the form for the POST."""
    url = f"/post/{post_id}/delete"
    if method == "GET":
        return client.get(url, query_string={"next": next_url})
    return client.post(url, data={"next": next_url})


def log_in_with_csrf(client: FlaskClient, username: str = "admin") -> None:
    token = csrf_token(client.get("/auth/login"))
    data = {"csrf_token": token, "username": username, "password": PASSWORD}
    assert client.post("/auth/login", data=data).headers["Location"] == "/"


@pytest.fixture
def blog(app, users) -> dict[str, int]:
    """admin has two posts, admin1 one between them; admin follows admin1. Returns
    {body: post id}."""
    with app.app_context():
        ids = {
            ADMIN_NEW: add_post("admin", ADMIN_NEW, minutes_ago=10),
            ADMIN1_POST: add_post("admin1", ADMIN1_POST, minutes_ago=20),
            ADMIN_OLD: add_post("admin", ADMIN_OLD, minutes_ago=30),
        }
        db.session.get(User, users["admin"]).follow(db.session.get(User, users["admin1"]))
        db.session.commit()
    return ids


@pytest.fixture
def admin(client, auth, blog) -> FlaskClient:
    """admin, logged in, on `blog`."""
    auth.login("admin")
    return client


# --- The Delete link ----------------------------------------------------------------------


# What admin sees on each list of posts, newest first (every body contains "post").
ADMIN_SEES = {
    "/": [ADMIN_NEW, ADMIN1_POST, ADMIN_OLD],
    "/explore": [ADMIN_NEW, ADMIN1_POST, ADMIN_OLD],
    "/user/admin": [ADMIN_NEW, ADMIN_OLD],
    "/search?q=post": [ADMIN_NEW, ADMIN1_POST, ADMIN_OLD],
}


@pytest.mark.parametrize("page", ADMIN_SEES)
def test_the_delete_link_is_on_your_own_posts_only(admin, blog, page):
    """On every list of posts; each link comes back to the page it is on."""
    shown = posts_shown(admin.get(page))
    assert [body for body, _ in shown] == ADMIN_SEES[page]
    for body, link in shown:
        if body in (ADMIN_NEW, ADMIN_OLD):
            assert link_parts(link) == delete_link(blog[body], page), body
        else:
            assert link is None, body


def test_no_delete_link_on_someone_elses_profile(admin, blog):
    assert posts_shown(admin.get("/user/admin1")) == [(ADMIN1_POST, None)]


@pytest.mark.parametrize("page", ADMIN_SEES)
def test_a_visitor_sees_no_delete_link(client, blog, page):
    shown = posts_shown(client.get(page))
    assert shown  # the posts are there, without their links
    assert [link for _, link in shown] == [None] * len(shown)


def test_the_delete_link_of_a_second_page_comes_back_to_it(make_app, users):
    """Page 2 reached by the Older link (a cursor): the Delete link, the confirm page's
    Cancel link and the POST all lead back to that page 2, not to page 1."""
    app = make_app(POSTS_PER_PAGE=2)
    with app.app_context():
        ids = [add_post("admin", f"post {n}", minutes_ago=10 * (5 - n)) for n in range(1, 5)]
    client = app.test_client()
    AuthActions(client).login("admin")
    first = client.get("/explore")
    older = html.unescape(re.search(r'class="page-link" href="([^"]*before=[^"]*)"', first.text)[1])
    assert link_parts(older)[1]["page"] == ["2"]

    shown = posts_shown(client.get(older))
    assert [body for body, _ in shown] == ["post 2", "post 1"]
    assert link_parts(shown[0][1]) == delete_link(ids[1], older)

    fields, cancel = confirm_form(client.get(shown[0][1]), ids[1])
    assert (fields["next"], cancel) == (older, older)
    response = client.post(f"/post/{ids[1]}/delete", data={"next": fields["next"]})
    assert response.status_code == 302
    assert response.headers["Location"] == older
    back = client.get(older)
    assert alerts(back) == DELETED
    assert [body for body, _ in posts_shown(back)] == ["post 1"]


def test_deleting_the_only_post_of_a_last_page_comes_back_to_the_page_before(make_app, users):
    """Page 2 holds one post: deleting it would leave page 2 empty, a 404, so its
    Delete link comes back to the newer page, where the flash says it went."""
    app = make_app(POSTS_PER_PAGE=2)
    with app.app_context():
        ids = [add_post("admin", f"post {n}", minutes_ago=10 * (4 - n)) for n in range(1, 4)]
    client = app.test_client()
    AuthActions(client).login("admin")
    older = html.unescape(
        re.search(r'class="page-link" href="([^"]*before=[^"]*)"', client.get("/explore").text)[1]
    )
    [(body, link)] = posts_shown(client.get(older))
    assert body == "post 1"
    assert link_parts(link) == delete_link(ids[0], "/explore")

    response = client.post(f"/post/{ids[0]}/delete", data={"next": "/explore"})
    assert response.headers["Location"] == "/explore"
    back = client.get("/explore")
    assert alerts(back) == DELETED
    assert [body for body, _ in posts_shown(back)] == ["post 3", "post 2"]
    assert client.get(older).status_code == 404  # where the page's own URL would have led


def test_deleting_from_search_results_comes_back_to_the_same_search(app, admin, blog):
    """A query with characters a URL must encode ("%", "&", Chinese) survives the round trip."""
    with app.app_context():
        post_id = add_post("admin", "100% sure & 错误", minutes_ago=1)
    search = f"/search?q={quote('100% sure & 错误')}"
    [(body, link)] = posts_shown(admin.get(search))
    assert body == "100% sure & 错误"
    assert link_parts(link) == delete_link(post_id, search)

    fields, _ = confirm_form(admin.get(link), post_id)
    response = admin.post(f"/post/{post_id}/delete", data=fields)
    assert response.headers["Location"] == search
    back = admin.get(search)
    assert alerts(back) == DELETED
    assert "No post contains that." in page_text(back)


# --- The confirm page and the POST --------------------------------------------------------


def test_the_confirm_page_shows_the_post_and_a_way_back(app, admin, blog):
    post_id = blog[ADMIN_OLD]
    response = admin.get(f"/post/{post_id}/delete?next=/user/admin")
    text = page_text(response)
    assert "<h1>Delete this post?</h1>" in text
    assert "<title>Delete post · Blog</title>" in text
    # The post itself, without a Delete link of its own, and no other post.
    assert posts_shown(response) == [(ADMIN_OLD, None)]
    fields, cancel = confirm_form(response, post_id)
    assert set(fields) == {"csrf_token", "next"}
    assert (fields["next"], cancel) == ("/user/admin", "/user/admin")
    assert post_bodies(app) == sorted(blog)  # looking is not deleting


def test_without_next_the_way_back_is_the_home_page(admin, blog):
    fields, cancel = confirm_form(admin.get(f"/post/{blog[ADMIN_OLD]}/delete"), blog[ADMIN_OLD])
    assert (fields["next"], cancel) == ("/", "/")
    response = admin.post(f"/post/{blog[ADMIN_OLD]}/delete")
    assert response.headers["Location"] == "/"


def test_a_post_with_markup_is_shown_as_text_on_the_confirm_page(app, admin, blog):
    with app.app_context():
        post_id = add_post("admin", "<script>alert(1)</script>", minutes_ago=1)
    raw = admin.get(f"/post/{post_id}/delete").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert "<script>alert(1)" not in raw


def test_deleting_removes_exactly_that_post(app, admin, blog):
    response = admin.post(f"/post/{blog[ADMIN_OLD]}/delete", data={"next": "/explore"})
    assert response.status_code == 302
    assert response.headers["Location"] == "/explore"
    assert post_bodies(app) == sorted([ADMIN_NEW, ADMIN1_POST])
    after = admin.get("/explore")
    assert alerts(after) == DELETED
    assert [body for body, _ in posts_shown(after)] == [ADMIN_NEW, ADMIN1_POST]


def test_the_delete_form_carries_the_csrf_token_and_is_refused_without_it(make_app, blog):
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    log_in_with_csrf(client)
    post_id = blog[ADMIN_OLD]
    page = client.get(f"/post/{post_id}/delete?next=/explore")
    fields, _ = confirm_form(page, post_id)
    assert fields == {"csrf_token": csrf_token(page), "next": "/explore"}

    for refused in [{"next": "/explore"}, {"next": "/explore", "csrf_token": "forged"}]:
        response = client.post(f"/post/{post_id}/delete", data=refused)
        assert response.status_code == 400
        assert "The form has expired or was sent from another page." in page_text(response)
        assert post_bodies(app) == sorted(blog)

    response = client.post(f"/post/{post_id}/delete", data=fields)
    assert response.headers["Location"] == "/explore"
    assert post_bodies(app) == sorted([ADMIN_NEW, ADMIN1_POST])


# --- Not yours, not logged in -------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_someone_elses_post_is_forbidden(app, admin, blog, method):
    response = ask_to_delete(admin, method, blog[ADMIN1_POST], "/explore")
    assert response.status_code == 403
    text = page_text(response)
    assert "<h1>Forbidden</h1>" in text
    assert "You don't have permission to do that." in text
    assert alerts(response) == []
    assert post_bodies(app) == sorted(blog)


def test_a_visitor_is_sent_to_log_in_and_then_to_the_confirm_page(app, client, blog):
    url = f"/post/{blog[ADMIN_OLD]}/delete?next=/explore"
    response = client.get(url)
    assert response.status_code == 302
    login = urlsplit(response.headers["Location"])
    assert (login.path, parse_qs(login.query)) == ("/auth/login", {"next": [url]})

    response = client.post(
        response.headers["Location"], data={"username": "admin", "password": PASSWORD}
    )
    assert response.headers["Location"] == url
    fields, _ = confirm_form(client.get(url), blog[ADMIN_OLD])
    assert fields["next"] == "/explore"
    assert post_bodies(app) == sorted(blog)


def test_a_visitors_post_deletes_nothing(app, client, blog):
    response = client.post(f"/post/{blog[ADMIN_OLD]}/delete", data={"next": "/explore"})
    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/auth/login"
    assert post_bodies(app) == sorted(blog)


# --- A post that isn't there --------------------------------------------------------------


def test_two_tabs_the_second_delete_is_told_the_post_is_gone(app, admin, blog):
    """Both tabs showed the confirm page; the first deletes, the second finds nothing."""
    url = f"/post/{blog[ADMIN_OLD]}/delete"
    first_tab, _ = confirm_form(admin.get(f"{url}?next=/explore"), blog[ADMIN_OLD])
    second_tab, _ = confirm_form(admin.get(f"{url}?next=/user/admin"), blog[ADMIN_OLD])

    assert admin.post(url, data=first_tab).headers["Location"] == "/explore"
    assert alerts(admin.get("/explore")) == DELETED

    response = admin.post(url, data=second_tab)
    assert response.status_code == 302
    assert response.headers["Location"] == "/user/admin"
    assert alerts(admin.get("/user/admin")) == GONE
    assert post_bodies(app) == sorted([ADMIN_NEW, ADMIN1_POST])

    # Reloading the confirm page in either tab says the same.
    response = admin.get(f"{url}?next=/explore")
    assert response.headers["Location"] == "/explore"
    assert alerts(admin.get("/explore")) == GONE


def test_a_post_deleted_by_another_request_while_this_one_runs(app, admin, blog):
    """The other tab's DELETE commits after this request loaded the post and before its
    own DELETE: this one deletes no row, and says the post was already gone."""
    post_id = blog[ADMIN_OLD]
    with app.app_context():
        engine = db.engine
    other_request_done = False

    def delete_from_another_connection_first(conn, cursor, statement, *args) -> None:
        nonlocal other_request_done
        if other_request_done or not statement.startswith("DELETE FROM post"):
            return
        other_request_done = True
        # A connection of its own, as another worker's request would have.
        with engine.begin() as other_connection:
            other_connection.execute(delete(Post).where(Post.id == post_id))

    event.listen(engine, "before_cursor_execute", delete_from_another_connection_first)
    try:
        response = admin.post(f"/post/{post_id}/delete", data={"next": "/explore"})
    finally:
        event.remove(engine, "before_cursor_execute", delete_from_another_connection_first)
    assert other_request_done
    assert response.status_code == 302
    assert response.headers["Location"] == "/explore"
    assert alerts(admin.get("/explore")) == GONE
    assert post_bodies(app) == sorted([ADMIN_NEW, ADMIN1_POST])


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_stale_delete_never_reaches_a_new_post(app, admin, blog, method):
    """Deleting the newest post (the highest id), then writing a new one: the new
    post gets an id of its own, on SQLite too (AUTOINCREMENT), so the Delete of
    the old post still open in another tab finds it gone and leaves the new one."""
    old_id = blog[ADMIN_OLD]
    with app.app_context():
        assert old_id == max(db.session.scalars(select(Post.id)))  # the id SQLite would reuse
    url = f"/post/{old_id}/delete"
    stale_tab, _ = confirm_form(admin.get(f"{url}?next=/user/admin"), old_id)
    assert admin.post(url, data={"next": "/explore"}).headers["Location"] == "/explore"
    assert alerts(admin.get("/explore")) == DELETED

    assert admin.post("/", data={"post": "written after the delete"}).headers["Location"] == "/"
    assert alerts(admin.get("/")) == [("success", "Your post is now live!")]
    with app.app_context():
        new_id = db.session.scalar(select(Post.id).where(Post.body == "written after the delete"))
    assert new_id > old_id

    response = ask_to_delete(admin, method, old_id, stale_tab["next"])
    assert response.status_code == 302
    assert response.headers["Location"] == "/user/admin"
    after = admin.get("/user/admin")
    assert alerts(after) == GONE
    assert [body for body, _ in posts_shown(after)] == ["written after the delete", ADMIN_NEW]
    assert post_bodies(app) == sorted([ADMIN_NEW, ADMIN1_POST, "written after the delete"])


NEVER_EXISTED = [
    0,  # ids start at 1
    999_999,
    2**31 - 1,  # MAX_ID, the largest 32-bit integer: PostgreSQL's "integer" id column
]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("post_id", NEVER_EXISTED)
def test_a_post_that_never_existed_is_a_flash_and_a_way_back(app, admin, blog, method, post_id):
    response = ask_to_delete(admin, method, post_id, "/explore")
    assert response.status_code == 302
    assert response.headers["Location"] == "/explore"
    assert alerts(admin.get("/explore")) == GONE
    assert post_bodies(app) == sorted(blog)


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize(
    "post_id",
    # Beyond MAX_ID: ids a 64-bit column could hold, and the ones no column could.
    ["-1", str(2**31), str(2**63 - 1), str(2**63), str(10**30), "abc", "1.5", "1e3", "%20"],
)
def test_an_id_that_cannot_be_a_post_is_not_found(app, admin, blog, method, post_id):
    response = admin.open(f"/post/{post_id}/delete", method=method)
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.text
    assert post_bodies(app) == sorted(blog)


# --- Where "next" may lead ----------------------------------------------------------------


@pytest.mark.parametrize("next_url", HOSTILE_NEXT)
def test_a_next_off_the_site_leads_home(app, admin, blog, next_url):
    """The confirm page's hidden field and Cancel link, the POST's redirect, and the
    redirects for a post that is gone (POST, then GET): all "/", never off the site,
    where the flash says what happened."""
    post_id = blog[ADMIN_OLD]
    response = admin.get(f"/post/{post_id}/delete", query_string={"next": next_url})
    fields, cancel = confirm_form(response, post_id)
    assert (fields["next"], cancel) == ("/", "/")

    for flashed in (DELETED, GONE):  # deletes it, then finds it gone
        response = admin.post(f"/post/{post_id}/delete", data={"next": next_url})
        assert response.status_code == 302
        assert response.headers["Location"] == "/"
        assert alerts(admin.get("/")) == flashed
    assert post_bodies(app) == sorted([ADMIN_NEW, ADMIN1_POST])

    # The confirm page of the post now gone: the flash, at home.
    response = admin.get(f"/post/{post_id}/delete", query_string={"next": next_url})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert alerts(admin.get("/")) == GONE


@pytest.mark.parametrize(
    ("in_the_query", "in_the_form", "lands_on"),
    [
        ("/explore", "/user/admin", "/explore"),
        ("/explore", "//evil.example", "/explore"),
        # The query string's next is read even when it is refused: the form's,
        # fine as it is, is not looked at, and "/" is where the POST leads.
        ("//evil.example", "/user/admin", "/"),
        ("", "/user/admin", "/"),
    ],
    ids=["both on the site", "form off the site", "query off the site", "query empty"],
)
def test_next_in_both_the_query_string_and_the_form_the_query_strings_wins(
    app, admin, blog, in_the_query, in_the_form, lands_on
):
    """The view reads request.values, where the URL's parameters come before the
    form's: the confirm page's form posts no query string, so only a hand-made
    request has both; it is sent to the query string's page, if that is on the site."""
    post_id = blog[ADMIN_OLD]
    for flashed in (DELETED, GONE):  # deletes it, then finds it gone: the same choice
        response = admin.post(
            f"/post/{post_id}/delete",
            query_string={"next": in_the_query},
            data={"next": in_the_form},
        )
        assert response.status_code == 302
        assert response.headers["Location"] == lands_on
        assert alerts(admin.get(lands_on)) == flashed
    assert post_bodies(app) == sorted([ADMIN_NEW, ADMIN1_POST])


def test_a_very_long_next_on_the_site_is_followed(app, admin, blog):
    """Length alone makes no page off the site: a path of 10,000 characters is ours."""
    long_path = "/explore?x=" + "a" * 10_000
    response = admin.post(f"/post/{blog[ADMIN_OLD]}/delete", data={"next": long_path})
    assert response.headers["Location"] == long_path
    assert post_bodies(app) == sorted([ADMIN_NEW, ADMIN1_POST])


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_nul_in_next_is_refused_before_anything_is_deleted(app, admin, blog, method):
    response = ask_to_delete(admin, method, blog[ADMIN_OLD], "/explore\x00")
    assert response.status_code == 400
    assert "The request contained a character that isn't allowed (NUL)." in page_text(response)
    assert post_bodies(app) == sorted(blog)


def test_raw_bytes_in_next_are_refused(app, admin, blog):
    response = admin.get(
        f"/post/{blog[ADMIN_OLD]}/delete", environ_overrides={"QUERY_STRING": "next=/\xff"}
    )
    assert response.status_code == 400
    assert "The request could not be understood." in page_text(response)

"""The home page, posting, explore, paging through posts, "last seen", and how
many SQL statements a page of posts costs.
"""

import html
import re
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.extensions import db
from app.models import Post, User, now_utc
from tests.helpers import AuthActions, add_posts, add_user
from tests.pages import form_errors, page_text
from tests.query_count import count_statements


def add_post(username: str, body: str, minutes_ago: int) -> None:
    """Give `username` a post written `minutes_ago` (call inside an app context)."""
    author = db.session.scalar(User.select_by_username(username))
    db.session.add(
        Post(body=body, author=author, timestamp=now_utc() - timedelta(minutes=minutes_ago))
    )
    db.session.commit()


def assert_in_order(text: str, *bodies: str) -> None:
    """Every one of `bodies` is on the page, in this order."""
    positions = [text.find(body) for body in bodies]
    assert -1 not in positions, [body for body in bodies if body not in text]
    assert positions == sorted(positions)


def count_posts(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Post))


@pytest.fixture
def posts(app, users) -> None:
    """admin and admin1 write; carol writes too, but admin doesn't follow her."""
    with app.app_context():
        add_user("carol")
        add_post("admin1", "admin1 recent", minutes_ago=10)
        add_post("carol", "carol unfollowed", minutes_ago=20)
        add_post("admin", "admin own", minutes_ago=30)
        add_post("admin1", "admin1 old", minutes_ago=50)


# --- the home page --------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/index"])
def test_anonymous_home_is_the_explore_page(posts, client, path):
    response = client.get(path)
    assert response.status_code == 200
    text = page_text(response)
    assert "Welcome to the blog" in text
    assert 'name="post"' not in text  # no post form for visitors
    assert_in_order(text, "admin1 recent", "carol unfollowed", "admin own", "admin1 old")


def test_index_shows_form_and_timeline(posts, client, auth):
    """Logged in: my posts and those of the people I follow, newest first, no one else's."""
    auth.login("admin")
    response = client.post("/follow/admin1")
    assert response.headers["Location"] == "/user/admin1"

    response = client.get("/")
    assert response.status_code == 200
    text = page_text(response)
    assert "Hi, admin!" in text
    assert re.search(r'<textarea[^>]*name="post"', text)  # the post form
    assert_in_order(text, "admin1 recent", "admin own", "admin1 old")
    assert "carol unfollowed" not in text


def test_index_without_follows_shows_own_posts_only(posts, client, auth):
    auth.login("admin")
    text = page_text(client.get("/"))
    assert "admin own" in text
    assert "admin1 recent" not in text
    assert "carol unfollowed" not in text


def test_explore_lists_every_post_newest_first(posts, client, auth):
    auth.login("admin")
    response = client.get("/explore")
    assert response.status_code == 200
    assert_in_order(
        page_text(response), "admin1 recent", "carol unfollowed", "admin own", "admin1 old"
    )


# --- posting --------------------------------------------------------------------------------


def test_post(app, users, client, auth):
    """Post/Redirect/Get: the POST redirects, the GET shows the post and the flash."""
    auth.login()
    response = client.post("/", data={"post": "  Hello, world!  "})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"

    text = page_text(client.get("/"))
    assert "Your post is now live!" in text
    assert "Hello, world!" in text
    with app.app_context():
        post = db.session.scalar(select(Post))
        assert post.body == "Hello, world!"  # surrounding spaces trimmed
        assert post.author.username == "admin"


def test_post_of_maximum_length_is_accepted(app, users, client, auth):
    auth.login()
    response = client.post("/", data={"post": "x" * 280})
    assert response.headers["Location"] == "/"
    assert count_posts(app) == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "This field is required."),
        ("   \n\t ", "This field is required."),
        ("x" * 281, "Field cannot be longer than 280 characters."),
    ],
)
def test_post_validates_input(app, users, client, auth, body, message):
    auth.login()
    response = client.post("/", data={"post": body})
    assert response.status_code == 200
    assert form_errors(response) == {"post": [message]}
    assert count_posts(app) == 0


def test_post_is_escaped(users, client, auth):
    """A post is text: markup in it is shown, never run."""
    auth.login()
    client.post("/", data={"post": "<script>alert(1)</script>"})
    raw = client.get("/").get_data(as_text=True)  # raw HTML: page_text would unescape it
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in raw
    assert "<script>alert" not in raw


# --- pagination -----------------------------------------------------------------------------


@pytest.fixture
def paged_client(make_app):
    """Three posts a page; admin has written 7 ("post 1 by admin" .. "post 7", the newest)
    and is logged in."""
    app = make_app(POSTS_PER_PAGE=3)
    with app.app_context():
        add_posts(add_user("admin"), 7)
    client = app.test_client()
    AuthActions(client).login("admin")
    return client


PAGED = ["/explore", "/", "/user/admin"]


def pager_link(response, label: str) -> str | None:
    """The URL behind the "Newer posts" or "Older posts" link, or None if it is disabled."""
    match = re.search(rf'<a class="page-link" href="([^"]*)">[^<]*{label}', response.text)
    assert match, f"no {label} link on the page"
    url = html.unescape(match.group(1))
    return None if url == "#" else url


def posts_on(response) -> list[str]:
    return re.findall(r"post \d+ by admin", page_text(response))


@pytest.mark.parametrize("path", PAGED)
def test_pagination_by_its_links(paged_client, path):
    """Older posts all the way down, then Newer posts all the way back up."""
    first = paged_client.get(path)
    assert posts_on(first) == ["post 7 by admin", "post 6 by admin", "post 5 by admin"]
    assert pager_link(first, "Newer posts") is None

    second = paged_client.get(pager_link(first, "Older posts"))
    assert posts_on(second) == ["post 4 by admin", "post 3 by admin", "post 2 by admin"]

    last = paged_client.get(pager_link(second, "Older posts"))
    assert posts_on(last) == ["post 1 by admin"]
    assert pager_link(last, "Older posts") is None

    back = paged_client.get(pager_link(last, "Newer posts"))
    assert posts_on(back) == posts_on(second)
    assert pager_link(back, "Older posts") == pager_link(second, "Older posts")
    assert pager_link(back, "Newer posts") == path  # page 1 is the list's own URL
    assert posts_on(paged_client.get(pager_link(back, "Newer posts"))) == posts_on(first)


@pytest.mark.parametrize("path", PAGED)
def test_page_numbers_typed_by_hand_still_work(paged_client, path):
    """?page=N from a bookmark or an older link: the same pages, and a 404 past the end."""
    assert posts_on(paged_client.get(f"{path}?page=2")) == [
        "post 4 by admin",
        "post 3 by admin",
        "post 2 by admin",
    ]
    assert posts_on(paged_client.get(f"{path}?page=3")) == ["post 1 by admin"]
    response = paged_client.get(f"{path}?page=4")
    assert response.status_code == 404
    assert "Page not found" in page_text(response)


@pytest.mark.parametrize("path", PAGED)
def test_a_new_post_does_not_push_posts_onto_the_next_page(paged_client, path):
    """Reading page 1, then Older: a post written in between doesn't show "post 5" twice
    (with OFFSET paging, page 2 would start at the post page 1 ended with)."""
    older = pager_link(paged_client.get(path), "Older posts")
    paged_client.post("/", data={"post": "post 8 by admin"})
    assert posts_on(paged_client.get(older)) == [
        "post 4 by admin",
        "post 3 by admin",
        "post 2 by admin",
    ]


def test_posts_written_in_the_same_instant_are_neither_skipped_nor_repeated(make_app):
    """Seven posts with one timestamp, three a page: the id decides their order."""
    app = make_app(POSTS_PER_PAGE=3)
    with app.app_context():
        author = add_user("admin")
        moment = now_utc() - timedelta(minutes=5)
        db.session.add_all(
            Post(body=f"post {n} by admin", author=author, timestamp=moment) for n in range(1, 8)
        )
        db.session.commit()
    client = app.test_client()
    seen, url = [], "/explore"
    while url:
        response = client.get(url)
        seen += posts_on(response)
        url = pager_link(response, "Older posts")
    assert seen == [f"post {n} by admin" for n in range(7, 0, -1)]


@pytest.mark.parametrize(
    "query",
    [
        "before=abc",
        "before=",
        "before=12",
        "before=-12",
        "after=12-",
        "before=1.5-2",
        "before=1-99999999999999999999",  # more than any id column holds
        "before=1-9223372036854775808",  # one more than the largest 64-bit id
        "before=999999999999999999-1",  # past the year 9999
        "page=2&before=0-1",  # before the first post ever: a page past the end
    ],
)
@pytest.mark.parametrize("path", PAGED)
def test_a_bad_cursor_is_not_found(paged_client, path, query):
    response = paged_client.get(f"{path}?{query}")
    assert response.status_code == 404
    assert "Page not found" in page_text(response)


@pytest.mark.parametrize("page", ["abc", "0", "-1", "1e400", "99999999999999999999", ""])
@pytest.mark.parametrize("path", PAGED)
def test_bad_page_number_is_not_found(paged_client, path, page):
    """A page number that isn't a page is a 404, never a 500."""
    response = paged_client.get(path, query_string={"page": page})
    assert response.status_code == 404
    assert "Page not found" in page_text(response)


def test_first_page_of_nothing_is_not_an_error(app, users, client):
    response = client.get("/explore")
    assert response.status_code == 200
    assert "No posts yet." in page_text(response)


# --- last seen ------------------------------------------------------------------------------


def set_last_seen(app, user_id: int, ago: timedelta):
    with app.app_context():
        moment = now_utc() - ago
        db.session.execute(update(User).where(User.id == user_id).values(last_seen=moment))
        db.session.commit()
        return db.session.get(User, user_id).last_seen


def get_last_seen(app, user_id: int):
    with app.app_context():
        return db.session.scalar(select(User.last_seen).where(User.id == user_id))


def test_last_seen_is_updated_at_most_once_a_minute(app, users, client, auth):
    auth.login()
    admin_id = users["admin"]

    five_minutes_ago = set_last_seen(app, admin_id, timedelta(minutes=5))
    before = now_utc()
    client.get("/explore")
    assert get_last_seen(app, admin_id) >= before

    ten_seconds_ago = set_last_seen(app, admin_id, timedelta(seconds=10))
    client.get("/explore")
    assert get_last_seen(app, admin_id) == ten_seconds_ago
    assert ten_seconds_ago > five_minutes_ago


def test_anonymous_requests_do_not_touch_last_seen(app, users, client):
    five_minutes_ago = set_last_seen(app, users["admin"], timedelta(minutes=5))
    client.get("/explore")
    assert get_last_seen(app, users["admin"]) == five_minutes_ago


# --- query count ----------------------------------------------------------------------------


def add_authors(first: int, last: int, reader: str = "admin") -> None:
    """Authors `first`..`last - 1`, one post each, all followed by `reader`."""
    me = db.session.scalar(User.select_by_username(reader))
    for n in range(first, last):
        author = add_user(f"author{n}")
        add_post(author.username, f"post by author{n}", minutes_ago=n)
        me.follow(author)
    db.session.commit()


@pytest.mark.parametrize(("path", "logged_in"), [("/explore", False), ("/", True)])
def test_query_count_does_not_grow_with_posts(app, users, client, auth, path, logged_in):
    """Each post's author comes in the same SELECT: no query per post (no "N+1")."""
    if logged_in:
        auth.login()
    with app.app_context():
        add_authors(0, 2)
        engine = db.engine  # one per app, shared by its requests
    with count_statements(engine) as few:
        response = client.get(path)
    assert response.status_code == 200
    assert page_text(response).count("post by author") == 2

    with app.app_context():
        add_authors(2, 10)
    with count_statements(engine) as many:
        response = client.get(path)
    assert page_text(response).count("post by author") == 10

    assert len(many) == len(few), many
    assert len(few) <= 2, few

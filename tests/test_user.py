"""The user blueprint: profiles, editing your own profile, following.

The heart of the project is the duplicate-username bug (app/forms.py,
`commit_or_show_conflict`): admin renames themselves to admin1, which is
taken. The blog must answer with a form error, keep the database as it was,
and go on serving pages, including when two requests race past the form's
check and the database's unique index has the last word.
"""

import html
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event, insert, select

from app.extensions import db
from app.models import User, followers, name_key
from tests.helpers import PASSWORD, add_posts, add_user
from tests.pages import alerts, csrf_token, form_errors

USERNAME_TAKEN = "Please use a different username."
# "admin1" typed in full-width letters, as an East Asian keyboard may; NFKC folds it.
FULL_WIDTH_ADMIN1 = "\uff41\uff44\uff4d\uff49\uff4e\uff11"
# The Referer a browser sends from admin1's profile (the test client's host is localhost).
PROFILE_URL = "http://localhost/user/admin1"


def input_value(page: str, name: str) -> str | None:
    """The value a form's <input name=...> shows, as the browser would display it."""
    match = re.search(rf'<input[^>]*\bname="{name}"[^>]*\bvalue="([^"]*)"', page)
    return match and match.group(1)


def textarea_text(page: str, name: str) -> str | None:
    match = re.search(rf'<textarea[^>]*\bname="{name}"[^>]*>\s*([^<]*)</textarea>', page)
    return match and match.group(1)


def heading(page: str) -> str:
    """The page's <h1>: on a profile, the user's name as stored."""
    return html.unescape(re.search(r"<h1>(.*?)</h1>", page).group(1))


def post_bodies(page: str) -> list[str]:
    """The text of each post listed on the page, top to bottom."""
    return [
        html.unescape(body) for body in re.findall(r'<p class="mb-0 text-break">(.*?)</p>', page)
    ]


def counts(page: str) -> tuple[int, int]:
    """(followers, following) as the profile header shows them (each a link to its list)."""
    match = re.search(r"(\d+) followers?\s*</a>\s+·\s+<a [^>]*>(\d+) following", page)
    assert match, "the profile shows no follower counts"
    return int(match.group(1)), int(match.group(2))


def login_next(response) -> str | None:
    """Check that `response` redirects to the login page; return its ?next= target."""
    location = urlsplit(response.headers["Location"])
    assert location.path == "/auth/login"
    return parse_qs(location.query).get("next", [None])[0]


def name_and_about(app, user_id: int) -> tuple[str, str]:
    """What the database holds for a user: (username, about_me)."""
    with app.app_context():
        row = db.session.execute(select(User.username, User.about_me).where(User.id == user_id))
        return tuple(row.one())


def follow_rows(app) -> list[tuple[int, int]]:
    """Every (follower_id, followed_id) pair in the followers table."""
    with app.app_context():
        stmt = select(followers.c.follower_id, followers.c.followed_id)
        return [tuple(row) for row in db.session.execute(stmt)]


# --- The profile page -------------------------------------------------------


def test_profile_shows_name_about_me_and_counts(app, client):
    with app.app_context():
        add_user("carol", about_me="I write about <b>birds</b>.")
    page = client.get("/user/carol").text
    assert "<h1>carol</h1>" in page
    assert "I write about &lt;b&gt;birds&lt;/b&gt;." in page  # escaped, not HTML
    assert counts(page) == (0, 0)
    assert "No posts yet." in page


def test_profile_posts_are_paginated_newest_first(make_app, users):
    app = make_app(POSTS_PER_PAGE=2)
    client = app.test_client()
    with app.app_context():
        add_posts(db.session.get(User, users["admin"]), 3)

    page = client.get("/user/admin").text
    assert page.index("post 3 by admin") < page.index("post 2 by admin")
    assert "post 1 by admin" not in page
    older = re.search(r'href="(/user/admin\?page=2&amp;before=[0-9-]+)">Older posts', page)

    page = client.get(html.unescape(older.group(1))).text
    assert "post 1 by admin" in page
    assert "post 3 by admin" not in page
    assert client.get("/user/admin?page=3").status_code == 404


def test_profile_shows_only_that_users_posts(app, client, users):
    with app.app_context():
        add_posts(db.session.get(User, users["admin1"]), 1)
    assert "post 1 by admin1" not in client.get("/user/admin").text
    assert "post 1 by admin1" in client.get("/user/admin1").text


@pytest.mark.parametrize(
    "path", ["/user/ADMIN", "/user/Admin", "/user/admin", "/user/\uff41\uff44\uff4d\uff49\uff4e"]
)
def test_profile_lookup_ignores_case(app, client, users, path):
    """Any spelling of the name opens that user's page: their name as stored, their
    posts and no one else's (admin1, whose name starts the same, has one too)."""
    with app.app_context():
        add_posts(db.session.get(User, users["admin"]), 2)
        add_posts(db.session.get(User, users["admin1"]), 1)
    response = client.get(path)
    assert response.status_code == 200
    assert heading(response.text) == "admin"
    assert post_bodies(response.text) == ["post 2 by admin", "post 1 by admin"]


def test_unknown_user_is_404(client, users):
    response = client.get("/user/nobody")
    assert response.status_code == 404
    assert "Page not found" in response.text


@pytest.mark.parametrize("spelling", ["Élodie", "élodie", "ÉLODIE"])
def test_profile_of_a_name_with_a_non_ascii_capital(app, client, spelling):
    """É and é are one letter in two cases (SQLite's own lower() knows only A-Z);
    "Elodie" without the accent is someone else."""
    with app.app_context():
        add_posts(add_user("Élodie", email="elodie@example.com"), 1)
        add_posts(add_user("Elodie", email="other-elodie@example.com"), 1)
    response = client.get(f"/user/{spelling}")
    assert response.status_code == 200
    assert heading(response.text) == "Élodie"
    assert post_bodies(response.text) == ["post 1 by Élodie"]


@pytest.mark.parametrize("name", ["edit", "edit_profile"])
def test_a_user_named_edit_cannot_hide_the_edit_page(client, auth, users, name):
    """/edit_profile and /user/<name> never collide, whatever people call themselves."""
    response = auth.register(name)
    assert response.headers["Location"] == "/auth/login"
    auth.login()

    page = client.get("/edit_profile").text
    assert "<h1>Edit profile</h1>" in page
    assert input_value(page, "username") == "admin"

    response = client.get(f"/user/{name}")
    assert response.status_code == 200
    assert f"<h1>{name}</h1>" in response.text


def test_own_profile_links_to_edit_others_offer_follow(client, auth, users):
    auth.login()
    own = client.get("/user/admin").text
    assert 'href="/edit_profile"' in own
    assert 'action="/follow/admin"' not in own
    other = client.get("/user/admin1").text
    assert 'action="/follow/admin1"' in other
    assert 'href="/edit_profile"' not in other


# --- Editing your profile ---------------------------------------------------


def test_edit_profile_requires_login(client):
    assert login_next(client.get("/edit_profile")) == "/edit_profile"


def test_edit_profile_form_shows_current_values(app, client, auth, users):
    with app.app_context():
        db.session.get(User, users["admin"]).about_me = "Hello there"
        db.session.commit()
    auth.login()
    page = client.get("/edit_profile").text
    assert input_value(page, "username") == "admin"
    assert textarea_text(page, "about_me") == "Hello there"


@pytest.mark.parametrize(
    ("submitted", "shown"),
    [
        ("admin1", "admin1"),
        ("ADMIN1", "ADMIN1"),
        (FULL_WIDTH_ADMIN1, "admin1"),
        (" admin1 ", "admin1"),
    ],
)
def test_renaming_to_a_taken_name_shows_a_form_error(app, client, auth, users, submitted, shown):
    """The duplicate-username bug: admin and admin1 exist; admin tries to become admin1.

    Case and look-alike (full-width) characters don't make a different name.
    """
    auth.login()
    response = client.post("/edit_profile", data={"username": submitted, "about_me": "changed?"})

    assert response.status_code == 200
    assert form_errors(response) == {"username": [USERNAME_TAKEN]}
    # The form keeps what was typed (trimmed and NFKC-folded), so it can be corrected.
    assert input_value(response.text, "username") == shown
    assert alerts(response) == []  # not "Your changes have been saved."
    assert name_and_about(app, users["admin"]) == ("admin", "")
    assert name_and_about(app, users["admin1"]) == ("admin1", "")

    # The next pages work, and the navigation still knows who is logged in.
    for path in ("/user/admin", "/"):
        response = client.get(path)
        assert response.status_code == 200
        assert "Profile (admin)" in response.text
    assert "changed?" not in client.get("/user/admin").text


def test_renaming_to_a_taken_non_ascii_name_in_another_case(app, client, auth, users):
    with app.app_context():
        add_user("Élodie", email="elodie@example.com")
    auth.login()
    response = client.post("/edit_profile", data={"username": "élodie", "about_me": ""})
    assert form_errors(response) == {"username": [USERNAME_TAKEN]}
    assert name_and_about(app, users["admin"]) == ("admin", "")


def test_rename_to_a_free_name(app, client, auth, users):
    auth.login()
    response = client.post("/edit_profile", data={"username": "root", "about_me": "The boss"})
    assert response.headers["Location"] == "/edit_profile"

    page = client.get("/edit_profile").text
    assert alerts(page) == [("success", "Your changes have been saved.")]
    assert "Profile (root)" in page
    assert input_value(page, "username") == "root"
    assert name_and_about(app, users["admin"]) == ("root", "The boss")
    assert client.get("/user/root").status_code == 200


def test_changing_only_the_case_of_your_own_name(app, client, auth, users):
    auth.login()
    response = client.post("/edit_profile", data={"username": "Admin", "about_me": ""})
    assert response.headers["Location"] == "/edit_profile"
    assert name_and_about(app, users["admin"]) == ("Admin", "")
    assert "Profile (Admin)" in client.get("/edit_profile").text


def test_keeping_your_name_and_changing_about_me(app, client, auth, users):
    auth.login()
    response = client.post("/edit_profile", data={"username": "admin", "about_me": "New text"})
    assert response.headers["Location"] == "/edit_profile"
    assert name_and_about(app, users["admin"]) == ("admin", "New text")
    assert "New text" in client.get("/user/admin").text


WRONG_LENGTH = "Field must be between 3 and 64 characters long."
WRONG_CHARACTERS = "Use only letters, digits, dots, dashes and underscores."


@pytest.mark.parametrize(
    ("username", "about_me", "errors"),
    [
        ("admin", "x" * 281, {"about_me": ["Field cannot be longer than 280 characters."]}),
        ("", "", {"username": ["This field is required."]}),
        ("ab", "", {"username": [WRONG_LENGTH]}),
        ("a" * 65, "", {"username": [WRONG_LENGTH]}),
        ("new name", "", {"username": [WRONG_CHARACTERS]}),
        ("new/name", "", {"username": [WRONG_CHARACTERS]}),
    ],
)
def test_edit_profile_validates_input(app, client, auth, users, username, about_me, errors):
    auth.login()
    response = client.post("/edit_profile", data={"username": username, "about_me": about_me})
    assert response.status_code == 200
    assert form_errors(response) == errors
    assert name_and_about(app, users["admin"]) == ("admin", "")


@pytest.fixture
def rival_takes_name(app):
    """Arrange for another worker to commit a user named `name` at the last moment.

    The listener runs just before our session flushes a User renamed to
    `name`, i.e. after the form's check found the name free. It inserts the
    rival through a connection of its own and commits, as a second gunicorn
    worker would; our UPDATE then hits the unique index for real.
    """
    listeners = []

    def arrange(name: str) -> None:
        done = []

        def insert_rival(session, flush_context, instances):
            if done or not any(
                isinstance(obj, User) and obj.username == name for obj in session.dirty
            ):
                return
            done.append(True)
            with db.engine.begin() as connection:
                email = f"{name}@example.com"
                # A Core INSERT skips the model's @validates, so it passes the keys itself.
                rival = {
                    "username": name,
                    "username_key": name_key(name),
                    "email": email,
                    "email_key": name_key(email),
                    "password_hash": "x",
                }
                connection.execute(insert(User).values(**rival))

        # db.session stands for every session: remove the listener after the test.
        event.listen(db.session, "before_flush", insert_rival)
        listeners.append(insert_rival)

    yield arrange

    for listener in listeners:
        event.remove(db.session, "before_flush", listener)


def test_rename_race_lost_at_the_unique_index_shows_a_form_error(
    app, client, auth, users, rival_takes_name
):
    """The form said "root" was free, but another request committed it first."""
    auth.login()
    rival_takes_name("root")
    response = client.post("/edit_profile", data={"username": "root", "about_me": "changed?"})

    assert response.status_code == 200
    assert form_errors(response) == {"username": [USERNAME_TAKEN]}
    assert "Profile (admin)" in response.text
    assert name_and_about(app, users["admin"]) == ("admin", "")
    with app.app_context():
        rival = db.session.scalar(select(User.id).where(User.username == "root"))
    assert rival is not None, "the rival's insert never happened: the race wasn't run"

    response = client.get("/user/admin")
    assert response.status_code == 200
    assert "Profile (admin)" in response.text


# --- Following --------------------------------------------------------------


def test_follow_and_unfollow(app, client, auth, users):
    auth.login()
    assert counts(client.get("/user/admin1").text) == (0, 0)

    response = client.post("/follow/admin1")
    assert response.headers["Location"] == "/user/admin1"
    page = client.get("/user/admin1").text
    assert "You are following admin1." in page
    assert counts(page) == (1, 0)
    assert 'action="/unfollow/admin1"' in page
    assert counts(client.get("/user/admin").text) == (0, 1)
    assert follow_rows(app) == [(users["admin"], users["admin1"])]

    response = client.post("/unfollow/admin1")
    assert response.headers["Location"] == "/user/admin1"
    page = client.get("/user/admin1").text
    assert "You are not following admin1 anymore." in page
    assert counts(page) == (0, 0)
    assert follow_rows(app) == []


def test_following_twice_is_harmless(app, client, auth, users):
    auth.login()
    client.post("/follow/admin1")
    response = client.post("/follow/ADMIN1")
    assert response.headers["Location"] == "/user/admin1"
    assert follow_rows(app) == [(users["admin"], users["admin1"])]
    assert counts(client.get("/user/admin1").text) == (1, 0)


def test_cannot_follow_yourself(app, client, auth, users):
    auth.login()
    response = client.post("/follow/admin")
    assert response.headers["Location"] == "/user/admin"
    assert "You cannot follow yourself." in client.get("/user/admin").text
    assert follow_rows(app) == []


@pytest.mark.parametrize("action", ["follow", "unfollow"])
def test_follow_is_post_only(client, auth, users, action):
    auth.login()
    response = client.get(f"/{action}/admin1")
    assert response.status_code == 405
    assert "Method not allowed" in response.text


@pytest.mark.parametrize("action", ["follow", "unfollow"])
@pytest.mark.parametrize(
    ("referer", "next_url"),
    [(PROFILE_URL, "/user/admin1"), (None, None), ("https://evil.example/user/admin1", None)],
)
def test_follow_requires_login(app, client, users, action, referer, next_url):
    """After logging in, the visitor goes back to the page the button was on (if
    it is on this site), never to /follow/admin1: it only accepts POST, and the
    browser's GET after logging in would meet a 405."""
    headers = {"Referer": referer} if referer else {}
    response = client.post(f"/{action}/admin1", headers=headers)
    assert login_next(response) == next_url
    assert follow_rows(app) == []


def test_logging_in_after_an_anonymous_follow_returns_to_the_profile(client, users):
    """The session expired while the profile was open, then "Follow" was clicked."""
    response = client.post("/follow/admin1", headers={"Referer": PROFILE_URL})
    login_url = response.headers["Location"]
    response = client.post(login_url, data={"username": "admin", "password": PASSWORD})
    assert response.headers["Location"] == "/user/admin1"
    assert client.get("/user/admin1").status_code == 200


@pytest.mark.parametrize("action", ["follow", "unfollow"])
def test_follow_unknown_user_is_404(client, auth, users, action):
    auth.login()
    response = client.post(f"/{action}/nobody")
    assert response.status_code == 404
    assert "Page not found" in response.text


def login_with_csrf(client: FlaskClient, username: str = "admin") -> None:
    token = csrf_token(client.get("/auth/login").text)
    data = {"csrf_token": token, "username": username, "password": PASSWORD}
    assert client.post("/auth/login", data=data).headers["Location"] == "/"


@pytest.mark.parametrize("action", ["follow", "unfollow"])
def test_following_and_unfollowing_need_the_forms_csrf_token(make_app, users, action):
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    login_with_csrf(client)
    token = csrf_token(client.get("/user/admin1").text)
    following = [(users["admin"], users["admin1"])]
    if action == "unfollow":
        client.post("/follow/admin1", data={"csrf_token": token})
    before, after = (following, []) if action == "unfollow" else ([], following)

    response = client.post(f"/{action}/admin1")
    assert response.status_code == 400
    assert "The form has expired" in response.text
    assert follow_rows(app) == before

    response = client.post(f"/{action}/admin1", data={"csrf_token": token})
    assert response.headers["Location"] == "/user/admin1"
    assert follow_rows(app) == after


def test_the_follow_buttons_send_nothing_but_the_csrf_token(make_app, users):
    """No field to fill in: the button, and the token that proves the page is ours."""
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    login_with_csrf(client)
    for action, button in [("follow", "Follow"), ("unfollow", "Unfollow")]:
        page = client.get("/user/admin1").text
        form = re.search(rf'<form action="/{action}/admin1" method="post">(.*?)</form>', page, re.S)
        assert re.findall(r'<input[^>]*\bname="([^"]*)"', form.group(1)) == ["csrf_token"]
        assert re.findall(r"<button[^>]*>\s*([^<]*?)\s*</button>", form.group(1)) == [button]
        client.post(f"/{action}/admin1", data={"csrf_token": csrf_token(page)})


def test_followed_users_posts_appear_on_the_home_page(app, client, auth, users):
    with app.app_context():
        add_posts(db.session.get(User, users["admin1"]), 1)
    auth.login()
    assert "post 1 by admin1" not in client.get("/").text

    client.post("/follow/admin1")
    assert "post 1 by admin1" in client.get("/").text

    client.post("/unfollow/admin1")
    assert "post 1 by admin1" not in client.get("/").text

"""The lists of a user's followers and of the people they follow.

``/user/<name>/followers`` and ``/user/<name>/following`` show people, the newest
follow first (by when the follow began, not by id or name), each with the time of
that follow; the counts on the profile link to them. These tests pin:

- the order and the content of both lists, and what each shows for a user with
  nobody on it ("Nobody yet."), for an unknown user (404), and for the viewer who
  is on the list themselves;
- paging, with three people a page: the Older and Newer links to the character
  (their cursors are the follow's microseconds and the person's id, computed here
  from the database's rows), every person exactly once, follows made in the same
  microsecond included; ?page=N typed by hand;
- what the paging parameters accept: the same answers as the lists of posts
  (app/pagination.py): a malformed cursor or page number, or a page past the end,
  is the 404 page; ``before`` and ``after`` together is the ``before`` page;
- someone leaving the list between two pages (an unfollow, a deleted account)
  skips nobody and repeats nobody.
"""

import calendar
import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import insert, select

from app.extensions import db
from app.models import User, followers
from tests.helpers import PASSWORD, AuthActions, add_user
from tests.pages import alerts, page_text

LISTS = ["followers", "following"]
PER_PAGE = 3
# When the first follow of each test began: microseconds, so that a cursor
# rounded to the millisecond would show.
START = datetime(2025, 3, 4, 5, 6, 7, 123456, tzinfo=UTC)
# 17 digits of microseconds, the most a cursor has: later than every follow.
LATEST = "9" * 17


# --- Helpers ------------------------------------------------------------------------------


def user_id(name: str) -> int | None:
    return db.session.scalar(select(User.id).where(User.username == name))


def add_follows(pairs: list[tuple[str, str]], step: timedelta = timedelta(minutes=1)) -> None:
    """Each (follower, followed) pair begins to follow, in this order, `step` apart from
    START (inside an app context)."""
    rows = [
        {"follower_id": user_id(a), "followed_id": user_id(b), "created": START + n * step}
        for n, (a, b) in enumerate(pairs)
    ]
    db.session.execute(insert(followers), rows)
    db.session.commit()


def cursor_of(moment: datetime, person_id: int) -> str:
    """A person's place on a list as a link writes it: the follow's microseconds
    since 1970, "-", the person's id."""
    micros = calendar.timegm(moment.utctimetuple()) * 1_000_000 + moment.microsecond
    return f"{micros}-{person_id}"


def people_on(response) -> list[str]:
    """The names on a list page, top to bottom."""
    assert response.status_code == 200, response.status
    return re.findall(
        r'<a class="fw-semibold text-break" href="/user/[^"]*">([^<]*)</a>', response.text
    )


def follow_times_on(response) -> list[str]:
    """The instants shown beside the names (the ``datetime`` of each ``<time>``)."""
    return re.findall(r'<time datetime="([^"]+)"', response.text)


def links(response) -> dict[str, str | None] | None:
    """{"Newer": url, "Older": url}, None for a disabled one; None if there are none."""
    found = re.findall(r'class="page-link" href="([^"]*)">[^<]*?(Newer|Older)', response.text)
    if not found:
        return None
    assert [label for _, label in found] == ["Newer", "Older"], found
    return {label: None if url == "#" else html.unescape(url) for url, label in found}


def assert_not_found(response) -> None:
    assert response.status_code == 404
    assert "<h1>Page not found</h1>" in response.text


def logged_in(app: Flask, username: str) -> FlaskClient:
    client = app.test_client()
    AuthActions(client).login(username)
    return client


# --- The lists ----------------------------------------------------------------------------


@pytest.fixture
def cast(app) -> None:
    """star and the people around it, registered in alphabetical order (ids ascending).

    Followers of star, in the order they began: cat, ann, dan, bob. star follows dan,
    then eve. ann also follows bob, which is on neither of star's lists.
    """
    with app.app_context():
        for name in ["ann", "bob", "cat", "dan", "eve", "star"]:
            add_user(name)
        add_follows(
            [
                ("cat", "star"),  # START
                ("ann", "star"),  # + 1 minute
                ("star", "dan"),  # + 2
                ("dan", "star"),  # + 3
                ("ann", "bob"),  # + 4
                ("bob", "star"),  # + 5
                ("star", "eve"),  # + 6
            ]
        )


def minutes_after_start(*minutes: int) -> list[str]:
    return [(START + timedelta(minutes=m)).isoformat() for m in minutes]


def test_followers_newest_follow_first(client, cast):
    """By when each follow began: neither the order of the ids nor that of the names."""
    response = client.get("/user/star/followers")
    assert people_on(response) == ["bob", "dan", "ann", "cat"]
    assert follow_times_on(response) == minutes_after_start(5, 3, 1, 0)
    text = page_text(response)
    assert "<title>People following star · Blog</title>" in text
    assert '<h1 class="h3">People following star</h1>' in text
    assert (
        '<a href="/user/star">← Back to star\u2019s profile</a>' in text
    )  # a typographic apostrophe
    assert links(response) is None  # one page


def test_following_newest_follow_first(client, cast):
    response = client.get("/user/star/following")
    assert people_on(response) == ["eve", "dan"]
    assert follow_times_on(response) == minutes_after_start(6, 2)
    assert '<h1 class="h3">People star follows</h1>' in page_text(response)


def test_the_profile_counts_link_to_the_lists(client, cast):
    page = client.get("/user/star").text
    assert '<a href="/user/star/followers">4 followers</a>' in page
    assert '<a href="/user/star/following">2 following</a>' in page
    page = client.get("/user/eve").text
    assert '<a href="/user/eve/followers">1 follower</a>' in page
    assert '<a href="/user/eve/following">0 following</a>' in page


@pytest.mark.parametrize("which", LISTS)
def test_a_user_with_nobody_on_the_list(app, client, which):
    with app.app_context():
        add_user("loner")
    response = client.get(f"/user/loner/{which}")
    assert people_on(response) == []
    assert '<p class="text-body-secondary">Nobody yet.</p>' in response.text
    assert links(response) is None


@pytest.mark.parametrize("which", LISTS)
def test_the_lists_of_an_unknown_user_are_not_found(client, cast, which):
    assert_not_found(client.get(f"/user/nobody/{which}"))


@pytest.mark.parametrize(
    ("which", "people"),
    [("followers", ["bob", "dan", "ann", "cat"]), ("following", ["eve", "dan"])],
)
def test_the_name_in_the_url_ignores_case(client, cast, which, people):
    """/user/STAR/... is star's list: the same people, in the same order."""
    assert people_on(client.get(f"/user/STAR/{which}")) == people
    assert people_on(client.get(f"/user/star/{which}")) == people


def test_the_viewer_on_the_list_is_shown_with_their_own_follow(app, cast):
    """ann, logged in, is already loaded for the navigation when the list loads her
    again: she still gets the time of her follow."""
    response = logged_in(app, "ann").get("/user/star/followers")
    assert people_on(response) == ["bob", "dan", "ann", "cat"]
    assert follow_times_on(response) == minutes_after_start(5, 3, 1, 0)
    response = logged_in(app, "star").get("/user/star/following")
    assert follow_times_on(response) == minutes_after_start(6, 2)


def test_about_me_on_the_list_is_text(app, client, cast):
    with app.app_context():
        db.session.scalar(User.select_by_username("ann")).about_me = "<b>hi</b> & bye"
        db.session.commit()
    raw = client.get("/user/star/followers").text
    assert '<p class="mb-0 text-break">&lt;b&gt;hi&lt;/b&gt; &amp; bye</p>' in raw


def test_an_unfollow_takes_the_person_off_the_list(app, cast):
    ann = logged_in(app, "ann")
    assert ann.post("/unfollow/star").headers["Location"] == "/user/star"
    response = ann.get("/user/star/followers")
    assert alerts(response) == [("info", "You are not following star anymore.")]
    assert people_on(response) == ["bob", "dan", "cat"]
    assert '<a href="/user/star/followers">3 followers</a>' in ann.get("/user/star").text


# --- Paging -------------------------------------------------------------------------------


class Crowd:
    """star and eight fans, fan1 (the first to follow) to fan8; star follows each fan
    back just after. Three people a page: pages of 3, 3 and 2."""

    def __init__(self, app: Flask, step: timedelta = timedelta(minutes=1)):
        self.app = app
        self.client = app.test_client()
        fans = [f"fan{n}" for n in range(1, 9)]
        with app.app_context():
            for name in ["star", *fans]:
                add_user(name)
            pairs = []
            for fan in fans:
                pairs += [(fan, "star"), ("star", fan)]
            add_follows(pairs, step=step / 2)
            star = user_id("star")
            # (list, fan) -> the fan's place on that list of star's, from the database.
            self.cursors = {}
            for follower, followed, created in db.session.execute(select(followers)):
                which, fan = (
                    ("followers", follower) if followed == star else ("following", followed)
                )
                self.cursors[which, db.session.get(User, fan).username] = cursor_of(created, fan)

    def cursor(self, which: str, fan: str) -> str:
        return self.cursors[which, fan]


@pytest.fixture
def crowd(make_app) -> Crowd:
    return Crowd(make_app(POSTS_PER_PAGE=PER_PAGE))


NEWEST_FIRST = [f"fan{n}" for n in range(8, 0, -1)]


@pytest.mark.parametrize("which", LISTS)
def test_walking_the_links_down_and_back_up(crowd, which):
    """Every link to the character, and every fan exactly once each way."""
    path = f"/user/star/{which}"
    first = crowd.client.get(path)
    assert people_on(first) == ["fan8", "fan7", "fan6"]
    assert links(first) == {
        "Newer": None,
        "Older": f"{path}?page=2&before={crowd.cursor(which, 'fan6')}",
    }
    second = crowd.client.get(links(first)["Older"])
    assert people_on(second) == ["fan5", "fan4", "fan3"]
    assert links(second) == {
        "Newer": path,  # page 1 is the list's own URL
        "Older": f"{path}?page=3&before={crowd.cursor(which, 'fan3')}",
    }
    third = crowd.client.get(links(second)["Older"])
    assert people_on(third) == ["fan2", "fan1"]
    assert links(third) == {
        "Newer": f"{path}?page=2&after={crowd.cursor(which, 'fan2')}",
        "Older": None,
    }
    back = crowd.client.get(links(third)["Newer"])
    assert people_on(back) == people_on(second)
    assert links(back) == links(second)


@pytest.mark.parametrize("which", LISTS)
def test_page_numbers_typed_by_hand(crowd, which):
    path = f"/user/star/{which}"
    assert people_on(crowd.client.get(f"{path}?page=2")) == ["fan5", "fan4", "fan3"]
    third = crowd.client.get(f"{path}?page=3")
    assert people_on(third) == ["fan2", "fan1"]
    assert links(third)["Newer"] == f"{path}?page=2&after={crowd.cursor(which, 'fan2')}"
    assert_not_found(crowd.client.get(f"{path}?page=4"))


@pytest.mark.parametrize("which", LISTS)
def test_follows_begun_in_the_same_microsecond_are_neither_skipped_nor_repeated(make_app, which):
    """Eight follows at one instant: the person's id decides their order."""
    crowd = Crowd(make_app(POSTS_PER_PAGE=PER_PAGE), step=timedelta(0))
    seen, url = [], f"/user/star/{which}"
    while url:
        response = crowd.client.get(url)
        seen += people_on(response)
        url = links(response)["Older"]
    assert seen == NEWEST_FIRST  # registered in that order: ids ascending


@pytest.mark.parametrize(
    "query",
    [
        "before=abc",
        "before=",
        "before=12",
        "before=-12",
        "after=12-",
        "after=",
        "before=1.5-2",
        "before=1-99999999999999999999",  # more than any id column holds
        "before=1-9223372036854775808",  # one more than the largest 64-bit id
        "before=999999999999999999-1",  # past the year 9999
        "before=%EF%BC%91-1",  # a full-width digit one
        "page=0",
        "page=-1",
        "page=",
        "page=abc",
        "page=1e3",
        "page=1000001",  # past MAX_PAGE
        "page=99999999999999999999",
        "page=4",  # past the end
        "page=2&before=0-1",  # before the first follow ever: a page past the end
        f"page=2&after={LATEST}-1",  # newer than every follow, on page 2
        "page=0&before={c6}",
        "page=abc&after={c6}",
        "page=2&before=abc&after={c6}",  # "before" is read first
    ],
)
@pytest.mark.parametrize("which", LISTS)
def test_bad_paging_parameters_are_not_found(crowd, which, query):
    query = query.format(c6=crowd.cursor(which, "fan6"))
    assert_not_found(crowd.client.get(f"/user/star/{which}?{query}"))


@pytest.mark.parametrize("which", LISTS)
def test_before_and_after_together_is_the_before_page(crowd, which):
    """As for the lists of posts (app/pagination.py): ``before`` wins, ``after`` is ignored,
    even when it is malformed."""
    path = f"/user/star/{which}"
    before = f"page=2&before={crowd.cursor(which, 'fan6')}"
    expected = crowd.client.get(f"{path}?{before}")
    for after in [crowd.cursor(which, "fan2"), "abc"]:
        response = crowd.client.get(f"{path}?{before}&after={after}")
        assert people_on(response) == people_on(expected) == ["fan5", "fan4", "fan3"]
        assert links(response) == links(expected)


@pytest.mark.parametrize("which", LISTS)
def test_a_cursor_newer_than_everyone_on_page_1_is_an_empty_page(crowd, which):
    response = crowd.client.get(f"/user/star/{which}?after={LATEST}-1")
    assert people_on(response) == []
    assert "Nobody yet." in response.text
    assert links(response) is None


@pytest.mark.parametrize("which", LISTS)
def test_a_page_number_given_twice_counts_once(crowd, which):
    """The first of ?page=2&page=3 is the page (Werkzeug's args.get reads the first)."""
    response = crowd.client.get(f"/user/star/{which}?page=2&page=3")
    assert people_on(response) == ["fan5", "fan4", "fan3"]


@pytest.mark.parametrize("which", LISTS)
@pytest.mark.parametrize("query", ["before=1-1%00", "page=%002"])
def test_a_nul_in_a_paging_parameter_is_the_400_page(crowd, which, query):
    response = crowd.client.get(f"/user/star/{which}?{query}")
    assert response.status_code == 400
    assert "The request contained a character that isn't allowed (NUL)." in page_text(response)


@pytest.mark.parametrize("which", LISTS)
def test_raw_bytes_in_a_paging_parameter_are_the_400_page(crowd, which):
    response = crowd.client.get(
        f"/user/star/{which}", environ_overrides={"QUERY_STRING": "page=\xff"}
    )
    assert response.status_code == 400
    assert "The request could not be understood." in page_text(response)


# --- People leaving the list between two pages --------------------------------------------


def leave_by_unfollowing(crowd: Crowd, which: str, fan: str) -> None:
    """The fan stops following star (their followers list), or star stops following
    the fan (star's following list), through the profile page's button."""
    if which == "followers":
        client, target = logged_in(crowd.app, fan), "star"
    else:
        client, target = logged_in(crowd.app, "star"), fan
    assert client.post(f"/unfollow/{target}").headers["Location"] == f"/user/{target}"


def delete_account(crowd: Crowd, fan: str) -> None:
    client = logged_in(crowd.app, fan)
    response = client.post("/auth/delete_account", data={"current_password": PASSWORD})
    assert response.headers["Location"] == "/"
    with crowd.app.app_context():
        assert user_id(fan) is None


@pytest.mark.parametrize("which", LISTS)
def test_people_leaving_between_pages_skip_and_repeat_nobody(crowd, which):
    """Page 1 ends with fan6, whose follow ends before Older is clicked: the cursor is a
    place on the list, not a row, so page 2 still starts right after it. Then fan3 on
    page 2 deletes their account before page 2 is read."""
    path = f"/user/star/{which}"
    first = crowd.client.get(path)
    assert people_on(first) == ["fan8", "fan7", "fan6"]
    leave_by_unfollowing(crowd, which, "fan6")
    delete_account(crowd, "fan3")

    second = crowd.client.get(links(first)["Older"])
    assert people_on(second) == ["fan5", "fan4", "fan2"]
    third = crowd.client.get(links(second)["Older"])
    assert people_on(third) == ["fan1"]
    assert links(third)["Older"] is None

    # From the top again, following every Older link to the end: the six left,
    # each exactly once, newest first, on two full pages.
    pages, url = [], path
    while url:
        assert len(pages) < 3, f"an Older link after {pages}: the links go round"
        response = crowd.client.get(url)
        pages.append(people_on(response))
        url = links(response)["Older"]
    assert pages == [["fan8", "fan7", "fan5"], ["fan4", "fan2", "fan1"]]


@pytest.mark.parametrize("which", LISTS)
def test_the_newer_link_survives_its_person_leaving(crowd, which):
    """Page 3's Newer link starts from fan2; fan2 leaves; the link still gives page 2."""
    path = f"/user/star/{which}"
    third = crowd.client.get(f"{path}?page=3")
    leave_by_unfollowing(crowd, which, "fan2")
    second = crowd.client.get(links(third)["Newer"])
    assert people_on(second) == ["fan5", "fan4", "fan3"]
    assert links(second)["Newer"] == path

"""The blog as it is deployed: gunicorn, the production config, a real database
built by `flask db upgrade`, and a client that goes through the forms (CSRF
tokens included) the way a browser does.
"""

import pytest

from tests.databases import fresh_database
from tests.pages import STYLESHEET_LINK
from tests.servers import Browser, production_env, run_gunicorn

# Every test here starts real servers or processes: `make test-fast` skips them.
pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`flask db upgrade`, then gunicorn with two workers serving blog:app, on a fresh database."""
    tmp_path = tmp_path_factory.mktemp("production")
    # The database outlives gunicorn: it is dropped only once the workers are gone.
    with (
        fresh_database(tmp_path) as database_url,
        run_gunicorn(production_env(tmp_path, database_url), tmp_path, app="blog:app") as gunicorn,
    ):
        yield gunicorn.url


def register(browser: Browser, username: str):
    return browser.submit(
        "/auth/register",
        {
            "username": username,
            "email": f"{username}@example.com",
            "password": "a-good-password",
            "password2": "a-good-password",
        },
    )


def login(browser: Browser, username: str):
    return browser.submit("/auth/login", {"username": username, "password": "a-good-password"})


def test_register_login_post_and_duplicate_rename(server):
    """A person's first visit, ending with the duplicate-username error on screen."""
    browser = Browser(server)
    for name in ("prod_admin", "prod_admin1"):
        status, headers, _ = register(browser, name)
        assert (status, headers["Location"]) == (302, "/auth/login")

    status, headers, _ = login(browser, "prod_admin")
    assert (status, headers["Location"]) == (302, "/")

    status, headers, _ = browser.submit("/", {"post": "Hello from gunicorn"})
    assert (status, headers["Location"]) == (302, "/")
    status, _, page = browser.request("/")
    assert "Your post is now live!" in page
    assert "Hello from gunicorn" in page

    status, _, page = browser.submit(
        "/edit_profile", {"username": "prod_admin1", "about_me": "changed?"}
    )
    assert status == 200
    assert "Please use a different username." in page
    status, _, page = browser.request("/user/prod_admin")
    assert status == 200
    assert "changed?" not in page
    assert "Profile (prod_admin)" in page


def test_post_without_csrf_token_is_refused(server):
    status, _, page = Browser(server).request(
        "/auth/register", {"username": "nocsrf", "email": "n@example.com"}
    )
    assert status == 400
    assert "The form has expired" in page
    status, _, _ = Browser(server).request("/user/nocsrf")
    assert status == 404


@pytest.mark.parametrize(
    ("path", "status", "text"),
    [
        ("/no/such/page", 404, "Page not found"),
        ("/explore?page=abc", 404, "Page not found"),
        ("/user/nobody-here", 404, "Page not found"),
        ("/auth/logout", 405, "Method not allowed"),
    ],
)
def test_error_pages_under_gunicorn(server, path, status, text):
    got_status, _, page = Browser(server).request(path)
    assert got_status == status
    assert text in page
    assert STYLESHEET_LINK in page

"""Error pages: every failure gets a page in the site's layout (or JSON for API
clients), and the 500 page renders even when what broke is the database.

In this module the app does not propagate exceptions (TESTING would), so an
exception in a view reaches the 500 handler as it does in production. The app
has a few routes that fail on purpose.
"""

import shutil
import sqlite3
from collections.abc import Iterator

import pytest
from flask import Flask, abort
from jinja2 import ChoiceLoader, DictLoader
from sqlalchemy import select
from sqlalchemy.exc import OperationalError
from werkzeug.debug import DebuggedApplication
from werkzeug.test import Client

from app.extensions import db
from app.models import User
from tests.databases import ON_POSTGRESQL, drop_database, fresh_database, upgrade_database
from tests.failing_routes import add_failing_routes
from tests.helpers import PASSWORD, add_user
from tests.pages import STYLESHEET_LINK

ERROR_500 = "An unexpected error has occurred"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


@pytest.fixture
def app(make_app) -> Flask:
    app = make_app(PROPAGATE_EXCEPTIONS=False)
    add_failing_routes(app)
    return app


# --- Pages in the site's layout ---------------------------------------------


def test_404_page_is_in_the_site_layout(client):
    response = client.get("/no/such/page")
    assert response.status_code == 404
    page = response.text
    assert "<title>Page not found · Blog</title>" in page
    assert "<h1>Page not found</h1>" in page
    assert '<a href="/">Back to the home page</a>' in page
    assert '<a href="/explore">the latest posts</a>' in page  # the 404 page's own extra
    assert STYLESHEET_LINK in page
    assert "cdn" not in page
    assert "jsdelivr" not in page


def test_404_page_shows_who_is_logged_in(client, auth, users):
    auth.login()
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert "Profile (admin)" in response.text


def test_405_page_keeps_the_allow_header(client):
    response = client.get("/auth/logout")
    assert response.status_code == 405
    assert "<h1>Method not allowed</h1>" in response.text
    assert "POST" in response.headers["Allow"]
    assert "GET" not in response.headers["Allow"]


def test_413_page_for_a_request_that_is_too_large(make_app):
    client = make_app(MAX_CONTENT_LENGTH=1000).test_client()
    response = client.post("/auth/login", data={"username": "a" * 5000, "password": "x"})
    assert response.status_code == 413
    assert "<h1>Request too large</h1>" in response.text


def test_403_page(client):
    response = client.get("/_test/forbidden")
    assert response.status_code == 403
    assert "<h1>Forbidden</h1>" in response.text


def test_csrf_failure_page(make_app):
    client = make_app(WTF_CSRF_ENABLED=True).test_client()
    response = client.post("/auth/login", data={"username": "admin", "password": "x"})
    assert response.status_code == 400
    assert "The form has expired" in response.text
    assert "<h1>Bad request</h1>" in response.text


# --- The 500 page -----------------------------------------------------------


def test_500_page(client):
    response = client.get("/_test/fail")
    assert response.status_code == 500
    assert f"<h1>{ERROR_500}</h1>" in response.text
    assert STYLESHEET_LINK in response.text
    assert "Log in" in response.text


def test_500_page_shows_who_is_logged_in(client, auth, users):
    auth.login()
    response = client.get("/_test/fail")
    assert response.status_code == 500
    assert ERROR_500 in response.text
    assert "Profile (admin)" in response.text


def test_500_page_after_a_failed_flush(app, client, auth, users):
    """The double fault: the view leaves the session broken by an
    IntegrityError; the handler rolls back, so the page (and the navigation's
    username) renders instead of Flask's bare "Internal Server Error"."""
    auth.login()
    response = client.get("/_test/rename-to-admin1")
    assert response.status_code == 500
    assert ERROR_500 in response.text
    assert "Profile (admin)" in response.text
    assert "Internal Server Error" not in response.text
    with app.app_context():
        assert db.session.scalar(select(User.username).where(User.id == users["admin"])) == "admin"
    assert client.get("/user/admin").status_code == 200


@pytest.fixture
def lost_database_app(make_app, tmp_path) -> Iterator[Flask]:
    """An app on a database of its own, with a route that deletes that database.

    /lose-database runs after the logged-in user was loaded (by the
    before_request hook), so the session holds them and a connection. It
    closes the engine's pool, deletes the database, and fails. The 500
    handler's rollback expires the user, so showing their name needs a
    connection, and there is no database left to connect to: a real
    OperationalError, as when a database server goes away. On SQLite the
    directory the file lives in is deleted (so that SQLite can't create a new,
    empty file); on PostgreSQL the database is dropped, which also ends the
    session's connection.
    """
    folder = tmp_path / "database"
    folder.mkdir()
    with fresh_database(folder) as url:
        upgrade_database(url)
        lost = make_app(SQLALCHEMY_DATABASE_URI=url, PROPAGATE_EXCEPTIONS=False)

        def lose_database():
            db.engine.dispose()
            if ON_POSTGRESQL:
                drop_database(url)
            else:
                shutil.rmtree(folder)
            raise RuntimeError("the database is gone")

        lost.add_url_rule("/lose-database", view_func=lose_database)
        with lost.app_context():
            add_user("admin")
        yield lost


def test_500_page_when_the_database_is_gone(lost_database_app):
    client = lost_database_app.test_client()
    response = client.post("/auth/login", data={"username": "admin", "password": PASSWORD})
    assert response.headers["Location"] == "/"
    assert "Profile (admin)" in client.get("/").text

    response = client.get("/lose-database")
    assert response.status_code == 500
    assert f"<h1>{ERROR_500}</h1>" in response.text
    assert "Profile (admin)" not in response.text
    assert "Log in" in response.text  # the full page, with the anonymous navigation

    # Every page now fails to load the user: the database is unavailable,
    # and that has a page of its own, which renders without it.
    response = client.get("/")
    assert response.status_code == 503
    assert "Temporarily unavailable" in response.text
    assert response.headers["Retry-After"] == "30"


def test_last_resort_page_when_the_500_template_fails(app, caplog):
    """If errors/500.html itself fails to render, a page that needs nothing is sent."""
    # A broken 500 template: it includes a partial that doesn't exist, as after a rename.
    broken = "{% extends 'base.html' %}{% block content %}{% include 'gone.html' %}{% endblock %}"
    app.jinja_loader = ChoiceLoader([DictLoader({"errors/500.html": broken}), app.jinja_loader])

    response = app.test_client().get("/_test/fail")
    assert response.status_code == 500
    assert response.content_type == "text/html; charset=utf-8"
    assert "<title>Server error</title>" in response.text
    assert f"<h1>{ERROR_500}</h1>" in response.text
    assert "The 500 page itself failed to render" in caplog.text


# --- JSON for API clients ---------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "error", "message"),
    [
        (
            "GET",
            "/no/such/page",
            404,
            "Page not found",
            "Sorry, that page doesn't exist. The link may be broken or the page removed.",
        ),
        ("GET", "/auth/logout", 405, "Method not allowed", "That action isn't allowed here."),
        ("GET", "/_test/forbidden", 403, "Forbidden", "You don't have permission to do that."),
        (
            "GET",
            "/_test/fail",
            500,
            ERROR_500,
            "Something went wrong on our side. It has been logged for us to look into.",
        ),
    ],
)
def test_json_clients_get_json_errors(client, method, path, status, error, message):
    response = client.open(path, method=method, headers={"Accept": "application/json"})
    assert response.status_code == status
    assert response.is_json
    body = response.json  # may carry more keys (a request id...), but always these three
    assert (body["error"], body["message"], body["status"]) == (error, message, status)


def test_json_405_keeps_the_allow_header(client):
    response = client.get("/auth/logout", headers={"Accept": "application/json"})
    assert response.json["status"] == 405
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize("accept", [BROWSER_ACCEPT, "*/*", None])
@pytest.mark.parametrize(("path", "status"), [("/no/such/page", 404), ("/_test/fail", 500)])
def test_browsers_and_curl_get_html_errors(client, accept, path, status):
    headers = {"Accept": accept} if accept else {}
    response = client.get(path, headers=headers)
    assert response.status_code == status
    assert response.mimetype == "text/html"
    assert "<!doctype html>" in response.text


# --- In debug mode (`flask run --debug`) -------------------------------------------


@pytest.fixture
def debug_app(make_app) -> Flask:
    """The app as `flask run --debug` makes it: debug on, not testing."""
    app = make_app(TESTING=False, DEBUG=True, WTF_CSRF_ENABLED=True)
    add_failing_routes(app)
    app.add_url_rule("/abort-500", view_func=lambda: abort(500))

    def outage():
        # What SQLAlchemy raises when the SQLite file can't be opened.
        cause = sqlite3.OperationalError("unable to open database file")
        raise OperationalError("SELECT 1", {}, cause)

    app.add_url_rule("/outage", view_func=outage)
    return app


def test_in_debug_mode_an_unhandled_exception_goes_to_the_debugger(debug_app):
    # PROPAGATE_EXCEPTIONS is left unset, and Flask then propagates in debug
    # mode: the exception skips the 500 handler and reaches the server.
    assert debug_app.config["PROPAGATE_EXCEPTIONS"] is None
    with pytest.raises(ZeroDivisionError, match="division by zero"):
        debug_app.test_client().get("/_test/fail")

    # What `flask run --debug` puts around the app shows it with its traceback.
    debugger = DebuggedApplication(debug_app, evalex=True)
    response = Client(debugger).get("/_test/fail", headers={"Accept": BROWSER_ACCEPT})
    assert response.status_code == 500
    page = response.get_data(as_text=True)
    assert "ZeroDivisionError: division by zero" in page
    assert "Werkzeug Debugger" in page
    assert ERROR_500 not in page


@pytest.mark.parametrize(
    ("method", "path", "status", "title"),
    [
        ("GET", "/no/such/page", 404, "Page not found"),
        ("GET", "/_test/forbidden", 403, "Forbidden"),
        ("POST", "/_test/forbidden", 405, "Method not allowed"),
        ("POST", "/auth/login", 400, "Bad request"),  # no CSRF token
        ("GET", "/abort-500", 500, ERROR_500),
        ("GET", "/outage", 503, "Temporarily unavailable"),
    ],
)
def test_in_debug_mode_handled_errors_keep_their_pages(debug_app, method, path, status, title):
    # Only unhandled exceptions propagate: an HTTPException (abort(500) too)
    # and an exception with a handler of its own get the site's page.
    response = debug_app.test_client().open(path, method=method)
    assert response.status_code == status
    assert f"<h1>{title}</h1>" in response.text

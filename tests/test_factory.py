"""The app factory, the configuration read from the environment, the real
`blog.py` entry point started as its own process, and the `flask` commands.
"""

import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import func, select, text

import config
from app import create_app
from app.database import SQLITE_BUSY_TIMEOUT_MS, tune_sqlite
from app.extensions import db
from app.models import Post, User, followers
from config import (
    DEV_SECRET_KEY,
    Config,
    ConfigError,
    DevelopmentConfig,
    ProductionConfig,
    TestingConfig,
    config_from_env,
    database_url,
    env_bool,
    env_int,
    env_list,
)
from tests.databases import fresh_database
from tests.helpers import config_for
from tests.pages import alerts
from tests.servers import clean_env, free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS = ROOT / "migrations"
FLASK = Path(sys.executable).parent / "flask"
GOOD_SECRET_KEY = "a-test-secret-that-is-long-enough-for-production"


def in_memory(config: type[Config], **overrides) -> type[Config]:
    """`config` on an in-memory database, so that creating the app touches no file."""
    return type(config.__name__, (config,), {"SQLALCHEMY_DATABASE_URI": "sqlite://", **overrides})


# --- The factory ---------------------------------------------------------------------


def test_testing_config_makes_a_testing_app():
    assert create_app(TestingConfig).testing is True


def test_default_config_is_not_testing():
    app = create_app(in_memory(Config))
    assert app.testing is False
    assert app.config["WTF_CSRF_ENABLED"] is True


def test_blueprints_are_registered():
    app = create_app(TestingConfig)
    assert {"main", "auth", "user"} <= set(app.blueprints)


@pytest.mark.parametrize(
    ("rule", "endpoint", "method"),
    [
        ("/", "main.index", "GET"),
        ("/index", "main.index", "GET"),
        ("/explore", "main.explore", "GET"),
        ("/auth/login", "auth.login", "POST"),
        ("/auth/register", "auth.register", "POST"),
        ("/auth/logout", "auth.logout", "POST"),
        ("/user/<username>", "user.profile", "GET"),
        ("/edit_profile", "user.edit_profile", "POST"),
    ],
)
def test_url_rules(rule, endpoint, method):
    rules = {r.rule: r for r in create_app(TestingConfig).url_map.iter_rules()}
    assert rule in rules
    assert rules[rule].endpoint == endpoint
    assert method in rules[rule].methods


def test_logout_is_post_only():
    """A GET (a link, an <img> on another site) cannot log anyone out."""
    rules = [r for r in create_app(TestingConfig).url_map.iter_rules() if r.rule == "/auth/logout"]
    assert [sorted(r.methods - {"OPTIONS"}) for r in rules] == [["POST"]]


def test_sqlite_is_tuned_once_however_many_apps_a_process_creates(make_app, tmp_path):
    """Every SQLite connection gets WAL and a busy timeout (several workers share
    the file), from one listener: each app the factory makes doesn't add another."""
    app = make_app(SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'blog.db'}")
    make_app()
    with app.app_context():
        assert db.session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert db.session.execute(text("PRAGMA busy_timeout")).scalar() == SQLITE_BUSY_TIMEOUT_MS
        assert list(db.engine.pool.dispatch.connect).count(tune_sqlite) == 1


# --- Reading the environment ---------------------------------------------------------


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "Yes", "on", "  on  ", "True\n"])
def test_env_bool_true(monkeypatch, value):
    monkeypatch.setenv("SOME_FLAG", value)
    assert env_bool("SOME_FLAG") is True


@pytest.mark.parametrize("value", ["0", "false", "FALSE", "No", "off", " off "])
def test_env_bool_false(monkeypatch, value):
    monkeypatch.setenv("SOME_FLAG", value)
    assert env_bool("SOME_FLAG", default=True) is False


@pytest.mark.parametrize("default", [False, True])
def test_env_bool_unset_is_the_default(monkeypatch, default):
    monkeypatch.delenv("SOME_FLAG", raising=False)
    assert env_bool("SOME_FLAG", default=default) is default


@pytest.fixture
def invalid_settings(monkeypatch) -> list[str]:
    """config.invalid_settings, emptied for the test and restored after it."""
    noted: list[str] = []
    monkeypatch.setattr(config, "invalid_settings", noted)
    return noted


@pytest.mark.parametrize("value", ["ture", "2", "y", "enabled"])
def test_env_bool_refuses_a_typo(monkeypatch, invalid_settings, value):
    """MAIL_USE_SSL=ture must stop the app, not quietly mean False."""
    monkeypatch.setenv("MAIL_USE_SSL", value)
    assert env_bool("MAIL_USE_SSL") is False
    with pytest.raises(ConfigError, match=r"MAIL_USE_SSL=.* is not a boolean"):
        TestingConfig.check()


@pytest.mark.parametrize(("value", "expected"), [("42", 42), (" 7 ", 7), ("", 10), ("-1", -1)])
def test_env_int(monkeypatch, value, expected):
    monkeypatch.setenv("POSTS_PER_PAGE", value)
    assert env_int("POSTS_PER_PAGE", 10) == expected


def test_env_int_unset_is_the_default(monkeypatch):
    monkeypatch.delenv("POSTS_PER_PAGE", raising=False)
    assert env_int("POSTS_PER_PAGE", 10) == 10


@pytest.mark.parametrize("value", ["ten", "1.5", "10 posts"])
def test_env_int_refuses_a_non_number(monkeypatch, invalid_settings, value):
    monkeypatch.setenv("POSTS_PER_PAGE", value)
    assert env_int("POSTS_PER_PAGE", 10) == 10
    with pytest.raises(ConfigError, match=r"POSTS_PER_PAGE=.* is not a whole number"):
        TestingConfig.check()


@pytest.mark.system
def test_a_typo_in_a_setting_stops_the_real_process_cleanly(tmp_path):
    """Read when config.py is imported, still reported as a configuration error."""
    env = clean_env(
        FLASK_APP="blog.py",
        MAIL_USE_SSL="ture",
        DATABASE_URL=f"sqlite:///{tmp_path / 'blog.sqlite'}",
    )
    assert_refused_at_startup(
        [FLASK, "routes"],
        env,
        "MAIL_USE_SSL='ture' is not a boolean: use 1/true/yes or 0/false/no.",
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a@example.com", ["a@example.com"]),
        (" a@example.com , b@example.com ", ["a@example.com", "b@example.com"]),
        ("a@example.com,,b@example.com,", ["a@example.com", "b@example.com"]),
        ("", []),
        (" , ", []),
    ],
)
def test_env_list_splits_and_trims(monkeypatch, value, expected):
    monkeypatch.setenv("ADMINS", value)
    assert env_list("ADMINS") == expected


def test_env_list_unset_is_empty(monkeypatch):
    monkeypatch.delenv("ADMINS", raising=False)
    assert env_list("ADMINS") == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
        (None, "sqlite:///blog.db"),
        ("", "sqlite:///blog.db"),
    ],
)
def test_database_url(url, expected):
    assert database_url(url) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("development", DevelopmentConfig),
        ("testing", TestingConfig),
        ("production", ProductionConfig),
        ("Production", ProductionConfig),
        (" TESTING ", TestingConfig),
    ],
)
def test_config_from_env_picks_by_flask_config(monkeypatch, name, expected):
    monkeypatch.setenv("FLASK_CONFIG", name)
    assert config_from_env() is expected


def test_config_from_env_defaults_to_development(monkeypatch):
    monkeypatch.delenv("FLASK_CONFIG", raising=False)
    assert config_from_env() is DevelopmentConfig


def test_config_from_env_refuses_an_unknown_name(monkeypatch):
    monkeypatch.setenv("FLASK_CONFIG", "prod")
    with pytest.raises(ConfigError, match="FLASK_CONFIG='prod' is unknown"):
        config_from_env()


# --- Settings the factory refuses ----------------------------------------------------


def test_production_refuses_the_development_secret_key():
    config = in_memory(ProductionConfig, SECRET_KEY=DEV_SECRET_KEY)
    with pytest.raises(ConfigError, match="SECRET_KEY is not set"):
        create_app(config)


def test_production_starts_with_its_own_secret_key():
    app = create_app(in_memory(ProductionConfig, SECRET_KEY=GOOD_SECRET_KEY))
    assert app.testing is False
    assert app.secret_key == GOOD_SECRET_KEY


@pytest.mark.parametrize("config", [DevelopmentConfig, ProductionConfig])
def test_mail_tls_and_ssl_together_are_refused(config):
    bad = in_memory(config, SECRET_KEY=GOOD_SECRET_KEY, MAIL_USE_TLS=True, MAIL_USE_SSL=True)
    with pytest.raises(ConfigError, match=r"MAIL_USE_TLS .* MAIL_USE_SSL"):
        create_app(bad)


@pytest.mark.parametrize("window", [0, -5, 7 * 24 * 3600 + 1, 10**400])
def test_an_error_window_that_is_not_one_is_refused(window):
    bad = in_memory(ProductionConfig, SECRET_KEY=GOOD_SECRET_KEY, MAIL_ERROR_WINDOW=window)
    with pytest.raises(ConfigError, match=r"^MAIL_ERROR_WINDOW=.* is not a number of seconds "):
        create_app(bad)


PROXIES = "it counts the proxies in front, 0 when there is none."
PER_PAGE = "the number of posts a page shows."


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("PROXY_COUNT", -1, f"PROXY_COUNT=-1 is not from 0 to 10: {PROXIES}"),
        ("PROXY_COUNT", 11, f"PROXY_COUNT=11 is not from 0 to 10: {PROXIES}"),
        ("POSTS_PER_PAGE", 0, f"POSTS_PER_PAGE=0 is not from 1 to 1000: {PER_PAGE}"),
        ("POSTS_PER_PAGE", -3, f"POSTS_PER_PAGE=-3 is not from 1 to 1000: {PER_PAGE}"),
        ("POSTS_PER_PAGE", 1001, f"POSTS_PER_PAGE=1001 is not from 1 to 1000: {PER_PAGE}"),
        ("POSTS_PER_PAGE", 10**19, f"POSTS_PER_PAGE={10**19} is not from 1 to 1000: {PER_PAGE}"),
    ],
)
def test_a_number_out_of_its_range_is_refused(setting, value, message):
    """A negative PROXY_COUNT was a 500 at the first request with X-Forwarded-For,
    a negative or huge POSTS_PER_PAGE at every listing (its OFFSET overflowed):
    now each stops the app at startup."""
    bad = in_memory(ProductionConfig, SECRET_KEY=GOOD_SECRET_KEY, **{setting: value})
    with pytest.raises(ConfigError, match=f"^{re.escape(message)}"):
        create_app(bad)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://h:notaport/0", "is not a URL: Port could not be cast"),
        ("redis://[::1", "is not a URL: Invalid IPv6 URL"),
        ("http://redis.example:6379/0", "is not a Redis URL"),
        ("unix:///run/redis.sock", "is not a Redis URL"),
        ("redis+unix:///run/redis.sock", "is not a Redis URL"),
        ("redis:///0", "is not a Redis URL"),
        ("127.0.0.1:6379", "is not a Redis URL"),
    ],
)
def test_a_redis_url_that_is_not_one_is_refused(url, message):
    bad = in_memory(ProductionConfig, SECRET_KEY=GOOD_SECRET_KEY, REDIS_URL=url)
    with pytest.raises(ConfigError, match=f"^REDIS_URL={re.escape(repr(url))} {message}"):
        create_app(bad)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache.example:6380/2"])
def test_a_redis_url_is_accepted(url):
    app = create_app(in_memory(ProductionConfig, SECRET_KEY=GOOD_SECRET_KEY, REDIS_URL=url))
    assert app.config["REDIS_URL"] == url


@pytest.mark.parametrize(("tls", "ssl"), [(True, False), (False, True), (False, False)])
def test_mail_tls_or_ssl_alone_is_accepted(tls, ssl):
    app = create_app(
        in_memory(ProductionConfig, SECRET_KEY=GOOD_SECRET_KEY, MAIL_USE_TLS=tls, MAIL_USE_SSL=ssl)
    )
    assert (app.config["MAIL_USE_TLS"], app.config["MAIL_USE_SSL"]) == (tls, ssl)


# --- The real process ----------------------------------------------------------------


def run(args: list, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


# Importing blog.py, as gunicorn does, and a `flask` command: the two ways the app starts.
IMPORT_BLOG = [sys.executable, "-c", "import blog"]
FLASK_ROUTES = [FLASK, "routes"]

# The .env named is the one config.py reads, beside it: the project's own.
NO_SECRET_KEY = (
    "SECRET_KEY is not set. Production needs its own secret key: add a line SECRET_KEY=<key> "
    f"to {ROOT / '.env'} (the app reads it, under systemd too), or export SECRET_KEY=<key> "
    "in the shell that starts the app. Make a key with:\n"
    "  python3 -c 'import secrets; print(secrets.token_hex(32))'"
)


def without_dotenv(env: dict[str, str]) -> dict[str, str]:
    """`env`, with every .env file ignored: what a server with no .env sees.

    config.py loads the project's .env, and the `flask` command .env and
    .flaskenv, but only into variables that are absent. A developer's own
    .env (with a SECRET_KEY, say) would otherwise decide what these tests
    see. Both switches belong to the libraries that read the files:
    python-dotenv's for config.py, Flask's for the `flask` command (which then
    needs FLASK_APP, the one setting .flaskenv gives it).
    """
    return env | {"PYTHON_DOTENV_DISABLED": "1", "FLASK_SKIP_DOTENV": "1", "FLASK_APP": "blog.py"}


def assert_refused_at_startup(command: list, env: dict[str, str], message: str) -> None:
    """`command` with `env` stops with exit status 3 and says `message`, and only that.

    Exit status 3 tells gunicorn's master that a worker cannot boot, so that it
    stops instead of starting workers forever; the one message, without a
    traceback, tells the operator which setting to fix.
    """
    result = run(command, without_dotenv(env))
    assert (result.returncode, result.stderr) == (3, f"Configuration error: {message}\n")
    assert result.stdout == ""


@pytest.mark.parametrize("command", [IMPORT_BLOG, FLASK_ROUTES], ids=["import blog", "flask"])
@pytest.mark.system
def test_production_without_secret_key_does_not_start(command):
    """No SECRET_KEY at all: the app says which setting is missing, and how to make one."""
    assert_refused_at_startup(command, clean_env(FLASK_CONFIG="production"), NO_SECRET_KEY)


@pytest.mark.parametrize("command", [IMPORT_BLOG, FLASK_ROUTES], ids=["import blog", "flask"])
@pytest.mark.system
def test_production_with_an_empty_secret_key_does_not_start(command):
    """`SECRET_KEY=` as copied from .env.example."""
    env = clean_env(FLASK_CONFIG="production", SECRET_KEY="")
    assert_refused_at_startup(command, env, NO_SECRET_KEY)


@pytest.mark.parametrize("command", [IMPORT_BLOG, FLASK_ROUTES], ids=["import blog", "flask"])
@pytest.mark.system
def test_unknown_flask_config_does_not_start(command):
    assert_refused_at_startup(
        command,
        clean_env(FLASK_CONFIG="nonsense"),
        "FLASK_CONFIG='nonsense' is unknown: use one of development, testing, production.",
    )


@pytest.mark.system
def test_production_with_a_secret_key_serves_its_routes(fresh_database_url):
    env = clean_env(
        FLASK_APP="blog.py",
        FLASK_CONFIG="production",
        SECRET_KEY=GOOD_SECRET_KEY,
        DATABASE_URL=fresh_database_url,
    )
    result = run([FLASK, "routes"], env)
    assert result.returncode == 0, result.stderr
    for endpoint in ("main.index", "auth.login", "user.profile"):
        assert endpoint in result.stdout


# --- The CLI on a new database -------------------------------------------------------


@pytest.fixture
def new_app(tmp_path) -> Iterator[Callable[[str], Flask]]:
    """Return a factory of apps, each on its own new, empty database."""
    apps = []
    with ExitStack() as stack:  # drops every database made below, last one first

        def factory(name: str = "blog") -> Flask:
            app = create_app(config_for(stack.enter_context(fresh_database(tmp_path, name))))
            apps.append(app)
            return app

        yield factory

        # Close the apps' connections before their databases are dropped.
        for app in apps:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()


def invoke(app: Flask, *args: str) -> Result:
    """Run `flask <args>` on `app` through Flask's CLI test runner."""
    return app.test_cli_runner().invoke(args=list(args))


def upgrade_and_seed(app: Flask, *options: str) -> Result:
    """`flask db upgrade` then `flask seed` with `options`; return seed's result."""
    # -d: otherwise the migrations folder is looked up relative to the working directory.
    result = invoke(app, "db", "upgrade", "-d", str(MIGRATIONS))
    assert result.exit_code == 0, result.output
    return invoke(app, "seed", *options)


SMALL = ("--users", "5", "--posts", "20", "--follows", "2")


def counts(app: Flask) -> tuple[int, int, int]:
    """How many users, posts and follows the app's database holds."""
    with app.app_context():
        return tuple(
            db.session.scalar(select(func.count()).select_from(table))
            for table in (User, Post, followers)
        )


def test_upgrade_then_seed_fills_an_empty_database(new_app):
    app = new_app()
    result = upgrade_and_seed(app, *SMALL)
    assert result.exit_code == 0, result.output
    assert "Added 5 users, 20 posts and 2 follows per user." in result.output
    assert counts(app) == (5, 20, 10)
    with app.app_context():
        assert db.session.scalar(User.select_by_username("demo")) is not None
        follow_pairs = db.session.execute(
            select(followers.c.follower_id, followers.c.followed_id)
        ).all()
    assert all(follower != followed for follower, followed in follow_pairs)


def test_seed_refuses_a_database_with_users(new_app):
    app = new_app()
    assert upgrade_and_seed(app, *SMALL).exit_code == 0
    result = invoke(app, "seed", *SMALL)
    assert result.exit_code != 0
    assert "The database already has 5 users" in result.output
    assert counts(app) == (5, 20, 10)


def test_seed_if_empty_succeeds_and_adds_nothing(new_app):
    """What `make run` does on every start after the first."""
    app = new_app()
    assert upgrade_and_seed(app, *SMALL).exit_code == 0
    result = invoke(app, "seed", "--if-empty")
    assert result.exit_code == 0, result.output
    assert "already has 5 users" in result.output
    assert counts(app) == (5, 20, 10)


@pytest.mark.parametrize("option", [["--users", "0"], ["--posts", "-1"], ["--follows", "x"]])
def test_seed_refuses_bad_numbers(new_app, option):
    app = new_app()
    result = upgrade_and_seed(app, *option)
    assert result.exit_code == 2  # click's usage error
    assert "Invalid value" in result.output
    assert counts(app) == (0, 0, 0)


def seeded_data(app: Flask) -> dict[str, list]:
    with app.app_context():
        author = User.username.label("author")
        return {
            "users": db.session.execute(
                select(User.username, User.email, User.about_me).order_by(User.id)
            ).all(),
            "posts": db.session.execute(
                select(author, Post.body).join(Post.author).order_by(Post.id)
            ).all(),
            # The pairs only: follow times are relative to when `flask seed` ran.
            "follows": sorted(
                db.session.execute(select(followers.c.follower_id, followers.c.followed_id)).all()
            ),
        }


def test_seed_is_deterministic(new_app):
    """The same options on two new databases give the same users, posts and follows."""
    first, second = new_app("first"), new_app("second")
    for app in (first, second):
        assert upgrade_and_seed(app, *SMALL).exit_code == 0
    assert seeded_data(first) == seeded_data(second)
    assert len(seeded_data(first)["posts"]) == 20


def test_seed_with_another_random_seed_gives_other_posts(new_app):
    first, second = new_app("first"), new_app("second")
    assert upgrade_and_seed(first, *SMALL).exit_code == 0
    assert upgrade_and_seed(second, *SMALL, "--seed", "7").exit_code == 0
    assert seeded_data(first)["posts"] != seeded_data(second)["posts"]


def test_demo_user_can_log_in_after_seed(new_app):
    app = new_app()
    assert upgrade_and_seed(app, *SMALL).exit_code == 0
    response = app.test_client().post(
        "/auth/login", data={"username": "demo", "password": "demo-password"}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/"


def test_demo_user_with_a_wrong_password_cannot_log_in(new_app):
    app = new_app()
    assert upgrade_and_seed(app, *SMALL).exit_code == 0
    response = app.test_client().post(
        "/auth/login", data={"username": "demo", "password": "not-the-demo-password"}
    )
    assert response.status_code == 200
    assert alerts(response) == [("danger", "Invalid username or password.")]


def test_seed_runs_without_a_pushed_app_context(new_app):
    """Flask's documented way to test a command: runner.invoke, no context of our own."""
    app = new_app()
    runner = app.test_cli_runner()
    assert runner.invoke(args=["db", "upgrade", "-d", str(MIGRATIONS)]).exit_code == 0
    result = runner.invoke(args=["seed", *SMALL])
    assert result.exit_code == 0, repr(result.exception)
    assert counts(app) == (5, 20, 10)


@pytest.mark.system
def test_flask_db_upgrade_and_seed_from_the_shell(fresh_database_url):
    """`make run` on a new database: the real `flask` commands, as separate processes."""
    env = clean_env(FLASK_APP="blog.py", DATABASE_URL=fresh_database_url)
    upgrade = run([FLASK, "db", "upgrade"], env)
    assert upgrade.returncode == 0, upgrade.stderr
    seed = run([FLASK, "seed", *SMALL], env)
    assert seed.returncode == 0, seed.stderr
    assert "Added 5 users, 20 posts and 2 follows per user." in seed.stdout
    again = run([FLASK, "seed", "--if-empty"], env)
    assert again.returncode == 0, again.stderr
    assert "already has 5 users" in again.stdout


@pytest.mark.system
def test_production_refuses_debug_mode(fresh_database_url):
    """The debugger gives a Python shell to whoever triggers an error: never in production."""
    env = clean_env(
        FLASK_APP="blog.py",
        FLASK_CONFIG="production",
        FLASK_DEBUG="1",
        SECRET_KEY="a-real-production-secret-key",
        DATABASE_URL=fresh_database_url,
    )
    assert_refused_at_startup(
        FLASK_ROUTES,
        env,
        "Debug mode is on (FLASK_DEBUG or --debug). Never run production with the "
        "debugger: anyone who can trigger an error gets a Python shell on the server.",
    )


@pytest.mark.parametrize(
    ("flask_debug", "console_status"),
    [(None, 200), ("1", 200), ("0", 404)],
)
@pytest.mark.system
def test_python_blog_py_has_the_debugger_only_in_debug_mode(
    fresh_database_url, flask_debug, console_status
):
    """`python blog.py` turns debug mode on by default; with FLASK_DEBUG=0 it must
    not bring Werkzeug's debugger (a Python console at /console) along anyway."""
    port = free_port()
    settings = {"FLASK_DEBUG": flask_debug} if flask_debug else {}
    env = clean_env(DATABASE_URL=fresh_database_url, FLASK_RUN_PORT=str(port), **settings)
    # Its own process group: the reloader runs the server in a child process.
    server = subprocess.Popen(
        [sys.executable, "blog.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_status(f"{base}/healthz") == 200, message="python blog.py")
        assert http_status(f"{base}/console") == console_status
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


@pytest.mark.parametrize("port", ["http", "²", "-1", "0", "65536", "99999", "80 00", "1e3"])
@pytest.mark.system
def test_python_blog_py_refuses_a_port_that_is_not_one(port):
    """One line saying what to fix, exit status 1, no traceback, no server."""
    done = subprocess.run(
        [sys.executable, "blog.py"],
        cwd=ROOT,
        env=clean_env(FLASK_RUN_PORT=port, PYTHON_DOTENV_DISABLED="1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"Configuration error: FLASK_RUN_PORT={port!r} is not a port number (1-65535)"
    )
    assert "Traceback" not in done.stderr


def http_status(url: str) -> int | None:
    """The status of a GET, or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None

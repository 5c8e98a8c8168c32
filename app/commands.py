"""Command-line tools: `flask seed` fills an empty database with demo data;
`flask test-email` and `flask test-error` check error reporting before you rely
on it; `flask check-deploy` lists what is unsafe in a production configuration;
`flask translate` (app/translate.py) keeps the translation catalogues up to date."""

import logging
import os
import random
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import click
import redis
import sentry_sdk
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, current_app
from flask.cli import with_appcontext
from flask_babel import force_locale
from flask_babel import gettext as _
from limits.storage import storage_from_string
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.sansio.utils import host_is_trusted
from werkzeug.security import generate_password_hash

from app.database import database_failure
from app.extensions import db
from app.mail import MailError, MailSettings, build_message, outbox, port_mismatch, send
from app.models import Post, User, followers, name_key, now_utc
from app.rate_limit_store import SQLiteStorage
from app.reporting import LOG_HANDLER
from app.reporting.cli import errors_command
from app.reporting.error_mail import ErrorMailHandler
from app.translate import translate_command
from config import DEV_SECRET_KEY, env_bool

DEMO_PASSWORD = "demo-password"

FIRST_NAMES = (
    "alice bob carol dave erin frank grace heidi ivan judy "
    "mallory niaj olivia peggy rupert sybil trent victor walter xiaoming"
).split()
WORDS = (
    "flask blueprint request response template error handler database session commit "
    "rollback migration logging mail server gunicorn worker query index page form "
    "validation user post follow timeline cache deploy config secret test browser"
).split()


def fake_sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(5, 16))
    return " ".join(words).capitalize() + "."


def seed_database(users: int, posts: int, follows: int, seed: int) -> None:
    """Insert demo users, posts and follows in one transaction.

    Deterministic: the same numbers and seed give the same data. Rows go in with
    bulk INSERTs, and the password is hashed once for every demo user (hashing
    is deliberately slow: hashing 1,000 passwords would take most of a minute).
    """
    rng = random.Random(seed)
    now = now_utc()
    password_hash = generate_password_hash(
        DEMO_PASSWORD, method=current_app.config["PASSWORD_HASH_METHOD"]
    )
    names = ["demo"] + [
        f"{FIRST_NAMES[i % len(FIRST_NAMES)]}{i // len(FIRST_NAMES) + 1}" for i in range(users - 1)
    ]
    # A bulk INSERT of dicts skips the model's @validates, which fills the
    # lookup keys for User(...) objects, so the rows carry their keys here.
    user_rows = [
        {
            "username": name,
            "username_key": name_key(name),
            "email": f"{name}@example.com",
            "email_key": name_key(f"{name}@example.com"),
            "password_hash": password_hash,
            "about_me": fake_sentence(rng),
            "created": now - timedelta(days=365),
            "last_seen": now - timedelta(minutes=rng.randint(1, 60 * 24 * 30)),
        }
        for name in names
    ]
    # RETURNING gives back the new ids in the order of the rows we sent.
    user_ids = list(
        db.session.scalars(insert(User).returning(User.id, sort_by_parameter_order=True), user_rows)
    )

    post_rows = [
        {
            "body": fake_sentence(rng),
            "user_id": rng.choice(user_ids),
            "timestamp": now - timedelta(seconds=rng.randint(60, 60 * 60 * 24 * 365)),
        }
        for _ in range(posts)
    ]
    if post_rows:
        db.session.execute(insert(Post), post_rows)

    follow_rows = []
    for user_id in user_ids:
        others = [other for other in user_ids if other != user_id]
        for followed_id in rng.sample(others, min(follows, len(others))):
            follow_rows.append({"follower_id": user_id, "followed_id": followed_id})
    if follow_rows:
        db.session.execute(insert(followers), follow_rows)
    db.session.commit()
    refresh_planner_statistics()


def refresh_planner_statistics() -> None:
    """Tell the database's query planner what its tables hold now.

    After a bulk load the planner's statistics still describe empty tables
    until autovacuum (PostgreSQL) gets round to them, and the first pages
    would be planned as if there were no posts. PostgreSQL's VACUUM also marks
    the new rows visible to index-only scans. VACUUM can't run inside a
    transaction, hence the connection of its own in autocommit mode.
    """
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE"))
    else:
        db.session.execute(text("ANALYZE"))
        db.session.commit()


@click.command("seed")
@click.option("--users", default=25, show_default=True, type=click.IntRange(min=1))
@click.option("--posts", default=250, show_default=True, type=click.IntRange(min=0))
@click.option(
    "--follows", default=5, show_default=True, type=click.IntRange(min=0), help="Follows per user."
)
@click.option("--seed", "random_seed", default=2018, show_default=True, help="Random seed.")
@click.option("--if-empty", is_flag=True, help="Do nothing, successfully, if there are users.")
# The `flask` command pushes an app context for every command, but Flask's
# test runner (app.test_cli_runner()) does so only for commands that ask.
@with_appcontext
def seed_command(users: int, posts: int, follows: int, random_seed: int, if_empty: bool) -> None:
    """Fill an empty database with demo users, posts and follows."""
    existing = db.session.scalar(select(func.count()).select_from(User))
    if existing:
        message = f"The database already has {existing} users; not adding demo data."
        if if_empty:
            click.echo(message)
            return
        raise click.ClickException(message)
    seed_database(users, posts, follows, random_seed)
    click.echo(f"Added {users} users, {posts} posts and {follows} follows per user.")
    click.echo(f"Log in as 'demo' with password '{DEMO_PASSWORD}'.")


@click.command("test-email")
@with_appcontext
def test_email_command() -> None:
    """Send a test mail to ADMINS, to check the mail settings."""
    config = current_app.config
    settings = MailSettings.from_config(config)
    if settings is None:
        raise click.ClickException("MAIL_SERVER is not set, so mail is off.")
    if not config["ADMINS"]:
        raise click.ClickException("ADMINS is not set: there is nobody to send to.")
    mode = "SSL" if settings.use_ssl else "STARTTLS" if settings.use_tls else "no encryption"
    click.echo(
        f"Sending from {settings.sender} to {', '.join(config['ADMINS'])} "
        f"via {settings.server}:{settings.port} ({mode})..."
    )
    # In the error mails' language, so that it shows how they will arrive.
    with force_locale(config["ADMIN_LOCALE"]):
        message = build_message(
            settings,
            config["ADMINS"],
            config["MAIL_SUBJECT_PREFIX"] + " " + _("Test mail"),
            _(
                "This is a test mail from `flask test-email`: "
                "error mails will arrive like this one."
            ),
        )
    try:
        send(settings, message)
    except MailError as error:
        raise click.ClickException(f"Not delivered: {error}") from None
    click.echo("Delivered.")


@click.command("test-error")
@with_appcontext
def test_error_command() -> None:
    """Log a test error through the whole pipeline: log, error mail, Sentry."""
    logger = current_app.logger
    try:
        raise RuntimeError("This is a test error from `flask test-error`.")
    except RuntimeError:
        # A fingerprint of its own each time, so storm control mails every test.
        logger.exception("Test error", extra={"fingerprint": f"test-error-{uuid.uuid4()}"})

    click.echo(f"Logged to: {log_destination(logger)}")

    mail_handler = next((h for h in logger.handlers if isinstance(h, ErrorMailHandler)), None)
    outcome = None
    if mail_handler is None or mail_handler.settings is None:
        click.echo("Error mail: off (MAIL_SERVER or ADMINS is not set).")
    else:
        finished = outbox.drain()  # wait for the background sender to deal with it
        outcome = mail_handler.last_outcome
        if outcome is None and not logger.isEnabledFor(logging.ERROR):
            outcome = "not sent: LOG_LEVEL drops ERROR records"
        elif outcome is None:
            outcome = "not sent: " + ("no answer in time" if not finished else "unknown")
        click.echo(f"Error mail: {outcome}")

    if not sentry_sdk.is_initialized():
        click.echo("Sentry: off (SENTRY_DSN is not set).")
    elif sentry_sdk.last_event_id():
        sentry_sdk.flush(timeout=10)
        click.echo(f"Sentry: event {sentry_sdk.last_event_id()} sent.")
    else:
        click.echo("Sentry: no event was recorded.")
    if outcome is not None and not outcome.startswith("delivered"):
        sys.exit(1)


def log_destination(logger: logging.Logger) -> str:
    """Where the app's log handler writes: a file's path, or a stream's name."""
    for handler in logger.handlers:
        if handler.name == LOG_HANDLER:
            return getattr(handler, "baseFilename", None) or handler.stream.name
    return "nowhere (logging is not set up: debug or testing mode)"


@click.command("check-deploy")
@with_appcontext
def check_deploy_command() -> None:
    """Check the configuration for production and list every problem (like Django's
    `check --deploy`); exit non-zero if there is one."""
    problems = deployment_problems(current_app)
    for problem in problems:
        click.echo(f"PROBLEM: {problem}")
    # Warnings: right for some deployments, wrong for others; they don't fail the check.
    for warning in deployment_warnings(current_app):
        click.echo(f"WARNING: {warning}")
    if problems:
        raise click.ClickException(f"{len(problems)} problem(s) found.")
    click.echo("No problems found.")


def deployment_problems(app: Flask) -> list[str]:
    """Everything in `app`'s configuration that is unsafe or broken in production."""
    config = app.config
    problems = []
    if os.environ.get("FLASK_CONFIG", "development") != "production":
        problems.append("FLASK_CONFIG is not 'production': the checks below assume it is.")
    if config["SECRET_KEY"] == DEV_SECRET_KEY or len(config["SECRET_KEY"]) < 32:
        problems.append("SECRET_KEY is the development default or shorter than 32 characters.")
    if app.debug or env_bool("FLASK_DEBUG"):
        problems.append("Debug mode is on: the debugger lets anyone run code on the server.")
    if not config["SESSION_COOKIE_SECURE"]:
        problems.append(
            "SESSION_COOKIE_SECURE is off: cookies are Secure only on requests the app sees "
            "as HTTPS (behind a proxy, that needs PROXY_COUNT)."
        )
    if config["BASE_URL"] and config["TRUSTED_HOSTS"] is not None:
        host = urlsplit(config["BASE_URL"]).netloc
        if not host_is_trusted(host, config["TRUSTED_HOSTS"]):
            problems.append(
                f"BASE_URL's host {host!r} is not in TRUSTED_HOSTS: the site would refuse "
                "the links in its own mails."
            )
    if not config["ADMINS"] or not config["MAIL_SERVER"]:
        problems.append("ADMINS or MAIL_SERVER is not set: nobody is told about errors.")
    if not config["LOG_TO_STDOUT"] and not directory_is_writable(Path(config["LOG_DIR"])):
        problems.append(f"The log directory {config['LOG_DIR']} is not writable.")
    try:
        problems += database_problems()
    except SQLAlchemyError as error:
        problems.append(f"The database can't be reached: {database_failure(error)}")
    return problems


def deployment_warnings(app: Flask) -> list[str]:
    """What works, but probably not as meant: several workers each counting
    rate limits in memory (by choice, or because their store can't be used),
    a mail port that doesn't match the TLS mode, reset mails that only a
    request for localhost gets."""
    config = app.config
    warnings = []
    workers = gunicorn_workers()
    if config["RATELIMIT_STORAGE_URI"].startswith("memory://") and workers > 1:
        warnings.append(
            f"Rate limits are counted in memory by each of {workers} workers: a client gets "
            "up to that many times each limit. Unset RATELIMIT_STORAGE_URI (memory://) to "
            "count them in one place."
        )
    settings = MailSettings.from_config(config)
    if settings is not None and (mismatch := port_mismatch(settings)):
        warnings.append(mismatch)
    if settings is not None and not config["BASE_URL"] and config["TRUSTED_HOSTS"] is None:
        # Right for a first test on the server itself; not for a public site.
        warnings.append(
            "Neither BASE_URL nor TRUSTED_HOSTS is set: password-reset mails go out only "
            "for requests addressed to localhost, as any other Host header may be forged. "
            "Set BASE_URL to the site's address (https://blog.example.com), or TRUSTED_HOSTS "
            "to the host names it serves."
        )
    if config["REDIS_URL"]:
        try:
            redis.Redis.from_url(config["REDIS_URL"], socket_connect_timeout=2).ping()
        except redis.RedisError as error:
            warnings.append(
                f"REDIS_URL doesn't answer ({error}): storm control and rate limits fall "
                "back to each process's memory until it does."
            )
    # The rate limits' own store (unless it is the Redis just pinged). While
    # it fails, each worker counts in its own memory and says so only in the
    # log, at the first failure (app/rate_limit_store.py).
    uri = config["RATELIMIT_STORAGE_URI"]
    if uri != config["REDIS_URL"]:
        storage = storage_from_string(uri, **config["RATELIMIT_STORAGE_OPTIONS"])
        if not storage.check():
            if isinstance(storage, SQLiteStorage):
                where = f"the file {storage.path}"
                fix = (
                    "Make its folder writable (LOG_DIR, by default), or set "
                    "RATELIMIT_STORAGE_URI to a file that can be written (or to Redis)."
                )
            else:
                where = "RATELIMIT_STORAGE_URI"  # not shown: a Redis URL may hold a password
                fix = "Check that its server answers, or unset RATELIMIT_STORAGE_URI."
            warnings.append(
                f"Rate limits can't be counted in {where}: each worker counts them in its "
                f"own memory instead, so a client gets each limit once per worker. {fix}"
            )
    return warnings


def gunicorn_workers() -> int:
    """How many workers gunicorn.conf.py starts: WEB_CONCURRENCY, else two per core."""
    return int(os.environ.get("WEB_CONCURRENCY") or 2 * (os.cpu_count() or 1))


def directory_is_writable(path: Path) -> bool:
    # Actually try: permission bits say nothing about read-only mounts or root.
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            return True
    except OSError:
        return False


def database_problems() -> list[str]:
    """Pending migrations, and SQLite without WAL under several workers (the app
    turns WAL on for every connection: this finds filesystems where it can't)."""
    problems = []
    with db.engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_heads()
        if db.engine.dialect.name == "sqlite":
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
            workers = gunicorn_workers()
            if mode != "wal" and workers > 1:
                problems.append(
                    f"SQLite in {mode!r} journal mode with {workers} workers: "
                    "writers will fail with 'database is locked' (use WAL)."
                )
    heads = ScriptDirectory(str(current_app.extensions["migrate"].directory)).get_heads()
    if set(current) != set(heads):
        problems.append("The database schema is not up to date: run `flask db upgrade`.")
    return problems


def register_commands(app: Flask) -> None:
    commands = (
        seed_command,
        test_email_command,
        test_error_command,
        check_deploy_command,
        translate_command,
        errors_command,
    )
    for command in commands:
        app.cli.add_command(command)

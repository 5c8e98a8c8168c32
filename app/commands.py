"""Command-line tools: `flask seed` fills an empty database with demo data;
`flask test-email` and `flask test-error` check error reporting before you rely
on it; `flask check-deploy` lists what is unsafe in a production configuration;
`flask users set-password` lets an admin back into an account from the server;
`flask translate` (app/translate.py) keeps the translation catalogues up to
date. (`flask shell` starts with `db` and every model: Flask-SQLAlchemy adds them.)

One request hook is defined here too, because it works for a command (create_app
registers it): the running app notes requests that came through a proxy
PROXY_COUNT doesn't count, in a file `flask check-deploy` reads (it runs in a
process of its own).
"""

import errno
import getpass
import ipaddress
import json
import logging
import os
import random
import socket
import sys
import tempfile
import uuid
from collections.abc import Mapping
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import click
import redis
import sentry_sdk
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, current_app, request
from flask.cli import AppGroup, with_appcontext
from flask_babel import force_locale
from flask_babel import gettext as _
from limits.storage import storage_from_string
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.sansio.utils import host_is_trusted
from werkzeug.security import generate_password_hash

from app.auth.forms import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH
from app.database import database_failure
from app.extensions import db
from app.lab.cli import lab_command
from app.mail import MailError, MailSettings, build_message, outbox, port_mismatch, send
from app.models import (
    USERNAME_MAX_LENGTH,
    Post,
    User,
    followers,
    name_key,
    now_utc,
    stored_name,
)
from app.rate_limit_store import SQLiteStorage
from app.reporting import LOG_HANDLER, STORE_FILE
from app.reporting.cli import errors_command
from app.reporting.error_mail import ErrorMailHandler
from app.reporting.log_file import LogFileHandler
from app.reporting.storm import store_location
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
            follow_rows.append(
                {
                    "follower_id": user_id,
                    "followed_id": followed_id,
                    "created": now - timedelta(seconds=rng.randint(60, 60 * 60 * 24 * 365)),
                }
            )
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
    if not config["SESSION_COOKIE_SECURE"] and served_over_https(config):
        problems.append(
            "SESSION_COOKIE_SECURE is off, but BASE_URL says the site is served over HTTPS: "
            "set SESSION_COOKIE_SECURE=1, so that no cookie is ever sent over plain HTTP "
            "(without it, cookies are Secure only on requests the app sees as HTTPS, which "
            "behind a proxy needs PROXY_COUNT)."
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
    problems += log_dir_problems(config)
    if bind_problem := gunicorn_bind_problem(gunicorn_bind()):
        problems.append(bind_problem)
    if workers_problem := gunicorn_workers_problem():
        problems.append(workers_problem)
    try:
        problems += database_problems()
    except SQLAlchemyError as error:
        problems.append(f"The database can't be reached: {database_failure(error)}")
    return problems


def deployment_warnings(app: Flask) -> list[str]:
    """What works, but probably not as meant: several workers each counting
    rate limits in memory (by choice, or because their store can't be used),
    rate limits off, a mail port that doesn't match the TLS mode, reset mails
    that only a request for localhost gets or that send their link over plain
    HTTP, cookies not always Secure on a site not yet known to be on HTTPS,
    gunicorn open to the network with no proxy in front (or around the one
    PROXY_COUNT counts), and a proxy in front that PROXY_COUNT doesn't count."""
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
    if not config["RATELIMIT_ENABLED"]:
        warnings.append(
            "RATELIMIT_ENABLED is off: failed logins, password-reset requests and "
            "registrations are not limited, so passwords can be guessed as fast as the "
            "server answers."
        )
    if not config["SESSION_COOKIE_SECURE"] and not served_over_https(config):
        # A first deployment on plain HTTP: Secure cookies would never come
        # back, and every form would fail. Once BASE_URL says https://, a problem.
        warnings.append(
            "SESSION_COOKIE_SECURE is off: right while the site is served over plain HTTP "
            "(with it on, browsers would never send the session cookie back, and every form "
            "would fail as expired), and cookies are Secure anyway on requests the app sees "
            "as HTTPS (behind a proxy, that needs PROXY_COUNT). Once the site is on HTTPS, "
            "set SESSION_COOKIE_SECURE=1 and BASE_URL=https://... in .env, and restart the app."
        )
    if config["BASE_URL"] and urlsplit(config["BASE_URL"]).scheme == "http":
        warnings.append(
            "BASE_URL starts with http://: the password-reset links in mails would carry "
            "their token over the network unencrypted, before any redirect to HTTPS. "
            "Use https://."
        )
    warnings += proxy_warnings(app)
    return warnings


def served_over_https(config: Mapping) -> bool:
    """True if the settings say the site is on HTTPS: BASE_URL, the address in
    its mails, starts with https://. Nothing else tells: a request over HTTPS
    behind a proxy looks like plain HTTP to an app that doesn't count the proxy."""
    return urlsplit(config["BASE_URL"] or "").scheme == "https"


# A container must listen on every address of its own for its published port
# to work (compose.yaml: GUNICORN_BIND=0.0.0.0:8000), and nothing inside it
# can see where that port is published: the warnings on the bind address say so.
IN_A_CONTAINER = (
    "(In a container, these are the container's own addresses: if its port is "
    "published on 127.0.0.1 only, as compose.yaml does, no other machine reaches it.)"
)


def proxy_warnings(app: Flask) -> list[str]:
    """gunicorn reachable from other machines with no proxy in front, or around
    the one PROXY_COUNT counts; a proxy in front that PROXY_COUNT doesn't count."""
    config = app.config
    warnings = []
    bind = gunicorn_bind()
    try:
        reaches_network = bind_reaches_network(bind)
    except UnusableBind:
        reaches_network = False  # a problem of its own (deployment_problems)
    proxy_count = config["PROXY_COUNT"]
    if reaches_network and not proxy_count:
        warnings.append(
            f"GUNICORN_BIND={bind} listens on addresses other machines can reach, and "
            "PROXY_COUNT=0 says no proxy is in front. gunicorn's sync workers serve one "
            "request at a time each, so a few slow clients can tie them all up. Put nginx "
            "in front (deploy/nginx.conf), bind gunicorn to 127.0.0.1:8000 (the default) "
            f"and set PROXY_COUNT=1. {IN_A_CONTAINER}"
        )
    elif reaches_network:
        warnings.append(
            f"GUNICORN_BIND={bind} listens on addresses other machines can reach, around "
            f"the proxy that PROXY_COUNT={proxy_count} counts: they can send X-Forwarded-For "
            "themselves and pass for any address. If the proxy is on this machine, bind "
            "gunicorn to 127.0.0.1:8000 (the default); if not, let only the proxy reach "
            f"that port (a firewall). {IN_A_CONTAINER}"
        )
    note_path = Path(config["LOG_DIR"]) / PROXY_NOTE
    note = read_proxy_note(note_path)
    if note is not None and not proxy_count:
        warnings.append(uncounted_proxy_warning(note, note_path))
    return warnings


# What PROXY_COUNT=0 does behind a proxy, in check-deploy's words.
EVERY_VISITOR_IS_THE_PROXY = (
    "the app takes every visitor for the proxy: they share one rate limit (one client's "
    "failed logins lock everyone out) and the log can't tell them apart"
)


def uncounted_proxy_warning(note: dict[str, object], note_path: Path) -> str:
    """check-deploy's warning of the proxy the note says came: for sure when
    it came from this machine (what else would send X-Forwarded-For from
    there? nginx, most likely), a guess when from another, or when the note
    doesn't say."""
    said = (
        "Requests with an X-Forwarded-For header reached the app while PROXY_COUNT was "
        f"0{describe_proxy_note(note)}."
    )
    set_it = "Set PROXY_COUNT to the number of proxies (1 behind deploy/nginx.conf)."
    match is_this_machine(note.get("from")):
        case True:
            return (
                f"{said} They came from this machine, where a proxy is in front: nginx, most "
                f"likely. So {EVERY_VISITOR_IS_THE_PROXY}. {set_it} If there is none (a test "
                f"on this machine sent the header itself), delete {note_path}."
            )
        case False:
            return (
                f"{said} They came from another machine: if it is a proxy in front (a load "
                f"balancer), {EVERY_VISITOR_IS_THE_PROXY}. {set_it} If there is none, a "
                f"client sent the header itself: delete {note_path}."
            )
    return (
        f"{said} If a proxy such as nginx is in front, {EVERY_VISITOR_IS_THE_PROXY}. "
        f"{set_it} If there is none, a client sent the header itself: delete {note_path}."
    )


def gunicorn_bind_problem(bind: str) -> str | None:
    """Why gunicorn can't start on `bind`, or None if it can."""
    try:
        bind_reaches_network(bind)
    except UnusableBind as error:
        return (
            f"GUNICORN_BIND={shown(bind)} is not an address gunicorn can listen on ({error}): "
            "use HOST:PORT (127.0.0.1:8000, the default when it is unset), [IPv6]:PORT "
            "or unix:PATH."
        )
    return None


def gunicorn_bind() -> str:
    """The address gunicorn.conf.py binds to: GUNICORN_BIND, else (unset or
    blank) 127.0.0.1:8000."""
    return os.environ.get("GUNICORN_BIND", "").strip() or "127.0.0.1:8000"


class UnusableBind(ValueError):
    """GUNICORN_BIND names no address gunicorn could listen on; the message says why."""


def bind_reaches_network(bind: str) -> bool | None:
    """Whether gunicorn listening on `bind` can be reached from other machines.

    `bind` is in gunicorn's syntax, read by gunicorn's own parser: HOST:PORT,
    HOST, [IPv6]:PORT, unix:PATH or fd://N. False for a loopback address or a
    Unix socket, None for an inherited socket (fd://), whose address can't be
    told from here. A host name counts as the address it resolves to, as
    when gunicorn binds it. Raise UnusableBind where gunicorn would fail to start.
    """
    # Not at the top: gunicorn doesn't run on Windows, nor can its modules be
    # imported there, and `flask` must (app/commands.py is loaded by every command).
    try:
        from gunicorn.util import parse_address
    except ImportError:
        return None
    if not bind:
        # gunicorn given a blank bind (`--bind ""`) listens nowhere, and its workers fail.
        raise UnusableBind("it is blank")
    try:
        address = parse_address(bind)
    except RuntimeError as error:  # gunicorn's own message: "'x' is not a valid port number."
        raise UnusableBind(str(error).rstrip(".")) from None
    if isinstance(address, int):
        return None
    if isinstance(address, str):
        return False
    host, port = address
    if not 0 <= port <= 65535:
        raise UnusableBind(f"{port} is not a port number")
    if host.isascii() and host.isdigit():
        # "8000" is the host 0.0.31.64 to the resolver, which is no address of ours.
        raise UnusableBind(f"a number alone is a host, not a port: write 127.0.0.1:{host}")
    try:
        # "" (as in ":8000") is every interface, as it is to bind().
        ip = ipaddress.ip_address(host or "0.0.0.0")
    except ValueError:
        try:
            # IPv4, as gunicorn binds a host name that isn't an IPv6 address.
            ip = ipaddress.ip_address(socket.gethostbyname(host))
        except (OSError, UnicodeError, ValueError):
            raise UnusableBind(f"the host name {shown(host)} can't be resolved") from None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_loopback


def shown(value: str, limit: int = 80) -> str:
    """`value` quoted for a message, control characters escaped, cut after `limit` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def gunicorn_workers() -> int:
    """How many workers gunicorn.conf.py starts: WEB_CONCURRENCY, else (unset or
    blank) two per core. A value it refuses counts as unset here: gunicorn won't
    start at all, which `gunicorn_workers_problem` reports."""
    value = os.environ.get("WEB_CONCURRENCY", "").strip()
    if not value or refused_worker_count(value):
        return 2 * (os.cpu_count() or 1)
    return int(value)


def gunicorn_workers_problem() -> str | None:
    """Why gunicorn.conf.py refuses WEB_CONCURRENCY, or None if it takes it."""
    value = os.environ.get("WEB_CONCURRENCY", "").strip()
    if value and refused_worker_count(value):
        return (
            f"WEB_CONCURRENCY={shown(value)} is not a whole number of at least 1: "
            "gunicorn.conf.py refuses to start with it."
        )
    return None


def refused_worker_count(value: str) -> bool:
    """True if gunicorn.conf.py refuses `value` as a number of workers."""
    try:
        return int(value) < 1
    except ValueError:
        return True


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


# --- What the app writes in LOG_DIR ---------------------------------------------

# What each file the app writes in LOG_DIR is, and what becomes of the app
# when it can't write it.
NO_LOG = "the app would log nothing to it, not even the traceback of a 500."
ERRORS_IN_MEMORY = (
    "each worker would count errors in its own memory, and `flask errors` would list none of them."
)


def log_dir_problems(config: Mapping) -> list[str]:
    """LOG_DIR, if the app keeps anything there, and then each file the app
    writes there that the user running this check can't write.

    The log file, its lock and storm control's store are made by the first
    process that writes them, and belong to its user: a `flask` command run
    as root leaves them to root, and the service, running as another user,
    then logs nothing. So this check is worth most when run as the user the
    app runs as (`sudo -u blog`); as root it finds only what stops root too
    (a read-only mount, a folder where the file should be).
    """
    log_dir = Path(config["LOG_DIR"])
    log_to_file = not config["LOG_TO_STDOUT"]
    store_in_a_file = not config["REDIS_URL"]
    if not (log_to_file or store_in_a_file):
        return []  # nothing goes there but the proxy note, which may fail quietly
    if not directory_is_writable(log_dir):
        if log_to_file:
            return [f"The log directory {log_dir} is not writable."]
        return [
            f"The log directory {log_dir} is not writable. The log goes to stdout "
            "(LOG_TO_STDOUT), but without REDIS_URL storm control keeps its store there "
            f"({STORE_FILE}): {ERRORS_IN_MEMORY}"
        ]
    files = []
    if log_to_file:
        log_file = log_dir / config["LOG_FILE"]
        # concurrent-log-handler's own rule for the name: logs/.__blog.lock.
        lock_folder, lock_name = LogFileHandler.baseLockFilename(str(log_file))
        files += [
            ("The log file", log_file, NO_LOG),
            (
                "The log file's lock",
                Path(lock_folder) / lock_name,
                "the app takes it for each line it writes, so it would log nothing, not "
                "even the traceback of a 500.",
            ),
        ]
    if store_in_a_file:
        store = Path(store_location(config))
        # In WAL mode SQLite writes two more files beside the database.
        for path in (store, Path(f"{store}-wal"), Path(f"{store}-shm")):
            files.append(("Storm control's store", path, ERRORS_IN_MEMORY))
    user = user_name()
    problems = []
    for what, path, consequence in files:
        error = write_error(path)
        if error is None:
            continue
        problem = f"{what} {path} can't be written by {user} ({error.strerror}): {consequence}"
        if error.errno == errno.EACCES:
            problem += f" If a command run as root made it: chown {user}: {path}"
        problems.append(problem)
    return problems


def write_error(path: Path) -> OSError | None:
    """Why this process can't write to the file at `path`, or None if it can,
    or if there is no file: it would be made in a folder already checked.

    Opened for appending, and closed with nothing written. Non-blocking, so a
    named pipe can't hold the check up; a symbolic link to nothing counts as
    the file it would make.
    """
    if not os.path.lexists(path):
        return None
    # os.path, not Path: a link into a folder this user can't enter is False, not an error.
    if not os.path.exists(path):  # a symbolic link to nothing: can its target be made?
        target = Path(os.path.realpath(path))
        if can_create_in(target.parent):
            return None
        return OSError(errno.ENOENT, f"a symbolic link to {target}, which can't be made")
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        return error
    os.close(descriptor)
    return None


def user_name() -> str:
    """The name of the user this process runs as (as the system knows it, not
    as $USER says), or its number if it has no name."""
    try:
        import pwd  # not on Windows
    except ImportError:
        try:
            return getpass.getuser()
        except (ImportError, KeyError, OSError):
            return "this user"
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:  # a user with no name, as in some containers
        return str(os.geteuid())


def directory_is_writable(path: Path) -> bool:
    """Make the folder `path` if need be, and see whether a file can be made in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return can_create_in(path)


def can_create_in(folder: Path) -> bool:
    """True if a file can be made in `folder` (one is made, and deleted)."""
    # Actually try: permission bits say nothing about read-only mounts or root.
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


# --- A proxy that PROXY_COUNT doesn't count ------------------------------------

# The note the running app leaves in LOG_DIR for `flask check-deploy`, which
# runs in a process of its own: requests came with X-Forwarded-For while
# PROXY_COUNT was 0, so a proxy is probably in front that nobody counted.
PROXY_NOTE = "proxy-seen"
# How much of the peer's address the note keeps: an IPv6 address with its
# zone fits; whatever else a server puts in REMOTE_ADDR is cut there.
NOTE_ADDRESS_MAX_LENGTH = 64


def watch_for_an_uncounted_proxy(app: Flask) -> None:
    """While PROXY_COUNT is 0, note the first request of each process that
    carries X-Forwarded-For: a WARNING in the log, and PROXY_NOTE in LOG_DIR
    for `flask check-deploy`. Every other request costs a dictionary lookup."""
    # A counted proxy's headers are believed (ProxyFix, in create_app).
    if app.config["PROXY_COUNT"] or not app.config["NOTE_UNCOUNTED_PROXY"]:
        return
    noted = False  # in this process: under gunicorn, one app per worker

    @app.before_request
    def note_forwarded_for() -> None:
        """Note the first request in this process that came with X-Forwarded-For.

        Only that the header came, never its value (a client's choice), and
        the peer's address as the server gives it.
        """
        nonlocal noted
        if noted or "HTTP_X_FORWARDED_FOR" not in request.environ:
            return
        noted = True
        peer = request.remote_addr
        write_proxy_note(Path(current_app.config["LOG_DIR"]) / PROXY_NOTE, peer)
        current_app.logger.warning(uncounted_proxy_log_message(is_this_machine(peer)))


def uncounted_proxy_log_message(from_this_machine: bool | None) -> str:
    """The log's line for a request with X-Forwarded-For while PROXY_COUNT is
    0, from this machine (True), another (False), or a peer with no IP address
    (None: a Unix socket, or a server that doesn't say)."""
    if from_this_machine:
        said = (
            "A request came with X-Forwarded-For from this machine, but PROXY_COUNT is 0: a "
            "proxy here (nginx, most likely) is in front, and the app sees every visitor at "
            "its address, under one rate limit. Set PROXY_COUNT (1 behind deploy/nginx.conf)"
        )
    elif from_this_machine is False:
        said = (
            "A request came with X-Forwarded-For from another machine, but PROXY_COUNT is 0: "
            "if that is a proxy in front, the app sees every visitor at its address, under "
            "one rate limit, so set PROXY_COUNT to the number of proxies (if not, the client "
            "sent the header itself)"
        )
    else:
        said = (
            "A request came with X-Forwarded-For, but PROXY_COUNT is 0: if a proxy is in "
            "front, the app sees every visitor at the proxy's address, under one rate "
            "limit. Set PROXY_COUNT (1 behind deploy/nginx.conf)"
        )
    return f"{said}; `flask check-deploy` says so too. (Logged once per process.)"


def is_this_machine(address: object) -> bool | None:
    """Whether `address` (a peer's, as the server gave it, or as a note
    kept it) is one of this machine's loopback addresses; None if it is no
    IP address at all."""
    try:
        ip = ipaddress.ip_address(str(address))
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:  # ::ffff:127.0.0.1
        ip = ip.ipv4_mapped
    return ip.is_loopback


def write_proxy_note(path: Path, remote_addr: str | None) -> None:
    """Write when a request with X-Forwarded-For came, and from which peer.

    Never the header's value: a client chose it. A later note replaces an earlier one.
    """
    note = {
        "noted_at": now_utc().isoformat(timespec="seconds"),
        "from": (remote_addr or "")[:NOTE_ADDRESS_MAX_LENGTH],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(note) + "\n")
    except OSError:
        pass  # a LOG_DIR that can't be written: the log line says it all the same


def read_proxy_note(path: Path) -> dict[str, object] | None:
    """The note at `path`, None if there is none.

    A note that can't be read as one (two workers writing at once, or not
    ours) still says that a request came with the header: it reads as {}.
    """
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, NotADirectoryError):  # not there, nor its folder
        return None
    except OSError:  # there, but unreadable: a folder, or check-deploy run as another user
        return {}
    try:
        note = json.loads(text)
    except ValueError:
        return {}
    return note if isinstance(note, dict) else {}


def describe_proxy_note(note: dict[str, object]) -> str:
    """What of the note reads as a time and as an address (the file may not be
    ours), for a message: " (noted at <time> UTC, in a request from <address>)"."""
    parts = []
    with suppress(ValueError):
        noted_at = datetime.fromisoformat(str(note.get("noted_at")))
        if noted_at.tzinfo is not None:
            parts.append(f"noted at {noted_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC")
    with suppress(ValueError):
        parts.append(f"in a request from {ipaddress.ip_address(str(note.get('from')))}")
    return f" ({', '.join(parts)})" if parts else ""


# --- flask users ---------------------------------------------------------------

# AppGroup: each of its commands runs inside an app context.
users_group = AppGroup("users", help="Manage user accounts from the server.")


@users_group.command("set-password")
@click.argument("username")
def set_password_command(username: str) -> None:
    """Set USERNAME's password, and end every login of theirs.

    The password is asked for twice, and never shown. With mail off there are
    no reset links: this is the way back into an account.
    """
    try:
        user = find_user(username)
        # click reads the terminal, or standard input when there is none (a script).
        try:
            password = click.prompt("New password", hide_input=True, confirmation_prompt=True)
        except UnicodeError:
            raise click.ClickException(
                "The password is not UTF-8 text. Nothing was changed."
            ) from None
        if problem := password_problem(password):
            raise click.ClickException(f"{problem} Nothing was changed.")
        user.set_password(password)  # and ends every login of the user (app/auth/sessions.py)
        db.session.commit()
    except SQLAlchemyError as error:
        raise click.ClickException(f"The database failed: {database_failure(error)}") from None
    click.echo(f"Password set for {user.username}; every login of theirs has been ended.")


def find_user(name: str) -> User:
    """The user `name` names, looked up as the login form looks names up (case,
    width and spaces around it ignored); a ClickException if there is none."""
    missing = click.ClickException(f"There is no user named {shown(name)}.")
    # Names no account can have, refused before they reach the database: longer
    # than a username, or with what a database can't take (PostgreSQL refuses
    # NUL; a name that isn't UTF-8 arrives with surrogates, which can't be sent).
    if "\x00" in name or not is_utf8(name) or len(stored_name(name)) > USERNAME_MAX_LENGTH:
        raise missing
    user = db.session.scalar(User.select_by_username(name))
    if user is None:
        raise missing
    return user


def password_problem(password: str) -> str | None:
    """What the reset form would refuse in `password` (app/auth/forms.py), or
    what nobody could then type into the login form; None if it will do."""
    if not password.strip():
        return "The password is only spaces."
    if len(password) < PASSWORD_MIN_LENGTH:
        return f"The password is too short: at least {PASSWORD_MIN_LENGTH} characters."
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"The password is too long: at most {PASSWORD_MAX_LENGTH} characters."
    if "\x00" in password:
        # Every request with a NUL is refused (app/input_guard.py), logins included.
        return "The password has a NUL character, which no login form can send."
    if not is_utf8(password):
        return "The password is not UTF-8 text."
    return None


def is_utf8(text: str) -> bool:
    """False for text holding lone surrogates: bytes that weren't UTF-8, as
    Python reads them from a command line or a terminal in the C locale."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def register_commands(app: Flask) -> None:
    """Add the commands to `flask`."""
    commands = (
        seed_command,
        test_email_command,
        test_error_command,
        check_deploy_command,
        users_group,
        translate_command,
        errors_command,
        lab_command,
    )
    for command in commands:
        app.cli.add_command(command)

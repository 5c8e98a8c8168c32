"""`flask errors` and `flask errors show REFERENCE`: the admin's view of what broke.

Error mails are not enough on their own: mail may be off, the mail server
down, and storm control holds repeats back on purpose. And a user's "error
reference 3f9c…" is only useful to an admin who can turn it into a
traceback. Both answers are on the server already: the store in which storm
control counts every bug (app/reporting/storm.py) and the log files
(app/reporting/log_file.py). These commands read those files and nothing
else, so they work when they are needed most: while the database is down,
with no network, on a server that can't send mail. The store is opened
read-only and never created: an admin's command must not change what the
workers count, nor leave a store behind that they can't write.

`show` is `grep REFERENCE logs/blog.log*` that knows the log's format: the
rotated files oldest first, the lines of that request only (not the repeats
that point to it), and for a repeat, whose traceback was logged only once
per window, that traceback too.
"""

import glob
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import click
import redis
from flask import current_app
from flask.cli import with_appcontext
from flask_babel import force_locale
from flask_babel import gettext as _

from app.reporting.log_file import CONTINUATION_LINE, FIRST_LINE_END, escape_controls
from app.reporting.storm import (
    FIELDS,
    MAIL_FAILED,
    MAIL_OFF,
    MAIL_SENT,
    ErrorGroup,
    RedisGroups,
    open_store,
    store_location,
)

# What a request id is made of (app/reporting/request_id.py); an admin may
# paste a prefix, but one long enough to name a single request.
REFERENCE = re.compile(r"[A-Za-z0-9._:-]{8,128}")
# As the log's own timestamps, so that the two are easy to compare.
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@click.group("errors", invoke_without_command=True)
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(min=1),
    help="How many errors to list.",
)
@with_appcontext
def errors_command(limit: int) -> None:
    """List the errors seen recently, the most recently seen first.

    `flask errors show REFERENCE` prints the log lines of one request.
    """
    if click.get_current_context().invoked_subcommand is None:
        with force_locale(current_app.config["ADMIN_LOCALE"]):
            list_errors(limit)


@errors_command.command("show")
@click.argument("reference")
@with_appcontext
def show_command(reference: str) -> None:
    """Print every log line of the request REFERENCE (the error reference a
    user quotes), its traceback included."""
    with force_locale(current_app.config["ADMIN_LOCALE"]):
        if not REFERENCE.fullmatch(reference):
            # The value itself is not repeated: it may hold terminal escapes.
            raise click.BadParameter(
                _(
                    "a reference is 8 to 128 letters, digits or . _ : - "
                    "(from the error page or the X-Request-ID header)."
                ),
                ctx=click.get_current_context(),
                param_hint="REFERENCE",
            )
        show_request(reference)


# --- flask errors ----------------------------------------------------------------


def list_errors(limit: int) -> None:
    location = store_location(current_app.config)
    store = open_store(location)
    if isinstance(store, RedisGroups):
        path = store.location  # without its password
        groups = read_redis_groups(store)
    else:
        path = Path(location)
        groups = read_groups(path)
    if groups is None:
        click.echo(
            _(
                "No errors have been recorded: %(path)s does not exist (is LOG_DIR the server's?).",
                path=path,
            )
        )
        return
    if not groups:
        click.echo(_("No errors are recorded in %(path)s.", path=path))
        return
    click.echo(_("Errors recorded in %(path)s, the most recently seen first:", path=path))
    window, now = current_app.config["MAIL_ERROR_WINDOW"], time.time()
    for group in groups[:limit]:
        # A new occurrence after the window closed opens a new one: until
        # then, none is in the current window.
        in_window = group.window_count if now - group.window_start < window else 0
        click.echo()
        click.echo(escape_controls(group.title or group.fingerprint))
        for line in (
            _("Where: %(location)s", location=escape_controls(group.location or "-")),
            _(
                "Occurrences: %(window)d in the current window, %(total)d in total",
                window=in_window,
                total=group.total,
            ),
            _("First seen: %(time)s", time=local_time(group.first_seen)),
            _("Last seen: %(time)s", time=local_time(group.last_seen)),
            _("Last reference: %(reference)s", reference=escape_controls(group.last_reference)),
            mail_status(group),
        ):
            click.echo("  " + line)
    if len(groups) > limit:
        click.echo()
        click.echo(
            _(
                "%(shown)d of %(total)d errors shown; use --limit to see more.",
                shown=limit,
                total=len(groups),
            )
        )


def read_groups(path: Path) -> list[ErrorGroup] | None:
    """Every group in the store at `path`, most recently seen first; None if
    there is no store."""
    if not path.exists():
        return None
    try:
        # mode=ro: never creates the file, never writes it. Readers don't wait
        # for the workers' writes (the store is in WAL mode); the timeout
        # covers a worker switching it to WAL just now.
        db = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=10)
        try:
            has_table = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'error_groups'"
            ).fetchone()
            rows = (
                db.execute(
                    f"SELECT {', '.join(FIELDS)} FROM error_groups ORDER BY last_seen DESC"
                ).fetchall()
                if has_table
                else []
            )
        finally:
            db.close()
    except sqlite3.Error as error:
        raise click.ClickException(
            _("The error store %(path)s can't be read: %(error)s", path=path, error=error)
        ) from None
    return [ErrorGroup(*row) for row in rows]


def read_redis_groups(store: RedisGroups) -> list[ErrorGroup]:
    """Every group in Redis (REDIS_URL), most recently seen first."""
    try:
        groups = store.all()
    except redis.RedisError as error:
        raise click.ClickException(
            _("The error store %(path)s can't be read: %(error)s", path=store.location, error=error)
        ) from None
    return sorted(groups, key=lambda group: group.last_seen, reverse=True)


def mail_status(group: ErrorGroup) -> str:
    if group.mail == MAIL_SENT:
        return _("Mail: sent at %(time)s", time=local_time(group.mailed_at))
    if group.mail == MAIL_FAILED:
        return _("Mail: failed (the log file says why)")
    if group.mail == MAIL_OFF:
        return _("Mail: off (MAIL_SERVER or ADMINS is not set)")
    return _("Mail: not yet")


def local_time(timestamp: float) -> str:
    return time.strftime(TIME_FORMAT, time.localtime(timestamp))


# --- flask errors show -------------------------------------------------------------


def show_request(reference: str) -> None:
    config = current_app.config
    if config["LOG_TO_STDOUT"]:
        raise click.ClickException(
            _(
                "The log goes to standard output (LOG_TO_STDOUT), not to a file: "
                "search your log collector for the reference."
            )
        )
    main_file = Path(config["LOG_DIR"]) / config["LOG_FILE"]
    files = log_files(main_file)
    if not files:
        raise click.ClickException(
            _(
                "No log file: %(path)s does not exist (is LOG_DIR the server's?).",
                path=main_file,
            )
        )

    lines, ids = [], []
    for line in read_lines(files):
        matching = [i for i in request_ids(line) if reference in i] if reference in line else []
        if matching:
            lines.append(line)
            ids += [i for i in matching if i not in ids]
    if not lines:
        raise click.ClickException(
            _(
                "No log line of request %(reference)s in %(files)s.",
                reference=reference,
                files=", ".join(map(str, files)),
            )
        )
    if len(ids) > 1:
        click.echo(
            _(
                "Several requests match %(reference)s: %(ids)s.",
                reference=reference,
                ids=", ".join(ids),
            )
        )
    for line in lines:
        click.echo(line)

    # A repeat's traceback was logged once, with an earlier request.
    earlier = []
    for line in lines:
        end = FIRST_LINE_END.search(line)
        if end and end["earlier"] and end["earlier"] not in ids + earlier:
            earlier.append(end["earlier"])
    for other in earlier:
        traceback = [
            line
            for line in read_lines(files)
            if other in line
            and (tag := CONTINUATION_LINE.match(line))
            and tag["reference"] == other
        ]
        click.echo()
        if traceback:
            click.echo(_("The traceback, logged with request %(reference)s:", reference=other))
            for line in traceback:
                click.echo(line)
        else:
            click.echo(
                _(
                    "The traceback, logged with request %(reference)s, "
                    "is no longer in the log files.",
                    reference=other,
                )
            )


def log_files(main_file: Path) -> list[Path]:
    """The log file and its rotated copies that exist, oldest first
    (blog.log.3, blog.log.2, blog.log.1, blog.log)."""
    rotated = [
        (int(path.name.rpartition(".")[2]), path)
        for path in main_file.parent.glob(glob.escape(main_file.name) + ".*")
        if path.name.rpartition(".")[2].isdigit()
    ]
    rotated.sort(reverse=True)
    return [path for _, path in rotated] + ([main_file] if main_file.exists() else [])


def request_ids(line: str) -> list[str]:
    """The request ids a log line is tagged with."""
    tagged = CONTINUATION_LINE.match(line) or FIRST_LINE_END.search(line)
    return [tagged["reference"]] if tagged else []


def read_lines(files: list[Path]) -> Iterator[str]:
    """Every line of `files`, in order."""
    for path in files:
        try:
            # errors="replace": a line cut in two by a full disk, or bytes
            # another program wrote, must not hide the rest of the file.
            with open(path, encoding="utf-8", errors="replace") as file:
                for line in file:
                    yield line.rstrip("\n")
        except FileNotFoundError:
            continue  # rotated out of existence since we listed it
        except OSError as error:
            raise click.ClickException(
                _("The log file %(path)s can't be read: %(error)s", path=path, error=error)
            ) from None

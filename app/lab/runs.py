"""How each experiment is run: it breaks the blog one way, on purpose.

Each function does its experiment in a `Lab` (app/lab/sandbox.py) and notes
what the user and the operator got. Each runs the app's real code: the
failing view is the lab's (app/lab/faults.py), while the handlers, logger,
outbox and storm control that deal with the failure are the ones production
runs. app/lab/experiments.py says what each experiment is.
"""

import io
import os
import shutil
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import sentry_sdk
from flask import Flask
from flask_babel import lazy_gettext as _l
from flask_babel import lazy_ngettext
from sqlalchemy import event, inspect
from werkzeug.debug import DebuggedApplication
from werkzeug.exceptions import InternalServerError
from werkzeug.test import Client

from app.lab.experiments import DEFAULT_STORM
from app.lab.faults import naive_internal_error
from app.lab.sandbox import LAB_ERROR_WINDOW, LAB_MAIL_TIMEOUT, Lab
from config import BASE_DIR, ConfigError, ProductionConfig

APP_DIR = BASE_DIR / "app"
# The page every experiment but the race and bad input breaks.
FAILING_PAGE = "/lab-faults/average-words"


def run_unhandled(lab: Lab, options: dict) -> None:
    """A view raises an exception nobody catches."""
    app = lab.app()
    lab.request(lab.client(app), _l("Open a page whose view raises"), "GET", FAILING_PAGE)
    lab.expect_mails(1)


def run_double_fault(lab: Lab, options: dict) -> None:
    """The same failed commit, with the app's 500 handler and with a naive one."""
    app = lab.app()
    lab.request(
        lab.client(app, login_as="alice"),
        _l("The app's handler: rename alice to the taken name bob, unchecked"),
        "GET",
        "/lab-faults/rename-unchecked/bob",
    )

    def use_naive_handler(naive: Flask) -> None:
        # Replaces app/errors.py's handler on this lab blog only.
        naive.register_error_handler(InternalServerError, naive_internal_error)

    naive = lab.app(setup=use_naive_handler)
    client = lab.client(naive, login_as="alice")
    label = _l("A naive handler (no rollback, a page that queries): the same rename")
    started = time.monotonic()
    try:
        lab.request(client, label, "GET", "/lab-faults/rename-unchecked/bob")
    except Exception:
        # The handler itself raised: Flask has nothing left to call, and the
        # exception reaches the server, which prints it on its own stderr and
        # sends its bare page. Werkzeug's, here: what `flask run` sends.
        lab.note(
            _l(
                "The second traceback: on the server's stderr (and in Sentry), "
                "never in the app's log or mail"
            ),
            traceback.format_exc(),
        )
        bare = InternalServerError().get_response()
        lab.add_response(
            label,
            "GET",
            "/lab-faults/rename-unchecked/bob",
            bare.status_code,
            bare.get_data(as_text=True),
            started=started,
        )
    lab.expect_mails(1)


def run_username_race(lab: Lab, options: dict) -> None:
    """Two people rename themselves to the same free name at the same moment."""
    app = lab.app()
    clients = {name: lab.client(app, login_as=name) for name in ("alice", "bob")}
    ready = threading.Barrier(len(clients), timeout=10)
    caught: list[str] = []

    def wait_for_the_other(session, flush_context, instances) -> None:
        # Both requests have passed the form's check that the name is free;
        # hold each here, just before it writes, until the other is here too.
        # Luck decides this in production; the lab makes it certain.
        renaming = [
            user
            for user in session.dirty
            if hasattr(user, "username") and inspect(user).attrs.username.history.has_changes()
        ]
        if renaming:
            ready.wait()

    def note_database_error(context) -> None:
        # Where the database's refusal went: the blog's own frames on the stack.
        frames = [
            f"{Path(frame.filename).relative_to(BASE_DIR).as_posix()}:{frame.lineno} "
            f"in {frame.name}"
            for frame in traceback.extract_stack()
            if Path(frame.filename).is_relative_to(APP_DIR)
            and not Path(frame.filename).is_relative_to(APP_DIR / "lab")
        ]
        caught.append(
            f"{type(context.sqlalchemy_exception).__name__}: {context.original_exception}\n"
            + "\n".join(frames)
        )

    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine
    session_class = app.extensions["sqlalchemy"].session.session_factory.class_
    event.listen(session_class, "before_flush", wait_for_the_other)
    event.listen(engine, "handle_error", note_database_error)
    try:
        threads = [
            threading.Thread(
                target=lab.request,
                args=(
                    client,
                    _l("%(name)s renames themselves to carol", name=name),
                    "POST",
                    "/edit_profile",
                ),
                kwargs={"data": {"username": "carol", "about_me": ""}},
            )
            for name, client in clients.items()
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        event.remove(session_class, "before_flush", wait_for_the_other)
        event.remove(engine, "handle_error", note_database_error)
    for text in caught:
        lab.note(
            _l(
                "The IntegrityError the loser's commit raised, caught in "
                "app/forms.py, commit_or_show_conflict"
            ),
            text,
        )


def run_mail_tarpit(lab: Lab, options: dict) -> None:
    """The mail server accepts the connection and never answers."""
    with lab.tarpit() as port:
        app = lab.app(MAIL_SERVER="127.0.0.1", MAIL_PORT=port)
        client = lab.client(app)
        response = lab.request(client, _l("Open a page whose view raises"), "GET", FAILING_PAGE)
        failed = lab.wait_for_log("not sent", timeout=LAB_MAIL_TIMEOUT + 10)
        gave_up = time.monotonic() - response.started
    if failed:
        lab.mail_note = _l(
            "No mail: the server never answered, and the outbox gave up after "
            "%(seconds).1f s (MAIL_TIMEOUT is %(timeout)d s in the lab), in the background.",
            seconds=gave_up,
            timeout=LAB_MAIL_TIMEOUT,
        )
    else:
        lab.mail_note = _l("The outbox had not given up on the mail when the lab stopped waiting.")


def run_error_storm(lab: Lab, options: dict) -> None:
    """The same error, many times over."""
    count = options.get("count", DEFAULT_STORM)
    app = lab.app()
    client = lab.client(app)
    started = time.monotonic()
    statuses: Counter[int] = Counter()
    for number in range(1, count + 1):
        label = _l("Error %(number)d of %(count)d", number=number, count=count)
        # The first and the last are shown; the ones between are alike.
        response = lab.request(client, label, "GET", FAILING_PAGE, keep=number in (1, count))
        statuses[response.status] += 1
    lab.note(
        _l("The storm"),
        lazy_ngettext(
            "%(num)d request in %(seconds).2f s; the user got: %(statuses)s.",
            "%(num)d requests in %(seconds).2f s; the users got: %(statuses)s.",
            count,
            seconds=time.monotonic() - started,
            statuses=", ".join(f"{status} × {n}" for status, n in sorted(statuses.items())),  # noqa: RUF001
        ),
    )
    # The first mail went at once; the summary of the rest goes when the
    # window closes. Storm control's own count says when that has happened
    # (the same wait works with the learner's mail server, which the lab can't see).
    lab.wait_for(
        lambda: any(g.total == count and g.unreported == 0 for g in lab.error_groups()),
        timeout=LAB_ERROR_WINDOW * 3 + 5,
    )
    lab.expect_mails(2 if count > 1 else 1)
    for group in lab.error_groups():
        lab.note(
            _l("What storm control counted (what `flask errors` shows)"),
            lazy_ngettext(
                "%(title)s at %(location)s: %(num)d time; %(unreported)d not yet in a mail.",
                "%(title)s at %(location)s: %(num)d times; %(unreported)d not yet in a mail.",
                group.total,
                title=group.title,
                location=group.location,
                unreported=group.unreported,
            ),
        )


def run_database_down(lab: Lab, options: dict) -> None:
    """The database can't be reached for one request, then is back."""
    app = lab.app()
    client = lab.client(app)
    lab.request(client, _l("Before: the explore page"), "GET", "/explore")
    # Close the pooled connections and move the database's folder away: the
    # next connection can't open the file, as a server that is down can't be reached.
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()
    folder = lab.database_file.parent
    hidden = folder.with_name(folder.name + "-away")
    shutil.move(folder, hidden)
    try:
        lab.request(client, _l("The database is unreachable"), "GET", "/explore")
    finally:
        shutil.move(hidden, folder)
    lab.request(client, _l("The next request: the database is back"), "GET", "/explore")
    lab.expect_mails(1)


def run_bad_input(lab: Lab, options: dict) -> None:
    """Requests no form could send: a NUL byte, bytes that aren't UTF-8, a huge body."""
    app = lab.app()
    client = lab.client(app)
    lab.request(client, _l("A NUL character in a search"), "GET", "/search?q=a%00b")
    lab.request(
        client,
        _l("A query string that isn't UTF-8"),
        "GET",
        "/explore",
        environ_overrides={"QUERY_STRING": "page=\xff"},
    )
    too_big = app.config["MAX_CONTENT_LENGTH"] + 1
    lab.request(
        client,
        _l("A body over MAX_CONTENT_LENGTH (%(size)d bytes)", size=too_big),
        "POST",
        "/auth/login",
        data=b"x" * too_big,
        content_type="application/x-www-form-urlencoded",
    )
    lab.mail_note = _l("No mail: a bad request is the client's mistake, not a bug to report.")


def run_debug_mode(lab: Lab, options: dict) -> None:
    """The same failing page with Flask's debugger on, and production refusing it."""
    app = lab.app()
    lab.request(lab.client(app), _l("Without the debugger: the 500 page"), "GET", FAILING_PAGE)
    # Debug mode sets up no Sentry (create_app): stop the lab's, so the
    # debugger's request is reported nowhere, as on a laptop.
    sentry_sdk.flush(2)
    sentry_sdk.init()
    debug_app = lab.app(DEBUG=True)
    # What `flask run --debug` puts in front of the app.
    debugger = Client(DebuggedApplication(debug_app, evalex=True))
    started = time.monotonic()
    # The debugger prints the traceback to the server's error stream too (the
    # terminal of `flask run`); here that is a buffer nobody reads.
    answer = debugger.get(FAILING_PAGE, errors_stream=io.StringIO())
    lab.add_response(
        _l("With flask run --debug: the debugger's page"),
        "GET",
        FAILING_PAGE,
        answer.status_code,
        answer.get_data(as_text=True),
        started=started,
    )
    previous = os.environ.get("FLASK_DEBUG")
    os.environ["FLASK_DEBUG"] = "1"
    try:
        ProductionConfig.check()
        refusal = _l("The production config accepted debug mode.")
    except ConfigError as error:
        refusal = str(error)
    finally:
        if previous is None:
            del os.environ["FLASK_DEBUG"]
        else:
            os.environ["FLASK_DEBUG"] = previous
    lab.note(_l("Production with FLASK_DEBUG=1: the app refuses to start"), refusal)
    lab.expect_mails(1)


RUNS: dict[str, Callable[[Lab, dict], None]] = {
    "unhandled": run_unhandled,
    "double-fault": run_double_fault,
    "username-race": run_username_race,
    "mail-tarpit": run_mail_tarpit,
    "error-storm": run_error_storm,
    "database-down": run_database_down,
    "bad-input": run_bad_input,
    "debug-mode": run_debug_mode,
}

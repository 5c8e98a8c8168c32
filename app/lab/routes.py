"""The /lab page: the fault lab's experiments, and what one of them showed.

Development only: create_app registers this blueprint only when LAB_ENABLED
is on, which only DevelopmentConfig does, so elsewhere /lab is a 404. Even
then the lab answers only requests from this machine (`only_this_machine`):
a button runs code that starts servers and breaks things on purpose, which is
nobody else's business, even on a laptop that `flask run --host 0.0.0.0`
shows to the whole café.

Each button is a POST (with the CSRF token every form of the blog carries)
that runs `flask lab NAME --json` in a process of its own (`run_experiment`)
and shows its report: what the user got beside what the operator got.
"""

import ipaddress
import json
import os
import subprocess
import sys
from dataclasses import dataclass

from flask import Blueprint, abort, current_app, render_template, request
from flask_babel import _, get_locale, ngettext

from app.errors import ERRORS, error_response
from app.i18n import current_language
from app.lab.experiments import (
    DEFAULT_STORM,
    EXPERIMENTS,
    EXPERIMENTS_BY_NAME,
    MAX_STORM,
    Experiment,
)
from config import BASE_DIR

bp = Blueprint("lab", __name__)

# A run's upper bound: the slowest experiment (a storm of MAX_STORM, then its
# summary mail) takes well under a minute; this only ends one that hangs.
RUN_TIMEOUT_SECONDS = 120
# How much of a failed run's error output the page shows: its end, where
# Python puts the exception.
STDERR_LINES_SHOWN = 30


def is_this_machine(address: str | None) -> bool:
    """True if `address` is a loopback address: 127.0.0.0/8, ::1, or 127.x
    written as IPv6 (::ffff:127.0.0.1, what a dual-stack socket reports).

    Anything that isn't an IP address at all (a Unix socket's peer, nothing)
    is refused: the lab can't tell where it came from.
    """
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # Python before 3.13 doesn't count ::ffff:127.0.0.1 as loopback.
        ip = ip.ipv4_mapped
    return ip.is_loopback


@bp.before_request
def only_this_machine():
    """Refuse (403) every request of the lab that comes from another machine.

    `request.remote_addr` is the client's address, or behind proxies counted
    by PROXY_COUNT the address they forwarded for. A proxy on this machine
    that PROXY_COUNT doesn't count makes every visitor look like 127.0.0.1:
    never put one in front of a development server.
    """
    if not is_this_machine(request.remote_addr):
        return error_response(
            403,
            ERRORS[403][0],
            _(
                "The fault lab answers only on this machine: open it at "
                "http://127.0.0.1 (or http://[::1]), on the computer that runs the blog."
            ),
        )
    return None


def guide_for(experiment: Experiment) -> tuple[str, str]:
    """The guide, and its heading, that explain `experiment`, in the page's language."""
    if get_locale().language == "zh":
        return "docs/guide.zh-CN.md", experiment.guide_section_zh
    return "docs/guide.md", experiment.guide_section


def can_send_real_mail() -> bool:
    """True if the learner configured a mail server and admins to send the lab's mails to."""
    config = current_app.config
    return bool(config["MAIL_SERVER"] and config["ADMINS"])


@dataclass
class Failure:
    """Why a run gave no report, and the end of what its process said on stderr."""

    message: str
    stderr: str = ""


def shared_context() -> dict:
    """What both lab pages need: the guides in the page's language, the storm's
    limits, and whether the mails can go to the learner's own server."""
    return {
        "guide_for": guide_for,
        "can_send_real_mail": can_send_real_mail(),
        "default_storm": DEFAULT_STORM,
        "max_storm": MAX_STORM,
    }


def lab_page(problem: str | None = None, failure: Failure | None = None, status: int = 200):
    """The list of experiments, with what went wrong with the last button, if anything."""
    return (
        render_template(
            "lab/index.html",
            title=_("The fault lab"),
            experiments=EXPERIMENTS,
            problem=problem,
            failure=failure,
            **shared_context(),
        ),
        status,
    )


@bp.route("/lab")
def index():
    """List the experiments: what each shows, where the guide explains it, and its button."""
    return lab_page()


@dataclass
class RunOptions:
    """What the learner chose on an experiment's form."""

    count: int = DEFAULT_STORM
    real_mail: bool = False


def read_run_form(experiment: Experiment) -> RunOptions | str:
    """The options posted for `experiment`, or why they are refused (a message).

    Checked by hand rather than with WTForms' IntegerField, which takes what
    Python's int() takes: " 5 ", "5_0", "٣" (an Arabic-Indic three). A number
    input sends ASCII digits; so must anything else that posts here.
    """
    form = request.form
    if len(form.getlist("count")) > 1 or len(form.getlist("real_mail")) > 1:
        return _("Each field of the form can be sent once only.")
    options = RunOptions()
    if experiment.name == "error-storm":
        count = form.get("count", str(DEFAULT_STORM))
        out_of_range = _(
            "The number of errors must be a whole number from 1 to %(max)d.", max=MAX_STORM
        )
        if not (count.isascii() and count.isdigit()):
            return out_of_range
        # Leading zeros aside, a number longer than MAX_STORM is bigger: no need
        # to convert 400 digits (Python refuses past 4300 anyway).
        digits = count.lstrip("0")
        if len(digits) > len(str(MAX_STORM)) or not 1 <= int(count) <= MAX_STORM:
            return out_of_range
        options.count = int(count)
    if "real_mail" in form:
        if not can_send_real_mail():
            return _(
                "Sending the mails through your own mail server needs MAIL_SERVER and ADMINS "
                "set (in .env); without them the lab's own mail server receives them."
            )
        options.real_mail = True
    return options


def stderr_tail(stderr: str | bytes | None) -> str:
    """The last lines of a process's error output."""
    # Bytes after a timeout, even in text mode: subprocess doesn't decode them then.
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    return "\n".join((stderr or "").splitlines()[-STDERR_LINES_SHOWN:])


def read_report(stdout: str) -> dict | None:
    """The JSON report `flask lab --json` printed: its last line that is one.

    The last: anything else the process printed (a warning, a log line when
    LOG_TO_STDOUT is on) comes before it.
    """
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if isinstance(report, dict) and "responses" in report:
                return report
    return None


def run_experiment(name: str, options: RunOptions) -> dict | Failure:
    """Run `flask lab NAME --json` in a process of its own; its report, or why there is none.

    A process, not a function call here: the loggers, the mail outbox and
    Sentry are set up once per process, and the lab sets them up for its
    throwaway blog; done inside the development server, they would replace
    the learner's own. The process also starts clean every time: no state
    left over from the previous experiment.
    """
    command = [sys.executable, "-m", "flask", "lab", name, "--json"]
    command += ["--lang", current_language(), "--count", str(options.count)]
    if options.real_mail:
        command.append("--real-mail")
    # The same settings as this server (.env, FLASK_CONFIG...); output in
    # UTF-8 whatever the system's encoding (Windows'), for the Chinese labels.
    # The `flask` command builds the learner's blog before the lab's: its
    # startup line goes to stdout (before the report, which `read_report`
    # skips), not into the learner's log, and it sets up no Sentry of theirs.
    environment = dict(os.environ, PYTHONIOENCODING="utf-8", LOG_TO_STDOUT="1", SENTRY_DSN="")
    try:
        done = subprocess.run(
            command,
            # The project's folder, where `flask` finds blog.py (.flaskenv names it).
            cwd=BASE_DIR,
            env=environment,
            capture_output=True,
            encoding="utf-8",
            errors="replace",
            timeout=RUN_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired as error:
        return Failure(
            ngettext(
                "The experiment did not finish within %(num)d second, and was stopped.",
                "The experiment did not finish within %(num)d seconds, and was stopped.",
                RUN_TIMEOUT_SECONDS,
            ),
            stderr_tail(error.stderr),
        )
    except OSError as error:
        return Failure(_("The experiment's process could not start: %(error)s", error=error))
    if done.returncode != 0:
        return Failure(
            _(
                "The experiment's process failed (exit status %(status)d) and sent no report.",
                status=done.returncode,
            ),
            stderr_tail(done.stderr),
        )
    report = read_report(done.stdout)
    if report is None:
        return Failure(
            _("The experiment's process ended without printing its report."),
            stderr_tail(done.stderr),
        )
    return report


@bp.route("/lab/<name>", methods=["POST"])
def run(name: str):
    """Run one experiment and show its report: what the user got, what the operator got.

    The report is rendered in the POST's response, not saved and redirected
    to: it is the result of an action, like a search's results, and running
    the experiment again is what gives a fresh one. Nothing is stored.
    A run that fails to report shows the list again, saying why (the lab
    page worked; the experiment's process is what broke).
    """
    experiment = EXPERIMENTS_BY_NAME.get(name)
    if experiment is None:
        abort(404)
    options = read_run_form(experiment)
    if isinstance(options, str):
        return lab_page(problem=options, status=400)
    report = run_experiment(name, options)
    if isinstance(report, Failure):
        return lab_page(failure=report)
    return render_template(
        "lab/result.html",
        title=experiment.title,
        experiment=experiment,
        options=options,
        report=report,
        **shared_context(),
    )

"""`flask lab NAME`: run one of the lab's experiments and print what it showed.

The /lab page runs this command in a process of its own for every button
(app/lab/routes.py), and reads its ``--json`` output; in a terminal it prints
the same as text. Development only: in the other configs it refuses.
"""

import json
import sys

import click
from flask import current_app
from flask.cli import with_appcontext
from flask_babel import force_locale
from flask_babel import gettext as _

from app.lab.experiments import DEFAULT_STORM, EXPERIMENTS_BY_NAME, MAX_STORM
from config import LANGUAGES

# The mail settings a learner's own server brings to the lab (--real-mail).
REAL_MAIL_SETTINGS = (
    "MAIL_SERVER",
    "MAIL_PORT",
    "MAIL_USE_TLS",
    "MAIL_USE_SSL",
    "MAIL_USERNAME",
    "MAIL_PASSWORD",
    "MAIL_CA_FILE",
    "MAIL_DEFAULT_SENDER",
    "ADMINS",
)


@click.command("lab")
@click.argument("name", type=click.Choice(list(EXPERIMENTS_BY_NAME)))
@click.option(
    "--count",
    type=click.IntRange(1, MAX_STORM),
    default=DEFAULT_STORM,
    show_default=True,
    help="How many errors the error storm raises.",
)
@click.option(
    "--real-mail",
    is_flag=True,
    help="Send the error mails through the configured MAIL_SERVER to ADMINS, "
    "instead of the lab's own mail server.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the result as one line of JSON, the output's last line (with "
    "LOG_TO_STDOUT the blog's startup line comes before it).",
)
@click.option(
    "--lang", type=click.Choice(LANGUAGES), default="en", help="The language of the labels."
)
@with_appcontext
def lab_command(name: str, count: int, real_mail: bool, as_json: bool, lang: str) -> None:
    """Break the blog on purpose (development only), and show what the user and the
    operator got."""
    config = current_app.config
    if not config["LAB_ENABLED"]:
        raise click.ClickException(
            "The lab runs in development only (FLASK_CONFIG=development): it "
            "starts servers and breaks things on purpose."
        )
    mail_settings = None
    if real_mail:
        if not (config["MAIL_SERVER"] and config["ADMINS"]):
            raise click.ClickException(
                "--real-mail needs MAIL_SERVER and ADMINS set (in .env): they say where to send."
            )
        mail_settings = {key: config[key] for key in REAL_MAIL_SETTINGS}

    # Imported here: only this command needs the sandbox's servers.
    from app.lab.runs import RUNS
    from app.lab.sandbox import Lab

    with Lab(mail_settings, language=lang) as lab:
        RUNS[name](lab, {"count": count})
        with current_app.test_request_context(), force_locale(lang):
            report = {"experiment": name, **lab.report()}
            if as_json:
                json.dump(report, sys.stdout, ensure_ascii=False)
                sys.stdout.write("\n")
            else:
                print_report(report)


def print_report(report: dict) -> None:
    """The report as text, for a terminal."""
    click.secho(str(EXPERIMENTS_BY_NAME[report["experiment"]].title), bold=True)
    for response in report["responses"]:
        click.echo()
        click.secho(f"{response['label']}", bold=True)
        click.echo(
            _(
                "%(method)s %(path)s: %(status)d, after %(ms).1f ms",
                method=response["method"],
                path=response["path"],
                status=response["status"],
                ms=response["waited_ms"],
            )
        )
        for header, value in response["headers"].items():
            click.echo(f"  {header}: {value}")
        for record in response["log"]:
            click.echo("  " + record.replace("\n", "\n  "))
    if report["log"]:
        click.echo()
        click.secho(_("Other log lines"), bold=True)
        for record in report["log"]:
            click.echo(record)
    for mail in report["mails"]:
        click.echo()
        click.secho(
            _("Mail, %(ms).1f ms after the first request:", ms=mail["arrived_ms"]), bold=True
        )
        click.echo(f"Subject: {mail['subject']}\nTo: {mail['to']}\n\n{mail['text']}")
    if report["mail_note"]:
        click.echo()
        click.echo(report["mail_note"])
    for event in report["sentry"]:
        click.echo()
        click.secho(_("Sentry event %(id)s", id=event["event_id"]), bold=True)
        click.echo(f"{event['exception']} {event['tags']}")
    for finding in report["findings"]:
        click.echo()
        click.secho(finding["label"], bold=True)
        click.echo(finding["text"])

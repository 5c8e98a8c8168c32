"""`flask translate`: keep the translation catalogues in step with the code.

The three steps of the Flask Mega-Tutorial's chapter 13, each one Babel's
`pybabel` with the project's settings filled in:

- ``flask translate init LANG``: start a catalogue for a new language;
- ``flask translate update``: after changing strings in the code or the
  templates, add the new ones to every catalogue (and drop the removed ones);
- ``flask translate compile``: turn the edited ``messages.po`` files into the
  ``messages.mo`` files the app reads. The .mo files are committed, so that a
  fresh clone runs without this step; tests/test_i18n.py fails when one is
  out of date.

The template (``messages.pot``) is extracted into a temporary directory each
time, never left in the project where it would go stale. pybabel runs with
the project as its working directory, because babel.cfg names the files to
scan relative to it and the catalogues record those relative paths; so the
commands work from any directory. The catalogues are where the app reads
them, ``BABEL_TRANSLATION_DIRECTORIES`` (app/translations), each in the folder
Babel names the language by (`catalogue_folder`: zh_CN is in zh_Hans_CN/).
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import click
from babel import Locale, UnknownLocaleError
from flask import current_app
from flask.cli import with_appcontext

from config import BASE_DIR

BABEL_CONFIG = BASE_DIR / "babel.cfg"


def pybabel(*arguments: str) -> str:
    """Run pybabel (the same Babel this interpreter has), in the project directory.

    :return: what it said (it reports on stderr).
    :raise click.ClickException: with pybabel's own explanation, if it fails.
    """
    command = [sys.executable, "-m", "babel.messages.frontend", *arguments]
    done = subprocess.run(command, cwd=BASE_DIR, capture_output=True, text=True)
    output = (done.stderr + done.stdout).strip()
    if done.returncode != 0:
        raise click.ClickException(f"pybabel {arguments[0]} failed:\n{output}")
    return output


def translations_dir() -> Path:
    """Where the app reads its catalogues (the first of BABEL_TRANSLATION_DIRECTORIES)."""
    first = current_app.config["BABEL_TRANSLATION_DIRECTORIES"].split(";")[0]
    return Path(current_app.root_path, first)  # an absolute setting stays as it is


def catalogue_folder(language: str) -> str:
    """The folder of `language`'s catalogue: Babel's full name for it.

    Flask-Babel looks a language up under the name Babel gives it, which for
    some languages adds the script: "zh_CN" is read from zh_Hans_CN/, and a
    folder named zh_CN/ would be silently ignored (the pages stay English).

    :raise babel.UnknownLocaleError: for a language Babel doesn't know.
    """
    return str(Locale.parse(language))


def extract(pot_file: Path) -> None:
    """Collect every translatable string of the code and templates into `pot_file`.

    ``_l`` is lazy_gettext, used where a string is defined at import time;
    Babel knows ``_``, ``gettext`` and ``ngettext`` already.
    """
    pybabel(
        "extract",
        "--mapping-file",
        str(BABEL_CONFIG),
        "--keyword",
        "_l",
        "--keyword",
        "lazy_gettext",
        "--keyword",
        "lazy_ngettext:1,2",
        "--project",
        "Blog",
        "--sort-by-file",
        "--output-file",
        str(pot_file),
        ".",  # the project; babel.cfg says which of its files to read
    )


@click.group("translate")
def translate_command() -> None:
    """Translation and localization commands."""


@translate_command.command("init")
@click.argument("language")
@with_appcontext
def init_command(language: str) -> None:
    """Start the catalogue of a new language, e.g. `flask translate init fr`.

    Add the language to LANGUAGES in config.py, and its own name to
    LANGUAGE_NAMES in app/i18n.py, once it is translated.
    """
    try:
        folder = catalogue_folder(language)
    except (ValueError, UnknownLocaleError):
        raise click.ClickException(f"{language!r} is not a language Babel knows.") from None
    directory = translations_dir()
    if (directory / folder).exists():
        raise click.ClickException(
            f"{language} has a catalogue already: run `flask translate update` instead."
        )
    with tempfile.TemporaryDirectory() as temporary:
        pot_file = Path(temporary, "messages.pot")
        extract(pot_file)
        pybabel("init", "-i", str(pot_file), "-d", str(directory), "-l", folder)
    click.echo(f"Created {directory / folder / 'LC_MESSAGES' / 'messages.po'}: translate it.")


@translate_command.command("update")
@with_appcontext
def update_command() -> None:
    """Bring every language's catalogue up to date with the code's strings."""
    directory = translations_dir()
    with tempfile.TemporaryDirectory() as temporary:
        pot_file = Path(temporary, "messages.pot")
        extract(pot_file)
        # Strings removed from the code are dropped rather than kept as
        # obsolete entries: git remembers them, and the catalogue test fails
        # on leftovers that nobody will ever translate again.
        pybabel("update", "-i", str(pot_file), "-d", str(directory), "--ignore-obsolete")
    click.echo(
        "Updated. Translate the new and the fuzzy entries, then run `flask translate compile`."
    )


@translate_command.command("compile")
@with_appcontext
def compile_command() -> None:
    """Compile every language's messages.po into the messages.mo the app reads."""
    # The statistics say how much of each language is translated.
    click.echo(pybabel("compile", "-d", str(translations_dir()), "--statistics"))

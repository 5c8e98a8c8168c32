"""Which language a page is in: the visitor's own choice, else their browser's.

The choice, made with the switch in the navigation (`main.set_language`), is
kept in the session, so that every page, error pages included, can read it
without the database: ``base.html`` must render while the database is down
(see app/templating.py). A logged-in user's choice is also saved on their
account (``User.locale``) and put back into the session whenever they log in,
in a new browser too; that is the only moment the user is loaded anyway.

Without a choice the browser's Accept-Language header decides, and English is
the fallback. Chinese is matched by script, not just by the "zh" prefix: our
catalogue is Simplified Chinese, so "zh", "zh-CN", "zh-SG" and "zh-Hans" get
it, while a browser asking for Traditional Chinese ("zh-TW", "zh-HK",
"zh-MO", "zh-Hant") does not. Its reader may well prefer English to a script
they didn't ask for; their next choice in the header decides (Chrome in Taiwan
sends "zh-TW,zh;q=0.9,en;q=0.8", and the bare "zh" gets Simplified Chinese),
and the switch is one click away.
"""

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, Response, has_request_context, request, session
from flask_babel import force_locale, get_locale
from flask_login import user_loaded_from_cookie, user_logged_in

from app.extensions import db
from app.models import User
from app.redirects import current_page
from config import LANGUAGES

# Each language named in itself, as the switch shows it: someone who can't read
# the current page can still find their own language.
LANGUAGE_NAMES = {"en": "English", "zh_CN": "中文"}

# Subtags of Accept-Language that mean Traditional Chinese.
TRADITIONAL_CHINESE = {"hant", "tw", "hk", "mo"}


def language_from_tag(tag: str) -> str | None:
    """The language of LANGUAGES that serves a BCP 47 tag such as "zh-Hans-CN", or None."""
    subtags = tag.lower().replace("_", "-").split("-")
    if subtags[0] == "en":
        return "en"
    if subtags[0] == "zh" and not TRADITIONAL_CHINESE.intersection(subtags[1:]):
        return "zh_CN"
    return None


def browser_language() -> str | None:
    """The first language in the request's Accept-Language that we have, or None.

    Werkzeug lists the header's languages best first; ``q=0`` means "not this one".
    """
    for tag, quality in request.accept_languages:
        language = language_from_tag(tag) if quality > 0 else None
        if language is not None:
            return language
    return None


def select_locale() -> str | None:
    """The page's language: the visitor's choice, else their browser's (None: English).

    Flask-Babel calls this at most once per request, the first time a string
    is translated. Outside a request (a command, the mail outbox) there is
    nobody to ask, and the default, English, applies unless `force_locale`
    says otherwise.
    """
    if not has_request_context():
        return None
    chosen = session.get("locale")
    if chosen in LANGUAGES:  # a language since removed from LANGUAGES is ignored
        return chosen
    return browser_language()


def current_language() -> str:
    """The page's language as LANGUAGES names it: "en", "zh_CN".

    Not ``str(get_locale())``: Babel fills in the script, "zh_Hans_CN".
    """
    locale = get_locale()
    return "_".join(filter(None, (locale.language, locale.territory)))


def html_lang() -> str:
    """The page's language as HTML's lang attribute wants it: "en", "zh-CN"."""
    return current_language().replace("_", "-")


def remember_language(sender: Flask, user: User, **extra) -> None:
    """At login, reconcile the language chosen in this browser with the account's.

    The latest choice wins: a language picked with the switch just before
    logging in is saved on the account; otherwise the one saved on the
    account is put back into the session. Connected to Flask-Login's signals
    for logging in with the form and with a remember-me cookie: either way the
    user is already loaded, so reading it costs no query, and every later
    page reads the choice from the session.
    """
    chosen = session.get("locale") if session.pop("locale_chosen", False) else None
    if chosen in LANGUAGES:
        if user.locale != chosen:
            user.locale = chosen
            db.session.commit()
    elif user.locale in LANGUAGES:
        session["locale"] = user.locale


@contextmanager
def in_language(app: Flask, locale: str) -> Iterator[None]:
    """Translate in `locale` where no visitor decides it: the mail outbox, a command.

    Flask-Babel needs an app context to find the catalogues; a thread of our
    own has none, so one is pushed here.
    """
    with app.app_context(), force_locale(locale):
        yield


def register_i18n(app: Flask) -> None:
    user_logged_in.connect(remember_language, app)
    user_loaded_from_cookie.connect(remember_language, app)
    app.add_template_global(html_lang)
    app.add_template_global(current_language)
    app.add_template_global(LANGUAGE_NAMES, "language_names")
    app.add_template_global(current_page)  # where the switch's form comes back to

    @app.after_request
    def vary_on_language(response: Response) -> Response:
        """Tell caches that a page depends on the Accept-Language header too
        (Flask adds Cookie, where the visitor's choice is, itself)."""
        response.vary.add("Accept-Language")
        return response

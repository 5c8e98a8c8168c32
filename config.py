"""Configuration, read from the environment.

Every setting comes from an environment variable with a development default, so
the same code runs on a laptop (`flask run`, SQLite, no mail) and in production
(gunicorn, PostgreSQL, mail and Sentry when their variables are set).

`load_dotenv` below makes a `.env` file apply to the app under gunicorn too: the
`flask` command reads `.env` and `.flaskenv` by itself, a production server does
not. gunicorn.conf.py loads the same file for gunicorn's own settings.
Secrets belong in `.env` (git-ignored, see `.env.example`), never in `.flaskenv`.
"""

import logging
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytz
from dotenv import load_dotenv
from limits import parse_many

BASE_DIR = Path(__file__).resolve().parent
load_dotenv(BASE_DIR / ".env")

# The languages the blog is translated into, named as in Babel ("zh_CN"). Each
# but English has a catalogue in app/translations, in the folder of Babel's
# full name for it (zh_Hans_CN: see app/translate.py).
LANGUAGES = ["en", "zh_CN"]

# Only ever used by the development and testing configs; production refuses it.
DEV_SECRET_KEY = "dev-only-insecure-secret-key"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ConfigError(RuntimeError):
    """A setting is missing or invalid; raised at startup, before any request."""


# Settings that couldn't be read. The classes below read the environment when
# this module is imported, where an exception would end in a traceback before
# blog.py could catch it; so problems are noted here, and Config.check()
# reports them all at once when the app starts.
invalid_settings: list[str] = []


def env_bool(name: str, default: bool = False) -> bool:
    """Read a yes/no setting: accepts 1/true/yes/on and 0/false/no/off.

    Anything else is refused (noted in `invalid_settings`) instead of being
    read as False, so that a typo such as ``MAIL_USE_SSL=ture`` stops the app
    at startup rather than silently sending mail in clear text.
    """
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    invalid_settings.append(f"{name}={value!r} is not a boolean: use 1/true/yes or 0/false/no.")
    return default


def env_int(name: str, default: int) -> int:
    """Read a whole-number setting (a bad one is noted in `invalid_settings`)."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        invalid_settings.append(f"{name}={value!r} is not a whole number.")
        return default


def time_zone_problem(name: str, value: object) -> str:
    """The message that refuses `value` as the time zone setting `name`."""
    return (
        f"{name}={value!r} is not a time zone: use a name from the tz database, "
        "e.g. UTC, Asia/Shanghai or America/New_York."
    )


def time_zone_name(value: object) -> str | None:
    """The tz database's spelling of the zone `value` names, or None if it names none.

    Asked of pytz, because Flask-Babel looks the zone up with pytz too: a name
    accepted here is one the pages can be shown in. pytz ignores case
    ("asia/shanghai" gives "Asia/Shanghai"), but not spaces.
    """
    if not isinstance(value, str):
        return None
    try:
        return pytz.timezone(value).zone
    except pytz.UnknownTimeZoneError:
        return None


def env_time_zone(name: str, default: str = "UTC") -> str:
    """Read a time zone setting, spelled as the tz database spells it (a bad one is
    noted in `invalid_settings`); spaces around it are ignored, and so is case."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    zone = time_zone_name(value)
    if zone is None:
        invalid_settings.append(time_zone_problem(name, value))
        return default
    return zone


def env_list(name: str) -> list[str]:
    """Read a comma-separated setting such as ``ADMINS=a@example.com,b@example.com``."""
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def database_url(url: str | None) -> str:
    """Normalise ``DATABASE_URL`` for SQLAlchemy.

    Hosting platforms hand out ``postgres://`` (a name SQLAlchemy dropped in 1.4)
    or ``postgresql://`` (which SQLAlchemy maps to psycopg2, not installed here);
    both are rewritten to the psycopg 3 driver. With no URL at all we use an
    SQLite file, which Flask-SQLAlchemy puts in the instance folder.
    """
    if not url:
        return "sqlite:///blog.db"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


# Storm control's window can't be longer than the week its store remembers a bug.
MAX_ERROR_WINDOW = 7 * 24 * 3600


def check_redis_url(url: str) -> None:
    """Refuse a REDIS_URL that the redis client couldn't use (raise ConfigError)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (reading it checks it: "redis://host:notaport" raises)
    except ValueError as error:
        raise ConfigError(f"REDIS_URL={url!r} is not a URL: {error}.") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ConfigError(
            f"REDIS_URL={url!r} is not a Redis URL: use redis://host:6379/0 (or rediss:// for TLS)."
        )


def check_base_url(url: str) -> None:
    """Refuse a BASE_URL that the links in mails can't start with (raise ConfigError).

    Every link is BASE_URL and a path: without a scheme it would be relative
    to wherever the mail is read, a query or a fragment would land in the
    middle of it, and a port that isn't one makes the mail job fail.
    """
    how = (
        "write the site's address, e.g. https://blog.example.com "
        "(a port and a path may follow: https://example.com:8443/blog)"
    )
    # Not repeated in the message if it may hold a password ("https://user:password@host").
    setting = "BASE_URL" if "@" in url else f"BASE_URL={url!r}"
    try:
        parts = urlsplit(url)
        port = parts.port  # reading it checks it: "https://host:notaport" raises
    except ValueError as error:
        raise ConfigError(f"{setting} is not a URL ({error}): {how}.") from None
    # urlsplit drops spaces at either end, which would still be in every link.
    if any(char.isspace() or not char.isprintable() for char in url):
        problem = "has a space or a control character in it"
    elif parts.scheme not in ("http", "https") or not parts.hostname:
        problem = "does not start with http:// or https:// and a host name"
    elif port == 0:
        problem = "has port 0"
    elif parts.username is not None:
        problem = "has a user name or a password in it"
    elif "?" in url or "#" in url:
        problem = "has a query (?) or a fragment (#), which would land in the middle of each link"
    else:
        return
    raise ConfigError(f"{setting} {problem}: {how}.")


# Whole numbers outside which the app can't work: each would otherwise be a
# 500 at some request, not an error at startup.
WHOLE_NUMBER_RANGES = [
    # ProxyFix would read the X-Forwarded-* lists from the wrong end.
    ("PROXY_COUNT", 0, 10, "it counts the proxies in front, 0 when there is none."),
    # app/pagination.py's pages times this must fit the database's OFFSET.
    ("POSTS_PER_PAGE", 1, 1000, "the number of posts a page shows."),
]


class Config:
    """Settings shared by every environment."""

    SECRET_KEY = os.environ.get("SECRET_KEY") or DEV_SECRET_KEY
    SQLALCHEMY_DATABASE_URI = database_url(os.environ.get("DATABASE_URL"))

    # Seconds to wait for the database to accept a connection before giving
    # up and showing the "temporarily unavailable" page (app/database.py).
    DATABASE_CONNECT_TIMEOUT = env_int("DATABASE_CONNECT_TIMEOUT", 5)
    # How many reverse proxies (nginx, a load balancer) sit in front of the app
    # and add X-Forwarded-For/-Proto/-Host. 0 trusts none of those headers:
    # without a proxy, any client could send them to fake its address.
    PROXY_COUNT = env_int("PROXY_COUNT", 0)
    # With PROXY_COUNT 0, note a request that came with X-Forwarded-For anyway,
    # for `flask check-deploy` to warn about (app/commands.py).
    NOTE_UNCOUNTED_PROXY = True

    POSTS_PER_PAGE = env_int("POSTS_PER_PAGE", 10)
    # Requests bigger than this get the 413 page instead of being read into memory.
    MAX_CONTENT_LENGTH = env_int("MAX_CONTENT_LENGTH", 1024 * 1024)
    # Werkzeug's hash method; the default (scrypt) is deliberately slow.
    PASSWORD_HASH_METHOD = "scrypt"
    SESSION_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_SAMESITE = "Lax"
    # "Remember me" keeps a browser logged in this long, and no login, with
    # or without it, outlives it on the server (app/auth/sessions.py).
    REMEMBER_COOKIE_DURATION = timedelta(days=30)
    # Flask's limit on a session cookie's age; the same, so the two agree.
    PERMANENT_SESSION_LIFETIME = REMEMBER_COOKIE_DURATION
    # Strict-Transport-Security on responses to HTTPS requests (never on plain
    # HTTP): for this many seconds the browser uses only HTTPS for the site,
    # so nobody on the network can strip it. 0 sends no header.
    HSTS_MAX_AGE = env_int("HSTS_MAX_AGE", 365 * 24 * 3600)

    # Gravatar sends every visitor's browser to a third party, so it is opt-in;
    # by default avatars are small SVGs drawn by the app itself.
    USE_GRAVATAR = env_bool("USE_GRAVATAR")

    # Bootstrap's CSS and JS come from this app, never from a CDN, so the blog
    # works offline, on intranets and where public CDNs are blocked.
    BOOTSTRAP_SERVE_LOCAL = True

    # Who is told about errors, and how (used by app/logger.py and password resets).
    ADMINS = env_list("ADMINS")
    MAIL_SERVER = os.environ.get("MAIL_SERVER")
    MAIL_PORT = env_int("MAIL_PORT", 25)
    MAIL_USE_TLS = env_bool("MAIL_USE_TLS")  # STARTTLS, usually port 587
    MAIL_USE_SSL = env_bool("MAIL_USE_SSL")  # implicit TLS, usually port 465
    MAIL_USERNAME = os.environ.get("MAIL_USERNAME")
    # For 163.com, 126.com and QQ Mail this is the client authorization code,
    # not the password used on the web site.
    MAIL_PASSWORD = os.environ.get("MAIL_PASSWORD")
    MAIL_DEFAULT_SENDER = os.environ.get("MAIL_DEFAULT_SENDER")
    MAIL_TIMEOUT = env_int("MAIL_TIMEOUT", 10)
    # A CA bundle to trust instead of the system's, for a mail relay with a
    # private certificate. Certificates are always verified.
    MAIL_CA_FILE = os.environ.get("MAIL_CA_FILE")
    # The language of the error mails and of `flask test-email`: the admins',
    # whatever language the visitor who hit the error reads. One of LANGUAGES.
    ADMIN_LOCALE = (os.environ.get("ADMIN_LOCALE") or "en").strip()
    # The time zone of the exact dates and times on the pages (shown on hover
    # over "3 minutes ago"): Flask-Babel's own setting, which format_datetime
    # converts to. A tz database name such as Asia/Shanghai or America/New_York,
    # so that each date gets the offset it had then (EST in January, EDT in
    # July); the zone is printed with the time. Prefer a city to Etc/GMT-8,
    # whose sign is POSIX's, the opposite of ISO's: Etc/GMT-8 is UTC+8. Error
    # mails, the log and `flask errors` keep the server's local time.
    BABEL_DEFAULT_TIMEZONE = env_time_zone("BABEL_DEFAULT_TIMEZONE")
    # Error mails start with this; any language works ("[博客异常]"), it is sent as UTF-8.
    MAIL_SUBJECT_PREFIX = os.environ.get("MAIL_SUBJECT_PREFIX") or "[Blog]"
    # Storm control: the same error is mailed at most once per window (seconds);
    # repeats are counted and reported in a summary when the window closes.
    MAIL_ERROR_WINDOW = env_int("MAIL_ERROR_WINDOW", 600)
    # One Redis for every host (redis:// or rediss://host:6379/0): storm control and the
    # rate limits then count across all of them. Unset, each host keeps its
    # own (SQLite files in LOG_DIR, shared by its workers), right for one host.
    REDIS_URL = os.environ.get("REDIS_URL", "").strip() or None

    # Logging (app/logger.py). The directory is absolute by default, so the log
    # lands in the project's logs/ whatever directory the server was started from.
    LOG_DIR = os.environ.get("LOG_DIR") or str(BASE_DIR / "logs")
    LOG_FILE = os.environ.get("LOG_FILE") or "blog.log"
    # Eleven files of 10 MB: weeks of a small site's lines, and room for an
    # error storm (each repeat costs one line, not a traceback: app/reporting/log_file.py).
    LOG_MAX_BYTES = env_int("LOG_MAX_BYTES", 10 * 1024 * 1024)
    LOG_BACKUP_COUNT = env_int("LOG_BACKUP_COUNT", 10)
    LOG_LEVEL = (os.environ.get("LOG_LEVEL") or "INFO").strip().upper()
    LOG_TO_STDOUT = env_bool("LOG_TO_STDOUT")
    # Other libraries' loggers that get the same handlers: "name" or "name:LEVEL",
    # comma-separated. None means the default: SQLAlchemy's and Flask-Limiter's
    # warnings, and gunicorn's error log when running under gunicorn.
    LOG_EXTRA_LOGGERS = os.environ.get("LOG_EXTRA_LOGGERS")

    # Sentry is opt-in: nothing is sent anywhere unless SENTRY_DSN is set.
    SENTRY_DSN = os.environ.get("SENTRY_DSN")
    SENTRY_ENVIRONMENT = os.environ.get("SENTRY_ENVIRONMENT") or os.environ.get(
        "FLASK_CONFIG", "development"
    )
    SENTRY_RELEASE = os.environ.get("SENTRY_RELEASE")

    # The site's public address, e.g. https://blog.example.com, for links in
    # mails (app/auth/email.py).
    BASE_URL = os.environ.get("BASE_URL")
    # The host names the site answers to (Flask's own setting), comma-separated:
    # "blog.example.com,www.blog.example.com"; ".example.com" takes every
    # subdomain. A request for any other Host gets a 400 page. None: any Host.
    TRUSTED_HOSTS = env_list("TRUSTED_HOSTS") or None
    # How long a password-reset link stays valid, in seconds.
    RESET_TOKEN_MAX_AGE = env_int("RESET_TOKEN_MAX_AGE", 3600)
    # How long the link that confirms a new email address stays valid: a day,
    # since it waits for someone to read their mail, and using it needs no password.
    EMAIL_CHANGE_TOKEN_MAX_AGE = 24 * 60 * 60

    # Rate limits: what each one counts, and why, is explained in app/security.py;
    # here are the numbers. "5 per minute; 20 per hour" means both must hold.
    # Failed logins and reset requests per client: 20 failures a minute is more
    # than a roomful of typos.
    AUTH_RATE_LIMIT_PER_CLIENT = (
        os.environ.get("AUTH_RATE_LIMIT_PER_CLIENT") or "20 per minute; 200 per hour"
    )
    # The same per account, from any address: someone who has forgotten a
    # password gives up before 5 tries a minute, while a botnet gets 20 guesses
    # an hour and a mailbox at most 20 reset mails. The price: by failing on
    # purpose, anyone can keep an account from logging in until the window ends.
    # That's the usual trade; the per-client limit makes it cost the attacker an
    # address per account.
    AUTH_RATE_LIMIT_PER_ACCOUNT = (
        os.environ.get("AUTH_RATE_LIMIT_PER_ACCOUNT") or "5 per minute; 20 per hour"
    )
    # Registrations per client: enough for a family behind one router, not for a
    # script. A classroom registering at once from one address needs this raised.
    REGISTRATION_RATE_LIMIT = (
        os.environ.get("REGISTRATION_RATE_LIMIT") or "5 per minute; 50 per hour"
    )
    # Always set, never left to Flask-Limiter's default: its limiter object is
    # shared by every app in the process and would keep the last app's choice.
    RATELIMIT_ENABLED = env_bool("RATELIMIT_ENABLED", True)
    # Where the counts live: Redis when REDIS_URL is set, else a SQLite file in
    # LOG_DIR that every worker of this host shares (app/rate_limit_store.py).
    # memory:// (only when set explicitly) is per process: each gunicorn worker
    # counts on its own, so a client may get up to (workers x the limit), and
    # `flask check-deploy` warns about that.
    RATELIMIT_STORAGE_URI = (
        os.environ.get("RATELIMIT_STORAGE_URI", "").strip()
        or REDIS_URL
        or f"sqlite:///{Path(LOG_DIR) / 'rate-limits.sqlite3'}"
    )
    # If Redis stops answering, or the SQLite file can't be used, count in
    # memory until it is back rather than failing every login with a 500; and
    # don't wait long to find out.
    RATELIMIT_IN_MEMORY_FALLBACK_ENABLED = True
    RATELIMIT_STORAGE_OPTIONS = {"socket_timeout": 2, "socket_connect_timeout": 2}
    # A failed login is counted after the view has run, where Flask-Limiter's
    # fallback doesn't reach: if Redis dies just then, log it, don't fail the request.
    RATELIMIT_SWALLOW_ERRORS = True

    # Where Flask-Babel finds the catalogues, and where `flask translate` writes
    # them: absolute, so both work from any directory.
    BABEL_TRANSLATION_DIRECTORIES = str(BASE_DIR / "app" / "translations")

    # The fault lab (/lab and `flask lab`, app/lab/): on in development only.
    LAB_ENABLED = False

    # `python blog.py` with this on leaves exceptions and reloading to an IDE's
    # debugger (VS Code, PyCharm) instead of Werkzeug's.
    EXTERNAL_DEBUGGER = env_bool("EXTERNAL_DEBUGGER")

    @classmethod
    def check(cls) -> None:
        """Refuse settings that cannot work; called by the app factory."""
        if invalid_settings:
            raise ConfigError("\n".join(invalid_settings))
        if cls.LOG_LEVEL not in logging.getLevelNamesMapping():
            raise ConfigError(f"LOG_LEVEL={cls.LOG_LEVEL!r} is not a logging level, e.g. INFO.")
        if cls.ADMIN_LOCALE not in LANGUAGES:
            raise ConfigError(
                f"ADMIN_LOCALE={cls.ADMIN_LOCALE!r} is not a language the blog speaks: "
                f"use one of {', '.join(LANGUAGES)}."
            )
        if time_zone_name(cls.BABEL_DEFAULT_TIMEZONE) is None:
            # Flask-Babel would only look it up at the first date on a page: a 500.
            raise ConfigError(
                time_zone_problem("BABEL_DEFAULT_TIMEZONE", cls.BABEL_DEFAULT_TIMEZONE)
            )
        for name in (
            "AUTH_RATE_LIMIT_PER_CLIENT",
            "AUTH_RATE_LIMIT_PER_ACCOUNT",
            "REGISTRATION_RATE_LIMIT",
        ):
            # A typo here would otherwise be a 500 on every login, not a startup error.
            try:
                parse_many(getattr(cls, name))
            except ValueError:
                raise ConfigError(
                    f"{name}={getattr(cls, name)!r} is not a rate limit, e.g. '5 per minute'."
                ) from None
        if not 1 <= cls.MAIL_ERROR_WINDOW <= MAX_ERROR_WINDOW:
            # 0 would mail every error, and turn "once per window" into "every time".
            raise ConfigError(
                f"MAIL_ERROR_WINDOW={cls.MAIL_ERROR_WINDOW} is not a number of seconds "
                f"from 1 to {MAX_ERROR_WINDOW} (a week), e.g. 600."
            )
        for name, minimum, maximum, why in WHOLE_NUMBER_RANGES:
            if not minimum <= getattr(cls, name) <= maximum:
                raise ConfigError(
                    f"{name}={getattr(cls, name)} is not from {minimum} to {maximum}: {why}"
                )
        if cls.HSTS_MAX_AGE < 0:
            raise ConfigError(f"HSTS_MAX_AGE={cls.HSTS_MAX_AGE} is negative: use 0 to turn it off.")
        if cls.REDIS_URL:
            check_redis_url(cls.REDIS_URL)
        if cls.BASE_URL:
            check_base_url(cls.BASE_URL)
        if cls.MAIL_USE_TLS and cls.MAIL_USE_SSL:
            raise ConfigError(
                "MAIL_USE_TLS (STARTTLS) and MAIL_USE_SSL (implicit TLS) exclude "
                "each other: set only the one your mail provider documents."
            )
        local_server = cls.MAIL_SERVER in ("localhost", "127.0.0.1", "::1")
        if cls.MAIL_USERNAME and not (cls.MAIL_USE_TLS or cls.MAIL_USE_SSL or local_server):
            raise ConfigError(
                f"MAIL_USERNAME is set but neither MAIL_USE_SSL nor MAIL_USE_TLS: the password "
                f"would cross the network to {cls.MAIL_SERVER} in clear text."
            )


class DevelopmentConfig(Config):
    """`flask run` on a laptop."""

    # Not read from the environment: the lab starts servers and breaks things
    # on purpose, so no setting can turn it on in testing or production.
    LAB_ENABLED = True


class TestingConfig(Config):
    """pytest: each test points SQLALCHEMY_DATABASE_URI at its own database."""

    TESTING = True
    # Tests send X-Forwarded-For on purpose, and the note would land in the
    # project's logs/: a test that checks the note turns this on.
    NOTE_UNCOUNTED_PROXY = False
    SECRET_KEY = DEV_SECRET_KEY
    SQLALCHEMY_DATABASE_URI = "sqlite://"
    # Tests post forms without a CSRF token; the CSRF tests turn it back on.
    WTF_CSRF_ENABLED = False
    # Each test's app counts its rate limits from zero, in memory, not in
    # the SQLite file in LOG_DIR that every app would share.
    RATELIMIT_STORAGE_URI = "memory://"
    # Fast hashes keep the suite quick; scrypt costs tens of ms per login.
    PASSWORD_HASH_METHOD = "pbkdf2:sha256:1000"


class ProductionConfig(Config):
    """gunicorn behind a reverse proxy."""

    # Cookies are Secure (sent over HTTPS only) whenever the request came over
    # HTTPS (app/security.py); with this on, they are Secure always, which is
    # right once the site is served only over HTTPS.
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE")
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    # Keep the values of SQL statements out of exception messages: a failed
    # INSERT INTO user would otherwise put a password hash into the log and
    # the error mail.
    SQLALCHEMY_ENGINE_OPTIONS = {"hide_parameters": True}

    @classmethod
    def check(cls) -> None:
        super().check()
        if env_bool("FLASK_DEBUG"):
            raise ConfigError(
                "Debug mode is on (FLASK_DEBUG or --debug). Never run production with the "
                "debugger: anyone who can trigger an error gets a Python shell on the server."
            )
        if cls.SECRET_KEY == DEV_SECRET_KEY:
            # In .env first: systemd passes on no variable exported in a shell,
            # and the app reads .env itself wherever it is started from.
            raise ConfigError(
                "SECRET_KEY is not set. Production needs its own secret key: add a line "
                f"SECRET_KEY=<key> to {BASE_DIR / '.env'} (the app reads it, under systemd "
                "too), or export SECRET_KEY=<key> in the shell that starts the app. "
                "Make a key with:\n"
                "  python3 -c 'import secrets; print(secrets.token_hex(32))'"
            )


configs: dict[str, type[Config]] = {
    "development": DevelopmentConfig,
    "testing": TestingConfig,
    "production": ProductionConfig,
}


def config_from_env() -> type[Config]:
    """Pick the configuration class named by ``FLASK_CONFIG`` (default: development)."""
    name = os.environ.get("FLASK_CONFIG", "development").strip().lower()
    try:
        return configs[name]
    except KeyError:
        choices = ", ".join(configs)
        raise ConfigError(f"FLASK_CONFIG={name!r} is unknown: use one of {choices}.") from None

"""The site's time zone, BABEL_DEFAULT_TIMEZONE: the exact date and time shown on
hover over "3 minutes ago" (posts, "Last seen" on profiles) are in that zone
and name it by its offset at that moment, in English and in Chinese; the
relative text and the ``datetime`` attribute don't change with it; and a zone
that doesn't exist stops the app at startup, never a 500 at the first page.

Every post here is written at a known instant; on PostgreSQL the test
databases answer in UTC+8 (tests/databases.py), which must not show.
"""

import importlib.util
import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from types import ModuleType

import pytest
import pytz
from babel import dates
from flask import Flask
from flask.testing import FlaskClient
from flask_babel import force_locale, get_babel, refresh

import config
from app.extensions import db
from app.models import Post
from app.templating import DateWriter, exact_time
from config import LANGUAGES, ConfigError
from tests.helpers import add_user
from tests.servers import BIN, ROOT, clean_env

WINTER = datetime(2025, 1, 15, 12, 34, 56, tzinfo=UTC)
SUMMER = datetime(2025, 7, 15, 12, 34, 56, tzinfo=UTC)
CHINESE = "zh-CN,zh;q=0.9,en;q=0.8"  # what Chrome in China sends

# (zone, language): the hover text of the July post, then of the January one.
# St. John's and Dublin are where Babel's own zone names are wrong ("-0430",
# and "GMT" for Irish summer time). English has a narrow no-break space
# (U+202F) before AM and PM, as CLDR writes it.
TITLES = {
    ("UTC", "en"): [
        "July 15, 2025, 12:34:56\u202fPM UTC",
        "January 15, 2025, 12:34:56\u202fPM UTC",
    ],
    ("UTC", "zh_CN"): ["2025年7月15日 UTC 12:34:56", "2025年1月15日 UTC 12:34:56"],
    ("Asia/Shanghai", "en"): [
        "July 15, 2025, 8:34:56\u202fPM UTC+08:00",
        "January 15, 2025, 8:34:56\u202fPM UTC+08:00",
    ],
    ("Asia/Shanghai", "zh_CN"): [
        "2025年7月15日 UTC+08:00 20:34:56",
        "2025年1月15日 UTC+08:00 20:34:56",
    ],
    ("America/New_York", "en"): [
        "July 15, 2025, 8:34:56\u202fAM UTC-04:00",
        "January 15, 2025, 7:34:56\u202fAM UTC-05:00",
    ],
    ("America/New_York", "zh_CN"): [
        "2025年7月15日 UTC-04:00 08:34:56",
        "2025年1月15日 UTC-05:00 07:34:56",
    ],
    ("America/St_Johns", "en"): [
        "July 15, 2025, 10:04:56\u202fAM UTC-02:30",
        "January 15, 2025, 9:04:56\u202fAM UTC-03:30",
    ],
    ("America/St_Johns", "zh_CN"): [
        "2025年7月15日 UTC-02:30 10:04:56",
        "2025年1月15日 UTC-03:30 09:04:56",
    ],
    ("Europe/Dublin", "en"): [
        "July 15, 2025, 1:34:56\u202fPM UTC+01:00",
        "January 15, 2025, 12:34:56\u202fPM UTC",
    ],
    ("Europe/Dublin", "zh_CN"): ["2025年7月15日 UTC+01:00 13:34:56", "2025年1月15日 UTC 12:34:56"],
}

REFUSED = (
    "BABEL_DEFAULT_TIMEZONE={!r} is not a time zone: use a name from the tz database, "
    "e.g. UTC, Asia/Shanghai or America/New_York."
)


def short_id(value: object) -> str:
    """A test id that stays readable when the value is 10,000 characters long."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...({len(text)} characters)"


class _TimeReader(HTMLParser):
    """Collects every <time> element: its datetime attribute, title and text."""

    def __init__(self):
        super().__init__()
        self.times: list[list[str]] = []
        self._inside = False

    def handle_starttag(self, tag, attrs):
        if tag == "time":
            attributes = dict(attrs)
            self.times.append([attributes["datetime"], attributes["title"], ""])
            self._inside = True

    def handle_endtag(self, tag):
        if tag == "time":
            self._inside = False

    def handle_data(self, data):
        if self._inside:
            self.times[-1][2] += data


def times_on(response) -> list[tuple[str, str, str]]:
    """Every ``<time>`` on the page, in order: (datetime attribute, title, text)."""
    assert response.status_code == 200, response.status
    reader = _TimeReader()
    reader.feed(response.get_data(as_text=True))
    return [tuple(time) for time in reader.times]


def hover_texts(response) -> list[tuple[str, str]]:
    """(datetime attribute, title) of every ``<time>`` on the page, in order."""
    return [(instant, title) for instant, title, _ in times_on(response)]


def client_in(app: Flask, language: str) -> FlaskClient:
    """A client whose browser asks for `language` (English asks for nothing)."""
    client = app.test_client()
    if language == "zh_CN":
        client.environ_base["HTTP_ACCEPT_LANGUAGE"] = CHINESE
    return client


def add_posts_at(app: Flask, *instants: datetime) -> None:
    """Give a new user, anna, a post written at each of `instants`."""
    with app.app_context():
        author = add_user("anna")
        db.session.add_all(
            Post(body=f"written at {moment}", author=author, timestamp=moment)
            for moment in instants
        )
        db.session.commit()


# --- What the pages show ----------------------------------------------------------------


def test_every_language_has_its_expected_titles():
    """A language added to LANGUAGES must get its own rows above: its "long"
    format decides where the zone goes."""
    assert {language for _, language in TITLES} == set(LANGUAGES)


@pytest.mark.parametrize(("zone", "language"), list(TITLES))
def test_hover_shows_the_time_in_the_sites_zone(make_app, zone, language):
    app = make_app(BABEL_DEFAULT_TIMEZONE=zone)
    add_posts_at(app, WINTER, SUMMER)
    response = client_in(app, language).get("/explore")
    expected_instants = ["2025-07-15T12:34:56+00:00", "2025-01-15T12:34:56+00:00"]
    assert hover_texts(response) == list(
        zip(expected_instants, TITLES[zone, language], strict=True)
    )


def test_the_language_chosen_with_the_switch_decides_the_format(make_app):
    """The session's choice, not only Accept-Language: the same zone, in Chinese."""
    app = make_app(BABEL_DEFAULT_TIMEZONE="America/New_York")
    add_posts_at(app, WINTER, SUMMER)
    client = app.test_client()
    client.post("/language/zh_CN", data={"next": "/explore"})
    titles = [title for _, title in hover_texts(client.get("/explore"))]
    assert titles == TITLES["America/New_York", "zh_CN"]


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("en", "January 15, 2025, 7:34:56\u202fAM UTC-05:00"),
        ("zh_CN", "2025年1月15日 UTC-05:00 07:34:56"),
    ],
)
def test_last_seen_on_a_profile_is_in_the_sites_zone(make_app, language, expected):
    app = make_app(BABEL_DEFAULT_TIMEZONE="America/New_York")
    with app.app_context():
        add_user("anna").last_seen = WINTER
        db.session.commit()
    response = client_in(app, language).get("/user/anna")
    assert hover_texts(response) == [("2025-01-15T12:34:56+00:00", expected)]


def test_daylight_saving_changes_in_new_york(make_app):
    """Each time carries the offset of its own moment: 2 AM is skipped in March,
    and 1:30 AM comes twice in November, first in summer time, then in winter time."""
    app = make_app(BABEL_DEFAULT_TIMEZONE="America/New_York")
    add_posts_at(
        app,
        datetime(2025, 3, 9, 6, 59, 59, tzinfo=UTC),
        datetime(2025, 3, 9, 7, 0, 0, tzinfo=UTC),
        datetime(2025, 11, 2, 5, 30, tzinfo=UTC),
        datetime(2025, 11, 2, 6, 30, tzinfo=UTC),
    )
    titles = [title for _, title in hover_texts(app.test_client().get("/explore"))]
    assert titles == [
        "November 2, 2025, 1:30:00\u202fAM UTC-05:00",
        "November 2, 2025, 1:30:00\u202fAM UTC-04:00",
        "March 9, 2025, 3:00:00\u202fAM UTC-04:00",
        "March 9, 2025, 1:59:59\u202fAM UTC-05:00",
    ]


@pytest.mark.parametrize(
    ("zone", "instant", "expected"),
    [
        (
            "Asia/Shanghai",
            datetime(2025, 12, 31, 20, 0, tzinfo=UTC),
            "2026年1月1日 UTC+08:00 04:00:00",
        ),
        (
            "America/New_York",
            datetime(2026, 1, 1, 2, 0, tzinfo=UTC),
            "2025年12月31日 UTC-05:00 21:00:00",
        ),
    ],
)
def test_the_date_is_the_zones_date(make_app, zone, instant, expected):
    """New Year comes earlier in Beijing and later in New York than in UTC."""
    app = make_app(BABEL_DEFAULT_TIMEZONE=zone)
    add_posts_at(app, instant)
    titles = [title for _, title in hover_texts(client_in(app, "zh_CN").get("/explore"))]
    assert titles == [expected]


@pytest.mark.parametrize(("language", "relative"), [("en", "3 hours ago"), ("zh_CN", "3小时前")])
def test_relative_text_and_instant_are_the_same_in_every_zone(make_app, language, relative):
    """Only the title changes with the zone; UTC+14 and UTC-11 are a day apart."""
    zones = ["UTC", "Asia/Shanghai", "America/New_York", "Pacific/Kiritimati", "Pacific/Pago_Pago"]
    apps = [make_app(BABEL_DEFAULT_TIMEZONE=zone) for zone in zones]
    add_posts_at(apps[0], datetime.now(UTC) - timedelta(hours=3))
    with apps[0].app_context():
        stored = db.session.scalars(db.select(Post.timestamp)).one()

    shown = [times_on(client_in(app, language).get("/explore")) for app in apps]
    assert [[(instant, text) for instant, _, text in times] for times in shown] == [
        [(stored.isoformat(), relative)]
    ] * len(zones)
    assert stored.isoformat().endswith("+00:00")
    assert len({times[0][1] for times in shown}) == len(zones)  # five different titles


def relative_cases() -> list[int]:
    """Seconds from now, in both directions: around each unit's boundaries (a
    whole number of it, 0.85 of it, half of one more), and a spread of others."""
    seconds = {0}
    for _, unit_seconds in dates.TIMEDELTA_UNITS:
        for count in range(40):
            whole, threshold = count * unit_seconds, count * unit_seconds * 0.85
            for point in (whole, threshold, whole + unit_seconds // 2):
                seconds |= {int(point) + step for step in (-2, -1, 0, 1, 2)}
    seconds |= set(random.Random(2018).sample(range(10**9), 2000))
    return sorted(seconds | {-second for second in seconds})


def test_relative_text_is_babels_own(app):
    """DateWriter.relative rounds and caches (app/templating.py): what it writes
    is what Babel's format_timedelta writes, in every language, on both sides of
    every rounding boundary, with and without a fraction of a second."""
    wrong = []
    with app.test_request_context():
        for language in LANGUAGES:
            with force_locale(language):
                writer = DateWriter()
                for second in relative_cases():
                    for fraction in (timedelta(0), timedelta(microseconds=500_000)):
                        moment = writer.now + timedelta(seconds=second) + fraction
                        shown = writer.relative(moment)
                        babel = dates.format_timedelta(
                            moment - writer.now, add_direction=True, locale=writer.language
                        )
                        if shown != babel:
                            wrong.append((language, second, fraction, shown, babel))
    assert wrong == []


def test_every_zone_is_shown_with_its_offset_at_that_moment(app):
    """For every zone pytz knows, in every language: the zone's own date, time and
    offset, worked out here by Python from the tz database, not by Babel.

    One app, its zone changed where Flask-Babel keeps BABEL_DEFAULT_TIMEZONE
    (an app for each of the ~600 zones would take half a minute)."""
    wrong = []
    with app.test_request_context():
        for name in pytz.all_timezones:
            get_babel().default_timezone = name
            refresh()
            for moment in (WINTER, SUMMER):
                local = moment.astimezone(pytz.timezone(name))
                offset = local.strftime("%z")
                zone = "UTC" if offset == "+0000" else f"UTC{offset[:3]}:{offset[3:]}"
                english_date = dates.format_date(local, "long", locale="en")
                hour = local.hour % 12 or 12
                english_time = f"{hour}:{local:%M:%S}\u202f{'AM' if local.hour < 12 else 'PM'}"
                chinese_date = dates.format_date(local, "long", locale="zh_CN")
                expected = {
                    "en": f"{english_date}, {english_time} {zone}",
                    "zh_CN": f"{chinese_date} {zone} {local:%H:%M:%S}",
                }
                for language in LANGUAGES:
                    with force_locale(language):
                        shown = exact_time(moment)
                    if shown != expected[language]:
                        wrong.append((name, language, shown, expected[language]))
    assert wrong == []


# --- Reading the setting ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expected"),
    [
        ("asia/shanghai", "January 15, 2025, 8:34:56\u202fPM UTC+08:00"),
        ("US/Eastern", "January 15, 2025, 7:34:56\u202fAM UTC-05:00"),
        ("utc", "January 15, 2025, 12:34:56\u202fPM UTC"),
        # POSIX's sign, the opposite of ISO's: Etc/GMT-8 is UTC+8, and the page says so.
        ("Etc/GMT-8", "January 15, 2025, 8:34:56\u202fPM UTC+08:00"),
    ],
)
def test_zone_names_flask_babel_reads_are_accepted(make_app, zone, expected):
    """Case doesn't matter to pytz, which Flask-Babel looks zones up with, nor to
    the check; old names (US/Eastern) are aliases in the tz database."""
    app = make_app(BABEL_DEFAULT_TIMEZONE=zone)
    add_posts_at(app, WINTER)
    assert hover_texts(app.test_client().get("/explore")) == [
        ("2025-01-15T12:34:56+00:00", expected)
    ]


def test_an_unknown_zone_is_refused_at_startup(make_app):
    with pytest.raises(ConfigError) as refused:
        make_app(BABEL_DEFAULT_TIMEZONE="Mars/Base")
    assert str(refused.value) == (
        "BABEL_DEFAULT_TIMEZONE='Mars/Base' is not a time zone: use a name from the tz "
        "database, e.g. UTC, Asia/Shanghai or America/New_York."
    )


@pytest.mark.parametrize(
    "value",
    [
        "Asia/Beijing",  # the zone is named after Shanghai
        "",  # only the environment's empty value means the default
        " UTC",  # the environment's spaces are trimmed; a class attribute's are not
        "Asia/ Shanghai",
        "+08:00",
        "UTC+8",
        "-5",
        "亚洲/上海",
        "UTC\x00",
        "../../../etc/passwd",
        "localtime",
        "Z" * 10_000,
        None,
        8,
        -5,
        UTC,  # a tzinfo object: Flask-Babel wants a name
        pytz.utc,
    ],
    ids=short_id,
)
def test_what_is_not_a_zone_name_is_refused_at_startup(make_app, value):
    with pytest.raises(ConfigError) as refused:
        make_app(BABEL_DEFAULT_TIMEZONE=value)
    assert str(refused.value) == REFUSED.format(value)


def fresh_config(monkeypatch) -> ModuleType:
    """config.py imported anew, as a process that starts with this environment does
    (config.py reads the environment when its classes are defined). No .env file."""
    monkeypatch.setenv("PYTHON_DOTENV_DISABLED", "1")
    spec = importlib.util.spec_from_file_location("fresh_config", config.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "UTC"),
        ("", "UTC"),
        ("   ", "UTC"),
        ("Asia/Shanghai", "Asia/Shanghai"),
        (" America/New_York\n", "America/New_York"),
        ("asia/SHANGHAI", "Asia/Shanghai"),
        ("utc", "UTC"),
        ("Etc/GMT-8", "Etc/GMT-8"),
    ],
)
def test_the_environment_variable_is_read_and_spelled_as_the_tz_database_does(
    monkeypatch, value, expected
):
    """Spaces around it are trimmed, case is ignored, and the name is kept as the
    tz database spells it; unset or empty is UTC."""
    if value is None:
        monkeypatch.delenv("BABEL_DEFAULT_TIMEZONE", raising=False)
    else:
        monkeypatch.setenv("BABEL_DEFAULT_TIMEZONE", value)
    fresh = fresh_config(monkeypatch)
    assert fresh.invalid_settings == []
    assert [c.BABEL_DEFAULT_TIMEZONE for c in fresh.configs.values()] == [expected] * 3


def test_the_environment_variable_reaches_the_page(monkeypatch, make_app):
    monkeypatch.setenv("BABEL_DEFAULT_TIMEZONE", " america/new_york ")
    zone = fresh_config(monkeypatch).TestingConfig.BABEL_DEFAULT_TIMEZONE
    app = make_app(BABEL_DEFAULT_TIMEZONE=zone)
    add_posts_at(app, WINTER, SUMMER)
    titles = [title for _, title in hover_texts(app.test_client().get("/explore"))]
    assert titles == TITLES["America/New_York", "en"]


@pytest.mark.parametrize(
    "value",
    [
        "Mars/Base",
        "Asia/ Shanghai",
        "Asia/Beijing",
        "+08:00",
        "UTC+8",
        "-5",
        "亚洲/上海",
        "Asia/Shanghai\nEurope/Paris",  # shown escaped: the message stays one line
        "Z" * 10_000,
    ],
    ids=short_id,
)
def test_a_bad_environment_variable_is_noted_and_refused_at_startup(monkeypatch, value):
    """Noted while config.py is read, like every other setting that can't be read,
    and reported by the factory's check with them, before any request."""
    monkeypatch.setenv("BABEL_DEFAULT_TIMEZONE", f" {value} ")
    fresh = fresh_config(monkeypatch)
    assert fresh.invalid_settings == [REFUSED.format(value)]
    assert fresh.TestingConfig.BABEL_DEFAULT_TIMEZONE == "UTC"
    with pytest.raises(fresh.ConfigError) as refused:
        fresh.TestingConfig.check()
    assert str(refused.value) == REFUSED.format(value)


def test_a_bad_zone_is_reported_with_the_other_bad_settings(monkeypatch):
    monkeypatch.setenv("MAIL_USE_SSL", "ture")
    monkeypatch.setenv("BABEL_DEFAULT_TIMEZONE", "Mars/Base")
    fresh = fresh_config(monkeypatch)
    with pytest.raises(fresh.ConfigError) as refused:
        fresh.ProductionConfig.check()
    assert str(refused.value) == (
        "MAIL_USE_SSL='ture' is not a boolean: use 1/true/yes or 0/false/no.\n"
        + REFUSED.format("Mars/Base")
    )


# --- The real process -------------------------------------------------------------------


def run_with(tmp_path, *command: str, **settings: str) -> subprocess.CompletedProcess:
    """`command` in the project's folder with `settings`: no .env files, files in `tmp_path`."""
    env = clean_env(
        FLASK_APP="blog.py",
        PYTHON_DOTENV_DISABLED="1",
        FLASK_SKIP_DOTENV="1",
        DATABASE_URL=f"sqlite:///{tmp_path / 'blog.sqlite'}",
        LOG_DIR=str(tmp_path / "logs"),
        **settings,
    )
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.system
def test_an_unknown_zone_stops_the_real_process_cleanly(tmp_path):
    result = run_with(tmp_path, BIN / "flask", "routes", BABEL_DEFAULT_TIMEZONE="Mars/Base")
    assert (result.returncode, result.stdout, result.stderr) == (
        3,
        "",
        f"Configuration error: {REFUSED.format('Mars/Base')}\n",
    )


@pytest.mark.system
def test_the_real_process_reads_the_zone_from_the_environment(tmp_path):
    """As gunicorn imports blog.py: the app's config has the tz database's spelling."""
    show = "import blog; print(blog.app.config['BABEL_DEFAULT_TIMEZONE'])"
    result = run_with(
        tmp_path, sys.executable, "-c", show, BABEL_DEFAULT_TIMEZONE=" asia/shanghai "
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "Asia/Shanghai\n", "")

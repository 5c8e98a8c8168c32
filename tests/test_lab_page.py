"""The fault lab's page (/lab, app/lab/routes.py): where it exists, who may open it,
what it lists, and every way its buttons' forms can be refused.

The in-process tests run no experiment: each refusal is checked on the page that
comes back, the list again with its message, never a report. The system tests
at the end press a button for real: the page runs `flask lab NAME --json` in a
process of its own, from the project's folder, and shows its report (or why
there is none). What each experiment shows is tested through `flask lab` itself;
tests/test_lab_browser.py looks at the pages in Chromium.
"""

import html
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_babel import force_locale
from werkzeug.datastructures import MultiDict

from app import create_app
from app.errors import CSRF_MESSAGE
from app.input_guard import NUL_MESSAGE
from app.lab import routes
from app.lab.experiments import DEFAULT_STORM, EXPERIMENTS, MAX_STORM
from app.lab.routes import is_this_machine, read_report
from config import DevelopmentConfig, ProductionConfig
from tests.pages import alerts, csrf_token, page_text
from tests.servers import ROOT, clean_env, smtp_server

CHINESE = {"Accept-Language": "zh-CN,zh;q=0.9"}
HAN = re.compile(r"[\u4e00-\u9fff]")
COUNT_REFUSED = f"The number of errors must be a whole number from 1 to {MAX_STORM}."
NO_REAL_MAIL = (
    "Sending the mails through your own mail server needs MAIL_SERVER and ADMINS set "
    "(in .env); without them the lab's own mail server receives them."
)
SENT_ONCE = "Each field of the form can be sent once only."
ONLY_THIS_MACHINE = (
    "The fault lab answers only on this machine: open it at http://127.0.0.1 "
    "(or http://[::1]), on the computer that runs the blog."
)
REAL_MAIL_BOX = re.compile(
    r'<input class="form-check-input" type="checkbox" name="real_mail"[^>]*>'
)
REAL_MAIL_LABEL = "Send the mails through my mail server (MAIL_SERVER, to ADMINS)"
# A framed page, and what it shows, escaped into the srcdoc attribute.
FRAME = re.compile(r'<iframe class="w-100 border rounded" height="360" sandbox srcdoc="([^"]*)"')
# What only a report has: the list of experiments never says it.
REPORT_HEADING = "What the user got"


def lab_config(**overrides) -> type[DevelopmentConfig]:
    """The development config, whose LAB_ENABLED turns the lab on, as a test runs it.

    TESTING on, so that create_app installs no log file, error mail or Sentry
    (it checks LAB_ENABLED alone for the lab); no database file, rate limits
    in memory, and no mail server, whatever the developer's .env says.
    """
    settings = {
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": "sqlite://",
        "RATELIMIT_STORAGE_URI": "memory://",
        "WTF_CSRF_ENABLED": False,
        "NOTE_UNCOUNTED_PROXY": False,
        "MAIL_SERVER": None,
        "ADMINS": [],
    }
    return type("LabTestConfig", (DevelopmentConfig,), settings | overrides)


@pytest.fixture
def make_lab_app(compiled_templates) -> Iterator:
    def factory(**overrides) -> Flask:
        app = create_app(lab_config(**overrides))
        app.jinja_env.bytecode_cache = compiled_templates
        return app

    return factory


@pytest.fixture
def lab_client(make_lab_app) -> FlaskClient:
    return make_lab_app().test_client()


def readable(markup: str) -> str:
    """HTML as a person reads it: the tags gone, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", markup)).split())


def main_text(response) -> str:
    """The page's <main>, as a person reads it: entities decoded, whitespace collapsed."""
    found = re.search(r"<main[^>]*>(.*)</main>", response.text, re.S)
    assert found, response.text[:500]
    return readable(found.group(1))


def experiment_cards(response) -> dict[str, str]:
    """{experiment name: the text of its card} on the list of experiments."""
    cards = re.findall(
        r'<section class="card h-100" aria-labelledby="experiment-([\w-]+)">(.*?)</section>',
        response.text,
        re.S,
    )
    return {name: readable(card) for name, card in cards}


def in_language(app: Flask, locale: str, text) -> str:
    """A lazy string of the catalogue, as a page in `locale` says it."""
    with app.test_request_context(), force_locale(locale):
        return str(text)


def assert_refused_without_running(response, status: int, message: str) -> None:
    """The list of experiments came back with `message` and `status`: no report, so
    no experiment ran (its process would have taken seconds, then shown one)."""
    assert response.status_code == status
    assert alerts(response) == [("danger", message)]
    assert "<h1>The fault lab</h1>" in response.text
    assert REPORT_HEADING not in response.text


# --- Where the lab exists ---------------------------------------------------------------


def test_the_lab_does_not_exist_in_the_testing_config(client):
    for response in (client.get("/lab"), client.post("/lab/unhandled")):
        assert response.status_code == 404
        assert "<h1>Page not found</h1>" in response.text
    # Nor does the navigation offer it.
    assert 'href="/lab"' not in client.get("/explore").text


def test_the_lab_does_not_exist_in_the_production_config(tmp_path, restore_logging):
    config = type(
        "LabProductionConfig",
        (ProductionConfig,),
        {
            "SECRET_KEY": "a-test-secret-that-is-long-enough-for-production",
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'blog.db'}",
            "LOG_DIR": str(tmp_path),
            "RATELIMIT_STORAGE_URI": "memory://",
            "MAIL_SERVER": None,
            "ADMINS": [],
            "SENTRY_DSN": None,
        },
    )
    app = create_app(config)
    assert not app.testing and not app.config["LAB_ENABLED"]
    client = app.test_client()
    for response in (client.get("/lab"), client.post("/lab/unhandled")):
        assert response.status_code == 404
        assert "<h1>Page not found</h1>" in response.text
    assert 'href="/lab"' not in client.get("/auth/login").text


# --- Only this machine -------------------------------------------------------------------


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "192.168.1.2", "::ffff:10.0.0.1", "2001:db8::1", "not-an-ip", ""]
)
def test_another_machine_gets_the_403_page(lab_client, address):
    other_machine = {"REMOTE_ADDR": address}
    for response in (
        lab_client.get("/lab", environ_base=other_machine),
        lab_client.post("/lab/unhandled", environ_base=other_machine),
        lab_client.post("/lab/error-storm", data={"count": "3"}, environ_base=other_machine),
    ):
        assert response.status_code == 403
        assert "<h1>Forbidden</h1>" in response.text
        assert main_text(response).startswith(f"Forbidden {ONLY_THIS_MACHINE}")


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_this_machine_gets_the_lab(lab_client, address):
    response = lab_client.get("/lab", environ_base={"REMOTE_ADDR": address})
    assert response.status_code == 200
    assert "<h1>The fault lab</h1>" in response.text


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.255.254", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:7f00:2", True),  # 127.0.0.2, written in hexadecimal
        ("0.0.0.0", False),
        ("::", False),
        ("128.0.0.1", False),
        ("::ffff:192.168.1.2", False),
        ("fe80::1", False),
        ("localhost", False),  # a name, not an address
        ("127.0.0.1:5000", False),
        (" 127.0.0.1", False),
        (None, False),
    ],
)
def test_which_addresses_are_this_machine(address, loopback):
    assert is_this_machine(address) is loopback


# --- The list ---------------------------------------------------------------------------


def as_shown(heading: str) -> str:
    """A guide's heading as the page shows it: without Markdown's backticks."""
    return heading.replace("`", "")


def test_the_list_names_every_experiment_its_guide_and_its_code(make_lab_app):
    app = make_lab_app()
    response = app.test_client().get("/lab")
    assert response.status_code == 200
    assert "<title>The fault lab · Blog</title>" in response.text
    assert 'href="/lab">Lab</a>' in response.text  # the navigation's link
    intro = main_text(response)
    assert "For development only, and only on this machine." in intro
    assert "nothing touches your data" in intro
    cards = experiment_cards(response)
    assert list(cards) == [experiment.name for experiment in EXPERIMENTS]
    assert len(cards) == 8
    for experiment in EXPERIMENTS:
        card = cards[experiment.name]
        title = in_language(app, "en", experiment.title)
        summary = in_language(app, "en", experiment.summary)
        guide = f"Guide:docs/guide.md, the section “{as_shown(experiment.guide_section)}”"
        assert card.startswith(f"{title} {summary} {guide}")
        # Each file and function an item of a list (no separator to translate).
        code = "".join(f"{function} in {file}" for file, function in experiment.code)
        assert f"Code:{code}" in card
        assert card.endswith("Run")
        assert f'action="/lab/{experiment.name}" method="post"' in response.text
    # Each form carries the CSRF token (CSRFProtect checks it on every POST).
    assert response.text.count('name="csrf_token"') == 8 + 2  # and the language buttons'


def test_the_error_storm_asks_how_many_errors(lab_client):
    page = lab_client.get("/lab").text
    assert page.count('name="count"') == 1
    assert (
        f'<input class="form-control" type="number" id="count-error-storm" name="count"\n'
        f'             min="1" max="{MAX_STORM}" step="1" value="{DEFAULT_STORM}" required>'
    ) in page
    assert f"How many errors (1 to {MAX_STORM})" in page


def test_without_a_mail_server_the_real_mail_box_is_off_and_says_why(lab_client):
    response = lab_client.get("/lab")
    boxes = re.findall(
        r'<input class="form-check-input" type="checkbox" name="real_mail"[^>]*>', response.text
    )
    assert len(boxes) == 8
    assert all(box.endswith(" disabled>") for box in boxes)
    why = (
        "MAIL_SERVER and ADMINS aren't set, so the mails go to the lab's own mail server, "
        "and this page shows them."
    )
    assert page_text(response).count(why) == 8
    assert (
        page_text(response).count("Send the mails through my mail server (MAIL_SERVER, to ADMINS)")
        == 8
    )


@pytest.mark.parametrize(
    "settings",
    [
        {"MAIL_SERVER": "127.0.0.1", "ADMINS": []},
        {"MAIL_SERVER": None, "ADMINS": ["a@example.com"]},
    ],
)
def test_half_a_mail_setup_is_no_mail_setup(make_lab_app, settings):
    page = make_lab_app(**settings).test_client().get("/lab").text
    assert page.count(" disabled>") == 8


def test_with_a_mail_server_the_real_mail_box_can_be_ticked(make_lab_app):
    app = make_lab_app(MAIL_SERVER="127.0.0.1", ADMINS=["admin@example.com"])
    response = app.test_client().get("/lab")
    boxes = re.findall(
        r'<input class="form-check-input" type="checkbox" name="real_mail"[^>]*>', response.text
    )
    assert len(boxes) == 8
    assert not [box for box in boxes if "disabled" in box or "checked" in box]
    unticked = "Unticked, the mails go to the lab's own mail server, and this page shows them."
    assert page_text(response).count(unticked) == 8


def test_the_list_in_chinese(make_lab_app):
    app = make_lab_app()
    response = app.test_client().get("/lab", headers=CHINESE)
    assert response.status_code == 200
    assert '<html lang="zh-CN">' in response.text
    assert "<h1>故障实验室</h1>" in response.text
    assert 'href="/lab">实验室</a>' in response.text
    cards = experiment_cards(response)
    assert len(cards) == 8
    for experiment in EXPERIMENTS:
        title = in_language(app, "zh_CN", experiment.title)
        summary = in_language(app, "zh_CN", experiment.summary)
        assert HAN.search(title) and HAN.search(summary)
        assert title != in_language(app, "en", experiment.title)
        card = cards[experiment.name]
        guide = f"指南：docs/guide.zh-CN.md 中的“{as_shown(experiment.guide_section_zh)}”一节"  # noqa: RUF001
        assert card.startswith(f"{title} {summary} {guide}")
        code = "".join(f"{file} 中的 {function}" for file, function in experiment.code)
        assert f"代码：{code}" in card  # noqa: RUF001
        assert "docs/guide.md" not in card
        assert card.endswith("运行")


# --- Refusals: each shows the list again, with why, and runs nothing ---------------------


def test_an_unknown_experiment_is_a_404(lab_client):
    for name in ("nope", "Unhandled", "unhandled.", "%2e%2e", "error-storm%2F", "ü"):
        response = lab_client.post(f"/lab/{name}", data={"count": "3"})
        assert response.status_code == 404, name
        assert "<h1>Page not found</h1>" in response.text
    assert lab_client.post("/lab/").status_code == 404
    # A GET is not a run: the button is a POST.
    assert lab_client.get("/lab/unhandled").status_code == 405


@pytest.mark.parametrize(
    "count",
    [
        "",
        "0",
        "501",
        "-1",
        "+5",
        " 5",
        "5 ",
        "abc",
        "1e3",
        "5.0",
        "5_0",  # int() takes underscores between digits
        "0x10",
        "\u0663",  # an Arabic-Indic three: int() takes it
        "\uff13",  # a full-width three: int() takes it too
        "9" * 400,
        "9" * 5000,  # past the 4300 digits int() converts at all
    ],
)
def test_a_count_that_is_not_1_to_500_is_refused(lab_client, count):
    response = lab_client.post("/lab/error-storm", data={"count": count})
    assert_refused_without_running(response, 400, COUNT_REFUSED)


def test_a_nul_in_the_count_is_refused_before_the_lab_reads_it(lab_client):
    response = lab_client.post("/lab/error-storm", data={"count": "5\x00"})
    assert response.status_code == 400
    assert main_text(response).startswith(f"Bad request {NUL_MESSAGE}")


@pytest.mark.parametrize("count", ["0", "abc", "9" * 400])
def test_a_bad_count_with_the_real_mail_box_is_still_the_count_refused(lab_client, count):
    response = lab_client.post("/lab/error-storm", data={"count": count, "real_mail": "1"})
    assert_refused_without_running(response, 400, COUNT_REFUSED)


@pytest.mark.parametrize("value", ["1", "on", "", "0"])
def test_the_real_mail_box_without_a_mail_server_is_refused(lab_client, value):
    # Ticked is sent, whatever its value: the box is disabled on the page, so
    # only a hand-made request gets here.
    for name, data in (("unhandled", {}), ("error-storm", {"count": "3"})):
        response = lab_client.post(f"/lab/{name}", data={**data, "real_mail": value})
        assert_refused_without_running(response, 400, NO_REAL_MAIL)


@pytest.mark.parametrize(
    "fields",
    [
        [("count", "3"), ("count", "4")],
        [("count", "3"), ("count", "3")],
        [("count", "abc"), ("count", "3")],
        [("count", "3"), ("real_mail", "1"), ("real_mail", "1")],
    ],
)
def test_a_field_sent_twice_is_refused(make_lab_app, fields):
    # With a mail server, so that a single real_mail would be accepted.
    client = make_lab_app(MAIL_SERVER="127.0.0.1", ADMINS=["admin@example.com"]).test_client()
    response = client.post("/lab/error-storm", data=MultiDict(fields))
    assert_refused_without_running(response, 400, SENT_ONCE)


def test_a_button_without_its_csrf_token_is_the_400_page(make_lab_app):
    client = make_lab_app(WTF_CSRF_ENABLED=True).test_client()
    for data in ({}, {"csrf_token": "not-a-token"}, {"count": "3"}):
        response = client.post("/lab/unhandled", data=data)
        assert response.status_code == 400
        assert main_text(response).startswith(f"Bad request {CSRF_MESSAGE}")
    # The page's own token passes the check: then the form's fields are read
    # (a refused count shows that without running anything).
    token = csrf_token(client.get("/lab"))
    response = client.post("/lab/error-storm", data={"csrf_token": token, "count": "0"})
    assert_refused_without_running(response, 400, COUNT_REFUSED)


def test_a_refusal_in_chinese(lab_client):
    response = lab_client.post("/lab/error-storm", data={"count": "0"}, headers=CHINESE)
    assert response.status_code == 400
    [(kind, message)] = alerts(response)
    assert kind == "danger"
    assert message == f"错误数量必须是 1 到 {MAX_STORM} 之间的整数。"
    assert "<h1>故障实验室</h1>" in response.text


def failure_shown(response) -> str:
    """The message of a run that gave no report: the list again (a 200: the page
    worked), one red alert, and no report."""
    assert response.status_code == 200
    [(kind, message)] = alerts(response)
    assert kind == "danger"
    assert REPORT_HEADING not in response.text
    return message


def test_a_run_that_cannot_start_says_so(lab_client, monkeypatch):
    """No Python where the server's was (a virtualenv deleted under it): the page says
    so, with the reason, instead of a 500."""
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    response = lab_client.post("/lab/unhandled")
    assert failure_shown(response).startswith("The experiment's process could not start: [Errno 2]")


# --- Reading the report -------------------------------------------------------------------


def test_the_report_is_the_last_line_that_is_one():
    report = '{"experiment": "unhandled", "responses": []}'
    assert read_report(report) == {"experiment": "unhandled", "responses": []}
    # Whatever else the process printed comes first: a warning, a log line.
    printed = f'Warning: something\n{{"not": "the report"}}\n{report}\n'
    assert read_report(printed) == {"experiment": "unhandled", "responses": []}
    for nothing in (
        "",
        "\n",
        "Traceback (most recent call last):\n",
        '{"responses": [',
        "[1, 2]",
        "{}",
    ):
        assert read_report(nothing) is None


# --- Pressing a button for real (system) --------------------------------------------------


@pytest.fixture
def development_environment(monkeypatch, tmp_path) -> Path:
    """The environment of `flask run` in development, which the page's process
    inherits: the developer's own settings removed, logs in tmp_path."""
    environment = clean_env(
        FLASK_APP="blog.py",
        FLASK_CONFIG="development",
        LOG_DIR=tmp_path,
        DATABASE_URL=f"sqlite:///{tmp_path / 'dev.db'}",
    )
    for key in list(os.environ):
        monkeypatch.delenv(key)
    for key, value in environment.items():
        monkeypatch.setenv(key, value)
    # Started from elsewhere: the page's process runs in the project's folder anyway.
    monkeypatch.chdir(tmp_path)
    return tmp_path


REQUEST_ID_SHOWN = re.compile(r"<dt>X-Request-ID</dt>\s*<dd><code>([0-9a-f]{32})</code></dd>")


@pytest.mark.system
def test_bad_input_runs_and_shows_what_the_user_got(lab_client, development_environment):
    response = lab_client.post("/lab/bad-input")
    assert response.status_code == 200, response.text
    page = response.text
    assert "<h1>Bad input</h1>" in page
    statuses = re.findall(r'<span class="badge text-bg-(\w+)">(\d+)</span>', page)
    assert statuses == [("warning", "400"), ("warning", "400"), ("warning", "413")]
    labels = re.findall(r'<h3 class="h5 card-title" id="response-\d">([^<]*)</h3>', page)
    assert labels == [
        "A NUL character in a search",
        "A query string that isn&#39;t UTF-8",
        "A body over MAX_CONTENT_LENGTH (1048577 bytes)",
    ]
    request_ids = REQUEST_ID_SHOWN.findall(page)
    assert len(request_ids) == 3 and len(set(request_ids)) == 3
    # Each page is in its frame, escaped into the attribute: it renders there
    # and nowhere else.
    frames = re.findall(
        r'<iframe class="w-100 border rounded" height="360" sandbox srcdoc="([^"]*)"', page
    )
    assert len(frames) == 3
    assert all(frame.startswith("&lt;!doctype html&gt;") for frame in frames)
    assert "&lt;h1&gt;Request too large&lt;/h1&gt;" in frames[2]
    assert "<h1>Request too large</h1>" not in page
    text = main_text(response)
    assert "No mail: a bad request is the client's mistake, not a bug to report." in text
    assert "No Sentry event." in text
    assert "GET /search?q=a%00b" in text
    assert "POST /auth/login" in text
    # The run's form comes back, to run it again.
    assert 'action="/lab/bad-input" method="post"' in page
    assert text.count("Run again") == 1
    # Nothing reached the learner's log folder, not even the startup line of
    # the blog the `flask` command builds before the lab's.
    assert sorted(path.name for path in development_environment.iterdir()) == []


@pytest.mark.system
def test_the_labels_of_a_run_in_chinese(lab_client, development_environment):
    response = lab_client.post("/lab/bad-input", headers=CHINESE)
    assert response.status_code == 200, response.text
    text = main_text(response)
    for words in ("用户看到了什么", "运维看到了什么", "再次运行"):
        assert words in text
    assert "What the operator got" not in text
    # The labels come from the process, which was asked for Chinese (--lang zh_CN).
    labels = re.findall(r'<h3 class="h5 card-title" id="response-\d">([^<]*)</h3>', response.text)
    assert len(labels) == 3 and all(HAN.search(label) for label in labels)


@pytest.mark.system
def test_the_real_mail_box_sends_through_the_learners_mail_server(
    make_lab_app, development_environment, monkeypatch
):
    """Ticked, the box sends the lab's error mail to the ADMINS through MAIL_SERVER
    (a real SMTP server here), and the page says where to look for it."""
    with smtp_server("plain", development_environment) as server:
        settings = {
            "MAIL_SERVER": "127.0.0.1",
            "MAIL_PORT": server.port,
            "ADMINS": "admin@example.com",
            "MAIL_DEFAULT_SENDER": "blog@example.com",
        }
        # The page's process reads them from the environment, as the server did.
        for key, value in settings.items():
            monkeypatch.setenv(key, str(value))
        client = make_lab_app(MAIL_SERVER="127.0.0.1", ADMINS=["admin@example.com"]).test_client()
        response = client.post("/lab/unhandled", data={"real_mail": "1"})
        assert response.status_code == 200, response.text
        [mail] = server.mailbox.wait_for(1)
    [request_id] = REQUEST_ID_SHOWN.findall(response.text)
    assert mail["To"] == "admin@example.com"
    assert mail["Subject"] == f"[Blog] ZeroDivisionError: division by zero (error {request_id})"
    text = main_text(response)
    assert (
        "Sent through your mail server (127.0.0.1) to admin@example.com: look in that inbox."
    ) in text
    # The lab's own mail server got nothing, so the page shows no mail of its own.
    assert "Arrived" not in text
    # The form comes back with the box ticked, to run it the same way again.
    assert REAL_MAIL_BOX.findall(response.text)[0].endswith(" checked>")


@pytest.mark.system
def test_a_run_that_fails_shows_its_error_output(lab_client, development_environment, monkeypatch):
    """The process refuses (the testing config has no lab): the page says it failed,
    with the end of its stderr, and is the list again, not a 500."""
    monkeypatch.setenv("FLASK_CONFIG", "testing")
    response = lab_client.post("/lab/unhandled")
    message = failure_shown(response)
    assert message.startswith(
        "The experiment's process failed (exit status 1) and sent no report. "
        "The end of its error output: Error: The lab runs in development only"
    )
    assert REPORT_HEADING not in response.text
    assert "<h1>The fault lab</h1>" in response.text


@pytest.mark.system
def test_a_run_that_takes_too_long_is_stopped(lab_client, development_environment, monkeypatch):
    # The mail tarpit waits seconds for its mail to fail: longer than this.
    monkeypatch.setattr(routes, "RUN_TIMEOUT_SECONDS", 1)
    response = lab_client.post("/lab/mail-tarpit")
    message = failure_shown(response)
    assert message.startswith("The experiment did not finish within 1 second, and was stopped.")


def test_the_process_runs_in_the_project_folder():
    """The page starts `python -m flask` there: .flaskenv names the app (blog.py)."""
    assert (ROOT / ".flaskenv").read_text().splitlines()[0] == "FLASK_APP=blog.py"
    assert Path(routes.BASE_DIR) == ROOT

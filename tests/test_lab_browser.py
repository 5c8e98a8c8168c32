# ruff: noqa: RUF001 (Chinese punctuation is full-width)
"""The fault lab as a learner uses it: `flask run` in development, /lab in Chromium,
a button pressed, and what the two sides of the report show on the screen.

The server is started as a learner starts it (`flask db upgrade`, then `flask
run` with FLASK_CONFIG=development, on 127.0.0.1), on a database and a log
folder of the module's own. Each button then runs `flask lab NAME --json` in a
process of its own, as it does on a laptop. The experiments themselves are
tested through `flask lab`; here, that the page shows them: the status codes,
the error page inside its frame (rendered, under the site's
Content-Security-Policy, with no script running), the request id the mail's
subject and the log share, the 503's Retry-After, at a phone's width and at a
desktop's, in English and in Chinese chosen with the navigation's button.

The browser, the helpers and the checks every page must pass
(`assert_looks_right`) are tests/test_browser.py's.
"""

import re
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from playwright.sync_api import ConsoleMessage, Locator, Page, expect

from tests.servers import BIN, ROOT, clean_env, flask_command, free_port, wait_until
from tests.test_browser import (
    ARTIFACTS,
    DESKTOP,
    IN_ENGLISH,
    PHONE,
    TIMEOUT_MS,
    Language,
    Traffic,
    assert_looks_right,
    browser,  # noqa: F401 (the fixture: one Chromium for the module)
    choose_language,
    file_name,
    open_navigation,
)

pytestmark = pytest.mark.system

# The lab's own words in Chinese, copied from the catalogue
# (app/translations/zh_Hans_CN/LC_MESSAGES/messages.po) word for word.
IN_CHINESE = Language(
    "zh",
    "中文",
    {
        "Lab": "实验室",
        "The fault lab": "故障实验室",
        "Run": "运行",
        "All experiments": "全部实验",
        "What the user got": "用户看到了什么",
        "What the operator got": "运维看到了什么",
        "The log": "日志",
        "Mail": "邮件",
        "Subject": "主题",
        "waited %(ms).1f ms": "等待了 %(ms).1f 毫秒",
        "An unhandled exception in a view": "视图中未处理的异常",
        "Open a page whose view raises": "打开一个视图会抛出异常的页面",
        "The database unreachable for one request": "数据库在一个请求期间无法连接",
        "Before: the explore page": "之前：发现页面",
        "The database is unreachable": "数据库无法连接",
        "The next request: the database is back": "下一个请求：数据库恢复了",
        "An unexpected error has occurred": "发生意外错误",
        "Temporarily unavailable": "暂时无法访问",
        "Error reference:": "错误编号：",
    },
)
WIDTHS = pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
IN_EITHER_LANGUAGE = pytest.mark.parametrize("say", [IN_ENGLISH, IN_CHINESE], ids=["en", "zh"])

# A run takes seconds (a process starts, a throwaway blog is built); the storm
# waits for its window to close and its summary mail. Only a failing test waits this long.
RUN_TIMEOUT_MS = 120_000
REQUEST_ID = re.compile(r"[0-9a-f]{32}")
# The headings of the pages the lab's blog sends, in the language the lab's
# browser asks for: the learner's.
ERROR_500 = "An unexpected error has occurred"
ERROR_503 = "Temporarily unavailable"

# What Chromium reports, on purpose, about the framed pages and mails: their
# scripts don't run (the frames are sandboxed without "allow-scripts"), and the
# mails' inline styles are refused by the page's Content-Security-Policy, which
# a srcdoc frame shares. Anything else is an error.
REFUSED_IN_FRAMES = ("Blocked script execution in 'about:srcdoc'", "Applying inline style violates")


@dataclass
class LabTraffic(Traffic):
    """Traffic, and what the framed pages were refused."""

    refused_in_frames: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory) -> Iterator[str]:
    """`flask run` in development, as `make run` starts it, on a port of its own."""
    folder = tmp_path_factory.mktemp("lab-browser")
    env = clean_env(
        FLASK_APP="blog.py",
        FLASK_CONFIG="development",
        DATABASE_URL=f"sqlite:///{folder / 'dev.db'}",
        LOG_DIR=folder,
        # Blank, not absent: the `flask` command would fill absent ones from a
        # developer's .env, and a mail server there would turn the box on.
        MAIL_SERVER="",
        ADMINS="",
        SENTRY_DSN="",
    )
    upgraded = flask_command(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    output = folder / "flask-run.out"
    with open(output, "w") as out:
        server = subprocess.Popen(
            [BIN / "flask", "run", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def answers() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"flask run ended:\n{output.read_text()}")
        try:
            urllib.request.urlopen(f"{url}/lab", timeout=5).close()
        except OSError:
            return False
        return True

    try:
        wait_until(answers, timeout=60, message="flask run to answer")
        yield url
    finally:
        server.terminate()
        server.wait(30)


@pytest.fixture
def traffic() -> LabTraffic:
    return LabTraffic()


@pytest.fixture
def page(browser, lab_url, traffic, request) -> Iterator[Page]:  # noqa: F811 (the fixture)
    """A new browser window on the development server, in English, with no cookies;
    afterwards a full-page screenshot in test-artifacts/lab-<test>.png."""
    context = browser.new_context(base_url=lab_url, viewport=DESKTOP, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(RUN_TIMEOUT_MS)
    page = context.new_page()
    page.on("request", lambda req: traffic.urls.append(req.url))
    page.on("pageerror", lambda error: traffic.errors.append(str(error)))
    page.on("console", lambda message: note_console_error(traffic, message))
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"lab-{file_name(request.node.name)}.png", full_page=True)
    context.close()


def note_console_error(traffic: LabTraffic, message: ConsoleMessage) -> None:
    """Keep the console's errors: the frames' expected refusals apart, the rest as errors."""
    # Chromium logs every 4xx/5xx response too (the favicon the server hasn't got).
    if message.type != "error" or message.text.startswith("Failed to load resource"):
        return
    if message.location.get("url") == "about:srcdoc" and message.text.startswith(REFUSED_IN_FRAMES):
        traffic.refused_in_frames.append(message.text)
    else:
        traffic.errors.append(message.text)


# What a learner does and looks at, a step at a time.


def open_the_lab(page: Page, say: Language) -> None:
    """Open /lab from the navigation's link, in `say`'s language chosen with its button."""
    page.goto("/")
    choose_language(page, say)
    open_navigation(page).get_by_role("link", name=say("Lab"), exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(say("The fault lab"))


def run(page: Page, say: Language, title: str) -> None:
    """Press the Run button of the experiment `title`, and wait for its report."""
    experiment = page.get_by_role("region", name=say(title), exact=True)
    experiment.get_by_role("button", name=say("Run"), exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(say(title), timeout=RUN_TIMEOUT_MS)


def user_side(page: Page, say: Language) -> Locator:
    return page.get_by_role("region", name=say("What the user got"))


def operator_side(page: Page, say: Language) -> Locator:
    return page.get_by_role("region", name=say("What the operator got"))


def response(page: Page, say: Language, label: str) -> Locator:
    """The card of one response on the user's side, named by its label."""
    return user_side(page, say).get_by_role("article", name=say(label), exact=True)


def header(card: Locator, name: str) -> Locator:
    """The value shown for a response header (or a mail's) in `card`."""
    return card.locator(f"dt:text-is('{name}') + dd")


def assert_looks_right_with_frames(page: Page, traffic: LabTraffic) -> None:
    """Every page's checks, and the frames' scripts refused: the sandbox holds."""
    assert_looks_right(page, traffic)
    assert any(text.startswith(REFUSED_IN_FRAMES[0]) for text in traffic.refused_in_frames)


@WIDTHS
@IN_EITHER_LANGUAGE
def test_an_unhandled_exception_then_the_database_down(page, traffic, viewport, say):
    """The 500: its page in the frame with the reference the headers, the log, the
    mail's subject and Sentry all carry. Then the 503 between two pages that work,
    with Retry-After, and the one log line that says why."""
    page.set_viewport_size(viewport)
    open_the_lab(page, say)
    assert_looks_right(page, traffic)

    run(page, say, "An unhandled exception in a view")
    card = response(page, say, "Open a page whose view raises")
    expect(card.locator(".badge")).to_have_text("500")
    waited = re.escape(say("waited %(ms).1f ms")).replace(re.escape("%(ms).1f"), r"\d+\.\d")
    expect(card).to_contain_text(re.compile(waited))
    request_id = header(card, "X-Request-ID").inner_text()
    assert REQUEST_ID.fullmatch(request_id), request_id
    framed = card.frame_locator("iframe")
    expect(framed.get_by_role("heading", level=1)).to_have_text(say(ERROR_500))
    expect(framed.get_by_role("heading", level=1)).to_be_visible()
    reference = framed.locator("p", has_text=say("Error reference:")).locator("code").first
    expect(reference).to_have_text(request_id)

    operator = operator_side(page, say)
    log = operator.get_by_role("region", name=say("The log"))
    expect(log.locator("pre").first).to_contain_text(
        f"[request {request_id} GET /lab-faults/average-words"
    )
    expect(log.locator("pre").first).to_contain_text("ZeroDivisionError: division by zero")
    mail = operator.get_by_role("region", name=say("Mail"))
    expect(header(mail, say("Subject"))).to_have_text(
        f"[Blog] ZeroDivisionError: division by zero (error {request_id})"
    )
    sentry = operator.get_by_role("region", name="Sentry")
    expect(sentry.get_by_text(f"request_id={request_id}", exact=True)).to_be_visible()
    assert_looks_right_with_frames(page, traffic)

    page.get_by_role("link", name=say("All experiments")).click()
    run(page, say, "The database unreachable for one request")
    before = response(page, say, "Before: the explore page")
    down = response(page, say, "The database is unreachable")
    after = response(page, say, "The next request: the database is back")
    expect(before.locator(".badge")).to_have_text("200")
    expect(down.locator(".badge")).to_have_text("503")
    expect(after.locator(".badge")).to_have_text("200")
    expect(header(down, "Retry-After")).to_have_text("30")
    expect(header(before, "Retry-After")).to_have_count(0)
    down_heading = down.frame_locator("iframe").get_by_role("heading", level=1)
    expect(down_heading).to_have_text(say(ERROR_503))
    down_id = header(down, "X-Request-ID").inner_text()
    assert REQUEST_ID.fullmatch(down_id), down_id
    expect(log.locator("pre").filter(has_text=down_id)).to_have_text(
        re.compile(r"^\S+ \S+ ERROR: Database unavailable: unable to open database file \[in ")
    )
    expect(log.locator("pre").filter(has_text="Traceback")).to_have_count(0)
    expect(header(mail, say("Subject"))).to_have_text(
        f"[Blog] Database unavailable: unable to open database file (error {down_id})"
    )
    assert_looks_right_with_frames(page, traffic)


def test_an_error_storm_of_three(page, traffic):
    """Three errors: the first and the last shown, the middle one's log line counted;
    one mail at once, and the summary of the other two when the window closes."""
    open_the_lab(page, IN_ENGLISH)
    storm = page.get_by_role("region", name="An error storm", exact=True)
    storm.get_by_label("How many errors (1 to 500)").fill("3")
    run(page, IN_ENGLISH, "An error storm")

    cards = user_side(page, IN_ENGLISH).get_by_role("article")
    expect(cards.locator("h3")).to_have_text(["Error 1 of 3", "Error 3 of 3"])
    expect(cards.locator(".badge")).to_have_text(["500", "500"])
    first_id = header(cards.first, "X-Request-ID").inner_text()
    operator = operator_side(page, IN_ENGLISH)
    expect(operator.get_by_text("1 more log line of the storm’s other requests.")).to_be_visible()
    expect(header(operator.get_by_role("region", name="Mail"), "Subject")).to_have_text(
        [
            f"[Blog] ZeroDivisionError: division by zero (error {first_id})",
            f"[Blog] ZeroDivisionError: division by zero (error {first_id}) [repeated 2 times]",
        ]
    )
    expect(operator.get_by_text("the users got: 500 × 3.")).to_be_visible()
    # The form comes back with the storm's size, to run it again.
    expect(page.get_by_label("How many errors (1 to 500)")).to_have_value("3")
    assert_looks_right_with_frames(page, traffic)


@pytest.mark.parametrize(("count", "refused"), [("0", "rangeUnderflow"), ("501", "rangeOverflow")])
def test_the_browser_checks_the_storms_size_first(page, traffic, count, refused):
    """A number out of range isn't sent at all: the browser points at the field
    (the server's own refusal is tested in tests/test_lab_page.py)."""
    page.set_viewport_size(PHONE)
    open_the_lab(page, IN_ENGLISH)
    storm = page.get_by_role("region", name="An error storm", exact=True)
    size = storm.get_by_label("How many errors (1 to 500)")
    size.fill(count)
    storm.get_by_role("button", name="Run", exact=True).click()
    assert size.evaluate(f"input => input.validity.{refused}")
    expect(page).to_have_url(re.compile(r"/lab$"))
    expect(page.get_by_role("heading", level=1)).to_have_text("The fault lab")
    assert_looks_right(page, traffic)


@WIDTHS
def test_the_real_mail_box_is_off_without_a_mail_server(page, traffic, viewport):
    """Every experiment's box is there, off, and says where the mails go instead."""
    page.set_viewport_size(viewport)
    open_the_lab(page, IN_ENGLISH)
    boxes = page.get_by_role(
        "checkbox", name="Send the mails through my mail server (MAIL_SERVER, to ADMINS)"
    )
    expect(boxes).to_have_count(8)
    for number in range(8):
        expect(boxes.nth(number)).to_be_disabled()
    expect(boxes.first).to_have_accessible_description(
        "MAIL_SERVER and ADMINS aren't set, so the mails go to the lab's own mail server, "
        "and this page shows them."
    )
    assert_looks_right(page, traffic)

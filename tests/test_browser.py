"""A person at a real browser: Chromium, driven by Playwright, on the blog as
it is deployed (gunicorn, the production config, a database built by the
migrations, mail through a real SMTP server).

The other tests read HTML; these look at what is on the screen: the flash
message, the error under a field, the posts on a page, the reference on the
500 page. Every test also checks what a page needs from outside: nothing
(every request stays on 127.0.0.1, Bootstrap included), and that it fits a
phone's screen.

Each test leaves a full-page screenshot in test-artifacts/, named after it,
whether it passed or not. With ``DOCS_SCREENSHOTS=1`` (``make screenshots``)
a few also save the README's pictures into docs/screenshots/.

The browser is the system's Chromium (tests/chromium.py): ``playwright
install`` is never needed. Without one, this module is skipped. Timeouts are
generous and every wait is one of Playwright's auto-waiting ``expect``s, so a
slow machine makes the tests slower, not flaky.
"""

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.chromium import LAUNCH_ARGS, SKIP_REASON, find_chromium
from tests.databases import fresh_database
from tests.servers import (
    ROOT,
    Mailbox,
    env_settings,
    production_env,
    run_gunicorn,
    smtp_server,
    wait_until,
)

# Every test here starts real servers or processes: `make test-fast` skips them.
pytestmark = pytest.mark.system

CHROMIUM = find_chromium()
if CHROMIUM is None:
    pytest.skip(SKIP_REASON, allow_module_level=True)

ARTIFACTS = ROOT / "test-artifacts"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"
DOCS_SCREENSHOT_MAX_BYTES = 150_000

PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 800}

# Only a test that is already failing waits this long (a loaded 2-core CI machine).
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)

POSTS_PER_PAGE = 3  # small, so that a few posts make several pages
# Seven posts: pages of 3, 3 and 1. The first page is the README's picture.
DIARY = [
    "Day 1: a virtual environment, and Flask installed in it.",
    "Day 2: my first route said hello.",
    "Day 3: templates, and Jinja's template inheritance.",
    "Day 4: a form with Flask-WTF, CSRF token included.",
    "Day 5: SQLAlchemy models and a first migration.",
    "Day 6: users can log in now.",
    "Day 7: error pages that cannot crash.",
]
PASSWORD = "a-good-password"
NEW_PASSWORD = "an-even-better-password"
# Any Chinese character: how we tell the page is no longer in English.
CHINESE = re.compile(r"[\u4e00-\u9fff]")
CHINESE_POST = "你好，世界！Hello, world!"  # noqa: RUF001 (Chinese punctuation is full-width)


@dataclass
class Site:
    """The blog under gunicorn, and the mailbox its mail arrives in."""

    url: str
    mailbox: Mailbox

    def mail_to(self, address: str) -> EmailMessage:
        """The first mail to `address`, once it has arrived (mail is sent in the background)."""

        def arrived() -> list[EmailMessage]:
            return [m for m in self.mailbox.messages if m["To"] == address]

        wait_until(arrived, timeout=TIMEOUT_MS / 1000, message=f"a mail to {address}")
        return arrived()[0]


@dataclass
class Traffic:
    """What a test's page asked for, and what went wrong in it."""

    urls: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # JavaScript errors, CSP violations


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    """gunicorn (two workers) serving tests/gunicorn_app.py, which is the blog plus
    /_test/fail, with mail going to an aiosmtpd server; one for the module.

    Tests share it, so each one registers users with names of its own.
    """
    tmp_path = tmp_path_factory.mktemp("browser")
    # The database and the mail server outlive gunicorn: they stop after it does.
    with fresh_database(tmp_path) as database_url, smtp_server("plain", tmp_path) as smtp:
        env = production_env(
            tmp_path,
            database_url,
            POSTS_PER_PAGE=POSTS_PER_PAGE,
            MAIL_DEFAULT_SENDER="blog@example.com",
            # Every test registers its people from 127.0.0.1; the limit on
            # registering is tested in tests/test_security.py.
            REGISTRATION_RATE_LIMIT="1000 per minute",
            **env_settings(smtp.settings),
        )
        with run_gunicorn(env, tmp_path) as gunicorn:
            yield Site(gunicorn.url, smtp.mailbox)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the module; each test gets a context (cookies) of its own."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="module", autouse=True)
def fresh_artifacts() -> None:
    """Start test-artifacts/ empty, so that its screenshots are all from this run."""
    ARTIFACTS.mkdir(exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()


@pytest.fixture
def traffic() -> Traffic:
    return Traffic()


@pytest.fixture
def page(browser, site, traffic, request) -> Iterator[Page]:
    """A new browser window at desktop size, in English, with no cookies.

    Afterwards it leaves a full-page screenshot in test-artifacts/<test>.png.
    """
    page = open_window(browser, site, traffic)
    yield page
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{file_name(request.node.name)}.png", full_page=True)
    page.context.close()


def open_window(browser: Browser, site: Site, traffic: Traffic) -> Page:
    """A window of a new browser context (no cookies: as if on another computer)."""
    # en-US whatever the machine's locale: the tests read English text.
    context = browser.new_context(base_url=site.url, viewport=DESKTOP, locale="en-US")
    context.set_default_timeout(TIMEOUT_MS)
    context.set_default_navigation_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.on("request", lambda req: traffic.urls.append(req.url))
    page.on("pageerror", lambda error: traffic.errors.append(str(error)))
    page.on("console", lambda message: record_console_error(traffic, message.type, message.text))
    return page


def record_console_error(traffic: Traffic, kind: str, text: str) -> None:
    # Chromium also logs every 4xx/5xx response as an error; the error-page
    # tests ask for those on purpose, and check the status themselves.
    if kind == "error" and not text.startswith("Failed to load resource"):
        traffic.errors.append(text)


def file_name(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_")


def docs_screenshot(page: Page, name: str, chinese: bool = False) -> None:
    """With DOCS_SCREENSHOTS=1, save what is on the screen as docs/screenshots/<name>.png.

    The visible part only, not the whole page: a picture for the README, kept small.
    A page in `chinese` needs a font for it, or the picture shows empty boxes.
    """
    if not os.environ.get("DOCS_SCREENSHOTS"):
        return
    if chinese and not has_chinese_font():
        pytest.fail("no Chinese font for the screenshot (apt-get install fonts-wqy-microhei)")
    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = DOCS_SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path)
    assert path.stat().st_size < DOCS_SCREENSHOT_MAX_BYTES, f"{path} is too big for the README"


def has_chinese_font() -> bool:
    """Tell whether fontconfig, which Chromium draws text with on Linux, has a Chinese font."""
    if shutil.which("fc-list") is None:
        return False
    fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True)
    return bool(fonts.stdout.strip())


def assert_looks_right(page: Page, traffic: Traffic) -> None:
    """Check what every page needs: nothing from other sites, Bootstrap's look, and
    no sideways scrolling at the window's width."""
    elsewhere = [
        url
        for url in traffic.urls
        if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).hostname != "127.0.0.1"
    ]
    assert not elsewhere, f"requests that left 127.0.0.1: {elsewhere}"
    # Bootstrap comes from the app itself (BOOTSTRAP_SERVE_LOCAL)...
    expect(page.locator('link[rel="stylesheet"]')).to_have_attribute(
        "href", re.compile(r"^/bootstrap/static/css/bootstrap(\.min)?\.css")
    )
    # ...and is applied: its rules make the navigation a dark flex box.
    navbar = page.locator("nav.navbar")
    expect(navbar).to_have_css("display", "flex")
    expect(navbar).to_have_css("background-color", "rgb(33, 37, 41)")
    width = page.viewport_size["width"]
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"{page.url} scrolls sideways: {scroll_width}px in {width}px"
    assert not traffic.errors, f"errors in the browser: {traffic.errors}"


# What a person does, a step at a time. Each step waits for the sign on the
# screen that it worked, so the next one starts on the new page.


def register(page: Page, username: str, password: str = PASSWORD) -> None:
    page.goto("/auth/register")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Email").fill(f"{username}@example.com")
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_label("Repeat password").fill(password)
    page.get_by_role("button", name="Register").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Congratulations, you are now a registered user! Please sign in."
    )


def log_in(page: Page, username: str, password: str = PASSWORD) -> None:
    fill_login_form(page, username, password)
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Hi, {username}!")


def fill_login_form(page: Page, username: str, password: str) -> None:
    page.goto("/auth/login")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def log_out(page: Page) -> None:
    page.get_by_role("button", name="Log out", exact=True).click()
    expect(page.get_by_role("alert")).to_have_text("You have been logged out.")


def write_post(page: Page, text: str) -> None:
    """Post `text` from the home page; it is then the newest post on it."""
    page.get_by_label("Say something").fill(text)
    page.get_by_role("button", name="Post").click()
    expect(page.get_by_role("alert")).to_have_text("Your post is now live!")
    expect(posts(page).first).to_have_text(text)


def navigation(page: Page):
    """The links and buttons in the navigation bar (folded away on a phone)."""
    return page.locator("#main-nav")


def posts(page: Page):
    """The bodies of the posts listed on the page, top to bottom."""
    return page.locator("article p")


def test_register_and_log_in(page, traffic):
    page.goto("/")
    navigation(page).get_by_role("link", name="Register").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Register")
    register(page, "grace")
    # Registering leads to the login form, not into the site.
    expect(page).to_have_url(re.compile(r"/auth/login$"))
    log_in(page, "grace")
    expect(navigation(page).get_by_role("link", name="Profile (grace)")).to_be_visible()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()
    expect(page.get_by_text("No posts yet.")).to_be_visible()
    assert_looks_right(page, traffic)


def test_wrong_password_is_refused(page):
    register(page, "mallory")
    fill_login_form(page, "mallory", "not-the-password")
    expect(page.get_by_role("alert")).to_have_text("Invalid username or password.")
    expect(navigation(page).get_by_role("link", name="Log in")).to_be_visible()


def test_a_new_post_appears_on_the_home_page(page, traffic):
    register(page, "ada")
    log_in(page, "ada")
    write_post(page, "The Analytical Engine weaves algebraic patterns.")
    article = page.locator("article").first
    expect(article.get_by_role("link", name="ada", exact=True).last).to_be_visible()
    expect(article.locator("time")).to_have_text(re.compile(r"second|now"))
    # The form is empty again, ready for the next post.
    expect(page.get_by_label("Say something")).to_have_value("")
    assert_looks_right(page, traffic)


def test_older_and_newer_posts(page, traffic):
    register(page, "susan")
    log_in(page, "susan")
    for note in DIARY:
        write_post(page, note)
    newest_first = DIARY[::-1]
    first_page, second_page, third_page = newest_first[0:3], newest_first[3:6], newest_first[6:]
    older = page.get_by_role("link", name="Older posts")
    newer = page.get_by_role("link", name="Newer posts")
    older_item = page.locator(".page-item", has=older)
    newer_item = page.locator(".page-item", has=newer)

    # Three a page, newest first; nothing is newer than the first page.
    expect(posts(page)).to_have_text(first_page)
    expect(newer_item).to_have_class(re.compile(r"\bdisabled\b"))
    assert_looks_right(page, traffic)

    older.click()
    # The link carries a cursor: the place of the last post shown.
    expect(page).to_have_url(re.compile(r"/\?page=2&before=\d+-\d+$"))
    expect(posts(page)).to_have_text(second_page)

    older.click()
    expect(page).to_have_url(re.compile(r"/\?page=3&before=\d+-\d+$"))
    expect(posts(page)).to_have_text(third_page)
    expect(older_item).to_have_class(re.compile(r"\bdisabled\b"))

    newer.click()
    expect(page).to_have_url(re.compile(r"/\?page=2&after=\d+-\d+$"))
    expect(posts(page)).to_have_text(second_page)

    newer.click()
    # Page 1 is the home page's own address.
    expect(page).to_have_url(re.compile(r"/$"))
    expect(posts(page)).to_have_text(first_page)
    expect(newer_item).to_have_class(re.compile(r"\bdisabled\b"))


def test_following_someone_puts_their_posts_on_your_home_page(page, traffic):
    register(page, "linus")
    log_in(page, "linus")
    write_post(page, "Talk is cheap. Show me the code.")
    log_out(page)

    register(page, "margaret")
    log_in(page, "margaret")
    expect(page.get_by_text("No posts yet.")).to_be_visible()  # she follows nobody yet

    navigation(page).get_by_role("link", name="Explore").click()
    page.get_by_role("link", name="linus", exact=True).first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("linus")
    expect(page.get_by_text("0 followers")).to_be_visible()
    page.get_by_role("button", name="Follow").click()
    expect(page.get_by_role("alert")).to_have_text("You are following linus.")
    expect(page.get_by_text("1 follower", exact=False)).to_be_visible()
    expect(page.get_by_role("button", name="Unfollow")).to_be_visible()

    navigation(page).get_by_role("link", name="Home").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Hi, margaret!")
    expect(posts(page)).to_have_text(["Talk is cheap. Show me the code."])
    expect(page.locator("article").get_by_role("link", name="linus").first).to_be_visible()
    assert_looks_right(page, traffic)


def test_a_taken_username_is_refused_on_the_profile_form(page, traffic):
    """The classic duplicate-username bug, at a phone's width: an error under
    the field, not a 500, and the old name kept."""
    page.set_viewport_size(PHONE)
    register(page, "admin1")
    register(page, "admin")
    log_in(page, "admin")

    # At 375 px the navigation is folded away behind the toggler (Bootstrap's JavaScript).
    page.get_by_role("button", name="Toggle navigation").click()
    navigation(page).get_by_role("link", name="Profile (admin)").click()
    page.get_by_role("link", name="Edit your profile").click()
    # Taken whatever the case: "Admin1" is admin1's name too.
    page.get_by_label("Username").fill("Admin1")
    page.get_by_label("About me").fill("Renamed?")
    page.get_by_role("button", name="Save").click()

    expect(page.get_by_text("Please use a different username.")).to_be_visible()
    expect(page.get_by_label("Username")).to_have_value("Admin1")  # left for them to fix
    assert_looks_right(page, traffic)
    docs_screenshot(page, "duplicate-username-phone")

    page.get_by_role("button", name="Toggle navigation").click()
    navigation(page).get_by_role("link", name="Profile (admin)").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("admin")
    expect(page.get_by_text("Renamed?")).to_have_count(0)


def test_forgotten_password_is_reset_with_the_mailed_link(page, site, traffic):
    register(page, "forgetful")
    page.goto("/auth/login")
    page.get_by_role("link", name="Reset it").click()
    page.get_by_label("Email").fill("forgetful@example.com")
    page.get_by_role("button", name="Send me a reset link").click()
    expect(page.get_by_role("alert")).to_have_text(
        "If that address has an account, a mail with a reset link is on its way."
    )

    mail = site.mail_to("forgetful@example.com")
    assert mail["Subject"] == "Reset your password"
    text = mail.get_body(("plain",)).get_content()
    link = re.search(r"http://\S+/auth/reset_password/\S+", text).group()
    assert link.startswith(site.url + "/")  # a link back to this site

    page.goto(link)
    # The token is taken out of the address bar (and the Referer) at once.
    expect(page).to_have_url(site.url + "/auth/reset_password")
    page.get_by_label("New password").fill(NEW_PASSWORD)
    page.get_by_label("Repeat password").fill(NEW_PASSWORD)
    page.get_by_role("button", name="Set password").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Your password has been reset. You can log in with it now."
    )
    assert_looks_right(page, traffic)

    fill_login_form(page, "forgetful", PASSWORD)
    expect(page.get_by_role("alert")).to_have_text("Invalid username or password.")
    log_in(page, "forgetful", NEW_PASSWORD)

    # The link works once.
    log_out(page)
    page.goto(link)
    expect(page.get_by_role("alert")).to_have_text(
        "That reset link is invalid or has expired. Please ask for a new one."
    )


def test_a_missing_page_shows_the_404_page(page, site, traffic):
    response = page.goto("/no/such/page")
    assert response.status == 404
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    expect(page.get_by_text("Sorry, that page doesn't exist.")).to_be_visible()
    assert_looks_right(page, traffic)
    page.get_by_role("link", name="the latest posts").click()
    expect(page).to_have_url(site.url + "/explore")


def test_a_server_error_shows_the_500_page_with_its_reference(page, traffic):
    register(page, "unlucky")
    log_in(page, "unlucky")
    response = page.goto("/_test/fail")
    assert response.status == 500
    expect(page.get_by_role("heading", level=1)).to_have_text("An unexpected error has occurred")
    # The reference on the screen is the request id that is in the log.
    reference = page.locator("p", has_text="Error reference:").locator("code")
    expect(reference).to_have_text(response.headers["x-request-id"])
    # The navigation still knows who is logged in.
    expect(navigation(page).get_by_role("link", name="Profile (unlucky)")).to_be_visible()
    assert_looks_right(page, traffic)
    docs_screenshot(page, "error-500-desktop")


def language_button(page: Page, name: str):
    """The navigation's button for a language, written in that language."""
    return page.locator('nav form[method="post"][action^="/language/"]').get_by_role(
        "button", name=name, exact=True
    )


def test_switching_to_chinese_is_remembered(page, browser, site, traffic):
    register(page, "polyglot")
    log_in(page, "polyglot")
    write_post(page, CHINESE_POST)

    language_button(page, "中文").click()
    expect(page.locator("html")).to_have_attribute("lang", re.compile(r"^zh"))
    expect(page.locator(".navbar-brand")).to_have_text(CHINESE)
    expect(navigation(page).get_by_role("link", name="Explore", exact=True)).to_have_count(0)
    expect(posts(page).first).to_have_text(CHINESE_POST)
    assert_looks_right(page, traffic)
    docs_screenshot(page, "home-chinese-desktop", chinese=True)

    # Remembered: on other pages, error pages included, and in a new tab.
    page.goto("/explore")
    expect(page.locator("html")).to_have_attribute("lang", re.compile(r"^zh"))
    other_tab = page.context.new_page()
    other_tab.goto("/no/such/page")
    expect(other_tab.get_by_role("heading", level=1)).to_have_text(CHINESE)
    other_tab.close()

    # And on the account: logging in on another computer brings it back (app/i18n.py).
    elsewhere = open_window(browser, site, traffic)
    fill_login_form(elsewhere, "polyglot", PASSWORD)  # the form itself is in English
    expect(elsewhere.locator("html")).to_have_attribute("lang", re.compile(r"^zh"))
    expect(elsewhere.get_by_role("heading", level=1)).to_contain_text("polyglot")
    expect(elsewhere.locator(".navbar-brand")).to_have_text(CHINESE)
    elsewhere.context.close()

    language_button(page, "English").click()
    expect(page.locator("html")).to_have_attribute("lang", re.compile(r"^en"))
    expect(navigation(page).get_by_role("link", name="Explore", exact=True)).to_be_visible()


def test_log_out_everywhere_else(page, browser, site, traffic):
    """The laptop left logged in at a friend's is logged out from the phone."""
    register(page, "left_logged_in")
    log_in(page, "left_logged_in")
    left_behind = open_window(browser, site, traffic)
    log_in(left_behind, "left_logged_in")

    page.goto("/edit_profile")
    page.get_by_role("button", name="Log out everywhere else").click()
    expect(page.get_by_role("alert")).to_have_text("You have been logged out of 1 other browser.")
    assert_looks_right(page, traffic)

    left_behind.reload()
    expect(navigation(left_behind).get_by_role("link", name="Log in")).to_be_visible()
    expect(left_behind.get_by_role("heading", level=1)).to_have_text("Welcome to the blog")
    left_behind.context.close()
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Hi, left_logged_in!")


def test_the_back_button_after_logging_out_shows_no_private_page(page):
    """Pages made for a logged-in user are never kept (Cache-Control: no-store):
    after logging out, Back asks the server again, which sends a visitor to log in."""
    register(page, "shared_pc")
    log_in(page, "shared_pc")
    page.goto("/edit_profile")
    page.get_by_label("About me").fill("draft: not for the next person at this computer")
    log_out(page)

    page.go_back()
    expect(page).to_have_url(re.compile(r"/auth/login\?next=%2Fedit_profile$"))
    expect(page.get_by_text("not for the next person")).to_have_count(0)
    expect(page.get_by_role("button", name="Log out", exact=True)).to_have_count(0)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_every_page_fits_the_screen_and_needs_no_other_site(page, traffic, request, viewport):
    """Visit each kind of page at one width; each gets a screenshot of its own."""
    page.set_viewport_size(viewport)
    width = viewport["width"]
    name = f"reader{width}"

    def look(path: str, language: str = "en") -> None:
        page.goto(path)
        expect(page.locator("html")).to_have_attribute(
            "lang", "en" if language == "en" else "zh-CN"
        )
        assert_looks_right(page, traffic)
        shot = f"{file_name(request.node.name)}-{language}-{file_name(path) or 'home'}.png"
        page.screenshot(path=ARTIFACTS / shot, full_page=True)

    ARTIFACTS.mkdir(exist_ok=True)
    for path in ("/explore", "/auth/login", "/auth/register", "/auth/reset_password_request"):
        look(path)
    register(page, name)
    log_in(page, name)
    # A long word must wrap rather than push the page sideways.
    write_post(page, "A long link: https://example.com/" + "x" * 200)
    for path in ("/", f"/user/{name}", "/edit_profile", "/no/such/page", "/_test/fail"):
        look(path)

    # The language switch is in the navigation, behind the toggler on a phone;
    # Chinese pages must fit too.
    if viewport == PHONE:
        page.get_by_role("button", name="Toggle navigation").click()
    language_button(page, "中文").click()
    expect(page.locator("html")).to_have_attribute("lang", re.compile(r"^zh"))
    for path in ("/", f"/user/{name}", "/edit_profile", "/no/such/page", "/_test/fail"):
        look(path, "zh")


def test_the_longest_username_fits_a_phone(page, traffic):
    """A name may be 64 characters with no space in it: the pages that show it
    must wrap it, not scroll sideways."""
    page.set_viewport_size(PHONE)
    name = "L" * 64
    register(page, name)
    log_in(page, name)
    write_post(page, "Mine is the longest name.")
    assert_looks_right(page, traffic)
    for path in (f"/user/{name}", "/explore", "/edit_profile"):
        page.goto(path)
        assert_looks_right(page, traffic)

# ruff: noqa: RUF001 (Chinese punctuation is full-width)
"""A person at a real browser: Chromium, driven by Playwright, on the blog as
it is deployed (gunicorn, the production config, a database built by the
migrations, mail through a real SMTP server).

The other tests read HTML; these look at what is on the screen: the flash
message, the error under a field, the posts on a page, the reference on the
500 page. Every test also checks what a page needs from outside: nothing
(every request stays on 127.0.0.1, Bootstrap included), and that it fits a
phone's screen.

What a new user can do with their account (delete a post, change the password
or the email address, delete the account, see who follows them, search) is
tried at a phone's width and at a desktop's, in English and in Chinese, the
language chosen with the navigation's button; the Chinese words expected are
the catalogue's (app/translations/). An email change without mail to confirm
it runs on a second site, one with no mail server; the one confirmed by a
mailed link runs at a desktop's width, in English.

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
from tests.servers import Browser as HTTPClient

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
CHINESE_POST = "你好，世界！Hello, world!"


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
def site_without_mail(tmp_path_factory) -> Iterator[Site]:
    """The same blog with no mail server set, as a site may well run: an email
    address then changes as soon as its form is sent. Started only for the tests
    that ask for it; its mailbox stays empty."""
    tmp_path = tmp_path_factory.mktemp("browser-without-mail")
    with fresh_database(tmp_path) as database_url:
        env = production_env(
            tmp_path,
            database_url,
            POSTS_PER_PAGE=POSTS_PER_PAGE,
            REGISTRATION_RATE_LIMIT="1000 per minute",
        )
        with run_gunicorn(env, tmp_path) as gunicorn:
            yield Site(gunicorn.url, Mailbox())


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
    yield from window_for_the_test(browser, site, traffic, request)


@pytest.fixture
def page_without_mail(browser, site_without_mail, traffic, request) -> Iterator[Page]:
    """The same, on the site without mail."""
    yield from window_for_the_test(browser, site_without_mail, traffic, request)


def window_for_the_test(browser: Browser, site: Site, traffic: Traffic, request) -> Iterator[Page]:
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


@dataclass(frozen=True)
class Language:
    """A language of the site, and what its pages say instead of the English.

    `words` maps English to the words of the Chinese catalogue
    (app/translations/zh_Hans_CN/LC_MESSAGES/messages.po), copied here word for
    word, so that a translation that changes or goes missing fails a test;
    None for English itself.
    """

    code: str  # what the <html lang> starts with
    button: str  # its button in the navigation, named in the language itself
    words: dict[str, str] | None = None

    def __call__(self, english: str, **values: object) -> str:
        """What the page says for `english` (a message of the catalogue), with `values` in it."""
        text = english if self.words is None else self.words[english]
        return text % values if values else text

    def count(self, singular: str, plural: str, num: int) -> str:
        """A message with a number in it (ngettext); Chinese has one form for every number."""
        if self.words is None:
            return (singular if num == 1 else plural) % {"num": num}
        return self.words[singular] % {"num": num}


IN_ENGLISH = Language("en", "English")
IN_CHINESE = Language(
    "zh",
    "中文",
    {
        "Username": "用户名",
        "Email": "电子邮箱",
        "Password": "密码",
        "Repeat password": "再次输入密码",
        "Register": "注册",
        "Congratulations, you are now a registered user! Please sign in.": (
            "恭喜，注册成功！请登录。"
        ),
        "Log in": "登录",
        "Hi, %(username)s!": "%(username)s，您好！",
        "Log out": "退出登录",
        "You have been logged out.": "您已退出登录。",
        "Say something": "说点什么",
        "Post": "发布",
        "Your post is now live!": "您的文章已发布！",
        "Invalid username or password.": "用户名或密码错误。",
        "Older posts": "较早的文章",
        "Newer posts": "较新的文章",
        "Delete": "删除",
        "Delete this post?": "删除这篇文章？",
        "Cancel": "取消",
        "Your post has been deleted.": "您的文章已删除。",
        "No posts yet.": "还没有文章。",
        "Profile (%(username)s)": "个人主页（%(username)s）",
        "Edit your profile": "编辑个人资料",
        "Edit profile": "编辑个人资料",
        "Change password": "修改密码",
        "Current password": "当前密码",
        "New password": "新密码",
        "That isn't your current password.": "当前密码不正确。",
        "Your password has been changed. Every other browser has been logged out.": (
            "密码已修改，其他所有浏览器都已退出登录。"
        ),
        "Change email": "修改电子邮箱",
        "New email": "新的电子邮箱",
        "Your address now: %(email)s": "您现在的邮箱地址：%(email)s",
        "This site sends no mail, so nothing can confirm the new address: "
        "it is saved as soon as you submit it.": (
            "本站不发送邮件，因此无法确认新地址：提交后立即生效。"
        ),
        "We will mail a link to the new address. Your address changes when you open it.": (
            "我们会向新地址发送一个链接，打开它之后，您的邮箱地址才会更改。"
        ),
        "Waiting for you to open the link mailed to %(email)s. "
        "Asking for another address replaces it.": (
            "正在等待您打开发到 %(email)s 的链接。申请换成别的地址会让这个链接作废。"
        ),
        "Please use a different email address.": "该邮箱已被注册，请换一个。",
        "That is your address already.": "这已经是您的邮箱地址了。",
        "Your email address is now %(email)s.": "您的电子邮箱现在是 %(email)s。",
        "We have sent a link to %(email)s. Your address changes when you open it.": (
            "我们已向 %(email)s 发送了一个链接，打开它之后，您的邮箱地址才会更改。"
        ),
        "Confirm your new email address": "确认新的电子邮箱地址",
        "Make %(email)s the address of the account %(username)s?": (
            "将 %(email)s 设为账号 %(username)s 的邮箱地址吗？"
        ),
        "Confirm": "确认",
        "That confirmation link is invalid, used or expired.": "确认链接无效、已使用或已过期。",
        "Delete account": "删除账号",
        "Delete my account": "删除我的账号",
        "Your account and your posts have been deleted. Goodbye!": "您的账号和文章已删除。再见！",
        "%(num)d follower": "%(num)d 位粉丝",
        "%(num)d following": "关注了 %(num)d 人",
        "People following %(username)s": "%(username)s 的粉丝",
        "People %(username)s follows": "%(username)s 关注的人",
        "Older": "较早",
        "Newer": "较新",
        "Follow": "关注",
        "You are following %(username)s.": "您已关注 %(username)s。",
        "Search posts": "搜索文章",
        "Search": "搜索",
        "Posts containing “%(query)s”, newest first:": "包含“%(query)s”的文章，最新的在前：",
        "No post contains that.": "没有文章包含该内容。",
        "Type a word or a phrase to search the posts for.": "请输入要在文章中搜索的词语或句子。",
    },
)
LANGUAGES = [IN_ENGLISH, IN_CHINESE]


# What a person does, a step at a time. Each step waits for the sign on the
# screen that it worked, so the next one starts on the new page. A step takes
# the language the pages are in (`say`), English unless told.


def register(
    page: Page, username: str, password: str = PASSWORD, say: Language = IN_ENGLISH
) -> None:
    page.goto("/auth/register")
    page.get_by_label(say("Username")).fill(username)
    page.get_by_label(say("Email")).fill(f"{username}@example.com")
    page.get_by_label(say("Password"), exact=True).fill(password)
    page.get_by_label(say("Repeat password")).fill(password)
    page.get_by_role("button", name=say("Register")).click()
    expect(page.get_by_role("alert")).to_have_text(
        say("Congratulations, you are now a registered user! Please sign in.")
    )


def log_in(page: Page, username: str, password: str = PASSWORD, say: Language = IN_ENGLISH) -> None:
    fill_login_form(page, username, password, say)
    expect(page.get_by_role("heading", level=1)).to_have_text(
        say("Hi, %(username)s!", username=username)
    )


def fill_login_form(page: Page, username: str, password: str, say: Language = IN_ENGLISH) -> None:
    page.goto("/auth/login")
    page.get_by_label(say("Username")).fill(username)
    page.get_by_label(say("Password")).fill(password)
    page.get_by_role("button", name=say("Log in")).click()


def log_out(page: Page, say: Language = IN_ENGLISH) -> None:
    page.get_by_role("button", name=say("Log out"), exact=True).click()
    expect(page.get_by_role("alert")).to_have_text(say("You have been logged out."))


def write_post(page: Page, text: str, say: Language = IN_ENGLISH) -> None:
    """Post `text` from the home page; it is then the newest post on it."""
    page.get_by_label(say("Say something")).fill(text)
    page.get_by_role("button", name=say("Post")).click()
    expect(page.get_by_role("alert")).to_have_text(say("Your post is now live!"))
    expect(posts(page).first).to_have_text(text)


def navigation(page: Page):
    """The links and buttons in the navigation bar (folded away on a phone)."""
    return page.locator("#main-nav")


def posts(page: Page):
    """The bodies of the posts listed on the page, top to bottom."""
    return page.locator("article p")


def people(page: Page):
    """The names on a list of followers (or of people followed), top to bottom."""
    return page.locator("main section a.fw-semibold")


def open_navigation(page: Page):
    """The navigation, unfolded first where it is folded away behind the toggler (a phone)."""
    toggler = page.locator(".navbar-toggler")
    if toggler.is_visible():
        if toggler.get_attribute("aria-expanded") != "true":  # (not unfolded already)
            toggler.click()
        # Unfolded, not unfolding: while Bootstrap's animation runs ("collapsing"),
        # the buttons are visible already, and a click on one can be lost.
        expect(navigation(page)).to_have_class(re.compile(r"(^|\s)show(\s|$)"))
    return navigation(page)


def choose_language(page: Page, say: Language) -> None:
    """Switch the site to `say`'s language with its button in the navigation."""
    open_navigation(page)
    # Wait for the page the button loads: when the language is already the
    # one chosen, the old page has the right lang too, and the next step
    # would act on it while the new one is loading.
    with page.expect_navigation():
        language_button(page, say.button).click()
    expect(page.locator("html")).to_have_attribute("lang", re.compile(f"^{say.code}"))


def start_as_new_user(page: Page, username: str, say: Language) -> None:
    """Choose the language on the home page, then register and log in in it (the
    choice is then the account's too)."""
    page.goto("/")
    choose_language(page, say)
    register(page, username, say=say)
    log_in(page, username, say=say)


def open_account_page(page: Page, username: str, say: Language, link: str) -> None:
    """Go where a user finds the account's pages: their profile, "Edit your profile",
    then `link` ("Change password", "Change email" or "Delete account")."""
    profile = say("Profile (%(username)s)", username=username)
    open_navigation(page).get_by_role("link", name=profile).click()
    page.get_by_role("link", name=say("Edit your profile")).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(say("Edit profile"))
    page.get_by_role("link", name=say(link), exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(say(link))


def delete_link(page: Page, text: str, say: Language):
    """The Delete link of the post that says `text`."""
    article = page.locator("article", has=page.get_by_text(text, exact=True))
    return article.get_by_role("link", name=say("Delete"), exact=True)


def follow_over_http(site: Site, username: str, star: str) -> None:
    """Register `username`, log in and follow `star`: someone else, at a computer of
    their own, through the same forms (with their CSRF tokens), only without drawing
    the pages."""
    person = HTTPClient(site.url)
    account = {"username": username, "email": f"{username}@example.com"}
    account |= {"password": PASSWORD, "password2": PASSWORD}
    assert person.submit("/auth/register", account)[0] == 302
    assert person.submit("/auth/login", {"username": username, "password": PASSWORD})[0] == 302
    token = person.csrf_token(f"/user/{star}")
    assert person.request(f"/follow/{star}", {"csrf_token": token})[0] == 302


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
    long_link = "A long link: https://example.com/" + "x" * 200
    write_post(page, long_link)
    # The pages of the account, the lists of people, a search that finds the long
    # word, and the page that asks before deleting the post.
    confirm_delete = delete_link(page, long_link, IN_ENGLISH)
    pages = [
        "/",
        f"/user/{name}",
        "/edit_profile",
        "/no/such/page",
        "/_test/fail",
        "/auth/change_password",
        "/auth/change_email",
        "/auth/delete_account",
        f"/user/{name}/followers",
        f"/user/{name}/following",
        "/search?q=" + "x" * 40,
        confirm_delete.get_attribute("href"),
    ]
    for path in pages:
        look(path)

    # The language switch is in the navigation, behind the toggler on a phone;
    # Chinese pages must fit too.
    if viewport == PHONE:
        page.get_by_role("button", name="Toggle navigation").click()
    language_button(page, "中文").click()
    expect(page.locator("html")).to_have_attribute("lang", re.compile(r"^zh"))
    for path in pages:
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


# --- Deleting posts, the account's pages, the lists of people, search ----------------------
# A new user does each, at a phone's width and at a desktop's, in English and in
# Chinese (chosen with the navigation's language button, as a person would).

WIDTHS = pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
IN_EITHER_LANGUAGE = pytest.mark.parametrize("say", LANGUAGES, ids=["en", "zh"])


def who(role: str, viewport: dict, say: Language) -> str:
    """A username of this test's own: the tests share the site."""
    return f"{role}_{viewport['width']}_{say.code}"


@WIDTHS
@IN_EITHER_LANGUAGE
def test_delete_a_post_and_come_back_to_the_same_page(page, traffic, viewport, say):
    """A post's Delete link asks first, on a page of its own: Cancel goes back and deletes
    nothing; Delete deletes it and comes back to the page the link was on (page 2
    here), saying so."""
    page.set_viewport_size(viewport)
    name = who("tidy", viewport, say)
    start_as_new_user(page, name, say)
    notes = [f"{name}: note {n}" for n in range(1, 6)]
    for note in notes:
        write_post(page, note, say)
    newest_first = notes[::-1]
    heading = page.get_by_role("heading", level=1)

    delete_link(page, notes[3], say).click()
    expect(page).to_have_url(re.compile(r"/post/\d+/delete\?next=/$"))
    expect(heading).to_have_text(say("Delete this post?"))
    expect(posts(page)).to_have_text([notes[3]])  # which post, shown in full
    assert_looks_right(page, traffic)
    page.get_by_role("link", name=say("Cancel")).click()
    expect(page).to_have_url(re.compile(r"/$"))
    expect(posts(page)).to_have_text(newest_first[:3])  # still there
    expect(page.get_by_role("alert")).to_have_count(0)

    page.get_by_role("link", name=say("Older posts")).click()
    expect(page).to_have_url(re.compile(r"/\?page=2&before=\d+-\d+$"))
    second_page = page.url
    expect(posts(page)).to_have_text(newest_first[3:])
    delete_link(page, notes[1], say).click()
    expect(heading).to_have_text(say("Delete this post?"))
    page.get_by_role("button", name=say("Delete"), exact=True).click()
    expect(page.get_by_role("alert")).to_have_text(say("Your post has been deleted."))
    expect(page).to_have_url(second_page)
    expect(posts(page)).to_have_text([notes[0]])
    assert_looks_right(page, traffic)

    # Gone for everyone: the profile's second page has the oldest note only.
    page.goto(f"/user/{name}?page=2")
    expect(posts(page)).to_have_text([notes[0]])


@WIDTHS
@IN_EITHER_LANGUAGE
def test_change_password_logs_out_every_other_browser(page, browser, site, traffic, viewport, say):
    """A wrong current password is refused under its field; the right one changes the
    password: the other computer is logged out, this browser stays in, and only the
    new password logs in."""
    page.set_viewport_size(viewport)
    name = who("rekey", viewport, say)
    start_as_new_user(page, name, say)
    # Also logged in on another computer, whose login form is in English; the
    # account's language takes over once logged in.
    elsewhere = open_window(browser, site, traffic)
    fill_login_form(elsewhere, name, PASSWORD)
    hello = say("Hi, %(username)s!", username=name)
    expect(elsewhere.get_by_role("heading", level=1)).to_have_text(hello)

    open_account_page(page, name, say, "Change password")

    def change(current: str) -> None:
        # The password fields come back empty after a refusal: all three, every time.
        page.get_by_label(say("Current password"), exact=True).fill(current)
        page.get_by_label(say("New password"), exact=True).fill(NEW_PASSWORD)
        page.get_by_label(say("Repeat password"), exact=True).fill(NEW_PASSWORD)
        page.get_by_role("button", name=say("Change password")).click()

    change("not-the-password")
    expect(page.get_by_text(say("That isn't your current password."))).to_be_visible()
    assert_looks_right(page, traffic)
    change(PASSWORD)
    expect(page.get_by_role("alert")).to_have_text(
        say("Your password has been changed. Every other browser has been logged out.")
    )
    expect(page).to_have_url(re.compile(r"/edit_profile$"))
    assert_looks_right(page, traffic)

    elsewhere.reload()
    expect(navigation(elsewhere).get_by_role("link", name=say("Log in"))).to_be_visible()
    elsewhere.context.close()

    third = open_window(browser, site, traffic)
    fill_login_form(third, name, PASSWORD)
    expect(third.get_by_role("alert")).to_have_text("Invalid username or password.")
    fill_login_form(third, name, NEW_PASSWORD)
    expect(third.get_by_role("heading", level=1)).to_have_text(hello)
    third.context.close()
    page.goto("/")
    expect(page.get_by_role("heading", level=1)).to_have_text(hello)


@WIDTHS
@IN_EITHER_LANGUAGE
def test_change_email_without_mail_is_saved_at_once(page_without_mail, traffic, viewport, say):
    """With no mail to confirm it by, the page says so, and the new address is saved
    when the form is sent; an address another account has (in any case) is refused."""
    page = page_without_mail
    page.set_viewport_size(viewport)
    name, other = who("moving", viewport, say), who("settled", viewport, say)
    page.goto("/")
    choose_language(page, say)
    register(page, other, say=say)
    start_as_new_user(page, name, say)
    open_account_page(page, name, say, "Change email")
    old_address = f"{name}@example.com"
    expect(page.get_by_text(say("Your address now: %(email)s", email=old_address))).to_be_visible()
    no_mail = say(
        "This site sends no mail, so nothing can confirm the new address: "
        "it is saved as soon as you submit it."
    )
    expect(page.get_by_text(no_mail)).to_be_visible()

    def change(address: str) -> None:
        page.get_by_label(say("Current password"), exact=True).fill(PASSWORD)
        page.get_by_label(say("New email"), exact=True).fill(address)
        page.get_by_role("button", name=say("Change email")).click()

    change(f"{other.upper()}@EXAMPLE.COM")
    expect(page.get_by_text(say("Please use a different email address."))).to_be_visible()
    assert_looks_right(page, traffic)
    new_address = f"{name}@new.example.com"
    change(new_address)
    expect(page.get_by_role("alert")).to_have_text(
        say("Your email address is now %(email)s.", email=new_address)
    )
    expect(page).to_have_url(re.compile(r"/edit_profile$"))
    page.get_by_role("link", name=say("Change email"), exact=True).click()
    expect(page.get_by_text(say("Your address now: %(email)s", email=new_address))).to_be_visible()
    assert_looks_right(page, traffic)


@IN_EITHER_LANGUAGE
def test_change_email_with_mail_waits_for_the_mailed_link(page, site, traffic, say):
    """With mail on, the address changes only once the link mailed to the new address
    is opened and its page's button pressed; the link works once."""
    name = who("mailed", DESKTOP, say)
    start_as_new_user(page, name, say)
    open_account_page(page, name, say, "Change email")
    will_mail = say(
        "We will mail a link to the new address. Your address changes when you open it."
    )
    expect(page.get_by_text(will_mail)).to_be_visible()
    new_address = f"{name}@new.example.com"
    page.get_by_label(say("Current password"), exact=True).fill(PASSWORD)
    page.get_by_label(say("New email"), exact=True).fill(new_address)
    page.get_by_role("button", name=say("Change email")).click()
    expect(page.get_by_role("alert")).to_have_text(
        say(
            "We have sent a link to %(email)s. Your address changes when you open it.",
            email=new_address,
        )
    )
    # Not yet changed: the page says which address waits for its link.
    page.get_by_role("link", name=say("Change email"), exact=True).click()
    old_address = f"{name}@example.com"
    expect(page.get_by_text(say("Your address now: %(email)s", email=old_address))).to_be_visible()
    waiting = say(
        "Waiting for you to open the link mailed to %(email)s. "
        "Asking for another address replaces it.",
        email=new_address,
    )
    expect(page.get_by_text(waiting)).to_be_visible()

    text = site.mail_to(new_address).get_body(("plain",)).get_content()
    link = re.search(r"http://\S+/auth/confirm_email/\S+", text).group()
    assert link.startswith(site.url + "/")
    page.goto(link)
    # The token is taken out of the address bar at once, as a reset link's is.
    expect(page).to_have_url(site.url + "/auth/confirm_email")
    expect(page.get_by_role("heading", level=1)).to_have_text(say("Confirm your new email address"))
    question = say(
        "Make %(email)s the address of the account %(username)s?",
        email=new_address,
        username=name,
    )
    expect(page.get_by_text(question)).to_be_visible()
    assert_looks_right(page, traffic)
    page.get_by_role("button", name=say("Confirm"), exact=True).click()
    expect(page.get_by_role("alert")).to_have_text(
        say("Your email address is now %(email)s.", email=new_address)
    )

    page.goto(link)
    expect(page.get_by_role("alert")).to_have_text(
        say("That confirmation link is invalid, used or expired.")
    )


@WIDTHS
@IN_EITHER_LANGUAGE
def test_delete_account_frees_the_username(page, traffic, viewport, say):
    """A wrong password is refused; the right one deletes the account and its posts and
    logs out; the name can then be registered again, by an account that starts empty."""
    page.set_viewport_size(viewport)
    name = who("leaving", viewport, say)
    start_as_new_user(page, name, say)
    farewell = f"{name} was here"
    write_post(page, farewell, say)
    open_account_page(page, name, say, "Delete account")

    page.get_by_label(say("Current password"), exact=True).fill("not-the-password")
    page.get_by_role("button", name=say("Delete my account")).click()
    expect(page.get_by_text(say("That isn't your current password."))).to_be_visible()
    assert_looks_right(page, traffic)
    page.get_by_label(say("Current password"), exact=True).fill(PASSWORD)
    page.get_by_role("button", name=say("Delete my account")).click()
    expect(page.get_by_role("alert")).to_have_text(
        say("Your account and your posts have been deleted. Goodbye!")
    )
    expect(open_navigation(page).get_by_role("link", name=say("Log in"))).to_be_visible()
    assert_looks_right(page, traffic)

    assert page.goto(f"/user/{name}").status == 404
    page.goto(f"/search?q={farewell.replace(' ', '+')}")
    expect(page.get_by_text(say("No post contains that."))).to_be_visible()

    register(page, name, say=say)
    log_in(page, name, say=say)
    expect(page.get_by_text(say("No posts yet."))).to_be_visible()


@WIDTHS
@IN_EITHER_LANGUAGE
def test_followers_and_following_lists(page, site, traffic, viewport, say):
    """The counts on a profile are links to the lists: the newest follow first, three
    a page here, with Older and Newer; following someone back puts them on the other."""
    page.set_viewport_size(viewport)
    star = who("star", viewport, say)
    fans = [who(f"fan{n}", viewport, say) for n in range(1, 5)]
    start_as_new_user(page, star, say)
    for fan in fans:  # one after the other: fans[3] is the newest follower
        follow_over_http(site, fan, star)
    newest_first = fans[::-1]
    heading = page.get_by_role("heading", level=1)

    open_navigation(page).get_by_role(
        "link", name=say("Profile (%(username)s)", username=star)
    ).click()
    followers = say.count("%(num)d follower", "%(num)d followers", len(fans))
    page.get_by_role("link", name=followers, exact=True).click()
    expect(heading).to_have_text(say("People following %(username)s", username=star))
    expect(people(page)).to_have_text(newest_first[:3])
    assert_looks_right(page, traffic)

    page.get_by_role("link", name=say("Older")).click()
    expect(page).to_have_url(re.compile(rf"/user/{star}/followers\?page=2&before=\d+-\d+$"))
    expect(people(page)).to_have_text(newest_first[3:])
    page.get_by_role("link", name=say("Newer")).click()
    expect(page).to_have_url(re.compile(rf"/user/{star}/followers$"))
    expect(people(page)).to_have_text(newest_first[:3])

    # Follow the first fan back, from their name on the list's last page.
    page.get_by_role("link", name=say("Older")).click()
    people(page).get_by_text(fans[0], exact=True).click()
    expect(heading).to_have_text(fans[0])
    page.get_by_role("button", name=say("Follow"), exact=True).click()
    expect(page.get_by_role("alert")).to_have_text(
        say("You are following %(username)s.", username=fans[0])
    )
    open_navigation(page).get_by_role(
        "link", name=say("Profile (%(username)s)", username=star)
    ).click()
    page.get_by_role("link", name=say("%(num)d following", num=1), exact=True).click()
    expect(heading).to_have_text(say("People %(username)s follows", username=star))
    expect(people(page)).to_have_text([fans[0]])
    assert_looks_right(page, traffic)


# A Chinese word for each run of the search test, which no other post here contains.
CHINESE_WORDS = {
    (375, "en"): "熊猫",
    (375, "zh"): "长城",
    (1280, "en"): "饺子",
    (1280, "zh"): "龙舟",
}


@WIDTHS
@IN_EITHER_LANGUAGE
def test_search_from_the_navigation(page, traffic, viewport, say):
    """The navigation's search box (behind the toggler on a phone) finds the posts that
    contain the words, whatever their case, in Chinese too; the results page through
    with Older; nothing typed gets a hint, not a list."""
    page.set_viewport_size(viewport)
    width = viewport["width"]
    name = who("seeker", viewport, say)
    word, chinese = f"Zebra{width}{say.code}", CHINESE_WORDS[width, say.code]
    start_as_new_user(page, name, say)
    notes = [
        f"A {word} crossing.",
        f"{word.upper()} AT NOON",
        f"我在{chinese}看见了 {word.lower()}",
        f"The last {word}!",
        "Nothing to find in this one.",
    ]
    for note in notes:
        write_post(page, note, say)
    found = [note for note in notes[::-1] if word.lower() in note.lower()]
    # Found folded away too (include_hidden), to tell that it is there, only hidden.
    search_box = navigation(page).get_by_role(
        "searchbox", name=say("Search posts"), include_hidden=True
    )
    expect(search_box).to_have_count(1)

    def search(words: str) -> None:
        open_navigation(page)
        search_box.fill(words)
        search_box.press("Enter")
        expect(page.get_by_role("heading", level=1)).to_have_text(say("Search"))

    if viewport == PHONE:
        # Folded away with the rest of the navigation, until the toggler opens it...
        expect(search_box).to_be_hidden()
        open_navigation(page)
        expect(search_box).to_be_visible()
        # ...and the open navigation fits the screen, search box and all.
        assert_looks_right(page, traffic)

    query = word.lower()
    search(query)
    expect(page).to_have_url(re.compile(rf"/search\?q={query}$"))
    expect(
        page.get_by_text(say("Posts containing “%(query)s”, newest first:", query=query))
    ).to_be_visible()
    expect(posts(page)).to_have_text(found[:3])
    expect(search_box).to_have_value(query)  # what was searched for, to change it
    assert_looks_right(page, traffic)
    page.get_by_role("link", name=say("Older posts")).click()
    expect(page).to_have_url(re.compile(rf"/search\?q={query}&page=2&before=\d+-\d+$"))
    expect(posts(page)).to_have_text(found[3:])
    page.get_by_role("link", name=say("Newer posts")).click()
    expect(page).to_have_url(re.compile(rf"/search\?q={query}$"))
    expect(posts(page)).to_have_text(found[:3])

    search(chinese)
    expect(
        page.get_by_text(say("Posts containing “%(query)s”, newest first:", query=chinese))
    ).to_be_visible()
    expect(posts(page)).to_have_text([notes[2]])
    assert_looks_right(page, traffic)

    search("   ")
    hint = say("Type a word or a phrase to search the posts for.")
    expect(page.get_by_text(hint)).to_be_visible()
    expect(posts(page)).to_have_count(0)
    assert_looks_right(page, traffic)


def lines_of_text(element) -> int:
    """On how many lines the browser draws `element`'s text."""
    return element.evaluate(
        """element => {
            const range = document.createRange();
            range.selectNodeContents(element);
            const tops = [...range.getClientRects()].map(rect => Math.round(rect.top));
            return new Set(tops).size;
        }"""
    )


@IN_EITHER_LANGUAGE
def test_the_search_button_keeps_its_word_whole_on_a_phone(page, traffic, say):
    """The search page's own button says "Search" on one line at a phone's width."""
    page.set_viewport_size(PHONE)
    page.goto("/")
    choose_language(page, say)
    page.goto("/search?q=anything")
    button = page.locator("main").get_by_role("button", name=say("Search"), exact=True)
    expect(button).to_be_visible()
    assert_looks_right(page, traffic)
    assert lines_of_text(button) == 1

"""English and Simplified Chinese: which language a page is in, the switch in
the navigation, Chinese pages, mails and dates, admin mail in the admins'
language, `flask translate`, and a catalogue that is complete and compiled.

Everything is checked as a person would see it: the page's text and its
``<html lang>``, the mail that a real SMTP server (aiosmtpd) received.
"""

import html
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po, write_po
from flask import Flask, abort
from flask.testing import FlaskClient

from app import create_app
from app.extensions import db
from app.i18n import LANGUAGE_NAMES
from app.logger import init_email
from app.models import Post, User, now_utc
from app.translate import catalogue_folder, extract
from config import LANGUAGES, ConfigError
from tests.failing_routes import add_failing_routes
from tests.helpers import PASSWORD, AuthActions, add_user, config_for
from tests.pages import alerts, csrf_token, form_errors, page_text
from tests.servers import BIN, ROOT, clean_env

TRANSLATIONS = ROOT / "app" / "translations"
# Babel's full name for zh_CN, where Flask-Babel looks for it (app/translate.py).
ZH_PO = TRANSLATIONS / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"
ZH_MO = TRANSLATIONS / "zh_Hans_CN" / "LC_MESSAGES" / "messages.mo"
CHINESE = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}  # what Chrome in China sends
HAN = re.compile(r"[\u4e00-\u9fff]")  # any Chinese character
REQUIRED_ZH = "该字段是必填字段。"  # WTForms' "This field is required."


def html_lang(response) -> str:
    return re.search(r'<html lang="([^"]*)"', response.text).group(1)


def chinese_client(app: Flask) -> FlaskClient:
    """A client whose browser asks for Chinese on every request."""
    client = app.test_client()
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = CHINESE["Accept-Language"]
    return client


def switch_language(client: FlaskClient, code: str, back_to: str = "/explore", **kwargs):
    """Press a language's button in the navigation, on the page `back_to`."""
    return client.post(f"/language/{code}", data={"next": back_to, **kwargs})


@pytest.fixture
def zh_client(app) -> FlaskClient:
    return chinese_client(app)


# --- Which language: the browser's, matched by script --------------------------------


@pytest.mark.parametrize(
    ("accept_language", "lang"),
    [
        (None, "en"),
        ("", "en"),
        ("en-US,en;q=0.9", "en"),
        ("fr", "en"),  # no French: English
        ("zh-CN", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-Hans", "zh-CN"),
        ("zh-Hans-CN", "zh-CN"),
        ("zh-SG", "zh-CN"),
        ("zh_CN", "zh-CN"),  # not a valid tag, but some clients send it
        ("fr, zh-CN;q=0.5, de;q=0.4", "zh-CN"),  # the first one we have
        ("en-GB, zh-CN;q=0.9", "en"),
        ("zh-CN;q=0, en", "en"),  # q=0: "not Chinese"
        # Traditional Chinese is not Simplified: its reader gets their next choice...
        ("zh-TW", "en"),
        ("zh-HK, en;q=0.5", "en"),
        ("zh-Hant-TW", "en"),
        # ...which with Chrome in Taiwan is the bare "zh": Chinese.
        ("zh-TW,zh;q=0.9,en-US;q=0.8,en;q=0.7", "zh-CN"),
    ],
)
def test_the_browser_language_picks_the_page_language(client, accept_language, lang):
    headers = {} if accept_language is None else {"Accept-Language": accept_language}
    response = client.get("/explore", headers=headers)
    assert html_lang(response) == lang
    assert ("欢迎来到博客" in page_text(response)) == (lang == "zh-CN")
    assert "Accept-Language" in response.headers["Vary"]  # caches must keep them apart


# --- Chinese pages ------------------------------------------------------------------


def test_the_navigation_and_the_explore_page_in_chinese(zh_client):
    page = page_text(zh_client.get("/"))
    for words in ("博客", "首页", "发现", "登录", "注册", "欢迎来到博客", "还没有文章。"):
        assert words in page
    assert "Log in" not in page
    assert "<title>发现 · 博客</title>" in page


def test_the_login_form_in_chinese_with_wtforms_own_messages(zh_client):
    page = page_text(zh_client.get("/auth/login"))
    assert "<h1>登录</h1>" in page
    for label in ("用户名", "密码", "记住我", "忘记密码？", "注册一个账号"):  # noqa: RUF001
        assert label in page
    assert 'value="登录"' in page  # the submit button

    # WTForms' built-in messages, translated by WTForms' own catalogue.
    response = zh_client.post("/auth/login", data={"username": "", "password": ""})
    assert form_errors(response) == {"username": [REQUIRED_ZH], "password": [REQUIRED_ZH]}

    # Ours, where WTForms' wording ("Email") wouldn't match the form's label (电子邮箱).
    response = zh_client.post("/auth/reset_password_request", data={"email": "not-an-address"})
    assert form_errors(response) == {"email": ["请输入有效的电子邮箱地址。"]}


def test_our_own_validation_messages_in_chinese(zh_client, users):
    response = zh_client.post(
        "/auth/register",
        data={
            "username": "admin",  # taken
            "email": "new@example.com",
            "password": PASSWORD,
            "password2": PASSWORD + "-typo",
        },
    )
    assert form_errors(response) == {
        "username": ["该用户名已被使用，请换一个。"],  # noqa: RUF001
        "password2": ["两次输入的密码不一致。"],
    }
    response = zh_client.post("/auth/register", data={"username": "a b c"})
    assert form_errors(response) == {
        "username": ["只能使用字母、数字、点、短横线和下划线。"],
        "email": [REQUIRED_ZH],
        "password": [REQUIRED_ZH],
        "password2": [REQUIRED_ZH],
    }


def test_flash_messages_in_chinese(app, zh_client, users):
    AuthActions(zh_client).login()
    response = zh_client.post("/", data={"post": "你好，世界"}, follow_redirects=True)  # noqa: RUF001
    assert alerts(response) == [("success", "您的文章已发布！")]  # noqa: RUF001
    page = page_text(response)
    assert "admin，您好！" in page  # noqa: RUF001
    assert "你好，世界" in page  # noqa: RUF001
    assert "发布" in page  # the post form's button

    response = zh_client.post("/auth/logout", follow_redirects=True)
    assert alerts(response) == [("info", "您已退出登录。")]


def test_the_404_page_in_chinese(zh_client):
    response = zh_client.get("/no/such/page")
    assert response.status_code == 404
    assert html_lang(response) == "zh-CN"
    page = page_text(response)
    assert "<h1>页面未找到</h1>" in page
    assert "抱歉，该页面不存在。" in page  # noqa: RUF001
    assert "返回首页" in page

    response = zh_client.get("/no/such/page", headers={"Accept": "application/json"})
    assert response.json["error"] == "页面未找到"


def test_a_status_we_have_no_words_for_is_still_in_chinese(make_app):
    """Werkzeug words every status in English only; ours says "Error 418" in Chinese."""
    app = make_app()
    app.add_url_rule("/teapot", "teapot", lambda: abort(418))
    response = chinese_client(app).get("/teapot")
    assert response.status_code == 418
    page = page_text(response)
    assert "<h1>错误 418</h1>" in page
    assert "无法完成该请求。" in page
    assert "I'm a teapot" not in page  # Werkzeug's English name for 418


def test_the_429_page_in_chinese(make_app, users):
    app = make_app(AUTH_RATE_LIMIT_PER_ACCOUNT="2 per minute")
    client = chinese_client(app)
    for _ in range(2):
        response = client.post("/auth/login", data={"username": "admin", "password": "wrong"})
        assert alerts(response) == [("danger", "用户名或密码错误。")]
    response = client.post("/auth/login", data={"username": "admin", "password": "wrong"})
    assert response.status_code == 429
    assert "<h1>请求过于频繁</h1>" in page_text(response)
    assert "请稍等片刻再试。" in page_text(response)


def test_the_503_page_in_chinese(tmp_path):
    """The database can't be opened: the 503 page still knows the visitor's language,
    because the language never comes from the database."""
    unreachable = f"sqlite:///{tmp_path / 'no-such-directory' / 'blog.db'}"
    app = create_app(config_for(unreachable, PROPAGATE_EXCEPTIONS=False))
    client = chinese_client(app)
    switch_language(client, "zh_CN")  # a choice in the session, too
    response = client.get("/explore")
    assert response.status_code == 503
    assert html_lang(response) == "zh-CN"
    assert "<h1>暂时无法访问</h1>" in page_text(response)
    assert "网站暂时无法连接数据库" in page_text(response)


def test_relative_times_and_dates_in_chinese(app, zh_client, users):
    with app.app_context():
        admin = db.session.get(User, users["admin"])
        admin.last_seen = now_utc() - timedelta(days=2)
        db.session.add(
            Post(body="三分钟前写的", author=admin, timestamp=now_utc() - timedelta(minutes=3))
        )
        db.session.commit()

    page = page_text(zh_client.get("/explore"))
    moment = re.search(r'<time datetime="[^"]+" title="([^"]+)">([^<]+)</time>', page)
    assert moment.group(2) == "3分钟前"
    assert re.fullmatch(r"\d{4}年\d{1,2}月\d{1,2}日 UTC \d{1,2}:\d\d:\d\d", moment.group(1))

    page = page_text(zh_client.get("/user/admin"))
    assert re.search(r"最后在线：<time [^>]+>2天前</time>", page)  # noqa: RUF001
    assert "0 位粉丝" in page
    assert "关注了 0 人" in page

    english = page_text(app.test_client().get("/explore"))
    assert ">3 minutes ago</time>" in english


# --- The language switch --------------------------------------------------------------


def switch_buttons(response) -> dict[str, str]:
    """The navigation's language buttons: {form action: button text}."""
    forms = re.findall(
        r'<form action="(/language/[^"]+)" method="post"'
        r'.*?<button type="submit"[^>]*>([^<]+)</button>',
        response.text,
        re.DOTALL,
    )
    return dict(forms)


@pytest.mark.parametrize("path", ["/explore", "/auth/login", "/no/such/page"])
def test_every_page_has_a_switch_naming_each_language_in_itself(zh_client, path):
    buttons = switch_buttons(zh_client.get(path))
    assert buttons == {"/language/en": "English", "/language/zh_CN": "中文"}
    assert set(LANGUAGE_NAMES) == set(LANGUAGES)


def test_switching_returns_to_the_page_and_is_remembered(client):
    response = switch_language(client, "zh_CN", back_to="/auth/login?next=/explore")
    assert response.status_code == 302
    assert response.headers["Location"] == "/auth/login?next=/explore"
    with client.session_transaction() as session:
        assert session["locale"] == "zh_CN"
    # The choice beats the browser's own languages.
    response = client.get("/auth/login", headers={"Accept-Language": "en"})
    assert html_lang(response) == "zh-CN"
    assert "<h1>登录</h1>" in page_text(response)

    switch_language(client, "en")
    response = client.get("/explore", headers=CHINESE)
    assert html_lang(response) == "en"
    assert "Welcome to the blog" in page_text(response)


def test_the_switch_comes_back_to_an_address_that_needs_escaping(client):
    page = client.get("/user/Émile a?x=1")  # a 404 page, with the switch
    back_to = html.unescape(re.search(r'name="next" value="([^"]+)"', page.text).group(1))
    response = switch_language(client, "zh_CN", back_to=back_to)
    assert response.headers["Location"] == "/user/%C3%89mile%20a?x=1"


@pytest.mark.parametrize("back_to", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_switching_never_redirects_off_the_site(client, back_to):
    response = switch_language(client, "zh_CN", back_to=back_to)
    assert response.headers["Location"] == "/"


def test_switching_without_a_page_goes_back_to_the_referrer_or_home(client):
    response = client.post("/language/zh_CN", headers={"Referer": "http://localhost/explore"})
    assert response.headers["Location"] == "/explore"
    response = client.post("/language/zh_CN")
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize("code", ["fr", "zh", "zh-CN", "EN", "xx"])
def test_an_unknown_language_is_a_404(client, code):
    response = switch_language(client, code)
    assert response.status_code == 404
    with client.session_transaction() as session:
        assert "locale" not in session


def test_switching_takes_a_post_with_a_csrf_token(make_app):
    app = make_app(WTF_CSRF_ENABLED=True)
    client = app.test_client()
    assert client.get("/language/zh_CN").status_code == 405  # a link can't switch it
    response = switch_language(client, "zh_CN")
    assert response.status_code == 400  # no token: the "form expired" page
    page = client.get("/explore").text
    assert html_lang(client.get("/explore")) == "en"

    response = switch_language(client, "zh_CN", csrf_token=csrf_token(page))
    assert response.headers["Location"] == "/explore"
    assert html_lang(client.get("/explore")) == "zh-CN"


def test_a_users_choice_follows_them_to_a_new_browser(app, client, users):
    auth = AuthActions(client)
    auth.login()
    switch_language(client, "zh_CN")
    with app.app_context():
        assert db.session.get(User, users["admin"]).locale == "zh_CN"

    # Logging out keeps the choice in this browser...
    response = auth.logout()
    assert "您已退出登录。" in page_text(client.get(response.headers["Location"]))

    # ...and another browser, whose own language is English, gets it at login.
    other = app.test_client()
    other.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en-US,en;q=0.9"
    assert html_lang(other.get("/explore")) == "en"
    response = AuthActions(other).login()
    page = page_text(other.get(response.headers["Location"]))
    assert "admin，您好！" in page  # noqa: RUF001
    assert "退出" in page

    # Switching back is saved too.
    switch_language(other, "en")
    with app.app_context():
        assert db.session.get(User, users["admin"]).locale == "en"


def test_a_remember_me_cookie_brings_the_choice_back(app, client, users):
    AuthActions(client).login(remember=True)
    switch_language(client, "zh_CN")
    remember_token = client.get_cookie("remember_token").value

    # A browser restarted: no session cookie, only the remember-me cookie.
    other = app.test_client()
    other.set_cookie("remember_token", remember_token)
    page = page_text(other.get("/"))
    assert "admin，您好！" in page  # noqa: RUF001


def test_a_choice_made_just_before_logging_in_wins_and_is_saved(app, client, users):
    """The account says English; this visitor clicks 中文, then logs in: Chinese it is."""
    with app.app_context():
        db.session.get(User, users["admin"]).locale = "en"
        db.session.commit()
    switch_language(client, "zh_CN")
    response = AuthActions(client).login()
    assert "admin，您好！" in page_text(client.get(response.headers["Location"]))  # noqa: RUF001
    with app.app_context():
        assert db.session.get(User, users["admin"]).locale == "zh_CN"


def test_a_choice_made_logged_out_follows_the_account_to_a_new_browser(app, client, users):
    """No language saved yet: the one picked before logging in is saved at login."""
    switch_language(client, "zh_CN")
    AuthActions(client).login()

    other = app.test_client()
    response = AuthActions(other).login()
    assert "admin，您好！" in page_text(other.get(response.headers["Location"]))  # noqa: RUF001


def test_the_accounts_language_wins_over_an_old_choice_in_the_browser(app, users):
    """A choice made in an earlier visit, not just now, doesn't overwrite the account's."""
    with app.app_context():
        db.session.get(User, users["admin"]).locale = "en"
        db.session.commit()
    client = app.test_client()
    switch_language(client, "zh_CN")
    auth = AuthActions(client)
    auth.login("admin1")  # the choice is saved on admin1's account at this login...
    auth.logout()
    response = auth.login("admin")  # ...so admin, logging in next, gets their own
    assert "Hi, admin!" in page_text(client.get(response.headers["Location"]))
    with app.app_context():
        assert db.session.get(User, users["admin"]).locale == "en"


# --- Mail ------------------------------------------------------------------------


@pytest.mark.system
def test_the_reset_mail_is_in_the_language_it_was_asked_in(make_app, mail_server):
    app = make_app(**mail_server.settings, MAIL_DEFAULT_SENDER="blog@example.com")
    with app.app_context():
        add_user("alice")
    client = chinese_client(app)

    response = client.post("/auth/reset_password_request", data={"email": "alice@example.com"})
    assert "如果该邮箱注册过账号，重置密码的邮件已在路上。" in page_text(  # noqa: RUF001
        client.get(response.headers["Location"])
    )

    message = mail_server.mailbox.wait_for(1)[0]
    assert message["Subject"] == "重置密码"
    plain = message.get_body(("plain",)).get_content()
    assert "alice，您好：" in plain  # noqa: RUF001
    assert "要重置密码，请打开以下链接：" in plain  # noqa: RUF001
    assert "该链接只能使用一次，60 分钟内有效。" in plain  # noqa: RUF001
    assert "http://localhost/auth/reset_password/" in plain
    assert (
        '请<a href="http://localhost/auth/reset_password/'
        in message.get_body(("html",)).get_content()
    )


@pytest.mark.system
def test_the_reset_mail_is_in_the_language_the_account_chose(make_app, mail_server):
    app = make_app(**mail_server.settings)
    with app.app_context():
        add_user("alice").locale = "zh_CN"
        db.session.commit()

    app.test_client().post("/auth/reset_password_request", data={"email": "alice@example.com"})
    assert mail_server.mailbox.wait_for(1)[0]["Subject"] == "重置密码"


@pytest.fixture
def failing_app(make_app, mail_server, tmp_path):
    """Return a factory: the blog mailing its errors to an admin, with a failing page."""

    def build(**overrides) -> Flask:
        app = make_app(
            **mail_server.settings,
            PROPAGATE_EXCEPTIONS=False,
            ADMINS=["admin@example.com"],
            LOG_DIR=str(tmp_path / "logs"),
            **overrides,
        )
        add_failing_routes(app)
        init_email(app)
        return app

    return build


def admin_mail(mail_server) -> tuple[str, str]:
    message = mail_server.mailbox.wait_for(1)[0]
    return message["Subject"], message.get_body(("plain",)).get_content()


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.system
def test_a_chinese_visitors_500_is_mailed_to_the_admins_in_english(failing_app, mail_server):
    client = chinese_client(failing_app())
    response = client.get("/_test/fail")
    assert response.status_code == 500
    assert "<h1>发生意外错误</h1>" in page_text(response)  # the visitor reads Chinese...
    request_id = response.headers["X-Request-ID"]
    assert f"错误编号：<code>{request_id}</code>。联系我们时请提供此编号。" in page_text(response)  # noqa: RUF001

    subject, body = admin_mail(mail_server)  # ...the admins English
    assert subject == f"[Blog] ZeroDivisionError: division by zero (error {request_id})"
    for label in ("Message type:", "Location:", "Request id:", "User agent:"):
        assert label in body
    assert not HAN.search(subject + body)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.system
def test_admins_can_read_their_error_mails_in_chinese(failing_app, mail_server):
    client = failing_app(ADMIN_LOCALE="zh_CN").test_client()
    response = client.get("/_test/fail")
    assert "<h1>An unexpected error has occurred</h1>" in page_text(response)

    subject, body = admin_mail(mail_server)
    request_id = response.headers["X-Request-ID"]
    assert subject == f"[Blog] ZeroDivisionError: division by zero （错误 {request_id}）"  # noqa: RUF001
    for label in ("错误\n消息类型:", "位置:", "请求\n请求方法:", "请求编号:"):
        assert label in body
    assert "Traceback (most recent call last):" in body  # Python's words stay Python's


@pytest.mark.parametrize(
    ("locale", "subject"), [("en", "[Blog] Test mail"), ("zh_CN", "[Blog] 测试邮件")]
)
@pytest.mark.system
def test_flask_test_email_is_in_the_admins_language(make_app, mail_server, locale, subject):
    app = make_app(**mail_server.settings, ADMINS=["admin@example.com"], ADMIN_LOCALE=locale)
    result = app.test_cli_runner().invoke(args=["test-email"])
    assert result.exit_code == 0, result.output
    message = mail_server.mailbox.wait_for(1)[0]
    assert message["Subject"] == subject


def test_an_admin_locale_the_blog_does_not_speak_is_refused(make_app):
    with pytest.raises(ConfigError, match=r"ADMIN_LOCALE='fr' is not a language .* en, zh_CN"):
        make_app(ADMIN_LOCALE="fr")


@pytest.mark.system
def test_an_admin_locale_typo_stops_the_real_process_cleanly(tmp_path):
    env = clean_env(
        FLASK_APP="blog.py",
        ADMIN_LOCALE="zh-CN",
        DATABASE_URL=f"sqlite:///{tmp_path / 'blog.sqlite'}",
    )
    result = subprocess.run(
        [BIN / "flask", "routes"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 3
    assert "Configuration error: ADMIN_LOCALE='zh-CN' is not a language" in result.stderr


# --- flask translate --------------------------------------------------------------


def messages(catalog) -> dict:
    """{msgid: msgstr} of the translated, non-fuzzy messages of a catalogue.

    A plural message's id and strings are tuples (read_mo gives lists).
    """

    def plain(value):
        return tuple(value) if isinstance(value, list | tuple) else value

    return {plain(m.id): plain(m.string) for m in catalog if m.id and m.string and not m.fuzzy}


@pytest.fixture
def translations_copy(tmp_path) -> Path:
    copy = tmp_path / "translations"
    shutil.copytree(TRANSLATIONS, copy)
    return copy


@pytest.mark.system
def test_translate_update_adds_new_strings_and_drops_removed_ones(
    make_app, translations_copy, monkeypatch, tmp_path
):
    po_file = translations_copy / "zh_Hans_CN" / "LC_MESSAGES" / "messages.po"
    with open(po_file, "rb") as f:
        catalog = read_po(f)
    catalog.delete("Log in")  # as if "Log in" were new in the code
    catalog.add("A string the code no longer has", "代码里已经没有的字符串")
    with open(po_file, "wb") as f:
        write_po(f, catalog)

    app = make_app(BABEL_TRANSLATION_DIRECTORIES=str(translations_copy))
    monkeypatch.chdir(tmp_path)  # the commands work from any directory
    result = app.test_cli_runner().invoke(args=["translate", "update"])
    assert result.exit_code == 0, result.output

    with open(po_file, "rb") as f:
        updated = read_po(f)
    new = updated["Log in"]
    # Back, for a translator: empty, or a guess marked fuzzy (from "Log out").
    assert new is not None and (new.fuzzy or not new.string)
    assert updated["A string the code no longer has"] is None
    assert not updated.obsolete
    assert updated["Username"].string == "用户名"  # translations are kept
    assert not list(tmp_path.glob("**/*.pot"))  # no template left behind


@pytest.mark.system
def test_translate_compile_writes_what_is_committed(
    make_app, translations_copy, monkeypatch, tmp_path
):
    mo_file = translations_copy / "zh_Hans_CN" / "LC_MESSAGES" / "messages.mo"
    mo_file.unlink()
    app = make_app(BABEL_TRANSLATION_DIRECTORIES=str(translations_copy))
    monkeypatch.chdir(tmp_path)
    result = app.test_cli_runner().invoke(args=["translate", "compile"])
    assert result.exit_code == 0, result.output
    assert "100%" in result.output  # the statistics
    with open(mo_file, "rb") as new, open(ZH_MO, "rb") as committed:
        assert messages(read_mo(new)) == messages(read_mo(committed))


@pytest.mark.system
def test_translate_init_starts_a_new_language(make_app, tmp_path, monkeypatch):
    directory = tmp_path / "translations"
    directory.mkdir()
    app = make_app(BABEL_TRANSLATION_DIRECTORIES=str(directory))
    runner = app.test_cli_runner()
    monkeypatch.chdir(tmp_path)

    result = runner.invoke(args=["translate", "init", "fr"])
    assert result.exit_code == 0, result.output
    with open(directory / "fr" / "LC_MESSAGES" / "messages.po", "rb") as f:
        catalog = read_po(f)
    assert catalog["Log in"] is not None
    assert catalog.locale.language == "fr"

    # Chinese goes where Flask-Babel will look for it.
    result = runner.invoke(args=["translate", "init", "zh_TW"])
    assert result.exit_code == 0, result.output
    assert (directory / "zh_Hant_TW" / "LC_MESSAGES" / "messages.po").is_file()

    result = runner.invoke(args=["translate", "init", "fr"])  # it would overwrite the work
    assert result.exit_code == 1
    assert "fr has a catalogue already: run `flask translate update` instead." in result.output

    result = runner.invoke(args=["translate", "init", "xx_YY"])
    assert result.exit_code == 1
    assert "'xx_YY' is not a language Babel knows." in result.output


# --- The catalogue ----------------------------------------------------------------


def test_every_language_has_a_catalogue():
    for language in LANGUAGES:
        if language != "en":  # the code's own language needs none
            folder = TRANSLATIONS / catalogue_folder(language)
            assert (folder / "LC_MESSAGES" / "messages.mo").is_file()
    assert catalogue_folder("zh_CN") == "zh_Hans_CN"
    assert not (TRANSLATIONS / "zh_CN").exists()  # Flask-Babel would never read it


@pytest.mark.system
def test_the_chinese_catalogue_is_complete_current_and_compiled(tmp_path):
    """Fails when a string in the code or the templates has no Chinese, when the
    catalogue has leftovers, and when messages.mo wasn't compiled after an edit.

    The fix is always: `flask translate update`, translate, `flask translate compile`.
    """
    extract(tmp_path / "messages.pot")
    with open(tmp_path / "messages.pot", "rb") as f:
        in_the_code = {m.id for m in read_po(f) if m.id}
    with open(ZH_PO, "rb") as f:
        catalog = read_po(f)
    in_the_catalogue = {m.id for m in catalog if m.id}

    # key=str: a plural message's id is a (singular, plural) tuple.
    missing = sorted(in_the_code - in_the_catalogue, key=str)
    assert not missing, f"missing (run `flask translate update`): {missing}"
    leftovers = sorted(in_the_catalogue - in_the_code, key=str)
    assert not leftovers, f"no longer in the code (`flask translate update`): {leftovers}"
    assert not catalog.obsolete, "obsolete entries: `flask translate update`"
    untranslated = [
        m.id for m in catalog if m.id and not all(m.string if m.pluralizable else [m.string])
    ]
    assert not untranslated, f"untranslated: {untranslated}"
    assert not [m.id for m in catalog if m.id and m.fuzzy], "fuzzy: check them, then unmark"
    assert not catalog.fuzzy
    problems = [(m.id, errors) for m, errors in catalog.check()]
    assert not problems, "a translation's %(placeholders)s differ from the original's"

    with open(ZH_MO, "rb") as f:
        compiled = read_mo(f)
    assert messages(compiled) == messages(catalog), "stale messages.mo: `flask translate compile`"
    assert compiled.plural_forms == catalog.plural_forms

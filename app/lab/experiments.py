"""What each experiment of the lab is: its name, what it shows, where to read more.

The /lab page lists these; `flask lab NAME` runs one (app/lab/runs.py says
how). Each names the heading of docs/guide.md (and of its Chinese twin,
docs/guide.zh-CN.md) that explains the failure, and the code that handles it.
"""

from dataclasses import dataclass

from flask_babel import lazy_gettext as _l

# The error storm's size: the learner chooses, from 1 to MAX_STORM.
DEFAULT_STORM = 50
MAX_STORM = 500


@dataclass(frozen=True)
class Experiment:
    """One experiment, as the /lab page and `flask lab` present it."""

    name: str
    title: str
    summary: str
    # The heading that explains it, in docs/guide.md and in docs/guide.zh-CN.md.
    guide_section: str
    guide_section_zh: str
    # The code that handles the failure, as (file, function) pairs.
    code: tuple[tuple[str, str], ...]


EXPERIMENTS = [
    Experiment(
        "unhandled",
        _l("An unhandled exception in a view"),
        _l(
            "A view divides by zero. The user gets the 500 page with a reference to quote; "
            "the log gets the traceback under that reference; the admins get a mail."
        ),
        "Step 3. The page, and the reference a user can quote",
        "第 3 步：错误页面，以及用户可以报给你的错误编号",  # noqa: RUF001 (the heading's own punctuation)
        (
            ("app/errors.py", "handle_internal_error"),
            ("app/reporting/log_file.py", "RequestFormatter"),
            ("app/reporting/error_mail.py", "ErrorMailHandler"),
        ),
    ),
    Experiment(
        "double-fault",
        _l("The double fault"),
        _l(
            "A commit fails, and the session refuses every query until it is rolled back. "
            "The app's handler rolls back first; a naive handler queries, fails a second "
            "time, and the user gets the server's bare error page."
        ),
        "Step 2. Roll back first: `app/errors.py`, `handle_internal_error()`",
        "第 2 步：先回滚 `app/errors.py`，`handle_internal_error()`",  # noqa: RUF001 (the heading's own punctuation)
        (("app/errors.py", "handle_internal_error"), ("app/lab/faults.py", "naive_internal_error")),
    ),
    Experiment(
        "username-race",
        _l("The duplicate-username race"),
        _l(
            "Two people take the same free username at the same moment. Both pass the "
            "form's check; the database's unique index lets one win, and the other gets "
            "the form's error, not a 500."
        ),
        "A side trip: registering, and the duplicate-username race",
        "岔路：注册账号，以及用户名重复的竞态",  # noqa: RUF001 (the heading's own punctuation)
        (("app/forms.py", "commit_or_show_conflict"), ("app/user/routes.py", "edit_profile")),
    ),
    Experiment(
        "mail-tarpit",
        _l("A mail server that never answers"),
        _l(
            "The mail server accepts the connection and then says nothing. The 500 page "
            "still comes back at once: the mail is sent in the background, which gives up "
            "after MAIL_TIMEOUT."
        ),
        "Step 5. The error mail: `app/reporting/error_mail.py` and `app/mail.py`",
        "第 5 步：告警邮件 `app/reporting/error_mail.py` 和 `app/mail.py`",  # noqa: RUF001 (the heading's own punctuation)
        (("app/mail.py", "Outbox"), ("app/mail.py", "send")),
    ),
    Experiment(
        "error-storm",
        _l("An error storm"),
        _l(
            "The same error many times over. Storm control mails the first, counts the "
            "rest, and mails a summary with the count when the window closes."
        ),
        "Step 5. The error mail: `app/reporting/error_mail.py` and `app/mail.py`",
        "第 5 步：告警邮件 `app/reporting/error_mail.py` 和 `app/mail.py`",  # noqa: RUF001 (the heading's own punctuation)
        (
            ("app/reporting/storm.py", "StormControl"),
            ("app/reporting/error_mail.py", "ErrorMailHandler"),
        ),
    ),
    Experiment(
        "database-down",
        _l("The database unreachable for one request"),
        _l(
            "The database can't be reached: the user gets the 503 page with Retry-After, "
            "the log one line without a traceback, and the next request works again."
        ),
        "Step 1. The handler is chosen by the exception's class: `app/errors.py`",
        "第 1 步：按异常类选择处理器 `app/errors.py`",  # noqa: RUF001 (the heading's own punctuation)
        (("app/errors.py", "handle_database_unavailable"), ("app/database.py", "is_unavailable")),
    ),
    Experiment(
        "bad-input",
        _l("Bad input"),
        _l(
            "A NUL character, a query string that isn't UTF-8, a body over the size "
            "limit: each gets a 400 or 413 page, never a 500, and no mail."
        ),
        "Step 3. Before the view runs: CSRF, request id, login, locale",
        "第 3 步：视图之前——CSRF、请求编号、登录、语言",  # noqa: RUF001 (the heading's own punctuation)
        (("app/input_guard.py", "reject_nul_characters"), ("app/input_guard.py", "Request")),
    ),
    Experiment(
        "debug-mode",
        _l("Debug mode"),
        _l(
            "What `flask run --debug` shows instead of the 500 page: the source and a "
            "Python console in the browser. Fine on your laptop; in production anyone "
            "could run code on the server, so the production config refuses it."
        ),
        "Step 1. The handler is chosen by the exception's class: `app/errors.py`",
        "第 1 步：按异常类选择处理器 `app/errors.py`",  # noqa: RUF001 (the heading's own punctuation)
        (("config.py", "ProductionConfig"), ("app/__init__.py", "create_app")),
    ),
]
EXPERIMENTS_BY_NAME = {experiment.name: experiment for experiment in EXPERIMENTS}

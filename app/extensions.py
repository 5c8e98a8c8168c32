"""Extension objects, created here unbound, and bound to each app by `create_app`
(`init_app`), which also registers the hooks they call back (Flask-Login's).

They live in their own module so that models, forms and views can import them
without importing the app package (the import cycle microblog has).
"""

import flask_login
import flask_wtf
from flask_babel import Babel
from flask_babel import lazy_gettext as _l
from flask_bootstrap import Bootstrap5
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Registers the sqlite:/// scheme with `limits`: RATELIMIT_STORAGE_URI's default
# without REDIS_URL (config.py), which Flask-Limiter reads in init_app.
from app import rate_limit_store  # noqa: F401


class Base(DeclarativeBase):
    # Named constraints give Alembic stable names to alter and drop later,
    # on every database (SQLite and PostgreSQL name them differently otherwise).
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class LoginManager(flask_login.LoginManager):
    """Flask-Login's, without its one crash on a forged remember-me cookie.

    Flask-Login checks the cookie's signature with hmac.compare_digest, which
    raises TypeError for a string with non-ASCII characters: a cookie of
    "x|\u00e9" would be a 500 on every page. Ours are ASCII; any other is forged.
    """

    def _load_user_from_remember_cookie(self, cookie: str):
        return super()._load_user_from_remember_cookie(cookie) if cookie.isascii() else None


class CSRFProtect(flask_wtf.CSRFProtect):
    """Flask-WTF's CSRF check, without its one crash on a forged Referer.

    Over HTTPS it compares the Referer's origin with the site's, and reads the
    port with urlparse(...).port, which raises ValueError for a port that isn't
    a number ("https://blog.example.com:x/") or brackets that don't close: a
    500, and an error mail, for what is a refused form.
    """

    def protect(self, apply_exemptions=False):
        try:
            super().protect(apply_exemptions)
        except ValueError:
            self._error_response("The referrer does not match the host.")


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
babel = Babel()
bootstrap = Bootstrap5()
# No default limits: only the views app/security.py marks are limited, each
# with its own key. The key given here, the client's address (behind a proxy,
# the real client's: see PROXY_COUNT), is only Flask-Limiter's fallback.
# The headers carry Retry-After, which the 429 page needs to say when to come back.
limiter = Limiter(key_func=get_remote_address, headers_enabled=True)

# Where @login_required sends anonymous visitors, and what it tells them there.
login_manager.login_view = "auth.login"
login_manager.login_message = _l("Please log in to access this page.")
login_manager.login_message_category = "info"


def in_this_database(schema_item, name, type_, reflected, compare_to) -> bool:
    """Alembic's `include_object` hook: leave out of autogenerate's comparison
    the indexes that exist on PostgreSQL only (app.models.POSTGRESQL_ONLY_INDEXES).

    On SQLite they are missing by design, not drift. Flask-Migrate passes the
    hook to migrations/env.py (`create_app` gives it to `migrate.init_app`).
    """
    from app.models import POSTGRESQL_ONLY_INDEXES  # (the models import this module)

    if type_ == "index" and name in POSTGRESQL_ONLY_INDEXES:
        return db.engine.dialect.name == "postgresql"
    return True

"""The application factory: read it as the table of contents of the app.

Every extension is bound, and every hook registered, by `create_app`: here, or
in the `configure_*`, `register_*` and `init_*` functions it calls, one per concern.
"""

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from app import models  # noqa: F401  (Flask-Migrate's autogenerate needs the models registered)
from app.auth import bp as auth_bp
from app.auth.routes import login_first
from app.auth.sessions import load_user
from app.commands import register_commands, watch_for_an_uncounted_proxy
from app.database import configure_database, read_outside_a_transaction
from app.errors import register_error_handlers
from app.extensions import (
    babel,
    bootstrap,
    csrf,
    db,
    in_this_database,
    limiter,
    login_manager,
    migrate,
)
from app.i18n import register_i18n, select_locale
from app.input_guard import register_input_guard
from app.lab import bp as lab_bp
from app.logger import init_email, init_logger, init_sentry
from app.main import bp as main_bp
from app.reporting.request_id import register_request_id
from app.security import register_security
from app.templating import register_template_helpers
from app.user import bp as user_bp
from config import BASE_DIR, Config

MIGRATIONS_DIR = BASE_DIR / "migrations"


def create_app(config_class: type[Config] = Config) -> Flask:
    """Create and configure an instance of the blog."""
    config_class.check()
    app = Flask(__name__)
    app.config.from_object(config_class)
    if app.config["PROXY_COUNT"]:
        # Believe X-Forwarded-* only from the proxies we were told about.
        count = app.config["PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count, x_host=count)

    # Engine options (timeouts, reconnecting), and the "connect" listener that
    # tunes SQLite (WAL, busy timeout) for several workers.
    configure_database(app)
    db.init_app(app)
    # An absolute path, so `flask db upgrade` works from any directory; and the
    # hook that tells autogenerate which indexes exist on PostgreSQL only.
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR), include_object=in_this_database)
    # No `current_user` in templates: reading it can query the database, and
    # the error pages must render without one (app/templating.py).
    login_manager.init_app(app, add_context_processor=False)
    # Who the session names (a row per login, app/auth/sessions.py), and where
    # a visitor who must log in is sent (app/auth/routes.py).
    login_manager.user_loader(load_user)
    login_manager.unauthorized_handler(login_first)
    # CSRFProtect checks the token of every POST before any view runs, so a
    # POST-only button needs no form class: a hidden csrf_token() input will do.
    csrf.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    bootstrap.init_app(app)

    register_request_id(app)
    register_input_guard(app)
    # Before any hook that queries (the blueprints' come next): the listing
    # pages read on PostgreSQL without BEGIN and ROLLBACK (app/database.py).
    app.before_request(read_outside_a_transaction)
    # One blueprint a package (auth, main, user), each re-exporting the `bp` its
    # routes.py creates, so importing them here runs into no import cycle.
    app.register_blueprint(main_bp)
    app.register_blueprint(auth_bp, url_prefix="/auth")
    app.register_blueprint(user_bp)
    # The fault lab, in development only: elsewhere /lab doesn't exist.
    if app.config["LAB_ENABLED"]:
        app.register_blueprint(lab_bp)

    register_error_handlers(app)
    # The limits themselves are on the views (app/security.py). Bound after the
    # hooks above, so that its check runs after theirs (hooks run in order).
    limiter.init_app(app)
    # Security headers on every response; cookies Secure over HTTPS (its own
    # session interface).
    register_security(app)
    register_template_helpers(app)
    register_i18n(app)
    register_commands(app)
    # With PROXY_COUNT 0, note a request that came through a proxy anyway, for
    # `flask check-deploy` (another process) to warn about (app/commands.py).
    watch_for_an_uncounted_proxy(app)

    # Production logging and error reports. Not in debug mode (the debugger
    # shows errors in the browser) nor in tests (they call these themselves).
    if not app.debug and not app.testing:
        init_logger(app)
        init_email(app)
        init_sentry(app)
    return app

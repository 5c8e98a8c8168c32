"""The auth blueprint, under /auth: registering, logging in and out, and resetting
a password. `bp` is made in routes.py, beside the views it routes; this file
re-exports it for `create_app`.
"""

from app.auth.routes import bp

__all__ = ["bp"]

"""The user blueprint: profile pages, editing your own, following and unfollowing.
`bp` is made in routes.py, beside the views it routes; this file re-exports it
for `create_app`.
"""

from app.user.routes import bp

__all__ = ["bp"]

"""The main blueprint: the home page (post form and timeline), explore, the
language switch and the health check. `bp` is made in routes.py, beside the
views it routes; this file re-exports it for `create_app`.
"""

from app.main.routes import bp

__all__ = ["bp"]

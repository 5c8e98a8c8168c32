"""The fault lab: break the blog on purpose and watch what it does (development only).

`/lab` lists experiments (app/lab/experiments.py); each button runs one with
`flask lab NAME --json` in a process of its own (app/lab/cli.py), inside a
throwaway blog with its own database, log, mail server and Sentry
(app/lab/sandbox.py), and shows what the user got beside what the operator
got. create_app registers the blueprint only when LAB_ENABLED is on, which
only the development config does. `bp` is made in routes.py, beside the views
it routes; this file re-exports it.
"""

from app.lab.routes import bp

__all__ = ["bp"]

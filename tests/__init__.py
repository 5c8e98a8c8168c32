"""The test suite, a package so that its helpers import the same way everywhere:
``from tests.helpers import add_user`` in a test module, in bench/, and in the
app that gunicorn runs for the tests (tests/gunicorn_app.py)."""

"""The ceiling for `make bench`: the least a Flask app can do for a request."""

from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello() -> str:
    """One short string: no template, no session, no database."""
    return "Hello, World!"

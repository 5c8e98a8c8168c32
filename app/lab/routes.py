"""The /lab page."""

from flask import Blueprint

bp = Blueprint("lab", __name__)

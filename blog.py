"""The entry point: `flask run` (FLASK_APP=blog.py) and `gunicorn blog:app`.

FLASK_CONFIG picks the configuration: development (default), testing or production.
"""

from app import create_app
from config import config_from_env

app = create_app(config_from_env())

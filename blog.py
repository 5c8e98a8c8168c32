"""The entry point: `flask run` (FLASK_APP=blog.py) and `gunicorn blog:app`.

FLASK_CONFIG picks the configuration: development (default), testing or production.
"""

import sys

from app import create_app
from config import ConfigError, config_from_env

try:
    app = create_app(config_from_env())
except ConfigError as error:
    # A wrong setting is the operator's to fix, not a bug: say what it is,
    # without a traceback. Exit status 3 is also what gunicorn's master reads
    # as "a worker cannot boot", so it stops instead of respawning workers forever.
    print(f"Configuration error: {error}", file=sys.stderr)
    sys.exit(3)

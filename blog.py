"""The entry point: `flask run` (FLASK_APP=blog.py) and `gunicorn blog:app`.

FLASK_CONFIG picks the configuration: development (default), testing or production.
`python blog.py` runs the development server in debug mode (see __main__ below).
"""

import os
import sys

from app import create_app
from config import ConfigError, config_from_env

if __name__ == "__main__":
    # Decided before the app is made: debug mode changes what create_app sets up.
    os.environ.setdefault("FLASK_DEBUG", "1")

try:
    app = create_app(config_from_env())
except ConfigError as error:
    # A wrong setting is the operator's to fix, not a bug: say what it is,
    # without a traceback. Exit status 3 is also what gunicorn's master reads
    # as "a worker cannot boot", so it stops instead of respawning workers forever.
    print(f"Configuration error: {error}", file=sys.stderr)
    sys.exit(3)

if __name__ == "__main__":
    # Werkzeug's debugger and reloader, unless EXTERNAL_DEBUGGER is on: then
    # exceptions and restarts are left to the IDE's debugger (VS Code,
    # PyCharm), which can't work beside them. The seeds' DEBUG_WITH_APTANA.
    use_werkzeug_tools = not app.config["EXTERNAL_DEBUGGER"]
    app.run(use_debugger=use_werkzeug_tools, use_reloader=use_werkzeug_tools)

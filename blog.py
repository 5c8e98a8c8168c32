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
    # Werkzeug's debugger and reloader in debug mode only (the debugger runs
    # any Python a visitor types), and not with EXTERNAL_DEBUGGER: then
    # exceptions and restarts are left to the IDE's debugger (VS Code,
    # PyCharm), which can't work beside them. Passing True here would switch
    # the debugger on even with FLASK_DEBUG=0.
    use_werkzeug_tools = app.debug and not app.config["EXTERNAL_DEBUGGER"]
    # The same address settings as `flask run` reads.
    # Blank means the default, as for every setting.
    host = os.environ.get("FLASK_RUN_HOST", "").strip() or "127.0.0.1"
    port = os.environ.get("FLASK_RUN_PORT", "").strip() or "5000"
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
    if not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        sys.exit(f"Configuration error: FLASK_RUN_PORT={port!r} is not a port number (1-65535)")
    app.run(host, int(port), use_debugger=use_werkzeug_tools, use_reloader=use_werkzeug_tools)

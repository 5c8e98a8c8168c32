"""The system's Chromium, for the real-browser tests (tests/test_browser.py).

Playwright normally downloads a browser of its own (``playwright install``);
we never do: the tests drive the Chromium the operating system installed
(Debian: ``apt-get install chromium``), given to Playwright as
``executable_path``. Without one, the browser tests are skipped, not failed.
"""

import os
import shutil
import sys
from pathlib import Path

# Debian's package; other systems name it differently.
SYSTEM_CHROMIUM = "/usr/bin/chromium"
SKIP_REASON = "no Chromium found (apt-get install chromium, or set CHROMIUM=/path/to/chromium)"

# Headless, and nothing that would phone home: no component or safe-browsing
# updates, no sync, no QUIC probes. --no-sandbox because CI containers run as
# root, where Chromium's sandbox refuses to start.
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]


def find_chromium() -> str | None:
    """The Chromium to test with, or None.

    ``CHROMIUM`` in the environment, when set, is the only candidate (so
    ``CHROMIUM=/nonexistent`` shows what a machine without a browser does);
    otherwise /usr/bin/chromium, then ``chromium`` or ``chromium-browser`` on
    the PATH.
    """
    given = os.environ.get("CHROMIUM")
    if given is not None:
        candidates = [given]
    else:
        candidates = [SYSTEM_CHROMIUM, shutil.which("chromium"), shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


if __name__ == "__main__":
    # `python tests/chromium.py`: which Chromium the tests would use (for make and .ci/run).
    found = find_chromium()
    print(found or SKIP_REASON)
    sys.exit(0 if found else 1)

"""The blog runs on Windows with `flask run`: checked here by taking away what
Windows lacks.

Windows has no `fcntl` and no `pwd` modules (gunicorn's imports need both:
gunicorn runs on Linux and macOS only), and no `os.fork`, so no
`os.register_at_fork`. Each `flask` command below runs in a Python where
those are gone: importing either module raises ImportError, as it does on
Windows, and the two functions don't exist. The README's PowerShell commands
are these: migrate, seed, serve.

One exception, made before anything else is imported: portalocker (under
concurrent-log-handler, which writes the log file) picks its file locks by
platform, `msvcrt` on Windows and `fcntl` elsewhere; it is imported first,
with the `fcntl` of this machine, so that it stands for what it would be on
Windows. Nothing imported after it, ours or a library's, can get `fcntl`.
"""

import subprocess
import sys
import urllib.request

import pytest

from app.commands import DEMO_PASSWORD
from tests.servers import ROOT, Browser, clean_env, free_port, wait_until

# Every test here starts processes: `make test-fast` skips them.
pytestmark = pytest.mark.system

WITHOUT_WHAT_WINDOWS_LACKS = """
import os, sys
import portalocker  # see the module docstring of tests/test_windows.py
sys.modules["fcntl"] = None  # `import fcntl` now raises ImportError
sys.modules["pwd"] = None
del os.fork, os.register_at_fork
sys.argv[0] = "flask"
from flask.cli import main
main()
"""


def flask_like_on_windows(*args: str) -> list[str]:
    """The command line of `flask <args>`, run without fcntl, pwd and fork."""
    return [sys.executable, "-c", WITHOUT_WHAT_WINDOWS_LACKS, *args]


def test_the_simulation_takes_away_what_windows_lacks(tmp_path):
    """The check below would prove nothing if these were still importable."""
    probe = WITHOUT_WHAT_WINDOWS_LACKS.replace(
        "from flask.cli import main\nmain()",
        "for name in ('fcntl', 'pwd', 'gunicorn.util'):\n"
        "    try:\n"
        "        __import__(name)\n"
        "    except ImportError:\n"
        "        print(name, 'refused')\n"
        "print(hasattr(os, 'fork'), hasattr(os, 'register_at_fork'))",
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "fcntl refused",
        "pwd refused",
        "gunicorn.util refused",
        "False False",
    ]


def test_the_blog_migrates_seeds_and_serves_without_fcntl_pwd_or_fork(tmp_path):
    env = clean_env(
        FLASK_APP="blog.py",
        DATABASE_URL=f"sqlite:///{tmp_path / 'blog.sqlite'}",
        LOG_DIR=str(tmp_path / "logs"),
    )

    def flask(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            flask_like_on_windows(*args),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    migrated = flask("db", "upgrade")
    assert migrated.returncode == 0, migrated.stderr
    seeded = flask("seed", "--if-empty")
    assert seeded.returncode == 0, seeded.stderr
    assert "demo" in seeded.stdout

    port = free_port()
    log = (tmp_path / "flask-run.out").open("w")
    server = subprocess.Popen(
        flask_like_on_windows("run", "--port", str(port)),
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            assert server.poll() is None, (tmp_path / "flask-run.out").read_text()
            try:
                urllib.request.urlopen(url + "/healthz", timeout=5).close()
            except OSError:
                return False
            return True

        wait_until(answers, timeout=60, message="flask run to answer")
        browser = Browser(url)
        status, _, page = browser.request("/explore")
        assert status == 200
        assert "Explore" in page
        assert browser.request("/no/such/page")[0] == 404

        # A login and a post: the session, CSRF, a write and the timeline.
        status, headers, _ = browser.submit(
            "/auth/login", {"username": "demo", "password": DEMO_PASSWORD}
        )
        assert (status, headers["Location"]) == (302, "/")
        status, _, _ = browser.submit("/", {"post": "Posted from a Windows-like Python"})
        assert status == 302
        status, _, page = browser.request("/")
        assert status == 200
        assert "Posted from a Windows-like Python" in page
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    assert "Traceback" not in (tmp_path / "flask-run.out").read_text()

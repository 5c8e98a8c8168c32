"""What `systemctl reload blog` (HUP to gunicorn's master) does with a changed .env.

gunicorn.conf.py loads the .env beside it with python-dotenv, which never
overrides a variable the environment already holds. The master runs the file
again on HUP, and its new workers inherit its environment. So a reload adds
the variables that are new in .env, and nothing else: a changed value, a
value filled in where the line was blank (a template's `NAME=`), a line
removed, all keep what the master read at its start, for the app and for
gunicorn's own settings alike, until gunicorn is restarted. The README
(Configuration), gunicorn.conf.py, .env.example and deploy/blog.service say so.

The test runs gunicorn as tests/test_settings.py does, on a copy of
gunicorn.conf.py in tmp_path with a .env of its own beside it, and serves a
tiny app that answers with its worker's environment: what the blog's
config.py would read in that worker.
"""

import json
import re
import signal
import subprocess
import urllib.request
from collections.abc import Collection
from pathlib import Path

import pytest

from tests.servers import (
    GunicornRun,
    free_port,
    gunicorn_command,
    gunicorn_env,
    project_copy,
    stop,
    wait_until,
)

pytestmark = pytest.mark.system

PREFIX = "RELOAD_TEST_"
# Written beside the copy of gunicorn.conf.py; the project has no such module.
ENVIRONMENT_APP = f'''"""A worker's environment: its pid and the variables named {PREFIX}*."""

import json
import os


def app(environ, start_response):
    """Answer every request with this worker's pid and test variables, as JSON."""
    variables = {{name: value for name, value in os.environ.items() if name.startswith("{PREFIX}")}}
    body = json.dumps({{"pid": os.getpid(), "variables": variables}}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]
'''


def dotenv(port: int, workers: int, variables: dict[str, str]) -> str:
    """A .env binding gunicorn to `port` with `workers` workers, and `variables`."""
    lines = [f"GUNICORN_BIND=127.0.0.1:{port}", f"WEB_CONCURRENCY={workers}"]
    lines += [f"{PREFIX}{name}={value}" for name, value in variables.items()]
    return "\n".join(lines) + "\n"


BEFORE = {"CHANGED": "old value", "FILLED_IN": "", "REMOVED": "still here"}
AFTER = {"CHANGED": "new value", "FILLED_IN": "now set", "ADDED": "new variable"}


def start(config: Path, tmp_path: Path, name: str) -> GunicornRun:
    """gunicorn on `config`, serving the environment app, its log in tmp_path/`name`.err."""
    (config.parent / "environment_app.py").write_text(ENVIRONMENT_APP)
    errors = tmp_path / f"{name}.err"
    with open(errors, "w") as err:
        process = subprocess.Popen(
            gunicorn_command(config, "--pythonpath", str(config.parent), "environment_app:app"),
            cwd=tmp_path,
            env=environment_without_test_variables(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return GunicornRun(process, errors)


def environment_without_test_variables(tmp_path: Path) -> dict[str, str]:
    """A production environment with none of gunicorn's settings nor the test's
    variables: .env gives them all."""
    env = gunicorn_env(tmp_path)
    return {name: value for name, value in env.items() if not name.startswith(PREFIX)}


def ask(port: int) -> dict | None:
    """What a worker answers: {"pid": ..., "variables": {...}}; None if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as reply:
            return json.loads(reply.read())
    except OSError:
        return None


def settled(run: GunicornRun, port: int, old_workers: Collection[int] = ()) -> set[int]:
    """Wait until the master's workers are all new (none of `old_workers`),
    have all booted and one of them answers; return their pids."""

    def ready() -> bool:
        if run.process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{run.error_log()}")
        workers = run.worker_pids()
        answer = ask(port)
        return (
            bool(workers)
            and workers.isdisjoint(old_workers)
            and workers <= booted(run)
            and answer is not None
            and answer["pid"] in workers
        )

    wait_until(ready, timeout=120, message="gunicorn's workers")
    return run.worker_pids()


def booted(run: GunicornRun) -> set[int]:
    """Workers that have finished booting: post_worker_init, the outbox's start, has run."""
    return {int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", run.error_log())}


def environment(port: int, workers: set[int]) -> dict[str, str]:
    """The test variables a worker of `workers` holds (the same in each: one environment)."""
    answer = ask(port)
    assert answer is not None and answer["pid"] in workers, answer
    return {name.removeprefix(PREFIX): value for name, value in answer["variables"].items()}


def test_a_reload_adds_new_variables_and_changes_none(tmp_path):
    port = free_port()
    config = project_copy(tmp_path, dotenv(port, workers=1, variables=BEFORE))
    run = start(config, tmp_path, "first")
    try:
        workers = settled(run, port)
        assert len(workers) == 1
        assert environment(port, workers) == BEFORE

        # The admin edits .env: a value changed, a blank one filled in, a
        # line removed, a line added; gunicorn's worker count too. Then
        # `systemctl reload blog`, which sends HUP.
        config.with_name(".env").write_text(dotenv(port, workers=2, variables=AFTER))
        run.process.send_signal(signal.SIGHUP)
        reloaded = settled(run, port, old_workers=workers)

        assert environment(port, reloaded) == {**BEFORE, "ADDED": "new variable"}
        assert len(reloaded) == 1  # WEB_CONCURRENCY=1 still
        assert "Handling signal: hup" in run.error_log()
    finally:
        stop(run)

    # `systemctl restart blog`: a new master reads .env afresh.
    run = start(config, tmp_path, "restarted")
    try:
        restarted = settled(run, port)
        assert environment(port, restarted) == AFTER
        assert len(restarted) == 2
    finally:
        stop(run)

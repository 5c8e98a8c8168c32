"""The promises of the project's tooling: the Makefile refuses a Python that is
too old before pip does, the requirements files are the lock of the .in files,
and a hung test fails instead of hanging the run."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT

# Run as a person runs it, even from inside `make test`: a make started by make
# says "Entering directory" around what it prints, and takes the outer one's flags.
MAKE = ["make", "--no-print-directory"]
MAKE_ENV = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}


def pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (names normalized as pip does)."""
    found = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==([^\s;]+)", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return found


@pytest.mark.parametrize(
    ("direct", "locked"),
    [("requirements.in", "requirements.txt"), ("requirements-dev.in", "requirements-dev.txt")],
)
def test_the_lock_pins_every_direct_dependency_at_its_version(direct, locked):
    """requirements.txt is made from requirements.in by `make lock`: a version changed
    in one and not the other means someone edited the lock by hand, or forgot to lock."""
    wanted, have = pins(ROOT / direct), pins(ROOT / locked)
    assert len(wanted) >= 8, f"{direct} pins too few packages: the parser is broken"
    differ = {name: (v, have.get(name)) for name, v in wanted.items() if have.get(name) != v}
    assert not differ, f"{locked} doesn't match {direct} (wanted, locked): {differ}"
    assert f"uv pip compile --universal --python-version 3.11 {direct} -o {locked}" in (
        (ROOT / locked).read_text()
    )


def wanted_by(locked: Path, direct: str) -> set[str]:
    """The packages `locked` says it holds because `direct` asks for them
    (uv writes "# via -r requirements.in" under each)."""
    wanted, package = set(), None
    for line in locked.read_text().splitlines():
        if pinned := pins_in_line(line):
            package = pinned
        elif package and re.search(rf"#\s+(?:via\s+)?-r {re.escape(direct)}$", line):
            wanted.add(package)
    return wanted


def pins_in_line(line: str) -> str | None:
    match = re.match(r"^([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==", line)
    return re.sub(r"[-_.]+", "-", match[1]).lower() if match else None


@pytest.mark.parametrize(
    ("direct", "locked"),
    [("requirements.in", "requirements.txt"), ("requirements-dev.in", "requirements-dev.txt")],
)
def test_the_lock_asks_for_nothing_the_in_file_no_longer_wants(direct, locked):
    """A package taken out of the .in file must go from the lock too (`make lock`)."""
    wanted = wanted_by(ROOT / locked, direct)
    assert len(wanted) >= 8, f"no '# via -r {direct}' lines found in {locked}"
    assert wanted <= set(pins(ROOT / direct)), wanted - set(pins(ROOT / direct))


def test_the_app_and_the_dev_tools_lock_the_same_versions():
    app, dev = pins(ROOT / "requirements.txt"), pins(ROOT / "requirements-dev.txt")
    assert {name: dev.get(name) for name in app} == app


def test_windows_gets_what_its_python_needs():
    """psycopg reads time zones from the tzdata package on Windows, which has no
    system database of them: the lock carries it, for Windows only."""
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    assert any(re.fullmatch(r"tzdata==\S+ ; sys_platform == 'win32'", line) for line in lines)


def old_python(folder: Path) -> Path:
    """A `python3` that answers as Python 3.10 does: too old, whatever this machine has."""
    python = folder / "python3.10"
    python.write_text(
        '#!/bin/sh\ncase "$1" in --version) echo "Python 3.10.13" ;; *) exit 1 ;; esac\n'
    )
    python.chmod(0o755)
    return python


@pytest.mark.system
def test_make_refuses_an_old_python_before_creating_anything(tmp_path):
    python, venv = old_python(tmp_path), tmp_path / "venv"
    done = subprocess.run(
        [*MAKE, f"PYTHON={python}", f"VENV={venv}", f"{venv}/.installed"],
        cwd=ROOT,
        env=MAKE_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stdout.splitlines() == [
        f"The blog needs Python 3.11 or newer, and {python} is Python 3.10.13.",
        "Install a newer one (python.org; Ubuntu 22.04: apt install python3.11 python3.11-venv)",
        "and name it: PYTHON=python3.11 make run",
    ]
    assert not venv.exists()


@pytest.mark.system
def test_make_says_when_there_is_no_python_at_all(tmp_path):
    done = subprocess.run(
        [*MAKE, "PYTHON=no-such-python3", f"VENV={tmp_path / 'venv'}", "check-python"],
        cwd=ROOT,
        env=MAKE_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert done.stdout.splitlines() == [
        "The blog needs Python 3.11 or newer, and there is no no-such-python3 here.",
        "Install one (python.org, or your system's packages) and name it: "
        "PYTHON=python3.11 make run",
    ]


@pytest.mark.system
def test_make_accepts_this_python(tmp_path):
    done = subprocess.run(
        [*MAKE, f"PYTHON={sys.executable}", "check-python"],
        cwd=ROOT,
        env=MAKE_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout) == (0, "")


@pytest.mark.system
def test_a_hung_test_fails_and_the_run_goes_on(tmp_path):
    """The suite's own timeout (pyproject.toml), made short here: the test that
    sleeps fails with pytest-timeout's message, the one after it still runs."""
    (tmp_path / "test_hang.py").write_text(
        "import time\n\ndef test_hangs():\n    time.sleep(60)\n\ndef test_after():\n    pass\n"
    )
    settings = ["-c", str(ROOT / "pyproject.toml"), "-o", "timeout=1", "-p", "no:cacheprovider"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *settings, "--rootdir", str(tmp_path), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stdout
    assert "Failed: Timeout (>1.0s) from pytest-timeout." in done.stdout, done.stdout
    assert re.search(r"\b1 failed, 1 passed\b", done.stdout), done.stdout

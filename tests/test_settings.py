"""Every setting the code reads is documented, and nothing else is; and
gunicorn reads the project's .env.

The settings are found by reading the source (`scan_settings`, in
tests/settings_scan.py): every
environment variable that config.py, gunicorn.conf.py, blog.py and app/ read,
that deploy/blog.service (Environment=) and deploy/docker-entrypoint.sh
(export) set, that compose.yaml takes from .env (${NAME}), and FLASK_APP in
.flaskenv.
Each must be a row of the README's configuration table, whose last column
names the files that read it, and a line of .env.example (`NAME=` or
`# NAME=`); and each row and line must be a setting the code reads, since a
stale one misleads. The values .env.example shows are the defaults, checked
against what config.py and gunicorn.conf.py actually make of them.

gunicorn.conf.py runs in gunicorn's master before config.py is imported, so it
loads the .env beside it itself; the tests at the end run gunicorn on a copy of
it in tmp_path, with a .env of the test's own beside it (the project's .env is
never touched), and the project as the app's folder (--chdir).
"""

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.servers import (
    ROOT,
    GunicornRun,
    free_port,
    gunicorn_command,
    gunicorn_env,
    project_copy,
    stop,
    wait_until,
)
from tests.settings_scan import (
    SHELL_SCRIPTS,
    UNITS,
    Scan,
    scan_settings,
)

README = ROOT / "README.md"
ENV_EXAMPLE = ROOT / ".env.example"
# deploy/nginx.conf and the static pages nginx serves read no environment variable.
DEPLOY_FILES_WITHOUT_SETTINGS = ["nginx.conf", "nginx-too-large.html", "nginx-unavailable.html"]

# gunicorn.conf.py's settings, and the gunicorn setting each one decides.
GUNICORN_SETTINGS = {
    "GUNICORN_BIND": "bind",
    "WEB_CONCURRENCY": "workers",
    "GUNICORN_TIMEOUT": "timeout",
    "GUNICORN_GRACEFUL_TIMEOUT": "graceful_timeout",
    "GUNICORN_MAX_REQUESTS": "max_requests",
    "GUNICORN_ACCESS_LOG": "accesslog",
    "GUNICORN_LOG_LEVEL": "loglevel",
}


@pytest.fixture(scope="module")
def scan() -> Scan:
    return scan_settings()


def test_the_scanner_finds_settings_in_every_kind_of_file(scan):
    """It can't find nothing and pass: names from each file, each way of
    reading. (Other files may read them too: the table's last column says
    exactly which.)"""
    expected = {
        "SECRET_KEY": {"config.py"},  # os.environ.get
        "MAIL_PORT": {"config.py"},  # env_int
        "BABEL_DEFAULT_TIMEZONE": {"config.py"},  # env_time_zone, a helper not named here
        "GUNICORN_TIMEOUT": {"gunicorn.conf.py"},  # whole_number, a helper of a helper
        "GUNICORN_BIND": {"gunicorn.conf.py"},  # setting, the helper whole_number uses
        "FLASK_RUN_PORT": {"blog.py"},
        "FLASK_DEBUG": {"config.py", "blog.py"},  # env_bool, os.environ.setdefault
        "WEB_CONCURRENCY": {"gunicorn.conf.py", "app/commands.py"},
        "FLASK_CONFIG": {"config.py", "gunicorn.conf.py", "app/commands.py", "deploy/blog.service"},
        "FLASK_APP": {".flaskenv", "deploy/docker-entrypoint.sh"},  # NAME=, export NAME=
        "POSTGRES_PASSWORD": {"compose.yaml"},  # ${POSTGRES_PASSWORD:?...}
    }
    missed = {
        name: sorted(files - scan.settings.get(name, set()))
        for name, files in expected.items()
        if not files <= scan.settings.get(name, set())
    }
    assert missed == {}
    assert len(scan.settings) > 50


def test_every_environment_read_names_its_setting(scan):
    """A read whose variable is computed (os.environ.get(f"MAIL_{x}")) would
    escape every test below."""
    assert scan.unnamed == []


def test_every_deploy_file_is_scanned():
    """A new file in deploy/ is scanned (a unit), or said to read nothing."""
    scanned = [path.name for path in UNITS + SHELL_SCRIPTS] + DEPLOY_FILES_WITHOUT_SETTINGS
    assert sorted(path.name for path in (ROOT / "deploy").iterdir()) == sorted(scanned)


def test_no_deploy_file_names_a_python_version():
    """A path such as .venv/lib/python3.11/site-packages breaks without an
    error when the server's Python changes (nginx serving Bootstrap's files
    from it: the site loses its styles)."""
    versioned = {
        path.name: re.findall(r"python\d+\.\d+", path.read_text())
        for path in sorted((ROOT / "deploy").iterdir())
    }
    assert {name: found for name, found in versioned.items() if found} == {}


def test_the_scanner_on_every_form_of_read(tmp_path):
    source = tmp_path / "example.py"
    source.write_text(
        "import os\n"
        "def env_flag(name, default=False):\n"
        "    return os.environ.get(name, '') == '1'\n"
        "def env_number(name, default):\n"
        "    return int(os.getenv(name) or default) if env_flag(name + '_ON') else default\n"
        "def strict(key):\n"
        "    return env_flag(key)\n"
        "A = os.environ.get('GET_ONE')\n"
        "B = os.environ['SUBSCRIPT']\n"
        "C = os.getenv('GETENV', 'x')\n"
        "os.environ.setdefault('SET_DEFAULT', '1')\n"
        "D = 'IN_TEST' in os.environ\n"
        "E = os.environ.pop('POPPED', None)\n"
        "F = env_flag('FLAG')\n"
        "G = strict(\n    'ACROSS_LINES'\n)\n"
        "H = os.environ.get(f'COMPUTED_{A}')\n"
        "I = os.environ.get(PREFIX + 'X')\n"
        "J = os.environ.copy()\n"  # not a read of one variable
        "K = {'NOT_ENV': 1}.get('NOT_ENV')\n"
    )
    unit = tmp_path / "example.service"
    unit.write_text(
        '[Service]\nEnvironment=ONE=1\nEnvironment="TWO=a b" THREE=3\n# Environment=OFF=1\n'
    )
    script = tmp_path / "example.sh"
    script.write_text(
        '#!/bin/sh\n# $IN_A_COMMENT\ncd "$(dirname "$0")"\nexport EXPORTED=1\n'
        'echo "$PLAIN ${BRACED:-x}" "$#" "$@" "$1"\n'
    )
    compose = tmp_path / "compose.yaml"
    compose.write_text(
        "services:\n  app:\n    # ${COMMENTED_OUT}\n    environment:\n"
        '      PASSED_ON: "1"\n      URL: "x://${FILLED:?say so}@db/$$LITERAL/$BARE"\n'
    )
    dotenv = tmp_path / ".flaskenv"
    dotenv.write_text("FLASK_APP=blog.py\n# COMMENTED=1\n")

    scan = scan_settings([source], [unit], [script], [compose], [dotenv])

    assert scan.settings == {
        name: {"example.py"}
        for name in (
            "GET_ONE",
            "SUBSCRIPT",
            "GETENV",
            "SET_DEFAULT",
            "IN_TEST",
            "POPPED",
            "FLAG",
            "ACROSS_LINES",
        )
    } | {name: {"example.service"} for name in ("ONE", "TWO", "THREE")} | {
        name: {"example.sh"} for name in ("EXPORTED", "PLAIN", "BRACED")
    } | {name: {"compose.yaml"} for name in ("FILLED", "BARE")} | {"FLASK_APP": {".flaskenv"}}
    # env_number's name + '_ON' is computed inside a helper: reported too.
    assert scan.unnamed == ["example.py:5", "example.py:18", "example.py:19"]


# --- The README's table --------------------------------------------------------------------

TABLE_ROW = re.compile(r"^\| `(\w+)` \|(.*)\|\s*$", re.MULTILINE)


def table() -> dict[str, list[str]]:
    """The rows of the README's configuration table: name -> the other cells."""
    text = README.read_text(encoding="utf-8")
    start = text.index("## Configuration\n")
    end = text.index("\n## ", start)
    return {
        name: [cell.strip() for cell in cells.split(" | ")]
        for name, cells in TABLE_ROW.findall(text[start:end])
    }


def test_every_setting_is_a_row_of_the_table_and_every_row_a_setting(scan):
    documented, read = set(table()), set(scan.settings)
    assert (sorted(read - documented), sorted(documented - read)) == ([], []), (
        "(settings missing from the README's table, rows for settings no code reads)"
    )


def test_the_table_names_the_files_that_read_each_setting(scan):
    """The last column, "Read in", lists exactly the files the scanner found."""
    rows = table()
    assert all(len(cells) == 3 for cells in rows.values()), "Variable | Default | Meaning | Read in"
    wrong = {
        name: (cells[2], sorted(scan.settings.get(name, set())))
        for name, cells in rows.items()
        if set(re.findall(r"`([^`]+)`", cells[2])) != scan.settings.get(name)
    }
    assert wrong == {}


# --- .env.example --------------------------------------------------------------------------

EXAMPLE_LINE = re.compile(r"^(# )?([A-Z][A-Z0-9_]*)=(.*)$", re.MULTILINE)


def example_lines() -> list[tuple[bool, str, str]]:
    """.env.example's settings: (commented out?, name, value), in order."""
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    return [(bool(hash_), name, value) for hash_, name, value in EXAMPLE_LINE.findall(text)]


def test_every_setting_is_in_env_example_once_and_nothing_else(scan):
    names = [name for _, name, _ in example_lines()]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    read = set(scan.settings)
    assert (sorted(read - set(names)), sorted(set(names) - read), duplicates) == ([], [], []), (
        "(settings missing from .env.example, lines for settings no code reads, names twice)"
    )


def decisions(env: dict[str, str]) -> dict[str, object]:
    """What config.py and gunicorn.conf.py make of `env`, with no .env file read.

    Every setting of the production config class, config.py's complaints and
    the class FLASK_CONFIG picks; gunicorn.conf.py's own settings, by the name
    of the variable, and the FLASK_CONFIG it leaves for the app.
    """
    script = (
        "import json, os, runpy, config\n"
        "production = config.ProductionConfig\n"
        "found = {name: getattr(production, name) for name in dir(production) if name.isupper()}\n"
        "found['invalid settings'] = config.invalid_settings\n"
        "found['config class'] = config.config_from_env().__name__\n"
        "gunicorn = runpy.run_path('gunicorn.conf.py')\n"
        f"found |= {{name: gunicorn[key] for name, key in {GUNICORN_SETTINGS!r}.items()}}\n"
        "found['FLASK_CONFIG under gunicorn'] = os.environ['FLASK_CONFIG']\n"
        "print(json.dumps(found, default=str))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env | {"PYTHON_DOTENV_DISABLED": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def environment_without_settings(scan) -> dict[str, str]:
    """This process's environment without any setting the code reads."""
    return {key: value for key, value in os.environ.items() if key not in scan.settings}


@pytest.fixture(scope="module")
def defaults(environment_without_settings) -> dict[str, object]:
    """What config.py and gunicorn.conf.py decide when no setting is given."""
    return decisions(environment_without_settings)


@pytest.mark.system
def test_env_example_shows_only_the_defaults(environment_without_settings, defaults):
    """Copied to .env as it is, .env.example changes nothing, and every value
    it shows, commented out, is the default: uncommenting one changes nothing
    either. Blank commented lines (`# LOG_DIR=`) are not set: for some
    settings blank means something (`LOG_EXTRA_LOGGERS=`: no extra logger)."""
    lines = example_lines()
    given = {name: value for commented, name, value in lines if value or not commented}
    # Settings that only blog.py or the flask command read: their defaults are in those files.
    outside = {"FLASK_APP": "blog.py", "FLASK_RUN_HOST": "127.0.0.1", "FLASK_RUN_PORT": "5000"}
    for name, value in outside.items():
        assert given.pop(name, value) == value, name
    changed = decisions(environment_without_settings | given)
    assert {key: value for key, value in changed.items() if defaults[key] != value} == {}
    assert "SECRET_KEY" in given and "GUNICORN_TIMEOUT" in given  # the check covered both files


def test_the_defaults_of_blog_py_and_flaskenv_are_the_ones_checked():
    """The values the test above takes as the defaults of blog.py and .flaskenv."""
    blog = (ROOT / "blog.py").read_text()
    assert 'os.environ.get("FLASK_RUN_HOST", "").strip() or "127.0.0.1"' in blog
    assert 'os.environ.get("FLASK_RUN_PORT", "").strip() or "5000"' in blog
    assert (ROOT / ".flaskenv").read_text() == "FLASK_APP=blog.py\n"


@pytest.mark.system
def test_env_example_would_show_a_wrong_default(environment_without_settings, defaults):
    """The check above can fail: a value other than the default shows."""
    changed = decisions(
        environment_without_settings
        | {"LOG_MAX_BYTES": "102400", "GUNICORN_TIMEOUT": "31", "MAIL_PORT": "abc"}
    )
    differences = {key for key, value in changed.items() if defaults[key] != value}
    assert differences == {"LOG_MAX_BYTES", "GUNICORN_TIMEOUT", "invalid settings"}


@pytest.mark.system
def test_the_numbers_in_the_table_are_the_code_s_defaults(defaults):
    """Every Default cell that is a plain number, for config.py's settings and
    gunicorn.conf.py's alike."""
    numbers = {
        name: int(match[1])
        for name, (default, _, _) in table().items()
        if (match := re.match(r"`(\d+)`", default)) and name in defaults
    }
    assert {"MAIL_PORT", "GUNICORN_TIMEOUT", "GUNICORN_MAX_REQUESTS"} <= set(numbers)
    assert {name: defaults[name] for name in numbers} == numbers


# --- gunicorn reads the project's .env -----------------------------------------------------


STYLESHEET = "/bootstrap/static/css/bootstrap.min.css"


def serves(port: int) -> bool:
    """True once the blog answers on `port` (a static file: no database needed)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{STYLESHEET}", timeout=5) as reply:
            return reply.status == 200
    except OSError:
        return False


def run_until_all_workers_boot(
    config: Path, env: dict[str, str], tmp_path: Path, port: int, workers: int
) -> GunicornRun:
    """Start gunicorn; return once it serves on `port` and `workers` workers have booted."""
    errors = tmp_path / f"gunicorn-{port}.err"
    with open(errors, "w") as err:
        process = subprocess.Popen(
            gunicorn_command(config, "blog:app"),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    run = GunicornRun(process, errors)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{run.error_log()}")
        return serves(port) and len(run.booted_pids()) >= workers

    try:
        wait_until(ready, timeout=120, message=f"gunicorn on port {port}, {workers} workers")
    except BaseException:
        stop(run)
        raise
    return run


def configuration_lines(run: GunicornRun) -> dict[str, str]:
    """gunicorn's own account of its configuration, logged at level debug."""
    return dict(re.findall(r"^  (\w+): (.*)$", run.error_log(), re.MULTILINE))


@pytest.mark.system
def test_gunicorn_binds_and_sizes_itself_from_dotenv(tmp_path):
    """GUNICORN_BIND, WEB_CONCURRENCY and GUNICORN_LOG_LEVEL in .env are
    gunicorn's address, its number of workers and its log level."""
    port = free_port()
    config = project_copy(
        tmp_path, f"GUNICORN_BIND=127.0.0.1:{port}\nWEB_CONCURRENCY=3\nGUNICORN_LOG_LEVEL=debug\n"
    )
    run = run_until_all_workers_boot(config, gunicorn_env(tmp_path), tmp_path, port, workers=3)
    try:
        settings = configuration_lines(run)
        assert (settings["bind"], settings["workers"]) == (f"['127.0.0.1:{port}']", "3")
        assert f"Listening at: http://127.0.0.1:{port} ({run.process.pid})" in run.error_log()
        assert run.worker_pids() == run.booted_pids()
        assert len(run.booted_pids()) == 3
    finally:
        stop(run)


@pytest.mark.system
def test_a_real_environment_variable_wins_over_dotenv(tmp_path):
    """As in config.py: .env fills in only what the environment doesn't say."""
    dotenv_port, real_port = free_port(), free_port()
    config = project_copy(
        tmp_path,
        f"GUNICORN_BIND=127.0.0.1:{dotenv_port}\nWEB_CONCURRENCY=3\nGUNICORN_LOG_LEVEL=debug\n",
    )
    env = gunicorn_env(tmp_path, GUNICORN_BIND=f"127.0.0.1:{real_port}", WEB_CONCURRENCY=1)
    run = run_until_all_workers_boot(config, env, tmp_path, real_port, workers=1)
    try:
        settings = configuration_lines(run)
        assert (settings["bind"], settings["workers"]) == (f"['127.0.0.1:{real_port}']", "1")
        assert settings["loglevel"] == "debug"  # not in the environment: .env's
        assert run.worker_pids() == run.booted_pids()
        assert len(run.booted_pids()) == 1
        assert not serves(dotenv_port)
    finally:
        stop(run)


def print_config(tmp_path: Path, dotenv: str, **settings: object) -> subprocess.CompletedProcess:
    """`gunicorn --print-config` on a copy of gunicorn.conf.py with `dotenv` beside it:
    the configuration it would run with, without binding anything."""
    return subprocess.run(
        gunicorn_command(project_copy(tmp_path, dotenv), "--print-config", "blog:app"),
        cwd=tmp_path,
        env=gunicorn_env(tmp_path, **settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def printed(result: subprocess.CompletedProcess) -> dict[str, str]:
    assert result.returncode == 0, result.stderr
    return dict(re.findall(r"^(\w+) += (.*)$", result.stdout, re.MULTILINE))


@pytest.mark.system
def test_blank_values_mean_the_defaults(tmp_path):
    """`NAME=` with nothing after it, as in a template, is the default, as in
    config.py; in the environment too, but for WEB_CONCURRENCY, which gunicorn
    itself reads (and fails on) before gunicorn.conf.py."""
    blanks = "".join(f"{name}=\n" for name in GUNICORN_SETTINGS)
    from_dotenv = printed(print_config(tmp_path, blanks))
    real = dict.fromkeys(GUNICORN_SETTINGS.keys() - {"WEB_CONCURRENCY"}, " ")
    from_environment = printed(print_config(tmp_path, "", **real))
    for settings in (from_dotenv, from_environment):
        assert {key: settings[key] for key in GUNICORN_SETTINGS.values()} == {
            "bind": "['127.0.0.1:8000']",
            "workers": str(2 * (os.cpu_count() or 1)),
            "timeout": "30",
            "graceful_timeout": "30",
            "max_requests": "1000",
            "accesslog": "-",
            "loglevel": "info",
        }


@pytest.mark.system
def test_flask_config_from_dotenv_is_used_under_gunicorn(tmp_path):
    """gunicorn.conf.py makes production the default only if neither the
    environment nor .env names a config: here .env's development starts with
    no SECRET_KEY, which production would refuse."""
    env_without = {
        key: value
        for key, value in gunicorn_env(tmp_path).items()
        if key not in ("FLASK_CONFIG", "SECRET_KEY")
    }
    result = subprocess.run(
        gunicorn_command(
            project_copy(tmp_path, "FLASK_CONFIG=development\n"), "--check-config", "blog:app"
        ),
        cwd=tmp_path,
        env=env_without,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.system
@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("WEB_CONCURRENCY=0", "WEB_CONCURRENCY='0' is not a whole number of at least 1."),
        ("WEB_CONCURRENCY=-2", "WEB_CONCURRENCY='-2' is not a whole number of at least 1."),
        ("WEB_CONCURRENCY=2.5", "WEB_CONCURRENCY='2.5' is not a whole number of at least 1."),
        ("WEB_CONCURRENCY=four", "WEB_CONCURRENCY='four' is not a whole number of at least 1."),
        ("GUNICORN_TIMEOUT=30s", "GUNICORN_TIMEOUT='30s' is not a whole number of at least 0."),
        ("GUNICORN_TIMEOUT=-1", "GUNICORN_TIMEOUT='-1' is not a whole number of at least 0."),
        (
            "GUNICORN_GRACEFUL_TIMEOUT=" + "9" * 5000,  # more digits than Python will read
            f"GUNICORN_GRACEFUL_TIMEOUT='{'9' * 5000}' is not a whole number of at least 0.",
        ),
        (
            "GUNICORN_MAX_REQUESTS=1e3",
            "GUNICORN_MAX_REQUESTS='1e3' is not a whole number of at least 0.",
        ),
        (
            "GUNICORN_LOG_LEVEL=loud",
            "GUNICORN_LOG_LEVEL='loud' is not one of debug, info, warning, error, critical.",
        ),
    ],
    ids=lambda value: value[:30],
)
def test_a_bad_value_in_dotenv_stops_gunicorn_with_exit_status_3(tmp_path, line, message):
    """A clear message and status 3, which the unit doesn't restart, not a traceback."""
    result = print_config(tmp_path, line + "\n")
    assert (result.returncode, result.stderr, result.stdout) == (
        3,
        f"Configuration error: {message}\n",
        "",
    )


@pytest.mark.system
def test_numbers_in_dotenv_within_bounds_are_taken(tmp_path):
    """The smallest values allowed, a huge one, and spaces and case gunicorn
    would not take by itself."""
    dotenv = (
        "WEB_CONCURRENCY= 1 \nGUNICORN_TIMEOUT=0\nGUNICORN_GRACEFUL_TIMEOUT=0\n"
        "GUNICORN_MAX_REQUESTS=1000000000000\nGUNICORN_LOG_LEVEL=WARNING\n"
    )
    settings = printed(print_config(tmp_path, dotenv))
    assert {
        key: settings[key] for key in ("workers", "timeout", "graceful_timeout", "max_requests")
    } == {"workers": "1", "timeout": "0", "graceful_timeout": "0", "max_requests": "1000000000000"}
    assert settings["loglevel"] == "WARNING"

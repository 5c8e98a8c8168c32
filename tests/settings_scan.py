"""Which environment variables the project reads: found in its source, not listed.

`scan_settings()` reads the Python of config.py, gunicorn.conf.py, blog.py and
app/, the systemd unit, the shell scripts in deploy/, compose.yaml and
.flaskenv. tests/test_settings.py holds the README's configuration table and
.env.example to what it finds; tests/test_containers.py, the Dockerfile and
compose.yaml (every variable they set must be one the code reads).
"""

import ast
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import ROOT

PYTHON_SOURCES = [
    ROOT / "config.py",
    ROOT / "gunicorn.conf.py",
    ROOT / "blog.py",
    *sorted((ROOT / "app").rglob("*.py")),
]
UNITS = [ROOT / "deploy" / "blog.service"]
SHELL_SCRIPTS = sorted((ROOT / "deploy").glob("*.sh"))
COMPOSE_FILES = [ROOT / "compose.yaml"]
DOTENV_FILES = [ROOT / ".flaskenv"]
# Read by the code, but set by gunicorn for the app to see, not by anyone deploying it.
NOT_SETTINGS = {"SERVER_SOFTWARE"}


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name


@dataclass
class Scan:
    # Each setting, and the files (relative to the project) that read or set it.
    settings: dict[str, set[str]] = field(default_factory=dict)
    # "file:line" of each read whose variable isn't written out, which the scan can't name.
    unnamed: list[str] = field(default_factory=list)


def scan_settings(
    python_sources: list[Path] = PYTHON_SOURCES,
    units: list[Path] = UNITS,
    shell_scripts: list[Path] = SHELL_SCRIPTS,
    compose_files: list[Path] = COMPOSE_FILES,
    dotenv_files: list[Path] = DOTENV_FILES,
) -> Scan:
    """Every environment variable the given files read or set.

    In Python, a read is ``os.environ.get("X")``, ``os.environ["X"]``,
    ``os.getenv("X")``, ``os.environ.setdefault("X", ...)``, ``"X" in os.environ``,
    or a call such as ``env_int("X", 10)`` to a helper that reads the variable
    its first parameter names (found, not listed: config.py's env_bool,
    gunicorn.conf.py's whole_number, and any helper added later). A read
    whose name is computed is reported in `unnamed`. In a systemd unit, the
    names set by Environment= lines; in a shell script, `export NAME=` and
    each $NAME or ${NAME} read; in a compose file, each ${NAME} (or $NAME)
    that compose fills in from .env or the environment (its `environment:`
    keys only pass values on to the app, which reads them itself); in a
    .flaskenv-style file, each NAME=. Comment lines are skipped.
    """
    scan = Scan()
    trees = {path: ast.parse(path.read_text(encoding="utf-8")) for path in python_sources}

    def read_key(node: ast.AST, helpers: set[str]) -> ast.expr | None:
        """The expression naming the variable `node` reads, or None if it reads none."""
        if isinstance(node, ast.Subscript) and is_os_environ(node.value):
            return node.slice
        if isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In | ast.NotIn):
            return node.left if is_os_environ(node.comparators[0]) else None
        if not isinstance(node, ast.Call) or not node.args:
            return None
        function = node.func
        if isinstance(function, ast.Attribute):
            if is_os_environ(function.value) and function.attr in ("get", "setdefault", "pop"):
                return node.args[0]
            if function.attr == "getenv" and is_name(function.value, "os"):
                return node.args[0]
        if isinstance(function, ast.Name) and function.id in helpers:
            return node.args[0]
        return None

    def parameters(function: ast.FunctionDef) -> set[str]:
        return {argument.arg for argument in function.args.args}

    # A helper reads the variable its parameter names, with os.environ or
    # another helper: repeat until no new one is found.
    functions = [
        node
        for tree in trees.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
    ]
    helpers: set[str] = set()
    while True:
        found = {
            function.name
            for function in functions
            for node in ast.walk(function)
            if isinstance(key := read_key(node, helpers), ast.Name)
            and key.id in parameters(function)
        }
        if found <= helpers:
            break
        helpers |= found

    # Inside a helper, a read of its parameter is the helper's work, not a setting.
    passed_on = {
        id(node)
        for function in functions
        if function.name in helpers
        for node in ast.walk(function)
        if isinstance(key := read_key(node, helpers), ast.Name) and key.id in parameters(function)
    }
    for path, tree in trees.items():
        for node in ast.walk(tree):
            key = read_key(node, helpers)
            if key is None or id(node) in passed_on:
                continue
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                scan.settings.setdefault(key.value, set()).add(relative(path))
            else:
                scan.unnamed.append(f"{relative(path)}:{node.lineno}")

    for path in units:
        for line in path.read_text().splitlines():
            if line.startswith("Environment="):
                for assignment in shlex.split(line.removeprefix("Environment=")):
                    scan.settings.setdefault(assignment.split("=")[0], set()).add(relative(path))
    for path in shell_scripts + compose_files:
        for line in path.read_text().splitlines():
            if line.lstrip().startswith("#"):
                continue
            # $$ is a literal dollar in compose; $0, $1, $# and $@ are arguments.
            names = re.findall(r"(?<!\$)\$\{?([A-Za-z_]\w*)", line)
            names += re.findall(r"^\s*export\s+([A-Za-z_]\w*)=", line)
            for name in names:
                scan.settings.setdefault(name, set()).add(relative(path))
    for path in dotenv_files:
        for name in re.findall(r"^\s*([A-Za-z_]\w*)=", path.read_text(), re.MULTILINE):
            scan.settings.setdefault(name, set()).add(relative(path))
    for name in NOT_SETTINGS:
        scan.settings.pop(name, None)
    scan.unnamed.sort(key=lambda place: (place.split(":")[0], int(place.split(":")[1])))
    return scan


def is_name(node: ast.AST, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def is_os_environ(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and is_name(node.value, "os")

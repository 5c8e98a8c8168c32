"""The container files: Dockerfile, compose.yaml, .dockerignore and
deploy/docker-entrypoint.sh.

No Docker engine runs where the tests run (nor in CI), so no image is built
here. What can be tested without one is tested:

- the entrypoint, run as the image runs it (the Dockerfile's ENV, the venv's
  gunicorn): it migrates, then becomes gunicorn in its own process, which
  SIGTERM stops cleanly; a failed migration stops it before gunicorn starts;
  and the image's HEALTHCHECK command, run against it;
- the files' consistency, read as text: every variable they set is one that
  config.py, gunicorn.conf.py or the entrypoint reads; the ports agree; the
  health check asks for a route the app has; the images are pinned; the app
  runs as a user of its own, waits for healthy services, finds its database
  and its Redis, keeps its files on volumes and its secrets out of the files.

Every consistency check is a function of the files' text (`container_problems`),
and `test_each_check_finds_its_mistake` feeds it broken copies, one mistake
each, so that every check is seen to fail.
"""

import contextlib
import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gunicorn
import pytest
import yaml
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from config import database_url
from tests import pages
from tests.databases import MIGRATIONS
from tests.servers import BIN, REDIS_URL, ROOT, Browser, clean_env, free_port, wait_until
from tests.settings_scan import scan_settings

ENTRYPOINT = "deploy/docker-entrypoint.sh"
# The files whose settings the container files may set.
SETTING_READERS = ("config.py", "gunicorn.conf.py", "blog.py", "app/", ENTRYPOINT)
SECRET = "a-container-secret-that-is-long-enough-for-production"


# --- Reading the files ------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """One instruction of a Dockerfile, its lines joined."""

    name: str  # FROM, ENV, RUN... in capitals
    arguments: str


# A backslash at the end of a line continues the instruction on the next one.
CONTINUATION = re.compile(r"\\[ \t]*$")


def parse_dockerfile(source: str) -> list[Instruction]:
    """The Dockerfile's instructions, with their lines joined the way Docker joins them:
    the backslash dropped, the next line kept as it is (indentation included);
    comment lines and blank lines skipped, even in the middle of an instruction."""
    instructions = []
    pending: str | None = None
    for line in source.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if pending is None:
            line = line.lstrip()
        body = CONTINUATION.sub("", line)
        pending = (pending or "") + body
        if body == line:
            name, _, arguments = pending.partition(" ")
            instructions.append(Instruction(name.upper(), arguments.strip()))
            pending = None
    return instructions


def arguments_of(instructions: list[Instruction], name: str) -> list[str]:
    """The arguments of every instruction called `name` (FROM, RUN...), in order."""
    return [i.arguments for i in instructions if i.name == name]


def dockerfile_env(instructions: list[Instruction]) -> dict[str, str]:
    """The variables the Dockerfile's ENV instructions set (NAME=value, or the old NAME value)."""
    env = {}
    for arguments in arguments_of(instructions, "ENV"):
        words = shlex.split(arguments)
        if "=" not in words[0]:
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            name, _, value = word.partition("=")
            env[name] = value
    return env


def exec_form(arguments: str) -> list[str] | None:
    """A command written as a JSON list (exec form), or None for the shell form."""
    return json.loads(arguments) if arguments.startswith("[") else None


def healthcheck_command(instructions: list[Instruction]) -> list[str] | None:
    """The command of the Dockerfile's last HEALTHCHECK, as a list; None without one."""
    found = arguments_of(instructions, "HEALTHCHECK")
    if not found:
        return None
    match = re.fullmatch(r"(?:--\S+\s+)*(CMD|NONE)\b\s*(.*)", found[-1])
    if match is None or match[1] == "NONE":
        return None
    return exec_form(match[2]) or ["/bin/sh", "-c", match[2]]


def service_environment(service: dict) -> dict[str, str]:
    """A compose service's `environment`, written as a mapping or as a list of NAME=value."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(entry.partition("=")[::2] for entry in environment)
    return {name: "" if value is None else str(value) for name, value in environment.items()}


@dataclass(frozen=True)
class PublishedPort:
    """One entry of a compose service's `ports`."""

    host_ip: str  # "" means every address
    published: str
    target: str


def published_ports(service: dict) -> list[PublishedPort]:
    """A compose service's `ports`, short ("127.0.0.1:8000:8000") or long syntax."""
    ports = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.append(
                PublishedPort(
                    str(entry.get("host_ip", "")),
                    str(entry.get("published", "")),
                    str(entry["target"]),
                )
            )
        else:
            spec = str(entry).split("/")[0]  # "8000:8000/tcp"
            ports.append(PublishedPort(*["", "", *spec.rsplit(":", 2)][-3:]))
    return ports


def service_healthcheck(service: dict) -> list[str] | None:
    """A compose service's own health check as a list, None if it has none or turns it off."""
    healthcheck = service.get("healthcheck")
    if not healthcheck or healthcheck.get("disable"):
        return None
    test = healthcheck.get("test")
    if isinstance(test, str):
        test = ["CMD-SHELL", test]
    if not test or test[0] == "NONE":
        return None
    return test


def service_volumes(service: dict) -> dict[str, str]:
    """A compose service's volumes: {target in the container: source}."""
    volumes = {}
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            volumes[entry["target"]] = entry.get("source", "")
        else:
            source, _, rest = str(entry).partition(":")
            volumes[rest.split(":")[0]] = source
    return volumes


def project_settings() -> set[str]:
    """Every variable that the app, gunicorn.conf.py and the entrypoint read (or
    set, as the entrypoint sets FLASK_APP): tests/settings_scan.py finds them."""
    scan = scan_settings(
        units=[], shell_scripts=[ROOT / ENTRYPOINT], compose_files=[], dotenv_files=[]
    )
    return set(scan.settings)


# --- The checks ---------------------------------------------------------------


@dataclass(frozen=True)
class ContainerFiles:
    """The container files' text, and the folder that holds the entrypoint script."""

    dockerfile: str
    compose: str
    dockerignore: str
    root: Path = ROOT

    @classmethod
    def of_project(cls) -> "ContainerFiles":
        """The project's container files, as they are."""
        return cls(
            (ROOT / "Dockerfile").read_text(),
            (ROOT / "compose.yaml").read_text(),
            (ROOT / ".dockerignore").read_text(),
        )


def image_name(image: object) -> str | None:
    """An image's name without registry, tag or digest: docker.io/library/redis:7 is redis."""
    if image is None:
        return None
    last_part = str(image).split("@")[0].rsplit("/", 1)[-1]
    return last_part.partition(":")[0]


@dataclass
class Parsed:
    """What the checks read, parsed once."""

    instructions: list[Instruction]
    image_env: dict[str, str]
    services: dict[str, dict]
    top_level_volumes: set[str]
    app: dict
    app_env: dict[str, str]
    db_name: str | None  # the service running PostgreSQL's image
    redis_name: str | None

    @property
    def workdir(self) -> str:
        """The image's WORKDIR, where COPY . . puts the project."""
        return (arguments_of(self.instructions, "WORKDIR") or ["/"])[-1].rstrip("/")

    def setting(self, name: str) -> str | None:
        """The value the app's container gets: compose's environment wins over the image's."""
        return self.app_env.get(name, self.image_env.get(name))


def parse(files: ContainerFiles) -> Parsed:
    """Read the Dockerfile and compose.yaml once, for every check."""
    instructions = parse_dockerfile(files.dockerfile)
    compose = yaml.safe_load(files.compose)
    services = compose.get("services") or {}
    app = services.get("app") or {}

    def running(wanted: str) -> str | None:
        return next((n for n, s in services.items() if image_name(s.get("image")) == wanted), None)

    return Parsed(
        instructions=instructions,
        image_env=dockerfile_env(instructions),
        services=services,
        top_level_volumes=set(compose.get("volumes") or {}),
        app=app,
        app_env=service_environment(app),
        db_name=running("postgres"),
        redis_name=running("redis"),
    )


def check_settings(parsed: Parsed, settings: set[str]) -> list[str]:
    """Each variable set is one the app, gunicorn or the entrypoint reads: a
    misspelt one would be ignored without a word."""
    readers = ", ".join(SETTING_READERS)
    return [
        f"{where} {name} is read by none of {readers}"
        for where, env in (
            ("Dockerfile: ENV", parsed.image_env),
            ("compose.yaml: services.app.environment:", parsed.app_env),
        )
        for name in env
        if name not in settings
    ]


LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def check_ports(parsed: Parsed) -> list[str]:
    """gunicorn listens on every address of the container, on the port exposed and published."""
    binds = {
        where: env["GUNICORN_BIND"]
        for where, env in (("Dockerfile", parsed.image_env), ("compose.yaml", parsed.app_env))
        if "GUNICORN_BIND" in env
    }
    if not binds:
        return [
            "GUNICORN_BIND is set neither in the Dockerfile nor in compose.yaml: gunicorn "
            "would listen on 127.0.0.1 inside the container, which nothing outside can reach"
        ]
    problems = []
    for where, bind in binds.items():
        host, _, port = bind.rpartition(":")
        if host in LOOPBACK:
            problems.append(
                f"{where}: GUNICORN_BIND={bind} listens inside the container only: "
                f"bind 0.0.0.0:{port}"
            )
    if len(set(binds.values())) > 1:
        problems.append(
            f"GUNICORN_BIND is {binds['Dockerfile']} in the Dockerfile "
            f"but {binds['compose.yaml']} in compose.yaml"
        )
    port = parsed.setting("GUNICORN_BIND").rpartition(":")[2]  # compose's wins
    exposed = [
        p.split("/")[0] for a in arguments_of(parsed.instructions, "EXPOSE") for p in a.split()
    ]
    if exposed != [port]:
        problems.append(
            f"Dockerfile: EXPOSE {' '.join(exposed) or '(none)'} "
            f"is not GUNICORN_BIND's port, {port}"
        )
    ports = published_ports(parsed.app)
    if not ports:
        problems.append("compose.yaml: services.app publishes no port")
    for published in ports:
        if published.target != port:
            problems.append(
                f"compose.yaml: services.app publishes container port {published.target}, "
                f"not GUNICORN_BIND's port, {port}"
            )
        if published.host_ip not in LOOPBACK:
            problems.append(
                f"compose.yaml: services.app publishes port {published.published} on "
                f"{published.host_ip or 'every address'}: publish it on 127.0.0.1 only"
            )
    return problems


URL_PATH = re.compile(r"https?://[^/\s'\"]+(/[^\s'\"?#]*)")


def check_health(parsed: Parsed, routes: set[str]) -> list[str]:
    """Every service has a health check, and the app's asks for a page the app has."""
    problems = []
    image_check = healthcheck_command(parsed.instructions)
    app_checks = [("Dockerfile: HEALTHCHECK", image_check)] if image_check else []
    for name, service in parsed.services.items():
        own = service_healthcheck(service)
        if own is None and "healthcheck" not in service and "build" in service and image_check:
            continue  # it inherits the image's HEALTHCHECK
        if own is None:
            problems.append(f"compose.yaml: services.{name} has no healthcheck")
        elif name == "app":
            app_checks.append(("compose.yaml: services.app.healthcheck", own))
    for where, command in app_checks:
        paths = URL_PATH.findall(" ".join(command))
        if not paths:
            problems.append(f"{where} asks the app for no page: {command}")
        for path in paths:
            if path not in routes:
                problems.append(f"{where} asks for {path}, which is not a route of the app")
    return problems


# A tag that starts with a version of at least major.minor: 3.12.12-slim-bookworm, 17.6.
PINNED_TAG = re.compile(r"\d+\.\d+")


def unpinned(image: str) -> bool:
    """True for an image with no tag, `latest`, or a tag without major.minor (`3-slim`)."""
    if "@sha256:" in image:
        return False
    last_part = image.rsplit("/", 1)[-1]
    tag = last_part.partition(":")[2]
    return not PINNED_TAG.match(tag)


def check_images(parsed: Parsed) -> list[str]:
    """Every image is pinned to a version: a rebuild gets what was tested."""
    problems = []
    for arguments in arguments_of(parsed.instructions, "FROM"):
        image = arguments.split()[0]
        if unpinned(image):
            problems.append(
                f"Dockerfile: FROM {image} is not pinned to a version "
                "(a tag such as 3.12.12-slim-bookworm)"
            )
    for name, service in parsed.services.items():
        image = service.get("image")
        if image is not None and unpinned(str(image)):
            problems.append(
                f"compose.yaml: services.{name}.image {image} is not pinned to a version "
                "(major.minor at least, such as 17.6)"
            )
    return problems


def check_user(parsed: Parsed) -> list[str]:
    """The app runs as a user of its own, not as root."""
    users = arguments_of(parsed.instructions, "USER")
    if not users:
        return ["Dockerfile: no USER, so the app would run as root"]
    user = users[-1].split(":")[0]
    if user in ("root", "0"):
        return [f"Dockerfile: USER {users[-1]} is root: run the app as a user of its own"]
    return []


def check_entrypoint(parsed: Parsed, root: Path) -> list[str]:
    """ENTRYPOINT runs the project's script, in exec form, and the script is executable."""
    found = arguments_of(parsed.instructions, "ENTRYPOINT")
    if not found:
        return ["Dockerfile: no ENTRYPOINT"]
    command = exec_form(found[-1])
    if command is None:
        return [
            f"Dockerfile: ENTRYPOINT {found[-1]} is in shell form: /bin/sh -c would be PID 1 "
            'and keep SIGTERM from gunicorn; write it as a JSON list, ["/app/deploy/..."]'
        ]
    script = command[0]
    prefix = parsed.workdir + "/"
    if not script.startswith(prefix):
        return [f"Dockerfile: ENTRYPOINT {script} is not in WORKDIR {parsed.workdir}"]
    relative = script.removeprefix(prefix)
    if not (root / relative).is_file():
        return [f"Dockerfile: ENTRYPOINT {script} is not a file of the project ({relative})"]
    if not os.access(root / relative, os.X_OK):
        return [
            f"Dockerfile: ENTRYPOINT {relative} is not executable: chmod +x {relative} "
            f"(and git update-index --chmod=+x {relative})"
        ]
    return []


def check_dependencies(parsed: Parsed) -> list[str]:
    """The app starts once its database and its Redis answer, not merely once they exist."""
    problems = []
    for kind, name in (("PostgreSQL", parsed.db_name), ("Redis", parsed.redis_name)):
        if name is None:
            problems.append(f"compose.yaml: no service runs the official {kind} image")
            continue
        depends_on = parsed.app.get("depends_on") or {}
        condition = (
            depends_on.get(name, {}).get("condition") if isinstance(depends_on, dict) else None
        )
        if condition != "service_healthy":
            problems.append(
                f"compose.yaml: services.app does not wait for {name} to be healthy "
                f"(depends_on: {name}: condition: service_healthy)"
            )
    return problems


def required_from_env(value: str | None, name: str) -> bool:
    """True for "${NAME:?message}": compose fills it in from .env, and stops if it is missing."""
    return value is not None and re.fullmatch(rf"\$\{{{name}:\?[^}}]*\}}", value) is not None


def check_secrets(parsed: Parsed) -> list[str]:
    """The secrets come from .env, and compose refuses to start without them."""
    problems = []
    env_files = parsed.app.get("env_file") or []
    if isinstance(env_files, str):
        env_files = [env_files]
    if ".env" not in [f["path"] if isinstance(f, dict) else f for f in env_files]:
        problems.append("compose.yaml: services.app does not read .env (env_file: .env)")
    if not required_from_env(parsed.app_env.get("SECRET_KEY"), "SECRET_KEY"):
        problems.append(
            'compose.yaml: services.app.environment.SECRET_KEY must be "${SECRET_KEY:?message}": '
            "taken from .env, and compose refuses to start without one"
        )
    if parsed.db_name is not None:
        db_env = service_environment(parsed.services[parsed.db_name])
        if not required_from_env(db_env.get("POSTGRES_PASSWORD"), "POSTGRES_PASSWORD"):
            problems.append(
                f"compose.yaml: services.{parsed.db_name}.environment.POSTGRES_PASSWORD must be "
                '"${POSTGRES_PASSWORD:?message}": taken from .env'
            )
    password = re.match(r"[^:]+://[^:/@]+:([^@]*)@", parsed.app_env.get("DATABASE_URL", ""))
    if password and not required_from_env(password[1], "POSTGRES_PASSWORD"):
        problems.append(
            "compose.yaml: the password in services.app.environment.DATABASE_URL must be "
            '"${POSTGRES_PASSWORD:?message}", the database\'s own, taken from .env'
        )
    return problems


INTERPOLATION = re.compile(r"\$\{[^}]*\}")


def check_addresses(parsed: Parsed) -> list[str]:
    """DATABASE_URL and REDIS_URL name the compose services, in forms config.py accepts."""
    problems = []
    if parsed.db_name is not None:
        given = parsed.app_env.get("DATABASE_URL", "")
        url = make_url(database_url(INTERPOLATION.sub("secret", given)))
        db_env = service_environment(parsed.services[parsed.db_name])
        if url.drivername != "postgresql+psycopg":
            problems.append(
                f"compose.yaml: DATABASE_URL uses the driver {url.drivername}, not psycopg 3, "
                "the one installed (postgresql+psycopg://)"
            )
        given_at = f"{url.username}@{url.host}/{url.database}"
        served_at = f"{db_env.get('POSTGRES_USER')}@{parsed.db_name}/{db_env.get('POSTGRES_DB')}"
        if given_at != served_at:
            problems.append(
                f"compose.yaml: DATABASE_URL points at {given_at}, but the database is {served_at} "
                f"(services.{parsed.db_name}: POSTGRES_USER, POSTGRES_DB)"
            )
    if parsed.redis_name is not None:
        host = make_url(parsed.app_env.get("REDIS_URL", "redis://")).host
        if host != parsed.redis_name:
            problems.append(
                f"compose.yaml: REDIS_URL's host is {host}, not the {parsed.redis_name} service"
            )
    return problems


def check_volumes(parsed: Parsed) -> list[str]:
    """What the app and the database keep on disk is on named volumes, not in the containers."""
    problems = []
    log_dir = parsed.setting("LOG_DIR") or f"{parsed.workdir}/logs"  # config.py's default
    if service_volumes(parsed.app).get(log_dir) not in parsed.top_level_volumes:
        problems.append(
            f"compose.yaml: LOG_DIR {log_dir} is on no named volume of services.app: "
            "its files would go with the container"
        )
    if parsed.db_name is not None:
        db_volumes = service_volumes(parsed.services[parsed.db_name]).values()
        if not parsed.top_level_volumes & set(db_volumes):
            problems.append(
                f"compose.yaml: services.{parsed.db_name} keeps its data on no named volume"
            )
    return problems


def check_catalogues(parsed: Parsed) -> list[str]:
    """The Chinese pages read messages.mo, which the image compiles itself.

    Not with `flask translate compile`: that starts the app, which in
    production refuses to start without a SECRET_KEY, not there at build time.
    """
    if any(
        "pybabel compile -d app/translations" in run
        for run in arguments_of(parsed.instructions, "RUN")
    ):
        return []
    return [
        "Dockerfile: no RUN pybabel compile -d app/translations: "
        "the image would have no messages.mo, and its pages no Chinese"
    ]


def check_dockerignore(dockerignore: str) -> list[str]:
    """Secrets and local state stay out of the image."""
    lines = {line.strip() for line in dockerignore.splitlines()}
    return [
        f".dockerignore does not leave out {name}"
        for name in (".env*", ".git", ".venv")
        if name not in lines
    ]


def container_problems(files: ContainerFiles, routes: set[str], settings: set[str]) -> list[str]:
    """Everything wrong with the container files, one sentence each; [] if nothing is."""
    parsed = parse(files)
    return [
        *check_settings(parsed, settings),
        *check_ports(parsed),
        *check_health(parsed, routes),
        *check_images(parsed),
        *check_user(parsed),
        *check_entrypoint(parsed, files.root),
        *check_dependencies(parsed),
        *check_secrets(parsed),
        *check_addresses(parsed),
        *check_volumes(parsed),
        *check_catalogues(parsed),
        *check_dockerignore(files.dockerignore),
    ]


# --- The files as they are ----------------------------------------------------


@pytest.fixture
def routes(app) -> set[str]:
    """The app's URL rules: what a health check may ask for."""
    return {rule.rule for rule in app.url_map.iter_rules()}


def test_the_container_files_agree_with_each_other_and_with_the_app(routes):
    """Every check of `container_problems` passes on the files as they are."""
    assert container_problems(ContainerFiles.of_project(), routes, project_settings()) == []


def test_the_dockerfile_parser_joins_lines_as_docker_does():
    """The HEALTHCHECK's Python is split over lines: joined otherwise, it wouldn't be
    the command Docker runs, nor valid JSON."""
    source = (
        "# syntax=docker/dockerfile:1\n"
        "FROM python:3.12.12-slim-bookworm AS base\n"
        "ENV A=1 \\\n"
        "    # a comment inside an instruction is dropped\n"
        "\n"
        '    B="two words"\n'
        "env OLD_FORM some value\n"
        'CMD ["python", "-c", "x = 1; \\\n'
        '    y = 2"]\n'
    )
    instructions = parse_dockerfile(source)
    assert instructions == [
        Instruction("FROM", "python:3.12.12-slim-bookworm AS base"),
        Instruction("ENV", 'A=1     B="two words"'),
        Instruction("ENV", "OLD_FORM some value"),
        Instruction("CMD", '["python", "-c", "x = 1;     y = 2"]'),
    ]
    assert dockerfile_env(instructions) == {"A": "1", "B": "two words", "OLD_FORM": "some value"}
    assert exec_form(instructions[-1].arguments) == ["python", "-c", "x = 1;     y = 2"]


@pytest.mark.system
def test_the_entrypoint_is_executable_in_git():
    """Docker copies the mode the checkout has: git must record the script as executable."""
    done = subprocess.run(
        ["git", "ls-files", "--stage", "--", ENTRYPOINT], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0 or not done.stdout:
        pytest.skip("not in a git checkout, or the script is not committed yet")
    mode = done.stdout.split()[0]
    assert mode == "100755", f"git update-index --chmod=+x {ENTRYPOINT} (its mode is {mode})"


# --- Broken copies: each check must be able to fail ---------------------------

# (file, text in it, replacement, the problems expected): each copy has one
# mistake. A mistake made in two files gives a tuple of each.
MISTAKES = [
    pytest.param(
        "dockerfile",
        "LOG_TO_STDOUT=1",
        "LOG_TO_STDUOT=1",
        [
            "Dockerfile: ENV LOG_TO_STDUOT is read by none of "
            "config.py, gunicorn.conf.py, blog.py, app/, deploy/docker-entrypoint.sh"
        ],
        id="dockerfile-env-typo",
    ),
    pytest.param(
        "compose",
        'WEB_CONCURRENCY: "${WEB_CONCURRENCY:-2}"',
        'GUNICORN_WORKERS: "2"',
        [
            "compose.yaml: services.app.environment: GUNICORN_WORKERS is read by none of "
            "config.py, gunicorn.conf.py, blog.py, app/, deploy/docker-entrypoint.sh"
        ],
        id="compose-env-typo",
    ),
    pytest.param(
        "compose",
        'GUNICORN_BIND: "0.0.0.0:8000"',
        'GUNICORN_BIND: "127.0.0.1:8000"',
        [
            "compose.yaml: GUNICORN_BIND=127.0.0.1:8000 listens inside the container only: "
            "bind 0.0.0.0:8000",
            "GUNICORN_BIND is 0.0.0.0:8000 in the Dockerfile but 127.0.0.1:8000 in compose.yaml",
        ],
        id="bound-to-loopback",
    ),
    pytest.param(
        "dockerfile",
        "GUNICORN_BIND=0.0.0.0:8000",
        "GUNICORN_BIND=0.0.0.0:9000",
        ["GUNICORN_BIND is 0.0.0.0:9000 in the Dockerfile but 0.0.0.0:8000 in compose.yaml"],
        id="binds-differ",
    ),
    pytest.param(
        ("dockerfile", "compose"),
        ("    GUNICORN_BIND=0.0.0.0:8000", '      GUNICORN_BIND: "0.0.0.0:8000"\n'),
        ("    GUNICORN_ACCESS_LOG=-", ""),
        [
            "GUNICORN_BIND is set neither in the Dockerfile nor in compose.yaml: gunicorn would "
            "listen on 127.0.0.1 inside the container, which nothing outside can reach"
        ],
        id="no-bind",
    ),
    pytest.param(
        "dockerfile",
        "EXPOSE 8000",
        "EXPOSE 5000",
        ["Dockerfile: EXPOSE 5000 is not GUNICORN_BIND's port, 8000"],
        id="exposed-port",
    ),
    pytest.param(
        "compose",
        '"127.0.0.1:8000:8000"',
        '"127.0.0.1:8000:5000"',
        [
            "compose.yaml: services.app publishes container port 5000, "
            "not GUNICORN_BIND's port, 8000"
        ],
        id="published-port",
    ),
    pytest.param(
        "compose",
        '"127.0.0.1:8000:8000"',
        '"8000:8000"',
        [
            "compose.yaml: services.app publishes port 8000 on every address: "
            "publish it on 127.0.0.1 only"
        ],
        id="published-everywhere",
    ),
    pytest.param(
        "dockerfile",
        "/healthz'",
        "/health'",
        ["Dockerfile: HEALTHCHECK asks for /health, which is not a route of the app"],
        id="health-path",
    ),
    pytest.param(
        "dockerfile",
        "HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \\\n    CMD [",
        "HEALTHCHECK NONE\nCMD [",
        ["compose.yaml: services.app has no healthcheck"],
        id="no-app-healthcheck",
    ),
    pytest.param(
        "compose",
        "    stop_grace_period: 40s",
        '    healthcheck:\n      test: ["CMD", "true"]\n    stop_grace_period: 40s',
        [
            "compose.yaml: services.app.healthcheck asks the app for no page: ['CMD', 'true']",
        ],
        id="app-healthcheck-without-page",
    ),
    pytest.param(
        "compose",
        '      test: ["CMD", "redis-cli", "ping"]',
        "      disable: true",
        ["compose.yaml: services.redis has no healthcheck"],
        id="no-redis-healthcheck",
    ),
    pytest.param(
        "dockerfile",
        "FROM python:3.12.12-slim-bookworm",
        "FROM python:3-slim",
        [
            "Dockerfile: FROM python:3-slim is not pinned to a version "
            "(a tag such as 3.12.12-slim-bookworm)"
        ],
        id="python-unpinned",
    ),
    pytest.param(
        "compose",
        "image: postgres:17.6-bookworm",
        "image: postgres:latest",
        [
            "compose.yaml: services.db.image postgres:latest is not pinned to a version "
            "(major.minor at least, such as 17.6)"
        ],
        id="postgres-latest",
    ),
    pytest.param(
        "compose",
        "image: redis:7.4.5-bookworm",
        "image: redis",
        [
            "compose.yaml: services.redis.image redis is not pinned to a version "
            "(major.minor at least, such as 17.6)"
        ],
        id="redis-untagged",
    ),
    pytest.param(
        "dockerfile",
        "\nUSER blog\n",
        "\n",
        ["Dockerfile: no USER, so the app would run as root"],
        id="no-user",
    ),
    pytest.param(
        "dockerfile",
        "\nUSER blog\n",
        "\nUSER root\n",
        ["Dockerfile: USER root is root: run the app as a user of its own"],
        id="root-user",
    ),
    pytest.param(
        "dockerfile",
        'ENTRYPOINT ["/app/deploy/docker-entrypoint.sh"]',
        "ENTRYPOINT /app/deploy/docker-entrypoint.sh",
        [
            "Dockerfile: ENTRYPOINT /app/deploy/docker-entrypoint.sh is in shell form: "
            "/bin/sh -c would be PID 1 and keep SIGTERM from gunicorn; "
            'write it as a JSON list, ["/app/deploy/..."]'
        ],
        id="entrypoint-shell-form",
    ),
    pytest.param(
        "dockerfile",
        'ENTRYPOINT ["/app/deploy/docker-entrypoint.sh"]',
        'ENTRYPOINT ["/app/deploy/entrypoint.sh"]',
        [
            "Dockerfile: ENTRYPOINT /app/deploy/entrypoint.sh is not a file of the project "
            "(deploy/entrypoint.sh)"
        ],
        id="entrypoint-missing",
    ),
    pytest.param(
        "compose",
        "      redis:\n        condition: service_healthy",
        "      redis:\n        condition: service_started",
        [
            "compose.yaml: services.app does not wait for redis to be healthy "
            "(depends_on: redis: condition: service_healthy)"
        ],
        id="redis-not-awaited",
    ),
    pytest.param(
        "compose",
        "    depends_on:\n      db:\n        condition: service_healthy\n",
        "    depends_on:\n",
        [
            "compose.yaml: services.app does not wait for db to be healthy "
            "(depends_on: db: condition: service_healthy)"
        ],
        id="db-not-awaited",
    ),
    pytest.param(
        "compose",
        "    env_file: .env\n",
        "",
        ["compose.yaml: services.app does not read .env (env_file: .env)"],
        id="no-env-file",
    ),
    pytest.param(
        "compose",
        "      SECRET_KEY: \"${SECRET_KEY:?set SECRET_KEY in .env, e.g. python3 -c 'import "
        "secrets; print(secrets.token_hex(32))'}\"",
        "      SECRET_KEY: do-not-write-it-here",
        [
            'compose.yaml: services.app.environment.SECRET_KEY must be "${SECRET_KEY:?message}": '
            "taken from .env, and compose refuses to start without one"
        ],
        id="secret-key-literal",
    ),
    pytest.param(
        "compose",
        'POSTGRES_PASSWORD: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}"',
        "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD}",
        [
            "compose.yaml: services.db.environment.POSTGRES_PASSWORD must be "
            '"${POSTGRES_PASSWORD:?message}": taken from .env'
        ],
        id="password-may-be-missing",
    ),
    pytest.param(
        "compose",
        "blog:${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD in .env}@db",
        "blog:hunter2@db",
        [
            "compose.yaml: the password in services.app.environment.DATABASE_URL must be "
            '"${POSTGRES_PASSWORD:?message}", the database\'s own, taken from .env'
        ],
        id="password-literal-in-url",
    ),
    pytest.param(
        "compose",
        '"postgresql+psycopg://',
        '"postgresql+psycopg2://',
        [
            "compose.yaml: DATABASE_URL uses the driver postgresql+psycopg2, not psycopg 3, "
            "the one installed (postgresql+psycopg://)"
        ],
        id="psycopg2",
    ),
    pytest.param(
        "compose",
        "@db:5432/blog",
        "@localhost:5432/blog",
        [
            "compose.yaml: DATABASE_URL points at blog@localhost/blog, but the database is "
            "blog@db/blog (services.db: POSTGRES_USER, POSTGRES_DB)"
        ],
        id="database-host",
    ),
    pytest.param(
        "compose",
        "redis://redis:6379/0",
        "redis://127.0.0.1:6379/0",
        ["compose.yaml: REDIS_URL's host is 127.0.0.1, not the redis service"],
        id="redis-host",
    ),
    pytest.param(
        "compose",
        "      - app-logs:/app/logs",
        "      - app-logs:/app/instance",
        [
            "compose.yaml: LOG_DIR /app/logs is on no named volume of services.app: "
            "its files would go with the container"
        ],
        id="log-dir-not-on-a-volume",
    ),
    pytest.param(
        "compose",
        "      - db-data:/var/lib/postgresql/data",
        "      - ./data:/var/lib/postgresql/data",
        ["compose.yaml: services.db keeps its data on no named volume"],
        id="database-not-on-a-volume",
    ),
    pytest.param(
        "dockerfile",
        "RUN pybabel compile -d app/translations \\\n    && python",
        "RUN python",
        [
            "Dockerfile: no RUN pybabel compile -d app/translations: "
            "the image would have no messages.mo, and its pages no Chinese"
        ],
        id="catalogues-not-compiled",
    ),
    pytest.param(
        "dockerignore",
        "\n.env*\n",
        "\n.env\n",
        [".dockerignore does not leave out .env*"],
        id="env-file-in-the-image",
    ),
]


@pytest.mark.parametrize(("file", "original", "broken", "expected"), MISTAKES)
def test_each_check_finds_its_mistake(routes, file, original, broken, expected):
    """A copy of the files with one mistake gets exactly the sentence that names it."""
    files = ContainerFiles.of_project()
    if isinstance(file, str):
        file, original, broken = (file,), (original,), (broken,)
    for name, text_in_it, replacement in zip(file, original, broken, strict=True):
        text = getattr(files, name)
        assert text.count(text_in_it) == 1, f"the copy would not be broken as meant: {text_in_it!r}"
        files = dataclasses.replace(files, **{name: text.replace(text_in_it, replacement)})
    assert container_problems(files, routes, project_settings()) == expected


def test_an_entrypoint_that_is_not_executable_is_found(tmp_path, routes):
    """Docker would refuse to start the container ("permission denied")."""
    (tmp_path / "deploy").mkdir()
    shutil.copy(ROOT / ENTRYPOINT, tmp_path / ENTRYPOINT)
    (tmp_path / ENTRYPOINT).chmod(0o644)
    files = dataclasses.replace(ContainerFiles.of_project(), root=tmp_path)
    assert container_problems(files, routes, project_settings()) == [
        f"Dockerfile: ENTRYPOINT {ENTRYPOINT} is not executable: chmod +x {ENTRYPOINT} "
        f"(and git update-index --chmod=+x {ENTRYPOINT})"
    ]
    (tmp_path / ENTRYPOINT).chmod(0o755)
    assert container_problems(files, routes, project_settings()) == []


# --- The entrypoint, run ------------------------------------------------------


def container_env(log_dir: Path, **settings: object) -> dict[str, str]:
    """The app container's environment, here: the Dockerfile's ENV, then compose.yaml's
    values for the app (less those it fills in from .env), then local counterparts of
    what exists only inside compose's network: the test Redis for the redis service,
    `log_dir` for the volume; the venv's commands first on PATH; then `settings`."""
    parsed = parse(ContainerFiles.of_project())
    from_compose = {name: value for name, value in parsed.app_env.items() if "${" not in value}
    local = {"REDIS_URL": REDIS_URL, "LOG_DIR": log_dir}
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    return clean_env(**{**parsed.image_env, **from_compose, **local, "PATH": path, **settings})


@contextmanager
def entrypoint(
    env: dict[str, str], output: Path, *arguments: str, cwd: Path = ROOT
) -> Iterator[subprocess.Popen]:
    """Start deploy/docker-entrypoint.sh as the image does: a process of its own, with
    `arguments`, its output (stdout and stderr, as `docker logs` shows them) in a file.

    It gets a process group of its own, ended whole at the end as a container's
    processes are, so that nothing it started outlives a failed test.
    """
    with open(output, "w") as out:
        process = subprocess.Popen(
            ["sh", ROOT / ENTRYPOINT, *arguments],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):  # nothing left in the group
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def health_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the image's HEALTHCHECK command, with the container's environment `env`."""
    command = healthcheck_command(parse_dockerfile((ROOT / "Dockerfile").read_text()))
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)


def last_line(text: str) -> str:
    """The last line of a command's output: where Python names the exception that ended it."""
    return text.rstrip("\n").rsplit("\n", 1)[-1]


def health_status(base_url: str, host: str) -> int | None:
    """The status /healthz answers for this Host; None while nothing answers."""
    try:
        status, _, _ = Browser(base_url, timeout=10).request("/healthz", headers={"Host": host})
    except OSError:
        return None
    return status


def first_column(url: str, sql: str) -> list:
    """The first column of the rows `sql` returns, read from the database at `url` directly."""
    engine = create_engine(database_url(url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text(sql)).scalars())
    finally:
        engine.dispose()


@pytest.mark.system
def test_the_entrypoint_migrates_then_becomes_gunicorn_which_sigterm_stops(
    tmp_path, fresh_database_url
):
    """The container's life: migrations, gunicorn in the script's own process (PID 1 in
    the container, so `docker stop` reaches it), the health check, and SIGTERM."""
    port = free_port()
    host = "blog.example.com"
    env = container_env(
        tmp_path,
        SECRET_KEY=SECRET,
        DATABASE_URL=fresh_database_url,
        GUNICORN_BIND=f"127.0.0.1:{port}",
        WEB_CONCURRENCY=2,
        TRUSTED_HOSTS=host,
    )
    output = tmp_path / "entrypoint.out"
    base_url = f"http://127.0.0.1:{port}"
    with entrypoint(env, output) as process:
        # Two workers importing the app on a busy machine can take a while.
        wait_until(
            lambda: health_status(base_url, host) == 200 or process.poll() is not None,
            timeout=120,
            message="gunicorn started by the entrypoint",
        )
        assert process.poll() is None, output.read_text()

        # The script exec'd gunicorn: the process it started as is gunicorn's master.
        argv = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode().split("\0")
        assert argv[1:] == [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "blog:app", ""]

        # Migrated to the newest revision, and the pages work on it.
        head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
        assert first_column(fresh_database_url, "SELECT version_num FROM alembic_version") == [head]
        browser = Browser(base_url)
        headers = {"Host": host}
        status, _, page = browser.request("/auth/register", headers=headers)
        assert status == 200
        form = {
            "csrf_token": pages.csrf_token(page),
            "username": "container",
            "email": "container@example.com",
            "password": "a-good-password",
            "password2": "a-good-password",
        }
        status, response_headers, _ = browser.request("/auth/register", form, headers=headers)
        assert (status, response_headers["Location"]) == (302, "/auth/login")
        assert first_column(fresh_database_url, 'SELECT username FROM "user"') == ["container"]

        # The image's health check names the host TRUSTED_HOSTS lets in; asked
        # for 127.0.0.1, Flask would refuse it and the container would be unhealthy.
        assert health_check(env).returncode == 0
        refused = health_check({k: v for k, v in env.items() if k != "TRUSTED_HOSTS"})
        assert refused.returncode == 1
        assert last_line(refused.stderr) == "urllib.error.HTTPError: HTTP Error 400: BAD REQUEST"

        process.send_signal(signal.SIGTERM)  # what `docker stop` sends to PID 1
        # gunicorn's graceful_timeout (30 s) bounds it; this only ends a hung test.
        assert process.wait(timeout=60) == 0

    lines = output.read_text().splitlines()
    assert lines[0] == "docker-entrypoint: flask db upgrade"
    gunicorn_lines = lines[lines.index("docker-entrypoint: exec gunicorn") + 1 :]
    master = f"[{process.pid}] [INFO] "
    messages = [line.partition(master)[2] for line in gunicorn_lines if master in line]
    assert messages[:2] == [
        f"Starting gunicorn {gunicorn.__version__}",
        f"Listening at: {base_url} ({process.pid})",
    ]
    assert messages[-2:] == ["Handling signal: term", "Shutting down: Master"]
    assert sum("Booting worker with pid" in line for line in gunicorn_lines) == 2

    stopped = health_check(env)
    assert stopped.returncode == 1
    assert last_line(stopped.stderr) == (
        "urllib.error.URLError: <urlopen error [Errno 111] Connection refused>"
    )


@pytest.mark.system
@pytest.mark.parametrize(
    ("settings", "status", "error"),
    [
        pytest.param(
            {"DATABASE_URL": "postgresql://blog@127.0.0.1:{port}/blog"},
            1,
            "sqlalchemy.exc.OperationalError: (psycopg.OperationalError) connection failed: "
            'connection to server at "127.0.0.1", port {port} failed: Connection refused',
            id="database-unreachable",
        ),
        pytest.param(
            {"DATABASE_URL": "not-a-url"},
            1,
            "sqlalchemy.exc.ArgumentError: Could not parse SQLAlchemy URL from given URL string",
            id="database-url-garbage",
        ),
        pytest.param(
            {"SECRET_KEY": ""},
            3,
            "Configuration error: SECRET_KEY is not set. Production needs its own secret key: "
            f"add a line SECRET_KEY=<key> to {ROOT / '.env'} (the app reads it, under systemd "
            "too), or export SECRET_KEY=<key> in the shell that starts the app. Make a key with:",
            id="no-secret-key",
        ),
    ],
)
def test_a_failed_migration_stops_the_entrypoint_before_gunicorn(
    tmp_path, fresh_database_url, settings, status, error
):
    """set -e: the container stops with the migration's error and status, and
    gunicorn never starts on a schema the code doesn't match."""
    port = free_port()  # nothing listens on it
    env = container_env(
        tmp_path,
        **{
            "SECRET_KEY": SECRET,
            "DATABASE_URL": fresh_database_url,
            "GUNICORN_BIND": f"127.0.0.1:{free_port()}",
            **{name: value.format(port=port) for name, value in settings.items()},
        },
    )
    output = tmp_path / "entrypoint.out"
    with entrypoint(env, output) as process:
        assert process.wait(timeout=60) == status
    lines = output.read_text().splitlines()
    assert lines[0] == "docker-entrypoint: flask db upgrade"
    assert error.format(port=port) in lines
    assert "docker-entrypoint: exec gunicorn" not in lines
    assert not any("Starting gunicorn" in line for line in lines)


@pytest.mark.system
def test_the_entrypoint_runs_a_command_given_instead_of_migrating(tmp_path):
    """`docker compose run --rm app flask db current`: the command runs in the
    script's own process, from the project's folder, and nothing touches the database."""
    env = container_env(tmp_path, DATABASE_URL=f"postgresql://blog@127.0.0.1:{free_port()}/blog")
    output = tmp_path / "entrypoint.out"
    command = 'echo "$$ $FLASK_APP $PWD"; exit 7'
    with entrypoint(env, output, "sh", "-c", command, cwd=tmp_path) as process:
        assert process.wait(timeout=30) == 7
    assert output.read_text() == f"{process.pid} blog.py {ROOT}\n"

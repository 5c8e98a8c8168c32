"""deploy/blog.service against what the app needs: the paths it names, and
the writes its sandbox leaves possible.

`systemd-analyze verify` (tests/test_deploy.py) checks the unit's syntax and
that its commands exist, but not that a ReadWritePaths= path exists: systemd
finds that out when it starts the unit, and refuses to (status
226/NAMESPACE). No systemd runs here to start it, so from the unit's text:

1. every absolute path the unit names exists once the README's procedure
   has run (a clone of the project in /srv/blog, its .venv and .env), or on
   this machine (/bin/kill), or is marked optional with "-";
2. the folders the app writes in by default (LOG_DIR, and the instance
   folder of the default SQLite database), as the app itself names them,
   are writable under the unit's sandbox as systemd's documentation reads it;
3. the service itself, in that sandbox built as systemd builds it, with a
   mount namespace of its own (unshare): every file system read-only but
   /dev, /proc and /sys, each ReadWritePaths= path bound over itself
   writable (a missing one without "-" refused, as systemd does), an empty
   /tmp and /var/tmp (PrivateTmp=). A copy of the project is bound at
   /srv/blog, the paths the unit names. ExecStartPre, then ExecStart: it
   must migrate, serve, log, count rate limits and record an error. Nothing
   is mounted outside that namespace.

ProtectHome= is the one directive the sandbox leaves out: it hides /root and
/home, where the Python running these tests may live (on the server,
Debian's is in /usr), and it is about reading, not about what the app writes.
"""

import json
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from config import database_url as sqlalchemy_url
from tests.databases import ON_POSTGRESQL
from tests.helpers import PASSWORD
from tests.mutation.mutate import project_files
from tests.servers import BIN, ROOT, Browser, clean_env, free_port, wait_until

UNIT = ROOT / "deploy" / "blog.service"
# Where the README puts the project, and the unit expects it.
SERVER_ROOT = PurePosixPath("/srv/blog")
# The directives whose paths may be marked optional ("-": ignored if missing).
PATH_LISTS = {"ReadWritePaths", "ReadOnlyPaths", "InaccessiblePaths", "ExecPaths", "NoExecPaths"}
OPTIONAL_WITH_A_DASH = PATH_LISTS | {"EnvironmentFile", "WorkingDirectory"}
# The prefixes systemd allows before the command of an Exec*= line.
EXEC_PREFIXES = "@-:+!"


# --- Reading the unit ---------------------------------------------------------------------


@dataclass(frozen=True)
class Directive:
    section: str
    key: str
    value: str


@dataclass(frozen=True)
class NamedPath:
    key: str  # the directive that names it
    path: str
    optional: bool  # marked with "-": systemd goes on without it


def read_unit(unit_text: str) -> list[Directive]:
    """The unit's directives in order (no line continuations: ours has none)."""
    directives, section = [], ""
    for line in unit_text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        directives.append(Directive(section, key.strip(), value.strip()))
    return directives


def values(directives: list[Directive], key: str) -> list[str]:
    """Every value given to `key`, split as systemd splits a list."""
    return [word for d in directives if d.key == key for word in shlex.split(d.value)]


def named_paths(directives: list[Directive]) -> list[NamedPath]:
    """Every absolute path the unit names: commands and their arguments,
    folders, files. Only a path in a directive that allows it can be optional."""
    found = []
    for directive in directives:
        words = shlex.split(directive.value)
        if directive.key.startswith("Exec") and words:
            words[0] = words[0].lstrip(EXEC_PREFIXES)
        for word in words:
            optional = directive.key in OPTIONAL_WITH_A_DASH and word.startswith("-")
            path = word.lstrip("-+") if directive.key in OPTIONAL_WITH_A_DASH else word
            if path.startswith("/"):
                found.append(NamedPath(directive.key, path, optional))
    return found


# --- What the README's procedure makes -----------------------------------------------------


def server_paths_after_the_readme() -> set[PurePosixPath]:
    """What exists under /srv/blog once the README's steps have run on
    PostgreSQL: the clone (its files and their folders), the .venv's commands
    (`make .venv/.installed`, as the environment running these tests has
    them) and .env. Nothing more: no instance/, which only SQLite makes."""
    made = {SERVER_ROOT / name for name in project_files()}
    made |= {SERVER_ROOT / ".venv" / "bin" / command.name for command in BIN.iterdir()}
    made.add(SERVER_ROOT / ".env")
    return made | {folder for path in made for folder in path.parents}


def missing_paths(directives: list[Directive]) -> list[str]:
    """The paths the unit needs that won't be there: under /srv/blog, not made
    by the README; elsewhere, not on this machine (Debian 12, like the server)."""
    made = server_paths_after_the_readme()
    missing = []
    for named in named_paths(directives):
        path = PurePosixPath(named.path)
        there = path in made if path.is_relative_to(SERVER_ROOT) else Path(path).exists()
        if not there and not named.optional:
            missing.append(f"{named.key}: {named.path}")
    return missing


def test_every_path_the_unit_names_is_made_by_the_readme_or_optional():
    """systemd refuses to start a unit one of whose ReadWritePaths= is
    missing: on PostgreSQL there is no instance/ folder, so it needs its "-"."""
    assert missing_paths(read_unit(UNIT.read_text())) == []


def test_a_missing_path_without_its_dash_is_found():
    """The unit as it was: instance/ required, which PostgreSQL never makes."""
    unit_text = UNIT.read_text()
    assert "-/srv/blog/instance" in unit_text
    without_the_dash = unit_text.replace("-/srv/blog/instance", "/srv/blog/instance")
    assert missing_paths(read_unit(without_the_dash)) == ["ReadWritePaths: /srv/blog/instance"]


def test_paths_are_read_from_every_kind_of_directive():
    unit_text = (
        "[Service]\n"
        "WorkingDirectory=-/srv/blog\n"
        "ExecStartPre=-/srv/blog/.venv/bin/flask db upgrade\n"
        "ExecStart=@/srv/blog/.venv/bin/gunicorn gunicorn -c /srv/blog/gunicorn.conf.py\n"
        "EnvironmentFile=-/srv/blog/.env\n"
        "# ReadWritePaths=/commented/out\n"
        "ReadWritePaths=/srv/blog/logs -/srv/blog/instance +/var/lib/blog\n"
        "ReadOnlyPaths=/etc/blog\n"
    )
    assert named_paths(read_unit(unit_text)) == [
        NamedPath("WorkingDirectory", "/srv/blog", True),
        NamedPath("ExecStartPre", "/srv/blog/.venv/bin/flask", False),
        NamedPath("ExecStart", "/srv/blog/.venv/bin/gunicorn", False),
        NamedPath("ExecStart", "/srv/blog/gunicorn.conf.py", False),
        NamedPath("EnvironmentFile", "/srv/blog/.env", True),
        NamedPath("ReadWritePaths", "/srv/blog/logs", False),
        NamedPath("ReadWritePaths", "/srv/blog/instance", True),
        NamedPath("ReadWritePaths", "/var/lib/blog", False),
        NamedPath("ReadOnlyPaths", "/etc/blog", False),
    ]


# --- What the sandbox lets the app write, on paper ------------------------------------------


def access_rules(directives: list[Directive]) -> dict[PurePosixPath, str]:
    """Folder -> "rw", "ro" or "none", as the unit's sandboxing directives
    set them (systemd.exec(5)); the most specific folder decides."""
    setting = {d.key: d.value for d in directives}
    rules = {PurePosixPath("/"): "rw"}
    protect_system = setting.get("ProtectSystem", "no")
    if protect_system == "strict":
        rules[PurePosixPath("/")] = "ro"
        rules |= dict.fromkeys(map(PurePosixPath, ["/dev", "/proc", "/sys"]), "rw")
    elif protect_system in ("yes", "true", "full"):
        read_only = ["/usr", "/boot", "/efi"] + (["/etc"] if protect_system == "full" else [])
        rules |= dict.fromkeys(map(PurePosixPath, read_only), "ro")
    home = setting.get("ProtectHome", "no")
    if home in ("yes", "true", "read-only", "tmpfs"):
        mode = "ro" if home == "read-only" else "none"
        rules |= dict.fromkeys(map(PurePosixPath, ["/home", "/root", "/run/user"]), mode)
    if setting.get("PrivateTmp") in ("yes", "true"):
        rules |= dict.fromkeys(map(PurePosixPath, ["/tmp", "/var/tmp"]), "rw")
    for key, mode in [("ReadWritePaths", "rw"), ("ReadOnlyPaths", "ro")]:
        for word in values(directives, key):
            rules[PurePosixPath(word.lstrip("-+"))] = mode
    for word in values(directives, "InaccessiblePaths"):
        rules[PurePosixPath(word.lstrip("-+"))] = "none"
    return rules


def writable(rules: dict[PurePosixPath, str], path: PurePosixPath) -> bool:
    """True if the most specific rule over `path` leaves it writable."""
    folder = max((f for f in rules if path.is_relative_to(f)), key=lambda f: len(f.parts))
    return rules[folder] == "rw"


APP_WRITES = """
import json
import re
from app import create_app
from app.extensions import db
from app.rate_limit_store import database_path
from app.reporting.storm import store_location
from config import Config
app = create_app(Config)
with app.app_context():
    print(json.dumps({
        "LOG_DIR": app.config["LOG_DIR"],
        "the log file": app.config["LOG_DIR"] + "/" + app.config["LOG_FILE"],
        "the SQLite database": db.engine.url.database,
        "the rate limits' file": database_path(app.config["RATELIMIT_STORAGE_URI"]),
        "storm control's store": store_location(app.config),
    }))
"""


@pytest.mark.system
def test_what_the_app_writes_by_default_is_writable_in_the_sandbox():
    """The places the app names with no settings at all, moved to /srv/blog:
    each folder it makes files in must be writable under ProtectSystem=strict.

    Asked of the app in a process of its own, with nothing set: no .env, the
    log on stdout (it is the folder that counts, and the project's own logs/
    stays untouched)."""
    env = clean_env(LOG_TO_STDOUT="1", PYTHON_DOTENV_DISABLED="1")
    done = subprocess.run(
        [BIN / "python", "-c", APP_WRITES], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    places = json.loads(done.stdout.splitlines()[-1])
    assert places["LOG_DIR"] == str(ROOT / "logs")
    assert places["the SQLite database"] == str(ROOT / "instance" / "blog.db")

    rules = access_rules(read_unit(UNIT.read_text()))
    folders = {name: SERVER_ROOT / Path(path).relative_to(ROOT) for name, path in places.items()}
    folders = {name: path if name == "LOG_DIR" else path.parent for name, path in folders.items()}
    assert {name: writable(rules, folder) for name, folder in folders.items()} == dict.fromkeys(
        places, True
    )
    # And what the sandbox is for: the code and the settings can't be changed.
    for path in ["app/__init__.py", ".env", ".venv/bin/gunicorn", "migrations"]:
        assert not writable(rules, SERVER_ROOT / path), path


def test_the_sandbox_rules_read_as_systemd_documents_them():
    directives = read_unit(
        "[Service]\nProtectSystem=strict\nProtectHome=true\nPrivateTmp=true\n"
        "ReadWritePaths=/srv/blog/logs -/srv/blog/instance\n"
        "ReadOnlyPaths=/srv/blog/logs/archive\n"
    )
    rules = access_rules(directives)
    expected = {
        "/srv/blog": False,
        "/srv/blog/logs": True,
        "/srv/blog/logs/blog.log": True,
        "/srv/blog/logs/archive/old.log": False,
        "/srv/blog/instance/blog.db": True,
        "/srv/blog/instancefolder": False,
        "/tmp/x": True,
        "/var/tmp/x": True,
        "/var/lib/x": False,
        "/root/x": False,
        "/dev/shm/x": True,
    }
    assert {path: writable(rules, PurePosixPath(path)) for path in expected} == expected
    # Without ProtectSystem=strict, everything but what is named is writable.
    rules = access_rules(read_unit("[Service]\nProtectSystem=full\n"))
    assert [writable(rules, PurePosixPath(p)) for p in ["/etc/x", "/usr/x", "/srv/x"]] == [
        False,
        False,
        True,
    ]


# --- The service, run in the sandbox ----------------------------------------------------------

# Builds the unit's sandbox in the mount namespace unshare made, then runs the
# command. $1: the folder to bind at /srv; $2: the ReadWritePaths= words; $3:
# the WorkingDirectory=; the rest: the command. Exit status 226 (systemd's
# for a namespace it couldn't set up) for a missing ReadWritePaths= path
# without its "-".
SANDBOX = r"""
set -eu
mount --bind "$1" /srv
# The virtualenv (/srv/blog/.venv links to the one running the tests): kept
# within reach, since PrivateTmp= below hides it if it lives under /tmp, as
# in a CI checkout there.
venv=$(readlink -f /srv/blog/.venv)
mount --bind "$venv" /srv/.venv-stage
# ProtectSystem=strict: every file system read-only, but the API ones. A
# mount that refuses is left alone: the check below is what must hold.
awk '{print $2}' /proc/self/mounts | sort -u | while read -r point; do
    case "$point" in /dev|/dev/*|/proc|/proc/*|/sys|/sys/*) continue ;; esac
    mount -o remount,bind,ro "$point" 2>/dev/null || true
done
for word in $2; do
    path=${word#-}
    if [ ! -e "$path" ]; then
        if [ "$path" != "$word" ]; then continue; fi
        echo "sandbox: ReadWritePaths=$path is missing" >&2
        exit 226
    fi
    mount --bind "$path" "$path"
    mount -o remount,bind,rw "$path"
done
# PrivateTmp=
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /var/tmp
case "$venv" in /tmp/* | /var/tmp/*)
    mkdir -p "$venv"
    mount --bind /srv/.venv-stage "$venv"
esac
if touch /srv/blog/.sandbox-probe 2>/dev/null; then
    echo "sandbox: /srv/blog is still writable" >&2
    exit 1
fi
cd "$3"
shift 3
exec "$@"
"""


def sandbox_available() -> str | None:
    """Why the sandbox can't be built here, or None if it can."""
    if shutil.which("unshare") is None:
        return "unshare is not installed (util-linux)"
    if not Path("/srv").is_dir():
        return "there is no /srv to bind the project's copy at"
    tried = subprocess.run(["unshare", "--mount", "true"], capture_output=True, text=True)
    if tried.returncode != 0:
        return f"no mount namespace for this user: {tried.stderr.strip()}"
    return None


@dataclass
class Service:
    """The unit's commands, run in its sandbox with the project copied to `srv`/blog."""

    srv: Path
    directives: list[Directive]
    env: dict[str, str]

    @property
    def project(self) -> Path:
        return self.srv / "blog"

    def command(self, *argv: str) -> list[str]:
        """`argv`, to be run in the sandbox (see SANDBOX)."""
        paths = " ".join(values(self.directives, "ReadWritePaths"))
        [working_directory] = values(self.directives, "WorkingDirectory")
        unshare = ["unshare", "--mount", "--propagation", "private"]
        sandbox = ["sh", "-c", SANDBOX, "sandbox", str(self.srv), paths, working_directory]
        return [*unshare, *sandbox, *argv]

    def run(self, *argv: str) -> subprocess.CompletedProcess:
        """Run `argv` in the sandbox, from the unit's WorkingDirectory, and wait."""
        return subprocess.run(
            self.command(*argv),
            cwd=self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def exec_line(self, key: str) -> list[str]:
        """The command of the unit's `key` (ExecStart...), without systemd's prefixes."""
        [line] = [d.value for d in self.directives if d.key == key]
        words = shlex.split(line)
        return [words[0].lstrip(EXEC_PREFIXES), *words[1:]]


def copy_the_project(srv: Path) -> Path:
    """/srv/blog as the README's clone and `make .venv/.installed` leave it:
    the project's files, and a .venv (here, the one running the tests)."""
    project = srv / "blog"
    for name in project_files():
        target = project / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    (project / ".venv").symlink_to(BIN.parent)
    (srv / ".venv-stage").mkdir()  # where the sandbox keeps the virtualenv in reach
    return project


@pytest.fixture
def service(tmp_path) -> Service:
    """The unit's commands, ready to run in its sandbox on a copy of the project
    (skipped where no mount namespace can be made)."""
    if reason := sandbox_available():
        pytest.skip(reason)
    srv = tmp_path / "srv"
    copy_the_project(srv)
    directives = read_unit(UNIT.read_text())
    # The unit's Environment=, and nothing of the app's settings but .env.
    env = clean_env(**dict(word.split("=", 1) for word in values(directives, "Environment")))
    return Service(srv, directives, env)


DATABASES = ["SQLite, the default", "PostgreSQL"]
# Where Debian's PostgreSQL puts its Unix socket.
SOCKET_FOLDER = Path("/var/run/postgresql")


def through_the_local_socket(url: str) -> str:
    """`url` through PostgreSQL's Unix socket, as the README's
    postgresql:///blog goes (a socket in a read-only file system can still be
    connected to); `url` itself if the server has no socket here."""
    parsed = make_url(url)
    if parsed.host not in ("127.0.0.1", "localhost", "::1"):
        return url
    if not (SOCKET_FOLDER / f".s.PGSQL.{parsed.port or 5432}").exists():
        return url
    local = parsed.set(host="", port=parsed.port, query={"host": str(SOCKET_FOLDER)})
    return local.render_as_string(hide_password=False)


# What the app and SQLite say when a file can't be written (app/logger.py,
# app/reporting/log_file.py, app/reporting/storm.py, sqlite3).
CANNOT_WRITE = ["Cannot write", "Cannot open", "unusable", "Read-only", "readonly"]
TROUBLE = [*CANNOT_WRITE, "Traceback"]


@pytest.mark.parametrize("database", DATABASES)
@pytest.mark.system
def test_the_service_migrates_serves_logs_and_records_errors_in_its_sandbox(
    service, fresh_database_url, database
):
    """The README's deployment, then the unit's commands in its sandbox.

    SQLite: the README's `flask db upgrade` (outside the sandbox, as the
    service's user) makes instance/ and the database; then the service must
    write both. PostgreSQL (through its Unix socket where it has one here, as
    the README's postgresql:///blog): no instance/ at all, and the unit must
    start without it. Either way the log, its lock, the rate limits' file and
    storm control's store are written in logs/; `flask test-error` in the
    same sandbox stands for a 500 (one error through the log and the store).
    """
    project = service.project
    port = free_port()
    settings = [
        "SECRET_KEY=a-secret-key-for-the-sandboxed-service-test",
        f"GUNICORN_BIND=127.0.0.1:{port}",
        "WEB_CONCURRENCY=2",
    ]
    if database == "PostgreSQL":
        if not ON_POSTGRESQL:
            pytest.skip("PostgreSQL runs only (TEST_DATABASE_URL)")
        settings.append(f"DATABASE_URL={through_the_local_socket(fresh_database_url)}")
    (project / ".env").write_text("\n".join(settings) + "\n")
    if database != "PostgreSQL":
        # The README's step 6, before the service is started.
        done = subprocess.run(
            [project / ".venv" / "bin" / "flask", "db", "upgrade"],
            cwd=project,
            env=service.env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert (project / "instance" / "blog.db").exists()
    else:
        assert not (project / "instance").exists()

    migrated = service.run(*service.exec_line("ExecStartPre"))
    assert migrated.returncode == 0, migrated.stderr

    errors = project.parent / "gunicorn.err"
    with open(errors, "w") as err:
        process = subprocess.Popen(
            service.command(*service.exec_line("ExecStart")),
            cwd=project,
            env=service.env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        browser = Browser(f"http://127.0.0.1:{port}")

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"gunicorn exited:\n{errors.read_text()}")
            try:
                return browser.request("/healthz")[0] == 200
            except OSError:
                return False

        wait_until(answers, timeout=120, message="the sandboxed service to answer")
        fields = {"email": "ada@example.com", "password": PASSWORD, "password2": PASSWORD}
        status, headers, _ = browser.submit("/auth/register", {"username": "ada", **fields})
        assert (status, headers.get("Location")) == (302, "/auth/login")
        failed = browser.submit("/auth/login", {"username": "ada", "password": "wrong-password"})
        assert failed[0] == 200
        recorded = service.run(str(SERVER_ROOT / ".venv" / "bin" / "flask"), "test-error")
        assert recorded.returncode == 0, recorded.stdout + recorded.stderr
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, errors.read_text()

    stderr = errors.read_text() + migrated.stderr + recorded.stderr
    log = (project / "logs" / "blog.log").read_text()
    assert [trouble for trouble in TROUBLE if trouble in stderr] == [], stderr
    # The log holds the test error's traceback, and must hold no other trouble.
    assert [trouble for trouble in CANNOT_WRITE if trouble in log] == [], log
    assert "Test error" in log
    with sqlite3.connect(project / "logs" / "errors.sqlite3") as store:
        assert store.execute("SELECT count(*) FROM error_groups").fetchone() == (1,)
    with sqlite3.connect(project / "logs" / "rate-limits.sqlite3") as limits:
        assert limits.execute("SELECT count(*) FROM rate_limits").fetchone()[0] > 0
    if database == "PostgreSQL":
        engine = create_engine(sqlalchemy_url(fresh_database_url))
    else:
        engine = create_engine(f"sqlite:///{project / 'instance' / 'blog.db'}")
    with engine.connect() as connection:
        names = connection.execute(text('SELECT username FROM "user"')).scalars().all()
    assert names == ["ada"]
    engine.dispose()
    # What the sandbox kept the service from touching: nothing else was written.
    assert not (project / ".sandbox-probe").exists()
    if database == "PostgreSQL":
        assert not (project / "instance").exists()


@pytest.mark.system
def test_the_sandbox_refuses_a_missing_path_as_systemd_does(service):
    """The emulation is strict where systemd is: without its "-", a missing
    instance/ stops the service before it runs (as the unit shipped once did)."""
    directives = [
        Directive(d.section, d.key, d.value.replace("-/srv/blog/instance", "/srv/blog/instance"))
        for d in service.directives
    ]
    refused = Service(service.srv, directives, service.env).run("true")
    assert (refused.returncode, refused.stderr) == (
        226,
        "sandbox: ReadWritePaths=/srv/blog/instance is missing\n",
    )
    allowed = service.run("sh", "-c", "touch logs/x && ! touch x 2>/dev/null && echo ok")
    assert (allowed.returncode, allowed.stdout, allowed.stderr) == (0, "ok\n", "")


# --- check-deploy on the settings the README's procedure writes ---------------------------


README = ROOT / "README.md"


def procedure_settings() -> list[dict[str, str]]:
    """The settings each `tee .env` / `tee -a .env` of README's deployment
    procedure writes, in order, with its $(...) and $SITE filled in."""
    section = README.read_text().split("## Deploying", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"tee (?:-a )?\.env >/dev/null <<END\n(.*?)\nEND\n", section, re.DOTALL)
    site = re.search(r"^SITE=(\S+)", section, re.MULTILINE)[1]
    settings = []
    for block in blocks:
        lines = [line for line in block.splitlines() if line and not line.startswith("#")]
        pairs = dict(line.split("=", 1) for line in lines)
        settings.append(
            {
                name: value.replace("$SITE", site).replace(
                    "$(python3 -c 'import secrets; print(secrets.token_hex(32))')", "a" * 64
                )
                for name, value in pairs.items()
            }
        )
    return settings


def test_the_procedure_writes_what_the_test_below_reads():
    first, then = procedure_settings()
    assert {"FLASK_CONFIG", "SECRET_KEY", "DATABASE_URL", "PROXY_COUNT", "ADMINS"} <= set(first)
    assert first["DATABASE_URL"] == "postgresql:///blog"
    assert then == {"SESSION_COOKIE_SECURE": "1", "BASE_URL": "https://blog.example.com"}


@pytest.mark.system
def test_check_deploy_finds_nothing_once_the_procedure_is_done(tmp_path, fresh_database_url):
    """Step 6 warns only of the two settings step 9 sets; after step 9,
    "No problems found." (the database is the test's: the procedure's is
    reached through a socket only the server has)."""
    first, then = procedure_settings()
    env = clean_env(
        FLASK_APP="blog.py",
        PYTHON_DOTENV_DISABLED="1",
        FLASK_SKIP_DOTENV="1",
        **{**first, "DATABASE_URL": fresh_database_url},
        LOG_DIR=tmp_path / "logs",
    )
    flask = [BIN / "flask"]
    migrated = subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, capture_output=True)
    assert migrated.returncode == 0, migrated.stderr

    def check_deploy(settings: dict[str, str]) -> tuple[int, list[str]]:
        done = subprocess.run(
            [*flask, "check-deploy"],
            cwd=ROOT,
            env=settings,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.returncode, done.stdout.splitlines()

    status, lines = check_deploy(env)
    assert status == 0, lines
    # Before HTTPS: what step 9 sets, and nothing else.
    assert [" ".join(line.split()[:3]) for line in lines] == [
        "WARNING: Neither BASE_URL",
        "WARNING: SESSION_COOKIE_SECURE is",
        "No problems found.",
    ], lines
    assert check_deploy(env | then) == (0, ["No problems found."])

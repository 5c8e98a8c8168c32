"""The guides in docs/ name files and functions; check that they all exist.

What counts as a name, in backticks:

- a path: ``app/errors.py``, ``app/templates/base.html``, ``app/templates/errors/``
  (a file ending .py or .html, or a folder ending with a slash);
- a function or class of ours: ``error_response()``, one plain name with empty
  parentheses (library calls are written dotted or with arguments, such as
  ``db.session.rollback()`` or ``app.run(debug=True)``, and are not checked);
- a "file, name" pair: ``app/errors.py``, function ``error_response``, or
  ``config.py``, ``ProductionConfig.check``: the name must be defined in that file.

"Defined" means a line ``def name``, ``class name`` or ``name =``.

The README is checked where it repeats the code: the configuration table's
defaults against config.py, and the tour against the files that exist and
against the map of the error path in app/reporting/__init__.py.

The fault lab (app/lab/) points the other way: each experiment names a heading
of each guide and the code that handles its failure, and the guides and the
README name each experiment. Both directions are checked at the end.
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.lab.cli import lab_command
from app.lab.experiments import DEFAULT_STORM, EXPERIMENTS, MAX_STORM
from app.lab.sandbox import LAB_ERROR_WINDOW, LAB_MAIL_TIMEOUT

ROOT = Path(__file__).resolve().parent.parent
GUIDES = [ROOT / "docs" / "guide.md", ROOT / "docs" / "guide.zh-CN.md"]
SOURCES = [
    *sorted((ROOT / "app").rglob("*.py")),
    ROOT / "blog.py",
    ROOT / "config.py",
    ROOT / "gunicorn.conf.py",
]

PATH = re.compile(r"`([\w.-]+(?:/[\w.-]+)*(?:\.py|\.html|/))`")
CALL = re.compile(r"`([A-Za-z_]\w*)\(\)`")
# `file.py`, then a comma (English, or the full-width Chinese one), an optional word, then `name`.
PAIR = re.compile(
    r"`([\w./-]+\.py)`\s*[,\uff0c]\s*(?:function|class|method|函数|类|方法)?\s*"
    r"`([A-Za-z_][\w.]*)(?:\(\))?`"
)


def defines(source: str, name: str) -> bool:
    """True if `source` has a line `def name`, `class name` or `name =`."""
    name = re.escape(name)
    pattern = rf"^\s*(?:async\s+def|def|class)\s+{name}\b|^\s*{name}\s*(?::[^=\n]*)?="
    return re.search(pattern, source, re.MULTILINE) is not None


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def named_files(text: str) -> set[str]:
    return set(PATH.findall(text))


@pytest.fixture(scope="module")
def code() -> str:
    return "\n".join(read(path) for path in SOURCES)


def test_both_guides_exist():
    for guide in GUIDES:
        assert guide.is_file(), f"{guide.relative_to(ROOT)} is missing"
        assert read(guide).strip(), f"{guide.relative_to(ROOT)} is empty"


@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: path.name)
def test_every_file_named_exists(guide):
    missing = [path for path in sorted(named_files(read(guide))) if not (ROOT / path).exists()]
    assert not missing, f"{guide.name} names files that don't exist: {missing}"


@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: path.name)
def test_every_function_named_exists(guide, code):
    names = sorted(set(CALL.findall(read(guide))))
    assert names, "the guide names no functions: has the format changed?"
    missing = [name for name in names if not defines(code, name)]
    assert not missing, f"{guide.name} names functions that aren't defined: {missing}"


@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: path.name)
def test_every_file_and_name_pair_matches(guide):
    pairs = sorted(set(PAIR.findall(read(guide))))
    assert pairs, "the guide has no `file`, `name` pairs: has the format changed?"
    wrong = []
    for path, name in pairs:
        file = ROOT / path
        # A dotted name (ProductionConfig.check): every part is defined in the file.
        if not file.is_file() or not all(defines(read(file), part) for part in name.split(".")):
            wrong.append(f"{path}, {name}")
    assert not wrong, f"{guide.name} names things that aren't in those files: {wrong}"


def test_both_guides_name_the_same_files():
    english, chinese = (named_files(read(guide)) for guide in GUIDES)
    assert english == chinese, (
        f"only in guide.md: {sorted(english - chinese)}; "
        f"only in guide.zh-CN.md: {sorted(chinese - english)}"
    )


@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: path.name)
def test_guides_stand_on_their_own(guide):
    """The project is self-contained: no paths to the material it was built from."""
    text = read(guide)
    assert "/work/" not in text
    assert not re.search(r"\bseeds?\b", text, re.IGNORECASE)


# --- The README ----------------------------------------------------------------

README = ROOT / "README.md"
REPORTING = ROOT / "app" / "reporting"
TABLE_ROW = re.compile(r"^\| `(\w+)` \| ([^|]+) \|", re.MULTILINE)


def section(text: str, heading: str) -> str:
    """The README's section under `heading` ("## ..."), up to the next one of its level."""
    level = heading.split(" ")[0]
    start = text.index(heading + "\n")
    following = re.compile(rf"^{level} ", re.MULTILINE).search(text, start + len(heading))
    return text[start : following.start() if following else len(text)]


def documented_defaults() -> dict[str, str]:
    """The Default column of the README's configuration table, by variable."""
    table = section(read(README), "## Configuration")
    return {name: cell.strip() for name, cell in TABLE_ROW.findall(table)}


def config_defaults(**env: str) -> dict[str, object]:
    """Config's values with none of the settings below in the environment, and
    no .env file (`env` adds some back): what a fresh install runs with."""
    names = ["LOG_MAX_BYTES", "LOG_BACKUP_COUNT", "MAIL_ERROR_WINDOW", "REDIS_URL"]
    names += ["RATELIMIT_STORAGE_URI", "HSTS_MAX_AGE", "TRUSTED_HOSTS", "REGISTRATION_RATE_LIMIT"]
    clean = {key: value for key, value in os.environ.items() if key not in names}
    script = (
        "import json, config\n"
        f"print(json.dumps({{name: getattr(config.Config, name) for name in {names!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=clean | {"PYTHON_DOTENV_DISABLED": "1"} | env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout)


def table_value(cell: str) -> object:
    """A Default cell as a value: `600` is 600, *(none)* is None."""
    if cell == "*(none)*":
        return None
    value = re.match(r"`([^`]*)`", cell).group(1)
    return int(value) if value.isdigit() else value


@pytest.mark.system
def test_the_configuration_table_gives_configs_defaults():
    documented, actual = documented_defaults(), config_defaults()
    for name in ["LOG_MAX_BYTES", "LOG_BACKUP_COUNT", "MAIL_ERROR_WINDOW", "REDIS_URL"]:
        assert table_value(documented[name]) == actual[name], f"README's default for {name}"


@pytest.mark.system
def test_the_security_settings_defaults_are_configs():
    documented, actual = documented_defaults(), config_defaults()
    assert documented["HSTS_MAX_AGE"] == "`31536000` (a year)"
    assert actual["HSTS_MAX_AGE"] == 365 * 24 * 3600
    for name in ("TRUSTED_HOSTS", "REGISTRATION_RATE_LIMIT"):
        assert table_value(documented[name]) == actual[name], f"README's default for {name}"


@pytest.mark.system
def test_the_rate_limits_default_to_redis_url_as_the_table_says():
    documented = "`REDIS_URL`, else `rate-limits.sqlite3` in `LOG_DIR`"
    assert documented_defaults()["RATELIMIT_STORAGE_URI"] == documented
    one_host = config_defaults(LOG_DIR="/var/log/blog")
    assert one_host["RATELIMIT_STORAGE_URI"] == "sqlite:////var/log/blog/rate-limits.sqlite3"
    shared = config_defaults(REDIS_URL="redis://redis.example:6379/3")
    assert shared["RATELIMIT_STORAGE_URI"] == "redis://redis.example:6379/3"
    # memory:// only when chosen.
    chosen = config_defaults(RATELIMIT_STORAGE_URI="memory://", REDIS_URL="redis://r:6379/3")
    assert chosen["RATELIMIT_STORAGE_URI"] == "memory://"


@pytest.mark.system
def test_the_log_retention_the_readme_states_is_configs():
    """The size in the table, and in "When things go wrong", follows the defaults."""
    actual = config_defaults()
    assert actual["LOG_MAX_BYTES"] % 2**20 == 0, "the README speaks of whole MiB"
    files, size = actual["LOG_BACKUP_COUNT"] + 1, actual["LOG_MAX_BYTES"] // 2**20
    table, story = (
        re.sub(r"\s+", " ", section(read(README), heading))
        for heading in ("## Configuration", "## When things go wrong")
    )
    assert f"`{actual['LOG_MAX_BYTES']}` ({size} MiB)" in table
    assert f"{files} files of {size} MiB are kept ({files * size} MiB)" in table
    assert f"by default {files} files of {size} MiB are kept" in story
    assert f"`MAIL_ERROR_WINDOW` ({actual['MAIL_ERROR_WINDOW'] // 60} minutes)" in story


def reporting_modules() -> list[str]:
    return sorted(path.stem for path in REPORTING.glob("*.py") if path.stem != "__init__")


def test_the_tour_names_every_reporting_module_in_the_order_of_the_map():
    tour = section(read(README), "## A tour of the code")
    map_text = ast.get_docstring(ast.parse(read(REPORTING / "__init__.py")))
    assert "`app/reporting/__init__.py`" in tour
    missing = [m for m in reporting_modules() if f"`app/reporting/{m}.py`" not in tour]
    assert not missing, f"README's tour doesn't name {missing}"
    unmapped = [m for m in reporting_modules() if f"`{m}`" not in map_text]
    assert not unmapped, f"app/reporting/__init__.py's map doesn't name {unmapped}"

    def order(text: str, template: str) -> list[str]:
        return sorted(reporting_modules(), key=lambda m: text.index(template.format(m)))

    assert order(tour, "`app/reporting/{}.py`") == order(map_text, "`{}`")


def test_every_file_in_the_tour_exists():
    tour = section(read(README), "## A tour of the code")
    first_cells = re.findall(r"^\| ([^|]+) \|", tour, re.MULTILINE)
    named = [name for cell in first_cells for name in re.findall(r"`([^`]+)`", cell)]
    assert "app/logger.py" in named, "the tour's table has changed its format"
    missing = [name for name in named if not (ROOT / name).exists()]
    assert not missing, f"README's tour names files that don't exist: {missing}"


def test_the_tour_names_every_module_and_folder():
    """A file added to app/ or bench/ is added to the tour, in its own row or in the row
    of its folder; so is each of the tests' support modules, in its own words."""
    tour = section(read(README), "## A tour of the code")
    first_cells = re.findall(r"^\| ([^|]+) \|", tour, re.MULTILINE)
    named = {name.rstrip("/") for cell in first_cells for name in re.findall(r"`([^`]+)`", cell)}

    def in_tour(path: Path) -> bool:
        name = path.relative_to(ROOT).as_posix()
        return any(
            name == row or name.startswith(f"{row}/") or row.startswith(f"{name}/") for row in named
        )

    app_and_bench = [
        *(path for path in (ROOT / "app").iterdir() if path.name != "__pycache__"),
        *(ROOT / "bench").glob("*.py"),
    ]
    support = [path for path in (ROOT / "tests").glob("*.py") if not path.name.startswith("test_")]
    missing = [path for path in app_and_bench if not in_tour(path)]
    missing += [path for path in support if path.relative_to(ROOT).as_posix() not in named]
    assert not missing, (
        f"README's tour doesn't name {sorted(str(p.relative_to(ROOT)) for p in missing)}"
    )


# --- The fault lab ---------------------------------------------------------------


GUIDE_EN, GUIDE_ZH = GUIDES
HEADING = re.compile(r"^#+ (.+?)\s*$", re.MULTILINE)
EXPERIMENT_IDS = [experiment.name for experiment in EXPERIMENTS]


def headings(path: Path) -> list[str]:
    return HEADING.findall(read(path))


def guide_section(path: Path, heading: str) -> str:
    """The text under `heading` in a guide, up to the next heading of its level or above."""
    text = read(path)
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, re.MULTILINE)
    assert match, f"{path.name} has no heading {heading!r}"
    level = len(match.group(1))
    following = re.compile(rf"^#{{1,{level}}} ", re.MULTILINE).search(text, match.end())
    return text[match.end() : following.start() if following else len(text)]


def defines_function_or_class(source: str, name: str) -> bool:
    """True if `source` has a line `def name` or `class name` (at any indentation)."""
    pattern = rf"^\s*(?:async\s+def|def|class)\s+{re.escape(name)}\b"
    return re.search(pattern, source, re.MULTILINE) is not None


def test_the_experiments_are_the_eight_the_docs_describe():
    """The checks below go over EXPERIMENTS; this pins what they go over."""
    assert EXPERIMENT_IDS == [
        "unhandled",
        "double-fault",
        "username-race",
        "mail-tarpit",
        "error-storm",
        "database-down",
        "bad-input",
        "debug-mode",
    ]


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=EXPERIMENT_IDS)
def test_each_experiment_names_a_heading_of_each_guide(experiment):
    """The lab quotes these headings: a heading renamed in a guide breaks its link."""
    assert experiment.guide_section in headings(GUIDE_EN)
    assert experiment.guide_section_zh in headings(GUIDE_ZH)


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=EXPERIMENT_IDS)
def test_each_experiment_names_code_that_exists(experiment):
    assert experiment.code, f"{experiment.name} names no code"
    wrong = [
        f"{path}, {name}"
        for path, name in experiment.code
        if not (ROOT / path).is_file() or not defines_function_or_class(read(ROOT / path), name)
    ]
    assert not wrong, f"{experiment.name} names code that isn't there: {wrong}"


@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=EXPERIMENT_IDS)
@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: path.name)
def test_each_guide_points_to_each_experiment_in_the_section_it_names(guide, experiment):
    """The "Try it" line stands in the section the lab links to, not just anywhere."""
    heading = experiment.guide_section if guide == GUIDE_EN else experiment.guide_section_zh
    assert f"`flask lab {experiment.name}" in guide_section(guide, heading)


@pytest.mark.parametrize("guide", GUIDES, ids=lambda path: path.name)
def test_the_guides_name_no_experiment_that_doesnt_exist(guide):
    named = set(re.findall(r"`flask lab ([a-z-]+)", read(guide)))
    assert named == set(EXPERIMENT_IDS)


def test_the_english_guide_names_the_experiments_by_the_titles_the_lab_shows():
    text = read(GUIDE_EN)
    missing = [str(e.title) for e in EXPERIMENTS if f"/lab → *{e.title}*" not in text]
    assert not missing, f"guide.md doesn't point to these buttons by their titles: {missing}"


def lab_section() -> str:
    return section(read(README), "## The fault lab")


def test_the_readme_names_every_experiment_with_its_title():
    """One row per experiment in the README's table: its name, then its title."""
    rows = dict(re.findall(r"^\| `([a-z-]+)` \| \*([^*]+)\*", lab_section(), re.MULTILINE))
    assert rows == {experiment.name: str(experiment.title) for experiment in EXPERIMENTS}


def test_the_readme_names_every_option_of_flask_lab():
    text = lab_section()
    options = [param.opts[0] for param in lab_command.params if param.opts[0].startswith("--")]
    assert sorted(options) == ["--count", "--json", "--lang", "--real-mail"]
    missing = [option for option in options if f"{option}" not in text]
    assert not missing, f"README's lab section doesn't name {missing}"


def flat(text: str) -> str:
    """Markdown as one line: no blockquote marks, every run of whitespace one space."""
    return re.sub(r"\s+", " ", re.sub(r"^> ?", "", text, flags=re.MULTILINE))


def test_the_numbers_the_docs_give_for_the_lab_are_the_code_s():
    """The storm's size and the lab's window and timeout, wherever the docs state them."""
    readme = flat(lab_section())
    english, chinese = (flat(read(guide)) for guide in GUIDES)
    assert f"the same error {DEFAULT_STORM} times (1 to {MAX_STORM}, your choice)" in readme
    assert f"1 to {MAX_STORM}; {DEFAULT_STORM} by default" in readme
    assert LAB_ERROR_WINDOW == LAB_MAIL_TIMEOUT, "the README gives one number for both"
    assert f"a storm window and a mail timeout of {LAB_MAIL_TIMEOUT} seconds" in readme
    assert f"`MAIL_TIMEOUT` ({LAB_MAIL_TIMEOUT} s in the lab)" in english
    assert f"the lab's {LAB_ERROR_WINDOW}-second window" in english
    assert f"{DEFAULT_STORM} errors (`--count` takes 1 to {MAX_STORM})" in english
    assert f"`MAIL_TIMEOUT`\uff08实验室里是 {LAB_MAIL_TIMEOUT} 秒\uff09" in chinese
    assert f"实验室 {LAB_ERROR_WINDOW} 秒的窗口" in chinese
    assert f"{DEFAULT_STORM} 个错误\uff08`--count` 可取 1 到 {MAX_STORM}\uff09" in chinese
    # The summary counts the occurrences after the mailed one.
    for text in (readme, english, chinese):
        assert f"[repeated {DEFAULT_STORM - 1} times]" in text


def test_the_tour_names_every_file_of_the_lab():
    tour = section(read(README), "## A tour of the code")
    row = re.search(r"^\| `app/lab/` \|(.*)\|$", tour, re.MULTILINE)
    assert row, "the tour has no row for app/lab/"
    files = sorted(p.name for p in (ROOT / "app" / "lab").glob("*.py") if p.name != "__init__.py")
    missing = [name for name in files if f"`{name}`" not in row.group(1)]
    assert not missing, f"the tour's app/lab/ row doesn't name {missing}"

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
"""

import re
from pathlib import Path

import pytest

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

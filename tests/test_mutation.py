"""The mutation tool (tests/mutation/mutate.py) makes the mutants it promises.

`make mutate` takes most of an hour, so it isn't part of the suite; these
checks are: each kind of change the README lists is made, every mutant is
still Python and differs from the module, the line numbers below a change
stay where they were, and equivalent.toml names only mutants that exist (a
list of excuses that outlives the code it excused would hide new survivors).
"""

import ast

import pytest

from tests.mutation import mutate

SAMPLE = '''
import re

LIMIT = 3


def check(value, items):
    """A docstring is never mutated."""
    if not value or value < LIMIT:
        return None
    total = min(len(items), 10) + 1
    found = re.fullmatch(r"^(ab|cd)[0-9]{1,4}$", value)
    return sorted(items, reverse=True), f"{value}-{total}", found, True


@dataclass
class Box:
    size: int

    @property
    def empty(self):
        return self.size == 0
'''


@pytest.fixture
def sample_mutants(tmp_path, monkeypatch) -> list[mutate.Mutant]:
    module = tmp_path / "app" / "sample.py"
    module.parent.mkdir()
    module.write_text(SAMPLE)
    monkeypatch.setattr(mutate, "ROOT", tmp_path)
    return mutate.find_mutants("app/sample.py")


def changes(mutants: list[mutate.Mutant]) -> set[str]:
    return {mutant.change for mutant in mutants}


def test_every_kind_of_change_the_readme_lists_is_made(sample_mutants):
    made = changes(sample_mutants)
    expected = {
        "'<' -> '<='",  # a comparison at its boundary
        "'<' -> '>='",  # ... and turned around
        "'or' -> 'and'",
        "drop 'not'",
        "3 -> 4",  # a number one more
        "3 -> 2",  # ... and one less
        "True -> False",
        "'+' -> '-'",
        "'min' -> 'max'",
        "delete: return None",  # a statement deleted
        "drop reverse=",  # a keyword argument dropped
        "drop argument value",  # the last of several positional arguments
        "drop {value}",  # a piece of an f-string
        "regex drop alternative 'cd'",
        "regex {1,4} -> {1,5}",
        "regex [0-9] -> .",
        "regex drop '^'",
        "regex drop '$'",
    }
    assert expected <= made, sorted(expected - made)


def test_decorated_classes_and_methods_are_mutated_too(sample_mutants):
    """Some tools skip decorated functions; here a @dataclass's @property is mutated."""
    assert "'==' -> '!='" in {m.change for m in sample_mutants if m.line == "return self.size == 0"}


def test_docstrings_imports_and_annotations_are_left_alone(sample_mutants):
    lines = {mutant.line for mutant in sample_mutants}
    assert '"""A docstring is never mutated."""' not in lines
    assert "import re" not in lines
    # Module-level statements are not deleted (the module would not import),
    # but their values are mutated.
    assert "delete: LIMIT = 3" not in changes(sample_mutants)


def test_each_mutant_is_python_differs_and_keeps_every_line_number(sample_mutants):
    source = SAMPLE.encode()
    for mutant in sample_mutants:
        mutated = mutant.apply(source)
        assert mutated != source
        tree = ast.parse(mutated)
        # The function still starts on its line, and the module has as many lines.
        function = next(node for node in tree.body if isinstance(node, ast.FunctionDef))
        assert function.lineno == 7, mutant.change
        assert mutated.count(b"\n") == source.count(b"\n"), mutant.change


def test_mutants_have_distinct_names(sample_mutants):
    keys = [mutant.key for mutant in sample_mutants]
    assert len(keys) == len(set(keys))


def test_a_scope_limits_the_mutants_to_the_functions_it_names(tmp_path, monkeypatch):
    module = tmp_path / "app" / "sample.py"
    module.parent.mkdir()
    module.write_text(SAMPLE + "\n\ndef other(x):\n    return x + 1\n")
    monkeypatch.setattr(mutate, "ROOT", tmp_path)
    monkeypatch.setitem(mutate.SCOPES, "app/sample.py", {"other"})
    mutants = mutate.find_mutants("app/sample.py")
    assert {mutant.line for mutant in mutants} == {"return x + 1"}


def test_every_module_listed_has_tests_that_exist():
    for module, tests in mutate.MODULES.items():
        assert (mutate.ROOT / module).is_file(), module
        assert tests and all((mutate.ROOT / name).is_file() for name in tests), module


def test_equivalent_toml_names_only_mutants_that_exist():
    """Every excused mutant is still made by the code as it is, and gives a reason."""
    equivalents = mutate.load_equivalents()
    existing = {m.key for module in mutate.MODULES for m in mutate.find_mutants(module)}
    stale = [key for key in equivalents if key not in existing]
    assert stale == []
    assert all(reason.strip() for reason in equivalents.values())

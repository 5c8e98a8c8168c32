"""The benchmark scripts in bench/ are run by hand (`make bench`...), never by the
suite: each takes minutes. They import the tests' helpers (tests/servers.py,
tests/query_count.py), so a helper renamed or moved would break them unnoticed
until someone measured again. This checks that each still imports."""

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(path.stem for path in BENCH.glob("*.py") if path.stem != "__init__")


def test_there_are_benchmarks_to_check():
    assert {"pages", "errors", "hello_world"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_benchmark_imports(script):
    module = importlib.import_module(f"bench.{script}")
    assert module.__doc__, f"bench/{script}.py says what it measures in its docstring"

"""Mutation testing: would the tests notice if the code that keeps a promise broke?

``make mutate`` runs this. For each module that carries one of the blog's
promises (safe redirects, pagination, the duplicate-username form check,
storm control of error mails, secrets kept out of logs), it makes *mutants*:
copies of the module with one small change each, the kind a refactoring or a
tired reviewer lets through:

- a comparison flipped at its boundary or turned around (``<`` to ``<=``,
  ``==`` to ``!=``, ``in`` to ``not in``);
- ``and`` for ``or`` and back, a ``not`` dropped;
- a number one more or one less, ``True`` for ``False``;
- ``+`` for ``-``, ``*`` for ``//``, ``min`` for ``max``;
- a statement deleted (replaced by ``pass``);
- a keyword argument dropped, or the last of several positional ones;
- a piece of an f-string dropped, a string emptied;
- in a regular expression: one alternative of ``a|b|c`` dropped, a ``{m,n}``
  bound moved by one, an anchor dropped, a character class loosened to ``.``.

Each mutant runs that module's tests (MODULES below). If some test fails, the
mutant is *killed*: the tests noticed. If all pass, it *survived*: either the
tests miss a behaviour, or the change makes no difference that anyone could
observe (an *equivalent* mutant, such as ``x >= 1`` for ``x > 0`` on whole
numbers). Equivalent mutants are listed in equivalent.toml beside this file,
each with the reason, and left out of the score. The bar is 90 % of the rest
killed, in every module.

The run takes an hour or more on 2 cores: it is a maintainer's command, not
part of CI. Each job works in its own copy of the project, so jobs run side by
side; the copies are plain files (no bytecode is written, so a mutant can never
be run from the previous one's cached .pyc).

    python tests/mutation/mutate.py                      # every module, print the score
    python tests/mutation/mutate.py app/redirects.py     # one module
    python tests/mutation/mutate.py --list app/forms.py  # only list the mutants

Exit status: 0 if every module reached the bar, 1 if not, 2 if the tests fail
before any mutation (nothing can be measured then).
"""

import argparse
import ast
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EQUIVALENT_FILE = Path(__file__).with_name("equivalent.toml")
BAR = 0.90

# Each module and the tests that speak for it: the fast, focused ones first
# (pytest stops at the first failure, so a killed mutant costs little).
MODULES = {
    "app/redirects.py": ["tests/test_redirects.py", "tests/test_auth.py"],
    # Follower lists page by their own ListOrder, and search results keep `q`.
    "app/pagination.py": [
        "tests/test_pagination.py",
        "tests/test_main.py",
        "tests/test_follow_lists.py",
        "tests/test_search.py",
    ],
    "app/forms.py": ["tests/test_forms.py", "tests/test_user.py"],
    "app/reporting/fingerprint.py": ["tests/test_storm_control.py", "tests/test_error_mail.py"],
    "app/reporting/storm.py": [
        "tests/test_storm_control.py",
        "tests/test_storm_redis.py",
        "tests/test_error_mail.py",
    ],
    "app/reporting/error_mail.py": ["tests/test_storm_control.py", "tests/test_error_mail.py"],
    "app/reporting/log_context.py": ["tests/test_log_context.py", "tests/test_logger.py"],
    "app/reporting/log_file.py": ["tests/test_log_file.py", "tests/test_logger.py"],
}

# Where a module holds more than the promise, only these parts of it are
# mutated (a qualified name covers what is inside it). Error mails: what
# decides whether a mail goes out, not the wording of the mail.
SCOPES = {
    "app/reporting/error_mail.py": {
        "ErrorMailHandler.emit",
        "ErrorMailHandler.deliver",
        "ErrorMailHandler.send_summaries",
    },
}

# Functions whose first argument is a regular expression.
REGEX_CALLS = {"compile", "match", "fullmatch", "search", "sub", "split", "findall", "Regexp"}
SWAPPED_CALLS = {"min": "max", "max": "min", "any": "all", "all": "any"}
COMPARE_SWAPS = {
    ast.Lt: [ast.LtE, ast.GtE],
    ast.LtE: [ast.Lt, ast.Gt],
    ast.Gt: [ast.GtE, ast.LtE],
    ast.GtE: [ast.Gt, ast.Lt],
    ast.Eq: [ast.NotEq],
    ast.NotEq: [ast.Eq],
    ast.In: [ast.NotIn],
    ast.NotIn: [ast.In],
    ast.Is: [ast.IsNot],
    ast.IsNot: [ast.Is],
}
BINOP_SWAPS = {
    ast.Add: [ast.Sub],
    ast.Sub: [ast.Add],
    ast.Mult: [ast.FloorDiv],
    ast.FloorDiv: [ast.Mult],
    ast.Div: [ast.Mult],
    ast.Pow: [ast.Mult],
}
SYMBOLS = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
    ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not",
    ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.FloorDiv: "//", ast.Div: "/", ast.Pow: "**",
    ast.And: "and", ast.Or: "or",
}  # fmt: skip


@dataclass
class Mutant:
    module: str
    lineno: int
    line: str  # the original line, stripped: with `change`, the mutant's stable name
    change: str
    start: int  # byte offsets of the replaced span in the module's source
    end: int
    replacement: str
    status: str = "pending"  # killed, survived, equivalent, timeout

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.module, self.line, self.change)

    def apply(self, source: bytes) -> bytes:
        return source[: self.start] + self.replacement.encode() + source[self.end :]


class MutantFinder(ast.NodeVisitor):
    """Walk a module's syntax tree and collect one Mutant per small change."""

    def __init__(self, module: str, source: bytes):
        self.module = module
        self.scope = SCOPES.get(module)
        self.qualname: list[str] = []  # of the function or class being walked
        self.source = source
        self.lines = source.decode().splitlines()
        self.line_starts = [0]
        for line in source.splitlines(keepends=True):
            self.line_starts.append(self.line_starts[-1] + len(line))
        self.mutants: list[Mutant] = []

    # Where things are, and how to replace them

    def offset(self, lineno: int, col: int) -> int:
        return self.line_starts[lineno - 1] + col  # ast's columns are UTF-8 byte offsets

    def span(self, node: ast.AST) -> tuple[int, int]:
        return self.offset(node.lineno, node.col_offset), self.offset(
            node.end_lineno, node.end_col_offset
        )

    def in_scope(self) -> bool:
        if self.scope is None:
            return True
        names = [".".join(self.qualname[:n]) for n in range(1, len(self.qualname) + 1)]
        return not self.scope.isdisjoint(names)

    def add(self, node: ast.AST, change: str, replacement: str, statement: bool = False) -> None:
        if not self.in_scope():
            return
        start, end = self.span(node)
        # Keep the line count, so that every line below keeps its number (error
        # mails and their tests name lines): pad with newlines, inside
        # parentheses for an expression.
        extra = "\n" * (node.end_lineno - node.lineno)
        replacement = replacement + extra if statement else f"({replacement}{extra})"
        self.mutants.append(
            Mutant(
                self.module,
                node.lineno,
                self.lines[node.lineno - 1].strip(),
                change,
                start,
                end,
                replacement,
            )
        )

    def replace_expression(self, node: ast.expr, new: ast.expr, change: str) -> None:
        self.add(node, change, ast.unparse(new))

    # Statements: each one inside a function is deleted in turn

    def visit_statements(self, body: list[ast.stmt], in_function: bool) -> None:
        for statement in body:
            if isinstance(statement, ast.Import | ast.ImportFrom | ast.Pass):
                continue
            if isinstance(statement, ast.Expr) and is_string(statement.value):
                continue  # a docstring
            if isinstance(statement, ast.FunctionDef | ast.ClassDef):
                self.qualname.append(statement.name)
                if isinstance(statement, ast.FunctionDef):
                    self.visit_arguments(statement.args)  # not decorators or annotations
                self.visit_statements(statement.body, isinstance(statement, ast.FunctionDef))
                self.qualname.pop()
                continue
            if in_function and not self.is_elif(statement):
                first_line = self.lines[statement.lineno - 1].strip()
                self.add(statement, f"delete: {first_line}", "pass", statement=True)
            for name, value in ast.iter_fields(statement):
                if name == "annotation":
                    continue  # for readers and type checkers
                if name in ("body", "orelse", "finalbody"):
                    self.visit_statements(value, in_function)
                elif name == "handlers":
                    for handler in value:
                        if handler.type is not None:
                            self.visit(handler.type)
                        self.visit_statements(handler.body, in_function)
                elif isinstance(value, list):
                    for item in value:
                        if isinstance(item, ast.AST):
                            self.visit(item)
                elif isinstance(value, ast.AST):
                    self.visit(value)

    def is_elif(self, statement: ast.stmt) -> bool:
        # An elif is an If inside the previous one's orelse; deleting it alone
        # would leave its "else:" dangling.
        start = self.offset(statement.lineno, statement.col_offset)
        return self.source[start : start + 4] == b"elif"

    def visit_arguments(self, node: ast.arguments) -> None:
        for default in [*node.defaults, *filter(None, node.kw_defaults)]:
            self.visit(default)

    # Expressions

    def visit_Compare(self, node: ast.Compare) -> None:
        for index, op in enumerate(node.ops):
            for swapped in COMPARE_SWAPS[type(op)]:
                ops = [*node.ops]
                ops[index] = swapped()
                new = ast.Compare(node.left, ops, node.comparators)
                self.replace_expression(node, new, f"'{SYMBOLS[type(op)]}' -> '{SYMBOLS[swapped]}'")
        self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        swapped = ast.Or if isinstance(node.op, ast.And) else ast.And
        self.replace_expression(
            node,
            ast.BoolOp(swapped(), node.values),
            f"'{SYMBOLS[type(node.op)]}' -> '{SYMBOLS[swapped]}'",
        )
        self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> None:
        if isinstance(node.op, ast.Not):
            self.replace_expression(node, node.operand, "drop 'not'")
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        for swapped in BINOP_SWAPS.get(type(node.op), []):
            new = ast.BinOp(node.left, swapped(), node.right)
            self.replace_expression(
                node, new, f"'{SYMBOLS[type(node.op)]}' -> '{SYMBOLS[swapped]}'"
            )
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = call_name(node)
        if name in SWAPPED_CALLS and isinstance(node.func, ast.Name):
            new = ast.Call(ast.Name(SWAPPED_CALLS[name]), node.args, node.keywords)
            self.replace_expression(node, new, f"'{name}' -> '{SWAPPED_CALLS[name]}'")
        for keyword in node.keywords:
            if keyword.arg is not None:
                keywords = [k for k in node.keywords if k is not keyword]
                new = ast.Call(node.func, node.args, keywords)
                self.replace_expression(node, new, f"drop {keyword.arg}=")
        if len(node.args) >= 2 and not isinstance(node.args[-1], ast.Starred):
            new = ast.Call(node.func, node.args[:-1], node.keywords)
            self.replace_expression(node, new, f"drop argument {ast.unparse(node.args[-1])}")
        if name in REGEX_CALLS and node.args and is_string(node.args[0]):
            self.mutate_regex(node.args[0])
            self.visit(node.func)
            for argument in [*node.args[1:], *node.keywords]:
                self.visit(argument)
            return
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        value = node.value
        if isinstance(value, bool):
            self.replace_expression(node, ast.Constant(not value), f"{value} -> {not value}")
        elif isinstance(value, int | float):
            for new in (value + 1, value - 1):
                self.replace_expression(node, ast.Constant(new), f"{value!r} -> {new!r}")
        elif isinstance(value, str):
            new = "" if value else "mutant"
            self.replace_expression(node, ast.Constant(new), f"{value!r} -> {new!r}")

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        # Positions inside an f-string are not reliable before Python 3.12:
        # mutate the whole string, one interpolated piece left out at a time.
        for index, part in enumerate(node.values):
            if isinstance(part, ast.FormattedValue):
                values = node.values[:index] + node.values[index + 1 :]
                piece = ast.unparse(part.value)
                self.replace_expression(node, ast.JoinedStr(values), f"drop {{{piece}}}")

    def mutate_regex(self, node: ast.Constant) -> None:
        pattern = node.value
        for new, change in regex_mutations(pattern):
            self.replace_expression(node, ast.Constant(new), f"regex {change}")


def call_name(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def is_string(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def regex_mutations(pattern: str) -> Iterator[tuple[str, str]]:
    """Small changes to a regular expression, each with a description."""
    for start, end in alternatives(pattern):
        # Drop the alternative with the "|" before it (after it, for the first).
        cut = (start - 1, end) if pattern[start - 1 : start] == "|" else (start, end + 1)
        new = pattern[: cut[0]] + pattern[cut[1] :]
        yield new, f"drop alternative {pattern[start:end]!r}"
    for match in re.finditer(r"\{(\d+),(\d+)\}", pattern):
        low, high = int(match[1]), int(match[2])
        for new_low, new_high in ((low, high + 1), (low, high - 1), (max(low - 1, 0), high)):
            if (new_low, new_high) != (low, high) and new_low <= new_high:
                new = f"{{{new_low},{new_high}}}"
                yield replace_at(pattern, match, new), f"{match[0]} -> {new}"
    for match in re.finditer(r"\[[^\]]*\]", pattern):
        yield replace_at(pattern, match, "."), f"{match[0]} -> ."
    if pattern.startswith("^"):
        yield pattern[1:], "drop '^'"
    if pattern.endswith("$"):
        yield pattern[:-1], "drop '$'"


def alternatives(pattern: str) -> list[tuple[int, int]]:
    """The (start, end) of every alternative of every "a|b" in `pattern`,
    at the top level or inside a group; none where there is no "|"."""
    groups: list[list[int]] = [[0]]  # per open group: where it starts, then its "|"s
    found: list[tuple[int, int]] = []
    in_class = escaped = False

    def close(bars: list[int], end: int) -> None:
        if len(bars) > 1:  # a start and at least one "|"
            edges = [bars[0], *(bar + 1 for bar in bars[1:])]
            ends = [*bars[1:], end]
            found.extend(zip(edges, ends, strict=True))

    for index, char in enumerate(pattern):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "(":
            # A group's alternatives start after "(", "(?:" or "(?P<name>".
            prefix = re.match(r"\((\?(:|P<\w+>|[=!]|<[=!]))?", pattern[index:])
            groups.append([index + len(prefix[0])])
        elif char == ")" and len(groups) > 1:
            close(groups.pop(), index)
        elif char == "|":
            groups[-1].append(index)
    close(groups[0], len(pattern))
    return sorted(found)


def replace_at(text: str, match: re.Match, new: str) -> str:
    return text[: match.start()] + new + text[match.end() :]


def find_mutants(module: str) -> list[Mutant]:
    source = (ROOT / module).read_bytes()
    finder = MutantFinder(module, source)
    finder.visit_statements(ast.parse(source).body, in_function=False)
    mutants = sorted(finder.mutants, key=lambda mutant: (mutant.start, mutant.change))
    # Two identical changes on one line (two '<' in it) get told apart by number.
    seen: Counter = Counter()
    for mutant in mutants:
        seen[mutant.key] += 1
        if seen[mutant.key] > 1:
            mutant.change += f" (#{seen[mutant.key]})"
    for mutant in mutants:  # every mutant must still be Python
        compile(mutant.apply(source), module, "exec")
    return mutants


def load_equivalents() -> dict[tuple[str, str, str], str]:
    """equivalent.toml: the mutants that change nothing observable, with why."""
    entries = tomllib.loads(EQUIVALENT_FILE.read_text())["equivalent"]
    return {(e["module"], e["line"], e["change"]): e["reason"] for e in entries}


def project_files() -> list[str]:
    """The files a copy of the project needs: those git knows, committed or not."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [name for name in listed if (ROOT / name).is_file()]


def make_copy(folder: Path, files: list[str]) -> Path:
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, folder / name)
    return folder


def test_command(tests: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "pytest", "-x", "-q", "--no-header", "-p", "no:cacheprovider",
        "--hypothesis-seed=0", *tests,
    ]  # fmt: skip


def test_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}  # SQLite
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run_tests(folder: Path, tests: list[str], timeout: float) -> str:
    """Run `tests` in `folder`: "passed", "failed" or "timeout"."""
    try:
        result = subprocess.run(
            test_command(tests),
            cwd=folder,
            env=test_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    return "passed" if result.returncode == 0 else "failed"


def baseline(folder: Path, tests: list[str]) -> float:
    """Run the tests on the unchanged code: they must pass. Return the seconds taken."""
    started = time.monotonic()
    result = subprocess.run(test_command(tests), cwd=folder, env=test_env())
    if result.returncode != 0:
        print(f"The tests fail before any mutation ({' '.join(tests)}): fix them first.")
        sys.exit(2)
    return time.monotonic() - started


def mutate(module: str, mutants: list[Mutant], folders: "queue.Queue[Path]", jobs: int) -> None:
    tests = [name for name in MODULES[module] if (ROOT / name).exists()]
    folder = folders.get()
    seconds = baseline(folder, tests)
    folders.put(folder)
    # A mutant can make a test loop or wait: give it three times as long, then call it killed.
    timeout = max(60.0, 3 * seconds)
    print(f"{module}: {len(mutants)} mutants, tests take {seconds:.0f} s unmutated", flush=True)
    source = (ROOT / module).read_bytes()

    def run(mutant: Mutant) -> None:
        folder = folders.get()
        target = folder / module
        try:
            target.write_bytes(mutant.apply(source))
            outcome = run_tests(folder, tests, timeout)
        finally:
            target.write_bytes(source)
            folders.put(folder)
        mutant.status = {"passed": "survived", "failed": "killed", "timeout": "timeout"}[outcome]
        if mutant.status == "survived":
            print(f"  survived: {describe(mutant)}", flush=True)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(run, [m for m in mutants if m.status == "pending"]))


def describe(mutant: Mutant) -> str:
    return f"{mutant.module}:{mutant.lineno}  {mutant.line}  [{mutant.change}]"


def report(mutants: list[Mutant], equivalents: dict) -> bool:
    """Print the score of each module; True if every one reaches the bar."""
    ok = True
    print(f"\n{'module':<22}{'mutants':>8}{'killed':>8}{'equiv.':>8}{'survived':>9}{'score':>8}")
    for module in dict.fromkeys(m.module for m in mutants):
        ours = [m for m in mutants if m.module == module]
        counts = Counter("killed" if m.status == "timeout" else m.status for m in ours)
        judged = counts["killed"] + counts["survived"]
        score = counts["killed"] / judged if judged else 1.0
        ok &= score >= BAR
        print(
            f"{module:<22}{len(ours):>8}{counts['killed']:>8}{counts['equivalent']:>8}"
            f"{counts['survived']:>9}{score:>8.1%}"
        )
    survivors = [m for m in mutants if m.status == "survived"]
    if survivors:
        print("\nSurvivors (add a test, or list the mutant in equivalent.toml with the reason):")
        for mutant in survivors:
            print(f"  {describe(mutant)}")
    print(f"\nBar: {BAR:.0%} of non-equivalent mutants killed in every module: "
          + ("reached." if ok else "NOT reached."))  # fmt: skip
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES), help="e.g. app/forms.py")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    options = parser.parse_args()
    unknown = set(options.modules) - set(MODULES)
    if unknown:
        parser.error(f"not a module with its tests listed in MODULES: {', '.join(unknown)}")

    equivalents = load_equivalents()
    mutants = [mutant for module in options.modules for mutant in find_mutants(module)]
    for mutant in mutants:
        if mutant.key in equivalents:
            mutant.status = "equivalent"
    stale = set(equivalents) - {m.key for m in mutants}
    if options.list:
        for mutant in mutants:
            print(f"{'=' if mutant.status == 'equivalent' else ' '} {describe(mutant)}")
        return

    files = project_files()
    with tempfile.TemporaryDirectory(prefix="mutate-") as scratch:
        folders: queue.Queue[Path] = queue.Queue()
        for number in range(options.jobs):
            folders.put(make_copy(Path(scratch) / f"job{number}", files))
        for module in options.modules:
            mutate(module, [m for m in mutants if m.module == module], folders, options.jobs)
    ok = report(mutants, equivalents)
    checked = {m.module for m in mutants}
    for module, line, change in sorted(stale):
        if module in checked:
            print(
                f"equivalent.toml names a mutant that no longer exists: {module}: {line} [{change}]"
            )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

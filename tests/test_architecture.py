"""The library (backbones, methods, data, checkpoint, ...) never imports the application (mitp.app)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "mitp"
LIBRARY = sorted(p for p in PACKAGE.rglob("*.py") if "app" not in p.relative_to(PACKAGE).parts)
ENTRY_POINT = PACKAGE / "__main__.py"  # `python -m mitp` starts the application


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    package = ["mitp", *path.relative_to(PACKAGE).parent.parts]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


def test_the_scan_sees_the_library_and_resolves_relative_imports():
    assert PACKAGE / "methods" / "base.py" in LIBRARY and not any("app" in p.parts for p in LIBRARY)
    assert "mitp.backbones" in imported_modules(PACKAGE / "methods" / "base.py")
    assert "mitp.app.cli" in imported_modules(ENTRY_POINT)


@pytest.mark.parametrize("path", [p for p in LIBRARY if p != ENTRY_POINT], ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_module_does_not_import_the_application(path):
    offending = sorted(m for m in imported_modules(path) if m == "mitp.app" or m.startswith("mitp.app."))
    assert not offending, f"{path.relative_to(PACKAGE)} imports {offending}"


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "methods").glob("*/*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_a_method_folder_imports_no_other_method(path):
    own = path.parent.name
    methods = {p.name for p in (PACKAGE / "methods").iterdir() if (p / "__init__.py").is_file()}
    others = sorted(
        m
        for m in imported_modules(path)
        for other in methods - {own}
        if m == f"mitp.methods.{other}" or m.startswith(f"mitp.methods.{other}.")
    )
    assert not others, f"{path.relative_to(PACKAGE)} imports another method: {others}"


def module_name(path: Path) -> str:
    parts = ["mitp", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


# Modules that import every module of a package by discovery (pkgutil.iter_modules), invisible to ast.
DISCOVERY = {
    "mitp.app.cli": "mitp.app.commands",
    "mitp.backbones": "mitp.backbones.families",
    "mitp.methods": "mitp.methods",
    "mitp.data.prepare": "mitp.data.prepare",
}


def import_graph() -> dict[str, set[str]]:
    """mitp module -> the mitp modules it imports, anywhere in the file (function-local imports included),
    discovered ones too. ``from package import submodule`` is an edge to the submodule only."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {
        name: {
            m
            for m in modules
            if m.startswith(DISCOVERY[name] + ".") and ".".join(m.split(".")[: DISCOVERY[name].count(".") + 2]) == m
        }
        if name in DISCOVERY
        else set()
        for name in modules
    }
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                submodules = [f"{module}.{a.name}" for a in node.names if f"{module}.{a.name}" in modules]
                targets = submodules if submodules and len(submodules) == len(node.names) else [module] + submodules
            else:
                continue
            for target in targets:
                while target and target not in modules:  # a name inside a module: the module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_mitp_modules():
    graph = import_graph()
    assert "mitp.app.cli" in graph["mitp.__main__"] and "mitp.runs" in graph["mitp.torch_runtime"]
    assert "mitp.app.commands.train" in graph["mitp.app.cli"]  # by discovery
    discovering = {module_name(p) for p in PACKAGE.rglob("*.py") if "iter_modules(" in p.read_text()}
    assert discovering == set(DISCOVERY), "a module discovers submodules: add it to DISCOVERY"
    assert cycles(graph) == []


def function_local_imports() -> list[tuple[Path, int]]:
    """(file, line) of every import of a mitp module inside a function."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith("mitp")):
                        found.append((path, inner.lineno))
    return found


def test_function_local_imports_are_few_and_say_why():
    """They hide the import graph: only for start-up time (`mitp --help` loads every command module) and
    optional dependencies, each with its reason on the line or the one above."""
    found = function_local_imports()
    assert len(found) <= 40, f"{len(found)} function-local imports of mitp modules"
    for path, line in found:
        lines = path.read_text().splitlines()
        assert reason_given(lines, line), (
            f"{path.relative_to(PACKAGE)}:{line}: a function-local import without a comment saying why"
        )


def reason_given(lines: list[str], line: int) -> bool:
    """A comment on the import's line or the two above it, or above it in the block of imports it continues."""
    if any("#" in text for text in lines[max(0, line - 3) : line]):
        return True
    for text in reversed(lines[:line]):
        if "#" in text:
            return True
        stripped = text.strip()
        if stripped and not stripped.startswith(("from ", "import ", ")")) and not stripped.endswith(","):
            return False
    return False


def test_the_command_line_starts_without_torch():
    script = "import sys; from mitp.app.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True).stdout.strip() == "False"


def ruff(*args: str, cwd: Path = PACKAGE.parents[1]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=cwd, capture_output=True, text=True)


def test_the_code_is_formatted_and_lint_free():
    """ruff format and ruff check (pyproject.toml: pyflakes, pycodestyle, import order, bugbear, pyupgrade) over
    the package and the tests: an undefined name (a helper renamed in one place only) fails here, not in the one
    slow test that happens to reach it."""
    formatted = ruff("format", "--check", "src", "tests")
    assert formatted.returncode == 0, formatted.stdout + formatted.stderr
    checked = ruff("check", "src", "tests")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_lint_check_sees_an_undefined_name(tmp_path):
    (tmp_path / "bad.py").write_text("def f():\n    return _renamed_helper()\n")
    found = ruff("check", "--no-cache", "--select", "F", "bad.py", cwd=tmp_path)
    assert found.returncode == 1
    assert "Undefined name `_renamed_helper`" in found.stdout


def test_a_file_over_400_lines_says_why_in_its_docstring():
    long = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().count("\n")
        if lines > 400:
            docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
            if "400 lines" not in docstring:
                long[str(path.relative_to(PACKAGE))] = lines
    assert not long, f"over 400 lines with no reason in the module docstring: {long}"

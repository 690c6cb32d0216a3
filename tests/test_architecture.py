"""The library (backbones, methods, data, checkpoint, ...) never imports the application (mitp.app)."""

import ast
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


@pytest.mark.parametrize("path", sorted((PACKAGE / "methods").glob("*/*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_method_folder_imports_no_other_method(path):
    own = path.parent.name
    methods = {p.name for p in (PACKAGE / "methods").iterdir() if (p / "__init__.py").is_file()}
    others = sorted(m for m in imported_modules(path) for other in methods - {own}
                    if m == f"mitp.methods.{other}" or m.startswith(f"mitp.methods.{other}."))
    assert not others, f"{path.relative_to(PACKAGE)} imports another method: {others}"

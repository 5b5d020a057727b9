"""docs/architecture.md stays true: no module imports one listed below it in the doc's table,
except the imports the doc names as exceptions.

The table ("One line per module") is read from the doc itself, in its order; the shared helpers
are the modules the doc says every module may import. Imports are read with ``ast`` (inside
functions too), never by importing anything.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "longicl"
DOC = ROOT / "docs" / "architecture.md"


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def table_order() -> dict[str, int]:
    """Module or package name (``tasks``, ``data``, ...) -> its row in the doc's table (0 = top)."""
    text = _doc()
    table = text[text.index("## One line per module") :]
    order: dict[str, int] = {}
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        first_cell = line.split("|")[1]
        for name in re.findall(r"`([\w/]+?)(?:\.py|/)?`", first_cell):
            order.setdefault(name, len(order))
    return order


def helpers() -> set[str]:
    """The shared helpers every module may import (the sentence under the table's heading)."""
    sentence = re.search(r"and the small shared helpers ([^)]*)\)", _doc())
    assert sentence, "docs/architecture.md no longer names its shared helpers"
    return set(re.findall(r"`(\w+)`", sentence.group(1)))


def exceptions() -> set[tuple[str, str]]:
    """``(importer file, imported row)`` pairs the doc lists under "Upward imports", one line each:
    ``- `file.py` → `row`, `row`: why``."""
    text = _doc()
    section = text[text.index("Upward imports") : text.index("```")]
    pairs = set()
    for line in section.splitlines():
        if line.startswith("- `") and "→" in line:
            importer = re.match(r"- `([\w/.]+)`", line).group(1)
            targets = line.split("→", 1)[1].split(":", 1)[0]
            pairs |= {(importer, target) for target in re.findall(r"`(\w+)`", targets)}
    return pairs


def unit(module: str) -> str:
    """``longicl.engines.probe`` -> ``engines``: the table row a module belongs to."""
    return module.split(".")[1] if module.count(".") else ""


def _type_only(tree: ast.AST) -> set[int]:
    """Ids of the nodes under ``if TYPE_CHECKING:`` (imports for annotations only)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(inner) for stmt in node.body for inner in ast.walk(stmt)}
    return skipped


def project_imports(path: Path) -> set[str]:
    """The ``longicl.*`` modules ``path`` imports, anywhere in the file but type-only blocks."""
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = parts[:-1]  # the package a relative import starts from (a module's or __init__'s)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_only(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("longicl.")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            if name == "longicl":  # from longicl import analysis
                found |= {f"longicl.{a.name}" for a in node.names}
            elif name.startswith("longicl."):
                found.add(name)
    return found


def upward_imports() -> list[tuple[str, str, str]]:
    """``(file, importer row, imported row)`` for every import of a row below the importer."""
    order, shared = table_order(), helpers()
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.parent == PACKAGE and path.stem in ("__init__", "__main__"):
            continue
        here = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        rank = -1 if here in shared else order.get(here)  # a helper imports only helpers
        assert rank is not None, f"{here}: not in docs/architecture.md's table"
        for imported in sorted(project_imports(path)):
            there = unit(imported)
            if there in shared or there == here:
                continue
            assert there in order, f"{there} (imported by {path.name}): not in docs/architecture.md's table"
            if order[there] > rank:
                found.append((path.relative_to(PACKAGE).as_posix(), here, there))
    return found


def test_every_module_of_the_package_has_a_row_in_the_doc():
    order, shared = table_order(), helpers()
    modules = {p.name.removesuffix(".py") for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    modules -= {"__init__", "__main__", "__pycache__"}
    assert modules - set(order) - shared == set()
    assert set(order) - modules == set()


def test_no_upward_import_that_the_doc_does_not_list():
    allowed = exceptions()
    unlisted = [(f, here, there) for f, here, there in upward_imports() if (f, there) not in allowed]
    assert unlisted == [], "upward imports not listed in docs/architecture.md"


def test_every_listed_exception_still_exists():
    found = {(f, there) for f, _, there in upward_imports()}
    assert exceptions() - found == set(), "docs/architecture.md lists an upward import that is gone"


def test_the_reader_finds_an_upward_import(tmp_path, monkeypatch):
    """The test above would pass on a reader that finds nothing: show that it finds one."""
    fake = tmp_path / "src" / "longicl"
    (fake / "tasks").mkdir(parents=True)
    (fake / "tasks" / "__init__.py").write_text(
        "def f():\n    from longicl.runner import run\n    from . import spec\n", encoding="utf-8"
    )
    (fake / "runner.py").write_text("from longicl.tasks import TaskSpec\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert upward_imports() == [("tasks/__init__.py", "tasks", "runner")]

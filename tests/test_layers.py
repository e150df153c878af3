"""What the product's modules may import: the data plane nothing above it, and no
module the tests' reference (``tests/reference/``), which is not part of the product."""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "lwaftr"
#: The packages and modules above the data plane, which it must never import.
ABOVE_DATAPLANE = {"io", "mgmt", "cli", "routing", "lab"}


def _imports(path: Path) -> set[str]:
    """The absolute module names ``path`` imports (``from a.b import c`` gives a.b and a.b.c)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_no_product_module_imports_the_tests_reference():
    offenders = {str(p.relative_to(SRC)): sorted(m for m in _imports(p) if m.split(".")[0] == "reference")
                 for p in SRC.rglob("*.py")}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert len(offenders) > 50          # (the walk found the product's modules)


def test_the_data_plane_imports_nothing_above_it():
    offenders = {}
    for p in (SRC / "dataplane").rglob("*.py"):
        bad = sorted(m for m in _imports(p) if m.split(".")[0] == "lwaftr" and len(m.split(".")) > 1
                     and m.split(".")[1] in ABOVE_DATAPLANE)
        if bad:
            offenders[p.name] = bad
    assert offenders == {}

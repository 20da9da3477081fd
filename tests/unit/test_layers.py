"""The import-layer contract: the lower layers never import a layer above them.

``joyride/wire`` (frame formats) < ``joyride/tcp`` (sans-I/O TCP) < ``joyride/engine``
(the loop) < ``joyride/service`` (the network service's data path and daemon) <
``joyride/embed`` (embedded mode: on the C data plane it runs the service's data path in
a thread of the embedding process), and above them the front ends and tools. Every
import counts, including those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "joyride"

FRONT_ENDS = {"service", "aio", "socket", "socket_backends", "asyncio", "cli", "bench",
              "demo", "testbed", "selfcheck"}
ABOVE = {
    "embed": FRONT_ENDS - {"service"},
    "service": (FRONT_ENDS - {"service"}) | {"embed"},
    "engine": FRONT_ENDS | {"embed", "claim", "steer", "dataplane"},
    "tcp": FRONT_ENDS | {"embed", "claim", "steer", "dataplane", "engine"},
    "wire": FRONT_ENDS | {"embed", "claim", "steer", "dataplane", "engine", "tcp"},
}


def _imported(path: Path) -> set[str]:
    """The ``joyride`` subpackages and modules ``path`` imports (first component)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "joyride":
                names = [f"joyride.{alias.name}" for alias in node.names]
        else:
            continue
        out.update(n.split(".")[1] for n in names
                   if n.startswith("joyride.") and n.count(".") >= 1)
    return out


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_layer_imports_nothing_above_it(layer: str) -> None:
    wrong = {f"{path.relative_to(PACKAGE.parent)}: joyride.{name}"
             for path in sorted((PACKAGE / layer).rglob("*.py"))
             for name in _imported(path) & ABOVE[layer]}
    assert not wrong, f"joyride/{layer} imports a layer above it: {sorted(wrong)}"


def test_the_contract_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from joyride.service import privdrop\n"
                      "    import joyride.aio.api\n    from joyride import socket\n")
    assert _imported(module) == {"service", "aio", "socket"}

"""The tree is the architecture (docs/architecture.md): imports point down the rooms, never up."""

from __future__ import annotations

import ast
from pathlib import Path

SYNCER = Path(__file__).resolve().parents[2] / "syncer"

# Each room may import from the rooms below it in this order, and from itself.
# ``errors`` sits with ``core``: every room raises its typed errors.
LAYERS = [
    {"core", "errors"},
    {"tools", "catalog"},
    {"access"},
    {"trail"},
    {"stages"},
    {"commands", "demo", "cli", "__main__"},
]
LEVEL = {room: i for i, rooms in enumerate(LAYERS) for room in rooms}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("syncer"):
            if node.module == "syncer":
                found += [(node.lineno, f"syncer.{a.name}") for a in node.names if a.name != "__version__"]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("syncer.")]
    return found


def test_every_module_lives_in_a_room():
    flat = sorted(
        p.name for p in SYNCER.glob("*.py") if p.stem not in ("__init__", "__main__", "cli", "errors")
    )
    assert flat == [], f"modules outside a room: {flat}; put each in the room it belongs to"
    rooms = {p.name for p in SYNCER.iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert rooms <= set(LEVEL), f"rooms missing from LAYERS: {rooms - set(LEVEL)}"


def test_imports_point_down_the_rooms():
    upward = []
    for path in SYNCER.rglob("*.py"):
        rel = path.relative_to(SYNCER)
        room = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if room not in LEVEL:
            continue
        for line, module in _imports(path):
            target = _room(module)
            if target in LEVEL and LEVEL[target] > LEVEL[room]:
                upward.append(f"syncer/{rel.as_posix()}:{line} imports {module} ({room} -> {target})")
    assert upward == []

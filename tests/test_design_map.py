"""docs/design.md's module map matches the tree: every module named once, every name a module."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAP_START = "<!-- module map: start -->"
MAP_END = "<!-- module map: end -->"
PATH_IN_MAP = re.compile(r"^((?:popbench|harness)/[\w/]+\.py)\s", re.MULTILINE)


def mapped_modules() -> list[str]:
    text = (ROOT / "docs" / "design.md").read_text()
    assert MAP_START in text and MAP_END in text, "docs/design.md lost its module map markers"
    block = text.split(MAP_START, 1)[1].split(MAP_END, 1)[0]
    return PATH_IN_MAP.findall(block)


def tree_modules() -> set[str]:
    found = {str(p.relative_to(ROOT)) for pkg in ("popbench", "harness") for p in (ROOT / pkg).rglob("*.py")}
    return {path for path in found if not path.endswith("__init__.py")}


def test_every_module_is_named_once_in_the_design_map() -> None:
    named = mapped_modules()
    twice = sorted({path for path in named if named.count(path) > 1})
    missing = sorted(tree_modules() - set(named))
    assert not twice, f"named more than once in docs/design.md: {twice}"
    assert not missing, f"modules missing from docs/design.md's map: {missing}"


def test_every_module_in_the_design_map_exists() -> None:
    stale = sorted(set(mapped_modules()) - tree_modules())
    assert not stale, f"docs/design.md names modules that do not exist: {stale}"

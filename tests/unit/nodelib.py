"""The node's Python (/usr/lib/triton in the image), for the unit tests that
stand in for what it runs or where it writes."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

LIB = Path(__file__).resolve().parents[2] / "mkosi.extra/usr/lib/triton"
sys.path.insert(0, str(LIB))


def modules() -> list[ModuleType]:
    """The node's modules imported so far (a test imports what it tests,
    and with it everything that imports by name)."""
    return [m for m in list(sys.modules.values())
            if getattr(m, "__file__", None) and Path(m.__file__).parent == LIB]


def patch(monkeypatch: Any, name: str, value: Any) -> None:
    """Stand `value` in for `name` in every module that holds it: the one
    that defines it and those that import it by name (a module calls what
    its own namespace holds)."""
    holders = [m for m in modules() if hasattr(m, name)]
    assert holders, f"no module of the node's has {name}"
    for m in holders:
        monkeypatch.setattr(m, name, value)

"""Every module of the package imports on its own, whatever was imported before it.

A module that only imports when another one was loaded first (a circular import that the
usual import order hides) breaks a user's ``import headwater.x.y`` and every tool that loads
one module alone. One child interpreter imports each module in turn with every
``headwater`` module removed from ``sys.modules`` before it, so each import starts from
nothing but the third-party libraries (which are not what is being tested).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import headwater

PACKAGE_DIR = Path(headwater.__file__).parent

_CHILD = """
import importlib, json, sys, traceback
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "headwater" or m.startswith("headwater.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException:
        failures[name] = traceback.format_exc(limit=-6)
print(json.dumps(failures))
"""


def all_modules() -> list[str]:
    """Every module of the package, found on disk (finding them by import would hide the
    very failures this test looks for)."""
    names = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        if parts[-1] == "__main__":
            continue  # a script for ``python -m``: running it is not importing it
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names.append(".".join(parts))
    return names


@pytest.fixture(scope="module")
def failures() -> dict[str, str]:
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(all_modules())],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"the importing child failed:\n{result.stderr}"
    answer: dict[str, str] = json.loads(result.stdout.splitlines()[-1])
    return answer


def test_the_module_list_is_the_whole_package() -> None:
    modules = all_modules()
    assert "headwater" in modules
    assert "headwater.status.config" in modules
    assert "headwater.gateway.api" in modules
    assert len(modules) > 50


@pytest.mark.parametrize("module", all_modules())
def test_module_imports_on_its_own(module: str, failures: dict[str, str]) -> None:
    assert module not in failures, f"import {module} on its own fails:\n{failures[module]}"

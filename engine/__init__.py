"""The matching engine. Its kernel (``KERNEL``) is plain Python written in Cython's pure-Python
mode: the same source runs interpreted, or compiled to C extension modules by ``setup.py``
(``make install`` / ``make test`` build it; a machine without a compiler gets the interpreted
build and the same behaviour, only slower).

Which build runs:
- compiled, where ``engine/<module>.*.so`` is present and newer than its ``.py``;
- interpreted, where it is not, or stale (the ``.py`` was edited after the build: running
  yesterday's machine code for today's source would be worse than running slowly; a warning
  says so), or where ``EXCHANGE_ENGINE_BUILD=interpreted`` asks for it (CI runs the engine's
  unit and property tests that way too);
- ``EXCHANGE_ENGINE_BUILD=compiled`` makes a missing or stale compiled module an ImportError.

``build()`` says which one this process runs; the test suite prints it in its header.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from pathlib import Path

KERNEL = ("book", "core", "ledger", "money", "views")
HERE = Path(__file__).resolve().parent
WANTED = os.environ.get("EXCHANGE_ENGINE_BUILD", "")


def compiled_path(module: str) -> Path | None:
    """The compiled extension of a kernel module, if one is built here."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = HERE / f"{module}{suffix}"
        if path.exists():
            return path
    return None


def _fresh(module: str) -> bool:
    """A compiled module exists and was built after its source last changed."""
    so = compiled_path(module)
    return so is not None and so.stat().st_mtime >= (HERE / f"{module}.py").stat().st_mtime


class _Kernel(importlib.abc.MetaPathFinder):
    """Loads each kernel module from the build this process is to run."""

    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        package, _, module = name.rpartition(".")
        if package != __name__ or module not in KERNEL:
            return None
        source = HERE / f"{module}.py"
        if WANTED != "interpreted":
            if _fresh(module):
                return None  # the normal finders pick the extension module first
            if WANTED == "compiled":
                raise ImportError(f"engine.{module}: no compiled build newer than {source.name}")
            if compiled_path(module) is not None:
                warnings.warn(
                    f"engine/{module}.py changed after it was compiled: running it interpreted "
                    "(make install rebuilds it)",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return importlib.util.spec_from_file_location(name, source)


if WANTED not in ("", "compiled", "interpreted"):
    raise ImportError(f"EXCHANGE_ENGINE_BUILD must be compiled or interpreted, not {WANTED!r}")
sys.meta_path.insert(0, _Kernel())


def build() -> str:
    """'compiled' or 'interpreted': the kernel this process runs (imports it)."""
    kinds = set()
    for module in KERNEL:
        m = importlib.import_module(f"{__name__}.{module}")
        compiled = not str(m.__file__).endswith(".py")
        kinds.add("compiled" if compiled else "interpreted")
    if len(kinds) != 1:
        raise ImportError(f"engine kernel is part compiled, part interpreted: {sorted(kinds)}")
    return kinds.pop()

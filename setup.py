"""Builds the engine's kernel (``engine.KERNEL``) with Cython; everything else is in
pyproject.toml.

The kernel's modules are plain Python in Cython's pure-Python mode. Where Cython or a C
compiler is missing, or a module fails to compile, the install goes on without that extension
and the engine runs interpreted (``engine.build()`` says which build runs).
``EXCHANGE_ENGINE_BUILD=interpreted`` at install time skips the compile.
"""

from __future__ import annotations

import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

KERNEL = ("book", "core", "ledger", "money", "views")
DIRECTIVES = {
    "language_level": 3,
    # Python semantics stay on everywhere (negative indexes, floor division, overflow of
    # Python ints): the compiled build must answer exactly what the interpreted one does.
    "embedsignature": True,
    # The .py files' annotations are for readers and mypy; the C types are in the .pxd files
    # beside them, so the source stays plain Python that runs interpreted.
    "annotation_typing": False,
}


class OptionalBuildExt(build_ext):
    """Compiles what it can; a failure leaves that module interpreted instead of failing the
    whole install."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as e:  # no compiler at all: interpreted build
            print(f"engine kernel not compiled ({e}): it will run interpreted", file=sys.stderr)
        if self.inplace:
            # The in-place copy keeps the build's mtime in whole seconds, which can read as
            # older than a source saved in the same second: engine/__init__.py would then call
            # the fresh build stale. Stamp the copies now.
            for ext in self.extensions:
                path = self.get_ext_fullpath(ext.name)
                if os.path.exists(path):
                    os.utime(path)

    def build_extension(self, ext) -> None:  # type: ignore[no-untyped-def]
        try:
            super().build_extension(ext)
        except Exception as e:
            print(f"{ext.name} not compiled ({e}): it will run interpreted", file=sys.stderr)


def extensions() -> list:
    if os.environ.get("EXCHANGE_ENGINE_BUILD") == "interpreted":
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        print("Cython missing: the engine kernel will run interpreted", file=sys.stderr)
        return []
    return cythonize([f"engine/{m}.py" for m in KERNEL], compiler_directives=DIRECTIVES, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})

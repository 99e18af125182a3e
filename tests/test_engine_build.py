"""Which engine build runs, and that asking for one gets it (``engine/__init__.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import engine
import engine.core

ROOT = Path(__file__).resolve().parent.parent


def ask(build: str, code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, EXCHANGE_ENGINE_BUILD=build, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT
    )


def test_the_build_asked_for_is_the_build_that_runs() -> None:
    wanted = os.environ.get("EXCHANGE_ENGINE_BUILD", "")
    got = engine.build()
    if wanted:
        assert got == wanted  # make test asks for compiled, then for interpreted
    compiled = not engine.core.__file__.endswith(".py")
    assert got == ("compiled" if compiled else "interpreted")


def test_interpreted_runs_the_python_source_even_where_a_compiled_build_exists() -> None:
    code = "import engine, engine.core; print(engine.build(), engine.core.__file__)"
    r = ask("interpreted", code)
    assert r.returncode == 0, r.stderr
    build, path = r.stdout.split()
    assert build == "interpreted" and path.endswith("engine/core.py")


def test_a_build_that_is_not_there_or_not_a_build_is_an_import_error() -> None:
    r = ask("fast", "import engine")
    assert r.returncode != 0 and "must be compiled or interpreted" in r.stderr
    if any(engine.compiled_path(m) is None for m in engine.KERNEL):
        r = ask("compiled", "import engine.core")
        assert r.returncode != 0 and "no compiled build" in r.stderr

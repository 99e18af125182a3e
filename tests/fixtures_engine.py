"""Pytest fixtures for tests that run the real engine process.

A test module imports the fixture functions it wants; pytest registers them under their
``name`` (so the import does not shadow test parameters):

    from tests.fixtures_engine import engine_procs_fixture  # noqa: F401

(A conftest.py could instead list this module in ``pytest_plugins``.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.procs import EngineProc


@pytest.fixture(name="engine_procs")
def engine_procs_fixture(tmp_path: Path) -> Iterator[Callable[..., EngineProc]]:
    """A factory of (not yet started) EngineProcs; every one is killed at teardown.

    ``engine_procs()`` gives one in ``tmp_path/engine``; keyword arguments go to EngineProc.
    Their logs are printed at teardown, which pytest shows only for failing tests.
    """
    made: list[EngineProc] = []

    def make(name: str = "engine", **kwargs: object) -> EngineProc:
        proc = EngineProc(tmp_path / name, name=name, **kwargs)  # type: ignore[arg-type]
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.cleanup()
        print(proc.logs())


@pytest.fixture(name="engine_proc")
def engine_proc_fixture(engine_procs: Callable[..., EngineProc]) -> EngineProc:
    """One started engine process with the shipped config and an empty data directory."""
    return engine_procs().start()

"""``python -m bench engine`` measures the other engine build in a child (bench/core_child.py):
the child must run the build it is asked for and report a rate for the same stream."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_child_runs_the_asked_build_and_reports_its_rate() -> None:
    env = dict(os.environ, EXCHANGE_ENGINE_BUILD="interpreted", PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-m", "bench.core_child", "200", "2000", "1", "5", "0", "-1"],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True, timeout=300,
    ).stdout  # fmt: skip
    got = json.loads(out)
    assert got["build"] == "interpreted"
    assert got["rate"] > 0

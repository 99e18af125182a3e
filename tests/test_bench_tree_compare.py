"""``python -m bench.tree_compare`` times each tree's own engine: a child must import the tree
it measures, and a tree whose child would import code from elsewhere is refused, not timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.tree_compare import probe

ROOT = Path(__file__).resolve().parent.parent


def test_a_tree_compared_with_itself_reports_both_runs_and_a_ratio(tmp_path: Path) -> None:
    out = tmp_path / "cmp.json"
    subprocess.run(
        [sys.executable, "-m", "bench.tree_compare", str(ROOT), "--rounds", "1", "--warmup",
         "200", "--commands", "2000", "--accounts", "5", "--cpu", "-1", "--build",
         "interpreted", "--streams", "growing", "--json", str(out)],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), check=True, timeout=300,
        capture_output=True,
    )  # fmt: skip
    got = json.loads(out.read_text())
    assert Path(got["probe"]["other"]["engine"]).resolve().is_relative_to(ROOT)
    assert got["probe"]["this"]["build"] == "interpreted"
    assert got["growing"]["this"][0] > 0 and got["growing"]["other"][0] > 0
    assert got["growing"]["ratio"] > 0


def test_a_tree_without_its_own_engine_is_refused(tmp_path: Path) -> None:
    (tmp_path / "bench").mkdir()
    with pytest.raises((RuntimeError, subprocess.CalledProcessError)):
        probe(sys.executable, tmp_path, "interpreted")

"""``python -m bench http --quick`` end to end (real engine, HTTP and JSON gateways, client
processes): every API and mode measures answered orders, every request is answered, none is
refused (the rate limits are lifted, the signatures and timestamps right). No timing asserts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.procs import REPO, child_env


def test_bench_http_quick_runs_every_api_with_every_order_answered(tmp_path: Path) -> None:
    out = tmp_path / "http.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "http", "--quick", "--json", str(out)],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    seen = {(r["api"], r["mode"]) for r in res["throughput"]}
    assert seen == {(a, m) for a in ("v1", "bearer", "v3", "json") for m in ("pipelined", "flat")}
    for r in res["throughput"]:
        assert r["median"] > 0 and r["errors"] == 0 and r["unanswered"] == 0, r
    assert {r["api"] for r in res["latency"]} == {"v1", "bearer", "v3", "json"}
    for r in res["latency"]:
        for run in r["runs"]:
            assert run["errors"] == 0 and run["unanswered"] == 0, run
            assert run["n"] == run["sent"] > 0  # every order sent got its response timed
    assert "## Summary" in proc.stdout and "orders/s" in proc.stdout

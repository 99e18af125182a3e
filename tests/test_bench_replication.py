"""``bench engine --only replication`` in quick mode (bench/replication_bench.py): the
replicated runs really replicated (the engine took over as primary, its stream has messages,
its ``replicated_batches`` counter moved), every paced order was answered, the pipelined client
finished (it stalled before the engine re-read its command socket after sending held
replies), and a failover was measured."""

from __future__ import annotations

import argparse
import math
import shutil

import pytest

from bench import engine_bench, replication_bench

pytestmark = pytest.mark.skipif(shutil.which("nats-server") is None, reason="no nats-server")


def test_quick_replication_phase_replicates_and_measures_a_failover() -> None:
    p = argparse.ArgumentParser()
    engine_bench.add_arguments(p)
    args = p.parse_args(
        ["--quick", "--only", "replication", "--repl-modes", "off,on", "--repl-seconds", "0.5",
         "--repl-pipeline-commands", "6000", "--failover-leases", "1.0:0.2",
         "--failover-lead", "0.3"]
    )  # fmt: skip
    engine_bench._defaults(args)
    res = replication_bench.replication_phase(args)
    on = res["runs"]["on"]
    for r in on["pipeline"] + on["paced"]:
        assert r["took_over"] and r["stream_messages"] > 0
        assert r["metrics"]["replicated_batches"] > 0
    for r in res["runs"]["off"]["pipeline"] + res["runs"]["off"]["paced"]:
        assert "stream_messages" not in r and not r["metrics"].get("replicated_batches")
    for mode in ("off", "on"):
        (paced,) = res["runs"][mode]["paced"]
        assert paced["fixed_rate"]["answered"] == paced["fixed_rate"]["orders"]
        assert res["summary"][mode]["orders_per_s"] > 0
    assert res["summary"]["on"]["replicated"] is True
    (fo,) = res["failover"]["1.0"]
    assert fo["acked_before_kill"] > 0
    assert math.isfinite(fo["failover_s"]) and 0.5 < fo["failover_s"] < 20
    assert fo["took_over_s"] <= fo["failover_s"] + 0.05  # the log line comes before the ack
    assert any("failover" in row[0] for row in replication_bench.rows(res))

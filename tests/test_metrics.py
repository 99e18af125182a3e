"""Prometheus metrics: the shared exporter (protocol/metrics.py), then every process of the
exchange scraped over HTTP while real traffic flows.

Scrapes are parsed with prometheus-client's own parser (``text_string_to_metric_families``),
so what is asserted is what a Prometheus server would read. Expected movements come from the
traffic the test itself sends, never from the process under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine.client import EngineClient
from protocol.config import ConfigError, loads
from protocol.messages import Deposit, Executions, LedgerReply, NewOrder
from protocol.metrics import Exporter
from tests.fixtures_feed import ArgsProc, BridgeProc
from tests.fixtures_fix import FixGatewayProc
from tests.fixtures_gateway import Stack, async_test, write_exchange_config
from tests.fixtures_recorder import RecorderProc
from tests.procs import ProcError, eventually, eventually_async, free_port

WAIT = 60.0  # generous: a loaded 2-core box; a hang still fails, just later


def scrape(url: str) -> dict[str, float]:
    """GET ``url``; every sample as ``name{label="v",...}`` -> value."""
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


async def ascrape(url: str) -> dict[str, float]:
    return await asyncio.to_thread(scrape, url)


def port_refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


# ==================================================================== the exporter itself


class Counts(msgspec.Struct):
    orders: int = 0
    connections: int = 0
    lag_ms: float = 0.0
    up: bool = False
    name: str = "not a number"


@dataclasses.dataclass
class Stats:
    gaps: int = 0


@pytest.fixture(name="exporter")
def exporter_fixture() -> Iterator[Exporter]:
    ex = Exporter("unit")
    yield ex
    ex.close()


def test_exporter_reads_structs_dataclasses_mappings_and_callables_when_scraped(
    exporter: Exporter,
) -> None:
    counts, stats, table = Counts(), Stats(), {"sessions": 2}
    exporter.add(counts, gauges=("connections",)).add(stats, prefix="feed_")
    exporter.add(table, gauges=("sessions",)).add(lambda: {"answers": 42})
    exporter.labelled("levels", "levels per side", ["side"], lambda: [(("bid",), 3), (("ask",), 4)])
    address = exporter.serve("127.0.0.1:0")
    assert address is not None
    url = f"http://127.0.0.1:{address[1]}/metrics"

    counts.orders, counts.connections, counts.lag_ms, counts.up, stats.gaps = 7, 3, 1.5, True, 2
    first = scrape(url)
    counts.orders += 5
    table["sessions"] = 9
    second = scrape(url)

    assert first["exchange_unit_orders_total"] == 7 and second["exchange_unit_orders_total"] == 12
    assert first["exchange_unit_connections"] == 3
    assert first["exchange_unit_lag_ms"] == 1.5 and first["exchange_unit_up"] == 1
    assert first["exchange_unit_feed_gaps_total"] == 2
    assert (first["exchange_unit_sessions"], second["exchange_unit_sessions"]) == (2, 9)
    assert first["exchange_unit_answers_total"] == 42
    assert first['exchange_unit_levels{side="bid"}'] == 3
    assert first['exchange_unit_levels{side="ask"}'] == 4
    assert not any("name" in k for k in first)  # strings are not metrics
    assert "process_cpu_seconds_total" in first  # the standard process collector
    body, content_type = exporter.render()
    assert content_type.startswith("text/plain") and b"exchange_unit_orders_total 12.0" in body


def test_exporter_close_frees_its_port_and_a_taken_port_is_logged_not_fatal(
    exporter: Exporter, caplog: pytest.LogCaptureFixture
) -> None:
    address = exporter.serve("127.0.0.1:0")
    assert address is not None
    port = address[1]
    other = Exporter("other")
    assert other.serve(f"127.0.0.1:{port}") is None  # taken: the process goes on without it
    assert "cannot listen on" in caplog.text and "running without /metrics" in caplog.text
    exporter.close()
    assert port_refuses(port)
    assert Exporter("off").serve("") is None


def test_idle_metrics_thread_never_wakes_up(exporter: Exporter) -> None:
    """The endpoint thread blocks in accept() until a scrape: an idle engine pays nothing
    (prometheus-client's own start_http_server wakes twice a second to poll for shutdown)."""
    address = exporter.serve("127.0.0.1:0")
    assert address is not None and exporter.thread is not None
    task = Path(f"/proc/self/task/{exporter.thread.native_id}")

    def switches() -> int:
        for line in (task / "status").read_text().splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
        raise AssertionError(f"no voluntary_ctxt_switches in {task}/status")

    def waiting_for_a_connection() -> bool:  # blocked in poll(), not on the GIL or replying
        wchan = (task / "wchan").read_text()  # "0" while it runs
        return "poll" in wchan or "select" in wchan

    scrape(f"http://127.0.0.1:{address[1]}/metrics")
    eventually(waiting_for_a_connection, 10, 0.01, "the metrics thread back in poll()")
    before = switches()
    time.sleep(1.5)  # a measurement, not a wait: the count must not move at all
    assert switches() == before


def test_metrics_addresses_are_checked_when_the_config_loads() -> None:
    base = '[assets.USD]\ndecimals = 2\n[markets]\n[metrics]\nengine = "{}"\n'
    assert loads(base.format("127.0.0.1:9999")).metrics.engine == "127.0.0.1:9999"
    assert loads(base.format("")).metrics.engine == ""
    for bad in ("9101", "127.0.0.1:", "127.0.0.1:http", "host:70000"):
        with pytest.raises(ConfigError, match="metrics.engine"):
            loads(base.format(bad))


# ==================================================================== every process


def _family(samples: dict[str, float], prefix: str) -> dict[str, float]:
    return {k: v for k, v in samples.items() if k.startswith(prefix)}


@async_test
async def test_every_process_serves_prometheus_metrics_that_move_with_traffic(
    tmp_path: Path,
) -> None:
    ports = {name: free_port() for name in ("engine", "json_gateway", "fix_gateway", "mm")}
    config = write_exchange_config(
        tmp_path / "exchange.toml",
        pool=0,
        metrics={
            "engine": f"127.0.0.1:{ports['engine']}",
            "json_gateway": f"127.0.0.1:{ports['json_gateway']}",
            "fix_gateway": f"127.0.0.1:{ports['fix_gateway']}",
            "marketmaker": f"127.0.0.1:{ports['mm']}",
        },
    )
    stack = Stack(tmp_path, config)
    procs: list[Any] = []
    try:
        await stack.astart_engine()
        await stack.aadd_gateway("gateway")
        engine = stack.engine
        rec = RecorderProc(tmp_path / "recorder", engine=engine, batch_ms=20)
        bridge = BridgeProc(tmp_path / "bridge", config=config, engine=engine)
        fix = FixGatewayProc(
            tmp_path / "fix",
            config=config,
            engine=engine,
            accounts=stack.accounts_db,
            identity="metrics-test-fix",
        )
        procs += [rec, bridge, fix]
        await asyncio.to_thread(rec.start)
        await bridge.astart()
        await asyncio.to_thread(fix.start)
        url = {
            "engine": f"http://127.0.0.1:{ports['engine']}/metrics",
            "json": f"http://127.0.0.1:{ports['json_gateway']}/metrics",
            "fix": f"http://127.0.0.1:{ports['fix_gateway']}/metrics",
            "mm": f"http://127.0.0.1:{ports['mm']}/metrics",
            "recorder": rec.url("/metrics"),
            "bridge": bridge.url("/metrics"),
        }
        before = {k: await ascrape(u) for k, u in url.items() if k != "mm"}
        assert before["engine"]["exchange_engine_open_orders"] == 0
        assert before["json"]["exchange_json_gateway_engine_available"] == 1

        # the market maker, through the JSON gateway
        mm = await stack.funded(USD="1000000", BTC="20", ETH="300")
        creds = tmp_path / "mm.json"
        creds.write_text(json.dumps({"mm": {"api_key": mm.key, "secret": mm.secret}}))
        maker = ArgsProc(
            "marketmaker",
            tmp_path / "mm",
            ["--config", str(config), "--credentials", str(creds),
             "--port", str(stack.gateway.port), "--interval", "0.2",
             "--commands", engine.commands, "--market-data", engine.market_data,
             "--recorder", rec.url("")],
            "marketmaker",
        )  # fmt: skip
        procs.append(maker)
        maker.spawn()

        # traffic of our own, straight into the engine: 2 deposits, 20 resting, 10 taking
        client = EngineClient(engine.commands, b"metrics-test-desk", timeout=30)
        await client.start(wait=30)
        try:
            for account in (9001, 9002):
                for asset, units in (("USD", 10**12), ("BTC", 10**10)):
                    reply = await client.request(Deposit(0, account, asset, units))
                    assert isinstance(reply, LedgerReply), reply
            rest = [NewOrder(0, 9001, "BTC-USD", 2, 1, 1, 5_000_000 + i, 10) for i in range(20)]
            take = [NewOrder(0, 9002, "BTC-USD", 1, 1, 2, 6_000_000, 10) for _ in range(10)]
            for reply in await client.request_many(rest + take):
                assert isinstance(reply, Executions), reply
        finally:
            await client.close()
        n_commands = 4 + len(rest) + len(take)

        async def moved() -> dict[str, dict[str, float]]:
            try:
                now = {k: await ascrape(u) for k, u in url.items()}
            except OSError as e:  # the market maker may still be starting
                raise AssertionError(f"not every endpoint answers yet: {e}") from None
            e, b = now["engine"], before["engine"]
            assert (
                e["exchange_engine_commands_total"]
                >= b["exchange_engine_commands_total"] + n_commands
            )
            trades = 'exchange_engine_trades_total{market="BTC-USD"}'
            assert e[trades] >= b[trades] + 10
            assert e["exchange_engine_seq"] >= b["exchange_engine_seq"] + n_commands
            assert e['exchange_engine_book_levels{market="BTC-USD",side="ask"}'] >= 10
            j = "exchange_json_gateway_requests_total"
            assert now["json"][j] > before["json"][j]
            assert now["recorder"]["exchange_recorder_trades_written_total"] >= 10
            m = "exchange_bridge_md_messages_total"
            assert now["bridge"][m] > before["bridge"][m]
            f = "exchange_fix_gateway_feed_messages_total"
            assert now["fix"][f] > before["fix"][f]
            assert now["mm"]["exchange_marketmaker_ticks_total"] >= 2
            assert now["mm"]["exchange_marketmaker_orders_sent_total"] > 0
            return now

        now = await eventually_async(moved, WAIT, 0.2, "every process's counters moved")
        assert "exchange_fix_gateway_orders_total" in now["fix"]
        assert now["recorder"]["exchange_recorder_clickhouse_ok"] == 1
        assert _family(now["bridge"], "exchange_bridge_feed_")

        # clean stops: exit 0, the address was logged, the port is free again
        for proc, port in ((maker, ports["mm"]), (fix, ports["fix_gateway"])):
            assert await proc.astop() == 0, proc.log()
            assert f"metrics (Prometheus) on http://127.0.0.1:{port}/metrics" in proc.log()
            assert port_refuses(port)
        assert await stack.gateway.astop() == 0
        assert port_refuses(ports["json_gateway"])
        assert await engine.astop() == 0
        assert f"metrics (Prometheus) on http://127.0.0.1:{ports['engine']}/metrics" in (
            engine.log()
        )
        assert port_refuses(ports["engine"])
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(ProcError):
                if proc.running:
                    proc.stop()
            proc.cleanup()
        stack.close()
        print(stack.logs(), *(p.logs() for p in procs))

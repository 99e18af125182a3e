"""The operator's view of the ledger: ``python -m gateways.admin fees`` and ``audit`` against the
real engine process, after deposits, withdrawals and trades that charge fees.

The expected fee balances are the sums of ``fee`` over every execution report the engine sent
(replies and unsolicited fills alike), each in the asset its receiver got: base for a buyer,
quote for a seller. The expected totals are what the test deposited minus what it withdrew.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from engine.client import EngineClient
from gateways.admin import audit_text
from protocol.config import load
from protocol.messages import (
    AssetAudit,
    AuditReply,
    Deposit,
    ExecReport,
    Executions,
    LedgerReply,
    NewOrder,
    Withdraw,
)
from tests.fixtures_engine import engine_procs_fixture  # noqa: F401
from tests.procs import REPO, EngineProc, write_config

BUY, SELL, LIMIT, GTC, IOC = 1, 2, 1, 1, 2


def admin(config: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "gateways.admin", "--config", str(config),
           "--accounts", str(tmp_path / "accounts.db"), *args]  # fmt: skip
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)


def table(out: str) -> dict[str, list[str]]:
    """Rows of the CLI's output by asset (first word), the rest split on whitespace."""
    ex = load()
    rows = (line.split() for line in out.splitlines())
    return {w[0]: w[1:] for w in rows if w and w[0] in ex.assets}


async def trade(engine: EngineProc) -> tuple[dict[str, int], dict[str, int]]:
    """Deposits, a withdrawal, and crossing orders on every market; returns (deposits minus
    withdrawals, fees from every execution report), per asset, in minor units."""
    ex = load()
    reports: list[ExecReport] = []
    client = EngineClient(engine.commands, b"audit-test", timeout=30, on_event=reports.append)
    await client.start(wait=30)
    net: dict[str, int] = defaultdict(int)
    try:
        for account in (11, 12, 13):
            for asset, units in (("USD", 10**13), ("BTC", 10**11), ("ETH", 10**12)):
                reply = await client.request(Deposit(0, account, asset, units + account))
                assert isinstance(reply, LedgerReply), reply
                net[asset] += units + account
        reply = await client.request(Withdraw(0, 13, "USD", 123_456))
        assert isinstance(reply, LedgerReply), reply
        net["USD"] -= 123_456
        prices = {"BTC-USD": 5_000_000, "ETH-USD": 300_000, "ETH-BTC": 6_000}
        cmds = []
        for i, (market, price) in enumerate(prices.items()):
            maker, taker = 11 + i % 3, 11 + (i + 1) % 3
            for k in range(5):  # makers on both sides, takers crossing them
                side = SELL if k % 2 else BUY
                cmds.append(NewOrder(0, maker, market, side, LIMIT, GTC, price + k, 137 + k))
                cross = price + (50 if side == SELL else -50)
                cmds.append(NewOrder(0, taker, market, 3 - side, LIMIT, IOC, cross, 60))
        for reply in await client.request_many(cmds):
            assert isinstance(reply, Executions), reply
            reports += reply.reports
    finally:
        await client.close()
    fees: dict[str, int] = defaultdict(int)
    for r in reports:
        spec = ex.markets[r.market]
        fees[spec.base if r.side == BUY else spec.quote] += r.fee
    assert all(fees[a] > 0 for a in ex.assets), fees  # every asset earned fees
    return dict(net), dict(fees)


def test_admin_fees_and_audit_show_the_ledger_from_the_engine(
    engine_procs: Callable[..., EngineProc], tmp_path: Path
) -> None:
    engine = engine_procs().start()
    config = write_config(tmp_path / "cli.toml", commands=engine.commands)
    ex = load()
    net, fees = asyncio.run(asyncio.wait_for(trade(engine), 120))

    done = admin(config, tmp_path, "fees")
    assert done.returncode == 0, done.stderr
    assert "fee account 0" in done.stdout
    rows = table(done.stdout)
    for asset in ex.assets:
        assert rows[asset] == ["available", ex.units_text(asset, fees[asset]), "locked",
                               ex.units_text(asset, 0)], (asset, done.stdout)  # fmt: skip

    done = admin(config, tmp_path, "audit")
    assert done.returncode == 0, done.stdout + done.stderr
    rows = table(done.stdout)
    assert set(rows) == set(ex.assets)
    for asset, row in rows.items():
        available, locked, total, deposits, check = row
        assert check == "OK", done.stdout
        assert total == deposits == ex.units_text(asset, net[asset]), (asset, done.stdout)
    assert rows["BTC"][1] != ex.units_text("BTC", 0)  # resting orders hold funds locked
    assert "4 accounts" in done.stdout  # three traders and the fee account


def test_audit_reports_a_mismatch_by_how_much() -> None:
    ex = load()
    reply = AuditReply(
        0,
        7,
        0,
        2,
        [AssetAudit("USD", 1_000_000, 500_000, 1_500_000, 0, 0),
         AssetAudit("BTC", 10, 0, 11, 0, 0)],
    )  # fmt: skip
    text, ok = audit_text(ex, reply)
    assert not ok
    lines = table(text)
    assert lines["USD"][-1] == "OK"
    assert lines["BTC"][-3:] == ["MISMATCH", "by", "-0.00000001"]

"""The launcher behind ``make run`` (stack/): its restart backoff as a pure policy driven with
explicit timestamps, the supervisor restarting a real crashing child, and the whole stack as
``python -m stack`` on free ports: "Exchange is up" only once every part answers its health
check, and a part killed with SIGKILL is restarted and answers again."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from decimal import Decimal
from pathlib import Path

import pytest

from gateways.accounts import AccountStore
from gateways.vault import Vault
from stack import health
from stack.demo import SIGNUP_FUNDS
from stack.supervisor import FIRST_PAUSE, HEALTHY_AFTER, MAX_PAUSE, Backoff, Child, start, supervise
from tests.procs import REPO, eventually, free_port, write_exchange_toml

STACK_START_TIMEOUT = 180.0  # every part, chDB and quickfix included, on a loaded 2-core box


# ------------------------------------------------------------------------- the policy


def test_backoff_doubles_while_a_part_keeps_crashing_up_to_the_cap() -> None:
    b = Backoff()
    pauses = []
    now = 0.0
    for _ in range(10):
        b.started(now)
        now += 1.0  # dies a second after each start
        pauses.append(b.exited(now))
        now += pauses[-1]
    assert pauses[:4] == [FIRST_PAUSE, 2 * FIRST_PAUSE, 4 * FIRST_PAUSE, 8 * FIRST_PAUSE]
    assert pauses[-1] == MAX_PAUSE
    assert pauses == sorted(pauses)


def test_backoff_resets_after_a_part_ran_healthily() -> None:
    b = Backoff()
    now = 0.0
    for _ in range(8):  # a crash loop takes the pause to the cap
        b.started(now)
        now += 1.0
        pause = b.exited(now)
        now += pause
    assert pause == MAX_PAUSE
    b.started(now)
    now += HEALTHY_AFTER  # then it runs fine for a minute (or weeks) and dies
    assert b.exited(now) == FIRST_PAUSE
    b.started(now)
    now += HEALTHY_AFTER - 1  # a crash soon after the restart backs off again
    assert b.exited(now) == 2 * FIRST_PAUSE


def test_backoff_healthy_period_is_configurable() -> None:
    b = Backoff(healthy_after=5.0)
    b.started(100.0)
    assert b.exited(101.0) == FIRST_PAUSE
    b.started(101.5)
    assert b.exited(106.5) == FIRST_PAUSE  # ran 5 s: healthy
    b.started(107.0)
    assert b.exited(108.0) == 2 * FIRST_PAUSE


# ------------------------------------------------------------------ the supervisor


async def _supervise_crashing_child(healthy_after: float, restarts: int) -> list[float]:
    """A real child that exits at once with 3, supervised until ``restarts`` restarts; the
    pauses asked for are recorded instead of waited out."""
    child = Child(
        "crasher",
        [sys.executable, "-c", "raise SystemExit(3)"],
        backoff=Backoff(healthy_after=healthy_after),
    )
    stopping = asyncio.Event()
    pauses: list[float] = []

    async def sleep(pause: float) -> None:
        pauses.append(pause)
        if len(pauses) == restarts:
            stopping.set()

    await start(child)
    await asyncio.wait_for(supervise(child, stopping, sleep=sleep), 60)
    assert child.proc is not None and await child.proc.wait() == 3
    assert child.restarts == restarts
    return pauses


def test_supervisor_restarts_a_crashing_child_with_growing_pauses() -> None:
    pauses = asyncio.run(_supervise_crashing_child(healthy_after=1e9, restarts=5))
    assert pauses == [FIRST_PAUSE * 2**i for i in range(5)]


def test_supervisor_restarts_quickly_when_every_run_counts_as_healthy() -> None:
    pauses = asyncio.run(_supervise_crashing_child(healthy_after=0.0, restarts=5))
    assert pauses == [FIRST_PAUSE] * 5


def test_health_probes_say_why_a_part_is_not_up() -> None:
    port = free_port()  # nothing listens there

    async def probe() -> tuple:
        return (
            await health.tcp("127.0.0.1", port),
            await health.http_health("127.0.0.1", port),
            await health.json_ping("127.0.0.1", port),
        )

    for reason in asyncio.run(probe()):
        assert reason is not None and str(port) in reason


def _scripted(answers: list[str | None], calls: list[str], name: str) -> health.Probe:
    """A probe that gives ``answers`` in turn (the last one from then on)."""

    async def probe() -> str | None:
        calls.append(name)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    return probe


def test_wait_healthy_needs_every_part_healthy_in_one_round() -> None:
    calls: list[str] = []
    reports: list[dict[str, str]] = []
    probes = {
        "quick": _scripted([None, "crashed", None], calls, "quick"),  # up, down, up again
        "slow": _scripted(["starting", "starting", None], calls, "slow"),
    }

    async def body() -> bool:
        return await health.wait_healthy(probes, asyncio.Event(), reports.append, 0, 0)

    assert asyncio.run(body()) is True
    # round 1: quick up, slow not; round 2: only slow (not up); round 3: slow up;
    # confirming round: quick is down again; then it is waited for until a full round passes
    assert calls == ["quick", "slow", "slow", "slow", "quick", "slow", "quick", "quick", "slow"]
    assert {"slow": "starting"} in reports and {"quick": "crashed"} in reports


def test_wait_healthy_gives_up_when_stopping() -> None:
    async def body() -> bool:
        stopping = asyncio.Event()
        stopping.set()
        return await health.wait_healthy({"never": _scripted(["no"], [], "n")}, stopping, print)

    assert asyncio.run(body()) is False


# ------------------------------------------------------------------- the real stack


def _children(pid: int) -> dict[int, str]:
    """Child pid -> command line, from /proc."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                cmd = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            except FileNotFoundError:
                continue
            out[int(child)] = cmd.decode(errors="replace")
    return out


def _pid_of(pid: int, module: str) -> int | None:
    found = [c for c, cmd in _children(pid).items() if f" -m {module} " in f"{cmd} "]
    return found[0] if found else None


def _http_ok(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
        return r.status == 200


@pytest.fixture
def stack_proc(tmp_path: Path):
    names = ("cmd", "md", "json", "bridge", "fix", "recorder", "http", "http_ws")
    ports = {name: free_port() for name in names}
    cfg = write_exchange_toml(
        tmp_path / "exchange.toml",
        engine={
            "commands": f"tcp://127.0.0.1:{ports['cmd']}",
            "market_data": f"tcp://127.0.0.1:{ports['md']}",
        },
        json_gateway={"port": ports["json"]},
        bridge={"port": ports["bridge"]},
        fix_gateway={"port": ports["fix"]},
        recorder={"port": ports["recorder"]},
        http_gateway={"port": ports["http"], "ws_port": ports["http_ws"]},
    )
    out, err, var = tmp_path / "stdout.txt", tmp_path / "stderr.txt", tmp_path / "var"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("EXCHANGE_CONFIG", None)
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            [sys.executable, "-m", "stack", "--config", str(cfg), "--data-dir", str(var)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=o,
            stderr=e,
        )  # fmt: skip
    try:
        yield proc, ports, out, err
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                for child in _children(proc.pid):
                    os.killpg(child, signal.SIGKILL)  # each part leads its own session
                proc.kill()
                proc.wait()


def test_stack_says_up_only_when_every_part_answers_and_restarts_a_killed_part(
    stack_proc,
) -> None:
    proc, ports, out, err = stack_proc

    def up() -> bool:
        assert proc.poll() is None, f"stack exited with {proc.returncode}\n{err.read_text()}"
        return "Exchange is up" in out.read_text()

    eventually(up, STACK_START_TIMEOUT, 0.05, "the banner")
    # the moment the banner is out, every part answers (no waiting here)
    for name in ("json", "fix", "bridge", "recorder"):
        asyncio.run(_assert_listening(ports[name], name))
    assert _http_ok(ports["bridge"]) and _http_ok(ports["recorder"])
    _assert_demo_keys_sign(out.parent / "var")
    _assert_signup_gets_demo_funds(ports["http"])

    gateway = _pid_of(proc.pid, "gateways.json_tcp")
    assert gateway is not None, _children(proc.pid)
    os.kill(gateway, signal.SIGKILL)
    eventually(
        lambda: "json-gateway exited with -9; restart #1 in 0.5s" in err.read_text(),
        30, 0.05, "the supervisor noticing the kill",
    )  # fmt: skip

    def answers_again() -> bool:
        new = _pid_of(proc.pid, "gateways.json_tcp")
        return (
            new not in (None, gateway)
            and asyncio.run(health.json_ping("127.0.0.1", ports["json"])) is None
        )

    eventually(answers_again, 60, 0.1, "a restarted JSON gateway that answers")

    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0, err.read_text()[-5000:]
    assert "stopping all parts" in err.read_text()


def _assert_demo_keys_sign(var: Path) -> None:
    """The demo credentials the banner prints open for HMAC signing with the stack's vault."""
    vault_file = var / "vault.key"
    assert (vault_file.stat().st_mode & 0o777) == 0o600
    store = AccountStore(var / "accounts.db")
    try:
        for c in json.loads((var / "demo-credentials.json").read_text()).values():
            signing = store.signing_key(c["api_key"], Vault.load(vault_file))
            assert signing is not None and signing[1] == c["secret"].encode(), c
    finally:
        store.close()


def _assert_signup_gets_demo_funds(port: int) -> None:
    """make run is the demo stack: a web account signed up there starts with SIGNUP_FUNDS
    (the shipped config alone grants nothing)."""
    base = f"http://127.0.0.1:{port}/api/v1"
    body = json.dumps({"email": "demo-user@example.com", "password": "a demo password"})
    req = urllib.request.Request(f"{base}/signup", body.encode(), method="POST",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=20) as r:
        token = json.loads(r.read())["access_token"]
    req = urllib.request.Request(f"{base}/balances", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=20) as r:
        got = {b["asset"]: Decimal(b["available"]) for b in json.loads(r.read())}
    want = {a: Decimal(v) for a, v in (p.split("=") for p in SIGNUP_FUNDS.split(","))}
    assert got == want, got


async def _assert_listening(port: int, name: str) -> None:
    reason = await health.tcp("127.0.0.1", port)
    assert reason is None, f"{name}: {reason}"


def test_the_replicated_stack_runs_log_servers_a_primary_and_a_standby(tmp_path: Path) -> None:
    """``python -m stack --replicated``: its config turns replication on with three local NATS
    servers and lists both engines for the clients; the parts are the log, the engine and a
    standby on other ports, data directory and metrics port."""
    import argparse

    from protocol import config
    from stack.__main__ import children, replicated_config

    args = argparse.Namespace(config=None, data_dir=str(tmp_path), cpu=None, replicated=True)
    args.config = replicated_config(args)
    ex = config.load(args.config)
    assert len(ex.replication.servers) == 3
    assert config.engine_endpoints(ex) == ex.replication.engines
    assert ex.engine.commands == ex.replication.engines[0]
    kids = {c.name: c.argv for c in children(args, ex)}
    assert list(kids)[:3] == ["nats", "engine", "engine-standby"]
    standby = kids["engine-standby"]
    for flag, value in (("--commands", ex.replication.engines[1]), ("--node", "b"),
                        ("--market-data", ex.replication.market_data[1])):  # fmt: skip
        assert standby[standby.index(flag) + 1] == value
    assert standby[standby.index("--data-dir") + 1] != kids["engine"][kids["engine"].index(
        "--data-dir") + 1]  # fmt: skip
    assert "--metrics" in standby

"""Start the whole exchange with its embedded defaults: ``python -m stack`` (``make run``).

Each part runs as its own supervised child process (the same command an operator would run
by hand), its log lines prefixed with its name. "Exchange is up" and the addresses are
printed once every part answers its health check (``stack/health.py``). A child that dies is
restarted with backoff (``stack/supervisor.py``); Ctrl-C or SIGTERM stops them all in reverse
order and waits for each to exit cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import uvloop

from engine import curve
from engine.client import EngineUnavailable
from gateways.vault import Vault, VaultError
from protocol import config
from stack import health
from stack.demo import SIGNUP_FUNDS, ensure_demo
from stack.supervisor import Child, start, stop, supervise

log = logging.getLogger("stack")


def account_files(data_dir: str | Path) -> tuple[Path, Path]:
    """The stack's account store and the vault key file that seals its API secrets: side by
    side in the data dir, passed to each part as ``--accounts`` (and ``--vault`` where a part
    opens sealed secrets)."""
    return Path(data_dir) / "accounts.db", Path(data_dir) / "vault.key"


def children(args: argparse.Namespace, ex: config.Exchange) -> list[Child]:
    """The parts that start before the demo accounts exist."""
    py = [sys.executable, "-m"]
    cfg = ["--config", args.config] if args.config else []
    data = Path(args.data_dir)
    pin = ["--cpu", str(args.cpu)] if args.cpu is not None else []
    accounts = ["--accounts", str(account_files(data)[0])]
    if ex.replication.servers:  # three log servers, the primary and a standby (README)
        b_cmd, b_md = ex.replication.engines[1], ex.replication.market_data[1]
        engines = [
            Child("nats", [*py, "engine.natscluster", str(data / "nats"), "--port",
                           ex.replication.servers[0].rsplit(":", 1)[1]]),
            Child("engine", [*py, "engine", *cfg, "--data-dir", str(data / "engine"), *pin,
                             "--node", "a"]),
            Child("engine-standby", [*py, "engine", *cfg, "--data-dir",
                                     str(data / "engine-standby"), "--node", "b",
                                     "--commands", b_cmd, "--market-data", b_md,
                                     "--metrics", "127.0.0.1:9111"]),
        ]  # fmt: skip
    else:
        engines = [Child("engine", [*py, "engine", *cfg, "--data-dir", str(data / "engine"), *pin])]
    return [
        *engines,
        Child("json-gateway", [*py, "gateways.json_tcp", *cfg, *accounts]),
        Child(
            "recorder",
            [
                *py,
                "recorder",
                *cfg,
                *accounts,
                "--clickhouse",
                f"chdb://{(data / 'clickhouse').resolve()}",
            ],
        ),
        Child("ws-bridge", [*py, "feed", *cfg]),
        Child(
            "fix-gateway", [*py, "gateways.fix", *cfg, *accounts, "--data-dir", str(data / "fix")]
        ),
        Child(
            "http-gateway",
            [
                *py,
                "gateways.http",
                *cfg,
                *accounts,
                "--vault",
                str(account_files(data)[1]),
                "--signup-funds",
                SIGNUP_FUNDS,
            ],  # fmt: skip
        ),
    ]


def curve_clients(ex: config.Exchange) -> list[str]:
    """The key names the stack's parts connect to the engine with (engine/curve.py)."""
    return [
        ex.json_gateway.identity,
        ex.fix_gateway.identity,
        ex.http_gateway.identity,
        ex.recorder.identity,
        "bridge",
        "stack-demo",
        "admin-cli",
        "marketmaker",
    ]


def market_maker(args: argparse.Namespace, creds_path: Path) -> Child:
    cfg = ["--config", args.config] if args.config else []
    argv = [sys.executable, "-m", "marketmaker", *cfg, "--credentials", str(creds_path)]
    return Child("marketmaker", argv)


def metrics_lines(ex: config.Exchange) -> list[str]:
    """Prometheus targets (GET /metrics): config [metrics]; the recorder and bridge: own port."""
    m = ex.metrics
    targets = [f"{name} {address}" for name, address in (
        ("engine", m.engine), ("json-gateway", m.json_gateway), ("fix-gateway", m.fix_gateway),
        ("http-gateway", m.http_gateway), ("marketmaker", m.marketmaker),
        ("recorder", f"{ex.recorder.host}:{ex.recorder.port}"),
        ("ws-bridge", f"{ex.bridge.host}:{ex.bridge.port}"),
    ) if address]  # fmt: skip
    heads = ["  Prometheus targets (GET /metrics): "] + [" " * 37] * len(targets)
    return [
        heads[k] + "  ".join(targets[i : i + 3]) for k, i in enumerate(range(0, len(targets), 3))
    ]


def banner(ex: config.Exchange, creds: dict[str, dict], creds_path: Path, data_dir: str) -> str:
    e, j, h = ex.engine, ex.json_gateway, ex.http_gateway
    lines = [
        "",
        "=" * 78,
        "  Exchange is up.",
        f"  JSON/TCP gateway (programs, nc):    {j.host}:{j.port}   (docs/json-protocol.md)",
        f"  FIX 4.4 gateway (institutions):     {ex.fix_gateway.host}:{ex.fix_gateway.port}"
        f"   TargetCompID {ex.fix_gateway.sender_comp_id}   (docs/fix.md)",
        f"  Engine commands (ZeroMQ ROUTER):    {e.commands}   (internal, trusted"
        + (f"; CURVE, keys in {e.curve_keys})" if e.curve_keys else ")"),
        f"  Market data (ZeroMQ PUB, T./D./B.): {e.market_data}",
        f"  REST API (/api/v1, Binance /api/v3): http://{h.host}:{h.port}/api/v1/markets"
        f"   (docs/rest.md; OpenAPI: /openapi.json)",
        f"  Binance-style streams (ccxt.pro):   ws://{h.host}:{h.ws_port}/ws   "
        "(docs/binance-streams.md)",
        f"  Trading dashboard (browser):        http://{h.host}:{h.port}/   (sign up there; "
        f"new accounts get demo funds {SIGNUP_FUNDS}; docs/web.md)",
        f"  Market dashboard (watch only):      http://{ex.bridge.host}:{ex.bridge.port}/",
        f"  Websocket streams / HTTP API:       ws://{ex.bridge.host}:{ex.bridge.port}/ws"
        f"  http://{ex.bridge.host}:{ex.bridge.port}/api/...",
        f"  ClickHouse (recorder, embedded):    chdb://{Path(data_dir, 'clickhouse')}   queries: "
        f"http://{ex.recorder.host}:{ex.recorder.port}/sql, python -m recorder klines|sql",
        *metrics_lines(ex),
        f"  Markets: {', '.join(ex.markets)}",
        "  Demo accounts (a market maker is quoting on every market):",
    ]
    for name in ("alice", "bob"):
        c = creds[name]
        lines.append(
            f"    {name:6} account {c['account']}  api_key {c['api_key']}  secret {c['secret']}"
            f"  FIX SenderCompID {c.get('fix_sender_comp_id', '-')}"
        )
    lines += [f"  (all demo credentials: {creds_path})", "  Stop with Ctrl-C.", "=" * 78, ""]
    return "\n".join(lines)


def _reachable(host: str) -> str:
    """Where to connect to reach a part listening on ``host`` (a wildcard: loopback)."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104


def probes(ex: config.Exchange, engine: health.EngineProbes) -> dict[str, health.Probe]:
    """Each part's health check (stack/health.py), by the name of its child."""
    j, fx, rec, br, ht = ex.json_gateway, ex.fix_gateway, ex.recorder, ex.bridge, ex.http_gateway
    jhost = _reachable(j.host)
    nats = ex.replication.servers[0].rsplit(":", 1)[1] if ex.replication.servers else "0"
    return {
        "nats": lambda: health.tcp("127.0.0.1", int(nats)),
        "engine-standby": _alive,
        "engine": engine.ping,
        "json-gateway": (
            (lambda: health.tcp(jhost, j.port))
            if j.tls_cert
            else (lambda: health.json_ping(jhost, j.port))
        ),
        "recorder": lambda: health.http_health(_reachable(rec.host), rec.port),
        "ws-bridge": lambda: health.http_health(_reachable(br.host), br.port),
        "fix-gateway": lambda: health.tcp(_reachable(fx.host), fx.port),
        "http-gateway": (
            (lambda: health.tcp(_reachable(ht.host), ht.port))
            if ht.tls_cert
            else (lambda: health.http_health(_reachable(ht.host), ht.port))
        ),
        "marketmaker": engine.two_sided,
    }


async def _alive() -> str | None:
    return None  # a standby answers nothing until it takes over; its supervisor restarts it


def _waiting(reasons: dict[str, str]) -> None:
    log.info("waiting for %s", "; ".join(f"{name}: {why}" for name, why in reasons.items()))


REPLICATED = """
# written by python -m stack --replicated: three NATS JetStream servers, a primary engine and a
# standby on this machine (engine/replication.py; README "Replication")
[replication]
servers = ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"]
engines = ["tcp://127.0.0.1:7001", "tcp://127.0.0.1:7011"]
market_data = ["tcp://127.0.0.1:7002", "tcp://127.0.0.1:7012"]
"""


def replicated_config(args: argparse.Namespace) -> str:
    """The stack's config with the replication section above (written to the data dir)."""
    base = Path(args.config) if args.config else config.DEFAULT_CONFIG
    path = Path(args.data_dir) / "replicated.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(base.read_text() + REPLICATED)
    return str(path)


async def run(args: argparse.Namespace) -> int:
    ex = config.load(args.config)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    if ex.engine.curve_keys:  # every part of the stack gets its key pair (existing ones are kept)
        made = curve.generate(Path(ex.engine.curve_keys), curve_clients(ex))
        log.info("CURVE on: keys in %s (%d new files)", ex.engine.curve_keys, len(made))
    accounts, vault = account_files(args.data_dir)
    ex.accounts.path, ex.accounts.vault_key = str(accounts), str(vault)
    try:  # before any part that opens sealed secrets starts
        log.info("API secrets sealed with vault key %s", Vault.create(vault).current)
    except VaultError as e:
        log.error("%s", e)
        return 1
    kids = children(args, ex)
    began = loop.time()
    for child in kids:
        await start(child)
    watchers = [asyncio.ensure_future(supervise(c, stopping)) for c in kids]
    engine = health.EngineProbes(ex, "stack-demo")
    try:
        creds, creds_path = await ensure_demo(ex, Path(args.data_dir))
    except EngineUnavailable as e:
        log.error("%s", e)
        stopping.set()
    if not stopping.is_set():
        mm = market_maker(args, creds_path)
        await start(mm)
        kids.append(mm)
        watchers.append(asyncio.ensure_future(supervise(mm, stopping)))
        checks = probes(ex, engine)
        if await health.wait_healthy({c.name: checks[c.name] for c in kids}, stopping, _waiting):
            log.info(
                "all %d parts answer their health checks, %.1fs after start",
                len(kids),
                loop.time() - began,
            )
            print(banner(ex, creds, creds_path, args.data_dir), flush=True)
    await engine.close()
    await stopping.wait()
    log.info("stopping all parts")
    for child in reversed(kids):
        await stop(child)
    for w in watchers:
        w.cancel()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m stack", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="TOML config (default: the shipped one)")
    parser.add_argument("--data-dir", default="var", help="where every part keeps its data")
    parser.add_argument("--cpu", type=int, help="pin the engine to this core")
    parser.add_argument(
        "--replicated",
        action="store_true",
        help="three NATS servers, a primary and a standby engine (a replicated journal)",
    )
    args = parser.parse_args()
    if args.replicated:
        args.config = replicated_config(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return uvloop.run(run(args))


if __name__ == "__main__":
    sys.exit(main())

"""The replicated journal and the hot standby (engine/replication.py), with real processes: a
three-server NATS JetStream cluster (engine/natscluster.py), a primary and a standby engine.

Each test can fail: a standby that missed a batch has another state; an acknowledged order
missing after the failover fails the check by its id; a deposed primary that still answered
would give a reply the new primary does not have.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import journal
from engine.client import EngineClient, EngineError
from engine.core import Engine
from engine.natscluster import NatsCluster
from protocol import config
from protocol.enums import OrderStatus
from protocol.messages import (
    Executions,
    OrderInfo,
    OrderStatusRequest,
    Ping,
    Pong,
)
from tests.procs import DEFAULT_CONFIG, EngineProc, eventually_async
from tests.test_engine_process import (
    EX,
    assert_conserved,
    deposits_of,
    exchange_state,
    order,
    run,
    workload,
)

pytestmark = pytest.mark.skipif(shutil.which("nats-server") is None, reason="no nats-server")

ACCOUNTS = (EX.engine.fee_account, *range(1, 7))  # the fee account holds the fees
TAKEOVER = 20.0  # seconds a test allows for a failover (the target is under 3 s)


@pytest.fixture
def cluster(tmp_path: Path):
    c = NatsCluster(tmp_path / "nats").start()
    try:
        yield c
    finally:
        c.close()


def replicated_config(tmp_path: Path, cluster: NatsCluster, node: str) -> Path:
    """The shipped config with ``[replication]`` on, this engine's node name, and no metrics
    port (two engines on one machine)."""
    text = DEFAULT_CONFIG.read_text()
    servers = ", ".join(f'"{u}"' for u in cluster.urls)
    path = tmp_path / f"{node}.toml"
    path.write_text(
        text + f'\n[replication]\nservers = [{servers}]\nnode = "{node}"\nlease = 1.5\n'
        "heartbeat = 0.3\n"
    )
    return path


def engines(tmp_path: Path, cluster: NatsCluster) -> tuple[EngineProc, EngineProc]:
    a = EngineProc(tmp_path / "a", config=replicated_config(tmp_path, cluster, "a"), name="a")
    b = EngineProc(tmp_path / "b", config=replicated_config(tmp_path, cluster, "b"), name="b")
    b._pick_ports()  # a standby is spawned, not started: it answers once it takes over
    return a, b


async def answers(proc: EngineProc, timeout: float = TAKEOVER) -> Pong:
    """The engine's Pong once it serves (a standby that took over)."""
    client = EngineClient(proc.commands, b"probe-" + proc.name.encode(), timeout=1.0)
    await client.start(wait=0)
    try:

        async def pong():
            try:
                got = await client.request(Ping(0))
            except EngineError:
                return None
            return got if type(got) is Pong else None

        return await eventually_async(pong, timeout=timeout, interval=0.1, what="a Pong")
    finally:
        await client.close()


def log_state(data_dir: Path) -> Engine:
    """What the journal and snapshots in ``data_dir`` hold (a recovery, read-only copy)."""
    copy = data_dir.with_name(data_dir.name + ".copy")
    shutil.copytree(data_dir, copy)
    e = Engine(EX)
    journal.recover(copy, e)
    return e


async def replicated_log_state(cluster: NatsCluster) -> Engine:
    """A fresh engine that applied the whole replicated log, read back from the servers."""
    from engine.replication import Follower, connect

    cfg = config.ReplicationConfig(servers=cluster.urls, node="reader")
    nc = await connect(cfg)
    try:
        e = Engine(EX)
        f = Follower(cfg, nc.jetstream(), e, lambda _: None)
        await f.start()
        await f.catch_up()
        await f.stop()
        e.discard_output()
        return e
    finally:
        await nc.close()


def test_the_standby_follows_and_takes_over_with_the_same_state(tmp_path, cluster) -> None:
    """A standby applies every batch as the primary writes it: after the primary stops, the
    standby takes over at the same sequence with the same balances, orders and books."""
    a, b = engines(tmp_path, cluster)
    try:
        a.start()
        b.spawn()

        async def scenario() -> None:
            client = EngineClient(a.commands, b"t1", timeout=20.0)
            await client.start(wait=20.0)
            try:
                cmds, _ = await workload(client, 6, 3_000, seed=7)
                before = await exchange_state(client, ACCOUNTS, with_ts=False)
                seq = (await client.request(Ping(0))).seq
            finally:
                await client.close()
            assert a.stop() == 0
            pong = await answers(b)
            assert pong.seq == seq  # the standby had every batch
            client = EngineClient(b.commands, b"t2", timeout=20.0)
            await client.start(wait=20.0)
            try:
                after = await exchange_state(client, ACCOUNTS, with_ts=False)
            finally:
                await client.close()
            assert after == before
            assert_conserved(after, deposits_of(cmds), ACCOUNTS)
            # the replicated log itself rebuilds that state
            rebuilt = await replicated_log_state(cluster)
            assert rebuilt.seq == seq
            primary = log_state(a.data_dir).state_hash()
            assert rebuilt.state_hash() == primary
            assert log_state_of_live(b) == primary  # the standby's own journal and snapshots

        run(scenario())
    finally:
        a.cleanup()
        b.cleanup()


def test_kill_9_of_the_primary_and_its_disk_loses_no_acknowledged_order(tmp_path, cluster) -> None:
    """Orders flow; the primary is killed (-9) and its data directory deleted; the standby
    takes over by itself, and every order the primary acknowledged is there with its state."""
    a, b = engines(tmp_path, cluster)
    try:
        a.start()
        b.spawn()

        async def scenario() -> None:
            client = EngineClient(a.commands, b"flow", timeout=3.0)
            await client.start(wait=20.0)
            acked: dict[int, tuple[int, int]] = {}  # order id -> (account, status when acked)
            try:
                cmds, _ = await workload(client, 6, 500, seed=3)
                deposits = deposits_of(cmds)
                for i in range(400):
                    acct = 1 + i % 6
                    reply = await client.request(order(acct, 1 + i % 2, 4_000_000 + i, 1))
                    if type(reply) is Executions:
                        r = reply.reports[-1]
                        acked[r.order_id] = (acct, r.status)
            finally:
                await client.close()
            t0 = time.monotonic()
            a.kill()
            shutil.rmtree(a.data_dir)
            await answers(b)
            took = time.monotonic() - t0
            client = EngineClient(b.commands, b"after", timeout=20.0)
            await client.start(wait=20.0)
            try:
                for oid, (acct, status) in acked.items():
                    info = await client.request(OrderStatusRequest(0, acct, "", oid))
                    assert type(info) is OrderInfo, f"acknowledged order {oid} is missing: {info}"
                    assert info.order.status in (status, OrderStatus.PARTIALLY_FILLED,
                                                 OrderStatus.FILLED), (oid, info)  # fmt: skip
                state = await exchange_state(client, ACCOUNTS, with_ts=False)
            finally:
                await client.close()
            assert_conserved(state, deposits, ACCOUNTS)
            rebuilt = await replicated_log_state(cluster)
            assert rebuilt.state_hash() == log_state_of_live(b)
            print(f"failover: kill -9 -> the standby answering in {took:.2f}s")

        run(scenario())
    finally:
        a.cleanup()
        b.cleanup()


def log_state_of_live(proc: EngineProc) -> str:
    """The state hash of a running engine's data (stopped first, so its files are whole)."""
    assert proc.stop() == 0
    return log_state(proc.data_dir).state_hash()


def test_one_log_server_down_trading_goes_on_two_down_nothing_is_acknowledged(
    tmp_path, cluster
) -> None:
    a, b = engines(tmp_path, cluster)
    try:
        a.start()

        async def scenario() -> None:
            client = EngineClient(a.commands, b"q", timeout=2.0)
            await client.start(wait=20.0)
            try:
                await workload(client, 2, 50, seed=1)
                cluster.kill(2)
                reply = await client.request(order(1, 1, 100, 1), timeout=30.0)
                assert type(reply) is Executions, reply  # a majority (2 of 3) is there
                # (while an append waits, so do the heartbeat Pongs: the client may have
                # called the engine away meanwhile; it sends the next order only once back)
                await eventually_async(lambda: client.available, timeout=30.0, what="back")
                cluster.kill(1)
                pending = client.send(order(1, 1, 101, 1), timeout=30.0)  # far below: it rests
                await asyncio.sleep(2.5)
                assert not pending.done()  # not replicated: not acknowledged
                cluster.start_one(1)
                reply = await pending  # the majority is back: acknowledged, nothing lost
                assert type(reply) is Executions, reply
                oid = reply.reports[0].order_id
                info = await client.request(OrderStatusRequest(0, 1, "", oid))
                assert type(info) is OrderInfo and info.order.status == OrderStatus.NEW
            finally:
                await client.close()

        run(scenario())
    finally:
        a.cleanup()
        b.cleanup()


def test_a_paused_primary_is_fenced_and_never_answers_again(tmp_path, cluster) -> None:
    """The primary stops (SIGSTOP) past its lease; the standby takes over; when the old one
    runs again its next append is refused by the log: it exits (4), moves its data aside, and
    an order sent to it meanwhile is never acknowledged by it."""
    a, b = engines(tmp_path, cluster)
    try:
        a.start()
        b.spawn()

        async def scenario() -> None:
            old = EngineClient(a.commands, b"old", timeout=3.0)
            await old.start(wait=20.0)
            await workload(old, 2, 20, seed=2)
            a.popen.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            await answers(b)
            stale = old.send(order(1, 1, 4_000_002, 1), timeout=5.0)
            a.popen.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            assert await asyncio.to_thread(a.wait, 30.0) == 4
            try:
                got = await stale
            except EngineError as e:
                got = e
            assert type(got) is not Executions, got  # never acknowledged by the deposed one
            await old.close()
            assert not a.data_dir.exists()  # moved aside: the next start rebuilds from the log
            assert any(p.name.startswith("data.deposed-") for p in a.data_dir.parent.iterdir())

        run(scenario())
    finally:
        a.cleanup()
        b.cleanup()


def test_a_client_of_both_engines_follows_the_failover_by_itself(tmp_path, cluster) -> None:
    """One EngineClient connected to both engines (what the gateways get from
    ``[replication] engines``) keeps sending through a kill -9 of the primary: each order is
    acknowledged, refused as not done, or in doubt and resolved afterwards; afterwards every
    acknowledged order and every order resolved as executed is on the new primary, no order
    refused as not done is there, and the client saw the new epoch."""
    a, b = engines(tmp_path, cluster)
    try:
        a.start()
        b.spawn()

        async def scenario() -> None:
            resolved: dict[int, object] = {}
            client = EngineClient(
                [a.commands, b.commands], b"both", timeout=2.0, heartbeat=0.2,
                on_resolved=lambda cmd, out: resolved.__setitem__(cmd.req, (cmd, out)),
            )  # fmt: skip
            await client.start(wait=20.0)
            await workload(client, 2, 20, seed=5)
            first_epoch = client.epoch
            acked, refused, doubted = [], [], []
            for i in range(3_000):
                cmd = order(1, 1, 200 + i % 50, 1, client_order_id=f"f{i}")
                try:
                    reply = await client.request(cmd)
                    if type(reply) is Executions:
                        acked.append(cmd.client_order_id)
                except EngineError as e:
                    (doubted if "doubt" in str(e) else refused).append((cmd, e))
                if i == 300:
                    a.kill()
                if client.epoch != first_epoch and len(acked) > 400:
                    break
                await asyncio.sleep(0.002)
            assert client.epoch != first_epoch, "the client never reached the new primary"
            await eventually_async(lambda: client.in_doubt == 0, timeout=30.0, what="resolved")
            executed = {c.client_order_id for c, out in resolved.values() if type(out) is OrderInfo}
            for cid in [*acked, *executed]:
                info = await client.request(OrderStatusRequest(0, 1, "", 0, cid))
                assert type(info) is OrderInfo, (cid, info)
            for cmd, _ in refused:
                if cmd.client_order_id in executed:
                    continue
                info = await client.request(OrderStatusRequest(0, 1, "", 0, cmd.client_order_id))
                assert type(info) is not OrderInfo, ("refused yet executed", cmd, info)
            await client.close()
            print(f"acked {len(acked)}, refused {len(refused)}, in doubt {len(doubted)}")

        run(scenario())
    finally:
        a.cleanup()
        b.cleanup()


def test_the_log_is_purged_behind_snapshots_and_a_new_standby_starts_from_one(
    tmp_path, cluster
) -> None:
    """With a snapshot every 500 commands the primary uploads each one and purges the stream
    behind the one before it; a standby started afterwards with no data loads the newest
    uploaded snapshot, follows the rest of the stream and takes over with the same state (a
    missed command would show as another state, a gap as a standby that never follows)."""
    a, b = engines(tmp_path, cluster)
    for cfg in (a.config, b.config):
        cfg.write_text(cfg.read_text().replace("snapshot_every = 1000000", "snapshot_every = 500"))
    try:
        a.start()

        async def scenario() -> None:
            from engine.replication import connect, first_engine_seq

            client = EngineClient(a.commands, b"purge", timeout=20.0)
            await client.start(wait=20.0)
            try:
                cmds, _ = await workload(client, 6, 3_000, seed=11)
                rcfg = config.ReplicationConfig(servers=cluster.urls, node="reader")
                nc = await connect(rcfg)
                try:
                    js = nc.jetstream()

                    async def purged() -> int | None:
                        await client.request(Ping(0))  # (a batch: time for the upload)
                        first = await first_engine_seq(js, rcfg)
                        return first if first > 1 else None

                    first = await eventually_async(purged, timeout=60.0, what="a purge")
                finally:
                    await nc.close()
                before = await exchange_state(client, ACCOUNTS, with_ts=False)
                seq = (await client.request(Ping(0))).seq
            finally:
                await client.close()
            assert first <= seq
            b.spawn()  # an empty data directory: the stream alone no longer rebuilds it
            await asyncio.to_thread(wait_log, b, "following")
            assert "loaded the uploaded snapshot-" in b.log(), b.log()
            assert a.stop() == 0
            await answers(b)
            client = EngineClient(b.commands, b"after", timeout=20.0)
            await client.start(wait=20.0)
            try:
                after = await exchange_state(client, ACCOUNTS, with_ts=False)
                assert (await client.request(Ping(0))).seq == seq
            finally:
                await client.close()
            assert after == before
            assert_conserved(after, deposits_of(cmds), ACCOUNTS)

        run(scenario())
    finally:
        a.cleanup()
        b.cleanup()


# ------------------------------------------------------------------------------ partition
NS_CLIENT = r"""
import asyncio, json, os, sys, time
sys.path.insert(0, os.getcwd())
from engine.client import EngineClient, EngineError
from protocol.messages import Executions
from tests.test_engine_process import order, workload

async def main(endpoint, stop):
    client = EngineClient(endpoint, b"ns-client", timeout=60.0)
    await client.start(wait=30.0)
    await workload(client, 2, 20, seed=3)
    print("running", flush=True)
    pending = []
    i = 0
    while not os.path.exists(stop):
        i += 1
        cmd = order(1, 1, 300 + i % 50, 1, client_order_id=f"p{i}")
        pending.append((cmd.client_order_id, time.monotonic(), client.send(cmd, timeout=60.0)))
        await asyncio.sleep(0.02)
        for cid, sent, fut in pending:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                if type(fut.result()) is Executions and not getattr(fut, "seen", False):
                    fut.seen = True
                    print("acked", cid, sent, time.monotonic(), flush=True)
    results = {}
    for cid, sent, fut in pending:
        try:
            if not fut.done():
                await asyncio.wait_for(asyncio.shield(fut), 0.1)
            got = fut.result()
            results[cid] = [sent, type(got).__name__]
        except (EngineError, asyncio.TimeoutError) as e:
            results[cid] = [sent, f"error {e}"]
    print("results", json.dumps(results), flush=True)
    await client.close()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


class Netns:
    """A network namespace for the primary with two links to this host: ``log`` (to the NATS
    servers; the one a test cuts) and its loopback for its own clients."""

    def __init__(self) -> None:
        n = os.getpid() % 200 + 20
        self.name = f"exr{os.getpid()}"
        self.host_if, self.ns_if = f"exl{n}h", f"exl{n}n"
        self.host_ip, self.ns_ip = f"10.231.{n}.1", f"10.231.{n}.2"

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def create(self) -> Netns:
        self.ip("netns", "add", self.name)
        try:
            self.ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if,
                    "netns", self.name)  # fmt: skip
            self.ip("addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
            self.ip("link", "set", self.host_if, "up")
            self.ip("-n", self.name, "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if)
            self.ip("-n", self.name, "link", "set", self.ns_if, "up")
            self.ip("-n", self.name, "link", "set", "lo", "up")
        except Exception:
            self.delete()
            raise
        return self

    def cut(self) -> None:
        self.ip("link", "set", self.host_if, "down")

    def heal(self) -> None:
        self.ip("link", "set", self.host_if, "up")

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def delete(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.ip("link", "del", self.host_if)
        with contextlib.suppress(subprocess.CalledProcessError):
            self.ip("netns", "del", self.name)


@pytest.fixture
def netns():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2")
    try:
        ns = Netns().create()
    except subprocess.CalledProcessError as e:
        pytest.skip(f"network namespaces not allowed here: {e.stderr.decode().strip()}")
    try:
        yield ns
    finally:
        ns.delete()


def wait_log(proc: EngineProc, needle: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while needle not in proc.log():
        if not proc.running:
            raise AssertionError(f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log()}")  # type: ignore[union-attr]
        if time.monotonic() > deadline:
            raise AssertionError(f"{proc.name}: no {needle!r} in its log:\n{proc.log()}")
        time.sleep(0.05)


def known(e: Engine, account: int, cid: str) -> bool:
    """Whether ``e`` has (or had) ``account``'s order ``cid`` (its status query answers)."""
    e.apply(OrderStatusRequest(0, account, "", 0, cid), time.time_ns(), b"check")
    return any(type(m) is OrderInfo for _, msgs in e.drain() for m in msgs)


def test_a_primary_cut_off_from_the_log_acknowledges_nothing_and_is_fenced(tmp_path, netns):
    """The primary runs in its own network namespace; its link to the log servers goes down
    (a real partition: no reset, packets vanish) while its clients still reach it and the
    standby still reaches the log. Exactly one engine acknowledges at a time: the old primary
    acknowledges no order sent after the cut, the standby takes over and acknowledges; when
    the link comes back the old primary's appends are refused, it exits (4) and moves its
    data aside. Every order the old primary acknowledged is in the log; none sent to it after
    the cut is."""
    cluster = NatsCluster(tmp_path / "nats", host="0.0.0.0").start()
    try:
        a_cfg = replicated_config(tmp_path, cluster, "a")
        a_cfg.write_text(a_cfg.read_text().replace("127.0.0.1", netns.host_ip))
        a = EngineProc(tmp_path / "a", config=a_cfg, name="a")
        a.prefix = netns.prefix()
        b = EngineProc(tmp_path / "b", config=replicated_config(tmp_path, cluster, "b"), name="b")
        a._pick_ports()
        b._pick_ports()
        a.spawn()
        wait_log(a, "engine ready")
        b.spawn()
        wait_log(b, "following")
        stop = tmp_path / "stop"
        with open(tmp_path / "ns-client.log", "wb") as err:
            client = subprocess.Popen(
                [*netns.prefix(), sys.executable, "-c", NS_CLIENT, a.commands, str(stop)],
                cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.PIPE,
                stderr=err, text=True,
            )  # fmt: skip
        lines: list[str] = []
        try:
            assert client.stdout is not None
            for line in client.stdout:  # the client's workload is in; orders flow
                lines.append(line)
                if sum(x.startswith("acked") for x in lines) >= 20:
                    break
            netns.cut()
            t_cut = time.monotonic()  # the link is down once ``ip`` returns

            async def scenario() -> list[str]:
                await answers(b)  # the standby took over (the lease expired)
                host = EngineClient(b.commands, b"host", timeout=10.0)
                await host.start(wait=10.0)
                acked = []
                for i in range(20):
                    cmd = order(2, 1, 200 + i, 1, client_order_id=f"h{i}")
                    reply = await host.request(cmd)
                    assert type(reply) is Executions, reply
                    acked.append(cmd.client_order_id)
                await host.close()
                return acked

            acked_by_b = run(scenario())
            netns.heal()
            assert a.wait(60.0) == 4, a.log()  # fenced: its appends are refused
            stop.touch()
            out, _ = client.communicate(timeout=60)
            lines += out.splitlines()
        finally:
            if client.poll() is None:
                client.kill()
        acks = [x.split() for x in lines if x.startswith("acked")]
        results = json.loads(next(x for x in lines if x.startswith("results"))[8:])
        after_cut = {cid for cid, (sent, _) in results.items() if sent > t_cut}
        assert after_cut, "no order was sent to the cut-off primary"
        acked_by_a = {cid for _, cid, _, _ in acks}
        late = [a for a in acks if a[1] in after_cut]
        assert not late, f"the cut-off primary acknowledged (cut at {t_cut}): {late[:5]}"
        assert "took over" in b.log()
        assert not a.data_dir.exists()  # moved aside

        async def check() -> None:
            log = await replicated_log_state(cluster)
            missing = [c for c in sorted(acked_by_a) if not known(log, 1, c)]
            assert not missing, f"acknowledged by the old primary, not in the log: {missing}"
            assert all(known(log, 2, c) for c in acked_by_b)
            leaked = [c for c in sorted(after_cut) if known(log, 1, c)]
            assert not leaked, f"sent to the cut-off primary, yet in the log: {leaked}"

        run(check())
    finally:
        for p in ("a", "b"):
            with contextlib.suppress(Exception):
                (a if p == "a" else b).cleanup()
        cluster.close()

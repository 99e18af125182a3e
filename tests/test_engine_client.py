"""The engine client's promises (issue 10, items 1 and 3): "not done" only when provably true.

Two kinds of engine answer here:
- ``Peer``: the real matching core (``engine.core.Engine``) behind a real ZeroMQ ROUTER that the
  test drives, so it can do what the real process does only by bad luck: drop one reply (a full
  ROUTER queue, a frame rejected whole), stall between applying a batch and sending its replies
  (a GC pause, SIGSTOP), or stop reading altogether.
- the real engine process, paused with SIGSTOP and resumed with SIGCONT.

No assertion depends on timing: waits are for conditions, under generous deadlines.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import zmq

from engine.client import EngineClient, EngineTimeout, EngineUnavailable
from engine.core import Engine
from protocol import config
from protocol.enums import OrderStatus, OrderType, RejectCode, Side
from protocol.messages import (
    Balances,
    BalancesRequest,
    Cancel,
    Command,
    Deposit,
    Executions,
    LedgerReply,
    MassCancel,
    NewOrder,
    NewOrderList,
    OpenOrders,
    OpenOrdersRequest,
    OrderInfo,
    Rejected,
)
from tests.fixtures_engine import engine_proc_fixture, engine_procs_fixture  # noqa: F401
from tests.procs import EngineProc, eventually_async

EX = config.load()
M = "BTC-USD"
BUY, LIMIT = int(Side.BUY), int(OrderType.LIMIT)
PRICE = 4_000_000  # 40000.00 in ticks of 0.01: far below the market, so it rests


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def order(acct: int = 1, cid: str = "", price: int = PRICE) -> NewOrder:
    return NewOrder(0, acct, M, BUY, LIMIT, 0, price, 10, 0, cid)


class Peer:
    """The real core behind a ROUTER, with a lossy, stallable transport."""

    def __init__(self) -> None:
        self.engine = Engine(config.load(), epoch=777)
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.decoder = msgspec.msgpack.Decoder(list[Command])
        self.drop: Callable[[Any], bool] = lambda cmd: False  # drop this command's replies
        self.reading = True  # False: like a stopped process, frames wait in the socket
        self.stalled = False  # True: apply batches but keep their replies (a pause mid-batch)
        self.held: list[tuple[bytes, bytes]] = []
        self.applied: list[Any] = []
        self.ts: Callable[[], int] = time.time_ns
        self.task: asyncio.Task | None = None

    async def run(self) -> None:
        while True:
            if self.reading:
                self.pump()
            await asyncio.sleep(0.002)

    def pump(self) -> None:
        while True:
            try:
                origin, payload = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            ts = self.ts()
            out = []
            for cmd in self.decoder.decode(payload):
                box = self.engine.outbox[origin]
                self.engine.apply(cmd, ts, origin)
                replies = box[:]
                box.clear()
                self.applied.append(cmd)
                if not self.drop(cmd):
                    out.extend(replies)
            if out:
                frame = (origin, msgspec.msgpack.encode(out))
                if self.stalled:
                    self.held.append(frame)
                else:
                    self.sock.send_multipart(list(frame))

    def release(self) -> None:
        self.stalled = False
        for origin, payload in self.held:
            self.sock.send_multipart([origin, payload])
        self.held.clear()

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.sock.close(0)
        self.ctx.term()


@asynccontextmanager
async def peer_and_client(
    timeout: float = 10.0, heartbeat: float = 0.05
) -> AsyncIterator[tuple[Peer, EngineClient, list]]:
    peer = Peer()
    peer.task = asyncio.ensure_future(peer.run())
    resolved: list = []
    client = EngineClient(
        peer.endpoint,
        b"test-client",
        timeout=timeout,
        heartbeat=heartbeat,
        on_resolved=lambda cmd, outcome: resolved.append((cmd, outcome)),
        ctx=zmq.Context(),
    )
    await client.start(wait=10.0)
    for acct in (1, 2):
        reply = await client.request(Deposit(0, acct, "USD", 10**14))
        assert isinstance(reply, LedgerReply)
    try:
        yield peer, client, resolved
    finally:
        await client.close()
        client.ctx.term()
        peer.close()


def only_first(kind: type) -> Callable[[Any], bool]:
    """A drop rule: the reply of the first command of ``kind``, once."""
    seen: list = []

    def drop(cmd: Any) -> bool:
        if type(cmd) is kind and not seen:
            seen.append(cmd)
            return True
        return False

    return drop


# ------------------------------------------------------------------------- lost replies


def test_a_lost_reply_to_an_accepted_order_is_learned_from_the_engine() -> None:
    async def main() -> None:
        async with peer_and_client() as (peer, client, resolved):
            peer.drop = only_first(NewOrder)
            reply = await client.send(order())  # no client order id: the client gives one
            assert isinstance(reply, OrderInfo), reply
            assert reply.order.status == OrderStatus.NEW and reply.order.price == PRICE
            assert reply.order.client_order_id.startswith("~")
            assert client.stats["lost_replies"] == 1 and not resolved
            assert list(peer.engine.orders) == [reply.order.order_id]

    run(main())


def test_a_lost_reply_to_an_order_list_is_learned_from_its_limit_order() -> None:
    async def main() -> None:
        async with peer_and_client() as (peer, client, _):
            peer.drop = only_first(NewOrderList)
            # a buy list: limit below the stop (no trade yet, so no last price to be between)
            cmd = NewOrderList(0, 1, M, Side.BUY, 10, PRICE - 50, PRICE + 50)
            reply = await client.send(cmd)
            assert isinstance(reply, OrderInfo), reply
            assert reply.order.client_order_id.startswith("~")
            assert reply.order.list_id == reply.order.order_id
            assert len(peer.engine.orders) == 2  # both of the list's orders, placed once

    run(main())


def test_a_lost_reply_to_a_refused_order_is_not_executed() -> None:
    async def main() -> None:
        async with peer_and_client() as (peer, client, _):
            peer.drop = only_first(NewOrder)
            reply = await client.send(order(acct=3, cid="broke"))  # account 3 has no funds
            assert isinstance(reply, Rejected) and reply.code == RejectCode.NOT_EXECUTED, reply
            assert not peer.engine.orders

    run(main())


def test_an_older_closed_order_with_the_same_client_id_is_not_mistaken_for_it() -> None:
    async def main() -> None:
        async with peer_and_client() as (peer, client, _):
            first = await client.request(order(cid="same"))
            assert isinstance(first, Executions)
            await client.request(Cancel(0, 1, M, 0, "same"))
            peer.ts = lambda: time.time_ns() + 5 * 10**9  # the engine's clock runs ahead
            peer.drop = only_first(NewOrder)
            reply = await client.send(order(acct=3, cid="same"))  # refused: no funds
            assert isinstance(reply, Rejected), reply  # account 3 never had "same"
            peer.drop = only_first(NewOrder)
            peer.ts = time.time_ns
            await client.request(Deposit(0, 3, "USD", 10**12))
            ok = await client.send(order(acct=3, cid="same"))
            assert isinstance(ok, OrderInfo) and ok.order.account == 3

    run(main())


def test_a_lost_reply_to_a_cancel_answers_with_the_order_as_it_is() -> None:
    async def main() -> None:
        async with peer_and_client() as (peer, client, _):
            placed = await client.request(order(cid="c1"))
            assert isinstance(placed, Executions)
            peer.drop = only_first(Cancel)
            reply = await client.send(Cancel(0, 1, M, 0, "c1"))
            assert isinstance(reply, OrderInfo) and reply.order.status == OrderStatus.CANCELED

    run(main())


def test_a_lost_reply_to_a_read_fails_fast_as_nothing_done() -> None:
    async def main() -> None:
        async with peer_and_client(timeout=60.0) as (peer, client, _):
            peer.drop = only_first(OpenOrdersRequest)
            with pytest.raises(EngineUnavailable, match="lost"):
                await client.send(OpenOrdersRequest(0, 1))
            assert isinstance(await client.send(OpenOrdersRequest(0, 1)), OpenOrders)

    run(main())


def test_a_lost_mass_cancel_reply_is_in_doubt_and_unknowable() -> None:
    async def main() -> None:
        async with peer_and_client(timeout=60.0) as (peer, client, resolved):
            peer.drop = only_first(MassCancel)
            cmd = MassCancel(0, 1, M)
            with pytest.raises(EngineTimeout, match="in doubt"):
                await client.send(cmd)
            assert resolved == [(cmd, None)]

    run(main())


# ---------------------------------------------------------------------- late replies


def test_a_command_applied_in_time_but_answered_late_is_resolved_by_its_reply() -> None:
    async def main() -> None:
        async with peer_and_client() as (peer, client, resolved):
            peer.stalled = True  # applies at once, then "pauses" before sending
            cmd = order(cid="late-but-done")
            with pytest.raises(EngineTimeout, match="in doubt"):
                await client.send(cmd, timeout=0.2)
            assert client.in_doubt == 1
            peer.release()
            await eventually_async(lambda: resolved, what="the late reply")
            ((got, outcome),) = resolved
            assert got is cmd and isinstance(outcome, Executions)
            assert outcome.reports[0].client_order_id == "late-but-done"
            assert client.in_doubt == 0 and client.stats["resolved"] == 1

    run(main())


def test_a_command_reaching_a_paused_engine_after_its_deadline_is_refused() -> None:
    async def main() -> None:
        async with peer_and_client() as (peer, client, resolved):
            peer.reading = False  # like SIGSTOP: frames wait in the socket
            cmds = [order(cid=f"p{i}") for i in range(5)] + [MassCancel(0, 2, M)]
            futs = [client.send(c, timeout=0.2) for c in cmds]
            for fut in futs:
                with pytest.raises(EngineTimeout):
                    await fut
            await eventually_async(lambda: not client.available, what="heartbeat loss")
            refused = client.send(order(cid="while-away"))
            with pytest.raises(EngineUnavailable):  # provably never sent
                await refused
            peer.reading = True
            await eventually_async(lambda: len(resolved) == len(cmds), what="resolutions")
            for _, outcome in resolved:
                assert isinstance(outcome, Rejected), outcome
                assert outcome.code == RejectCode.DEADLINE_PASSED
            assert [c.req for c, _ in resolved] == [c.req for c in cmds]
            assert not peer.engine.orders  # none of them, nor the refused one, exists
            assert not any(getattr(c, "client_order_id", "") == "while-away" for c in peer.applied)

    run(main())


def test_heartbeat_loss_does_not_fail_requests_already_out() -> None:
    async def main() -> None:
        async with peer_and_client(timeout=60.0) as (peer, client, resolved):
            peer.reading = False
            fut = client.send(order(cid="survives"))
            await eventually_async(lambda: not client.available, what="heartbeat loss")
            assert not fut.done()  # still out there: neither "not done" nor a timeout
            peer.reading = True
            reply = await fut
            assert isinstance(reply, Executions) and not resolved

    run(main())


# ------------------------------------------------------------------ per-request timeouts


def test_a_request_may_wait_longer_than_the_clients_default_timeout() -> None:
    async def main() -> None:
        async with peer_and_client(timeout=0.1) as (peer, client, _):
            peer.reading = False
            fut = client.send(BalancesRequest(0, 1), timeout=60.0)
            await asyncio.sleep(0.5)  # five default timeouts: the request must not care
            assert not fut.done()
            peer.reading = True
            assert isinstance(await fut, Balances)

    run(main())


def test_a_request_may_wait_less_than_the_clients_default_timeout() -> None:
    async def main() -> None:
        async with peer_and_client(timeout=600.0) as (peer, client, _):
            peer.reading = False
            with pytest.raises(EngineTimeout):
                await client.send(BalancesRequest(0, 1), timeout=0.05)
            peer.reading = True

    run(main())


# --------------------------------------------------------------- the real engine process


async def recording_client(
    proc: EngineProc, identity: bytes, timeout: float
) -> tuple[EngineClient, list]:
    """A started client of the real engine whose on_resolved calls land in the list."""
    resolved: list = []
    client = EngineClient(
        proc.commands,
        identity,
        timeout=timeout,
        heartbeat=0.05,
        on_resolved=lambda cmd, outcome: resolved.append((cmd, outcome)),
    )
    await client.start(wait=20.0)
    return client, resolved


def test_sigstop_of_the_real_engine_never_turns_into_not_done(engine_proc: EngineProc) -> None:
    """The drill that found the bug: orders sent to a stopped engine. Every one is in doubt,
    then resolved; what the client was told matches what the engine holds afterwards."""

    async def main() -> None:
        client, resolved = await recording_client(engine_proc, b"sigstop-test", timeout=0.3)
        try:
            await client.request(Deposit(0, 5, "USD", 10**14), timeout=20.0)
            os.kill(engine_proc.pid, signal.SIGSTOP)
            try:
                futs = [client.send(order(acct=5, cid=f"s{i}")) for i in range(50)]
                told: dict[str, str] = {}
                for i, fut in enumerate(futs):
                    try:
                        await fut
                        told[f"s{i}"] = "done"
                    except EngineTimeout:
                        told[f"s{i}"] = "doubt"
                    except EngineUnavailable:
                        told[f"s{i}"] = "not done"
            finally:
                os.kill(engine_proc.pid, signal.SIGCONT)
            doubts = [k for k, v in told.items() if v == "doubt"]
            assert doubts, told
            await eventually_async(lambda: len(resolved) == len(doubts), timeout=30.0)
            truth = await client.request(OpenOrdersRequest(0, 5), timeout=20.0)
            live = {o.client_order_id for o in truth.orders}
            for cmd, outcome in resolved:
                executed = isinstance(outcome, Executions | OrderInfo)
                assert executed == (cmd.client_order_id in live), (cmd, outcome)
                if not executed:
                    assert outcome.code in (RejectCode.DEADLINE_PASSED, RejectCode.NOT_EXECUTED)
            for cid, what in told.items():
                if what == "not done":
                    assert cid not in live
                if what == "done":
                    assert cid in live
        finally:
            await client.close()

    run(main())


def test_replies_lost_with_a_frame_the_real_engine_refuses_whole_are_learned(
    engine_proc: EngineProc,
) -> None:
    """One loop turn's commands leave in one frame; past 1 MiB the engine refuses the frame
    whole (one Rejected with no request id). Every reply in it is lost, just as when the engine
    drops a frame of replies at a full ROUTER queue: the order is learned to be not executed,
    the read fails as lost (nothing changed), the deposits are in doubt and unknowable."""

    async def main() -> None:
        client, resolved = await recording_client(engine_proc, b"big-frame", timeout=60.0)
        try:
            await client.request(Deposit(0, 9, "USD", 10**15))
            filler = [Deposit(0, 9, "USD", 1, "r" * 1000) for _ in range(1100)]  # ~1.1 MB
            futs = [client.send(c) for c in filler]
            placed = client.send(order(acct=9, cid="in-the-big-frame"))
            read = client.send(OpenOrdersRequest(0, 9))
            reply = await placed
            assert isinstance(reply, Rejected) and reply.code == RejectCode.NOT_EXECUTED, reply
            with pytest.raises(EngineUnavailable, match="lost"):
                await read
            for fut in futs:
                with pytest.raises(EngineTimeout, match="in doubt"):
                    await fut
            assert len(resolved) == len(filler) and all(o is None for _, o in resolved)
            balances = await client.request(BalancesRequest(0, 9))
            usd = next(b for b in balances.balances if b.asset == "USD")
            assert usd.available == 10**15  # truly none of the deposits happened
            truth = await client.request(OpenOrdersRequest(0, 9))
            assert truth.orders == []
        finally:
            await client.close()

    run(main())

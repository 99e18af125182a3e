"""The pipelined raw client of ``bench engine`` (bench/zmq_pipeline.py) against a real engine:
every command it sends is applied (the engine's sequence number counts them all), and with
``max_open`` the books stay bounded, so its figure is the engine's rate on a bounded book."""

from __future__ import annotations

import argparse
import asyncio

from bench import zmq_pipeline
from bench.workload import funding
from engine.client import EngineClient
from protocol import config
from protocol.messages import OpenOrders, OpenOrdersRequest, Ping
from tests.fixtures_engine import engine_procs_fixture  # noqa: F401


def test_pipelined_client_gets_every_command_applied_on_a_bounded_book(engine_procs) -> None:
    engine = engine_procs().start()
    args = argparse.Namespace(
        endpoint=engine.commands, config=None, engine_pid=0, commands=3_000, warmup=500,
        window=400, chunk=100, accounts=20, seed=3, max_open=150,
    )  # fmt: skip
    res = zmq_pipeline.run(args)
    assert res["orders_per_s"] > 0 and sum(res["mix"].values()) == 3_000
    assert res["mix"]["cancel"] > 0.3 * 3_000  # the cap turns the mix towards cancels

    async def state() -> tuple[int, int]:
        client = EngineClient(engine.commands, b"check")
        await client.start(wait=10)
        try:
            pong = await client.request(Ping(0))
            open_orders = 0
            for account in range(1, 21):
                reply = await client.request(OpenOrdersRequest(0, account))
                assert isinstance(reply, OpenOrders)
                open_orders += len(reply.orders)
            return pong.seq, open_orders
        finally:
            await client.close()

    seq, open_orders = asyncio.run(state())
    assert seq == len(funding(config.load(), 20)) + 3_500  # every deposit and command applied
    assert 0 < open_orders <= 150

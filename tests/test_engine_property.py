"""Property tests: random command streams against the naive reference model.

Every step checks ``engine.validate()``, conservation of every asset, an uncrossed book, and
that the engine's observable results equal the model's: accept/reject (with the code), the
order id given, each fill (price, qty) seen by taker and maker, the public trades, every
balance of every account, every open order, and the priority order of each book. Two more
properties: snapshot + the rest of the journal rebuilds the same state, and replaying the
same commands into a fresh engine gives the same state and the same replies.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core import Engine
from protocol.config import loads
from protocol.enums import Liquidity
from protocol.messages import (
    Balances,
    BalancesRequest,
    BookSnapshot,
    Cancel,
    Deposit,
    ExecReport,
    Executions,
    LedgerReply,
    MassCancel,
    MassCancelReply,
    NewOrder,
    NewOrderList,
    OpenOrders,
    OpenOrdersRequest,
    Rejected,
    Replace,
    SnapshotRequest,
    Tick,
    Trades,
    Withdraw,
)
from tests import reference_model as rm

# Two markets sharing an asset, scales where tick x lot is not one minor unit, and fee rates
# that do not divide evenly, so rounding and cross-market locking are exercised.
CONFIG = """
[assets.AAA]
decimals = 4

[assets.BBB]
decimals = 3

[assets.CCC]
decimals = 3

[markets.AAA-BBB]
base = "AAA"
quote = "BBB"
tick = "0.5"
lot = "0.2"
min_qty = "0.2"
max_qty = "2"
max_price = "10"
maker_fee = "0.00123"
taker_fee = "0.0025"

[markets.CCC-AAA]
base = "CCC"
quote = "AAA"
tick = "0.01"
lot = "0.5"
min_qty = "0.5"
max_qty = "5"
max_price = "0.2"
maker_fee = "0"
taker_fee = "0.0017"
"""

EXCHANGE = loads(CONFIG)
EngineState = type(Engine(EXCHANGE).state())  # the snapshot type, wherever it is defined
TOML = tomllib.loads(CONFIG)
MARKETS = tuple(TOML["markets"])
ASSETS = tuple(TOML["assets"])
ACCOUNTS = (1, 2, 3)
FEE_ACCOUNT = 0
CIDS = ("", "", "a", "b")
START = {"AAA": 30_000, "BBB": 12_000, "CCC": 5_000}

# ------------------------------------------------------------------------------ strategies

accounts = st.sampled_from(ACCOUNTS)
markets = st.sampled_from(MARKETS)
sides = st.sampled_from((rm.BUY, rm.SELL))
# mostly valid, crossing often; now and then out of range (max price 20 ticks, max qty 10 lots)
prices = st.integers(0, 99).flatmap(lambda r: st.integers(0, 22) if r < 8 else st.integers(6, 10))
quantities = st.integers(0, 99).flatmap(
    lambda r: st.integers(0, 12) if r < 8 else st.integers(1, 6)
)
stps = st.sampled_from((0, 0, rm.NEWEST, rm.OLDEST, rm.BOTH))
cids = st.sampled_from(CIDS)


# Advanced orders: a stop (mostly valid kinds, stops around the prices traded), an expiry
# time relative to the command's timestamp (its index in the stream; sometimes in the past).
triggers = st.integers(0, 99).map(lambda r: 0 if r < 70 else 1 if r < 84 else 2 if r < 98 else 3)
expiries = st.integers(-2, 25)
# icebergs: a visible part, mostly valid (max qty is 10 lots); trailing stops: a distance in
# bps, mostly within 10..2000 (10 bps of these prices is under a tick: one tick at least)
displays = st.integers(0, 99).flatmap(
    lambda r: st.just(0) if r < 75 else st.integers(1, 4) if r < 96 else st.integers(0, 12)
)
trails = st.integers(0, 99).flatmap(
    lambda r: (
        st.just(0)
        if r < 45
        else st.sampled_from((10, 500, 1_000, 2_000))
        if r < 97
        else st.sampled_from((9, 2_001))
    )
)


@st.composite
def limit_orders(draw: st.DrawFn) -> NewOrder:
    tif = draw(st.sampled_from((0, rm.GTC, rm.GTC, rm.IOC, rm.FOK, rm.GTD)))
    trigger = draw(triggers)
    return NewOrder(
        0,
        draw(accounts),
        draw(markets),
        draw(sides),
        rm.LIMIT,
        tif=tif,
        price=draw(prices),
        qty=draw(quantities),
        client_order_id=draw(cids),
        post_only=tif in (0, rm.GTC, rm.GTD) and draw(st.integers(0, 4)) == 0,
        stp=draw(stps),
        trigger=trigger,
        # relative for now: Run.step makes it absolute (0 stays 0)
        expire_ts=draw(expiries) if tif == rm.GTD or draw(st.integers(0, 30)) == 0 else 0,
        display_qty=draw(displays),
        **_stop(draw, trigger, trigger or draw(st.integers(0, 30)) == 0),
    )


def _stop(draw: st.DrawFn, trigger: int, priced: bool) -> dict:
    """A stop price (when ``priced``) and, for 40% of stops, a trailing distance, half of
    those without an activation price; now and then a distance on an order that is no stop."""
    stop = draw(prices) if priced else 0
    trail = draw(trails) if trigger or draw(st.integers(0, 40)) == 0 else 0
    if trail and draw(st.booleans()):
        stop = 0
    return {"stop_price": stop, "trailing_bps": trail}


@st.composite
def market_orders(draw: st.DrawFn) -> NewOrder:
    market = draw(markets)
    side = draw(sides)
    qty, budget = draw(quantities), 0
    if side == rm.BUY and draw(st.booleans()):
        spec = EXCHANGE.markets[market]
        # whole lots at some price plus change, sometimes less than one lot at any price
        qty, budget = 0, draw(st.integers(0, 60)) * spec.tick_lot_quote + draw(st.integers(0, 99))
    trigger = draw(triggers)
    return NewOrder(
        0,
        draw(accounts),
        market,
        side,
        rm.MARKET,
        tif=draw(st.sampled_from((0, rm.IOC, rm.FOK))) if not budget else 0,
        qty=qty,
        quote_qty=budget,
        stp=draw(stps),
        trigger=trigger,
        **_stop(draw, trigger, bool(trigger)),
    )


@st.composite
def order_lists(draw: st.DrawFn) -> NewOrderList:
    """One-cancels-the-other lists: the limit above and the stop below the traded prices for
    a sell (the reverse for a buy) most of the time; a market stop leg now and then."""
    side = draw(sides)
    low, high = draw(st.integers(1, 8)), draw(st.integers(8, 14))
    if draw(st.integers(0, 9)) == 0:
        low, high = high, low  # the wrong way round
    price, stop = (high, low) if side == rm.SELL else (low, high)
    return NewOrderList(
        0,
        draw(accounts),
        draw(markets),
        side,
        draw(quantities),
        price,
        stop,
        draw(st.one_of(st.just(0), prices)),
        "",
        draw(cids),
        draw(cids),
        draw(stps),
    )


@dataclass(frozen=True)
class Pick:
    """A cancel or replace, resolved against the orders known when it runs."""

    kind: str  # "cancel" or "replace"
    open: bool  # pick among open orders (else among every order id, plus one never used)
    index: int
    own: bool  # sent by the order's owner (else by a random account)
    account: int
    by_cid: str  # "" = by order id, else by this client order id
    market: int  # 0: none given, 1: the order's, 2: the other market
    price: int = 0  # 0: keep; -1: the best opposite price (so it crosses when there is one)
    qty: int = 0
    new_cid: str = ""
    stop: int = 0  # a new stop price (0: keep)


picks = st.builds(
    Pick,
    kind=st.sampled_from(("cancel", "replace", "replace")),
    open=st.integers(0, 4).map(bool),
    index=st.integers(0, 40),
    own=st.integers(0, 4).map(bool),
    account=accounts,
    by_cid=st.sampled_from(("", "", "", "", "", "a", "b")),
    market=st.sampled_from((0, 0, 1, 1, 1, 2)),
    price=st.one_of(st.just(0), st.just(-1), prices),
    qty=st.one_of(st.just(0), quantities),
    new_cid=st.sampled_from(("", "", "a", "b", "c")),
    stop=st.one_of(st.just(0), st.just(0), prices),
)

ledger_ops = st.builds(
    lambda kind, account, asset, amount: kind(0, account, asset, amount),
    st.sampled_from((Deposit, Withdraw)),
    accounts,
    st.sampled_from((*ASSETS, *ASSETS, *ASSETS, "ZZZ")),
    st.integers(0, 99).flatmap(lambda r: st.integers(-1, 0) if r < 5 else st.integers(1, 10_000)),
)

mass_cancels = st.builds(MassCancel, st.just(0), accounts, st.sampled_from(("", *MARKETS)))

ops = st.integers(0, 99).flatmap(
    lambda r: (
        limit_orders()
        if r < 46
        else order_lists()
        if r < 50
        else market_orders()
        if r < 62
        else picks
        if r < 88
        else mass_cancels
        if r < 91
        else st.just(Tick(0))
        if r < 94
        else ledger_ops
    )
)
streams = st.lists(ops, min_size=20, max_size=80)


# ---------------------------------------------------------------------------------- runner


def origin_of(account: int) -> bytes:
    return f"acct{account}".encode()


@dataclass
class Run:
    """Drives an engine and the model with the same commands and compares them."""

    engine: Engine = field(default_factory=lambda: Engine(EXCHANGE))
    model: rm.Model = field(default_factory=lambda: rm.Model(TOML, FEE_ACCOUNT))
    owners: dict[int, tuple[int, str]] = field(default_factory=dict)  # id -> account, market
    commands: list[tuple[object, int, bytes]] = field(default_factory=list)
    replies: list[bytes] = field(default_factory=list)  # encoded outbox after each command
    market_data: list[bytes] = field(default_factory=list)  # encoded market_data() after each

    def start(self, check: bool = True) -> None:
        for account in ACCOUNTS:
            for asset, amount in START.items():
                self.step(Deposit(0, account, asset, amount), check)

    def resolve(self, op: object) -> object:
        if not isinstance(op, Pick):
            return op
        open_ids = sorted(o.id for o in self.model.resting + self.model.waiting)
        every_id = sorted(self.owners)
        if op.open and open_ids:
            oid = open_ids[op.index % len(open_ids)]
        else:
            oid = every_id[op.index] if op.index < len(every_id) else self.model.next_id
        owner, market = self.owners.get(oid, (op.account, MARKETS[0]))
        account = owner if op.own else op.account
        named = ("", market, MARKETS[1 - MARKETS.index(market)])[op.market]
        order_id, cid = (0, op.by_cid) if op.by_cid else (oid, "")
        if op.kind == "cancel":
            return Cancel(0, account, named, order_id, cid)
        price = op.price
        if price < 0:
            mine = [o for o in self.model.resting if o.id == oid]
            opposite = self.model.side(
                market, rm.SELL if mine and mine[0].side == rm.BUY else rm.BUY
            )
            price = opposite[0].price if opposite else 0
        return Replace(0, account, named, order_id, cid, op.new_cid, price, op.qty, 0, op.stop)

    def step(self, op: object, check: bool = True) -> None:
        cmd = self.resolve(op)
        ts = len(self.commands) + 1
        if isinstance(cmd, NewOrder) and cmd.expire_ts:
            cmd = msgspec.structs.replace(cmd, expire_ts=max(0, ts + cmd.expire_ts))
        origin = origin_of(cmd.account) if not isinstance(cmd, Tick) else b"clock"
        self.commands.append((cmd, ts, origin))
        seq = self.engine.apply(cmd, ts, origin)
        out = self.engine.outbox
        market_data = self.engine.market_data(ts)
        self.replies.append(encode_outbox(out))
        self.market_data.append(encode_market_data(market_data))
        expected = self.model.apply(cmd, ts)
        if isinstance(cmd, NewOrderList) and expected.reject is None:
            self.owners[expected.order_id + 1] = (cmd.account, cmd.market)
        if isinstance(cmd, NewOrder | NewOrderList) and expected.reject is None:
            self.owners[expected.order_id] = (cmd.account, cmd.market)
        if check:
            assert seq == ts, (seq, ts)
            self.compare_outcome(cmd, out, origin, market_data, expected)
            self.compare_state()
        out.clear()

    # ---------------------------------------------------------------------- comparisons
    def compare_outcome(
        self, cmd: object, out: dict, origin: bytes, market_data: list, expected: rm.Outcome
    ) -> None:
        # the reply: the last message to the sender that is not an unsolicited report (a stop
        # of the sender's own that the command triggered reports after it)
        reply = [m for m in out[origin] if not isinstance(m, ExecReport)][-1]
        if expected.reject is not None:
            assert isinstance(reply, Rejected), (cmd, reply, expected)
            assert reply.code == expected.reject, (cmd, reply, expected)
            if not expected.expired:  # expiries before it may change a book
                assert market_data == []
            return
        assert not isinstance(reply, Rejected), (cmd, reply, expected)
        if isinstance(cmd, Deposit | Withdraw):
            assert isinstance(reply, LedgerReply)
            assert reply.available == self.model.balance(cmd.account, cmd.asset)[0]
        if isinstance(cmd, MassCancel):
            assert isinstance(reply, MassCancelReply)
            assert reply.count == expected.count
        if isinstance(cmd, NewOrder | Cancel | Replace | NewOrderList):
            assert isinstance(reply, Executions), (cmd, reply)
            assert reply.reports[0].order_id == expected.order_id, (cmd, reply, expected)
            taken = [
                (r.last_px, r.last_qty)
                for r in reply.reports
                if r.last_qty and r.liquidity == Liquidity.TAKER
            ]
            assert taken == expected.taker_fills, (cmd, reply, expected)
        made = sorted(
            (r.trade_id, r.order_id, r.last_px, r.last_qty, o)
            for o, box in out.items()
            for r in box
            if isinstance(r, ExecReport) and r.liquidity == Liquidity.MAKER
        )
        assert [(oid, px, q) for _, oid, px, q, _ in made] == expected.maker_fills
        for _, oid, _, _, o in made:
            assert o == origin_of(self.owners[oid][0])  # a fill is told to the order's owner
        printed = [
            (msg.market, t.price, t.qty, t.taker_side)
            for _, msg in market_data
            if isinstance(msg, Trades)
            for t in msg.trades
        ]
        assert printed == expected.trades, (cmd, printed, expected)

    def compare_state(self) -> None:
        engine, model = self.engine, self.model
        engine.validate()
        state = engine.state()
        for i, asset in enumerate(state.assets):
            held = sum(row[2 * i] + row[2 * i + 1] for _, row in state.accounts)
            assert held == model.net[asset], asset
        for account in (FEE_ACCOUNT, *ACCOUNTS):
            balances = engine_reply(engine, BalancesRequest(0, account), Balances).balances
            got = {b.asset: (b.available, b.locked) for b in balances}
            assert got == {a: model.balance(account, a) for a in ASSETS}, account
            orders = engine_reply(engine, OpenOrdersRequest(0, account), OpenOrders).orders
            assert sorted(
                (
                    o.order_id,
                    o.client_order_id,
                    o.market,
                    o.side,
                    o.price,
                    o.qty,
                    o.cum_qty,
                    o.leaves_qty,
                )
                for o in orders
            ) == sorted(
                (o.id, o.cid, o.market, o.side, o.price, 0 if o.budget else o.qty, o.cum,
                 0 if o.budget else o.leaves)
                for o in model.open_orders(account)
            ), account  # fmt: skip
        for symbol, _, orders in state.books:
            assert [(o.id, o.side, o.price, o.leaves) for o in orders] == [
                (o.id, o.side, o.price, o.leaves)
                for side in (rm.BUY, rm.SELL)
                for o in model.side(symbol, side)
            ], symbol
            book = engine_reply(engine, SnapshotRequest(0, symbol), BookSnapshot)
            if book.bids and book.asks:
                assert book.bids[0][0] < book.asks[0][0], symbol
            for side, levels in ((rm.BUY, book.bids), (rm.SELL, book.asks)):
                shown: dict[int, int] = {}  # the public book: icebergs' visible parts only
                for o in model.side(symbol, side):
                    shown[o.price] = shown.get(o.price, 0) + o.visible()
                assert [(p, q) for p, q, _ in levels] == list(shown.items()), (symbol, side)
        for o in model.waiting:  # a trailing stop's trigger price (OrderState: its peak)
            mine = engine.orders[o.id]
            assert (mine.peak, mine.trail, mine.link) == (o.peak, o.trail, o.link), o


def encode_outbox(outbox: dict) -> bytes:
    return msgspec.msgpack.encode(sorted(outbox.items()))


def encode_market_data(msgs: list) -> bytes:
    """Market data in topic order: each topic is sequenced on its own, not across markets."""
    return msgspec.msgpack.encode(sorted(msgs, key=lambda m: m[0]))


def unordered(outbox: dict | list) -> list:
    items = outbox.items() if isinstance(outbox, dict) else outbox
    return sorted((bytes(o), sorted(msgspec.msgpack.encode(m) for m in box)) for o, box in items)


def engine_reply(engine: Engine, cmd: object, kind: type):
    engine.apply(cmd, 0, b"reader")
    reply = engine.outbox.pop(b"reader")[-1]
    assert isinstance(reply, kind), reply
    return reply


# ------------------------------------------------------------------------------ properties


@settings(max_examples=500, deadline=None)
@given(streams)
def test_engine_matches_the_reference_model_step_by_step(steps: list) -> None:
    run = Run()
    run.start()
    for op in steps:
        run.step(op, check=True)  # validate, conservation, crossed books, equal to the model


@settings(max_examples=150, deadline=None)
@given(streams, st.integers(0, 60))
def test_snapshot_plus_journal_and_full_replay_rebuild_the_same_state(
    steps: list, cut: int
) -> None:
    run = Run()
    run.start(check=False)
    cut = min(cut, len(steps))
    for op in steps[:cut]:
        run.step(op, check=False)
    snapshot = msgspec.msgpack.encode(run.engine.state())
    at_cut = run.engine.state_hash()
    done = len(run.commands)
    for op in steps[cut:]:
        run.step(op, check=False)
    final = run.engine.state_hash()
    run.engine.validate()

    restored = Engine(EXCHANGE)
    restored.restore(msgspec.msgpack.decode(snapshot, type=EngineState))
    assert restored.state_hash() == at_cut
    restored.validate()
    for i, (cmd, ts, origin) in enumerate(run.commands[done:], start=done):
        restored.apply(cmd, ts, origin)
        # the same messages to the same destinations; the order of unsolicited reports (a mass
        # cancel's) may differ, as open orders are listed in an order the snapshot does not keep
        assert unordered(restored.outbox) == unordered(msgspec.msgpack.decode(run.replies[i]))
        restored.outbox.clear()
    restored.validate()
    assert restored.state_hash() == final

    replayed = Engine(EXCHANGE)
    for i, (cmd, ts, origin) in enumerate(run.commands):
        replayed.apply(cmd, ts, origin)
        assert encode_outbox(replayed.outbox) == run.replies[i]
        assert encode_market_data(replayed.market_data(ts)) == run.market_data[i]
        replayed.outbox.clear()
    assert replayed.state_hash() == final
    assert replayed.state() == run.engine.state()


@settings(max_examples=80, deadline=None)
@given(streams)
def test_state_restored_into_a_fresh_engine_hashes_the_same(steps: list) -> None:
    run = Run()
    run.start(check=False)
    for op in steps:
        run.step(op, check=False)
    restored = Engine(EXCHANGE)
    restored.restore(
        msgspec.msgpack.decode(msgspec.msgpack.encode(run.engine.state()), type=EngineState)
    )
    restored.validate()
    assert restored.state_hash() == run.engine.state_hash()
    for account in ACCOUNTS:
        assert sorted(
            msgspec.msgpack.encode(o)
            for o in engine_reply(restored, OpenOrdersRequest(0, account), OpenOrders).orders
        ) == sorted(
            msgspec.msgpack.encode(o)
            for o in engine_reply(run.engine, OpenOrdersRequest(0, account), OpenOrders).orders
        )


def test_the_model_and_the_engine_agree_on_the_scales() -> None:
    for symbol, m in rm.Model(TOML).markets.items():
        spec = EXCHANGE.markets[symbol]
        assert (m.lot_units, m.tick_lot_quote, m.min_qty, m.max_qty, m.max_price) == (
            spec.lot_units,
            spec.tick_lot_quote,
            spec.min_qty,
            spec.max_qty,
            spec.max_price,
        )
        assert (m.maker_ppm, m.taker_ppm) == (spec.maker_ppm, spec.taker_ppm)
        assert m.tick_lot_quote > 1  # the point of this config

"""The FIX 4.4 gateway end to end: a real ``python -m engine``, a real ``python -m gateways.fix``
on free loopback ports, a temporary account store, and real quickfix initiator sessions
(``FixClient``) in this process, or a hand-written ``RawFix`` session for hostile bytes.

Expected values are computed here with ``Decimal`` from the documented rules (fills print at
the maker's price; fees are charged on the asset received, rounded down to its minor unit; buys
lock price x qty), not with the code under test. Nothing asserts on timing: waits are quickfix
``expect`` calls or ``eventually`` polls under generous deadlines, and "never arrives" is
checked with a later round trip on the same session (an OrderStatusRequest for an order that
does not exist): the gateway sends a session's messages in the order it handles them, so
anything it sent before the probe's answer has arrived before it.

The module shares one engine and one gateway (tests/fixtures_fix.py). Every test trades in a
market of its own (a BTC-USD clone: tick 0.01, lot 0.0001, maker fee 0.001, taker fee 0.002)
with traders of its own.
"""

from __future__ import annotations

import gc
import itertools
import os
import re
import signal
import socket
import threading
import time
from collections.abc import Callable
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

import pytest

from gateways.accounts import Permission
from gateways.fix.acceptor import Fields
from gateways.fix.client import FixClient, FixMsg
from gateways.fix.front import drop_empty_credentials
from gateways.fix.gateway import Ctx, FixGateway
from protocol.config import load as load_exchange
from protocol.enums import OrderStatus
from protocol.messages import (
    Cancel,
    NewOrder,
    OpenOrdersRequest,
    OrderInfo,
    OrderState,
    Replace,
)
from tests.fixtures_fix import (
    POLL_SECONDS,
    REPLY_TIMEOUT,
    TARGET,
    FixStack,
    FixTrader,
    RawFix,
    checksum,
    fix_fixture,  # noqa: F401
    fix_stack_fixture,  # noqa: F401
    frame,
    market_fixture,  # noqa: F401
    own_fix_stack_fixture,  # noqa: F401
)
from tests.procs import client_tls, eventually, make_cert

D = Decimal
MAKER_FEE, TAKER_FEE = D("0.001"), D("0.002")
BTC_PLACES, USD_PLACES = 8, 6
SIDE = {"buy": "1", "sell": "2"}
NUMERIC = {12, 14, 31, 32, 38, 44, 151, 152, 270, 271}
_probes = itertools.count(1)


# ------------------------------------------------------------------------------ helpers


def fee(amount: Decimal, rate: Decimal, places: int) -> Decimal:
    """A fee on ``amount`` of the received asset, rounded down to its minor unit."""
    return (amount * rate).quantize(D(1).scaleb(-places), rounding=ROUND_DOWN)


def check(m: FixMsg, want: dict[int, str | Decimal | None]) -> None:
    """Each tag as expected: amounts compared as decimals (AvgPx to 1e-6), None = absent."""
    bad = []
    for tag, value in want.items():
        got = m.get(tag)
        if value is None:
            ok = got is None
        elif got is None:
            ok = False
        elif tag == 6:
            ok = abs(D(got) - D(value)) <= D("0.000001")
        elif tag in NUMERIC:
            ok = D(got) == D(value)
        else:
            ok = got == value
        if not ok:
            bad.append(f"{tag}: got {got!r}, want {value!r}")
    assert not bad, f"{'; '.join(bad)} in {m!r}"


def is_er(cid: str, exec_type: str | None = None) -> Callable[[FixMsg], bool]:
    def match(m: FixMsg) -> bool:
        return (
            m.get(35) == "8" and m.get(11) == cid and (exec_type is None or m.get(150) == exec_type)
        )

    return match


def er(c: FixClient, cid: str, exec_type: str | None = None) -> FixMsg:
    """The oldest ExecutionReport for ClOrdID ``cid`` (of that ExecType)."""
    return c.expect(is_er(cid, exec_type), REPLY_TIMEOUT)


def send_order(
    c: FixClient,
    cid: str,
    market: str,
    side: str,
    qty: str | None = None,
    price: str | None = None,
    *,
    ord_type: str | None = None,
    tif: str | None = "1",
    extra: list[tuple[int, str]] | None = None,
    drop: tuple[int, ...] = (),
) -> None:
    fields = [(11, cid), (55, market), (54, SIDE.get(side, side)), (60, c.now())]
    fields.append((40, ord_type or ("2" if price else "1")))
    if qty is not None:
        fields.append((38, qty))
    if price is not None:
        fields.append((44, price))
    if tif is not None:
        fields.append((59, tif))
    fields += extra or []
    c.send("D", [(t, v) for t, v in fields if t not in drop])


def place(c: FixClient, cid: str, market: str, side: str, qty: str, price: str) -> FixMsg:
    """A resting GTC limit order; returns its New report (fails on a reject)."""
    send_order(c, cid, market, side, qty, price)
    m = c.expect(lambda m: m.get(35) == "8" and m.get(11) == cid, REPLY_TIMEOUT)
    assert m.get(150) == "0", m
    return m


def cancel(c: FixClient, cid: str, orig: str, market: str, side: str, order_id: str = "") -> None:
    fields = [(11, cid), (41, orig), (55, market), (54, SIDE[side]), (60, c.now())]
    if order_id:
        fields.append((37, order_id))
    c.send("F", fields)


def replace(
    c: FixClient, cid: str, orig: str, market: str, side: str, qty: str, price: str
) -> None:
    c.send(
        "G",
        [(11, cid), (41, orig), (55, market), (54, SIDE[side]), (60, c.now()), (40, "2"),
         (38, qty), (44, price)],
    )  # fmt: skip


def status(c: FixClient, cid: str, market: str, side: str, order_id: str = "") -> FixMsg:
    """OrderStatusRequest; its answer names the order (by OrderID if one was given, else by
    the ClOrdID asked for)."""
    fields = [(11, cid), (55, market), (54, SIDE[side])]
    if order_id:
        fields.append((37, order_id))
    c.send("H", fields)

    def answer(m: FixMsg) -> bool:
        if m.get(35) != "8" or m.get(150) != "I":
            return False
        return m.get(37) == order_id if order_id else m.get(11) == cid

    return c.expect(answer, REPLY_TIMEOUT)


def drain(c: FixClient) -> list[FixMsg]:
    """Forget everything received so far (returned)."""
    while not c.inbox.empty():
        c.seen.append(c.inbox.get_nowait())
    out, c.seen[:] = list(c.seen), []
    return out


def received_before_probe(c: FixClient, market: str) -> list[FixMsg]:
    """Send an OrderStatusRequest for an order that does not exist and return every message
    that arrived before its answer (and was not taken by an earlier ``expect``)."""
    cid = f"probe-{next(_probes)}"
    c.send("H", [(11, cid), (55, market), (54, "1")])
    answer = c.expect(lambda m: m.get(11) == cid, REPLY_TIMEOUT)
    check(answer, {150: "I", 39: "8"})
    out, c.seen[:] = list(c.seen), []
    return out


def last_seq(c: FixClient) -> int:
    """The MsgSeqNum the gateway has reached on ``c``'s session (a status round trip)."""
    m = status(c, f"seq-{next(_probes)}", "BTC-USD", "buy")
    return int(m.get(34) or 0)


def funded(fix: FixStack, **amounts: str) -> FixTrader:
    t = fix.trader()
    fix.fund(t, **(amounts or {"USD": "100000", "BTC": "10"}))
    return t


def logout_reason(c: FixClient) -> str:
    """The Text (58) of the Logout that refused ``c``'s Logon."""
    m = c.admin.get(timeout=REPLY_TIMEOUT)
    assert m.get(35) == "5", m
    assert not c.logged_on.is_set()
    return m.get(58) or ""


def market_data_request(
    c: FixClient, req_id: str, market: str, depth: str, types: str = "01", sub: str = "1"
) -> None:
    c.send(
        "V",
        [(262, req_id), (263, sub), (264, depth)],
        [(267, 269, [[(269, t)] for t in types]), (146, 55, [[(55, market)]])],
    )


def entries(m: FixMsg) -> list[dict[int, str]]:
    """The MDEntries of a W or X, one dict per entry (a new entry at each 269 / 279)."""
    start = 279 if m.get(35) == "X" else 269
    rows: list[dict[int, str]] = []
    for tag, value in m.fields:
        if tag == start:
            rows.append({})
        if rows and tag in (279, 269, 270, 271, 55):
            rows[-1][tag] = value
    return [{t: v for t, v in r.items() if t != 55 or start == 279} for r in rows]


def book_rows(rows: list[dict[int, str]]) -> set[tuple[str, Decimal, Decimal]]:
    return {(r[269], D(r[270]), D(r[271])) for r in rows}


def last_trades(rows: list[dict[int, str]]) -> set[tuple[str, Decimal]]:
    return {(r[269], D(r[270])) for r in rows}


def wait_snapshot(
    c: FixClient,
    market: str,
    want: set,
    types: str = "01",
    key: Callable[[list[dict[int, str]]], set] = book_rows,
) -> FixMsg:
    """Poll snapshot-only requests until the gateway's book shows ``want`` (its market-data
    feed runs beside the order path, so a book may lag the order acks a little)."""
    ids = itertools.count(1)

    def snap() -> FixMsg | None:
        rid = f"snap-{market}-{next(ids)}"
        market_data_request(c, rid, market, "0", types, sub="0")
        try:
            m = c.expect(lambda m: m.get(35) == "W" and m.get(262) == rid, 3)
        except AssertionError:
            return None
        return m if key(entries(m)) == want else None

    return eventually(snap, REPLY_TIMEOUT, 0.1, f"snapshot of {market} shows {want}")


# -------------------------------------------------------------------------------- logon


def test_logon_with_api_key_and_secret_succeeds(fix: FixStack) -> None:
    t = fix.trader()
    c = fix.session(t)
    assert c.logged_on.is_set()
    c.send("x", [(320, "sl-1"), (559, "4")])
    assert c.expect(lambda m: m.get(35) == "y", REPLY_TIMEOUT).get(320) == "sl-1"


def test_logon_with_wrong_secret_is_refused_with_a_reason(fix: FixStack) -> None:
    t = fix.trader()
    c = fix.client(t.comps[0], t.key, t.secret + "x")
    assert "wrong secret" in logout_reason(c)


def test_logon_with_unknown_api_key_is_refused(fix: FixStack) -> None:
    t = fix.trader()
    c = fix.client(t.comps[0], "k_00000000deadbeef", t.secret)
    assert "unknown api key" in logout_reason(c)


def test_logon_with_revoked_api_key_is_refused(fix: FixStack) -> None:
    t = fix.trader()
    fix.store.revoke_key(t.key)
    c = fix.client(t.comps[0], t.key, t.secret)
    assert "unknown api key" in logout_reason(c)


@pytest.mark.parametrize("missing", ["both", "username", "password"])
def test_logon_without_username_or_password_is_refused(fix: FixStack, missing: str) -> None:
    t = fix.trader()
    key = None if missing in ("both", "username") else t.key
    secret = None if missing in ("both", "password") else t.secret
    c = fix.client(t.comps[0], key, secret)
    reason = logout_reason(c)
    assert "Username(553)" in reason and "Password(554)" in reason, reason


@pytest.mark.parametrize("empty", [553, 554])
def test_logon_with_an_empty_username_or_password_gets_a_logout_with_the_reason(
    fix: FixStack, empty: int
) -> None:
    """``554=`` (a tag without a value) fails quickfix's validation before the gateway sees
    the Logon; it still gets a Logout saying why, then the connection closes."""
    t = fix.trader()
    raw = RawFix(fix.gateway.port, t.comps[0])
    try:
        creds = {553: t.key, 554: t.secret, empty: ""}
        raw.send("A", [(98, "0"), (108, "30"), (141, "Y"), (553, creds[553]), (554, creds[554])])
        got = raw.closed_by_peer()
    finally:
        raw.close()
    assert not [m for m in got if m.get(35) == "A"], got
    logouts = [m for m in got if m.get(35) == "5"]
    assert logouts, got
    text = logouts[0].get(58) or ""
    assert "Username(553)" in text and "Password(554)" in text, logouts[0]


def test_front_door_drops_empty_credentials_and_keeps_what_follows_the_logon() -> None:
    logon = frame("A", "X", TARGET, 1, [(98, "0"), (108, "30"), (553, "k"), (554, "")])
    after = frame("0", "X", TARGET, 2, [])
    out = drop_empty_credentials(logon + after)
    first_msg, rest = out[: -len(after)], out[-len(after) :]
    assert rest == after
    assert b"\x01554=" not in first_msg and b"\x01553=k\x01" in first_msg
    length = int(re.search(rb"\x019=(\d+)\x01", first_msg).group(1))
    body_start = first_msg.index(b"\x0135=") + 1
    assert length == len(first_msg) - body_start - len(b"10=nnn\x01")
    assert first_msg[-4:-1] == checksum(first_msg[:-7])
    assert drop_empty_credentials(after) == after


def test_logon_with_a_key_of_another_account_is_refused(fix: FixStack) -> None:
    mine, other = fix.trader(), fix.trader()
    c = fix.client(mine.comps[0], other.key, other.secret)
    assert f"SenderCompID {mine.comps[0]} is not registered" in logout_reason(c)


def test_unknown_sender_comp_id_has_its_connection_closed(fix: FixStack) -> None:
    t = fix.trader()
    raw = RawFix(fix.gateway.port, "NOBODY")
    try:
        raw.send("A", [(98, "0"), (108, "30"), (553, t.key), (554, t.secret)])
        got = raw.closed_by_peer()
        assert not [m for m in got if m.get(35) == "A"], got
    finally:
        raw.close()


def host_addresses() -> list[str]:
    """This host's own IPv4 addresses other than loopback (from the kernel's local table)."""
    text = Path("/proc/net/fib_trie").read_text()
    found = re.findall(r"\|-- (\d+\.\d+\.\d+\.\d+)\n\s+/32 host LOCAL", text)
    return sorted({a for a in found if not a.startswith("127.")})


def test_the_acceptors_behind_the_front_door_are_not_reachable_off_loopback(
    fix: FixStack,
) -> None:
    """The quickfix acceptors take plain FIX (Password(554) in clear): only the front door,
    on loopback, may reach them. A connection to their ports on any other address of this
    host is refused, while the front door's own hand-over on loopback works."""
    ports = [int(p) for p in re.findall(r"acceptor generation on 127\.0\.0\.1:(\d+)",
                                        fix.gateway.log())]  # fmt: skip
    assert ports, fix.gateway.log()
    addresses = host_addresses()
    if not addresses:
        pytest.skip("this host has no address but loopback")
    for port in ports:
        with socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT):
            pass
        for address in addresses:
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((address, port), timeout=REPLY_TIMEOUT).close()
    t = fix.trader()
    assert fix.session(t).logged_on.is_set()


# ------------------------------------------------------------------------------- orders


def test_limit_gtc_rests_and_fills_with_maker_and_taker_fees(fix: FixStack, market: str) -> None:
    maker, taker, taker2 = funded(fix), funded(fix), funded(fix)
    m, t, t2 = fix.session(maker), fix.session(taker), fix.session(taker2)
    new = place(m, "ask", market, "sell", "0.0100", "50000.00")
    check(new, {150: "0", 39: "0", 14: "0", 151: "0.0100", 38: "0.0100", 44: "50000.00",
                40: "2", 54: "2", 55: market})  # fmt: skip
    oid = new.get(37)

    send_order(t, "bid", market, "buy", "0.0040", "50010.00")
    check(er(t, "bid", "0"), {39: "0", 14: "0", 151: "0.0040", 44: "50010.00"})
    qty, px = D("0.0040"), D("50000.00")  # prints at the maker's price
    check(er(t, "bid", "F"), {39: "2", 31: px, 32: qty, 14: qty, 151: "0", 6: px,
                              12: fee(qty, TAKER_FEE, BTC_PLACES), 13: "3", 479: "BTC",
                              851: "2"})  # fmt: skip
    fill = er(m, "ask", "F")
    check(fill, {37: oid, 39: "1", 31: px, 32: qty, 14: qty, 151: "0.0060", 6: px,
                 12: fee(qty * px, MAKER_FEE, USD_PLACES), 13: "3", 479: "USD",
                 851: "1"})  # fmt: skip

    send_order(t2, "bid2", market, "buy", "0.0060", "50000.00")
    check(er(t2, "bid2", "F"), {39: "2", 14: "0.0060", 151: "0"})
    check(er(m, "ask", "F"), {37: oid, 39: "2", 32: "0.0060", 14: "0.0100", 151: "0", 6: px,
                              12: fee(D("0.0060") * px, MAKER_FEE, USD_PLACES)})  # fmt: skip

    notional = D("0.0100") * px
    assert fix.balances(maker) == {
        "USD": (D(100000) + notional - fee(qty * px, MAKER_FEE, USD_PLACES)
                - fee(D("0.0060") * px, MAKER_FEE, USD_PLACES), D(0)),
        "BTC": (D(10) - D("0.0100"), D(0)),
    }  # fmt: skip
    assert fix.balances(taker) == {
        "USD": (D(100000) - qty * px, D(0)),  # bought below its limit: no surplus stays locked
        "BTC": (D(10) + qty - fee(qty, TAKER_FEE, BTC_PLACES), D(0)),
    }


def test_ioc_fills_what_it_can_and_the_rest_ends(fix: FixStack, market: str) -> None:
    maker, taker = funded(fix), funded(fix)
    m, t = fix.session(maker), fix.session(taker)
    place(m, "ask", market, "sell", "0.0100", "50000.00")
    send_order(t, "ioc", market, "buy", "0.0150", "50000.00", tif="3")
    check(er(t, "ioc", "0"), {39: "0", 151: "0.0150"})
    check(er(t, "ioc", "F"), {39: "1", 32: "0.0100", 14: "0.0100", 151: "0.0050", 6: "50000"})
    end = t.expect(lambda x: x.get(11) == "ioc", REPLY_TIMEOUT)
    # IOC remainder: Canceled or Expired are both FIX; type and status must agree.
    assert (end.get(150), end.get(39)) in {("4", "4"), ("C", "C")}, end
    check(end, {14: "0.0100", 151: "0"})
    check(er(m, "ask", "F"), {39: "2", 14: "0.0100"})
    assert fix.balances(taker)["USD"] == (D(100000) - D("500.00"), D(0))


def test_fok_that_cannot_fill_completely_ends_without_trading(fix: FixStack, market: str) -> None:
    maker, taker = funded(fix), funded(fix)
    m, t = fix.session(maker), fix.session(taker)
    place(m, "ask", market, "sell", "0.0100", "50000.00")
    send_order(t, "fok", market, "buy", "0.0101", "50000.00", tif="4")
    check(er(t, "fok", "0"), {39: "0"})
    end = t.expect(lambda x: x.get(11) == "fok", REPLY_TIMEOUT)
    assert (end.get(150), end.get(39)) in {("4", "4"), ("C", "C")}, end
    check(end, {14: "0", 151: "0"})
    assert fix.balances(taker)["USD"] == (D(100000), D(0))
    send_order(t, "fok2", market, "buy", "0.0100", "50000.00", tif="4")
    check(er(t, "fok2", "F"), {39: "2", 14: "0.0100", 151: "0", 31: "50000.00"})
    check(er(m, "ask", "F"), {39: "2", 14: "0.0100"})


def test_post_only_rests_as_maker_or_is_rejected_when_it_would_take(
    fix: FixStack, market: str
) -> None:
    maker, taker = funded(fix), funded(fix)
    m, t = fix.session(maker), fix.session(taker)
    send_order(m, "po", market, "sell", "0.0100", "50000.00", extra=[(18, "6")])
    check(er(m, "po", "0"), {39: "0", 151: "0.0100"})
    send_order(t, "po-cross", market, "buy", "0.0100", "50000.00", extra=[(18, "6")])
    rej = er(t, "po-cross", "8")
    check(rej, {39: "8"})
    assert "post-only" in (rej.get(58) or ""), rej
    send_order(t, "take", market, "buy", "0.0100", "50000.00")
    check(er(t, "take", "F"), {39: "2", 851: "2"})
    check(er(m, "po", "F"), {39: "2", 851: "1"})


def test_market_sell_by_quantity_walks_the_book(fix: FixStack, market: str) -> None:
    b1, b2, seller = funded(fix), funded(fix), funded(fix)
    c1, c2, s = fix.session(b1), fix.session(b2), fix.session(seller)
    place(c1, "bid1", market, "buy", "0.0100", "50000.00")
    place(c2, "bid2", market, "buy", "0.0100", "49990.00")
    send_order(s, "mkt", market, "sell", "0.0150", tif=None)
    check(er(s, "mkt", "0"), {40: "1", 39: "0", 151: "0.0150", 44: None})
    f1, f2 = er(s, "mkt", "F"), er(s, "mkt", "F")
    n1, n2 = D("0.0100") * D("50000.00"), D("0.0050") * D("49990.00")
    check(f1, {39: "1", 31: "50000.00", 32: "0.0100", 14: "0.0100", 151: "0.0050",
               12: fee(n1, TAKER_FEE, USD_PLACES), 479: "USD"})  # fmt: skip
    check(f2, {39: "2", 31: "49990.00", 32: "0.0050", 14: "0.0150", 151: "0",
               6: (n1 + n2) / D("0.0150"), 12: fee(n2, TAKER_FEE, USD_PLACES)})  # fmt: skip
    check(er(c1, "bid1", "F"), {39: "2", 12: fee(D("0.0100"), MAKER_FEE, BTC_PLACES)})
    check(er(c2, "bid2", "F"), {39: "1", 14: "0.0050", 151: "0.0050"})
    usd = D(100000) + n1 + n2 - fee(n1, TAKER_FEE, USD_PLACES) - fee(n2, TAKER_FEE, USD_PLACES)
    assert fix.balances(seller) == {"USD": (usd, D(0)), "BTC": (D(10) - D("0.0150"), D(0))}


def test_market_buy_by_cash_order_qty_spends_at_most_the_amount(fix: FixStack, market: str) -> None:
    a1, a2, buyer = funded(fix), funded(fix), funded(fix)
    c1, c2, b = fix.session(a1), fix.session(a2), fix.session(buyer)
    place(c1, "ask1", market, "sell", "0.0100", "50000.00")
    place(c2, "ask2", market, "sell", "0.0200", "50100.00")
    send_order(b, "cash", market, "buy", tif=None, extra=[(152, "1000.00")])
    check(er(b, "cash", "0"), {40: "1", 152: "1000.00", 38: None})
    # 0.0100 at 50000.00 costs 500.00; the other 500.00 buys whole lots at 50100.00
    # (5.01 each): 99 lots = 0.0099 for 495.99. 4.01 is left, less than a lot: done.
    lots2 = (D("500.00") / (D("50100.00") * D("0.0001"))).to_integral_value(ROUND_DOWN)
    q2 = lots2 * D("0.0001")
    assert q2 == D("0.0099")
    spent = D("500.00") + q2 * D("50100.00")
    check(er(b, "cash", "F"), {31: "50000.00", 32: "0.0100", 14: "0.0100"})
    last = er(b, "cash", "F")
    check(last, {39: "2", 31: "50100.00", 32: q2, 14: D("0.0100") + q2, 151: "0",
                 6: spent / (D("0.0100") + q2), 12: fee(q2, TAKER_FEE, BTC_PLACES)})  # fmt: skip
    got = D("0.0100") + q2 - fee(D("0.0100"), TAKER_FEE, BTC_PLACES) - fee(q2, TAKER_FEE, 8)
    assert fix.balances(buyer) == {"USD": (D(100000) - spent, D(0)), "BTC": (D(10) + got, D(0))}
    check(er(c2, "ask2", "F"), {39: "1", 14: q2, 151: D("0.0200") - q2})


# ------------------------------------------------------------------- stops and GTD


def test_a_stop_limit_waits_then_triggers_and_a_stop_market_sell_fills(
    fix: FixStack, market: str
) -> None:
    """OrdType 4 with StopPx(99) waits out of the book; a trade through its stop triggers it
    (ExecType L), then it trades; OrdType 3 likewise; a stop the last price already reached is
    rejected; OrdType and StopPx come back in every report."""
    seller, buyer, owner = funded(fix), funded(fix), funded(fix)
    s, b, o = fix.session(seller), fix.session(buyer), fix.session(owner)
    place(s, "a1", market, "sell", "0.0010", "50000.00")
    send_order(b, "b1", market, "buy", "0.0010", "50000.00", tif="3")
    check(er(b, "b1", "F"), {39: "2"})  # the last price is 50000.00
    send_order(o, "now", market, "sell", "0.0100", ord_type="3", tif=None,
               extra=[(99, "50000.00")])  # fmt: skip
    rej = er(o, "now", "8")
    assert "trigger immediately" in (rej.get(58) or ""), rej
    send_order(o, "sl", market, "sell", "0.0100", "49000.00", ord_type="4",
               extra=[(99, "49500.00")])  # fmt: skip
    check(er(o, "sl", "0"), {39: "0", 40: "4", 99: "49500.00", 44: "49000.00", 151: "0.0100"})
    send_order(o, "slm", market, "sell", "0.0100", ord_type="3", tif=None,
               extra=[(99, "49400.00")])  # fmt: skip
    check(er(o, "slm", "0"), {39: "0", 40: "3", 99: "49400.00", 44: None})
    assert fix.balances(owner)["BTC"] == (D(10) - D("0.0200"), D("0.0200"))
    # a bid at 49000.00 for them, then one trade at 49400.00: both stops are reached
    place(b, "bid", market, "buy", "0.0300", "49000.00")
    place(s, "a2", market, "sell", "0.0010", "49400.00")
    send_order(b, "b2", market, "buy", "0.0010", "49400.00", tif="3")
    check(er(b, "b2", "F"), {39: "2"})
    check(er(o, "sl", "L"), {39: "0", 40: "4", 99: "49500.00"})
    check(er(o, "sl", "F"), {39: "2", 31: "49000.00", 32: "0.0100", 40: "4"})
    check(er(o, "slm", "L"), {39: "0", 40: "3"})
    check(er(o, "slm", "F"), {39: "2", 31: "49000.00", 32: "0.0100", 40: "3"})
    assert fix.balances(owner)["BTC"] == (D(10) - D("0.0200"), D(0))


def test_an_iceberg_with_max_floor_and_a_trailing_stop_with_trailing_delta_bips(
    fix: FixStack, market: str
) -> None:
    """MaxFloor(111) makes an iceberg: a taker gets its visible part, then the refill; the
    status report shows MaxFloor. TriggerTrailingDeltaBips(25009) on OrdType 3 without StopPx
    makes a trailing stop that follows a new high and triggers on the retrace."""
    seller, buyer, owner = funded(fix), funded(fix), funded(fix)
    s, b, o = fix.session(seller), fix.session(buyer), fix.session(owner)
    send_order(s, "ice", market, "sell", "0.0300", "50000.00", extra=[(111, "0.0100")])
    check(er(s, "ice", "0"), {39: "0", 151: "0.0300"})
    send_order(b, "t1", market, "buy", "0.0150", "50000.00", tif="3")
    check(er(b, "t1", "F"), {32: "0.0100", 31: "50000.00"})  # what it showed
    check(er(b, "t1", "F"), {32: "0.0050", 31: "50000.00"})  # then its refill
    s.send("H", [(11, "ice"), (55, market), (54, "2")])
    check(er(s, "ice", "I"), {39: "1", 111: "0.0100", 151: "0.0150"})
    send_order(b, "t2", market, "buy", "0.0150", "50000.00", tif="3")  # the rest of it
    check(er(b, "t2", "F"), {32: "0.0050"})  # what is left of the part it shows
    check(er(b, "t2", "F"), {32: "0.0100", 39: "2"})
    # the last price is 50000.00: a 1% trailing sell stop follows from there
    send_order(o, "trail", market, "sell", "0.0100", ord_type="3", tif=None,
               extra=[(25009, "100")])  # fmt: skip
    check(er(o, "trail", "0"), {39: "0", 40: "3", 99: None})
    place(b, "bid", market, "buy", "0.0100", "45000.00")  # for it to sell into
    for cid, px in (("up", "51000.00"), ("dn", "50500.00")):  # a new high, then above 50490
        place(s, f"a-{cid}", market, "sell", "0.0010", px)
        send_order(b, cid, market, "buy", "0.0010", px, tif="3")
        check(er(b, cid, "F"), {39: "2"})
    send_order(o, "bad", market, "sell", "0.0100", ord_type="3", tif=None,
               extra=[(25009, "5000")])  # fmt: skip
    check(er(o, "bad", "8"), {39: "8"})
    place(s, "a-tr", market, "sell", "0.0010", "50490.00")
    send_order(b, "tr", market, "buy", "0.0010", "50490.00", tif="3")
    check(er(o, "trail", "L"), {39: "0", 40: "3"})
    check(er(o, "trail", "F"), {39: "2", 31: "45000.00", 32: "0.0100"})


def test_a_gtd_order_expires_at_its_expire_time(fix: FixStack, market: str) -> None:
    t = funded(fix, USD="1000")
    c = fix.session(t)
    send_order(c, "gtd-past", market, "buy", "0.0100", "10.00", tif="6",
               extra=[(126, "20200101-00:00:00")])  # fmt: skip
    check(er(c, "gtd-past", "8"), {39: "8"})
    soon = utc_text(time.time_ns() + 400_000_000)
    send_order(c, "gtd", market, "buy", "0.0100", "10.00", tif="6", extra=[(126, soon)])
    check(er(c, "gtd", "0"), {39: "0", 59: None})
    end = er(c, "gtd", "C")
    check(end, {39: "C", 151: "0"})
    assert "expired" in (end.get(58) or ""), end
    assert fix.balances(t)["USD"] == (D(1000), D(0))


def utc_text(ns: int) -> str:
    return time.strftime("%Y%m%d-%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns // 10**6 % 1000:03d}"


# ------------------------------------------------------------------- cancel and replace


def test_cancel_by_orig_clordid_releases_the_funds(fix: FixStack, market: str) -> None:
    t = funded(fix, USD="1000")
    c = fix.session(t)
    oid = place(c, "o1", market, "buy", "0.0100", "50000.00").get(37)
    assert fix.balances(t)["USD"] == (D(500), D(500))
    cancel(c, "c1", "o1", market, "buy")
    check(er(c, "c1", "4"), {37: oid, 41: "o1", 39: "4", 14: "0", 151: "0"})
    assert fix.balances(t)["USD"] == (D(1000), D(0))
    cancel(c, "c2", "o1", market, "buy")
    rej = c.expect(lambda m: m.get(35) == "9" and m.get(11) == "c2", REPLY_TIMEOUT)
    check(rej, {41: "o1", 434: "1", 102: "1"})


def test_cancel_by_order_id(fix: FixStack, market: str) -> None:
    t = funded(fix)
    c = fix.session(t)
    oid = place(c, "o1", market, "sell", "0.0100", "50000.00").get(37)
    assert oid and oid.isdigit()
    cancel(c, "c1", "o1", market, "sell", order_id=oid)
    check(er(c, "c1", "4"), {37: oid, 39: "4"})
    cancel(c, "c2", "o1", market, "sell", order_id=str(int(oid) + 10_000_000))
    rej = c.expect(lambda m: m.get(35) == "9" and m.get(11) == "c2", REPLY_TIMEOUT)
    check(rej, {434: "1", 102: "1"})


def test_cancel_by_order_id_alone_without_orig_clordid(fix: FixStack, market: str) -> None:
    """docs/fix.md: OrderCancelRequest takes OrigClOrdID(41) or OrderID(37); the shipped data
    dictionary makes 41 optional for F and G so quickfix lets a cancel by OrderID through."""
    t = funded(fix, USD="1000")
    c = fix.session(t)
    oid = place(c, "o1", market, "buy", "0.0100", "50000.00").get(37)
    c.send("F", [(11, "c1"), (37, oid), (55, market), (54, "1"), (60, c.now())])
    check(er(c, "c1", "4"), {37: oid, 41: "o1", 39: "4", 151: "0"})
    assert fix.balances(t)["USD"] == (D(1000), D(0))
    c.send("F", [(11, "c2"), (55, market), (54, "1"), (60, c.now())])  # neither 41 nor 37
    rej = c.expect(lambda m: m.get(35) == "9" and m.get(11) == "c2", REPLY_TIMEOUT)
    assert "OrigClOrdID(41) or OrderID(37)" in (rej.get(58) or ""), rej
    assert c.admin.empty(), c.admin.get_nowait()  # no session-level Reject


def test_replace_by_order_id_alone_without_orig_clordid(fix: FixStack, market: str) -> None:
    t = funded(fix)
    c = fix.session(t)
    oid = place(c, "o1", market, "sell", "0.0100", "50000.00").get(37)
    c.send("G", [(11, "o2"), (37, oid), (55, market), (54, "2"), (60, c.now()), (40, "2"),
                 (38, "0.0050"), (44, "50000.00")])  # fmt: skip
    check(er(c, "o2", "5"), {37: oid, 39: "0", 38: "0.0050", 151: "0.0050"})
    assert c.admin.empty(), c.admin.get_nowait()


def test_replace_to_a_smaller_size_keeps_queue_priority(fix: FixStack, market: str) -> None:
    first, second, taker = funded(fix), funded(fix), funded(fix)
    a, b, t = fix.session(first), fix.session(second), fix.session(taker)
    oid = place(a, "a1", market, "sell", "0.0100", "50000.00").get(37)
    place(b, "b1", market, "sell", "0.0100", "50000.00")
    replace(a, "a2", "a1", market, "sell", "0.0050", "50000.00")
    check(er(a, "a2", "5"), {37: oid, 41: "a1", 39: "0", 38: "0.0050", 151: "0.0050"})
    assert fix.balances(first)["BTC"] == (D(10) - D("0.0050"), D("0.0050"))
    send_order(t, "t1", market, "buy", "0.0050", "50000.00")
    check(er(t, "t1", "F"), {39: "2"})
    check(er(a, "a2", "F"), {37: oid, 39: "2", 14: "0.0050", 151: "0"})  # still first in line
    check(status(b, "b1", market, "sell"), {39: "0", 14: "0", 151: "0.0100"})


def test_replace_with_a_new_price_moves_the_order(fix: FixStack, market: str) -> None:
    first, second, taker = funded(fix), funded(fix), funded(fix)
    a, b, t = fix.session(first), fix.session(second), fix.session(taker)
    oid = place(a, "a1", market, "sell", "0.0100", "50000.00").get(37)
    place(b, "b1", market, "sell", "0.0100", "50000.00")
    replace(a, "a2", "a1", market, "sell", "0.0100", "50000.01")
    check(er(a, "a2", "5"), {37: oid, 41: "a1", 39: "0", 44: "50000.01", 151: "0.0100"})
    send_order(t, "t1", market, "buy", "0.0100", "50000.01")
    check(er(t, "t1", "F"), {39: "2", 31: "50000.00"})  # the better price, b's, goes first
    check(er(b, "b1", "F"), {39: "2"})
    send_order(t, "t2", market, "buy", "0.0100", "50000.01")
    check(er(t, "t2", "F"), {39: "2", 31: "50000.01"})
    check(er(a, "a2", "F"), {37: oid, 39: "2", 31: "50000.01", 14: "0.0100"})


def test_rejected_replace_leaves_the_order_as_it_was(fix: FixStack, market: str) -> None:
    maker, taker = funded(fix), funded(fix)
    m, t = fix.session(maker), fix.session(taker)
    oid = place(m, "o1", market, "sell", "0.0100", "50000.00").get(37)
    send_order(t, "t1", market, "buy", "0.0040", "50000.00")
    check(er(m, "o1", "F"), {39: "1", 14: "0.0040"})
    replace(m, "o2", "o1", market, "sell", "0.0030", "50000.00")  # less than already filled
    rej = m.expect(lambda x: x.get(35) == "9" and x.get(11) == "o2", REPLY_TIMEOUT)
    check(rej, {41: "o1", 434: "2"})
    check(status(m, "o1", market, "sell"), {37: oid, 39: "1", 38: "0.0100", 14: "0.0040",
                                            151: "0.0060", 44: "50000.00"})  # fmt: skip
    assert fix.balances(maker)["BTC"] == (D(10) - D("0.0100"), D("0.0060"))
    # FIX 4.4: OrdStatus(39) of an OrderCancelReject is the order's current status (8 only
    # when the order is unknown).
    check(rej, {37: oid, 39: "1"})


def test_order_status_by_clordid_by_order_id_and_unknown(fix: FixStack, market: str) -> None:
    maker, taker = funded(fix), funded(fix)
    m, t = fix.session(maker), fix.session(taker)
    oid = place(m, "o1", market, "sell", "0.0100", "50000.00").get(37)
    send_order(t, "t1", market, "buy", "0.0030", "50000.00")
    er(m, "o1", "F")
    by_cid = status(m, "o1", market, "sell")
    check(by_cid, {37: oid, 39: "1", 14: "0.0030", 151: "0.0070", 38: "0.0100",
                   44: "50000.00", 6: "50000"})  # fmt: skip
    by_id = status(m, "whatever", market, "sell", order_id=oid)
    check(by_id, {37: oid, 39: "1", 14: "0.0030"})
    unknown = status(m, "nope", market, "sell")
    check(unknown, {39: "8"})
    assert unknown.get(58), unknown


def test_mass_cancel_by_symbol_then_everything(fix: FixStack) -> None:
    m1, m2 = fix.new_market(), fix.new_market()
    t = funded(fix)
    c = fix.session(t)
    place(c, "a", m1, "buy", "0.0100", "40000.00")
    place(c, "b", m1, "sell", "0.0100", "60000.00")
    place(c, "c", m2, "buy", "0.0100", "40000.00")
    c.send("q", [(11, "mc1"), (530, "1"), (55, m1), (60, c.now())])
    rep = c.expect(lambda m: m.get(35) == "r" and m.get(11) == "mc1", REPLY_TIMEOUT)
    check(rep, {530: "1", 531: "1", 533: "2"})
    check(er(c, "a", "4"), {39: "4"})
    check(er(c, "b", "4"), {39: "4"})
    check(status(c, "c", m2, "buy"), {39: "0"})
    c.send("q", [(11, "mc2"), (530, "7"), (60, c.now())])
    rep = c.expect(lambda m: m.get(35) == "r" and m.get(11) == "mc2", REPLY_TIMEOUT)
    check(rep, {530: "7", 531: "7", 533: "1"})
    check(er(c, "c", "4"), {39: "4"})
    assert fix.balances(t) == {"USD": (D(100000), D(0)), "BTC": (D(10), D(0))}


# --------------------------------------------------------------------- reference data


def test_security_list_gives_tick_and_lot_of_every_market(fix: FixStack) -> None:
    c = fix.session(fix.trader())
    c.send("x", [(320, "sl"), (559, "4")])
    m = c.expect(lambda m: m.get(35) == "y" and m.get(320) == "sl", REPLY_TIMEOUT)
    rows: dict[str, dict[int, str]] = {}
    for tag, value in m.fields:
        if tag == 55:
            rows[value] = {}
            last = value
        elif tag in (15, 561, 562, 969) and rows:
            rows[last][tag] = value
    assert set(rows) == set(fix.exchange.markets)
    assert m.get(146) == str(len(fix.exchange.markets))
    expected = {
        "BTC-USD": ("0.01", "0.0001", "USD"),
        "ETH-USD": ("0.01", "0.001", "USD"),
        "ETH-BTC": ("0.00001", "0.001", "BTC"),
        "P00-USD": ("0.01", "0.0001", "USD"),
    }
    for sym, (tick, lot, quote) in expected.items():
        assert D(rows[sym][969]) == D(tick), (sym, rows[sym])
        assert D(rows[sym][561]) == D(lot), (sym, rows[sym])
        assert rows[sym][15] == quote, (sym, rows[sym])


# ------------------------------------------------------------------------- market data


def test_market_data_full_depth_snapshot_then_incremental(fix: FixStack, market: str) -> None:
    a, b = funded(fix), funded(fix)
    ca, cb = fix.session(a), fix.session(b)
    place(ca, "bid1", market, "buy", "0.0100", "49000.00")
    wait_snapshot(ca, market, {("0", D("49000.00"), D("0.0100"))})
    market_data_request(ca, "md1", market, "0")
    snap = ca.expect(lambda m: m.get(35) == "W" and m.get(262) == "md1", REPLY_TIMEOUT)
    assert snap.get(55) == market
    assert book_rows(entries(snap)) == {("0", D("49000.00"), D("0.0100"))}

    def update() -> list[dict[int, str]]:
        m = ca.expect(lambda m: m.get(35) == "X" and m.get(262) == "md1", REPLY_TIMEOUT)
        return entries(m)

    place(cb, "ask1", market, "sell", "0.0200", "51000.00")
    assert update() == [{279: "0", 269: "1", 55: market, 270: "51000.00", 271: "0.0200"}]
    place(ca, "bid2", market, "buy", "0.0050", "49000.00")
    assert update() == [{279: "1", 269: "0", 55: market, 270: "49000.00", 271: "0.0150"}]
    cancel(ca, "x1", "bid1", market, "buy")
    er(ca, "x1", "4")
    assert update() == [{279: "1", 269: "0", 55: market, 270: "49000.00", 271: "0.0050"}]
    send_order(cb, "hit", market, "sell", "0.0050", "49000.00")
    er(cb, "hit", "F")
    (gone,) = update()
    assert (gone[279], gone[269], gone[270]) == ("2", "0", "49000.00"), gone
    wait_snapshot(ca, market, {("1", D("51000.00"), D("0.0200"))})


def test_market_data_top_of_book_sends_only_best_changes(fix: FixStack, market: str) -> None:
    a, b = funded(fix), funded(fix)
    ca, cb = fix.session(a), fix.session(b)
    place(ca, "bid1", market, "buy", "0.0100", "49000.00")
    wait_snapshot(ca, market, {("0", D("49000.00"), D("0.0100"))})
    market_data_request(ca, "top", market, "1")
    snap = ca.expect(lambda m: m.get(35) == "W" and m.get(262) == "top", REPLY_TIMEOUT)
    assert book_rows(entries(snap)) == {("0", D("49000.00"), D("0.0100"))}

    def update() -> set[tuple[str, str, str]]:
        m = ca.expect(lambda m: m.get(35) == "X" and m.get(262) == "top", REPLY_TIMEOUT)
        return {(r[279], r[269], r[270]) for r in entries(m)}

    place(ca, "bid2", market, "buy", "0.0010", "49500.00")  # a better bid replaces the top
    assert update() == {("2", "0", "49000.00"), ("0", "0", "49500.00")}
    place(ca, "bid3", market, "buy", "0.0010", "48000.00")  # below the top: no update
    place(cb, "ask1", market, "sell", "0.0010", "51000.00")
    assert update() == {("0", "1", "51000.00")}  # the next update is the ask, not bid3


def test_market_data_trades(fix: FixStack, market: str) -> None:
    a, b = funded(fix), funded(fix)
    ca, cb = fix.session(a), fix.session(b)
    place(ca, "ask", market, "sell", "0.0100", "50000.00")
    send_order(cb, "first", market, "buy", "0.0010", "50000.00")
    er(cb, "first", "F")
    wait_snapshot(ca, market, {("2", D("50000.00"))}, types="2", key=last_trades)
    market_data_request(ca, "tr", market, "0", types="2")
    snap = ca.expect(lambda m: m.get(35) == "W" and m.get(262) == "tr", REPLY_TIMEOUT)
    assert last_trades(entries(snap)) == {("2", D("50000.00"))}
    send_order(cb, "lift", market, "buy", "0.0040", "50000.00")
    er(cb, "lift", "F")
    m = ca.expect(lambda m: m.get(35) == "X" and m.get(262) == "tr", REPLY_TIMEOUT)
    assert entries(m) == [{279: "0", 269: "2", 55: market, 270: "50000.00", 271: "0.0040"}]


def test_market_data_snapshot_of_an_empty_book_is_delivered(fix: FixStack, market: str) -> None:
    c = fix.session(fix.trader())
    market_data_request(c, "empty", market, "0", sub="0")
    snap = c.expect(lambda m: m.get(35) == "W" and m.get(262) == "empty", REPLY_TIMEOUT)
    assert entries(snap) == []
    assert snap.get(268) == "0", snap


def test_market_data_request_for_unknown_symbol_is_rejected(fix: FixStack) -> None:
    c = fix.session(fix.trader())
    market_data_request(c, "bad", "NOPE-USD", "0")
    m = c.expect(lambda m: m.get(35) == "Y" and m.get(262) == "bad", REPLY_TIMEOUT)
    check(m, {281: "0"})
    assert "NOPE-USD" in (m.get(58) or ""), m


# ------------------------------------------------------------------------------ routing


def test_passive_fill_arrives_on_the_owning_session_only(fix: FixStack, market: str) -> None:
    maker, taker, bystander = funded(fix), funded(fix), funded(fix)
    m, t, x = fix.session(maker), fix.session(taker), fix.session(bystander)
    place(x, "mine", market, "buy", "0.0010", "10000.00")
    drain(x)
    moid = place(m, "ask", market, "sell", "0.0100", "50000.00").get(37)
    toid = None
    send_order(t, "bid", market, "buy", "0.0100", "50000.00")
    fill = er(t, "bid", "F")
    toid = fill.get(37)
    check(er(m, "ask", "F"), {37: moid, 39: "2"})
    assert moid != toid
    for c, own in ((m, moid), (t, toid)):
        stray = [r for r in received_before_probe(c, market) if r.get(37) not in (own, None)]
        assert not stray, stray
    assert received_before_probe(x, market) == []


def test_two_sessions_of_one_account_each_get_their_own_reports(fix: FixStack, market: str) -> None:
    owner, taker = funded(fix), funded(fix)
    s1, s2, t = fix.session(owner, 0), fix.session(owner, 1), fix.session(taker)
    # ClOrdIDs are per session: the same one in both sessions names two orders.
    o1 = place(s1, "same", market, "sell", "0.0100", "50000.00").get(37)
    o2 = place(s2, "same", market, "sell", "0.0100", "50000.01").get(37)
    assert o1 != o2
    send_order(t, "sweep", market, "buy", "0.0200", "50000.01")
    check(er(t, "sweep", "F"), {39: "1"})
    check(er(t, "sweep", "F"), {39: "2"})
    check(er(s1, "same", "F"), {37: o1, 31: "50000.00", 39: "2"})
    check(er(s2, "same", "F"), {37: o2, 31: "50000.01", 39: "2"})
    assert received_before_probe(s1, market) == []
    assert received_before_probe(s2, market) == []


def test_cancel_by_orig_clordid_only_finds_orders_of_its_own_session(
    fix: FixStack, market: str
) -> None:
    owner = funded(fix)
    s1, s2 = fix.session(owner, 0), fix.session(owner, 1)
    place(s1, "o1", market, "sell", "0.0100", "50000.00")
    cancel(s2, "c1", "o1", market, "sell")
    rej = s2.expect(lambda m: m.get(35) == "9" and m.get(11) == "c1", REPLY_TIMEOUT)
    check(rej, {102: "1"})
    check(status(s1, "o1", market, "sell"), {39: "0"})


# ------------------------------------------------------------------ reconnect and COD


def test_reconnect_receives_the_fill_missed_while_away_by_resend(
    fix: FixStack, market: str
) -> None:
    maker, taker = funded(fix), funded(fix)
    store = fix.workdir / "clients" / f"{maker.comps[0]}-persistent"
    m = fix.session(maker, reset=False, data_dir=store)
    oid = place(m, "ask", market, "sell", "0.0100", "50000.00").get(37)
    m.stop()  # Logout; the order stays (no cancel-on-disconnect on this session)
    fix.clients.remove(m)
    del m
    gc.collect()  # the stopped initiator and its quickfix session go before the next one
    t = fix.session(taker)
    send_order(t, "bid", market, "buy", "0.0100", "50000.00")
    check(er(t, "bid", "F"), {39: "2"})
    # A new initiator on the same store: its Logon carries the next sequence number it kept;
    # the gateway's is higher by the reports sent meanwhile, so quickfix asks for them again.
    back = fix.session(maker, reset=False, data_dir=store)
    missed = er(back, "ask", "F")
    check(missed, {37: oid, 39: "2", 14: "0.0100", 31: "50000.00", 43: "Y"})
    check(status(back, "ask", market, "sell"), {37: oid, 39: "2"})


def test_cancel_on_disconnect_cancels_only_that_sessions_orders(fix: FixStack, market: str) -> None:
    t = funded(fix)
    plain, cod = fix.session(t, 0), fix.session(t, 1)  # comps[1] has cancel-on-disconnect
    keep = place(plain, "keep", market, "sell", "0.0100", "50000.00").get(37)
    gone1 = place(cod, "gone1", market, "sell", "0.0100", "50001.00").get(37)
    gone2 = place(cod, "gone2", market, "buy", "0.0100", "40000.00").get(37)
    cod.stop()

    def cancelled(oid: str) -> bool:
        return status(plain, f"st-{oid}", market, "sell", order_id=oid).get(39) == "4"

    eventually(lambda: cancelled(gone1) and cancelled(gone2), REPLY_TIMEOUT, 0.1,
               "cancel-on-disconnect of the session's orders")  # fmt: skip
    check(status(plain, "keep", market, "sell"), {37: keep, 39: "0", 151: "0.0100"})
    assert fix.balances(t)["USD"] == (D(100000), D(0))
    assert fix.balances(t)["BTC"] == (D(10) - D("0.0100"), D("0.0100"))


def test_cancel_on_disconnect_reports_reach_the_session_when_it_returns(
    fix: FixStack, market: str
) -> None:
    t = funded(fix)
    store = fix.workdir / "clients" / f"{t.comps[1]}-persistent"
    plain = fix.session(t, 0)
    cod = fix.session(t, 1, reset=False, data_dir=store)
    oid = place(cod, "gone", market, "sell", "0.0100", "50001.00").get(37)
    cod.stop()
    fix.clients.remove(cod)
    del cod
    gc.collect()
    eventually(
        lambda: status(plain, f"st-{oid}", market, "sell", order_id=oid).get(39) == "4",
        REPLY_TIMEOUT, 0.1, "cancel-on-disconnect",
    )  # fmt: skip
    back = fix.session(t, 1, reset=False, data_dir=store)
    check(er(back, "gone", "4"), {37: oid, 39: "4", 14: "0", 151: "0"})


# ------------------------------------------------------------- sessions added at runtime


def test_session_added_while_running_logs_on_and_others_stay_up(fix: FixStack, market: str) -> None:
    old = funded(fix)
    oc = fix.session(old)
    place(oc, "o1", market, "sell", "0.0100", "50000.00")
    seq_before = last_seq(oc)
    newcomer = fix.new_trader()
    fix.fund(newcomer, USD="100000", BTC="10")
    nc = fix.client(newcomer.comps[0], newcomer.key, newcomer.secret)
    nc.wait_logon(REPLY_TIMEOUT + 10 * POLL_SECONDS)
    assert oc.logged_on.is_set()
    send_order(nc, "n1", market, "buy", "0.0040", "50000.00")
    check(er(nc, "n1", "F"), {39: "2"})
    fill = er(oc, "o1", "F")
    check(fill, {39: "1", 14: "0.0040"})
    assert int(fill.get(34) or 0) > seq_before  # same session: its numbers went on
    place(oc, "o2", market, "sell", "0.0010", "50000.00")
    assert oc.logged_on.is_set()
    assert f"FIX logout {old.comps[0]}" not in fix.gateway.log()


# ------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("tag", [54, 11, 60, 40])
def test_new_order_missing_a_required_tag_gets_a_session_reject(
    fix: FixStack, market: str, tag: int
) -> None:
    t = funded(fix)
    c = fix.session(t)
    send_order(c, "bad", market, "buy", "0.0100", "50000.00", drop=(tag,))
    rej = c.admin.get(timeout=REPLY_TIMEOUT)
    check(rej, {35: "3", 371: str(tag), 373: "1", 372: "D"})
    assert c.logged_on.is_set()
    place(c, "good", market, "buy", "0.0100", "50000.00")


def test_invalid_enum_value_gets_a_session_reject(fix: FixStack, market: str) -> None:
    c = fix.session(funded(fix))
    send_order(c, "bad", market, "buy", "0.0100", "50000.00", ord_type="Z")
    check(c.admin.get(timeout=REPLY_TIMEOUT), {35: "3", 371: "40", 373: "5"})
    place(c, "good", market, "buy", "0.0100", "50000.00")


BAD_ORDERS = {
    # name: (send_order keyword arguments, OrdRejReason or None, text fragment)
    "negative qty": ({"qty": "-0.0100", "price": "50000.00"}, "13", "positive"),
    "zero qty": ({"qty": "0", "price": "50000.00"}, "13", "positive"),
    "unknown symbol": (
        {"qty": "0.0100", "price": "50000.00", "market": "NOPE-USD"},
        "1",
        "NOPE-USD",
    ),  # fmt: skip
    "pegged order type": (
        {"qty": "0.0100", "price": "50000.00", "ord_type": "P"},
        None,
        "OrdType",
    ),  # fmt: skip
    "off-tick price": ({"qty": "0.0100", "price": "50000.005"}, None, "multiple of 0.01"),
    "off-lot qty": ({"qty": "0.00005", "price": "50000.00"}, "13", "multiple of 0.0001"),
    "negative price": ({"qty": "0.0100", "price": "-1.00"}, None, "positive"),
    "limit without price": ({"qty": "0.0100", "ord_type": "2"}, None, "Price(44)"),
    "market with price": (
        {"qty": "0.0100", "price": "50000.00", "ord_type": "1"},
        None,
        "no Price",
    ),  # fmt: skip
    "unsupported tif": (
        {"qty": "0.0100", "price": "50000.00", "tif": "6"},
        None,
        "TimeInForce",
    ),  # fmt: skip
    "insufficient funds": ({"qty": "10.0000", "price": "50000.00"}, "3", ""),
}


@pytest.mark.parametrize("case", list(BAD_ORDERS))
def test_bad_new_order_is_rejected_and_the_session_stays_up(
    fix: FixStack, market: str, case: str
) -> None:
    kw, ord_rej, text = BAD_ORDERS[case]
    kw = dict(kw)
    t = funded(fix, USD="1000", BTC="1")
    c = fix.session(t)
    send_order(c, "bad", kw.pop("market", market), "buy", **kw)
    rej = er(c, "bad")
    check(rej, {150: "8", 39: "8", 14: "0", 151: "0"})
    if ord_rej:
        check(rej, {103: ord_rej})
    assert text in (rej.get(58) or ""), rej
    assert fix.balances(t) == {"USD": (D(1000), D(0)), "BTC": (D(1), D(0))}
    assert c.logged_on.is_set()
    place(c, "good", market, "buy", "0.0100", "50000.00")


def test_duplicate_clordid_among_open_orders_is_rejected(fix: FixStack, market: str) -> None:
    c = fix.session(funded(fix))
    oid = place(c, "dup", market, "buy", "0.0100", "40000.00").get(37)
    send_order(c, "dup", market, "buy", "0.0100", "40000.00")
    rej = c.expect(lambda m: m.get(11) == "dup" and m.get(150) == "8", REPLY_TIMEOUT)
    check(rej, {39: "8", 103: "6"})
    check(status(c, "dup", market, "buy"), {37: oid, 39: "0"})
    cancel(c, "x", "dup", market, "buy")
    er(c, "x", "4")
    place(c, "dup", market, "buy", "0.0100", "40000.00")  # free again once closed


def test_cancel_of_another_accounts_order_is_rejected(fix: FixStack, market: str) -> None:
    owner, other = funded(fix), funded(fix)
    co, cx = fix.session(owner), fix.session(other)
    oid = place(co, "o1", market, "sell", "0.0100", "50000.00").get(37)
    cancel(cx, "c1", "o1", market, "sell", order_id=oid)
    rej = cx.expect(lambda m: m.get(35) == "9" and m.get(11) == "c1", REPLY_TIMEOUT)
    check(rej, {434: "1", 102: "1"})
    replace(cx, "r1", "o1", market, "sell", "0.0050", "50000.00")
    cx.send("G", [(11, "r2"), (41, "o1"), (37, oid), (55, market), (54, "2"), (60, cx.now()),
                  (40, "2"), (38, "0.0050"), (44, "50000.00")])  # fmt: skip
    for cid in ("r1", "r2"):
        rej = cx.expect(lambda m, cid=cid: m.get(35) == "9" and m.get(11) == cid, REPLY_TIMEOUT)
        check(rej, {434: "2"})
    check(status(co, "o1", market, "sell"), {37: oid, 39: "0", 151: "0.0100", 38: "0.0100"})
    assert received_before_probe(co, market) == []


def test_read_only_key_cannot_trade_but_can_read(fix: FixStack, market: str) -> None:
    t = funded(fix)
    key, secret = fix.store.issue_key(t.account, Permission.READ)
    c = fix.client(t.comps[0], key, secret)
    c.wait_logon(REPLY_TIMEOUT)
    send_order(c, "o1", market, "buy", "0.0100", "40000.00")
    rej = c.expect(lambda m: m.get(35) == "j", REPLY_TIMEOUT)
    check(rej, {372: "D", 380: "6"})
    c.send("x", [(320, "sl"), (559, "4")])
    c.expect(lambda m: m.get(35) == "y", REPLY_TIMEOUT)
    assert fix.balances(t)["USD"] == (D(100000), D(0))


def test_unsupported_message_type_gets_a_business_reject(fix: FixStack) -> None:
    c = fix.session(fix.trader())
    c.send("AF", [(584, "ms1"), (585, "7")])  # OrderMassStatusRequest
    rej = c.expect(lambda m: m.get(35) == "j", REPLY_TIMEOUT)
    check(rej, {372: "AF", 380: "3"})
    assert c.logged_on.is_set()


def test_garbage_before_logon_gets_the_connection_closed(fix: FixStack) -> None:
    raw = RawFix(fix.gateway.port)
    try:
        raw.send_bytes(bytes(range(256)) * 80)  # 20 KB, nothing like a Logon
        assert raw.closed_by_peer() == []
    finally:
        raw.close()


def test_garbage_with_a_checksum_but_no_logon_gets_the_connection_closed(fix: FixStack) -> None:
    """The front door waits at most 10 s for a Logon (gateways/fix/front.py, acceptor.cfg)."""
    raw = RawFix(fix.gateway.port)
    try:
        raw.send_bytes(b"junk that is not FIX\x0110=123\x01")
        assert raw.closed_by_peer(timeout=25) == []
    finally:
        raw.close()


def test_garbled_messages_in_a_session_are_ignored_and_it_stays_up(fix: FixStack) -> None:
    t = fix.trader()
    raw = RawFix(fix.gateway.port, t.comps[0])
    try:
        raw.logon(t.key, t.secret)

        def alive(tag: str) -> None:
            raw.send("1", [(112, tag)])
            raw.expect(lambda m: m.get(35) == "0" and m.get(112) == tag)

        raw.send_bytes(b"\x00\xffnot fix at all\x01\x01===" * 50)
        alive("after-junk")
        good = frame("1", raw.comp, "EXCHANGE", raw.seq, [(112, "bad-sum")])
        wrong = b"001" if good[-4:-1] == b"000" else b"000"
        raw.send_bytes(good[:-4] + wrong + b"\x01")  # not counted: the next one has its number
        alive("after-bad-checksum")
        short = frame("1", raw.comp, "EXCHANGE", raw.seq, [(112, "bad-length")])
        raw.send_bytes(re.sub(rb"\x019=\d+\x01", b"\x019=5\x01", short, count=1))
        alive("after-bad-length")
        raw.send("ZZ", [(112, "x")])  # well framed, unknown MsgType: a session Reject
        check(raw.expect(lambda m: m.get(35) == "3"), {373: "11", 372: "ZZ"})
        alive("after-unknown-type")
    finally:
        raw.close()


# ------------------------------------------------------------------------- slow clients


def test_a_client_that_does_not_read_does_not_stall_other_sessions(
    own_fix_stack: Callable[..., FixStack],
) -> None:
    """docs/design.md rule 7: a slow reader is dropped or held back, never allowed to stall others.

    The hog pipelines FLOOD resting orders and never reads a report. The victim's round trips
    must keep being answered until the flood is through or the gateway holds the hog back
    (its accepted orders stop growing over three victim round trips).
    """
    flood = 20_000
    fix = own_fix_stack()
    market = fix.new_market()
    hog, victim = funded(fix, USD="10000"), funded(fix)
    v = fix.session(victim)
    raw = RawFix(fix.gateway.port, hog.comps[0], rcvbuf=4096)
    try:
        raw.logon(hog.key, hog.secret)
        now = FixClient.now()
        burst = b"".join(
            frame(
                "D",
                raw.comp,
                TARGET,
                raw.seq + i,
                [
                    (11, f"h{i}"),
                    (55, market),
                    (54, "1"),
                    (60, now),
                    (40, "2"),
                    (38, "0.0001"),
                    (44, "1000.00"),
                    (59, "1"),
                ],
            )  # fmt: skip
            for i in range(flood)
        )

        def pour() -> None:
            try:
                raw.send_bytes(burst)
            except OSError:
                pass  # dropped by the gateway, or closed at the end of the test

        threading.Thread(target=pour, daemon=True).start()
        last, still, rounds = -1, 0, 0
        while True:
            rounds += 1
            check(status(v, f"alive-{rounds}", market, "buy"), {39: "8"})
            accepted = int(fix.balances(hog)["USD"][1] / D("0.1"))
            if accepted >= flood:
                break
            still = still + 1 if accepted == last else 0
            if still >= 3:
                break
            last = accepted
    finally:
        raw.close()


def test_orders_past_the_accounts_rate_limit_are_rejected_and_sessions_stay_up(
    own_fix_stack: Callable[..., FixStack],
) -> None:
    """A burst of 5 order messages per account, refilled at one per 1,000 s (so timing cannot
    matter): the first five of twelve are accepted, the rest get a rate-limit reject; the
    account's second session shares the bucket; reads still answer; nothing else was placed."""
    fix = own_fix_stack(order_burst=5, orders_per_second=0.001)
    market = fix.new_market()
    t = funded(fix, USD="10000")
    c = fix.session(t)
    for i in range(12):
        send_order(c, f"r{i}", market, "buy", "0.0100", "40000.00")
    reports = [er(c, f"r{i}") for i in range(12)]
    assert [m.get(150) for m in reports] == ["0"] * 5 + ["8"] * 7, reports
    for m in reports[5:]:
        check(m, {39: "8", 103: "99"})
        assert "rate limited; retry after" in (m.get(58) or ""), m
    other = fix.session(t, 1)  # the same account's other session: the same bucket
    send_order(other, "o1", market, "buy", "0.0100", "40000.00")
    assert "rate limited" in (er(other, "o1", "8").get(58) or "")
    cancel(c, "c1", "r0", market, "buy")  # cancels are order messages too
    rej = c.expect(lambda m: m.get(35) == "9" and m.get(11) == "c1", REPLY_TIMEOUT)
    assert "rate limited" in (rej.get(58) or ""), rej
    check(status(c, "r4", market, "buy"), {39: "0"})  # reads have their own, larger bucket
    assert c.logged_on.is_set() and other.logged_on.is_set()
    assert fix.balances(t)["USD"] == (D(10000) - 5 * D(400), 5 * D(400))
    someone_else = fix.session(funded(fix))  # other accounts are not held back
    place(someone_else, "free", market, "buy", "0.0100", "40000.00")


def test_fix_over_tls_trades_and_a_plain_tcp_logon_gets_nothing(
    own_fix_stack: Callable[..., FixStack], tmp_path: Path
) -> None:
    """With tls_cert set the public port speaks only TLS (the secret in Password(554) never
    crosses the wire in clear); the acceptors behind the front door are unchanged. The session
    is written by hand over Python's ssl: the quickfix on PyPI is built without SSL, so its
    initiator cannot speak TLS (which is why the gateway terminates TLS itself)."""
    cert, key = make_cert(tmp_path / "tls")
    fix = own_fix_stack(tls_cert=str(cert), tls_key=str(key))
    assert "over TLS" in fix.gateway.log()
    market = fix.new_market()
    t = funded(fix, USD="1000")
    raw = RawFix(fix.gateway.port, t.comps[0], tls=client_tls(cert))
    try:
        assert raw.logon(t.key, t.secret).get(35) == "A"
        raw.send("D", [(11, "t1"), (55, market), (54, "1"), (60, FixClient.now()), (40, "2"),
                       (38, "0.0100"), (44, "30000.00"), (59, "1")])  # fmt: skip
        new = raw.expect(lambda m: m.get(35) == "8" and m.get(11) == "t1")
        check(new, {150: "0", 39: "0", 38: "0.0100"})
    finally:
        raw.close()
    assert fix.balances(t)["USD"] == (D(700), D(300))
    plain = RawFix(fix.gateway.port, t.comps[1])
    try:
        plain.send("A", [(98, "0"), (108, "30"), (141, "Y"), (553, t.key), (554, t.secret)])
        assert plain.closed_by_peer() == []
    finally:
        plain.close()


# ----------------------------------------------------------- in doubt (issue 10, item 1)


def test_orders_and_cancels_sent_to_a_paused_engine_are_pending_then_get_the_truth(
    own_fix_stack: Callable[..., FixStack],
) -> None:
    """SIGSTOP of the engine while a session sends orders, cancels and a replace: nothing that
    may have reached the engine gets a reject. Each gets its Pending report (New A, Cancel 6,
    Replace E), then, once the engine runs again, its real outcome, which matches the engine's
    own open orders: New for an order that lives, Rejected with the reason for one the engine
    refused (its deadline passed while it was stopped), Canceled or an OrderCancelReject with
    the order's real OrdStatus for a cancel. Only what provably never left the gateway (the
    engine already known away) is rejected at once, and that order does not exist."""
    fix = own_fix_stack(engine_timeout=1.0)
    market = fix.new_market()
    t = funded(fix, USD="100000")
    c = fix.session(t)
    keep = [f"k{i}" for i in range(4)]
    oids = {k: place(c, k, market, "buy", "1.0000", "1.00").get(37) for k in keep}
    orders = [f"d{i}" for i in range(10)]
    cancels = {f"x{i}": k for i, k in enumerate(keep[:3])}
    os.kill(fix.engine.pid, signal.SIGSTOP)
    try:
        for cid in orders:
            send_order(c, cid, market, "buy", "1.0000", "2.00")
        for cid, k in cancels.items():
            cancel(c, cid, k, market, "buy")
        replace(c, "r1", keep[3], market, "buy", "1.0000", "3.00")
        first_seen = {cid: c.expect(lambda m, cid=cid: m.get(11) == cid, REPLY_TIMEOUT * 3)
                      for cid in [*orders, *cancels, "r1"]}  # fmt: skip
    finally:
        os.kill(fix.engine.pid, signal.SIGCONT)
    pending = {cid for cid, m in first_seen.items() if m.get(150) in ("A", "6", "E")}
    refused = set(first_seen) - pending  # only "engine unavailable": provably never sent
    for cid in refused:
        assert "engine unavailable" in (first_seen[cid].get(58) or ""), first_seen[cid]
    assert pending & set(orders), first_seen
    for cid in pending:
        m = first_seen[cid]
        want = {"d": "A", "x": "6", "r": "E"}[cid[0]]
        check(m, {35: "8", 150: want, 39: want})
        assert "in doubt" in (m.get(58) or ""), m
    for cid in pending & {*cancels, "r1"}:  # the order's quantities as last reported
        check(first_seen[cid], {151: "1.0000", 14: "0", 38: "1.0000", 44: "1.00"})

    final = {
        cid: c.expect(lambda m, cid=cid: m.get(11) == cid, REPLY_TIMEOUT * 3) for cid in pending
    }
    (open_orders,) = fix._engine_call([OpenOrdersRequest(0, t.account)])
    live = {o.client_order_id.partition("|")[2]: o for o in open_orders.orders}
    for cid in pending & set(orders):
        m = final[cid]
        if cid in live:
            check(m, {35: "8", 150: "0", 39: "0", 37: str(live[cid].order_id)})
        else:
            check(m, {35: "8", 150: "8", 39: "8"})
            assert "deadline" in (m.get(58) or "") or "not executed" in (m.get(58) or ""), m
    for cid in refused & set(orders):
        assert cid not in live
    for cid, k in cancels.items():
        if cid not in pending:
            continue
        m = final[cid]
        if k in live:  # did not take effect: a reject with the order's real status
            check(m, {35: "9", 41: k, 37: oids[k], 39: "0", 434: "1"})
        else:
            check(m, {35: "8", 150: "4", 39: "4", 41: k, 37: oids[k]})
    if "r1" in pending:
        m = final["r1"]
        if "r1" in live:
            check(m, {35: "8", 150: "5", 41: keep[3], 44: "3.00"})
        else:
            check(m, {35: "9", 41: keep[3], 39: "0", 434: "2"})
            assert keep[3] in live
    late = received_before_probe(c, market)  # nothing else came: no second answer
    assert not [m for m in late if m.get(11) in pending and m.get(150) == "8"], late


class RecordingGateway(FixGateway):
    """The gateway's FIX mapping without sockets: what it would send is recorded."""

    def __init__(self) -> None:
        super().__init__(load_exchange())
        self.sent: list[FixMsg] = []

    def send(self, comp: str, msg_type: str, fields: Fields, groups: list | None = None) -> None:
        self.sent.append(FixMsg([(35, msg_type), *fields]))

    def doubt(self, req: int, kind: str, f: Fields) -> None:
        self.inflight[req] = Ctx("ME", kind, f, 7)


def order_state(status: int, cid: str = "ME|o1", cum: int = 0) -> OrderState:
    return OrderState(42, cid, 7, "BTC-USD", 1, 1, 1, status, 5_000_000, 100, cum, 100 - cum,
                      0, 0, False, 1, 2)  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "status", "cid", "want"),
    [
        ("D", OrderStatus.NEW, "ME|o1", {35: "8", 150: "0", 39: "0", 37: "42", 11: "o1"}),
        ("D", OrderStatus.FILLED, "ME|o1", {35: "8", 150: "I", 39: "2", 37: "42"}),
        ("F", OrderStatus.CANCELED, "ME|o1", {35: "8", 150: "4", 39: "4", 41: "o1", 11: "c1"}),
        ("F", OrderStatus.FILLED, "ME|o1", {35: "9", 39: "2", 37: "42", 434: "1", 102: "0"}),
        ("G", OrderStatus.NEW, "ME|c1", {35: "8", 150: "5", 39: "0", 41: "o1", 11: "c1"}),
        ("G", OrderStatus.NEW, "ME|o1", {35: "9", 39: "0", 37: "42", 434: "2"}),
    ],
)
def test_a_lost_reply_found_by_the_order_status_tells_whether_the_command_took_effect(
    kind: str, status: int, cid: str, want: dict
) -> None:
    """The engine client resolves a write whose reply was lost with the order as it is now
    (OrderInfo): the gateway turns it into the report the command would have had."""
    gw = RecordingGateway()
    cmd = {
        "D": NewOrder(9, 7, "BTC-USD", 1, 1, 1, 5_000_000, 100, 0, "ME|o1"),
        "F": Cancel(9, 7, "BTC-USD", 0, "ME|o1"),
        "G": Replace(9, 7, "BTC-USD", 0, "ME|o1", "ME|c1", 5_000_000, 100),
    }[kind]
    f = [(11, "o1" if kind == "D" else "c1"), (55, "BTC-USD"), (54, "1")]
    gw.doubt(9, kind, f + ([(41, "o1")] if kind != "D" else []))
    gw.on_resolved(cmd, OrderInfo(9, order_state(status, cid, 100 if status == 3 else 0)))
    (msg,) = gw.sent
    check(msg, want)
    assert not gw.inflight


def test_an_outcome_that_cannot_be_learned_is_said_so_and_never_a_reject() -> None:
    gw = RecordingGateway()
    gw.doubt(9, "D", [(11, "o1"), (55, "BTC-USD"), (54, "1"), (38, "0.0100")])
    gw.on_resolved(NewOrder(9, 7, "BTC-USD", 1, 1, 1, 5_000_000, 100, 0, "ME|o1"), None)
    (msg,) = gw.sent
    check(msg, {35: "8", 150: "I", 39: "A", 11: "o1", 151: "0.0100"})
    assert "OrderStatusRequest" in (msg.get(58) or "")
    gw.on_resolved(NewOrder(9, 7, "BTC-USD", 1, 1, 1, 5_000_000, 100, 0, "ME|o1"), None)
    assert len(gw.sent) == 1  # resolved once: the context is gone

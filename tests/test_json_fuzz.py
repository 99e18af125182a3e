"""Fuzz the JSON gateway with seeded random and mutated lines over a real TCP session.

Each fuzz line is followed by a sentinel request on the same connection. The gateway answers a
connection's lines in order (local answers at once, engine answers in the engine's order), so
the lines that arrive before the sentinel's reply are exactly the fuzz line's replies. The
rules checked for every line:

- a non-blank line gets exactly one reply, a well-formed ``{"id", "ok", ...}`` object; an
  error carries a known numeric code and a reason; when the line is a JSON object with a usable
  ``id`` (a string or an integer) the reply echoes it;
- or the gateway closes the session, and then its last line is an error without an id saying
  why (the fuzzer then opens a fresh session and goes on);
- blank lines (only whitespace) are skipped without a reply;
- the gateway process never dies and logs no traceback, and a fresh session works at the end.

Lines come from a seeded ``random.Random`` (``JSON_FUZZ_SEED``, default 20240611): valid
requests of every op, the same with a field dropped, added or replaced by a random JSON value,
byte flips, truncations, insertions (NULs, invalid UTF-8, lone surrogates), random JSON values,
deep nesting, huge and odd numbers, and lines around ``max_line``. Fuzzing stops after
``JSON_FUZZ_LINES`` lines or the time budget, whichever comes first; a failure report names the
seed, the line's index and its bytes so it can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest

from gateways.json_tcp.server import OPS
from protocol.enums import RejectCode
from tests.fixtures_gateway import LineSession, Stack, Trader, async_test, make_stack

SEED = int(os.environ.get("JSON_FUZZ_SEED", "20240611"))
LINES = int(os.environ.get("JSON_FUZZ_LINES", "3000"))
BUDGET_S = 30.0  # logged-on phase; the anonymous phase gets 8 s more
SILENCE_S = 5.0  # no sentinel reply for this long: the line's reply (or the sentinel's) was lost
MAX_SILENT = 4  # lost replies before giving up (each costs SILENCE_S); other failures go on
MAX_LINE = 65_536
CODES = {int(c) for c in RejectCode if c}
HUGE = [2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 10**30, -(10**40), 2**200]
ODD_NUMBERS = [b"1e400", b"-1e400", b"1e-400", b"-0", b"-0.0", b"0.1e1", b"1E+2", b"00", b"1.",
               b"NaN", b"Infinity", b"0x10", b"+1", b".5"]  # fmt: skip
NASTY_TEXT = ["\x00", "a\x00b", "\ud800", "\udfff", "\U0001f600", "\u202e", "\ufeff", "é", "",
              "\\", '"', "\x7f", " " * 70, "x" * 65, "BTC-USD\x00", "0.01\x00"]  # fmt: skip


# --------------------------------------------------------------------------- generation


def templates(market: str) -> list[dict[str, Any]]:
    """One valid request per op (and per shape of place), without ``id``."""
    return [
        {"op": "ping"},
        {"op": "markets"},
        {"op": "stats"},
        {"op": "challenge", "api_key": "k_0123456789abcdef"},
        {"op": "logon", "api_key": "k_0123456789abcdef", "proof": "AAAA"},
        {"op": "place", "market": market, "side": "buy", "price": "100.00", "qty": "0.0100"},
        {"op": "place", "market": market, "side": "sell", "type": "limit", "price": "100.50",
         "qty": "0.0100", "tif": "GTC", "client_order_id": "c1", "post_only": True,
         "stp": "cancel_both"},
        {"op": "place", "market": market, "side": "buy", "type": "market", "quote_qty": "10.00"},
        {"op": "place", "market": market, "side": "sell", "type": "market", "qty": "0.0010",
         "tif": "FOK"},
        {"op": "place", "market": market, "side": "sell", "price": "101.00", "qty": "0.0100",
         "display_qty": "0.0010"},
        {"op": "place", "market": market, "side": "sell", "type": "market", "qty": "0.0010",
         "trigger": "stop_loss", "trailing_bps": 100},
        {"op": "place", "market": market, "side": "buy", "price": "99.00", "qty": "0.0010",
         "trigger": "take_profit", "stop_price": "98.00", "trailing_bps": 50, "tif": "GTD",
         "expire_ts": 2**62},
        {"op": "place_oco", "market": market, "side": "sell", "qty": "0.0100", "price": "110.00",
         "stop_price": "90.00", "stop_limit_price": "89.00", "limit_client_order_id": "l1",
         "stop_client_order_id": "s1", "stp": "cancel_oldest"},
        {"op": "place_oco", "market": market, "side": "buy", "qty": "0.0100", "price": "90.00",
         "stop_price": "110.00"},
        {"op": "cancel", "market": market, "order_id": 1},
        {"op": "cancel", "client_order_id": "c1"},
        {"op": "replace", "market": market, "order_id": 1, "price": "99.00", "qty": "0.0200",
         "new_client_order_id": "c2"},
        {"op": "cancel_all", "market": market},
        {"op": "order", "order_id": 1},
        {"op": "open_orders"},
        {"op": "balances"},
        {"op": "fills", "market": market, "limit": 5},
        {"op": "history", "market": market, "limit": 5},
        {"op": "quote", "market": market, "side": "sell", "qty": "0.0100"},
        {"op": "deposit", "account": 1, "asset": "USD", "amount": "1.00"},
        {"op": "withdraw", "account": 1, "asset": "USD", "amount": "1.00"},
    ]  # fmt: skip


def test_the_templates_cover_every_op_the_gateway_decodes() -> None:
    """A new op must be fuzzed too: every tag of the gateway's request union has a template,
    and every template's op is one of them."""
    ops = {t["op"] for t in templates("P00-USD")}
    assert ops == set(OPS)


class Fuzzer:
    def __init__(self, seed: int, market: str) -> None:
        self.rng = random.Random(seed)
        self.templates = templates(market)
        self.strategies: list[tuple[Callable[[], bytes], int]] = [
            (self.valid, 8), (self.field_value, 16), (self.extra_field, 5),
            (self.drop_field, 5), (self.byte_flips, 12), (self.truncation, 8),
            (self.insertion, 10), (self.json_value, 8), (self.nesting, 6), (self.numbers, 10),
            (self.text, 8), (self.long_line, 1), (self.blank, 2),
        ]  # fmt: skip
        self.names = [f.__name__ for f, _ in self.strategies]
        self.weights = [w for _, w in self.strategies]

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        while True:
            (i,) = self.rng.choices(range(len(self.strategies)), self.weights)
            line = self.strategies[i][0]()
            yield self.names[i], line.replace(b"\n", b" ")

    # ---------------------------------------------------------------- building blocks
    def request(self) -> dict[str, Any]:
        req = dict(self.rng.choice(self.templates))
        rid: Any = self.rng.choice([self.rng.randint(0, 10**6), f"r{self.rng.randint(0, 999)}",
                                    -1, 0, ""])  # fmt: skip
        return {"id": rid, **req}

    def encode(self, obj: Any) -> bytes:
        ascii_only = self.rng.random() < 0.5
        text = json.dumps(obj, ensure_ascii=ascii_only, allow_nan=True)
        return text.encode("utf-8", errors="surrogatepass")

    def value(self, depth: int = 0) -> Any:
        kind = self.rng.randrange(9 if depth < 3 else 6)
        match kind:
            case 0:
                return None
            case 1:
                return self.rng.random() < 0.5
            case 2:
                return self.rng.choice([0, 1, -1, 7, self.rng.randint(-(10**6), 10**6), *HUGE])
            case 3:
                return self.rng.choice([0.0, -0.0, 1.5, 30000.5, 1e308, 5e-324, float("inf")])
            case 4 | 5:
                return self.rng.choice([*NASTY_TEXT, "buy", "sell", "BTC-USD", "1.00", "0.0001",
                                        str(self.rng.randint(0, 10**9))])  # fmt: skip
            case 6:
                return [self.value(depth + 1) for _ in range(self.rng.randrange(4))]
            case _:
                return {self.rng.choice(["id", "op", "x", "", "market"]): self.value(depth + 1)
                        for _ in range(self.rng.randrange(4))}  # fmt: skip

    # ---------------------------------------------------------------------- strategies
    def valid(self) -> bytes:
        return self.encode(self.request())

    def field_value(self) -> bytes:
        req = self.request()
        req[self.rng.choice(list(req))] = self.value()
        return self.encode(req)

    def extra_field(self) -> bytes:
        req = self.request()
        req[self.rng.choice(["x", "ID", "op ", "price", "qty", "\x00"])] = self.value()
        return self.encode(req)

    def drop_field(self) -> bytes:
        req = self.request()
        del req[self.rng.choice(list(req))]
        return self.encode(req)

    def byte_flips(self) -> bytes:
        line = bytearray(self.valid())
        for _ in range(self.rng.randint(1, 6)):
            line[self.rng.randrange(len(line))] ^= 1 << self.rng.randrange(8)
        return bytes(line)

    def truncation(self) -> bytes:
        line = self.valid()
        return line[: self.rng.randrange(len(line))]

    def insertion(self) -> bytes:
        line = self.valid()
        at = self.rng.randrange(len(line) + 1)
        junk = self.rng.choice([b"\x00", b"\xff\xfe", b"\xc3", b"\xed\xa0\x80", b"\\u0000",
                                b"\\ud800", b"\r", b"\t", b",", b"}", b"{", b'"', b"\\",
                                "\U0001f600".encode(), bytes([self.rng.randrange(256)])],
                               )  # fmt: skip
        return line[:at] + junk * self.rng.randint(1, 3) + line[at:]

    def json_value(self) -> bytes:
        return self.encode(self.value())

    def nesting(self) -> bytes:
        depth = self.rng.choice([10, 100, 500, 1000, 3000, 20000])
        open_, close = self.rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        nested = open_ * depth + b"1" + close * depth
        if self.rng.random() < 0.5:
            return nested
        req = self.encode(self.request())
        return req[:-1] + b', "' + self.rng.choice([b"x", b"price", b"id"]) + b'": ' + nested + b"}"

    def numbers(self) -> bytes:
        req = self.request()
        key = self.rng.choice(["id", "order_id", "limit", "account", "price", "qty", "amount"])
        if self.rng.random() < 0.6:
            req[key] = self.rng.choice(HUGE)
            return self.encode(req)
        req[key] = "@@"
        return self.encode(req).replace(b'"@@"', self.rng.choice(ODD_NUMBERS))

    def text(self) -> bytes:
        req = self.request()
        strings = [k for k, v in req.items() if isinstance(v, str)]
        if strings:
            req[self.rng.choice(strings)] = self.rng.choice(NASTY_TEXT) * self.rng.randint(1, 3)
        return self.encode(req)

    def long_line(self) -> bytes:
        size = self.rng.choice([MAX_LINE - 1, MAX_LINE, MAX_LINE + 1, 2 * MAX_LINE])
        head = self.encode(self.request())[:-1] + b', "pad": "'
        return head + b"x" * max(0, size - len(head) - 2) + b'"}'

    def blank(self) -> bytes:
        return self.rng.choice([b"", b" ", b"\t", b"\r", b" \r", b"\x0b\x0c"])


# ---------------------------------------------------------------------------- checking


def blank(line: bytes) -> bool:
    return not line.rstrip(b"\r").strip()


def readable_id(line: bytes) -> tuple[bool, Any]:
    """(True, id) if ``line`` is a JSON object with a string or integer ``id``."""
    if len(line) > MAX_LINE:
        return False, None
    try:
        obj = msgspec.json.decode(line)
    except (ValueError, RecursionError):  # msgspec.DecodeError, UnicodeDecodeError
        return False, None
    if isinstance(obj, dict):
        rid = obj.get("id")
        if isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)):
            return True, rid
    return False, None


def reply_problem(reply: dict, line: bytes) -> str:
    """What is wrong with the one reply to ``line`` ("" if nothing)."""
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool) or "id" not in reply:
        return f"malformed reply {reply!r}"
    if not reply["ok"]:
        err = reply.get("error")
        if not isinstance(err, dict) or err.get("code") not in CODES:
            return f"error without a known code: {reply!r}"
        if not isinstance(err.get("reason"), str) or not err["reason"]:
            return f"error without a reason: {reply!r}"
    has_id, rid = readable_id(line)
    if has_id and reply["id"] != rid:
        return f"reply id {reply['id']!r}, the line's id is {rid!r}"
    return ""


def fail(run: Run, kind: str, strategy: str, where: str, detail: str = "") -> None:
    examples = run.failures.setdefault(f"{kind} [{strategy}]", [])
    examples.append(f"{where}{': ' + detail if detail else ''}")


def exceptions_logged(log: str) -> dict[str, tuple[int, str]]:
    """Exception types named in a log's tracebacks: type -> (count, first message)."""
    out: dict[str, tuple[int, str]] = {}
    for line in log.splitlines():
        m = re.match(r"^([A-Za-z_][\w.]*(?:Error|Exception|Warning)):", line)
        if m:
            n, first = out.get(m.group(1), (0, line))
            out[m.group(1)] = (n + 1, first)
    return out


@dataclass
class Run:
    stack: Stack
    who: Trader | None
    seed: int
    failures: dict[str, list[str]] = field(default_factory=dict)  # kind -> examples
    silent: int = 0
    closes: int = 0
    lines: int = 0
    by_strategy: dict[str, int] = field(default_factory=dict)


async def open_session(run: Run) -> LineSession:
    s = await LineSession.open(run.stack.gateway.port)
    if run.who is not None:
        await s.logon(run.who)
    return s


async def fuzz(run: Run, market: str, count: int, deadline: float) -> None:
    """Send ``count`` fuzz lines, each followed by a sentinel; record every broken rule."""
    s = await open_session(run)
    sentinel_op = b"balances" if run.who is not None else b"ping"  # through the engine if we can
    for i, (strategy, line) in enumerate(Fuzzer(run.seed, market)):
        if i >= count or time.monotonic() > deadline or run.silent >= MAX_SILENT:
            break
        run.lines += 1
        run.by_strategy[strategy] = run.by_strategy.get(strategy, 0) + 1
        sentinel = f"sentinel-{run.seed}-{i}"
        s.writer.write(line + b'\n{"id": "%s", "op": "%s"}\n' % (sentinel.encode(), sentinel_op))
        where = f"seed {run.seed} line {i} ({strategy}) {line[:300]!r}"
        replies: list[dict] = []
        try:
            while True:
                msg = await s.line(timeout=SILENCE_S)
                if msg is None or (msg.get("id") == sentinel and "event" not in msg):
                    break
                if "event" not in msg:
                    replies.append(msg)
        except TimeoutError:
            run.silent += 1
            fail(run, f"no reply to the line or to the next one in {SILENCE_S}s", strategy, where)
            await s.close()
            s = await open_session(run)
            continue
        except (ValueError, msgspec.DecodeError) as e:
            fail(run, "the gateway wrote a line that is not JSON", strategy, where, str(e))
            await s.close()
            s = await open_session(run)
            continue
        if msg is None:  # the gateway closed the session: it must have said why
            run.closes += 1
            if not replies or replies[-1].get("ok") is not False or replies[-1].get("id"):
                fail(run, "session closed without a reason", strategy, where, f"got {replies!r}")
            await s.close()
            s = await open_session(run)
            continue
        expected = 0 if blank(line) else 1
        if len(replies) != expected:
            fail(
                run, f"{len(replies)} replies instead of {expected}", strategy, where, str(replies)
            )
        elif replies and (problem := reply_problem(replies[0], line)):
            fail(run, problem.split(":")[0], strategy, where, problem)
    await s.close()


@pytest.fixture(name="fuzz_stack", scope="module")
def fuzz_stack_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Its own engine and gateway; limits high enough that a sentinel per line is never
    rate limited (rate limiting has its own tests)."""
    stack = make_stack(
        Path(tmp_path_factory.mktemp("fuzz")), orders_per_second=1e6, order_burst=1_000_000,
        requests_per_second=1e6, request_burst=1_000_000,
    )  # fmt: skip
    yield stack
    stack.close()
    print(stack.logs())


@async_test
async def test_fuzzed_lines_each_get_one_reply_and_never_break_the_gateway(
    fuzz_stack: Stack,
) -> None:
    stack = fuzz_stack
    market = stack.new_market()
    who = await stack.funded(USD="1000000", BTC="100")
    log_start = len(stack.gateway.log())
    deadline = time.monotonic() + BUDGET_S
    logged_on = Run(stack, who, SEED)
    await fuzz(logged_on, market, LINES, deadline)
    anonymous = Run(stack, None, SEED + 1)
    await fuzz(anonymous, market, max(200, LINES // 5), time.monotonic() + 8)

    assert stack.gateway.running, f"the gateway died\n{stack.gateway.log()[-3000:]}"
    # A fresh session still works, exactly.
    fresh = await stack.funded(USD="100")
    client = await stack.session(fresh)
    (new,) = await client.request("place", market=market, side="buy", price="10.00",
                                  qty="1.0000")  # fmt: skip
    assert new["status"] == "new"
    rows = {r["asset"]: (r["available"], r["locked"]) for r in await client.request("balances")}
    assert rows["USD"] == ("90.000000", "10.000000")
    assert (await client.request("cancel", order_id=new["order_id"]))[0]["status"] == "canceled"

    failures: dict[str, list[str]] = {}
    for run in (logged_on, anonymous):
        for kind, examples in run.failures.items():
            failures.setdefault(kind, []).extend(examples)
    errors = exceptions_logged(stack.gateway.log()[log_start:])
    summary = (
        f"seed {SEED}: {logged_on.lines} lines logged on, {anonymous.lines} before logon; "
        f"sessions closed by the gateway: {logged_on.closes + anonymous.closes}; "
        f"strategies: {logged_on.by_strategy}"
    )
    print(summary)
    report = [summary]
    for kind, examples in failures.items():
        report.append(f"- {kind}: {len(examples)} lines, e.g.")
        report += [f"    {e[:400]}" for e in examples[:3]]
    if errors:
        report.append("- the gateway's log names these exceptions (count, first one):")
        report += [f"    {n} x {first[:300]}" for n, first in errors.values()]
    assert not failures and not errors, "\n".join(report)
    assert logged_on.lines >= min(LINES, 500), f"too few lines in the time budget: {summary}"

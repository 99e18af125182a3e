"""Market data as the websocket bridge and its HTTP API show it (JSON, decimal strings).

Websocket: the client sends ``{"op": "subscribe"|"unsubscribe", "streams": [...], "id": ..}``
and gets ``{"id": .., "result": [...streams]}`` or ``{"id": .., "error": {"code", "reason"}}``.
Data arrives as ``{"stream": "<name>", "data": {...}}``. Streams: ``trades@MARKET``,
``depth@MARKET``, ``ticker@MARKET``, ``kline_<1m|5m|15m|1h|4h|1d>@MARKET``.
"""

from __future__ import annotations

from typing import Literal

import msgspec

INTERVALS = {
    "1m": 60,
    "5m": 300,
    "15m": 900,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
}


class WsRequest(msgspec.Struct, forbid_unknown_fields=True):
    op: Literal["subscribe", "unsubscribe", "list"]
    streams: list[str] = []
    id: int | str | None = None


class TradeView(msgspec.Struct):
    id: int
    price: str
    qty: str
    side: str  # the taker's side
    ts: int


class DepthView(msgspec.Struct, omit_defaults=True):
    """A diff (``first_seq``..``last_seq``) or, with ``snapshot``, the whole book at ``last_seq``.

    Levels are [price, total qty]; qty "0" removes the level. Apply a diff only if its
    ``first_seq`` is your ``last_seq`` + 1 (same ``epoch``); otherwise take a new snapshot.
    """

    market: str
    epoch: int
    first_seq: int
    last_seq: int
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    snapshot: bool = False


class TickerData(msgspec.Struct):
    market: str
    open: str | None
    high: str | None
    low: str | None
    last: str | None
    volume: str
    quote_volume: str
    change: str | None
    change_pct: str | None
    trades: int
    ts: int


class Kline(msgspec.Struct):
    market: str
    interval: str
    open_time: int  # seconds since the epoch, UTC
    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    trades: int
    closed: bool = False


class StreamMsg(msgspec.Struct):
    stream: str
    data: TradeView | list[TradeView] | DepthView | TickerData | Kline

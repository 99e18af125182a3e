"""ClickHouse through clickhouse-connect: schema migrations, trade inserts, candles, queries.

One code path for both kinds of ClickHouse: ``chdb://<dir>`` opens the embedded chDB engine
in this process (persistent in ``<dir>``), ``http(s)://user:password@host:port/db`` a server.

Schema (chosen for ClickHouse):
- ``trades``: MergeTree ordered by (market, ts, trade_id), ``LowCardinality`` market, exact
  integers for money: price in ticks, quantity in lots, notional in quote minor units, with the
  maker and taker accounts (this table is for the operator's analysts, not the public feed).
- ``markets``: each market's tick, lot and assets as Decimal(38, 18); the ``trades_v`` view
  joins them to show exact Decimal prices and quantities.
- ``candles_1m``: AggregatingMergeTree fed by a materialized view on ``trades``: open/close as
  ``argMin/argMax(price, trade_id)`` states, high/low/volume/count as simple aggregates. Every
  larger interval (5m .. 1d) is the same states merged over bigger buckets at query time.
- ``bbo``: best bid/offer history, for spread analytics.
- ``accounts``: account id -> name and class, copied from the account store.
Migrations are numbered and applied once each, at start, recorded in ``schema_migrations``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

import clickhouse_connect

INTERVAL_SECONDS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "4h": 14400, "1d": 86400}

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "trades, markets, 1m candles",
        [
            """CREATE TABLE IF NOT EXISTS markets (
            market LowCardinality(String), base LowCardinality(String),
            quote LowCardinality(String), tick Decimal(38, 18), lot Decimal(38, 18),
            tick_lot_quote Int64, quote_decimals UInt8, base_decimals UInt8
        ) ENGINE = ReplacingMergeTree ORDER BY market""",
            """CREATE TABLE IF NOT EXISTS trades (
            market LowCardinality(String),
            trade_id UInt64,
            ts DateTime64(9, 'UTC'),
            price_ticks Int64,
            qty_lots Int64,
            quote_units Int64,
            taker_side Enum8('buy' = 1, 'sell' = 2),
            maker_account UInt64,
            taker_account UInt64,
            seq UInt64
        ) ENGINE = MergeTree ORDER BY (market, ts, trade_id)""",
            """CREATE TABLE IF NOT EXISTS candles_1m (
            market LowCardinality(String),
            bucket DateTime('UTC'),
            open AggregateFunction(argMin, Int64, UInt64),
            high SimpleAggregateFunction(max, Int64),
            low SimpleAggregateFunction(min, Int64),
            close AggregateFunction(argMax, Int64, UInt64),
            volume SimpleAggregateFunction(sum, Int128),
            quote_volume SimpleAggregateFunction(sum, Int128),
            trades SimpleAggregateFunction(sum, UInt64)
        ) ENGINE = AggregatingMergeTree ORDER BY (market, bucket)""",
            """CREATE MATERIALIZED VIEW IF NOT EXISTS candles_1m_mv TO candles_1m AS
        SELECT market, toStartOfMinute(ts) AS bucket,
               argMinState(price_ticks, trade_id) AS open, max(price_ticks) AS high,
               min(price_ticks) AS low, argMaxState(price_ticks, trade_id) AS close,
               sum(toInt128(qty_lots)) AS volume, sum(toInt128(quote_units)) AS quote_volume,
               count() AS trades
        FROM trades GROUP BY market, bucket""",
            """CREATE VIEW IF NOT EXISTS trades_v AS
        SELECT t.market AS market, t.trade_id AS trade_id, t.ts AS ts,
               toDecimal128(t.price_ticks, 0) * m.tick AS price,
               toDecimal128(t.qty_lots, 0) * m.lot AS qty,
               toDecimal128(t.quote_units, 0) / pow(10, m.quote_decimals) AS notional,
               t.taker_side AS taker_side, t.maker_account AS maker_account,
               t.taker_account AS taker_account
        FROM trades AS t INNER JOIN markets AS m ON t.market = m.market""",
        ],
    ),
    (
        2,
        "best bid/offer history, accounts",
        [
            """CREATE TABLE IF NOT EXISTS bbo (
            market LowCardinality(String), ts DateTime64(9, 'UTC'),
            bid_ticks Int64, bid_lots Int64, ask_ticks Int64, ask_lots Int64
        ) ENGINE = MergeTree ORDER BY (market, ts)""",
            """CREATE TABLE IF NOT EXISTS accounts (
            account UInt64, name String, class LowCardinality(String)
        ) ENGINE = ReplacingMergeTree ORDER BY account""",
        ],
    ),
    (
        3,
        "trades_v: markets deduplicated, exact Decimal notional",
        [
            "DROP VIEW IF EXISTS trades_v",
            """CREATE VIEW trades_v AS
        SELECT t.market AS market, t.trade_id AS trade_id, t.ts AS ts,
               toDecimal128(t.price_ticks, 0) * m.tick AS price,
               toDecimal128(t.qty_lots, 0) * m.lot AS qty,
               toDecimal128(t.quote_units, 18) / toDecimal128(intExp10(m.quote_decimals), 0)
                   AS notional,
               t.taker_side AS taker_side, t.maker_account AS maker_account,
               t.taker_account AS taker_account
        FROM trades AS t INNER JOIN (SELECT * FROM markets FINAL) AS m ON t.market = m.market""",
        ],
    ),
]

TRADE_COLUMNS = [
    "market",
    "trade_id",
    "ts",
    "price_ticks",
    "qty_lots",
    "quote_units",
    "taker_side",
    "maker_account",
    "taker_account",
    "seq",
]


class QueryError(ValueError):
    """A bad query request (unknown market or interval, inverted range...)."""


@dataclass
class Candle:
    open_time: int  # seconds
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    trades: int


def connect(url: str) -> Any:
    """A clickhouse-connect client for ``chdb://dir`` (embedded) or an http(s) server URL."""
    if url.startswith("chdb://"):
        return clickhouse_connect.get_client(dsn=url)
    return clickhouse_connect.get_client(dsn=url, connect_timeout=3, send_receive_timeout=30)


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = connect(url)

    def migrate(self) -> list[int]:
        """Apply the migrations not applied yet; returns their numbers."""
        self.client.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
            "applied DateTime('UTC')) ENGINE = ReplacingMergeTree ORDER BY version"
        )
        done = {
            r[0] for r in self.client.query("SELECT version FROM schema_migrations").result_rows
        }
        applied = []
        for version, name, statements in MIGRATIONS:
            if version in done:
                continue
            for sql in statements:
                self.client.command(sql)
            self.client.insert(
                "schema_migrations",
                [[version, name, int(time.time())]],
                column_names=["version", "name", "applied"],
            )
            applied.append(version)
        return applied

    def sync_markets(self, ex: Any) -> None:
        from decimal import Decimal

        known = {r[0] for r in self.client.query("SELECT market FROM markets FINAL").result_rows}
        rows = [
            [
                m.symbol,
                m.base,
                m.quote,
                Decimal(m.tick.text),
                Decimal(m.lot.text),
                m.tick_lot_quote,
                m.quote_decimals,
                m.base_decimals,
            ]
            for m in ex.markets.values()
            if m.symbol not in known
        ]
        if not rows:
            return
        self.client.insert(
            "markets",
            rows,
            column_names=[
                "market",
                "base",
                "quote",
                "tick",
                "lot",
                "tick_lot_quote",
                "quote_decimals",
                "base_decimals",
            ],
        )

    def sync_accounts(self, accounts: list[tuple[int, str, str]]) -> None:
        if accounts:
            self.client.insert(
                "accounts", [list(a) for a in accounts], column_names=["account", "name", "class"]
            )

    def last_trade_ids(self) -> dict[str, int]:
        rows = self.client.query("SELECT market, max(trade_id) FROM trades GROUP BY market")
        return {r[0]: int(r[1]) for r in rows.result_rows}

    def insert_trades(self, columns: list[list]) -> None:
        """One INSERT (atomic in MergeTree) of column-oriented rows in TRADE_COLUMNS order."""
        self.client.insert("trades", columns, column_names=TRADE_COLUMNS, column_oriented=True)

    def insert_bbo(self, rows: list[list]) -> None:
        self.client.insert(
            "bbo",
            rows,
            column_names=["market", "ts", "bid_ticks", "bid_lots", "ask_ticks", "ask_lots"],
        )

    def klines(self, market: str, interval: str, start: int, end: int, limit: int) -> list[Candle]:
        """Candles of ``interval`` with start <= open_time < end (seconds), oldest first, the
        newest ``limit`` of them: 1m states merged over the interval's buckets."""
        secs = INTERVAL_SECONDS.get(interval)
        if secs is None:
            raise QueryError(f"unknown interval {interval!r}; intervals: {list(INTERVAL_SECONDS)}")
        if end <= start:
            raise QueryError(f"end ({end}) must be after start ({start})")
        if not 1 <= limit <= 10_000:
            raise QueryError(f"limit must be 1..10000, was {limit}")
        rows = self.client.query(
            """SELECT toUnixTimestamp(toStartOfInterval(bucket, toIntervalSecond({secs:UInt32})))
                      AS t, argMinMerge(open), max(high), min(low), argMaxMerge(close),
                      sum(volume), sum(quote_volume), sum(trades)
               FROM candles_1m
               WHERE market = {market:String} AND bucket >= toDateTime({lo:Int64}, 'UTC')
                     AND bucket < toDateTime({hi:Int64}, 'UTC')
               GROUP BY t HAVING t >= {start:Int64} AND t < {end:Int64}
               ORDER BY t DESC LIMIT {limit:UInt32}""",
            parameters={
                "secs": secs,
                "market": market,
                "lo": start - start % secs,
                "hi": end + (-end) % secs,
                "start": start,
                "end": end,
                "limit": limit,
            },
        ).result_rows
        return [Candle(*(int(v) for v in r)) for r in reversed(rows)]

    def trades_after(
        self, market: str, since_ns: int, after_id: int, limit: int
    ) -> tuple[int, list[list[int]]]:
        """(the market's last trade id, its trades with ``ts > since_ns`` and ``trade_id >
        after_id``, oldest first, at most ``limit``), each row in ``Trade``'s array order:
        trade_id, price, qty, taker_side, ts, seq. For the bridge's 24h seed."""
        if not 1 <= limit <= 100_000:
            raise QueryError(f"limit must be 1..100000, was {limit}")
        params = {"market": market, "since": since_ns, "after": after_id, "limit": limit}
        last = self.client.query(
            "SELECT max(trade_id) FROM trades WHERE market = {market:String}", parameters=params
        ).result_rows
        rows = self.client.query(
            """SELECT trade_id, price_ticks, qty_lots, CAST(taker_side, 'Int8'),
                      toUnixTimestamp64Nano(ts), seq
               FROM trades
               WHERE market = {market:String} AND ts > fromUnixTimestamp64Nano({since:Int64})
                     AND trade_id > {after:UInt64}
               ORDER BY trade_id LIMIT {limit:UInt32}""",
            parameters=params,
        ).result_rows
        return int(last[0][0]) if last else 0, [[int(v) for v in r] for r in rows]

    def sql(self, query: str, limit: int = 10_000) -> tuple[list[str], list[list]]:
        """A read-only query for analysts (the embedded database lives in this process).

        Only one SELECT (or WITH ... SELECT) is accepted; it runs wrapped in a subquery with a
        row limit. (No ``readonly`` setting: chDB applies query settings to its whole session,
        which would then refuse the recorder's own inserts.)
        """
        text = _strip_sql(query)
        if ";" in text or not re.match(r"(?is)^\s*(select|with)\b", text):
            raise QueryError("readonly: only a single SELECT (or WITH ... SELECT) query is allowed")
        result = self.client.query(f"SELECT * FROM ({text}) LIMIT {int(limit)}")  # noqa: S608
        return list(result.column_names), [list(r) for r in result.result_rows]

    def close(self) -> None:
        self.client.close()


def _strip_sql(query: str) -> str:
    """The query without comments and trailing semicolons and whitespace."""
    text = re.sub(r"--[^\n]*|/\*.*?\*/", " ", query, flags=re.S).strip()
    return text.rstrip(";").strip()

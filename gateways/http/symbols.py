"""Binance-style symbols (``BTCUSD``) for the exchange's markets (``BTC-USD``), both ways.

Binance writes a symbol as base + quote with no separator; ccxt splits it again with the
``baseAsset``/``quoteAsset`` of exchangeInfo. Two markets that would concatenate to the same
string (``AB-C`` and ``A-BC``) are a configuration error here, found at start.
"""

from __future__ import annotations

from protocol.config import Exchange, MarketSpec


class SymbolMap:
    def __init__(self, ex: Exchange) -> None:
        self.by_binance: dict[str, MarketSpec] = {}
        self.binance: dict[str, str] = {}  # market -> Binance symbol
        for spec in ex.markets.values():
            name = spec.base + spec.quote
            if name in self.by_binance:
                other = self.by_binance[name].symbol
                raise ValueError(f"markets {other} and {spec.symbol} both read {name!r} on /api/v3")
            self.by_binance[name] = spec
            self.binance[spec.symbol] = name

    def spec(self, symbol: str) -> MarketSpec | None:
        """The market for a Binance symbol (case-insensitive, as stream names are lowercase)."""
        return self.by_binance.get(symbol.upper())

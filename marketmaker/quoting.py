"""The market maker's quoting logic, pure: a book shape, a mid, an inventory and a volatility
in; the wanted levels out. No I/O, no clock; randomness only through the ``random.Random``
passed in (seeded by the caller), so a test gets the same book for the same inputs.

Everything is integers: prices in ticks of the market, sizes in lots, ratios in parts per
million (ppm) of the mid. A ladder per side:

- the centre is the mid shifted against the inventory (long base: shifted down, so the asks
  come nearer and the bids go away: the maker sells), by up to ``skew`` half-spreads;
- the half-spread is ``half_spread_ppm`` plus ``vol_factor`` times the recent volatility,
  capped at ``max_half_spread_ppm``;
- the gap between levels grows with the distance (``gap_growth_ppm`` per level) and each gap
  carries a random factor of the book's ``Shape``, so steps are not uniform;
- sizes grow with the distance (``size_growth_ppm`` per level), carry a random factor of the
  shape, lean with the inventory (long: bigger asks, smaller bids) and are rounded to two
  significant digits of lots, the way people type sizes.

The shape is drawn once and only re-drawn a level at a time (``Shape.redraw``), so the wanted
book is stable from tick to tick and the reconciliation (``plan``) sends few orders.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

PPM = 1_000_000
BUY, SELL = "buy", "sell"


@dataclass(frozen=True)
class QuoteParams:
    levels: int = 15  # per side
    half_spread_ppm: int = 250  # 2.5 bp from the centre to the best quote in a calm market
    vol_factor_ppm: int = 500_000  # + 0.5 x the recent volatility
    max_half_spread_ppm: int = 5_000  # never wider than 50 bp each side
    first_gap_ppm: int = 300  # 3 bp between the first two levels...
    gap_growth_ppm: int = 150_000  # ...and each further gap 15% wider
    size_growth_ppm: int = 250_000  # each level 25% bigger than the first
    jitter_ppm: int = 250_000  # shape factors are drawn in [1 - 0.25, 1 + 0.25]
    skew_ppm: int = 1_000_000  # the centre moves up to 1 half-spread at full inventory
    size_lean_ppm: int = 500_000  # full inventory: one side's sizes x1.5, the other's x0.5
    keep_price_share_ppm: int = 800_000  # a quote within 0.8 of its gap of the wanted price stays
    keep_size_ppm: int = 300_000  # ...if its remaining size is within 30% of the wanted one


@dataclass
class Quote:
    side: str
    level: int  # 0 = best
    price: int  # ticks
    qty: int  # lots
    slack: int = 0  # ticks either side of ``price`` where a resting quote may stay


@dataclass
class Shape:
    """The random factors (ppm around 1) of one market's gaps and sizes, per side and level."""

    gaps: dict[str, list[int]] = field(default_factory=dict)
    sizes: dict[str, list[int]] = field(default_factory=dict)

    @classmethod
    def draw(cls, rng: random.Random, p: QuoteParams) -> Shape:
        shape = cls({BUY: [], SELL: []}, {BUY: [], SELL: []})
        for side in (BUY, SELL):
            shape.gaps[side] = [_factor(rng, p) for _ in range(p.levels)]
            shape.sizes[side] = [_factor(rng, p) for _ in range(p.levels)]
        return shape

    def redraw(self, rng: random.Random, p: QuoteParams) -> None:
        """Re-draw one random level of one side, as a person amends one order now and then."""
        side, level = rng.choice((BUY, SELL)), rng.randrange(p.levels)
        self.gaps[side][level] = _factor(rng, p)
        self.sizes[side][level] = _factor(rng, p)


def _factor(rng: random.Random, p: QuoteParams) -> int:
    return PPM + rng.randint(-p.jitter_ppm, p.jitter_ppm)


def half_spread_ppm(volatility_ppm: int, p: QuoteParams) -> int:
    wide = p.half_spread_ppm + max(0, volatility_ppm) * p.vol_factor_ppm // PPM
    return min(p.max_half_spread_ppm, wide)


def ladder(
    mid: int,
    size_lots: int,
    inventory_ppm: int,
    volatility_ppm: int,
    shape: Shape,
    p: QuoteParams,
    *,
    min_qty: int = 1,
    max_qty: int | None = None,
    max_price: int | None = None,
) -> list[Quote]:
    """The wanted quotes around ``mid`` (ticks): bids best first, then asks best first.

    ``size_lots`` is the first level's size before shape and lean; ``inventory_ppm`` is the
    maker's position in [-PPM, PPM] (PPM: as long base as it wants to be); ``volatility_ppm``
    is the recent volatility (``volatility_ppm()``). Bids are always below asks, prices
    strictly worse level after level, every price in [1, max_price] and size >= ``min_qty``.
    """
    inv = max(-PPM, min(PPM, inventory_ppm))
    half = max(1, mid * half_spread_ppm(volatility_ppm, p) // PPM)
    centre = mid - half * inv * p.skew_ppm // (PPM * PPM)
    best = {BUY: centre - half, SELL: centre + half}  # half >= 1 tick: never crossed
    lean = {SELL: PPM + inv * p.size_lean_ppm // PPM, BUY: PPM - inv * p.size_lean_ppm // PPM}
    out: list[Quote] = []
    for side, sign in ((BUY, -1), (SELL, 1)):
        price = best[side]
        for level in range(p.levels):
            growth = PPM + level * p.gap_growth_ppm
            gap = max(1, mid * p.first_gap_ppm * growth * shape.gaps[side][level] // PPM**3)
            if level:
                price += sign * gap
            growth = PPM + level * p.size_growth_ppm
            size = size_lots * growth * shape.sizes[side][level] * lean[side] // PPM**3
            size = max(min_qty, round_significant(size, 2))
            if max_qty is not None:
                size = min(size, max_qty)
            slack = gap * p.keep_price_share_ppm // PPM if level else 0
            if price < 1 or (max_price is not None and price > max_price):
                break
            out.append(Quote(side, level, price, size, slack))
    return out


def round_significant(n: int, digits: int) -> int:
    """``n`` rounded half up to ``digits`` significant decimal digits (integers only)."""
    if n <= 0:
        return 0
    scale = 10 ** max(0, len(str(n)) - digits)
    return (n + scale // 2) // scale * scale


def volatility_ppm(prices: list[int]) -> int:
    """Recent volatility: the mean absolute move between consecutive trade prices, in ppm of
    the latest price (0 with fewer than two prices)."""
    if len(prices) < 2 or prices[-1] <= 0:
        return 0
    moves = sum(abs(b - a) for a, b in zip(prices, prices[1:], strict=False))
    return moves * PPM // ((len(prices) - 1) * prices[-1])


def inventory_ppm(position_lots: int, limit_lots: int) -> int:
    """A position (lots of base gained since the maker started; negative: sold) as a share of
    the position at which it leans fully, clamped to [-PPM, PPM]."""
    if limit_lots <= 0:
        return 0
    return max(-PPM, min(PPM, position_lots * PPM // limit_lots))


@dataclass
class Action:
    op: str  # "place", "replace", "cancel"
    cid: str
    quote: Quote | None = None


def plan(
    wanted: list[Quote], have: dict[str, tuple[int, int]], cid_of, p: QuoteParams
) -> list[Action]:
    """The fewest orders that turn the resting quotes ``have`` (cid -> (price ticks, remaining
    lots)) into ``wanted``: a quote within its slack of the wanted price, with a remaining size
    within ``keep_size_ppm`` of the wanted one, stays (and keeps its queue position); a quote
    that moved is replaced, a missing one placed, an unwanted one cancelled. ``cid_of(quote)``
    names each quote's slot."""
    actions: list[Action] = []
    keep: set[str] = set()
    for q in wanted:
        cid = cid_of(q)
        keep.add(cid)
        cur = have.get(cid)
        if cur is None:
            actions.append(Action("place", cid, q))
            continue
        price, qty = cur
        near = abs(price - q.price) <= q.slack
        enough = abs(qty - q.qty) * PPM <= q.qty * p.keep_size_ppm
        if not (near and enough):
            actions.append(Action("replace", cid, q))
    actions.extend(Action("cancel", cid) for cid in sorted(have.keys() - keep))
    return actions


def resume_price(
    best_bid: int | None,
    best_ask: int | None,
    last_trade: int | None,
    start: int,
    max_spread_ppm: int = 20_000,
) -> tuple[int, str]:
    """Where to quote after a (re)start, from the market's truth: the book's mid when it has
    both sides; the last trade price when it has not, or when the book's spread is wider than
    ``max_spread_ppm`` (a couple of stray orders, not a market: the last trade, clamped into the
    spread, says more); the configured start when the market never traded. Returns the price
    in ticks and where it came from."""
    if best_bid and best_ask and best_bid < best_ask:
        mid = (best_bid + best_ask) // 2
        wide = (best_ask - best_bid) * PPM > max_spread_ppm * mid
        if not (wide and last_trade):
            return mid, "book mid"
        return min(best_ask - 1, max(best_bid + 1, last_trade)), "last trade (in a wide book)"
    if last_trade:
        return last_trade, "last trade"
    return start, "configured start"

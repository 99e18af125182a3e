"""The requests and order view of the JSON line protocol as this gateway speaks it.

protocol.json_api holds the protocol's shared shapes (the REST gateway builds on them too);
this module extends them with the engine's iceberg, trailing-stop and one-cancels-the-other
orders: ``place`` gains ``display_qty`` and ``trailing_bps``, a new op ``place_oco`` places a
list, and the order view shows ``display_qty``, ``trailing_bps``, ``trail_price`` and
``list_id`` where the engine set them. ``Request`` is the union the gateway decodes.
docs/json-protocol.md is the reference.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union, get_args

import msgspec

from protocol import json_api as J

Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class Place(J.Place, tag="place"):
    # an iceberg: the book shows at most this much of it at a time (a limit GTC/GTD order)
    display_qty: str | None = None
    # a trailing stop (with trigger): its distance from the best last price, in basis points;
    # without stop_price it follows the last price at once, with one from when it is reached
    trailing_bps: Int64 = 0


class PlaceOco(J._Req, tag="place_oco"):
    """One-cancels-the-other: a post-only limit order at ``price`` and a stop-loss at
    ``stop_price`` (a limit at ``stop_limit_price``, else a market order once triggered), one
    side and quantity. A sell needs price > last price > stop_price, a buy the reverse."""

    market: str
    side: J.Side
    qty: str
    price: str
    stop_price: str
    stop_limit_price: str | None = None
    limit_client_order_id: str = ""
    stop_client_order_id: str = ""
    stp: Literal["cancel_newest", "cancel_oldest", "cancel_both"] | None = None


class Order(J.Order, omit_defaults=True):
    display_qty: str | None = None  # an iceberg's visible size
    trailing_bps: int | None = None
    trail_price: str | None = None  # the best last price a following trailing stop keeps
    list_id: int | None = None  # the one-cancels-the-other list (its limit order's id)


class OcoResult(msgspec.Struct):
    """The reply to ``place_oco``: the list's id and both orders' reports, limit first."""

    list_id: int
    reports: list[J.Order]


# protocol.json_api's ops, with this module's place, and place_oco (kept in step with that
# union: an op added there is an op here)
Request: Any = Union[  # noqa: UP007 - a union built at run time, for msgspec
    tuple(Place if t is J.Place else t for t in get_args(J.Request)) + (PlaceOco,)
]

ORDER_OPS = (*J.ORDER_OPS, PlaceOco)

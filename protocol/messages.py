"""Every message that crosses a process boundary, as msgspec Structs encoded as MessagePack.

Shapes, not behaviour. All money is integers: prices in ticks of the market, quantities in lots
of the market, balances and quote amounts in minor units of the asset (see protocol.config for
the scales and protocol.amounts for decimal strings at the human edges).

Wire rules:
- Every frame on the engine's ROUTER/DEALER sockets is a MessagePack array of messages, so one
  frame can carry a whole batch. Messages are tagged arrays (``array_like``): the first element
  is the tag, fields follow in declaration order. New fields are only ever appended, with
  defaults, so older peers keep decoding.
- Tags: 1-99 commands (gateway -> engine), 100-199 replies and events (engine -> gateway),
  200-299 market data (engine PUB).
- Every command carries ``req``, a client-chosen request id echoed by its single reply.
  Execution reports for resting orders that trade later arrive unsolicited with ``req = 0``.
"""

from __future__ import annotations

import msgspec


class _Msg(msgspec.Struct, array_like=True, gc=False, tag_field="kind"):
    pass


# --------------------------------------------------------------------------------- commands


class NewOrder(_Msg, tag=1):
    req: int
    account: int
    market: str
    side: int  # Side
    type: int  # OrderType
    tif: int = 0  # TimeInForce; 0 = GTC for limit, IOC for market
    price: int = 0  # ticks; limit orders only
    qty: int = 0  # lots; 0 only for a market buy by quote_qty
    quote_qty: int = 0  # quote minor units; market buys by amount to spend
    client_order_id: str = ""
    post_only: bool = False
    stp: int = 0  # StpMode
    deadline: int = 0  # engine time (ns since epoch) after which the engine refuses it; 0 = none
    trigger: int = 0  # TriggerKind: a stop order, waiting for the last price to reach stop_price
    stop_price: int = 0  # ticks; stop orders only
    expire_ts: int = 0  # engine time (ns since epoch) a GTD order expires at; tif GTD only
    display_qty: int = 0  # lots; an iceberg shows this much in the book at a time (0 = all)
    trailing_bps: int = 0  # a trailing stop: its distance from the best last price, in bps


class Cancel(_Msg, tag=2):
    req: int
    account: int
    market: str
    order_id: int = 0
    client_order_id: str = ""
    reason: int = 1  # CancelReason: USER, or DISCONNECT for cancel-on-disconnect
    deadline: int = 0  # engine time (ns since epoch) after which the engine refuses it; 0 = none


class Replace(_Msg, tag=3):
    """Cancel-replace. ``qty`` is the new total order quantity (filled part included, as FIX)."""

    req: int
    account: int
    market: str
    order_id: int = 0
    client_order_id: str = ""
    new_client_order_id: str = ""
    price: int = 0
    qty: int = 0
    deadline: int = 0  # engine time (ns since epoch) after which the engine refuses it; 0 = none
    stop_price: int = 0  # a waiting stop order's new stop price (ticks); 0 = keep


class MassCancel(_Msg, tag=4):
    req: int
    account: int
    market: str = ""  # "" = every market
    reason: int = 1  # CancelReason: USER or DISCONNECT
    deadline: int = 0  # engine time (ns since epoch) after which the engine refuses it; 0 = none


class OrderStatusRequest(_Msg, tag=5):
    req: int
    account: int
    market: str
    order_id: int = 0
    client_order_id: str = ""


class OpenOrdersRequest(_Msg, tag=6):
    req: int
    account: int
    market: str = ""


class BalancesRequest(_Msg, tag=7):
    req: int
    account: int


class QuoteRequest(_Msg, tag=8):
    """What a market order would do now: base ``qty`` in lots, or a buy spending ``quote_qty``."""

    req: int
    market: str
    side: int
    qty: int = 0
    quote_qty: int = 0
    account: int = 0  # if set, the walk stops at that account's own orders (cancel-newest)


class Deposit(_Msg, tag=9):
    req: int
    account: int
    asset: str
    amount: int
    ref: str = ""
    deadline: int = 0  # engine time (ns since epoch) after which the engine refuses it; 0 = none


class Withdraw(_Msg, tag=10):
    req: int
    account: int
    asset: str
    amount: int
    ref: str = ""
    deadline: int = 0  # engine time (ns since epoch) after which the engine refuses it; 0 = none


class SnapshotRequest(_Msg, tag=11):
    req: int
    market: str
    depth: int = 0  # levels per side; 0 = the whole book


class Ping(_Msg, tag=12):
    req: int
    mark: int = 0  # echoed in the Pong: the client's last request id sent before this Ping


class Tick(_Msg, tag=18):
    """The engine's clock, journaled like any write: the engine process sends it to itself
    when a good-till-date order's expiry time has passed and no other command came, so expiry
    depends only on the journaled command stream (every write command expires what is due at
    its batch timestamp first; a Tick does nothing else)."""

    req: int


class NewOrderList(_Msg, tag=19):
    """One-cancels-the-other: a post-only limit order and a stop-loss order of one side and
    quantity, placed together. A fill of the limit order, or the stop's trigger, cancels the
    other; cancelling either cancels both. A sell list has its limit above the last price and
    its stop below (a buy list the reverse); both lock the funds once (the larger need).
    ``stop_limit_price`` 0 makes the stop leg a market order once triggered."""

    req: int
    account: int
    market: str
    side: int  # Side
    qty: int  # lots, both legs
    price: int  # ticks: the limit leg
    stop_price: int  # ticks: the stop leg's trigger
    stop_limit_price: int = 0  # ticks: the stop leg's limit once triggered (0 = market)
    client_list_id: str = ""
    limit_client_order_id: str = ""
    stop_client_order_id: str = ""
    stp: int = 0  # StpMode
    deadline: int = 0  # engine time (ns since epoch) after which the engine refuses it


class FillsRequest(_Msg, tag=13):
    """The account's most recent fills (newest last), from the engine's bounded memory."""

    req: int
    account: int
    market: str = ""
    limit: int = 100


class TradesRequest(_Msg, tag=14):
    """Trades of a market with ``trade_id >= from_id`` from the engine's recent-trade memory
    (the recorder fills gaps with it)."""

    req: int
    market: str
    from_id: int
    limit: int = 10_000


class OrderHistoryRequest(_Msg, tag=16):
    """The account's most recently closed orders (newest last), from the engine's bounded
    memory: at most ``[engine] history_kept`` an account, of the newest ``closed_orders_kept``."""

    req: int
    account: int
    market: str = ""
    limit: int = 100


class Watch(_Msg, tag=17):
    """Also send the sender a copy of every execution report and ledger change of ``account``
    that goes to another gateway, unsolicited (``req = 0``): the private streams' drop copy.
    Not journaled and not state: a restarted engine watches nothing (a watcher watches again
    on the new epoch), and an origin the engine cannot reach stops being a watcher."""

    req: int
    account: int
    on: bool = True


class AuditRequest(_Msg, tag=15):
    """The ledger's conservation check and the fee account, computed now (operators)."""

    req: int


Command = (
    NewOrder
    | Cancel
    | Replace
    | MassCancel
    | OrderStatusRequest
    | OpenOrdersRequest
    | BalancesRequest
    | QuoteRequest
    | Deposit
    | Withdraw
    | SnapshotRequest
    | Ping
    | FillsRequest
    | TradesRequest
    | AuditRequest
    | OrderHistoryRequest
    | Watch
    | Tick
    | NewOrderList
)

# Commands that change state: they get a sequence number and go to the journal.
WRITE_COMMANDS = (NewOrder, Cancel, Replace, MassCancel, Deposit, Withdraw, Tick, NewOrderList)


# ------------------------------------------------------------------------ replies and events


class ExecReport(_Msg, tag=100):
    """One state change of one order (FIX ExecutionReport semantics).

    Fees are charged on the asset received: a buyer pays in base, a seller in quote.
    """

    req: int
    account: int
    order_id: int
    client_order_id: str
    market: str
    side: int
    exec_type: int  # ExecType
    status: int  # OrderStatus
    price: int  # limit price in ticks (0 for market orders)
    qty: int  # order quantity in lots (0 for a market buy by quote amount)
    last_px: int = 0  # this fill's price (ticks)
    last_qty: int = 0  # this fill's quantity (lots)
    cum_qty: int = 0
    leaves_qty: int = 0
    cum_quote: int = 0  # quote minor units traded so far (avg price = cum_quote / cum_qty)
    fee: int = 0  # this fill's fee, minor units of the asset received
    liquidity: int = 0  # Liquidity
    trade_id: int = 0
    reason_code: int = 0  # CancelReason for CANCELED/EXPIRED
    seq: int = 0  # global sequence number of the command that caused it
    ts: int = 0  # engine timestamp (ns since epoch) of that command
    quote_qty: int = 0  # for market buys by amount: the amount to spend
    # appended: the order's type (OrderType) and, for a stop order, its TriggerKind and stop
    order_type: int = 0
    trigger: int = 0
    stop_price: int = 0


class Executions(_Msg, tag=101):
    """Reply to NewOrder, Cancel and Replace: what happened to that order in that command."""

    req: int
    reports: list[ExecReport]


class Rejected(_Msg, tag=102):
    req: int
    code: int  # RejectCode
    reason: str
    order_id: int = 0
    client_order_id: str = ""
    seq: int = 0  # set when the rejected command was a journaled write
    status: int = 0  # OrderStatus of the order a cancel/replace named, when it exists


class OrderState(msgspec.Struct, array_like=True, gc=False, omit_defaults=True):
    order_id: int
    client_order_id: str
    account: int
    market: str
    side: int
    type: int
    tif: int
    status: int
    price: int
    qty: int
    cum_qty: int
    leaves_qty: int
    cum_quote: int
    quote_qty: int
    post_only: bool
    created_ts: int
    updated_ts: int
    # appended (omitted when default, so an order without them encodes as it always did)
    trigger: int = 0  # TriggerKind of a stop order (also once triggered)
    stop_price: int = 0
    waiting: bool = False  # a stop order whose stop has not been reached: not in the book
    expire_ts: int = 0  # GTD expiry (engine time, ns)
    display_qty: int = 0  # an iceberg's visible size (lots)
    trailing_bps: int = 0  # a trailing stop's distance
    trail_price: int = 0  # a trailing stop: the best last price it follows (0: not yet active)
    list_id: int = 0  # an order of a one-cancels-the-other list: the list's id


class OrderInfo(_Msg, tag=103):
    req: int
    order: OrderState


class OpenOrders(_Msg, tag=104):
    req: int
    orders: list[OrderState]


class Balance(msgspec.Struct, array_like=True, gc=False):
    asset: str
    available: int
    locked: int


class Balances(_Msg, tag=105):
    req: int
    account: int
    balances: list[Balance]


class QuoteReply(_Msg, tag=106):
    req: int
    market: str
    side: int
    qty: int  # lots that would fill
    quote_qty: int  # quote minor units they would cost / bring
    worst_price: int  # ticks, 0 if nothing would fill
    complete: bool  # the whole request would fill


class BookSnapshot(_Msg, tag=107):
    """The book as of depth-stream sequence ``seq`` of engine run ``epoch``.

    Levels are [price ticks, total lots, order count], best first.
    """

    req: int
    market: str
    epoch: int
    seq: int
    bids: list[tuple[int, int, int]]
    asks: list[tuple[int, int, int]]
    last_trade_id: int = 0


class MassCancelReply(_Msg, tag=108):
    req: int
    count: int
    seq: int = 0


class LedgerReply(_Msg, tag=109):
    """Reply to Deposit and Withdraw: the balance after the change."""

    req: int
    account: int
    asset: str
    available: int
    locked: int
    seq: int


class Pong(_Msg, tag=110):
    req: int
    seq: int  # last global sequence number
    epoch: int
    mark: int = 0  # the Ping's mark: every request up to it has been processed (or never came)


class FillsReply(_Msg, tag=111):
    req: int
    fills: list[ExecReport]


class Trade(msgspec.Struct, array_like=True, gc=False):
    trade_id: int  # contiguous per market, from 1, survives restarts
    price: int
    qty: int
    taker_side: int
    ts: int
    seq: int  # global command sequence number


class TradesReply(_Msg, tag=112):
    req: int
    market: str
    trades: list[Trade]
    oldest_id: int  # the oldest trade id still in memory (0 if none); older ones: the journal
    accounts: list[tuple[int, int]] = []  # (maker, taker) per trade: for the trusted recorder


class AssetAudit(msgspec.Struct, array_like=True, gc=False):
    """One asset, in its minor units: sums over every account at the time of the query, and
    the ledger's running total of deposits minus withdrawals. Rule 3: available + locked ==
    net_deposits."""

    asset: str
    available: int
    locked: int
    net_deposits: int
    fee_available: int  # the fee account's balance
    fee_locked: int


class OrderHistory(_Msg, tag=114):
    req: int
    orders: list[OrderState]  # closed (filled, canceled, expired, rejected), newest last


class Watching(_Msg, tag=115):
    req: int
    account: int
    on: bool  # whether the sender now watches it
    watchers: int  # how many origins watch it now


class AuditReply(_Msg, tag=113):
    req: int
    seq: int  # the state it describes: after this sequence number
    fee_account: int
    accounts: int  # accounts with a balance row
    assets: list[AssetAudit]


Reply = (
    ExecReport
    | Executions
    | Rejected
    | OrderInfo
    | OpenOrders
    | Balances
    | QuoteReply
    | BookSnapshot
    | MassCancelReply
    | LedgerReply
    | Pong
    | FillsReply
    | TradesReply
    | AuditReply
    | OrderHistory
    | Watching
)


# ------------------------------------------------------------------------------ market data


class Trades(_Msg, tag=200):
    market: str
    epoch: int
    seq: int  # per market and stream, contiguous within an epoch
    trades: list[Trade]


class Depth(_Msg, tag=201):
    """L2 changes: new total lots at each price that changed (0 = level gone)."""

    market: str
    epoch: int
    seq: int
    bids: list[tuple[int, int]]
    asks: list[tuple[int, int]]
    ts: int = 0


class Bbo(_Msg, tag=202):
    market: str
    epoch: int
    seq: int
    bid_price: int
    bid_qty: int
    ask_price: int
    ask_qty: int
    ts: int


MarketData = Trades | Depth | Bbo

# ZeroMQ PUB topics: b"<kind>.<market>", so a subscriber can filter by prefix.
TOPIC_TRADES = b"T."
TOPIC_DEPTH = b"D."
TOPIC_BBO = b"B."

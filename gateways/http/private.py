"""The private stream: one user's own orders, fills and balances, live, over a websocket.

``ws://HOST:ws_port/api/v1/stream`` on the gateway's websocket server (the aiohttp app of
gateways/http/streams.py; docs/web.md "The private stream"). The first message
authenticates, with a session token (``{"op": "auth", "token"}``, checked by the web accounts,
gateways/http/web.py) or an API key (``{"op": "auth", "api_key", "timestamp", "signature"}``,
signed like a v1 request over ``timestamp + "GET" + "/api/v1/stream"``, read permission
enough). Then ``{"event": "authenticated", "account_id", "expires"}``, the snapshot
(``balances``, ``orders``) and live events ``{"stream", "data"}``: ``order`` (the /api/v1
order view; a stop order's trigger is an ``order`` event with ``exec_type`` ``triggered`` and
``waiting`` false), ``fill`` (the /api/v1/fills view), ``balances`` (the whole set, after a change).

Where the events come from: the engine sends execution reports to the gateway that placed
the order. Those of this gateway reach it as replies to its own commands (a new order, cancel
or replace: ``Gateway.on_reply``, also for a write that was in doubt and resolved) or
unsolicited (``req = 0``: fills of resting orders, system and mass cancels:
``EngineClient.on_event``). For every account with a live stream this process also *watches*
the account (``M.Watch``, sent before the snapshot requests): the engine then copies to it,
unsolicited and right after each command, the account's reports and ledger changes that go to
other gateways (orders placed over JSON or FIX, deposits and withdrawals), so the stream shows
everything the account does, whichever way it came in. A watch ends with the account's last
stream; a restarted engine (new epoch: ``EngineClient.on_restart``) is asked again for every
account, and a watch the engine did not confirm is asked again by the once-a-second check.
All are taken in the order they came off the engine socket (the unsolicited ones are deferred
by one ``call_soon``, as reply callbacks are), so a stream shows an order's states in the
engine's order. A change of balances is not in a report: the
accounts whose reports arrived in one loop turn get one ``BalancesRequest`` each, and the
answer, the whole set, is pushed. The snapshot's two requests go out at once on
authentication; events that arrive before their answers are already in the snapshot (the
engine answers in order), so ``order`` and ``balances`` events are not sent before it and
``fill`` events wait until it is sent.

Ends: close 4000 for a first message that is not a well-formed auth (or none within 10 s),
4001 with the reason in words when credentials are refused, or later when the token expires
(a new ``{"op": "auth", "token"}`` of the same account extends it), its session signs out,
or the API key is revoked. One timer checks every connection once a second. Later messages
other than a re-auth, and refused re-auths, get ``{"event": "error", "reason"}`` and the
stream goes on. 1013 when the engine cannot answer the snapshot.

Bounded (rule 7): at most ``max_connections``, ``PER_ADDRESS`` of them from one address (one
client cannot hold every slot), each with the fan-out's send-queue limit (a slower reader is
dropped with 1008: feed/fanout.py), client messages of at most 64 KiB, the per-address
request limit on connecting, at most ``EARLY_FILLS`` fills held per connection
while its snapshot is out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import msgspec
from aiohttp import WSMsgType, web

from engine.client import EngineTimeout, EngineUnavailable
from feed.bridge import decode_client
from feed.fanout import Client, Fanout, FanoutMetrics
from feed.frames import StrictWebSocket, ws_frame
from gateways.accounts import Permission
from gateways.http.auth import AuthError
from gateways.http.v1 import order_view, report_view
from gateways.json_tcp import convert
from protocol import messages as M
from protocol.enums import CancelReason
from protocol.enums import RejectCode as R

log = logging.getLogger("gateways.http.private")

PATH = "/api/v1/stream"
PING = 20.0
MAX_MESSAGE = 64 * 1024
AUTH_WAIT = 10.0  # seconds a connection may stay unauthenticated
CHECK = 1.0  # seconds between checks of every connection's credentials
EARLY_FILLS = 1_000
PER_ADDRESS = 64  # open private streams from one client address (one cannot hold every slot)
BAD_FIRST, ENDED, TRY_LATER = 4000, 4001, 1013


class PrivateMetrics(FanoutMetrics):
    authenticated: int = 0
    auth_refused: int = 0
    ended: int = 0  # closed with 4001 after authenticating: expired, signed out, revoked
    events: int = 0  # order / fill / balances events sent
    balance_requests: int = 0


class Auth(msgspec.Struct, forbid_unknown_fields=True):
    op: Literal["auth"]
    token: str | None = None
    api_key: str | None = None
    timestamp: int | None = None
    signature: str | None = None


class Conn:
    __slots__ = (
        "ws",
        "client",
        "born",
        "account",
        "key",
        "principal",
        "expires",
        "snapshot",
        "early",
        "closer",
    )

    def __init__(self, ws: web.WebSocketResponse, client: Client) -> None:
        self.ws = ws
        self.client = client
        self.born = time.monotonic()
        self.account = 0  # 0 until authenticated
        self.key = ""  # the API key it authenticated with, or ""
        self.principal: Any = None  # the session token's principal (web.py), or None
        self.expires: float | None = None  # unix seconds: the token's expiry
        self.snapshot = 0  # snapshot answers still to come
        self.early: list[bytes] = []  # fill frames that wait for the snapshot
        self.closer: asyncio.Task | None = None  # the close under way, once ended

    @property
    def closing(self) -> bool:
        return self.closer is not None


class BadFirst(Exception):
    pass


AUTH = msgspec.json.Decoder(Auth)
ENC = msgspec.json.Encoder()


class PrivateStream:
    def __init__(self, gw: Any, max_connections: int, send_queue_kib: int) -> None:
        self.gw = gw
        self.ex = gw.ex
        self.max_connections = max_connections
        self.send_queue = send_queue_kib * 1024
        self.metrics = PrivateMetrics()
        self.fan = Fanout(self.metrics)
        self.conns: set[Conn] = set()
        self.per_address: dict[str, int] = {}  # open connections per client address
        self.by_account: dict[int, set[Conn]] = {}
        self.dirty: set[int] = set()  # accounts whose balances changed this loop turn
        self.unconfirmed: set[int] = set()  # watched accounts the engine has not confirmed
        self.closes: set[asyncio.Task] = set()
        self.timer: asyncio.TimerHandle | None = None
        gw.engine.on_event = self.on_event
        gw.engine.on_restart = self.on_restart
        gw.on_reply = self.on_reply

    def route(self) -> web.RouteDef:
        return web.get(PATH, self.handler)

    async def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for c in list(self.conns):
            self.end(c, 1001, "server stopping")
        if self.closes:
            await asyncio.wait(list(self.closes), timeout=5.0)

    # --------------------------------------------------------------------- websocket
    async def handler(self, request: web.Request) -> web.StreamResponse:
        if self.gw.address_wait(request.remote or ""):
            self.gw.metrics.rate_limited += 1
            return _refuse(429, R.RATE_LIMITED, "rate limited: too many requests from this address")
        if len(self.conns) >= self.max_connections:
            self.metrics.refused += 1
            return _refuse(503, R.RATE_LIMITED, "too many websocket connections; try again later")
        peer = request.remote or ""
        if self.per_address.get(peer, 0) >= PER_ADDRESS:
            self.metrics.refused += 1
            return _refuse(429, R.RATE_LIMITED, f"at most {PER_ADDRESS} private streams from one "
                           "address")  # fmt: skip
        self.per_address[peer] = self.per_address.get(peer, 0) + 1
        try:
            return await self.serve(request)
        finally:
            left = self.per_address.pop(peer) - 1
            if left:
                self.per_address[peer] = left

    async def serve(self, request: web.Request) -> web.StreamResponse:
        ws = StrictWebSocket(heartbeat=PING, max_msg_size=MAX_MESSAGE)
        await ws.prepare(request)
        c = Conn(ws, Client(ws, request.transport, self.send_queue))  # type: ignore[arg-type]
        self.fan.add(c.client)
        self.conns.add(c)
        self.metrics.connections_total += 1
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(CHECK, self.check)
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR or c.closing:
                    break
                self.on_message(c, msg.data if msg.type == WSMsgType.TEXT else None)
        finally:
            self.forget(c)
        if c.closer is not None:
            await c.closer
        return ws

    def on_message(self, c: Conn, text: str | None) -> None:
        try:
            if text is None:
                raise BadFirst("send JSON in text frames")
            try:
                auth = decode_client(AUTH, text)
            except msgspec.DecodeError as e:
                raise BadFirst(str(e)) from None
            if auth.token is None and (auth.api_key is None or auth.signature is None
                                       or auth.timestamp is None):  # fmt: skip
                raise BadFirst("auth needs a token, or api_key, timestamp and signature")
            self.authenticate(c, auth)
        except BadFirst as e:
            self.metrics.bad_requests += 1
            if not c.account:
                self.end(c, BAD_FIRST, f"bad auth message: {e}")
            else:
                self.error(c, str(e))
        except AuthError as e:
            self.metrics.auth_refused += 1
            if not c.account:
                self.end(c, ENDED, e.message)
            else:
                self.error(c, f"re-auth refused: {e.message}; the stream goes on as it was")

    def authenticate(self, c: Conn, auth: Auth) -> None:
        key, principal, expires = "", None, None
        if auth.token is not None:
            web_ = getattr(self.gw, "web", None)
            if web_ is None:
                raise AuthError("bad_key", "session tokens are not served by this gateway")
            principal = web_.check_token(auth.token)
            if not web_.live(principal):
                raise AuthError("bad_key", "this session has ended: sign in again")
            account, expires = int(principal.account_id), float(principal.expires)
        else:
            ts = str(auth.timestamp)
            payload = f"{ts}GET{PATH}".encode()
            assert auth.api_key is not None and auth.signature is not None
            api_key = self.gw.signer.verify(auth.api_key, payload, auth.signature, ts, None,
                                            once=False)  # fmt: skip
            if not api_key.permission.allows(Permission.READ):
                raise AuthError("permission", "this API key may not read")
            key, account = api_key.key, api_key.account_id
        if c.account and account != c.account:
            raise AuthError("bad_key", f"this stream is account {c.account}'s, not {account}'s")
        first = not c.account
        c.key, c.principal, c.expires = key, principal, expires
        c.account = account
        expires_ms = None if expires is None else int(expires * 1000)
        self.fan.push(c.client, ENC.encode(
            {"event": "authenticated", "account_id": account, "expires": expires_ms}
        ))  # fmt: skip
        if first:
            self.metrics.authenticated += 1
            if account not in self.by_account:
                self.watch(account, True)  # before the snapshot: copies after it are newer
            self.by_account.setdefault(account, set()).add(c)
            self.send_snapshot(c)

    def watch(self, account: int, on: bool) -> None:
        """Ask the engine to copy (or stop copying) ``account``'s events from elsewhere."""
        if on:
            self.unconfirmed.add(account)
        else:
            self.unconfirmed.discard(account)
        fut = self.gw.engine.send(M.Watch(0, account, on))
        if on:
            fut.add_done_callback(lambda f: self.watched(account, f))
        else:
            fut.add_done_callback(_answer)  # its outcome only matters to the log

    def watched(self, account: int, fut: asyncio.Future) -> None:
        if type(_answer(fut)) is M.Watching:
            self.unconfirmed.discard(account)

    def on_restart(self, epoch: int) -> None:
        """A new engine watches nothing: watch every streamed account again."""
        log.info("engine epoch %d: watching %d accounts again", epoch, len(self.by_account))
        for account in self.by_account:
            self.watch(account, True)

    def send_snapshot(self, c: Conn) -> None:
        c.snapshot = 2
        engine = self.gw.engine
        balances = engine.send(M.BalancesRequest(0, c.account))
        orders = engine.send(M.OpenOrdersRequest(0, c.account, ""))
        balances.add_done_callback(lambda f: self.snapshot_part(c, "balances", f))
        orders.add_done_callback(lambda f: self.snapshot_part(c, "orders", f))

    def snapshot_part(self, c: Conn, stream: str, fut: asyncio.Future) -> None:
        if c.closing:
            return
        msg = _answer(fut)
        if msg is None or type(msg) is M.Rejected:
            why = getattr(msg, "reason", None) or "the engine did not answer"
            self.end(c, TRY_LATER, f"snapshot not available ({why}); connect again")
            return
        if type(msg) is M.OpenOrders:  # the v1 view: iceberg, trailing and list fields too
            data: Any = [order_view(self.ex, o) for o in msg.orders]
        else:
            data = convert.result(self.ex, msg)
        self.fan.push(c.client, _event(stream, data))
        c.snapshot -= 1
        if not c.snapshot:
            for frame in c.early:
                self.fan.write(c.client, frame)
            c.early = []

    def error(self, c: Conn, reason: str) -> None:
        self.fan.push(c.client, ENC.encode({"event": "error", "reason": reason}))

    def end(self, c: Conn, code: int, reason: str) -> None:
        """Stop sending to ``c`` at once and close it with ``code`` and ``reason``."""
        if c.closing:
            return
        if code == ENDED and c.account:
            self.metrics.ended += 1
        self.forget(c)
        c.closer = task = asyncio.ensure_future(_close(c.ws, code, reason))
        self.closes.add(task)
        task.add_done_callback(self.closes.discard)

    def forget(self, c: Conn) -> None:
        self.conns.discard(c)
        self.fan.drop(c.client)
        mine = self.by_account.get(c.account)
        if mine is not None:
            mine.discard(c)
            if not mine:
                del self.by_account[c.account]
                self.watch(c.account, False)

    # ----------------------------------------------------------- the once-a-second check
    def check(self) -> None:
        """Every connection: authenticated in time, its token not expired, its session not
        signed out, its API key not revoked (the Signer looks a key up at most once a
        second, so each key costs one lookup here however many streams use it)."""
        self.timer = None
        now, wall = time.monotonic(), time.time()
        keys: dict[str, bool] = {}
        for c in list(self.conns):
            if c.client not in self.fan.clients:
                self.forget(c)  # dropped as too slow: its handler ends it
                continue
            why = self.why_ended(c, now, wall, keys)
            if why is not None:
                self.end(c, *why)
        for account in self.unconfirmed & self.by_account.keys():
            self.watch(account, True)  # not confirmed a second on (engine away): ask again
        if self.conns:
            self.timer = asyncio.get_running_loop().call_later(CHECK, self.check)

    def why_ended(
        self, c: Conn, now: float, wall: float, keys: dict[str, bool]
    ) -> tuple[int, str] | None:
        if not c.account:
            if now - c.born >= AUTH_WAIT:
                return BAD_FIRST, f"no auth message within {AUTH_WAIT:g} s"
        elif c.principal is not None:
            web_ = getattr(self.gw, "web", None)
            if c.expires is not None and wall >= c.expires:
                return ENDED, "token expired: send a refreshed token before it expires"
            if web_ is not None and not web_.live(c.principal):
                return ENDED, "session signed out"
        else:
            live = keys.get(c.key)
            if live is None:
                live = keys[c.key] = self.gw.signer.key(c.key) is not None
            if not live:
                return ENDED, "API key revoked"
        return None

    # -------------------------------------------------------------------------- events
    def on_event(self, msg: Any) -> None:
        """Unsolicited engine messages (EngineClient.on_event): taken after the replies that
        came before them, which resolve futures whose callbacks run via call_soon too."""
        if type(msg) is M.ExecReport:
            if msg.account in self.by_account:
                asyncio.get_running_loop().call_soon(self.report, msg)
        elif type(msg) is M.LedgerReply:  # a watched account's deposit or withdrawal
            if msg.account in self.by_account:
                asyncio.get_running_loop().call_soon(self.changed, msg.account)
        elif type(msg) is M.Rejected:
            log.warning("engine rejected a frame of ours: %s", msg.reason)

    def on_reply(self, cmd: Any, msg: Any) -> None:
        """A successful engine reply to this gateway's own command (Gateway.on_reply)."""
        if type(msg) is M.Executions:
            # An OCO placed, or both its orders cancelled by one cancel: they show their list.
            both = type(cmd) is M.NewOrderList or (
                len(msg.reports) == 2 and msg.reports[1].reason_code == CancelReason.LINKED
            )
            list_id = min(r.order_id for r in msg.reports) if both else 0
            for r in msg.reports:
                if r.account in self.by_account:
                    self.report(r, list_id)

    def report(self, r: M.ExecReport, list_id: int = 0) -> None:
        conns = self.by_account.get(r.account)
        if not conns:
            return
        view = report_view(self.ex, r)  # a trigger too: exec_type triggered
        if list_id:
            view.list_id = list_id
        order = _event("order", view)
        fill = _event("fill", convert.fill_view(self.ex, r)) if r.last_qty else None
        for c in list(conns):
            if c.snapshot:  # its snapshot is newer than this order event
                if fill is not None and len(c.early) < EARLY_FILLS:
                    c.early.append(ws_frame(fill))
                continue
            if fill is not None:
                self.fan.push(c.client, fill)
            self.fan.push(c.client, order)
            self.metrics.events += 1 + (fill is not None)
        self.changed(r.account)

    def changed(self, account: int) -> None:
        """``account``'s balances changed: one request for them at the end of this turn."""
        if not self.dirty:
            asyncio.get_running_loop().call_soon(self.ask_balances)
        self.dirty.add(account)

    def ask_balances(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for account in dirty:
            if account not in self.by_account:
                continue
            self.metrics.balance_requests += 1
            fut = self.gw.engine.send(M.BalancesRequest(0, account))
            fut.add_done_callback(self._balances_cb(account))

    def _balances_cb(self, account: int) -> Callable[[asyncio.Future], None]:
        return lambda fut: self.balances(account, fut)

    def balances(self, account: int, fut: asyncio.Future) -> None:
        msg = _answer(fut)
        if type(msg) is not M.Balances:
            log.info("balances of account %d not refreshed: %r", account, msg)
            return
        frame = b""
        for c in list(self.by_account.get(account, ())):
            if c.snapshot:  # asked before its snapshot: the snapshot is as new
                continue
            frame = frame or ws_frame(_event("balances", convert.result(self.ex, msg)))
            self.fan.write(c.client, frame)
            self.metrics.events += 1


def _event(stream: str, data: Any) -> bytes:
    return ENC.encode({"stream": stream, "data": data})


def _answer(fut: asyncio.Future) -> Any:
    """The reply, or None when the engine was away or did not answer in time."""
    if fut.cancelled():
        return None
    exc = fut.exception()
    if exc is not None:
        if not isinstance(exc, EngineTimeout | EngineUnavailable):
            log.error("private stream request failed: %s", exc)
        return None
    return fut.result()


async def _close(ws: web.WebSocketResponse, code: int, reason: str) -> None:
    words = reason.encode()[:123].decode(errors="ignore").encode()  # a close frame's limit
    try:
        await asyncio.wait_for(ws.close(code=code, message=words), 10.0)
    except (TimeoutError, ConnectionError):
        pass


def _refuse(status: int, code: int, reason: str) -> web.Response:
    return web.json_response({"error": {"code": code, "reason": reason}}, status=status)

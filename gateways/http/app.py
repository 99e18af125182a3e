"""The REST gateway: one process serving ``/api/v1`` (the seeds' routes, gateways/http/v1.py)
and ``/api/v3`` (Binance-compatible, gateways/http/binance.py) over one engine client.

What every route shares lives here: the engine call and what its outcome means for an HTTP
client (docs/design.md rule 4: a write the engine did not answer in time is *in doubt*, 503 with
the order's client id to look it up, never "not done"), authentication (gateways/http/auth.py),
the rate limits (per account, the rule every gateway keeps; per client address), and the
OpenAPI document, built from the same route table and msgspec types the handlers use.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import msgspec

from engine.client import WRITES, EngineClient, EngineTimeout, EngineUnavailable
from gateways.accounts import AccountStore, ApiKey, Permission
from gateways.http.auth import AuthError, Signer
from gateways.http.server import Deferred, HttpServer, Request, Response, Router
from gateways.http.symbols import SymbolMap
from gateways.ratelimit import AccountLimits, KeyedBuckets
from protocol import messages as M
from protocol.config import Exchange
from protocol.enums import RejectCode as R

log = logging.getLogger("gateways.http")

JSON = msgspec.json.Encoder()


class Metrics(msgspec.Struct):
    orders: int = 0
    engine_requests: int = 0
    rejected: int = 0
    in_doubt: int = 0
    resolved: int = 0
    unavailable: int = 0
    auth_failures: int = 0
    rate_limited: int = 0


class Health(msgspec.Struct):
    ok: bool
    engine: bool
    market_data: bool


class Route(msgspec.Struct):
    """One route as the OpenAPI document shows it (gateways/http/openapi.py)."""

    method: str
    path: str
    summary: str
    api: str  # "v1" | "v3"
    auth: str = ""  # "" public, else the Permission needed
    query: Any = None  # msgspec Struct type of the query parameters
    body: Any = None  # msgspec Struct type of the JSON body (v1) or form (v3)
    response: Any = None  # the 200 response type
    status: int = 200  # what a success answers (201 for what creates)


class Api:
    """How one API speaks: its error body, what engine outcomes look like to its clients, how
    it authenticates; ``public`` and ``guarded`` wrap its routes in the same order of checks
    (client address limit, then the key and signature, then the account's limits)."""

    name = ""
    gw: Gateway
    refusals: tuple[type[Exception], ...] = ()  # what its handlers raise to refuse a request

    def refused(self, e: Exception) -> Response:
        raise NotImplementedError

    def authenticate(
        self, req: Request, permission: Permission, orders: bool
    ) -> tuple[ApiKey, Any]:
        """(the key, what a guarded handler takes with it); AuthError or a refusal."""
        raise NotImplementedError

    def public_args(self, req: Request) -> Any:
        """What a public handler takes."""
        return req

    def public(self, fn: Callable[[Any], Any]) -> Callable[[Request], Any]:
        gw = self.gw

        def handler(req: Request) -> Any:
            limited = gw.admit(self, req)
            if limited is not None:
                return limited
            try:
                return fn(self.public_args(req))
            except self.refusals as e:
                return self.refused(e)

        return handler

    def guarded(
        self, permission: Permission, orders: bool, fn: Callable[[ApiKey, Any], Any]
    ) -> Callable[[Request], Any]:
        """A signed route; ``orders``: an order write (the order rate, the replay guard)."""
        gw = self.gw

        def handler(req: Request) -> Any:
            limited = gw.admit(self, req)
            if limited is not None:
                return limited
            try:
                key, arg = self.authenticate(req, permission, orders)
            except AuthError as e:
                return self.auth_error(e)
            except self.refusals as e:
                return self.refused(e)
            limited = gw.admit_account(self, key, orders)
            if limited is not None:
                return limited
            try:
                return fn(key, arg)
            except self.refusals as e:
                return self.refused(e)

        return handler

    def body(self, status: int, code: int, message: str) -> bytes:
        raise NotImplementedError

    def error(
        self, status: int, code: int, message: str, headers: list[tuple[str, str]] | None = None
    ) -> Response:
        return Response(status, self.body(status, code, message), headers)

    def reject(self, msg: M.Rejected, cmd: Any) -> Response:
        raise NotImplementedError

    def auth_error(self, e: AuthError) -> Response:
        raise NotImplementedError

    def limited(self, wait: float, orders: bool) -> Response:
        raise NotImplementedError


class Gateway:
    def __init__(self, ex: Exchange, store: AccountStore, vault: Any, market: Any = None) -> None:
        self.ex = ex
        self.cfg = cfg = ex.http_gateway
        self.store = store
        self.market = market  # feed/market.py MarketData: books, trades, tickers, klines
        self.streams: Any = None  # gateways/http/streams.py BinanceStreams (its depth ids)
        self.on_reply: Callable[[Any, Any], None] | None = None  # (cmd, reply): private.py
        self.symbols = SymbolMap(ex)
        self.metrics = Metrics()
        self.signer = Signer(store, vault, cfg.recv_window_max)
        self.limits = AccountLimits(cfg)
        self.addresses = KeyedBuckets(cfg.address_per_second, cfg.address_burst)
        self.engine = EngineClient.for_exchange(
            ex, cfg.identity, timeout=cfg.engine_timeout, on_resolved=self.on_resolved
        )
        self.router = Router()
        self.routes: list[Route] = []
        self.apis: dict[str, Api] = {}
        from gateways.http import binance, openapi, v1, web  # the route modules register here

        self.apis["v1"] = v1.register(self)
        self.web = web.register(self, self.apis["v1"])  # type: ignore[arg-type]
        self.apis["v3"] = binance.register(self)
        openapi.register(self)
        self.add(Route("GET", "/health", "Healthy: the engine answers, the books are synced",
                       "v1", response=Health), self.health)  # fmt: skip
        self.http = HttpServer(cfg, self.router, self.error_body)

    # ---------------------------------------------------------------- lifecycle
    async def start(self, tls: Any = None) -> None:
        await self.engine.start(wait=None)
        await self.http.start(tls)
        log.info(
            "HTTP gateway listening on %s:%d%s (engine %s as %r)",
            self.cfg.host,
            self.http.port,
            " over TLS" if tls else "",
            self.ex.engine.commands,
            self.cfg.identity,
        )

    async def stop(self) -> None:
        await self.http.stop()
        await self.engine.close()

    def health(self, req: Request) -> Response:
        engine = self.engine.available
        market = self.market is None or self.market.health().ok
        ok = engine and market
        return Response(200 if ok else 503, JSON.encode(Health(ok, engine, market)))

    # ------------------------------------------------------------------- routes
    def add(self, route: Route, handler: Callable[[Request], Any]) -> None:
        self.routes.append(route)
        self.router.add(route.method, route.path, handler)

    def api_of(self, path: str) -> Api:
        return self.apis["v1"] if path.startswith("/api/v1") else self.apis["v3"]

    def error_body(self, status: int, code: int, message: str, path: str) -> bytes:
        return self.api_of(path).body(status, code, message)

    # --------------------------------------------------------------- rate limits
    def address_wait(self, peer: str) -> float:
        return self.addresses.take(peer, time.monotonic())

    def admit(self, api: Api, req: Request) -> Response | None:
        """None if the request is within its client address's limit (checked first, before
        any key is looked up or signature computed)."""
        wait = self.address_wait(req.peer)
        if not wait:
            return None
        self.metrics.rate_limited += 1
        return api.limited(wait, False)

    def admit_account(self, api: Api, key: ApiKey, orders: bool) -> Response | None:
        """None if the request is within its account's limits; then a signed write's
        signature counts as seen (auth.Signer.accept)."""
        wait = self.limits.take(key.account_id, orders, time.monotonic())
        if not wait:
            self.signer.accept()
            return None
        self.signer.pending = None
        self.metrics.rate_limited += 1
        return api.limited(wait, orders)

    # ------------------------------------------------------------- engine calls
    def call(
        self, api: Api, cmd: Any, ok: Callable[[Any], Response], timeout: float | None = None
    ) -> Deferred:
        """Send ``cmd``; the response is ``ok(reply)``, or what its failure means."""
        self.metrics.engine_requests += 1
        fut = self.engine.send(cmd, timeout)
        return Deferred(fut, lambda f: self.outcome(api, cmd, f, ok))

    def outcome(
        self, api: Api, cmd: Any, fut: asyncio.Future, ok: Callable[[Any], Response]
    ) -> Response:
        if fut.cancelled():
            return api.error(503, R.SHUTTING_DOWN, "gateway shutting down")
        exc = fut.exception()
        if exc is None:
            msg = fut.result()
            if type(msg) is M.Rejected:
                self.metrics.rejected += 1
                return api.reject(msg, cmd)
            if self.on_reply is not None:
                self.on_reply(cmd, msg)
            return ok(msg)
        if isinstance(exc, EngineTimeout):
            if type(cmd) in WRITES:
                self.metrics.in_doubt += 1
                return api.in_doubt(cmd)  # type: ignore[attr-defined, no-any-return]
            return api.error(504, R.TIMEOUT, "engine did not answer in time; nothing changed")
        if isinstance(exc, EngineUnavailable):
            self.metrics.unavailable += 1
            return api.error(
                503,
                R.ENGINE_UNAVAILABLE,
                f"engine unavailable ({exc}); nothing was done, try again shortly",
                [("Retry-After", "1")],
            )
        log.error("could not send %s to the engine: %s", type(cmd).__name__, exc)
        return api.error(500, R.INTERNAL, f"not sent to the engine: {exc}")

    def on_resolved(self, cmd: Any, outcome: Any) -> None:
        """An HTTP client told "in doubt" has its answer in the engine (status queries);
        here it is only counted and logged."""
        self.metrics.resolved += 1
        if outcome is not None and self.on_reply is not None:
            self.on_reply(cmd, outcome)
        what = "unknown" if outcome is None else type(outcome).__name__
        log.info("in-doubt %s req %d resolved: %s", type(cmd).__name__, cmd.req, what)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def json(obj: object, status: int = 200) -> Response:
        return Response(status, JSON.encode(obj))


def retry_after(wait: float) -> str:
    return str(max(1, math.ceil(wait)))

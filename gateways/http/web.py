"""Web accounts on the REST gateway (docs/web.md): sign-up, sign-in with an optional TOTP step,
sessions (a short-lived JWT access token and a spent-on-use refresh token), 2FA enrolment, API
keys managed from the browser, ``GET /api/v1/site``, and the dashboard page itself at ``/``.

Passwords are checked in worker threads (argon2id, gateways/users.py), so orders never queue
behind a hash. Sign-in, sign-up and 2FA checks are rate limited per client address and per
email, and an unknown email is answered exactly as a wrong password is, after a hash of the
same cost. Access tokens are checked on every request (signature, expiry) and their session
against the store at most once a second (``SESSION_TTL``): a sign-out in this process ends the
session's tokens at once, one in another process within that second.
"""

from __future__ import annotations

import asyncio
import io
import logging
import mimetypes
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import segno

from feed.bridge import hostname
from gateways.accounts import ApiKey, Permission
from gateways.http import v1
from gateways.http.app import JSON, Gateway, Route
from gateways.http.auth import AuthError
from gateways.http.jwt import Claims, TokenError, Tokens
from gateways.http.server import Request, Response
from gateways.ratelimit import KeyedBuckets
from gateways.users import (
    DUMMY_HASH,
    HASHER,
    Refreshed,
    User,
    UserError,
    Users,
    check_password_rules,
    hash_password,
    normal_email,
    otpauth_uri,
    verify_password,
)
from protocol import messages as M
from protocol.enums import RejectCode as R

log = logging.getLogger("gateways.http.web")

PREFIX = v1.PREFIX
SESSION_TTL = 1.0  # seconds a session's "still signed in" is trusted before asking the store
SESSIONS_KEPT = 100_000  # session liveness answers cached; beyond it the cache starts again
WEB = Path(__file__).resolve().parents[2] / "feed" / "web"
CHART_JS = WEB / "node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js"
PAGE_HEADERS = [
    ("Cache-Control", "no-cache"),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    (
        "Content-Security-Policy",
        "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
        "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'",
    ),
]
Email = Annotated[str, msgspec.Meta(max_length=254, examples=["ann@example.com"])]
Password = Annotated[str, msgspec.Meta(max_length=256)]
Code = Annotated[str, msgspec.Meta(max_length=16, examples=["123456"])]


# ------------------------------------------------------------------------- shapes


class SignupBody(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password


class SigninBody(msgspec.Struct, forbid_unknown_fields=True):
    email: Email
    password: Password
    totp: Code = ""


class RefreshBody(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: Annotated[str, msgspec.Meta(max_length=128)] = ""


class CodeBody(msgspec.Struct, forbid_unknown_fields=True):
    code: Code


class PasswordBody(msgspec.Struct, forbid_unknown_fields=True):
    current_password: Password
    new_password: Password


class PasswordChanged(msgspec.Struct):
    changed: bool
    sessions_ended: int  # the user's other sessions, signed out by the change


class KeyBody(msgspec.Struct, forbid_unknown_fields=True):
    password: Password  # asked again: a stolen access token alone cannot mint a lasting key
    permission: Literal["read", "trade"] = "trade"


class ReauthBody(msgspec.Struct, forbid_unknown_fields=True):
    password: Password  # asked again: a stolen access token alone cannot take 2FA over


class UserView(msgspec.Struct):
    user_id: int
    email: str
    account_id: int
    totp_enabled: bool


class SessionView(msgspec.Struct):
    access_token: str
    token_type: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    user: UserView


class SignedOut(msgspec.Struct):
    signed_out: bool


class Enrolment(msgspec.Struct):
    secret: str
    otpauth_uri: str
    qr_svg: str


class TotpState(msgspec.Struct):
    totp_enabled: bool


class KeyView(msgspec.Struct):
    api_key: str
    permission: str
    created: float
    revoked: bool


class NewKey(msgspec.Struct):
    api_key: str
    secret: str
    permission: str


class RevokedKey(msgspec.Struct):
    api_key: str
    revoked: bool


class Site(msgspec.Struct):
    market_ws: str
    private_ws: str  # "" where the page is watch-only (the bridge serves it too)
    signup: bool
    trade_at: str = ""  # the watch-only page's link to the trading dashboard


@dataclass(frozen=True)
class Principal:
    """Who a valid access token speaks for."""

    user_id: int
    account_id: int
    session_id: str
    expires: float  # unix seconds


# ---------------------------------------------------------------------------- the API


class Web:
    def __init__(self, gw: Gateway, api: v1.V1) -> None:
        self.gw = gw
        self.api = api
        self.cfg = gw.ex.web
        vault = gw.signer.vault
        self.users = Users(gw.store, vault)
        self.tokens = Tokens(self.users.signing_secret()) if vault is not None else None
        self.pool = ThreadPoolExecutor(max(1, self.cfg.hash_threads), "password")
        self.sessions: dict[str, tuple[float, bool]] = {}  # sid -> (checked until, live)
        c = self.cfg  # sign-in, sign-up, 2FA and password tries, per email and per address
        self.by_email = KeyedBuckets(c.signin_per_minute / 60.0, c.signin_burst)
        self.by_address = KeyedBuckets(c.signin_per_minute_address / 60.0, c.signin_burst_address)
        self.signup_funds = dict(self.cfg.signup_funds)
        self.tls = bool(gw.cfg.tls_cert)

    # ------------------------------------------------------------ tokens (others use)
    def check_token(self, token: str) -> Principal:
        """The principal of a valid access token of a live session; AuthError otherwise."""
        if self.tokens is None:
            raise AuthError("bad_key", "web sessions are not enabled on this gateway (no vault)")
        try:
            c = self.tokens.check(token, time.time())
        except TokenError as e:
            raise AuthError("bad_key", str(e)) from None
        p = Principal(c.sub, c.acc, c.sid, float(c.exp))
        if not self.session_live(c.sid):
            raise AuthError("bad_key", "this session has ended: sign in again")
        return p

    def live(self, p: Principal) -> bool:
        return p.expires > time.time() and self.session_live(p.session_id)

    def session_live(self, sid: str) -> bool:
        now = time.monotonic()
        hit = self.sessions.get(sid)
        if hit is None or hit[0] < now:
            s = self.users.session(sid)
            if len(self.sessions) > SESSIONS_KEPT:
                self.sessions.clear()
            hit = (now + SESSION_TTL, s is not None and not s.revoked and s.expires > time.time())
            self.sessions[sid] = hit
        return hit[1]

    def bearer(self, header: str, permission: Permission) -> ApiKey:
        """The ``Authorization: Bearer`` of a /api/v1 route, as the key the routes take: the
        session's account with trade permission."""
        p = self.check_token(_bearer_token(header))
        if not Permission.TRADE.allows(permission):
            raise AuthError("permission", f"a session token cannot use {permission.value} routes")
        self.gw.signer.pending = None
        return _as_key(p)

    # ------------------------------------------------------------------- limits
    def attempt(self, req: Request, email: str = "") -> None:
        """One sign-in (or sign-up, or 2FA) attempt from ``req`` for ``email``; 429 past the
        limits."""
        now = time.monotonic()
        wait = self.by_address.take(req.peer, now)
        if not wait and email:
            wait = self.by_email.take(email, now)
        if wait:
            self.gw.metrics.rate_limited += 1
            raise v1.V1Error(429, R.RATE_LIMITED, f"too many attempts; retry after {wait:.0f}s")

    # ------------------------------------------------------------------- routes
    def guarded(self, fn: Any) -> Any:
        """A route for a signed-in browser: address limit, then the Bearer token."""
        api, gw = self.api, self.gw

        def handler(req: Request) -> Any:
            limited = gw.admit(api, req)
            if limited is not None:
                return limited
            try:
                p = self.check_token(_bearer_token(req.headers.get("authorization", "")))
            except AuthError as e:
                return api.auth_error(e)
            limited = gw.admit_account(api, _as_key(p), False)  # the account's request limit
            if limited is not None:
                return limited
            return self.run(fn(p, req))

        return handler

    def public(self, fn: Any) -> Any:
        """A credential route (sign-up, sign-in, refresh, sign-out): address limit, then only
        from the page's own origin where a browser says where it comes from. A form on another
        site can post text/plain that reads as JSON (and the answer's cookie would stay: a
        sign-in as the attacker); clients without ``Origin`` (curl, bots) are not browsers."""
        api, gw = self.api, self.gw

        def handler(req: Request) -> Any:
            limited = gw.admit(api, req)
            if limited is not None:
                return limited
            if not _same_origin(req):
                return api.error(403, R.NOT_AUTHORIZED, "cross-site request refused: sign in "
                                 "from the exchange's own page")  # fmt: skip
            return self.run(fn(req))

        return handler

    async def run(self, coro: Any) -> Response:
        try:
            return await coro  # type: ignore[no-any-return]
        except v1.V1Error as e:
            return self.api.refused(e)
        except UserError as e:
            return self.api.error(400, R.INVALID_FIELD, str(e))

    def need_tokens(self) -> Tokens:
        if self.tokens is None:
            raise v1.V1Error(503, R.INTERNAL, "web accounts need the vault key (--vault)")
        return self.tokens

    async def hashing(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def session(self, user: User, address: str, status: int = 200) -> Response:
        s, refresh = self.users.open_session(user.id, self.cfg.refresh_ttl, address)
        return self.session_answer(user, s.id, refresh, status)

    def session_answer(self, user: User, sid: str, refresh: str, status: int = 200) -> Response:
        tokens, c = self.need_tokens(), self.cfg
        now = int(time.time())
        access = tokens.issue(Claims(user.id, user.account_id, sid, now, now + c.access_ttl))
        self.sessions[sid] = (time.monotonic() + SESSION_TTL, True)
        view = SessionView(access, "Bearer", c.access_ttl, refresh, c.refresh_ttl, _user(user))
        secure = "; Secure" if self.tls else ""
        cookie = (
            f"refresh_token={refresh}; Max-Age={c.refresh_ttl}; Path={PREFIX}; HttpOnly; "
            f"SameSite=Strict{secure}"
        )
        # and a hint the page can read, holding nothing: "a refresh is worth trying" (so an
        # anonymous visit makes no refresh request that could only fail)
        hint = f"signed_in=1; Max-Age={c.refresh_ttl}; Path=/; SameSite=Strict" + secure
        return Response(status, JSON.encode(view), [("Set-Cookie", cookie), ("Set-Cookie", hint)])

    async def signup(self, req: Request) -> Response:
        if not self.cfg.signup:
            raise v1.V1Error(403, R.NOT_AUTHORIZED, "sign-up is closed on this exchange")
        self.need_tokens()
        b = self.api.decode(req.body, SignupBody)
        email = normal_email(b.email)
        self.attempt(req, email)
        check_password_rules(b.password)
        if self.users.by_email(email) is not None:
            raise v1.V1Error(409, R.ALREADY_EXISTS, "that email is already registered; sign in")
        hashed = await self.hashing(hash_password, b.password)
        try:
            user = self.users.create(email, hashed)
        except UserError as e:
            raise v1.V1Error(409, R.ALREADY_EXISTS, f"{e}; sign in") from None
        log.info("web sign-up: user %d, account %d", user.id, user.account_id)
        await self.fund(user)
        return self.session(user, req.peer, 201)

    async def fund(self, user: User) -> None:
        """Credit ``[web] signup_funds`` (demo configs only); a failure is logged, the account
        stays (an operator can deposit by hand)."""
        for asset, amount in self.signup_funds.items():
            units = self.gw.ex.amount_to_units(asset, amount)
            cmd = M.Deposit(0, user.account_id, asset, units, f"signup:{user.id}:{asset}")
            try:
                reply = await self.gw.engine.send(cmd)
                if type(reply) is M.Rejected:
                    log.warning("sign-up funds %s for %d refused: %s", asset, user.id, reply)
            except Exception as e:
                log.warning("sign-up funds %s for user %d in doubt: %s", asset, user.id, e)

    async def signin(self, req: Request) -> Response:
        self.need_tokens()
        b = self.api.decode(req.body, SigninBody)
        try:
            email = normal_email(b.email)
        except UserError:
            email = ""
        self.attempt(req, email)
        user = self.users.by_email(email) if email else None
        ok = await self.hashing(verify_password, user.password if user else DUMMY_HASH, b.password)
        if user is None or not ok:
            self.gw.metrics.auth_failures += 1
            raise v1.V1Error(401, R.BAD_CREDENTIALS, "wrong email or password")
        if user.totp_enabled:
            if not b.totp:
                raise v1.V1Error(401, R.TOTP_REQUIRED, "a two-factor code is needed (totp)")
            if not self.users.totp_check(user.id, b.totp, time.time()):
                self.gw.metrics.auth_failures += 1
                raise v1.V1Error(401, R.TOTP_REQUIRED, "that two-factor code is not right")
        if HASHER.check_needs_rehash(user.password):
            self.users.set_password_hash(user.id, await self.hashing(hash_password, b.password))
        return self.session(user, req.peer)

    def refresh_token(self, req: Request) -> str:
        b = self.api.decode(req.body, RefreshBody) if req.body else RefreshBody()
        return b.refresh_token or _cookie(req, "refresh_token")

    async def refresh(self, req: Request) -> Response:
        self.need_tokens()
        self.attempt(req)
        token = self.refresh_token(req)
        if not token:
            raise v1.V1Error(401, R.BAD_CREDENTIALS, "no refresh token (body or cookie)")
        try:
            got = self.users.refresh(token, self.cfg.refresh_ttl)
        except Refreshed:
            why = "this session was refreshed a moment ago (another tab): retry with the new token"
            raise v1.V1Error(409, R.ALREADY_EXISTS, why) from None
        user = self.users.get(got[0].user_id) if got else None
        if got is None or user is None:
            raise v1.V1Error(401, R.BAD_CREDENTIALS, "refresh token not valid: sign in again")
        return self.session_answer(user, got[0].id, got[1])

    async def signout(self, req: Request) -> Response:
        sids = set()
        token = self.refresh_token(req)
        sid = self.users.session_of_refresh(token) if token else None
        if sid:
            sids.add(sid)
        auth = req.headers.get("authorization")
        if auth:
            try:
                sids.add(self.check_token(_bearer_token(auth)).session_id)
            except AuthError as e:
                if not sids:  # stale (a laptop asleep): the refresh token alone signs out
                    return self.api.auth_error(e)
        if not sids:
            raise v1.V1Error(401, R.BAD_CREDENTIALS, "no session: give a token or refresh token")
        for sid in sids:
            self.users.revoke_session(sid)
            self.sessions[sid] = (time.monotonic() + SESSION_TTL, False)
        secure = "; Secure" if self.tls else ""
        gone = f"refresh_token=; Max-Age=0; Path={PREFIX}; HttpOnly; SameSite=Strict{secure}"
        hint = f"signed_in=; Max-Age=0; Path=/; SameSite=Strict{secure}"
        return Response(
            200, JSON.encode(SignedOut(True)), [("Set-Cookie", gone), ("Set-Cookie", hint)]
        )

    def user_of(self, p: Principal) -> User:
        user = self.users.get(p.user_id)
        if user is None:
            raise v1.V1Error(401, R.BAD_CREDENTIALS, "no such user")
        return user

    async def me(self, p: Principal, req: Request) -> Response:
        return Gateway.json(_user(self.user_of(p)))

    async def reauth(self, req: Request, user: User, password: str) -> None:
        """The user's password again, for what would outlast a stolen access token."""
        self.attempt(req, user.email)
        if not await self.hashing(verify_password, user.password, password):
            self.gw.metrics.auth_failures += 1  # 403, not 401: the session itself is fine
            raise v1.V1Error(403, R.BAD_CREDENTIALS, "the password is not right")

    async def enroll(self, p: Principal, req: Request) -> Response:
        b = self.api.decode(req.body, ReauthBody)
        user = self.user_of(p)
        await self.reauth(req, user, b.password)
        if user.totp_enabled:
            raise v1.V1Error(409, R.ALREADY_EXISTS, "two-factor sign-in is on; disable it first")
        secret = self.users.totp_begin(user.id)
        uri = otpauth_uri(secret, user.email, self.cfg.totp_issuer)
        out = io.BytesIO()  # a standalone SVG (with its namespace): it works as an <img> source
        segno.make(uri, error="m").save(out, kind="svg", xmldecl=False, scale=5, dark="#000",
                                        light="#fff")  # fmt: skip
        return Gateway.json(Enrolment(secret, uri, out.getvalue().decode()))

    async def confirm(self, p: Principal, req: Request) -> Response:
        b = self.api.decode(req.body, CodeBody)
        user = self.user_of(p)
        self.attempt(req, user.email)
        if not self.users.totp_confirm(user.id, b.code, time.time()):
            raise v1.V1Error(400, R.INVALID_FIELD, "that code is not right (is the phone's clock "
                             "right? each code works once)")  # fmt: skip
        return Gateway.json(TotpState(True))

    async def disable(self, p: Principal, req: Request) -> Response:
        b = self.api.decode(req.body, CodeBody)
        user = self.user_of(p)
        if not user.totp_enabled:
            return Gateway.json(TotpState(False))
        self.attempt(req, user.email)
        if not self.users.totp_check(user.id, b.code, time.time()):
            raise v1.V1Error(400, R.INVALID_FIELD, "that two-factor code is not right")
        self.users.totp_disable(user.id)
        return Gateway.json(TotpState(False))

    async def password(self, p: Principal, req: Request) -> Response:
        """A new password, given the current one; every other session of the user ends (a
        change after a leak must lock the other holder out)."""
        b = self.api.decode(req.body, PasswordBody)
        user = self.user_of(p)
        await self.reauth(req, user, b.current_password)
        check_password_rules(b.new_password)
        self.users.set_password_hash(user.id, await self.hashing(hash_password, b.new_password))
        ended = self.users.end_sessions(user.id, keep=p.session_id)
        self.sessions.clear()  # the ended ones are refused here at once, not in a second
        log.info("web user %d changed their password; %d sessions ended", user.id, ended)
        return Gateway.json(PasswordChanged(True, ended))

    async def keys(self, p: Principal, req: Request) -> Response:
        rows = self.gw.store.key_rows(p.account_id)
        return Gateway.json([KeyView(*row) for row in rows])

    async def new_key(self, p: Principal, req: Request) -> Response:
        b = self.api.decode(req.body, KeyBody)
        await self.reauth(req, self.user_of(p), b.password)
        if self.gw.signer.vault is None:
            raise v1.V1Error(503, R.INTERNAL, "API keys need the vault key (--vault)")
        key, secret = self.gw.store.issue_key(p.account_id, Permission(b.permission),
                                              self.gw.signer.vault)  # fmt: skip
        log.info("web API key %s (%s) for account %d", key, b.permission, p.account_id)
        return Response(201, JSON.encode(NewKey(key, secret, b.permission)))

    async def revoke_key(self, p: Principal, req: Request) -> Response:
        key = req.params["key"]
        mine = {k for k, _, _, revoked in self.gw.store.key_rows(p.account_id)}
        if key not in mine:
            raise v1.V1Error(404, R.UNKNOWN_ORDER, f"no API key {key!r} on this account")
        self.gw.store.revoke_key(key)
        self.gw.signer.cache.pop(key, None)
        return Gateway.json(RevokedKey(key, True))

    # --------------------------------------------------------------- the page
    def site(self, req: Request) -> Response:
        host = hostname(req.headers.get("host", "")) or "127.0.0.1"
        ws = "wss" if self.tls else "ws"
        return Gateway.json(
            Site(
                f"ws://{host}:{self.gw.ex.bridge.port}/ws",
                f"{ws}://{host}:{self.gw.cfg.ws_port}{PREFIX}/stream",
                self.cfg.signup,
            )
        )

    def file(self, path: Path) -> Response:
        try:
            body = path.read_bytes()
        except OSError:
            return self.api.error(404, R.UNKNOWN_MESSAGE, f"no file {path.name}")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if kind.startswith("text/") or kind.endswith("javascript"):
            kind += "; charset=utf-8"
        return Response(200, body, [("Content-Type", kind), *PAGE_HEADERS])

    def index(self, req: Request) -> Response:
        return self.file(WEB / "index.html")

    def static(self, req: Request) -> Response:
        name = req.params["name"]
        if "/" in name or "\\" in name or name.startswith("."):
            return self.api.error(404, R.UNKNOWN_MESSAGE, "no such file")
        return self.file(WEB / "static" / name)

    def chart_js(self, req: Request) -> Response:
        return self.file(CHART_JS)


def _user(u: User) -> UserView:
    return UserView(u.id, u.email, u.account_id, u.totp_enabled)


def _as_key(p: Principal) -> ApiKey:
    """A session as the key the routes and the account limits take: its account, trading."""
    return ApiKey(f"session:{p.session_id}", p.account_id, "", Permission.TRADE, b"", 0, b"")


def _bearer_token(header: str) -> str:
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing", "sign in first: Authorization: Bearer <access token>")
    return token.strip()


def _cookie(req: Request, name: str) -> str:
    for part in req.headers.get("cookie", "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == name:
            return v
    return ""


def _same_origin(req: Request) -> bool:
    """True unless the request says it comes from another origin (``Origin``, which browsers
    send on every cross-origin POST; ``null`` from sandboxes and data: pages)."""
    origin = req.headers.get("origin")
    if origin is None:
        return True
    _, sep, rest = origin.partition("://")
    return bool(sep) and rest.lower() == req.headers.get("host", "").lower()


def register(gw: Gateway, api: v1.V1) -> Web:
    w = Web(gw, api)
    public: list[Any] = [  # method, path, summary, body, response, fn
        ("POST", "signup", "Sign up with an email and a password (signed in at once)",
         SignupBody, SessionView, w.signup),
        ("POST", "signin", "Sign in: a session (access and refresh tokens)", SigninBody,
         SessionView, w.signin),
        ("POST", "token/refresh", "A new session for a refresh token (body or cookie)",
         RefreshBody, SessionView, w.refresh),
        ("POST", "signout", "Sign out: the session's tokens stop working", RefreshBody,
         SignedOut, w.signout),
    ]  # fmt: skip
    for method, path, summary, body, response, fn in public:
        route = Route(method, f"{PREFIX}/{path}", summary, "v1", body=body, response=response,
                      status=201 if path == "signup" else 200)  # fmt: skip
        gw.add(route, w.public(fn))
    session: list[Any] = [  # method, path, summary, body, response, fn
        ("GET", "me", "The signed-in user", None, UserView, w.me),
        ("POST", "2fa/enroll", "Begin two-factor sign-in (the password again): a TOTP secret "
         "and its QR code", ReauthBody, Enrolment, w.enroll),
        ("POST", "2fa/confirm", "Turn two-factor sign-in on with a code from the new secret",
         CodeBody, TotpState, w.confirm),
        ("POST", "2fa/disable", "Turn two-factor sign-in off (needs a current code)", CodeBody,
         TotpState, w.disable),
        ("POST", "password", "Change the password (the other sessions end)", PasswordBody,
         PasswordChanged, w.password),
        ("GET", "api-keys", "The account's API keys", None, list[KeyView], w.keys),
        ("POST", "api-keys", "A new API key (the password again; its secret is shown once)",
         KeyBody, NewKey,
         w.new_key),
        ("DELETE", "api-keys/{key}", "Revoke one of the account's API keys", None, RevokedKey,
         w.revoke_key),
    ]  # fmt: skip
    for method, path, summary, body, response, fn in session:
        route = Route(method, f"{PREFIX}/{path}", summary, "v1", auth="session", body=body,
                      response=response, status=201 if fn == w.new_key else 200)  # fmt: skip
        gw.add(route, w.guarded(fn))
    gw.add(Route("GET", f"{PREFIX}/site", "Where the dashboard finds its streams", "v1",
                 response=Site), api.public(w.site))  # fmt: skip
    page: list[Any] = [("/", w.index), ("/static/{name}", w.static),
                       ("/vendor/lightweight-charts.js", w.chart_js)]  # fmt: skip
    for path, page_fn in page:
        gw.router.add("GET", path, page_fn)  # the page: not in the API document
    return w

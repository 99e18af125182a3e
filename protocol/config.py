"""The exchange's configuration: assets, markets and endpoints, from TOML, typed by msgspec.

Scales (docs/design.md rule 1):
- an asset has ``decimals``; balances are integers of its minor unit (BTC 8 -> satoshi);
- a market has a price ``tick`` (quote per one whole base) and a ``lot`` (base quantity);
  orders carry prices as whole ticks and quantities as whole lots;
- the quote value of one tick times one lot must be a whole number of quote minor units and
  a lot a whole number of base minor units, so every notional is exact. A config that breaks
  this fails at start with a message naming the market and the field.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import msgspec

from protocol.amounts import MAX_INT, AmountError, Step, from_steps, ratio_ppm, to_steps, units_step

DEFAULT_CONFIG = Path(__file__).with_name("default.toml")


class ConfigError(ValueError):
    pass


class AssetConfig(msgspec.Struct, forbid_unknown_fields=True):
    decimals: int


class MarketConfig(msgspec.Struct, forbid_unknown_fields=True):
    base: str
    quote: str
    tick: str
    lot: str
    min_qty: str
    max_qty: str
    max_price: str
    maker_fee: str = "0"
    taker_fee: str = "0"


class EngineConfig(msgspec.Struct, forbid_unknown_fields=True):
    commands: str = "tcp://127.0.0.1:7001"
    market_data: str = "tcp://127.0.0.1:7002"
    data_dir: str = "var/engine"
    snapshot_every: int = 1_000_000
    fsync: str = "none"  # "none": write() per batch (survives a process crash); "batch": fsync
    batch_max: int = 4096
    cpu: int = -1  # core to pin to; -1 = leave unpinned
    fee_account: int = 0
    pub_hwm: int = 100_000
    router_hwm: int = 100_000
    # bounded memories (not part of the state; each costs memory touched per command, see README)
    closed_orders_kept: int = 200_000  # newest closed orders answered by status queries
    fills_kept: int = 1_000  # newest fills per account answered by fills queries
    history_kept: int = 1_000  # newest closed orders per account answered by history queries
    recent_trades_kept: int = 200_000  # per market, for the recorder's exactly-once pull
    # CURVE key directory (engine/curve.py): "" = off, loopback only; set = both ports encrypted
    # and open only to the client keys in DIR/clients (required for a non-loopback address)
    curve_keys: str = ""


class ReplicationConfig(msgspec.Struct, forbid_unknown_fields=True):
    """``[replication]``: off while ``servers`` is empty (one engine, its local journal)."""

    servers: list[str] = []  # NATS URLs of the cluster (any of them will do)
    # Every engine's commands and market-data endpoints (the primary's and the standbys'):
    # clients connect to all of them and talk to the one that serves (a standby binds its
    # ports only when it takes over). Empty: [engine] commands / market_data alone.
    engines: list[str] = []
    market_data: list[str] = []
    node: str = "engine-a"  # this engine's name in the lease (unique per engine)
    stream: str = "EXCHANGE_JOURNAL"
    subject: str = "exchange.journal"
    replicas: int = 3
    bucket: str = "EXCHANGE_LEADER"  # the lease
    lease: float = 2.0  # seconds without a refresh after which a standby takes over
    heartbeat: float = 0.4  # seconds between lease refreshes (and standby looks)
    publish_timeout: float = 1.0  # one publish attempt; retried until it lands
    in_flight: int = 4  # appends out at once (each expecting the one before it to land)
    max_pending: int = 10_000  # batches waiting for the stream before the engine stops reading
    tls_ca: str = ""  # CA file for nats:// servers behind TLS ("" = plain)
    purge: bool = True  # upload each snapshot and purge the log behind the one before it


class AccountsConfig(msgspec.Struct, forbid_unknown_fields=True):
    path: str = "var/accounts.db"  # the SQLite account store every gateway shares
    # The key file that seals API secrets (gateways/vault.py), kept apart from the database; the
    # environment variable EXCHANGE_VAULT_KEY (base64 of the key file's content) overrides it.
    vault_key: str = "var/vault.key"


class JsonGatewayConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 7010
    identity: str = "json-gw-1"  # routing id towards the engine; must be unique per gateway
    max_line: int = 65_536  # bytes per request line
    orders_per_second: float = 500.0  # per account: place, cancel, replace, cancel_all
    order_burst: int = 1_000
    requests_per_second: float = 1_000.0  # per account: everything
    request_burst: int = 2_000
    max_in_flight: int = 5_000  # per connection; beyond it the connection is cut (flood)
    max_write_buffer: int = 8 * 1024 * 1024  # per connection; beyond it: slow consumer, cut
    max_connections: int = 10_000
    engine_timeout: float = 5.0
    tls_cert: str = ""  # PEM certificate chain: "" = plain TCP; set = TLS 1.2+ only
    tls_key: str = ""  # PEM private key (may be in tls_cert)


class HttpGatewayConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8070  # REST: /api/v1 (the seeds' routes), /api/v3 (Binance-compatible)
    ws_port: int = 8071  # Binance-compatible websocket streams (/ws/<n>, /stream)
    identity: str = "http-gw-1"  # routing id towards the engine
    max_body: int = 65_536  # bytes of one request body; bigger: 413
    max_header: int = 16_384  # bytes of request line + headers; bigger: 431
    idle_timeout: float = 60.0  # seconds a keep-alive connection may sit idle
    header_timeout: float = 10.0  # seconds to send a whole request once begun (slow clients)
    max_pipeline: int = 256  # requests queued unanswered per connection; beyond it reading pauses
    max_connections: int = 10_000
    orders_per_second: float = 500.0  # per account (shared rule of every gateway)
    order_burst: int = 1_000
    requests_per_second: float = 1_000.0  # per account
    request_burst: int = 2_000
    address_per_second: float = 2_000.0  # per client address, signed or not
    address_burst: int = 4_000
    recv_window_max: int = 60_000  # ms; Binance's own ceiling for recvWindow
    engine_timeout: float = 5.0
    tls_cert: str = ""  # PEM certificate chain: "" = plain HTTP (loopback); set = HTTPS only
    tls_key: str = ""  # its PEM private key


class WebConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Web accounts (docs/web.md): sign-up, sign-in, sessions, 2FA; served by the HTTP gateway."""

    signup: bool = True  # POST /api/v1/signup open to anyone
    signup_funds: dict[str, str] = {}  # asset -> decimal amount credited to a new web account
    access_ttl: int = 900  # seconds an access token (JWT) is valid
    refresh_ttl: int = 2_592_000  # seconds a refresh token is valid (30 days)
    signin_per_minute: float = 5.0  # sign-in (and 2FA) attempts per email
    signin_burst: int = 10
    signin_per_minute_address: float = 30.0  # sign-in / sign-up attempts per client address
    signin_burst_address: int = 60
    totp_issuer: str = "Exchange"  # the name a phone app shows for the 2FA entry
    hash_threads: int = 2  # worker threads for password hashing (argon2id)


class FixGatewayConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 9878  # the one public FIX port (a front door routes each CompID's session)
    sender_comp_id: str = "EXCHANGE"  # our CompID; clients' SenderCompIDs come from the store
    identity: str = "fix-gw-1"  # routing id towards the engine
    data_dir: str = "var/fix"  # quickfix message stores (sequence numbers, resends) and logs
    heartbeat: int = 30
    poll_seconds: float = 2.0  # how often new FIX sessions are picked up from the store
    engine_timeout: float = 5.0
    orders_per_second: float = 500.0  # per account, all its sessions: D, F, G, q
    order_burst: int = 1_000
    requests_per_second: float = 1_000.0  # per account: every application message
    request_burst: int = 2_000
    tls_cert: str = ""  # PEM certificate chain: "" = plain TCP; set = FIX over TLS 1.2+ only
    tls_key: str = ""  # PEM private key (may be in tls_cert)


class RecorderConfig(msgspec.Struct, forbid_unknown_fields=True):
    # "chdb://<dir>" (embedded, the default) or "http(s)://user:password@host:port/database";
    # the environment variable CLICKHOUSE_URL overrides it.
    clickhouse: str = "chdb://var/clickhouse"
    host: str = "127.0.0.1"  # query API (klines, read-only SQL): chDB lives in this process
    port: int = 8090
    identity: str = "recorder"
    batch_rows: int = 50_000  # an insert is made when this many trades wait...
    batch_ms: int = 200  # ...or when the oldest has waited this long
    max_buffer: int = 2_000_000  # trade rows held while ClickHouse is away; then pulling pauses
    # best bid/offer rows held while inserts fail; beyond it the oldest go (newer supersede them)
    max_bbo_buffer: int = 100_000
    accounts_every: float = 30.0  # seconds between copies of new accounts into ClickHouse


class BridgeConfig(msgspec.Struct, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8080
    max_connections: int = 5_000
    max_subscriptions: int = 50  # streams per connection
    send_queue: int = 2_000  # KiB of unsent data per connection; a slower browser is dropped
    recent_trades: int = 1_000  # per market, for GET /api/trades


class MetricsConfig(msgspec.Struct, forbid_unknown_fields=True):
    """Where each process serves Prometheus metrics (``host:port``, "" = off). The recorder and
    the bridge answer ``/metrics`` on their own HTTP port instead."""

    engine: str = "127.0.0.1:9101"
    json_gateway: str = "127.0.0.1:9102"
    fix_gateway: str = "127.0.0.1:9103"
    marketmaker: str = "127.0.0.1:9104"
    http_gateway: str = "127.0.0.1:9105"


class Config(msgspec.Struct, forbid_unknown_fields=True):
    assets: dict[str, AssetConfig]
    markets: dict[str, MarketConfig]
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    accounts: AccountsConfig = msgspec.field(default_factory=AccountsConfig)
    json_gateway: JsonGatewayConfig = msgspec.field(default_factory=JsonGatewayConfig)
    bridge: BridgeConfig = msgspec.field(default_factory=BridgeConfig)
    fix_gateway: FixGatewayConfig = msgspec.field(default_factory=FixGatewayConfig)
    http_gateway: HttpGatewayConfig = msgspec.field(default_factory=HttpGatewayConfig)
    web: WebConfig = msgspec.field(default_factory=WebConfig)
    recorder: RecorderConfig = msgspec.field(default_factory=RecorderConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    replication: ReplicationConfig = msgspec.field(default_factory=ReplicationConfig)


def engine_endpoints(ex: Exchange) -> list[str]:
    """Where clients send commands: every engine of a replicated setup, else the engine."""
    return list(ex.replication.engines) or [ex.engine.commands]


def market_data_endpoints(ex: Exchange) -> list[str]:
    """Where market data comes from: every engine of a replicated setup, else the engine."""
    return list(ex.replication.market_data) or [ex.engine.market_data]


class MarketSpec:
    """A market with every scale pre-computed as an integer."""

    __slots__ = (
        "symbol",
        "base",
        "quote",
        "tick",
        "lot",
        "base_decimals",
        "quote_decimals",
        "lot_units",
        "tick_lot_quote",
        "min_qty",
        "max_qty",
        "max_price",
        "maker_ppm",
        "taker_ppm",
        "base_step",
        "quote_step",
        "index",
    )

    def __init__(self, symbol: str, cfg: MarketConfig, assets: dict[str, AssetConfig]) -> None:
        where = f"markets.{symbol}"
        for field in ("base", "quote"):
            if getattr(cfg, field) not in assets:
                raise ConfigError(f"{where}.{field}: unknown asset {getattr(cfg, field)!r}")
        if cfg.base == cfg.quote:
            raise ConfigError(f"{where}: base and quote must differ")
        self.symbol = symbol
        self.base, self.quote = cfg.base, cfg.quote
        self.base_decimals = assets[cfg.base].decimals
        self.quote_decimals = assets[cfg.quote].decimals
        self.tick = _step(cfg.tick, f"{where}.tick")
        self.lot = _step(cfg.lot, f"{where}.lot")
        self.base_step = units_step(self.base_decimals)
        self.quote_step = units_step(self.quote_decimals)
        self.lot_units = _whole(
            self.lot.mantissa,
            self.base_decimals - self.lot.places,
            f"{where}.lot: {cfg.lot} is finer than {cfg.base}'s {self.base_decimals} decimals",
        )
        self.tick_lot_quote = _whole(
            self.tick.mantissa * self.lot.mantissa,
            self.quote_decimals - self.tick.places - self.lot.places,
            f"{where}: tick {cfg.tick} x lot {cfg.lot} is finer than "
            f"{cfg.quote}'s {self.quote_decimals} decimals, so notionals would not be exact",
        )
        self.min_qty = self._conf_steps(cfg.min_qty, self.lot, f"{where}.min_qty")
        self.max_qty = self._conf_steps(cfg.max_qty, self.lot, f"{where}.max_qty")
        self.max_price = self._conf_steps(cfg.max_price, self.tick, f"{where}.max_price")
        if not 0 < self.min_qty <= self.max_qty:
            raise ConfigError(f"{where}: need 0 < min_qty <= max_qty")
        if self.max_price * self.max_qty * self.tick_lot_quote > MAX_INT:
            raise ConfigError(f"{where}: max_price x max_qty overflows 64-bit quote amounts")
        self.maker_ppm = _rate(cfg.maker_fee, f"{where}.maker_fee")
        self.taker_ppm = _rate(cfg.taker_fee, f"{where}.taker_fee")

    @staticmethod
    def _conf_steps(text: str, step: Step, where: str) -> int:
        try:
            return to_steps(text, step, where)
        except AmountError as e:
            raise ConfigError(str(e)) from None

    # Human edge conversions; each raises AmountError with a message naming the field.
    def price_to_ticks(self, text: object) -> int:
        return to_steps(text, self.tick, "price")

    def qty_to_lots(self, text: object) -> int:
        return to_steps(text, self.lot, "quantity")

    def quote_to_units(self, text: object) -> int:
        return to_steps(text, self.quote_step, "quote amount")

    def price_text(self, ticks: int) -> str:
        return from_steps(ticks, self.tick)

    def qty_text(self, lots: int) -> str:
        return from_steps(lots, self.lot)

    def quote_text(self, units: int) -> str:
        return from_steps(units, self.quote_step)

    def base_text(self, units: int) -> str:
        return from_steps(units, self.base_step)


def _step(text: str, where: str) -> Step:
    try:
        return Step(text)
    except AmountError as e:
        raise ConfigError(f"{where}: {e}") from None


def _whole(mantissa: int, exponent: int, message: str) -> int:
    if exponent >= 0:
        return mantissa * 10**exponent
    value, rest = divmod(mantissa, 10**-exponent)
    if rest:
        raise ConfigError(message)
    return value


def _rate(text: str, where: str) -> int:
    try:
        ppm = ratio_ppm(text, where)
    except AmountError as e:
        raise ConfigError(str(e)) from None
    if not 0 <= ppm < 1_000_000:
        raise ConfigError(f"{where}: fee rate must be in [0, 1), was {text}")
    return ppm


class Exchange:
    """The loaded, validated configuration every process works from."""

    def __init__(self, cfg: Config) -> None:
        for name, asset in cfg.assets.items():
            if not 0 <= asset.decimals <= 18:
                raise ConfigError(f"assets.{name}.decimals: must be 0..18, was {asset.decimals}")
        self.config = cfg
        self.engine = cfg.engine
        self.accounts = cfg.accounts
        self.json_gateway = cfg.json_gateway
        self.bridge = cfg.bridge
        self.fix_gateway = cfg.fix_gateway
        self.http_gateway = cfg.http_gateway
        self.web = cfg.web
        self.recorder = cfg.recorder
        self.metrics = cfg.metrics
        self.replication = cfg.replication
        self.assets: dict[str, int] = {name: a.decimals for name, a in cfg.assets.items()}
        self.asset_steps = {name: units_step(d) for name, d in self.assets.items()}
        self.markets: dict[str, MarketSpec] = {}
        for symbol, mcfg in cfg.markets.items():
            self.markets[symbol] = MarketSpec(symbol, mcfg, cfg.assets)
        if cfg.engine.fsync not in ("none", "batch"):
            raise ConfigError(f"engine.fsync: must be 'none' or 'batch', was {cfg.engine.fsync!r}")
        _check_bounds(cfg)

    def amount_to_units(self, asset: str, text: object) -> int:
        return to_steps(text, self.asset_steps[asset], f"{asset} amount")

    def units_text(self, asset: str, units: int) -> str:
        return from_steps(units, self.asset_steps[asset])


def _check_bounds(cfg: Config) -> None:
    if cfg.engine.batch_max < 1:
        raise ConfigError("engine.batch_max: must be at least 1")
    for name in ("closed_orders_kept", "fills_kept", "history_kept", "recent_trades_kept"):
        if getattr(cfg.engine, name) < 1:
            raise ConfigError(f"engine.{name}: must be at least 1")
    if cfg.recorder.max_bbo_buffer < 1:
        raise ConfigError("recorder.max_bbo_buffer: must be at least 1")
    for name in cfg.metrics.__struct_fields__:
        address = getattr(cfg.metrics, name)
        host, _, port = address.rpartition(":")
        if address and not (host and port.isdigit() and int(port) < 65536):
            raise ConfigError(f"metrics.{name}: must be host:port or empty, was {address!r}")


def use_engine(ex: Exchange, commands: str | None, market_data: str | None = None) -> None:
    """Point ``ex`` at another engine (a process's --commands / --market-data flags)."""
    if commands:
        ex.engine.commands = commands
    if market_data:
        ex.engine.market_data = market_data


def log_to_stderr() -> None:
    """How every process logs: INFO and up, one line per record on stderr."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )


def load(path: str | os.PathLike[str] | None = None) -> Exchange:
    """Load and validate a config file (the shipped default when ``path`` is None)."""
    p = Path(path) if path else Path(os.environ.get("EXCHANGE_CONFIG", DEFAULT_CONFIG))
    try:
        raw = msgspec.toml.decode(p.read_bytes(), type=Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{p}: {e}") from None
    except (msgspec.DecodeError, OSError) as e:
        raise ConfigError(f"{p}: {e}") from None
    return Exchange(raw)


def loads(text: str) -> Exchange:
    try:
        return Exchange(msgspec.toml.decode(text.encode(), type=Config))
    except (msgspec.ValidationError, msgspec.DecodeError) as e:
        raise ConfigError(str(e)) from None

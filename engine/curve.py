"""ZeroMQ CURVE on the engine's two ports (docs/design.md rule 5): encryption and client keys.

Off by default: the engine binds loopback only and refuses any other address. With
``[engine] curve_keys = "DIR"`` both ports (commands and market data) become CURVE servers
and a ZAP handler admits only the client public keys in ``DIR/clients``; every connection is
encrypted, and a peer without an admitted key cannot send a command or read a message. Only
then may the engine bind a non-loopback address, so gateways can run on other hosts.

The key directory, made by ``python -m engine keys DIR NAME...``::

    DIR/engine.key            the engine's public key: every client needs it
    DIR/engine.key_secret     the engine's secret key: stays on the engine host
    DIR/NAME.key_secret       a client's key pair: goes to that client's host only
    DIR/clients/NAME.key      a client's public key: the engine admits what is here

NAME is the component: a gateway's ``identity`` (``json-gw-1``, ``fix-gw-1``), the recorder's
``identity``, ``bridge``, ``admin-cli``, ``stack-demo``, or any name a feed user picks.
Secret files are written mode 0600. The engine reads ``clients/`` when it starts: admitting or
revoking a client means changing that folder and restarting the engine.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

if TYPE_CHECKING:
    from protocol.config import Exchange

SERVER = "engine"
log = logging.getLogger("engine.curve")


class CurveKeyError(Exception):
    """A missing, unreadable or misnamed key file."""


class ClientKeys(NamedTuple):
    server: bytes  # the engine's public key
    public: bytes
    secret: bytes


def generate(directory: Path, names: list[str]) -> list[Path]:
    """Create the engine's key pair (if missing) and one per new client name; returns new files."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "clients").mkdir(exist_ok=True)
    made: list[Path] = []
    old_umask = os.umask(0o077)  # secret files are never readable by others, not even briefly
    try:
        for name in [SERVER, *names]:
            if not name or "/" in name or name.startswith("."):
                raise CurveKeyError(f"bad key name {name!r}")
            secret = directory / f"{name}.key_secret"
            if secret.exists():
                continue
            public, secret_file = zmq.auth.create_certificates(directory, name)
            made.append(Path(secret_file))
            if name != SERVER:
                moved = directory / "clients" / f"{name}.key"
                shutil.move(public, moved)
                made.append(moved)
            else:
                made.append(Path(public))
    finally:
        os.umask(old_umask)
    for path in made:
        if path.name.endswith(".key"):
            path.chmod(0o644)  # public keys are meant to be shared
    return made


def _load(path: Path, need_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as e:
        raise CurveKeyError(f"cannot read CURVE key {path}: {e}") from None
    if need_secret and not secret:
        raise CurveKeyError(f"{path} holds no secret key")
    return public, secret


def server_keys(directory: Path) -> tuple[bytes, bytes]:
    public, secret = _load(directory / f"{SERVER}.key_secret", True)
    assert secret is not None
    return public, secret


def client_keys(directory: Path, name: str) -> ClientKeys:
    server, _ = _load(directory / f"{SERVER}.key", False)
    public, secret = _load(directory / f"{name}.key_secret", True)
    assert secret is not None
    return ClientKeys(server, public, secret)


def for_client(ex: Exchange, name: str) -> ClientKeys | None:
    """The keys component ``name`` connects with, or None when CURVE is off."""
    keys_dir = ex.engine.curve_keys
    return client_keys(Path(keys_dir), name) if keys_dir else None


def secure_client(sock: zmq.Socket, keys: ClientKeys | None) -> None:
    """Make ``sock`` a CURVE client (before connect); no-op without keys."""
    if keys is not None:
        sock.curve_serverkey = keys.server
        sock.curve_publickey = keys.public
        sock.curve_secretkey = keys.secret


class _ZapLog:
    """What the ZAP handler says, for the operator: its refusals (logged by pyzmq at debug
    level only) become a warning with a count, at most one every ``every`` seconds."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.refused = 0
        self.last = -every

    def debug(self, msg: str, *args: object) -> None:
        text = msg % args if args else msg  # pyzmq passes "DENIED" as an argument
        if not text.startswith("DENIED"):
            return
        self.refused += 1
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            log.warning("CURVE: %d connection(s) refused so far (latest: %s)", self.refused, text)

    def error(self, msg: str, *args: object) -> None:
        log.error("CURVE: " + msg, *args)

    def info(self, msg: str, *args: object) -> None:
        log.info("CURVE: " + msg, *args)

    warning = error


class Guard:
    """The engine side: a ZAP handler admitting ``DIR/clients`` and CURVE on its sockets."""

    def __init__(self, ctx: zmq.Context, directory: Path) -> None:
        self.public, self.secret = server_keys(directory)
        clients = directory / "clients"
        self.admitted = sorted(p.stem for p in clients.glob("*.key")) if clients.is_dir() else []
        self.zap_log = _ZapLog()
        self.auth = ThreadAuthenticator(ctx, log=self.zap_log)
        self.auth.start()
        self.auth.configure_curve(domain="*", location=str(clients))

    def secure(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server (before bind)."""
        sock.curve_server = True
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public

    def stop(self) -> None:
        self.auth.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m engine keys",
        description="Create CURVE keys for the engine and its clients (existing keys are kept).",
    )
    p.add_argument("directory", type=Path, help="key directory ([engine] curve_keys)")
    p.add_argument("names", nargs="*", help="client names: gateway identities, recorder, ...")
    args = p.parse_args(argv)
    try:
        made = generate(args.directory, args.names)
    except CurveKeyError as e:
        p.error(str(e))
    for path in made:
        print(f"wrote {path}")
    if not made:
        print("nothing new: every key already exists")
    return 0

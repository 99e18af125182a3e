"""The quickfix side: session settings, acceptor generations and the Application callbacks.

quickfix (the C++ engine under the ``quickfix`` package) owns the FIX session layer: logon,
heartbeats, sequence numbers, resend requests and gap fills, and the persistent message store
(``FileStore`` under ``[fix_gateway] data_dir``), so messages sent while a client was away are
resent when it logs on again.

Threads: a ``ThreadedSocketAcceptor`` calls ``FixApp`` on one thread per session. Those
callbacks never touch gateway state: they parse the message into plain ``(tag, value)`` pairs
and hand it to the asyncio loop with ``call_soon_threadsafe`` (a non-blocking queue push), so a
session thread is never blocked by the engine and there is no shared mutable state. Only the
Logon check runs on the session thread (it must, to reject the Logon), reading the account
store through its own SQLite connection.

quickfix has no dynamic acceptor sessions. Sessions are grouped in *generations*: each is an
acceptor on its own loopback port with the sessions known when it started. A new FIX session
in the account store starts a new generation beside the running ones (those stay logged on);
the front door (gateways/fix/front.py) routes each incoming connection to the generation that
has its SenderCompID.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import quickfix as fix

from gateways.accounts import AccountStore, Permission, check_secret
from gateways.fix import loopback

log = logging.getLogger("gateways.fix")

SOH = "\x01"
DICTIONARY = Path(__file__).with_name("FIX44.xml")
TEMPLATE = Path(__file__).with_name("acceptor.cfg")

Fields = list[tuple[int, str]]


def parse(raw: str) -> Fields:
    """``8=FIX.4.4|35=D|...`` -> [(8, "FIX.4.4"), (35, "D"), ...] (groups stay in order)."""
    out = []
    for part in raw.split(SOH):
        if part:
            tag, _, value = part.partition("=")
            out.append((int(tag), value))
    return out


def first(fields: Fields, tag: int) -> str | None:
    for t, v in fields:
        if t == tag:
            return v
    return None


Groups = list[tuple[int, int, list[Fields]]]  # (count tag, first tag of each entry, entries)


def build_message(msg_type: str, fields: Fields, groups: Groups | None = None) -> fix.Message:
    """A quickfix message from plain (tag, value) pairs: values are set as the exact strings."""
    m = fix.Message()
    m.getHeader().setField(35, msg_type)
    for tag, value in fields:
        m.setField(tag, value)
    for count_tag, delim, rows in groups or []:
        for row in rows:
            g = fix.Group(count_tag, delim)
            for tag, value in row:
                g.setField(tag, value)
            m.addGroup(g)
    return m


@dataclass
class Login:
    comp_id: str
    account: int
    permission: Permission
    cancel_on_disconnect: bool


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def settings_text(
    comp_ids: list[str], port: int, sender: str, data_dir: Path, heartbeat: int
) -> str:
    """A generation's settings: the documented template with its port and sessions filled in."""
    base = TEMPLATE.read_text().format(
        port=port,
        sender=sender,
        store=data_dir / "store",
        dictionary=DICTIONARY,
        heartbeat=heartbeat,
    )
    return base + "".join(f"\n[SESSION]\nTargetCompID={c}\n" for c in comp_ids)


class FixApp(fix.Application):
    """quickfix callbacks, run on quickfix's threads; everything else happens on the loop."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        accounts_path: str,
        on_app: Callable[[fix.SessionID, Fields], None],
        on_logon: Callable[[fix.SessionID, Login], None],
        on_logout: Callable[[fix.SessionID], None],
    ) -> None:
        super().__init__()
        self.loop = loop
        self.accounts_path = accounts_path
        self.on_app = on_app
        self.on_logon_cb = on_logon
        self.on_logout_cb = on_logout
        self.pending: dict[str, Login] = {}  # checked Logons, by CompID, until onLogon

    # quickfix's Application interface (names are quickfix's)
    def onCreate(self, sessionID: fix.SessionID) -> None:
        log.info("FIX session %s ready", sessionID.toString())

    def onLogon(self, sessionID: fix.SessionID) -> None:
        login = self.pending.pop(sessionID.getTargetCompID().getValue(), None)
        if login is not None:
            self.loop.call_soon_threadsafe(self.on_logon_cb, sessionID, login)

    def onLogout(self, sessionID: fix.SessionID) -> None:
        self.loop.call_soon_threadsafe(self.on_logout_cb, sessionID)

    def toAdmin(self, message: fix.Message, sessionID: fix.SessionID) -> None:
        return

    def toApp(self, message: fix.Message, sessionID: fix.SessionID) -> None:
        return

    def fromAdmin(self, message: fix.Message, sessionID: fix.SessionID) -> None:
        if message.getHeader().getField(35) == "A":
            comp = sessionID.getTargetCompID().getValue()
            self.pending[comp] = self.check_logon(comp, parse(message.toString()))

    def fromApp(self, message: fix.Message, sessionID: fix.SessionID) -> None:
        self.loop.call_soon_threadsafe(self.on_app, sessionID, parse(message.toString()))

    def check_logon(self, comp: str, fields: Fields) -> Login:
        """Username (553) = API key, Password (554) = its secret; the key must belong to the
        account this SenderCompID is registered for. Raises RejectLogon with a reason."""
        key_id, secret = first(fields, 553), first(fields, 554)
        if not key_id or not secret:
            raise fix.RejectLogon("Logon needs Username(553)=api key and Password(554)=secret")
        store = AccountStore(self.accounts_path)
        try:
            key = store.lookup(key_id)
            sessions = {c: (a, cod) for c, a, cod in store.fix_sessions()}
        finally:
            store.close()
        if key is None or not check_secret(key, secret):
            log.warning("FIX logon refused for %s: bad credentials", comp)
            raise fix.RejectLogon("unknown api key or wrong secret")
        if comp not in sessions or sessions[comp][0] != key.account_id:
            raise fix.RejectLogon(f"SenderCompID {comp} is not registered for this api key")
        return Login(comp, key.account_id, key.permission, sessions[comp][1])


class Generation:
    """One quickfix acceptor on a loopback port, with a fixed set of sessions."""

    def __init__(
        self, app: FixApp, comp_ids: list[str], sender: str, data_dir: Path, heartbeat: int
    ) -> None:
        self.comp_ids = list(comp_ids)
        self.port = free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / f"acceptor-{self.port}.cfg"
        self.path.write_text(settings_text(self.comp_ids, self.port, sender, data_dir, heartbeat))
        settings = fix.SessionSettings(str(self.path))
        self.acceptor = fix.ThreadedSocketAcceptor(app, fix.FileStoreFactory(settings), settings)

    def start(self) -> None:
        """Start the acceptor, then move its listener to loopback (quickfix binds every
        acceptor to all addresses: gateways/fix/loopback.py); ``port`` is then the new one."""
        self.acceptor.start()
        try:
            self.port = loopback.confine(self.port)
        except BaseException:
            self.acceptor.stop()
            raise
        log.info("acceptor generation on 127.0.0.1:%d for %s", self.port, ", ".join(self.comp_ids))

    def stop(self) -> None:
        self.acceptor.stop()
        self.path.unlink(missing_ok=True)

"""A small FIX 4.4 initiator on quickfix, for tests, benchmarks and as a worked example.

    c = FixClient("ALICE1", api_key, secret, port=9878, data_dir=tmp)
    c.start(); c.wait_logon()
    c.send("D", [(11, "o1"), (55, "BTC-USD"), (54, "1"), (40, "2"), (38, "0.0100"),
                 (44, "50000.00"), (59, "1"), (60, c.now())])
    report = c.expect(lambda m: m.get(35) == "8" and m.get(11) == "o1")

Received application messages are kept as lists of (tag, value) pairs (``FixMsg``), in order,
on a thread-safe queue; ``expect`` waits for one that matches.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import quickfix as fix

from gateways.fix.acceptor import DICTIONARY, Fields, Groups, build_message, parse
from gateways.fix.gateway import utc

INITIATOR = """[DEFAULT]
ConnectionType=initiator
BeginString=FIX.4.4
SenderCompID={comp}
TargetCompID={target}
SocketConnectHost={host}
SocketConnectPort={port}
HeartBtInt={heartbeat}
ReconnectInterval=1
FileStorePath={store}
DataDictionary={dictionary}
UseDataDictionary=Y
StartTime=00:00:00
EndTime=00:00:00
ResetOnLogon={reset}
ResetOnLogout=N
ResetOnDisconnect=N
PersistMessages=Y
TimestampPrecision=3

[SESSION]
"""


class FixMsg:
    """A received message: ``m.get(tag)`` is the first value, ``m.all(tag)`` every value."""

    def __init__(self, fields: Fields) -> None:
        self.fields = fields

    def get(self, tag: int) -> str | None:
        for t, v in self.fields:
            if t == tag:
                return v
        return None

    def all(self, tag: int) -> list[str]:
        return [v for t, v in self.fields if t == tag]

    def __repr__(self) -> str:
        return "|".join(f"{t}={v}" for t, v in self.fields if t not in (8, 9, 10))


class _App(fix.Application):
    def __init__(self, owner: FixClient) -> None:
        super().__init__()
        self.owner = owner

    def onCreate(self, sessionID: fix.SessionID) -> None:
        self.owner.sid = sessionID

    def onLogon(self, sessionID: fix.SessionID) -> None:
        self.owner.logged_on.set()

    def onLogout(self, sessionID: fix.SessionID) -> None:
        self.owner.logged_on.clear()

    def toAdmin(self, message: fix.Message, sessionID: fix.SessionID) -> None:
        if message.getHeader().getField(35) == "A":
            if self.owner.api_key:
                message.setField(553, self.owner.api_key)
            if self.owner.secret:
                message.setField(554, self.owner.secret)

    def fromAdmin(self, message: fix.Message, sessionID: fix.SessionID) -> None:
        msg = FixMsg(parse(message.toString()))
        if msg.get(35) in ("5", "3"):  # Logout (with the reason) and session-level Reject
            self.owner.admin.put(msg)

    def toApp(self, message: fix.Message, sessionID: fix.SessionID) -> None:
        return

    def fromApp(self, message: fix.Message, sessionID: fix.SessionID) -> None:
        self.owner.inbox.put(FixMsg(parse(message.toString())))


class FixClient:
    def __init__(
        self,
        comp: str,
        api_key: str | None,
        secret: str | None,
        port: int,
        data_dir: Path,
        host: str = "127.0.0.1",
        target: str = "EXCHANGE",
        heartbeat: int = 30,
        reset: bool = True,
    ) -> None:
        self.comp = comp
        self.api_key = api_key
        self.secret = secret
        self.inbox: queue.Queue[FixMsg] = queue.Queue()
        self.admin: queue.Queue[FixMsg] = queue.Queue()
        self.seen: list[FixMsg] = []  # received, not yet taken by expect()
        self.logged_on = threading.Event()
        self.sid: fix.SessionID | None = None
        data_dir.mkdir(parents=True, exist_ok=True)
        self.cfg_path = data_dir / f"initiator-{comp}.cfg"
        self.cfg_path.write_text(
            INITIATOR.format(
                comp=comp,
                target=target,
                host=host,
                port=port,
                heartbeat=heartbeat,
                store=data_dir / "store",
                dictionary=DICTIONARY,
                reset="Y" if reset else "N",
            )
        )
        settings = fix.SessionSettings(str(self.cfg_path))
        self.app = _App(self)
        self.initiator = fix.SocketInitiator(self.app, fix.FileStoreFactory(settings), settings)

    def start(self) -> None:
        self.initiator.start()

    def stop(self) -> None:
        self.initiator.stop()
        self.logged_on.clear()

    def wait_logon(self, timeout: float = 15.0) -> None:
        if not self.logged_on.wait(timeout):
            reasons = []
            while not self.admin.empty():
                reasons.append(repr(self.admin.get_nowait()))
            raise AssertionError(f"{self.comp} did not log on in {timeout}s {reasons}")

    @staticmethod
    def now() -> str:
        return utc(time.time_ns())

    def send(self, msg_type: str, fields: Fields, groups: Groups | None = None) -> None:
        assert self.sid is not None
        fix.Session.sendToTarget(build_message(msg_type, fields, groups), self.sid)

    def expect(self, match: Callable[[FixMsg], bool], timeout: float = 10.0) -> FixMsg:
        """The oldest received message that matches; the others stay, in order."""
        deadline = time.monotonic() + timeout
        while True:
            for i, msg in enumerate(self.seen):
                if match(msg):
                    return self.seen.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{self.comp}: no matching message in {timeout}s; "
                    f"last received: {self.seen[-5:]}"
                )
            try:
                self.seen.append(self.inbox.get(timeout=min(left, 0.2)))
            except queue.Empty:
                pass

"""The primary's append link (engine/appendlink.py) against real nats-server processes: what
the stream answers (sequence, duplicate, refusal by expected sequence), a server killed under
it, a server that answers garbage or refuses the login, TLS and a user with a password.

Each test can fail: a wrong sequence, a lost callback or a hang shows as a failed assert or a
timeout."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from engine import replication
from engine.appendlink import AppendError, AppendLink, headers_block
from engine.natscluster import NatsCluster, free_ports
from protocol.config import ReplicationConfig

pytestmark = pytest.mark.skipif(shutil.which("nats-server") is None, reason="no nats-server")


class Acks:
    """Collects answers by token."""

    def __init__(self) -> None:
        self.got: dict[int, tuple[int, AppendError | None]] = {}
        self.event = asyncio.Event()

    def __call__(self, token: int, seq: int, error: AppendError | None) -> None:
        self.got[token] = (seq, error)
        self.event.set()

    async def wait(self, *tokens: int, timeout: float = 10.0) -> None:
        async def until() -> None:
            while not all(t in self.got for t in tokens):
                self.event.clear()
                await self.event.wait()

        await asyncio.wait_for(until(), timeout)


def hdr(expected: int, msg_id: str) -> bytes:
    return headers_block({"Nats-Expected-Last-Sequence": str(expected), "Nats-Msg-Id": msg_id})


async def make_stream(urls: list[str], replicas: int, **tls) -> None:
    cfg = ReplicationConfig(servers=urls, node="t", replicas=replicas, **tls)
    nc = await replication.connect(cfg)
    try:
        await replication.ensure_log(nc.jetstream(), cfg)
    finally:
        await nc.close()


async def connected(urls: list[str]) -> tuple[AppendLink, Acks]:
    """A three-replica stream on ``urls`` and a link connected to the first server."""
    await make_stream(urls, 3)
    acks = Acks()
    link = AppendLink(urls, acks)
    await link.connect(attempts=3)
    return link, acks


def test_appends_are_acknowledged_deduplicated_and_fenced(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "nats").start()

    async def scenario() -> None:
        link, acks = await connected(cluster.urls)
        assert link.max_payload == 8 << 20  # natscluster's config
        subject = ReplicationConfig().subject
        for i in range(1, 4):  # three in flight at once, each expecting the one before
            assert link.publish(subject, b"r%d" % i, hdr(i - 1, f"t-{i}"), i)
        await acks.wait(1, 2, 3)
        assert [acks.got[i] for i in (1, 2, 3)] == [(1, None), (2, None), (3, None)]
        # the same message id again: the stream has it (its sequence, not a new one)
        assert link.publish(subject, b"r2", hdr(1, "t-2"), 4)
        await acks.wait(4)
        assert acks.got[4] == (2, None)
        # another writer's view of the end: refused with JetStream's code
        assert link.publish(subject, b"late", hdr(1, "other-2"), 5)
        await acks.wait(5)
        seq, err = acks.got[5]
        assert seq == 0 and err is not None and err.err_code == replication.WRONG_LAST_SEQUENCE
        await link.close()
        assert not link.publish(subject, b"x", hdr(3, "t-4"), 6)  # closed: refused at once

    try:
        asyncio.run(scenario())
    finally:
        cluster.close()


def test_a_killed_server_fails_what_was_in_flight_and_the_link_moves_on(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "nats").start()

    async def scenario() -> None:
        link, acks = await connected(cluster.urls)  # to the first server: urls[0]
        subject = ReplicationConfig().subject
        cluster.procs[0].send_signal(signal.SIGSTOP)  # it takes the bytes, answers nothing
        assert link.publish(subject, b"a", hdr(0, "k-1"), 1)
        cluster.kill(0)  # then it dies with the append in flight
        await acks.wait(1)
        seq, err = acks.got[1]
        assert seq == 0 and isinstance(err, AppendError), acks.got
        for _ in range(200):  # it reconnects to a live server by itself
            if link.ready:
                break
            await asyncio.sleep(0.05)
        assert link.ready and link.connects == 2
        for attempt in range(50):  # the stream may need a moment to elect a new leader
            token = 10 + attempt
            assert link.publish(subject, b"a", hdr(0, "k-1"), token)
            await acks.wait(token)
            if acks.got[token][1] is None:
                assert acks.got[token][0] == 1
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"no append acknowledged after the kill: {acks.got}")
        await link.close()

    try:
        asyncio.run(scenario())
    finally:
        cluster.close()


async def fake_server(reply: bytes) -> tuple[asyncio.AbstractServer, str]:
    """A TCP server that sends a NATS INFO and then ``reply`` to whatever comes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b'INFO {"server_id":"fake","max_payload":1048576}\r\n')
            await reader.readline()
            writer.write(reply)
            await writer.drain()
            await asyncio.sleep(0.5)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"nats://127.0.0.1:{port}"


@pytest.mark.parametrize(
    "reply",
    [
        b"-ERR 'Authorization Violation'\r\n",
        b"\x00\xff garbage without an end" * 400,
        b"MSG not-a-number\r\n",
    ],
)
def test_a_server_that_refuses_or_talks_garbage_is_a_clear_error(reply: bytes) -> None:
    async def scenario() -> None:
        server, url = await fake_server(reply)
        link = AppendLink([url], Acks(), connect_timeout=1.0)
        try:
            with pytest.raises(ConnectionError):
                await link.connect(attempts=2)
            assert not link.ready
        finally:
            await link.close()
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def single_server(tmp_path: Path, extra: str) -> tuple[subprocess.Popen, int]:
    port, monitor = free_ports(2)
    conf = tmp_path / "n.conf"
    conf.write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\nmax_payload: 8MB\n"
        f'jetstream {{\n  store_dir: "{tmp_path / "js"}"\n}}\n{extra}'
    )
    log = open(tmp_path / "n.log", "wb")
    proc = subprocess.Popen(["nats-server", "-c", str(conf)], stdout=log, stderr=log)
    log.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            url = f"http://127.0.0.1:{monitor}/healthz?js-enabled-only=true"
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return proc, port
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError((tmp_path / "n.log").read_text())


def test_user_and_password_from_the_url(tmp_path: Path) -> None:
    proc, port = single_server(tmp_path, 'authorization {\n  user: eng\n  password: "s3cr-t"\n}\n')

    async def scenario() -> None:
        good = f"nats://eng:s3cr-t@127.0.0.1:{port}"
        await make_stream([good], 1)
        assert await one_append(AppendLink([good], Acks())) == (1, None)
        wrong = AppendLink([f"nats://eng:wrong@127.0.0.1:{port}"], Acks(), connect_timeout=1.0)
        assert isinstance(await refusal(wrong), ConnectionError)

    run_with(proc, scenario)


async def one_append(link: AppendLink) -> tuple[int, AppendError | None]:
    """Connect ``link`` and append one message to an empty stream: its (sequence, error)."""
    acks = link.on_ack
    assert isinstance(acks, Acks)
    await link.connect(attempts=2)
    try:
        assert link.publish(ReplicationConfig().subject, b"x", hdr(0, "one-1"), 1)
        await acks.wait(1)
        return acks.got[1]
    finally:
        await link.close()


async def refusal(link: AppendLink) -> Exception | None:
    """Why ``link`` cannot connect (None: it could)."""
    try:
        await link.connect(attempts=1)
    except ConnectionError as e:
        return e
    finally:
        await link.close()
    return None


def run_with(proc: subprocess.Popen, scenario) -> None:
    try:
        asyncio.run(scenario())
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")
def test_tls_with_the_configured_ca(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    proc, port = single_server(
        tmp_path, f'tls {{\n  cert_file: "{cert}"\n  key_file: "{key}"\n}}\n'
    )

    async def scenario() -> None:
        url = f"tls://127.0.0.1:{port}"
        await make_stream([url], 1, tls_ca=str(cert))
        assert await one_append(AppendLink([url], Acks(), tls_ca=str(cert))) == (1, None)
        untrusted = AppendLink([url], Acks(), connect_timeout=1.0)  # the system CAs only
        assert isinstance(await refusal(untrusted), ConnectionError)

    run_with(proc, scenario)

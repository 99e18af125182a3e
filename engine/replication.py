"""The replicated journal: every journaled batch goes to a NATS JetStream stream with three
replicas before any of its replies leaves the engine, and a hot standby follows that stream.

Why JetStream: a replicated log (Raft per stream) that installs from the registries this
project reaches (Debian's ``nats-server``, PyPI's ``nats-py``), runs three servers on one
machine or three, and has the two primitives failover needs: a publish that names the stream
sequence it expects to follow (``Nats-Expected-Last-Sequence``: a second writer is refused,
which fences a deposed primary) and a key-value bucket with a TTL (the leader lease).

Roles (one ``python -m engine`` process each, the same config with ``[replication]`` set):
- **primary**: holds the lease (key ``primary`` of the bucket, refreshed every ``heartbeat``
  by compare-and-set on its revision). Each batch's journal record is appended to the stream;
  the replies and market data of that batch, and of every later batch, wait until the stream
  acknowledges it (a majority of the servers has it). Up to ``in_flight`` appends are out at
  once, each naming the sequence the one before it will get; records that pile up meanwhile go
  out together as the next message (group commit again). A publish that times out (no
  majority) is retried with the same message id (JetStream drops a duplicate) until it lands:
  the engine then acknowledges nothing, and commands wait (their gateways time out and
  resolve them later). A publish the stream refuses because another engine appended first
  (with every earlier one in the stream), or a lease another engine took, deposes this one:
  it answers nothing more and exits (``Deposed``).
- **standby**: applies every message of the stream as it is written, through the same
  handlers journal replay uses, into its own engine, journal and snapshots (so its
  ``state_hash()`` is the primary's at the same sequence), and watches the lease. When the
  lease expires (the primary died or was cut off for ``lease`` seconds), it takes the lease,
  applies what is left in the stream, appends a takeover marker (a message with no records)
  that expects the stream's last sequence - from then on the old primary's appends fail - and
  starts serving as the primary.

Retention (``purge``, on by default): after each snapshot the primary uploads it to an object
store bucket beside the stream and purges the messages the snapshot before it covers; a
standby whose data ends before the stream's first message starts from the newest upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from engine import appendlink, journal
from engine.appendlink import AppendLink
from engine.core import Engine
from protocol.config import ReplicationConfig

log = logging.getLogger("engine.replication")

WRONG_LAST_SEQUENCE = 10071  # JetStream's error code for an expected-last-sequence mismatch
LEASE_KEY = "primary"
MIN_PAYLOAD = 8 << 20  # the servers' max_payload must take the largest batch (frames <= 1 MiB)


class Deposed(RuntimeError):
    """Another engine is primary now: this one must not answer or append again."""


class Diverged(RuntimeError):
    """This engine's data has commands the replicated log does not (a deposed primary's
    unacknowledged tail): it must rebuild from the log."""


TAKEOVER = "Exchange-Takeover"  # header of a takeover marker: "<node> <engine seq>"


async def append_marker(js: Any, cfg: ReplicationConfig, last_seq: int, engine_seq: int) -> int:
    """Append the takeover marker, expecting the stream to end at ``last_seq``; returns its
    stream sequence (a WRONG_LAST_SEQUENCE error: someone appended meanwhile)."""
    ack = await js.publish(
        cfg.subject, b"", timeout=cfg.publish_timeout,
        headers={TAKEOVER: f"{cfg.node} {engine_seq}", "Nats-Expected-Last-Sequence":
                 str(last_seq)},
    )  # fmt: skip
    return int(ack.seq)


async def connect(cfg: ReplicationConfig) -> Any:
    import nats

    opts: dict[str, Any] = {"servers": cfg.servers, "max_reconnect_attempts": -1,
                            "reconnect_time_wait": 0.2, "name": cfg.node}  # fmt: skip
    if cfg.tls_ca:
        import ssl

        opts["tls"] = ssl.create_default_context(cafile=cfg.tls_ca)
    return await nats.connect(**opts)


async def ensure_log(js: Any, cfg: ReplicationConfig, wait: float = 30.0) -> tuple[Any, Any]:
    """The stream and the lease bucket, created if missing (retried while the cluster forms)."""
    from nats.js.api import StorageType, StreamConfig

    deadline = time.monotonic() + wait
    while True:
        try:
            try:
                await js.stream_info(cfg.stream)
            except Exception:
                await js.add_stream(
                    StreamConfig(
                        name=cfg.stream,
                        subjects=[cfg.subject],
                        num_replicas=cfg.replicas,
                        storage=StorageType.FILE,
                        duplicate_window=120.0,
                    )
                )
            try:
                kv = await js.key_value(cfg.bucket)
            except Exception:
                kv = await js.create_key_value(
                    bucket=cfg.bucket, ttl=cfg.lease, history=1, replicas=cfg.replicas
                )
            return js, kv
        except Exception as e:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for the replicated log: %s", e)
            await asyncio.sleep(0.2)


def error_code(e: BaseException) -> int:
    """The JetStream error code of an exception (0 if none)."""
    return int(getattr(e, "err_code", 0) or 0)


class _Flight:
    """One message of records sent to the stream, until its outcome is handled in order."""

    __slots__ = ("payload", "msg_id", "dones", "token", "timer", "done", "seq", "error",
                 "waiter", "engine_seq")  # fmt: skip

    def __init__(self, payload: bytes, msg_id: str, dones: list[Callable[[], None]],
                 engine_seq: int) -> None:  # fmt: skip
        self.engine_seq = engine_seq  # the last command sequence its records hold
        self.payload = payload
        self.msg_id = msg_id
        self.dones = dones
        self.token = 0  # its reply token on the append link
        self.timer: asyncio.TimerHandle | None = None
        self.done = False  # answered, refused or timed out
        self.seq = 0  # its stream sequence once acknowledged
        self.error: BaseException | None = None
        self.waiter: asyncio.Future | None = None  # a resend awaiting its answer


class Replicator:
    """The primary's side: appends records in order and tells each batch's ``done`` callback
    once a majority has it; ``deposed`` is called once if another engine took over.

    Appends go out on an ``AppendLink`` (engine/appendlink.py) the moment they are submitted.
    Up to ``in_flight`` messages are out at once, each expecting the stream to end where the
    one before it will (sent in order on one connection, the stream takes them in order);
    records that arrive while that many are out go together in the next message (at most
    the server's ``max_payload``). Outcomes are handled in order. After any failure (a refusal,
    a lost connection, no answer within ``publish_timeout``) the rest in flight settle, then
    every message from the first unacknowledged one is sent again, one at a time, under its
    message id (the stream answers one it already has as a duplicate, with its sequence): only
    the refusal of a message whose predecessors are all in the stream deposes this engine."""

    def __init__(self, cfg: ReplicationConfig, link: AppendLink, kv: Any, last_seq: int,
                 lease_rev: int, deposed: Callable[[str], None]) -> None:  # fmt: skip
        self.cfg = cfg
        self.link = link
        link.on_ack = self._settle
        self.kv = kv
        self.last_seq = last_seq  # the stream's last sequence acknowledged to us
        self.lease_rev = lease_rev
        self.queue: deque[tuple[bytes, Callable[[], None], int]] = deque()
        # (last engine seq, stream seq) of acknowledged messages since the last purge
        self.marks: deque[tuple[int, int]] = deque()
        self.flight: deque[_Flight] = deque()
        self.tokens: dict[int, _Flight] = {}  # flights (and resends) awaiting an answer
        self._token = 0
        self.recovering = False
        self._settled: asyncio.Event | None = None  # set once every flight settled (_recover)
        self.on_deposed = deposed
        self.dead = False
        self.stats = {"messages": 0, "records": 0, "retries": 0}
        self.loop = asyncio.get_running_loop()
        self.tasks: list[asyncio.Future] = [asyncio.ensure_future(self._lease())]

    def submit(self, record: bytes, done: Callable[[], None], engine_seq: int) -> None:
        if len(record) > self.link.max_payload:  # batches are kept far below it (engine/server.py)
            self.depose(f"a batch record of {len(record)} bytes exceeds the log's message limit")
            return
        self.queue.append((record, done, engine_seq))
        self._pump()

    def _pump(self) -> None:
        queue, flight = self.queue, self.flight
        while queue and len(flight) < self.cfg.in_flight and not self.recovering and not self.dead:
            records: list[bytes] = []
            dones: list[Callable[[], None]] = []
            size = last = 0
            while queue and (not records or size + len(queue[0][0]) <= self.link.max_payload):
                record, done, last = queue.popleft()
                records.append(record)
                dones.append(done)
                size += len(record)
            expected = self.last_seq + len(flight)  # where the stream ends when it arrives
            f = _Flight(b"".join(records), f"{self.cfg.node}-{expected + 1}", dones, last)
            flight.append(f)
            self._send(f, expected)

    def _send(self, f: _Flight, expected: int) -> None:
        self._token += 1
        f.token = self._token
        f.done, f.error, f.seq = False, None, 0
        self.tokens[f.token] = f
        headers = appendlink.headers_block(
            {"Nats-Expected-Last-Sequence": str(expected), "Nats-Msg-Id": f.msg_id}
        )
        f.timer = self.loop.call_later(self.cfg.publish_timeout, self._timed_out, f.token)
        if not self.link.publish(self.cfg.subject, f.payload, headers, f.token):
            self._settle(f.token, 0, appendlink.AppendError("not connected to the log"))

    def _timed_out(self, token: int) -> None:
        if token in self.tokens:
            self.link.probe()  # a partition keeps the connection open: find out
            self._settle(token, 0, TimeoutError("no answer from the log"))

    def _settle(self, token: int, seq: int, error: BaseException | None) -> None:
        f = self.tokens.pop(token, None)
        if f is None:
            return  # answered after its timeout: the resend under its id gets the answer
        if f.timer is not None:
            f.timer.cancel()
        f.done, f.seq, f.error = True, seq, error
        if f.waiter is not None:
            if not f.waiter.done():
                f.waiter.set_result(None)
        elif not self.recovering:
            self._landed()
        elif self._settled is not None and all(g.done for g in self.flight):
            self._settled.set()

    def _landed(self) -> None:
        flight = self.flight
        while flight and not self.recovering and not self.dead:
            head = flight[0]
            if not head.done:
                break
            if head.error is not None or head.seq != self.last_seq + 1:
                self.recovering = True
                self.tasks.append(asyncio.ensure_future(self._recover()))
                return
            flight.popleft()
            self._acknowledged(head)
        self._pump()

    def _acknowledged(self, f: _Flight) -> None:
        self.last_seq = f.seq
        if self.cfg.purge:  # pruned at each snapshot (engine/server.py _ship_snapshots)
            self.marks.append((f.engine_seq, f.seq))
        self.stats["messages"] += 1
        self.stats["records"] += len(f.dones)
        for done in f.dones:
            done()

    async def _recover(self) -> None:
        flight = self.flight
        if any(not f.done for f in flight):  # each settles by its answer or its timer
            self._settled = asyncio.Event()
            await self._settled.wait()
            self._settled = None
        while flight and not self.dead:
            f = flight[0]
            if f.error is not None or f.seq != self.last_seq + 1:
                if not await self._append(f):
                    return  # deposed
            flight.popleft()
            self._acknowledged(f)
        self.recovering = False
        self._pump()

    async def _append(self, f: _Flight) -> bool:
        """Send ``f`` again until the stream has it (its sequence in ``f.seq``), or refuses it
        because another engine appended (False: deposed)."""
        tries = 0
        while not self.dead:
            f.waiter = self.loop.create_future()
            self._send(f, self.last_seq)
            await f.waiter
            f.waiter = None
            if f.error is None:
                return True
            if error_code(f.error) == WRONG_LAST_SEQUENCE:
                self.depose(f"the stream has moved on without us ({f.error})")
                return False
            self.stats["retries"] += 1
            if tries % 20 == 0:  # the first, then about every few seconds
                log.warning("replicated log: append of seq %d not acknowledged (%s); retrying",
                            self.last_seq + 1, f.error)  # fmt: skip
            tries += 1
            await asyncio.sleep(0.05 if self.link.ready else 0.2)
        return False

    async def _lease(self) -> None:
        cfg = self.cfg
        while not self.dead:
            await asyncio.sleep(cfg.heartbeat)
            try:
                self.lease_rev = await self.kv.update(
                    LEASE_KEY, cfg.node.encode(), last=self.lease_rev
                )
            except Exception as e:
                if "wrong last sequence" not in str(e).lower():
                    log.warning("lease refresh failed (%s): the log may be unreachable", e)
                    continue
                # The lease changed: another engine has it, or it expired while the log had
                # no majority (nobody could take it then). Only the first deposes this one; the
                # stream's expected sequence fences it anyway if another engine took over.
                rev = await take_lease(self.kv, cfg.node)
                if rev is None:
                    self.depose(f"another engine holds the lease ({e})")
                    return
                log.warning("the lease had expired while the log was unreachable: retaken")
                self.lease_rev = rev

    def depose(self, why: str) -> None:
        if not self.dead:
            self.dead = True
            log.error("deposed: %s; answering nothing more", why)
            self.on_deposed(why)

    async def close(self) -> None:
        self.dead = True
        for f in self.tokens.values():
            if f.timer is not None:
                f.timer.cancel()
        self.tokens.clear()
        await self.link.close()
        for t in self.tasks:
            t.cancel()
            with contextlib.suppress(BaseException):
                await t


async def take_lease(kv: Any, node: str) -> int | None:
    """The lease's revision if this engine got it (no live primary), else None."""
    try:
        return int(await kv.create(LEASE_KEY, node.encode()))
    except Exception:
        return None


# ----------------------------------------------------------------------------- retention
# The stream would grow forever (and stop taking appends when the servers' store is full).
# After each snapshot the primary uploads it to an object store bucket next to the stream and
# purges the messages that the snapshot before it covers (one snapshot period stays, for a
# standby that is a little behind). A standby whose data ends before the stream's first
# message starts from the newest uploaded snapshot, then follows the stream.
SNAPSHOTS_KEPT = 2  # uploaded snapshots kept in the bucket


def snapshot_bucket(cfg: ReplicationConfig) -> str:
    return f"{cfg.stream}_SNAPSHOTS"


async def snapshot_store(js: Any, cfg: ReplicationConfig) -> Any:
    try:
        return await js.object_store(snapshot_bucket(cfg))
    except Exception:
        return await js.create_object_store(snapshot_bucket(cfg), replicas=cfg.replicas)


async def upload_snapshot(js: Any, cfg: ReplicationConfig, name: str, data: bytes) -> None:
    """Put a snapshot file's bytes (``journal.snapshot_name``) in the bucket; drop old ones."""
    store = await snapshot_store(js, cfg)
    await store.put(name, data)
    names = sorted((i.name for i in await store.list() if not i.deleted), key=journal.seq_of)
    for old in names[:-SNAPSHOTS_KEPT]:
        await store.delete(old)


async def newest_snapshot(js: Any, cfg: ReplicationConfig) -> tuple[str, bytes] | None:
    """The newest uploaded snapshot (its file name and bytes), None if there is none."""
    try:
        store = await js.object_store(snapshot_bucket(cfg))
        infos = [i for i in await store.list() if not i.deleted]
    except Exception:  # no bucket yet, or an empty one
        return None
    if not infos:
        return None
    name = max((i.name for i in infos), key=journal.seq_of)
    return name, (await store.get(name)).data


def purge_point(marks: deque[tuple[int, int]], snapshot_seq: int, next_seq: int) -> int:
    """The first stream sequence a snapshot at ``snapshot_seq`` does not wholly cover (every
    message before it holds commands up to ``snapshot_seq`` only); ``next_seq`` if all do. Marks
    up to there are dropped."""
    while marks and marks[0][0] <= snapshot_seq:
        marks.popleft()
    return marks[0][1] if marks else next_seq


async def first_engine_seq(js: Any, cfg: ReplicationConfig) -> int:
    """The first command sequence the stream still holds (0: nothing was purged)."""
    info = await js.stream_info(cfg.stream)
    if info.state.first_seq <= 1 or not info.state.messages:
        return 0
    msg = await js.get_msg(cfg.stream, info.state.first_seq)
    marker = (msg.headers or {}).get(TAKEOVER)
    if marker is not None:
        return int(marker.partition(" ")[2]) + 1
    for batch in journal.decode_records(msg.data or b"", f"{cfg.stream} message {msg.seq}"):
        return batch.first_seq
    return 0


class Follower:
    """The standby's side: applies the stream to ``engine`` as it is written (and appends the
    records to the local journal through ``write``), from the stream's first message on,
    skipping what the engine already has."""

    def __init__(self, cfg: ReplicationConfig, js: Any, engine: Engine,
                 write: Callable[[bytes], None]) -> None:  # fmt: skip
        self.cfg = cfg
        self.js = js
        self.engine = engine
        self.write = write
        self.stream_seq = 0  # the last stream message applied
        self.applied = 0
        self.sub: Any = None
        self.failed: Exception | None = None  # why following stopped (catch_up raises it)
        self.log_seq = 0  # the last engine sequence number the log holds

    async def start(self) -> None:
        self.sub = await self.js.subscribe(self.cfg.subject, ordered_consumer=True,
                                           cb=self._on_msg)  # fmt: skip

    async def _on_msg(self, msg: Any) -> None:
        try:
            self.apply_message(msg.data, msg.metadata.sequence.stream, msg.headers or {})
        except Exception as e:  # a diverged or damaged log: the server decides what to do
            self.failed = e

    def apply_message(self, data: bytes, stream_seq: int, headers: dict) -> None:
        engine = self.engine
        where = f"{self.cfg.stream} message {stream_seq}"
        marker = headers.get(TAKEOVER)
        if marker is not None:
            node, _, at = marker.partition(" ")
            self.log_seq = max(self.log_seq, int(at))
            if int(at) < engine.seq and node != self.cfg.node:
                # This engine holds commands past where another took over: they were never
                # replicated, so never acknowledged, and the log has other commands there.
                raise Diverged(f"{where}: {node} took over at seq {at}; this data goes to "
                               f"seq {engine.seq}")  # fmt: skip
        fresh = False
        for batch in journal.decode_records(data, where):
            self.log_seq = batch.first_seq + len(batch.entries) - 1
            if self.log_seq <= engine.seq:
                continue  # the local journal or snapshot has it
            self.applied += journal.apply_batch(batch, engine, where)
            fresh = True
        if fresh:
            self.write(data)  # the primary's records, as they are (replay skips what it has)
        self.stream_seq = stream_seq

    async def catch_up(self, timeout: float = 30.0) -> int:
        """Until every message the stream has now is applied; returns its last sequence."""
        info = await self.js.stream_info(self.cfg.stream)
        last = info.state.last_seq
        deadline = time.monotonic() + timeout
        while self.stream_seq < last:
            if self.failed is not None:
                raise self.failed
            if time.monotonic() > deadline:
                raise TimeoutError(f"standby at stream seq {self.stream_seq}, log at {last}")
            await asyncio.sleep(0.005)
        return last

    def check_not_ahead(self) -> None:
        """Before taking over: this engine must hold nothing the log does not (a primary that
        was killed between its journal write and the log's acknowledgement)."""
        if self.engine.seq > self.log_seq:
            raise Diverged(f"this data goes to seq {self.engine.seq}, the log to {self.log_seq}")

    async def stop(self) -> None:
        if self.sub is not None:
            with contextlib.suppress(Exception):
                await self.sub.unsubscribe()
            self.sub = None

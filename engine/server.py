"""The engine process: the imperative shell around engine.core.

One thread on one (optionally pinned) core runs a uvloop event loop that:
1. drains up to ``batch_max`` frames from the ROUTER socket (each frame a MessagePack array of
   commands from one gateway),
2. applies every command to the core with one timestamp for the batch,
3. writes the batch's write commands to the journal as one record (group commit),
4. only then sends each gateway one frame with all of its replies and events,
5. publishes per-market Trades/Depth/Bbo on the PUB socket,
6. snapshots every ``snapshot_every`` commands, written by a forked child (the loop goes on).

Bad frames are answered with a Rejected (code 1001/1004) and never stop the loop. Fan-out is
bounded: the PUB socket's high-water mark drops messages for a slow subscriber (who sees the
sequence gap and resynchronises), and a gateway whose ROUTER queue is full loses replies
(counted in the metrics) rather than stalling the engine.

SIGINT/SIGTERM: finish the current batch, write a snapshot, close the journal, exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import shutil
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import msgspec
import uvloop
import zmq

from engine import curve, journal, replication
from engine.appendlink import AppendLink
from engine.core import Engine
from protocol import config, salvage
from protocol.enums import RejectCode
from protocol.messages import Command, Tick
from protocol.metrics import Exporter

log = logging.getLogger("engine")

MAX_FRAME = 1 << 20  # bytes; larger frames are rejected (zmq drops peers beyond 16 MiB)
CLOCK = b"\x00clock"  # the origin of the engine's own Ticks (no ZeroMQ peer can have it)
CLOCK_EVERY = 0.05  # seconds between looks at the earliest good-till-date expiry
MAX_COMMANDS_PER_FRAME = 10_000
REPLICATED_BATCH_BYTES = 64 << 10  # a replicated batch stops reading frames past this
REAP_EVERY = 0.02  # s between looks at a snapshot child still writing
COMMAND_TAGS = salvage.tags_of(Command)


class Metrics(msgspec.Struct):
    commands: int = 0
    writes: int = 0
    batches: int = 0
    frames_in: int = 0
    frames_out: int = 0
    md_out: int = 0
    rejected_frames: int = 0
    dropped_replies: int = 0
    internal_errors: int = 0
    snapshots: int = 0
    snapshot_fork_ms: float = 0.0  # how long the last snapshot stopped the engine (the fork)
    recovered: int = 0
    ticks: int = 0  # Ticks sent to expire good-till-date orders
    replicated_batches: int = 0  # batches the replicated log acknowledged (primary)
    replication_retries: int = 0  # appends retried (no majority for a while)
    followed: int = 0  # commands applied from the replicated log (standby)
    held_batches: int = 0  # batches whose replies wait for the log now
    log_purged_to: int = 0  # the replicated log's messages below this were purged (primary)


class EngineServer:
    def __init__(self, exchange: config.Exchange, data_dir: Path | None = None) -> None:
        self.exchange = exchange
        self.cfg = exchange.engine
        self.data_dir = Path(data_dir or self.cfg.data_dir)
        self.engine = Engine(exchange, epoch=time.time_ns())
        self.metrics = Metrics()
        self.decoder = msgspec.msgpack.Decoder(list[Command])
        self.raw_decoder = msgspec.msgpack.Decoder(list[msgspec.Raw])
        self.one_decoder = msgspec.msgpack.Decoder(Command)
        self.encoder = msgspec.msgpack.Encoder()
        self.ctx = zmq.Context()
        self.router: zmq.Socket | None = None
        self.pub: zmq.Socket | None = None
        self.journal: journal.Journal | None = None
        self.guard: curve.Guard | None = None
        self.last_snapshot = 0
        self._snapshotter: tuple[int, int, float] | None = None  # (pid, seq, start) of a child
        self.stopped: asyncio.Event | None = None  # created inside the loop
        self._stopping = False
        # replication (engine/replication.py): the primary's appender, and the batches whose
        # replies and market data wait for it, oldest first: [acknowledged, replies, md]
        self.replicator: replication.Replicator | None = None
        self.held: deque[list] = deque()
        self.js: Any = None  # the JetStream context (replicated): snapshots go there too
        self._ship_next = 0  # the newest snapshot not uploaded yet
        self._purge_to = 0  # the stream sequence the previous snapshot covered up to
        self._ship_task: asyncio.Future | None = None
        self.exit_code = 0

    # ------------------------------------------------------------------- lifecycle
    def recover(self) -> journal.Recovery:
        t0 = time.perf_counter()
        rec = journal.recover(self.data_dir, self.engine)
        self.engine.validate()
        self.last_snapshot = self.engine.seq
        self.metrics.recovered = rec.replayed
        log.info(
            "recovered seq %d: snapshot at %d + %d journaled commands in %.3fs%s",
            self.engine.seq,
            rec.snapshot_seq,
            rec.replayed,
            time.perf_counter() - t0,
            f", truncated torn tail of {rec.truncated_bytes} bytes" if rec.truncated_bytes else "",
        )
        return rec

    def check_curve(self) -> None:
        if self.cfg.curve_keys and self.guard is None:
            self.guard = curve.Guard(self.ctx, Path(self.cfg.curve_keys))

    def bind(self) -> None:
        if self.cfg.curve_keys and self.guard is None:
            self.guard = curve.Guard(self.ctx, Path(self.cfg.curve_keys))
            log.info(
                "CURVE on, keys in %s; admitted clients: %s",
                self.cfg.curve_keys,
                ", ".join(self.guard.admitted) or "none",
            )
        self.router = self.ctx.socket(zmq.ROUTER)
        if self.guard is not None:
            self.guard.secure(self.router)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.router.setsockopt(zmq.SNDHWM, self.cfg.router_hwm)
        self.router.setsockopt(zmq.RCVHWM, self.cfg.router_hwm)
        self.router.setsockopt(zmq.MAXMSGSIZE, 16 * MAX_FRAME)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.bind(self.cfg.commands)
        self.pub = self.ctx.socket(zmq.PUB)
        if self.guard is not None:
            self.guard.secure(self.pub)
        self.pub.setsockopt(zmq.SNDHWM, self.cfg.pub_hwm)
        self.pub.setsockopt(zmq.LINGER, 0)
        self.pub.bind(self.cfg.market_data)
        self.open_journal()

    def open_journal(self) -> None:
        if self.journal is None:
            self.journal = journal.Journal(
                self.data_dir, self.engine.seq + 1, self.cfg.fsync == "batch"
            )

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopped = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop)
        assert self.router is not None
        loop.add_reader(self.router.FD, self._on_readable)
        loop.call_soon(self._on_readable)  # messages may have queued before the reader existed
        loop.call_later(CLOCK_EVERY, self._clock, loop)
        log.info(
            "engine ready: commands on %s, market data on %s, data in %s, epoch %d",
            self.cfg.commands,
            self.cfg.market_data,
            self.data_dir,
            self.engine.epoch,
        )
        await self.stopped.wait()
        loop.remove_reader(self.router.FD)
        if self.replicator is not None:
            await self.replicator.close()
        self.shutdown()

    async def serve_replicated(self) -> None:
        """With ``[replication]``: follow the replicated log as a standby until the lease is
        free, take it, then serve as the primary (docs: engine/replication.py)."""
        cfg = self.exchange.replication
        nc = await replication.connect(cfg)
        js, kv = await replication.ensure_log(nc.jetstream(), cfg)
        self.js = js
        first = await replication.first_engine_seq(js, cfg)
        if first and self.engine.seq < first - 1:  # the log was purged past this data
            await self._start_from_uploaded_snapshot(first)
        link = AppendLink(cfg.servers, lambda *_: None, name=cfg.node, tls_ca=cfg.tls_ca)
        await link.connect()
        if link.max_payload < replication.MIN_PAYLOAD:
            await link.close()
            await nc.close()
            raise SystemExit(
                f"the NATS servers take messages up to {link.max_payload} bytes; the replicated "
                f"journal needs {replication.MIN_PAYLOAD} (max_payload: 8MB in their config)"
            )
        self.open_journal()
        follower = replication.Follower(cfg, js, self.engine, self._follow_write)
        await follower.start()
        log.info("standby %s: following %s on %s", cfg.node, cfg.stream, ",".join(cfg.servers))
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(self._take_over(follower, kv, js))
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            rev, marker = await task
        except asyncio.CancelledError:  # stopped while a standby: snapshot what it has
            log.info("standby stopping at seq %d", self.engine.seq)
            await follower.stop()
            await nc.close()
            await link.close()
            self.shutdown()
            return
        except replication.Diverged as e:
            log.error("%s: moving the data aside to rebuild from the log", e)
            await follower.stop()
            await nc.close()
            await link.close()
            self.move_data_aside("diverged")
            self.exit_code = 5
            return
        await follower.stop()
        self.metrics.followed = follower.applied
        log.info("primary %s: took over at seq %d (log seq %d)", cfg.node, self.engine.seq, marker)
        self.replicator = replication.Replicator(cfg, link, kv, marker, rev, self._deposed)
        self.bind()
        try:
            await self.serve()
        finally:
            await nc.close()

    async def _take_over(self, follower: replication.Follower, kv: object, js: object
                         ) -> tuple[int, int]:  # fmt: skip
        cfg = self.exchange.replication
        while True:
            await follower.catch_up(timeout=600.0)
            rev = await replication.take_lease(kv, cfg.node)
            if rev is None:
                await asyncio.sleep(cfg.heartbeat)
                continue
            while True:  # applied everything, then fence the log at its end
                last = await follower.catch_up(timeout=600.0)
                if last:  # (an empty log: replication just turned on, this data is the start)
                    follower.check_not_ahead()
                try:
                    marker = await replication.append_marker(js, cfg, last, self.engine.seq)
                    return rev, marker
                except Exception as e:
                    if replication.error_code(e) != replication.WRONG_LAST_SEQUENCE:
                        log.warning("takeover marker not acknowledged (%s); retrying", e)
                    await asyncio.sleep(0.02)

    async def _start_from_uploaded_snapshot(self, first: int) -> None:
        """This data ends before the first command the log still holds: load the newest
        snapshot the primary uploaded (it covers at least up to there) and follow from it."""
        cfg = self.exchange.replication
        got = await replication.newest_snapshot(self.js, cfg)
        if got is None:
            raise SystemExit(f"the replicated log starts at command {first}, this data ends at "
                             f"{self.engine.seq}, and no snapshot was uploaded")  # fmt: skip
        name, data = got
        self.engine.restore(journal.decode_snapshot(data, name))  # checksummed: a bad one raises
        self.engine.validate()
        if self.engine.seq < first - 1:
            raise SystemExit(f"the newest uploaded snapshot ({self.engine.seq}) ends before the "
                             f"replicated log starts ({first})")  # fmt: skip
        self.data_dir.mkdir(parents=True, exist_ok=True)
        journal.write_snapshot(self.data_dir, self.engine)  # a restart starts from it too
        self.last_snapshot = self.engine.seq
        log.info("standby: loaded the uploaded %s (the log starts at command %d)", name, first)

    async def _ship_snapshots(self) -> None:
        """The primary's newest snapshot: upload it, then purge the stream up to where the
        snapshot shipped before it reached (one period stays for a standby a little behind).
        Snapshots written while one is on its way are skipped but the newest."""
        cfg = self.exchange.replication
        while self._ship_next and self.replicator is not None:
            seq, self._ship_next = self._ship_next, 0
            rep = self.replicator
            try:
                point = replication.purge_point(rep.marks, seq, rep.last_seq + 1)
                path = self.data_dir / journal.snapshot_name(seq)
                data = await asyncio.to_thread(path.read_bytes)
                await replication.upload_snapshot(self.js, cfg, path.name, data)
                if self._purge_to > 1:
                    await self.js.purge_stream(cfg.stream, seq=self._purge_to)
                    self.metrics.log_purged_to = self._purge_to
                    log.info("snapshot %d uploaded; replicated log purged below message %d",
                             seq, self._purge_to)  # fmt: skip
                self._purge_to = point
            except Exception as e:  # the log keeps working; the next snapshot tries again
                log.warning("snapshot %d not uploaded or log not purged: %s", seq, e)
        self._ship_task = None

    def _follow_write(self, records: bytes) -> None:
        assert self.journal is not None
        self.journal.append(records)
        if self.engine.seq - self.last_snapshot >= self.cfg.snapshot_every:
            self.journal_roll()

    def _deposed(self, why: str) -> None:
        """Another engine is primary: answer nothing more (the held replies are dropped: they
        were never replicated, so never acknowledged), move the data aside and exit."""
        self.held.clear()
        self.exit_code = 4
        self.move_data_aside("deposed")
        self.stop()

    def move_data_aside(self, why: str) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None
        if self.data_dir.exists():
            aside = self.data_dir.with_name(f"{self.data_dir.name}.{why}-{time.time_ns()}")
            shutil.move(str(self.data_dir), aside)
            log.error("data directory moved to %s; the next start rebuilds from the log", aside)

    def stop(self) -> None:
        if not self._stopping:
            self._stopping = True
            log.info("stopping: finishing the batch, writing a snapshot")
            assert self.stopped is not None
            self.stopped.set()

    def shutdown(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None
            if self.exit_code == 0:  # (a deposed engine's data has moved aside)
                self.snapshot()
        for sock in (self.router, self.pub):
            if sock is not None:
                sock.close(0)
        if self.guard is not None:
            self.guard.stop()
        self.ctx.term()
        log.info("engine stopped at seq %d", self.engine.seq)

    def snapshot(self) -> None:
        """Write a snapshot now, in this process (at shutdown: nothing else to do)."""
        self._wait_for_snapshotter()
        t0 = time.perf_counter()
        path = journal.write_snapshot(self.data_dir, self.engine)
        self.last_snapshot = self.engine.seq
        self.metrics.snapshots += 1
        journal.prune(self.data_dir)
        log.info("snapshot %s in %.3fs", path.name, time.perf_counter() - t0)

    def snapshot_in_child(self) -> None:
        """Write a snapshot without stopping the loop: a forked child has a copy-on-write image
        of the engine exactly as it is between two batches (consistent by construction: the
        fork happens between batches, in the one thread that changes state), writes it and
        prunes, while this process goes on matching. The pause is the fork itself (copying
        page tables), logged and kept in the metrics; the child is reaped from the loop, and a
        failed child only means the next batch tries again (older snapshots and segments are
        kept until a newer snapshot is written)."""
        t0 = time.perf_counter()
        seq = self.engine.seq
        pid = os.fork()
        if pid == 0:  # the child: no sockets, no logging, no loop; only the file
            code = 1
            try:
                journal.write_snapshot(self.data_dir, self.engine)
                journal.prune(self.data_dir)
                code = 0
            finally:
                os._exit(code)
        pause = time.perf_counter() - t0
        self.metrics.snapshot_fork_ms = round(pause * 1000, 3)
        self._snapshotter = (pid, seq, t0)
        asyncio.get_running_loop().call_later(REAP_EVERY, self._reap_snapshotter)

    def _reap_snapshotter(self) -> None:
        if self._snapshotter is None:
            return
        pid, seq, t0 = self._snapshotter
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            asyncio.get_running_loop().call_later(REAP_EVERY, self._reap_snapshotter)
            return
        self._snapshot_done(status)
        if self.engine.seq - self.last_snapshot >= self.cfg.snapshot_every:
            self.journal_roll()  # it fell due while the child wrote

    def _wait_for_snapshotter(self) -> None:
        if self._snapshotter is not None:
            _, status = os.waitpid(self._snapshotter[0], 0)
            self._snapshot_done(status)

    def _snapshot_done(self, status: int) -> None:
        assert self._snapshotter is not None
        _, seq, t0 = self._snapshotter
        self._snapshotter = None
        code = os.waitstatus_to_exitcode(status)
        if code == 0:
            self.last_snapshot = seq
            replicated = self.replicator is not None and not self._stopping
            if replicated and self.exchange.replication.purge:
                self._ship_next = seq
                if self._ship_task is None:
                    self._ship_task = asyncio.ensure_future(self._ship_snapshots())
            self.metrics.snapshots += 1
            log.info(
                "snapshot %s written by a child in %.3fs (engine paused %.1f ms to fork)",
                journal.snapshot_name(seq),
                time.perf_counter() - t0,
                self.metrics.snapshot_fork_ms,
            )
        else:
            log.error("snapshot child for seq %d failed (exit %s): retried next batch", seq, code)

    # ---------------------------------------------------------------------- batches
    def _on_readable(self) -> None:
        router = self.router
        assert router is not None
        batch_max = self.cfg.batch_max
        # replicated: batches of at most ~budget bytes of commands, so that one append (and
        # one batch's wait for it) stays short and its record fits a NATS message
        budget = REPLICATED_BATCH_BYTES if self.replicator is not None else 1 << 62
        events = cast("Callable[[int], int]", router.getsockopt)  # EVENTS is an int option
        while not self._stopping and events(zmq.EVENTS) & zmq.POLLIN:
            if len(self.held) > self.exchange.replication.max_pending:
                return  # the log is behind: read on once it acknowledges (_flush_held)
            frames = []
            size = 0
            for _ in range(batch_max):
                try:
                    frame = router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                frames.append(frame)
                size += len(frame[-1])
                if size >= budget:
                    break
            if frames:
                self.process(frames)
                if self.replicator is not None:
                    # Let the loop read the log's acknowledgements before the next batch: a
                    # client that keeps sending would otherwise hold back every reply.
                    asyncio.get_running_loop().call_soon(self._on_readable)
                    return

    def _clock(self, loop: asyncio.AbstractEventLoop) -> None:
        """A good-till-date order's time has passed and no command came: send the engine a
        Tick (journaled like any write), which expires it (docs: engine/core.py)."""
        if self._stopping:
            return
        due = self.engine.next_expiry()
        if due and due <= time.time_ns():
            self.metrics.ticks += 1
            self.process([[CLOCK, self.encoder.encode([Tick(0)])]])
        loop.call_later(CLOCK_EVERY, self._clock, loop)

    def process(self, frames: list[list[bytes]]) -> None:
        """Apply one batch of frames, journal it, then reply and publish."""
        engine = self.engine
        m = self.metrics
        ts = time.time_ns()
        first_seq = engine.seq + 1
        writes: list[tuple[bytes, object]] = []
        apply = engine.apply
        for frame in frames:
            m.frames_in += 1
            if len(frame) != 2:
                self._reject_frame(frame[0], RejectCode.MALFORMED, "expected one payload frame")
                continue
            origin, payload = frame
            for cmd in self._decode(origin, payload):
                m.commands += 1
                before = engine.seq
                try:
                    apply(cmd, ts, origin)
                except Exception:
                    m.internal_errors += 1
                    log.exception("internal error on %r", cmd)
                    engine.refuse(origin, getattr(cmd, "req", 0), RejectCode.INTERNAL,
                                  "internal error")  # fmt: skip
                if engine.seq != before:
                    writes.append((origin, cmd))
        record = b""
        if writes:
            assert self.journal is not None
            record = self.journal.write(first_seq, ts, writes)
            m.writes += len(writes)
        m.batches += 1
        out, md = engine.drain(), engine.market_data(ts)
        if self.replicator is None:
            self._send_replies(out)
            self._publish(md)
        else:  # nothing leaves before the log has this batch, and every batch before it
            entry = [not writes, out, md]
            self.held.append(entry)
            if writes:
                self.replicator.submit(record, lambda: self._acked(entry), engine.seq)
            else:
                self._flush_held()
        if engine.seq - self.last_snapshot >= self.cfg.snapshot_every:
            self.journal_roll()

    def _acked(self, entry: list) -> None:
        entry[0] = True
        self.metrics.replicated_batches += 1
        assert self.replicator is not None
        self.metrics.replication_retries = self.replicator.stats["retries"]
        self._flush_held()

    def _flush_held(self) -> None:
        held = self.held
        backlog = len(held) > self.exchange.replication.max_pending
        sent = False
        while held and held[0][0]:
            sent = True
            _, out, md = held.popleft()
            self._send_replies(out)
            self._publish(md)
        self.metrics.held_batches = len(held)
        if self.router is not None and (backlog or sent):
            # Sends outside _on_readable can swallow the ROUTER's (edge-triggered) read event
            # of frames that arrived meanwhile: look again (and read on after a backlog).
            asyncio.get_running_loop().call_soon(self._on_readable)

    def journal_roll(self) -> None:
        """Snapshot (in a child), then continue in a fresh journal segment. While a child is
        still writing the previous one, wait: it is tried again when that child is reaped."""
        if self._snapshotter is not None:
            return
        self.snapshot_in_child()
        assert self.journal is not None
        self.journal.open(self.engine.seq + 1)

    def _decode(self, origin: bytes, payload: bytes) -> list:
        if len(payload) > MAX_FRAME:
            self._reject_frame(
                origin, RejectCode.TOO_LARGE, f"frame of {len(payload)} bytes exceeds {MAX_FRAME}"
            )
            return []
        try:
            cmds = self.decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return self._salvage(origin, payload)
        if len(cmds) > MAX_COMMANDS_PER_FRAME:
            self._reject_frame(
                origin,
                RejectCode.TOO_LARGE,
                f"{len(cmds)} commands in one frame, at most {MAX_COMMANDS_PER_FRAME}",
            )
            return []
        return cmds

    def _salvage(self, origin: bytes, payload: bytes) -> list:
        """Decode item by item so one bad command rejects only itself."""
        try:
            raws = self.raw_decoder.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self._reject_frame(
                origin, RejectCode.MALFORMED, f"frame must be a MessagePack array of commands: {e}"
            )
            return []
        good = []
        for raw in raws[:MAX_COMMANDS_PER_FRAME]:
            try:
                good.append(self.one_decoder.decode(raw))
            except (msgspec.DecodeError, msgspec.ValidationError) as e:
                item = salvage.msgpack_item(raw)
                tag = salvage.msgpack_tag(item)
                unknown = tag is not None and tag not in COMMAND_TAGS
                code = RejectCode.UNKNOWN_MESSAGE if unknown else RejectCode.MALFORMED
                self._reject_frame(origin, code, f"bad command: {e}", salvage.msgpack_req(item))
        return good

    def _reject_frame(self, origin: bytes, code: int, reason: str, req: int = 0) -> None:
        self.metrics.rejected_frames += 1
        self.engine.refuse(origin, req, code, reason)

    def _send_replies(self, out: list[tuple[bytes, list]]) -> None:
        router = self.router
        assert router is not None
        encode = self.encoder.encode
        for origin, msgs in out:
            if origin == CLOCK:
                continue  # the answer to our own Tick
            try:
                router.send_multipart([origin, encode(msgs)], zmq.NOBLOCK)
                self.metrics.frames_out += 1
            except (zmq.Again, zmq.ZMQError) as e:  # full queue or peer gone: never block
                self.metrics.dropped_replies += len(msgs)
                log.warning("dropped %d replies for %r: %s", len(msgs), origin, e)
                if isinstance(e, zmq.ZMQError) and e.errno == zmq.EHOSTUNREACH:
                    self.engine.unwatch(origin)  # gone: copies to it would only drop
            except (OverflowError, TypeError, ValueError):  # a bug: never wedge the loop
                self.metrics.internal_errors += 1
                log.exception("cannot encode replies for %r", origin)

    def _publish(self, md: list[tuple[bytes, object]]) -> None:
        pub = self.pub
        assert pub is not None
        encode = self.encoder.encode
        for topic, msg in md:
            pub.send_multipart([topic, encode(msg)], zmq.NOBLOCK)
            self.metrics.md_out += 1


def loopback(endpoint: str) -> bool:
    """True for tcp:// on 127.0.0.0/8, localhost or [::1], and for ipc:// and inproc://."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    host = rest.rsplit(":", 1)[0]
    return host in ("localhost", "[::1]") or host.startswith("127.")


def pin(cpu: int) -> None:
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
        log.info("pinned to cpu %d", cpu)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="TOML config (default: the shipped one)")
    parser.add_argument("--data-dir", help="journal and snapshots (overrides the config)")
    parser.add_argument("--cpu", type=int, help="pin the engine thread to this core")
    parser.add_argument("--commands", help="ROUTER endpoint (overrides the config)")
    parser.add_argument("--market-data", help="PUB endpoint (overrides the config)")
    parser.add_argument("--node", help="this engine's name in the replication lease")
    parser.add_argument("--metrics", help="host:port of /metrics (overrides [metrics] engine)")
    args = parser.parse_args(argv)
    config.log_to_stderr()
    try:
        exchange = config.load(args.config)
    except config.ConfigError as e:
        log.error("bad config: %s", e)
        return 2
    config.use_engine(exchange, args.commands, args.market_data)
    if args.node:
        exchange.replication.node = args.node
    if args.metrics is not None:
        exchange.metrics.engine = args.metrics
    server = EngineServer(exchange, Path(args.data_dir) if args.data_dir else None)
    try:
        server.recover()
    except journal.JournalCorrupt as e:
        log.error("refusing to start: %s", e)
        return 3
    for name, endpoint in (
        ("commands", exchange.engine.commands),
        ("market_data", exchange.engine.market_data),
    ):
        if not loopback(endpoint) and not exchange.engine.curve_keys:
            log.error(
                "refusing to start: engine.%s = %s is not a loopback address and CURVE is "
                "off; the engine port is trusted and opens to the network only with "
                "engine.curve_keys set (python -m engine keys DIR NAME...)",
                name,
                endpoint,
            )
            return 2
    try:
        if exchange.replication.servers:
            server.check_curve()  # a standby binds its ports when it takes over
        else:
            server.bind()
    except curve.CurveKeyError as e:
        log.error("refusing to start: %s", e)
        return 2
    metrics = exporter(server)
    metrics.serve(exchange.metrics.engine)  # its thread starts before pinning: not on our core
    gc.collect()
    gc.freeze()  # the recovered state is long-lived: keep it out of every collection
    pin(args.cpu if args.cpu is not None else exchange.engine.cpu)
    if exchange.replication.servers:
        uvloop.run(server.serve_replicated())
    else:
        uvloop.run(server.serve())
    metrics.close()
    return server.exit_code


def exporter(server: EngineServer) -> Exporter:
    """The engine's Prometheus metrics: its counters, and gauges that cost a ``len()`` each,
    all read only when scraped (the command path does not change)."""
    engine = server.engine
    books = list(engine.books.values())
    state = {
        "seq": lambda: engine.seq,
        "open_orders": lambda: len(engine.orders),
        "accounts": lambda: len(engine.ledger.accounts),
    }
    return (
        Exporter("engine")
        .add(server.metrics, gauges=("recovered", "snapshot_fork_ms"))
        .add(lambda: {k: f() for k, f in state.items()}, gauges=state, what="Engine")
        .labelled(
            "book_levels",
            "price levels in the book",
            ["market", "side"],
            lambda: [
                ((b.symbol, s), len(lv))
                for b in books
                for s, lv in (("bid", b.bid_levels), ("ask", b.ask_levels))
            ],
        )
        .labelled(
            "trades",
            "trades of the market since the exchange began (its last trade id)",
            ["market"],
            lambda: [((b.symbol,), b.next_trade_id - 1) for b in books],
            counter=True,
        )
    )

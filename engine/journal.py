"""The journal (append-only, group commit) and snapshots, and recovery from both.

Files in the data directory:
- ``journal-<first seq>.log``: a segment of group-commit records. A record is one batch of
  write commands that share a timestamp and carry consecutive sequence numbers:
  header ``<magic u32, payload length u32, payload crc32 u32, header crc32 u32>`` then the
  payload, MessagePack ``[first_seq, ts, [[origin, command], ...]]``.
- ``snapshot-<seq>.snap``: the full engine state after command ``seq``: ``EXSNAP1\\n``, crc32
  u32, length u64, MessagePack ``EngineState``. Written to a temporary file, fsynced, renamed.

Start-up loads the newest snapshot that checks out, then replays every journal record after
it. A torn tail - the last record of the last segment cut short by a crash mid-write, or ending
in zeros - is truncated with a warning: it was never acknowledged, because replies leave the
engine only after their batch is written. Any other damage (a bad record followed by more
data, a gap in sequence numbers, an undecodable record with a good checksum) stops start-up
with a message naming the file and offset; an operator decides, the engine does not guess.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from engine.core import Engine
from engine.views import EngineState
from protocol.messages import Command

if TYPE_CHECKING:
    import io

log = logging.getLogger("engine.journal")

MAGIC = 0x4A524E31  # "JRN1"
HEADER = struct.Struct("<IIII")
SNAP_MAGIC = b"EXSNAP1\n"
SNAP_HEADER = struct.Struct("<IQ")
MAX_RECORD = 1 << 30


class JournalCorrupt(RuntimeError):
    """The journal or snapshot is damaged in a way that is not a torn tail."""


class Batch(msgspec.Struct, array_like=True):
    first_seq: int
    ts: int
    entries: list[tuple[bytes, Command]]


_batch_encoder = msgspec.msgpack.Encoder()
_batch_decoder = msgspec.msgpack.Decoder(Batch)
_state_decoder = msgspec.msgpack.Decoder(EngineState)


def encode_record(first_seq: int, ts: int, entries: list[tuple[bytes, object]]) -> bytes:
    payload = _batch_encoder.encode(Batch(first_seq, ts, entries))  # type: ignore[arg-type]
    head = struct.pack("<III", MAGIC, len(payload), zlib.crc32(payload))
    return head + struct.pack("<I", zlib.crc32(head)) + payload


def segment_name(first_seq: int) -> str:
    return f"journal-{first_seq:016d}.log"


def snapshot_name(seq: int) -> str:
    return f"snapshot-{seq:016d}.snap"


def seq_of(path: Path | str) -> int:
    """The sequence number in a snapshot's or a journal segment's file name."""
    return int(Path(path).stem.split("-")[1])


class Journal:
    """Appends group-commit records to the current segment."""

    def __init__(self, directory: Path, first_seq: int, fsync: bool) -> None:
        self.directory = directory
        self.fsync = fsync
        self.file: io.FileIO | None = None
        self.path = directory / segment_name(first_seq)
        self.open(first_seq)

    def open(self, first_seq: int) -> None:
        if self.file is not None:
            self.file.close()
        self.path = self.directory / segment_name(first_seq)
        self.file = open(self.path, "ab", buffering=0)

    def write(self, first_seq: int, ts: int, entries: list[tuple[bytes, object]]) -> bytes:
        """Write one batch; returns once the OS has it (and the disk, if fsync is on), with
        the record's bytes (what the replicated log gets too)."""
        record = encode_record(first_seq, ts, entries)
        self.append(record)
        return record

    def append(self, record: bytes) -> None:
        """Write records already encoded (a standby copying the primary's)."""
        assert self.file is not None
        self.file.write(record)
        if self.fsync:
            os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file is not None:
            if self.fsync:
                os.fsync(self.file.fileno())
            self.file.close()
            self.file = None


def write_snapshot(directory: Path, engine: Engine) -> Path:
    """Write the engine's state atomically; returns the snapshot's path."""
    payload = msgspec.msgpack.encode(engine.state())
    path = directory / snapshot_name(engine.seq)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(SNAP_MAGIC + SNAP_HEADER.pack(zlib.crc32(payload), len(payload)) + payload)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(directory)
    return path


def read_snapshot(path: Path) -> EngineState:
    return decode_snapshot(path.read_bytes(), str(path))


def decode_snapshot(data: bytes, where: str) -> EngineState:
    """A snapshot file's bytes (from disk, or uploaded to the replicated log), checked."""
    n = len(SNAP_MAGIC)
    if data[:n] != SNAP_MAGIC or len(data) < n + SNAP_HEADER.size:
        raise JournalCorrupt(f"{where}: not a snapshot file")
    crc, length = SNAP_HEADER.unpack_from(data, n)
    payload = data[n + SNAP_HEADER.size :]
    if len(payload) != length or zlib.crc32(payload) != crc:
        raise JournalCorrupt(f"{where}: checksum or length mismatch")
    try:
        return _state_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise JournalCorrupt(f"{where}: undecodable: {e}") from None


def prune(directory: Path, keep_snapshots: int = 2) -> None:
    """Keep the newest snapshots and the journal segments needed to replay from the oldest kept."""
    snaps = sorted(directory.glob("snapshot-*.snap"), key=seq_of)
    if len(snaps) < keep_snapshots:
        return  # (with fewer, the journal from the start stays: a damaged one is survivable)
    for old in snaps[:-keep_snapshots]:
        old.unlink()
    oldest_kept = seq_of(snaps[-keep_snapshots])
    segments = sorted(directory.glob("journal-*.log"), key=seq_of)
    for seg, nxt in zip(segments, segments[1:], strict=False):
        if seq_of(nxt) <= oldest_kept + 1:
            seg.unlink()


@dataclass
class Recovery:
    snapshot_seq: int = 0
    replayed: int = 0
    truncated_bytes: int = 0


def recover(directory: Path, engine: Engine) -> Recovery:
    """Load the newest good snapshot into ``engine`` and replay the journal after it."""
    directory.mkdir(parents=True, exist_ok=True)
    result = Recovery()
    for path in sorted(directory.glob("snapshot-*.snap"), key=seq_of, reverse=True):
        try:
            state = read_snapshot(path)
        except JournalCorrupt as e:
            log.warning("skipping damaged snapshot: %s", e)
            continue
        engine.restore(state)
        result.snapshot_seq = engine.seq
        break
    segments = sorted(directory.glob("journal-*.log"), key=seq_of)
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if not last and seq_of(segments[i + 1]) <= engine.seq + 1:
            continue  # wholly covered by the snapshot
        result.replayed += _replay_segment(seg, engine, last, result)
    engine.discard_output()
    return result


def _replay_segment(path: Path, engine: Engine, last: bool, result: Recovery) -> int:
    data = memoryview(path.read_bytes())
    size = len(data)
    off = 0
    applied = 0
    while off < size:
        problem = _check_record(data, off, size)
        if problem is not None:
            torn, why = problem
            if torn and last:
                log.warning(
                    "%s: truncating torn tail at offset %d (%d bytes): %s",
                    path,
                    off,
                    size - off,
                    why,
                )
                os.truncate(path, off)
                result.truncated_bytes += size - off
                break
            raise JournalCorrupt(f"{path}: damaged record at offset {off} of {size}: {why}")
        _, length, _, _ = HEADER.unpack_from(data, off)
        body = data[off + HEADER.size : off + HEADER.size + length]
        try:
            batch = _batch_decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise JournalCorrupt(f"{path}: record at offset {off} does not decode: {e}") from None
        applied += _apply_batch(batch, engine, path, off)
        off += HEADER.size + length
    return applied


def decode_records(data: bytes, where: str) -> list[Batch]:
    """The batches of whole records back to back (a message of the replicated log); any
    damage is JournalCorrupt (a replicated message is never torn)."""
    view = memoryview(data)
    size, off, out = len(view), 0, []
    while off < size:
        problem = _check_record(view, off, size)
        if problem is not None:
            raise JournalCorrupt(f"{where}: damaged record at offset {off}: {problem[1]}")
        _, length, _, _ = HEADER.unpack_from(view, off)
        try:
            out.append(_batch_decoder.decode(view[off + HEADER.size : off + HEADER.size + length]))
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise JournalCorrupt(f"{where}: record at offset {off} does not decode: {e}") from None
        off += HEADER.size + length
    return out


def apply_batch(batch: Batch, engine: Engine, where: str) -> int:
    """Apply a batch's commands that ``engine`` does not have yet, as replay does."""
    return _apply_batch(batch, engine, Path(where), 0)


def _check_record(data: memoryview, off: int, size: int) -> tuple[bool, str] | None:
    """None if the record at ``off`` is whole and intact, else (is it a torn tail?, why)."""
    rest = size - off
    if rest < HEADER.size:
        return True, "incomplete header"
    magic, length, crc, head_crc = HEADER.unpack_from(data, off)
    if magic != MAGIC or zlib.crc32(data[off : off + 12]) != head_crc or length > MAX_RECORD:
        if not any(data[off:]):
            return True, "zero-filled tail"
        return False, "bad record header"
    end = off + HEADER.size + length
    if end > size:
        return True, "record cut short"
    if zlib.crc32(data[off + HEADER.size : end]) != crc:
        return end == size, "payload checksum mismatch"
    return None


def _apply_batch(batch: Batch, engine: Engine, path: Path, off: int) -> int:
    """Apply the commands of one record that the engine does not have yet (seq > engine.seq)."""
    seq = engine.seq
    skip = seq + 1 - batch.first_seq  # entries the snapshot already holds
    if skip < 0:
        raise JournalCorrupt(
            f"{path}: gap at offset {off}: expected seq {seq + 1}, found {batch.first_seq}"
        )
    entries = batch.entries[skip:] if skip else batch.entries
    apply, ts = engine.apply, batch.ts
    for origin, cmd in entries:  # applied as engine.server does
        seq += 1
        if apply(cmd, ts, origin) != seq:
            raise JournalCorrupt(f"{path}: command {seq} at offset {off} is not a write command")
    engine.discard_output()
    return len(entries)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

"""Run real exchange processes on loopback for integration tests.

``EngineProc`` starts ``python -m engine`` on free loopback ports with its own data directory,
waits until it answers a Ping through the real ``EngineClient``, and stops it with SIGTERM,
SIGINT or SIGKILL. Its stderr (the log) goes to a file per run so a test can assert on it and a
failing test can show it. Nothing here sleeps for correctness: waiting is ``eventually()``
polling a condition under a generous deadline.

Later gateway tests reuse the same pieces: ``free_port()``, ``eventually()``,
``eventually_async()`` and ``Proc`` (any ``python -m`` module with a log file).
Fixtures live in ``tests/fixtures_engine.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

from bench.procs import launch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "protocol" / "default.toml"
START_TIMEOUT = 30.0  # generous: a loaded CI box may take seconds to import and recover
STOP_TIMEOUT = 30.0
BIND_RETRIES = 3
_ready_ids = itertools.count(1)


class ProcError(AssertionError):
    """A process did not do what a test needed (start, answer, stop). Carries its log."""


# ------------------------------------------------------------------------------ waiting


def eventually(
    check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``check`` until it returns something truthy (returned) or ``timeout`` passes.

    An AssertionError from ``check`` counts as "not yet"; the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            got = check()
            if got:
                return got
        except AssertionError as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"not true after {timeout}s: {what or check}" + (f" (last: {last})" if last else "")
            )
        time.sleep(interval)


async def eventually_async(
    check: Callable[[], Any | Awaitable[Any]],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "",
) -> Any:
    """``eventually`` for async code: ``check`` may be a plain or an async callable."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        try:
            got = check()
            if asyncio.iscoroutine(got):
                got = await got
            if got:
                return got
        except AssertionError as e:
            last = e
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"not true after {timeout}s: {what or check}" + (f" (last: {last})" if last else "")
            )
        await asyncio.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def endpoint(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


# ------------------------------------------------------------------------------ process


class Proc:
    """One ``python -m MODULE`` child with its output in a log file (one file per run)."""

    def __init__(self, module: str, workdir: Path, name: str | None = None) -> None:
        self.module = module
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name or module.replace(".", "-")
        self.popen: subprocess.Popen | None = None
        self.runs = 0
        self.log_path: Path | None = None
        self.returncode: int | None = None
        self.prefix: list[str] = []  # a command that runs it (``ip netns exec NS``)

    def args(self) -> list[str]:
        """Command-line arguments after ``-m MODULE``; subclasses add theirs."""
        return []

    def spawn(self) -> None:
        if self.running:
            raise ProcError(f"{self.name} is already running")
        self.runs += 1
        self.returncode = None
        self.log_path = self.workdir / f"{self.name}-{self.runs}.log"
        # The benchmarks' launcher, without what they do between fork and exec: pytest runs
        # threads (event loops, ZeroMQ, to_thread), where a preexec_fn may deadlock, and
        # PR_SET_PDEATHSIG fires when the *thread* that started the child ends (some tests
        # start processes from a worker thread). The child stays in the test's session, so a
        # Ctrl-C reaches it too; teardown kills whatever is left.
        self.popen = launch(
            [self.module, *self.args()], self.log_path, die_with_parent=False, own_session=False,
            prefix=self.prefix,
        )  # fmt: skip

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log(self) -> str:
        """The current (latest) run's log."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def logs(self) -> str:
        """Every run's log, oldest first, with a header per run."""
        parts = []
        for i in range(1, self.runs + 1):
            path = self.workdir / f"{self.name}-{i}.log"
            if path.exists():
                parts.append(f"----- {self.name} run {i} -----\n{path.read_text(errors='replace')}")
        return "\n".join(parts)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """Wait for the process to exit by itself; returns its exit code."""
        assert self.popen is not None
        try:
            self.returncode = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ProcError(
                f"{self.name} did not exit within {timeout}s; killed it\n{self.log()}"
            ) from None
        return self.returncode

    def signal(self, sig: int, timeout: float = STOP_TIMEOUT) -> int:
        """Send ``sig`` and wait for the exit; returns the exit code (negative: killed by)."""
        if not self.running:
            raise ProcError(f"{self.name} is not running (exit {self.returncode})\n{self.log()}")
        self.popen.send_signal(sig)  # type: ignore[union-attr]
        return self.wait(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM: the clean shutdown path. Returns the exit code."""
        return self.signal(signal.SIGTERM, timeout)

    def interrupt(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGINT, as Ctrl-C would."""
        return self.signal(signal.SIGINT, timeout)

    def kill(self) -> int:
        """SIGKILL (kill -9): no shutdown code runs. Returns the exit code (-9)."""
        if self.popen is None:
            return 0
        if self.popen.poll() is None:
            self.popen.kill()
        self.returncode = self.popen.wait()
        return self.returncode

    async def astop(self, timeout: float = STOP_TIMEOUT) -> int:
        """``stop`` without blocking the caller's event loop."""
        return await asyncio.to_thread(self.stop, timeout)

    def cleanup(self) -> None:
        """Kill whatever still runs (test teardown, also after failures)."""
        with contextlib.suppress(ProcessLookupError):
            self.kill()


class EngineProc(Proc):
    """The matching engine process on free loopback ports with a private data directory.

    ``config``: a TOML path (default: the shipped config). ``data_dir`` defaults to
    ``workdir/data``; a restart (``start`` after a stop) reuses it, which is the point of the
    recovery tests. Ports are chosen on the first start and kept across restarts; if a port was
    taken meanwhile (another process won the race) fresh ones are chosen.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        config: Path | None = None,
        data_dir: Path | None = None,
        cpu: int | None = None,
        name: str = "engine",
        ready_keys: Any = None,
    ) -> None:
        super().__init__("engine", workdir, name)
        self.ready_keys = ready_keys  # engine.curve.ClientKeys to ping with, when CURVE is on
        self.config = Path(config) if config else DEFAULT_CONFIG
        self.data_dir = Path(data_dir) if data_dir else self.workdir / "data"
        self.cpu = cpu
        self.commands = ""
        self.market_data = ""
        self.epoch = 0  # from the Pong that showed it ready
        self.seq = 0  # the last sequence number that Pong reported

    def args(self) -> list[str]:
        args = [
            "--config",
            str(self.config),
            "--data-dir",
            str(self.data_dir),
            "--commands",
            self.commands,
            "--market-data",
            self.market_data,
        ]
        if self.cpu is not None:
            args += ["--cpu", str(self.cpu)]
        return args

    def _pick_ports(self) -> None:
        self.commands = endpoint(free_port())
        self.market_data = endpoint(free_port())
        while self.market_data == self.commands:
            self.market_data = endpoint(free_port())

    # ------------------------------------------------------------------ start / stop
    def start(self, timeout: float = START_TIMEOUT) -> EngineProc:
        """Start and wait until a Ping is answered. Call from sync code only."""
        return asyncio.run(self.astart(timeout))

    async def astart(self, timeout: float = START_TIMEOUT) -> EngineProc:
        """Start and wait until a Ping is answered, from async code."""
        if not self.commands:
            self._pick_ports()
        for attempt in range(BIND_RETRIES):
            self.spawn()
            if await self._await_ready(timeout):
                return self
            if "Address already in use" in self.log() and attempt + 1 < BIND_RETRIES:
                self._pick_ports()
                continue
            break
        raise ProcError(
            f"engine exited with {self.returncode} before answering a Ping\n{self.log()}"
        )

    def start_expecting_exit(self, timeout: float = START_TIMEOUT) -> int:
        """Start a process that should refuse to run; returns its exit code."""
        if not self.commands:
            self._pick_ports()
        self.spawn()
        return self.wait(timeout)

    async def _await_ready(self, timeout: float) -> bool:
        """True once the engine answers a Ping; False if it exited first."""
        from engine.client import EngineClient, EngineError
        from protocol.messages import Ping

        identity = f"procs-ready-{os.getpid()}-{next(_ready_ids)}".encode()
        client = EngineClient(self.commands, identity, curve=self.ready_keys)
        await client.start(wait=None)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if not self.running:
                    self.returncode = self.popen.returncode  # type: ignore[union-attr]
                    return False
                try:
                    await client.wait_available(0.2)
                    pong = await client.request(Ping(0), timeout=2.0)
                    self.epoch, self.seq = pong.epoch, pong.seq
                    return True
                except EngineError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    raise ProcError(f"engine did not answer a Ping in {timeout}s\n{self.log()}")
        finally:
            await client.close()

    def files(self, pattern: str) -> list[Path]:
        """Data-directory files matching a glob, sorted by name (journal/snapshot order)."""
        return sorted(self.data_dir.glob(pattern))

    def segments(self) -> list[Path]:
        return self.files("journal-*.log")

    def snapshots(self) -> list[Path]:
        return self.files("snapshot-*.snap")


def write_config(path: Path, **engine: object) -> Path:
    """A copy of the shipped config with some ``[engine]`` keys replaced."""
    return write_exchange_toml(path, (), engine=engine)


def write_exchange_toml(path: Path, clones: Iterable[str] = (), **sections: dict) -> Path:
    """The shipped config with keys replaced per section, plus BTC-USD clones named ``clones``.

    ``write_exchange_toml(p, ["X1-USD"], json_gateway={"max_in_flight": 8})``. Every replaced
    key must exist in the shipped file, so a renamed key fails loudly.
    """
    wanted = {name: dict(keys) for name, keys in sections.items()}
    out = []
    section = ""
    for line in DEFAULT_CONFIG.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped.strip("[]")
        key = stripped.split("=", 1)[0].strip() if "=" in stripped else ""
        keys = wanted.get(section, {})
        if key in keys:
            line = f"{key} = {toml_value(keys.pop(key))}"
        out.append(line)
    left = {s: sorted(k) for s, k in wanted.items() if k}
    if left:
        raise KeyError(f"not keys of the shipped config {DEFAULT_CONFIG}: {left}")
    for symbol in clones:
        out += [
            "",
            f"[markets.{symbol}]",
            'base = "BTC"',
            'quote = "USD"',
            'tick = "0.01"',
            'lot = "0.0001"',
            'min_qty = "0.0001"',
            'max_qty = "1000"',
            'max_price = "10000000"',
            'maker_fee = "0.001"',
            'taker_fee = "0.002"',
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")
    return path


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):  # an inline table
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost and its key (PEM), by openssl."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def client_tls(cert: Path) -> ssl.SSLContext:
    """A client context that trusts only ``cert`` and checks the server is 127.0.0.1."""
    return ssl.create_default_context(cafile=str(cert))

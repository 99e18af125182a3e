"""No process of the exchange listens on a non-loopback address unless its config asks for one.

The whole exchange is started the way ``make run`` starts it (``python -m stack``), with a
config that is the shipped one with a free port in place of every port it names, a private
data directory and a private working directory. Once it is up, every listening TCP socket and
every unconnected bound UDP socket of every process in the stack's process tree is read from
``/proc`` (``/proc/<pid>/fd`` socket inodes joined with ``/proc/<pid>/net/{tcp,tcp6,udp,udp6}``)
and each address is checked: loopback, or a host the config names. The test knows no list of
ports or parts: a listener added later is checked the same way.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures_fix import TARGET, RawFix
from tests.procs import DEFAULT_CONFIG, REPO, eventually, free_port, write_exchange_toml

UP_TIMEOUT = 180.0  # generous: the recorder's chDB and six interpreters on a loaded 2-core box
STOP_TIMEOUT = 60.0
ENDPOINT = re.compile(r"^(?P<scheme>[a-z]+)://(?P<host>\[[^\]]*\]|[^:/]*):(?P<port>\d+)$")
ADDRESS = re.compile(r"^(?P<host>\[[^\]]*\]|[^:/\[\]]+):(?P<port>\d+)$")  # [metrics] host:port
TCP_LISTEN, UDP_UNCONNECTED = "0A", "07"


# ------------------------------------------------------------------------------ config


def _walk(table: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(section, key, value) for every scalar of a parsed TOML table, sections dotted."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _walk(value, f"{prefix}.{key}" if prefix else key)
        else:
            yield prefix, key, value


def is_port_key(key: str) -> bool:
    return key == "port" or key.endswith("_port")


def free_port_config(path: Path, **extra: dict[str, Any]) -> Path:
    """The shipped config with a fresh free port for every port it names (``*port`` keys and
    the ports of ``scheme://host:port`` endpoints), plus ``extra`` keys per section."""
    shipped = tomllib.loads(DEFAULT_CONFIG.read_text())
    sections: dict[str, dict[str, Any]] = {s: dict(k) for s, k in extra.items()}
    taken: set[int] = set()

    def fresh() -> int:
        port = free_port()
        while port in taken:
            port = free_port()
        taken.add(port)
        return port

    for section, key, value in _walk(shipped):
        if is_port_key(key) and isinstance(value, int) and not isinstance(value, bool):
            sections.setdefault(section, {})[key] = fresh()
        elif isinstance(value, str) and (m := ENDPOINT.match(value)):
            new = f"{m['scheme']}://{m['host']}:{fresh()}"
            sections.setdefault(section, {})[key] = new
        elif isinstance(value, str) and (m := ADDRESS.match(value)):
            sections.setdefault(section, {})[key] = f"{m['host']}:{fresh()}"
    return write_exchange_toml(path, **sections)


def _host(text: str) -> str:
    return text.strip("[]")


def asked_hosts(cfg: dict[str, Any]) -> set[str]:
    """Every host the config names for something to listen on (``host`` / ``*_host`` keys and
    endpoint hosts); an address the config asked for is allowed even off loopback."""
    hosts = set()
    for _section, key, value in _walk(cfg):
        if not isinstance(value, str):
            continue
        if key == "host" or key.endswith("_host"):
            hosts.add(_host(value))
        elif m := ENDPOINT.match(value) or ADDRESS.match(value):
            hosts.add(_host(m["host"]))
    return hosts


def configured_ports(cfg: dict[str, Any]) -> set[int]:
    ports = set()
    for _section, key, value in _walk(cfg):
        if is_port_key(key) and isinstance(value, int) and value:
            ports.add(value)
        elif isinstance(value, str) and (m := ENDPOINT.match(value) or ADDRESS.match(value)):
            ports.add(int(m["port"]))
    return ports


# -------------------------------------------------------------------------------- /proc


@dataclass(frozen=True)
class Listener:
    pid: int
    proto: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int

    def __str__(self) -> str:
        return f"{self.proto} {self.address}:{self.port} (pid {self.pid}: {cmdline(self.pid)})"


def cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return "?"


def tree(root: int) -> list[int]:
    """``root`` and every process descended from it."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name in (...) may hold spaces
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += parents.get(pid, [])
    return out


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def decode(hex_addr: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]:
    """``0100007F:1F90`` -> (127.0.0.1, 8080): the kernel prints each 32-bit word of the
    address as a host-order integer, the port as a plain hex number."""
    addr, port = hex_addr.split(":")
    raw = b"".join(struct.pack("=I", int(addr[i : i + 8], 16)) for i in range(0, len(addr), 8))
    return ipaddress.ip_address(raw), int(port, 16)


def listeners(pid: int) -> list[Listener]:
    """The listening TCP and unconnected bound UDP sockets ``pid`` holds."""
    mine = socket_inodes(pid)
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
            if inode not in mine:
                continue
            wanted = TCP_LISTEN if proto.startswith("tcp") else UDP_UNCONNECTED
            address, port = decode(local)
            if state == wanted and decode(remote)[1] == 0 and port:
                out.append(Listener(pid, proto, address, port))
    return out


def is_loopback(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or bool(mapped and mapped.is_loopback)


# ------------------------------------------------------------------------------ the stack


class Stack:
    """``python -m stack`` in a private working and data directory, its output in a file."""

    def __init__(self, workdir: Path, config: Path) -> None:
        self.workdir = workdir
        self.config = config
        self.data_dir = workdir / "var"
        self.log_path = workdir / "stack.log"
        self.popen: subprocess.Popen | None = None
        self.seen: set[int] = set()  # every pid of its tree seen, for the clean-up

    def start(self) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env.pop("EXCHANGE_CONFIG", None)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        argv = [sys.executable, "-m", "stack", "--config", str(self.config)]
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(  # cwd is private: a relative path lands in it
                [*argv, "--data-dir", str(self.data_dir)],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def pids(self) -> list[int]:
        assert self.popen is not None
        assert self.popen.poll() is None, f"the stack exited\n{self.log()}"
        found = tree(self.popen.pid)
        self.seen.update(found)
        return found

    def listeners(self) -> list[Listener]:
        return [x for pid in self.pids() for x in listeners(pid)]

    def stop(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            self.pids()
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(STOP_TIMEOUT)
        for pid in self.seen:  # whatever of it is left (the parts run in their own sessions)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if Path(f"/proc/{pid}").exists() and pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(STOP_TIMEOUT)


@pytest.fixture(name="stack")
def stack_fixture(tmp_path: Path) -> Iterator[tuple[Stack, dict[str, Any]]]:
    config = free_port_config(tmp_path / "exchange.toml", fix_gateway={"poll_seconds": 0.2})
    stack = Stack(tmp_path, config)
    stack.start()
    try:
        yield stack, tomllib.loads(config.read_text())
    finally:
        stack.stop()
        print(stack.log()[-20000:])


def fix_demo_logs_on(stack: Stack, cfg: dict[str, Any]) -> bool:
    """A demo FIX session logs on through the public port: the FIX gateway has started the
    acceptor that serves the demo sessions (it opens acceptors as sessions appear)."""
    creds_path = stack.data_dir / "demo-credentials.json"
    if not creds_path.exists():
        return False
    alice = json.loads(creds_path.read_text())["alice"]
    try:
        raw = RawFix(cfg["fix_gateway"]["port"], alice["fix_sender_comp_id"], TARGET)
    except OSError:
        return False
    try:
        raw.logon(alice["api_key"], alice["secret"])
    except (AssertionError, OSError):
        return False
    finally:
        raw.close()
    return True


@pytest.mark.slow
def test_every_listening_socket_of_the_stack_is_loopback_unless_configured(stack) -> None:
    proc, cfg = stack
    eventually(lambda: "Exchange is up" in proc.log(), UP_TIMEOUT, 0.5, "the stack is up")
    ports = configured_ports(cfg)

    def all_listening() -> bool:
        missing = ports - {x.port for x in proc.listeners()}
        assert not missing, f"not listening yet: {sorted(missing)}"
        return True

    eventually(all_listening, UP_TIMEOUT, 0.5, "every configured port listens")
    eventually(lambda: fix_demo_logs_on(proc, cfg), UP_TIMEOUT, 0.5, "a demo FIX session logs on")
    found = proc.listeners()
    asked = asked_hosts(cfg)
    bad = [x for x in found if not is_loopback(x.address) and str(x.address) not in asked]
    assert not bad, "listening off loopback though the config did not ask:\n" + "\n".join(
        map(str, bad)
    )
    assert ports <= {x.port for x in found}


def test_the_proc_reader_finds_this_processs_listeners_and_tells_loopback_apart() -> None:
    with socket.socket() as lo, socket.socket() as wild, socket.socket(socket.AF_INET6) as six:
        lo.bind(("127.0.0.1", 0))
        wild.bind(("0.0.0.0", 0))  # the case the checker must catch
        six.bind(("::1", 0))
        for s in (lo, wild, six):
            s.listen()
        got = {(str(x.address), x.port): x for x in listeners(os.getpid())}
        lo_key = ("127.0.0.1", lo.getsockname()[1])
        wild_key = ("0.0.0.0", wild.getsockname()[1])
        six_key = ("::1", six.getsockname()[1])
        assert {lo_key, wild_key, six_key} <= set(got), got
        assert is_loopback(got[lo_key].address) and is_loopback(got[six_key].address)
        assert not is_loopback(got[wild_key].address)

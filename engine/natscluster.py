"""A three-server NATS JetStream cluster on one machine: the replicated log the engine's
journal is copied to (engine/replication.py). ``python -m engine.natscluster DIR`` runs it in
the foreground (Ctrl-C stops it); tests start one per test in a temporary directory.

Each server gets its own client port, cluster port, JetStream store directory and log file
under DIR; the three routes name each other, so streams with three replicas have a majority
while any two run. On separate hosts the same config applies with the hosts' addresses in
``routes`` (and TLS: see the README).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SERVER = "nats-server"  # Debian's package (make install puts it there)
CONF = """\
server_name: {name}
listen: {host}:{port}
http: 127.0.0.1:{monitor}
max_payload: 8MB
jetstream {{
  store_dir: "{store}"
  max_memory_store: 64MB
  max_file_store: 4GB
}}
cluster {{
  name: exchange
  listen: 127.0.0.1:{cluster}
  routes: [{routes}]
}}
"""


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class NatsCluster:
    """Three nats-server processes forming one JetStream cluster (``urls`` for clients)."""

    def __init__(self, root: Path, ports: list[int] | None = None, size: int = 3,
                 host: str = "127.0.0.1") -> None:  # fmt: skip
        self.root = Path(root)
        self.host = host  # where clients connect (0.0.0.0: every interface)
        self.size = size
        p = ports or free_ports(3 * size)
        self.ports = p[:size]
        self.cluster_ports = p[size : 2 * size]
        self.monitor_ports = p[2 * size : 3 * size]
        self.procs: list[subprocess.Popen | None] = [None] * size
        self.urls = [f"nats://127.0.0.1:{port}" for port in self.ports]

    def conf(self, i: int) -> Path:
        path = self.root / f"n{i}.conf"
        routes = ", ".join(f"nats-route://127.0.0.1:{c}" for c in self.cluster_ports)
        path.write_text(
            CONF.format(
                name=f"n{i}",
                host=self.host,
                port=self.ports[i],
                monitor=self.monitor_ports[i],
                store=self.root / f"n{i}",
                cluster=self.cluster_ports[i],
                routes=routes,
            )
        )
        return path

    def start(self, wait: float = 15.0) -> NatsCluster:
        if shutil.which(SERVER) is None:
            raise RuntimeError(f"{SERVER} is not installed (make install: apt nats-server)")
        self.root.mkdir(parents=True, exist_ok=True)
        for i in range(self.size):
            self.start_one(i)
        self.wait_ready(wait)
        return self

    def start_one(self, i: int) -> None:
        log = open(self.root / f"n{i}.log", "ab")
        self.procs[i] = subprocess.Popen(  # noqa: S603 (our fixed server binary)
            [SERVER, "-c", str(self.conf(i))], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[i]
        if proc is not None:
            proc.send_signal(sig)
            proc.wait(10)
            self.procs[i] = None

    def stop_one(self, i: int) -> None:
        self.kill(i, signal.SIGTERM)

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until every running server's monitoring port says JetStream is up (healthz)."""
        deadline = time.monotonic() + timeout
        for i, proc in enumerate(self.procs):
            if proc is None:
                continue
            url = f"http://127.0.0.1:{self.monitor_ports[i]}/healthz?js-enabled-only=true"
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"nats server n{i} did not come up (see {self.root})")
                time.sleep(0.05)

    def close(self) -> None:
        for i in range(self.size):
            self.stop_one(i)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.natscluster", description=__doc__)
    parser.add_argument("dir", help="where the servers keep their config, logs and streams")
    parser.add_argument("--port", type=int, default=4222, help="first client port (then +1, +2)")
    args = parser.parse_args(argv)
    base = args.port
    ports = [base, base + 1, base + 2, base + 2000, base + 2001, base + 2002]
    ports += [base + 4000, base + 4001, base + 4002]
    cluster = NatsCluster(Path(args.dir), ports).start()
    print("NATS JetStream cluster up:", ",".join(cluster.urls), flush=True)
    stop = False

    def on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    while not stop and all(p is not None and p.poll() is None for p in cluster.procs):
        time.sleep(0.2)
    cluster.close()
    return 0 if stop else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())

"""Prometheus metrics for every process: the counters it already keeps, read when scraped.

Each process counts in plain objects on its own paths (a msgspec Struct such as the engine's
``Metrics``, a dataclass, a dict), exactly as before; nothing here runs per event. An
``Exporter`` holds *sources*, and its collector reads them only when ``/metrics`` is
scraped, turning each numeric field into a metric family of the standard text exposition
format (prometheus-client renders it):

- ``exchange_<process>_<field>_total``: integer fields (counters), unless named in ``gauges``;
- ``exchange_<process>_<field>``: gauges, floats and bools (1/0);
- ``labelled(...)``: per-market (or any labelled) gauges and counters from a callable;
- the client library's process, platform and gc collectors (CPU, memory, open files).

Two ways to serve, one registry:

- ``serve("127.0.0.1:9101")``: a tiny HTTP server in a thread of its own, for processes with no
  HTTP server (engine, gateways, market maker). It blocks in ``accept()`` and wakes only when
  scraped: prometheus-client's ``start_http_server`` polls for shutdown every 0.5 s, which would
  take the engine's GIL twice a second for nothing. ``close()`` stops it and frees the port.
- ``render()``: the exposition text and its content type, for a process that already serves
  HTTP (the recorder and the bridge answer ``/metrics`` on their own port).

Reading a source from the metrics thread while the event loop changes it is safe under the
GIL: a field read or a ``len()`` is atomic; a scrape sees each value as it was at some instant.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import msgspec
from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

log = logging.getLogger("metrics")

NAMESPACE = "exchange"
Samples = Iterable[tuple[Iterable[str], float]]  # (label values, value)


def fields(source: object) -> dict[str, Any]:
    """The current fields of a source: a Struct, a dataclass, a mapping, or a callable of one."""
    obj = source() if callable(source) else source
    if isinstance(obj, msgspec.Struct):
        return {f: getattr(obj, f) for f in obj.__struct_fields__}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return dict(obj)
    raise TypeError(f"a metrics source must be a Struct, a dataclass or a mapping, not {obj!r}")


class _Source:
    __slots__ = ("read", "prefix", "gauges", "what")

    def __init__(self, read: object, prefix: str, gauges: frozenset[str], what: str) -> None:
        self.read = read
        self.prefix = prefix
        self.gauges = gauges
        self.what = what


class _Labelled:
    __slots__ = ("name", "help", "labels", "samples", "counter")

    def __init__(
        self, name: str, help: str, labels: list[str], samples: Callable[[], Samples], counter: bool
    ) -> None:
        self.name = name
        self.help = help
        self.labels = labels
        self.samples = samples
        self.counter = counter


class _Collector(Collector):
    def __init__(self, exporter: Exporter) -> None:
        self.exporter = exporter

    def collect(self) -> Iterator[Metric]:
        ex = self.exporter
        for src in ex.sources:
            for field, value in fields(src.read).items():
                if not isinstance(value, int | float):  # bool is an int
                    continue
                name = f"{ex.base}_{src.prefix}{field}"
                help = f"{src.what}.{field}"
                counter = type(value) is int and field not in src.gauges  # bool is not int
                if counter:
                    yield CounterMetricFamily(name, help, value=value)
                else:
                    yield GaugeMetricFamily(name, help, value=float(value))
        for lab in ex.labelled_families:
            kind = CounterMetricFamily if lab.counter else GaugeMetricFamily
            family = kind(f"{ex.base}_{lab.name}", lab.help, labels=lab.labels)
            for values, value in lab.samples():
                family.add_metric(list(values), value)
            yield family


class _Quiet(WSGIRequestHandler):
    timeout = 5  # seconds; a scraper that stalls cannot hold the metrics thread longer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Exporter:
    """One process's metrics: its sources, its registry, and (optionally) its HTTP endpoint."""

    def __init__(self, process: str) -> None:
        self.base = f"{NAMESPACE}_{process}"
        self.sources: list[_Source] = []
        self.labelled_families: list[_Labelled] = []
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        if GC_COLLECTOR is not None:
            GCCollector(registry=self.registry)
        self.registry.register(_Collector(self))
        self.server: WSGIServer | None = None
        self.thread: threading.Thread | None = None
        self.address: tuple[str, int] | None = None
        self._closing = False

    # --------------------------------------------------------------------- sources
    def add(
        self, source: object, prefix: str = "", gauges: Iterable[str] = (), what: str = ""
    ) -> Exporter:
        """Export every numeric field of ``source`` (see ``fields``), read at each scrape.

        Integer fields are counters unless named in ``gauges``; floats and bools are gauges.
        Each metric's help names where it comes from: ``what`` (default: the source's type).
        """
        if not what:
            what = type(source() if callable(source) else source).__name__
        self.sources.append(_Source(source, prefix, frozenset(gauges), what))
        return self

    def labelled(
        self,
        name: str,
        help: str,
        labels: list[str],
        samples: Callable[[], Samples],
        counter: bool = False,
    ) -> Exporter:
        """A family with labels, e.g. per market: ``samples()`` yields (label values, value)."""
        self.labelled_families.append(_Labelled(name, help, labels, samples, counter))
        return self

    def render(self, accept: str = "") -> tuple[bytes, str]:
        """The exposition now and its Content-Type, for a process's own HTTP server: the
        format the scraper's ``Accept`` header asks for (text 0.0.4 by default, OpenMetrics)."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type

    # ------------------------------------------------------------------------ HTTP
    def serve(self, address: str) -> tuple[str, int] | None:
        """Listen on ``host:port`` ("" = off) in a thread; returns where, or None.

        A port that cannot be had is logged and the process goes on without metrics: an
        exchange keeps trading when its observation port is taken.
        """
        if not address:
            log.info("metrics endpoint off (no address configured)")
            return None
        host, port = split_address(address)
        try:
            server = make_server(host, port, make_wsgi_app(self.registry), _Server, _Quiet)
        except OSError as e:
            log.error("metrics: cannot listen on %s (%s); running without /metrics", address, e)
            return None
        server.timeout = None  # handle_request() blocks until a scrape (or close()) comes
        self.server = server
        self.address = (host, server.server_address[1])
        self.thread = threading.Thread(target=self._loop, name="metrics", daemon=True)
        self.thread.start()
        log.info("metrics (Prometheus) on http://%s/metrics", join_address(*self.address))
        return self.address

    def _loop(self) -> None:
        server = self.server
        assert server is not None
        while not self._closing:
            server.handle_request()

    def close(self) -> None:
        """Stop the endpoint (wakes its thread with one connection) and free the port."""
        server, thread = self.server, self.thread
        if server is None or thread is None:
            return
        self._closing = True
        host, port = self.address  # type: ignore[misc]
        wake = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)  # noqa: S104
        try:
            socket.create_connection((wake, port), timeout=2).close()
        except OSError:
            pass  # the thread is a daemon; the port is freed below either way
        thread.join(5)
        server.server_close()
        self.server = self.thread = None


class _Server(WSGIServer):
    def __init__(self, addr: tuple[str, int], handler: Any, *args: Any, **kw: Any) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler, *args, **kw)

    def server_bind(self) -> None:
        """Bind without HTTPServer's ``getfqdn()``: no DNS lookup at start-up."""
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics request from %s failed", client_address, exc_info=True)


def split_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:9101"`` / ``"[::1]:9101"`` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"a metrics address is host:port, was {address!r}")
    return host.strip("[]"), int(port)


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

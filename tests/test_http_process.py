"""The REST gateway as a process: HTTPS when configured, Prometheus metrics, a clean SIGTERM,
and what it does with a vault key file it must not trust."""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures_http import HttpStack, v1, v3
from tests.procs import client_tls, free_port, make_cert

TIMEOUT = 120.0


def run(coro) -> None:
    asyncio.run(asyncio.wait_for(coro, TIMEOUT))


def test_https_serves_signed_orders_and_plain_http_gets_nothing(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path / "tls")
    metrics = f"127.0.0.1:{free_port()}"
    st = HttpStack(
        tmp_path / "stack",
        http_gateway={"tls_cert": str(cert), "tls_key": str(key)},
        metrics={"http_gateway": metrics},
    )
    ctx = client_tls(cert)

    async def main() -> None:
        await st.astart(tls=ctx)
        who = await st.funded(USD="1000")
        market = st.new_market()
        body = {"market": market, "kind": "buy", "price": "10.00", "quantity": "0.5"}
        connector = aiohttp.TCPConnector(ssl=ctx)
        async with aiohttp.ClientSession(connector=connector) as s:
            status, placed = await v1(s, st.url, who, "POST", "/api/v1/order", body)
            assert status == 200, placed
            assert placed["order"]["status"] == "new"
            status, account = await v3(s, st.url, who, "GET", "/api/v3/account")
            assert status == 200
            usd = {b["asset"]: b for b in account["balances"]}["USD"]
            assert (usd["free"], usd["locked"]) == ("995.000000", "5.000000")
        plain = f"http://127.0.0.1:{st.gateway.port}/api/v1/markets"  # type: ignore[union-attr]
        async with aiohttp.ClientSession() as s:
            with pytest.raises(aiohttp.ClientError):
                async with s.get(plain) as r:
                    await r.read()
        # the counters, in the Prometheus text format, on the [metrics] address
        async with aiohttp.ClientSession() as s, s.get(f"http://{metrics}/metrics") as r:
            text = await r.text()
        assert r.status == 200
        values = {
            line.split()[0]: float(line.split()[1])
            for line in text.splitlines()
            if line and not line.startswith("#")
        }
        assert values["exchange_http_gateway_api_orders_total"] >= 1, text
        assert values["exchange_http_gateway_requests_total"] >= 2, text
        assert "exchange_http_gateway_ws_connections" in values, text

    try:
        run(main())
    finally:
        st.close()


def test_sigterm_stops_the_gateway_cleanly_with_connections_open(tmp_path: Path) -> None:
    st = HttpStack(tmp_path)

    async def main() -> None:
        await st.astart()
        reader, writer = await asyncio.open_connection("127.0.0.1", st.gateway.port)  # type: ignore[union-attr]
        writer.write(b"GET /api/v3/time HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        code = await st.gateway.astop()  # type: ignore[union-attr]
        assert code == 0, st.gateway.log()  # type: ignore[union-attr]
        assert "HTTP gateway stopped" in st.gateway.log()  # type: ignore[union-attr]
        writer.close()

    try:
        run(main())
    finally:
        st.close()


def test_a_vault_key_file_others_can_read_keeps_the_gateway_from_starting(
    tmp_path: Path,
) -> None:
    st = HttpStack(tmp_path)
    os.chmod(st.vault_path, 0o644)

    async def main() -> None:
        with pytest.raises(AssertionError) as e:
            await st.astart()
        assert "refusing to start" in str(e.value)
        assert st.gateway is not None and st.gateway.wait() == 2

    try:
        run(main())
    finally:
        st.close()


def test_client_tls_context_is_strict(tmp_path: Path) -> None:
    """The HTTPS test above proves something only if the client really checks the server."""
    cert, _ = make_cert(tmp_path)
    ctx = client_tls(cert)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname

"""Demo accounts for the default stack: created once, funded whenever their balances are empty.

Their keys are issued sealed (``<data dir>/vault.key``), so they sign HTTP requests as well as
log on over JSON and FIX. The market maker and the banner need the secrets in hand, so the stack
writes the demo credentials to ``<data dir>/demo-credentials.json`` (mode 0600) when it creates
them, and reads them from there on later starts; keys from a data dir made before sealing
existed are sealed then, from that file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from engine.client import EngineClient
from gateways.accounts import AccountError, AccountStore, Permission
from gateways.vault import Vault
from protocol.config import Exchange
from protocol.messages import Balances, BalancesRequest, Deposit

FIX_COMP_IDS = {"alice": "ALICE", "bob": "BOB"}
# What a web account signed up on the demo stack starts with (the HTTP gateway's
# --signup-funds; the shipped config's [web] signup_funds is empty: production grants nothing).
SIGNUP_FUNDS = "USD=100000,BTC=2,ETH=30"
FUNDS = {
    "mm": {"USD": "20000000", "BTC": "400", "ETH": "6000"},
    "noise": {"USD": "2000000", "BTC": "40", "ETH": "600"},
    "alice": {"USD": "100000", "BTC": "2", "ETH": "30"},
    "bob": {"USD": "100000", "BTC": "2", "ETH": "30"},
}


def _credentials(ex: Exchange, path: Path) -> dict[str, dict]:
    vault = Vault.create(ex.accounts.vault_key)
    store = AccountStore(ex.accounts.path)
    try:
        if path.exists():
            creds = json.loads(path.read_text())
            for c in creds.values():
                if store.lookup(c["api_key"]) and not store.signing_key(c["api_key"], vault):
                    store.seal_secret(c["api_key"], c["secret"], vault)
            return creds
        creds = {}
        for name in FUNDS:
            try:
                account = store.create_account(name)
            except AccountError:
                account = store.account_id(name)
            key, secret = store.issue_key(account, Permission.TRADE, vault)
            creds[name] = {"account": account, "api_key": key, "secret": secret}
            if name in FIX_COMP_IDS:
                comp = FIX_COMP_IDS[name]
                store.add_fix_session(comp, account, cancel_on_disconnect=True)
                creds[name]["fix_sender_comp_id"] = comp
    finally:
        store.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(creds, f, indent=2)
    return creds


async def ensure_demo(ex: Exchange, data_dir: Path) -> tuple[dict[str, dict], Path]:
    """Demo credentials (creating accounts and funding them as needed) and their file."""
    path = data_dir / "demo-credentials.json"
    creds = _credentials(ex, path)  # a few SQLite writes, once
    client = EngineClient.for_exchange(ex, "stack-demo")
    await client.start(wait=30)
    try:
        for name, funds in FUNDS.items():
            account = creds[name]["account"]
            bal = await client.request(BalancesRequest(0, account))
            assert isinstance(bal, Balances)
            if any(b.available or b.locked for b in bal.balances):
                continue
            for asset, amount in funds.items():
                await client.request(Deposit(0, account, asset, ex.amount_to_units(asset, amount)))
    finally:
        await client.close()
    return creds, path

"""Admin CLI: accounts, API keys, FIX sessions, deposits and withdrawals.

python -m gateways.admin create-account alice
python -m gateways.admin issue-key alice --permission trade      # prints key and secret once
python -m gateways.admin revoke-key k_0123456789abcdef
python -m gateways.admin rotate-vault-key    # new sealing key, every secret resealed, old dropped
python -m gateways.admin deposit alice USD 10000.00              # through the engine
python -m gateways.admin withdraw alice BTC 0.5
python -m gateways.admin balances alice
python -m gateways.admin list
python -m gateways.admin fees                                    # the fee account's balances
python -m gateways.admin audit       # per asset: sum of balances vs deposits - withdrawals
python -m gateways.admin users                                   # web users (docs/web.md)
python -m gateways.admin user-signout ann@example.com            # end every session of a user
python -m gateways.admin user-2fa-off ann@example.com            # lost phone: 2FA off, signed out
python -m gateways.admin user-password ann@example.com           # forgot it: a new one, shown once
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys

from engine.client import EngineClient, EngineError
from gateways.accounts import AccountError, AccountStore, Permission
from gateways.users import Users, hash_password
from gateways.vault import Vault, VaultError
from protocol import config
from protocol.amounts import AmountError
from protocol.messages import (
    AuditReply,
    AuditRequest,
    Balances,
    BalancesRequest,
    Deposit,
    LedgerReply,
    Rejected,
    Withdraw,
)


class Mismatch(Exception):
    pass


async def ledger(ex: config.Exchange, account: int, asset: str, amount: str, deposit: bool) -> str:
    if asset not in ex.assets:
        raise AccountError(f"unknown asset {asset!r}; assets: {', '.join(ex.assets)}")
    units = ex.amount_to_units(asset, amount)
    cmd = (Deposit if deposit else Withdraw)(0, account, asset, units)
    reply = await engine_request(ex, cmd)
    if isinstance(reply, Rejected):
        raise AccountError(f"engine rejected it: {reply.reason} (code {reply.code})")
    assert isinstance(reply, LedgerReply)
    return (f"account {account} {asset}: available {ex.units_text(asset, reply.available)}, "
            f"locked {ex.units_text(asset, reply.locked)} (seq {reply.seq})")  # fmt: skip


async def engine_request(ex: config.Exchange, cmd: object) -> object:
    client = EngineClient.for_exchange(ex, "admin-cli")
    try:
        await client.start(wait=5)
        return await client.request(cmd)
    finally:
        await client.close()


async def balances(ex: config.Exchange, account: int) -> str:
    reply = await engine_request(ex, BalancesRequest(0, account))
    assert isinstance(reply, Balances)
    return "\n".join(
        f"{b.asset:6} available {ex.units_text(b.asset, b.available):>24}  "
        f"locked {ex.units_text(b.asset, b.locked):>24}"
        for b in reply.balances
    )


async def audit_reply(ex: config.Exchange) -> AuditReply:
    reply = await engine_request(ex, AuditRequest(0))
    if not isinstance(reply, AuditReply):
        raise AccountError(f"the engine answered {reply!r} (an engine without the audit?)")
    return reply


def fees_text(ex: config.Exchange, reply: AuditReply) -> str:
    lines = [f"fee account {reply.fee_account} (after seq {reply.seq})"]
    lines += [
        f"{a.asset:6} available {ex.units_text(a.asset, a.fee_available):>24}  "
        f"locked {ex.units_text(a.asset, a.fee_locked):>24}"
        for a in reply.assets
    ]
    return "\n".join(lines)


def audit_text(ex: config.Exchange, reply: AuditReply) -> tuple[str, bool]:
    """The conservation table (rule 3) and whether every asset holds."""
    t = ex.units_text
    lines = [
        f"{reply.accounts} accounts, after seq {reply.seq}",
        f"{'asset':6} {'available':>24} {'locked':>24} {'available+locked':>24} "
        f"{'deposits-withdrawals':>24}  check",
    ]
    ok = True
    for a in reply.assets:
        total = a.available + a.locked
        good = total == a.net_deposits
        ok = ok and good
        lines.append(
            f"{a.asset:6} {t(a.asset, a.available):>24} {t(a.asset, a.locked):>24} "
            f"{t(a.asset, total):>24} {t(a.asset, a.net_deposits):>24}  "
            + ("OK" if good else f"MISMATCH by {t(a.asset, total - a.net_deposits)}")
        )
    return "\n".join(lines), ok


def listing(store: AccountStore) -> str:
    lines = []
    for aid, name in store.accounts():
        keys = ", ".join(
            f"{k} ({p}{', revoked' if r else ''}{'' if s else ', unsealed: no HMAC'})"
            for k, p, r, s in store.keys(aid)
        )
        lines.append(f"{aid:5} {name:20} {keys}")
    for comp, aid, cod in store.fix_sessions():
        lines.append(f"FIX {comp} -> account {aid}{' (cancel on disconnect)' if cod else ''}")
    return "\n".join(lines) or "no accounts"


def users_listing(store: AccountStore) -> str:
    lines = [
        f"{uid:5} {email:40} account {aid:<6} 2FA {'on ' if totp else 'off'}  "
        f"{live} live session{'s' if live != 1 else ''}"
        for uid, email, aid, totp, live in Users(store, None).listing()
    ]
    return "\n".join(lines) or "no web users"


def store_command(store: AccountStore, args: argparse.Namespace) -> str:
    """The commands that only touch the account store (no engine, no vault)."""
    if args.cmd == "create-account":
        return f"account {store.create_account(args.name)} {args.name}"
    if args.cmd == "revoke-key":
        store.revoke_key(args.key)
        return f"revoked {args.key}"
    if args.cmd == "add-fix-session":
        store.add_fix_session(args.sender_comp_id, args.account, args.cancel_on_disconnect)
        return f"FIX session {args.sender_comp_id} -> {args.account}"
    return listing(store)


def web_users(store: AccountStore, args: argparse.Namespace) -> str:
    """``users``; ``user-signout EMAIL``; ``user-2fa-off EMAIL`` (and signed out)."""
    if args.cmd == "users":
        return users_listing(store)
    users = Users(store, None)
    user = users.by_email(args.email)
    if user is None:
        raise AccountError(f"no web user {args.email!r}")
    what = ""
    if args.cmd == "user-2fa-off":
        users.totp_disable(user.id)
        what = "two-factor sign-in off, "
    elif args.cmd == "user-password":
        password = secrets.token_urlsafe(12)
        users.set_password_hash(user.id, hash_password(password))
        what = f"new password {password} (shown only now; they change it in Security), "
    return f"{user.email}: {what}{users.end_sessions(user.id)} sessions ended"


def rotate_vault_key(store: AccountStore, vault: Vault) -> str:
    """New current key, every sealed secret moved under it, then the keys left unused dropped
    (a crash in between leaves the old key in the file, so every secret still opens)."""
    old = vault.current
    new = vault.rotate()
    count = store.reseal(vault)
    dropped = vault.retire(store.sealing_key_ids())
    return (f"vault key {old} -> {new}: resealed {count} secrets, retired {len(dropped)} keys"
            + (f" ({', '.join(dropped)})" if dropped else ""))  # fmt: skip


def ledger_view(ex: config.Exchange, cmd: str) -> str:
    """``fees`` or ``audit`` (Mismatch, with the table, when conservation does not hold)."""
    reply = asyncio.run(audit_reply(ex))
    if cmd == "fees":
        return fees_text(ex, reply)
    text, ok = audit_text(ex, reply)
    if not ok:
        raise Mismatch(text)
    return text


def run(args: argparse.Namespace) -> str:
    ex = config.load(args.config)
    store = AccountStore(args.accounts or ex.accounts.path)
    try:
        match args.cmd:
            case "create-account" | "revoke-key" | "list" | "add-fix-session":
                return store_command(store, args)
            case "issue-key":
                vault = Vault.create(args.vault or ex.accounts.vault_key)
                key, secret = store.issue_key(args.account, Permission(args.permission), vault)
                return (f"api_key {key}\nsecret  {secret}\n(the secret is shown only now; "
                        f"kept sealed under vault key {vault.current})")  # fmt: skip
            case "rotate-vault-key":
                return rotate_vault_key(store, Vault.load(args.vault or ex.accounts.vault_key))
            case "deposit" | "withdraw":
                account = store.account_id(args.account)
                return asyncio.run(ledger(ex, account, args.asset, args.amount,
                                          args.cmd == "deposit"))  # fmt: skip
            case "balances":
                return asyncio.run(balances(ex, store.account_id(args.account)))
            case "fees" | "audit":
                return ledger_view(ex, args.cmd)
            case "users" | "user-signout" | "user-2fa-off" | "user-password":
                return web_users(store, args)
        raise AccountError(f"unknown command {args.cmd}")
    finally:
        store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gateways.admin", description=__doc__)
    p.add_argument("--config")
    p.add_argument("--accounts", help="account store (default: from the config)")
    p.add_argument("--vault", help="vault key file (default: from the config)")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("create-account").add_argument("name")
    k = sub.add_parser("issue-key")
    k.add_argument("account")
    k.add_argument("--permission", default="trade", choices=[x.value for x in Permission])
    sub.add_parser("revoke-key").add_argument("key")
    sub.add_parser("rotate-vault-key", help="seal every API secret under a new vault key")
    sub.add_parser("list")
    f = sub.add_parser("add-fix-session")
    f.add_argument("sender_comp_id")
    f.add_argument("account")
    f.add_argument("--cancel-on-disconnect", action="store_true")
    for name in ("deposit", "withdraw"):
        d = sub.add_parser(name)
        d.add_argument("account")
        d.add_argument("asset")
        d.add_argument("amount")
    sub.add_parser("balances").add_argument("account")
    sub.add_parser("fees", help="the fee account's balances")
    sub.add_parser("audit", help="per asset: balances summed now vs deposits - withdrawals")
    sub.add_parser("users", help="web users: email, account, 2FA, live sessions")
    sub.add_parser("user-signout", help="end every session of a web user").add_argument("email")
    sub.add_parser("user-2fa-off", help="turn a web user's 2FA off (lost phone) and end "
                   "their sessions").add_argument("email")  # fmt: skip
    sub.add_parser("user-password", help="give a web user a new random password (forgotten), "
                   "printed once; their sessions end").add_argument("email")  # fmt: skip
    args = p.parse_args(argv)
    try:
        print(run(args))
    except Mismatch as e:
        print(e)
        return 1
    except (AccountError, AmountError, EngineError, config.ConfigError, VaultError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

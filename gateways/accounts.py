"""Accounts, API keys and permissions, shared by every gateway (one SQLite file).

Secrets are never stored in clear. Each API key keeps SCRAM-SHA-256 style verifiers (RFC 5802/7677):

    salted     = PBKDF2-HMAC-SHA256(secret, salt, iterations)
    client_key = HMAC-SHA256(salted, "Client Key")
    stored_key = SHA-256(client_key)          <- what the file holds (with salt, iterations)

Logon over the JSON gateway is a challenge: the server sends a fresh nonce with the key's salt
and iterations; the client answers ``proof = client_key XOR HMAC-SHA256(stored_key, nonce)``;
the server recovers ``client_key`` and checks its SHA-256 against ``stored_key``. So the secret
never crosses the wire, and a stolen accounts file lets nobody log on. FIX, whose Logon has no
server nonce, sends the secret itself in Password (554) inside its TLS/loopback session; it is
checked against the same verifier.

HMAC request signing (the HTTP gateway) needs the secret itself, so a key issued with a vault
also keeps it sealed (``sealed_secret``, AES-256-GCM, ``gateways/vault.py``) under a key that
lives in a separate file, never in this database: the database alone yields no secret.
``signing_key`` opens it. Keys issued without a vault (all keys before sealing existed) have no
sealed secret: they log on over JSON and FIX as before and are refused for HMAC signing.

Account 0 is the engine's fee account and is never handed out.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from gateways.vault import Vault, key_id

ITERATIONS = 4096
SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys (
    key TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    permission TEXT NOT NULL,
    salt BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    sealed_secret BLOB
);
CREATE TABLE IF NOT EXISTS fix_sessions (
    sender_comp_id TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    cancel_on_disconnect INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    password TEXT NOT NULL,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    totp_sealed BLOB,
    totp_pending BLOB,
    totp_step INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    refresh_hash BLOB NOT NULL UNIQUE,
    expires REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0,
    rotated INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    address TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS spent_refresh (
    refresh_hash BLOB PRIMARY KEY,
    session_id TEXT NOT NULL,
    spent REAL NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS web_secrets (
    name TEXT PRIMARY KEY,
    sealed BLOB NOT NULL
);
"""
# Every sealed value in the store: (table, row key column, sealed column, what it is sealed
# for: Vault.seal's associated data, from the row key). reseal() and sealing_key_ids() walk them.
SEALED = (
    ("api_keys", "key", "sealed_secret", "{}"),
    ("users", "id", "totp_sealed", "totp:{}"),
    ("users", "id", "totp_pending", "totp-pending:{}"),
    ("web_secrets", "name", "sealed", "{}"),
)


class Permission(StrEnum):
    READ = "read"  # balances, orders, market data
    TRADE = "trade"  # read + place/cancel orders
    ADMIN = "admin"  # trade + deposits/withdrawals for any account

    def allows(self, needed: Permission) -> bool:
        order = [Permission.READ, Permission.TRADE, Permission.ADMIN]
        return order.index(self) >= order.index(needed)


class AccountError(ValueError):
    pass


@dataclass(frozen=True)
class ApiKey:
    key: str
    account_id: int
    account_name: str
    permission: Permission
    salt: bytes
    iterations: int
    stored_key: bytes


def client_key(secret: str, salt: bytes, iterations: int) -> bytes:
    salted = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return hmac.new(salted, b"Client Key", hashlib.sha256).digest()


def make_proof(secret: str, salt: bytes, iterations: int, nonce: bytes) -> bytes:
    """What a client sends to log on (see the module docstring)."""
    ck = client_key(secret, salt, iterations)
    sig = hmac.new(hashlib.sha256(ck).digest(), nonce, hashlib.sha256).digest()
    return bytes(a ^ b for a, b in zip(ck, sig, strict=True))


def check_proof(key: ApiKey, nonce: bytes, proof: bytes) -> bool:
    if len(proof) != 32:
        return False
    sig = hmac.new(key.stored_key, nonce, hashlib.sha256).digest()
    ck = bytes(a ^ b for a, b in zip(proof, sig, strict=True))
    return hmac.compare_digest(hashlib.sha256(ck).digest(), key.stored_key)


def check_secret(key: ApiKey, secret: str) -> bool:
    ck = client_key(secret, key.salt, key.iterations)
    return hmac.compare_digest(hashlib.sha256(ck).digest(), key.stored_key)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class AccountStore:
    """A small SQLite store; safe to share between processes (each opens its own connection)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a file made by an older version up to SCHEMA (columns are only ever added)."""
        if "sealed_secret" in self._columns("api_keys"):
            return
        with self.transaction():  # another process may be migrating the same file
            if "sealed_secret" not in self._columns("api_keys"):
                self.db.execute("ALTER TABLE api_keys ADD COLUMN sealed_secret BLOB")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, taken at once (``BEGIN IMMEDIATE``: no other process writes
        in between), committed at the end of the block, rolled back if it raises."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _columns(self, table: str) -> set[str]:
        return {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        self.db.close()

    # --------------------------------------------------------------------- accounts
    def create_account(self, name: str) -> int:
        if not name or len(name) > 64:
            raise AccountError("account name must be 1..64 characters")
        try:
            cur = self.db.execute(
                "INSERT INTO accounts (name, created) VALUES (?, ?)", (name, time.time())
            )
        except sqlite3.IntegrityError:
            raise AccountError(f"account {name!r} exists") from None
        assert cur.lastrowid is not None
        return cur.lastrowid

    def account_id(self, name_or_id: str) -> int:
        row = self.db.execute(
            "SELECT id FROM accounts WHERE name = ? OR CAST(id AS TEXT) = ?",
            (name_or_id, name_or_id),
        ).fetchone()
        if row is None:
            raise AccountError(f"no account {name_or_id!r}")
        return int(row[0])

    def _account(self, account: str | int) -> int:
        """An id as it is (never a name that reads like it: an account may be named "7"); a
        string as the admin tool takes it (name or id)."""
        if isinstance(account, str):
            return self.account_id(account)
        row = self.db.execute("SELECT id FROM accounts WHERE id = ?", (account,)).fetchone()
        if row is None:
            raise AccountError(f"no account {account}")
        return int(row[0])

    def accounts(self) -> list[tuple[int, str]]:
        return [(int(r[0]), r[1]) for r in self.db.execute("SELECT id, name FROM accounts")]

    # ------------------------------------------------------------------------- keys
    def issue_key(
        self,
        account: str | int,
        permission: Permission = Permission.TRADE,
        vault: Vault | None = None,
    ) -> tuple[str, str]:
        """Create an API key for ``account``; returns (key, secret). Only verifiers of the secret
        are kept, and with ``vault`` the secret sealed too (it can then sign HTTP requests)."""
        account_id = self._account(account)
        key = "k_" + secrets.token_hex(8)
        secret = secrets.token_urlsafe(24)
        salt = secrets.token_bytes(16)
        stored = hashlib.sha256(client_key(secret, salt, ITERATIONS)).digest()
        sealed = vault.seal(key, secret) if vault is not None else None
        self.db.execute(
            "INSERT INTO api_keys (key, account_id, permission, salt, iterations, stored_key,"
            " created, sealed_secret) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (key, account_id, Permission(permission).value, salt, ITERATIONS, stored,
             time.time(), sealed),
        )  # fmt: skip
        return key, secret

    def seal_secret(self, key: str, secret: str, vault: Vault) -> None:
        """Seal the secret of a key issued without a vault, given by someone who holds it (the
        demo's credentials file); checked against the key's verifier first."""
        found = self.lookup(key)
        if found is None or not check_secret(found, secret):
            raise AccountError(f"no live API key {key!r} with that secret")
        self.db.execute(
            "UPDATE api_keys SET sealed_secret = ? WHERE key = ?", (vault.seal(key, secret), key)
        )

    def signing_key(self, key: str, vault: Vault) -> tuple[ApiKey, bytes] | None:
        """The live key and its secret (utf-8) for checking an HMAC signature; None if the key
        is unknown, revoked or has no sealed secret (issued before sealing). A sealed secret that
        does not open (another vault's key file, an altered row) raises VaultError."""
        live = self._live(key)
        if live is None or live[1] is None:
            return None
        return live[0], vault.open(key, live[1]).encode()

    def _sealed(self) -> list[tuple[str, str, str, str, object, bytes]]:
        out = []
        for table, key, column, aad in SEALED:
            rows = self.db.execute(
                f"SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL"  # noqa: S608
            ).fetchall()  # names from SEALED above, never from input
            out += [(table, key, column, aad.format(r[0]), r[0], bytes(r[1])) for r in rows]
        return out

    def reseal(self, vault: Vault) -> int:
        """Re-encrypt every sealed secret (revoked keys' too, 2FA secrets, the token signing
        key) under the vault's current key, in one transaction; returns how many. Secrets that
        do not open raise VaultError, and then nothing changes."""
        with self.transaction():
            rows = self._sealed()
            for table, key, column, aad, row_key, blob in rows:
                self.db.execute(
                    f"UPDATE {table} SET {column} = ? WHERE {key} = ?",  # noqa: S608 - SEALED
                    (vault.seal(aad, vault.open(aad, blob)), row_key),
                )
        return len(rows)

    def sealing_key_ids(self) -> set[str]:
        """The vault key ids the sealed secrets are under (what ``Vault.retire`` must keep)."""
        return {key_id(r[5]) for r in self._sealed()}

    def revoke_key(self, key: str) -> None:
        cur = self.db.execute("UPDATE api_keys SET revoked = 1 WHERE key = ?", (key,))
        if cur.rowcount != 1:
            raise AccountError(f"no API key {key!r}")

    def _live(self, key: str) -> tuple[ApiKey, bytes | None] | None:
        """A live (not revoked) key and its sealed secret, read fresh from the file so
        revocations apply at once."""
        row = self.db.execute(
            "SELECT k.key, k.account_id, a.name, k.permission, k.salt, k.iterations, k.stored_key,"
            " k.sealed_secret FROM api_keys k JOIN accounts a ON a.id = k.account_id"
            " WHERE k.key = ? AND k.revoked = 0",
            (key,),
        ).fetchone()
        if row is None:
            return None
        found = ApiKey(
            row[0],
            int(row[1]),
            row[2],
            Permission(row[3]),
            bytes(row[4]),
            int(row[5]),
            bytes(row[6]),
        )
        return found, None if row[7] is None else bytes(row[7])

    def lookup(self, key: str) -> ApiKey | None:
        """A live (not revoked) key, read fresh from the file so revocations apply at once."""
        live = self._live(key)
        return None if live is None else live[0]

    def keys(self, account: str | int) -> list[tuple[str, str, bool, bool]]:
        """(key, permission, revoked, sealed) of each of the account's keys."""
        account_id = self._account(account)
        rows = self.db.execute(
            "SELECT key, permission, revoked, sealed_secret IS NOT NULL FROM api_keys"
            " WHERE account_id = ?",
            (account_id,),
        )
        return [(r[0], r[1], bool(r[2]), bool(r[3])) for r in rows]

    def key_rows(self, account_id: int) -> list[tuple[str, str, float, bool]]:
        """(key, permission, created, revoked) of each of the account's keys, oldest first."""
        rows = self.db.execute(
            "SELECT key, permission, created, revoked FROM api_keys WHERE account_id = ?"
            " ORDER BY created",
            (account_id,),
        )
        return [(r[0], r[1], float(r[2]), bool(r[3])) for r in rows]

    # ------------------------------------------------------------------ FIX sessions
    def add_fix_session(
        self, sender_comp_id: str, account: str | int, cancel_on_disconnect: bool = False
    ) -> None:
        account_id = self._account(account)
        try:
            self.db.execute(
                "INSERT INTO fix_sessions VALUES (?, ?, ?, ?)",
                (sender_comp_id, account_id, int(cancel_on_disconnect), time.time()),
            )
        except sqlite3.IntegrityError:
            raise AccountError(f"FIX session {sender_comp_id!r} exists") from None

    def fix_sessions(self) -> list[tuple[str, int, bool]]:
        rows = self.db.execute(
            "SELECT sender_comp_id, account_id, cancel_on_disconnect FROM fix_sessions"
        )
        return [(r[0], int(r[1]), bool(r[2])) for r in rows]

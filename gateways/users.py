"""Web users: an email and a password in front of an exchange account (docs/web.md).

Kept in the account store's SQLite file (gateways/accounts.py, whose SCHEMA has the tables):

- ``users``: the email (stored lower-case, unique), the argon2id hash of the password (PHC
  string: algorithm, parameters and per-user salt in one field), the account it trades as, and
  the TOTP secret sealed by the vault (gateways/vault.py) once 2FA is on;
- ``sessions``: one per sign-in. The refresh token is kept only as its SHA-256; each refresh
  spends it and stores the next one's hash (``rotated`` counts them). A token that was already
  spent, presented again, ends the session: someone holds a copy;
- ``web_secrets``: the key that signs access tokens (gateways/http/jwt.py), sealed by the vault.

Passwords are hashed with argon2id (argon2-cffi) at OWASP's parameters (19 MiB, 2 passes, one
lane): about 60 ms here, which callers run in a worker thread. TOTP is RFC 6238 (HMAC-SHA1,
6 digits, 30-second steps) with one step of slack either side, and a code is spent once used
(``totp_step``), so a code seen over a shoulder cannot be replayed within its window.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import sqlite3
import struct
import time
import urllib.parse
from dataclasses import dataclass

import argon2

from gateways.accounts import AccountError, AccountStore
from gateways.vault import Vault

EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s.]{1,63}$")
PASSWORD_MIN, PASSWORD_MAX = 10, 256
TOTP_STEP, TOTP_DIGITS = 30, 6
HASHER = argon2.PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
# Verified against when the email is unknown, so that both answers take the same time.
DUMMY_HASH = HASHER.hash(secrets.token_urlsafe(16))


BY_EMAIL = (
    "SELECT id, email, password, account_id, totp_sealed IS NOT NULL FROM users WHERE email = ?"
)
BY_ID = "SELECT id, email, password, account_id, totp_sealed IS NOT NULL FROM users WHERE id = ?"


class UserError(ValueError):
    """Input that cannot make or change a user; the message is for the person."""


@dataclass(frozen=True)
class User:
    id: int
    email: str
    password: str  # the argon2id PHC string
    account_id: int
    totp_enabled: bool


@dataclass(frozen=True)
class Session:
    id: str
    user_id: int
    expires: float
    revoked: bool


def normal_email(email: str) -> str:
    e = email.strip().lower()
    if len(e) > 254 or not EMAIL.match(e):
        raise UserError("give a valid email address")
    return e


def check_password_rules(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise UserError(f"a password is {PASSWORD_MIN} to {PASSWORD_MAX} characters long")
    if len(set(password)) < 4:
        raise UserError("that password is too simple: use at least 4 different characters")


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def verify_password(stored: str, password: str) -> bool:
    """True if ``password`` matches ``stored``; slow on purpose (run it off the event loop)."""
    try:
        return HASHER.verify(stored, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


REFRESH_GRACE = 10.0  # seconds a just-spent refresh token is "retry", not "stolen" (two tabs)


class Refreshed(Exception):
    """The refresh token was spent moments ago (another tab of the same browser): retry with
    the new one, which that answer set as the cookie."""


def refresh_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


# ---------------------------------------------------------------------------------- TOTP


def new_totp_secret() -> str:
    """20 random bytes (RFC 4226's recommended length), base32 without padding."""
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")


def totp(secret: str, step: int) -> str:
    """The RFC 6238 code of ``step`` (= unix time // 30)."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**TOTP_DIGITS).zfill(TOTP_DIGITS)


def totp_match(secret: str, code: str, now: float, after: int = 0) -> int:
    """The step (> ``after``) whose code is ``code``, within one step of ``now``; else 0."""
    code = code.strip().replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isdigit():
        return 0
    current = int(now) // TOTP_STEP
    for step in (current - 1, current, current + 1):
        if step > after and hmac.compare_digest(totp(secret, step), code):
            return step
    return 0


def otpauth_uri(secret: str, email: str, issuer: str) -> str:
    label = urllib.parse.quote(f"{issuer}:{email}")
    query = urllib.parse.urlencode(
        {"secret": secret, "issuer": issuer, "algorithm": "SHA1", "digits": TOTP_DIGITS,
         "period": TOTP_STEP}
    )  # fmt: skip
    return f"otpauth://totp/{label}?{query}"


# ---------------------------------------------------------------------------------- store


class Users:
    """Users and sessions in the account store's file; one per process, like AccountStore."""

    def __init__(self, store: AccountStore, vault: Vault | None) -> None:
        self.store = store
        self.db: sqlite3.Connection = store.db
        self.vault = vault
        self.pruned = 0.0  # when prune() last ran

    # --------------------------------------------------------------------- users
    def create(self, email: str, password_hash: str) -> User:
        """A new user with a new exchange account of its own, named ``web:<email>`` (or, for an
        address too long for an account name, ``web:`` and 32 hex digits of its SHA-256)."""
        email = normal_email(email)
        name = f"web:{email}"
        if len(name) > 64:
            name = "web:" + hashlib.sha256(email.encode()).hexdigest()[:32]
        with self.store.transaction():
            if self.by_email(email) is not None:
                raise UserError("that email is already registered")
            try:
                account = self.store.create_account(name)
            except AccountError:
                raise UserError("that email is already registered") from None
            cur = self.db.execute(
                "INSERT INTO users (email, password, account_id, created) VALUES (?, ?, ?, ?)",
                (email, password_hash, account, time.time()),
            )
        assert cur.lastrowid is not None
        return User(cur.lastrowid, email, password_hash, account, False)

    def _user(self, query: str, arg: object) -> User | None:
        row = self.db.execute(query, (arg,)).fetchone()
        if row is None:
            return None
        return User(int(row[0]), row[1], row[2], int(row[3]), bool(row[4]))

    def by_email(self, email: str) -> User | None:
        try:
            return self._user(BY_EMAIL, normal_email(email))
        except UserError:
            return None

    def get(self, user_id: int) -> User | None:
        return self._user(BY_ID, user_id)

    def listing(self) -> list[tuple[int, str, int, bool, int]]:
        """(user id, email, account id, 2FA on, live sessions) of every user."""
        rows = self.db.execute(
            "SELECT u.id, u.email, u.account_id, u.totp_sealed IS NOT NULL,"
            " (SELECT COUNT(*) FROM sessions s WHERE s.user_id = u.id AND s.revoked = 0"
            "  AND s.expires > ?) FROM users u ORDER BY u.id",
            (time.time(),),
        )
        return [(int(r[0]), r[1], int(r[2]), bool(r[3]), int(r[4])) for r in rows]

    def end_sessions(self, user_id: int, keep: str = "") -> int:
        """Sign the user out everywhere (but session ``keep``): every live session ends, its
        access tokens with it within a second; returns how many."""
        cur = self.db.execute(
            "UPDATE sessions SET revoked = 1 WHERE user_id = ? AND revoked = 0 AND id != ?",
            (user_id, keep),
        )
        return cur.rowcount

    def set_password_hash(self, user_id: int, password_hash: str) -> None:
        self.db.execute("UPDATE users SET password = ? WHERE id = ?", (password_hash, user_id))

    # ---------------------------------------------------------------------- TOTP
    def _vault(self) -> Vault:
        if self.vault is None:
            raise UserError("two-factor sign-in needs the vault key (--vault)")
        return self.vault

    def totp_begin(self, user_id: int) -> str:
        """A new secret, kept (sealed) as pending until a code from it confirms it."""
        secret = new_totp_secret()
        sealed = self._vault().seal(f"totp-pending:{user_id}", secret)
        self.db.execute("UPDATE users SET totp_pending = ? WHERE id = ?", (sealed, user_id))
        return secret

    def _secret(self, user_id: int, column: str, aad: str) -> tuple[str | None, int]:
        row = self.db.execute(
            f"SELECT {column}, totp_step FROM users WHERE id = ?",  # noqa: S608 - our column
            (user_id,),
        ).fetchone()
        if row is None or row[0] is None:
            return None, 0
        return self._vault().open(f"{aad}:{user_id}", bytes(row[0])), int(row[1])

    def _spend(self, user_id: int, step: int, set_sql: str = "", args: tuple = ()) -> bool:
        """Record ``step`` as used (atomically: only if no later one was); True if it was."""
        cur = self.db.execute(
            f"UPDATE users SET totp_step = ?{set_sql} WHERE id = ? AND totp_step < ?",  # noqa: S608
            (step, *args, user_id, step),
        )
        return cur.rowcount == 1

    def totp_confirm(self, user_id: int, code: str, now: float) -> bool:
        secret, last = self._secret(user_id, "totp_pending", "totp-pending")
        if secret is None:
            raise UserError("no two-factor enrolment is pending: enroll first")
        step = totp_match(secret, code, now, last)
        if not step:
            return False
        sealed = self._vault().seal(f"totp:{user_id}", secret)
        return self._spend(user_id, step, ", totp_sealed = ?, totp_pending = NULL", (sealed,))

    def totp_check(self, user_id: int, code: str, now: float) -> bool:
        """True if 2FA is on and ``code`` is a fresh code of it (then it is spent)."""
        secret, last = self._secret(user_id, "totp_sealed", "totp")
        if secret is None:
            return False
        step = totp_match(secret, code, now, last)
        return bool(step) and self._spend(user_id, step)

    def totp_disable(self, user_id: int) -> None:
        self.db.execute(
            "UPDATE users SET totp_sealed = NULL, totp_pending = NULL WHERE id = ?", (user_id,)
        )

    # ------------------------------------------------------------------ sessions
    def prune(self, now: float, ttl: float) -> None:
        """Forget sessions that ended over a day ago, and spent refresh tokens (of any session)
        spent over ``ttl`` (the refresh lifetime) ago; at most once an hour, from sign-in."""
        if now - self.pruned < 3600:
            return
        self.pruned = now
        old = now - 86_400
        self.db.execute(
            "DELETE FROM spent_refresh WHERE spent < ? OR session_id IN"
            " (SELECT id FROM sessions WHERE expires < ?)",
            (now - ttl, old),
        )
        self.db.execute("DELETE FROM sessions WHERE expires < ?", (old,))

    def open_session(self, user_id: int, ttl: float, address: str = "") -> tuple[Session, str]:
        """A new session and its first refresh token."""
        self.prune(time.time(), ttl)
        sid = secrets.token_urlsafe(12)
        token = "r_" + secrets.token_urlsafe(32)
        expires = time.time() + ttl
        self.db.execute(
            "INSERT INTO sessions (id, user_id, refresh_hash, expires, created, address)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (sid, user_id, refresh_hash(token), expires, time.time(), address[:64]),
        )
        return Session(sid, user_id, expires, False), token

    def session(self, sid: str) -> Session | None:
        row = self.db.execute(
            "SELECT id, user_id, expires, revoked FROM sessions WHERE id = ?", (sid,)
        ).fetchone()
        return None if row is None else Session(row[0], int(row[1]), float(row[2]), bool(row[3]))

    def refresh(self, token: str, ttl: float) -> tuple[Session, str] | None:
        """Spend ``token``: the session and its next refresh token, or None. A token spent
        before ends its session (a copy is in someone else's hands), unless it was spent in the
        last ``REFRESH_GRACE`` seconds: then Refreshed (two tabs refreshing at once share one
        cookie; the other got the new token)."""
        with self.store.transaction():
            return self._spend_refresh(refresh_hash(token), ttl, time.time())

    def _spend_refresh(self, h: bytes, ttl: float, now: float) -> tuple[Session, str] | None:
        row = self.db.execute(
            "SELECT id, user_id, expires, revoked FROM sessions WHERE refresh_hash = ?", (h,)
        ).fetchone()
        if row is None:
            spent = self.db.execute(
                "SELECT session_id, spent FROM spent_refresh WHERE refresh_hash = ?", (h,)
            ).fetchone()
            if spent is not None and now - float(spent[1]) < REFRESH_GRACE:
                raise Refreshed(spent[0])  # nothing was written: the rollback changes nothing
            if spent is not None:
                self.db.execute("UPDATE sessions SET revoked = 1 WHERE id = ?", (spent[0],))
            return None
        sid, user_id, expires, revoked = row[0], int(row[1]), float(row[2]), bool(row[3])
        if revoked or expires <= now:
            return None
        nxt = "r_" + secrets.token_urlsafe(32)
        self.db.execute("INSERT INTO spent_refresh VALUES (?, ?, ?)", (h, sid, now))
        self.db.execute(
            "UPDATE sessions SET refresh_hash = ?, expires = ?, rotated = rotated + 1 WHERE id = ?",
            (refresh_hash(nxt), now + ttl, sid),
        )
        return Session(sid, user_id, now + ttl, False), nxt

    def revoke_session(self, sid: str) -> None:
        self.db.execute("UPDATE sessions SET revoked = 1 WHERE id = ?", (sid,))

    def session_of_refresh(self, token: str) -> str | None:
        row = self.db.execute(
            "SELECT id FROM sessions WHERE refresh_hash = ?", (refresh_hash(token),)
        ).fetchone()
        return None if row is None else str(row[0])

    # ------------------------------------------------------------------- secrets
    def signing_secret(self) -> bytes:
        """The key that signs access tokens: made once, sealed by the vault, shared by every
        gateway process on this store (a token from one is good at another)."""
        vault = self._vault()
        row = self.db.execute("SELECT sealed FROM web_secrets WHERE name = 'jwt'").fetchone()
        if row is None:
            fresh = base64.b64encode(secrets.token_bytes(32)).decode()
            self.db.execute(
                "INSERT OR IGNORE INTO web_secrets VALUES ('jwt', ?)", (vault.seal("jwt", fresh),)
            )
            row = self.db.execute("SELECT sealed FROM web_secrets WHERE name = 'jwt'").fetchone()
        return base64.b64decode(vault.open("jwt", bytes(row[0])))

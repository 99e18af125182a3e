"""API secrets sealed at rest (gateways/vault.py) and the account store's use of them: what the
HTTP gateway's HMAC check reads (``signing_key``), rotation, the schema migration, the key
file's mode, the admin CLI and the demo accounts."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from gateways.accounts import AccountStore, Permission, check_secret
from gateways.vault import ENV, Vault, VaultError, key_id
from protocol.config import load
from stack.demo import _credentials
from tests.procs import REPO, write_exchange_toml


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    return Vault.create(tmp_path / "vault.key")


@pytest.fixture
def store(tmp_path: Path):
    s = AccountStore(tmp_path / "accounts.db")
    s.create_account("alice")
    s.create_account("bob")
    yield s
    s.close()


def sealed_blob(store: AccountStore, key: str) -> bytes:
    return bytes(
        store.db.execute("SELECT sealed_secret FROM api_keys WHERE key = ?", (key,)).fetchone()[0]
    )


# ----------------------------------------------------------------------------- the vault


def test_seal_then_open_gives_the_secret_back(vault: Vault) -> None:
    blob = vault.seal("k_1", "s3cret-ü")
    assert b"s3cret" not in blob
    assert blob[0] == 1 and key_id(blob) == vault.current
    assert vault.open("k_1", blob) == "s3cret-ü"
    assert vault.seal("k_1", "s3cret-ü") != blob  # a fresh nonce each time


def test_changing_any_byte_of_a_sealed_secret_is_refused(vault: Vault) -> None:
    blob = vault.seal("k_1", "secret")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(VaultError):
            vault.open("k_1", bytes(bad))
    for cut in (blob[:-1], blob[:10], b""):
        with pytest.raises(VaultError):
            vault.open("k_1", cut)


def test_a_sealed_secret_moved_to_another_api_key_does_not_open(
    vault: Vault, store: AccountStore
) -> None:
    with pytest.raises(VaultError, match="does not open"):
        vault.open("k_2", vault.seal("k_1", "secret"))
    a, _ = store.issue_key("alice", Permission.TRADE, vault)
    b, b_secret = store.issue_key("bob", Permission.READ, vault)
    # an attacker with write access to the file copies bob's blob into alice's row
    store.db.execute(
        "UPDATE api_keys SET sealed_secret = ? WHERE key = ?", (sealed_blob(store, b), a)
    )
    with pytest.raises(VaultError):
        store.signing_key(a, vault)
    assert store.signing_key(b, vault)[1] == b_secret.encode()


def test_the_database_alone_yields_no_secret(tmp_path: Path, store: AccountStore) -> None:
    vault = Vault.create(tmp_path / "vault.key")
    key, secret = store.issue_key("alice", Permission.TRADE, vault)
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("accounts.db*"))
    assert secret.encode() not in raw and sealed_blob(AccountStore(tmp_path / "accounts.db"), key)
    (tmp_path / "vault.key").unlink()
    thief = AccountStore(tmp_path / "accounts.db")  # the stolen file, without the key file
    with pytest.raises(VaultError, match="no vault key file"):
        Vault.load(tmp_path / "vault.key")
    with pytest.raises(VaultError, match="does not hold"):
        thief.signing_key(key, Vault.create(tmp_path / "other.key"))
    thief.close()


def test_key_file_readable_by_group_or_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "vault.key"
    Vault.create(path)
    assert (path.stat().st_mode & 0o777) == 0o600
    for mode in (0o644, 0o640, 0o604, 0o620):
        path.chmod(mode)
        with pytest.raises(VaultError, match="chmod 600"):
            Vault.load(path)
        with pytest.raises(VaultError):
            Vault.create(path)  # an existing file is never replaced
    path.chmod(0o600)
    Vault.load(path)


def test_create_keeps_an_existing_key_file(tmp_path: Path) -> None:
    first = Vault.create(tmp_path / "vault.key")
    blob = first.seal("k_1", "secret")
    again = Vault.create(tmp_path / "vault.key")
    assert again.current == first.current and again.open("k_1", blob) == "secret"


def test_environment_key_overrides_the_file_and_cannot_be_rotated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    filed = Vault.create(tmp_path / "vault.key")
    other = tmp_path / "other" / "vault.key"
    from_other = Vault.create(other)
    monkeypatch.setenv(ENV, base64.b64encode(other.read_bytes()).decode())
    v = Vault.load(tmp_path / "vault.key")
    assert v.current == from_other.current != filed.current
    assert not (tmp_path / "missing.key").exists()
    assert Vault.create(tmp_path / "missing.key").current == from_other.current
    assert not (tmp_path / "missing.key").exists()  # the environment's key: no file made
    with pytest.raises(VaultError, match=ENV):
        v.rotate()
    monkeypatch.setenv(ENV, "not base64!")
    with pytest.raises(VaultError, match=ENV):
        Vault.load(tmp_path / "vault.key")


# ---------------------------------------------------------------------------- rotation


def test_rotation_reseal_and_retire_keep_every_secret_opening(
    tmp_path: Path, store: AccountStore
) -> None:
    path = tmp_path / "vault.key"
    vault = Vault.create(path)
    first = vault.current
    issued = [store.issue_key(n, Permission.TRADE, vault) for n in ("alice", "bob", "alice")]
    store.revoke_key(issued[2][0])
    new = vault.rotate()
    assert new != first and vault.key_ids == [new, first]
    assert Vault.load(path).key_ids == [new, first]
    for key, secret in issued[:2]:  # old blobs open after the rotation
        assert store.signing_key(key, vault)[1] == secret.encode()
    later = store.issue_key("bob", Permission.READ, vault)
    assert key_id(sealed_blob(store, later[0])) == new
    assert store.sealing_key_ids() == {first, new}

    assert store.reseal(vault) == 4  # the revoked key's blob too
    assert store.sealing_key_ids() == {new}
    assert vault.retire(store.sealing_key_ids()) == [first]
    reloaded = Vault.load(path)
    assert reloaded.key_ids == [new]
    for key, secret in [*issued[:2], later]:
        assert store.signing_key(key, reloaded)[1] == secret.encode()
    assert vault.retire(store.sealing_key_ids()) == []


def test_retire_keeps_a_key_that_a_blob_still_uses(tmp_path: Path, store: AccountStore) -> None:
    vault = Vault.create(tmp_path / "vault.key")
    first = vault.current
    key, secret = store.issue_key("alice", Permission.TRADE, vault)
    vault.rotate()
    assert vault.retire(store.sealing_key_ids()) == []  # not resealed yet
    assert store.signing_key(key, Vault.load(tmp_path / "vault.key"))[1] == secret.encode()
    assert first in Vault.load(tmp_path / "vault.key").key_ids


def test_a_running_process_follows_a_rotation_made_by_another(
    tmp_path: Path, store: AccountStore
) -> None:
    path = tmp_path / "vault.key"
    gateway = Vault.create(path)  # both loaded at their start, before the rotation
    issuer = Vault.load(path)
    key, secret = store.issue_key("alice", Permission.TRADE, issuer)
    admin = Vault.load(path)
    admin.rotate()
    store.reseal(admin)
    admin.retire(store.sealing_key_ids())
    assert store.signing_key(key, gateway)[1] == secret.encode()  # reloaded the file
    later, later_secret = store.issue_key("bob", Permission.TRADE, issuer)
    assert key_id(sealed_blob(store, later)) == admin.current  # not the retired key
    assert store.signing_key(later, Vault.load(path))[1] == later_secret.encode()


# --------------------------------------------------------------------- the account store


def test_unsealed_key_logs_on_as_before_but_cannot_sign(vault: Vault, store: AccountStore) -> None:
    key, secret = store.issue_key("alice", Permission.TRADE)
    found = store.lookup(key)
    assert found is not None and check_secret(found, secret)
    assert store.signing_key(key, vault) is None
    sealed_key, sealed_secret = store.issue_key("alice", Permission.READ, vault)
    found_sealed = store.lookup(sealed_key)
    assert found_sealed is not None and check_secret(found_sealed, sealed_secret)  # SCRAM intact
    got = store.signing_key(sealed_key, vault)
    assert got is not None
    api, raw = got
    assert raw == sealed_secret.encode() and api.permission is Permission.READ
    assert api.account_name == "alice"
    assert store.signing_key("k_unknown", vault) is None


def test_revoked_key_has_no_signing_key(vault: Vault, store: AccountStore) -> None:
    key, _ = store.issue_key("bob", Permission.TRADE, vault)
    assert store.signing_key(key, vault) is not None
    store.revoke_key(key)
    assert store.signing_key(key, vault) is None


OLD_SCHEMA = """
CREATE TABLE accounts (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE,
    created REAL NOT NULL);
CREATE TABLE api_keys (key TEXT PRIMARY KEY, account_id INTEGER NOT NULL REFERENCES accounts(id),
    permission TEXT NOT NULL, salt BLOB NOT NULL, iterations INTEGER NOT NULL,
    stored_key BLOB NOT NULL, revoked INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);
CREATE TABLE fix_sessions (sender_comp_id TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    cancel_on_disconnect INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL);
"""


def test_database_with_the_old_schema_is_migrated_on_open(tmp_path: Path, vault: Vault) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
    old = AccountStore.__new__(AccountStore)  # issue a key as the old code did: no column
    old.db = sqlite3.connect(path, isolation_level=None)
    old.create_account("carol")
    old.db.execute(
        "INSERT INTO api_keys (key, account_id, permission, salt, iterations, stored_key,"
        " created) VALUES ('k_old', 1, 'trade', x'00', 4096, x'00', 0)"
    )
    old.db.close()

    store = AccountStore(path)
    columns = {r[1] for r in store.db.execute("PRAGMA table_info(api_keys)")}
    assert "sealed_secret" in columns
    assert store.lookup("k_old") is not None and store.signing_key("k_old", vault) is None
    key, secret = store.issue_key("carol", Permission.TRADE, vault)
    assert store.signing_key(key, vault)[1] == secret.encode()
    store.close()
    AccountStore(path).close()  # opening a migrated file again is a no-op


def test_sealing_an_old_key_needs_its_secret(vault: Vault, store: AccountStore) -> None:
    key, secret = store.issue_key("alice", Permission.TRADE)
    with pytest.raises(ValueError, match="with that secret"):
        store.seal_secret(key, "wrong", vault)
    assert store.signing_key(key, vault) is None
    store.seal_secret(key, secret, vault)
    assert store.signing_key(key, vault)[1] == secret.encode()


# ------------------------------------------------------------------ admin CLI and demo


def admin(config: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "gateways.admin", "--config", str(config), *args]
    env = {k: v for k, v in os.environ.items() if k not in (ENV, "EXCHANGE_CONFIG")}
    return subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def fields(out: str) -> dict[str, str]:
    return {w[0]: w[1] for w in (line.split() for line in out.splitlines()) if len(w) == 2}


def test_admin_cli_issues_sealed_keys_and_rotates_the_vault_key(tmp_path: Path) -> None:
    db, key_file = tmp_path / "data" / "accounts.db", tmp_path / "data" / "vault.key"
    cfg = write_exchange_toml(
        tmp_path / "exchange.toml", accounts={"path": str(db), "vault_key": str(key_file)}
    )
    assert admin(cfg, "create-account", "alice").returncode == 0
    done = admin(cfg, "issue-key", "alice", "--permission", "read")
    assert done.returncode == 0, done.stderr
    assert (key_file.stat().st_mode & 0o777) == 0o600  # made by the first issue-key
    issued = fields(done.stdout)
    first = Vault.load(key_file).current
    assert f"vault key {first}" in done.stdout
    traded = fields(admin(cfg, "issue-key", "alice").stdout)

    store = AccountStore(db)
    try:
        for got in (issued, traded):
            signing = store.signing_key(got["api_key"], Vault.load(key_file))
            assert signing is not None and signing[1] == got["secret"].encode()
        assert store.signing_key(issued["api_key"], Vault.load(key_file))[0].permission == "read"

        rotated = admin(cfg, "rotate-vault-key")
        assert rotated.returncode == 0, rotated.stderr
        after = Vault.load(key_file)
        assert after.key_ids == [after.current] and after.current != first
        assert f"{first} -> {after.current}: resealed 2 secrets, retired 1 keys" in rotated.stdout
        assert store.sealing_key_ids() == {after.current}
        for got in (issued, traded):
            assert store.signing_key(got["api_key"], after)[1] == got["secret"].encode()

        assert admin(cfg, "revoke-key", traded["api_key"]).returncode == 0
        assert store.signing_key(traded["api_key"], after) is None
        key_file.chmod(0o644)
        refused = admin(cfg, "issue-key", "alice")
        assert refused.returncode == 1 and "chmod 600" in refused.stderr
    finally:
        store.close()


def test_demo_credentials_sign_over_hmac_also_from_an_older_data_dir(tmp_path: Path) -> None:
    ex = load()
    ex.accounts.path, ex.accounts.vault_key = str(tmp_path / "accounts.db"), str(tmp_path / "v")
    creds_path = tmp_path / "demo-credentials.json"
    creds = _credentials(ex, creds_path)
    vault = Vault.load(tmp_path / "v")
    store = AccountStore(ex.accounts.path)
    try:
        for c in creds.values():
            assert store.signing_key(c["api_key"], vault)[1] == c["secret"].encode()
        # a data dir from before sealing: the same credentials, keys without a sealed secret
        store.db.execute("UPDATE api_keys SET sealed_secret = NULL")
        assert store.signing_key(creds["alice"]["api_key"], vault) is None
        assert _credentials(ex, creds_path) == creds
        for c in json.loads(creds_path.read_text()).values():
            assert store.signing_key(c["api_key"], vault)[1] == c["secret"].encode()
    finally:
        store.close()

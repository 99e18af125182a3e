"""API secrets sealed at rest: AES-256-GCM under keys that never live in the account database.

HMAC request signing (``/api/v3``, ``/api/v1``) needs the server to know each key's secret, so
unlike the SCRAM verifiers in ``gateways/accounts.py`` the secret itself is kept, sealed::

    blob = version (1 byte, 1) | key id (4 bytes) | nonce (12 bytes) | ciphertext + tag (16 bytes)

The associated data is the header (version + key id) and the API key's name: a blob copied into
another key's row, or with any byte changed, does not open. Each seal takes a fresh random nonce
(2**-32 collision odds only after ~2**32 seals under one key; a key is rotated long before).

The key file is text, one key a line, ``<key id, 8 hex digits> <base64 of 32 bytes>``, the
current (sealing) key first, the older ones after it so blobs sealed under them still open. It
must be mode 0600 (one with any group/other bit is refused); ``Vault.create`` writes it so.
``EXCHANGE_VAULT_KEY``, when set, replaces the file: base64 of the whole file's content
(``base64 -w0 var/vault.key``); a vault from the environment cannot be rotated in place.

Rotation: ``rotate()`` prepends a new key to the file; ``AccountStore.reseal`` re-encrypts every
blob under it; ``retire(in_use)`` drops the keys no blob uses any more. A running process that
meets a blob under a key id it does not hold reloads the file once (so a rotation needs no
restart), and a process that seals reloads first when the file changed.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENV = "EXCHANGE_VAULT_KEY"
VERSION = 1
KEY_ID_LEN = 4
NONCE_LEN = 12
HEADER_LEN = 1 + KEY_ID_LEN
MIN_BLOB = HEADER_LEN + NONCE_LEN + 16


class VaultError(Exception):
    """The key file is missing, unsafe or malformed, or a blob does not open."""


def _parse(text: str, where: str) -> list[tuple[bytes, bytes]]:
    keys: list[tuple[bytes, bytes]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            kid_hex, key_b64 = line.split()
            kid, key = bytes.fromhex(kid_hex), base64.b64decode(key_b64, validate=True)
        except (ValueError, binascii.Error):
            raise VaultError(f"{where} line {n}: expected '<8 hex digits> <base64 key>'") from None
        if len(kid) != KEY_ID_LEN or len(key) != 32:
            raise VaultError(
                f"{where} line {n}: key id must be 4 bytes and key 32, were {len(kid)}, {len(key)}"
            )
        if any(kid == k for k, _ in keys):
            raise VaultError(f"{where} line {n}: key id {kid_hex} repeated")
        keys.append((kid, key))
    if not keys:
        raise VaultError(f"{where}: no keys")
    return keys


def _format(keys: list[tuple[bytes, bytes]]) -> str:
    return "".join(f"{kid.hex()} {base64.b64encode(key).decode()}\n" for kid, key in keys)


def _new_key(taken: Iterable[bytes]) -> tuple[bytes, bytes]:
    used = set(taken)
    kid = secrets.token_bytes(KEY_ID_LEN)
    while kid in used:
        kid = secrets.token_bytes(KEY_ID_LEN)
    return kid, AESGCM.generate_key(bit_length=256)


def _write(path: Path, keys: list[tuple[bytes, bytes]], exclusive: bool) -> None:
    """Write the key file, mode 0600, whole or not at all: a temporary file beside it, then
    linked into place (``exclusive``: FileExistsError if one is there) or renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(_format(keys))
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def key_id(blob: bytes) -> str:
    """The id (hex) of the key a blob was sealed under, read from its header."""
    if len(blob) < MIN_BLOB or blob[0] != VERSION:
        raise VaultError("not a sealed secret (bad length or version)")
    return blob[1:HEADER_LEN].hex()


class Vault:
    """Keys that seal and open API secrets; the first is current. See the module docstring."""

    def __init__(self, keys: list[tuple[bytes, bytes]], path: Path | None = None) -> None:
        self.path = path  # None: from EXCHANGE_VAULT_KEY (or in memory); no reload, no rotation
        self._set(keys)

    def _set(self, keys: list[tuple[bytes, bytes]]) -> None:
        self._keys = list(keys)
        self._ciphers = {kid: AESGCM(key) for kid, key in keys}
        self._stamp = self._file_stamp()

    def _file_stamp(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    @classmethod
    def load(cls, path: str | Path) -> Vault:
        """The vault from ``EXCHANGE_VAULT_KEY`` if set, else from the key file at ``path``."""
        env = os.environ.get(ENV)
        if env:
            try:
                text = base64.b64decode(env, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise VaultError(f"{ENV}: expected base64 of a key file's content") from None
            return cls(_parse(text, ENV))
        path = Path(path)
        return cls(cls._read(path), path)

    @staticmethod
    def _read(path: Path) -> list[tuple[bytes, bytes]]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise VaultError(
                f"no vault key file {path} (the admin CLI's issue-key makes one)"
            ) from None
        with os.fdopen(fd) as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            if mode & 0o077:
                raise VaultError(
                    f"vault key file {path} has mode {mode:04o}; group and others must have no"
                    f" access (chmod 600 {path})"
                )
            return _parse(f.read(), str(path))

    @classmethod
    def create(cls, path: str | Path) -> Vault:
        """Load the vault, first making its key file (one new key, mode 0600) if missing."""
        path = Path(path)
        if not os.environ.get(ENV):
            try:
                _write(path, [_new_key(())], exclusive=True)
            except FileExistsError:
                pass
        return cls.load(path)

    @property
    def current(self) -> str:
        return self._keys[0][0].hex()

    @property
    def key_ids(self) -> list[str]:
        return [kid.hex() for kid, _ in self._keys]

    def _reload(self) -> None:
        if self.path is not None:
            self._set(self._read(self.path))

    def seal(self, api_key: str, secret: str) -> bytes:
        if self.path is not None and self._file_stamp() != self._stamp:
            self._reload()  # rotated by another process: seal under its current key
        kid = self._keys[0][0]
        header = bytes([VERSION]) + kid
        nonce = secrets.token_bytes(NONCE_LEN)
        sealed = self._ciphers[kid].encrypt(nonce, secret.encode(), header + api_key.encode())
        return header + nonce + sealed

    def open(self, api_key: str, blob: bytes) -> str:
        """The secret sealed in ``blob`` for ``api_key``; VaultError if it does not open."""
        kid = bytes.fromhex(key_id(blob))
        if kid not in self._ciphers:
            self._reload()  # a rotation since this process loaded the file
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise VaultError(f"sealed under key id {kid.hex()}, which this vault does not hold")
        header, nonce = blob[:HEADER_LEN], blob[HEADER_LEN : HEADER_LEN + NONCE_LEN]
        try:
            plain = cipher.decrypt(nonce, blob[HEADER_LEN + NONCE_LEN :], header + api_key.encode())
        except InvalidTag:
            raise VaultError(
                f"sealed secret of {api_key} does not open (altered, or another key's row)"
            ) from None
        return plain.decode()

    # ------------------------------------------------------------------------- rotation
    def _writable(self) -> Path:
        if self.path is None:
            raise VaultError(
                f"this vault comes from {ENV}: rotate a key file, then set {ENV} from it"
            )
        return self.path

    def rotate(self) -> str:
        """Prepend a new key to the key file (it seals from now on); returns its id."""
        path = self._writable()
        keys = self._read(path)
        keys.insert(0, _new_key(kid for kid, _ in keys))
        _write(path, keys, exclusive=False)
        self._set(keys)
        return self.current

    def retire(self, in_use: Iterable[str]) -> list[str]:
        """Drop from the key file every key but the current one and those in ``in_use`` (the
        key ids blobs still carry); returns the dropped ids."""
        path = self._writable()
        keys = self._read(path)
        keep = {bytes.fromhex(k) for k in in_use} | {keys[0][0]}
        kept = [(kid, key) for kid, key in keys if kid in keep]
        dropped = [kid.hex() for kid, _ in keys if kid not in keep]
        if dropped:
            _write(path, kept, exclusive=False)
        self._set(kept)
        return dropped

"""Access tokens: JWT (RFC 7519) signed with HMAC-SHA256, and nothing else.

Only one header is ever accepted: ``{"alg":"HS256","typ":"JWT","kid":<kid>}`` byte for byte as
this module writes it, so ``alg=none``, RS/HS confusion or any other header is refused before a
claim is read. The signature is compared in constant time, then ``exp`` is checked. Claims:
``sub`` (user id), ``acc`` (account id), ``sid`` (session id), ``iat``, ``exp`` (unix seconds).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import msgspec


class TokenError(ValueError):
    pass


class Claims(msgspec.Struct, forbid_unknown_fields=True):
    sub: int
    acc: int
    sid: str
    iat: int
    exp: int


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(data: bytes) -> bytes:
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


_CLAIMS = msgspec.json.Decoder(Claims)
_ENC = msgspec.json.Encoder()


class Tokens:
    def __init__(self, secret: bytes, kid: str = "1") -> None:
        self.secret = secret
        self.header = _b64(_ENC.encode({"alg": "HS256", "typ": "JWT", "kid": kid}))

    def _sign(self, signing_input: bytes) -> bytes:
        return _b64(hmac.new(self.secret, signing_input, hashlib.sha256).digest())

    def issue(self, claims: Claims) -> str:
        signing_input = self.header + b"." + _b64(_ENC.encode(claims))
        return (signing_input + b"." + self._sign(signing_input)).decode()

    def check(self, token: str, now: float) -> Claims:
        """The claims of a valid, unexpired token; TokenError (with why) otherwise."""
        if len(token) > 2048 or not token.isascii():
            raise TokenError("malformed token")
        raw = token.encode()
        parts = raw.split(b".")
        if len(parts) != 3:
            raise TokenError("malformed token")
        header, body, sig = parts
        if not hmac.compare_digest(header, self.header):
            raise TokenError("token header refused (only HS256 tokens of this exchange)")
        if not hmac.compare_digest(sig, self._sign(header + b"." + body)):
            raise TokenError("bad token signature")
        try:
            claims = _CLAIMS.decode(_unb64(body))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as e:
            raise TokenError(f"malformed token claims: {e}") from None
        if claims.exp <= now:
            raise TokenError("token expired: refresh it (POST /api/v1/token/refresh)")
        return claims

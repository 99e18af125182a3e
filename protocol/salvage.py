"""What can still be read from a request that failed to decode: one implementation per wire.

Every edge answers a bad request with a reject that carries the request's id when it could be
read, and says why in terms of the protocol (unknown message, not an object, a number where a
decimal string belongs), never by parsing msgspec's error text (which may be reworded).
These run on the error path only: a lenient second look at the raw bytes.
"""

from __future__ import annotations

from typing import Any, get_args

import msgspec

MAX_U64 = 2**64


def tags_of(union: Any) -> frozenset:
    """The msgspec tags of the Structs of a union type (the message kinds a wire accepts)."""
    return frozenset(t.__struct_config__.tag for t in get_args(union))


# ------------------------------------------------------------------------ JSON lines / text


def json_object(data: bytes | str) -> Any:
    """The line decoded leniently (invalid UTF-8 replaced, not fatal), or None."""
    if isinstance(data, bytes | bytearray):
        data = bytes(data).decode("utf-8", "replace")
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None


def json_id(obj: Any) -> int | str | None:
    """The ``id`` of a decoded JSON request (``json_object``) when it is an integer or a string
    (a bool is not an id), whatever else in it is wrong: echoed as sent, so the client can
    match it."""
    rid = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(rid, str) or (isinstance(rid, int) and not isinstance(rid, bool)):
        return rid
    return None


def json_op(obj: Any) -> str | None:
    """The ``op`` of a decoded JSON request when it is a string."""
    op = obj.get("op") if isinstance(obj, dict) else None
    return op if isinstance(op, str) else None


def numbers_in(obj: Any, fields: tuple[str, ...]) -> list[str]:
    """The fields of ``obj`` that hold a JSON number where the protocol wants a string."""
    if not isinstance(obj, dict):
        return []
    return [f for f in fields if isinstance(obj.get(f), int | float) and not isinstance(
        obj.get(f), bool)]  # fmt: skip


# ----------------------------------------------------------------- MessagePack engine frames


def msgpack_item(raw: bytes | msgspec.Raw) -> Any:
    try:
        return msgspec.msgpack.decode(raw)
    except msgspec.DecodeError:
        return None


def msgpack_req(item: Any) -> int:
    """The request id of an undecodable engine command (a tagged array: [tag, req, ...])."""
    if isinstance(item, list) and len(item) > 1 and type(item[1]) is int:
        return item[1] if 0 <= item[1] < MAX_U64 else 0
    return 0


def msgpack_tag(item: Any) -> Any:
    return item[0] if isinstance(item, list) and item else None

"""Canonical MessagePack (PROTOCOL.md section 1).

Everything hashed, signed or sent between nodes is msgpack with `use_bin_type=True`; maps
are written with keys in ascending order of their UTF-8 bytes; there are no floats. Decoding
is strict: anything else is refused, so two nodes can never disagree about what bytes mean.
"""

from __future__ import annotations

from typing import Any

import msgpack

# Python's str ordering is by code point, which for valid UTF-8 equals byte order, but
# surrogates are refused on encode anyway; sorting by the encoded bytes states the rule.
_STRUCTURE_DEPTH_MAX = 32


class EncodingError(ValueError):
    """Bytes that are not canonical msgpack of the shapes the protocol allows."""


def _canonicalize(obj: Any, depth: int) -> Any:
    if depth > _STRUCTURE_DEPTH_MAX:
        raise EncodingError("structure nested too deeply")
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if not isinstance(key, str):
                raise EncodingError(f"map key {key!r} is not a string")
            items.append((key.encode("utf-8"), key, _canonicalize(value, depth + 1)))
        items.sort(key=lambda item: item[0])
        return {key: value for _, key, value in items}
    if isinstance(obj, list | tuple):
        return [_canonicalize(item, depth + 1) for item in obj]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | bytes):
        return obj
    if isinstance(obj, int):
        if not -(2**63) <= obj < 2**64:
            raise EncodingError(f"integer {obj} does not fit in 64 bits")
        return obj
    if isinstance(obj, bytearray | memoryview):
        return bytes(obj)
    raise EncodingError(f"type {type(obj).__name__} cannot be encoded (no floats anywhere)")


def canonical_packb(obj: Any) -> bytes:
    """Encode `obj` in canonical form: sorted string keys, bin for bytes, no floats.

    Raises:
        EncodingError: a float, a non-string map key, an oversized int or an unknown type.
    """
    return msgpack.packb(_canonicalize(obj, 0), use_bin_type=True)


def pack_trusted(obj: Any) -> bytes:
    """Encode a structure the node built itself whose maps are already in key order.

    Skips the canonicalising walk on the hot path (receipts, write sets); callers build their
    dicts with keys inserted in sorted order.
    """
    return msgpack.packb(obj, use_bin_type=True)


def _check_no_floats(obj: Any, depth: int) -> None:
    if depth > _STRUCTURE_DEPTH_MAX:
        raise EncodingError("structure nested too deeply")
    if isinstance(obj, float):
        raise EncodingError("floats are not allowed")
    # msgpack decodes ext type -1 itself (never calling ext_hook) into a Timestamp.
    if isinstance(obj, msgpack.Timestamp):
        raise EncodingError("msgpack ext type -1 (timestamp) is not allowed")
    if isinstance(obj, dict):
        for key, value in obj.items():
            # strict_map_key lets bin keys through; the protocol allows only str keys.
            if not isinstance(key, str):
                raise EncodingError(f"map key {key!r} is not a string")
            _check_no_floats(value, depth + 1)
    elif isinstance(obj, list):
        for item in obj:
            _check_no_floats(item, depth + 1)


def unpackb_strict(data: bytes, *, require_canonical: bool = False) -> Any:
    """Decode one msgpack object, refusing trailing bytes, ext types, floats and non-str keys.

    With `require_canonical`, re-encoding the result must give back exactly `data`, so a
    signed structure has a single byte representation.

    Raises:
        EncodingError: the bytes are not (canonical) msgpack of an allowed shape.
    """
    try:
        obj = msgpack.unpackb(
            data,
            object_pairs_hook=_unique_keys_map,
            raw=False,
            strict_map_key=True,
            use_list=True,
            timestamp=0,
            ext_hook=_refuse_ext,
        )
    except EncodingError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise EncodingError(f"not valid msgpack: {exc}") from None
    _check_no_floats(obj, 0)
    if require_canonical and canonical_packb(obj) != data:
        raise EncodingError("not in canonical form (map keys sorted, minimal encodings)")
    return obj


def _unique_keys_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    # msgpack keeps the last of repeated keys; a signed or hashed map must mean one thing.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise EncodingError("map has a repeated key")
    return result


def _refuse_ext(code: int, data: bytes) -> Any:
    raise EncodingError(f"msgpack ext type {code} is not allowed")

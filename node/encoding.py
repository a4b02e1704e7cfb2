"""Canonical MessagePack (PROTOCOL.md section 1).

Everything hashed, signed or sent between nodes is msgpack with `use_bin_type=True`; maps
are written with keys in ascending order of their UTF-8 bytes; there are no floats. Decoding
is strict: anything else is refused, so two nodes can never disagree about what bytes mean.
"""

from __future__ import annotations

from typing import Any

import msgpack

# Python orders str by code point, which for valid Unicode is exactly the order of the
# UTF-8 bytes; a key that is not valid Unicode (a lone surrogate) is refused, so sorting the
# str keys themselves states the rule without encoding every key (this is the hot path of
# every receipt).
_STRUCTURE_DEPTH_MAX = 32


class EncodingError(ValueError):
    """Bytes that are not canonical msgpack of the shapes the protocol allows."""


def _check_key(key: Any) -> None:
    if type(key) is not str:
        raise EncodingError(f"map key {key!r} is not a string")
    if not key.isascii():
        try:
            key.encode("utf-8")
        except UnicodeEncodeError:
            raise EncodingError(f"map key {key!r} is not valid Unicode") from None


def _canonicalize(obj: Any, depth: int) -> Any:
    kind = type(obj)
    if kind is str or kind is bytes or kind is bool or obj is None:
        return obj
    if kind is int:
        if not -(2**63) <= obj < 2**64:
            raise EncodingError(f"integer {obj} does not fit in 64 bits")
        return obj
    if depth >= _STRUCTURE_DEPTH_MAX and obj:  # its items would sit one level too deep
        raise EncodingError("structure nested too deeply")
    if kind is dict:
        for key in obj:
            _check_key(key)
        return {key: _canonicalize(obj[key], depth + 1) for key in sorted(obj)}
    if kind is list or kind is tuple:
        return [_canonicalize(item, depth + 1) for item in obj]
    return _canonicalize_subclass(obj, depth)


def _canonicalize_subclass(obj: Any, depth: int) -> Any:
    """The rare values whose type is a subclass (or a buffer) rather than the type itself."""
    if isinstance(obj, dict):
        return _canonicalize(dict(obj), depth)
    if isinstance(obj, list | tuple):
        return _canonicalize(list(obj), depth)
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj)
    if isinstance(obj, int):
        return _canonicalize(int(obj), depth)
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
            # The canonical check below refuses repeated keys itself (the map decodes
            # smaller, so it re-encodes to other bytes): no Python call per map for it.
            object_pairs_hook=None if require_canonical else _unique_keys_map,
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
    if not require_canonical:
        _check_no_floats(obj, 0)
    elif not _canonical_tree(obj, 0) or msgpack.packb(obj, use_bin_type=True) != data:
        raise EncodingError("not in canonical form (map keys sorted, minimal encodings)")
    return obj


def _canonical_tree(obj: Any, depth: int) -> bool:
    """True if `obj`, as msgpack decoded it, is in canonical shape: every map's str keys in
    ascending order as decoded, no float or timestamp anywhere, not nested too deeply.

    With that, re-encoding `obj` as it is reproduces canonical bytes, so comparing them with
    the input checks minimal encodings and unrepeated keys: one walk, no copy (the hot path
    of every transaction body a node admits).

    Raises:
        EncodingError: a non-str key or a value the protocol does not allow (named).
    """
    kind = type(obj)
    if kind is bytes or kind is str or kind is int or kind is bool or obj is None:
        return True
    if depth >= _STRUCTURE_DEPTH_MAX and obj:
        raise EncodingError("structure nested too deeply")
    if kind is dict:
        previous: str | None = None
        for key, value in obj.items():
            if type(key) is not str:  # strict_map_key lets bin keys through
                raise EncodingError(f"map key {key!r} is not a string")
            # Decoded UTF-8 never holds a lone surrogate, so code point order is the order
            # of the keys' UTF-8 bytes.
            if previous is not None and key <= previous:
                return False
            previous = key
            if not _canonical_tree(value, depth + 1):
                return False
        return True
    if kind is list:
        return all(_canonical_tree(item, depth + 1) for item in obj)
    if kind is float:
        raise EncodingError("floats are not allowed")
    if kind is msgpack.Timestamp:  # ext type -1, decoded by msgpack itself
        raise EncodingError("msgpack ext type -1 (timestamp) is not allowed")
    raise EncodingError(f"type {kind.__name__} is not allowed")


def _unique_keys_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    # msgpack keeps the last of repeated keys; a signed or hashed map must mean one thing.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise EncodingError("map has a repeated key")
    return result


def _refuse_ext(code: int, data: bytes) -> Any:
    raise EncodingError(f"msgpack ext type {code} is not allowed")

"""Tests for node.encoding: canonical msgpack (PROTOCOL.md section 1), strict decoding."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.runtime import encode_record, encode_record_reference
from node.block import ContractEvent, Receipt
from node.encoding import EncodingError, canonical_packb, unpackb_strict

INT64_MIN = -(2**63)
UINT64_MAX = 2**64 - 1

leaves = (
    st.none()
    | st.booleans()
    | st.integers(INT64_MIN, UINT64_MAX)
    | st.binary(max_size=40)
    | st.text(max_size=20)
)
values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)
maps = st.dictionaries(st.text(max_size=10), values, max_size=6)


def assert_same(decoded: Any, original: Any) -> None:
    """Equal *and* of the same types all the way down (True == 1 would hide a bool->int)."""
    if isinstance(original, tuple):
        original = list(original)
    assert type(decoded) is type(original), (decoded, original)
    if isinstance(original, dict):
        assert list(decoded) == sorted(original, key=lambda k: k.encode())
        for key in original:
            assert_same(decoded[key], original[key])
    elif isinstance(original, list):
        assert len(decoded) == len(original)
        for left, right in zip(decoded, original, strict=True):
            assert_same(left, right)
    else:
        assert decoded == original


def utf8_sorted_keys(value: Any) -> bool:
    """True when every map in `value` (as decoded, in wire order) has keys in byte order."""
    if isinstance(value, dict):
        keys = [key.encode() for key in value]
        return keys == sorted(keys) and all(utf8_sorted_keys(v) for v in value.values())
    if isinstance(value, list):
        return all(utf8_sorted_keys(item) for item in value)
    return True


# --- round trip ---------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(values)
def test_round_trip_of_nested_structures(value: Any) -> None:
    data = canonical_packb(value)
    assert_same(unpackb_strict(data), value)
    assert_same(unpackb_strict(data, require_canonical=True), value)
    # Decoding with plain msgpack shows the keys on the wire in UTF-8 byte order.
    assert utf8_sorted_keys(msgpack.unpackb(data, raw=False))


@settings(max_examples=80, deadline=None)
@given(maps)
def test_insertion_order_does_not_change_the_bytes(value: dict[str, Any]) -> None:
    reversed_map = dict(reversed(list(value.items())))
    assert canonical_packb(reversed_map) == canonical_packb(value)


def test_basic_types_encode_to_their_msgpack_families() -> None:
    assert canonical_packb(b"ab") == b"\xc4\x02ab"  # bin 8, not str
    assert canonical_packb("ab") == b"\xa2ab"  # fixstr
    assert canonical_packb(None) == b"\xc0"
    assert canonical_packb(True) == b"\xc3"
    assert canonical_packb(False) == b"\xc2"
    assert canonical_packb(1) == b"\x01"
    assert canonical_packb(-1) == b"\xff"
    assert canonical_packb(UINT64_MAX) == b"\xcf" + b"\xff" * 8
    assert canonical_packb(INT64_MIN) == b"\xd3\x80" + b"\x00" * 7
    assert canonical_packb((1, 2)) == b"\x92\x01\x02"  # tuples are arrays
    assert canonical_packb(bytearray(b"x")) == b"\xc4\x01x"


# --- key order ------------------------------------------------------------------------------


def test_small_map_matches_hand_written_bytes() -> None:
    value = {"é": 3, "b": 1, "a": 2}
    expected = b"\x83" + b"\xa1a\x02" + b"\xa1b\x01" + b"\xa2\xc3\xa9\x03"
    assert canonical_packb(value) == expected


def test_non_ascii_keys_sort_by_utf8_bytes() -> None:
    # U+00E4 (c3 a4) < U+00E9 (c3 a9) < U+65E5 (e6 97 a5) < U+FFFF (ef bf bf)
    # < U+1F600 (f0 9f 98 80): code-point order and byte order agree for valid UTF-8.
    keys = ["\U0001f600", "日", "z", "é", "\uffff", "ä", "A", "a", ""]
    value = {key: index for index, key in enumerate(keys)}
    decoded_order = list(msgpack.unpackb(canonical_packb(value), raw=False))
    assert decoded_order == ["", "A", "a", "z", "ä", "é", "日", "\uffff", "\U0001f600"]
    assert decoded_order == sorted(keys, key=lambda k: k.encode("utf-8"))


def test_prefix_key_sorts_before_its_extension() -> None:
    data = canonical_packb({"ab": 1, "a": 2, "b": 3})
    assert data == b"\x83\xa1a\x02\xa2ab\x01\xa1b\x03"


def test_nested_maps_are_sorted_too() -> None:
    data = canonical_packb([{"y": {"b": 1, "a": 2}, "x": None}])
    assert data == b"\x91\x82\xa1x\xc0\xa1y\x82\xa1a\x02\xa1b\x01"


# --- refusals on encode ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        1.0,
        0.0,
        float("nan"),
        [1, 2.5],
        {"a": 1.5},
        {"a": [{"b": [0.1]}]},
        (1, (2, -0.0)),
    ],
)
def test_floats_refused_anywhere_on_encode(value: Any) -> None:
    with pytest.raises(EncodingError, match="float"):
        canonical_packb(value)


@settings(max_examples=60, deadline=None)
@given(maps, st.floats(allow_nan=False), st.text(max_size=5))
def test_a_float_hidden_in_any_map_is_refused(
    base: dict[str, Any], number: float, key: str
) -> None:
    poisoned = {**base, key: [base, {"deep": number}]}
    with pytest.raises(EncodingError):
        canonical_packb(poisoned)


@pytest.mark.parametrize("key", [1, b"a", None, True, (1,), 1.5])
def test_non_str_keys_refused(key: Any) -> None:
    with pytest.raises(EncodingError, match="not a string"):
        canonical_packb({key: 1})
    with pytest.raises(EncodingError, match="not a string"):
        canonical_packb([{"ok": {key: 1}}])


@pytest.mark.parametrize("number", [2**64, -(2**63) - 1, 2**100])
def test_integers_outside_64_bits_refused(number: int) -> None:
    with pytest.raises(EncodingError, match="64 bits"):
        canonical_packb({"n": number})


@pytest.mark.parametrize("value", [{1, 2}, object(), complex(1, 2)])
def test_unknown_types_refused(value: Any) -> None:
    with pytest.raises(EncodingError):
        canonical_packb([value])


def test_deep_nesting_refused_on_encode_and_decode() -> None:
    shallow: Any = 0
    for _ in range(32):
        shallow = [shallow]
    assert unpackb_strict(canonical_packb(shallow)) == shallow
    deep = [shallow]
    with pytest.raises(EncodingError, match="deeply"):
        canonical_packb(deep)
    with pytest.raises(EncodingError, match="deeply"):
        unpackb_strict(msgpack.packb(deep))


# --- refusals on decode ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"\xca\x00\x00\x00\x00",  # float32 0.0
        b"\xcb" + b"\x00" * 8,  # float64 0.0
        b"\x91\xca\x3f\x80\x00\x00",  # [1.0]
        b"\x81\xa1a\xcb" + b"\x00" * 8,  # {"a": 0.0}
    ],
)
def test_floats_refused_on_decode(data: bytes) -> None:
    with pytest.raises(EncodingError, match="float"):
        unpackb_strict(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\x81\x01\x01",  # {1: 1}
        b"\x81\xc0\x01",  # {nil: 1}
        b"\x81\xc4\x01a\x01",  # {bin "a": 1}
        b"\x91\x81\xc4\x01a\x01",  # [{bin "a": 1}]
        b"\x81\xca\x00\x00\x00\x00\x01",  # {0.0: 1}
    ],
)
def test_non_str_keys_refused_on_decode(data: bytes) -> None:
    with pytest.raises(EncodingError):
        unpackb_strict(data)


@settings(max_examples=80, deadline=None)
@given(values, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_refused(value: Any, trailer: bytes) -> None:
    with pytest.raises(EncodingError):
        unpackb_strict(canonical_packb(value) + trailer)


@pytest.mark.parametrize(
    "data",
    [
        b"\xd4\x01\x00",  # fixext 1, type 1
        b"\xd5\x7f\x00\x00",  # fixext 2, type 127
        b"\xc7\x03\x05abc",  # ext 8, type 5
        b"\xd6\xff\x00\x00\x00\x00",  # timestamp 32 (ext type -1)
        b"\xd7\xff" + b"\x00" * 8,  # timestamp 64
        b"\x92\x01\xd6\xff\x00\x00\x00\x00",  # [1, timestamp]
        b"\x81\xa1t\xd4\x02\x00",  # {"t": ext 2}
    ],
)
def test_ext_types_refused(data: bytes) -> None:
    with pytest.raises(EncodingError, match="ext"):
        unpackb_strict(data)
    with pytest.raises(EncodingError):
        unpackb_strict(data, require_canonical=True)


@settings(max_examples=60, deadline=None)
@given(values)
def test_every_truncation_is_refused(value: Any) -> None:
    data = canonical_packb(value)
    for length in range(len(data)):
        with pytest.raises(EncodingError):
            unpackb_strict(data[:length])


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\xa2\xff\xfe", b"\xdd\xff\xff\xff\xff"])
def test_garbage_refused(data: bytes) -> None:
    with pytest.raises(EncodingError):
        unpackb_strict(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_ever_raise_encoding_error(data: bytes) -> None:
    try:
        decoded = unpackb_strict(data, require_canonical=True)
    except EncodingError:
        return
    # Whatever is accepted as canonical has exactly one encoding: these very bytes.
    assert canonical_packb(decoded) == data


# --- require_canonical ----------------------------------------------------------------------


def test_unsorted_map_refused_only_when_canonical_required() -> None:
    unsorted = b"\x82\xa1b\x01\xa1a\x02"  # {"b": 1, "a": 2}
    assert unpackb_strict(unsorted) == {"a": 2, "b": 1}
    with pytest.raises(EncodingError, match="canonical"):
        unpackb_strict(unsorted, require_canonical=True)
    assert unpackb_strict(b"\x82\xa1a\x02\xa1b\x01", require_canonical=True) == {"a": 2, "b": 1}


def test_unsorted_nested_map_refused() -> None:
    data = b"\x81\xa1m\x82\xa1z\x01\xa1y\x02"  # {"m": {"z": 1, "y": 2}}
    with pytest.raises(EncodingError, match="canonical"):
        unpackb_strict(data, require_canonical=True)


@pytest.mark.parametrize(
    ("data", "value"),
    [
        (b"\xcd\x00\x01", 1),  # uint16 for 1
        (b"\xcc\x01", 1),  # uint8 for 1
        (b"\xd0\x01", 1),  # int8 for 1
        (b"\xcf" + b"\x00" * 7 + b"\x05", 5),  # uint64 for 5
        (b"\xd1\xff\xff", -1),  # int16 for -1
        (b"\xd9\x01a", "a"),  # str8 for a fixstr
        (b"\xdc\x00\x01\x01", [1]),  # array16 for a fixarray
        (b"\xde\x00\x01\xa1a\x01", {"a": 1}),  # map16 for a fixmap
    ],
)
def test_non_minimal_encodings_refused_when_canonical_required(data: bytes, value: Any) -> None:
    assert unpackb_strict(data) == value
    with pytest.raises(EncodingError, match="canonical"):
        unpackb_strict(data, require_canonical=True)


@pytest.mark.parametrize("data", [b"\x82\xa1a\x01\xa1a\x02", b"\x91\x82\xa1b\xc0\xa1b\x01"])
def test_repeated_map_keys_are_refused(data: bytes) -> None:
    with pytest.raises(EncodingError, match="repeated key"):
        unpackb_strict(data)


def test_str_for_bytes_is_not_canonical() -> None:
    # A body must carry bytes as bin: the raw (str) family decodes to str, not bytes.
    assert unpackb_strict(b"\xa1a") == "a"
    assert unpackb_strict(b"\xc4\x01a", require_canonical=True) == b"a"


@pytest.mark.parametrize("data", [b"\x82\xa1a\x01\xa1a\x02", b"\x91\x82\xa1b\xc0\xa1b\x01"])
def test_repeated_map_keys_are_not_canonical(data: bytes) -> None:
    with pytest.raises(EncodingError, match="canonical"):
        unpackb_strict(data, require_canonical=True)


@settings(max_examples=300, deadline=None)
@given(values)
def test_the_canonical_check_accepts_exactly_the_canonical_encoding(value: Any) -> None:
    """The one-walk check on decode agrees with the definition: bytes are canonical iff
    encoding what they decode to canonically gives them back. `value` is written in its
    own (insertion) key order, so many samples are unsorted and must be refused."""
    data = msgpack.packb(value, use_bin_type=True)
    expected = canonical_packb(msgpack.unpackb(data, raw=False)) == data
    try:
        unpackb_strict(data, require_canonical=True)
    except EncodingError:
        assert not expected
    else:
        assert expected


record_values = st.recursive(
    leaves | st.floats(allow_nan=False),
    lambda children: (
        st.lists(children, max_size=5)
        | st.lists(children, max_size=5).map(tuple)
        | st.dictionaries(st.text(max_size=10), children, max_size=5)
    ),
    max_leaves=25,
)


@settings(max_examples=500)
@given(record_values)
def test_state_records_encode_exactly_as_the_definition_says(value: Any) -> None:
    """The C encoder behind `encode_record` gives the bytes of the sorted-keys definition."""
    assert encode_record(value) == encode_record_reference(value)


@pytest.mark.parametrize(
    "value", [{b"bin-key": 1, b"a": 2}, {"big": 2**64}, [{"n": -(2**63) - 1}], {1: "int key"}]
)
def test_records_the_c_encoder_refuses_take_the_definition(value: Any) -> None:
    try:
        expected = encode_record_reference(value)
    except (OverflowError, TypeError) as exc:
        with pytest.raises(type(exc)):
            encode_record(value)
    else:
        assert encode_record(value) == expected


receipt_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    ok=st.booleans(),
    error=st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3),
    result=receipt_values,
    events=st.lists(st.tuples(st.text(max_size=8), receipt_values), max_size=3),
)
def test_receipts_encode_to_the_canonical_bytes(
    ok: bool, error: Any, result: Any, events: list[tuple[str, Any]]
) -> None:
    """Receipts take the C encoder; their bytes are still exactly `canonical_packb`'s."""
    receipt = Receipt(bytes(32), ok, error, result, tuple(ContractEvent(n, d) for n, d in events))
    expected = canonical_packb(
        {
            "error": error,
            "events": [{"data": data, "name": name} for name, data in events],
            "ok": ok,
            "result": result,
            "tx_id": bytes(32),
        }
    )
    assert receipt.encode() == expected
    assert Receipt.decode(expected) == receipt

"""Tests for node.client.coerce_args: JSON arguments to the bytes the wire carries."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.runtime import Arg, Contract, ContractRegistry, Method, hash32, text
from node import client
from node.client import coerce_args

KEY_HEX = "ab" * 32


def test_binary_arguments_become_bytes_and_the_rest_passes_through() -> None:
    wire = coerce_args("membership", "add_member", {"public_key": KEY_HEX, "name": "Alice"})
    assert wire == {"public_key": bytes.fromhex(KEY_HEX), "name": "Alice"}


def test_optional_binary_argument_is_converted_when_given() -> None:
    wire = coerce_args(
        "membership",
        "add_member",
        {"public_key": KEY_HEX, "name": "Alice", "encryption_key": "CD" * 32},
    )
    assert wire["encryption_key"] == bytes.fromhex("cd" * 32)


def test_text_that_looks_like_hex_stays_text_for_a_non_binary_argument() -> None:
    wire = coerce_args("membership", "add_member", {"public_key": KEY_HEX, "name": "abcd"})
    assert wire["name"] == "abcd"


def test_non_hex_binary_argument_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="argument 'public_key' must be hex"):
        coerce_args("membership", "revoke_member", {"public_key": "0xabc"})


def test_binary_argument_of_the_wrong_json_type_is_refused_naming_it() -> None:
    with pytest.raises(ValueError, match="argument 'public_key' must be a hex string"):
        coerce_args("membership", "revoke_member", {"public_key": 12})


def test_floats_are_refused_anywhere_naming_the_argument() -> None:
    with pytest.raises(ValueError, match=r"argument 'meta' contains the float 1\.5"):
        coerce_args("membership", "add_member", {"meta": {"amount": [1.5]}})


def test_unknown_contract_and_method_are_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"unknown contract 'nope'.*membership"):
        coerce_args("nope", "add_member", {})
    with pytest.raises(ValueError, match=r"no method 'fly'.*add_member"):
        coerce_args("membership", "fly", {})


@pytest.mark.parametrize("json_args", [[], "x", None, 3])
def test_arguments_must_be_a_json_object(json_args: Any) -> None:
    with pytest.raises(ValueError, match="must be a JSON object"):
        coerce_args("membership", "add_member", json_args)


def test_unknown_arguments_are_left_for_the_node_to_refuse() -> None:
    wire = coerce_args("membership", "set_encryption_key", {"encryption_key": KEY_HEX, "x": "ff"})
    assert wire["x"] == "ff"


def test_lists_in_a_binary_argument_convert_their_strings_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    orders = Method(
        "add_orders",
        lambda *_: None,
        {  # type: ignore[arg-type, return-value]
            "campaign_id": Arg(text(64)),
            "orders": Arg(lambda *_: None, binary=True),
            "root": Arg(hash32, binary=True),
        },
    )
    registry = ContractRegistry([Contract("ranking", {"add_orders": orders}, lambda *_: None)])
    monkeypatch.setattr(client, "builtin_registry", lambda: registry)
    wire = coerce_args(
        "ranking", "add_orders", {"campaign_id": "c1", "orders": [["aa", 5], ["bb", 7]]}
    )
    assert wire["orders"] == [[b"\xaa", 5], [b"\xbb", 7]]
    with pytest.raises(ValueError, match="argument 'orders' must be hex"):
        coerce_args("ranking", "add_orders", {"orders": [["zz", 5]]})

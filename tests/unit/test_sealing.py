"""Sealing (node/sealing.py): recipients unseal, nobody else does, and tampering shows."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import invoice
from node.crypto import KeyFileError, SigningKey, write_key_file
from node.sealing import (
    SealError,
    encryption_key_path,
    load_encryption_key_file,
    parse_sealed,
    public_key_bytes,
    seal,
    sealed_recipients,
    unseal,
    write_encryption_key_file,
)

DOCUMENT = '{"invoice_code":"044031900111","seller":"深圳某某科技有限公司"}'.encode()


@pytest.fixture(scope="module")
def keys() -> list[X25519PrivateKey]:
    return [X25519PrivateKey.generate() for _ in range(4)]


def publics(keys: list[X25519PrivateKey]) -> list[bytes]:
    return [public_key_bytes(key) for key in keys]


def test_every_recipient_unseals(keys: list[X25519PrivateKey]) -> None:
    sealed = seal(DOCUMENT, publics(keys[:3]))
    for key in keys[:3]:
        assert unseal(sealed, key) == DOCUMENT
    assert sealed_recipients(sealed) == sorted(publics(keys[:3]))


def test_a_non_recipient_cannot_unseal(keys: list[X25519PrivateKey]) -> None:
    sealed = seal(DOCUMENT, publics(keys[:3]))
    with pytest.raises(SealError) as raised:
        unseal(sealed, keys[3])
    assert raised.value.code == "seal.not_recipient"
    assert DOCUMENT not in sealed


def test_a_non_recipient_gains_nothing_from_an_entry_relabelled_as_its_own(
    keys: list[X25519PrivateKey],
) -> None:
    """Putting a recipient's wrapped key under an outsider's public key does not open it."""
    sealed = seal(DOCUMENT, publics(keys[:2]))
    raw = msgpack.unpackb(sealed, raw=False)
    entries = raw["recipients"]
    victim_entry = entries.pop(public_key_bytes(keys[0]).hex())
    entries[public_key_bytes(keys[3]).hex()] = victim_entry
    forged = repack(raw)
    with pytest.raises(SealError) as raised:
        unseal(forged, keys[3])
    assert raised.value.code == "seal.tampered"


def repack(raw: dict) -> bytes:
    raw["recipients"] = dict(sorted(raw["recipients"].items()))
    return msgpack.packb(dict(sorted(raw.items())), use_bin_type=True)


def test_swapped_entries_are_detected(keys: list[X25519PrivateKey]) -> None:
    sealed = seal(DOCUMENT, publics(keys[:2]))
    raw = msgpack.unpackb(sealed, raw=False)
    first, second = (public_key_bytes(key).hex() for key in keys[:2])
    entries = raw["recipients"]
    entries[first], entries[second] = entries[second], entries[first]
    swapped = repack(raw)
    for key in keys[:2]:
        with pytest.raises(SealError) as raised:
            unseal(swapped, key)
        assert raised.value.code == "seal.tampered"


def test_dropping_a_recipient_breaks_the_others(keys: list[X25519PrivateKey]) -> None:
    """The recipient list is bound: a copy sealed 'only for me' cannot be cut from it."""
    sealed = seal(DOCUMENT, publics(keys[:3]))
    raw = msgpack.unpackb(sealed, raw=False)
    del raw["recipients"][public_key_bytes(keys[2]).hex()]
    with pytest.raises(SealError) as raised:
        unseal(repack(raw), keys[0])
    assert raised.value.code == "seal.tampered"


@given(position=st.integers(min_value=0))
@settings(max_examples=200, deadline=None)
def test_any_flipped_ciphertext_byte_is_detected(position: int) -> None:
    key = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    sealed = seal(DOCUMENT, [public_key_bytes(key)])
    raw = msgpack.unpackb(sealed, raw=False)
    ciphertext = bytearray(raw["ciphertext"])
    ciphertext[position % len(ciphertext)] ^= 0x01
    raw["ciphertext"] = bytes(ciphertext)
    with pytest.raises(SealError) as raised:
        unseal(repack(raw), key)
    assert raised.value.code == "seal.tampered"


@pytest.mark.parametrize("field", ["nonce", "ephemeral_key", "wrapped"])
def test_flipped_header_bytes_are_detected(keys: list[X25519PrivateKey], field: str) -> None:
    sealed = seal(DOCUMENT, publics(keys[:1]))
    raw = msgpack.unpackb(sealed, raw=False)
    if field == "wrapped":
        name = public_key_bytes(keys[0]).hex()
        raw["recipients"][name] = (
            bytes([raw["recipients"][name][0] ^ 1]) + raw["recipients"][name][1:]
        )
    else:
        raw[field] = bytes([raw[field][0] ^ 1]) + raw[field][1:]
    with pytest.raises(SealError) as raised:
        unseal(repack(raw), keys[0])
    assert raised.value.code == "seal.tampered"


def test_context_is_bound(keys: list[X25519PrivateKey]) -> None:
    sealed = seal(DOCUMENT, publics(keys[:1]), context=b"chancery/invoice/v1\nenterprise-a/1")
    assert unseal(sealed, keys[0], context=b"chancery/invoice/v1\nenterprise-a/1") == DOCUMENT
    for other in (b"", b"chancery/invoice/v1\nenterprise-a/2"):
        with pytest.raises(SealError) as raised:
            unseal(sealed, keys[0], context=other)
        assert raised.value.code == "seal.tampered"


def test_each_seal_is_fresh(keys: list[X25519PrivateKey]) -> None:
    first, second = (seal(DOCUMENT, publics(keys[:1])) for _ in range(2))
    assert first != second
    assert parse_sealed(first).nonce != parse_sealed(second).nonce


def test_format_is_the_documented_canonical_map(keys: list[X25519PrivateKey]) -> None:
    sealed = seal(b"", publics(keys[:2]))  # an empty document seals too
    raw = msgpack.unpackb(sealed, raw=False)
    assert list(raw) == ["ciphertext", "ephemeral_key", "nonce", "recipients", "version"]
    assert raw["version"] == 1
    assert (len(raw["nonce"]), len(raw["ephemeral_key"]), len(raw["ciphertext"])) == (12, 32, 16)
    assert list(raw["recipients"]) == sorted(key.hex() for key in publics(keys[:2]))
    assert all(len(wrapped) == 48 for wrapped in raw["recipients"].values())
    assert unseal(sealed, keys[1]) == b""
    # The contract's structural check accepts exactly this format.
    assert invoice.sealed_recipients(sealed) == set(publics(keys[:2]))


@pytest.mark.parametrize(
    "sealed",
    [
        b"\x00",
        msgpack.packb({"version": 1}),
        msgpack.packb([1]),
        b"\x85" + b"\x00" * 10,
    ],
)
def test_malformed_sealed_bytes(keys: list[X25519PrivateKey], sealed: bytes) -> None:
    with pytest.raises(SealError) as raised:
        unseal(sealed, keys[0])
    assert raised.value.code == "seal.malformed"


def test_non_canonical_encoding_is_refused(keys: list[X25519PrivateKey]) -> None:
    raw = msgpack.unpackb(seal(DOCUMENT, publics(keys[:1])), raw=False)
    reordered = msgpack.packb(dict(reversed(list(raw.items()))), use_bin_type=True)
    with pytest.raises(SealError) as raised:
        parse_sealed(reordered)
    assert raised.value.code == "seal.malformed"


def test_recipient_limits() -> None:
    with pytest.raises(SealError) as none:
        seal(DOCUMENT, [])
    assert none.value.code == "seal.no_recipients"
    many = [public_key_bytes(X25519PrivateKey.generate()) for _ in range(65)]
    with pytest.raises(SealError) as too_many:
        seal(DOCUMENT, many)
    assert too_many.value.code == "seal.too_many_recipients"
    assert len(sealed_recipients(seal(DOCUMENT, many[:64]))) == 64
    with pytest.raises(SealError) as short:
        seal(DOCUMENT, [b"x" * 31])
    assert short.value.code == "seal.bad_recipient"
    with pytest.raises(SealError) as low_order:
        seal(DOCUMENT, [bytes(32)])  # the identity point: an all-zero shared secret
    assert low_order.value.code == "seal.bad_recipient"
    with pytest.raises(SealError) as large:
        seal(os.urandom(invoice.SEALED_BYTES_MAX), many[:1])
    assert large.value.code == "seal.too_large"


def test_duplicate_recipients_count_once(keys: list[X25519PrivateKey]) -> None:
    key = public_key_bytes(keys[0])
    assert sealed_recipients(seal(DOCUMENT, [key, key])) == [key]


# --- key files ----------------------------------------------------------------------------


def test_encryption_key_files(tmp_path: Path) -> None:
    signing = tmp_path / "member.key"
    write_key_file(signing, SigningKey.generate())
    path = encryption_key_path(signing)
    assert path == tmp_path / "member.x25519.key"
    key = X25519PrivateKey.generate()
    write_encryption_key_file(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_key_bytes(load_encryption_key_file(path)) == public_key_bytes(key)
    with pytest.raises(KeyFileError, match="exists already"):
        write_encryption_key_file(path, key)
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="accessible by group"):
        load_encryption_key_file(path)
    with pytest.raises(KeyFileError, match="not an X25519 key"):
        load_encryption_key_file(signing)
    with pytest.raises(KeyFileError, match="not found"):
        load_encryption_key_file(tmp_path / "missing.key")

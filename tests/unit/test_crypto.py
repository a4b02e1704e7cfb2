"""Tests for node.crypto: Ed25519 with domain separation (PROTOCOL.md section 2), key files."""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from node.crypto import (
    DOMAIN_COMMIT,
    DOMAIN_P2P,
    DOMAIN_READ,
    DOMAIN_TX,
    KeyFileError,
    SignatureCheck,
    SignatureVerifier,
    SigningKey,
    load_key_file,
    verify,
    verify_packed,
    write_key_file,
)

# RFC 8032 section 7.1, TEST 1 (empty message).
RFC8032_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)

DOMAINS = {"tx": DOMAIN_TX, "commit": DOMAIN_COMMIT, "p2p": DOMAIN_P2P, "read": DOMAIN_READ}
KEY_A = SigningKey.from_seed(bytes(range(32)))
KEY_B = SigningKey.from_seed(bytes(range(1, 33)))


def test_domain_constants_are_the_protocol_bytes() -> None:
    assert DOMAIN_TX == b"chancery/tx/v1\n"
    assert DOMAIN_COMMIT == b"chancery/commit/v1\n"
    assert DOMAIN_P2P == b"chancery/p2p/v1\n"
    assert DOMAIN_READ == b"chancery/read/v1\n"


def test_rfc8032_test_1() -> None:
    key = SigningKey.from_seed(RFC8032_SECRET)
    assert key.public_key == RFC8032_PUBLIC
    # Ed25519 is deterministic: signing the empty message gives the published signature.
    assert key.sign(b"", b"") == RFC8032_SIGNATURE
    assert verify(RFC8032_PUBLIC, b"", b"", RFC8032_SIGNATURE)
    assert not verify(RFC8032_PUBLIC, b"", b"\x00", RFC8032_SIGNATURE)


def test_sign_covers_domain_then_payload() -> None:
    signature = KEY_A.sign(DOMAIN_TX, b"body")
    assert len(signature) == 64
    assert len(KEY_A.public_key) == 32
    # The signature is a plain Ed25519 signature over DOMAIN || payload.
    assert signature == KEY_A.private_key.sign(b"chancery/tx/v1\nbody")
    assert verify(KEY_A.public_key, DOMAIN_TX, b"body", signature)
    # Moving bytes between domain and payload keeps the concatenation, so it still verifies:
    # the domains are fixed constants, which is what makes the split unambiguous.
    assert verify(KEY_A.public_key, b"chancery/tx/v1", b"\nbody", signature)


def test_generate_gives_distinct_working_keys() -> None:
    first, second = SigningKey.generate(), SigningKey.generate()
    assert first.public_key != second.public_key
    assert verify(first.public_key, DOMAIN_P2P, b"m", first.sign(DOMAIN_P2P, b"m"))
    assert not verify(second.public_key, DOMAIN_P2P, b"m", first.sign(DOMAIN_P2P, b"m"))


@pytest.mark.parametrize(
    ("signed_as", "checked_as"),
    [pair for pair in itertools.permutations(DOMAINS, 2)],
)
def test_a_signature_never_crosses_domains(signed_as: str, checked_as: str) -> None:
    payload = b"\x93\xadchancery-test\x05\xc4\x20" + bytes(32)
    signature = KEY_A.sign(DOMAINS[signed_as], payload)
    assert verify(KEY_A.public_key, DOMAINS[signed_as], payload, signature)
    assert not verify(KEY_A.public_key, DOMAINS[checked_as], payload, signature)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=64), st.binary(min_size=1, max_size=64))
def test_modified_payload_fails(payload: bytes, suffix: bytes) -> None:
    signature = KEY_A.sign(DOMAIN_TX, payload)
    assert verify(KEY_A.public_key, DOMAIN_TX, payload, signature)
    assert not verify(KEY_A.public_key, DOMAIN_TX, payload + suffix, signature)


def test_wrong_key_fails() -> None:
    signature = KEY_A.sign(DOMAIN_TX, b"payload")
    assert not verify(KEY_B.public_key, DOMAIN_TX, b"payload", signature)


def test_flipped_signature_bit_fails() -> None:
    signature = bytearray(KEY_A.sign(DOMAIN_TX, b"payload"))
    for position in (0, 31, 32, 63):
        tampered = bytearray(signature)
        tampered[position] ^= 0x01
        assert not verify(KEY_A.public_key, DOMAIN_TX, b"payload", bytes(tampered))


@pytest.mark.parametrize("public_length", [0, 31, 33, 64])
def test_wrong_length_public_key_returns_false(public_length: int) -> None:
    signature = KEY_A.sign(DOMAIN_TX, b"p")
    public = (KEY_A.public_key * 3)[:public_length]
    assert verify(public, DOMAIN_TX, b"p", signature) is False


@pytest.mark.parametrize("signature_length", [0, 1, 63, 65, 128])
def test_wrong_length_signature_returns_false(signature_length: int) -> None:
    signature = KEY_A.sign(DOMAIN_TX, b"p")
    wrong = (signature * 3)[:signature_length]
    assert verify(KEY_A.public_key, DOMAIN_TX, b"p", wrong) is False


def test_invalid_point_public_key_returns_false() -> None:
    # 32 bytes that are not the encoding of a curve point (y = 2 is not on Ed25519).
    not_a_point = (2).to_bytes(32, "little")
    assert verify(not_a_point, DOMAIN_TX, b"p", bytes(64)) is False


async def test_verify_many_on_a_mixed_batch_larger_than_the_chunk_keeps_order() -> None:
    verifier = SignatureVerifier(workers=3, chunk_size=4)
    try:
        checks: list[SignatureCheck] = []
        expected: list[bool] = []
        for i in range(23):
            payload = i.to_bytes(2, "big")
            signature = KEY_A.sign(DOMAIN_TX, payload)
            good = i % 3 != 1
            if not good:
                signature = KEY_A.sign(DOMAIN_COMMIT, payload)  # right key, wrong domain
            if i == 20:
                signature, good = signature[:63], False  # wrong length
            checks.append(SignatureCheck(KEY_A.public_key, DOMAIN_TX, payload, signature))
            expected.append(good)
        assert expected.count(True) == 14
        assert await verifier.verify_many(checks) == expected
        packed = [(c.public_key, c.domain, c.payload, c.signature) for c in checks]
        assert list(verify_packed(packed)) == [int(good) for good in expected]
        # Batches smaller than a chunk give the same answer.
        assert await verifier.verify_many(checks[:4]) == expected[:4]
        assert await verifier.verify_many([]) == []
    finally:
        verifier.close()


def test_verifier_defaults() -> None:
    verifier = SignatureVerifier(chunk_size=0)
    try:
        assert verifier.chunk_size == 1
        assert verifier.workers >= 1
        assert verifier.executor is not None
    finally:
        verifier.close()


# --- key files ------------------------------------------------------------------------------


def test_write_creates_0600_and_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_key_file(path, KEY_A)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_key_file(path)
    assert loaded.public_key == KEY_A.public_key
    assert loaded.sign(DOMAIN_TX, b"x") == KEY_A.sign(DOMAIN_TX, b"x")


def test_write_ignores_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        write_key_file(tmp_path / "node.key", KEY_A)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "node.key").stat().st_mode) == 0o600


def test_write_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_key_file(path, KEY_A)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="exists"):
        write_key_file(path, KEY_B)
    assert path.read_bytes() == before
    assert load_key_file(path).public_key == KEY_A.public_key


@pytest.mark.parametrize("mode", [0o640, 0o644, 0o604, 0o660, 0o700 | 0o004])
def test_load_refuses_group_or_world_access_naming_the_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "node.key"
    write_key_file(path, KEY_A)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match=f"mode {mode:o}") as info:
        load_key_file(path)
    assert "chmod 600" in str(info.value)
    assert info.value.code == "key.invalid"


def test_load_accepts_0400(tmp_path: Path) -> None:
    path = tmp_path / "node.key"
    write_key_file(path, KEY_A)
    path.chmod(0o400)
    assert load_key_file(path).public_key == KEY_A.public_key


def _private_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def test_load_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        load_key_file(tmp_path / "absent.key")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a pem file\n",
        KEY_A.private_key.private_bytes(  # DER, not PEM
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        KEY_A.private_key.public_key().public_bytes(  # a public key PEM
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    ],
)
def test_load_refuses_non_pem(tmp_path: Path, data: bytes) -> None:
    path = _private_file(tmp_path / "bad.key", data)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM private key"):
        load_key_file(path)


def test_load_refuses_encrypted_pem(tmp_path: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(KeyFileError, match="not an unencrypted PEM private key"):
        load_key_file(_private_file(tmp_path / "enc.key", pem))


def test_load_refuses_an_ec_key(tmp_path: Path) -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_key_file(_private_file(tmp_path / "ec.key", pem))


def _pid_after_a_pause() -> int:
    time.sleep(0.3)  # long enough that two calls cannot both land on one worker
    return os.getpid()


async def test_verification_runs_in_worker_processes() -> None:
    """After `start`, every worker process is up (two concurrent calls find two other
    processes), and checks verified there come back in order with the right verdicts."""
    verifier = SignatureVerifier(workers=2, chunk_size=2, in_processes=True)
    try:
        await verifier.start()
        loop = asyncio.get_running_loop()
        asks = [loop.run_in_executor(verifier.executor, _pid_after_a_pause) for _ in range(2)]
        pids = set(await asyncio.gather(*asks))
        assert len(pids) == 2 and os.getpid() not in pids
        key = SigningKey.generate()
        checks = [
            SignatureCheck(key.public_key, DOMAIN_TX, bytes([n]), key.sign(DOMAIN_TX, bytes([n])))
            for n in range(5)
        ]
        checks[3] = SignatureCheck(key.public_key, DOMAIN_TX, b"other", checks[3].signature)
        assert await verifier.verify_many(checks) == [True, True, True, False, True]
        assert verifier.worker_cpu_seconds > 0
    finally:
        verifier.close()

"""Sealing documents for named recipients: X25519, HKDF-SHA256 and AES-256-GCM.

`seal(document, recipients)` encrypts `document` once under a random 32-byte data key and
wraps that key for each recipient's X25519 public key; `unseal(sealed, private_key)` opens
it with one recipient's private key. Nodes only ever see the sealed bytes.

Sealed format, version 1: canonical msgpack (map keys in ascending byte order, bin for
bytes, no floats) of exactly

    {"ciphertext":    bin   AES-256-GCM(data_key, nonce, document, aad=binding), tag appended,
     "ephemeral_key": bin32 the sealer's one-off X25519 public key E,
     "nonce":         bin12 random,
     "recipients":    {hex(R): bin48, ...}  per recipient public key R (64 lowercase hex
                            characters, at most 64 recipients): the wrapped data key,
     "version":       1}

where, with the recipient keys R sorted by their bytes and `context` the caller's
associated data (b"" by default; the invoice CLI binds the invoice id):

    binding  = SHA-256("chancery/seal/v1\\n" || msgpack([1, E, nonce, [R...], context]))
    kek_R    = HKDF-SHA256(ikm = X25519(e, R), salt = binding,
                           info = "chancery/seal/v1/wrap\\n" || E || R, length = 32)
    wrapped_R = AES-256-GCM(kek_R, nonce = 12 zero bytes, data_key, aad = binding || R)

A zero nonce is safe for the wraps: each kek_R is used once, for one fresh ephemeral key.
The binding ties every part together: moving an entry to another recipient's slot changes
R in both the key derivation and the associated data, and adding, removing or changing any
recipient, the nonce, the ephemeral key or the context changes `binding`, so the GCM tags
no longer verify. A flipped byte anywhere in the ciphertext or a wrapped key is detected
by its tag. What sealing cannot stop: a recipient who re-shares the plaintext.

Encryption key files: PEM PKCS#8 X25519 private keys, created with mode 0600 like the
Ed25519 signing keys (node/crypto.py); `encryption_key_path` puts a member's X25519 key
next to its signing key (`member.key` -> `member.x25519.key`).
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from contracts.invoice import (
    SEALED_BYTES_MAX,
    SEALED_FIELDS,
    SEALED_KEY_BYTES,
    SEALED_NONCE_BYTES,
    SEALED_RECIPIENTS_MAX,
    SEALED_TAG_BYTES,
    SEALED_VERSION,
    SEALED_WRAPPED_KEY_BYTES,
)
from node.crypto import KEY_FILE_MODE, KeyFileError, read_private_key_file

SEAL_DOMAIN: Final = b"chancery/seal/v1\n"
WRAP_DOMAIN: Final = b"chancery/seal/v1/wrap\n"
DATA_KEY_BYTES: Final = 32
WRAP_NONCE: Final = bytes(SEALED_NONCE_BYTES)
ENCRYPTION_KEY_SUFFIX: Final = ".x25519.key"


class SealError(Exception):
    """A document that cannot be sealed or unsealed; `code` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class SealedDocument:
    """The decoded parts of a sealed document (bytes as given, nothing decrypted)."""

    ephemeral_key: bytes
    nonce: bytes
    ciphertext: bytes
    recipients: dict[bytes, bytes]  # recipient public key -> wrapped data key

    def encode(self) -> bytes:
        recipients = {key.hex(): self.recipients[key] for key in sorted(self.recipients)}
        return msgpack.packb(
            {
                "ciphertext": self.ciphertext,
                "ephemeral_key": self.ephemeral_key,
                "nonce": self.nonce,
                "recipients": recipients,
                "version": SEALED_VERSION,
            },
            use_bin_type=True,
        )


def public_key_bytes(key: X25519PrivateKey | X25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, X25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _binding(
    ephemeral_key: bytes, nonce: bytes, recipients: Iterable[bytes], context: bytes
) -> bytes:
    header = [SEALED_VERSION, ephemeral_key, nonce, sorted(recipients), context]
    return hashlib.sha256(SEAL_DOMAIN + msgpack.packb(header, use_bin_type=True)).digest()


def _key_encryption_key(
    shared: bytes, binding: bytes, ephemeral_key: bytes, recipient: bytes
) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=DATA_KEY_BYTES,
        salt=binding,
        info=WRAP_DOMAIN + ephemeral_key + recipient,
    )
    return hkdf.derive(shared)


def _exchange(private_key: X25519PrivateKey, public_key: bytes) -> bytes:
    """Raises: SealError `seal.bad_recipient` for a key that is no X25519 point or gives the
    all-zero shared secret (a low-order point)."""
    try:
        return private_key.exchange(X25519PublicKey.from_public_bytes(public_key))
    except ValueError:
        raise SealError(
            "seal.bad_recipient", f"{public_key.hex()} is not a usable X25519 public key"
        ) from None


def seal(document: bytes, recipients: Iterable[bytes], *, context: bytes = b"") -> bytes:
    """`document` encrypted for each of `recipients` (32-byte X25519 public keys; repeats
    count once), in the version-1 format above.

    Raises:
        SealError: `seal.no_recipients`, `seal.too_many_recipients`, `seal.bad_recipient`,
            `seal.too_large` (the result would exceed SEALED_BYTES_MAX).
    """
    keys = sorted(set(recipients))
    if not keys:
        raise SealError("seal.no_recipients", "a document needs at least one recipient")
    if len(keys) > SEALED_RECIPIENTS_MAX:
        raise SealError("seal.too_many_recipients", f"at most {SEALED_RECIPIENTS_MAX} recipients")
    for key in keys:
        if not isinstance(key, bytes) or len(key) != SEALED_KEY_BYTES:
            raise SealError("seal.bad_recipient", "a recipient is a 32-byte X25519 public key")
    ephemeral = X25519PrivateKey.generate()
    ephemeral_key = public_key_bytes(ephemeral)
    nonce = secrets.token_bytes(SEALED_NONCE_BYTES)
    data_key = secrets.token_bytes(DATA_KEY_BYTES)
    binding = _binding(ephemeral_key, nonce, keys, context)
    wrapped = {}
    for key in keys:
        kek = _key_encryption_key(_exchange(ephemeral, key), binding, ephemeral_key, key)
        wrapped[key] = AESGCM(kek).encrypt(WRAP_NONCE, data_key, binding + key)
    ciphertext = AESGCM(data_key).encrypt(nonce, document, binding)
    sealed = SealedDocument(ephemeral_key, nonce, ciphertext, wrapped).encode()
    if len(sealed) > SEALED_BYTES_MAX:
        raise SealError(
            "seal.too_large", f"sealed document of {len(sealed)} bytes > {SEALED_BYTES_MAX}"
        )
    return sealed


def _malformed(message: str) -> SealError:
    return SealError("seal.malformed", message)


def _check_fields(raw: Any) -> None:
    """Raises: SealError `seal.malformed` naming the first field of the wrong shape."""
    if not isinstance(raw, dict) or raw.keys() != SEALED_FIELDS:
        raise _malformed(f"a sealed document is a map with exactly {sorted(SEALED_FIELDS)}")
    if raw["version"] != SEALED_VERSION or isinstance(raw["version"], bool):
        raise _malformed(f"unknown sealed version {raw['version']!r}")
    for name, size in (("nonce", SEALED_NONCE_BYTES), ("ephemeral_key", SEALED_KEY_BYTES)):
        if not isinstance(raw[name], bytes) or len(raw[name]) != size:
            raise _malformed(f"{name} must be {size} bytes")
    if not isinstance(raw["ciphertext"], bytes) or len(raw["ciphertext"]) < SEALED_TAG_BYTES:
        raise _malformed("ciphertext must be bytes with a GCM tag")
    recipients = raw["recipients"]
    if not isinstance(recipients, dict) or not 1 <= len(recipients) <= SEALED_RECIPIENTS_MAX:
        raise _malformed(f"recipients must be a map of 1..{SEALED_RECIPIENTS_MAX} entries")
    for key, wrapped in recipients.items():
        if not isinstance(key, str) or len(key) != 2 * SEALED_KEY_BYTES or key != key.lower():
            raise _malformed("recipient keys are 64 lowercase hex characters")
        if not isinstance(wrapped, bytes) or len(wrapped) != SEALED_WRAPPED_KEY_BYTES:
            raise _malformed(f"wrapped keys are {SEALED_WRAPPED_KEY_BYTES} bytes")


def parse_sealed(sealed: bytes) -> SealedDocument:
    """Decode a sealed document without decrypting it.

    Raises:
        SealError: `seal.malformed` (not the canonical version-1 format).
    """
    if not isinstance(sealed, bytes) or len(sealed) > SEALED_BYTES_MAX:
        raise _malformed(f"a sealed document is at most {SEALED_BYTES_MAX} bytes")
    try:
        raw = msgpack.unpackb(sealed, raw=False, strict_map_key=True)
    except Exception:  # msgpack raises several types for malformed input
        raise _malformed("not msgpack") from None
    _check_fields(raw)
    try:
        recipients = {bytes.fromhex(key): wrapped for key, wrapped in raw["recipients"].items()}
    except ValueError:
        raise _malformed("recipient keys are 64 lowercase hex characters") from None
    document = SealedDocument(raw["ephemeral_key"], raw["nonce"], raw["ciphertext"], recipients)
    if document.encode() != sealed:
        raise _malformed("not in canonical form")
    return document


def sealed_recipients(sealed: bytes) -> list[bytes]:
    """The recipients' public keys, sorted. Raises: SealError `seal.malformed`."""
    return sorted(parse_sealed(sealed).recipients)


def unseal(sealed: bytes, private_key: X25519PrivateKey, *, context: bytes = b"") -> bytes:
    """The document, opened with one recipient's private key and the sealer's `context`.

    Raises:
        SealError: `seal.malformed`, `seal.not_recipient` (the key's public half is not
            among the recipients), `seal.tampered` (a tag does not verify: changed bytes,
            swapped entries, another context, or a wrapped key made for someone else).
    """
    document = parse_sealed(sealed)
    me = public_key_bytes(private_key)
    wrapped = document.recipients.get(me)
    if wrapped is None:
        raise SealError("seal.not_recipient", f"not sealed for the key {me.hex()}")
    binding = _binding(document.ephemeral_key, document.nonce, document.recipients, context)
    try:
        shared = _exchange(private_key, document.ephemeral_key)
    except SealError:
        raise SealError("seal.tampered", "the ephemeral key is not usable") from None
    kek = _key_encryption_key(shared, binding, document.ephemeral_key, me)
    try:
        data_key = AESGCM(kek).decrypt(WRAP_NONCE, wrapped, binding + me)
        return AESGCM(data_key).decrypt(document.nonce, document.ciphertext, binding)
    except InvalidTag:
        raise SealError(
            "seal.tampered", "the sealed document does not verify (altered, or another context)"
        ) from None


# --- encryption key files ------------------------------------------------------------------


def encryption_key_path(signing_key_path: Path) -> Path:
    """Where a member's X25519 key lives: next to its signing key (`member.key` ->
    `member.x25519.key`)."""
    name = signing_key_path.name.removesuffix(".key")
    return signing_key_path.with_name(name + ENCRYPTION_KEY_SUFFIX)


def write_encryption_key_file(path: Path, key: X25519PrivateKey) -> None:
    """Write `key` as PKCS#8 PEM with mode 0600.

    Raises:
        KeyFileError: the file exists already.
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError:
        raise KeyFileError(f"{path}: exists already; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.chmod(path, KEY_FILE_MODE)


def load_encryption_key_file(path: Path) -> X25519PrivateKey:
    """Read an X25519 PEM private key, refusing files that group or others can read.

    Raises:
        KeyFileError: missing, readable by others, or not an unencrypted X25519 PEM key.
    """
    private = read_private_key_file(path, "encryption key")
    if not isinstance(private, X25519PrivateKey):
        raise KeyFileError(f"{path}: not an X25519 key")
    return private

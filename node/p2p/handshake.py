"""The p2p handshake: both ends of a connection prove they hold a genesis validator key.

Wire protocol (every message is one frame, see `node.p2p.framing`):

1. Each side, without waiting for the other, sends

       {"type": "hello", "chain_id": str, "genesis_hash": bin(32),
        "index": int (its validator index), "nonce": bin(32) (fresh, os.urandom)}

2. Each side reads the other's hello and refuses it unless `chain_id` and `genesis_hash`
   equal its own, `index` is a validator of the genesis file other than itself, and (on
   the dialing side) `index` is the validator it meant to dial. Then it sends

       {"type": "hello_proof", "signature": bin(64)}

   where `signature` is the sender's Ed25519 signature with its genesis validator key over

       b"chancery/p2p/v1\\n" || canonical_msgpack(
           ["handshake", chain_id, genesis_hash, their_nonce, my_nonce, my_index])

   (`their_nonce` is the nonce of the hello it received, `my_nonce` the one it sent).

3. Each side verifies the other's proof with the public key the genesis file gives the
   claimed index (the payload it checks is the same list with the roles swapped). Only
   then does the connection carry other frames.

Both hellos are sent before either proof, so neither side waits on the other to speak
first. Any deviation - another frame type, extra or missing fields, a frame over
`HANDSHAKE_FRAME_BYTES_MAX`, silence past the timeout - refuses the connection.

What it does not do: the stream is neither encrypted nor integrity-protected after the
handshake, so an attacker on the network path could relay a handshake and then inject
frames. The handshake keeps non-validators off the node's sockets and names the peer;
everything that must not be forged (votes, transactions, certificates) is signed end to
end and checked by its consumer.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any, Final

from node.crypto import DOMAIN_P2P, SIGNATURE_BYTES, SigningKey, verify
from node.encoding import canonical_packb
from node.p2p.framing import FrameError, read_frame, write_frame

HANDSHAKE_TIMEOUT_S: Final = 5.0
NONCE_BYTES: Final = 32
GENESIS_HASH_BYTES: Final = 32
# Hellos and proofs are a few hundred bytes; an unauthenticated peer gets no more.
HANDSHAKE_FRAME_BYTES_MAX: Final = 1024
HELLO_FIELDS: Final = frozenset({"type", "chain_id", "genesis_hash", "index", "nonce"})
PROOF_FIELDS: Final = frozenset({"type", "signature"})


class HandshakeRefused(Exception):
    """The peer did not prove it is the validator it claims; the connection is closed.

    `reason` is a stable metrics label; `claimed_index` is the validator index the peer
    claimed when that index exists in the genesis file (so refusals can be attributed).
    """

    code = "p2p.handshake_refused"

    def __init__(self, reason: str, message: str, claimed_index: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.claimed_index = claimed_index


@dataclass(frozen=True)
class LocalIdentity:
    """What this node proves and what it checks peers against (all from genesis)."""

    chain_id: str
    genesis_hash: bytes
    index: int
    key: SigningKey
    validator_keys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Hello:
    """A peer's validated hello."""

    index: int
    nonce: bytes


def hello_message(local: LocalIdentity, nonce: bytes) -> dict[str, Any]:
    return {
        "type": "hello",
        "chain_id": local.chain_id,
        "genesis_hash": local.genesis_hash,
        "index": local.index,
        "nonce": nonce,
    }


def proof_payload(
    chain_id: str, genesis_hash: bytes, their_nonce: bytes, my_nonce: bytes, my_index: int
) -> bytes:
    """The bytes a side signs (after the p2p domain) to prove it holds `my_index`'s key."""
    return canonical_packb(["handshake", chain_id, genesis_hash, their_nonce, my_nonce, my_index])


def sign_proof(local: LocalIdentity, their_nonce: bytes, my_nonce: bytes) -> dict[str, Any]:
    payload = proof_payload(local.chain_id, local.genesis_hash, their_nonce, my_nonce, local.index)
    return {"type": "hello_proof", "signature": local.key.sign(DOMAIN_P2P, payload)}


def check_hello(raw: dict[str, Any], local: LocalIdentity, expected_index: int | None) -> Hello:
    """Validate a peer's hello, one condition per line.

    Raises:
        HandshakeRefused: `malformed`, `wrong_chain`, `wrong_genesis`, `unknown_index`,
            `self_index` or `unexpected_index`.
    """
    if raw.keys() != HELLO_FIELDS or raw["type"] != "hello":
        raise HandshakeRefused("malformed", f"expected a hello with fields {sorted(HELLO_FIELDS)}")
    index, nonce = raw["index"], raw["nonce"]
    if not isinstance(index, int) or isinstance(index, bool):
        raise HandshakeRefused("malformed", "hello index must be an integer")
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise HandshakeRefused("malformed", f"hello nonce must be bin({NONCE_BYTES})")
    known = index if 0 <= index < len(local.validator_keys) else None
    if raw["chain_id"] != local.chain_id:
        raise HandshakeRefused("wrong_chain", f"peer is on chain {raw['chain_id']!r}", known)
    if raw["genesis_hash"] != local.genesis_hash:
        raise HandshakeRefused("wrong_genesis", "peer has another genesis_hash", known)
    if known is None:
        raise HandshakeRefused("unknown_index", f"index {index} is not a genesis validator")
    if index == local.index:
        raise HandshakeRefused("self_index", f"peer claims this node's own index {index}")
    if expected_index is not None and index != expected_index:
        raise HandshakeRefused(
            "unexpected_index", f"dialed validator {expected_index}, peer is {index}", known
        )
    return Hello(index, nonce)


def check_proof(raw: dict[str, Any], local: LocalIdentity, hello: Hello, my_nonce: bytes) -> None:
    """Verify the peer's signature with its genesis key.

    Raises:
        HandshakeRefused: `malformed` or `bad_signature`.
    """
    if raw.keys() != PROOF_FIELDS or raw["type"] != "hello_proof":
        raise HandshakeRefused("malformed", "expected a hello_proof", hello.index)
    signature = raw["signature"]
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_BYTES:
        raise HandshakeRefused("malformed", "proof signature must be bin(64)", hello.index)
    payload = proof_payload(local.chain_id, local.genesis_hash, my_nonce, hello.nonce, hello.index)
    if not verify(local.validator_keys[hello.index], DOMAIN_P2P, payload, signature):
        raise HandshakeRefused(
            "bad_signature",
            f"proof does not verify with validator {hello.index}'s key",
            hello.index,
        )


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    local: LocalIdentity,
    expected_index: int | None,
) -> int:
    my_nonce = os.urandom(NONCE_BYTES)
    await write_frame(writer, hello_message(local, my_nonce), HANDSHAKE_FRAME_BYTES_MAX)
    hello = check_hello(await read_frame(reader, HANDSHAKE_FRAME_BYTES_MAX), local, expected_index)
    await write_frame(writer, sign_proof(local, hello.nonce, my_nonce), HANDSHAKE_FRAME_BYTES_MAX)
    check_proof(await read_frame(reader, HANDSHAKE_FRAME_BYTES_MAX), local, hello, my_nonce)
    return hello.index


async def perform_handshake(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    local: LocalIdentity,
    expected_index: int | None,
    timeout_s: float = HANDSHAKE_TIMEOUT_S,
) -> int:
    """Run the handshake on a fresh connection; returns the peer's validator index.

    `expected_index` is the validator a dialer meant to reach (None when accepting).
    The caller closes the connection on refusal.

    Raises:
        HandshakeRefused: any deviation from the protocol above, including `timeout`,
            `closed` (the peer hung up) and `bad_frame`.
    """
    try:
        return await asyncio.wait_for(_exchange(reader, writer, local, expected_index), timeout_s)
    except TimeoutError:
        raise HandshakeRefused("timeout", f"no handshake within {timeout_s} s") from None
    except FrameError as exc:
        raise HandshakeRefused("bad_frame", exc.message) from None
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise HandshakeRefused("closed", f"connection closed during handshake ({exc})") from None

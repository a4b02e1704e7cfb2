"""The stateless part of admission: decode, size, chain and signature of each envelope.

These checks need nothing but the bytes, so they run in the signature verifier's worker
processes (node/crypto.py), a chunk of a batch per call. The canonical-form walk and the
signature cost as much Python and GIL time as executing the transaction does; off the
node's GIL, execution and consensus get it instead (docs/performance.md, round 5).

Each outcome is plain data, cheap to pickle back to the node: `("ok", parts..., valid)`
or `("refused", code, message, details)`. `transaction_from_outcome` turns an "ok" back
into the `Transaction` the worker decoded, without decoding again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from node.crypto import DOMAIN_TX, verify
from node.errors import ChanceryError
from node.transaction import Transaction, TransactionBody, build_transaction, decode_envelope

OK: Final = "ok"
REFUSED: Final = "refused"
EnvelopeOutcome = tuple[Any, ...]


def decode_json_envelope(item: Any) -> Transaction:
    """`{"body": hex, "signer": hex, "signature": hex}` -> Transaction.

    Raises:
        ChanceryError: `tx.malformed` naming what is wrong.
    """
    if not isinstance(item, dict) or item.keys() != {"body", "signer", "signature"}:
        raise ChanceryError("tx.malformed", "a JSON envelope has exactly body, signer, signature")
    try:
        parts = {name: bytes.fromhex(value) for name, value in item.items()}
    except (TypeError, ValueError):
        raise ChanceryError(
            "tx.malformed", "envelope fields must be lowercase hex strings"
        ) from None
    return build_transaction(parts["body"], parts["signer"], parts["signature"])


def decode_submitted(item: bytes | Any, chain_id: str, envelope_bytes_max: int) -> Transaction:
    """Decode one submitted envelope (msgpack bytes or a JSON object); check size and chain.

    Raises:
        ChanceryError: `tx.too_large`, `tx.malformed`, `tx.wrong_chain`.
    """
    if isinstance(item, bytes):
        if len(item) > envelope_bytes_max:
            raise ChanceryError("tx.too_large", f"envelope over {envelope_bytes_max} bytes")
        tx = decode_envelope(item)
    else:
        tx = decode_json_envelope(item)
        if tx.size_bytes > envelope_bytes_max:
            raise ChanceryError("tx.too_large", f"envelope over {envelope_bytes_max} bytes")
    if tx.body.chain_id != chain_id:
        raise ChanceryError(
            "tx.wrong_chain", f"chain_id is not {chain_id!r}", {"expected": chain_id}
        )
    return tx


def check_envelopes(
    items: Sequence[bytes | Any], chain_id: str, envelope_bytes_max: int
) -> list[EnvelopeOutcome]:
    """Decode and verify each item; one outcome per item, in order (worker-process side)."""
    outcomes: list[EnvelopeOutcome] = []
    for item in items:
        try:
            tx = decode_submitted(item, chain_id, envelope_bytes_max)
        except ChanceryError as error:
            outcomes.append((REFUSED, error.code, error.message, error.details))
            continue
        body = tx.body
        outcomes.append(
            (
                OK,
                tx.tx_id,
                tx.envelope,
                tx.body_bytes,
                tx.signer,
                tx.signature,
                (body.args, body.chain_id, body.contract, body.method, body.nonce, body.timestamp),
                verify(tx.signer, DOMAIN_TX, tx.body_bytes, tx.signature),
            )
        )
    return outcomes


def transaction_from_outcome(outcome: EnvelopeOutcome) -> tuple[Transaction, bool] | ChanceryError:
    """The worker's decoded transaction and whether its signature verifies, or its refusal."""
    if outcome[0] == REFUSED:
        _, code, message, details = outcome
        return ChanceryError(code, message, details)
    _, tx_id, envelope, body_bytes, signer, signature, body, signature_ok = outcome
    return Transaction(
        tx_id, envelope, body_bytes, TransactionBody(*body), signer, signature
    ), signature_ok

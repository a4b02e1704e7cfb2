"""The stateless part of admission: decode, size, chain, signature and arguments.

These checks need nothing but the bytes, so they run in the signature verifier's worker
processes (node/crypto.py), a chunk of a batch per call. The canonical-form walk and the
signature cost as much Python and GIL time as executing the transaction does; off the
node's GIL, execution and consensus get it instead (docs/performance.md, round 5).

The arguments are checked here too, against the built-in contracts (they depend on
nothing but the method's declared arguments). Measured, moving that check off the event
loop gave one validator about 4 % more throughput. The verdict is only trusted by a node
that runs the same built-in registry; execution then skips the check for transactions
admitted this way (the result would be the same, since it is a pure function of the
arguments), and checks everything it did not admit itself.

Each outcome is plain data, cheap to pickle back to the node:
`("ok", parts..., signature_valid, args_verdict)` or `("refused", code, message, details)`.
`transaction_from_outcome` turns an "ok" back into the `Transaction` the worker decoded,
without decoding again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from contracts.registry import builtin_registry
from contracts.runtime import ContractError, check_args
from node.crypto import DOMAIN_TX, verify
from node.errors import ChanceryError
from node.transaction import Transaction, TransactionBody, build_transaction, decode_envelope

OK: Final = "ok"
REFUSED: Final = "refused"
EnvelopeOutcome = tuple[Any, ...]
# An args verdict: ARGS_VALID, ARGS_UNCHECKED (no such built-in method: the node's own
# checks refuse it), or the refusal's (message, details).
ARGS_VALID: Final = True
ARGS_UNCHECKED: Final = None
ArgsVerdict = bool | None | tuple[str, dict[str, Any]]


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


def check_builtin_args(contract: str, method: str, args: dict[str, Any]) -> ArgsVerdict:
    """The verdict of the built-in registry's argument checks on one call."""
    found = builtin_registry().method(contract, method)
    if found is None:
        return ARGS_UNCHECKED
    try:
        check_args(found.args, args)
    except ContractError as error:
        return error.message, error.details
    return ARGS_VALID


def check_envelopes(
    items: Sequence[bytes | Any], chain_id: str, envelope_bytes_max: int
) -> list[EnvelopeOutcome]:
    """Decode, verify and check the arguments of each item; one outcome per item, in order
    (worker-process side)."""
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
                check_builtin_args(body.contract, body.method, body.args),
            )
        )
    return outcomes


def transaction_from_outcome(
    outcome: EnvelopeOutcome, trust_args_verdict: bool
) -> tuple[Transaction, bool, ChanceryError | None] | ChanceryError:
    """The worker's decoded transaction, whether its signature verifies and the refusal of
    its arguments (None if they passed or were not checked), or the envelope's refusal.

    `trust_args_verdict` only for a node that runs the built-in registry, which the worker
    checked against; otherwise the worker's verdict is ignored and the arguments are left
    unchecked (`Transaction.args_checked` false).
    """
    if outcome[0] == REFUSED:
        _, code, message, details = outcome
        return ChanceryError(code, message, details)
    _, tx_id, envelope, body_bytes, signer, signature, body, signature_ok, verdict = outcome
    if not trust_args_verdict:
        verdict = ARGS_UNCHECKED
    tx = Transaction(
        tx_id,
        envelope,
        body_bytes,
        TransactionBody(*body),
        signer,
        signature,
        args_checked=verdict is ARGS_VALID,
    )
    args_refusal = (
        ChanceryError("tx.invalid_args", *verdict) if isinstance(verdict, tuple) else None
    )
    return tx, signature_ok, args_refusal

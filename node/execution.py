"""Block execution: one fixed path from a batch of transactions to receipts and roots.

The proposer runs it before proposing and every replica runs it again before voting, so it
must be deterministic: it depends only on the parent state, the block context and the
transactions. Failed calls still produce receipts (`ok = false`) and leave state untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contracts.membership import NAME as MEMBERSHIP
from contracts.membership import lookup_signer
from contracts.registry import builtin_registry
from contracts.runtime import (
    KEY_SEPARATOR,
    CallContext,
    ChainHistory,
    ContractError,
    ContractRegistry,
    Signer,
    StateReader,
    StateView,
    check_args,
)
from node.block import (
    ContractEvent,
    Receipt,
    compute_receipts_root,
    compute_tx_root,
    encode_write_set,
    state_root_after,
)
from node.transaction import Transaction

log = logging.getLogger(__name__)

MEMBERSHIP_STATE_PREFIX = MEMBERSHIP.encode() + KEY_SEPARATOR


class OverlayState:
    """Writes layered over a base reader: a pending block's state on top of its parent."""

    def __init__(self, base: StateReader, writes: Mapping[bytes, bytes | None]) -> None:
        self._base = base
        self._writes = writes

    def get(self, key: bytes) -> bytes | None:
        if key in self._writes:
            return self._writes[key]
        return self._base.get(key)


@dataclass(frozen=True, slots=True)
class BlockContext:
    """What execution may know about the block besides its transactions."""

    height: int
    timestamp_ms: int
    prev_hash: bytes
    tx_window_ms: int
    history: ChainHistory


@dataclass(frozen=True, slots=True)
class BlockOutput:
    """Everything execution produced; the header's roots are computed from it."""

    receipts: tuple[Receipt, ...]
    receipt_bytes: tuple[bytes, ...]
    writes: dict[bytes, bytes | None]
    write_set: bytes  # `encode_write_set(writes)`: W_h, as hashed into state_root
    tx_root: bytes
    receipts_root: bytes
    state_root: bytes


def _failed(tx_id: bytes, error: ContractError) -> Receipt:
    return Receipt(tx_id, False, error.code, error.details or None, ())


class SignerCache:
    """Signers looked up within one block: most blocks repeat a few member keys.

    Forgotten whenever a transaction writes membership state, so a key added or revoked
    earlier in the block is seen exactly as an uncached lookup would see it.
    """

    def __init__(self, state: StateReader) -> None:
        self._state = state
        self._signers: dict[bytes, Signer | None] = {}

    def lookup(self, public_key: bytes) -> Signer | None:
        if public_key not in self._signers:
            self._signers[public_key] = lookup_signer(self._state, public_key)
        return self._signers[public_key]

    def after_writes(self, writes: Mapping[bytes, bytes | None]) -> None:
        if self._signers and any(key.startswith(MEMBERSHIP_STATE_PREFIX) for key in writes):
            self._signers.clear()


def execute_transaction(
    registry: ContractRegistry,
    state: StateReader,
    context: BlockContext,
    tx: Transaction,
    signers: SignerCache | None = None,
) -> tuple[Receipt, dict[bytes, bytes | None]]:
    """Run one transaction on `state`; returns its receipt and writes (empty if it failed).

    `signers` must be built on this same `state` (execute_block keeps one per block).
    Arguments that admission already checked against this same registry are not checked
    again (`Transaction.args_checked`); the check is a pure function of them.
    """
    body = tx.body
    try:
        if abs(context.timestamp_ms - body.timestamp) > context.tx_window_ms:
            raise ContractError("tx.expired", "transaction timestamp is outside the window")
        if signers is None:
            signers = SignerCache(state)
        signer = signers.lookup(tx.signer)
        if signer is None:
            raise ContractError("tx.unknown_signer", "signer is not an active member")
        method = registry.method(body.contract, body.method)
        if method is None:
            raise ContractError("tx.unknown_method", f"no method {body.contract}.{body.method}")
        if not method.allows(signer):
            raise ContractError("tx.forbidden", "the signer's roles do not allow this method")
        if not (tx.args_checked and registry is builtin_registry()):
            check_args(method.args, body.args)
        view = StateView(body.contract, state)
        call = CallContext(
            signer,
            tx.tx_id,
            context.height,
            context.timestamp_ms,
            context.prev_hash,
            context.history,
        )
        outcome = method.handler(call, view, body.args)
    except ContractError as error:
        return _failed(tx.tx_id, error), {}
    except Exception:  # a contract bug: on the record as a failure, never a crash loop
        log.exception("contract %s.%s raised", body.contract, body.method)
        return _failed(tx.tx_id, ContractError("contract.internal_error", "contract failed")), {}
    events = tuple(ContractEvent(event.name, event.data) for event in outcome.events)
    return Receipt(tx.tx_id, True, None, outcome.result, events), view.writes


def execute_block(
    registry: ContractRegistry,
    parent_state: StateReader,
    parent_state_root: bytes,
    context: BlockContext,
    transactions: Sequence[Transaction],
) -> BlockOutput:
    """Execute `transactions` in order on top of `parent_state`.

    Preconditions (checked by the caller before execution): every transaction decoded,
    signature verified, right chain, and no `tx_id` repeated or committed before.
    """
    block_writes: dict[bytes, bytes | None] = {}
    state = OverlayState(parent_state, block_writes)
    signers = SignerCache(state)
    receipts: list[Receipt] = []
    for tx in transactions:
        receipt, writes = execute_transaction(registry, state, context, tx, signers)
        block_writes.update(writes)
        signers.after_writes(writes)
        receipts.append(receipt)
    receipt_bytes = tuple(receipt.encode() for receipt in receipts)
    write_set = encode_write_set(block_writes)  # hashed here, stored as is at commit
    return BlockOutput(
        receipts=tuple(receipts),
        receipt_bytes=receipt_bytes,
        writes=block_writes,
        write_set=write_set,
        tx_root=compute_tx_root([tx.tx_id for tx in transactions]),
        receipts_root=compute_receipts_root(receipt_bytes),
        state_root=state_root_after(parent_state_root, write_set),
    )

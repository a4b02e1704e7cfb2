"""Admission: the checks a transaction passes before it enters the mempool (PROTOCOL.md 3).

Decode, size, chain, signature and arguments (on the verifier's worker processes, a chunk
of a batch at a time: node/envelope_check.py), then duplicates, capacity, signer and role
against committed state: each failure has its own code, refused in API.md's order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from contracts.membership import is_known_key
from contracts.registry import builtin_registry
from contracts.runtime import ContractError, ContractRegistry, check_args
from node.crypto import SignatureVerifier
from node.envelope_check import check_envelopes, decode_submitted, transaction_from_outcome
from node.errors import ChanceryError
from node.execution import SignerCache
from node.mempool import Mempool, mempool_full
from node.storage import ChainStore
from node.transaction import Transaction

AdmissionResult = Transaction | ChanceryError


class Admission:
    """Turns untrusted envelopes into admitted mempool transactions, or coded refusals."""

    def __init__(
        self,
        chain_id: str,
        store: ChainStore,
        mempool: Mempool,
        registry: ContractRegistry,
        verifier: SignatureVerifier,
        envelope_bytes_max: int,
    ) -> None:
        self.chain_id = chain_id
        self.store = store
        self.mempool = mempool
        self.registry = registry
        # The verifier's workers check arguments against the built-in contracts: their
        # verdict holds only for a node that runs exactly those (node/envelope_check.py).
        self._trust_workers_args = registry is builtin_registry()
        self.verifier = verifier
        self.envelope_bytes_max = envelope_bytes_max
        # Signers looked up at the committed height they are valid for: a batch of
        # thousands usually repeats a few keys, and a commit may add or revoke one.
        self._signers = SignerCache(store)
        self._signers_height = store.height
        # Told of every transaction a client submitted and this node admitted (the relay
        # sends them to every other validator). Peers' relayed batches are not announced.
        self.on_admitted: Callable[[list[Transaction]], None] | None = None
        # One future per admission under way, done when its transactions are in the
        # mempool (or refused): see `admissions_under_way`.
        self._under_way: set[asyncio.Future[None]] = set()

    def decode(self, item: bytes | Any) -> Transaction:
        """Decode one envelope (msgpack bytes or a JSON object) and check its size and chain.

        Raises:
            ChanceryError: `tx.too_large`, `tx.malformed`, `tx.wrong_chain`.
        """
        return decode_submitted(item, self.chain_id, self.envelope_bytes_max)

    def check_authority(self, tx: Transaction, args_refusal: ChanceryError | None = None) -> None:
        """Signer active, method known, role allowed, arguments valid (committed state).

        A worker's refusal of the arguments (`args_refusal`, node/envelope_check.py) is
        raised in its place in that order; arguments already checked are not checked again.

        Raises:
            ChanceryError: `tx.unknown_signer`, `tx.unknown_method`, `tx.forbidden`,
                `tx.invalid_args`.
        """
        if self._signers_height != self.store.height:
            self._signers = SignerCache(self.store)
            self._signers_height = self.store.height
        signer = self._signers.lookup(tx.signer)
        if signer is None:
            revoked = is_known_key(self.store, tx.signer)
            raise ChanceryError(
                "tx.unknown_signer",
                "signer key is revoked" if revoked else "signer is not a member",
                {"revoked": revoked},
            )
        method = self.registry.method(tx.body.contract, tx.body.method)
        if method is None:
            raise ChanceryError(
                "tx.unknown_method", f"no method {tx.body.contract}.{tx.body.method}"
            )
        if not method.allows(signer):
            raise ChanceryError(
                "tx.forbidden",
                "the signer's organisation or key may not call "
                f"{tx.body.contract}.{tx.body.method}",
                {"org": signer.org},
            )
        if args_refusal is not None:
            raise args_refusal
        if tx.args_checked:
            return
        try:
            check_args(method.args, tx.body.args)
        except ContractError as exc:
            raise ChanceryError("tx.invalid_args", exc.message, exc.details) from None

    def check_new(self, tx: Transaction) -> None:
        """Raises: ChanceryError `tx.duplicate` (details name its status) if seen before."""
        record = self.store.get_tx(tx.tx_id)
        if record is not None:
            raise ChanceryError(
                "tx.duplicate",
                "transaction is already committed",
                {"status": "committed", "tx_id": tx.tx_id.hex(), "height": record.height},
            )
        if tx.tx_id in self.mempool:
            raise ChanceryError(
                "tx.duplicate",
                "transaction is already pending",
                {"status": "pending", "tx_id": tx.tx_id.hex()},
            )

    def _admit_checked(
        self, tx: Transaction, signature_ok: bool, args_refusal: ChanceryError | None
    ) -> AdmissionResult:
        try:
            # Refusals in the order a client is told: duplicate, no room, then signature.
            self.check_new(tx)
            if not self.mempool.has_room(1, tx.size_bytes):
                raise mempool_full()
            if not signature_ok:
                raise ChanceryError("tx.bad_signature", "signature does not verify for the signer")
            self.check_authority(tx, args_refusal)
            self.mempool.add(tx)
        except ChanceryError as error:
            return error
        return tx

    async def admit_many(
        self, items: Sequence[bytes | Any], *, announce: bool = True
    ) -> list[AdmissionResult]:
        """Admit a batch: decode and verify every envelope on the verifier's workers
        (node/envelope_check.py), then check and admit each in order.

        Cheap before costly: envelopes beyond the mempool's room are refused with
        `mempool.full` unread, so shedding overload costs no decoding or verification.
        The workers do verify duplicates: a re-relayed transaction costs a verification
        off the GIL, where refusing it first would cost a second round trip per batch.

        With `announce`, admitted transactions are passed to `on_admitted` (relayed).
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._under_way.add(done)
        try:
            return await self._admit_many(items, announce)
        finally:
            self._under_way.discard(done)
            done.set_result(None)

    async def admissions_under_way(self) -> None:
        """Wait until every admission begun before this call has finished.

        A backup checking a proposal waits for this before it verifies transactions its
        mempool lacks: a peer's relayed copy of them is often still on the workers, and
        the workers take chunks in order, so the proposal's own verification would finish
        after that copy anyway. Waiting costs no time and saves verifying them twice.
        """
        if self._under_way:
            await asyncio.wait(list(self._under_way))

    async def _admit_many(
        self, items: Sequence[bytes | Any], announce: bool
    ) -> list[AdmissionResult]:
        room = self.mempool.room_txs
        outcomes = await self.verifier.map_chunks(
            check_envelopes, list(items[:room]), self.chain_id, self.envelope_bytes_max
        )
        results: list[AdmissionResult] = []
        for outcome in outcomes:
            checked = transaction_from_outcome(outcome, self._trust_workers_args)
            if isinstance(checked, ChanceryError):
                results.append(checked)
            else:
                results.append(self._admit_checked(*checked))
        results.extend(mempool_full() for _ in items[room:])
        if announce and self.on_admitted is not None:
            admitted = [result for result in results if isinstance(result, Transaction)]
            if admitted:
                self.on_admitted(admitted)
        return results

    async def admit_one(self, item: bytes | Any) -> Transaction:
        """Raises: ChanceryError with the first failed check's code."""
        (result,) = await self.admit_many([item])
        if isinstance(result, ChanceryError):
            raise result
        return result

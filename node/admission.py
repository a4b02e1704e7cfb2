"""Admission: the checks a transaction passes before it enters the mempool (PROTOCOL.md 3).

Decode, size, chain, signature (batched on the verify thread pool), signer and role,
arguments, duplicates, capacity: each failure has its own code. A batch is checked as a
whole so its signatures verify in parallel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from contracts.membership import is_known_key
from contracts.runtime import ContractError, ContractRegistry, check_args
from node.crypto import DOMAIN_TX, SignatureCheck, SignatureVerifier
from node.errors import ChanceryError
from node.execution import SignerCache
from node.mempool import Mempool, mempool_full
from node.storage import ChainStore
from node.transaction import Transaction, build_transaction, decode_envelope

AdmissionResult = Transaction | ChanceryError


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
        self.verifier = verifier
        self.envelope_bytes_max = envelope_bytes_max
        # Signers looked up at the committed height they are valid for: a batch of
        # thousands usually repeats a few keys, and a commit may add or revoke one.
        self._signers = SignerCache(store)
        self._signers_height = store.height
        # Told of every transaction a client submitted and this node admitted (the relay
        # sends them to every other validator). Peers' relayed batches are not announced.
        self.on_admitted: Callable[[list[Transaction]], None] | None = None

    def decode(self, item: bytes | Any) -> Transaction:
        """Decode one envelope (msgpack bytes or a JSON object) and check its size and chain.

        Raises:
            ChanceryError: `tx.too_large`, `tx.malformed`, `tx.wrong_chain`.
        """
        if isinstance(item, bytes):
            if len(item) > self.envelope_bytes_max:
                raise ChanceryError(
                    "tx.too_large", f"envelope over {self.envelope_bytes_max} bytes"
                )
            tx = decode_envelope(item)
        else:
            tx = decode_json_envelope(item)
            if tx.size_bytes > self.envelope_bytes_max:
                raise ChanceryError(
                    "tx.too_large", f"envelope over {self.envelope_bytes_max} bytes"
                )
        if tx.body.chain_id != self.chain_id:
            raise ChanceryError(
                "tx.wrong_chain", f"chain_id is not {self.chain_id!r}", {"expected": self.chain_id}
            )
        return tx

    def check_authority(self, tx: Transaction) -> None:
        """Signer active, method known, role allowed, arguments valid (committed state).

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

    def _admit_verified(self, tx: Transaction, signature_ok: bool) -> AdmissionResult:
        try:
            if not signature_ok:
                raise ChanceryError("tx.bad_signature", "signature does not verify for the signer")
            self.check_authority(tx)
            self.check_new(tx)
            self.mempool.add(tx)
        except ChanceryError as error:
            return error
        return tx

    async def admit_many(
        self, items: Sequence[bytes | Any], *, announce: bool = True
    ) -> list[AdmissionResult]:
        """Admit a batch: decode all, drop known ones, verify the rest's signatures in
        parallel, then admit in order.

        With `announce`, admitted transactions are passed to `on_admitted` (relayed).
        """
        decoded: list[AdmissionResult] = []
        room_txs, room_bytes = 0, 0
        for item in items:
            try:
                tx = self.decode(item)
                # Cheap before costly: a transaction seen before (relayed again, replayed)
                # is refused without verifying its signature, and so is one the mempool
                # has no room for: under overload, shedding must not cost a verification.
                self.check_new(tx)
                if not self.mempool.has_room(room_txs + 1, room_bytes + tx.size_bytes):
                    raise mempool_full()
                room_txs, room_bytes = room_txs + 1, room_bytes + tx.size_bytes
                decoded.append(tx)
            except ChanceryError as error:
                decoded.append(error)
        candidates = [tx for tx in decoded if isinstance(tx, Transaction)]
        checks = [
            SignatureCheck(tx.signer, DOMAIN_TX, tx.body_bytes, tx.signature) for tx in candidates
        ]
        verdicts = iter(await self.verifier.verify_many(checks))
        results = [
            self._admit_verified(result, next(verdicts))
            if isinstance(result, Transaction)
            else result
            for result in decoded
        ]
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

"""Deterministic stand-ins for what the node gives a replica: signatures and execution.

`KeyedHashAuth` signs with a per-replica secret (a keyed SHA-256): fast enough for
thousands of seeded runs, and a replica still cannot forge another's signature. The
`ToyLedger` executes a block as the hash of its parent, transactions and proposer, so a
replica accepts exactly the headers an honest primary would build.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import msgpack

from consensus.quorum import commit_vote_payload

DOMAIN_P2P = b"sim/p2p\n"
DOMAIN_COMMIT = b"sim/commit\n"


def _mac(secret: bytes, domain: bytes, payload: bytes) -> bytes:
    digest = hashlib.sha256(secret + domain + payload).digest()
    return digest + digest  # 64 bytes, the size of an Ed25519 signature


@dataclass(frozen=True)
class KeyedHashAuth:
    """Replica `index`'s signer and everyone's verifier (the simulator knows all secrets)."""

    chain_id: str
    index: int
    secrets: tuple[bytes, ...]

    def sign(self, payload: bytes) -> bytes:
        return _mac(self.secrets[self.index], DOMAIN_P2P, payload)

    def sign_commit_vote(self, height: int, block_hash: bytes) -> bytes:
        payload = commit_vote_payload(self.chain_id, height, block_hash)
        return _mac(self.secrets[self.index], DOMAIN_COMMIT, payload)

    def verify(self, signer: int, payload: bytes, signature: bytes) -> bool:
        if not 0 <= signer < len(self.secrets):
            return False
        return signature == _mac(self.secrets[signer], DOMAIN_P2P, payload)

    def verify_commit_vote(self, signer: int, height: int, block_hash: bytes, vote: bytes) -> bool:
        if not 0 <= signer < len(self.secrets):
            return False
        payload = commit_vote_payload(self.chain_id, height, block_hash)
        return vote == _mac(self.secrets[signer], DOMAIN_COMMIT, payload)


def toy_header(
    height: int, parent_hash: bytes, txs: tuple[bytes, ...], proposer: int, view: int
) -> bytes:
    return msgpack.packb([height, parent_hash, list(txs), proposer, view], use_bin_type=True)


def block_hash_of(header: bytes) -> bytes:
    return hashlib.sha256(header).digest()


GENESIS_HASH = hashlib.sha256(b"sim genesis").digest()


@dataclass
class ToyLedger:
    """One replica's chain: committed blocks plus executed-but-pending ones by hash."""

    committed: list[bytes] = field(default_factory=lambda: [GENESIS_HASH])
    committed_txs: dict[bytes, int] = field(default_factory=dict)
    pending: dict[bytes, tuple[int, bytes, tuple[bytes, ...]]] = field(default_factory=dict)

    @property
    def height(self) -> int:
        return len(self.committed) - 1

    def known_parent(self, parent_hash: bytes, height: int) -> bool:
        if height - 1 <= self.height:
            return self.committed[height - 1] == parent_hash
        entry = self.pending.get(parent_hash)
        return entry is not None and entry[0] == height - 1

    def ancestors_txs(self, parent_hash: bytes) -> set[bytes]:
        seen: set[bytes] = set()
        while parent_hash in self.pending:
            _height, grandparent, txs = self.pending[parent_hash]
            seen.update(txs)
            parent_hash = grandparent
        return seen

    def execute(
        self,
        height: int,
        parent_hash: bytes,
        txs: tuple[bytes, ...],
        header: bytes,
        proposer: int | None,
        view: int | None,
        expected_hash: bytes | None,
    ) -> str | None:
        """None if the block is valid on its parent, else why not."""
        if not self.known_parent(parent_hash, height):
            return "local.unknown_parent"
        try:
            decoded_height, decoded_parent, decoded_txs, decoded_proposer, decoded_view = (
                msgpack.unpackb(header, raw=False)
            )
        except Exception:
            return "proposal.malformed"
        if (decoded_height, decoded_parent, tuple(decoded_txs)) != (height, parent_hash, txs):
            return "proposal.mismatch"
        if proposer is not None and decoded_proposer != proposer:
            return "proposal.proposer"
        if view is not None and decoded_view != view:
            return "proposal.view"
        block_hash = block_hash_of(header)
        if expected_hash is not None and block_hash != expected_hash:
            return "proposal.hash"
        repeated = set(txs) & (self.ancestors_txs(parent_hash) | set(self.committed_txs))
        if repeated or len(set(txs)) != len(txs):
            return "proposal.duplicate_tx"
        self.pending[block_hash] = (height, parent_hash, txs)
        return None

    def commit(self, height: int, block_hash: bytes) -> tuple[bytes, ...]:
        entry = self.pending.pop(block_hash)
        assert entry[0] == height == self.height + 1, (entry[0], height, self.height)
        self.committed.append(block_hash)
        for tx in entry[2]:
            self.committed_txs[tx] = height
        return entry[2]

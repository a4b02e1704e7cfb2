"""Shared fixtures for the unit tests: deterministic keys, a four-organisation consortium
with its genesis, and a real LevelDB-backed chain that commits blocks with real votes.

Keys are derived from labels (`SHA-256(label)` as the Ed25519 seed), so every run signs the
same bytes and a failure reproduces exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from contracts.membership import OrganizationSpec
from contracts.registry import builtin_registry
from node.block import CommitCertificate, CommittedBlock, sign_commit_vote
from node.crypto import SigningKey
from node.genesis import Genesis, Validator, genesis_document, parse_genesis
from node.ledger import Ledger
from node.storage import ChainStore
from node.transaction import Transaction, sign_transaction

CHAIN_ID = "chancery-test"
GENESIS_TIME_MS = 1_700_000_000_000
BLOCK_INTERVAL_MS = 1_000
ORG_ROLES: dict[str, tuple[str, ...]] = {
    "notary": ("notary",),
    "taxoffice": ("tax_office",),
    "enterprise-a": ("enterprise",),
    "enterprise-b": ("enterprise",),
}


class _NoHistory:
    """A `ChainHistory` for blocks run outside a chain: no contract they call reads one."""

    def block_hash_at(self, height: int) -> bytes:
        raise AssertionError(f"block {height}: this test runs blocks outside a chain")


NO_HISTORY = _NoHistory()


def key_from_label(label: str) -> SigningKey:
    """A deterministic Ed25519 key: the seed is SHA-256 of `label`."""
    return SigningKey.from_seed(hashlib.sha256(label.encode()).digest())


@dataclass(frozen=True)
class Consortium:
    """A genesis with notary, taxoffice, enterprise-a and enterprise-b, one admin and one
    member key each, and `len(validators)` validators (all run by the notary)."""

    genesis: Genesis
    raw: bytes
    admins: dict[str, SigningKey]
    members: dict[str, SigningKey]
    validators: tuple[SigningKey, ...]

    @property
    def chain_id(self) -> str:
        return self.genesis.chain_id

    def sign(
        self,
        key: SigningKey,
        contract: str,
        method: str,
        args: dict[str, Any],
        *,
        nonce: int = 0,
        timestamp: int = GENESIS_TIME_MS,
        chain_id: str | None = None,
    ) -> Transaction:
        return sign_transaction(
            key, chain_id or self.chain_id, contract, method, args, nonce, timestamp
        )

    def certificate(
        self, block_hash: bytes, height: int, signers: Sequence[int] | None = None
    ) -> CommitCertificate:
        """A certificate with real commit votes of `signers` (default: every validator)."""
        indexes = range(len(self.validators)) if signers is None else signers
        votes = tuple(
            (i, sign_commit_vote(self.validators[i], self.chain_id, height, block_hash))
            for i in indexes
        )
        return CommitCertificate(block_hash=block_hash, height=height, signatures=votes)


def build_consortium(
    *,
    chain_id: str = CHAIN_ID,
    genesis_time: int = GENESIS_TIME_MS,
    validator_count: int = 1,
    params: dict[str, int] | None = None,
) -> Consortium:
    admins = {org: key_from_label(f"{org}/admin") for org in ORG_ROLES}
    members = {org: key_from_label(f"{org}/member") for org in ORG_ROLES}
    orgs = [
        OrganizationSpec(
            id=org,
            name=org.title(),
            roles=roles,
            admins=(admins[org].public_key,),
            members=(members[org].public_key,),
        )
        for org, roles in ORG_ROLES.items()
    ]
    validators = tuple(key_from_label(f"validator/{i}") for i in range(validator_count))
    specs = [Validator(i, "notary", key.public_key) for i, key in enumerate(validators)]
    raw = genesis_document(chain_id, genesis_time, orgs, specs, params)
    return Consortium(parse_genesis(raw), raw, admins, members, validators)


@pytest.fixture(scope="session")
def consortium() -> Consortium:
    """One validator: every block needs exactly its one commit vote."""
    return build_consortium()


@pytest.fixture(scope="session")
def consortium4() -> Consortium:
    """Four validators (f = 1, quorum 3)."""
    return build_consortium(validator_count=4)


@pytest.fixture(scope="session")
def make_consortium() -> Callable[..., Consortium]:
    return build_consortium


class Chain:
    """A real `ChainStore` in a directory plus the `Ledger` that commits to it."""

    def __init__(self, path: Path, consortium: Consortium) -> None:
        self.path = path
        self.consortium = consortium
        self.store = ChainStore.open(path, consortium.genesis)
        self.ledger = Ledger(consortium.genesis, self.store, builtin_registry())
        self.writes: dict[int, dict[bytes, bytes | None]] = {}

    def next_timestamp(self) -> int:
        return GENESIS_TIME_MS + BLOCK_INTERVAL_MS * (self.store.height + 1)

    def commit(
        self, transactions: Sequence[Transaction], timestamp: int | None = None
    ) -> CommittedBlock:
        """Execute, certify with every validator's vote, and persist the next block."""
        when = self.next_timestamp() if timestamp is None else timestamp
        proposal = self.ledger.build_proposal(
            self.ledger.tip(), transactions, when, proposer=0, view=0
        )
        certificate = self.consortium.certificate(proposal.block_hash, proposal.header.height)
        block = self.ledger.commit(proposal, certificate)
        self.writes[block.height] = dict(proposal.output.writes)
        return block

    def reopen(self, **options: Any) -> None:
        """Close the store and open it again, with `ChainStore.open`'s `options`."""
        self.store.close()
        self.store = ChainStore.open(self.path, self.consortium.genesis, **options)
        self.ledger = Ledger(self.consortium.genesis, self.store, builtin_registry())

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def chain(tmp_path: Path, consortium: Consortium) -> Iterator[Chain]:
    opened = Chain(tmp_path / "data", consortium)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def make_chain(tmp_path: Path) -> Iterator[Callable[[Consortium], Chain]]:
    """Open chains for other consortia (each in its own directory); all closed afterwards."""
    opened: list[Chain] = []

    def make(consortium: Consortium) -> Chain:
        made = Chain(tmp_path / f"chain-{len(opened)}", consortium)
        opened.append(made)
        return made

    try:
        yield make
    finally:
        for made in opened:
            made.close()

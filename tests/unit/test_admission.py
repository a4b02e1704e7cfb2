"""Admission: cheap refusals come before signature checks, so overload is shed cheaply."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from contracts.registry import builtin_registry
from node.admission import Admission
from node.crypto import SignatureVerifier
from node.errors import ChanceryError
from node.mempool import Mempool
from node.transaction import Transaction
from tests.unit.conftest import Chain, Consortium, build_consortium

ENVELOPE_BYTES_MAX = 1024 * 1024


class CountingVerifier(SignatureVerifier):
    """The real verifier, counting how many items it was asked to check."""

    def __init__(self) -> None:
        super().__init__(workers=1)
        self.checked = 0

    async def map_chunks(self, function: Any, items: Sequence[Any], *args: Any) -> list[Any]:
        self.checked += len(items)
        return await super().map_chunks(function, items, *args)


@pytest.fixture
def consortium() -> Consortium:
    return build_consortium(validator_count=1)


@pytest.fixture
def chain(tmp_path: Path, consortium: Consortium) -> Iterator[Chain]:
    opened = Chain(tmp_path / "data", consortium)
    yield opened
    opened.close()


def member_tx(consortium: Consortium, nonce: int) -> Transaction:
    return consortium.sign(
        consortium.admins["notary"],
        "membership",
        "add_member",
        {"public_key": os.urandom(32), "name": f"m{nonce}"},
        nonce=nonce,
    )


async def test_a_full_mempool_refuses_before_any_signature_is_checked(
    consortium: Consortium, chain: Chain
) -> None:
    verifier = CountingVerifier()
    mempool = Mempool(txs_max=3, bytes_max=10**9)
    admission = Admission(
        consortium.chain_id,
        chain.store,
        mempool,
        builtin_registry(),
        verifier,
        ENVELOPE_BYTES_MAX,
    )
    try:
        batch = [member_tx(consortium, n).envelope for n in range(5)]
        results = await admission.admit_many(batch)
        assert [isinstance(r, Transaction) for r in results] == [True] * 3 + [False] * 2
        assert all(isinstance(r, ChanceryError) and r.code == "mempool.full" for r in results[3:])
        assert verifier.checked == 3
        again = await admission.admit_many([member_tx(consortium, 9).envelope])
        assert isinstance(again[0], ChanceryError) and again[0].code == "mempool.full"
        assert verifier.checked == 3
        assert len(mempool) == 3
    finally:
        verifier.close()

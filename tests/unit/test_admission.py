"""Admission: cheap refusals come before signature checks, so overload is shed cheaply."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from contracts import membership
from contracts.registry import builtin_registry
from contracts.runtime import Arg, ContractRegistry, hash32
from node.admission import Admission
from node.crypto import SignatureVerifier, SigningKey
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


def _admission(consortium: Consortium, chain: Chain, registry: ContractRegistry) -> Admission:
    return Admission(
        consortium.chain_id,
        chain.store,
        Mempool(txs_max=100, bytes_max=10**9),
        registry,
        SignatureVerifier(workers=1),
        ENVELOPE_BYTES_MAX,
    )


def _refusal(result: object) -> str:
    assert isinstance(result, ChanceryError), result
    return result.code


async def test_arguments_checked_in_the_workers_are_refused_in_api_order(
    consortium: Consortium, chain: Chain
) -> None:
    admission = _admission(consortium, chain, builtin_registry())
    stranger = SigningKey.generate()
    bad_args = {"public_key": b"\x01", "name": "m"}
    try:
        good, bad, unknown_signer_bad_args = await admission.admit_many(
            [
                member_tx(consortium, 1).envelope,
                consortium.sign(
                    consortium.admins["notary"], "membership", "add_member", bad_args, nonce=2
                ).envelope,
                consortium.sign(stranger, "membership", "add_member", bad_args, nonce=3).envelope,
            ]
        )
        assert isinstance(good, Transaction) and good.args_checked
        assert _refusal(bad) == "tx.invalid_args"
        assert isinstance(bad, ChanceryError) and bad.details == {"argument": "public_key"}
        # The worker's verdict on the arguments waits its turn behind the signer check.
        assert _refusal(unknown_signer_bad_args) == "tx.unknown_signer"
    finally:
        admission.verifier.close()


async def test_a_node_with_other_contracts_checks_arguments_itself(
    consortium: Consortium, chain: Chain
) -> None:
    """The workers check against the built-in contracts; a node running another registry
    must not take their word, in admission or in execution."""
    builtin = builtin_registry()
    stricter_membership = replace(
        membership.CONTRACT,
        methods={
            **membership.CONTRACT.methods,
            "add_member": replace(
                membership.CONTRACT.methods["add_member"],
                args={**membership.CONTRACT.methods["add_member"].args, "name": Arg(hash32)},
            ),
        },
    )
    other = ContractRegistry(
        [
            stricter_membership,
            *(builtin.contract(name) for name in builtin.names() if name != "membership"),
        ]
    )
    admission = _admission(consortium, chain, other)
    try:
        (result,) = await admission.admit_many([member_tx(consortium, 1).envelope])
        assert _refusal(result) == "tx.invalid_args"
        assert isinstance(result, ChanceryError) and result.details == {"argument": "name"}
    finally:
        admission.verifier.close()

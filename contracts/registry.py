"""The built-in contracts every Chancery node runs."""

from __future__ import annotations

from functools import cache

from contracts import evidence, invoice, lottery, membership, ranking
from contracts.runtime import ContractRegistry


@cache
def builtin_registry() -> ContractRegistry:
    """Every built-in contract: one registry per process, never changed once built.

    Being one object lets a check done against it be recognised as such: the verifier's
    workers check arguments against their own copy, and a node that runs this registry
    need not check them again (node/envelope_check.py).
    """
    return ContractRegistry(
        [
            membership.CONTRACT,
            evidence.CONTRACT,
            invoice.CONTRACT,
            lottery.CONTRACT,
            ranking.CONTRACT,
        ]
    )

"""The built-in contracts every Chancery node runs."""

from __future__ import annotations

from contracts import evidence, invoice, lottery, membership, ranking
from contracts.runtime import ContractRegistry


def builtin_registry() -> ContractRegistry:
    """Every built-in contract."""
    return ContractRegistry(
        [
            membership.CONTRACT,
            evidence.CONTRACT,
            invoice.CONTRACT,
            lottery.CONTRACT,
            ranking.CONTRACT,
        ]
    )

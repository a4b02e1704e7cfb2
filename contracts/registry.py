"""The built-in contracts every Chancery node runs."""

from __future__ import annotations

from contracts import membership
from contracts.runtime import ContractRegistry


def builtin_registry() -> ContractRegistry:
    """Every built-in contract; later issues add evidence, invoice, lottery and ranking."""
    return ContractRegistry([membership.CONTRACT])

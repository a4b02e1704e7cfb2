"""One block-execution harness for contract tests: genesis state in a dict, blocks run
through the real `execute_block`, each `commit` applied to the dict."""

from __future__ import annotations

from typing import Any

from contracts.registry import builtin_registry
from contracts.runtime import Reader, ReadView
from node.block import Receipt
from node.execution import BlockContext, BlockOutput, execute_block
from node.transaction import Transaction
from tests.unit.conftest import GENESIS_TIME_MS, Consortium

BLOCK_INTERVAL_MS = 1_000
TX_WINDOW_MS = 600_000


class ContractHarness:
    """Execute blocks of `contract` calls on the genesis state of `consortium`.

    Block `h` has timestamp `GENESIS_TIME_MS + BLOCK_INTERVAL_MS * h`; its `prev_hash` is
    `prev_hash(h)` (the genesis hash unless a subclass needs distinct ones).
    """

    def __init__(self, consortium: Consortium, contract: Any) -> None:
        self.consortium = consortium
        self.contract = contract  # the contract's module: NAME and query
        genesis = consortium.genesis
        self.genesis_hash = genesis.genesis_hash
        self.state: dict[bytes, bytes | None] = dict(genesis.genesis_writes())
        self.root = genesis.genesis_block().header.state_root
        self.registry = builtin_registry()
        self.height = 1
        self.nonce = 0

    @property
    def block_time(self) -> int:
        return GENESIS_TIME_MS + BLOCK_INTERVAL_MS * self.height

    def prev_hash(self, height: int) -> bytes:
        return self.genesis_hash

    def block_hash_at(self, height: int) -> bytes:
        """`ChainHistory`: block `height`'s hash is the `prev_hash` of the block after it."""
        return self.prev_hash(height + 1)

    def tx(
        self,
        method: str,
        args: dict[str, Any],
        org: str = "enterprise-a",
        *,
        admin: bool = False,
        contract: str | None = None,
    ) -> Transaction:
        self.nonce += 1
        key = (self.consortium.admins if admin else self.consortium.members)[org]
        return self.consortium.sign(
            key,
            contract or self.contract.NAME,
            method,
            args,
            nonce=self.nonce,
            timestamp=self.block_time,
        )

    def run(self, txs: list[Transaction]) -> BlockOutput:
        """Execute one block on the current state without applying it."""
        context = BlockContext(
            self.height, self.block_time, self.prev_hash(self.height), TX_WINDOW_MS, self
        )
        return execute_block(self.registry, self.state, self.root, context, txs)

    def commit(self, txs: list[Transaction]) -> BlockOutput:
        output = self.run(txs)
        for key, value in output.writes.items():
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        self.root = output.state_root
        self.height += 1
        return output

    def call(self, method: str, args: dict[str, Any], org: str = "enterprise-a") -> Receipt:
        """Commit one transaction in its own block; its receipt."""
        (receipt,) = self.commit([self.tx(method, args, org)]).receipts
        return receipt

    def ok(self, method: str, args: dict[str, Any], org: str = "enterprise-a") -> Receipt:
        receipt = self.call(method, args, org)
        assert receipt.ok, receipt
        return receipt

    def view(self) -> ReadView:
        return ReadView(self.contract.NAME, self.state)

    def query(self, path: str, reader: Reader | None = None) -> Any:
        return self.contract.query(self.view(), path.split("/"), reader or Reader())

"""Tests for node.execution with the membership contract (CONTRACTS.md, membership)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import msgpack
import pytest

from contracts.membership import lookup_signer
from contracts.registry import builtin_registry
from contracts.runtime import Arg, CallOutcome, Contract, ContractRegistry, Method, text
from node.block import ContractEvent, Receipt, encode_write_set, next_state_root
from node.crypto import SigningKey
from node.execution import BlockContext, BlockOutput, OverlayState, execute_block
from node.merkle import merkle_root
from node.transaction import Transaction
from tests.unit.conftest import NO_HISTORY

if TYPE_CHECKING:
    from tests.unit.conftest import Consortium

GENESIS_TIME = 1_700_000_000_000
BLOCK_TIME = GENESIS_TIME + 1_000
WINDOW = 600_000
NEW_KEY = b"\x5a" * 32
ANOTHER_KEY = b"\x5b" * 32


class Harness:
    """Genesis state in a dict, and one-call block execution on top of it."""

    def __init__(self, consortium: Consortium) -> None:
        self.consortium = consortium
        self.genesis = consortium.genesis
        self.state: dict[bytes, bytes | None] = dict(self.genesis.genesis_writes())
        self.root = self.genesis.genesis_block().header.state_root
        self.registry = builtin_registry()
        self.height = 1
        self.nonce = 0

    def context(self, timestamp: int = BLOCK_TIME) -> BlockContext:
        return BlockContext(self.height, timestamp, self.genesis.genesis_hash, WINDOW, NO_HISTORY)

    def tx(
        self,
        signer: str,
        method: str,
        args: dict[str, Any],
        *,
        org: str = "enterprise-a",
        contract: str = "membership",
        timestamp: int = BLOCK_TIME,
    ) -> Transaction:
        keys = self.consortium.admins if signer == "admin" else self.consortium.members
        self.nonce += 1
        return self.consortium.sign(
            keys[org], contract, method, args, nonce=self.nonce, timestamp=timestamp
        )

    def run(self, txs: list[Transaction], timestamp: int = BLOCK_TIME) -> BlockOutput:
        return execute_block(self.registry, self.state, self.root, self.context(timestamp), txs)

    def apply(self, output: BlockOutput) -> None:
        """Commit `output` onto the dict state (deletions remove the key)."""
        for key, value in output.writes.items():
            if value is None:
                self.state.pop(key, None)
            else:
                self.state[key] = value
        self.root = output.state_root
        self.height += 1


@pytest.fixture
def harness(consortium: Consortium) -> Harness:
    return Harness(consortium)


def add_member_args(key: bytes = NEW_KEY, name: str = "Alice") -> dict[str, Any]:
    return {"name": name, "public_key": key}


def record(output: BlockOutput, key: bytes) -> Any:
    value = output.writes[key]
    assert value is not None
    return msgpack.unpackb(value, raw=False)


def assert_failed(receipt: Receipt, tx: Transaction, code: str) -> None:
    assert receipt.tx_id == tx.tx_id
    assert receipt.ok is False
    assert receipt.error == code
    assert receipt.events == ()


# --- add_member -----------------------------------------------------------------------------


def test_admin_add_member_succeeds(harness: Harness) -> None:
    tx = harness.tx("admin", "add_member", add_member_args())
    output = harness.run([tx])
    (receipt,) = output.receipts
    assert receipt.ok is True
    assert receipt.error is None
    assert receipt.tx_id == tx.tx_id
    assert receipt.result == {"org": "enterprise-a"}
    assert receipt.events == (
        ContractEvent("member_added", {"org": "enterprise-a", "public_key": NEW_KEY}),
    )
    assert record(output, b"membership/key/" + NEW_KEY) == {
        "active": True,
        "added_height": 1,
        "admin": False,
        "encryption_key": None,
        "name": "Alice",
        "org": "enterprise-a",
        "revoked_height": None,
    }
    assert b"membership/org/enterprise-a" in output.writes
    assert all(key.startswith(b"membership/") for key in output.writes)
    assert not any(b"enterprise-b" in key for key in output.writes)


def test_add_member_with_encryption_key(harness: Harness) -> None:
    args = {**add_member_args(), "encryption_key": b"\x0e" * 32}
    output = harness.run([harness.tx("admin", "add_member", args)])
    assert output.receipts[0].ok
    assert record(output, b"membership/key/" + NEW_KEY)["encryption_key"] == b"\x0e" * 32


def test_added_key_can_sign(harness: Harness) -> None:
    assert lookup_signer(harness.state, NEW_KEY) is None
    harness.apply(harness.run([harness.tx("admin", "add_member", add_member_args())]))
    signer = lookup_signer(harness.state, NEW_KEY)
    assert signer is not None
    assert signer.public_key == NEW_KEY
    assert signer.org == "enterprise-a"
    assert signer.roles == frozenset({"enterprise"})
    assert signer.is_admin is False


def test_added_key_can_sign_later_in_the_same_block(harness: Harness) -> None:
    add = harness.tx("admin", "add_member", add_member_args(ANOTHER_KEY))
    output = harness.run([add])
    view = OverlayState(harness.state, output.writes)
    signer = lookup_signer(view, ANOTHER_KEY)
    assert signer is not None
    assert signer.org == "enterprise-a"


def test_a_key_refused_early_in_a_block_signs_once_added_later_in_it(harness: Harness) -> None:
    """Signers are cached within a block; a membership write must forget them."""
    newcomer = SigningKey.generate()
    harness.nonce += 1
    too_early = harness.consortium.sign(
        newcomer,
        "membership",
        "set_encryption_key",
        {"encryption_key": b"\x03" * 32},
        nonce=harness.nonce,
        timestamp=BLOCK_TIME,
    )
    add = harness.tx("admin", "add_member", add_member_args(newcomer.public_key))
    harness.nonce += 1
    in_time = harness.consortium.sign(
        newcomer,
        "membership",
        "set_encryption_key",
        {"encryption_key": b"\x04" * 32},
        nonce=harness.nonce,
        timestamp=BLOCK_TIME,
    )
    output = harness.run([too_early, add, in_time])
    assert_failed(output.receipts[0], too_early, "tx.unknown_signer")
    assert output.receipts[1].ok and output.receipts[2].ok


def test_adding_an_existing_key_fails_and_writes_nothing(harness: Harness) -> None:
    first = harness.tx("admin", "add_member", add_member_args())
    again = harness.tx("admin", "add_member", add_member_args(name="Alice again"))
    both = harness.run([first, again])
    only_first = harness.run([first])
    assert both.receipts[0].ok
    assert_failed(both.receipts[1], again, "membership.exists")
    assert both.writes == only_first.writes

    harness.apply(only_first)
    later = harness.tx("admin", "add_member", add_member_args())
    output = harness.run([later])
    assert_failed(output.receipts[0], later, "membership.exists")
    assert output.writes == {}
    assert output.state_root == next_state_root(harness.root, {})


def test_adding_another_orgs_genesis_key_fails(harness: Harness) -> None:
    taken = harness.consortium.members["enterprise-b"].public_key
    tx = harness.tx("admin", "add_member", add_member_args(taken))
    output = harness.run([tx])
    assert_failed(output.receipts[0], tx, "membership.exists")
    assert output.writes == {}


def test_member_calling_add_member_is_forbidden(harness: Harness) -> None:
    tx = harness.tx("member", "add_member", add_member_args())
    output = harness.run([tx])
    assert_failed(output.receipts[0], tx, "tx.forbidden")
    assert output.writes == {}


# --- revoke_member --------------------------------------------------------------------------


def test_revoke_by_admin_of_another_org_is_forbidden(harness: Harness) -> None:
    victim = harness.consortium.members["enterprise-b"].public_key
    tx = harness.tx("admin", "revoke_member", {"public_key": victim}, org="enterprise-a")
    output = harness.run([tx])
    assert_failed(output.receipts[0], tx, "membership.forbidden")
    assert output.writes == {}
    assert lookup_signer(harness.state, victim) is not None


def test_revoke_then_revoked_key_signs_in_the_same_block(harness: Harness) -> None:
    member = harness.consortium.members["enterprise-a"].public_key
    revoke = harness.tx("admin", "revoke_member", {"public_key": member})
    late = harness.tx("member", "set_encryption_key", {"encryption_key": b"\x01" * 32})
    early = harness.tx("member", "set_encryption_key", {"encryption_key": b"\x02" * 32})
    output = harness.run([early, revoke, late])
    assert output.receipts[0].ok
    assert output.receipts[1].ok
    assert output.receipts[1].result is None
    assert output.receipts[1].events == (
        ContractEvent("member_revoked", {"org": "enterprise-a", "public_key": member}),
    )
    assert_failed(output.receipts[2], late, "tx.unknown_signer")
    revoked = record(output, b"membership/key/" + member)
    assert revoked["active"] is False
    assert revoked["revoked_height"] == 1
    assert revoked["encryption_key"] == b"\x02" * 32  # the earlier tx's write survives
    harness.apply(output)
    assert lookup_signer(harness.state, member) is None


def test_revoke_unknown_or_own_key(harness: Harness) -> None:
    unknown = harness.tx("admin", "revoke_member", {"public_key": NEW_KEY})
    own_key = harness.consortium.admins["enterprise-a"].public_key
    own = harness.tx("admin", "revoke_member", {"public_key": own_key})
    output = harness.run([unknown, own])
    assert_failed(output.receipts[0], unknown, "membership.not_found")
    assert_failed(output.receipts[1], own, "membership.self_revoke")
    assert output.writes == {}


def test_revoke_twice_is_not_found(harness: Harness) -> None:
    member = harness.consortium.members["enterprise-a"].public_key
    first = harness.tx("admin", "revoke_member", {"public_key": member})
    second = harness.tx("admin", "revoke_member", {"public_key": member})
    output = harness.run([first, second])
    assert output.receipts[0].ok
    assert_failed(output.receipts[1], second, "membership.not_found")


# --- checks before the contract runs ---------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "ok"),
    [
        (-WINDOW - 1, False),
        (-WINDOW, True),
        (0, True),
        (WINDOW, True),
        (WINDOW + 1, False),
        (-10 * WINDOW, False),
        (10 * WINDOW, False),
    ],
)
def test_timestamp_window(harness: Harness, offset: int, ok: bool) -> None:
    tx = harness.tx("admin", "add_member", add_member_args(), timestamp=BLOCK_TIME + offset)
    output = harness.run([tx])
    if ok:
        assert output.receipts[0].ok
    else:
        assert_failed(output.receipts[0], tx, "tx.expired")
        assert output.writes == {}


def test_expiry_is_relative_to_the_block_timestamp(harness: Harness) -> None:
    tx = harness.tx("admin", "add_member", add_member_args(), timestamp=BLOCK_TIME)
    assert harness.run([tx], timestamp=BLOCK_TIME + WINDOW).receipts[0].ok
    late = harness.run([tx], timestamp=BLOCK_TIME + WINDOW + 1)
    assert_failed(late.receipts[0], tx, "tx.expired")


def test_unknown_signer(harness: Harness) -> None:
    stranger = SigningKey.from_seed(b"\x99" * 32)
    tx = harness.consortium.sign(stranger, "membership", "add_member", add_member_args(), nonce=1)
    output = harness.run([tx])
    assert_failed(output.receipts[0], tx, "tx.unknown_signer")


@pytest.mark.parametrize(
    ("contract", "method"),
    [("membership", "delete_everything"), ("nothing", "add_member"), ("membership", "query")],
)
def test_unknown_method(harness: Harness, contract: str, method: str) -> None:
    tx = harness.tx("admin", method, {}, contract=contract)
    output = harness.run([tx])
    assert_failed(output.receipts[0], tx, "tx.unknown_method")
    assert output.writes == {}


@pytest.mark.parametrize(
    "args",
    [
        {"name": "Alice"},
        {"public_key": NEW_KEY},
        {"name": "Alice", "public_key": NEW_KEY[:31]},
        {"name": "Alice", "public_key": NEW_KEY.hex()},
        {"name": "", "public_key": NEW_KEY},
        {"name": "x" * 129, "public_key": NEW_KEY},
        {"name": 5, "public_key": NEW_KEY},
        {"name": "Alice", "public_key": NEW_KEY, "encryption_key": b"\x01"},
        {"name": "Alice", "public_key": NEW_KEY, "role": "admin"},
    ],
)
def test_invalid_args(harness: Harness, args: dict[str, Any]) -> None:
    tx = harness.tx("admin", "add_member", args)
    output = harness.run([tx])
    assert_failed(output.receipts[0], tx, "tx.invalid_args")
    assert output.writes == {}


def test_failed_receipt_encoding(harness: Harness) -> None:
    tx = harness.tx("admin", "add_member", {"name": "Alice", "public_key": b"\x01"})
    output = harness.run([tx])
    receipt = output.receipts[0]
    assert receipt.result == {"argument": "public_key"}  # the refusal's details
    decoded = msgpack.unpackb(output.receipt_bytes[0], raw=False)
    assert decoded == {
        "error": "tx.invalid_args",
        "events": [],
        "ok": False,
        "result": {"argument": "public_key"},
        "tx_id": tx.tx_id,
    }


def test_contract_bug_is_a_failed_receipt_not_a_crash(harness: Harness) -> None:
    def broken(context: Any, state: Any, args: dict[str, Any]) -> CallOutcome:
        state.put(b"half", b"written")
        raise KeyError("bug")

    contract = Contract(
        name="broken",
        methods={"run": Method("run", broken, {"x": Arg(text(5))})},
        query=lambda view, path, reader: None,
    )
    harness.registry = ContractRegistry([contract])
    tx = harness.tx("member", "run", {"x": "a"}, contract="broken")
    output = harness.run([tx])
    assert_failed(output.receipts[0], tx, "contract.internal_error")
    assert output.writes == {}


# --- roots and determinism ----------------------------------------------------------------------


def mixed_block(harness: Harness) -> list[Transaction]:
    return [
        harness.tx("admin", "add_member", add_member_args()),
        harness.tx("member", "add_member", add_member_args(ANOTHER_KEY)),
        harness.tx("admin", "add_member", add_member_args(ANOTHER_KEY), org="enterprise-b"),
        harness.tx("admin", "nope", {}),
        harness.tx("member", "set_encryption_key", {"encryption_key": b"\x03" * 32}, org="notary"),
    ]


def test_roots_are_merkle_roots_of_tx_ids_and_receipt_bytes(harness: Harness) -> None:
    txs = mixed_block(harness)
    output = harness.run(txs)
    assert [r.ok for r in output.receipts] == [True, False, True, False, True]
    assert [r.error for r in output.receipts] == [
        None,
        "tx.forbidden",
        None,
        "tx.unknown_method",
        None,
    ]
    assert [r.tx_id for r in output.receipts] == [tx.tx_id for tx in txs]
    assert output.receipt_bytes == tuple(r.encode() for r in output.receipts)
    assert output.tx_root == merkle_root([tx.tx_id for tx in txs])
    assert output.receipts_root == merkle_root(list(output.receipt_bytes))
    assert output.tx_root != output.receipts_root


def test_empty_block(harness: Harness) -> None:
    output = harness.run([])
    assert output.receipts == ()
    assert output.writes == {}
    assert output.tx_root == output.receipts_root == merkle_root([])
    assert output.state_root == next_state_root(harness.root, {})


def test_execution_is_deterministic(harness: Harness) -> None:
    txs = mixed_block(harness)
    before = dict(harness.state)
    first = harness.run(txs)
    second = harness.run(txs)
    third = Harness(harness.consortium).run(txs)
    assert first == second == third
    assert first.receipt_bytes == second.receipt_bytes
    assert first.state_root == third.state_root
    assert harness.state == before  # the parent state is never written


def test_state_root_chains_from_the_parent_root(harness: Harness) -> None:
    genesis_root = harness.root
    first = harness.run([harness.tx("admin", "add_member", add_member_args())])
    assert first.state_root == next_state_root(genesis_root, first.writes)
    assert first.write_set == encode_write_set(first.writes)  # stored as hashed
    harness.apply(first)
    member = harness.consortium.members["enterprise-a"].public_key
    second = harness.run([harness.tx("admin", "revoke_member", {"public_key": member})])
    assert second.state_root == next_state_root(first.state_root, second.writes)
    # The same block on another parent root gives another root.
    elsewhere = execute_block(harness.registry, harness.state, b"\x00" * 32, harness.context(), [])
    assert elsewhere.state_root != harness.run([]).state_root


def test_arguments_flagged_as_checked_are_checked_again_under_another_registry(
    harness: Harness,
) -> None:
    """`args_checked` vouches only for the built-in registry's checks: execution under any
    other registry (a different object, even with the same contracts) checks again."""
    bad = replace(harness.tx("admin", "add_member", {"name": "Alice"}), args_checked=True)
    harness.registry = ContractRegistry(
        [harness.registry.contract(name) for name in harness.registry.names()]
    )
    output = harness.run([bad])
    assert_failed(output.receipts[0], bad, "tx.invalid_args")

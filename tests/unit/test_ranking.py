"""The `ranking` contract (CONTRACTS.md, ranking) through the real execution path."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import ranking, rfc6962
from contracts.runtime import ContractError, QueryNotFound
from node import merkle, ranking_cli
from node.cli import UsageError

if TYPE_CHECKING:
    from tests.contract_harness import ContractHarness
from tests.contract_harness import ContractHarness
from tests.unit.conftest import Consortium

START = 1_000_000
END = 2_000_000


def digest(n: int) -> bytes:
    return hashlib.sha256(f"salt:order-{n}".encode()).digest()


class Harness(ContractHarness):
    """Ranking calls in blocks on the genesis state (tests/contract_harness.py)."""

    def __init__(self, consortium: Consortium) -> None:
        super().__init__(consortium, ranking)

    def ok(self, method: str, args: dict[str, Any], org: str = "enterprise-a") -> Any:
        receipt = self.call(method, args, org)
        assert receipt.ok, (receipt.error, receipt.result)
        return receipt.result

    def refused(self, method: str, args: dict[str, Any], org: str = "enterprise-a") -> str:
        receipt = self.call(method, args, org)
        assert not receipt.ok
        return receipt.error

    def create(self, campaign_id: str = "c1", winners: int = 3, **window: int) -> None:
        self.ok(
            "create",
            {
                "campaign_id": campaign_id,
                "title": "first buyers",
                "winners": winners,
                "window_start_ms": window.get("start", START),
                "window_end_ms": window.get("end", END),
            },
        )

    def close_fully(self, campaign_id: str = "c1") -> tuple[dict[str, Any], int]:
        calls = 0
        while True:
            result = self.ok("close", {"campaign_id": campaign_id})
            calls += 1
            if result["status"] == ranking.STATUS_CLOSED:
                return result, calls
            assert result["status"] == ranking.STATUS_CLOSING


@pytest.fixture
def harness(consortium: Consortium) -> Harness:
    return Harness(consortium)


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 4 orders and close steps of 8, so small lists cross every boundary."""
    monkeypatch.setattr(ranking, "PAGE_ORDERS", 4)
    monkeypatch.setattr(ranking, "CLOSE_STEP_ORDERS_MAX", 8)


def model_ranking(orders: list[tuple[bytes, int]], start: int, end: int) -> list[bytes]:
    """The spec, as plainly as possible: in-window orders by (paid_at_ms, digest bytes)."""
    in_window = [(paid_at, order) for order, paid_at in orders if start <= paid_at < end]
    return [order for _, order in sorted(in_window)]


def check_order(harness: Harness, order: bytes, ranked: list[bytes], winners: int) -> None:
    answer = harness.query(f"campaigns/c1/orders/{order.hex()}")
    index = ranked.index(order)
    assert answer["rank"] == index + 1
    assert answer["won"] == (index < winners)
    proof = merkle.InclusionProof(
        index=answer["proof"]["index"],
        size=answer["proof"]["size"],
        path=tuple(bytes.fromhex(node) for node in answer["proof"]["path"]),
    )
    root = bytes.fromhex(answer["ranking_root"])
    assert root == merkle.merkle_root(ranked)
    assert merkle.verify_inclusion(order, proof, root)
    assert [bytes.fromhex(node) for node in answer["proof"]["path"]] == merkle.audit_path(
        ranked, index
    )


# --- the tree helper -----------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=70), st.data())
def test_tree_helper_agrees_with_node_merkle(size: int, data: st.DataObject) -> None:
    leaves = [digest(n) for n in range(size)]
    hashes = [rfc6962.leaf_hash(leaf) for leaf in leaves]
    assert rfc6962.root_of_leaf_hashes(hashes) == merkle.merkle_root(leaves)
    if size:
        index = data.draw(st.integers(min_value=0, max_value=size - 1))
        assert rfc6962.path_of_leaf_hashes(hashes, index) == merkle.audit_path(leaves, index)


# --- create --------------------------------------------------------------------------------


def test_create_opens_a_campaign_for_the_signers_org(harness: Harness) -> None:
    harness.create()
    campaign = harness.query("campaigns/c1")
    assert campaign["status"] == "open"
    assert campaign["merchant_org"] == "enterprise-a"
    assert campaign["order_count"] == 0
    assert campaign["ranking_root"] is None


def test_create_needs_the_enterprise_role(harness: Harness) -> None:
    args = {
        "campaign_id": "c1",
        "title": "t",
        "winners": 1,
        "window_start_ms": START,
        "window_end_ms": END,
    }
    assert harness.refused("create", args, org="notary") == "tx.forbidden"


def test_create_refuses_an_existing_id_and_an_empty_window(harness: Harness) -> None:
    harness.create()
    args = {"campaign_id": "c1", "title": "t", "winners": 1}
    window = {"window_start_ms": START, "window_end_ms": END}
    assert harness.refused("create", {**args, **window}, org="enterprise-b") == "ranking.exists"
    empty = {**args, "campaign_id": "c2", "window_start_ms": END, "window_end_ms": END}
    assert harness.refused("create", empty) == "tx.invalid_args"


# --- add_orders ----------------------------------------------------------------------------


def test_only_the_merchant_adds_and_closes(harness: Harness) -> None:
    harness.create()
    orders = {"campaign_id": "c1", "orders": [[digest(1), START]]}
    assert harness.refused("add_orders", orders, org="enterprise-b") == "ranking.not_merchant"
    assert harness.refused("add_orders", orders, org="notary") == "ranking.not_merchant"
    assert harness.refused("close", {"campaign_id": "c1"}, org="enterprise-b") == (
        "ranking.not_merchant"
    )
    missing = {"campaign_id": "nope", "orders": [[digest(1), START]]}
    assert harness.refused("add_orders", missing) == "ranking.not_found"


def test_a_duplicate_within_one_call_refuses_the_whole_call(harness: Harness) -> None:
    harness.create()
    orders = [[digest(1), START], [digest(2), START], [digest(1), START + 5]]
    assert harness.refused("add_orders", {"campaign_id": "c1", "orders": orders}) == (
        "ranking.duplicate_order"
    )
    assert harness.query("campaigns/c1")["order_count"] == 0
    with pytest.raises(QueryNotFound):
        harness.query(f"campaigns/c1/orders/{digest(2).hex()}")


def test_a_duplicate_across_calls_refuses_the_whole_later_call(harness: Harness) -> None:
    harness.create()
    harness.ok("add_orders", {"campaign_id": "c1", "orders": [[digest(1), START]]})
    later = [[digest(2), START], [digest(1), START + 7]]  # same digest, other time
    receipt = harness.call("add_orders", {"campaign_id": "c1", "orders": later})
    assert receipt.error == "ranking.duplicate_order"
    assert harness.query("campaigns/c1")["order_count"] == 1


def test_orders_must_be_well_formed_and_at_most_ten_thousand(harness: Harness) -> None:
    harness.create()
    for bad in ([], [[b"short", START]], [[digest(1), -1]], [[digest(1)]], [[digest(1), "1"]]):
        assert harness.refused("add_orders", {"campaign_id": "c1", "orders": bad}) == (
            "tx.invalid_args"
        )
    too_many = [[digest(n), START] for n in range(ranking.ORDERS_PER_CALL_MAX + 1)]
    assert harness.refused("add_orders", {"campaign_id": "c1", "orders": too_many}) == (
        "tx.invalid_args"
    )


def test_no_orders_after_the_first_close(harness: Harness) -> None:
    harness.create()
    harness.ok("add_orders", {"campaign_id": "c1", "orders": [[digest(1), START]]})
    harness.close_fully()
    late = {"campaign_id": "c1", "orders": [[digest(2), START]]}
    assert harness.refused("add_orders", late) == "ranking.closed"
    assert harness.refused("close", {"campaign_id": "c1"}) == "ranking.closed"


@pytest.mark.usefixtures("small_pages")
def test_no_orders_while_closing(harness: Harness) -> None:
    harness.create()
    orders = [[digest(n), START + n] for n in range(20)]
    harness.ok("add_orders", {"campaign_id": "c1", "orders": orders})
    assert harness.ok("close", {"campaign_id": "c1"})["status"] == "closing"
    late = {"campaign_id": "c1", "orders": [[digest(99), START]]}
    assert harness.refused("add_orders", late) == "ranking.closed"


# --- close and the rank query --------------------------------------------------------------


def test_window_start_is_inclusive_and_end_exclusive(harness: Harness) -> None:
    harness.create(winners=10)
    orders = [
        [digest(1), START - 1],
        [digest(2), START],
        [digest(3), END - 1],
        [digest(4), END],
    ]
    result = harness.ok("add_orders", {"campaign_id": "c1", "orders": orders})
    assert result["in_window"] == 2
    closed, _ = harness.close_fully()
    assert closed["ranked_count"] == 2
    for outside in (digest(1), digest(4)):
        answer = harness.query(f"campaigns/c1/orders/{outside.hex()}")
        assert answer["in_window"] is False
        assert answer["rank"] is None
        assert answer["won"] is False
    check_order(harness, digest(2), [digest(2), digest(3)], 10)
    check_order(harness, digest(3), [digest(2), digest(3)], 10)


def test_ties_rank_by_digest_bytes(harness: Harness) -> None:
    harness.create(winners=2)
    tied = [digest(n) for n in range(6)]
    harness.ok("add_orders", {"campaign_id": "c1", "orders": [[d, START + 5] for d in tied]})
    harness.ok("add_orders", {"campaign_id": "c1", "orders": [[digest(9), START + 4]]})
    harness.close_fully()
    ranked = [digest(9), *sorted(tied)]
    for order in ranked:
        check_order(harness, order, ranked, 2)


def test_more_winners_than_orders_all_win(harness: Harness) -> None:
    harness.create(winners=100)
    orders = [[digest(n), START + n] for n in range(5)]
    harness.ok("add_orders", {"campaign_id": "c1", "orders": orders})
    result, _ = harness.close_fully()
    ranked = [digest(n) for n in range(5)]
    assert result["ranking_root"] == merkle.merkle_root(ranked)
    for order in ranked:
        assert harness.query(f"campaigns/c1/orders/{order.hex()}")["won"] is True


def test_an_empty_window_closes_in_one_call_with_the_empty_root(harness: Harness) -> None:
    harness.create()
    harness.ok("add_orders", {"campaign_id": "c1", "orders": [[digest(1), END + 1]]})
    result, calls = harness.close_fully()
    assert calls == 1
    assert result["ranking_root"] == merkle.EMPTY_TREE_HASH


def test_rank_is_unknown_before_close(harness: Harness) -> None:
    harness.create()
    harness.ok("add_orders", {"campaign_id": "c1", "orders": [[digest(1), START]]})
    answer = harness.query(f"campaigns/c1/orders/{digest(1).hex()}")
    assert answer["status"] == "open"
    assert answer["rank"] is None
    assert answer["proof"] is None


def test_queries_refuse_malformed_and_unknown_paths(harness: Harness) -> None:
    harness.create()
    with pytest.raises(ContractError) as malformed:
        harness.query("campaigns/c1/orders/xyz")
    assert malformed.value.code == "query.invalid_args"
    with pytest.raises(QueryNotFound):
        harness.query("campaigns/none")
    with pytest.raises(QueryNotFound):
        harness.query(f"campaigns/c1/orders/{digest(5).hex()}")
    with pytest.raises(QueryNotFound):
        harness.query("campaigns")


@pytest.mark.usefixtures("small_pages")
def test_close_runs_in_steps_until_every_order_is_ranked(harness: Harness) -> None:
    harness.create(winners=7)
    orders = [(digest(n), START + (n * 7919) % 50) for n in range(45)]
    for start in range(0, 45, 10):
        chunk = [list(order) for order in orders[start : start + 10]]
        harness.ok("add_orders", {"campaign_id": "c1", "orders": chunk})
    result, calls = harness.close_fully()
    assert calls == 6  # 45 orders, 8 per step
    ranked = model_ranking(orders, START, END)
    assert result["ranking_root"] == merkle.merkle_root(ranked)
    for order in ranked:
        check_order(harness, order, ranked, 7)


order_lists = st.lists(
    st.tuples(st.integers(min_value=0, max_value=60), st.integers(START - 3, START + 12)),
    min_size=0,
    max_size=40,
    unique_by=lambda pair: pair[0],
)


@pytest.mark.usefixtures("small_pages")
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(orders=order_lists, winners=st.integers(1, 50), chunk=st.integers(1, 11))
def test_ranks_and_paths_match_a_sort_model(
    consortium: Consortium, orders: list[tuple[int, int]], winners: int, chunk: int
) -> None:
    harness = Harness(consortium)
    end = START + 10
    harness.create(winners=winners, end=end)
    pairs = [(digest(n), paid_at) for n, paid_at in orders]
    for start in range(0, len(pairs), chunk):
        batch = [list(pair) for pair in pairs[start : start + chunk]]
        harness.ok("add_orders", {"campaign_id": "c1", "orders": batch})
    result, _ = harness.close_fully()
    ranked = model_ranking(pairs, START, end)
    assert result["ranking_root"] == merkle.merkle_root(ranked)
    for order, paid_at in pairs:
        if START <= paid_at < end:
            check_order(harness, order, ranked, winners)
        else:
            assert harness.query(f"campaigns/c1/orders/{order.hex()}")["rank"] is None


@pytest.mark.slow
def test_close_cost_for_one_hundred_thousand_orders(harness: Harness) -> None:
    """Measures (and prints) what closing 100,000 orders costs at the contract level."""
    total = 100_000
    harness.create(winners=100, end=START + 10_000)
    for start in range(0, total, ranking.ORDERS_PER_CALL_MAX):
        batch = [[digest(n), START + (n * 7919) % 10_000] for n in range(start, start + 10_000)]
        harness.ok("add_orders", {"campaign_id": "c1", "orders": batch})
    began = time.perf_counter()
    result, calls = harness.close_fully()
    elapsed = time.perf_counter() - began
    print(f"closed {total} orders in {calls} close calls, {elapsed:.2f} s")
    assert result["ranked_count"] == total
    assert calls == -(-total // ranking.CLOSE_STEP_ORDERS_MAX)
    order = digest(4242)
    answer = harness.query(f"campaigns/c1/orders/{order.hex()}")
    proof = merkle.InclusionProof(
        answer["proof"]["index"],
        answer["proof"]["size"],
        tuple(bytes.fromhex(node) for node in answer["proof"]["path"]),
    )
    assert merkle.verify_inclusion(order, proof, result["ranking_root"])


# --- the CLI's local helpers ---------------------------------------------------------------


def test_payment_times_are_milliseconds_or_iso_with_an_offset() -> None:
    assert ranking_cli.parse_time_ms("1700000000123") == 1_700_000_000_123
    assert ranking_cli.parse_time_ms("2023-11-14T22:13:20.123Z") == 1_700_000_000_123
    assert ranking_cli.parse_time_ms("2023-11-15T06:13:20.1239+08:00") == 1_700_000_000_123
    for bad in ("2023-11-14T22:13:20", "yesterday", "-5", "1969-12-31T23:59:59Z"):
        with pytest.raises(ValueError):
            ranking_cli.parse_time_ms(bad)


def test_import_streams_rows_skips_a_header_and_resumes(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("order,paid\nA-1,5\n\nA-2,2023-11-14T22:13:20Z\nA-3,7\n")
    rows = list(ranking_cli.read_orders(path))
    assert rows == [("A-1", 5), ("A-2", 1_700_000_000_000), ("A-3", 7)]
    salt = b"s"
    resumed = list(ranking_cli.chunks(iter(rows), salt, skip=1, size=1))
    assert resumed == [
        [[hashlib.sha256(b"sA-2").digest(), 1_700_000_000_000]],
        [[hashlib.sha256(b"sA-3").digest(), 7]],
    ]
    path.write_text("A-1,5\nA-2,later\n")
    with pytest.raises(UsageError):
        list(ranking_cli.read_orders(path))


def test_check_refuses_a_path_to_another_root() -> None:
    ranked = [digest(n) for n in range(5)]
    root = merkle.merkle_root(ranked).hex()
    answer = {
        "proof": merkle.inclusion_proof(ranked, 2).to_json(),
        "ranking_root": root,
    }
    assert ranking_cli.verify_order_answer(ranked[2], answer, root)
    assert not ranking_cli.verify_order_answer(ranked[3], answer, root)
    assert not ranking_cli.verify_order_answer(ranked[2], answer, "00" * 32)

"""The `evidence` contract (CONTRACTS.md, evidence) through the real execution path."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import msgpack
import pytest

from contracts import evidence
from contracts.runtime import ContractError, QueryNotFound, Reader, ReadView, encode_record
from node.block import ContractEvent, Receipt
from node.execution import BlockOutput
from node.transaction import Transaction

if TYPE_CHECKING:
    from tests.contract_harness import BLOCK_INTERVAL_MS, ContractHarness
from tests.contract_harness import BLOCK_INTERVAL_MS, ContractHarness
from tests.unit.conftest import GENESIS_TIME_MS, Chain, Consortium

GENESIS_TIME = GENESIS_TIME_MS
BLOCK_INTERVAL = BLOCK_INTERVAL_MS
DOC = hashlib.sha256(b"contract.pdf").digest()
ROOT = hashlib.sha256(b"a batch root").digest()


def digest(n: int) -> bytes:
    return hashlib.sha256(f"document {n}".encode()).digest()


class Harness(ContractHarness):
    """Evidence calls in blocks on the genesis state (tests/contract_harness.py)."""

    def __init__(self, consortium: Consortium) -> None:
        super().__init__(consortium, evidence)


@pytest.fixture
def harness(consortium: Consortium) -> Harness:
    return Harness(consortium)


def anchor_args(hash_value: bytes = DOC, **extra: Any) -> dict[str, Any]:
    return {"hash": hash_value, "kind": "contract", **extra}


def batch_args(root: bytes = ROOT, count: int = 3, **extra: Any) -> dict[str, Any]:
    return {"root": root, "count": count, "kind": "invoices", **extra}


def assert_failed(receipt: Receipt, code: str) -> None:
    assert receipt.ok is False
    assert receipt.error == code
    assert receipt.events == ()


def position(n: int) -> bytes:
    return n.to_bytes(8, "big")


def decoded(output: BlockOutput, key: bytes) -> Any:
    value = output.writes[b"evidence/" + key]
    assert value is not None
    return msgpack.unpackb(value, raw=False)


# --- anchor ---------------------------------------------------------------------------------


def test_anchor_records_who_when_and_where(harness: Harness) -> None:
    tx = harness.tx("anchor", anchor_args(meta={"pages": 3}, subject="SKU-1"))
    output = harness.commit([tx])
    (receipt,) = output.receipts
    signer = harness.consortium.members["enterprise-a"].public_key
    assert receipt.ok, receipt
    assert receipt.result == {
        "hash": DOC,
        "kind": "contract",
        "org": "enterprise-a",
        "subject": "SKU-1",
    }
    assert receipt.events == (
        ContractEvent(
            "anchored",
            {
                "hash": DOC,
                "kind": "contract",
                "org": "enterprise-a",
                "signer": signer,
                "subject": "SKU-1",
            },
        ),
    )
    record = {
        "hash": DOC,
        "height": 1,
        "kind": "contract",
        "meta": {"pages": 3},
        "method": "anchor",
        "org": "enterprise-a",
        "signer": signer,
        "subject": "SKU-1",
        "timestamp": GENESIS_TIME + BLOCK_INTERVAL,
        "tx_id": tx.tx_id,
    }
    assert decoded(output, b"anchor/" + DOC + b"/" + position(0)) == record
    assert decoded(output, b"anchor/" + DOC) == {"anchor_count": 1}
    assert output.writes[b"evidence/org_anchor/" + DOC + b"/enterprise-a"] == position(0)
    assert decoded(output, b"subject/SKU-1") == {"anchor_count": 1}
    assert decoded(output, b"subject/SKU-1/" + position(0)) == {"hash": DOC, "position": 0}
    assert len(output.writes) == 5


def test_anchor_without_subject_or_meta_writes_three_records(harness: Harness) -> None:
    output = harness.commit([harness.tx("anchor", anchor_args())])
    assert output.receipts[0].ok
    assert output.receipts[0].result["subject"] is None
    assert sorted(output.writes) == sorted(
        [
            b"evidence/anchor/" + DOC,
            b"evidence/anchor/" + DOC + b"/" + position(0),
            b"evidence/org_anchor/" + DOC + b"/enterprise-a",
        ]
    )
    record = decoded(output, b"anchor/" + DOC + b"/" + position(0))
    assert (record["meta"], record["subject"]) == (None, None)
    assert "count" not in record


def test_every_org_member_may_anchor(harness: Harness) -> None:
    txs = [harness.tx("anchor", anchor_args(), org=org) for org in harness.consortium.members]
    output = harness.commit(txs)
    assert [receipt.ok for receipt in output.receipts] == [True] * 4


# --- duplicates -----------------------------------------------------------------------------


def test_same_org_anchoring_again_is_refused_and_writes_nothing(harness: Harness) -> None:
    first = harness.tx("anchor", anchor_args())
    harness.commit([first])
    # Another key of the same organisation: the rule is per organisation, not per key.
    harness.nonce += 1
    again = harness.consortium.sign(
        harness.consortium.admins["enterprise-a"],
        "evidence",
        "anchor",
        anchor_args(kind="photo"),
        nonce=harness.nonce,
        timestamp=harness.block_time,
    )
    output = harness.run([again])
    assert_failed(output.receipts[0], "evidence.duplicate")
    assert output.receipts[0].result == {
        "hash": DOC,
        "org": "enterprise-a",
        "height": 1,
        "tx_id": first.tx_id,
    }
    assert output.writes == {}


def test_duplicate_within_one_block(harness: Harness) -> None:
    first = harness.tx("anchor", anchor_args(subject="S"))
    second = harness.tx("anchor", anchor_args(subject="S"))
    output = harness.commit([first, second])
    assert output.receipts[0].ok
    assert_failed(output.receipts[1], "evidence.duplicate")
    assert harness.query("subjects/S")["total"] == 1


def test_another_org_may_anchor_the_same_hash(harness: Harness) -> None:
    harness.commit([harness.tx("anchor", anchor_args(), org="enterprise-a")])
    output = harness.commit([harness.tx("anchor", anchor_args(), org="notary")])
    assert output.receipts[0].ok
    answer = harness.query(f"anchors/{DOC.hex()}")
    assert answer["hash"] == DOC.hex()
    assert [(a["org"], a["height"]) for a in answer["anchors"]] == [
        ("enterprise-a", 1),
        ("notary", 2),
    ]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (("anchor", anchor_args(ROOT)), ("anchor_batch", batch_args(ROOT))),
        (("anchor_batch", batch_args(ROOT)), ("anchor", anchor_args(ROOT))),
        (("anchor_batch", batch_args(ROOT)), ("anchor_batch", batch_args(ROOT, count=9))),
    ],
)
def test_hashes_and_batch_roots_share_one_index(
    harness: Harness, first: tuple[str, dict[str, Any]], second: tuple[str, dict[str, Any]]
) -> None:
    harness.commit([harness.tx(*first)])
    output = harness.run([harness.tx(*second)])
    assert_failed(output.receipts[0], "evidence.duplicate")
    assert harness.run([harness.tx(*second, org="enterprise-b")]).receipts[0].ok


# --- anchor_batch ---------------------------------------------------------------------------


def test_anchor_batch(harness: Harness) -> None:
    tx = harness.tx("anchor_batch", batch_args(count=2**40, meta={"source": "erp"}))
    output = harness.commit([tx])
    (receipt,) = output.receipts
    signer = harness.consortium.members["enterprise-a"].public_key
    assert receipt.ok, receipt
    result = {"count": 2**40, "kind": "invoices", "org": "enterprise-a", "root": ROOT}
    assert receipt.result == result
    assert receipt.events == (ContractEvent("batch_anchored", {**result, "signer": signer}),)
    (entry,) = harness.query(f"anchors/{ROOT.hex()}")["anchors"]
    assert entry == {
        "hash": ROOT.hex(),
        "org": "enterprise-a",
        "signer": signer.hex(),
        "height": 1,
        "timestamp": GENESIS_TIME + BLOCK_INTERVAL,
        "tx_id": tx.tx_id.hex(),
        "kind": "invoices",
        "subject": None,
        "meta": {"source": "erp"},
        "method": "anchor_batch",
        "count": 2**40,
    }


# --- arguments ------------------------------------------------------------------------------


def meta_of_size(size: int) -> dict[str, Any]:
    """A map whose canonical msgpack is exactly `size` bytes (str payloads of 256+ chars)."""
    meta = {"x": "a" * (size - 6)}
    assert len(encode_record(meta)) == size
    return meta


def test_meta_at_the_limit_is_accepted_and_one_byte_over_refused(harness: Harness) -> None:
    limit = evidence.META_BYTES_MAX
    assert limit == 4096
    at_limit = harness.tx("anchor", anchor_args(meta=meta_of_size(limit)))
    over = harness.tx("anchor", anchor_args(digest(1), meta=meta_of_size(limit + 1)))
    batch_over = harness.tx("anchor_batch", batch_args(meta=meta_of_size(limit + 1)))
    output = harness.run([at_limit, over, batch_over])
    assert output.receipts[0].ok
    assert_failed(output.receipts[1], "tx.invalid_args")
    assert output.receipts[1].result == {"argument": "meta"}
    assert_failed(output.receipts[2], "tx.invalid_args")


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        ({"kind": "contract"}, "hash"),
        (anchor_args(DOC[:31]), "hash"),
        (anchor_args(DOC + b"\x00"), "hash"),
        (anchor_args(DOC.hex()), "hash"),
        (anchor_args(kind=""), "kind"),
        (anchor_args(kind="k" * 65), "kind"),
        (anchor_args(kind="has space"), "kind"),
        (anchor_args(kind="a/b"), "kind"),
        (anchor_args(kind=7), "kind"),
        ({"hash": DOC}, "kind"),
        (anchor_args(subject=""), "subject"),
        (anchor_args(subject="s" * 65), "subject"),
        (anchor_args(subject="SKU/1"), "subject"),
        (anchor_args(subject=None), "subject"),
        (anchor_args(meta=["not", "a", "map"]), "meta"),
        (anchor_args(meta="text"), "meta"),
    ],
)
def test_invalid_anchor_args(harness: Harness, args: dict[str, Any], argument: str) -> None:
    output = harness.run([harness.tx("anchor", args)])
    assert_failed(output.receipts[0], "tx.invalid_args")
    assert output.receipts[0].result == {"argument": argument}
    assert output.writes == {}


@pytest.mark.parametrize(
    "args",
    [
        batch_args(count=0),
        batch_args(count=2**40 + 1),
        batch_args(count=-1),
        batch_args(count=True),
        batch_args(count="3"),
        batch_args(ROOT[:16]),
        batch_args(kind="no spaces allowed"),
        batch_args(subject="S"),  # batches have no subject
        {"root": ROOT, "kind": "invoices"},
        anchor_args(),  # `hash` is not an anchor_batch argument
    ],
)
def test_invalid_anchor_batch_args(harness: Harness, args: dict[str, Any]) -> None:
    output = harness.run([harness.tx("anchor_batch", args)])
    assert_failed(output.receipts[0], "tx.invalid_args")
    assert output.writes == {}


# --- subject timelines ----------------------------------------------------------------------


def test_subject_timeline_is_oldest_first_across_blocks_and_orgs(harness: Harness) -> None:
    harness.commit([harness.tx("anchor", anchor_args(digest(0), subject="SKU-9"))])
    harness.commit(
        [
            harness.tx("anchor", anchor_args(digest(1), subject="SKU-9"), org="notary"),
            harness.tx("anchor", anchor_args(digest(2), subject="other")),
            harness.tx("anchor", anchor_args(digest(0), subject="SKU-9"), org="taxoffice"),
        ]
    )
    answer = harness.query("subjects/SKU-9")
    assert (answer["subject"], answer["total"], answer["next"]) == ("SKU-9", 3, None)
    assert [(a["hash"], a["org"], a["height"]) for a in answer["anchors"]] == [
        (digest(0).hex(), "enterprise-a", 1),
        (digest(1).hex(), "notary", 2),
        (digest(0).hex(), "taxoffice", 2),
    ]
    assert all(a["subject"] == "SKU-9" for a in answer["anchors"])
    assert harness.query("subjects/other")["total"] == 1


def test_subject_timeline_pages(harness: Harness) -> None:
    page_max = evidence.SUBJECT_PAGE_ANCHORS_MAX
    total = page_max + 5
    txs = [harness.tx("anchor", anchor_args(digest(n), subject="lot")) for n in range(total)]
    output = harness.commit(txs)
    assert all(receipt.ok for receipt in output.receipts)
    first = harness.query("subjects/lot")
    assert (first["total"], first["next"], len(first["anchors"])) == (total, page_max, page_max)
    assert [a["hash"] for a in first["anchors"][:2]] == [digest(0).hex(), digest(1).hex()]
    rest = harness.query(f"subjects/lot/from/{first['next']}")
    assert rest["next"] is None
    assert [a["hash"] for a in rest["anchors"]] == [digest(n).hex() for n in range(page_max, total)]
    shifted = harness.query("subjects/lot/from/3")
    assert shifted["next"] == page_max + 3
    assert shifted["anchors"][0]["hash"] == digest(3).hex()
    past_end = harness.query(f"subjects/lot/from/{total}")
    assert (past_end["anchors"], past_end["next"]) == ([], None)


# --- queries --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        f"anchors/{DOC.hex()}",
        "subjects/nobody",
        "subjects/nobody/from/0",
        "anchors",
        f"anchors/{ROOT.hex()}/extra",
        "subjects/lot/to/3",
        "nothing",
        "",
    ],
)
def test_queries_for_nothing_are_not_found(harness: Harness, path: str) -> None:
    harness.commit([harness.tx("anchor", anchor_args(ROOT, subject="lot"))])
    with pytest.raises(QueryNotFound):
        harness.query(path)


@pytest.mark.parametrize(
    ("path", "argument"),
    [
        ("anchors/", "hash"),
        ("anchors/xyz", "hash"),
        (f"anchors/{DOC.hex()[:-1]}", "hash"),
        (f"anchors/{DOC.hex()}00", "hash"),
        (f"anchors/{'zz' * 32}", "hash"),
        ("subjects/" + "s" * 65, "subject"),
        ("subjects/a b", "subject"),
        ("subjects/", "subject"),
        ("subjects/lot/from/-1", "from"),
        ("subjects/lot/from/one", "from"),
        ("subjects/lot/from/", "from"),
    ],
)
def test_malformed_queries_are_refused(harness: Harness, path: str, argument: str) -> None:
    with pytest.raises(ContractError) as raised:
        harness.query(path)
    assert not isinstance(raised.value, QueryNotFound)
    assert raised.value.code == "query.invalid_args"
    assert raised.value.details == {"argument": argument}


def test_hash_query_accepts_uppercase_hex(harness: Harness) -> None:
    harness.commit([harness.tx("anchor", anchor_args())])
    assert harness.query(f"anchors/{DOC.hex().upper()}")["hash"] == DOC.hex()


def test_find_anchor_earliest_or_by_org(harness: Harness) -> None:
    harness.commit([harness.tx("anchor", anchor_args(), org="notary")])
    harness.commit([harness.tx("anchor", anchor_args(), org="enterprise-b")])
    view = harness.view()
    earliest = evidence.find_anchor(view, DOC)
    assert earliest is not None
    assert (earliest.org, earliest.height) == ("notary", 1)
    by_org = evidence.find_anchor(view, DOC, "enterprise-b")
    assert by_org is not None
    assert (by_org.org, by_org.height) == ("enterprise-b", 2)
    assert evidence.find_anchor(view, DOC, "taxoffice") is None
    assert evidence.find_anchor(view, ROOT) is None


# --- determinism and the ledger ------------------------------------------------------------


def mixed_block(harness: Harness) -> list[Transaction]:
    return [
        harness.tx("anchor", anchor_args(subject="S", meta={"b": b"\x01", "a": [1, "x"]})),
        harness.tx("anchor", anchor_args()),
        harness.tx("anchor_batch", batch_args(), org="notary"),
        harness.tx("anchor", anchor_args(digest(5), subject="S"), org="taxoffice"),
        harness.tx("anchor_batch", batch_args(count=0)),
    ]


def test_execution_is_deterministic(harness: Harness) -> None:
    txs = mixed_block(harness)
    first = harness.run(txs)
    second = harness.run(txs)
    fresh = Harness(harness.consortium).run(txs)
    assert [r.ok for r in first.receipts] == [True, False, True, True, False]
    assert first.writes == second.writes == fresh.writes
    assert first.receipt_bytes == second.receipt_bytes == fresh.receipt_bytes
    assert first.state_root == fresh.state_root
    assert all(key.startswith(b"evidence/") for key in first.writes)


def test_anchor_through_the_ledger_and_leveldb(chain: Chain) -> None:
    consortium = chain.consortium
    key = consortium.members["taxoffice"]
    args = anchor_args(subject="audit-2026", meta={"file": "ledger.csv"})
    tx = consortium.sign(key, "evidence", "anchor", args, timestamp=chain.next_timestamp())
    block = chain.commit([tx])
    chain.reopen()
    record = chain.store.get_tx(tx.tx_id)
    assert record is not None
    assert Receipt.decode(record.receipt).ok
    view = ReadView(evidence.NAME, chain.store)
    answer = evidence.query(view, ["subjects", "audit-2026"], Reader())
    (entry,) = answer["anchors"]
    assert entry["tx_id"] == tx.tx_id.hex()
    assert entry["height"] == block.height
    assert entry["timestamp"] == block.header.timestamp
    assert entry["signer"] == key.public_key.hex()

"""The benchmark's parts that can be wrong without being slow: workloads and probes.

(How fast things are is what the benchmark prints, not what tests assert.)
"""

from __future__ import annotations

import pytest

from node.bench_probe import CommitLog, NodeSamples, _record_block, parse_metrics
from node.bench_workload import WorkloadError, presign
from node.crypto import DOMAIN_TX, SigningKey, verify
from node.transaction import decode_envelope

EXPOSITION = """# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
process_resident_memory_bytes 1.048576e+08
chancery_view_changes_total 3.0
chancery_block_height 42.0
chancery_rejected_txs_total{code="tx.duplicate"} 7.0
"""


def test_metrics_are_read_from_the_exposition() -> None:
    assert parse_metrics(EXPOSITION) == {
        "process_cpu_seconds_total": 12.5,
        "process_resident_memory_bytes": 104857600.0,
        "chancery_view_changes_total": 3.0,
        "chancery_block_height": 42.0,
    }


def test_node_samples_give_cpu_share_and_peak_memory() -> None:
    node = NodeSamples("http://node")
    node.record({"process_cpu_seconds_total": 10.0, "process_resident_memory_bytes": 5.0}, 100.0)
    node.record({"process_cpu_seconds_total": 13.0, "process_resident_memory_bytes": 9.0}, 102.0)
    node.record({"process_cpu_seconds_total": 14.0, "process_resident_memory_bytes": 7.0}, 104.0)
    assert node.cpu_percent == pytest.approx(100.0)
    assert node.rss_peak_bytes == 9.0


def test_a_block_event_times_every_transaction_it_lists() -> None:
    log = CommitLog()
    _record_block({"height": 5, "hash": "00", "tx_ids": ["aa" * 32, "bb" * 32]}, log)
    assert set(log.committed_at) == {bytes.fromhex("aa" * 32), bytes.fromhex("bb" * 32)}
    assert [(height, txs) for _, height, txs in log.blocks] == [(5, 2)]


@pytest.mark.parametrize("workload", ["evidence", "mixed"])
def test_presigned_workloads_are_valid_distinct_and_spread_over_signers(workload: str) -> None:
    signers = [SigningKey.generate() for _ in range(3)]
    signed = presign(workload, "chancery-test", signers, 25, 1_700_000_000_000, b"salt", 2)
    assert len(signed) == 25
    assert len({tx_id for tx_id, _ in signed}) == 25
    transactions = [decode_envelope(envelope) for _, envelope in signed]
    assert [tx.tx_id for tx in transactions] == [tx_id for tx_id, _ in signed]
    assert all(verify(tx.signer, DOMAIN_TX, tx.body_bytes, tx.signature) for tx in transactions)
    assert {tx.signer for tx in transactions} == {key.public_key for key in signers}
    methods = {tx.body.method for tx in transactions}
    assert methods == ({"anchor"} if workload == "evidence" else {"anchor", "anchor_batch"})


def test_a_workload_without_its_contract_is_refused_by_name() -> None:
    with pytest.raises(WorkloadError, match="lottery"):
        presign("lottery", "c", [SigningKey.generate()], 1, 0, b"", 1)
    with pytest.raises(WorkloadError, match="unknown"):
        presign("nonsense", "c", [SigningKey.generate()], 1, 0, b"", 1)

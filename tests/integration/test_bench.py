"""`chancery bench` end to end on a real one-validator network: it measures what it says.

Only the shape and consistency of the figures are checked, never their size.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node import bench_lottery
from node.bench import BenchPlan, run_fresh
from node.cli import main

pytestmark = pytest.mark.integration


@pytest.mark.timeout(180)
def test_an_open_loop_run_on_a_prefilled_chain_reports_every_figure() -> None:
    plan = BenchPlan(
        "evidence", rate=300.0, duration_s=3.0, warmup_s=1.0, batch=50, backlog=50, txs=None
    )
    result = run_fresh(1, plan, prefill_txs=2_500)  # three prefilled blocks
    assert result.validators == 1 and result.mode == "open loop"
    assert result.prefilled_txs == 2_500
    assert result.refused == 0 and result.not_committed == 0
    assert result.committed_in_window > 0
    assert 0 < result.latency_p50_ms <= result.latency_p90_ms <= result.latency_p99_ms
    assert result.latency_p99_ms <= result.latency_max_ms
    assert result.blocks_per_s > 0 and result.avg_block_txs > 0
    [node] = result.nodes
    assert node.cpu_percent > 0 and node.rss_peak_mb >= node.rss_start_mb > 0
    assert node.height > 3  # the live blocks continue the prefilled chain
    assert result.client_cpu_percent > 0  # the client's own share of the cores


@pytest.mark.timeout(180)
@pytest.mark.parametrize("workload", ["evidence", "invoice", "lottery"])
def test_the_cli_writes_the_json_keys_issue_5_names(tmp_path: Path, workload: str) -> None:
    out = tmp_path / "bench.json"
    argv = ["bench", "--validators", "1", "--rate", "200", "--duration", "2", "--warmup", "1"]
    code = main([*argv, "--batch", "50", "--workload", workload, "--json", str(out)])
    assert code == 0
    figures = json.loads(out.read_text())
    keys = ("validators", "workload", "committed_tps", "latency_p50_ms", "latency_p90_ms")
    for key in (*keys, "latency_p99_ms", "latency_max_ms", "nodes"):
        assert key in figures, key
    assert figures["workload"] == workload and len(figures["nodes"]) == 1
    assert figures["refused"] == 0 and figures["not_committed"] == 0
    assert figures["committed_in_window"] > 0


@pytest.mark.timeout(180)
def test_the_lottery_scale_run_draws_and_verifies_on_a_small_list(tmp_path: Path) -> None:
    """`python -m node.bench_lottery` end to end at a small size: every step a real
    `chancery lottery` command, the draw verified, participants checked, memory sampled."""
    out = tmp_path / "lottery.json"
    argv = ["--participants", "25000", "--winners", "5", "--validators", "1", "--checks", "2"]
    assert bench_lottery.main([*argv, "--workdir", str(tmp_path / "w"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["participants"] == 25_000 and report["import_entries_per_s"] > 0
    steps = ("create", "approve", "import", "seal", "reveal_sponsor", "reveal_notary", "draw")
    assert list(report["phases"]) == [*steps, "draw_verify", "checks"]
    for phase in report["phases"].values():
        assert phase["seconds"] > 0 and len(phase["end_mb"]) == 1 and phase["end_mb"][0] > 0

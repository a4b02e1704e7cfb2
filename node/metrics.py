"""Prometheus metrics (`chancery_` prefix), on a registry of the node's own.

A private registry keeps tests that start several nodes in one process apart, and keeps
the exposition to what the node defines.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# `_created` series double the exposition and no dashboard of ours reads them.
disable_created_metrics()

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Validator round trips on a LAN are sub-millisecond to tens of milliseconds.
PEER_RTT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


PROC_STATUS_PATH = "/proc/self/status"


def anonymous_rss_bytes() -> float:
    """`RssAnon` of this process from /proc (Linux); 0 where there is no such file."""
    try:
        with open(PROC_STATUS_PATH, encoding="ascii") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return float(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return 0.0


class NodeMetrics:
    """Every metric the node exports, created once per node."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # process_cpu_seconds_total, process_resident_memory_bytes...: what `chancery bench`
        # and operators read to see a node's CPU and memory.
        ProcessCollector(registry=r)
        # Resident memory counts the pages of files LevelDB maps while it reads tables
        # (reclaimable, and large during a compaction); the heap is what can leak.
        self.anonymous_memory = Gauge(
            "chancery_process_anonymous_memory_bytes",
            "Anonymous resident memory (RssAnon): the heap, without mapped files",
            registry=r,
        )
        self.anonymous_memory.set_function(anonymous_rss_bytes)
        # Admission decodes and verifies in worker processes (node/crypto.py), whose CPU
        # process_cpu_seconds_total does not count; set to the verifier's tally at start-up.
        self.verify_workers_cpu = Gauge(
            "chancery_verify_workers_cpu_seconds",
            "CPU seconds the signature-verification worker processes spent for this node",
            registry=r,
        )
        self.block_height = Gauge(
            "chancery_block_height", "Height of the last committed block", registry=r
        )
        self.committed_txs = Counter("chancery_committed_txs", "Transactions committed", registry=r)
        self.failed_txs = Counter(
            "chancery_failed_txs", "Committed transactions with ok=false", registry=r
        )
        self.admitted_txs = Counter(
            "chancery_admitted_txs", "Transactions admitted to the mempool", registry=r
        )
        self.rejected_txs = Counter(
            "chancery_rejected_txs", "Transactions refused at admission", ["code"], registry=r
        )
        self.mempool_size = Gauge(
            "chancery_mempool_size", "Transactions pending in the mempool", registry=r
        )
        self.mempool_bytes = Gauge(
            "chancery_mempool_bytes", "Bytes pending in the mempool", registry=r
        )
        self.event_loop_stalls = Counter(
            "chancery_event_loop_stalls",
            "Times the event loop did not turn for [node] loop_stall_warn_ms",
            registry=r,
        )
        self.view = Gauge("chancery_view", "Current consensus view", registry=r)
        self.view_changes = Counter("chancery_view_changes", "View changes completed", registry=r)
        self.peers_connected = Gauge(
            "chancery_peers_connected", "Validator peers connected", registry=r
        )
        self.commit_latency = Histogram(
            "chancery_commit_latency_seconds",
            "Time from admission to commit, per transaction",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.block_commit_seconds = Histogram(
            "chancery_block_commit_seconds",
            "Time to execute, certify and persist a block",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.block_txs = Histogram(
            "chancery_block_txs",
            "Transactions per committed block",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000),
            registry=r,
        )
        self.http_requests = Counter(
            "chancery_http_requests",
            "HTTP requests by route and status",
            ["route", "method", "status"],
            registry=r,
        )
        self._add_peer_metrics(r)
        self._add_consensus_metrics(r)

    def _add_consensus_metrics(self, r: CollectorRegistry) -> None:
        """Replica-level counters: messages a peer should not have sent, dropped events."""
        self.peer_suspicions = Counter(
            "chancery_peer_suspicions",
            "Consensus messages dropped as invalid or misbehaving, per peer and code",
            ["peer", "code"],
            registry=r,
        )
        self.consensus_events_dropped = Counter(
            "chancery_consensus_events_dropped",
            "Consensus events dropped because the replica's queue was full",
            registry=r,
        )

    def _add_peer_metrics(self, r: CollectorRegistry) -> None:
        """Transport, relay and state-transfer metrics. `peer` is a validator index, or
        `unknown` for a connection that never named a genesis validator."""
        self.peer_connected = Gauge(
            "chancery_peer_connected",
            "1 while both directions to this validator peer are up",
            ["peer"],
            registry=r,
        )
        self.peer_frames_dropped = Counter(
            "chancery_peer_frames_dropped",
            "Frames or relayed items dropped, per peer and reason",
            ["peer", "reason"],
            registry=r,
        )
        self.peer_rtt = Histogram(
            "chancery_peer_rtt_seconds",
            "Ping round-trip time per validator peer",
            ["peer"],
            buckets=PEER_RTT_BUCKETS_S,
            registry=r,
        )
        self.peer_handshakes_refused = Counter(
            "chancery_peer_handshakes_refused",
            "Connections refused during the p2p handshake, per claimed peer and reason",
            ["peer", "reason"],
            registry=r,
        )
        self.relay_envelopes_dropped = Counter(
            "chancery_relay_envelopes_dropped",
            "Admitted envelopes not relayed to peers, per reason",
            ["reason"],
            registry=r,
        )
        self.sync_blocks_applied = Counter(
            "chancery_sync_blocks_applied", "Blocks applied by state transfer", registry=r
        )
        self.sync_blocks_applied_by = Counter(
            "chancery_sync_blocks_applied_by",
            "Blocks applied by state transfer, by path: from a corroborated write set or by"
            " re-execution",
            ["path"],
            registry=r,
        )
        self.sync_peers_disbelieved = Counter(
            "chancery_sync_peers_disbelieved",
            "Peers that served a bad block during state transfer, per peer and code",
            ["peer", "code"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

"""What the benchmark observes from outside the nodes: commits, CPU, memory, view changes.

Commits come from one node's event stream (`block` events list their tx ids; the `tx`
events are skipped unparsed, which keeps the observer cheap at thousands of tx/s). CPU,
resident memory, view changes and height come from each node's Prometheus `/metrics`,
so the same probe works for a network on this machine and for one elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

SAMPLE_INTERVAL_S: Final = 1.0
# A scrape answered later than this is no use as a sample: skip it, read the node again on
# the next round (an overloaded node may answer its event stream and nothing else for a while).
SAMPLE_TIMEOUT_S: Final = 10.0
SAMPLE_TIMEOUT: Final = aiohttp.ClientTimeout(total=SAMPLE_TIMEOUT_S)
SCRAPED: Final = frozenset(
    {
        "process_cpu_seconds_total",
        "chancery_verify_workers_cpu_seconds",
        "process_resident_memory_bytes",
        "chancery_process_anonymous_memory_bytes",
        "chancery_view_changes_total",
        "chancery_block_height",
    }
)


def parse_metrics(text: str) -> dict[str, float]:
    """The unlabelled samples of SCRAPED in a Prometheus text exposition."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in SCRAPED:
            values[name] = float(value)
    return values


@dataclass
class NodeSamples:
    """First, last and peak readings of one node's metrics over the measured window."""

    url: str
    first: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    first_at: float = 0.0
    last_at: float = 0.0
    rss_peak_bytes: float = 0.0
    rss_series: list[tuple[float, float]] = field(default_factory=list)  # (at, bytes)
    anonymous_series: list[tuple[float, float]] = field(default_factory=list)  # (at, bytes)

    def record(self, values: dict[str, float], at: float) -> None:
        if not self.first:
            self.first, self.first_at = values, at
        self.last, self.last_at = values, at
        rss = values.get("process_resident_memory_bytes", 0.0)
        self.rss_peak_bytes = max(self.rss_peak_bytes, rss)
        self.rss_series.append((at, rss))
        anonymous = values.get("chancery_process_anonymous_memory_bytes", 0.0)
        self.anonymous_series.append((at, anonymous))

    def delta(self, name: str) -> float:
        return self.last.get(name, 0.0) - self.first.get(name, 0.0)

    @property
    def cpu_percent(self) -> float:
        """The node's CPU over the window, its verification worker processes included."""
        elapsed = self.last_at - self.first_at
        used = self.delta("process_cpu_seconds_total") + self.workers_cpu_seconds
        return 100 * used / elapsed if elapsed > 0 else 0.0

    @property
    def workers_cpu_seconds(self) -> float:
        return self.delta("chancery_verify_workers_cpu_seconds")

    @property
    def workers_cpu_percent(self) -> float:
        elapsed = self.last_at - self.first_at
        return 100 * self.workers_cpu_seconds / elapsed if elapsed > 0 else 0.0


async def sample_nodes(
    session: aiohttp.ClientSession, samples: list[NodeSamples], stop: asyncio.Event
) -> None:
    """Scrape every node each SAMPLE_INTERVAL_S until `stop` (and once more after it)."""
    while True:
        for node in samples:
            try:
                async with session.get(f"{node.url}/metrics", timeout=SAMPLE_TIMEOUT) as answer:
                    node.record(parse_metrics(await answer.text()), time.monotonic())
            except (aiohttp.ClientError, TimeoutError):
                continue  # a node that does not answer now is read on the next round
        if stop.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), SAMPLE_INTERVAL_S)


@dataclass
class CommitLog:
    """When each transaction was seen committed, and the blocks that committed them."""

    committed_at: dict[bytes, float] = field(default_factory=dict)
    blocks: list[tuple[float, int, int]] = field(default_factory=list)  # (at, height, txs)
    # Set, and replaced by a fresh one, on every block: whoever waits holds the old one.
    _block_seen: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def record_block(self, at: float, height: int, tx_ids: list[bytes]) -> None:
        for tx_id in tx_ids:
            self.committed_at[tx_id] = at
        self.blocks.append((at, height, len(tx_ids)))
        seen, self._block_seen = self._block_seen, asyncio.Event()
        seen.set()

    async def wait_committed(self, tx_ids: list[bytes], deadline: float) -> int:
        """Wait until every one of `tx_ids` is committed or the monotonic `deadline`
        passes; returns how many are still not committed."""
        pending = [tx_id for tx_id in tx_ids if tx_id not in self.committed_at]
        while pending:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                break
            try:
                await asyncio.wait_for(self._block_seen.wait(), left_s)
            except TimeoutError:
                break
            pending = [tx_id for tx_id in pending if tx_id not in self.committed_at]
        return len(pending)


async def follow_blocks(
    session: aiohttp.ClientSession, url: str, from_height: int, log: CommitLog
) -> None:
    """Record every block from `from_height` on, until cancelled."""
    async with session.get(
        f"{url}/v1/events",
        params={"from_height": str(from_height)},
        timeout=aiohttp.ClientTimeout(total=None),
    ) as stream:
        # A block event of thousands of transactions is one long line: split the stream
        # ourselves (aiohttp's line reader refuses lines over 64 KiB).
        event, pending = "", b""
        async for chunk in stream.content.iter_any():
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if line.startswith(b"event: "):
                    event = line[7:].decode()
                elif line.startswith(b"data: ") and event == "block":
                    _record_block(json.loads(line[6:]), log)


def _record_block(block: dict[str, Any], log: CommitLog) -> None:
    tx_ids = [bytes.fromhex(tx_id) for tx_id in block["tx_ids"]]
    log.record_block(time.monotonic(), block["height"], tx_ids)

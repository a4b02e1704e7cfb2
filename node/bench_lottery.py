"""`python -m node.bench_lottery`: a notarised draw at scale, measured end to end.

Starts a fresh network of real node processes (4 validators by default) in `--workdir`,
writes a participant file of `--participants` identities, and runs the draw exactly as a
sponsor and a notary would, each step a `chancery lottery` command in its own process:
create, approve, import (streamed, 10,000 entries a transaction), seal, both reveals, draw,
`draw-verify` (which recomputes seed and winners from chain data alone) and `check` for a
sample of participants (each an entry's audit path served by a node and checked).

Every node's resident memory is read from `/metrics` once a second throughout; the report
gives each phase's duration and, per node, the RSS at its start and end and its peak, plus
the RSS at every million entries imported, so memory can be compared against list size.
The run fails (exit 1) if any command fails or the nodes disagree on the final tip.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from node.bench_probe import NodeSamples, parse_metrics
from node.localnet import LocalNetwork

PARTICIPANTS_DEFAULT: Final = 10_000_000
WINNERS_DEFAULT: Final = 100
VALIDATORS_DEFAULT: Final = 4
CHECKS_DEFAULT: Final = 20
SAMPLE_INTERVAL_S: Final = 0.25
MILESTONE_ENTRIES: Final = 1_000_000
PROJECT: Final = "bench-draw"
SPONSOR: Final = "enterprise-a"
NOTARY: Final = "notary"
STEP_TIMEOUT_MS: Final = 60_000  # the node caps a commit wait at a minute
MB: Final = 1024 * 1024


def identity(n: int) -> str:
    """The n-th benchmark participant, shaped like a masked phone number and an id."""
    return f"138{n:08d},member-{n}"


def write_participants(path: Path, count: int) -> None:
    """One identity per line, written in large blocks (the file is about 25 bytes a line)."""
    with path.open("w", encoding="utf-8") as handle:
        block = 100_000
        for first in range(0, count, block):
            handle.write(
                "".join(identity(n) + "\n" for n in range(first, min(count, first + block)))
            )


@dataclass
class MemoryLog:
    """Every node's RSS (`NodeSamples`, as `chancery bench` keeps them), sampled in a
    background thread, with named marks in time."""

    urls: list[str]
    nodes: list[NodeSamples] = field(default_factory=list)
    marks: list[tuple[str, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.nodes = [NodeSamples(url) for url in self.urls]

    def read(self) -> None:
        for node in self.nodes:
            try:
                with urllib.request.urlopen(f"{node.url}/metrics", timeout=5) as answer:
                    node.record(parse_metrics(answer.read().decode()), time.monotonic())
            except OSError:
                continue  # a node busy past the timeout is read on the next round

    def run(self) -> None:
        while not self._stop.is_set():
            self.read()
            self._stop.wait(SAMPLE_INTERVAL_S)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()

    def mark(self, name: str) -> None:
        self.marks.append((name, time.monotonic()))

    def rss_at(self, node: NodeSamples, at: float) -> float | None:
        """The node's last RSS reading at or before `at`, in MB."""
        before = [rss for when, rss in node.rss_series if when <= at]
        return round(before[-1] / MB, 1) if before else None

    def between(self, start: float, end: float) -> dict[str, list[float]]:
        """Per node: RSS at (just before) `start`, at `end`, and the peak in between, MB."""
        figures: dict[str, list[float]] = {"start_mb": [], "end_mb": [], "peak_mb": []}
        for node in self.nodes:
            inside = [rss for when, rss in node.rss_series if start <= when <= end]
            first = self.rss_at(node, start)
            last = self.rss_at(node, end)
            if first is not None or inside:
                figures["start_mb"].append(first if first is not None else round(inside[0] / MB, 1))
            if last is not None:
                figures["end_mb"].append(last)
            if inside:
                figures["peak_mb"].append(round(max(inside) / MB, 1))
        return figures


class LotteryRun:
    """The `chancery lottery` commands of one draw against a running network."""

    def __init__(self, network: LocalNetwork, workdir: Path, memory: MemoryLog) -> None:
        self.network = network
        self.workdir = workdir
        self.memory = memory
        self.phases: dict[str, dict[str, Any]] = {}
        testnet = network.testnet
        self.keys = {
            SPONSOR: str(testnet.org(SPONSOR).member_key),
            NOTARY: str(testnet.org(NOTARY).member_key),
        }

    def command(self, args: list[str], org: str | None, node: int = 0) -> str:
        """Run `chancery lottery ARGS` against node `node`; its stdout. Raises on failure."""
        argv = [sys.executable, "-m", "node", "lottery", *args, "--url", self.network.url(node)]
        argv += ["--genesis", str(self.network.testnet.genesis_path)]
        if org is not None:
            argv += ["--key", self.keys[org], "--timeout-ms", str(STEP_TIMEOUT_MS)]
        done = subprocess.run(argv, cwd=self.workdir, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def phase(self, name: str, args: list[str], org: str | None, node: int = 0) -> str:
        started = time.monotonic()
        self.memory.mark(f"{name}:start")
        output = self.command(args, org, node)
        ended = time.monotonic()
        self.memory.mark(f"{name}:end")
        self.phases[name] = {
            "seconds": round(ended - started, 2),
            **self.memory.between(started, ended),
        }
        print(f"{name:>12}: {ended - started:8.2f} s", file=sys.stderr, flush=True)
        return output


def run(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    participants = workdir / "participants.txt"
    salt = workdir / "salt"
    started = time.monotonic()
    write_participants(participants, args.participants)
    salt.write_text(secrets.token_hex(32) + "\n")
    file_s = time.monotonic() - started
    network = LocalNetwork.generate(workdir / "net", args.validators)
    network.start_all()
    memory = MemoryLog([network.url(i) for i in range(args.validators)])
    memory.start()
    draw = LotteryRun(network, workdir, memory)
    try:
        draw.phase(
            "create",
            [
                "create",
                PROJECT,
                "--title",
                "Bench draw",
                "--winners",
                str(args.winners),
                "--notary-org",
                NOTARY,
            ],
            SPONSOR,
        )
        draw.phase("approve", ["approve", PROJECT], NOTARY)
        import_started = time.monotonic()
        draw.phase(
            "import", ["import", PROJECT, str(participants), "--salt-file", str(salt)], SPONSOR
        )
        import_s = time.monotonic() - import_started
        draw.phase("seal", ["seal", PROJECT], SPONSOR)
        draw.phase("reveal_sponsor", ["reveal", PROJECT], SPONSOR)
        draw.phase("reveal_notary", ["reveal", PROJECT], NOTARY)
        draw.phase("draw", ["draw", PROJECT], NOTARY)
        draw.phase("draw_verify", ["draw-verify", PROJECT], None)
        step = max(1, args.participants // args.checks)
        checks_started = time.monotonic()
        memory.mark("checks:start")
        for n in range(0, args.participants, step)[: args.checks]:
            node = n % args.validators
            draw.command(
                ["check", PROJECT, "--identity", identity(n), "--salt-file", str(salt)], None, node
            )
        checks_s = time.monotonic() - checks_started
        draw.phases["checks"] = {
            "seconds": round(checks_s, 2),
            **memory.between(checks_started, time.monotonic()),
        }
        agreed_height = min(
            network.get_json("/v1/status", i)[1]["height"] for i in range(args.validators)
        )
        hashes = {
            network.get_json(f"/v1/blocks/{agreed_height}", i)[1]["hash"]
            for i in range(args.validators)
        }
        if len(hashes) != 1:
            raise RuntimeError(f"the nodes disagree on block {agreed_height}: {hashes}")
    finally:
        memory.stop()
        network.stop_all()
    milestones = import_milestones(memory, args.participants)
    total_s = sum(phase["seconds"] for phase in draw.phases.values())
    return {
        "validators": args.validators,
        "participants": args.participants,
        "winners": args.winners,
        "participant_file_s": round(file_s, 1),
        "import_entries_per_s": round(args.participants / import_s),
        "total_s": round(total_s, 1),
        "phases": draw.phases,
        "rss_during_import_mb": milestones,
    }


def import_milestones(memory: MemoryLog, count: int) -> list[dict[str, Any]]:
    """RSS per node at (about) every million entries, assuming a steady import rate."""
    marks = dict(memory.marks)
    start, end = marks["import:start"], marks["import:end"]
    rows = []
    for entries in range(MILESTONE_ENTRIES, count + 1, MILESTONE_ENTRIES):
        at = start + (end - start) * entries / count
        readings = [memory.rss_at(node, at) for node in memory.nodes]
        if all(rss is not None for rss in readings):
            rows.append({"entries": entries, "rss_mb": readings})
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m node.bench_lottery", description=__doc__)
    parser.add_argument("--participants", type=int, default=PARTICIPANTS_DEFAULT, metavar="N")
    parser.add_argument("--winners", type=int, default=WINNERS_DEFAULT, metavar="N")
    parser.add_argument("--validators", type=int, default=VALIDATORS_DEFAULT, metavar="N")
    parser.add_argument(
        "--checks",
        type=int,
        default=CHECKS_DEFAULT,
        metavar="N",
        help="participants to `check` after the draw",
    )
    parser.add_argument(
        "--workdir",
        required=True,
        metavar="DIR",
        help="participant file, salt and the network's data go here",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the report here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        report = run(args)
    except RuntimeError as exc:
        print(f"bench_lottery: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())

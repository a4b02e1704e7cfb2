"""Run seeded simulations from the command line.

    python -m tests.sim.run --seeds 1000 [--start 0] [--n 4|7|both] [--jobs 2]
    python -m tests.sim.run --seed 1234 --n 7 --verbose

With `--n both` seed s runs with 4 replicas if s is even and 7 if it is odd. Every failure
is printed with the command that replays it; the exit status is 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from tests.sim.checker import LIVENESS_MS_MAX
from tests.sim.scenario import random_scenario
from tests.sim.simulation import Simulation, SimulationResult

VALIDATOR_COUNTS: Final = {"4": (4,), "7": (7,), "both": (4, 7)}
CHUNK_SEEDS: Final = 16  # seeds per task handed to a worker process
PROGRESS_EVERY_SEEDS: Final = 1_000


def validator_count_for(seed: int, choice: str) -> int:
    counts = VALIDATOR_COUNTS[choice]
    return counts[seed % len(counts)]


def replay_command(seed: int, validator_count: int) -> str:
    return f"python -m tests.sim.run --seed {seed} --n {validator_count} --verbose"


def run_seed(
    seed: int,
    validator_count: int,
    trace: Callable[[str], None] | None = None,
    liveness_ms_max: int | None = None,
) -> SimulationResult:
    """One seeded run: the scenario and every choice in it come from this one generator."""
    rng = random.Random(f"chancery-sim/{seed}/{validator_count}")
    scenario = random_scenario(seed, validator_count, rng)
    if liveness_ms_max is not None:
        scenario = dataclasses.replace(scenario, liveness_ms_max=liveness_ms_max)
    return Simulation(scenario, rng, trace).run()


def _run_task(task: tuple[int, int, int | None]) -> SimulationResult:
    seed, validator_count, liveness_ms_max = task
    return run_seed(seed, validator_count, None, liveness_ms_max)


@dataclass
class Summary:
    seeds: int = 0
    steps: int = 0
    blocks: int = 0
    views_max_total: int = 0
    simulated_ms: int = 0
    liveness_ms_max: int = 0  # the slowest recovery after the heal among passing seeds
    wall_s: float = 0.0
    failures: list[SimulationResult] = field(default_factory=list)

    def add(self, result: SimulationResult) -> None:
        self.seeds += 1
        self.steps += result.steps
        self.blocks += result.blocks
        self.views_max_total += result.view_max
        self.simulated_ms += result.simulated_ms
        if result.liveness_ms is not None:
            self.liveness_ms_max = max(self.liveness_ms_max, result.liveness_ms)
        if not result.ok:
            self.failures.append(result)

    def text(self) -> str:
        kinds: dict[str, int] = {}
        for failure in self.failures:
            for kind in failure_kinds(failure):
                kinds[kind] = kinds.get(kind, 0) + 1
        breakdown = ", ".join(f"{kind} {count}" for kind, count in sorted(kinds.items()))
        return (
            f"{self.seeds} seeds, {len(self.failures)} failed"
            f"{f' ({breakdown})' if breakdown else ''}; {self.steps} steps, "
            f"{self.blocks} blocks, {self.views_max_total} view changes (sum of highest "
            f"views), {self.simulated_ms / 1000:.0f} simulated s, slowest recovery after "
            f"the heal {self.liveness_ms_max / 1000:.1f} s; {self.wall_s:.1f} s"
        )


def failure_kinds(result: SimulationResult) -> list[str]:
    """ "invariant", "contract", "exception", "steps", "liveness" and/or "equivocation"."""
    kinds = [] if result.failure_kind is None else [result.failure_kind]
    return kinds + (["equivocation"] if result.equivocations else [])


def run_seeds(
    seeds: Iterable[int],
    choice: str = "both",
    jobs: int = 1,
    report: Callable[[SimulationResult], None] | None = None,
    liveness_ms_max: int | None = None,
) -> Summary:
    """Run every seed (in `jobs` processes) and summarise; `report` sees each result."""
    tasks = [(seed, validator_count_for(seed, choice), liveness_ms_max) for seed in seeds]
    summary = Summary()
    started = time.monotonic()
    if jobs <= 1:
        results: Iterable[SimulationResult] = map(_run_task, tasks)
        for result in results:
            summary.add(result)
            if report is not None:
                report(result)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for result in pool.map(_run_task, tasks, chunksize=CHUNK_SEEDS):
                summary.add(result)
                if report is not None:
                    report(result)
    summary.wall_s = time.monotonic() - started
    return summary


def failure_report(result: SimulationResult) -> str:
    lines = [f"FAILED seed {result.seed} (n={result.validator_count})"]
    if result.failure is not None:
        lines.append(f"  at {result.failure_time_ms} ms: {result.failure}")
    lines.extend(f"  PROTOCOL: {text}" for text in result.equivocations)
    lines.append(f"  replay: {replay_command(result.seed, result.validator_count)}")
    return "\n".join(lines)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.sim.run", description=__doc__)
    parser.add_argument("--seeds", type=int, default=100, help="how many seeds to run")
    parser.add_argument("--start", type=int, default=0, help="the first seed")
    parser.add_argument("--n", choices=sorted(VALIDATOR_COUNTS), default="both")
    parser.add_argument("--seed", type=int, help="run this one seed only")
    parser.add_argument("--verbose", action="store_true", help="print every event and action")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--liveness-ms",
        type=int,
        help=f"diagnosis only: another liveness bound (default {LIVENESS_MS_MAX} ms)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parse(argv)
    if arguments.seed is not None:
        return _replay(arguments.seed, arguments.n, arguments.verbose, arguments.liveness_ms)

    done = 0

    def report(result: SimulationResult) -> None:
        nonlocal done
        done += 1
        if not result.ok:
            print(failure_report(result), flush=True)
        if done % PROGRESS_EVERY_SEEDS == 0 and done < arguments.seeds:
            print(f"... {done} of {arguments.seeds} seeds", file=sys.stderr, flush=True)

    seeds = range(arguments.start, arguments.start + arguments.seeds)
    summary = run_seeds(seeds, arguments.n, arguments.jobs, report, arguments.liveness_ms)
    print(summary.text())
    return 1 if summary.failures else 0


def _replay(seed: int, choice: str, verbose: bool, liveness_ms_max: int | None) -> int:
    failed = False
    for validator_count in VALIDATOR_COUNTS[choice]:
        trace = print if verbose else None
        result = run_seed(seed, validator_count, trace, liveness_ms_max)
        if result.ok:
            print(
                f"seed {seed} (n={validator_count}) ok: {result.steps} steps, "
                f"{result.blocks} blocks, highest view {result.view_max}, "
                f"{result.simulated_ms} simulated ms, liveness {result.liveness_ms} ms after heal"
            )
        else:
            failed = True
            print(failure_report(result))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The collector settings a node and its verification workers run with."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys

from node.crypto import SignatureVerifier
from node.gc_tuning import GC_OLDER_THRESHOLDS, GC_YOUNG_THRESHOLD

PROBE = """
import gc
from node.gc_tuning import tune_garbage_collector
before = gc.get_freeze_count()
tune_garbage_collector()
print(before, gc.get_freeze_count(), *gc.get_threshold())
"""


def test_start_up_objects_are_frozen_and_thresholds_raised() -> None:
    # In a fresh interpreter: freezing is process-wide and would change this test run.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout.split()
    before, frozen, *thresholds = (int(value) for value in out)
    assert before == 0 and frozen > 1000  # the imported modules' objects, at least
    assert tuple(thresholds) == (GC_YOUNG_THRESHOLD, *GC_OLDER_THRESHOLDS)


async def test_verification_worker_processes_start_with_the_same_settings() -> None:
    verifier = SignatureVerifier(workers=1, in_processes=True)
    try:
        await verifier.start()
        loop = asyncio.get_running_loop()
        in_worker = await loop.run_in_executor(verifier.executor, gc.get_threshold)
    finally:
        verifier.close()
    assert in_worker == (GC_YOUNG_THRESHOLD, *GC_OLDER_THRESHOLDS)

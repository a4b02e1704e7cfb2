"""How a node process, and each of its verification workers, sets Python's cyclic collector.

The collector's default runs a young collection every 700 net container allocations. A
node under load allocates a few tuples, lists and records per transaction and frees them
almost at once, so at about 8,000 tx/s it ran some 100 young, 10 middle and 1 full
collection a second: 4.2 s of about 40 s under load, all holding the GIL, for almost no
cyclic garbage found (docs/performance.md, round 6). A higher young threshold lets those short-lived
objects die by reference counting first; freezing moves what start-up built (genesis,
registry, config, imported modules) out of every later full collection.
"""

from __future__ import annotations

import gc
from typing import Final

# Net container allocations (allocations minus frees) between young collections.
GC_YOUNG_THRESHOLD: Final = 50_000
# Young collections per middle one, and middle ones per full one.
GC_OLDER_THRESHOLDS: Final = (20, 20)


def tune_garbage_collector(
    young: int = GC_YOUNG_THRESHOLD, older: tuple[int, int] = GC_OLDER_THRESHOLDS
) -> None:
    """Freeze what exists now (start-up objects) and raise the collection thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, *older)

"""The node's one reading of the wall clock (consensus/ and contracts/ never read it)."""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    """Milliseconds since the Unix epoch, UTC."""
    return time.time_ns() // 1_000_000

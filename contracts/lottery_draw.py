"""The lottery draw of CONTRACTS.md as pure functions, shared by the contract, the CLI's
`draw-verify` and the tests (and published with test vectors in docs/lottery.md).

``seed = SHA-256("chancery/lottery/v1\\n" || project_id || participants_root ||
count (8 bytes big-endian) || sponsor_secret || notary_secret || block_hash)``.

Winners are distinct indices in ``[0, count)`` chosen in draw order: for ``i = 0, 1, ...``
``x = int(SHA-256(seed || i as 8 bytes big-endian))``; ``x`` is rejected when
``x >= floor(2**256 / count) * count`` (so every index is equally likely: no modulo bias);
otherwise the index is ``x mod count``, skipped when already chosen.

No `random`, clock or I/O: the same inputs give the same winners everywhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Final

SEED_DOMAIN: Final = b"chancery/lottery/v1\n"
COUNTER_BYTES: Final = 8
COUNT_BYTES: Final = 8
HASH_BYTES: Final = 32
COUNT_MAX: Final = 2**64 - 1
# Each candidate is accepted with probability > 1/2 and a repeat is at most
# (winners - 1) / count likely, so a draw needs about winners * H(count) candidates at
# worst; the bound turns a broken invariant into an error instead of an endless loop.
CANDIDATES_PER_WINNER_MAX: Final = 4096


def draw_seed(
    project_id: str,
    participants_root: bytes,
    count: int,
    sponsor_secret: bytes,
    notary_secret: bytes,
    block_hash: bytes,
) -> bytes:
    """The seed of a draw (CONTRACTS.md, lottery).

    Raises:
        ValueError: on a hash or secret that is not 32 bytes, or a count out of range.
    """
    for name, value in (
        ("participants_root", participants_root),
        ("sponsor_secret", sponsor_secret),
        ("notary_secret", notary_secret),
        ("block_hash", block_hash),
    ):
        if len(value) != HASH_BYTES:
            raise ValueError(f"{name} must be {HASH_BYTES} bytes")
    if not 0 <= count <= COUNT_MAX:
        raise ValueError("count must fit in 8 bytes")
    return hashlib.sha256(
        SEED_DOMAIN
        + project_id.encode()
        + participants_root
        + count.to_bytes(COUNT_BYTES, "big")
        + sponsor_secret
        + notary_secret
        + block_hash
    ).digest()


def candidate(seed: bytes, counter: int) -> int:
    """``int(SHA-256(seed || counter as 8 bytes big-endian))``."""
    return int.from_bytes(
        hashlib.sha256(seed + counter.to_bytes(COUNTER_BYTES, "big")).digest(), "big"
    )


def rejection_limit(count: int) -> int:
    """``floor(2**256 / count) * count``: candidates at or above it are rejected."""
    return (2**256 // count) * count


def candidate_indices(seed: bytes, count: int) -> Iterator[int]:
    """Every accepted candidate's index ``x mod count``, repeats included, in order."""
    limit = rejection_limit(count)
    counter = 0
    while True:
        x = candidate(seed, counter)
        counter += 1
        if x < limit:
            yield x % count


def draw_winners(seed: bytes, count: int, winners: int) -> list[int]:
    """``winners`` distinct indices in ``[0, count)``, in draw order.

    Raises:
        ValueError: unless ``1 <= winners <= count``.
        RuntimeError: if the draw needs more candidates than the bound (a broken
            invariant: the chance is below 2**-4096 for any count).
    """
    if not 1 <= winners <= count:
        raise ValueError("winners must be in 1..count")
    chosen: list[int] = []
    seen: set[int] = set()
    budget = CANDIDATES_PER_WINNER_MAX * winners
    for index in candidate_indices(seed, count):
        budget -= 1
        if budget < 0:
            raise RuntimeError("draw exceeded its candidate bound")
        if index in seen:
            continue
        seen.add(index)
        chosen.append(index)
        if len(chosen) == winners:
            return chosen
    raise AssertionError("unreachable: candidate_indices never ends")

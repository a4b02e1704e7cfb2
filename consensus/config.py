"""A replica's configuration: one frozen record, passed in, never read from a global."""

from __future__ import annotations

from dataclasses import dataclass

from consensus.quorum import fault_tolerance, quorum_size


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """Limits and timeouts of one replica; units are in the names."""

    chain_id: str
    validator_count: int
    index: int
    window_blocks: int = 4
    checkpoint_interval_blocks: int = 100
    view_timeout_ms: int = 2000
    view_timeout_ms_max: int = 30_000
    # VIEW-CHANGEs naming a view further ahead than this are dropped: a forged huge view
    # number costs the receiver nothing (a NEW-VIEW with 2f+1 proofs is still accepted).
    view_lookahead_max: int = 64
    # Messages for views just ahead are kept (bounded) so a replica that enters a view a
    # little later than its peers does not miss their votes.
    future_messages_max: int = 4096

    def __post_init__(self) -> None:
        if self.validator_count < 1:
            raise ValueError("validator_count must be at least 1")
        if not 0 <= self.index < self.validator_count:
            raise ValueError("index must name a validator")
        if self.window_blocks < 1 or self.checkpoint_interval_blocks < 1:
            raise ValueError("window_blocks and checkpoint_interval_blocks must be positive")
        if self.view_timeout_ms < 1 or self.view_timeout_ms_max < self.view_timeout_ms:
            raise ValueError("view timeouts must be positive and max >= base")

    @property
    def faults_max(self) -> int:
        return fault_tolerance(self.validator_count)

    @property
    def quorum(self) -> int:
        return quorum_size(self.validator_count)

    def primary(self, view: int) -> int:
        return view % self.validator_count

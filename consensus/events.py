"""What goes into a replica (events) and what comes out (actions). Nothing else crosses.

The node (or the simulator) turns the world into events and carries out actions in the
order given; a `PersistVote` must be durable before any later action is carried out, so
a vote never leaves before it is on disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from consensus.messages import ConsensusMessage, PreparedCertificate


class TimerKind(Enum):
    """The replica's timers; each is keyed by kind only (setting one replaces it)."""

    PROGRESS = "progress"  # pending work made no commit progress: suspect the primary
    NEW_VIEW = "new_view"  # sent VIEW-CHANGE, no valid NEW-VIEW yet: try the next view


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """A decoded message from `peer` (the authenticated connection it arrived on)."""

    peer: int
    message: ConsensusMessage


@dataclass(frozen=True, slots=True)
class TimerFired:
    kind: TimerKind


@dataclass(frozen=True, slots=True)
class BatchReady:
    """The node cut a batch for `height` (answering `RequestBatch`)."""

    height: int
    txs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ExecutionResult:
    """The outcome of `ExecuteProposal`; on success the header and hash of the block."""

    view: int
    height: int
    ok: bool
    block_hash: bytes = b""
    parent_hash: bytes = b""
    header: bytes = b""
    txs: tuple[bytes, ...] = ()
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ProposalFetched:
    """Transactions of a prepared block this replica lacked (for a NEW-VIEW)."""

    block_hash: bytes
    txs: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class BlocksFetched:
    """State transfer applied certified blocks up to `height` (whose hash is `block_hash`)."""

    height: int
    block_hash: bytes
    signatures: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class PeerConnected:
    """The node (re)connected to `peer`: what was sent while the link was down is lost."""

    peer: int


@dataclass(frozen=True, slots=True)
class RequestsPending:
    """Whether this node's mempool holds transactions not yet committed."""

    pending: bool


@dataclass(frozen=True, slots=True)
class PeerHeight:
    """`peer` says its committed height is `height`.

    Unproven (the link is authenticated, the claim is not): the replica acts on such claims
    only when f+1 peers make them, so at least one honest replica is that far ahead. They
    matter when the network is quiet: nothing else would tell a replica that came back from
    a partition that it is behind.
    """

    peer: int
    height: int


Event = (
    MessageReceived
    | TimerFired
    | BatchReady
    | ExecutionResult
    | ProposalFetched
    | BlocksFetched
    | RequestsPending
    | PeerConnected
    | PeerHeight
)


# --- actions -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Broadcast:
    message: ConsensusMessage


@dataclass(frozen=True, slots=True)
class Send:
    peer: int
    message: ConsensusMessage


@dataclass(frozen=True, slots=True)
class SetTimer:
    kind: TimerKind
    delay_ms: int


@dataclass(frozen=True, slots=True)
class CancelTimer:
    kind: TimerKind


@dataclass(frozen=True, slots=True)
class RequestBatch:
    """Primary: cut the next batch (by count, bytes or interval) for `height`."""

    height: int


@dataclass(frozen=True, slots=True)
class ExecuteProposal:
    """Execute a block on the block `parent_hash` and report an `ExecutionResult`.

    With `header` None the node builds the header itself (this replica proposes);
    otherwise it re-executes and checks every root of `header`. `expected_proposer` and
    `expected_header_view` are None for a re-proposal, whose hash is fixed already.
    """

    view: int
    height: int
    parent_hash: bytes
    txs: tuple[bytes, ...]
    header: bytes | None
    expected_proposer: int | None
    expected_header_view: int | None
    expected_block_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class PersistVote:
    """Make this durable before anything after it: a vote, a prepared certificate, a view."""

    view: int
    height: int
    kind: str  # "prepare", "commit", "prepared" or "view"
    block_hash: bytes = b""
    certificate: PreparedCertificate | None = None
    in_view_change: bool = False


@dataclass(frozen=True, slots=True)
class CommitBlock:
    """Persist the executed block `block_hash` at `height` with this certificate."""

    height: int
    block_hash: bytes
    signatures: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class FetchBlocks:
    """Fall behind: fetch certified blocks up to `target_height` from `peers`.

    `proven` lists `(height, block_hash, commit signatures)` this replica has seen proven
    (in a VIEW-CHANGE): a block among them that the node executed itself can be committed
    with that certificate without fetching it.
    """

    target_height: int
    peers: tuple[int, ...]
    proven: tuple[tuple[int, bytes, tuple[tuple[int, bytes], ...]], ...] = ()


@dataclass(frozen=True, slots=True)
class FetchProposal:
    """Get the transactions of a prepared block from peers that prepared it."""

    block_hash: bytes
    height: int
    peers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EnteredView:
    """The replica now works in `view`; pending speculative blocks above `committed_height`
    are void and their transactions go back to the mempool."""

    view: int
    primary: int
    committed_height: int


@dataclass(frozen=True, slots=True)
class Suspect:
    """A peer sent something it should not have; counted per peer with a stable code."""

    peer: int
    code: str


Action = (
    Broadcast
    | Send
    | SetTimer
    | CancelTimer
    | RequestBatch
    | ExecuteProposal
    | PersistVote
    | CommitBlock
    | FetchBlocks
    | FetchProposal
    | EnteredView
    | Suspect
)

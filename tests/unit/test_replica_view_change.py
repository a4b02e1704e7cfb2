"""The replica's wait for a NEW-VIEW, driven event by event (no network, no clock)."""

from __future__ import annotations

from consensus.config import ReplicaConfig
from consensus.events import (
    Action,
    Broadcast,
    MessageReceived,
    SetTimer,
    TimerFired,
    TimerKind,
)
from consensus.messages import ViewChange
from consensus.replica import RecoveredState, Replica
from tests.sim.model import KeyedHashAuth

CHAIN_ID = "view-change-unit"
VALIDATORS = 4  # f = 1
SECRETS = tuple(bytes([i]) * 32 for i in range(VALIDATORS))
GENESIS_HASH = bytes(32)


def _replica_asking_for(view: int, index: int) -> tuple[Replica, list[Action]]:
    """Replica `index` as it restarts in the middle of a view change to `view`."""
    replica = Replica(
        ReplicaConfig(CHAIN_ID, VALIDATORS, index, view_timeout_ms=1000),
        KeyedHashAuth(CHAIN_ID, index, SECRETS),
        RecoveredState(view=view, in_view_change=True, committed_hash=GENESIS_HASH),
    )
    return replica, replica.start()


def _view_change_of(actions: list[Action]) -> ViewChange:
    (message,) = [a.message for a in actions if isinstance(a, Broadcast)]
    assert isinstance(message, ViewChange)
    return message


def _new_view_waits(actions: list[Action]) -> list[SetTimer]:
    return [a for a in actions if isinstance(a, SetTimer) and a.kind is TimerKind.NEW_VIEW]


def test_the_wait_restarts_when_the_f_plus_first_view_change_arrives() -> None:
    """Replica 0 asked alone for view 1; replica 3's VIEW-CHANGE arrives late (as when a
    link comes back and its queue is flushed), just before 0's timer fires. The NEW-VIEW
    that ended that view change may be right behind it: 0 waits a full timeout again
    instead of moving to view 2 on its own."""
    lone, started = _replica_asking_for(1, 0)
    assert len(_new_view_waits(started)) == 1
    late = _view_change_of(_replica_asking_for(1, 3)[1])

    restarted = _new_view_waits(lone.handle(MessageReceived(3, late)))

    assert [t.delay_ms for t in restarted] == [_new_view_waits(started)[0].delay_ms]
    assert lone.view == 1 and not lone.active


def test_the_wait_restarts_once_per_view() -> None:
    """Further VIEW-CHANGEs for the view (a third replica's, or the same one re-sent) do not
    push the deadline back: a peer cannot keep a replica waiting."""
    replica, _ = _replica_asking_for(1, 0)
    from_three = _view_change_of(_replica_asking_for(1, 3)[1])
    from_two = _view_change_of(_replica_asking_for(1, 2)[1])
    assert _new_view_waits(replica.handle(MessageReceived(3, from_three)))

    assert not _new_view_waits(replica.handle(MessageReceived(3, from_three)))
    assert not _new_view_waits(replica.handle(MessageReceived(2, from_two)))


def test_with_f_plus_one_and_no_new_view_the_timer_moves_the_replica_on() -> None:
    """The restart delays moving on, it does not prevent it."""
    replica, _ = _replica_asking_for(1, 0)
    replica.handle(MessageReceived(3, _view_change_of(_replica_asking_for(1, 3)[1])))

    actions = replica.handle(TimerFired(TimerKind.NEW_VIEW))

    assert replica.view == 2
    assert _view_change_of(actions).new_view == 2


def test_alone_the_timer_re_sends_and_stays() -> None:
    replica, _ = _replica_asking_for(1, 0)

    actions = replica.handle(TimerFired(TimerKind.NEW_VIEW))

    assert replica.view == 1
    assert _view_change_of(actions).new_view == 1
    assert _new_view_waits(actions)

"""TEST-ONLY Byzantine replicas for the multi-process consensus tests. NEVER IN PRODUCTION.

###########################################################################################
#  This module makes a node MISBEHAVE on purpose. It exists only so that integration     #
#  tests (tests/integration/test_consensus.py) can check that honest validators neither #
#  diverge nor stall next to a faulty one. `node.runner` imports it only when the         #
#  environment variable CHANCERY_TEST_BYZANTINE (`node.runner.BYZANTINE_ENV`) is set,     #
#  and logs a loud warning when it does; no other module imports it, no config key       #
#  enables it. A real deployment never sets that variable.                               #
###########################################################################################

`install(driver, behaviour)` sets `ConsensusDriver.action_filter`, which rewrites the
replica's outgoing actions just before the driver carries them out. The replica itself
stays honest (it persists, executes and commits as usual); only what it tells its peers
is changed. Behaviours:

- `equivocate`: as primary, every PRE-PREPARE it broadcasts is replaced by two different
  valid, signed PRE-PREPAREs for the same height and view: a twin block built on the same
  parent with the same transactions and a timestamp one ms later goes to the first half
  of the peers, the original to the others. "Half" is rounded up at odd heights (with 3
  peers: neither block can gather a quorum) and down at even ones (the original can, and
  one peer holds a block that will not commit). Nothing else changes.
- `forge`: every PREPARE and COMMIT it broadcasts is replaced by forgeries: a vote for a
  random block hash (correctly signed by this node, so only its content is a lie), the
  genuine vote claiming another validator as its sender, and the genuine vote signed with
  a key that is not this validator's.
- `silent`: every consensus message it would send (broadcast or direct) is dropped. The
  node still relays transactions and serves state transfer; it just never votes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from consensus.events import Action, Broadcast, Send
from consensus.messages import (
    HASH_BYTES,
    Commit,
    ConsensusMessage,
    Prepare,
    PrePrepare,
    signing_payload,
)
from node.crypto import DOMAIN_P2P, SigningKey
from node.pbft import ConsensusDriver

log = logging.getLogger(__name__)

ActionFilter = Callable[[list[Action]], list[Action]]

BEHAVIOURS: Final = ("equivocate", "forge", "silent")


def install(driver: ConsensusDriver, behaviour: str) -> None:
    """Make `driver`'s node misbehave as `behaviour` (TEST ONLY, see the module docstring).

    Raises:
        ValueError: `behaviour` is not one of BEHAVIOURS (the node then refuses to start).
    """
    factories: dict[str, Callable[[ConsensusDriver], ActionFilter]] = {
        "equivocate": Equivocator,
        "forge": Forger,
        "silent": lambda _driver: _silence,
    }
    factory = factories.get(behaviour)
    if factory is None:
        raise ValueError(f"unknown Byzantine behaviour {behaviour!r}; one of {BEHAVIOURS}")
    log.warning("TEST ONLY: node %d is Byzantine: %s", driver.replica.config.index, behaviour)
    driver.action_filter = factory(driver)


def _silence(actions: list[Action]) -> list[Action]:
    return [a for a in actions if not isinstance(a, Broadcast | Send)]


def _resign(driver: ConsensusDriver, message: ConsensusMessage) -> ConsensusMessage:
    """`message` signed with this node's own validator key."""
    unsigned = replace(message, signature=b"")  # type: ignore[type-var]
    payload = signing_payload(unsigned, driver.chain_id)
    return replace(unsigned, signature=driver.replica.auth.sign(payload))  # type: ignore[type-var]


def _peers(driver: ConsensusDriver) -> list[int]:
    config = driver.replica.config
    return [p for p in range(config.validator_count) if p != config.index]


class Equivocator:
    """As primary: a different signed PRE-PREPARE for the first half of the peers."""

    def __init__(self, driver: ConsensusDriver) -> None:
        self.driver = driver

    def __call__(self, actions: list[Action]) -> list[Action]:
        rewritten: list[Action] = []
        for action in actions:
            message = action.message if isinstance(action, Broadcast) else None
            if isinstance(message, PrePrepare) and self.driver.replica.is_primary:
                rewritten.extend(self._split(message))
            else:
                rewritten.append(action)
        return rewritten

    def _split(self, original: PrePrepare) -> list[Action]:
        twin = self._twin(original)
        if twin is None:
            return [Broadcast(original)]
        peers = _peers(self.driver)
        half = (len(peers) + original.height % 2) // 2
        log.warning(
            "TEST ONLY: equivocating at height %d view %d: %s to %s, %s to %s",
            original.height,
            original.view,
            twin.block_hash.hex()[:12],
            peers[:half],
            original.block_hash.hex()[:12],
            peers[half:],
        )
        return [Send(p, twin) for p in peers[:half]] + [Send(p, original) for p in peers[half:]]

    def _twin(self, original: PrePrepare) -> PrePrepare | None:
        """Same height, view, parent and transactions; timestamp + 1 ms, so another hash."""
        driver = self.driver
        proposal = driver.pending.get(original.block_hash)
        parent = driver._parent(original.parent_hash)
        if proposal is None or parent is None:
            return None
        other = driver.services.ledger.build_proposal(
            parent,
            proposal.transactions,
            proposal.header.timestamp + 1,
            driver.replica.config.index,
            original.view,
        )
        twin = replace(original, block_hash=other.block_hash, header=other.header_bytes)
        signed = _resign(driver, twin)
        assert isinstance(signed, PrePrepare)
        return signed


class Forger:
    """Every PREPARE/COMMIT becomes a random-hash vote, an impersonation and a bad signature."""

    def __init__(self, driver: ConsensusDriver) -> None:
        self.driver = driver
        self.wrong_key = SigningKey.generate()

    def __call__(self, actions: list[Action]) -> list[Action]:
        rewritten: list[Action] = []
        for action in actions:
            message = action.message if isinstance(action, Broadcast) else None
            if isinstance(message, Prepare | Commit):
                rewritten.extend(Broadcast(m) for m in self._forgeries(message))
            else:
                rewritten.append(action)
        return rewritten

    def _forgeries(self, vote: Prepare | Commit) -> list[ConsensusMessage]:
        driver = self.driver
        random_hash = os.urandom(HASH_BYTES)
        if isinstance(vote, Commit):
            commit_vote = driver.replica.auth.sign_commit_vote(vote.height, random_hash)
            lie: ConsensusMessage = replace(vote, block_hash=random_hash, vote=commit_vote)
        else:
            lie = replace(vote, block_hash=random_hash)
        unsigned = replace(vote, signature=b"")
        payload = signing_payload(unsigned, driver.chain_id)
        wrong_key = replace(unsigned, signature=self.wrong_key.sign(DOMAIN_P2P, payload))
        forgeries = [_resign(driver, lie), wrong_key]
        peers = _peers(driver)
        if peers:  # claim to be another validator, signed with our own key
            forgeries.append(_resign(driver, replace(vote, sender=peers[vote.height % len(peers)])))
        return forgeries

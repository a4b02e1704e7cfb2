"""The validator transport: framing limits, the mutual handshake, refusals, send-queue
bounds, reconnects and request/response, over real TCP on 127.0.0.1 with genesis keys."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import pytest

from node.config import P2pSection, PeerAddress
from node.crypto import DOMAIN_P2P, SigningKey, verify
from node.genesis import Genesis
from node.localnet import P2P_PORT_RANGE, free_port_base
from node.metrics import NodeMetrics
from node.p2p import transport as transport_module
from node.p2p.framing import FrameError, encode_frame, read_frame
from node.p2p.handshake import (
    HandshakeRefused,
    LocalIdentity,
    perform_handshake,
    proof_payload,
    sign_proof,
)
from node.p2p.transport import (
    RECONNECT_DELAY_S_MAX,
    RECONNECT_DELAY_S_MIN,
    RECONNECT_DELAY_S_PEER_HEARD,
    RECONNECT_JITTER_FRACTION,
    REQUESTS_SERVED_PER_PEER_MAX,
    PeerTransport,
    TransportError,
    reconnect_delay_s,
)
from tests.unit.conftest import Consortium, build_consortium

HOST = "127.0.0.1"
WAIT_S = 5.0


# -- helpers shared with test_relay.py and test_sync.py --------------------------------------


def free_port() -> int:
    """A free port below the kernel's ephemeral range: a port the kernel handed out for
    binding could be lent to another transport's outbound connection before we bind it."""
    return free_port_base(1, P2P_PORT_RANGE)


@dataclass
class Peer:
    """A transport and the messages its `on_message` received."""

    transport: PeerTransport
    metrics: NodeMetrics
    received: list[tuple[int, dict[str, Any]]] = field(default_factory=list)


class Network:
    """Transports for validators 0..count-1 of `consortium`, each dialling all the others."""

    def __init__(self, consortium: Consortium, count: int, **config: Any) -> None:
        self.consortium = consortium
        base = free_port_base(count, P2P_PORT_RANGE)
        self.ports = list(range(base, base + count))
        self.config_overrides = config
        self.peers: dict[int, Peer] = {}

    def p2p_config(self, index: int) -> P2pSection:
        addresses = tuple(
            PeerAddress(index=other, host=HOST, port=port)
            for other, port in enumerate(self.ports)
            if other != index
        )
        return P2pSection(
            host=HOST, port=self.ports[index], peers=addresses, **self.config_overrides
        )

    def build(
        self,
        index: int,
        *,
        key: SigningKey | None = None,
        genesis: Genesis | None = None,
        **options: Any,
    ) -> Peer:
        metrics = NodeMetrics()
        received: list[tuple[int, dict[str, Any]]] = []
        transport = PeerTransport(
            index,
            key or self.consortium.validators[index],
            genesis or self.consortium.genesis,
            self.p2p_config(index),
            metrics,
            lambda peer, message: received.append((peer, message)),
            **options,
        )
        return Peer(transport, metrics, received)

    async def start(self, index: int, **options: Any) -> Peer:
        peer = self.build(index, **options)
        await peer.transport.start()
        self.peers[index] = peer
        return peer

    async def stop(self, index: int) -> None:
        await self.peers.pop(index).transport.stop()

    async def stop_all(self) -> None:
        for index in list(self.peers):
            await self.stop(index)


@contextlib.asynccontextmanager
async def running_network(
    consortium: Consortium, count: int, *, start: int | None = None, **options: Any
) -> AsyncIterator[Network]:
    """Start transports 0..start-1 (all by default) and stop every one afterwards."""
    network = Network(consortium, count)
    try:
        for index in range(count if start is None else start):
            await network.start(index, **options)
        yield network
    finally:
        await network.stop_all()


async def closed_by_peer(reader: asyncio.StreamReader) -> bool:
    """Read to the end of the stream; True once the peer has closed it."""
    try:
        async with asyncio.timeout(WAIT_S):
            while await reader.read(65536):
                pass
    except ConnectionResetError:
        pass
    return True


async def eventually(condition: Callable[[], bool], timeout_s: float = WAIT_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def sample(metrics: NodeMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# -- framing ---------------------------------------------------------------------------------


def feed(*chunks: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    return reader


async def test_a_frame_round_trips() -> None:
    message = {"type": "prepare", "view": 3, "digest": b"\x01" * 32, "nested": {"a": [1, "b"]}}
    assert await read_frame(feed(encode_frame(message, 1024)), 1024) == message


async def test_a_length_over_the_limit_is_refused_before_the_body_is_read() -> None:
    # Only the prefix arrives and the stream stays open: reading the body would hang.
    reader = feed((1025).to_bytes(4, "big"), eof=False)
    with pytest.raises(FrameError) as refused:
        async with asyncio.timeout(1):
            await read_frame(reader, 1024)
    assert refused.value.reason == "oversized"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xc1", "undecodable"),  # a byte msgpack never uses
        (msgpack.packb({"type": "x", "f": 1.5}), "undecodable"),  # floats are refused
        (msgpack.packb({"type": "x"}) + b"\x00", "undecodable"),  # trailing bytes
        (msgpack.packb([1, 2]), "malformed"),  # not a map
        (msgpack.packb({"kind": "x"}), "malformed"),  # no "type"
        (msgpack.packb({"type": 7}), "malformed"),  # "type" not a str
        (b"", "undecodable"),  # empty frame
    ],
)
async def test_a_bad_body_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as refused:
        await read_frame(feed(len(body).to_bytes(4, "big") + body), 1024)
    assert refused.value.reason == reason


async def test_a_truncated_frame_is_end_of_stream() -> None:
    frame = encode_frame({"type": "x", "data": b"12345678"}, 1024)
    with pytest.raises(asyncio.IncompleteReadError):
        await read_frame(feed(frame[:-3]), 1024)


def test_encoding_refuses_what_would_not_fit_or_decode() -> None:
    with pytest.raises(FrameError) as too_big:
        encode_frame({"type": "x", "data": bytes(2000)}, 1024)
    assert too_big.value.reason == "oversized"
    with pytest.raises(FrameError) as untyped:
        encode_frame({"data": 1}, 1024)
    assert untyped.value.reason == "malformed"
    with pytest.raises(FrameError) as unencodable:
        encode_frame({"type": "x", "data": object()}, 1024)
    assert unencodable.value.reason == "unencodable"


# -- handshake -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def four() -> Consortium:
    return build_consortium(validator_count=4)


def identity(consortium: Consortium, index: int, /, **changes: Any) -> LocalIdentity:
    genesis = consortium.genesis
    base = {
        "chain_id": genesis.chain_id,
        "genesis_hash": genesis.genesis_hash,
        "index": index,
        "key": consortium.validators[index] if index < len(consortium.validators) else None,
        "validator_keys": genesis.validator_keys,
    }
    return LocalIdentity(**{**base, **changes})


async def dial(port: int, local: LocalIdentity, expected: int | None = 0) -> tuple[Any, Any, Any]:
    """Handshake with the transport on `port` as `local`; (reader, writer, index or refusal)."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        result: Any = await perform_handshake(reader, writer, local, expected, timeout_s=2)
    except HandshakeRefused as refusal:
        result = refusal
    return reader, writer, result


async def test_two_validators_authenticate_each_other(four: Consortium) -> None:
    async with running_network(four, 2) as network:
        zero, one = network.peers[0].transport, network.peers[1].transport
        assert await zero.wait_until_connected({1}, WAIT_S)
        assert await one.wait_until_connected({0}, WAIT_S)
        assert zero.connected_peers() == {1}
        status = zero.peer_status()
        assert status[1]["connected"] and status[1]["outbound"] and status[1]["inbound"]
        assert not status[2]["connected"]
        assert sample(network.peers[0].metrics, "chancery_peer_connected", peer="1") == 1


async def test_a_validator_holding_its_genesis_key_is_accepted(four: Consortium) -> None:
    async with running_network(four, 1) as network:
        _, writer, result = await dial(network.ports[0], identity(four, 1))
        assert result == 0
        await eventually(lambda: network.peers[0].transport.peer_status()[1]["inbound"])
        writer.close()


def test_the_proof_signs_the_documented_bytes(four: Consortium) -> None:
    local = identity(four, 2)
    their_nonce, my_nonce = os.urandom(32), os.urandom(32)
    proof = sign_proof(local, their_nonce, my_nonce)
    genesis = four.genesis
    signed = DOMAIN_P2P + msgpack.packb(
        ["handshake", genesis.chain_id, genesis.genesis_hash, their_nonce, my_nonce, 2],
        use_bin_type=True,
    )
    assert signed == b"chancery/p2p/v1\n" + proof_payload(
        genesis.chain_id, genesis.genesis_hash, their_nonce, my_nonce, 2
    )
    assert verify(four.validators[2].public_key, b"", signed, proof["signature"])
    assert proof.keys() == {"type", "signature"} and proof["type"] == "hello_proof"


@pytest.mark.parametrize(
    ("changes", "claimed", "reason"),
    [
        ({"chain_id": "another-chain"}, 1, "wrong_chain"),
        ({"genesis_hash": bytes(32)}, 1, "wrong_genesis"),
        ({"index": 9, "key": SigningKey.generate()}, None, "unknown_index"),
        ({"index": 0}, None, "self_index"),
        ({"key": SigningKey.generate()}, 1, "bad_signature"),  # index 1 without 1's key
        ({"key": SigningKey.from_seed(bytes(32))}, 3, "bad_signature"),
    ],
    ids=["wrong-chain", "wrong-genesis", "unknown-index", "own-index", "not-1s-key", "not-3s-key"],
)
async def test_the_acceptor_refuses_a_peer_that_proves_nothing(
    four: Consortium, changes: dict[str, Any], claimed: int | None, reason: str
) -> None:
    index = claimed if claimed is not None else 1
    local = identity(four, index, **changes)
    async with running_network(four, 1) as network:
        transport = network.peers[0].transport
        reader, writer, _ = await dial(network.ports[0], local)
        await eventually(lambda: refused_count_now(transport, claimed, reason) == 1)
        assert await closed_by_peer(reader)
        writer.close()
        assert transport.connected_peers() == set()
        label = "unknown" if claimed is None else str(claimed)
        metric = "chancery_peer_handshakes_refused_total"
        assert sample(network.peers[0].metrics, metric, peer=label, reason=reason) == 1


def refused_count_now(transport: PeerTransport, peer: int | None, reason: str) -> int:
    if peer is None:
        return transport.refused_unattributed().get(reason, 0)
    return transport.peer_status()[peer]["handshakes_refused"].get(reason, 0)


async def test_a_non_validator_speaking_another_protocol_is_refused(four: Consortium) -> None:
    async with running_network(four, 1) as network:
        transport = network.peers[0].transport
        reader, writer = await asyncio.open_connection(HOST, network.ports[0])
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # "GET " reads as a huge length
        await writer.drain()
        await eventually(lambda: refused_count_now(transport, None, "bad_frame") == 1)
        assert await closed_by_peer(reader)
        writer.close()


async def test_a_silent_connection_times_out(four: Consortium) -> None:
    async with running_network(four, 1, handshake_timeout_s=0.2) as network:
        transport = network.peers[0].transport
        reader, writer = await asyncio.open_connection(HOST, network.ports[0])
        await eventually(lambda: refused_count_now(transport, None, "timeout") == 1)
        assert await closed_by_peer(reader)
        writer.close()


async def test_a_dialer_refuses_a_peer_that_is_not_the_validator_it_dialled(
    four: Consortium,
) -> None:
    network = Network(four, 3)
    network.ports[1] = network.ports[2]  # node 0 believes validator 1 listens on 2's port
    zero = network.build(0)
    network.ports[1] = free_port()
    two = network.build(2)
    await two.transport.start()
    await zero.transport.start()
    try:
        # Counted against the validator it meant to reach: its address is what is wrong.
        await eventually(lambda: refused_count_now(zero.transport, 1, "unexpected_index") > 0)
        assert 1 not in zero.transport.connected_peers()
    finally:
        await zero.transport.stop()
        await two.transport.stop()


async def test_a_transport_for_a_foreign_index_or_peer_is_a_config_error(
    four: Consortium,
) -> None:
    def build(index: int, *peers: int) -> PeerTransport:
        config = P2pSection(
            host=HOST,
            port=free_port(),
            peers=tuple(PeerAddress(index=peer, host=HOST, port=free_port()) for peer in peers),
        )
        key = four.validators[0]
        return PeerTransport(index, key, four.genesis, config, NodeMetrics(), lambda *_: None)

    for index, peers in [(7, ()), (0, (1, 5))]:
        with pytest.raises(TransportError) as foreign:
            build(index, *peers)
        assert foreign.value.code == "p2p.config"
    assert build(0, 0, 1).peer_status()[1]["address"] is not None  # naming itself is fine


async def test_a_port_in_use_is_a_clear_error(four: Consortium) -> None:
    async with running_network(four, 1) as network:
        clash = network.build(0)
        with pytest.raises(TransportError) as in_use:
            await clash.transport.start()
        assert in_use.value.code == "p2p.port_in_use"
        assert str(network.ports[0]) in in_use.value.message


# -- frames after the handshake ---------------------------------------------------------------


async def authenticated(network: Network, index: int) -> tuple[Any, Any]:
    """A raw connection to node 0 authenticated as validator `index` (its real key)."""
    reader, writer, result = await dial(network.ports[0], identity(network.consortium, index))
    assert result == 0
    return reader, writer


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        ((4097).to_bytes(4, "big"), "oversized"),
        ((3).to_bytes(4, "big") + b"\xc1\xc1\xc1", "undecodable"),
        (len(msgpack.packb([1])).to_bytes(4, "big") + msgpack.packb([1]), "malformed"),
    ],
)
async def test_a_bad_frame_disconnects_the_peer_and_is_counted(
    four: Consortium, frame: bytes, reason: str
) -> None:
    network = Network(four, 2, frame_bytes_max=4096)
    zero = await network.start(0)
    try:
        reader, writer = await authenticated(network, 1)
        writer.write(frame)
        await writer.drain()
        assert await closed_by_peer(reader)
        writer.close()
        assert zero.transport.peer_status()[1]["frames_dropped"] == {reason: 1}
        metric = "chancery_peer_frames_dropped_total"
        assert sample(zero.metrics, metric, peer="1", reason=reason) == 1
    finally:
        await network.stop_all()


async def test_messages_reach_on_message_or_their_subscriber(four: Consortium) -> None:
    async with running_network(four, 2) as network:
        zero, one = network.peers[0], network.peers[1]
        assert await zero.transport.wait_until_connected({1}, WAIT_S)
        assert await one.transport.wait_until_connected({0}, WAIT_S)
        subscribed: list[tuple[int, dict[str, Any]]] = []
        one.transport.subscribe("note", lambda peer, message: subscribed.append((peer, message)))
        assert zero.transport.send(1, {"type": "prepare", "view": 1})
        assert zero.transport.broadcast({"type": "note", "text": "hi"}) == 1  # 2, 3 are down
        await eventually(lambda: bool(one.received) and bool(subscribed))
        assert one.received == [(0, {"type": "prepare", "view": 1})]
        assert subscribed == [(0, {"type": "note", "text": "hi"})]


async def test_a_full_send_queue_drops_and_counts(four: Consortium) -> None:
    network = Network(four, 2, send_queue_frames_max=4)
    try:
        # No pings: one could take a queue slot and make the count below off by one.
        zero = await network.start(0, ping_interval_s=3600)
        one = await network.start(1, ping_interval_s=3600)
        assert await zero.transport.wait_until_connected({1}, WAIT_S)
        # No await between sends: the writer cannot drain, so the bound is exact.
        sent = [zero.transport.send(1, {"type": "prepare", "n": n}) for n in range(10)]
        assert sent == [True] * 4 + [False] * 6
        assert zero.transport.peer_status()[1]["frames_dropped"] == {"queue_full": 6}
        metric = "chancery_peer_frames_dropped_total"
        assert sample(zero.metrics, metric, peer="1", reason="queue_full") == 6
        await eventually(lambda: len(one.received) == 4)
        assert [message["n"] for _, message in one.received] == [0, 1, 2, 3]
        assert not zero.transport.send(2, {"type": "prepare"})  # never connected
        assert zero.transport.peer_status()[2]["frames_dropped"] == {"disconnected": 1}
    finally:
        await network.stop_all()


def test_reconnects_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    rng = random.Random(7)
    for failures in range(12):
        ceiling_s = min(RECONNECT_DELAY_S_MIN * 2**failures, RECONNECT_DELAY_S_MAX)
        delays_s = [reconnect_delay_s(failures, rng) for _ in range(50)]
        assert all(ceiling_s * (1 - RECONNECT_JITTER_FRACTION) <= d <= ceiling_s for d in delays_s)
        assert len(set(delays_s)) > 1  # jittered
    assert reconnect_delay_s(10**6, rng) <= RECONNECT_DELAY_S_MAX
    # A peer whose own connection to us is up is redialled often: the link is about to heal.
    assert RECONNECT_DELAY_S_PEER_HEARD < RECONNECT_DELAY_S_MAX
    heard_s = [reconnect_delay_s(failures, rng, peer_heard=True) for failures in range(40)]
    assert max(heard_s) <= RECONNECT_DELAY_S_PEER_HEARD
    assert max(heard_s) >= RECONNECT_DELAY_S_PEER_HEARD * (1 - RECONNECT_JITTER_FRACTION)


class NoJitter(random.Random):
    def random(self) -> float:
        return 0.0


async def test_a_peer_that_dials_in_is_dialled_back_at_once(
    four: Consortium, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validator 0 has backed off for a long while; when validator 1 starts and dials in,
    0 dials back at once instead of waiting out its backoff."""
    backoff_s = 4 * WAIT_S
    monkeypatch.setattr(transport_module, "RECONNECT_DELAY_S_MIN", backoff_s)
    monkeypatch.setattr(transport_module, "RECONNECT_DELAY_S_MAX", backoff_s)
    async with running_network(four, 2, start=1, rng=NoJitter()) as network:
        zero = network.peers[0].transport
        await asyncio.sleep(0.5)  # its first dial was refused: it now waits backoff_s
        one = await network.start(1)
        assert await zero.wait_until_connected({1}, WAIT_S)
        assert await one.transport.wait_until_connected({0}, WAIT_S)


async def test_a_restarted_peer_is_reconnected(four: Consortium) -> None:
    async with running_network(four, 2) as network:
        zero = network.peers[0].transport
        assert await zero.wait_until_connected({1}, WAIT_S)
        await network.stop(1)
        await eventually(lambda: 1 not in zero.connected_peers())
        one = await network.start(1)
        assert await zero.wait_until_connected({1}, WAIT_S)
        assert await one.transport.wait_until_connected({0}, WAIT_S)
        assert zero.send(1, {"type": "prepare", "view": 2})
        await eventually(lambda: one.received == [(0, {"type": "prepare", "view": 2})])
        assert zero.peer_status()[1]["connections"] == 2


async def test_a_request_gets_its_answer(four: Consortium) -> None:
    async with running_network(four, 2, ping_interval_s=60) as network:
        zero, one = network.peers[0].transport, network.peers[1].transport
        assert await zero.wait_until_connected({1}, WAIT_S)
        assert await one.wait_until_connected({0}, WAIT_S)

        async def echo(peer: int, request: dict[str, Any]) -> dict[str, Any]:
            return {"type": "echoed", "from": peer, "value": request["value"]}

        one.on_request("echo", echo)
        answers = await asyncio.gather(
            *(zero.request(1, {"type": "echo", "value": n}, WAIT_S) for n in range(8))
        )
        assert answers == [{"type": "echoed", "from": 0, "value": n} for n in range(8)]


async def test_a_peer_cannot_keep_more_requests_in_progress_than_the_cap(
    four: Consortium,
) -> None:
    async with running_network(four, 2, ping_interval_s=60) as network:
        zero, one = network.peers[0].transport, network.peers[1].transport
        assert await zero.wait_until_connected({1}, WAIT_S)
        assert await one.wait_until_connected({0}, WAIT_S)
        release = asyncio.Event()

        async def hold(peer: int, request: dict[str, Any]) -> dict[str, Any]:
            await release.wait()
            return {"type": "held"}

        one.on_request("hold", hold)
        held = [
            asyncio.create_task(zero.request(1, {"type": "hold"}, WAIT_S))
            for _ in range(REQUESTS_SERVED_PER_PEER_MAX)
        ]
        await asyncio.sleep(0)  # let each task send its request before the next one
        # Frames on one stream arrive in order: the next request finds all of these running.
        with pytest.raises(TransportError) as busy:
            await zero.request(1, {"type": "hold"}, WAIT_S)
        assert busy.value.remote_code == "p2p.busy"
        release.set()
        assert [answer["type"] for answer in await asyncio.gather(*held)] == ["held"] * len(held)


async def test_the_answer_to_a_cancelled_request_is_counted_late_not_unexpected(
    four: Consortium,
) -> None:
    async with running_network(four, 2, ping_interval_s=60) as network:
        zero, one = network.peers[0].transport, network.peers[1].transport
        assert await zero.wait_until_connected({1}, WAIT_S)
        assert await one.wait_until_connected({0}, WAIT_S)
        release = asyncio.Event()

        async def hold(peer: int, request: dict[str, Any]) -> dict[str, Any]:
            await release.wait()
            return {"type": "held"}

        one.on_request("hold", hold)
        asking = asyncio.create_task(zero.request(1, {"type": "hold"}, WAIT_S))
        await asyncio.sleep(0.1)  # the request is out and being served
        asking.cancel()
        await asyncio.gather(asking, return_exceptions=True)
        release.set()
        await eventually(lambda: zero.peer_status()[1]["frames_dropped"] == {"late_response": 1})


async def test_requests_time_out_fail_and_report_remote_errors(four: Consortium) -> None:
    async with running_network(four, 2) as network:
        zero, one = network.peers[0].transport, network.peers[1].transport
        assert await zero.wait_until_connected({1}, WAIT_S)
        assert await one.wait_until_connected({0}, WAIT_S)

        async def stall(peer: int, request: dict[str, Any]) -> dict[str, Any]:
            await asyncio.sleep(60)
            return {"type": "late"}

        async def fail(peer: int, request: dict[str, Any]) -> dict[str, Any]:
            raise TransportError("p2p.bad_request", "no")

        one.on_request("stall", stall)
        one.on_request("fail", fail)
        with pytest.raises(TransportError) as timed_out:
            await zero.request(1, {"type": "stall"}, 0.2)
        assert timed_out.value.code == "p2p.timeout"
        with pytest.raises(TransportError) as refused:
            await zero.request(1, {"type": "fail"}, WAIT_S)
        assert (refused.value.code, refused.value.remote_code) == (
            "p2p.remote_error",
            "p2p.bad_request",
        )
        with pytest.raises(TransportError) as unknown:
            await zero.request(1, {"type": "no_such_kind"}, WAIT_S)
        assert unknown.value.remote_code == "p2p.unknown_request"
        with pytest.raises(TransportError) as unavailable:
            await zero.request(2, {"type": "stall"}, WAIT_S)
        assert unavailable.value.code == "p2p.unavailable"
        waiting = asyncio.create_task(zero.request(1, {"type": "stall"}, 30))
        await asyncio.sleep(0.1)
        await network.stop(1)
        with pytest.raises(TransportError) as disconnected:
            await asyncio.wait_for(waiting, WAIT_S)
        assert disconnected.value.code == "p2p.disconnected"


async def test_pings_measure_the_round_trip_time(four: Consortium) -> None:
    async with running_network(four, 2, ping_interval_s=0.02) as network:
        zero = network.peers[0]
        await eventually(lambda: zero.transport.last_rtt_s(1) is not None)
        rtt_s = zero.transport.last_rtt_s(1)
        assert rtt_s is not None and 0 < rtt_s < 1
        assert zero.transport.peer_status()[1]["rtt_ms"] is not None
        assert sample(zero.metrics, "chancery_peer_rtt_seconds_count", peer="1") >= 1


async def test_stop_leaves_no_task_behind(four: Consortium) -> None:
    before = asyncio.all_tasks()
    async with running_network(four, 3, ping_interval_s=0.02) as network:
        assert await network.peers[0].transport.wait_until_connected({1, 2}, WAIT_S)
        await asyncio.sleep(0.1)
    await asyncio.sleep(0)
    assert asyncio.all_tasks() - before == set()

"""Validator-to-validator transport: authenticated TCP streams of msgpack frames.

Model: each node dials every other validator and uses that outbound connection only to
send to it; it accepts inbound connections from the others and reads what they send.
Both directions run the handshake (`node.p2p.handshake`), so every frame that reaches a
handler comes from a named genesis validator. A peer counts as connected while both
directions are up. Outbound connections are redialled with exponential backoff and
jitter, but at once when the peer's own connection to us comes up, and at least every
`RECONNECT_DELAY_S_PEER_HEARD` while it is up. Each peer has a bounded send queue, and
`send` never blocks: a full queue (or a peer that is down) drops the frame and counts it.

Frames besides the handshake (all maps with a str "type"; see `node.p2p.framing`):

- `{"type": "ping", "request_id": int}` -> `{"type": "pong", "response_to": int}`:
  round-trip time, measured every `PING_INTERVAL_S`; `PING_MISSES_MAX` unanswered pings in
  a row close the outbound connection (a half-open TCP peer is otherwise never noticed).
- requests: any registered kind (`on_request`) with an added `"request_id": int`; the
  answer is the handler's map with `"response_to": <that id>`, sent back over the
  answering node's own outbound connection. A failure is answered with
  `{"type": "error", "code": str, "message": str, "response_to": int}`.
- every other frame goes to the subscriber of its type (`subscribe`) or to `on_message`.

The keys `request_id` and `response_to` are reserved at the top level of every frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from node.config import P2pSection, PeerAddress
from node.crypto import SigningKey
from node.genesis import Genesis
from node.invariants import require
from node.metrics import NodeMetrics
from node.p2p.framing import FrameError, encode_frame, read_frame
from node.p2p.handshake import (
    HANDSHAKE_TIMEOUT_S,
    HandshakeRefused,
    LocalIdentity,
    perform_handshake,
)

log = logging.getLogger(__name__)

MessageHandler = Callable[[int, dict[str, Any]], None]
RequestHandler = Callable[[int, dict[str, Any]], Awaitable[dict[str, Any]]]
ConnectionListener = Callable[[int, bool], None]

PING_INTERVAL_S: Final = 1.0
PING_TIMEOUT_S: Final = 2.0
PING_MISSES_MAX: Final = 3
RECONNECT_DELAY_S_MIN: Final = 0.1
RECONNECT_DELAY_S_MAX: Final = 5.0
# While a peer's own connection to us is up, that peer is running and a failed dial means a
# link about to heal, not a node that is down: redial at least this often. Otherwise, when
# a partition heals, each peer comes back after its own backoff (up to the cap above), and
# a healed replica hears from fewer than f+1 of them for seconds: too few to trust that it
# is behind, long enough for its progress timer to take it into a view of its own.
RECONNECT_DELAY_S_PEER_HEARD: Final = 0.5
# Each wait is drawn from [delay * (1 - fraction), delay] so restarted nodes do not redial
# in lockstep.
RECONNECT_JITTER_FRACTION: Final = 0.5
CONNECT_TIMEOUT_S: Final = 5.0
REQUESTS_OUTSTANDING_MAX: Final = 256
REQUESTS_SERVED_PER_PEER_MAX: Final = 8
# Requests given up (timed out or cancelled) whose answers may still arrive; remembered so
# a late answer is told apart from one never asked for.
REQUESTS_ABANDONED_REMEMBERED_MAX: Final = 1024
# Connections not yet authenticated; more are closed at once (non-validators cannot pile up).
INBOUND_HANDSHAKES_MAX: Final = 16
# Frames coalesced into one write before waiting for the socket to drain.
WRITE_BATCH_FRAMES_MAX: Final = 64
# Stream buffer: multi-megabyte block responses would otherwise pause reading every 64 KiB.
STREAM_BUFFER_BYTES: Final = 1024 * 1024
UNKNOWN_PEER_LABEL: Final = "unknown"

require(RECONNECT_DELAY_S_MIN <= RECONNECT_DELAY_S_MAX, "reconnect delays out of order")
require(
    RECONNECT_DELAY_S_MIN <= RECONNECT_DELAY_S_PEER_HEARD <= RECONNECT_DELAY_S_MAX,
    "the redial delay for a peer heard from is outside the backoff's range",
)
require(PING_TIMEOUT_S >= PING_INTERVAL_S, "a ping must be allowed its interval to answer")


class TransportError(Exception):
    """A p2p operation that could not be done; `code` is stable.

    Codes: `p2p.port_in_use`, `p2p.config`, `p2p.unavailable` (peer not connected or its
    queue is full), `p2p.disconnected`, `p2p.timeout`, `p2p.busy` (too many requests),
    `p2p.remote_error` (the peer answered with an error; `remote_code` says which),
    `p2p.stopped`.
    """

    def __init__(self, code: str, message: str, remote_code: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.remote_code = remote_code


@dataclass
class PeerCounters:
    """Per-peer traffic counters for `/v1/status` (Prometheus has the same drops)."""

    frames_in: int = 0
    frames_out: int = 0
    frames_dropped: dict[str, int] = field(default_factory=dict)
    handshakes_refused: dict[str, int] = field(default_factory=dict)
    connections: int = 0


class _PeerLink:
    """Everything the transport keeps about one validator peer; owned by the transport."""

    def __init__(self, index: int, address: PeerAddress | None, queue_frames_max: int) -> None:
        self.index = index
        self.label = str(index)
        self.address = address
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=queue_frames_max)
        self.outbound: asyncio.StreamWriter | None = None
        self.inbound: asyncio.StreamWriter | None = None
        # Set when the peer's inbound connection comes up: a dial waiting out its backoff
        # goes at once, since the peer has just shown it is running.
        self.inbound_arrived = asyncio.Event()
        self.connected = False
        self.counters = PeerCounters()
        self.last_rtt_s: float | None = None
        self.requests_serving = 0

    def status(self) -> dict[str, Any]:
        counters = self.counters
        return {
            "address": None if self.address is None else f"{self.address.host}:{self.address.port}",
            "connected": self.connected,
            "outbound": self.outbound is not None,
            "inbound": self.inbound is not None,
            "rtt_ms": None if self.last_rtt_s is None else round(self.last_rtt_s * 1000, 3),
            "frames_in": counters.frames_in,
            "frames_out": counters.frames_out,
            "frames_dropped": dict(counters.frames_dropped),
            "handshakes_refused": dict(counters.handshakes_refused),
            "connections": counters.connections,
        }


def _peer_links(index: int, genesis: Genesis, config: P2pSection) -> dict[int, _PeerLink]:
    """One link per other validator, with its address when the config names one.

    Raises:
        TransportError: `p2p.config` when a configured peer is not a genesis validator.
    """
    validator_count = len(genesis.validators)
    if not 0 <= index < validator_count:
        raise TransportError("p2p.config", f"index {index} is not a genesis validator")
    addresses: dict[int, PeerAddress] = {}
    for peer in config.peers:
        if not 0 <= peer.index < validator_count:
            raise TransportError(
                "p2p.config", f"[p2p].peers names index {peer.index}, not a genesis validator"
            )
        # A peers list shared by every node may name this node too; it never dials itself.
        if peer.index != index:
            addresses[peer.index] = peer
    return {
        other: _PeerLink(other, addresses.get(other), config.send_queue_frames_max)
        for other in range(validator_count)
        if other != index
    }


class PeerTransport:
    """Connections to every other validator, with send queues, requests and status."""

    def __init__(
        self,
        index: int,
        key: SigningKey,
        genesis: Genesis,
        p2p_config: P2pSection,
        metrics: NodeMetrics,
        on_message: MessageHandler,
        *,
        handshake_timeout_s: float = HANDSHAKE_TIMEOUT_S,
        ping_interval_s: float = PING_INTERVAL_S,
        rng: random.Random | None = None,
    ) -> None:
        """Raises: TransportError `p2p.config` for an index or peer not in genesis."""
        self.index = index
        self.config = p2p_config
        self.frame_bytes_max = p2p_config.frame_bytes_max
        self.metrics = metrics
        self._local = LocalIdentity(
            genesis.chain_id, genesis.genesis_hash, index, key, genesis.validator_keys
        )
        self._links = _peer_links(index, genesis, p2p_config)
        self._on_message = on_message
        self._handshake_timeout_s = handshake_timeout_s
        self._ping_interval_s = ping_interval_s
        self._ping_timeout_s = max(PING_TIMEOUT_S, 2 * ping_interval_s)
        self._rng = rng or random.Random()
        self._subscribers: dict[str, MessageHandler] = {}
        self._request_handlers: dict[str, RequestHandler] = {"ping": self._serve_ping}
        self._listeners: list[ConnectionListener] = []
        self._pending: dict[int, tuple[int, asyncio.Future[dict[str, Any]]]] = {}
        self._request_ids = itertools.count(1)
        self._abandoned: OrderedDict[int, int] = OrderedDict()
        self._refused_unattributed: dict[str, int] = {}
        self._inbound_handshakes = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self._stopping = False
        self._changed = asyncio.Event()
        for link in self._links.values():
            metrics.peer_connected.labels(peer=link.label).set(0)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on the p2p host/port and start dialling every configured peer.

        Raises:
            TransportError: `p2p.port_in_use` when the port is taken.
        """
        host, port = self.config.host, self.config.port
        try:
            self._server = await asyncio.start_server(
                self._accept, host, port, reuse_address=True, limit=STREAM_BUFFER_BYTES
            )
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise TransportError(
                    "p2p.port_in_use",
                    f"p2p port {host}:{port} is in use (is another node running?); set [p2p].port",
                ) from None
            raise
        for link in self._links.values():
            if link.address is not None:
                self._spawn(self._dial_loop(link), f"p2p-dial-{link.index}")

    async def stop(self) -> None:
        """Close the listener and every connection; cancel and await every task."""
        self._stopping = True
        if self._server is not None:
            self._server.close()
        while self._tasks:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)
        if self._server is not None:
            await self._server.wait_closed()
        self._fail_requests(None, TransportError("p2p.stopped", "transport stopped"))

    def _spawn(self, coroutine: Awaitable[Any], name: str) -> asyncio.Task[Any] | None:
        if self._stopping:
            # Nothing starts after stop(); close the coroutine so it is not "never awaited".
            getattr(coroutine, "close", lambda: None)()
            return None
        task = asyncio.ensure_future(coroutine)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- public API ------------------------------------------------------------------------

    def subscribe(self, kind: str, handler: MessageHandler) -> None:
        """Deliver frames of type `kind` to `handler` instead of `on_message`."""
        require(kind not in self._request_handlers, f"{kind!r} is a request kind")
        self._subscribers[kind] = handler

    def on_request(self, kind: str, handler: RequestHandler) -> None:
        """Answer requests of type `kind` with `await handler(peer, request)`."""
        require(kind not in self._subscribers, f"{kind!r} is a subscribed message kind")
        self._request_handlers[kind] = handler

    def on_connection_change(self, listener: ConnectionListener) -> None:
        """Call `listener(peer, connected)` whenever a peer becomes (dis)connected."""
        self._listeners.append(listener)

    def connected_peers(self) -> set[int]:
        """Peers with both directions authenticated and open."""
        return {index for index, link in self._links.items() if link.connected}

    def send(self, peer_index: int, message: dict[str, Any]) -> bool:
        """Queue `message` for `peer_index` without blocking; False when it was dropped.

        Raises:
            FrameError: the message cannot be encoded within `frame_bytes_max` (a caller
                bug: protocol limits are set so that every message fits).
        """
        link = self._links.get(peer_index)
        require(link is not None, f"send to {peer_index}, not a peer validator")
        assert link is not None  # for the type checker
        return self._enqueue(link, encode_frame(message, self.frame_bytes_max))

    def broadcast(self, message: dict[str, Any]) -> int:
        """Queue `message` (encoded once) for every peer; returns how many queued it.

        Raises:
            FrameError: as `send`.
        """
        frame = encode_frame(message, self.frame_bytes_max)
        return sum(self._enqueue(link, frame) for link in self._links.values())

    async def request(
        self, peer_index: int, message: dict[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        """Send a request and wait for its answer (without `response_to`).

        Raises:
            TransportError: `p2p.busy`, `p2p.unavailable`, `p2p.timeout`,
                `p2p.disconnected`, `p2p.stopped` or `p2p.remote_error`.
        """
        if len(self._pending) >= REQUESTS_OUTSTANDING_MAX:
            raise TransportError("p2p.busy", f"{REQUESTS_OUTSTANDING_MAX} requests outstanding")
        if peer_index not in self.connected_peers():
            # The answer would come back on the peer's connection to us: both must be up.
            raise TransportError("p2p.unavailable", f"validator {peer_index} is not connected")
        request_id = next(self._request_ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (peer_index, future)
        try:
            if not self.send(peer_index, {**message, "request_id": request_id}):
                raise TransportError("p2p.unavailable", f"peer {peer_index} is not reachable")
            async with asyncio.timeout(timeout_s):
                response = await future
        except TimeoutError:
            raise TransportError(
                "p2p.timeout", f"peer {peer_index} did not answer {message['type']!r}"
            ) from None
        finally:
            self._pending.pop(request_id, None)
            # Cancelling the caller cancels the future too: that is abandoning it as well.
            if not future.done() or future.cancelled():
                self._abandon(request_id, peer_index)
        if response["type"] == "error":
            remote_code = str(response.get("code"))
            raise TransportError(
                "p2p.remote_error",
                f"peer {peer_index} refused {message['type']!r}: {remote_code}: "
                f"{response.get('message')}",
                remote_code,
            )
        del response["response_to"]
        return response

    async def wait_until_connected(self, peers: Iterable[int], timeout_s: float) -> bool:
        """True once every peer in `peers` is connected; False after `timeout_s`."""
        wanted = set(peers)
        try:
            async with asyncio.timeout(timeout_s):
                while not wanted <= self.connected_peers():
                    await self._changed.wait()
        except TimeoutError:
            return False
        return True

    def last_rtt_s(self, peer_index: int) -> float | None:
        return self._links[peer_index].last_rtt_s

    def peer_status(self) -> dict[int, dict[str, Any]]:
        """Connection state, last RTT and counters per peer (JSON-ready, for `/v1/status`)."""
        return {index: link.status() for index, link in self._links.items()}

    def refused_unattributed(self) -> dict[str, int]:
        """Handshake refusals of connections that named no genesis validator, by reason."""
        return dict(self._refused_unattributed)

    def count_dropped(self, peer_index: int, reason: str) -> None:
        """Count a frame dropped above the transport (a consensus message with a bad
        signature, another chain's message...), in the same per-peer counters."""
        link = self._links.get(peer_index)
        label = UNKNOWN_PEER_LABEL if link is None else link.label
        if link is not None:
            dropped = link.counters.frames_dropped
            dropped[reason] = dropped.get(reason, 0) + 1
        self.metrics.peer_frames_dropped.labels(peer=label, reason=reason).inc()

    # -- sending ---------------------------------------------------------------------------

    def _enqueue(self, link: _PeerLink, frame: bytes) -> bool:
        if link.outbound is None:
            self.count_dropped(link.index, "disconnected")
            return False
        try:
            link.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.count_dropped(link.index, "queue_full")
            return False
        return True

    async def _write_loop(self, link: _PeerLink, writer: asyncio.StreamWriter) -> None:
        while True:
            frames = [await link.queue.get()]
            while len(frames) < WRITE_BATCH_FRAMES_MAX and not link.queue.empty():
                frames.append(link.queue.get_nowait())
            writer.writelines(frames)
            link.counters.frames_out += len(frames)
            await writer.drain()

    def _discard_queue(self, link: _PeerLink) -> None:
        """Frames queued for a connection that died are stale: drop and count them."""
        while not link.queue.empty():
            link.queue.get_nowait()
            self.count_dropped(link.index, "disconnected")

    # -- outbound connections --------------------------------------------------------------

    async def _dial_loop(self, link: _PeerLink) -> None:
        failures = 0
        while True:
            link.inbound_arrived.clear()
            failures = 0 if await self._dial_once(link) else failures + 1
            delay_s = reconnect_delay_s(failures, self._rng, peer_heard=link.inbound is not None)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for runs the wait in a task
            # of its own, and stop() was seen to hang on cancelling it (test_p2p).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay_s):
                    await link.inbound_arrived.wait()

    async def _dial_once(self, link: _PeerLink) -> bool:
        """One connection attempt; True when it was authenticated (and has now ended)."""
        address = link.address
        assert address is not None  # only links with an address are dialled
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(
                    address.host, address.port, limit=STREAM_BUFFER_BYTES
                )
        except (OSError, TimeoutError) as exc:
            log.debug("dial validator %d at %s:%d: %s", link.index, address.host, address.port, exc)
            return False
        try:
            await perform_handshake(
                reader, writer, self._local, link.index, self._handshake_timeout_s
            )
        except HandshakeRefused as refusal:
            self._count_refusal(refusal, link)
            writer.close()
            return False
        await self._run_outbound(link, reader, writer)
        return True

    async def _run_outbound(
        self, link: _PeerLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Write the send queue to the peer until the connection fails or pings go unanswered.

        The outbound stream also gets a reader: it notices the peer hanging up, and frames
        the peer sends on it are handled like any others.
        """
        link.outbound = writer
        link.counters.connections += 1
        self._update_connected(link)
        children = [
            self._spawn(self._write_loop(link, writer), f"p2p-write-{link.index}"),
            self._spawn(self._read_loop(link, reader), f"p2p-read-out-{link.index}"),
            self._spawn(self._ping_loop(link), f"p2p-ping-{link.index}"),
        ]
        tasks = [task for task in children if task is not None]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            link.outbound = None
            writer.close()
            self._discard_queue(link)
            self._fail_requests(link.index, _disconnected(link.index))
            self._update_connected(link)

    # -- inbound connections ---------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # A plain callback that hands the connection to a task of our own: stop() cancels
        # that task, whereas cancelling asyncio's callback task would log an error.
        if self._stopping or self._inbound_handshakes >= INBOUND_HANDSHAKES_MAX:
            self._count_refusal(HandshakeRefused("busy", "too many unauthenticated connections"))
            writer.close()
            return
        self._inbound_handshakes += 1
        self._spawn(self._handle_inbound(reader, writer), "p2p-inbound")

    async def _handle_inbound(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            peer = await perform_handshake(
                reader, writer, self._local, None, self._handshake_timeout_s
            )
        except HandshakeRefused as refusal:
            self._count_refusal(refusal)
            writer.close()
            return
        finally:
            self._inbound_handshakes -= 1
        await self._run_inbound(self._links[peer], reader, writer)

    async def _run_inbound(
        self, link: _PeerLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # A peer that restarted dials again before its old connection times out here:
        # the newest authenticated connection wins.
        if link.inbound is not None:
            link.inbound.close()
        link.inbound = writer
        link.inbound_arrived.set()
        self._update_connected(link)
        try:
            await self._read_loop(link, reader)
        finally:
            writer.close()
            if link.inbound is writer:
                link.inbound = None
                self._fail_requests(link.index, _disconnected(link.index))
                self._update_connected(link)

    async def _read_loop(self, link: _PeerLink, reader: asyncio.StreamReader) -> None:
        """Dispatch frames until the stream ends or the peer sends a bad frame."""
        while True:
            try:
                message = await read_frame(reader, self.frame_bytes_max)
            except FrameError as exc:
                log.warning("validator %d sent a bad frame (%s); disconnecting", link.index, exc)
                self.count_dropped(link.index, exc.reason)
                return
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            link.counters.frames_in += 1
            self._dispatch(link, message)

    # -- dispatch --------------------------------------------------------------------------

    def _dispatch(self, link: _PeerLink, message: dict[str, Any]) -> None:
        if "response_to" in message:
            self._resolve(link, message)
            return
        kind = message["type"]
        handler = self._request_handlers.get(kind)
        if handler is not None or "request_id" in message:
            self._start_serving(link, handler, message)
            return
        subscriber = self._subscribers.get(kind, self._on_message)
        try:
            subscriber(link.index, message)
        except Exception:  # a handler bug must not take the connection down with it
            log.exception("handler for %r from validator %d failed", kind, link.index)
            self.count_dropped(link.index, "handler_error")

    def _abandon(self, request_id: int, peer_index: int) -> None:
        self._abandoned[request_id] = peer_index
        if len(self._abandoned) > REQUESTS_ABANDONED_REMEMBERED_MAX:
            self._abandoned.popitem(last=False)

    def _resolve(self, link: _PeerLink, message: dict[str, Any]) -> None:
        request_id = message["response_to"]
        entry = self._pending.get(request_id)
        if entry is not None and entry[0] == link.index and not entry[1].done():
            entry[1].set_result(message)
        elif entry is not None and entry[0] == link.index:
            # The caller was cancelled and has not yet cleaned up: as late as abandoned.
            self.count_dropped(link.index, "late_response")
        elif self._abandoned.get(request_id) == link.index:
            del self._abandoned[request_id]
            self.count_dropped(link.index, "late_response")
        else:
            self.count_dropped(link.index, "unexpected_response")

    def _start_serving(
        self, link: _PeerLink, handler: RequestHandler | None, request: dict[str, Any]
    ) -> None:
        request_id = request.get("request_id")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            self.count_dropped(link.index, "malformed")
            return
        if handler is None:
            self._answer_error(link, request_id, "p2p.unknown_request", "no such request kind")
            return
        if link.requests_serving >= REQUESTS_SERVED_PER_PEER_MAX:
            self.count_dropped(link.index, "requests_busy")
            self._answer_error(link, request_id, "p2p.busy", "too many requests in progress")
            return
        link.requests_serving += 1
        self._spawn(self._serve(link, handler, request, request_id), f"p2p-serve-{link.index}")

    async def _serve(
        self,
        link: _PeerLink,
        handler: RequestHandler,
        request: dict[str, Any],
        request_id: int,
    ) -> None:
        try:
            response = await handler(link.index, request)
        except TransportError as exc:
            self._answer_error(link, request_id, exc.code, exc.message)
            return
        except Exception:  # a handler bug is logged; the peer gets an answer, not a timeout
            log.exception("request %r from validator %d failed", request["type"], link.index)
            self._answer_error(link, request_id, "p2p.internal", "the request handler failed")
            return
        finally:
            link.requests_serving -= 1
        try:
            self.send(link.index, {**response, "response_to": request_id})
        except FrameError as exc:
            log.error("answer to %r does not fit a frame: %s", request["type"], exc)
            self._answer_error(link, request_id, "p2p.response_too_large", exc.message)

    def _answer_error(self, link: _PeerLink, request_id: int, code: str, message: str) -> None:
        error = {"type": "error", "code": code, "message": message, "response_to": request_id}
        self.send(link.index, error)

    def _fail_requests(self, peer_index: int | None, error: TransportError) -> None:
        """Fail the requests waiting on `peer_index` (all of them when None)."""
        for peer, future in self._pending.values():
            if (peer_index is None or peer == peer_index) and not future.done():
                future.set_exception(error)

    # -- pings -----------------------------------------------------------------------------

    async def _serve_ping(self, peer_index: int, request: dict[str, Any]) -> dict[str, Any]:
        return {"type": "pong"}

    async def _ping_loop(self, link: _PeerLink) -> None:
        """Measure RTT; return (closing the outbound connection) after too many misses."""
        misses = 0
        while misses < PING_MISSES_MAX:
            await asyncio.sleep(self._ping_interval_s)
            if not link.connected:
                continue  # the answer comes back on the inbound connection
            started_s = time.monotonic()
            try:
                await self.request(link.index, {"type": "ping"}, self._ping_timeout_s)
            except TransportError as exc:
                misses += exc.code == "p2p.timeout"
                continue
            misses = 0
            link.last_rtt_s = time.monotonic() - started_s
            self.metrics.peer_rtt.labels(peer=link.label).observe(link.last_rtt_s)
        log.warning("validator %d answered no ping %d times; reconnecting", link.index, misses)

    # -- state and accounting --------------------------------------------------------------

    def _update_connected(self, link: _PeerLink) -> None:
        connected = link.outbound is not None and link.inbound is not None
        if connected == link.connected:
            return
        link.connected = connected
        self.metrics.peer_connected.labels(peer=link.label).set(int(connected))
        log.info("validator %d %s", link.index, "connected" if connected else "disconnected")
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        for listener in self._listeners:
            listener(link.index, connected)

    def _count_refusal(self, refusal: HandshakeRefused, dialled: _PeerLink | None = None) -> None:
        """Count a refusal against the validator dialled or claimed, if there is one."""
        link = dialled
        if link is None and refusal.claimed_index is not None:
            link = self._links.get(refusal.claimed_index)
        if link is None:
            counts, label = self._refused_unattributed, UNKNOWN_PEER_LABEL
        else:
            counts, label = link.counters.handshakes_refused, link.label
        counts[refusal.reason] = counts.get(refusal.reason, 0) + 1
        self.metrics.peer_handshakes_refused.labels(peer=label, reason=refusal.reason).inc()
        # Anything on the network can knock; only a refusal naming a validator is news.
        level = logging.DEBUG if link is None else logging.WARNING
        log.log(level, "p2p handshake refused (peer %s): %s", label, refusal.message)


def reconnect_delay_s(failures: int, rng: random.Random, *, peer_heard: bool = False) -> float:
    """The wait before the next dial: RECONNECT_DELAY_S_MIN doubled per failure in a row,
    capped at RECONNECT_DELAY_S_MAX (RECONNECT_DELAY_S_PEER_HEARD while the peer's own
    connection to us is up), less up to RECONNECT_JITTER_FRACTION of it at random."""
    cap_s = RECONNECT_DELAY_S_PEER_HEARD if peer_heard else RECONNECT_DELAY_S_MAX
    delay_s = min(RECONNECT_DELAY_S_MIN * 2 ** min(failures, 32), cap_s)
    return delay_s * (1 - RECONNECT_JITTER_FRACTION * rng.random())


def _disconnected(peer_index: int) -> TransportError:
    return TransportError("p2p.disconnected", f"connection to validator {peer_index} closed")

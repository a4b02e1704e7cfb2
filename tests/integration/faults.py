"""A fault-injecting TCP proxy mesh between the validators of a local network (tests only).

Every directed pair of validators (i -> j) gets its own forwarder: a listener on
127.0.0.1 (an ephemeral port) that pipes each accepted connection to node j's p2p port.
`install()` rewrites each node's `config.toml` so that node i dials node j through the
forwarder of (i, j). Since a node sends to a peer only on the connection it dialled itself
(`node.p2p.transport`), the forwarder (i, j) carries everything i says to j, and cutting
both (i, j) and (j, i) separates the two nodes completely while their HTTP APIs stay
reachable by clients.

While a pair is cut, its open connections are closed, new connections are accepted and
closed at once (the dialler sees a refused handshake and backs off), and bytes still in
flight are dropped. `heal()` lets traffic through again; the nodes redial on their own.

All forwarders run on one asyncio loop in a daemon thread. The mesh is bounded: it stops
itself after `lifetime_s` even if the test forgets to, and `close()` (or leaving the
`with` block) stops it at once: listeners and connections closed, thread joined.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import tomli_w

from node.testnet import LOCAL_HOST, Testnet

LIFETIME_S_DEFAULT: Final = 600.0
CONNECT_TIMEOUT_S: Final = 5.0
CONTROL_TIMEOUT_S: Final = 10.0
CHUNK_BYTES: Final = 64 * 1024
BIND_ATTEMPTS_MAX: Final = 20

Pair = tuple[int, int]


@dataclass
class PairStats:
    """What one forwarder (i -> j) did: connections piped and refused, bytes forwarded."""

    connections: int = 0
    refused: int = 0
    bytes_forwarded: int = 0
    bytes_dropped: int = 0


@dataclass(eq=False)  # hashed by identity: kept in sets
class _Link:
    """One proxied connection: the dialler's side and the upstream side."""

    downstream: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def abort(self) -> None:
        for writer in (self.downstream, self.upstream):
            writer.transport.abort()


class ProxyMesh:
    """Forwarders for every ordered pair of `testnet`'s validators; cut and heal links."""

    def __init__(self, testnet: Testnet, *, lifetime_s: float = LIFETIME_S_DEFAULT) -> None:
        for node in testnet.nodes:
            host = node.p2p.rsplit(":", 1)[0]
            if host != LOCAL_HOST:
                raise ValueError(f"node {node.index} p2p host {host!r}: the mesh is 127.0.0.1 only")
        self.testnet = testnet
        self.lifetime_s = lifetime_s
        count = len(testnet.nodes)
        self.pairs: tuple[Pair, ...] = tuple(
            (i, j) for i in range(count) for j in range(count) if i != j
        )
        self.ports: dict[Pair, int] = {}
        self.stats: dict[Pair, PairStats] = {pair: PairStats() for pair in self.pairs}
        self._blocked: set[Pair] = set()
        self._links: dict[Pair, set[_Link]] = {pair: set() for pair in self.pairs}
        self._servers: list[asyncio.Server] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="proxy-mesh", daemon=True
        )
        self._started = False
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    def install(self) -> ProxyMesh:
        """Start every forwarder and point each node's `[p2p].peers` at them.

        Call before the nodes start (a running node reads its config only at start).
        """
        if self._started:
            raise RuntimeError("the mesh is installed already")
        self._started = True
        self._thread.start()
        self._call(self._start_servers())
        for node in self.testnet.nodes:
            path = node.home / "config.toml"
            config: dict[str, Any] = tomllib.loads(path.read_text())
            config["p2p"]["peers"] = [
                {"index": j, "host": LOCAL_HOST, "port": self.ports[(node.index, j)]}
                for j in range(len(self.testnet.nodes))
                if j != node.index
            ]
            path.write_text(tomli_w.dumps(config))
        return self

    def close(self) -> None:
        """Stop every forwarder and connection and join the thread (idempotent)."""
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        with contextlib.suppress(Exception):
            future.result(CONTROL_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CONTROL_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> ProxyMesh:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- faults ----------------------------------------------------------------------------

    def cut(self, node: int) -> None:
        """Separate `node` from every other validator, both directions."""
        others = [n.index for n in self.testnet.nodes if n.index != node]
        self._block([(node, o) for o in others] + [(o, node) for o in others])

    def cut_between(self, a: int, b: int) -> None:
        """Separate validators `a` and `b` from each other, both directions."""
        self._block([(a, b), (b, a)])

    def cut_one_way(self, source: int, target: int) -> None:
        """Drop what `source` sends to `target` (and the answers on that connection)."""
        self._block([(source, target)])

    def heal(self, *, keep: Iterable[Pair] = ()) -> None:
        """Let every pair through again but those in `keep` (a partition healing one
        direction before the other); the nodes redial with their own backoff."""
        kept = set(keep)
        unknown = kept - set(self.pairs)
        if unknown:
            raise ValueError(f"no such validator pairs: {sorted(unknown)}")
        self._call(self._set_blocked(self._blocked & kept))

    def blocked(self) -> set[Pair]:
        return set(self._blocked)

    def _block(self, pairs: Iterable[Pair]) -> None:
        wanted = set(pairs)
        unknown = wanted - set(self.pairs)
        if unknown:
            raise ValueError(f"no such validator pairs: {sorted(unknown)}")
        self._call(self._set_blocked(self._blocked | wanted))

    # -- the loop thread -------------------------------------------------------------------

    def _call(self, coroutine: Any) -> Any:
        if self._closed or not self._started:
            coroutine.close()
            raise RuntimeError("the mesh is not running")
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(CONTROL_TIMEOUT_S)

    async def _start_servers(self) -> None:
        # Ephemeral listening ports come from the same range as the nodes' own ports: never
        # take one of those (the node could not start), ask the kernel for another.
        reserved = {port for node in self.testnet.nodes for port in (node.api_port, node.p2p_port)}
        for pair in self.pairs:
            for _ in range(BIND_ATTEMPTS_MAX):
                server = await asyncio.start_server(
                    lambda r, w, pair=pair: self._accept(pair, r, w), LOCAL_HOST, 0
                )
                port = server.sockets[0].getsockname()[1]
                if port not in reserved:
                    break
                server.close()
                await server.wait_closed()
            else:
                raise RuntimeError("no listening port outside the nodes' ports")
            self.ports[pair] = port
            self._servers.append(server)
        # Bounded: a mesh a test forgot to close stops on its own.
        self._loop.call_later(self.lifetime_s, lambda: asyncio.ensure_future(self._shutdown()))

    async def _shutdown(self) -> None:
        self._blocked = set(self.pairs)
        for server in self._servers:
            server.close()
        for links in self._links.values():
            for link in list(links):
                link.abort()
        tasks = [task for links in self._links.values() for link in links for task in link.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), CONTROL_TIMEOUT_S)
        self._servers = []

    async def _set_blocked(self, blocked: set[Pair]) -> None:
        self._blocked = blocked
        for pair in blocked:
            for link in list(self._links[pair]):
                link.abort()

    async def _accept(
        self, pair: Pair, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        stats = self.stats[pair]
        if pair in self._blocked:
            stats.refused += 1
            writer.transport.abort()
            return
        target = self.testnet.nodes[pair[1]]
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                up_reader, up_writer = await asyncio.open_connection(LOCAL_HOST, target.p2p_port)
        except (OSError, TimeoutError):
            writer.transport.abort()  # the target is down: the dialler retries later
            return
        if pair in self._blocked:  # cut while connecting
            stats.refused += 1
            writer.transport.abort()
            up_writer.transport.abort()
            return
        stats.connections += 1
        link = _Link(writer, up_writer)
        self._links[pair].add(link)
        link.tasks = [
            asyncio.ensure_future(self._pump(pair, reader, up_writer)),
            asyncio.ensure_future(self._pump(pair, up_reader, writer)),
        ]
        try:
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in link.tasks:
                task.cancel()
            await asyncio.gather(*link.tasks, return_exceptions=True)
            link.abort()
            self._links[pair].discard(link)

    async def _pump(
        self, pair: Pair, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        stats = self.stats[pair]
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(CHUNK_BYTES):
                if pair in self._blocked:
                    stats.bytes_dropped += len(data)
                    return
                stats.bytes_forwarded += len(data)
                writer.write(data)
                await writer.drain()

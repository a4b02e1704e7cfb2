"""`chancery start`: run one node process until SIGINT or SIGTERM.

Wires config -> services -> peer transport, relay, state transfer, the PBFT driver and the
HTTP API, and tears them down in reverse order. Logic lives in the layers; this module
only starts and stops them. A single validator runs the same PBFT path with a quorum of one.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from node.api.app import create_app
from node.config import ConfigError, NodeConfig, StorageSection, load_config
from node.crypto import KeyFileError
from node.gc_tuning import tune_garbage_collector
from node.genesis import GenesisError
from node.loop_watchdog import LoopWatchdog
from node.p2p.transport import PeerTransport, TransportError
from node.pbft import ConsensusDriver, commit_thread, execution_thread
from node.relay import TransactionRelay
from node.services import NodeServices, NodeSetupError, build_services, load_node_keys
from node.storage import StorageError
from node.supervisor import port_in_use
from node.sync import BlockSync
from node.thread_priority import BackgroundThreadPriority

log = logging.getLogger("chancery")

SHUTDOWN_GRACE_S = 5.0
# How often to look for LevelDB's compaction thread (it starts with the first flush).
THREAD_SCAN_INTERVAL_S = 5.0
# Test-only: makes this node misbehave (see node/byzantine.py); used by multi-process tests.
BYZANTINE_ENV = "CHANCERY_TEST_BYZANTINE"


class PortInUseError(Exception):
    code = "node.port_in_use"


def _configure_logging(config: NodeConfig) -> None:
    logging.basicConfig(
        level=config.node.log_level.upper(),
        format=f"%(asctime)s node{config.node.index} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def check_ports_free(config: NodeConfig) -> None:
    """Refuse early, before opening the data directory, if a port is taken.

    Raises:
        PortInUseError: naming the port and what it is for.
    """
    for what, host, port in (
        ("API", config.api.host, config.api.port),
        ("p2p", config.p2p.host, config.p2p.port),
    ):
        if port_in_use(host, port):
            raise PortInUseError(
                f"{what} port {host}:{port} is in use (is this node already running?)"
            )


@dataclass
class Consensus:
    """Peer transport, relay, state transfer and the PBFT driver of one node."""

    transport: PeerTransport
    relay: TransactionRelay
    sync: BlockSync
    driver: ConsensusDriver

    @classmethod
    def build(cls, services: NodeServices) -> Consensus:
        thread = commit_thread()
        transport = PeerTransport(
            services.identity.index,
            services.key,
            services.genesis,
            services.config.p2p,
            services.metrics,
            on_message=lambda peer, raw: None,
        )
        relay = TransactionRelay(transport, services.admission, services.metrics)
        sync = BlockSync(
            transport, services.ledger, services.verifier, services.metrics, apply_executor=thread
        )
        driver = ConsensusDriver(services, transport, sync, thread, execution_thread())
        driver.relay = relay
        byzantine = os.environ.get(BYZANTINE_ENV)
        if byzantine:
            from node.byzantine import install  # test-only behaviour, never imported otherwise

            log.warning("TEST BUILD: this node is Byzantine (%s=%s)", BYZANTINE_ENV, byzantine)
            install(driver, byzantine)
        return cls(transport, relay, sync, driver)

    async def start(self) -> None:
        """Listen for peers and start relaying (the driver runs via `driver.run()`).

        Raises:
            TransportError: `p2p.port_in_use`.
        """
        await self.transport.start()
        await self.relay.start()

    async def stop(self) -> None:
        await self.driver.stop()
        await self.relay.stop()
        await self.transport.stop()
        self.sync.close()


@dataclass
class RunningNode:
    """The started parts of a node, stopped in reverse order."""

    consensus: Consensus
    http: web.AppRunner


async def _start(services: NodeServices) -> RunningNode:
    config = services.config
    await services.verifier.start()
    consensus = Consensus.build(services)
    runner = web.AppRunner(create_app(services), access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    try:
        await consensus.start()
        await web.TCPSite(runner, config.api.host, config.api.port, reuse_address=True).start()
    except (OSError, TransportError) as exc:
        await consensus.stop()
        await runner.cleanup()
        if isinstance(exc, TransportError):
            raise
        raise PortInUseError(
            f"cannot listen on {config.api.host}:{config.api.port}: {exc.strerror}"
        ) from None
    return RunningNode(consensus, runner)


async def _stop(node: RunningNode) -> None:
    await node.consensus.stop()
    await node.http.cleanup()


async def _serve(services: NodeServices) -> None:
    node = await _start(services)
    consensus = asyncio.create_task(node.consensus.driver.run(), name="consensus")
    log.info(
        "node %d (%s) serving http://%s:%d height=%d chain=%s validators=%d",
        services.identity.index,
        services.identity.org,
        services.config.api.host,
        services.config.api.port,
        services.store.height,
        services.genesis.chain_id,
        len(services.genesis.validators),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait())
    priority = asyncio.create_task(_lower_compaction_priority(services.config.storage))
    watchdog = asyncio.create_task(_watch_loop(services))
    await asyncio.wait([stopper, consensus], return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down")
    consensus.cancel()
    stopper.cancel()
    priority.cancel()
    watchdog.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await consensus
    await _stop(node)
    if consensus.done() and not consensus.cancelled() and consensus.exception() is not None:
        raise consensus.exception()  # type: ignore[misc] - a bug: crash loudly


async def _lower_compaction_priority(storage: StorageSection) -> None:
    """Keep LevelDB's compaction thread at `storage.compaction_nice`; it starts with the
    first flush, so it is looked for again every few seconds."""
    if storage.compaction_nice == 0:
        return
    priority = BackgroundThreadPriority(storage.compaction_nice)
    while True:
        priority.scan()
        await asyncio.sleep(THREAD_SCAN_INTERVAL_S)


async def _watch_loop(services: NodeServices) -> None:
    stall_ms = services.config.node.loop_stall_warn_ms
    if stall_ms == 0:
        return
    stalls = services.metrics.event_loop_stalls
    await LoopWatchdog(stall_ms / 1000, on_stall=stalls.inc).run()


def run_node(home: Path) -> int:
    """Run the node whose home is `home`; returns the process exit code."""
    try:
        config = load_config(home)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _configure_logging(config)
    # `kill -USR1 <pid>` writes every thread's stack to the log: what a hung node is doing.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        keys = load_node_keys(config)
        check_ports_free(config)
        services = build_services(config, keys)
    except PortInUseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (GenesisError, KeyFileError, StorageError, NodeSetupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    tune_garbage_collector()
    try:
        asyncio.run(_serve(services))
    except (PortInUseError, NodeSetupError, TransportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        services.close()
    return 0

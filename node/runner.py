"""`chancery start`: run one node process until SIGINT or SIGTERM.

Wires config -> services -> HTTP API + block production, and tears them down in reverse
order. Logic lives in the layers; this module only starts and stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from node.api.app import create_app
from node.config import ConfigError, NodeConfig, load_config
from node.crypto import KeyFileError
from node.genesis import GenesisError
from node.producer import SoloProducer
from node.services import NodeServices, NodeSetupError, build_services
from node.storage import StorageError

log = logging.getLogger("chancery")

SHUTDOWN_GRACE_S = 5.0


class PortInUseError(Exception):
    code = "node.port_in_use"


def _configure_logging(config: NodeConfig) -> None:
    logging.basicConfig(
        level=config.node.log_level.upper(),
        format=f"%(asctime)s node{config.node.index} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def _serve(services: NodeServices) -> None:
    config = services.config
    app = create_app(services)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    site = web.TCPSite(runner, config.api.host, config.api.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"API port {config.api.host}:{config.api.port} is in use (is another node running?)"
            ) from None
        raise
    producer = _start_producer(services)
    producer_task = asyncio.create_task(producer.run(), name="producer")
    log.info(
        "node %d (%s) serving http://%s:%d height=%d chain=%s",
        services.identity.index,
        services.identity.org,
        config.api.host,
        config.api.port,
        services.store.height,
        services.genesis.chain_id,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await asyncio.wait(
        [asyncio.create_task(stop.wait()), producer_task], return_when=asyncio.FIRST_COMPLETED
    )
    log.info("shutting down")
    producer_task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await producer_task
    producer.close()
    await runner.cleanup()


def _start_producer(services: NodeServices) -> SoloProducer:
    # One validator orders alone; PBFT (several validators) plugs in here.
    if len(services.genesis.validators) != 1:
        raise NodeSetupError(
            "this build orders blocks with a single validator; the genesis names "
            f"{len(services.genesis.validators)}"
        )
    return SoloProducer(
        services.ledger,
        services.mempool,
        services.notifier,
        services.key,
        services.identity.index,
        services.config.consensus.batch_interval_ms,
        services.metrics,
    )


def run_node(home: Path) -> int:
    """Run the node whose home is `home`; returns the process exit code."""
    try:
        config = load_config(home)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _configure_logging(config)
    try:
        services = build_services(config)
    except (GenesisError, KeyFileError, StorageError, NodeSetupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(services))
    except (PortInUseError, NodeSetupError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        services.close()
    return 0

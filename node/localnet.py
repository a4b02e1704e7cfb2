"""A local network on free ports, run as real node processes: for tests and the benchmark.

It generates a testnet with `node.testnet` and runs its nodes with `node.supervisor`, the
same code `chancery up` uses, adding what tests need: free ports, start/stop/kill of one
node, and restarts.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from node.supervisor import (
    NodeProcess,
    kill_nodes,
    node_command,
    start_process,
    stop_nodes,
    tail_lines,
    wait_until_healthy,
)
from node.testnet import Testnet, generate_testnet

PORT_SEARCH_ATTEMPTS: Final = 200
# Both below 32768, the start of the kernel's ephemeral range: an outbound connection could
# otherwise borrow a stopped node's port and keep it from restarting.
API_PORT_RANGE: Final = (12000, 9000)  # start, span
P2P_PORT_RANGE: Final = (21500, 9000)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_base(count: int, port_range: tuple[int, int] = API_PORT_RANGE) -> int:
    """A base port such that `count` consecutive ports from it are free right now."""
    start, span = port_range
    seed = (os.getpid() * 7919 + time.monotonic_ns()) % span
    for attempt in range(PORT_SEARCH_ATTEMPTS):
        base = start + (seed + attempt * 97) % span
        if all(_port_free(base + offset) for offset in range(count)):
            return base
    raise RuntimeError("no free port range found")


@dataclass
class LocalNetwork:
    """A testnet directory plus the node processes started from it (by index)."""

    testnet: Testnet
    processes: dict[int, NodeProcess] = field(default_factory=dict)

    @classmethod
    def generate(
        cls, directory: Path, validators: int = 1, params: dict[str, int] | None = None
    ) -> LocalNetwork:
        testnet = generate_testnet(
            directory,
            validators,
            base_api_port=free_port_base(validators, API_PORT_RANGE),
            base_p2p_port=free_port_base(validators, P2P_PORT_RANGE),
            params=params,
        )
        return cls(testnet)

    def start(
        self, index: int, *, wait: bool = True, env: dict[str, str] | None = None
    ) -> NodeProcess:
        """Start node `index`; `env` adds environment variables (config overrides)."""
        node = self.testnet.nodes[index]
        process = start_process(
            index,
            node_command(node.home),
            node.api_url,
            node.log_path,
            {**os.environ, **(env or {})},
        )
        self.processes[index] = process
        if wait:
            wait_until_healthy([process])
        return process

    def start_all(self) -> None:
        started = [self.start(index, wait=False) for index in range(len(self.testnet.nodes))]
        wait_until_healthy(started)

    def kill(self, index: int) -> None:
        """`kill -9`: no shutdown code runs, like a power cut for the process."""
        kill_nodes([self.processes[index]])

    def stop(self, index: int) -> int:
        """SIGTERM and wait: a clean shutdown. Returns the exit code."""
        return stop_nodes([self.processes[index]])[index]

    def stop_all(self) -> None:
        stop_nodes(list(self.processes.values()))

    def log_tail(self, index: int, lines: int = 40) -> str:
        return "\n".join(tail_lines(self.testnet.nodes[index].log_path, lines))

    def url(self, index: int = 0) -> str:
        return self.testnet.nodes[index].api_url

    def get_json(self, path: str, index: int = 0) -> tuple[int, Any]:
        """GET a JSON route; returns (status, decoded body) also for error statuses."""
        try:
            with urllib.request.urlopen(self.url(index) + path, timeout=10) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

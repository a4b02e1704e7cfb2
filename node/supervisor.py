"""Starting and stopping local node processes: `chancery up` and integration tests.

Each node runs as `python -m node start --home HOME` in its own session (so a Ctrl-C in
the terminal reaches only the supervisor, which then stops the nodes in order), with its
output appended to `HOME/node.log`. Nothing here knows about consensus; it only starts
processes, polls `GET /v1/health`, and stops them with SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from node.testnet import LOCAL_HOST, Testnet

HEALTH_TIMEOUT_S_DEFAULT: Final = 30.0
HEALTH_POLL_INTERVAL_S: Final = 0.1
HEALTH_REQUEST_TIMEOUT_S: Final = 1.0
STOP_GRACE_S_DEFAULT: Final = 10.0
LOG_TAIL_LINES: Final = 20
LOG_TAIL_BYTES_MAX: Final = 64 * 1024


class SupervisorError(Exception):
    """A node that did not come up: exited early, or never answered /v1/health."""

    code = "supervisor.node_failed"


@dataclass(frozen=True)
class NodeProcess:
    """A running node: which one, where it answers, where it logs, and its process."""

    index: int
    api_url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_code(self) -> int | None:
        """The exit code once the process has ended, else None (never blocks)."""
        return self.process.poll()


def node_command(home: Path) -> list[str]:
    """The command that runs one node: this interpreter, so the same virtualenv."""
    return [sys.executable, "-m", "node", "start", "--home", str(home)]


def start_process(
    index: int,
    command: Sequence[str],
    api_url: str,
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> NodeProcess:
    """Start `command` with stdout and stderr appended to `log_path`.

    Raises:
        OSError: the command cannot be started or the log cannot be opened.
    """
    child_env = dict(os.environ if env is None else env)
    # Unbuffered, so the log shows the last lines even of a node that hangs.
    child_env["PYTHONUNBUFFERED"] = "1"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
        )
    return NodeProcess(index, api_url, log_path, process)


def start_testnet(testnet: Testnet, env: Mapping[str, str] | None = None) -> list[NodeProcess]:
    """Start every node of `testnet` (without waiting for them to serve).

    Raises:
        OSError: a node cannot be started; the ones already started are stopped first.
    """
    started: list[NodeProcess] = []
    try:
        for node in testnet.nodes:
            command = node_command(node.home)
            started.append(start_process(node.index, command, node.api_url, node.log_path, env))
    except OSError:
        stop_nodes(started)
        raise
    return started


def port_in_use(host: str, port: int) -> bool:
    """True when something listens on (or holds) `host:port`, so a node could not bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the node binds: a port left in TIME_WAIT by a stopped node is free for it.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def busy_ports(testnet: Testnet) -> list[str]:
    """Descriptions of the testnet's API and p2p ports that are taken, e.g. "8600 (node 0 API)"."""
    busy = []
    for node in testnet.nodes:
        for kind, port in (("API", node.api_port), ("p2p", node.p2p_port)):
            if port_in_use(LOCAL_HOST, port):
                busy.append(f"{port} (node {node.index} {kind})")
    return busy


def is_healthy(api_url: str, timeout_s: float = HEALTH_REQUEST_TIMEOUT_S) -> bool:
    """True when `GET api_url/v1/health` answers 200."""
    try:
        with urllib.request.urlopen(f"{api_url}/v1/health", timeout=timeout_s) as answer:
            return answer.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def tail_lines(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    """The last `lines` lines of a log file (reads at most LOG_TAIL_BYTES_MAX)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_TAIL_BYTES_MAX))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def failure_report(node: NodeProcess, reason: str) -> str:
    """`node N <reason>; last lines of LOG:` and the log's tail, indented."""
    tail = tail_lines(node.log_path)
    shown = "\n".join(f"    {line}" for line in tail) if tail else "    (the log is empty)"
    return f"node {node.index} {reason}; last lines of {node.log_path}:\n{shown}"


def wait_until_healthy(
    nodes: Iterable[NodeProcess],
    timeout_s: float = HEALTH_TIMEOUT_S_DEFAULT,
    poll_interval_s: float = HEALTH_POLL_INTERVAL_S,
) -> None:
    """Block until every node answers /v1/health, all within one `timeout_s` deadline.

    Raises:
        SupervisorError: a node exited or stayed silent; the message shows its log's tail.
    """
    deadline = time.monotonic() + timeout_s
    for node in nodes:
        while not is_healthy(node.api_url):
            code = node.exit_code()
            if code is not None:
                raise SupervisorError(failure_report(node, f"exited with code {code} early"))
            if time.monotonic() >= deadline:
                reason = f"did not answer {node.api_url}/v1/health within {timeout_s:g} s"
                raise SupervisorError(failure_report(node, reason))
            time.sleep(poll_interval_s)


def _signal(node: NodeProcess, signal_number: int) -> None:
    if node.exit_code() is None:
        # It may exit between poll() and the signal.
        with contextlib.suppress(ProcessLookupError):
            node.process.send_signal(signal_number)


def stop_nodes(
    nodes: Sequence[NodeProcess], grace_s: float = STOP_GRACE_S_DEFAULT
) -> dict[int, int]:
    """SIGTERM every node, wait up to `grace_s` in total, then SIGKILL the rest.

    Returns each node's exit code by index (negative: killed by that signal).
    """
    for node in nodes:
        _signal(node, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    codes: dict[int, int] = {}
    for node in nodes:
        try:
            codes[node.index] = node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal(node, signal.SIGKILL)
            codes[node.index] = node.process.wait()
    return codes


def kill_nodes(nodes: Sequence[NodeProcess]) -> None:
    """SIGKILL every node still running and reap it (the impatient second Ctrl-C)."""
    for node in nodes:
        _signal(node, signal.SIGKILL)
    for node in nodes:
        node.process.wait()


def exited_nodes(nodes: Sequence[NodeProcess]) -> list[NodeProcess]:
    """The nodes whose process has ended."""
    return [node for node in nodes if node.exit_code() is not None]

"""PBFT between several validators, as real node processes on 127.0.0.1 with real LevelDB.

The six scenarios of the multi-validator issue:

1. 4 nodes under continuous load from several clients: the same block hash at every height
   on every node, every acknowledged transaction committed exactly once.
2. `kill -9` of the primary under load: a new view forms, commits resume, nothing
   acknowledged is lost; the pause a client on another node sees is measured (with the
   default view timeout and with a reduced one).
3. A stopped backup misses 1,000 blocks, is restarted, catches up by state transfer and
   votes again; likewise a node restarted with an empty data directory.
4. A fault-injecting proxy mesh (`tests/integration/faults.py`) cuts one backup off and
   heals it; then cuts the primary off from the other validators (not from clients).
5. A Byzantine validator (`node/byzantine.py`, installed by CHANCERY_TEST_BYZANTINE:
   equivocate, forge, silent) cannot make the honest nodes diverge or stall.
6. 7 validators (f = 2) with 2 of them killed still commit.

Every wait has a deadline, every node process is stopped when its test ends, and every test
checks concrete things: heights, the hash at every height on every node (GET
/v1/blocks/{h}), and each acknowledged tx_id found exactly once by scanning the blocks.
Measured figures are printed (run pytest with -s to see them) and recorded with
`record_property` (they appear in a JUnit XML report).

Some tests pin down bugs these scenarios found, fixed since (a restarted node that stayed
behind while the network was idle, a healed node that never rejoined, transactions stranded
in a cut-off node's mempool, honest backups blamed for relaying a NEW-VIEW): they are
regression tests now. One is still open, `test_healed_old_primary_votes_in_the_current_view`:
xfail(strict=True, raises=<its symptom>), so any other failure there still fails and an
XPASS tells that the mark must go. Agreement after a catch-up is awaited under a trickle of probe
transactions (`Cluster.wait_agreement(probe_via=...)`; the count is reported): a replica
that missed the last block of a burst hears of it only from later consensus traffic.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import pytest

from consensus.quorum import quorum_size
from node.client import Client, ClientError, SseParser
from node.crypto import SigningKey, load_key_file
from node.localnet import LocalNetwork
from node.runner import BYZANTINE_ENV
from node.supervisor import is_healthy
from node.transaction import sign_transaction
from tests.integration.faults import ProxyMesh

VIEW_TIMEOUT_ENV: Final = "CHANCERY_CONSENSUS_VIEW_TIMEOUT_MS"
DEFAULT_VIEW_TIMEOUT_MS: Final = 2000  # node.config ConsensusSection.view_timeout_ms
FAST_VIEW_TIMEOUT_MS: Final = 1000
FAST: Final = {VIEW_TIMEOUT_ENV: str(FAST_VIEW_TIMEOUT_MS)}
COMMIT_WAIT_MS: Final = 20_000
POLL_S: Final = 0.05
AGREE_TIMEOUT_S: Final = 45.0
LOAD_STOP_TIMEOUT_S: Final = COMMIT_WAIT_MS / 1000 + 10
SUBMIT_RETRY_PAUSE_S: Final = 0.2
PROBE_AFTER_S: Final = 2.0
PORT_IN_USE_RETRIES: Final = 3
# Suspicion codes that do not accuse the peer of anything (it was merely ahead of us).
BENIGN: Final = frozenset({"outside_window"})


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def report(record_property: Callable[[str, Any], None], name: str, value: Any) -> None:
    """A measured figure: printed (visible with -s) and recorded in the test report."""
    print(f"[consensus] {name} = {value}")
    record_property(name, value)


def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: Callable[[], str] | str
) -> float:
    """Poll `condition` until true; returns the seconds it took. Fails after `timeout_s`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            detail = what() if callable(what) else what
            pytest.fail(f"not within {timeout_s:g} s: {detail}")
        time.sleep(POLL_S)
    return time.monotonic() - started


# --- the cluster -------------------------------------------------------------------------


class Cluster:
    """A LocalNetwork of real processes plus what the tests ask of it."""

    def __init__(self, net: LocalNetwork, env: dict[str, str], mesh: ProxyMesh | None) -> None:
        self.net = net
        self.env = env
        self.mesh = mesh
        self.size = len(net.testnet.nodes)
        self.quorum = quorum_size(self.size)
        self.chain_id = net.testnet.chain_id
        self.keys = [load_key_file(org.admin_key) for org in net.testnet.orgs]
        self.node_env: dict[int, dict[str, str]] = {}
        self.probes = 0  # probe transactions wait_agreement needed

    # -- processes ------------------------------------------------------------------------

    def start(self, index: int, *, wait: bool = True, env: dict[str, str] | None = None) -> None:
        if env is not None:
            self.node_env[index] = env
        self._spawn(index)
        if wait:
            self.wait_healthy(index)

    def _spawn(self, index: int) -> None:
        self.net.start(index, wait=False, env={**self.env, **self.node_env.get(index, {})})

    def wait_healthy(self, index: int, timeout_s: float = 30) -> None:
        """Until node `index` serves /v1/health.

        A start that fails because its port is taken is retried a few times: localnet's
        ports lie in the kernel's ephemeral range, so while a node is down any outbound
        connection on the machine may borrow its port for a moment (reported as a bug).
        """
        for attempt in range(PORT_IN_USE_RETRIES + 1):
            process = self.net.processes[index]
            wait_until(
                lambda p=process: is_healthy(self.net.url(index)) or p.exit_code() is not None,
                timeout_s,
                lambda: f"node {index} never served /v1/health\n{self.net.log_tail(index)}",
            )
            if process.exit_code() is None:
                return
            tail = self.net.log_tail(index, 5)
            if "is in use" not in tail or attempt == PORT_IN_USE_RETRIES:
                pytest.fail(f"node {index} exited with {process.exit_code()}:\n{tail}")
            time.sleep(1.0)
            self._spawn(index)

    def start_all(self) -> None:
        for index in range(self.size):
            self.start(index, wait=False)
        for index in range(self.size):
            self.wait_healthy(index)
        # All peers connected: otherwise the first proposals race the dials.
        wait_until(
            lambda: all(self.connected(i) == set(range(self.size)) for i in range(self.size)),
            30,
            self.describe,
        )

    def kill(self, index: int) -> None:
        self.net.kill(index)

    def stop(self, index: int) -> None:
        self.net.stop(index)

    def running(self, index: int) -> bool:
        process = self.net.processes.get(index)
        return process is not None and process.exit_code() is None

    # -- reads ----------------------------------------------------------------------------

    def status(self, index: int) -> dict[str, Any]:
        code, body = self.net.get_json("/v1/status", index)
        assert code == 200, (index, code, body)
        return body  # type: ignore[no-any-return]

    def height(self, index: int) -> int:
        return int(self.status(index)["height"])

    def connected(self, index: int) -> set[int]:
        return {v["index"] for v in self.status(index)["validators"] if v["connected"]}

    def wait_connected(self, index: int, peers: Sequence[int], timeout_s: float = 30) -> None:
        """Until node `index` has both directions up to every node in `peers` (peers redial
        a node that was down or cut off with a backoff of up to 5 s)."""
        wait_until(
            lambda: (
                set(peers) <= self.connected(index)
                and all(index in self.connected(p) for p in peers)
            ),
            timeout_s,
            lambda: f"node {index} not connected to {list(peers)}\n{self.describe()}",
        )

    def metric_samples(self, index: int, name: str) -> list[tuple[dict[str, str], float]]:
        """The samples of metric `name` on node `index`: (labels, value) pairs."""
        with urllib.request.urlopen(self.net.url(index) + "/metrics", timeout=10) as answer:
            body = answer.read().decode()
        samples = []
        for line in body.splitlines():
            key, _, value = line.rpartition(" ")
            sample, _, label_text = key.partition("{")
            if line.startswith("#") or sample != name:
                continue
            labels = {}
            for pair in label_text.rstrip("}").split(","):
                if "=" in pair:
                    label, _, quoted = pair.partition("=")
                    labels[label] = quoted.strip('"')
            samples.append((labels, float(value)))
        return samples

    def metric(self, index: int, name: str, **labels: str) -> float:
        """The sum of the samples of metric `name` whose labels include `labels`."""
        return sum(
            value
            for found, value in self.metric_samples(index, name)
            if all(found.get(k) == v for k, v in labels.items())
        )

    def suspicions(self, index: int, peer: int) -> dict[str, int]:
        """What node `index` held against validator `peer`: suspicion code -> count."""
        return {
            labels["code"]: int(value)
            for labels, value in self.metric_samples(index, "chancery_peer_suspicions_total")
            if labels.get("peer") == str(peer) and value
        }

    def describe(self, nodes: Sequence[int] | None = None) -> str:
        """Every node's height, view, mempool and peers, and the log tails (for failures)."""
        lines = []
        for index in range(self.size) if nodes is None else nodes:
            if not self.running(index):
                lines.append(f"node {index}: not running")
                continue
            try:
                s = self.status(index)
                connected = [v["index"] for v in s["validators"] if v["connected"]]
                suspicions = {
                    f"{labels['peer']}:{labels['code']}": int(value)
                    for labels, value in self.metric_samples(
                        index, "chancery_peer_suspicions_total"
                    )
                    if value
                }
                lines.append(
                    f"node {index}: height={s['height']} view={s['view']} primary={s['primary']}"
                    f" mempool={s['mempool']['size']} syncing={s['syncing']}"
                    f" connected={connected} last={s['last_block_hash'][:12]}"
                    f" suspicions={suspicions}"
                )
            except Exception as exc:
                lines.append(f"node {index}: status failed: {exc!r}")
        for index in range(self.size) if nodes is None else nodes:
            lines.append(f"--- node {index} log tail ---\n{self.net.log_tail(index, 12)}")
        return "\n".join(lines)

    # -- agreement ------------------------------------------------------------------------

    def wait_agreement(
        self,
        nodes: Sequence[int],
        *,
        probe_via: int | None = None,
        drained: Sequence[int] | None = None,
        timeout_s: float = AGREE_TIMEOUT_S,
    ) -> int:
        """Until `nodes` have one height and one tip, and the `drained` ones (default: all)
        empty mempools; returns the height.

        With `probe_via`, a probe transaction is committed through that node whenever
        agreement has not come for `PROBE_AFTER_S`: a replica that missed the last block of
        a burst hears of it only from later consensus traffic.
        """

        empty = set(nodes if drained is None else drained)

        def agreed() -> bool:
            statuses = {i: self.status(i) for i in nodes}
            tips = {(s["height"], s["last_block_hash"]) for s in statuses.values()}
            return len(tips) == 1 and all(
                s["mempool"]["size"] == 0 for i, s in statuses.items() if i in empty
            )

        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            wait_s = min(PROBE_AFTER_S, remaining) if probe_via is not None else remaining
            try:
                wait_until(
                    agreed,
                    max(0.0, wait_s),
                    lambda: f"nodes {list(nodes)} disagree\n{self.describe()}",
                )
                return self.height(nodes[0])
            except pytest.fail.Exception:
                if probe_via is None or time.monotonic() >= deadline:
                    raise
            self.probes += 1
            with contextlib.suppress(ClientError):
                commit_some(self, probe_via, 1)

    def keeps_up(
        self,
        node: int,
        via: int,
        *,
        commits: int = 3,
        within_s: float = 5.0,
    ) -> None:
        """`node` follows the chain block by block: after each of `commits` transactions
        committed one at a time through `via`, it reaches that height within `within_s`.

        (Whether it also votes is a different question: see `signers`.)
        """
        for answer in commit_some(self, via, commits):
            wait_until(
                lambda h=answer["height"]: self.height(node) >= h,
                within_s,
                lambda h=answer["height"]: f"node {node} did not commit {h}\n{self.describe()}",
            )

    def chain(self, index: int, upto: int) -> list[dict[str, Any]]:
        """Blocks 0..upto of node `index`, each from GET /v1/blocks/{h}."""
        with Client(self.net.url(index)) as client:
            return [client.block(h) for h in range(upto + 1)]

    def assert_same_chain(self, nodes: Sequence[int], upto: int) -> list[dict[str, Any]]:
        """Every height 0..upto has one block hash on all `nodes`, a linked, certified chain.

        Returns the chain (of the first node).
        """
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
            chains = dict(zip(nodes, pool.map(lambda i: self.chain(i, upto), nodes), strict=True))
        reference = chains[nodes[0]]
        for height in range(upto + 1):
            hashes = {i: chains[i][height]["hash"] for i in nodes}
            assert len(set(hashes.values())) == 1, f"nodes diverge at height {height}: {hashes}"
            tx_ids = {i: tuple(chains[i][height]["tx_ids"]) for i in nodes}
            assert len(set(tx_ids.values())) == 1, f"tx_ids differ at height {height}"
        for height in range(1, upto + 1):
            block = reference[height]
            assert block["header"]["height"] == height
            assert block["header"]["prev_hash"] == reference[height - 1]["hash"], height
            commit = block["commit"]
            assert commit["height"] == height and commit["block_hash"] == block["hash"]
            signers = [index for index, _ in commit["signatures"]]
            assert len(set(signers)) == len(signers) >= self.quorum, (height, signers)
            assert all(0 <= s < self.size for s in signers), (height, signers)
        return reference


def tx_positions(chain: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    """tx_id -> every height it appears at (exactly one expected)."""
    positions: dict[str, list[int]] = {}
    for block in chain:
        for tx_id in block["tx_ids"]:
            positions.setdefault(tx_id, []).append(block["header"]["height"])
    return positions


def assert_no_tx_repeated(chain: Sequence[dict[str, Any]]) -> dict[str, list[int]]:
    positions = tx_positions(chain)
    repeated = {tx_id: hs for tx_id, hs in positions.items() if len(hs) > 1}
    assert not repeated, f"transactions committed more than once: {repeated}"
    return positions


@pytest.fixture
def make_cluster(tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Builds clusters; every node process and proxy mesh is stopped when the test ends."""
    clusters: list[Cluster] = []

    def make(
        validators: int = 4,
        *,
        env: dict[str, str] | None = None,
        params: dict[str, int] | None = None,
        mesh: bool = False,
        node_env: dict[int, dict[str, str]] | None = None,
        start: bool = True,
    ) -> Cluster:
        net = LocalNetwork.generate(
            tmp_path / f"net{len(clusters)}", validators=validators, params=params
        )
        proxy = ProxyMesh(net.testnet).install() if mesh else None
        cluster = Cluster(net, dict(env or {}), proxy)
        cluster.node_env.update(node_env or {})
        clusters.append(cluster)
        if start:
            cluster.start_all()
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.net.stop_all()
            if cluster.mesh is not None:
                cluster.mesh.close()


# --- load --------------------------------------------------------------------------------


@dataclass
class LoadResult:
    """What the clients were told, per tx_id."""

    acked: dict[str, int] = field(default_factory=dict)  # committed answer -> its height
    pending: set[str] = field(default_factory=set)  # admitted (202 or 504): must commit
    uncertain: set[str] = field(default_factory=set)  # no answer: at most once
    refused: Counter[str] = field(default_factory=Counter)


class Load:
    """Client threads submitting signed transactions with wait=commit to given nodes."""

    def __init__(
        self,
        cluster: Cluster,
        targets: Sequence[int],
        *,
        per_target: int = 1,
        wait: str = "commit",
        pause_s: float = 0.0,
    ) -> None:
        self.cluster = cluster
        self.wait = wait
        self.pause_s = pause_s
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._work, args=(target, worker), name=f"load-{target}-{worker}"
            )
            for worker, target in enumerate(t for t in targets for _ in range(per_target))
        ]
        self.errors: list[BaseException] = []

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self.stop(check=exc_type is None)  # never mask the exception that ends the block

    def stop(self, *, check: bool = True) -> LoadResult:
        """Stop and join every client thread (bounded); the result of what they were told."""
        self._stop.set()
        deadline = time.monotonic() + LOAD_STOP_TIMEOUT_S
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if check:
            stuck = [t.name for t in self._threads if t.is_alive()]
            assert not stuck, f"load threads did not stop: {stuck}"
            assert not self.errors, f"load thread crashed: {self.errors!r}"
        return self.result

    def acked_count(self) -> int:
        with self._lock:
            return len(self.result.acked)

    def _work(self, target: int, worker: int) -> None:
        key: SigningKey = self.cluster.keys[worker % len(self.cluster.keys)]
        try:
            with Client(self.cluster.net.url(target), timeout_s=10) as client:
                sequence = 0
                while not self._stop.is_set():
                    sequence += 1
                    self._submit_one(client, key, f"w{worker}-{sequence}")
                    if self.pause_s:
                        self._stop.wait(self.pause_s)
        except BaseException as exc:  # reported by stop(), not lost in the thread
            self.errors.append(exc)

    def _submit_one(self, client: Client, key: SigningKey, name: str) -> None:
        tx = sign_transaction(
            key,
            self.cluster.chain_id,
            "membership",
            "add_member",
            {"public_key": os.urandom(32), "name": name},
            int.from_bytes(os.urandom(7), "big"),
            now_ms(),
        )
        tx_id = tx.tx_id.hex()
        try:
            answer = client.submit_envelope(
                tx.envelope,
                wait=self.wait,
                timeout_ms=COMMIT_WAIT_MS,  # type: ignore[arg-type]
            )
        except ClientError as error:
            with self._lock:
                if error.code == "tx.commit_timeout":
                    self.result.pending.add(tx_id)
                elif error.status is None:
                    self.result.uncertain.add(tx_id)
                else:
                    self.result.refused[error.code] += 1
            self._stop.wait(SUBMIT_RETRY_PAUSE_S)
            return
        with self._lock:
            if answer["status"] == "committed":
                assert answer["receipt"]["ok"] is True, answer
                self.result.acked[tx_id] = answer["height"]
            else:
                self.result.pending.add(tx_id)


def check_transactions(result: LoadResult, chain: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Every acknowledged tx at its height exactly once, every admitted one once, none twice.

    Returns counts for reporting.
    """
    positions = assert_no_tx_repeated(chain)
    wrong = {
        tx_id: (height, positions.get(tx_id))
        for tx_id, height in result.acked.items()
        if positions.get(tx_id) != [height]
    }
    assert not wrong, f"acknowledged commits missing or moved (answer, chain): {wrong}"
    lost = sorted(tx_id for tx_id in result.pending if tx_id not in positions)
    assert not lost, f"admitted transactions never committed: {lost}"
    return {
        "acked": len(result.acked),
        "pending_then_committed": len(result.pending),
        "uncertain": len(result.uncertain),
        "uncertain_committed": sum(1 for t in result.uncertain if t in positions),
        "refused": sum(result.refused.values()),
    }


# --- commit timing as a client sees it ---------------------------------------------------


class CommitWatcher(threading.Thread):
    """Timestamps each `block` event of one node's /v1/events stream (a client's view).

    Plain http.client, so `stop()` can end the blocking read by shutting the socket down.
    """

    def __init__(self, url: str) -> None:
        super().__init__(name="commit-watcher", daemon=True)
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.commits: list[tuple[float, int]] = []
        self.connected = threading.Event()
        self.error: BaseException | None = None
        self._stopping = False
        self._lock = threading.Lock()

    def run(self) -> None:
        try:
            self.connection.request("GET", "/v1/events")
            response = self.connection.getresponse()
            assert response.status == 200, response.status
            self.connected.set()
            parser = SseParser()
            while line := response.fp.readline():
                message = parser.feed_line(line.decode().rstrip("\r\n"))
                if message is not None and message.event == "block":
                    height = json.loads(message.data)["height"]
                    with self._lock:
                        self.commits.append((time.monotonic(), height))
        except BaseException as exc:
            if not self._stopping:
                self.error = exc

    def snapshot(self) -> list[tuple[float, int]]:
        with self._lock:
            return list(self.commits)

    def stop(self) -> None:
        self._stopping = True
        sock = self.connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.connection.close()
        self.join(5)


def block_views(cluster: Cluster, index: int, heights: Sequence[int]) -> dict[int, int]:
    with Client(cluster.net.url(index)) as client:
        return {h: client.block(h)["header"]["view"] for h in heights}


# === 1. four nodes under continuous load =================================================


@pytest.mark.timeout(120)
def test_four_nodes_agree_under_continuous_load(
    make_cluster: Callable[..., Cluster], record_property: Callable[[str, Any], None]
) -> None:
    cluster = make_cluster(4, env=FAST)
    load_s = 6.0
    started = time.monotonic()
    with Load(cluster, targets=range(4), per_target=2) as load:
        time.sleep(load_s)
        result = load.stop()
    elapsed = time.monotonic() - started
    height = cluster.wait_agreement(range(4))
    chain = cluster.assert_same_chain(range(4), height)
    counts = check_transactions(result, chain)
    assert counts["acked"] >= 50, counts  # the load did run
    assert not result.refused, result.refused
    views = [cluster.status(i)["view"] for i in range(4)]
    report(record_property, "load_blocks", height)
    report(record_property, "load_acked_txs", counts["acked"])
    report(record_property, "load_acked_tx_per_s", round(counts["acked"] / elapsed, 1))
    report(record_property, "load_final_views", views)


# === 2. kill -9 the primary under load ==================================================


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    "view_timeout_ms", [FAST_VIEW_TIMEOUT_MS, DEFAULT_VIEW_TIMEOUT_MS], ids=["reduced", "default"]
)
def test_primary_kill_9_under_load(
    make_cluster: Callable[..., Cluster],
    record_property: Callable[[str, Any], None],
    view_timeout_ms: int,
) -> None:
    env = (
        {}
        if view_timeout_ms == DEFAULT_VIEW_TIMEOUT_MS
        else {VIEW_TIMEOUT_ENV: str(view_timeout_ms)}
    )
    cluster = make_cluster(4, env=env)
    primary = cluster.status(1)["primary"]
    assert primary == 0
    survivors = [1, 2, 3]
    watcher = CommitWatcher(cluster.net.url(2))  # a client on another node
    watcher.start()
    assert watcher.connected.wait(10), watcher.error
    try:
        # Clients on every node, the primary included (its in-flight answers are lost).
        with Load(cluster, targets=[0, 1, 2, 3], per_target=2) as load:
            wait_until(lambda: len(watcher.snapshot()) >= 20, 30, "no commits before the kill")
            killed_at = time.monotonic()
            cluster.kill(primary)
            height_at_kill = max(h for _, h in watcher.snapshot())
            # Commits resume in a new view: wait for 20 more blocks past the kill.
            wait_until(
                lambda: max(h for _, h in watcher.snapshot()) >= height_at_kill + 20,
                60,
                lambda: f"commits did not resume after the kill\n{cluster.describe(survivors)}",
            )
            result = load.stop()
    finally:
        watcher.stop()
    assert watcher.error is None, repr(watcher.error)
    commits = watcher.snapshot()
    height = cluster.wait_agreement(survivors)
    chain = cluster.assert_same_chain(survivors, height)
    counts = check_transactions(result, chain)

    statuses = [cluster.status(i) for i in survivors]
    assert all(s["view"] >= 1 and s["primary"] != primary for s in statuses), statuses
    before = [(t, h) for t, h in commits if t < killed_at]
    after = [(t, h) for t, h in commits if t >= killed_at]
    views = block_views(cluster, 1, [h for _, h in after[:300]])
    old_view = chain[before[-1][1]]["header"]["view"]
    first_new_view = next(((t, h) for t, h in after[:300] if views[h] > old_view), None)
    assert first_new_view is not None, (old_view, views)
    pause_first_s = after[0][0] - before[-1][0]
    pause_new_view_s = first_new_view[0] - before[-1][0]
    label = "default" if view_timeout_ms == DEFAULT_VIEW_TIMEOUT_MS else "reduced"
    report(record_property, f"kill_primary_{label}_view_timeout_ms", view_timeout_ms)
    report(
        record_property, f"kill_primary_{label}_pause_to_first_commit_s", round(pause_first_s, 3)
    )
    report(
        record_property,
        f"kill_primary_{label}_pause_to_new_view_commit_s",
        round(pause_new_view_s, 3),
    )
    report(
        record_property,
        f"kill_primary_{label}_in_flight_blocks_after_kill",
        first_new_view[1] - after[0][1],
    )
    report(record_property, f"kill_primary_{label}_txs", counts)
    # The new view needs at least one view timeout, and should not need many.
    assert view_timeout_ms / 1000 * 0.5 <= pause_new_view_s <= view_timeout_ms / 1000 * 8, (
        pause_new_view_s
    )


@pytest.mark.timeout(120)
def test_no_honest_validator_is_suspected_when_a_killed_primary_rejoins(
    make_cluster: Callable[..., Cluster], record_property: Callable[[str, Any], None]
) -> None:
    cluster = make_cluster(4, env=FAST)
    commit_some(cluster, 1, 3)
    cluster.kill(0)
    others = [1, 2, 3]
    with Load(cluster, targets=others, pause_s=0.05) as load:
        wait_until(lambda: all(cluster.status(i)["view"] >= 1 for i in others), 30, "no new view")
        wait_until(lambda: load.acked_count() >= 5, 30, cluster.describe)
        first = load.stop()
    cluster.start(0)
    restarted_at = time.monotonic()
    with Load(cluster, targets=others, pause_s=0.05) as load:
        # The restarted primary rejoins the others' view (the primary of that view helps it).
        wait_until(
            lambda: (
                cluster.status(0)["view"] == cluster.status(1)["view"]
                and cluster.height(0) >= cluster.height(1) - 1
            ),
            30,
            lambda: "the restarted primary did not rejoin\n" + cluster.describe(),
        )
        report(
            record_property, "killed_primary_rejoin_s", round(time.monotonic() - restarted_at, 2)
        )
        result = load.stop()
    height = cluster.wait_agreement(range(4), probe_via=1)
    chain = cluster.assert_same_chain(range(4), height)
    check_transactions(first, chain)
    check_transactions(result, chain)
    # Every validator is honest here: none may hold anything against another. (A backup
    # that forwards the NEW-VIEW to the latecomer was once refused as `sender_mismatch`.)
    # `outside_window` only says a peer was ahead of a node catching up: not an accusation.
    suspected = {
        (i, peer): codes
        for i in range(4)
        for peer in range(4)
        if peer != i
        and (codes := {c: n for c, n in cluster.suspicions(i, peer).items() if c not in BENIGN})
    }
    assert not suspected, f"(node, peer) -> suspicion codes: {suspected}"


# === 3. a backup misses 1,000 blocks; a node with an empty data directory ================


def submit_presigned(cluster: Cluster, targets: Sequence[int], count: int) -> list[str]:
    """`count` transactions in batches, from one thread per target node; their tx_ids."""
    stamp = now_ms()
    txs = [
        sign_transaction(
            cluster.keys[i % len(cluster.keys)],
            cluster.chain_id,
            "membership",
            "add_member",
            {"public_key": os.urandom(32), "name": f"bulk{i}"},
            int.from_bytes(os.urandom(7), "big"),
            stamp,
        )
        for i in range(count)
    ]
    shares = [txs[k :: len(targets)] for k in range(len(targets))]

    def send(target: int, share: list[Any]) -> None:
        with Client(cluster.net.url(target)) as client:
            for start in range(0, len(share), 100):
                answers = client.submit_batch([tx.envelope for tx in share[start : start + 100]])
                assert all(a.get("status") == "pending" for a in answers), answers[:3]

    with ThreadPoolExecutor(max_workers=len(targets)) as pool:
        list(pool.map(send, targets, shares))
    return [tx.tx_id.hex() for tx in txs]


def commit_some(cluster: Cluster, target: int, count: int) -> list[dict[str, Any]]:
    """`count` transactions, one at a time, each acknowledged as committed."""
    answers = []
    with Client(cluster.net.url(target)) as client:
        for i in range(count):
            answer = client.submit(
                "membership",
                "add_member",
                {"public_key": os.urandom(32), "name": f"probe{i}"},
                cluster.keys[0],
                wait="commit",
                timeout_ms=COMMIT_WAIT_MS,
            )
            assert answer["status"] == "committed" and answer["receipt"]["ok"], answer
            answers.append(answer)
    return answers


def signers(cluster: Cluster, index: int, height: int) -> set[int]:
    with Client(cluster.net.url(index)) as client:
        return {s for s, _ in client.block(height)["commit"]["signatures"]}


def catch_up_under_load(
    cluster: Cluster, laggard: int, live: Sequence[int], timeout_s: float
) -> float:
    """A trickle of load on `live` until `laggard` reaches their height and view; returns
    the seconds it took. (Catching up while idle: `test_restarted_backup_catches_up_while_idle`.)
    """

    def caught_up() -> bool:
        mine = cluster.status(laggard)
        theirs = [cluster.status(i) for i in live]
        return mine["height"] >= max(s["height"] for s in theirs) and mine["view"] == max(
            s["view"] for s in theirs
        )

    with Load(cluster, targets=live, pause_s=0.3):
        return wait_until(
            caught_up, timeout_s, lambda: f"node {laggard} did not catch up\n{cluster.describe()}"
        )


@pytest.mark.timeout(240)
def test_backup_misses_1000_blocks_catches_up_and_votes_again(
    make_cluster: Callable[..., Cluster], record_property: Callable[[str, Any], None]
) -> None:
    # One transaction per block makes 1,000 blocks cheap. Three clients committing one
    # transaction at a time keep at most 3 heights in flight: a deeper pipeline makes
    # backups drop PRE-PREPAREs beyond their window and stall into view changes (a bug
    # described in the report of this test file), which only slows this test down.
    cluster = make_cluster(4, params={"max_block_txs": 1})
    commit_some(cluster, 1, 3)
    backup = 3
    cluster.stop(backup)
    stopped_height = cluster.height(0)
    started = time.monotonic()
    with Load(cluster, targets=[0, 1, 2]) as load:
        wait_until(
            lambda: min(cluster.height(i) for i in (0, 1, 2)) >= stopped_height + 1000,
            120,
            lambda: f"1,000 blocks not committed\n{cluster.describe([0, 1, 2])}",
        )
        bulk = load.stop()
    report(record_property, "bulk_1000_blocks_s", round(time.monotonic() - started, 1))
    report(record_property, "bulk_1000_blocks_view_changes", cluster.status(0)["view"])

    # Restart the backup: it fetches the missed blocks by state transfer.
    cluster.start(backup)
    took = catch_up_under_load(cluster, backup, [0, 1, 2], 60)
    report(record_property, "restarted_backup_catch_up_s", round(took, 2))
    applied = cluster.metric(backup, "chancery_sync_blocks_applied_total")
    assert applied >= 1000, applied
    height = cluster.wait_agreement(range(4), probe_via=0)
    chain = cluster.assert_same_chain([0, backup], height)
    check_transactions(bulk, chain)

    # It votes again: with node 2 stopped, no commit happens without node 3.
    cluster.stop(2)
    answers = commit_some(cluster, 1, 3)
    assert all(backup in signers(cluster, 0, a["height"]) for a in answers), answers

    # A node restarted with an empty data directory syncs the whole chain from genesis.
    cluster.start(2)
    catch_up_under_load(cluster, 2, [0, 1, 3], 60)
    wiped = 1
    cluster.stop(wiped)
    shutil.rmtree(cluster.net.testnet.nodes[wiped].home / "data")
    cluster.start(wiped)
    took = catch_up_under_load(cluster, wiped, [0, 2, 3], 60)
    report(record_property, "empty_data_dir_catch_up_s", round(took, 2))
    applied = cluster.metric(wiped, "chancery_sync_blocks_applied_total")
    assert applied >= 1000, applied
    height = cluster.wait_agreement(range(4), probe_via=0)
    cluster.assert_same_chain([0, wiped], height)
    report(record_property, "empty_data_dir_blocks_synced", height)
    # And it votes: with node 2 stopped again, the quorum needs it.
    cluster.stop(2)
    answers = commit_some(cluster, 0, 3)
    assert all(wiped in signers(cluster, 0, a["height"]) for a in answers), answers
    height = cluster.wait_agreement([0, 1, 3], probe_via=0)
    cluster.assert_same_chain([0, 1, 3], height)
    report(record_property, "catch_up_probe_transactions", cluster.probes)


@pytest.mark.timeout(90)
def test_restarted_backup_catches_up_while_idle(
    make_cluster: Callable[..., Cluster], record_property: Callable[[str, Any], None]
) -> None:
    # No traffic after the restart: the node must find out by itself that it is behind.
    cluster = make_cluster(4, env=FAST)
    cluster.stop(3)
    commit_some(cluster, 0, 10)
    height = cluster.height(0)
    started = time.monotonic()
    cluster.start(3)
    wait_until(
        lambda: cluster.height(3) >= height,
        15,
        lambda: f"node 3 stays behind while idle\n{cluster.describe()}",
    )
    report(record_property, "idle_restart_catch_up_s", round(time.monotonic() - started, 2))
    cluster.assert_same_chain(range(4), cluster.wait_agreement(range(4)))


# === 4. network partitions through the proxy mesh =======================================


def heal_and_reconnect(cluster: Cluster, node: int, others: Sequence[int]) -> None:
    """Heal the mesh and wait until `node` and `others` are connected both ways again."""
    assert cluster.mesh is not None
    cluster.mesh.heal()
    cluster.wait_connected(node, others)


def stranded_submissions(cluster: Cluster, index: int, count: int) -> list[str]:
    """Transactions submitted (wait=none) to node `index`; their tx_ids."""
    with Client(cluster.net.url(index)) as client:
        return [
            client.submit(
                "membership",
                "add_member",
                {"public_key": os.urandom(32), "name": f"stranded{i}"},
                cluster.keys[0],
                wait="none",
            )["tx_id"]
            for i in range(count)
        ]


def assert_committed_once(cluster: Cluster, tx_ids: Sequence[str], timeout_s: float) -> None:
    """Each of `tx_ids` ends up committed, and exactly once, on the chain of node 1."""

    def committed(tx_id: str) -> bool:
        try:
            with Client(cluster.net.url(1)) as client:
                return client.transaction(tx_id)["status"] == "committed"
        except ClientError:
            return False

    wait_until(
        lambda: all(committed(t) for t in tx_ids),
        timeout_s,
        lambda: (
            f"never committed: {[t[:12] for t in tx_ids if not committed(t)]}\n"
            + cluster.describe()
        ),
    )


@pytest.mark.timeout(180)
def test_cut_backup_heals_and_cut_primary_is_replaced(
    make_cluster: Callable[..., Cluster], record_property: Callable[[str, Any], None]
) -> None:
    backup = 3
    cluster = make_cluster(4, env=FAST, mesh=True)
    mesh = cluster.mesh
    assert mesh is not None
    with Load(cluster, targets=[0, 1, 2], per_target=2) as load:
        wait_until(lambda: load.acked_count() >= 10, 30, "no commits before the cut")
        mesh.cut(backup)
        # A client of the cut-off backup: pending work there, so its view timer runs out.
        stranded = stranded_submissions(cluster, backup, 2)
        cut_height = cluster.height(0)
        wait_until(lambda: cluster.height(0) >= cut_height + 30, 60, cluster.describe)
        time.sleep(3 * FAST_VIEW_TIMEOUT_MS / 1000)  # a partition of a few view timeouts
        assert cluster.height(backup) <= cut_height + 4, cluster.describe()  # + window
        assert cluster.connected(backup) == {backup}
        mesh.heal()
        healed_at = time.monotonic()
        wait_until(lambda: cluster.height(backup) >= cluster.height(0) - 1, 60, cluster.describe)
        report(record_property, "healed_backup_catch_up_s", round(time.monotonic() - healed_at, 2))
        result = load.stop()
    assert_committed_once(cluster, stranded, 20)
    height = cluster.wait_agreement(range(4), probe_via=0)
    chain = cluster.assert_same_chain(range(4), height)
    counts = check_transactions(result, chain)
    assert counts["acked"] >= 30, counts
    assert all(len(tx_positions(chain).get(t, [])) == 1 for t in stranded)

    # Cut the primary off from the other validators; clients still reach it.
    primary = cluster.status(0)["primary"]
    others = [i for i in range(4) if i != primary]
    view_before = cluster.status(others[0])["view"]
    mesh.cut(primary)
    cut_at = time.monotonic()
    with Load(cluster, targets=others, per_target=2) as load:
        wait_until(
            lambda: all(cluster.status(i)["view"] > view_before for i in others),
            30,
            cluster.describe,
        )
        report(record_property, "cut_primary_view_change_s", round(time.monotonic() - cut_at, 2))
        new_view_height = max(cluster.height(i) for i in others)
        wait_until(lambda: cluster.height(others[0]) >= new_view_height + 20, 60, cluster.describe)
        result = load.stop()
    statuses = [cluster.status(i) for i in others]
    assert len({(s["view"], s["primary"]) for s in statuses}) == 1, statuses
    assert statuses[0]["primary"] != primary
    height = cluster.wait_agreement(others)
    chain = cluster.assert_same_chain(others, height)
    check_transactions(result, chain)
    report(record_property, "partition_probe_transactions", cluster.probes)


@pytest.mark.timeout(150)
def test_cut_primary_rejoins_after_heal_and_its_transactions_commit(
    make_cluster: Callable[..., Cluster], record_property: Callable[[str, Any], None]
) -> None:
    cluster = make_cluster(4, env=FAST, mesh=True)
    mesh = cluster.mesh
    assert mesh is not None
    commit_some(cluster, 1, 2)
    primary, others = 0, [1, 2, 3]
    mesh.cut(primary)
    stranded = stranded_submissions(cluster, primary, 3)  # clients still reach it
    with Load(cluster, targets=others, pause_s=0.05) as load:
        wait_until(lambda: all(cluster.status(i)["view"] >= 1 for i in others), 30, "no new view")
        wait_until(lambda: load.acked_count() >= 10, 30, cluster.describe)
        time.sleep(2 * FAST_VIEW_TIMEOUT_MS / 1000)  # the old primary times out alone meanwhile
        first = load.stop()
    assert cluster.height(primary) < cluster.height(others[0])  # it was really cut off
    # The partition heals one way first (as redials with backoff often do): the old primary
    # reaches the others before they reach it. Long enough for its redials (backoff up to
    # 5 s) and its re-sent VIEW-CHANGE; then the other way.
    mesh.heal(keep=[(other, primary) for other in others])
    time.sleep(8)
    heal_and_reconnect(cluster, primary, others)
    healed_at = time.monotonic()
    with Load(cluster, targets=others, pause_s=0.05) as load:
        wait_until(
            lambda: cluster.height(primary) >= cluster.height(1) - 1,
            30,
            lambda: "old primary did not catch up\n" + cluster.describe(),
        )
        result = load.stop()
    cluster.keeps_up(primary, others[0])
    report(record_property, "old_primary_catch_up_s", round(time.monotonic() - healed_at, 2))
    # What it admitted while cut off is committed, once.
    assert_committed_once(cluster, stranded, 20)
    height = cluster.wait_agreement(range(4), probe_via=1)
    chain = cluster.assert_same_chain(range(4), height)
    check_transactions(first, chain)
    check_transactions(result, chain)
    assert all(len(tx_positions(chain).get(t, [])) == 1 for t in stranded)
    # And it votes again: with node 3 stopped, no block commits without it.
    cluster.stop(3)
    voted_at = time.monotonic()
    answers = commit_some(cluster, 1, 3)
    report(record_property, "old_primary_votes_again_s", round(time.monotonic() - voted_at, 2))
    assert all(primary in signers(cluster, 1, a["height"]) for a in answers), answers
    cluster.assert_same_chain([0, 1, 2], cluster.wait_agreement([0, 1, 2]))


@pytest.mark.timeout(120)
def test_healed_old_primary_votes_in_the_current_view(
    make_cluster: Callable[..., Cluster],
) -> None:
    """A healed old primary is told the others' heights (they announce them on connection
    and every 2 s), catches up to the block that holds its own pending transaction, and so
    does not leave the current view alone on a progress timeout."""
    cluster = make_cluster(4, env=FAST, mesh=True)
    mesh = cluster.mesh
    assert mesh is not None
    commit_some(cluster, 1, 2)
    primary, others = 0, [1, 2, 3]
    mesh.cut(primary)
    stranded_submissions(cluster, primary, 1)  # pending work: it times out into a view change
    with Load(cluster, targets=others, pause_s=0.05):
        wait_until(lambda: all(cluster.status(i)["view"] >= 1 for i in others), 30, "no new view")
        time.sleep(2 * FAST_VIEW_TIMEOUT_MS / 1000)
    # One way first: its re-sent VIEW-CHANGE reaches the others, their answers cannot reach
    # it yet (the links they would answer on are still cut); then the other way.
    mesh.heal(keep=[(other, primary) for other in others])
    time.sleep(8)
    heal_and_reconnect(cluster, primary, others)
    time.sleep(4 * FAST_VIEW_TIMEOUT_MS / 1000)  # quiet: the old primary is on its own
    cluster.keeps_up(primary, 1)
    view = cluster.status(1)["view"]
    # With node 3 stopped, a block commits in this view only if the old primary votes in it.
    cluster.stop(3)
    answers = commit_some(cluster, 1, 2)
    assert all(primary in signers(cluster, 1, a["height"]) for a in answers), answers
    views = {i: cluster.status(i)["view"] for i in (0, 1, 2)}
    assert set(views.values()) == {view}, f"view {view} before, {views} after\n{cluster.describe()}"


# === 5. a Byzantine validator ===========================================================


@pytest.mark.timeout(150)
@pytest.mark.parametrize(
    ("behaviour", "byzantine"), [("equivocate", 0), ("forge", 2), ("silent", 0)]
)
def test_byzantine_node_cannot_split_or_stall_honest_nodes(
    make_cluster: Callable[..., Cluster],
    record_property: Callable[[str, Any], None],
    behaviour: str,
    byzantine: int,
) -> None:
    cluster = make_cluster(
        4,
        env=FAST,
        params={"max_block_txs": 20},
        node_env={byzantine: {BYZANTINE_ENV: behaviour}},
    )
    honest = [i for i in range(4) if i != byzantine]
    assert "TEST BUILD: this node is Byzantine" in cluster.net.log_tail(byzantine, 200)
    # A burst first, so that a Byzantine primary has several heights in flight at once.
    burst = submit_presigned(cluster, honest, 200)
    load_s = 8.0
    with Load(cluster, targets=honest, per_target=2) as load:
        time.sleep(load_s / 2)
        first_half = load.acked_count()
        time.sleep(load_s / 2)
        second_half = load.acked_count() - first_half
        result = load.stop()
    # Not stalled: commits throughout, not only before the misbehaviour began to bite.
    assert first_half >= 10 and second_half >= 10, (first_half, second_half, cluster.describe())
    height = cluster.wait_agreement(honest)
    chain = cluster.assert_same_chain(honest, height)
    counts = check_transactions(result, chain)
    positions = tx_positions(chain)
    assert all(len(positions.get(tx_id, [])) == 1 for tx_id in burst)
    # The Byzantine node stores what it commits honestly: a prefix of the same chain.
    byzantine_height = cluster.height(byzantine)
    if byzantine_height:
        mine = cluster.chain(byzantine, min(byzantine_height, height))
        assert [b["hash"] for b in mine] == [b["hash"] for b in chain[: len(mine)]]

    views = [cluster.status(i)["view"] for i in honest]
    suspicions = {i: cluster.suspicions(i, byzantine) for i in honest}
    log = cluster.net.log_tail(byzantine, 2000)
    if behaviour == "equivocate":
        assert "equivocating at height" in log
        assert all(v >= 1 for v in views), views  # the equivocating primary was replaced
        # Caught by the proposals themselves (a child of the other twin), not a timeout.
        caught = [c for codes in suspicions.values() for c in codes if "bad_proposal" in c]
        assert caught, suspicions
    elif behaviour == "forge":
        for code in ("bad_signature", "sender_mismatch"):
            seen = [
                cluster.metric(i, "chancery_peer_suspicions_total", peer=str(byzantine), code=code)
                for i in honest
            ]
            assert all(count > 0 for count in seen), (code, seen)
    else:
        assert all(v >= 1 for v in views), views  # the silent primary was replaced
    report(record_property, f"byzantine_{behaviour}_blocks", height)
    report(record_property, f"byzantine_{behaviour}_acked", counts["acked"])
    report(record_property, f"byzantine_{behaviour}_honest_views", views)
    report(record_property, f"byzantine_{behaviour}_own_height", byzantine_height)
    report(record_property, f"byzantine_{behaviour}_suspicions", suspicions)


# === 6. seven validators, two down ======================================================


@pytest.mark.timeout(150)
def test_seven_validators_commit_with_two_killed(
    make_cluster: Callable[..., Cluster], record_property: Callable[[str, Any], None]
) -> None:
    cluster = make_cluster(7, env=FAST)
    assert cluster.quorum == 5
    down = [0, 6]  # the primary and a backup
    live = [i for i in range(7) if i not in down]
    with Load(cluster, targets=live, per_target=1) as load:
        wait_until(lambda: load.acked_count() >= 10, 30, "no commits with 7 validators")
        for index in down:
            cluster.kill(index)
        killed_at = time.monotonic()
        acked_at_kill = load.acked_count()
        wait_until(lambda: load.acked_count() >= acked_at_kill + 40, 60, cluster.describe)
        report(
            record_property, "seven_two_down_40_commits_s", round(time.monotonic() - killed_at, 2)
        )
        result = load.stop()
    height = cluster.wait_agreement(live)
    chain = cluster.assert_same_chain(live, height)
    counts = check_transactions(result, chain)
    statuses = [cluster.status(i) for i in live]
    assert all(s["view"] >= 1 and s["primary"] not in down for s in statuses), statuses
    # Blocks after the kill carry 5 signatures from live validators only.
    last = chain[-1]["commit"]["signatures"]
    assert {s for s, _ in last} <= set(live) and len(last) >= 5
    report(record_property, "seven_two_down_txs", counts)

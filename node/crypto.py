"""Ed25519 keys and domain-separated signatures (PROTOCOL.md section 2).

Every signature covers `DOMAIN || payload`, so a signature made for one purpose (a
transaction) can never be replayed as another (a commit vote). Verification of many
signatures runs on a pool of worker processes (or threads, for tools). Keys and signing
stay with `cryptography` (PEM files, the offline verifier).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import stat
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

from node.gc_tuning import tune_garbage_collector

DOMAIN_TX: Final = b"chancery/tx/v1\n"
DOMAIN_COMMIT: Final = b"chancery/commit/v1\n"
DOMAIN_P2P: Final = b"chancery/p2p/v1\n"
DOMAIN_READ: Final = b"chancery/read/v1\n"

PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
KEY_FILE_MODE: Final = 0o600

T = TypeVar("T")
# How often a verification worker checks that its node is still alive.
PARENT_WATCH_INTERVAL_S: Final = 1.0
# At start-up, how long a node waits for its verification workers (then goes on anyway),
# and how often it asks them.
WORKERS_START_WAIT_S: Final = 30.0
WORKERS_START_POLL_S: Final = 0.05


class KeyFileError(Exception):
    """A key file that is missing, unreadable, not an Ed25519 PEM key, or readable by others."""

    code = "key.invalid"


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key and its 32-byte public key."""

    private_key: Ed25519PrivateKey
    public_key: bytes

    @classmethod
    def generate(cls) -> SigningKey:
        return cls.from_private(Ed25519PrivateKey.generate())

    @classmethod
    def from_private(cls, private_key: Ed25519PrivateKey) -> SigningKey:
        public = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return cls(private_key=private_key, public_key=public)

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        return cls.from_private(Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, domain: bytes, payload: bytes) -> bytes:
        """Sign `domain || payload`."""
        return self.private_key.sign(domain + payload)

    def to_pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def verify(public_key: bytes, domain: bytes, payload: bytes, signature: bytes) -> bool:
    """True when `signature` is `public_key`'s Ed25519 signature over `domain || payload`.

    Verification goes through libsodium (PyNaCl), about 1.6x faster than OpenSSL through
    `cryptography` on this hardware (44 vs 70 us), which bounds admission, proposal checks
    and state transfer. libsodium is also the stricter of the two (it refuses small-order
    keys and non-canonical points), so whatever a node accepts, the `cryptography`-only
    offline verifier (`node/verifier.py`) accepts too.
    """
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        crypto_sign_open(signature + domain + payload, public_key)
    except (BadSignatureError, ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True)
class SignatureCheck:
    """One signature to verify: who, over which domain and payload."""

    public_key: bytes
    domain: bytes
    payload: bytes
    signature: bytes


def verify_packed(checks: Sequence[tuple[bytes, bytes, bytes, bytes]]) -> bytes:
    """The pool side of `SignatureVerifier`: `(public_key, domain, payload, signature)`
    tuples in, one byte per check out (1 verifies, 0 does not): cheap to pickle both ways."""
    return bytes(verify(*check) for check in checks)


def _start_worker(parent_pid: int) -> None:
    """Worker-process start: the node's collector settings, and an exit with the node."""
    tune_garbage_collector()
    _exit_with_parent(parent_pid)


def _exit_with_parent(parent_pid: int) -> None:
    """Exit this worker when the node is gone, even if it was killed outright (a killed
    node never shuts its pool down, and idle workers would wait for ever)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_WATCH_INTERVAL_S)
        os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()


def _measured(function: Callable[..., T], chunk: Any, *args: Any) -> tuple[T, float]:
    """Worker-process side: `function`'s result and the CPU seconds the worker spent."""
    started = time.process_time()
    result = function(chunk, *args)
    return result, time.process_time() - started


class SignatureVerifier:
    """Verifies batches of signatures in chunks on a pool of worker processes or threads.

    Why processes: libsodium releases the GIL while it verifies, but a thread must take the
    GIL back after every signature, and while the node's other threads run Python that
    wait is up to the interpreter's switch interval (5 ms). Measured on this machine with
    one busy Python thread beside the pool: 2,300 verifications/s on two threads against
    18,000/s on two processes (docs/performance.md, round 5). Threads remain for tools
    that verify with nothing else running (the audit, tests).
    """

    def __init__(
        self, workers: int = 0, chunk_size: int = 256, *, in_processes: bool = False
    ) -> None:
        self.workers = workers or (os.cpu_count() or 1)
        self.chunk_size = max(1, chunk_size)
        self.in_processes = in_processes
        # CPU seconds the worker processes spent on this node's chunks (the node's own
        # process CPU does not include them): exported, and added in by `chancery bench`.
        self.worker_cpu_seconds = 0.0
        self._pool: Executor
        if in_processes:
            # spawn: workers start from a clean interpreter, not a fork of a process that
            # holds LevelDB's threads and locks; and they are the node's own children.
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(os.getpid(),),
            )
        else:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="verify")

    async def start(self) -> None:
        """Start every worker process now and wait until each answers.

        Spawning an interpreter that imports libsodium takes about a second on a busy
        machine: done at the first verification instead, it would hold up the node's
        first proposal past a view timeout.
        """
        if not self.in_processes:
            return
        loop = asyncio.get_running_loop()
        ready: set[int] = set()
        deadline = loop.time() + WORKERS_START_WAIT_S
        # One worker that is up answers for all: ask until every one has answered.
        while len(ready) < self.workers and loop.time() < deadline:
            pids = await asyncio.gather(
                *(loop.run_in_executor(self._pool, os.getpid) for _ in range(self.workers))
            )
            ready.update(pids)
            if len(ready) < self.workers:
                await asyncio.sleep(WORKERS_START_POLL_S)

    async def verify_many(self, checks: Sequence[SignatureCheck]) -> list[bool]:
        """Verify every check, in order, on the pool in chunks; the event loop stays free."""
        packed = [(c.public_key, c.domain, c.payload, c.signature) for c in checks]
        return [verdict == 1 for verdict in await self.map_chunks(verify_packed, packed)]

    async def map_chunks(
        self, function: Callable[..., Sequence[T]], items: Sequence[Any], *args: Any
    ) -> list[T]:
        """`function(chunk, *args)` for each `chunk_size` slice of `items` on the pool, the
        results joined in order. With processes, `function` and its data must pickle."""
        if not items:
            return []
        loop = asyncio.get_running_loop()
        size = self.chunk_size
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        if not self.in_processes:
            results = await asyncio.gather(
                *(loop.run_in_executor(self._pool, function, chunk, *args) for chunk in chunks)
            )
            return [result for chunk in results for result in chunk]
        measured = await asyncio.gather(
            *(
                loop.run_in_executor(self._pool, _measured, function, chunk, *args)
                for chunk in chunks
            )
        )
        self.worker_cpu_seconds += sum(cpu_seconds for _, cpu_seconds in measured)
        return [result for chunk, _ in measured for result in chunk]

    @property
    def executor(self) -> Executor:
        return self._pool

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def write_key_file(path: Path, key: SigningKey) -> None:
    """Write `key` as PKCS#8 PEM, created with mode 0600 so it is never readable by others.

    Raises:
        KeyFileError: the file exists already.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    except FileExistsError:
        raise KeyFileError(f"{path}: exists already; refusing to overwrite a key") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.to_pem())
    os.chmod(path, KEY_FILE_MODE)


def read_private_key_file(path: Path, what: str = "key") -> PrivateKeyTypes:
    """Read an unencrypted PEM private key, refusing files that group or others can read.

    Raises:
        KeyFileError: missing, readable by others, or not an unencrypted PEM private key.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeyFileError(f"{path}: {what} file not found") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"{path}: key file is accessible by group or others (mode {stat.S_IMODE(mode):o});"
            f" run: chmod 600 {path}"
        )
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not an unencrypted PEM private key ({exc})") from None


def load_key_file(path: Path) -> SigningKey:
    """Read an Ed25519 PEM private key, refusing files that group or others can read.

    Raises:
        KeyFileError: missing, readable by others, or not an unencrypted Ed25519 PEM key.
    """
    private = read_private_key_file(path)
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key")
    return SigningKey.from_private(private)

"""The Chancery client library: the HTTP API of API.md, for apps, tools and the CLI.

`AsyncClient` is the one implementation (aiohttp). `Client` is a blocking facade that runs
one `AsyncClient` on a private event loop in a background thread, so both behave the same.

Every non-2xx answer becomes a `ClientError` carrying the API's stable `code`; a node that
cannot be reached is `ClientError(code="client.unreachable")`. The client never retries a
submission on its own: whether a lost answer means "not admitted" is for the caller to
find out (`transaction(tx_id)`), since a resubmission with a fresh nonce is a new
transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar
from urllib.parse import quote

import aiohttp
import msgpack
from yarl import URL

from contracts.registry import builtin_registry
from node.crypto import DOMAIN_READ, SigningKey
from node.encoding import canonical_packb
from node.transaction import sign_transaction

__all__ = [
    "DEFAULT_URL",
    "AsyncClient",
    "Client",
    "ClientError",
    "coerce_args",
]

DEFAULT_URL: Final = "http://127.0.0.1:8600"
TIMEOUT_S_DEFAULT: Final = 30.0
# A wait=commit request is held by the node up to timeout_ms (API.md default 10000); the
# client waits that long plus this margin before calling it a timeout.
COMMIT_TIMEOUT_MS_DEFAULT: Final = 10_000
COMMIT_ANSWER_MARGIN_S: Final = 5.0
NONCE_BITS: Final = 63
EXPORT_CHUNK_BYTES: Final = 64 * 1024
# One msgpack-exported block (header, txs, receipts) is bounded by max_block_bytes plus
# receipts; this is the most the unpacker buffers before it refuses the stream.
EXPORT_BUFFER_BYTES_MAX: Final = 256 * 1024 * 1024
# A block event lists every tx_id of its block: up to 10,000 * 67 characters.
SSE_EVENT_BYTES_MAX: Final = 16 * 1024 * 1024
EVENTS_RECONNECT_DELAY_S_MIN: Final = 0.1
EVENTS_RECONNECT_DELAY_S_MAX: Final = 5.0
EVENTS_RECONNECT_ATTEMPTS_MAX: Final = 30
EVENTS_PENDING_HEIGHTS_MAX: Final = 1024
CLIENT_CLOSE_TIMEOUT_S: Final = 10.0

Wait = Literal["commit", "none"]
BlockRef = int | Literal["latest"]
T = TypeVar("T")


class ClientError(Exception):
    """An API error (non-2xx) or a failure to talk to the node at all.

    `status` is the HTTP status, or None when no answer came (`client.unreachable`,
    `client.timeout`). `code` is the API's stable error code (API.md) or a `client.*` code.
    `retry_after_s` is set from a `Retry-After` header (429, 503).
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        if self.status is None:
            return self.message
        return f"{self.code}: {self.message} (HTTP {self.status})"


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    try:
        return None if value is None else float(value)
    except ValueError:
        return None  # an HTTP-date: not worth parsing for a hint


def _error_from_answer(status: int, body: bytes, headers: Mapping[str, str]) -> ClientError:
    """The API's error JSON as a ClientError; anything else keeps the status and raw text."""
    retry_after_s = _retry_after_s(headers)
    try:
        error = json.loads(body)["error"]
        code, message = error["code"], error["message"]
        details = error.get("details") or {}
        if isinstance(code, str) and isinstance(message, str) and isinstance(details, dict):
            return ClientError(status, code, message, details, retry_after_s)
    except (ValueError, KeyError, TypeError):
        pass
    text = body[:200].decode("utf-8", "replace").strip() or "no body"
    return ClientError(
        status, "client.unexpected_answer", f"HTTP {status}: {text}", None, retry_after_s
    )


def _parse_json(body: bytes, status: int) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        message = "the node's answer is not JSON"
        raise ClientError(status, "client.unexpected_answer", message) from None


def _path(*segments: str) -> str:
    """`/seg/seg...` with each segment percent-encoded (a `/` inside a segment too)."""
    return "".join("/" + quote(segment, safe="") for segment in segments)


def _connection_failure_reason(error: aiohttp.ClientConnectionError) -> str:
    """ "Connection refused" rather than aiohttp's full repr, when the OS said why."""
    if isinstance(error, aiohttp.ClientConnectorError) and error.os_error.errno:
        return os.strerror(error.os_error.errno).lower()
    return str(error) or type(error).__name__


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# --- server-sent events ----------------------------------------------------------------


@dataclass(frozen=True)
class SseMessage:
    """One dispatched server-sent event: its name (`message` when unnamed) and data text."""

    event: str
    data: str


@dataclass
class SseParser:
    """Turns the lines of a `text/event-stream` into messages (the WHATWG rules we need).

    Lines end in `\\n` or `\\r\\n`; `:` lines are comments (keep-alives); `id` and
    `retry` are ignored because resumption is by height, not by event id.
    """

    _event: str = ""
    _data: list[str] = field(default_factory=list)

    def feed_line(self, line: str) -> SseMessage | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None

    def _dispatch(self) -> SseMessage | None:
        message = None
        if self._data:
            message = SseMessage(self._event or "message", "\n".join(self._data))
        self._event, self._data = "", []
        return message


@dataclass
class _HeightProgress:
    block_delivered: bool = False
    tx_ids_expected: frozenset[str] = frozenset()
    tx_ids_delivered: set[str] = field(default_factory=set)


class EventCursor:
    """Which events were delivered, so a resumed stream neither misses nor repeats any.

    A height is complete once its block event and a tx event for each of the block's
    `tx_ids` were delivered, in whichever order the node sends them. `resume_height` is
    the height after the last complete one: reconnecting there replays only what may be
    missing, and `accept` drops what was delivered already.
    """

    def __init__(self, from_height: int | None) -> None:
        self.resume_height = from_height
        self._pending: dict[int, _HeightProgress] = {}

    def accept(self, name: str, data: Any) -> bool:
        """True when the event is new (deliver it); records it as delivered."""
        height = data.get("height") if isinstance(data, dict) else None
        if not isinstance(height, int):
            return True  # nothing to order it by: pass it on
        if self.resume_height is not None and height < self.resume_height:
            return False
        progress = self._progress(height)
        if name == "block":
            if progress.block_delivered:
                return False
            progress.block_delivered = True
            progress.tx_ids_expected = frozenset(data.get("tx_ids") or ())
        else:
            tx_id = data.get("tx_id")
            if tx_id in progress.tx_ids_delivered:
                return False
            progress.tx_ids_delivered.add(tx_id)
        if progress.block_delivered and progress.tx_ids_expected <= progress.tx_ids_delivered:
            self.resume_height = height + 1
            self._pending = {h: p for h, p in self._pending.items() if h > height}
        return True

    def _progress(self, height: int) -> _HeightProgress:
        if height not in self._pending and len(self._pending) >= EVENTS_PENDING_HEIGHTS_MAX:
            del self._pending[min(self._pending)]  # bounded: forget the oldest
        return self._pending.setdefault(height, _HeightProgress())


def _retryable(error: ClientError) -> bool:
    """Worth reconnecting an event stream: no answer, or the node is briefly unable."""
    return error.status is None or error.status in (429, 502, 503, 504)


# --- argument coercion -----------------------------------------------------------------


def _hex_to_bytes(value: Any, name: str) -> Any:
    if isinstance(value, list):
        return [_hex_to_bytes(item, name) for item in value]
    if not isinstance(value, str):
        return value  # e.g. the integer half of a ranking order pair
    try:
        return bytes.fromhex(value)
    except ValueError:
        shown = value if len(value) <= 20 else value[:17] + "..."
        raise ValueError(
            f"argument {name!r} must be hex (bytes on the wire), got {shown!r}"
        ) from None


def _refuse_floats(value: Any, name: str) -> None:
    if isinstance(value, float):
        raise ValueError(
            f"argument {name!r} contains the float {value}; use integers "
            "(amounts in cents, times in ms)"
        )
    if isinstance(value, dict):
        for item in value.values():
            _refuse_floats(item, name)
    elif isinstance(value, list):
        for item in value:
            _refuse_floats(item, name)


def coerce_args(contract: str, method: str, json_args: Any) -> dict[str, Any]:
    """JSON arguments -> wire arguments: hex strings become bytes where the registry says so.

    An argument marked `binary=True` is a hex string, or a (nested) list whose strings are
    hex. Other arguments pass through; the node checks them. Floats are refused anywhere,
    since nothing signed may hold a float.

    Raises:
        ValueError: unknown contract or method, `json_args` not an object, a binary argument
            that is not hex, or a float; the message names the argument.
    """
    registry = builtin_registry()
    found_contract = registry.contract(contract)
    if found_contract is None:
        raise ValueError(f"unknown contract {contract!r} (known: {', '.join(registry.names())})")
    found = found_contract.methods.get(method)
    if found is None:
        known = ", ".join(sorted(found_contract.methods))
        raise ValueError(f"contract {contract!r} has no method {method!r} (known: {known})")
    if not isinstance(json_args, dict):
        raise ValueError(f"arguments must be a JSON object, got {type(json_args).__name__}")
    wire: dict[str, Any] = {}
    for name, value in json_args.items():
        _refuse_floats(value, name)
        spec = found.args.get(name)
        if spec is None or not spec.binary:
            wire[name] = value
        elif isinstance(value, str | list):
            wire[name] = _hex_to_bytes(value, name)
        else:
            raise ValueError(
                f"argument {name!r} must be a hex string (bytes on the wire), "
                f"got {type(value).__name__}"
            )
    return wire


# --- the asynchronous client -----------------------------------------------------------


class AsyncClient:
    """One node's HTTP API (API.md). Use as `async with AsyncClient(url) as client:`.

    `session` lets an app share its aiohttp session (the client then never closes it).
    `read_key` signs every read (API.md "Access") for nodes with `read_access = "members"`;
    it needs `chain_id`, because the chain id is part of what is signed.
    """

    def __init__(
        self,
        base_url: str,
        *,
        chain_id: str | None = None,
        session: aiohttp.ClientSession | None = None,
        timeout_s: float = TIMEOUT_S_DEFAULT,
        read_key: SigningKey | None = None,
    ) -> None:
        """Raises: ValueError for a URL that is not http(s)://host[:port]."""
        url = URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"node URL must look like http://host:port, got {base_url!r}")
        if read_key is not None and chain_id is None:
            raise ValueError("signed reads (read_key) need the chain_id")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.read_key = read_key
        self._chain_id = chain_id
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session the client opened (never one the caller passed in)."""
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        # Created on first use, inside the running loop, as aiohttp requires.
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    def _read_headers(self, method: str, target: str) -> dict[str, str]:
        if self.read_key is None:
            return {}
        timestamp_ms = _now_ms()
        payload = canonical_packb([self._chain_id, method, target, timestamp_ms])
        return {
            "X-Chancery-Signer": self.read_key.public_key.hex(),
            "X-Chancery-Timestamp": str(timestamp_ms),
            "X-Chancery-Signature": self.read_key.sign(DOMAIN_READ, payload).hex(),
        }

    @contextlib.asynccontextmanager
    async def _response(
        self,
        method: str,
        target: str,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout: aiohttp.ClientTimeout | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send a request; yields a 2xx response, raises ClientError for anything else.

        `target` is the path with its query, exactly as sent (and as signed for reads).
        """
        headers = self._read_headers(method, target) if method == "GET" else {}
        if content_type is not None:
            headers["Content-Type"] = content_type
        url = URL(self.base_url + target, encoded=True)
        timeout = timeout or aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with self._get_session().request(
                method, url, data=body, headers=headers, timeout=timeout
            ) as response:
                if not 200 <= response.status < 300:
                    answer = await response.read()
                    raise _error_from_answer(response.status, answer, response.headers)
                yield response
        except TimeoutError:  # first: aiohttp's timeouts are connection errors too
            raise ClientError(
                None, "client.timeout", f"no answer from {self.base_url} in time"
            ) from None
        except aiohttp.ClientConnectionError as exc:
            raise ClientError(
                None,
                "client.unreachable",
                f"cannot reach the node at {self.base_url}: {_connection_failure_reason(exc)}",
            ) from None
        except aiohttp.ClientError as exc:  # aiohttp's own, e.g. a body cut short
            raise ClientError(
                None, "client.unexpected_answer", f"bad answer from {self.base_url} ({exc})"
            ) from None

    async def _json(self, method: str, target: str, **kwargs: Any) -> Any:
        async with self._response(method, target, **kwargs) as response:
            return _parse_json(await response.read(), response.status)

    async def status(self) -> dict[str, Any]:
        """`GET /v1/status`."""
        return await self._json("GET", "/v1/status")

    async def health(self) -> dict[str, Any]:
        """`GET /v1/health`: `{"ok": true}` while the node process serves."""
        return await self._json("GET", "/v1/health")

    async def genesis_bytes(self) -> bytes:
        """`GET /v1/genesis`: the genesis file, byte for byte."""
        async with self._response("GET", "/v1/genesis") as response:
            return await response.read()

    async def chain_id(self) -> str:
        """The node's chain id: given at construction, or asked once and cached."""
        if self._chain_id is None:
            self._chain_id = (await self.status())["chain_id"]
        return self._chain_id

    async def submit(
        self,
        contract: str,
        method: str,
        args: dict[str, Any],
        key: SigningKey,
        *,
        wait: Wait = "commit",
        timeout_ms: int | None = None,
        nonce: int | None = None,
        timestamp_ms: int | None = None,
    ) -> dict[str, Any]:
        """Sign and submit one transaction; the node's JSON answer (API.md).

        Signs with the current time and a random 63-bit nonce unless given. `args` are
        wire values (bytes for bin); see `coerce_args` for JSON input.

        Raises:
            ClientError: the node refused it (`tx.*`, `mempool.full`, ...) or is unreachable.
        """
        transaction = sign_transaction(
            key,
            await self.chain_id(),
            contract,
            method,
            args,
            secrets.randbits(NONCE_BITS) if nonce is None else nonce,
            _now_ms() if timestamp_ms is None else timestamp_ms,
        )
        answer = await self.submit_envelope(transaction.envelope, wait=wait, timeout_ms=timeout_ms)
        return answer

    async def submit_envelope(
        self, envelope: bytes, *, wait: Wait = "commit", timeout_ms: int | None = None
    ) -> dict[str, Any]:
        """`POST /v1/transactions` with the msgpack envelope bytes as they are.

        Raises:
            ValueError: `wait` is not "commit" or "none".
            ClientError: the node refused the envelope or is unreachable.
        """
        if wait not in ("commit", "none"):
            raise ValueError(f"wait must be 'commit' or 'none', got {wait!r}")
        query = f"?wait={wait}"
        answer_s = self.timeout_s
        if wait == "commit":
            if timeout_ms is not None:
                query += f"&timeout_ms={int(timeout_ms)}"
            held_ms = COMMIT_TIMEOUT_MS_DEFAULT if timeout_ms is None else timeout_ms
            answer_s = max(answer_s, held_ms / 1000 + COMMIT_ANSWER_MARGIN_S)
        return await self._json(
            "POST",
            "/v1/transactions" + query,
            body=envelope,
            content_type="application/msgpack",
            timeout=aiohttp.ClientTimeout(total=answer_s),
        )

    async def submit_batch(self, envelopes: list[bytes]) -> list[dict[str, Any]]:
        """`POST /v1/transactions/batch`: one result per envelope, in order."""
        return await self._json(
            "POST",
            "/v1/transactions/batch",
            body=msgpack.packb(list(envelopes), use_bin_type=True),
            content_type="application/msgpack",
        )

    async def transaction(self, tx_id: str, *, proof: bool = False) -> dict[str, Any]:
        """`GET /v1/transactions/{tx_id}`; with `proof`, the proof bundle instead."""
        return await self._json(
            "GET", _path("v1", "transactions", tx_id) + ("?proof=true" if proof else "")
        )

    async def block(self, height: BlockRef, *, full: bool = False) -> dict[str, Any]:
        """`GET /v1/blocks/{height}` or `/v1/blocks/latest`; `full` adds envelopes, receipts."""
        valid_height = isinstance(height, int) and not isinstance(height, bool) and height >= 0
        if height != "latest" and not valid_height:
            raise ValueError(f"a block is a height >= 0 or 'latest', got {height!r}")
        return await self._json(
            "GET", _path("v1", "blocks", str(height)) + ("?full=true" if full else "")
        )

    async def export_blocks(self, from_height: int, limit: int = 100) -> AsyncIterator[dict]:
        """`GET /v1/blocks?from=H&limit=N`: whole blocks as they stream in.

        Each item is the msgpack map `{"commit", "header", "receipts", "txs"}` with bytes
        as bytes (`header` is the exact header bytes the block hash covers).
        """
        # The stream can be long: no total deadline, only a bound on silence.
        timeout = aiohttp.ClientTimeout(total=None, sock_read=self.timeout_s)
        target = f"/v1/blocks?from={int(from_height)}&limit={int(limit)}"
        async with self._response("GET", target, timeout=timeout) as response:
            unpacker = msgpack.Unpacker(raw=False, max_buffer_size=EXPORT_BUFFER_BYTES_MAX)
            async for chunk in response.content.iter_chunked(EXPORT_CHUNK_BYTES):
                unpacker.feed(chunk)
                for item in unpacker:
                    yield item

    async def query(self, contract: str, *path: str) -> Any:
        """`GET /v1/contracts/{contract}/{path...}` (each segment percent-encoded)."""
        return await self._json("GET", _path("v1", "contracts", contract, *path))

    async def _stream_events(self, cursor: EventCursor) -> AsyncIterator[dict[str, Any]]:
        """One connection to `/v1/events`: yields the new events until the stream ends."""
        target = "/v1/events"
        if cursor.resume_height is not None:
            target += f"?from_height={cursor.resume_height}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout_s)
        parser = SseParser()
        async with self._response("GET", target, timeout=timeout) as response:
            async for line in _lines(response.content):
                message = parser.feed_line(line)
                if message is None or message.event not in ("block", "tx"):
                    continue
                data = _parse_json(message.data.encode(), response.status)
                if cursor.accept(message.event, data):
                    yield {"event": message.event, "data": data}

    async def events(self, from_height: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """Committed `block` and `tx` events (`{"event": ..., "data": {...}}`), without end.

        `from_height` replays from that height first; None starts with the next commit.
        A dropped connection is reopened with backoff from the height after the last block
        fully delivered, and what was delivered already is skipped, so no event is missed
        or repeated. Gives up after EVENTS_RECONNECT_ATTEMPTS_MAX failures in a row.

        Raises:
            ClientError: a 4xx answer, or the node stayed unreachable.
        """
        cursor = EventCursor(from_height)
        failures = 0
        while True:
            try:
                # aclosing: a consumer that stops early closes this connection at once.
                async with contextlib.aclosing(self._stream_events(cursor)) as stream:
                    async for event in stream:
                        failures = 0
                        yield event
                error = ClientError(None, "client.unreachable", "event stream ended")
            except ClientError as exc:
                if not _retryable(exc):
                    raise
                error = exc
            failures += 1
            if failures > EVENTS_RECONNECT_ATTEMPTS_MAX:
                raise error
            delay_s = EVENTS_RECONNECT_DELAY_S_MIN * 2 ** (failures - 1)
            await asyncio.sleep(min(delay_s, EVENTS_RECONNECT_DELAY_S_MAX))


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[str]:
    """The stream's lines without their `\\n` / `\\r\\n`, each at most SSE_EVENT_BYTES_MAX."""
    buffer = b""
    async for chunk in content.iter_any():
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line.removesuffix(b"\r").decode("utf-8", "replace")
        if len(buffer) > SSE_EVENT_BYTES_MAX:
            raise ClientError(None, "client.unexpected_answer", "event line over the size limit")


# --- the blocking facade ---------------------------------------------------------------


async def _close_async_iterator(iterator: Any) -> None:
    """`aclose()` once a cancelled step has unwound (until then aclose() raises)."""
    for _ in range(100):
        try:
            await iterator.aclose()
            return
        except RuntimeError:
            await asyncio.sleep(0.01)


class Client:
    """Blocking client: the same methods as `AsyncClient`, run on a private event loop.

    Thread-safe for calls from several threads (the loop serialises them). Use as a
    context manager or call `close()`.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        chain_id: str | None = None,
        timeout_s: float = TIMEOUT_S_DEFAULT,
        read_key: SigningKey | None = None,
    ) -> None:
        """Raises: ValueError for a bad URL (see AsyncClient)."""
        self._async = AsyncClient(
            base_url, chain_id=chain_id, timeout_s=timeout_s, read_key=read_key
        )
        self._loop = asyncio.new_event_loop()
        # A daemon thread: a forgotten close() must not keep the interpreter alive.
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="chancery-client", daemon=True
        )
        self._thread.start()
        self._closed = False

    @property
    def base_url(self) -> str:
        return self._async.base_url

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(self, coroutine: Coroutine[Any, Any, T] | Awaitable[T]) -> T:
        if self._closed:
            if isinstance(coroutine, Coroutine):
                coroutine.close()  # never scheduled: avoid a "never awaited" warning
            raise RuntimeError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(_awaited(coroutine), self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. Ctrl-C in the caller: stop the request too
            raise

    def close(self) -> None:
        """Cancel what is in flight, close the session and stop the loop thread."""
        if self._closed:
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=CLIENT_CLOSE_TIMEOUT_S)
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=CLIENT_CLOSE_TIMEOUT_S)
        if not self._thread.is_alive():
            self._loop.close()

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        await self._async.close()

    def _iterate(self, iterator: AsyncIterator[T]) -> Iterator[T]:
        """Drive an async iterator from this thread, one item per loop round trip."""
        try:
            while True:
                try:
                    yield self._run(iterator.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                self._run(_close_async_iterator(iterator))

    def status(self) -> dict[str, Any]:
        return self._run(self._async.status())

    def health(self) -> dict[str, Any]:
        return self._run(self._async.health())

    def genesis_bytes(self) -> bytes:
        return self._run(self._async.genesis_bytes())

    def chain_id(self) -> str:
        return self._run(self._async.chain_id())

    def submit(
        self,
        contract: str,
        method: str,
        args: dict[str, Any],
        key: SigningKey,
        *,
        wait: Wait = "commit",
        timeout_ms: int | None = None,
        nonce: int | None = None,
        timestamp_ms: int | None = None,
    ) -> dict[str, Any]:
        return self._run(
            self._async.submit(
                contract,
                method,
                args,
                key,
                wait=wait,
                timeout_ms=timeout_ms,
                nonce=nonce,
                timestamp_ms=timestamp_ms,
            )
        )

    def submit_envelope(
        self, envelope: bytes, *, wait: Wait = "commit", timeout_ms: int | None = None
    ) -> dict[str, Any]:
        return self._run(self._async.submit_envelope(envelope, wait=wait, timeout_ms=timeout_ms))

    def submit_batch(self, envelopes: list[bytes]) -> list[dict[str, Any]]:
        return self._run(self._async.submit_batch(envelopes))

    def transaction(self, tx_id: str, *, proof: bool = False) -> dict[str, Any]:
        return self._run(self._async.transaction(tx_id, proof=proof))

    def block(self, height: BlockRef, *, full: bool = False) -> dict[str, Any]:
        return self._run(self._async.block(height, full=full))

    def export_blocks(self, from_height: int, limit: int = 100) -> Iterator[dict]:
        return self._iterate(self._async.export_blocks(from_height, limit))

    def events(self, from_height: int | None = None) -> Iterator[dict[str, Any]]:
        return self._iterate(self._async.events(from_height))

    def query(self, contract: str, *path: str) -> Any:
        return self._run(self._async.query(contract, *path))


async def _awaited(awaitable: Awaitable[T]) -> T:
    # run_coroutine_threadsafe wants a coroutine; __anext__() gives a plain awaitable.
    return await awaitable

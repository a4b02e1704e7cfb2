"""Node configuration: one TOML file per node home, ``<home>/config.toml``.

The file is read with :mod:`tomllib` and validated generically: every section is a
frozen dataclass, every field's type comes from its annotation and its limits from
field metadata (see :func:`_setting`). Adding a setting is therefore one line in the
section dataclass; parsing, environment overrides, validation and serialisation
all follow from it.

Environment variables ``CHANCERY_<SECTION>_<KEY>`` override scalar file values
(``CHANCERY_API_PORT=8700``). Other ``CHANCERY_*`` variables that do not start with
a known section prefix (``CHANCERY_URL``, used by the CLI) are ignored.
"""

from __future__ import annotations

import functools
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import tomli_w

from node.storage import (
    COMPACTION_NICE,
    HISTORY_WRITE_BUFFER_BYTES,
    LEVELDB_CACHE_BYTES,
    LEVELDB_MAX_OPEN_FILES,
    LEVELDB_TABLE_BYTES,
    LEVELDB_WRITE_BUFFER_BYTES,
    SEPARATED_VALUE_BYTES,
)

__all__ = [
    "CONFIG_FILE_NAME",
    "ENV_PREFIX",
    "ApiSection",
    "ConfigError",
    "ConsensusSection",
    "CryptoSection",
    "MempoolSection",
    "NodeConfig",
    "NodeSection",
    "P2pSection",
    "PeerAddress",
    "config_to_toml",
    "default_config",
    "load_config",
]

CONFIG_FILE_NAME = "config.toml"
ENV_PREFIX = "CHANCERY_"

_MIB = 1024 * 1024
# Far above any event-loop turn of a healthy node (a few ms; a GC pass tens of ms), far
# below the 10 s that clients and tests wait for an answer.
LOOP_STALL_WARN_MS = 5000
_PORT_MIN = 1
_PORT_MAX = 65535


class ConfigError(Exception):
    """The node configuration is missing, malformed or out of range.

    ``message`` is meant for a human operator; the CLI prints it and exits 2.
    """

    code = "config.invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _setting(
    default: Any = MISSING,
    *,
    lo: int | None = None,
    hi: int | None = None,
    choices: tuple[str, ...] | None = None,
    nonempty: bool = False,
) -> Any:
    """Declare a config field with its default and the limits the validator enforces.

    Returns ``Any`` so the annotation on the dataclass field stays the real type.
    Omitting ``default`` makes the key required.
    """
    limits = {"lo": lo, "hi": hi, "choices": choices, "nonempty": nonempty}
    return field(default=default, metadata=limits)


@dataclass(frozen=True)
class NodeSection:
    """``[node]``: identity and on-disk layout. Paths are relative to the node home."""

    index: int = _setting(lo=0)
    key_file: str = _setting("node.key", nonempty=True)
    data_dir: str = _setting("data", nonempty=True)
    # Nodes of one network share a genesis file, so it lives next to the homes.
    genesis_file: str = _setting("../genesis.json", nonempty=True)
    log_level: str = _setting("info", choices=("debug", "info", "warning", "error"))
    # An event loop silent this long is logged with its stack (node/loop_watchdog.py);
    # 0 turns the watchdog off.
    loop_stall_warn_ms: int = _setting(LOOP_STALL_WARN_MS, lo=0)


@dataclass(frozen=True)
class ApiSection:
    """``[api]``: the client-facing HTTP API and the limits protecting it."""

    host: str = _setting("127.0.0.1", nonempty=True)
    port: int = _setting(8600, lo=_PORT_MIN, hi=_PORT_MAX)
    read_access: str = _setting("open", choices=("open", "members"))
    body_bytes_max: int = _setting(64 * _MIB, lo=1)
    batch_envelopes_max: int = _setting(10000, lo=1)
    # Concurrent ``wait=commit`` requests; each one holds a connection open.
    commit_waiters_max: int = _setting(10000, lo=1)
    commit_timeout_ms_default: int = _setting(10000, lo=1)
    commit_timeout_ms_max: int = _setting(60000, lo=1)
    read_clock_skew_ms_max: int = _setting(60000, lo=0)
    sse_subscribers_max: int = _setting(256, lo=1)
    sse_queue_events_max: int = _setting(10000, lo=1)
    export_blocks_max: int = _setting(1000, lo=1)


@dataclass(frozen=True)
class PeerAddress:
    """One entry of ``[p2p].peers``: where to reach the node with this index."""

    index: int = _setting(lo=0)
    host: str = _setting(nonempty=True)
    port: int = _setting(lo=_PORT_MIN, hi=_PORT_MAX)


@dataclass(frozen=True)
class P2pSection:
    """``[p2p]``: the replica-to-replica transport."""

    host: str = _setting("127.0.0.1", nonempty=True)
    port: int = _setting(9600, lo=_PORT_MIN, hi=_PORT_MAX)
    # A tuple, not a list, so the frozen config stays hashable and immutable.
    peers: tuple[PeerAddress, ...] = _setting(())
    frame_bytes_max: int = _setting(16 * _MIB, lo=1)
    send_queue_frames_max: int = _setting(1024, lo=1)


@dataclass(frozen=True)
class MempoolSection:
    """``[mempool]``: admission limits for pending transactions."""

    # A bound on the backlog, in time: at the 2,000-3,000 tx/s four validators commit on
    # two cores this is under ten seconds of work. Under a flood of clients, 200,000 meant
    # over a minute of queue, 700 tx/s committed and 4 view changes; 20,000 held 2,670
    # tx/s (docs/performance.md). Past it, refusals are 429s that cost nothing to send.
    txs_max: int = _setting(20000, lo=1)
    bytes_max: int = _setting(512 * _MIB, lo=1)
    envelope_bytes_max: int = _setting(1048576, lo=1)


@dataclass(frozen=True)
class ConsensusSection:
    """``[consensus]``: PBFT timing and pipelining."""

    # How long the proposer waits to fill a block once the mempool is non-empty;
    # 0 proposes immediately.
    batch_interval_ms: int = _setting(20, lo=0)
    # At most this many transactions per proposed block (and never more than the genesis
    # max_block_txs): smaller blocks execute well inside the view timeout on every replica
    # and let the window pipeline them, where one huge block would stall the whole window.
    batch_txs_max: int = _setting(2000, lo=1)
    view_timeout_ms: int = _setting(2000, lo=1)
    checkpoint_interval_blocks: int = _setting(100, lo=1)
    window_blocks: int = _setting(4, lo=1)


@dataclass(frozen=True)
class CryptoSection:
    """``[crypto]``: signature verification parallelism."""

    # How many verification workers; 0 means one per CPU core, resolved at start-up.
    # (The name predates worker processes: it counts processes when verify_in says so.)
    verify_threads: int = _setting(0, lo=0)
    verify_chunk_size: int = _setting(256, lo=1)
    # Worker processes keep verification off the node's GIL (node/crypto.py says why);
    # "threads" keeps it in the node process.
    verify_in: str = _setting("processes", choices=("processes", "threads"))


@dataclass(frozen=True)
class StorageSection:
    """``[storage]``: LevelDB sizing. Each setting applies to both stores, except that
    the history store's write buffer is `history_write_buffer_bytes` (node/storage.py
    says why each default is what it is)."""

    cache_bytes: int = _setting(LEVELDB_CACHE_BYTES, lo=0)
    write_buffer_bytes: int = _setting(LEVELDB_WRITE_BUFFER_BYTES, lo=64 * 1024)
    history_write_buffer_bytes: int = _setting(HISTORY_WRITE_BUFFER_BYTES, lo=64 * 1024)
    max_open_files: int = _setting(LEVELDB_MAX_OPEN_FILES, lo=64)
    table_bytes: int = _setting(LEVELDB_TABLE_BYTES, lo=1 * _MIB)
    # Nice value for LevelDB's compaction thread (node/thread_priority.py); 0 leaves it
    # at the node's own priority.
    compaction_nice: int = _setting(COMPACTION_NICE, lo=0, hi=19)
    # State values this long or longer are kept only in the history store, their key
    # holding a 14-byte reference; it may be changed later, a store holds both kinds.
    separated_value_bytes: int = _setting(SEPARATED_VALUE_BYTES, lo=14)


@dataclass(frozen=True)
class NodeConfig:
    """A node's complete, validated configuration.

    ``home`` is where the config was loaded from; it is not written to the file.
    """

    home: Path
    node: NodeSection
    api: ApiSection
    p2p: P2pSection
    mempool: MempoolSection
    consensus: ConsensusSection
    crypto: CryptoSection
    storage: StorageSection

    @property
    def key_path(self) -> Path:
        """The node's signing key file (an absolute ``key_file`` is kept as is)."""
        return self.home / self.node.key_file

    @property
    def data_path(self) -> Path:
        """The node's data directory."""
        return self.home / self.node.data_dir

    @property
    def genesis_path(self) -> Path:
        """The network's genesis file."""
        return self.home / self.node.genesis_file


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    # Annotations are strings under ``from __future__ import annotations``.
    return get_type_hints(cls)


def _sections() -> dict[str, type]:
    """Section name -> section dataclass, in file order."""
    types = _field_types(NodeConfig)
    return {f.name: types[f.name] for f in fields(NodeConfig) if f.name != "home"}


@dataclass
class _Source:
    """Where raw values came from, so errors point at the file or the variable."""

    label: str
    env_vars: dict[str, str] = field(default_factory=dict)

    def where(self, *keys: str) -> str:
        """The origin of ``keys``: the file, a variable, or the file plus variables."""
        env = [self.env_vars[k] for k in keys if k in self.env_vars]
        if not env:
            return self.label
        if len(keys) == 1:
            return f"environment variable {env[0]}"
        return f"{self.label} with {', '.join(env)}"

    def error(self, message: str, *keys: str) -> ConfigError:
        return ConfigError(f"{self.where(*keys)}: {message}")


_EXPECTED = {int: "an integer", str: "a string", bool: "a boolean"}
_TOML_NAMES = (
    (bool, "boolean"),  # before int: bool is an int subclass
    (int, "integer"),
    (float, "float"),
    (str, "string"),
    (list, "array"),
    (dict, "table"),
)


def _describe(value: object) -> str:
    """A TOML-flavoured description of ``value`` for error messages."""
    name = next((n for t, n in _TOML_NAMES if isinstance(value, t)), type(value).__name__)
    if isinstance(value, list | dict):
        return name
    text = repr(value)
    return f"{name} {text if len(text) <= 40 else text[:37] + '...'}"


def _is_scalar_of(value: object, tp: Any) -> bool:
    # TOML booleans are Python bools, which isinstance() would accept as ints.
    if tp is int and isinstance(value, bool):
        return False
    return isinstance(value, tp)


def _parse_value(value: object, tp: Any, key: str, src: _Source) -> object:
    """Type-check one raw value against its annotation, recursing into peer tables."""
    if get_origin(tp) is tuple:
        item_type = get_args(tp)[0]
        if not isinstance(value, list):
            raise src.error(f"{key} must be an array of tables, got {_describe(value)}", key)
        return tuple(
            _parse_table(item_type, item, f"{key}[{i}]", src) for i, item in enumerate(value)
        )
    if not _is_scalar_of(value, tp):
        raise src.error(f"{key} must be {_EXPECTED[tp]}, got {_describe(value)}", key)
    return value


def _check_limits(value: object, limits: Mapping[str, Any], key: str, src: _Source) -> None:
    lo, hi, choices = limits.get("lo"), limits.get("hi"), limits.get("choices")
    if isinstance(value, int) and lo is not None and hi is not None:
        if not lo <= value <= hi:
            raise src.error(f"{key} must be between {lo} and {hi}, got {value}", key)
    elif isinstance(value, int) and lo is not None and value < lo:
        raise src.error(f"{key} must be >= {lo}, got {value}", key)
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise src.error(f"{key} must be one of {allowed}, got {value!r}", key)
    if limits.get("nonempty") and value == "":
        raise src.error(f"{key} must not be empty", key)


def _parse_table(cls: type, raw: object, label: str, src: _Source) -> Any:
    """Build dataclass ``cls`` from a raw TOML table; ``label`` is e.g. ``[api]``."""
    if not isinstance(raw, dict):
        raise src.error(f"{label} must be a table, got {_describe(raw)}")
    known = {f.name for f in fields(cls)}
    for name in raw:
        if name not in known:
            raise src.error(f"unknown key {label}.{name}")
    types = _field_types(cls)
    values: dict[str, object] = {}
    for f in fields(cls):
        key = f"{label}.{f.name}"
        if f.name not in raw:
            if f.default is MISSING:
                raise src.error(f"missing required key {key}")
            continue
        values[f.name] = _parse_value(raw[f.name], types[f.name], key, src)
        _check_limits(values[f.name], f.metadata, key, src)
    return cls(**values)


def _check_cross_fields(config: NodeConfig, src: _Source) -> None:
    """Constraints spanning several fields, checked once every field is valid."""
    api, p2p = config.api, config.p2p
    if api.commit_timeout_ms_default > api.commit_timeout_ms_max:
        keys = ("[api].commit_timeout_ms_default", "[api].commit_timeout_ms_max")
        raise src.error(
            f"{keys[0]} ({api.commit_timeout_ms_default}) must be <= "
            f"{keys[1]} ({api.commit_timeout_ms_max})",
            *keys,
        )
    if api.host == p2p.host and api.port == p2p.port:
        keys = ("[api].port", "[p2p].port")
        raise src.error(f"{keys[0]} and {keys[1]} are both {api.port} on host {api.host}", *keys)
    seen: set[int] = set()
    for peer in p2p.peers:
        if peer.index in seen:
            raise src.error(f"[p2p].peers lists index {peer.index} more than once")
        seen.add(peer.index)


def _parse_config(raw: Mapping[str, object], home: Path, src: _Source) -> NodeConfig:
    sections = _sections()
    for name, value in raw.items():
        if name not in sections:
            kind = "section" if isinstance(value, dict) else "top-level key"
            shown = f"[{name}]" if isinstance(value, dict) else name
            raise src.error(f"unknown {kind} {shown}")
    parsed = {
        name: _parse_table(cls, raw.get(name, {}), f"[{name}]", src)
        for name, cls in sections.items()
    }
    config = NodeConfig(home=home, **parsed)
    _check_cross_fields(config, src)
    return config


_INT_TEXT = re.compile(r"[+-]?[0-9]+")
_BOOL_TEXT = {"true": True, "1": True, "false": False, "0": False}


def _parse_env_text(text: str, tp: Any, var: str) -> object:
    """Parse an environment string as the field's type; limits are checked later."""
    if tp is str:
        return text
    if tp is int and _INT_TEXT.fullmatch(text.strip()):
        return int(text.strip())
    if tp is bool and text.strip().lower() in _BOOL_TEXT:
        return _BOOL_TEXT[text.strip().lower()]
    raise ConfigError(f"environment variable {var}: expected {_EXPECTED[tp]}, got {text!r}")


def _env_target(var: str) -> tuple[str, str] | None:
    """``CHANCERY_API_PORT`` -> ``("api", "port")``; None if no section prefix matches."""
    for section in _sections():
        prefix = f"{ENV_PREFIX}{section.upper()}_"
        if var.startswith(prefix):
            return section, var[len(prefix) :].lower()
    return None


def _apply_env(
    raw: Mapping[str, object], environ: Mapping[str, str], src: _Source
) -> dict[str, object]:
    """Return a copy of ``raw`` with ``CHANCERY_<SECTION>_<KEY>`` values merged in."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    sections = _sections()
    for var in sorted(environ):
        target = _env_target(var)
        if target is None:
            continue  # not config-shaped, e.g. CHANCERY_URL for the CLI
        section, key = target
        tp = _field_types(sections[section]).get(key)
        if tp is None:
            raise ConfigError(f"environment variable {var}: unknown key [{section}].{key}")
        if tp not in _EXPECTED:
            raise ConfigError(
                f"environment variable {var}: [{section}].{key} cannot be set from the "
                f"environment; set it in {CONFIG_FILE_NAME}"
            )
        table = merged.setdefault(section, {})
        if isinstance(table, dict):  # a non-table section is reported by the parser
            table[key] = _parse_env_text(environ[var], tp, var)
            src.env_vars[f"[{section}].{key}"] = var
    return merged


def _read_toml(path: Path) -> dict[str, object]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: config file not found") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror or exc}") from exc
    except ValueError as exc:  # TOMLDecodeError, or UnicodeDecodeError on non-UTF-8 bytes
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc


def load_config(home: Path, environ: Mapping[str, str] | None = None) -> NodeConfig:
    """Load and validate ``<home>/config.toml`` with environment overrides applied.

    ``environ`` defaults to :data:`os.environ`; pass ``{}`` to ignore the environment.
    Raises :class:`ConfigError` with a message naming the offending file, key or
    variable.
    """
    home = Path(home)
    path = home / CONFIG_FILE_NAME
    src = _Source(str(path))
    raw = _apply_env(_read_toml(path), os.environ if environ is None else environ, src)
    return _parse_config(raw, home, src)


def _to_plain(value: object) -> object:
    """Dataclasses -> dicts and tuples -> lists, the shapes tomli_w writes."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return [_to_plain(item) for item in value]
    return value


def config_to_toml(config: NodeConfig) -> str:
    """Serialise ``config`` (every field, defaults included; not ``home``) as TOML."""
    doc = {name: _to_plain(getattr(config, name)) for name in _sections()}
    header = (
        "# Chancery node configuration.\n"
        "# Paths are relative to the directory holding this file.\n\n"
    )
    return header + tomli_w.dumps(doc)


def default_config(
    index: int,
    api_port: int,
    p2p_port: int,
    peers: Iterable[PeerAddress],
    *,
    home: Path | None = None,
) -> NodeConfig:
    """A validated config with defaults everywhere but identity, ports and peers.

    Used by the testnet generator; goes through the same validation as a file, so
    it raises :class:`ConfigError` on bad ports or duplicate peers. ``home``
    defaults to the current directory; it only matters for the path properties.
    """
    raw = {
        "node": {"index": index},
        "api": {"port": api_port},
        "p2p": {"port": p2p_port, "peers": [_to_plain(p) for p in peers]},
    }
    home = Path(".") if home is None else Path(home)
    return _parse_config(raw, home, _Source("default_config"))

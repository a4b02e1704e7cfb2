"""Tests for node.config: TOML loading, validation, env overrides, round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import (
    ApiSection,
    ConfigError,
    ConsensusSection,
    CryptoSection,
    MempoolSection,
    NodeConfig,
    NodeSection,
    P2pSection,
    PeerAddress,
    StorageSection,
    config_to_toml,
    default_config,
    load_config,
)

MINIMAL = "[node]\nindex = 0\n"


def write(home: Path, text: str) -> Path:
    (home / "config.toml").write_text(text, encoding="utf-8")
    return home


def load(home: Path, text: str, environ: dict[str, str] | None = None) -> NodeConfig:
    return load_config(write(home, text), environ={} if environ is None else environ)


def load_error(home: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(home, text, environ)
    assert info.value.code == "config.invalid"
    return info.value.message


# --- valid configs ---------------------------------------------------------


def test_round_trip_default_config(tmp_path: Path) -> None:
    peers = [PeerAddress(index=1, host="127.0.0.1", port=9601), PeerAddress(2, "10.0.0.2", 9602)]
    config = default_config(0, 8600, 9600, peers, home=tmp_path)
    loaded = load(tmp_path, config_to_toml(config))
    assert loaded == config
    assert loaded.p2p.peers == tuple(peers)


def test_round_trip_non_default_values(tmp_path: Path) -> None:
    config = NodeConfig(
        home=tmp_path,
        node=NodeSection(index=3, key_file="/etc/chancery/k.key", log_level="debug"),
        api=ApiSection(
            host="0.0.0.0",
            port=8700,
            read_access="members",
            commit_timeout_ms_default=5,
            commit_timeout_ms_max=9,
        ),
        p2p=P2pSection(host="10.0.0.1", port=8700, peers=(PeerAddress(0, "10.0.0.2", 9600),)),
        mempool=MempoolSection(txs_max=5),
        consensus=ConsensusSection(batch_interval_ms=0),
        crypto=CryptoSection(verify_threads=8),
        storage=StorageSection(max_open_files=100, table_bytes=4 * 1024 * 1024),
    )
    loaded = load(tmp_path, config_to_toml(config))
    assert loaded == config
    assert loaded.key_path == Path("/etc/chancery/k.key")


def test_defaults_applied(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    assert config.home == tmp_path
    assert config.node == NodeSection(index=0)
    assert config.node.log_level == "info"
    assert config.api == ApiSection()
    assert config.api.port == 8600
    assert config.api.body_bytes_max == 64 * 1024 * 1024
    assert config.p2p.port == 9600
    assert config.p2p.peers == ()
    assert config.p2p.frame_bytes_max == 16 * 1024 * 1024
    assert config.mempool.bytes_max == 512 * 1024 * 1024
    assert config.consensus.batch_interval_ms == 20
    assert config.crypto.verify_threads == 0


def test_path_properties_resolve_against_home(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    assert config.key_path == tmp_path / "node.key"
    assert config.data_path == tmp_path / "data"
    assert config.genesis_path == tmp_path / ".." / "genesis.json"


def test_peers_parsed(tmp_path: Path) -> None:
    text = MINIMAL + '[p2p]\npeers = [{index = 1, host = "h1", port = 9601}]\n'
    assert load(tmp_path, text).p2p.peers == (PeerAddress(1, "h1", 9601),)


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL)
    with pytest.raises(AttributeError):
        config.api.port = 1  # type: ignore[misc]


# --- file errors -------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, environ={})
    assert str(tmp_path / "config.toml") in info.value.message
    assert "not found" in info.value.message


def test_bad_toml(tmp_path: Path) -> None:
    message = load_error(tmp_path, "[node\nindex = 0\n")
    assert str(tmp_path / "config.toml") in message
    assert "invalid TOML" in message


# --- validation errors -------------------------------------------------------


def test_unknown_key_named(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + "[api]\nprot = 8700\n")
    assert "config.toml: unknown key [api].prot" in message


def test_unknown_section_named(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + "[apii]\nport = 8700\n")
    assert "unknown section [apii]" in message


def test_unknown_peer_key_named(tmp_path: Path) -> None:
    text = MINIMAL + '[p2p]\npeers = [{index = 1, hots = "h", port = 9601}]\n'
    assert "unknown key [p2p].peers[0].hots" in load_error(tmp_path, text)


def test_wrong_type_named(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + '[api]\nport = "8700"\n')
    assert "[api].port must be an integer" in message
    assert "string" in message


def test_string_field_rejects_int(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + "[api]\nhost = 127\n")
    assert "[api].host must be a string" in message


def test_bool_rejected_as_int(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + "[crypto]\nverify_threads = true\n")
    assert "[crypto].verify_threads must be an integer, got boolean True" in message


def test_float_rejected_as_int(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + "[api]\nport = 8700.0\n")
    assert "[api].port must be an integer, got float" in message


def test_section_must_be_table(tmp_path: Path) -> None:
    assert "[api] must be a table" in load_error(tmp_path, "api = 3\n" + MINIMAL)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[api]\nport = 0\n", "[api].port must be between 1 and 65535, got 0"),
        ("[p2p]\nport = 70000\n", "[p2p].port must be between 1 and 65535, got 70000"),
        ("[mempool]\ntxs_max = 0\n", "[mempool].txs_max must be >= 1, got 0"),
        ("[node]\nindex = -1\n", "[node].index must be >= 0, got -1"),
        ('[node]\nindex = 0\nlog_level = "verbose"\n', "[node].log_level must be one of"),
        ('[api]\nread_access = "closed"\n', "[api].read_access must be one of 'open'"),
        ('[node]\nindex = 0\nkey_file = ""\n', "[node].key_file must not be empty"),
    ],
)
def test_range_errors(tmp_path: Path, text: str, expected: str) -> None:
    if "[node]" not in text:
        text = MINIMAL + text
    assert expected in load_error(tmp_path, text)


def test_missing_required(tmp_path: Path) -> None:
    assert "missing required key [node].index" in load_error(tmp_path, "[api]\nport = 8700\n")


def test_missing_required_peer_field(tmp_path: Path) -> None:
    text = MINIMAL + '[p2p]\npeers = [{index = 1, host = "h"}]\n'
    assert "missing required key [p2p].peers[0].port" in load_error(tmp_path, text)


# --- cross-field checks ------------------------------------------------------


def test_commit_timeout_default_above_max(tmp_path: Path) -> None:
    text = MINIMAL + "[api]\ncommit_timeout_ms_default = 5000\ncommit_timeout_ms_max = 1000\n"
    message = load_error(tmp_path, text)
    assert "[api].commit_timeout_ms_default (5000) must be <=" in message
    assert "[api].commit_timeout_ms_max (1000)" in message


def test_commit_timeout_default_equal_max_ok(tmp_path: Path) -> None:
    text = MINIMAL + "[api]\ncommit_timeout_ms_default = 1000\ncommit_timeout_ms_max = 1000\n"
    assert load(tmp_path, text).api.commit_timeout_ms_max == 1000


def test_api_and_p2p_port_clash_on_same_host(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL + "[p2p]\nport = 8600\n")
    assert "[api].port and [p2p].port are both 8600" in message


def test_same_port_on_different_hosts_ok(tmp_path: Path) -> None:
    text = MINIMAL + '[p2p]\nport = 8600\nhost = "10.0.0.1"\n'
    assert load(tmp_path, text).p2p.port == 8600


def test_duplicate_peer_index(tmp_path: Path) -> None:
    peers = [PeerAddress(1, "h", 9601), PeerAddress(1, "h", 9602)]
    with pytest.raises(ConfigError, match="index 1 more than once"):
        default_config(0, 8600, 9600, peers)


def test_default_config_validates(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[api\].port and \[p2p\].port"):
        default_config(0, 8600, 8600, [])


# --- environment overrides ---------------------------------------------------


def test_env_override_applied_and_typed(tmp_path: Path) -> None:
    environ = {"CHANCERY_API_PORT": "8700", "CHANCERY_NODE_LOG_LEVEL": "debug"}
    config = load(tmp_path, MINIMAL + "[api]\nport = 8601\n", environ)
    assert config.api.port == 8700
    assert isinstance(config.api.port, int)
    assert config.node.log_level == "debug"


def test_env_can_supply_required_key(tmp_path: Path) -> None:
    assert load(tmp_path, "", {"CHANCERY_NODE_INDEX": "2"}).node.index == 2


def test_environ_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANCERY_CONSENSUS_VIEW_TIMEOUT_MS", "3000")
    assert load_config(write(tmp_path, MINIMAL)).consensus.view_timeout_ms == 3000


def test_bad_env_value_named(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL, {"CHANCERY_API_PORT": "eighty"})
    assert "CHANCERY_API_PORT" in message
    assert "expected an integer" in message


def test_env_value_out_of_range_names_variable(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL, {"CHANCERY_API_PORT": "0"})
    assert "environment variable CHANCERY_API_PORT" in message
    assert "[api].port must be between 1 and 65535" in message


def test_env_port_clash_names_variable(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL, {"CHANCERY_P2P_PORT": "8600"})
    assert "CHANCERY_P2P_PORT" in message
    assert "are both 8600" in message


def test_unknown_env_key_named(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL, {"CHANCERY_API_PROT": "8700"})
    assert "CHANCERY_API_PROT" in message
    assert "unknown key [api].prot" in message


def test_peers_not_overridable_from_env(tmp_path: Path) -> None:
    message = load_error(tmp_path, MINIMAL, {"CHANCERY_P2P_PEERS": "[]"})
    assert "CHANCERY_P2P_PEERS" in message
    assert "cannot be set from the environment" in message


def test_unrelated_chancery_vars_ignored(tmp_path: Path) -> None:
    environ = {"CHANCERY_URL": "http://127.0.0.1:8600", "CHANCERY_TOKEN": "x", "HOME": "/"}
    assert load(tmp_path, MINIMAL, environ) == load(tmp_path, MINIMAL)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("False", False), ("0", False)],
)
def test_env_bool_parsing(text: str, expected: bool) -> None:
    # No bool settings exist yet; the parser must be ready for the first one.
    from node.config import _parse_env_text

    assert _parse_env_text(text, bool, "CHANCERY_X_Y") is expected


def test_env_bool_parsing_rejects_other_text() -> None:
    from node.config import _parse_env_text

    with pytest.raises(ConfigError, match="CHANCERY_X_Y: expected a boolean"):
        _parse_env_text("yes", bool, "CHANCERY_X_Y")


def test_a_frame_too_small_for_the_genesis_blocks_is_refused_by_name() -> None:
    from node.services import NodeSetupError, check_frame_fits_blocks
    from node.sync import SYNC_RESPONSE_HEADROOM_BYTES

    block_bytes = 8 * 1024 * 1024
    check_frame_fits_blocks(block_bytes + SYNC_RESPONSE_HEADROOM_BYTES, block_bytes)
    with pytest.raises(NodeSetupError, match=r"p2p\.frame_bytes_max"):
        check_frame_fits_blocks(block_bytes, block_bytes)


def test_the_example_config_loads_and_states_every_default(tmp_path: Path) -> None:
    """configs/node.example.toml documents every key: it loads, and every section other
    than the per-node ones holds exactly the defaults."""
    example = Path(__file__).parents[2] / "configs" / "node.example.toml"
    config = load(tmp_path, example.read_text())
    assert config.storage == StorageSection()
    assert config.mempool == MempoolSection() and config.consensus == ConsensusSection()
    assert config.crypto == CryptoSection()


def test_storage_sizing_is_overridable_from_the_environment(tmp_path: Path) -> None:
    config = load(tmp_path, MINIMAL, {"CHANCERY_STORAGE_MAX_OPEN_FILES": "1000"})
    assert config.storage.max_open_files == 1000
    assert "max_open_files" in load_error(tmp_path, MINIMAL + "[storage]\nmax_open_files = 3\n")

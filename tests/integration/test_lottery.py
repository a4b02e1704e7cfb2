"""A notarised draw on a real 4-node network (node processes, LevelDB, PBFT), driven only
through `chancery lottery ...`: a resumed participant import, seal, both reveals, the
draw, the certificate, then `draw-verify` and a participant's `check` through other nodes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from contracts import lottery_draw
from node import merkle
from node.cli import main as cli_main
from node.localnet import LocalNetwork
from node.lottery_cli import entry_of

VALIDATORS: Final = 4
PROJECT: Final = "spring-draw"
PARTICIPANTS: Final = 2_500
WINNERS: Final = 5
SALT: Final = b"published-after-the-draw"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalNetwork]:
    network = LocalNetwork.generate(
        tmp_path_factory.mktemp("lottery") / "net", validators=VALIDATORS
    )
    try:
        network.start_all()
        yield network
    finally:
        network.stop_all()


def cli(net: LocalNetwork, *argv: str, org: str | None, index: int = 0) -> tuple[int, str, str]:
    """`chancery lottery ...` in-process; (exit code, stdout, stderr)."""
    common = ["--url", net.url(index), "--genesis", str(net.testnet.genesis_path)]
    if org is not None:
        common += ["--key", str(net.testnet.org(org).member_key)]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli_main(["lottery", *argv, *common])
    return code, out.getvalue(), err.getvalue()


def cli_ok(net: LocalNetwork, *argv: str, org: str | None, index: int = 0) -> str:
    code, out, err = cli(net, *argv, org=org, index=index)
    assert code == 0, (argv, out, err)
    return out


def test_a_resumed_import_and_a_full_draw_that_draw_verify_confirms(
    net: LocalNetwork, tmp_path: Path
) -> None:
    identities = [f"+86 138 {n:08d}" for n in range(PARTICIPANTS)]
    participants = tmp_path / "participants.txt"
    participants.write_text("".join(f"{identity}\n" for identity in identities))
    salt_file = tmp_path / "salt"
    salt_file.write_bytes(SALT + b"\n")
    sponsor_secret = tmp_path / "sponsor.secret"
    notary_secret = tmp_path / "notary.secret"
    cli_ok(
        net,
        "create",
        PROJECT,
        "--title",
        "Spring draw",
        "--winners",
        str(WINNERS),
        "--notary-org",
        "notary",
        "--secret-file",
        str(sponsor_secret),
        org="enterprise-a",
    )
    assert sponsor_secret.stat().st_mode & 0o777 == 0o600
    cli_ok(net, "approve", PROJECT, "--secret-file", str(notary_secret), org="notary", index=1)

    common = ["--salt-file", str(salt_file), "--chunk-entries", "1000"]
    first = cli_ok(
        net,
        "import",
        PROJECT,
        str(participants),
        *common,
        "--max-entries",
        "1234",
        org="enterprise-a",
    )
    assert json.loads(first) == {"project_id": PROJECT, "added": 1234, "count": 1234}
    resumed = cli_ok(net, "import", PROJECT, str(participants), *common, org="enterprise-a")
    assert json.loads(resumed) == {"project_id": PROJECT, "added": 1266, "count": PARTICIPANTS}
    again = cli_ok(net, "import", PROJECT, str(participants), *common, org="enterprise-a")
    assert json.loads(again)["added"] == 0
    other_salt = tmp_path / "other-salt"
    other_salt.write_bytes(b"another salt")
    code, _, err = cli(
        net,
        "import",
        PROJECT,
        str(participants),
        "--salt-file",
        str(other_salt),
        org="enterprise-a",
    )
    assert code == 1 and "not the same list" in err

    sealed = json.loads(cli_ok(net, "seal", PROJECT, org="notary", index=2))
    entries = [entry_of(SALT, identity) for identity in identities]
    root = merkle.merkle_root(entries)
    assert sealed["result"]["participants_root"] == root.hex()
    cli_ok(net, "reveal", PROJECT, "--secret-file", str(sponsor_secret), org="enterprise-a")
    cli_ok(net, "reveal", PROJECT, "--secret-file", str(notary_secret), org="notary", index=3)
    drawn = json.loads(cli_ok(net, "draw", PROJECT, org="notary", index=1))
    statement = tmp_path / "certificate.pdf"
    statement.write_bytes(b"%PDF- notarial certificate")
    cli_ok(net, "notarize", PROJECT, "--statement", str(statement), org="notary")

    seed = bytes.fromhex(drawn["result"]["seed"])
    assert drawn["result"]["winners"] == lottery_draw.draw_winners(seed, PARTICIPANTS, WINNERS)
    report = json.loads(cli_ok(net, "draw-verify", PROJECT, org=None, index=3))
    assert report["ok"] is True, report
    assert len(report["checks"]) > 15 + WINNERS

    winner = drawn["result"]["winners"][0]
    mine = json.loads(
        cli_ok(
            net,
            "check",
            PROJECT,
            "--identity",
            identities[winner],
            "--salt-file",
            str(salt_file),
            org=None,
            index=2,
        )
    )
    assert (mine["in_list"], mine["index"], mine["winner"], mine["proof_verified"]) == (
        True,
        winner,
        True,
        True,
    )
    stranger = json.loads(
        cli_ok(
            net,
            "check",
            PROJECT,
            "--identity",
            "+86 000",
            "--salt-file",
            str(salt_file),
            org=None,
        )
    )
    assert stranger["in_list"] is False
    code, _, err = cli(net, "draw-verify", "no-such-draw", org=None)
    assert code == 1 and "not_found" in err
    assert hashlib.sha256(SALT + b"\x00+86 000").hexdigest() == stranger["entry"]

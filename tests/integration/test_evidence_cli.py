"""`chancery evidence anchor|verify` as a user runs them: real subprocesses, a real node.

Files are hashed locally and anchored; the proofs written next to them verify offline
against the genesis file alone, agree with the node's anchor proof route, and fail, naming
the check, once the file changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import pytest

from node.localnet import LocalNetwork
from node.verifier import hash_file, read_genesis, verify_bundle

CHANCERY: Final = Path(sys.executable).with_name("chancery")
COMMAND_TIMEOUT_S: Final = 120.0
SCALE_FILES: Final = 100_000


def chancery(*argv: str, timeout_s: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "CHANCERY_URL"}
    return subprocess.run(
        [str(CHANCERY), *argv],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def read_proof(path: Path) -> dict[str, Any]:
    return json.loads(path.with_name(path.name + ".proof.json").read_text())


def anchor(network: LocalNetwork, org: str, *argv: str) -> subprocess.CompletedProcess[str]:
    key = network.testnet.org(org).member_key
    return chancery("evidence", "anchor", *argv, "--key", str(key), "--url", network.url())


def verify(network: LocalNetwork, path: Path) -> subprocess.CompletedProcess[str]:
    proof = path.with_name(path.name + ".proof.json")
    genesis = network.testnet.genesis_path
    return chancery("evidence", "verify", str(path), str(proof), "--genesis", str(genesis))


def test_anchor_files_then_verify_them_offline(network: LocalNetwork, tmp_path: Path) -> None:
    contract, copy, report = tmp_path / "contract.pdf", tmp_path / "copy.pdf", tmp_path / "r.txt"
    contract.write_bytes(b"%PDF a contract " * 1000)
    copy.write_bytes(contract.read_bytes())
    report.write_text("a report\n")
    meta = json.dumps({"title": "Lease", "pages": 3})
    out = succeeded(
        anchor(
            network,
            "notary",
            str(contract),
            str(copy),
            str(report),
            "--kind",
            "contract",
            "--subject",
            "case-7",
            "--meta",
            meta,
        )
    )
    assert out.count("anchored by notary") == 3
    first, second = read_proof(contract), read_proof(copy)
    assert first == second  # same content, one anchor
    evidence = first["evidence"]
    assert evidence["hash"] == hash_file(contract).hex()
    assert (evidence["kind"], evidence["subject"], evidence["org"]) == (
        "contract",
        "case-7",
        "notary",
    )
    assert evidence["meta"] == {"pages": 3, "title": "Lease"}
    assert read_proof(report)["evidence"]["tx_id"] != evidence["tx_id"]

    # Offline: no URL, only the genesis file.
    for path in (contract, copy, report):
        printed = succeeded(verify(network, path))
        assert "ok    file hash" in printed
        assert "ok    commit certificate" in printed
        assert "verified:" in printed

    # The API's anchor proof route returns the same bundle.
    status, routed = network.get_json(
        f"/v1/contracts/evidence/anchors/{evidence['hash']}/proof?org=notary"
    )
    assert status == 200
    assert routed == first
    assert verify_bundle(routed, read_genesis(network.testnet.genesis_path.read_bytes())).ok

    # One changed byte in the file, or in the proof: the check that failed is named.
    data = bytearray(report.read_bytes())
    data[3] ^= 0x20
    report.write_bytes(bytes(data))
    failed = verify(network, report)
    assert failed.returncode == 1
    assert "FAIL  file hash" in failed.stdout
    proof_path = contract.with_name("contract.pdf.proof.json")
    proof = json.loads(proof_path.read_text())
    proof["evidence"]["org"] = "taxoffice"
    proof_path.write_text(json.dumps(proof))
    failed = verify(network, contract)
    assert failed.returncode == 1
    assert "FAIL  anchor fields" in failed.stdout


def test_anchoring_again_fetches_the_existing_proof(network: LocalNetwork, tmp_path: Path) -> None:
    document = tmp_path / "minutes.txt"
    document.write_text("minutes of the meeting\n")
    succeeded(anchor(network, "notary", str(document)))
    original = read_proof(document)
    again = succeeded(anchor(network, "notary", str(document)))
    assert "already anchored by notary" in again
    assert read_proof(document) == original
    # Another organisation anchors the same hash in its own right.
    other = succeeded(anchor(network, "taxoffice", str(document)))
    assert "anchored by taxoffice" in other and "already" not in other
    assert read_proof(document)["evidence"]["tx_id"] != original["evidence"]["tx_id"]
    succeeded(verify(network, document))


def make_tree(directory: Path, count: int) -> list[Path]:
    paths = []
    for n in range(count):
        path = directory / f"part-{n % 7}" / f"item-{n:06d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"item {n}\n")
        paths.append(path)
    return sorted(paths)


def test_batch_anchors_a_directory_in_one_transaction(
    network: LocalNetwork, tmp_path: Path
) -> None:
    files = make_tree(tmp_path / "scans", 500)
    out = succeeded(anchor(network, "enterprise-a", str(tmp_path / "scans"), "--batch"))
    assert "500 file(s) as one batch" in out
    trust = read_genesis(network.testnet.genesis_path.read_bytes())
    bundles = [read_proof(path) for path in files]
    assert {bundle["evidence"]["tx_id"] for bundle in bundles} == {bundles[0]["evidence"]["tx_id"]}
    for index, (path, bundle) in enumerate(zip(files, bundles, strict=True)):
        assert bundle["batch"]["index"] == index
        assert bundle["batch"]["size"] == bundle["evidence"]["count"] == 500
        file_hash = hashlib.sha256(path.read_bytes()).digest()
        assert verify_bundle(bundle, trust, file_hash=file_hash).ok
    printed = succeeded(verify(network, files[123]))
    assert "ok    batch path leads to the anchored root" in printed

    # Proofs are not anchored themselves on a second run, and the batch is already there.
    again = succeeded(anchor(network, "enterprise-a", str(tmp_path / "scans"), "--batch"))
    assert "500 file(s) as one batch" in again and "already anchored" in again
    status, routed = network.get_json(
        f"/v1/contracts/evidence/anchors/{bundles[0]['evidence']['root']}/proof"
    )
    assert status == 200
    assert routed["evidence"] == bundles[0]["evidence"]

    # A file swapped for another file of the batch fails its own bundle.
    files[0].write_bytes(files[1].read_bytes())
    failed = verify(network, files[0])
    assert failed.returncode == 1
    assert "FAIL  file hash" in failed.stdout


def test_usage_errors_and_refusals(network: LocalNetwork, tmp_path: Path) -> None:
    document = tmp_path / "a.txt"
    document.write_text("a")
    both = anchor(network, "notary", str(document), "--batch", "--subject", "s")
    assert both.returncode == 2 and "--subject" in both.stderr
    missing = anchor(network, "notary", str(tmp_path / "missing"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    bad_kind = anchor(network, "notary", str(document), "--kind", "not an identifier")
    assert bad_kind.returncode == 2 and "--kind" in bad_kind.stderr
    bad_meta = anchor(network, "notary", str(document), "--meta", '{"x": 1.5}')
    assert bad_meta.returncode == 2 and "--meta" in bad_meta.stderr
    stranger = tmp_path / "stranger.key"
    succeeded(chancery("keygen", "--out", str(stranger)))
    refused = chancery(
        "evidence", "anchor", str(document), "--key", str(stranger), "--url", network.url()
    )
    assert refused.returncode == 1 and refused.stderr.startswith("error: ")
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "a.txt.proof.json").exists()


@pytest.mark.slow
def test_batch_of_100000_small_files(network: LocalNetwork, tmp_path: Path) -> None:
    directory = tmp_path / "many"
    files = make_tree(directory, SCALE_FILES)
    out = succeeded(
        chancery(
            "evidence",
            "anchor",
            str(directory),
            "--batch",
            "--key",
            str(network.testnet.org("enterprise-b").member_key),
            "--url",
            network.url(),
            timeout_s=1800.0,
        )
    )
    assert f"{SCALE_FILES} file(s) as one batch" in out
    printed = succeeded(verify(network, files[-1]))
    assert "ok    batch path leads to the anchored root" in printed

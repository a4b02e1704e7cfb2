"""`chancery lottery` helpers: secret files, salts, entries and identity streams."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from node.cli import UsageError
from node.lottery_cli import entry_of, identities, read_secret_file, write_secret_file


def test_secret_files_are_private_and_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "p.sponsor.secret"
    secret = hashlib.sha256(b"s").digest()
    write_secret_file(path, secret)
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_secret_file(path) == secret
    with pytest.raises(UsageError, match="exists already"):
        write_secret_file(path, secret)
    path.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        read_secret_file(path)
    short = tmp_path / "short"
    short.write_text("abcd")
    short.chmod(0o600)
    with pytest.raises(UsageError, match="32-byte"):
        read_secret_file(short)


def test_an_entry_is_the_salted_hash_of_the_stripped_identity() -> None:
    assert entry_of(b"salt", " 13800000000 \n") == hashlib.sha256(b"salt\x0013800000000").digest()


def test_identities_from_lines_skip_blanks() -> None:
    assert list(identities(io.StringIO("a\n\n b \nc"), None)) == ["a", "b", "c"]


def test_identities_from_a_csv_column_by_name_or_number() -> None:
    data = "order,phone\n1,138\n2, 139 \n"
    assert list(identities(io.StringIO(data), "phone")) == ["138", "139"]
    assert list(identities(io.StringIO("1,138\n2,139\n"), "2")) == ["138", "139"]
    with pytest.raises(UsageError, match="not in the header"):
        list(identities(io.StringIO(data), "email"))
    with pytest.raises(UsageError, match="no identity"):
        list(identities(io.StringIO("phone\n138\n,\n"), "2"))

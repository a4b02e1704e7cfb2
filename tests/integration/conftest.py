from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from node.localnet import LocalNetwork


@pytest.fixture
def network(tmp_path: Path) -> Iterator[LocalNetwork]:
    """A one-validator network of real node processes, stopped after the test."""
    net = LocalNetwork.generate(tmp_path / "net", validators=1)
    net.start_all()
    try:
        yield net
    finally:
        net.stop_all()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)

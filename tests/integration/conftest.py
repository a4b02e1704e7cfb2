from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# Lines of each node's log shown with a failing test: a node's last words (a watchdog's
# stack of a stuck loop, a traceback) are where a failure seen only in CI is explained.
FAILURE_LOG_LINES = 60


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    for name, value in getattr(item, "funcargs", {}).items():
        if isinstance(value, LocalNetwork):
            for node in value.testnet.nodes:
                tail = value.log_tail(node.index, FAILURE_LOG_LINES)
                report.sections.append((f"{name}: node {node.index} log", tail))

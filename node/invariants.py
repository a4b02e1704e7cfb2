"""Assertions that stay on under `python -O`: a broken invariant is a bug and crashes."""

from __future__ import annotations

from typing import NoReturn


class InvariantViolation(AssertionError):
    """Raised when the node's own state contradicts itself. Never caught."""


def require(condition: bool, message: str) -> None:
    """Crash with `message` unless `condition` holds. Unlike `assert`, `-O` cannot strip it."""
    if not condition:
        fail(message)


def fail(message: str) -> NoReturn:
    raise InvariantViolation(message)

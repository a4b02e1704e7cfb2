"""Strict parsing of path and query parameters: anything unexpected is `request.malformed`.

Integers are plain ASCII decimal (no sign, spaces, underscores or other digits), booleans
are `true` or `false`, ids are lowercase or uppercase hex of a fixed length. A parameter
that is present but does not parse is refused, never ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from node.errors import ChanceryError

DECIMAL_PATTERN: Final = re.compile(r"[0-9]{1,19}")
HASH_HEX_PATTERN: Final = re.compile(r"[0-9a-fA-F]{64}")
# Heights, limits and timeouts fit in a signed 64-bit integer.
INTEGER_MAX: Final = 2**63 - 1


def malformed(message: str, **details: object) -> ChanceryError:
    return ChanceryError("request.malformed", message, dict(details))


def parse_integer(text: str, name: str, minimum: int = 0, maximum: int = INTEGER_MAX) -> int:
    """Raises: ChanceryError `request.malformed` unless `minimum <= int(text) <= maximum`."""
    if not DECIMAL_PATTERN.fullmatch(text):
        raise malformed(f"{name} must be a non-negative decimal integer", parameter=name)
    value = int(text)
    if not minimum <= value <= maximum:
        raise malformed(
            f"{name} must be between {minimum} and {maximum}",
            parameter=name,
            minimum=minimum,
            maximum=maximum,
        )
    return value


def query_integer(
    query: Mapping[str, str],
    name: str,
    default: int,
    minimum: int = 0,
    maximum: int = INTEGER_MAX,
) -> int:
    """Raises: ChanceryError `request.malformed` for a present but invalid value."""
    text = query.get(name)
    if text is None:
        return default
    return parse_integer(text, name, minimum, maximum)


def query_boolean(query: Mapping[str, str], name: str) -> bool:
    """`true` or `false`; absent is false. Raises: ChanceryError `request.malformed`."""
    text = query.get(name)
    if text is None or text == "false":
        return False
    if text == "true":
        return True
    raise malformed(f"{name} must be true or false", parameter=name)


def query_choice(query: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices`; absent is the first. Raises: ChanceryError `request.malformed`."""
    text = query.get(name)
    if text is None:
        return choices[0]
    if text not in choices:
        raise malformed(f"{name} must be one of {', '.join(choices)}", parameter=name)
    return text


def parse_hash_hex(text: str, name: str) -> bytes:
    """A 32-byte id as 64 hex characters. Raises: ChanceryError `request.malformed`."""
    if not HASH_HEX_PATTERN.fullmatch(text):
        raise malformed(f"{name} must be 64 hex characters", parameter=name)
    return bytes.fromhex(text)

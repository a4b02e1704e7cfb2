"""One-line descriptions of events, actions and messages for `--verbose` traces."""

from __future__ import annotations

from consensus.events import TimerKind
from consensus.messages import PreparedCertificate


def short(value: object) -> str:
    if isinstance(value, bytes):
        return value[:3].hex() if value else "-"
    return describe(value)


def describe(value: object) -> str:
    """A one-line, human-readable form of an event, action or message for traces."""
    name = type(value).__name__
    slots = getattr(type(value), "__slots__", ())
    if not slots or isinstance(value, TimerKind):
        return str(value.name) if isinstance(value, TimerKind) else repr(value)
    parts = []
    for slot in slots:
        item = getattr(value, slot)
        if slot in ("signature", "header", "vote"):
            continue
        if isinstance(item, bytes):
            parts.append(f"{slot}={short(item)}")
        elif slot in ("txs",):
            parts.append(f"txs={len(item)}")
        elif slot in ("signatures", "committed_signatures"):
            parts.append(f"{slot}={[s for s, _ in item]}")
        elif slot == "prepares":
            parts.append(f"prepares={sorted(p.sender for p in item)}")
        elif slot in ("prepared", "view_changes", "pre_prepares"):
            parts.append(f"{slot}=[{', '.join(describe(i) for i in item)}]")
        elif isinstance(item, PreparedCertificate):
            parts.append(f"{slot}=cert(v{item.view} h{item.height} {short(item.block_hash)})")
        elif isinstance(item, TimerKind):
            parts.append(f"{slot}={item.name}")
        elif slot == "message":
            parts.append(describe(item))
        else:
            parts.append(f"{slot}={item}")
    return f"{name}({' '.join(parts)})"

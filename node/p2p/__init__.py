"""Validator-to-validator networking: framing, the handshake, and the transport."""

from node.p2p.framing import FrameError, read_frame, write_frame
from node.p2p.handshake import HandshakeRefused
from node.p2p.transport import PeerTransport, TransportError

__all__ = [
    "FrameError",
    "HandshakeRefused",
    "PeerTransport",
    "TransportError",
    "read_frame",
    "write_frame",
]

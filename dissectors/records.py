"""Records shared by every dissector: where a thing came from, and what went wrong.

Records carry a ``FrameRef`` (source, 1-based frame index, timestamp), never the capture
buffer, so memory stays bounded however long the capture is.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FrameRef:
    source: str  # capture file path (or "live:IFACE")
    index: int  # 1-based frame number, as Wireshark counts
    ts: float  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class Malformed:
    """Where and why a structure could not be decoded (becomes an MS9xx finding)."""

    offset: int  # byte offset inside the IKE message (or the frame, for link/IP errors)
    field: str  # e.g. "Notify.payload_length"
    reason: str

    def __str__(self) -> str:
        return f"{self.field} at offset {self.offset}: {self.reason}"


class Secret(bytes):
    """Key material. Never shows itself in repr/str, so it cannot leak into logs or errors."""

    def __repr__(self) -> str:  # pragma: no cover - trivial
        return f"<secret {len(self)} bytes>"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

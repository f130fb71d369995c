"""What a UDP datagram on the IKE/NAT-T ports carries (RFC 7296 §2.23, RFC 3948 §2).

On UDP 500 the payload is an IKE message. On UDP 4500 a 4-byte zero Non-ESP Marker precedes
an IKE message, a single 0xFF octet is a NAT-keepalive, anything else is ESP (starting at
the SPI, which is never 0).
"""

from __future__ import annotations

from enum import Enum

from .iana import IKE_PORT, NAT_T_PORT

NON_ESP_MARKER = b"\0\0\0\0"
NAT_KEEPALIVE = b"\xff"


class UdpKind(Enum):
    IKE = "ike"  # IKE on port 500, payload offset 0
    IKE_NAT_T = "ike-nat-t"  # IKE on port 4500 after the Non-ESP Marker, payload offset 4
    ESP = "esp"  # ESP-in-UDP
    KEEPALIVE = "keepalive"
    OTHER = "other"


def classify_udp(sport: int | None, dport: int | None, payload: bytes) -> UdpKind:
    if sport == NAT_T_PORT or dport == NAT_T_PORT:
        if payload == NAT_KEEPALIVE:
            return UdpKind.KEEPALIVE
        if payload[:4] == NON_ESP_MARKER:
            return UdpKind.IKE_NAT_T
        return UdpKind.ESP if len(payload) >= 8 else UdpKind.OTHER
    if sport == IKE_PORT or dport == IKE_PORT:
        return UdpKind.IKE
    return UdpKind.OTHER

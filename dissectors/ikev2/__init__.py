"""IKEv2 (RFC 7296) dissection: from capture datagrams to decrypted ``IkeMessage`` records."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from ..iana import IPPROTO_UDP
from ..udpencap import UdpKind, classify_udp
from .message import IkeMessage, parse_message
from .sk import IkeDecryptor

if TYPE_CHECKING:
    from ..capture import Datagram
    from ..keys import KeyStore

__all__ = ["IkeMessage", "IkeDecryptor", "parse_message", "ike_messages", "ike_message_of"]


def ike_message_of(dgram: Datagram) -> IkeMessage | None:
    """The IKE message a UDP datagram carries (port 500, or 4500 behind the marker), or None."""
    if dgram.proto != IPPROTO_UDP:
        return None
    kind = classify_udp(dgram.sport, dgram.dport, dgram.payload)
    if kind is UdpKind.IKE:
        msg = parse_message(dgram.payload)
    elif kind is UdpKind.IKE_NAT_T:
        msg = parse_message(dgram.payload[4:])
        msg.non_esp_marker = True
    else:
        return None
    msg.frame, msg.src, msg.dst, msg.sport, msg.dport = dgram.frame, dgram.src, dgram.dst, dgram.sport, dgram.dport
    return msg


def ike_messages(datagrams: Iterable[Datagram], keys: KeyStore | None = None) -> Iterator[IkeMessage]:
    """Parse and (with keys) decrypt every IKE message among ``datagrams``, in order."""
    if keys is None:
        from ..keys import KeyStore

        keys = KeyStore()
    decryptor = IkeDecryptor(keys)
    for dgram in datagrams:
        msg = ike_message_of(dgram)
        if msg is None:
            continue
        if msg.malformed is None or msg.payloads:
            decryptor.decrypt(msg)
        yield msg

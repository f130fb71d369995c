"""The IKE message: header (RFC 7296 §3.1) and its payload chain.

``parse_message`` never raises on bad input: what could be decoded is kept and the first
problem is recorded as ``Malformed`` with its byte offset inside the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..iana import ExchangeType, PayloadType, name_of
from ..records import FrameRef, Malformed
from ..wire import pack_fields
from . import ikev1
from .payloads import Payload, SkPayload, build_chain, first_type, parse_chain

# §3.1: SPIi (8) | SPIr (8) | Next Payload | MjVer/MnVer | Exchange Type | Flags | Message ID | Length
IKE_HEADER = (("next_payload", "B"), ("version", "B"), ("exchange", "B"), ("flags", "B"),
              ("message_id", "I"), ("length", "I"))
IKE_HEADER_LEN = 28

#: Flag bits (§3.1), as a bit table.
FLAG_BITS = {"initiator": 0x08, "version": 0x10, "response": 0x20}


@dataclass
class IkeMessage:
    spi_i: bytes
    spi_r: bytes
    exchange: int
    message_id: int
    flags: int = 0
    version: int = 0x20
    next_payload: int = PayloadType.NONE
    length: int = 0
    payloads: list[Payload] = field(default_factory=list)
    malformed: Malformed | None = None
    raw: bytes = b""  # the message as received (needed for ICV checks and the hex view)
    frame: FrameRef | None = None
    src: str = ""
    dst: str = ""
    sport: int | None = None
    dport: int | None = None
    non_esp_marker: bool = False  # received on UDP 4500 behind the 4-byte zero marker

    @property
    def initiator(self) -> bool:
        """I flag: sent by the original initiator of the IKE SA."""
        return bool(self.flags & FLAG_BITS["initiator"])

    @property
    def response(self) -> bool:
        return bool(self.flags & FLAG_BITS["response"])

    @property
    def major_version(self) -> int:
        """1 for IKEv1 (ISAKMP, RFC 2408), 2 for IKEv2."""
        return self.version >> 4

    @property
    def ikev1(self) -> bool:
        return self.major_version == 1

    @property
    def exchange_name(self) -> str:
        """The exchange type's name in its version's registry (IKEv1: ``IKEv1 Quick Mode``)."""
        if self.ikev1:
            return "IKEv1 " + ikev1.EXCHANGE_NAMES.get(self.exchange, f"UNKNOWN({self.exchange})")
        return name_of(ExchangeType, self.exchange)

    @property
    def ike_spis(self) -> tuple[bytes, bytes]:
        return self.spi_i, self.spi_r

    def all_payloads(self):
        """Payloads in wire order, with the inner payloads of decrypted SK/SKF after their SK."""
        for p in self.payloads:
            yield p
            if isinstance(p, SkPayload):
                yield from p.inner

    def header_bytes(self, length: int | None = None) -> bytes:
        return self.spi_i + self.spi_r + pack_fields(IKE_HEADER, {
            "next_payload": self.next_payload, "version": self.version, "exchange": self.exchange,
            "flags": self.flags, "message_id": self.message_id,
            "length": self.length if length is None else length})

    def __bytes__(self) -> bytes:
        """Unencrypted build (the peer encrypts through ``sk.seal``)."""
        body = build_chain(self.payloads)
        self.next_payload = first_type(self.payloads)
        return self.header_bytes(IKE_HEADER_LEN + len(body)) + body


def parse_message(data: bytes) -> IkeMessage:
    """Parse an IKE message from ``data`` (starting at SPIi). Never raises on bad input."""
    if len(data) < IKE_HEADER_LEN:
        return IkeMessage(b"", b"", 0, 0, raw=bytes(data),
                          malformed=Malformed(0, "IKE header", f"needs 28 bytes, got {len(data)}"))
    import struct
    np, ver, exch, flags, msgid, length = struct.unpack_from(">BBBBII", data, 16)
    msg = IkeMessage(bytes(data[0:8]), bytes(data[8:16]), exch, msgid, flags, ver, np, length, raw=bytes(data))
    if ver >> 4 not in (1, 2):
        msg.malformed = Malformed(17, "IKE header.version", f"major version {ver >> 4}, not 2 (or 1, IKEv1)")
        return msg
    if length < IKE_HEADER_LEN or length > len(data):
        msg.malformed = Malformed(24, "IKE header.length", f"{length} but {len(data)} bytes received")
        if length < IKE_HEADER_LEN:
            return msg
    body = data[IKE_HEADER_LEN:min(length, len(data))]
    msg.raw = bytes(data[:min(length, len(data))])
    if ver >> 4 == 1:  # IKEv1 / ISAKMP (RFC 2408 §3.1): the same header, its own payloads
        msg.payloads, problem = ikev1.parse_chain(body, np, flags, IKE_HEADER_LEN)
        msg.malformed = msg.malformed or problem
        return msg
    msg.payloads, problem = parse_chain(body, np, IKE_HEADER_LEN)
    msg.malformed = msg.malformed or problem
    return msg

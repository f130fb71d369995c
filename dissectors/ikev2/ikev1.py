"""IKEv1 (ISAKMP, RFC 2408 §3) messages, recognised by their major version and decoded to the
header and the payload chain, so that a gateway serving both versions is read correctly.

The ISAKMP header has IKEv2's layout (RFC 7296 §3.1 kept it): cookies where IKEv2 has SPIs,
Next Payload, version 1.0, exchange type, flags (E, C, A), Message ID, length. Each payload
starts with the same 4-byte generic header, its RESERVED octet where IKEv2 has the critical
bit. With the E flag set everything after the header is encrypted (RFC 2408 §3.1): the chain
ends in one ``IsakmpEncrypted`` block. multisa analyses IKEv2 only; IKEv1 messages are shown,
never judged.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ..iana import ISAKMP_FLAGS, IsakmpExchangeType, IsakmpPayloadType, name_of
from ..records import Malformed
from .payloads import GENERIC_HEADER_LEN, MAX_PAYLOADS, Payload

#: Wireshark's IKEv1 payload names (``payload_type`` in packet-isakmp.c).
PAYLOAD_NAMES = {
    IsakmpPayloadType.NONE: "NONE / No Next Payload", IsakmpPayloadType.SA: "Security Association",
    IsakmpPayloadType.PROPOSAL: "Proposal", IsakmpPayloadType.TRANSFORM: "Transform",
    IsakmpPayloadType.KE: "Key Exchange", IsakmpPayloadType.ID: "Identification",
    IsakmpPayloadType.CERT: "Certificate", IsakmpPayloadType.CR: "Certificate Request",
    IsakmpPayloadType.HASH: "Hash", IsakmpPayloadType.SIG: "Signature", IsakmpPayloadType.NONCE: "Nonce",
    IsakmpPayloadType.N: "Notification", IsakmpPayloadType.D: "Delete", IsakmpPayloadType.VID: "Vendor ID",
    IsakmpPayloadType.ATTR: "Attributes", IsakmpPayloadType.NAT_D: "NAT-D (RFC 3947)",
    IsakmpPayloadType.NAT_OA: "NAT-OA (RFC 3947)", IsakmpPayloadType.NAT_D_DRAFT: "NAT-D (draft-ietf-ipsec-nat-t-ike-01 to 03)",
    IsakmpPayloadType.NAT_OA_DRAFT: "NAT-OA (draft-ietf-ipsec-nat-t-ike-01 to 04)",
    IsakmpPayloadType.FRAGMENTATION: "Fragmentation",
}

EXCHANGE_NAMES = {
    IsakmpExchangeType.BASE: "Base", IsakmpExchangeType.IDENTITY_PROTECTION: "Identity Protection (Main Mode)",
    IsakmpExchangeType.AUTHENTICATION_ONLY: "Authentication Only", IsakmpExchangeType.AGGRESSIVE: "Aggressive",
    IsakmpExchangeType.INFORMATIONAL: "Informational", IsakmpExchangeType.TRANSACTION: "Transaction (Config Mode)",
    IsakmpExchangeType.QUICK_MODE: "Quick Mode", IsakmpExchangeType.NEW_GROUP_MODE: "New Group Mode",
}


def payload_name(kind: int) -> str:
    name = PAYLOAD_NAMES.get(kind)
    return f"{name} ({kind})" if name else name_of(IsakmpPayloadType, kind)


def exchange_name(kind: int) -> str:
    name = EXCHANGE_NAMES.get(kind)
    return f"{name} ({kind})" if name else name_of(IsakmpExchangeType, kind)


def flags_text(flags: int) -> str:
    names = [n.replace("_", " ").capitalize() for n, bit in ISAKMP_FLAGS.items() if flags & bit]
    return ", ".join(names) or "none"


@dataclass
class IsakmpPayload(Payload):
    """An IKEv1 payload: generic header (Next Payload, RESERVED, length) and its body, kept whole."""

    payload_type: int = 0
    data: bytes = b""

    @property
    def type(self) -> int:
        return self.payload_type

    @property
    def name(self) -> str:
        return payload_name(self.payload_type)

    def body(self) -> bytes:
        return self.data


@dataclass
class IsakmpEncrypted(Payload):
    """What follows the header of a message with the E flag: the encrypted payload chain."""

    first_type: int = 0  # the header's Next Payload: the first (encrypted) payload's type
    data: bytes = b""

    @property
    def type(self) -> int:
        return self.first_type

    @property
    def name(self) -> str:
        return "Encrypted Data"

    def body(self) -> bytes:
        return self.data

    def __bytes__(self) -> bytes:
        return self.data


def parse_chain(data: bytes, first_type: int, flags: int, base: int) -> tuple[list[Payload], Malformed | None]:
    """The IKEv1 payload chain in ``data`` (which starts ``base`` bytes into the message).

    Never raises: the payloads before a damaged generic header are kept."""
    if flags & ISAKMP_FLAGS["encryption"]:
        return [IsakmpEncrypted(offset=base, first_type=first_type, data=bytes(data))], None
    payloads: list[Payload] = []
    offset, kind = 0, first_type
    while kind != IsakmpPayloadType.NONE:
        where = base + offset
        name = name_of(IsakmpPayloadType, kind)
        if len(payloads) >= MAX_PAYLOADS:
            return payloads, Malformed(where, "ISAKMP payload chain", f"more than {MAX_PAYLOADS} payloads")
        if len(data) - offset < GENERIC_HEADER_LEN:
            return payloads, Malformed(where, f"ISAKMP {name}.header", f"needs 4 bytes, {len(data) - offset} left")
        nxt, reserved, length = struct.unpack_from(">BBH", data, offset)
        if length < GENERIC_HEADER_LEN or offset + length > len(data):
            return payloads, Malformed(where + 2, f"ISAKMP {name}.payload_length",
                                       f"{length} does not fit the {len(data) - offset} bytes left")
        payloads.append(IsakmpPayload(next_payload=nxt, reserved=reserved, offset=where, payload_type=kind,
                                      data=bytes(data[offset + GENERIC_HEADER_LEN:offset + length])))
        offset += length
        kind = nxt
    if offset < len(data):
        return payloads, Malformed(base + offset, "ISAKMP payload chain",
                                   f"{len(data) - offset} bytes after the last payload")
    return payloads, None

"""IKEv2 payloads (RFC 7296 §3.2-§3.16, RFC 7383 §2.5 for SKF).

Every payload is a dataclass that parses its body and builds it back:
``payload.body() == body`` for every body it parsed (the reference peer relies on it).
Dispatch is one table, ``PAYLOADS``, in the manner of scapy's ``bind_layers``; an unknown
type becomes a ``RawPayload``. A body whose inner structure lies (a proposal longer than the
SA payload, a selector past the end) is kept as a ``RawPayload`` carrying ``malformed``.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import ClassVar

from ..iana import PayloadType, TsType, TransformAttr
from ..records import Malformed
from ..wire import Cursor, ParseError, pack_fields

# RFC 7296 §3.2: Next Payload (1) | C + RESERVED (1) | Payload Length (2)
GENERIC_HEADER = (("next_payload", "B"), ("flags", "B"), ("length", "H"))
GENERIC_HEADER_LEN = 4
CRITICAL = 0x80


@dataclass
class Payload:
    """Common part of every payload: the generic header (RFC 7296 §3.2)."""

    TYPE: ClassVar[int] = -1

    next_payload: int = 0
    critical: bool = False
    reserved: int = 0  # the 7 RESERVED bits after C; kept for exact rebuild
    offset: int = 0  # offset of the generic header inside the IKE message
    malformed: Malformed | None = None
    wire: bytes | None = field(default=None, repr=False)  # body as received, kept when malformed

    @property
    def type(self) -> int:
        return self.TYPE

    @classmethod
    def parse_body(cls, cur: Cursor) -> Payload:  # pragma: no cover - abstract
        raise NotImplementedError

    def body(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def header(self, body_len: int) -> bytes:
        flags = (CRITICAL if self.critical else 0) | (self.reserved & 0x7F)
        return pack_fields(
            GENERIC_HEADER,
            {"next_payload": self.next_payload, "flags": flags, "length": body_len + GENERIC_HEADER_LEN},
        )

    def __bytes__(self) -> bytes:
        body = self.wire if self.wire is not None else self.body()
        return self.header(len(body)) + body


@dataclass
class RawPayload(Payload):
    """A payload of unknown type, or one whose body could not be decoded."""

    payload_type: int = 0
    data: bytes = b""

    @property
    def type(self) -> int:
        return self.payload_type

    def body(self) -> bytes:
        return self.data


# --- SA (RFC 7296 §3.3) -------------------------------------------------------------------

TRANSFORM_HEADER = (("last", "B"), ("reserved", "B"), ("length", "H"), ("type", "B"),
                    ("reserved2", "B"), ("id", "H"))
PROPOSAL_HEADER = (("last", "B"), ("reserved", "B"), ("length", "H"), ("number", "B"),
                   ("protocol_id", "B"), ("spi_size", "B"), ("num_transforms", "B"))
ATTR_TV = 0x8000  # §3.3.5: AF bit set = Type/Value, 2-byte value


@dataclass
class TransformAttribute:
    type: int
    value: int | bytes  # int for TV format, bytes for TLV

    def __bytes__(self) -> bytes:
        if isinstance(self.value, int):
            return struct.pack(">HH", self.type | ATTR_TV, self.value)
        return struct.pack(">HH", self.type, len(self.value)) + self.value


@dataclass
class Transform:
    type: int
    id: int
    attributes: list[TransformAttribute] = field(default_factory=list)
    last: int = 0  # 0 = last, 3 = more (§3.3.2)
    reserved: int = 0
    reserved2: int = 0

    @property
    def key_length(self) -> int | None:
        for attr in self.attributes:
            if attr.type == TransformAttr.KEY_LENGTH and isinstance(attr.value, int):
                return attr.value
        return None

    @classmethod
    def parse(cls, cur: Cursor) -> Transform:
        start = cur.offset
        hdr = cur.fields(TRANSFORM_HEADER, "Transform")
        if hdr["length"] < 8:
            raise ParseError(start + 2, "Transform.length", f"{hdr['length']} is shorter than 8")
        body = Cursor(cur.take(hdr["length"] - 8, "Transform.attributes"), cur.offset - (hdr["length"] - 8))
        attrs: list[TransformAttribute] = []
        try:
            while body.remaining:
                a_type, a_val = struct.unpack(">HH", body.take(4, "Transform.attribute"))
                if a_type & ATTR_TV:
                    attrs.append(TransformAttribute(a_type & ~ATTR_TV, a_val))
                else:
                    attrs.append(TransformAttribute(a_type, body.take(a_val, "Transform.attribute.value")))
        except ParseError as err:  # keep the attributes before the damaged one
            raise err.with_partial(cls(hdr["type"], hdr["id"], attrs, hdr["last"], hdr["reserved"],
                                       hdr["reserved2"])) from None
        return cls(hdr["type"], hdr["id"], attrs, hdr["last"], hdr["reserved"], hdr["reserved2"])

    def __bytes__(self) -> bytes:
        attrs = b"".join(bytes(a) for a in self.attributes)
        return pack_fields(TRANSFORM_HEADER, {
            "last": self.last, "reserved": self.reserved, "length": 8 + len(attrs), "type": self.type,
            "reserved2": self.reserved2, "id": self.id}) + attrs


@dataclass
class Proposal:
    number: int
    protocol_id: int
    spi: bytes
    transforms: list[Transform]
    last: int = 0  # 0 = last, 2 = more (§3.3.1)
    reserved: int = 0

    @classmethod
    def parse(cls, cur: Cursor) -> Proposal:
        start = cur.offset
        hdr = cur.fields(PROPOSAL_HEADER, "Proposal")
        if hdr["length"] < 8 + hdr["spi_size"]:
            raise ParseError(start + 2, "Proposal.length", f"{hdr['length']} is too short")
        inner_len = hdr["length"] - 8
        inner = Cursor(cur.take(inner_len, "Proposal.transforms"), cur.offset - inner_len)
        spi = inner.take(hdr["spi_size"], "Proposal.spi")
        transforms: list[Transform] = []

        def partial() -> Proposal:
            return cls(hdr["number"], hdr["protocol_id"], spi, transforms, hdr["last"], hdr["reserved"])

        try:
            for _ in range(hdr["num_transforms"]):
                transforms.append(Transform.parse(inner))
        except ParseError as err:  # keep the transforms before the damaged one (and its attributes)
            if isinstance(err.partial, Transform):
                transforms.append(err.partial)
            raise err.with_partial(partial()) from None
        if inner.remaining:
            raise ParseError(inner.offset, "Proposal.num_transforms",
                             f"{inner.remaining} bytes left after {hdr['num_transforms']} transforms", partial())
        return partial()

    def __bytes__(self) -> bytes:
        transforms = b"".join(bytes(t) for t in self.transforms)
        return pack_fields(PROPOSAL_HEADER, {
            "last": self.last, "reserved": self.reserved, "length": 8 + len(self.spi) + len(transforms),
            "number": self.number, "protocol_id": self.protocol_id, "spi_size": len(self.spi),
            "num_transforms": len(self.transforms)}) + self.spi + transforms


@dataclass
class SaPayload(Payload):
    TYPE: ClassVar[int] = PayloadType.SA
    proposals: list[Proposal] = field(default_factory=list)

    @classmethod
    def parse_body(cls, cur: Cursor) -> SaPayload:
        proposals: list[Proposal] = []
        try:
            while cur.remaining:
                proposals.append(Proposal.parse(cur))
        except ParseError as err:  # the proposals before the damage stay decoded (as in tshark)
            if isinstance(err.partial, Proposal):
                proposals.append(err.partial)
            raise err.with_partial(cls(proposals=proposals)) from None
        if not proposals:  # §3.3: "one or more Proposal substructures"
            raise ParseError(cur.offset, "SA.proposals", "no proposal (RFC 7296 §3.3 needs one or more)",
                             cls(proposals=proposals))
        return cls(proposals=proposals)

    def body(self) -> bytes:
        return b"".join(bytes(p) for p in self.proposals)


# --- simple bodies -------------------------------------------------------------------------


@dataclass
class KePayload(Payload):
    """§3.4: Diffie-Hellman Group Num (2) | RESERVED (2) | Key Exchange Data."""

    TYPE: ClassVar[int] = PayloadType.KE
    dh_group: int = 0
    data: bytes = b""
    reserved2: int = 0

    @classmethod
    def parse_body(cls, cur: Cursor) -> KePayload:
        group, res = struct.unpack(">HH", cur.take(4, "KE.dh_group"))
        return cls(dh_group=group, reserved2=res, data=cur.rest())

    def body(self) -> bytes:
        return struct.pack(">HH", self.dh_group, self.reserved2) + self.data


@dataclass
class _TypedData(Payload):
    """A one-octet type, three RESERVED octets, then data (ID §3.5, AUTH §3.8, CP §3.15)."""

    kind: int = 0
    data: bytes = b""
    reserved3: bytes = b"\0\0\0"

    @classmethod
    def parse_body(cls, cur: Cursor):
        head = cur.take(4, f"{cls.__name__}.type")
        return cls(kind=head[0], reserved3=head[1:], data=cur.rest())

    def body(self) -> bytes:
        return bytes([self.kind]) + self.reserved3 + self.data


@dataclass
class IdPayload(_TypedData):
    """§3.5: ID Type, then Identification Data. ``TYPE`` is fixed per instance (IDi or IDr)."""

    id_payload_type: int = PayloadType.IDi

    @property
    def type(self) -> int:
        return self.id_payload_type

    @property
    def id_type(self) -> int:
        return self.kind


@dataclass
class AuthPayload(_TypedData):
    TYPE: ClassVar[int] = PayloadType.AUTH

    @property
    def method(self) -> int:
        return self.kind


@dataclass
class CertPayload(Payload):
    """§3.6 CERT and §3.7 CERTREQ: Encoding (1) then data."""

    TYPE: ClassVar[int] = PayloadType.CERT
    encoding: int = 0
    data: bytes = b""

    @classmethod
    def parse_body(cls, cur: Cursor):
        return cls(encoding=cur.take(1, f"{cls.__name__}.encoding")[0], data=cur.rest())

    def body(self) -> bytes:
        return bytes([self.encoding]) + self.data


@dataclass
class CertReqPayload(CertPayload):
    TYPE: ClassVar[int] = PayloadType.CERTREQ


@dataclass
class _Opaque(Payload):
    data: bytes = b""

    @classmethod
    def parse_body(cls, cur: Cursor):
        return cls(data=cur.rest())

    def body(self) -> bytes:
        return self.data


@dataclass
class NoncePayload(_Opaque):
    TYPE: ClassVar[int] = PayloadType.NONCE


@dataclass
class VendorIdPayload(_Opaque):
    TYPE: ClassVar[int] = PayloadType.VENDOR_ID


# --- Notify and Delete ---------------------------------------------------------------------

NOTIFY_HEADER = (("protocol_id", "B"), ("spi_size", "B"), ("notify_type", "H"))
DELETE_HEADER = (("protocol_id", "B"), ("spi_size", "B"), ("num_spis", "H"))


@dataclass
class NotifyPayload(Payload):
    """§3.10: Protocol ID | SPI Size | Notify Message Type | SPI | Notification Data.

    RFC 9611 §5: SA_RESOURCE_INFO (16444) and TS_MAX_QUEUE (48) use this format with
    Protocol ID and SPI Size 0; SA_RESOURCE_INFO's data is the opaque resource identifier.
    """

    TYPE: ClassVar[int] = PayloadType.NOTIFY
    protocol_id: int = 0
    notify_type: int = 0
    spi: bytes = b""
    data: bytes = b""

    @property
    def spi_size(self) -> int:
        return len(self.spi)

    @classmethod
    def parse_body(cls, cur: Cursor) -> NotifyPayload:
        hdr = cur.fields(NOTIFY_HEADER, "Notify")
        spi = cur.take(hdr["spi_size"], "Notify.spi_size")
        return cls(protocol_id=hdr["protocol_id"], notify_type=hdr["notify_type"], spi=spi, data=cur.rest())

    def body(self) -> bytes:
        return pack_fields(NOTIFY_HEADER, {"protocol_id": self.protocol_id, "spi_size": self.spi_size,
                                           "notify_type": self.notify_type}) + self.spi + self.data


@dataclass
class DeletePayload(Payload):
    """§3.11: Protocol ID | SPI Size | Num of SPIs | SPIs."""

    TYPE: ClassVar[int] = PayloadType.DELETE
    protocol_id: int = 0
    spi_size: int = 0
    spis: list[bytes] = field(default_factory=list)

    @classmethod
    def parse_body(cls, cur: Cursor) -> DeletePayload:
        hdr = cur.fields(DELETE_HEADER, "Delete")
        spis: list[bytes] = []
        try:
            for _ in range(hdr["num_spis"]):
                spis.append(cur.take(hdr["spi_size"], "Delete.spis"))
        except ParseError as err:
            raise err.with_partial(cls(protocol_id=hdr["protocol_id"], spi_size=hdr["spi_size"], spis=spis)) from None
        if cur.remaining:
            raise ParseError(cur.offset, "Delete.num_spis", f"{cur.remaining} bytes left after {hdr['num_spis']} SPIs",
                             cls(protocol_id=hdr["protocol_id"], spi_size=hdr["spi_size"], spis=spis))
        return cls(protocol_id=hdr["protocol_id"], spi_size=hdr["spi_size"], spis=spis)

    def body(self) -> bytes:
        return pack_fields(DELETE_HEADER, {"protocol_id": self.protocol_id, "spi_size": self.spi_size,
                                           "num_spis": len(self.spis)}) + b"".join(self.spis)


# --- Traffic selectors (§3.13) -------------------------------------------------------------

SELECTOR_HEADER = (("ts_type", "B"), ("ip_protocol", "B"), ("length", "H"))
_ADDR_LEN = {TsType.TS_IPV4_ADDR_RANGE: 4, TsType.TS_IPV6_ADDR_RANGE: 16}


@dataclass(frozen=True)
class TrafficSelector:
    ts_type: int
    ip_protocol: int = 0
    start_port: int = 0
    end_port: int = 65535
    start_address: str = ""
    end_address: str = ""
    data: bytes = b""  # body of a selector type without address ranges (e.g. TS_SECLABEL)

    @classmethod
    def parse(cls, cur: Cursor) -> TrafficSelector:
        start = cur.offset
        hdr = cur.fields(SELECTOR_HEADER, "TrafficSelector")
        if hdr["length"] < 4:
            raise ParseError(start + 2, "TrafficSelector.length", f"{hdr['length']} is shorter than 4")
        body = Cursor(cur.take(hdr["length"] - 4, "TrafficSelector.length"), start + 4)
        addr_len = _ADDR_LEN.get(hdr["ts_type"])
        if addr_len is None:
            return cls(hdr["ts_type"], hdr["ip_protocol"], 0, 0, "", "", body.rest())
        if body.remaining != 4 + 2 * addr_len:
            raise ParseError(start + 2, "TrafficSelector.length",
                             f"{hdr['length']} does not fit selector type {hdr['ts_type']}")
        sport, eport = struct.unpack(">HH", body.take(4, "TrafficSelector.ports"))
        a = _address_text(body.take(addr_len, "TrafficSelector.start_address"))
        b = _address_text(body.take(addr_len, "TrafficSelector.end_address"))
        return cls(hdr["ts_type"], hdr["ip_protocol"], sport, eport, a, b)

    def __bytes__(self) -> bytes:
        if self.ts_type in _ADDR_LEN:
            body = (struct.pack(">HH", self.start_port, self.end_port)
                    + ipaddress.ip_address(self.start_address).packed
                    + ipaddress.ip_address(self.end_address).packed)
        else:
            body = self.data
        return pack_fields(SELECTOR_HEADER, {"ts_type": self.ts_type, "ip_protocol": self.ip_protocol,
                                             "length": 4 + len(body)}) + body

    def __str__(self) -> str:
        proto = "any" if self.ip_protocol == 0 else str(self.ip_protocol)
        ports = "any" if (self.start_port, self.end_port) == (0, 65535) else f"{self.start_port}-{self.end_port}"
        return f"{self.start_address}-{self.end_address} proto {proto} port {ports}"


_ADDRESS_TEXT: dict[bytes, str] = {}


def _address_text(raw: bytes) -> str:
    """``str(ipaddress.ip_address(raw))``, memoised (bounded): selectors repeat the same few
    addresses in every Child SA exchange, and parsing one costs ~5 µs."""
    text = _ADDRESS_TEXT.get(raw)
    if text is None:
        if len(_ADDRESS_TEXT) >= 4096:
            _ADDRESS_TEXT.clear()
        text = _ADDRESS_TEXT[raw] = str(ipaddress.ip_address(raw))
    return text


@dataclass
class TsPayload(Payload):
    """§3.13: Number of TSs (1) | RESERVED (3) | Traffic Selectors. Type is TSi or TSr."""

    ts_payload_type: int = PayloadType.TSi
    selectors: list[TrafficSelector] = field(default_factory=list)
    reserved3: bytes = b"\0\0\0"

    @property
    def type(self) -> int:
        return self.ts_payload_type

    @classmethod
    def parse_body(cls, cur: Cursor) -> TsPayload:
        head = cur.take(4, "TS.num_ts")
        selectors: list[TrafficSelector] = []
        try:
            for _ in range(head[0]):
                selectors.append(TrafficSelector.parse(cur))
        except (ParseError, ValueError) as err:  # the selectors before the damaged one stay
            if not isinstance(err, ParseError):
                err = ParseError(cur.offset, "TrafficSelector", str(err))
            raise err.with_partial(cls(selectors=selectors, reserved3=head[1:])) from None
        if cur.remaining:
            raise ParseError(cur.offset, "TS.num_ts", f"{cur.remaining} bytes left after {head[0]} selectors",
                             cls(selectors=selectors, reserved3=head[1:]))
        return cls(selectors=selectors, reserved3=head[1:])

    def body(self) -> bytes:
        return bytes([len(self.selectors)]) + self.reserved3 + b"".join(bytes(s) for s in self.selectors)


# --- Configuration (§3.15) and EAP (§3.16) -------------------------------------------------


@dataclass
class CfgAttribute:
    type: int
    value: bytes
    reserved_bit: bool = False

    def __bytes__(self) -> bytes:
        return struct.pack(">HH", (0x8000 if self.reserved_bit else 0) | self.type, len(self.value)) + self.value


@dataclass
class CpPayload(Payload):
    """§3.15: CFG Type (1) | RESERVED (3) | Configuration Attributes."""

    TYPE: ClassVar[int] = PayloadType.CP
    cfg_type: int = 0
    attributes: list[CfgAttribute] = field(default_factory=list)
    reserved3: bytes = b"\0\0\0"

    @classmethod
    def parse_body(cls, cur: Cursor) -> CpPayload:
        head = cur.take(4, "CP.cfg_type")
        attrs: list[CfgAttribute] = []
        try:
            while cur.remaining:
                a_type, a_len = struct.unpack(">HH", cur.take(4, "CP.attribute"))
                attrs.append(CfgAttribute(a_type & 0x7FFF, cur.take(a_len, "CP.attribute.length"),
                                          bool(a_type & 0x8000)))
        except ParseError as err:  # the attributes before the damaged one stay
            raise err.with_partial(cls(cfg_type=head[0], attributes=attrs, reserved3=head[1:])) from None
        return cls(cfg_type=head[0], attributes=attrs, reserved3=head[1:])

    def body(self) -> bytes:
        return bytes([self.cfg_type]) + self.reserved3 + b"".join(bytes(a) for a in self.attributes)


@dataclass
class EapPayload(Payload):
    """§3.16: an EAP message (RFC 3748): Code | Identifier | Length | Type | Type-Data."""

    TYPE: ClassVar[int] = PayloadType.EAP
    code: int = 0
    identifier: int = 0
    eap_type: int | None = None
    data: bytes = b""

    @classmethod
    def parse_body(cls, cur: Cursor) -> EapPayload:
        start = cur.offset
        code, ident, length = struct.unpack(">BBH", cur.take(4, "EAP.code"))
        if length != cur.remaining + 4:
            raise ParseError(start + 2, "EAP.length", f"{length} disagrees with payload ({cur.remaining + 4})")
        eap_type = cur.take(1, "EAP.type")[0] if cur.remaining else None
        return cls(code=code, identifier=ident, eap_type=eap_type, data=cur.rest())

    def body(self) -> bytes:
        tail = (bytes([self.eap_type]) if self.eap_type is not None else b"") + self.data
        return struct.pack(">BBH", self.code, self.identifier, 4 + len(tail)) + tail


# --- Encrypted payloads: SK (§3.14) and SKF (RFC 7383 §2.5) --------------------------------


@dataclass
class SkPayload(Payload):
    """§3.14: IV | encrypted inner payloads | ICV. ``next_payload`` names the first inner one.

    After decryption ``decrypted`` is True and ``inner`` holds the inner payloads; otherwise
    ``error`` says why (no key, integrity failure).
    """

    TYPE: ClassVar[int] = PayloadType.SK
    HEADER_LEN: ClassVar[int] = 4
    data: bytes = b""
    decrypted: bool = False
    inner: list[Payload] = field(default_factory=list)
    error: str | None = None

    @classmethod
    def parse_body(cls, cur: Cursor) -> SkPayload:
        return cls(data=cur.rest())

    def body(self) -> bytes:
        return self.data


SKF_HEADER = (("fragment_number", "H"), ("total_fragments", "H"))


@dataclass
class SkfPayload(SkPayload):
    """RFC 7383 §2.5: Fragment Number (2) | Total Fragments (2) | IV | data | ICV.

    Only fragment 1 has a meaningful Next Payload. ``inner`` is filled on the fragment that
    completes reassembly; ``reassembled_from`` lists the frames whose fragments it joined.
    """

    TYPE: ClassVar[int] = PayloadType.SKF
    HEADER_LEN: ClassVar[int] = 8
    fragment_number: int = 0
    total_fragments: int = 0
    reassembled_from: list[int] = field(default_factory=list)

    @classmethod
    def parse_body(cls, cur: Cursor) -> SkfPayload:
        hdr = cur.fields(SKF_HEADER, "SKF")
        return cls(fragment_number=hdr["fragment_number"], total_fragments=hdr["total_fragments"], data=cur.rest())

    def body(self) -> bytes:
        return struct.pack(">HH", self.fragment_number, self.total_fragments) + self.data


def _ts(kind: int):
    def parse(cur: Cursor) -> TsPayload:
        try:
            p = TsPayload.parse_body(cur)
        except ParseError as err:
            if isinstance(err.partial, TsPayload):
                err.partial.ts_payload_type = kind
            raise
        p.ts_payload_type = kind
        return p
    return parse


def _id(kind: int):
    def parse(cur: Cursor) -> IdPayload:
        p = IdPayload.parse_body(cur)
        p.id_payload_type = kind
        return p
    return parse


#: Payload type -> body parser. One table, as scapy's ``bind_layers(..., next_payload=N)``.
PAYLOADS = {
    PayloadType.SA: SaPayload.parse_body,
    PayloadType.KE: KePayload.parse_body,
    PayloadType.IDi: _id(PayloadType.IDi),
    PayloadType.IDr: _id(PayloadType.IDr),
    PayloadType.CERT: CertPayload.parse_body,
    PayloadType.CERTREQ: CertReqPayload.parse_body,
    PayloadType.AUTH: AuthPayload.parse_body,
    PayloadType.NONCE: NoncePayload.parse_body,
    PayloadType.NOTIFY: NotifyPayload.parse_body,
    PayloadType.DELETE: DeletePayload.parse_body,
    PayloadType.VENDOR_ID: VendorIdPayload.parse_body,
    PayloadType.TSi: _ts(PayloadType.TSi),
    PayloadType.TSr: _ts(PayloadType.TSr),
    PayloadType.SK: SkPayload.parse_body,
    PayloadType.CP: CpPayload.parse_body,
    PayloadType.EAP: EapPayload.parse_body,
    PayloadType.SKF: SkfPayload.parse_body,
}

#: A chain longer than this is malformed (a zero-length loop cannot happen: length >= 4).
MAX_PAYLOADS = 512


def parse_chain(data: bytes, first_type: int, base: int = 0) -> tuple[list[Payload], Malformed | None]:
    """Parse a payload chain starting with ``first_type`` from ``data``.

    ``base`` is the offset of ``data`` inside the IKE message, so errors name message offsets.
    Returns the payloads decoded before any error, and the error as ``Malformed``.
    SK/SKF must be last (§3.14): what follows it is its encrypted body, not more payloads.
    """
    payloads: list[Payload] = []
    pos, size = 0, len(data)
    kind = first_type
    while kind != _NONE:
        if len(payloads) >= MAX_PAYLOADS:
            return payloads, Malformed(base + pos, "payload chain", f"more than {MAX_PAYLOADS} payloads")
        start = base + pos
        left = size - pos
        if left < GENERIC_HEADER_LEN:
            return payloads, Malformed(start, f"{_name(kind)}.header", f"needs 4 bytes, {left} left")
        next_payload, flags, length = _GENERIC.unpack_from(data, pos)
        pos += GENERIC_HEADER_LEN
        left -= GENERIC_HEADER_LEN
        if length < GENERIC_HEADER_LEN:
            return payloads, Malformed(start + 2, f"{_name(kind)}.payload_length",
                                       f"{length} is shorter than the 4-byte generic header")
        if length - GENERIC_HEADER_LEN > left:
            return payloads, Malformed(start + 2, f"{_name(kind)}.payload_length",
                                       f"{length} exceeds the {left + 4} bytes left")
        end = pos + length - GENERIC_HEADER_LEN
        body = Cursor(data[pos:end], start + GENERIC_HEADER_LEN)
        pos = end
        parser = PAYLOADS.get(kind)
        try:
            payload = parser(body) if parser else RawPayload(payload_type=kind, data=body.rest())
        except ParseError as err:
            problem = Malformed(err.offset, err.field, err.reason)
            if isinstance(err.partial, Payload):  # what decoded before the damage, marked malformed
                payload = err.partial
                payload.malformed, payload.wire = problem, bytes(body.data)
            else:
                payload = RawPayload(payload_type=kind, data=body.data, malformed=problem)
        except ValueError as err:  # e.g. an address of the wrong size
            payload = RawPayload(payload_type=kind, data=body.data,
                                 malformed=Malformed(start, _name(kind), str(err)))
        payload.next_payload = next_payload
        payload.critical = bool(flags & CRITICAL)
        payload.reserved = flags & 0x7F
        payload.offset = start
        payloads.append(payload)
        if kind == _SK or kind == _SKF:
            break
        kind = next_payload
    if pos < size:  # also after SK/SKF: its Payload Length bounds the encrypted body (§3.14)
        return payloads, Malformed(base + pos, "payload chain", f"{size - pos} bytes after the last payload")
    return payloads, None


# The generic header as one compiled struct (``GENERIC_HEADER``'s fields, in order), and the
# payload types the chain walk compares with as plain ints: per payload, no table join and
# no enum construction (the name is only built for an error).
_GENERIC = struct.Struct(">" + "".join(code for _, code in GENERIC_HEADER))
_NONE, _SK, _SKF = int(PayloadType.NONE), int(PayloadType.SK), int(PayloadType.SKF)


def build_chain(payloads: list[Payload]) -> bytes:
    """Serialise payloads, setting each Next Payload to the type of the one after it.

    An SK/SKF payload's own Next Payload names its first inner payload and is left as is.
    """
    out = []
    for i, p in enumerate(payloads):
        if not isinstance(p, SkPayload):
            p.next_payload = payloads[i + 1].type if i + 1 < len(payloads) else PayloadType.NONE
        out.append(bytes(p))
    return b"".join(out)


def first_type(payloads: list[Payload]) -> int:
    return payloads[0].type if payloads else PayloadType.NONE


def _name(kind: int) -> str:
    try:
        return PayloadType(kind).name
    except ValueError:
        return f"UNKNOWN({kind})"

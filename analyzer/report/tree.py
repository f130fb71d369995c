"""A ``tshark -V``-like text tree of one IKE message.

Wording and indentation follow Wireshark's ISAKMP dissector (``packet-isakmp.c``); enum values
are named through ``dissectors.iana`` and unknown ones print as ``UNKNOWN(n)``. Rendering never
raises on a parsed message, however malformed: what could not be decoded is shown as
``[Malformed: field at offset N: reason]``.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timezone
from enum import IntEnum

from dissectors.iana import (
    AuthMethod,
    CertEncoding,
    CfgAttr,
    CfgType,
    DhGroup,
    EapCode,
    ExchangeType,
    IdType,
    NotifyType,
    PayloadType,
    ProtocolId,
    TransformAttr,
    TransformType,
    TsType,
    name_of,
    transform_id_name,
)
from dissectors.ikev2.message import FLAG_BITS, IkeMessage
from dissectors.ikev2.payloads import (
    AuthPayload,
    CertPayload,
    CpPayload,
    DeletePayload,
    EapPayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    RawPayload,
    SaPayload,
    SkfPayload,
    SkPayload,
    TsPayload,
    VendorIdPayload,
)

_INDENT = "    "
#: Hex dumps longer than this many bytes are cut (the length is always printed beside them).
_HEX_LIMIT = 64

#: Wireshark's payload names (``payload_type`` in packet-isakmp.c).
_PAYLOAD_NAMES = {
    PayloadType.NONE: "NONE / No Next Payload",
    PayloadType.SA: "Security Association",
    PayloadType.KE: "Key Exchange",
    PayloadType.IDi: "Identification - Initiator",
    PayloadType.IDr: "Identification - Responder",
    PayloadType.CERT: "Certificate",
    PayloadType.CERTREQ: "Certificate Request",
    PayloadType.AUTH: "Authentication",
    PayloadType.NONCE: "Nonce",
    PayloadType.NOTIFY: "Notify",
    PayloadType.DELETE: "Delete",
    PayloadType.VENDOR_ID: "Vendor ID",
    PayloadType.TSi: "Traffic Selector - Initiator",
    PayloadType.TSr: "Traffic Selector - Responder",
    PayloadType.SK: "Encrypted and Authenticated",
    PayloadType.CP: "Configuration",
    PayloadType.EAP: "Extensible Authentication",
    PayloadType.GSPM: "Generic Secure Password Method",
    PayloadType.IDg: "Group Identification",
    PayloadType.GSA: "Group Security Association",
    PayloadType.KD: "Key Download",
    PayloadType.SKF: "Encrypted and Authenticated Fragment",
    PayloadType.PS: "Puzzle Solution",
}

#: Vendor IDs known for certain: strongSwan sends MD5("strongSwan").
_VENDOR_IDS = {bytes.fromhex("882fe56d6fd20dbc2251613b2ebe5beb"): "strongSwan"}

#: EAP method types (IANA "Method Types"), the common ones.
_EAP_TYPES = {1: "Identity", 2: "Notification", 3: "Legacy Nak", 4: "MD5-Challenge", 5: "One-Time Password",
              6: "Generic Token Card", 13: "EAP-TLS", 18: "EAP-SIM", 21: "EAP-TTLS", 23: "EAP-AKA",
              25: "PEAP", 26: "EAP-MSCHAP-V2", 43: "EAP-FAST", 49: "EAP-IKEv2", 50: "EAP-AKA'",
              52: "EAP-pwd", 254: "Expanded Type"}

_IP_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 51: "AH", 58: "IPv6-ICMP", 132: "SCTP"}

# CP attributes whose value is an address (RFC 7296 §3.15.1): 4-byte IPv4, 16-byte IPv6
# (17 with a prefix length), IPv4 subnet = address + netmask.
_CFG_IP4 = {CfgAttr.INTERNAL_IP4_ADDRESS, CfgAttr.INTERNAL_IP4_NETMASK, CfgAttr.INTERNAL_IP4_DNS,
            CfgAttr.INTERNAL_IP4_NBNS, CfgAttr.INTERNAL_IP4_DHCP, CfgAttr.P_CSCF_IP4_ADDRESS}
_CFG_IP6 = {CfgAttr.INTERNAL_IP6_ADDRESS, CfgAttr.INTERNAL_IP6_DNS, CfgAttr.INTERNAL_IP6_DHCP,
            CfgAttr.INTERNAL_IP6_SUBNET, CfgAttr.P_CSCF_IP6_ADDRESS, CfgAttr.INTERNAL_IP6_PREFIX}
_CFG_TEXT = {CfgAttr.APPLICATION_VERSION, CfgAttr.INTERNAL_DNS_DOMAIN}


class _Lines(list):
    """The tree's lines, each with the octets it shows: ``(offset, length)`` in the IKE message
    (decrypted payloads at the offsets of their ciphertext), or None (frame and layer lines)."""

    def __init__(self, items=()) -> None:
        super().__init__(items)
        self.spans: list[tuple[int, int] | None] = [None] * len(self)
        self.span: tuple[int, int] | None = None  # what a line without its own span belongs to

    def append(self, text: str, span: tuple[int, int] | None = None) -> None:
        super().append(text)
        self.spans.append(span if span is not None else self.span)


def render_message(msg: IkeMessage) -> str:
    """The text tree of ``msg``: a frame line, then the ISAKMP header and its payloads."""
    return "\n".join(text for text, _ in render_message_lines(msg))


def render_message_lines(msg: IkeMessage) -> list[tuple[str, tuple[int, int] | None]]:
    """``render_message`` line by line, each with the ``(offset, length)`` of the octets it
    shows in the message: a finding's ``offset`` selects its line, the hex pane its bytes."""
    if msg.version >> 4 == 1:
        return [(line, None) for line in _render_ikev1(msg).splitlines()]
    out = _Lines([_frame_line(msg), *_layers(msg.src, msg.dst, msg.sport, msg.dport)])
    out.append("Internet Security Association and Key Management Protocol", (0, msg.length or len(msg.raw or b"")))
    add = _adder(out, 1)
    add(f"Initiator SPI: {msg.spi_i.hex()}", (0, 8))
    add(f"Responder SPI: {msg.spi_r.hex()}", (8, 8))
    add(f"Next payload: {_payload_name(msg.next_payload)}", (16, 1))
    add(f"Version: {msg.version >> 4}.{msg.version & 0x0F}", (17, 1))
    add(f"Exchange type: {_named(ExchangeType, msg.exchange)}", (18, 1))
    add(f"Flags: 0x{msg.flags:02x} ({_flags(msg.flags)})", (19, 1))
    add(f"Message ID: 0x{msg.message_id:08x}", (20, 4))
    add(f"Length: {msg.length}", (24, 4))
    for payload in msg.payloads:
        _payload(out, payload, 1)
    if msg.malformed is not None:
        add(f"[Malformed: {msg.malformed}]")
    return list(zip(out, out.spans))


def _layers(src: str, dst: str, sport: int | None, dport: int | None) -> list[str]:
    """tshark's one-line summaries of the IP and UDP layers."""
    if not (src or dst):
        return []
    version = 6 if ":" in (src or dst) else 4
    lines = [f"Internet Protocol Version {version}, Src: {src}, Dst: {dst}"]
    if sport is not None and dport is not None:
        lines.append(f"User Datagram Protocol, Src Port: {sport}, Dst Port: {dport}")
    return lines


_NEXT_HEADER = {4: "IPIP", 41: "IPv6", 59: "NONE", 6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6"}
_INNER_PROTO = {6: "Transmission Control Protocol", 17: "User Datagram Protocol", 1: "Internet Control Message Protocol",
                58: "Internet Control Message Protocol v6", 132: "Stream Control Transmission Protocol"}


def render_esp(frame, src: str, dst: str, sport: int | None, dport: int | None, packet: bytes, keys=None) -> str:
    """One ESP packet (``packet`` from the SPI on) as tshark -V shows it with
    ``esp.enable_encryption_decode``: SPI, sequence number, and with an ``esp_sa`` key
    (``keys``: a ``dissectors.keys.EspKeys``) the IV, the ICV and its status, the decrypted
    data with Pad, Pad Length, Next header, and the inner packet's IP/transport summary. A
    failed ICV reads ``[ICV status: Bad -- wrong keys?]`` and nothing is decrypted."""
    import struct

    from dissectors.crypto import DecryptError, IntegrityError
    from dissectors.esp import esp_decrypt, inner_flow

    head = f"Frame {frame.index}: {_time(frame.ts)} {_endpoint(src, sport)} -> {_endpoint(dst, dport)}"
    out = [head, *_layers(src, dst, sport, dport), "Encapsulating Security Payload"]
    add, add2 = _adder(out, 1), _adder(out, 2)
    if len(packet) < 8:
        add(f"[Malformed: ESP header at offset 0: {len(packet)} octets, SPI and Sequence Number need 8]")
        return "\n".join(out)
    spi, seq = struct.unpack_from(">II", packet)
    add(f"ESP SPI: 0x{spi:08x} ({spi})")
    add(f"ESP Sequence: {seq}")
    encr = getattr(keys, "encr", None)
    if keys is None or encr is None:
        add(f"ESP Data: {_sized(packet[8:])}")
        add(f"[No esp_sa key for SPI 0x{spi:08x} to {dst}: not decrypted]")
        return "\n".join(out)
    integ = None if encr.aead else keys.auth
    icv_len = encr.icv_len if encr.aead else (integ.icv_len if integ is not None else 0)
    iv = packet[8:8 + encr.iv_len]
    body = packet[8 + encr.iv_len:len(packet) - icv_len]
    icv = packet[len(packet) - icv_len:] if icv_len else b""
    algo = f"<{encr.name}>"
    add(f"[Keys: esp_sa {keys.source}]")
    if iv:
        add(f"ESP IV: {_sized(iv)}")
    add(f"ESP Encrypted Data: {_sized(body)} {algo}")
    try:
        plain = esp_decrypt(packet, encr, keys.encr_key, integ, keys.auth_key)
    except IntegrityError:
        if icv:
            add(f"ESP ICV: {_sized(icv)}")
        add2("[ICV status: Bad -- wrong keys?]")
        return "\n".join(out)
    except DecryptError as err:
        add(f"[Malformed: ESP Decrypted Data: {err}]")
        return "\n".join(out)
    if icv:
        checked = encr.aead or (integ is not None and integ.checks)
        add(f"ESP ICV: {_sized(icv)}")
        add2(f"[ICV status: {'Good' if checked else 'Unchecked (no integrity algorithm)'}]")
    add(f"ESP Decrypted Data: ({len(body)} bytes)")
    add2(f"ESP Contained Data: {_sized(plain.payload)}")
    add2(f"Pad: {plain.pad.hex() or '(none)'}")
    add2(f"ESP Pad Length: {len(plain.pad)}")
    add2(f"Next header: {_NEXT_HEADER.get(plain.next_header, 'UNKNOWN')} (0x{plain.next_header:02x})")
    flow = inner_flow(plain, src, dst)
    if flow is not None:
        if plain.next_header in (4, 41):
            version = 6 if plain.next_header == 41 else 4
            out.append(f"Internet Protocol Version {version}, Src: {flow.src}, Dst: {flow.dst}")
        name = _INNER_PROTO.get(flow.proto, f"IP protocol {flow.proto}")
        ports = f", Src Port: {flow.sport}, Dst Port: {flow.dport}" if flow.sport or flow.dport else ""
        out.append(f"{name}{ports}")
    return "\n".join(out)


def _render_ikev1(msg: IkeMessage) -> str:
    """IKEv1 (ISAKMP, RFC 2408 §3.1): the header by its own names, then the payload chain."""
    from dissectors.ikev2 import ikev1

    out = [_frame_line(msg), *_layers(msg.src, msg.dst, msg.sport, msg.dport),
           "Internet Security Association and Key Management Protocol (IKEv1)"]
    add = _adder(out, 1)
    add(f"Initiator Cookie: {msg.spi_i.hex()}")
    add(f"Responder Cookie: {msg.spi_r.hex()}")
    add(f"Next payload: {ikev1.payload_name(msg.next_payload)}")
    add(f"Version: {msg.version >> 4}.{msg.version & 0x0F}")
    add(f"Exchange type: {ikev1.exchange_name(msg.exchange)}")
    add(f"Flags: 0x{msg.flags:02x} ({ikev1.flags_text(msg.flags)})")
    add(f"Message ID: 0x{msg.message_id:08x}")
    add(f"Length: {msg.length}")
    for p in msg.payloads:
        if isinstance(p, ikev1.IsakmpEncrypted):
            add(f"Encrypted Data ({len(p.data)} bytes, first payload {ikev1.payload_name(p.first_type)})")
            continue
        add(f"Payload: {ikev1.payload_name(p.type)}")
        sub = _adder(out, 2)
        sub(f"Next payload: {ikev1.payload_name(p.next_payload)}")
        sub(f"Payload length: {len(p.body()) + 4}")
        sub(f"Data: {_sized(p.body())}")
    if msg.malformed is not None:
        add(f"[Malformed: {msg.malformed}]")
    return "\n".join(out)


# --- lines -------------------------------------------------------------------------------------


def _adder(out: list[str], depth: int):
    prefix = _INDENT * depth
    if isinstance(out, _Lines):
        return lambda text, span=None: out.append(prefix + text, span)
    return lambda text, span=None: out.append(prefix + text)


def _frame_line(msg: IkeMessage) -> str:
    head = f"Frame {msg.frame.index if msg.frame is not None else '?'}"
    parts = []
    if msg.frame is not None:
        parts.append(_time(msg.frame.ts))
    if msg.src or msg.dst:
        parts.append(f"{_endpoint(msg.src, msg.sport)} -> {_endpoint(msg.dst, msg.dport)}")
    if msg.non_esp_marker:
        parts.append("(Non-ESP marker)")
    return f"{head}: {' '.join(parts)}" if parts else head


def _time(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    except (OverflowError, OSError, ValueError):
        return f"{ts:.6f}"


def _endpoint(addr: str, port: int | None) -> str:
    host = f"[{addr}]" if ":" in addr and port is not None else addr or "?"
    return host if port is None else f"{host}:{port}"


def _flags(flags: int) -> str:
    return ", ".join((
        "Initiator" if flags & FLAG_BITS["initiator"] else "Responder",
        "Higher version" if flags & FLAG_BITS["version"] else "No higher version",
        "Response" if flags & FLAG_BITS["response"] else "Request",
    ))


def _named(enum: type[IntEnum], value: int) -> str:
    """``NAME (n)``, or ``UNKNOWN(n)``."""
    name = name_of(enum, value)
    return name if name.startswith("UNKNOWN(") else f"{name} ({value})"


def _payload_name(kind: int) -> str:
    name = _PAYLOAD_NAMES.get(kind)
    return f"{name} ({kind})" if name else name_of(PayloadType, kind)


def _hex(data: bytes) -> str:
    if len(data) > _HEX_LIMIT:
        return data[:_HEX_LIMIT].hex() + "..."
    return data.hex()


def _sized(data: bytes) -> str:
    """Hex with its length, as tshark prints data blocks; ``<MISSING>`` when empty."""
    return f"{_hex(data)} ({len(data)} bytes)" if data else "<MISSING>"


def _printable(data: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data)


def _payload_length(payload: Payload) -> str:
    if payload.wire is not None:  # partly decoded: the length it came with
        return str(len(payload.wire) + 4)
    try:
        return str(len(payload.body()) + 4)
    except Exception:  # a hand-built payload that cannot serialise: the tree still renders
        return "?"


# --- payloads ----------------------------------------------------------------------------------


def _payload(out: list[str], p: Payload, depth: int) -> None:
    add = _adder(out, depth)
    title = f"Payload: {_payload_name(p.type)}"
    if isinstance(p, NotifyPayload):
        title += f" - {name_of(NotifyType, p.notify_type)}"
    elif isinstance(p, TsPayload):
        title += f" # {len(p.selectors)}"
    length = _payload_length(p)
    off = p.offset
    outer = getattr(out, "span", None)
    span = (off, int(length)) if length.isdigit() else (off, 4)
    add(title, span)
    inner = _adder(out, depth + 1)
    inner(f"Next payload: {_payload_name(p.next_payload)}", (off, 1))
    inner(f"Critical Bit: {'Critical' if p.critical else 'Not critical'}", (off + 1, 1))
    if p.reserved:
        inner(f"Reserved: 0x{p.reserved:02x}", (off + 1, 1))
    inner(f"Payload length: {length}", (off + 2, 2))
    if isinstance(out, _Lines):
        out.span = (off + 4, max(0, span[1] - 4))  # body lines without a span of their own
    body = _BODIES.get(type(p))
    if body is None:
        body = next((fn for cls, fn in _BODIES.items() if isinstance(p, cls)), _raw)
    body(out, p, depth + 1)
    if p.malformed is not None:
        inner(f"[Malformed: {p.malformed}]")
    if isinstance(out, _Lines):
        out.span = outer


def _sa(out: list[str], p: SaPayload, depth: int) -> None:
    add = _adder(out, depth)
    for prop in p.proposals:
        add(f"Payload: Proposal (2) # {prop.number}")
        a = _adder(out, depth + 1)
        a(f"Proposal number: {prop.number}")
        a(f"Protocol ID: {_named(ProtocolId, prop.protocol_id)}")
        a(f"SPI Size: {len(prop.spi)}")
        a(f"Proposal transforms: {len(prop.transforms)}")
        if prop.spi:
            a(f"SPI: {prop.spi.hex()}")
        for t in prop.transforms:
            a("Payload: Transform (3)")
            b = _adder(out, depth + 2)
            kind = name_of(TransformType, t.type)
            b(f"Transform Type: {_named(TransformType, t.type)}")
            tid = transform_id_name(t.type, t.id)
            b(f"Transform ID ({kind}): {tid if tid.startswith('UNKNOWN(') else f'{tid} ({t.id})'}")
            for attr in t.attributes:
                if isinstance(attr.value, int):
                    head = f"Transform Attribute (t={attr.type},l=2)"
                    if attr.type == TransformAttr.KEY_LENGTH:
                        b(f"{head}: Key Length: {attr.value}")
                    else:
                        b(f"{head}: {name_of(TransformAttr, attr.type)}: {attr.value}")
                else:
                    b(f"Transform Attribute (t={attr.type},l={len(attr.value)}): "
                      f"{name_of(TransformAttr, attr.type)}: {_hex(attr.value)}")


def _ke(out: list[str], p: KePayload, depth: int) -> None:
    add = _adder(out, depth)
    add(f"DH Group #: {_named(DhGroup, p.dh_group)}")
    add(f"Key Exchange Data: {_sized(p.data)}")


def _id(out: list[str], p: IdPayload, depth: int) -> None:
    add = _adder(out, depth)
    add(f"ID type: {_named(IdType, p.id_type)}")
    add(f"Identification Data: {_id_text(p.id_type, p.data)}")


def _id_text(id_type: int, data: bytes) -> str:
    if id_type in (IdType.ID_FQDN, IdType.ID_RFC822_ADDR):
        return _printable(data)
    if (id_type, len(data)) in ((IdType.ID_IPV4_ADDR, 4), (IdType.ID_IPV6_ADDR, 16)):
        return str(ipaddress.ip_address(data))
    return _sized(data)


def _cert(out: list[str], p: CertPayload, depth: int) -> None:
    add = _adder(out, depth)
    add(f"Certificate Encoding: {_named(CertEncoding, p.encoding)}")
    label = "Certificate Authority Data" if p.type == PayloadType.CERTREQ else "Certificate Data"
    add(f"{label}: {_sized(p.data)}")


def _auth(out: list[str], p: AuthPayload, depth: int) -> None:
    add = _adder(out, depth)
    add(f"Authentication Method: {_named(AuthMethod, p.method)}")
    add(f"Authentication Data: {_sized(p.data)}")


def _nonce(out: list[str], p: NoncePayload, depth: int) -> None:
    _adder(out, depth)(f"Nonce DATA: {_sized(p.data)}")


def _notify(out: list[str], p: NotifyPayload, depth: int) -> None:
    add = _adder(out, depth)
    body = p.offset + 4
    add(f"Protocol ID: {_named(ProtocolId, p.protocol_id)}", (body, 1))
    add(f"SPI Size: {p.spi_size}", (body + 1, 1))
    add(f"Notify Message Type: {_named(NotifyType, p.notify_type)}", (body + 2, 2))
    if p.spi or p.notify_type == NotifyType.REKEY_SA:  # REKEY_SA names the SA in its SPI
        add(f"SPI: {p.spi.hex() or '<MISSING>'}", (body + 4, p.spi_size))
    data = (body + 4 + p.spi_size, len(p.data))
    if isinstance(out, _Lines):
        out.span = data  # the notification data lines below
    if p.notify_type == NotifyType.SA_RESOURCE_INFO:  # RFC 9611 §5.1: opaque resource id
        if p.data:
            add(f'Resource Identifier: {_hex(p.data)} ("{_printable(p.data[:_HEX_LIMIT])}")')
        else:
            add("Resource Identifier: (empty: not bound to a resource)")
    elif p.notify_type == NotifyType.TS_MAX_QUEUE and not p.data:  # RFC 9611 §5.2: no data
        pass
    elif p.notify_type == NotifyType.CPU_QUEUES and len(p.data) == 4:  # pre-RFC draft: a count
        add(f"Minimum additional per-CPU SAs: {int.from_bytes(p.data, 'big')} (pre-RFC draft, private use)")
    elif p.notify_type == NotifyType.CPU_QUEUE_INFO:  # pre-RFC draft: empty or identifying data
        if p.data:
            add(f'Queue Identifier: {_hex(p.data)} ("{_printable(p.data[:_HEX_LIMIT])}") (pre-RFC draft)')
        else:
            add("Queue Identifier: (empty) (pre-RFC draft)")
    else:
        add(f"Notification DATA: {_hex(p.data) if p.data else '<MISSING>'}")


def _delete(out: list[str], p: DeletePayload, depth: int) -> None:
    add = _adder(out, depth)
    add(f"Protocol ID: {_named(ProtocolId, p.protocol_id)}")
    add(f"SPI Size: {p.spi_size}")
    add(f"Number of SPIs: {len(p.spis)}")
    if p.spi_size:  # with SPI size 0 (IKE SA) every "SPI" is empty
        for spi in p.spis:
            add(f"Delete SPI: {spi.hex()}")


def _vendor(out: list[str], p: VendorIdPayload, depth: int) -> None:
    known = _VENDOR_IDS.get(p.data)
    _adder(out, depth)(f"Vendor ID: {_hex(p.data)}{f' ({known})' if known else ''}")


def _ts(out: list[str], p: TsPayload, depth: int) -> None:
    add = _adder(out, depth)
    add(f"Number of Traffic Selectors: {len(p.selectors)}")
    for ts in p.selectors:
        add(f"Traffic Selector: {name_of(TsType, ts.ts_type)}")
        a = _adder(out, depth + 1)
        a(f"Traffic Selector Type: {_named(TsType, ts.ts_type)}")
        if ts.ip_protocol == 0:
            a("Protocol ID: any (0)")
        else:
            proto = _IP_PROTOCOLS.get(ts.ip_protocol)
            a(f"Protocol ID: {f'{proto} ({ts.ip_protocol})' if proto else ts.ip_protocol}")
        if ts.ts_type in (TsType.TS_IPV4_ADDR_RANGE, TsType.TS_IPV6_ADDR_RANGE):
            a(f"Start Port: {ts.start_port}")
            a(f"End Port: {ts.end_port}")
            a(f"Starting Addr: {ts.start_address}")
            a(f"Ending Addr: {ts.end_address}")
        else:
            a(f"Selector Data: {_sized(ts.data)}")


def _sk(out: list[str], p: SkPayload, depth: int) -> None:
    add = _adder(out, depth)
    if isinstance(p, SkfPayload):
        add(f"Fragment Number: {p.fragment_number}")
        add(f"Total Fragments: {p.total_fragments}")
    add(f"Encrypted Data ({len(p.data)} bytes)")
    if p.error:
        add(f"[Expert: {p.error}]")
    if not p.decrypted:
        if not p.error:
            add("[Expert: not decrypted]")
        return
    if isinstance(p, SkfPayload):
        if not p.reassembled_from:
            add(f"[Fragment {p.fragment_number} of {p.total_fragments}: decrypted, awaiting reassembly]")
            return
        add(f"Reassembled from frames {', '.join(str(n) for n in p.reassembled_from)}")
    size = 0
    for q in p.inner:
        length = _payload_length(q)
        size += int(length) if length.isdigit() else 0
    add(f"Decrypted Data ({size} bytes)", (p.inner[0].offset, size) if p.inner else None)
    for q in p.inner:
        _payload(out, q, depth + 1)


def _cp(out: list[str], p: CpPayload, depth: int) -> None:
    add = _adder(out, depth)
    add(f"CFG Type: {_named(CfgType, p.cfg_type)}")
    for attr in p.attributes:
        add(f"Attribute Type: (t={attr.type},l={len(attr.value)}) "
            f"{name_of(CfgAttr, attr.type)}: {_cfg_value(attr.type, attr.value)}")


def _cfg_value(kind: int, value: bytes) -> str:
    if not value:
        return "(empty)"
    if kind in _CFG_IP4 and len(value) == 4:
        return str(ipaddress.IPv4Address(value))
    if kind == CfgAttr.INTERNAL_IP4_SUBNET and len(value) == 8:
        return f"{ipaddress.IPv4Address(value[:4])}/{ipaddress.IPv4Address(value[4:])}"
    if kind in _CFG_IP6 and len(value) == 16:
        return str(ipaddress.IPv6Address(value))
    if kind in _CFG_IP6 and len(value) == 17:
        return f"{ipaddress.IPv6Address(value[:16])}/{value[16]}"
    if kind in _CFG_TEXT:
        return _printable(value)
    return _sized(value)


def _eap(out: list[str], p: EapPayload, depth: int) -> None:
    add = _adder(out, depth)
    add("Extensible Authentication Protocol")
    a = _adder(out, depth + 1)
    a(f"Code: {_named(EapCode, p.code)}")
    a(f"Id: {p.identifier}")
    if p.eap_type is not None:
        name = _EAP_TYPES.get(p.eap_type)
        a(f"Type: {f'{name} ({p.eap_type})' if name else f'UNKNOWN({p.eap_type})'}")
        if p.eap_type == 1:  # Identity (RFC 3748 §5.1)
            a(f"Identity: {_printable(p.data)}")
        elif p.data:
            a(f"Type-Data: {_sized(p.data)}")


def _raw(out: list[str], p: Payload, depth: int) -> None:
    data = getattr(p, "data", b"")
    _adder(out, depth)(f"Data: {_sized(data)}")


#: Payload class -> body renderer (subclasses are matched by ``isinstance``).
_BODIES = {
    SaPayload: _sa,
    KePayload: _ke,
    IdPayload: _id,
    CertPayload: _cert,
    AuthPayload: _auth,
    NoncePayload: _nonce,
    NotifyPayload: _notify,
    DeletePayload: _delete,
    VendorIdPayload: _vendor,
    TsPayload: _ts,
    SkPayload: _sk,
    CpPayload: _cp,
    EapPayload: _eap,
    RawPayload: _raw,
}

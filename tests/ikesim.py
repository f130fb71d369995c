"""Build IKEv2 conversations with the codec (``dissectors.ikev2`` payload dataclasses).

A ``Conversation`` plays both peers of one IKE SA lineage and yields ``IkeMessage`` records as
the dissector would after decryption: inner payloads in a decrypted ``SkPayload`` (or, with
``clear=True``, in the clear so that ``write_pcap`` can store them and the real capture
reader parses them back). Each exchange is a method; ``emit=False`` returns the two
messages without sending them, so tests can cross exchanges on the wire.

Side names follow ``analyzer.model.Side``: "I" sent the lineage's first IKE_SA_INIT.
"""

from __future__ import annotations

import hashlib
import ipaddress
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dissectors.iana import (
    CfgAttr,
    CfgType,
    DhGroup,
    EncrId,
    ExchangeType,
    IntegId,
    NotifyType,
    PayloadType,
    PrfId,
    ProtocolId,
    TransformAttr,
    TransformType,
    TsType,
)
from dissectors.ikev2.message import IkeMessage
from dissectors.ikev2.payloads import (
    AuthPayload,
    CfgAttribute,
    CpPayload,
    DeletePayload,
    IdPayload,
    KePayload,
    NoncePayload,
    NotifyPayload,
    Payload,
    Proposal,
    SaPayload,
    SkPayload,
    TrafficSelector,
    Transform,
    TransformAttribute,
    TsPayload,
    first_type,
)
from dissectors.records import FrameRef

NET_I = ("198.51.100.0", "198.51.100.255")
NET_R = ("203.0.113.0", "203.0.113.255")
AES_CBC_128 = ((EncrId.AES_CBC, 128), IntegId.AUTH_HMAC_SHA2_256_128)
AES_GCM_256 = ((EncrId.AES_GCM_16, 256), None)


def rid(n: int) -> bytes:
    """A resource id that does not look like hardware information (4 pseudo-random octets)."""
    return hashlib.sha256(b"rid%d" % n).digest()[:4] or b"\x9a\x3c\x51\xe7"


def selector(net: tuple[str, str], proto: int = 0, ports: tuple[int, int] = (0, 65535)) -> TrafficSelector:
    kind = TsType.TS_IPV6_ADDR_RANGE if ":" in net[0] else TsType.TS_IPV4_ADDR_RANGE
    return TrafficSelector(kind, proto, ports[0], ports[1], net[0], net[1])


def cidr(text: str) -> tuple[str, str]:
    n = ipaddress.ip_network(text)
    return str(n.network_address), str(n.broadcast_address)


def esp_proposal(spi: bytes, suite=AES_CBC_128, dh: int | None = None, esn: bool = False,
                 number: int = 1) -> Proposal:
    (encr, bits), integ = suite
    transforms = [Transform(TransformType.ENCR, encr, [TransformAttribute(TransformAttr.KEY_LENGTH, bits)])]
    if integ is not None:
        transforms.append(Transform(TransformType.INTEG, integ))
    if dh is not None:
        transforms.append(Transform(TransformType.DH, dh))
    transforms.append(Transform(TransformType.ESN, 1 if esn else 0))
    for t in transforms[:-1]:
        t.last = 3
    return Proposal(number, ProtocolId.ESP, spi, transforms)


def ike_proposal(spi: bytes = b"") -> Proposal:
    transforms = [Transform(TransformType.ENCR, EncrId.AES_CBC, [TransformAttribute(TransformAttr.KEY_LENGTH, 128)]),
                  Transform(TransformType.PRF, PrfId.PRF_HMAC_SHA2_256),
                  Transform(TransformType.INTEG, IntegId.AUTH_HMAC_SHA2_256_128),
                  Transform(TransformType.DH, DhGroup.CURVE25519)]
    for t in transforms[:-1]:
        t.last = 3
    return Proposal(1, ProtocolId.IKE, spi, transforms)


def notify(kind: int, data: bytes = b"", protocol_id: int = 0, spi: bytes = b"",
           critical: bool = False) -> NotifyPayload:
    return NotifyPayload(protocol_id=protocol_id, notify_type=kind, spi=spi, data=data, critical=critical)


def resource_info(data: bytes | None) -> list[NotifyPayload]:
    return [] if data is None else [notify(NotifyType.SA_RESOURCE_INFO, data)]


@dataclass
class Child:
    """Handle on a Child SA the conversation negotiated: each side's inbound SPI and selectors."""

    spi: dict[str, bytes]
    ts: tuple[tuple[TrafficSelector, ...], tuple[TrafficSelector, ...]]  # (I's, R's)


@dataclass
class Esp:
    frame: FrameRef
    spi: bytes
    src: str
    dst: str
    seq: int


@dataclass
class Exchange:
    request: IkeMessage
    response: IkeMessage | None
    child: Child | None = None


@dataclass
class Conversation:
    source: str = "test.pcap"
    addr: dict[str, str] = field(default_factory=lambda: {"I": "192.0.2.1", "R": "192.0.2.2"})
    clear: bool = False  # inner payloads in the clear instead of a decrypted SK payload
    step: float = 0.01  # seconds between frames
    records: list = field(default_factory=list)  # IkeMessage and Esp, in wire order
    t: float = 1_700_000_000.0
    frame_no: int = 0
    seed: int = 1

    def __post_init__(self) -> None:
        self.spis = (self._spi(8), bytes(8))
        self.ike_initiator = "I"
        self.counters: dict[tuple[bytes, bytes], dict[str, int]] = {}
        self.esp_seq: dict[bytes, int] = {}

    # --- plumbing ------------------------------------------------------------------------

    @property
    def next_id(self) -> dict[str, int]:
        """Each peer's next request Message ID in the current IKE SA (RFC 7296 §2.2)."""
        return self.counters.setdefault(self.spis, {"I": 0, "R": 0})

    def _spi(self, size: int = 4) -> bytes:
        self.seed += 1
        return hashlib.sha256(b"spi%d" % self.seed).digest()[:size]

    def at(self, seconds: float) -> None:
        """Move the clock forward so the next frame is ``seconds`` later."""
        self.t += seconds

    def send(self, *msgs: IkeMessage | None) -> None:
        for m in msgs:
            if m is None:
                continue
            self.frame_no += 1
            self.t += self.step
            m.frame = FrameRef(self.source, self.frame_no, self.t)
            self.records.append(m)

    def message(self, exchange: int, sender: str, response: bool, msgid: int, inner: list[Payload],
                sk: bool = True, sk_error: str | None = None) -> IkeMessage:
        other = "R" if sender == "I" else "I"
        flags = (0x08 if sender == self.ike_initiator else 0) | (0x20 if response else 0)
        if sk and not self.clear:
            payloads: list[Payload] = [SkPayload(next_payload=first_type(inner), decrypted=sk_error is None,
                                                 inner=inner if sk_error is None else [], error=sk_error)]
        else:
            payloads = list(inner)
        msg = IkeMessage(self.spis[0], self.spis[1], exchange, msgid, flags, payloads=payloads,
                         src=self.addr[sender], dst=self.addr[other], sport=500, dport=500)
        return msg

    def exchange(self, exchange: int, by: str, req: list[Payload], resp: list[Payload] | None,
                 emit: bool = True, sk: bool = True) -> Exchange:
        msgid = self.next_id[by]
        self.next_id[by] += 1
        other = "R" if by == "I" else "I"
        q = self.message(exchange, by, False, msgid, req, sk)
        r = None if resp is None else self.message(exchange, other, True, msgid, resp, sk)
        if emit:
            self.send(q, r)
        return Exchange(q, r)

    def ts_payloads(self, by: str, ts: tuple | None = None) -> list[TsPayload]:
        """TSi/TSr as the requester ``by`` sends them (TSi = its own side)."""
        mine_i, mine_r = ts or ((selector(NET_I),), (selector(NET_R),))
        tsi, tsr = (mine_i, mine_r) if by == "I" else (mine_r, mine_i)
        return [TsPayload(ts_payload_type=PayloadType.TSi, selectors=list(tsi)),
                TsPayload(ts_payload_type=PayloadType.TSr, selectors=list(tsr))]

    # --- exchanges -----------------------------------------------------------------------

    def ike_sa_init(self, req_extra: Sequence[Payload] = (), resp_extra: Sequence[Payload] = ()) -> Exchange:
        req = [SaPayload(proposals=[ike_proposal()]), KePayload(dh_group=DhGroup.CURVE25519, data=bytes(32)),
               NoncePayload(data=bytes(32)), *req_extra]
        self.next_id["I"] = 0
        q = self.message(ExchangeType.IKE_SA_INIT, "I", False, 0, req, sk=False)
        self.spis = (self.spis[0], self._spi(8))
        resp = [SaPayload(proposals=[ike_proposal()]), KePayload(dh_group=DhGroup.CURVE25519, data=bytes(32)),
                NoncePayload(data=bytes(32)), *resp_extra]
        r = self.message(ExchangeType.IKE_SA_INIT, "R", True, 0, resp, sk=False)
        self.next_id["I"] = 1
        self.send(q, r)
        return Exchange(q, r)

    def ike_auth(self, rid_i: bytes | None = None, rid_r: bytes | None = None, *, cp: bool = False,
                 transport: bool = False, ipcomp: bool = False, esn: bool = False, suite=AES_CBC_128,
                 ts: tuple | None = None, req_extra: Sequence[Payload] = (), resp_extra: Sequence[Payload] = (),
                 refuse: int | None = None) -> Exchange:
        spi_i, spi_r = self._spi(), self._spi()
        mode = [notify(NotifyType.USE_TRANSPORT_MODE)] if transport else []
        comp = [notify(NotifyType.IPCOMP_SUPPORTED, b"\x12\x34\x02")] if ipcomp else []
        req: list[Payload] = [IdPayload(kind=1, data=bytes([192, 0, 2, 1])), AuthPayload(kind=2, data=bytes(32))]
        if cp:
            req.append(CpPayload(cfg_type=CfgType.CFG_REQUEST,
                                 attributes=[CfgAttribute(CfgAttr.INTERNAL_IP4_ADDRESS, b"")]))
        req += [SaPayload(proposals=[esp_proposal(spi_i, suite, esn=esn)]), *self.ts_payloads("I", ts),
                *mode, *comp, *resource_info(rid_i), *req_extra]
        resp: list[Payload] = [IdPayload(kind=1, id_payload_type=PayloadType.IDr, data=bytes([192, 0, 2, 2])),
                               AuthPayload(kind=2, data=bytes(32))]
        if cp:
            resp.append(CpPayload(cfg_type=CfgType.CFG_REPLY,
                                  attributes=[CfgAttribute(CfgAttr.INTERNAL_IP4_ADDRESS, bytes([10, 3, 0, 1]))]))
        if refuse is not None:
            resp.append(notify(refuse))
        else:
            resp += [SaPayload(proposals=[esp_proposal(spi_r, suite, esn=esn)]), *self.ts_payloads("I", ts),
                     *mode, *comp, *resource_info(rid_r)]
        resp += list(resp_extra)
        ex = self.exchange(ExchangeType.IKE_AUTH, "I", req, resp)
        ex.child = None if refuse is not None else Child({"I": spi_i, "R": spi_r}, _ts_pair(ts))
        return ex

    def create_child(self, by: str = "I", rid_req: bytes | None = None, rid_resp: bytes | None = None, *,
                     ts: tuple | None = None, resp_ts: tuple | None = None, rekey: Child | None = None,
                     suite=AES_CBC_128, pfs: int | None = DhGroup.CURVE25519, esn: bool = False,
                     transport: bool = False, ipcomp: bool = False, refuse: int | None = None,
                     refusal: NotifyPayload | None = None, req_extra: Sequence[Payload] = (),
                     resp_extra: Sequence[Payload] = (), emit: bool = True) -> Exchange:
        """CREATE_CHILD_SA started by ``by``; ``rekey`` names the Child SA it replaces."""
        other = "R" if by == "I" else "I"
        spi_req, spi_resp = self._spi(), self._spi()
        mode = [notify(NotifyType.USE_TRANSPORT_MODE)] if transport else []
        comp = [notify(NotifyType.IPCOMP_SUPPORTED, b"\x12\x34\x02")] if ipcomp else []
        ke = [KePayload(dh_group=pfs, data=bytes(32))] if pfs else []
        req: list[Payload] = []
        if rekey is not None:
            req.append(notify(NotifyType.REKEY_SA, protocol_id=ProtocolId.ESP, spi=rekey.spi[by]))
        req += [SaPayload(proposals=[esp_proposal(spi_req, suite, pfs, esn)]), NoncePayload(data=bytes(32)), *ke,
                *self.ts_payloads(by, ts), *mode, *comp, *resource_info(rid_req), *req_extra]
        if refuse is not None or refusal is not None:
            resp: list[Payload] = [refusal or notify(refuse)]
            child = None
        else:
            resp = [SaPayload(proposals=[esp_proposal(spi_resp, suite, pfs, esn)]), NoncePayload(data=bytes(32)),
                    *ke, *self.ts_payloads(by, resp_ts or ts), *mode, *comp, *resource_info(rid_resp)]
            child = Child({by: spi_req, other: spi_resp}, _ts_pair(resp_ts or ts))
        resp += list(resp_extra)
        ex = self.exchange(ExchangeType.CREATE_CHILD_SA, by, req, resp, emit)
        ex.child = child
        return ex

    def delete_child(self, child: Child, by: str = "I", emit: bool = True) -> Exchange:
        other = "R" if by == "I" else "I"
        req = [DeletePayload(protocol_id=ProtocolId.ESP, spi_size=4, spis=[child.spi[by]])]
        resp = [DeletePayload(protocol_id=ProtocolId.ESP, spi_size=4, spis=[child.spi[other]])]
        return self.exchange(ExchangeType.INFORMATIONAL, by, req, resp, emit)

    def informational(self, by: str = "I", req: Sequence[Payload] = (), resp: Sequence[Payload] = ()) -> Exchange:
        return self.exchange(ExchangeType.INFORMATIONAL, by, list(req), list(resp))

    def rekey_ike(self, by: str = "I") -> Exchange:
        new_req, new_resp = self._spi(8), self._spi(8)
        req = [SaPayload(proposals=[ike_proposal(new_req)]), NoncePayload(data=bytes(32)),
               KePayload(dh_group=DhGroup.CURVE25519, data=bytes(32))]
        resp = [SaPayload(proposals=[ike_proposal(new_resp)]), NoncePayload(data=bytes(32)),
                KePayload(dh_group=DhGroup.CURVE25519, data=bytes(32))]
        ex = self.exchange(ExchangeType.CREATE_CHILD_SA, by, req, resp)
        old = self.spis
        self.old_initiator = self.ike_initiator
        self.spis, self.ike_initiator = (new_req, new_resp), by
        self.old_spis = old
        return ex

    def delete_ike(self, by: str = "I", spis: tuple[bytes, bytes] | None = None) -> Exchange:
        current, initiator = self.spis, self.ike_initiator
        if spis is not None:  # delete an older IKE SA of the lineage
            self.spis = spis
            self.ike_initiator = getattr(self, "old_initiator", "I")
        ex = self.exchange(ExchangeType.INFORMATIONAL, by, [DeletePayload(protocol_id=ProtocolId.IKE)], [])
        self.spis, self.ike_initiator = current, initiator
        return ex

    def esp(self, child: Child, count: int = 1, to: str = "R") -> None:
        """``count`` ESP packets towards ``to`` (on the SPI ``to`` receives on)."""
        spi = child.spi[to]
        src = self.addr["I" if to == "R" else "R"]
        for _ in range(count):
            self.frame_no += 1
            self.t += self.step
            seq = self.esp_seq[spi] = self.esp_seq.get(spi, 0) + 1
            self.records.append(Esp(FrameRef(self.source, self.frame_no, self.t), spi, src, self.addr[to], seq))

    # --- canned starts -------------------------------------------------------------------

    def established(self, rid_i: bytes | None = b"", rid_r: bytes | None = b"", **kw) -> Child:
        """IKE_SA_INIT + IKE_AUTH with the initial (fallback) Child SA; returns it."""
        self.ike_sa_init()
        ex = self.ike_auth(rid_i, rid_r, **kw)
        assert ex.child is not None
        return ex.child


def _ts_pair(ts) -> tuple:
    return ts or ((selector(NET_I),), (selector(NET_R),))


def feed_all(analyzer, records: Iterable) -> list:
    """Feed records in order to an ``Analyzer`` and finish it; the findings, in order."""
    out = []
    for r in records:
        if isinstance(r, Esp):
            out += analyzer.feed_esp(r.frame, r.spi)
        else:
            out += analyzer.feed(r)
    return out + analyzer.finish()


# --- pcap ------------------------------------------------------------------------------------


def _ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int) -> bytes:
    header = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, 64, proto, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    words = struct.unpack(">10H", header)
    total = sum(words)
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return header[:10] + struct.pack(">H", ~total & 0xFFFF) + header[12:] + payload


def frame_bytes(record, ident: int = 0) -> bytes:
    """Ethernet + IPv4 + (UDP 500 IKE | ESP) bytes of one record."""
    eth = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
    if isinstance(record, Esp):
        body = record.spi + struct.pack(">I", record.seq) + bytes(48)
        return eth + _ipv4(record.src, record.dst, 50, body, ident)
    data = bytes(record)
    udp = struct.pack(">HHHH", record.sport or 500, record.dport or 500, 8 + len(data), 0) + data
    return eth + _ipv4(record.src, record.dst, 17, udp, ident)


@dataclass(frozen=True)
class SkKeys:
    """Keys of one IKE SA (AES-CBC-128 + HMAC-SHA2-256-128), derived from its SPIs for tests."""

    spi_i: bytes
    spi_r: bytes

    def _key(self, label: bytes, n: int) -> bytes:
        return hashlib.sha256(label + self.spi_i + self.spi_r).digest()[:n]

    @property
    def specs(self):
        from dissectors.crypto import encr_spec, integ_spec

        return encr_spec(EncrId.AES_CBC, 128), integ_spec(IntegId.AUTH_HMAC_SHA2_256_128)

    def keys(self, initiator: bool) -> tuple[bytes, bytes]:
        return (self._key(b"ei" if initiator else b"er", 16), self._key(b"ai" if initiator else b"ar", 32))

    def table_line(self) -> str:
        """A row of Wireshark's ikev2_decryption_table."""
        encr, integ = self.specs
        (ei, ai), (er, ar) = self.keys(True), self.keys(False)
        return (f'{self.spi_i.hex()},{self.spi_r.hex()},{ei.hex()},{er.hex()},"{encr.name}",'
                f'{ai.hex()},{ar.hex()},"{integ.name}"')


def sealed(msg: IkeMessage, keys: SkKeys) -> bytes:
    """The message as the wire carries it: inner payloads encrypted into one SK payload."""
    from dissectors.ikev2.sk import seal

    sk = msg.payloads[0]
    assert isinstance(sk, SkPayload)
    clone = IkeMessage(msg.spi_i, msg.spi_r, msg.exchange, msg.message_id, msg.flags)
    encr, integ = keys.specs
    sk_e, sk_a = keys.keys(msg.initiator)
    iv = hashlib.sha256(repr(msg.frame).encode()).digest()[:16]
    return seal(clone, list(sk.inner), encr, integ, sk_e, sk_a, iv=iv)


def ike_sas_of(records: Iterable) -> list[tuple[bytes, bytes]]:
    seen: dict[tuple[bytes, bytes], None] = {}
    for r in records:
        if isinstance(r, IkeMessage) and any(r.spi_r):
            seen.setdefault((r.spi_i, r.spi_r), None)
    return list(seen)


def write_key_table(path, records: Iterable) -> str:
    """Write the ikev2_decryption_table for every IKE SA in ``records``."""
    lines = [SkKeys(*spis).table_line() for spis in ike_sas_of(records)]
    with open(path, "w", encoding="ascii") as out:
        out.write("".join(line + "\n" for line in lines))
    return str(path)


def write_pcap(path, records: Iterable, encrypt: bool = False) -> int:
    """Write records as a classic pcap (Ethernet, IPv4, UDP 500 / ESP). With ``encrypt``,
    messages holding a decrypted SK payload are sealed with ``SkKeys`` of their IKE SA (see
    ``write_key_table``); otherwise the conversation must have been built with ``clear=True``.
    Returns the frame count."""
    n = 0
    eth = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, record in enumerate(records):
            if (encrypt and isinstance(record, IkeMessage) and record.payloads
                    and isinstance(record.payloads[0], SkPayload)):
                data = sealed(record, SkKeys(record.spi_i, record.spi_r))
                udp = struct.pack(">HHHH", 500, 500, 8 + len(data), 0) + data
                pkt = eth + _ipv4(record.src, record.dst, 17, udp, i)
            else:
                pkt = frame_bytes(record, i)
            ts = record.frame.ts if record.frame else 0.0
            sec = int(ts)
            out.write(struct.pack("<IIII", sec, int(round((ts - sec) * 1e6)), len(pkt), len(pkt)))
            out.write(pkt)
            n += 1
    return n

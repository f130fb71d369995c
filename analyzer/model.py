"""What the peers agreed, rebuilt from dissected IKEv2: IKE SAs, Child SAs, per-TS groups, findings.

The objects here are filled by ``analyzer.state.Analyzer`` and read by the rules and the
reporters; nothing here does I/O.

Orientation. An IKE SA can be rekeyed by either peer, and the new IKE SA's "initiator" is
whoever started the rekey. So that Child SAs and groups keep one orientation for the whole
life of a connection, everything is told from the **lineage initiator** (side ``I``): the peer
that sent the first IKE_SA_INIT of the lineage (moon in the strongSwan 6 capture).
``ChildSa.spi_in`` is the SPI side ``I`` receives on, ``ts_i`` its own traffic selectors,
``resource_id_i`` the SA_RESOURCE_INFO data it sent; ``_r`` fields are the other peer's.

Unknowns. A capture may start in the middle of a connection: an IKE SA first seen after its
IKE_SA_INIT is ``partial``, a rekey of a Child SA never seen has ``rekey_of`` None and
``rekey_of_spi`` set, and a group whose first Child SA was not seen being negotiated has no
known ``fallback``. Nothing is guessed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from enum import Enum, IntEnum

from dissectors.iana import EncrId, EsnId, IntegId, ProtocolId, TransformType, TsType, name_of
from dissectors.ikev2.payloads import Proposal, TrafficSelector
from dissectors.records import FrameRef

# --- finding vocabulary ------------------------------------------------------------------


class Severity(IntEnum):
    """User-tunable weight of a finding (ordered: ``ERROR > WARNING > INFO``)."""

    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, text: str) -> Severity:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown severity {text!r} (error, warning or info)") from None


class Level(Enum):
    """The RFC 2119 keyword a rule enforces; fixed, unlike the severity."""

    MUST = "MUST"
    MUST_NOT = "MUST NOT"
    SHOULD = "SHOULD"
    SHOULD_NOT = "SHOULD NOT"
    RECOMMENDED = "RECOMMENDED"
    NOT_RECOMMENDED = "NOT RECOMMENDED"
    MAY = "MAY"
    NONE = ""  # analyzer limits (MS9xx) enforce no requirement

    @property
    def default_severity(self) -> Severity:
        if self in (Level.MUST, Level.MUST_NOT):
            return Severity.ERROR
        if self in (Level.SHOULD, Level.SHOULD_NOT):
            return Severity.WARNING
        return Severity.INFO


class ExpertGroup(Enum):
    """Wireshark's expert-info groups (epan/proto.h ``PI_*``), by their display names."""

    PROTOCOL = "Protocol"  # PI_PROTOCOL: violates a protocol specification
    SEQUENCE = "Sequence"  # PI_SEQUENCE: suspicious sequence of exchanges
    SECURITY = "Security"  # PI_SECURITY
    RESPONSE_CODE = "Response code"  # PI_RESPONSE_CODE
    MALFORMED = "Malformed"  # PI_MALFORMED
    DECRYPTION = "Decryption"  # PI_DECRYPTION
    CHECKSUM = "Checksum"  # PI_CHECKSUM


@dataclass(frozen=True, slots=True)
class Finding:
    code: str  # "MS307"
    name: str  # "resource-id-hardware-info"
    severity: Severity
    message: str
    frames: tuple[int, ...]
    ike_spis: str | None  # "spi_i/spi_r" in hex, the IKE SA the finding is about
    group: str | None  # the Child SA group's label (TSi === TSr), when it is about one
    rfc: str  # "RFC 9611 §7"
    level: Level
    category: ExpertGroup
    source: str = ""  # capture file
    time: float | None = None  # timestamp of the first frame
    #: where in the first frame's IKE message the offending field starts (octets from the IKE
    #: header; a decrypted payload's fields at the offsets of their ciphertext), when the rule
    #: knows it: what the TUI's decode tree selects. Not part of the report formats.
    offset: int | None = None

    @property
    def citation(self) -> str:
        return f"{self.rfc} {self.level.value}".rstrip()

    def to_dict(self) -> dict:
        return {
            "code": self.code, "name": self.name, "severity": self.severity.label,
            "message": self.message, "rfc": self.rfc, "level": self.level.value or None,
            "frames": list(self.frames), "ike_spis": self.ike_spis, "group": self.group,
            "category": self.category.value, "file": self.source, "time": self.time,
        }


# --- peers and selectors -----------------------------------------------------------------


class Side(Enum):
    """A peer of an IKE SA lineage: ``I`` sent the lineage's first IKE_SA_INIT."""

    I = "I"  # noqa: E741 - the RFC's own letter
    R = "R"

    @property
    def other(self) -> Side:
        return Side.R if self is Side.I else Side.I


TsSet = tuple[TrafficSelector, ...]


def ts_text(selectors: TsSet) -> str:
    """``198.51.100.0/24`` for a whole-prefix range with any protocol and port, else detail."""
    text = _TS_TEXT.get(selectors)
    if text is None:  # memoised (bounded): group labels are asked for on every Child SA message
        if len(_TS_TEXT) >= _MEMO_MAX:
            _TS_TEXT.clear()
        text = _TS_TEXT[selectors] = ",".join(_selector_text(s) for s in selectors) or "(none)"
    return text


_MEMO_MAX = 4096
_TS_TEXT: dict[TsSet, str] = {}
_IP: dict[str, ipaddress.IPv4Address | ipaddress.IPv6Address] = {}


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``ipaddress.ip_address(text)``, memoised (bounded); ValueError as it raises."""
    addr = _IP.get(text)
    if addr is None:
        if len(_IP) >= _MEMO_MAX:
            _IP.clear()
        addr = _IP[text] = ipaddress.ip_address(text)
    return addr


def _selector_text(s: TrafficSelector) -> str:
    if s.ts_type not in (TsType.TS_IPV4_ADDR_RANGE, TsType.TS_IPV6_ADDR_RANGE):
        return f"{name_of(TsType, s.ts_type)}:{s.data.hex()}"
    try:
        nets = list(ipaddress.summarize_address_range(ipaddress.ip_address(s.start_address),
                                                      ipaddress.ip_address(s.end_address)))
    except (TypeError, ValueError):
        nets = []
    addr = str(nets[0]) if len(nets) == 1 else f"{s.start_address}-{s.end_address}"
    if s.ip_protocol:
        addr += f"[{s.ip_protocol}"
        if (s.start_port, s.end_port) != (0, 65535):
            port = str(s.start_port) if s.start_port == s.end_port else f"{s.start_port}-{s.end_port}"
            addr += f"/{port}"
        addr += "]"
    return addr


def selector_covers(outer: TrafficSelector, inner: TrafficSelector) -> bool:
    """Does ``outer`` contain every packet ``inner`` matches (RFC 7296 §3.13.1)?"""
    if outer.ts_type != inner.ts_type:
        return False
    if outer.ts_type not in (TsType.TS_IPV4_ADDR_RANGE, TsType.TS_IPV6_ADDR_RANGE):
        return outer == inner
    if outer.ip_protocol not in (0, inner.ip_protocol):
        return False
    if not (outer.start_port <= inner.start_port and inner.end_port <= outer.end_port):
        return False
    try:
        o1, o2 = _ip(outer.start_address), _ip(outer.end_address)
        i1, i2 = _ip(inner.start_address), _ip(inner.end_address)
    except ValueError:
        return False
    return o1 <= i1 and i2 <= o2


def ts_covers(outer: TsSet, inner: TsSet) -> bool:
    """Every selector of ``inner`` lies inside one selector of ``outer``."""
    return all(any(selector_covers(o, i) for o in outer) for i in inner)


def ts_overlap(a: TsSet, b: TsSet) -> bool:
    """Some selector of ``a`` and some of ``b`` match a common packet."""
    return any(_selectors_overlap(x, y) for x in a for y in b)


def _selectors_overlap(x: TrafficSelector, y: TrafficSelector) -> bool:
    if x.ts_type != y.ts_type or x.ts_type not in (TsType.TS_IPV4_ADDR_RANGE, TsType.TS_IPV6_ADDR_RANGE):
        return x == y
    if x.ip_protocol and y.ip_protocol and x.ip_protocol != y.ip_protocol:
        return False
    if x.end_port < y.start_port or y.end_port < x.start_port:
        return False
    try:
        x1, x2 = _ip(x.start_address), _ip(x.end_address)
        y1, y2 = _ip(y.start_address), _ip(y.end_address)
    except ValueError:
        return False
    return not (x2 < y1 or y2 < x1)


# --- proposals ---------------------------------------------------------------------------

#: Transform types that make up a Child SA's cryptographic suite for RFC 9611 §3 comparison.
#: Key exchange (DH, ADDKE*) is left out: IKE_AUTH can never carry it, so the initial SA's
#: chosen proposal lacks the PFS group every CREATE_CHILD_SA has; ESN is compared on its own.
SUITE_TYPES = (TransformType.ENCR, TransformType.INTEG)


@dataclass(frozen=True, slots=True)
class ChildProposal:
    """The proposal a responder chose for a Child SA (RFC 7296 §3.3), as comparable values."""

    protocol_id: int
    encr: tuple[tuple[int, int | None], ...] = ()  # (transform id, key length in bits)
    integ: tuple[int, ...] = ()
    ke: tuple[int, ...] = ()  # DH and ADDKE groups (PFS)
    esn: tuple[int, ...] = ()

    @classmethod
    def from_proposal(cls, p: Proposal) -> ChildProposal:
        encr, integ, ke, esn = [], [], [], []
        for t in p.transforms:
            if t.type == TransformType.ENCR:
                encr.append((t.id, t.key_length))
            elif t.type == TransformType.INTEG:
                integ.append(t.id)
            elif t.type == TransformType.ESN:
                esn.append(t.id)
            elif t.type == TransformType.DH or TransformType.ADDKE1 <= t.type <= TransformType.ADDKE7:
                ke.append(t.id)
        return cls(p.protocol_id, tuple(encr), tuple(integ), tuple(ke), tuple(esn))

    @property
    def suite(self) -> tuple:
        """What RFC 9611 §3 calls the cryptographic algorithms: protocol, ENCR and INTEG."""
        return self.protocol_id, self.encr, tuple(i for i in self.integ if i != IntegId.NONE)

    @property
    def esn_enabled(self) -> bool:
        return EsnId.ESN in self.esn

    def suite_text(self) -> str:
        parts = [f"{name_of(EncrId, i)}{'-' + str(k) if k else ''}" for i, k in self.encr]
        parts += [name_of(IntegId, i) for i in self.integ if i != IntegId.NONE]
        return "/".join(parts) or "(no transforms)"

    def __str__(self) -> str:
        from dissectors.iana import DhGroup

        parts = [self.suite_text()] + [name_of(DhGroup, g) for g in self.ke if g]
        if self.esn_enabled:
            parts.append("ESN")
        return f"{name_of(ProtocolId, self.protocol_id)}:{'/'.join(parts)}"


# --- IKE SAs -----------------------------------------------------------------------------

IkeSpis = tuple[bytes, bytes]


def spis_text(spis: IkeSpis | None) -> str | None:
    return None if spis is None else f"{spis[0].hex()}/{spis[1].hex()}"


@dataclass(eq=False)
class IkeSa:
    """One IKE SA, keyed ``(spi_i, spi_r)`` as Wireshark's decryption table is."""

    spi_i: bytes
    spi_r: bytes
    lineage: IkeLineage
    initiator_side: Side = Side.I  # which lineage peer is this IKE SA's initiator (I flag)
    initiator_addr: str | None = None
    responder_addr: str | None = None
    started: FrameRef | None = None  # IKE_SA_INIT request, or the rekeying request
    created: FrameRef | None = None  # IKE_SA_INIT response, or the rekeying response
    rekey_of: IkeSpis | None = None
    rekeyed_into: IkeSpis | None = None
    rekeyed: FrameRef | None = None
    deleted: FrameRef | None = None
    partial: bool = False  # first seen after its IKE_SA_INIT (capture started mid-life)
    last_seen: FrameRef | None = None
    undecrypted: int = 0  # messages whose SK payload had no key
    integrity_failures: int = 0  # messages whose SK payload failed its ICV check
    # highest message id seen per (requesting side, is-response): retransmission detection
    highest_msgid: dict[tuple[Side, bool], int] = field(default_factory=dict)

    @property
    def key(self) -> IkeSpis:
        return self.spi_i, self.spi_r

    @property
    def spis(self) -> str:
        return f"{self.spi_i.hex()}/{self.spi_r.hex()}"

    def side_of(self, initiator_flag: bool) -> Side:
        """The lineage side that sent a message with this I flag."""
        return self.initiator_side if initiator_flag else self.initiator_side.other

    @property
    def state(self) -> str:
        if self.deleted:
            return "deleted"
        if self.rekeyed_into:
            return "rekeyed"
        if not any(self.spi_r):
            return "half-open"
        return "established" if self.created or self.partial else "unknown"

    def addr(self, side: Side) -> str | None:
        return self.initiator_addr if side is self.initiator_side else self.responder_addr


@dataclass(eq=False)
class IkeLineage:
    """An IKE SA and every IKE SA that replaced it by rekeying; Child SAs live here."""

    index: int
    ike_sas: list[IkeSa] = field(default_factory=list)
    groups: dict[tuple[TsSet, TsSet], ChildSaGroup] = field(default_factory=dict)
    children_by_spi: dict[tuple[Side, bytes], ChildSa] = field(default_factory=dict)
    addrs: dict[Side, str] = field(default_factory=dict)
    remote_access: FrameRef | None = None  # CP with INTERNAL_IP4/6_ADDRESS (RFC 9611 §7)
    # RFC 9611 §3 support: sides whose SA_RESOURCE_INFO request the peer echoed, and how many
    # completed non-rekey exchanges from each side carried it without an echo.
    resource_info_echoed: set[Side] = field(default_factory=set)
    resource_info_unechoed: dict[Side, int] = field(default_factory=dict)
    per_resource_accepted: int = 0  # Child SAs with SA_RESOURCE_INFO both ways
    unknown_exchanges: int = 0  # exchanges whose content could not be read
    pruned_ike_sas: int = 0  # rekeyed IKE SAs dropped from ``ike_sas`` (bounded history)

    @property
    def first(self) -> IkeSa:
        return self.ike_sas[0]

    @property
    def current(self) -> IkeSa:
        return self.ike_sas[-1]

    @property
    def partial(self) -> bool:
        return self.first.partial

    @property
    def label(self) -> str:
        spis = [s.spis for s in self.ike_sas]
        if self.pruned_ike_sas:
            spis[1:1] = [f"({self.pruned_ike_sas} more)"]
        return " -> ".join(spis)


# --- Child SAs and groups ----------------------------------------------------------------


@dataclass(eq=False)
class ChildSa:
    """One Child SA (an inbound/outbound SPI pair), told from the lineage initiator's side."""

    spi_in: bytes | None  # SPI side I receives on (RFC 7296: the SPI in the SA payload it sent)
    spi_out: bytes | None  # SPI side I sends to (side R's inbound)
    protocol_id: int
    proposal: ChildProposal | None
    ts_i: TsSet
    ts_r: TsSet
    created_by: Side  # who sent the request that negotiated it
    exchange: int  # IKE_AUTH or CREATE_CHILD_SA
    ike_spis: IkeSpis  # the IKE SA it currently belongs to (moves on IKE rekey)
    mode: str = "tunnel"  # "transport" when USE_TRANSPORT_MODE was sent both ways
    ipcomp: int | None = None  # IPComp transform id, when IPCOMP_SUPPORTED was sent both ways
    resource_id_i: bytes | None = None  # SA_RESOURCE_INFO data from I (None: no notify)
    resource_id_r: bytes | None = None
    cpu_queues: int | None = None  # pre-RFC draft: CPU_QUEUES count sent with this (fallback) SA
    pre_rfc: bool = False  # negotiated with the draft's CPU_QUEUES / CPU_QUEUE_INFO (private use)
    requested: FrameRef | None = None
    created: FrameRef | None = None
    rekey_of: ChildSa | None = None
    rekey_of_spi: bytes | None = None  # REKEY_SA's SPI when the replaced SA was never seen
    rekeyed_by: ChildSa | None = None
    rekeyed: FrameRef | None = None
    deleted: FrameRef | None = None
    delete_frames: list[int] = field(default_factory=list)
    deleted_with_ike_sa: bool = False
    role: str = "member"  # "fallback" (the group's initial SA), "member" or "unknown"
    esp_in: int = 0  # ESP packets seen towards side I
    esp_out: int = 0
    esp_last: float | None = None
    group: ChildSaGroup | None = field(default=None, repr=False)

    def resource_id(self, side: Side) -> bytes | None:
        return self.resource_id_i if side is Side.I else self.resource_id_r

    def spi_of(self, side: Side) -> bytes | None:
        """The SPI ``side`` receives on."""
        return self.spi_in if side is Side.I else self.spi_out

    @property
    def per_resource(self) -> bool:
        """Negotiated with SA_RESOURCE_INFO in both directions (RFC 9611 §3)."""
        return self.resource_id_i is not None and self.resource_id_r is not None

    @property
    def active(self) -> bool:
        """Installed and not yet replaced by a rekey or deleted."""
        return self.deleted is None and self.rekeyed_by is None

    @property
    def state(self) -> str:
        if self.deleted:
            return "deleted"
        if self.rekeyed_by:
            return "rekeyed"
        return "installed"

    @property
    def esn(self) -> bool | None:
        return None if self.proposal is None else self.proposal.esn_enabled

    @property
    def lifetime(self) -> float | None:
        """Seconds from creation to deletion (or to the rekey that replaced it)."""
        if self.created is None:
            return None
        end = self.deleted or self.rekeyed
        return None if end is None else end.ts - self.created.ts

    @property
    def label(self) -> str:
        def h(spi: bytes | None) -> str:
            return spi.hex() if spi else "?"

        return f"{name_of(ProtocolId, self.protocol_id)} {h(self.spi_in)}/{h(self.spi_out)}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """A Child SA request answered with an error notify and no SA payload."""

    notify_type: int
    requested_by: Side
    request: FrameRef | None
    response: FrameRef | None
    resource_id: bytes | None  # SA_RESOURCE_INFO data the requester sent
    rekey: bool
    per_resource: bool  # the request was for a per-resource SA (RFC 9611 §6)


@dataclass(frozen=True, slots=True)
class Recreate:
    """A per-resource Child SA created after one of the group's was deleted (RFC 9611 §6)."""

    deleted: FrameRef
    created: FrameRef

    @property
    def gap(self) -> float:
        return self.created.ts - self.deleted.ts


@dataclass(eq=False)
class ChildSaGroup:
    """Child SAs with identical TSi/TSr in one IKE SA lineage (RFC 9611 §3)."""

    lineage: IkeLineage
    ts_i: TsSet
    ts_r: TsSet
    children: list[ChildSa] = field(default_factory=list)  # every SA, in creation order
    refusals: list[Refusal] = field(default_factory=list)  # the latest, see ``refused``
    recreates: list[Recreate] = field(default_factory=list)  # the latest
    last_member_delete: FrameRef | None = None  # a per-resource SA deleted, not yet re-created
    peak_active: int = 0
    # Bounded history (memory must not grow with capture length): deleted Child SAs beyond
    # ``Settings.history`` are dropped oldest first and counted here, as are old refusals.
    pruned: int = 0
    refused: int = 0  # refusals ever, including dropped ones
    ts_max_queue_seen: bool = False
    # An index of ``children`` kept by ``add``/``remove`` (what ``Analyzer`` uses), so that the
    # queries below cost the live SAs, not the history: ``_live`` holds the SAs not yet seen
    # inactive (pruned lazily), ``_fallbacks`` those with role fallback, ``_per_resource`` counts
    # per-resource SAs. It is trusted only while ``children`` has the length ``add``/``remove``
    # left it (``_indexed``); a list changed by hand is rescanned.
    _live: dict[ChildSa, None] = field(default_factory=dict, repr=False)
    _fallbacks: list[ChildSa] = field(default_factory=list, repr=False)
    _per_resource: int = field(default=0, repr=False)
    _deleted: int = field(default=0, repr=False)
    _indexed: int = field(default=0, repr=False)

    def add(self, child: ChildSa) -> None:
        """Append a new Child SA (its ``role`` already set)."""
        self._index()
        self.children.append(child)
        self._live[child] = None
        if child.role == "fallback":
            self._fallbacks.append(child)
        if child.per_resource:
            self._per_resource += 1
        if child.deleted is not None:
            self._deleted += 1
        self._indexed = len(self.children)

    def deleted_now(self, child: ChildSa) -> None:
        """``child`` (of this group) just got its ``deleted`` frame."""
        self._index()
        self._deleted += 1

    @property
    def deleted_count(self) -> int:
        """Child SAs of ``children`` with a Delete."""
        self._index()
        return self._deleted

    def remove(self, dropped: list[ChildSa]) -> None:
        """Drop ``dropped`` (children of this group) from ``children``, in place."""
        self._index()
        children = self.children
        for c in dropped:
            del children[children.index(c)]  # ChildSa compares by identity: a C-level search
            self._live.pop(c, None)
            if c.per_resource:
                self._per_resource -= 1
            if c.deleted is not None:
                self._deleted -= 1
        if any(c.role == "fallback" for c in dropped):
            gone = {id(c) for c in dropped}
            self._fallbacks = [c for c in self._fallbacks if id(c) not in gone]
        self._indexed = len(children)

    def _index(self) -> None:
        if self._indexed != len(self.children):
            self._live = dict.fromkeys(c for c in self.children if c.active)
            self._fallbacks = [c for c in self.children if c.role == "fallback"]
            self._per_resource = sum(1 for c in self.children if c.per_resource)
            self._deleted = sum(1 for c in self.children if c.deleted is not None)
            self._indexed = len(self.children)

    @property
    def key(self) -> tuple[TsSet, TsSet]:
        return self.ts_i, self.ts_r

    @property
    def label(self) -> str:
        return f"{ts_text(self.ts_i)} === {ts_text(self.ts_r)}"

    @property
    def fallback(self) -> ChildSa | None:
        """The current generation of the initial SA, if it was seen being negotiated."""
        self._index()
        return self._fallbacks[-1] if self._fallbacks else None

    @property
    def fallbacks(self) -> list[ChildSa]:
        self._index()
        return list(self._fallbacks)

    @property
    def members(self) -> list[ChildSa]:
        return [c for c in self.children if c.role != "fallback"]

    @property
    def reference(self) -> ChildSa | None:
        """What additional SAs are compared with: the fallback, else the first SA seen."""
        fb = self.fallback
        if fb is not None:
            return fb
        return self.children[0] if self.children else None

    @property
    def installed(self) -> list[ChildSa]:
        return [c for c in self.children if c.deleted is None]

    @property
    def active(self) -> list[ChildSa]:
        self._index()
        live = self._live
        gone = [c for c in live if not c.active]  # rekeyed or deleted since the last call
        for c in gone:
            del live[c]
        return list(live)

    @property
    def uses_resource_info(self) -> bool:
        self._index()
        return self._per_resource > 0

    @property
    def per_resource_count(self) -> int:
        """Child SAs of the group negotiated with SA_RESOURCE_INFO both ways."""
        self._index()
        return self._per_resource

    @property
    def pre_rfc(self) -> bool:
        """Negotiated with the pre-RFC draft's CPU_QUEUES / CPU_QUEUE_INFO instead."""
        return any(c.pre_rfc for c in self.children)

    def resource_ids_sent(self, side: Side) -> set[bytes]:
        """Distinct non-empty resource ids ``side`` sent for this group's SAs."""
        return {rid for c in self.children if (rid := c.resource_id(side))}

    def resources_requested(self, side: Side) -> set[bytes]:
        """Distinct non-empty resource ids ``side`` sent in its own requests for new Child SAs
        of this group that were accepted (not rekeys, not its responses to the other peer's
        requests): one per resource it asked an SA for, as an RFC 9611 peer asks one per CPU."""
        return {rid for c in self.children
                if c.created_by is side and c.rekey_of is None and c.rekey_of_spi is None
                and (rid := c.resource_id(side))}


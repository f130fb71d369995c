"""The incremental state machine: dissected IKE messages in, model updates and findings out.

``Analyzer.feed(msg)`` takes ``IkeMessage`` records in capture order (clear payloads and the
inner payloads of decrypted SK/SKF alike, through ``msg.all_payloads()``) and returns the
findings that message completes. Requests are matched to responses by (IKE SA, requesting
peer, Message ID): each peer numbers its own requests, so exchanges started by either peer,
even crossing on the wire (strongSwan 6 capture, frames 7-10), pair up. ``feed_esp`` counts
ESP packets per Child SA; ``finish()`` runs the rules that judge whole histories.

Nothing here raises on odd input: a response whose request was not captured, a rekey of a
Child SA never seen, an undecryptable exchange are recorded as unknown, as Wireshark's
conversation tracking does, and analysis goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from dissectors.iana import CfgAttr, ExchangeType, NotifyType, PayloadType, ProtocolId, notify_is_error
from dissectors.ikev2.message import IkeMessage
from dissectors.ikev2.payloads import (
    CpPayload,
    DeletePayload,
    NotifyPayload,
    Proposal,
    SaPayload,
    SkfPayload,
    SkPayload,
    TsPayload,
)
from dissectors.records import FrameRef

from . import rules as rule_registry
from .config import Settings
from .events import CaptureEnded, ChildSaCreated, ChildSaRefused, MessageSeen, NotifySeen
from .model import (
    ChildProposal,
    ChildSa,
    ChildSaGroup,
    Finding,
    IkeLineage,
    IkeSa,
    Recreate,
    Refusal,
    Side,
    TsSet,
    ts_covers,
    ts_overlap,
    ts_text,
)
from .rules import Rule

#: Exchanges that never negotiate a Child SA.
NO_CHILD_EXCHANGES = {ExchangeType.IKE_SA_INIT, ExchangeType.INFORMATIONAL, ExchangeType.IKE_INTERMEDIATE,
                      ExchangeType.IKE_SESSION_RESUME, ExchangeType.IKE_FOLLOWUP_KE}
#: Error notifies in an IKE_AUTH response that refuse the Child SA but not the IKE SA (RFC 7296 §1.2).
CHILD_ERRORS = {NotifyType.NO_PROPOSAL_CHOSEN, NotifyType.TS_UNACCEPTABLE, NotifyType.SINGLE_PAIR_REQUIRED,
                NotifyType.INTERNAL_ADDRESS_FAILURE, NotifyType.FAILED_CP_REQUIRED, NotifyType.NO_ADDITIONAL_SAS,
                NotifyType.TS_MAX_QUEUE, NotifyType.INVALID_SELECTORS, NotifyType.TEMPORARY_FAILURE}
CHILD_PROTOCOLS = (ProtocolId.ESP, ProtocolId.AH)
#: Requests awaiting a response, at most (the oldest unanswered are forgotten beyond it).
MAX_PENDING = 4096
#: Half-open IKE SAs (IKE_SA_INIT without a response), at most.
MAX_HALF_OPEN = 4096
ZERO_SPI = bytes(8)


@dataclass(slots=True)
class Facts:
    """What one message says about Child SAs, kept instead of the message while it waits."""

    exchange: int
    frame: FrameRef
    readable: bool  # False when an SK payload could not be decrypted
    proposals: list[Proposal] = field(default_factory=list)
    ts_i: TsSet | None = None
    ts_r: TsSet | None = None
    notifies: list[NotifyPayload] = field(default_factory=list)
    cp_address: bool = False  # CP with INTERNAL_IP4_ADDRESS / INTERNAL_IP6_ADDRESS

    @classmethod
    def of(cls, msg: IkeMessage, frame: FrameRef) -> Facts:
        readable = not any(isinstance(p, SkPayload) and not p.decrypted for p in msg.payloads)
        f = cls(msg.exchange, frame, readable)
        for p in msg.all_payloads():
            if p.malformed is not None:  # partly decoded (shown, not judged)
                continue
            if isinstance(p, SaPayload) and not f.proposals:
                f.proposals = list(p.proposals)
            elif isinstance(p, TsPayload):
                if p.type == PayloadType.TSi:
                    f.ts_i = tuple(p.selectors)
                else:
                    f.ts_r = tuple(p.selectors)
            elif isinstance(p, NotifyPayload):
                f.notifies.append(p)
            elif isinstance(p, CpPayload):
                f.cp_address |= any(a.type in (CfgAttr.INTERNAL_IP4_ADDRESS, CfgAttr.INTERNAL_IP6_ADDRESS)
                                    for a in p.attributes)
        return f

    def notify(self, notify_type: int) -> NotifyPayload | None:
        return next((n for n in self.notifies if n.notify_type == notify_type), None)

    @property
    def resource_id(self) -> bytes | None:
        n = self.notify(NotifyType.SA_RESOURCE_INFO)
        if n is None:  # pre-RFC draft: CPU_QUEUE_INFO plays SA_RESOURCE_INFO's part, and
            n = self.notify(NotifyType.CPU_QUEUE_INFO)  # CPU_QUEUES that of the initial SA's
            if n is None and self.notify(NotifyType.CPU_QUEUES) is not None:
                return b""  # empty SA_RESOURCE_INFO (RFC 9611 §3)
        return None if n is None else n.data

    @property
    def cpu_queues(self) -> int | None:
        """CPU_QUEUES' count (pre-RFC draft; 4 octets, shorter data read as it comes)."""
        n = self.notify(NotifyType.CPU_QUEUES)
        return None if n is None else int.from_bytes(n.data[:4], "big")

    @property
    def errors(self) -> list[int]:
        return [n.notify_type for n in self.notifies if notify_is_error(n.notify_type)]

    @property
    def ike_rekey(self) -> bool:
        return any(p.protocol_id == ProtocolId.IKE for p in self.proposals)

    @property
    def child_proposals(self) -> list[Proposal]:
        return [p for p in self.proposals if p.protocol_id in CHILD_PROTOCOLS]


class Analyzer:
    """Rebuilds IKE SAs, Child SAs and groups from messages and runs the rules on them."""

    def __init__(self, settings: Settings | None = None, rules: Iterable[Rule] | None = None,
                 source: str = "") -> None:
        self.settings = settings or Settings()
        self.source = source
        chosen = list(rules) if rules is not None else rule_registry.select(
            self.settings.select, self.settings.ignore)
        self._rules: dict[type, list[Rule]] = {}
        for r in chosen:
            self._rules.setdefault(r.event, []).append(r)
        self.lineages: list[IkeLineage] = []
        self.ike_sas: dict[tuple[bytes, bytes], IkeSa] = {}
        self._by_spi_i: dict[bytes, IkeSa] = {}  # established IKE SAs by SPIi (out-of-order captures)
        self._half_open: dict[bytes, IkeSa] = {}
        self._pending: dict[tuple[IkeSa, Side, int], Facts] = {}
        self._auth_request: dict[IkeSa, Facts] = {}
        self._esp: dict[bytes, ChildSa] = {}
        self._closed: dict[IkeLineage, None] = {}  # closed lineages, oldest first
        self.pruned_lineages = 0
        #: Child SAs created since the owner last cleared the list (the ESP pass reads their ESN)
        self.new_children: list[ChildSa] = []
        self.messages = 0
        self.ikev1_messages = 0  # IKEv1 messages skipped (multisa analyses IKEv2)
        self.esp_packets = 0
        self.first: FrameRef | None = None
        self.last: FrameRef | None = None
        self.finished = False

    # --- input ---------------------------------------------------------------------------

    def feed(self, msg: IkeMessage) -> list[Finding]:
        if msg.version >> 4 == 1:  # IKEv1 (ISAKMP): shown, counted, never judged
            self.ikev1_messages += 1
            return []
        self.messages += 1
        frame = msg.frame or FrameRef(self.source, self.messages, 0.0)
        self.first = self.first or frame
        self.last = frame
        ike = self._ike_sa_of(msg, frame)
        side = ike.side_of(msg.initiator) if ike else None
        if ike is not None:
            ike.last_seen = frame
            for p in msg.payloads:
                if isinstance(p, SkPayload) and p.error:
                    if "integrity" in p.error.lower():
                        ike.integrity_failures += 1
                    else:
                        ike.undecrypted += 1
            if msg.src and msg.dst:
                ike.lineage.addrs[side], ike.lineage.addrs[side.other] = msg.src, msg.dst
        if ike is None or side is None:
            return self._emit(MessageSeen(msg, frame, ike, False))
        if _incomplete_fragment(msg):
            return self._emit(MessageSeen(msg, frame, ike, False))
        retransmission = self._retransmission(ike, side, msg)
        out = self._emit(MessageSeen(msg, frame, ike, retransmission))
        if retransmission:
            return out
        facts = Facts.of(msg, frame)
        negotiates = self._negotiates_child(ike, side, msg, facts)
        notifies = [p for p in msg.all_payloads() if isinstance(p, NotifyPayload) and p.malformed is None]
        if notifies:
            group, label = self._group_context(ike, side, msg, facts) if negotiates else (None, None)
            for p in notifies:
                out += self._emit(NotifySeen(p, msg, frame, ike, negotiates, group, label))
        self._deletes(ike, side, msg, frame)
        if not msg.response:
            self._pending[(ike, side, msg.message_id)] = facts
            if msg.exchange == ExchangeType.IKE_AUTH and facts.child_proposals:
                self._auth_request[ike] = facts
            while len(self._pending) > MAX_PENDING:  # requests never answered
                del self._pending[next(iter(self._pending))]
        else:
            request = self._pending.pop((ike, side.other, msg.message_id), None)
            out += self._complete(ike, side.other, request, facts)
        return out

    def feed_esp(self, frame: FrameRef, spi: bytes | int) -> list[Finding]:
        """Count an ESP packet (RFC 4303) against the Child SA whose SPI it carries."""
        self.esp_packets += 1
        if isinstance(spi, int):
            spi = spi.to_bytes(4, "big")
        child = self._esp.get(spi)
        if child is not None:
            if spi == child.spi_in:
                child.esp_in += 1
            else:
                child.esp_out += 1
            child.esp_last = frame.ts
        return []

    def finish(self) -> list[Finding]:
        """End of input: run the rules that judge whole group histories (once)."""
        if self.finished:
            return []
        self.finished = True
        return self._emit(CaptureEnded(tuple(self.lineages), self.last))

    # --- model queries -------------------------------------------------------------------

    def groups(self) -> Iterator[ChildSaGroup]:
        for lineage in self.lineages:
            yield from lineage.groups.values()

    def child_by_spi(self, spi: bytes | int) -> ChildSa | None:
        if isinstance(spi, int):
            spi = spi.to_bytes(4, "big")
        return self._esp.get(spi)

    # --- rules ---------------------------------------------------------------------------

    def _emit(self, event) -> list[Finding]:
        out: list[Finding] = []
        for r in self._rules.get(type(event), ()):
            out += r.run(event, self.settings, self.settings.rule_severity.get(r.code))
        return out

    # --- IKE SAs -------------------------------------------------------------------------

    def _new_lineage(self) -> IkeLineage:
        lineage = IkeLineage(index=len(self.lineages) + 1)
        self.lineages.append(lineage)
        return lineage

    def _ike_sa_of(self, msg: IkeMessage, frame: FrameRef) -> IkeSa | None:
        if len(msg.spi_i) != 8 or msg.spi_i == ZERO_SPI:
            return None
        if msg.spi_r == ZERO_SPI:
            ike = self._half_open.get(msg.spi_i)
            if ike is None and (known := self._by_spi_i.get(msg.spi_i)) is not None:
                # its IKE_SA_INIT after later messages (the capture is out of order): the IKE SA
                # whose SPIs are known already, not a new half-open one with responder SPI 0
                if msg.exchange == ExchangeType.IKE_SA_INIT and known.partial and known.rekey_of is None:
                    known.partial, known.started = False, known.started or frame
                return known
            if ike is None and msg.exchange == ExchangeType.IKE_SA_INIT and not msg.response:
                ike = IkeSa(msg.spi_i, ZERO_SPI, self._new_lineage(), Side.I, msg.src or None,
                            msg.dst or None, started=frame)
                ike.lineage.ike_sas.append(ike)
                self._half_open[msg.spi_i] = ike
                while len(self._half_open) > MAX_HALF_OPEN:  # an IKE_SA_INIT flood
                    stale = self._half_open.pop(next(iter(self._half_open)))
                    self._pending.pop((stale, Side.I, 0), None)
                    if not stale.lineage.groups:
                        self.lineages.remove(stale.lineage)
            return ike
        key = (msg.spi_i, msg.spi_r)
        ike = self.ike_sas.get(key)
        if ike is not None:
            return ike
        ike = self._half_open.pop(msg.spi_i, None)
        if ike is None:  # first seen after its IKE_SA_INIT: the capture started mid-life
            src, dst = (msg.src, msg.dst) if msg.initiator else (msg.dst, msg.src)
            ike = IkeSa(msg.spi_i, msg.spi_r, self._new_lineage(), Side.I, src or None, dst or None,
                        partial=True)
            ike.lineage.ike_sas.append(ike)
        ike.spi_r = msg.spi_r
        self.ike_sas[key] = ike
        self._by_spi_i[msg.spi_i] = ike
        return ike

    @staticmethod
    def _retransmission(ike: IkeSa, side: Side, msg: IkeMessage) -> bool:
        """RFC 7296 §2.2: a request (or response) whose Message ID is not new for its requester."""
        if msg.exchange == ExchangeType.IKE_SA_INIT:
            return False  # retried with a COOKIE or another KE under the same Message ID 0
        key = (side.other if msg.response else side, msg.response)
        last = ike.highest_msgid.get(key)
        if last is not None and msg.message_id <= last:
            return True
        ike.highest_msgid[key] = msg.message_id
        return False

    def _negotiates_child(self, ike: IkeSa, side: Side, msg: IkeMessage, facts: Facts) -> bool | None:
        if msg.exchange in NO_CHILD_EXCHANGES:
            return False
        if msg.exchange == ExchangeType.IKE_AUTH:
            return True
        if msg.exchange == ExchangeType.CREATE_CHILD_SA:
            request = facts if not msg.response else self._pending.get((ike, side.other, msg.message_id))
            if request is not None and request.proposals:
                return not request.ike_rekey
            if facts.proposals:
                return not facts.ike_rekey
        return None

    def _group_context(self, ike: IkeSa, side: Side, msg: IkeMessage,
                       facts: Facts) -> tuple[ChildSaGroup | None, str | None]:
        """The group a Child SA message is about: the rekeyed SA's, else its selectors'."""
        requester = side.other if msg.response else side
        request = facts if not msg.response else self._pending.get((ike, requester, msg.message_id))
        lineage = ike.lineage
        rekey = request.notify(NotifyType.REKEY_SA) if request is not None else None
        if rekey is not None:
            old = lineage.children_by_spi.get((requester, rekey.spi))
            if old is not None and old.group is not None:
                return old.group, old.group.label
        ts_i = facts.ts_i or (request.ts_i if request else None)
        ts_r = facts.ts_r or (request.ts_r if request else None)
        ts_i, ts_r = without_trigger(ts_i), without_trigger(ts_r)  # responders may echo it (union)
        if not ts_i or not ts_r:
            return None, None
        key = self._oriented(requester, ts_i, ts_r)
        group = lineage.groups.get(key)
        return group, group.label if group else f"{ts_text(key[0])} === {ts_text(key[1])}"

    def _complete(self, ike: IkeSa, requester: Side, request: Facts | None, response: Facts) -> list[Finding]:
        exchange = response.exchange
        if exchange == ExchangeType.IKE_SA_INIT:
            if response.proposals:
                ike.created = response.frame
            return []
        lineage = ike.lineage
        if exchange == ExchangeType.IKE_AUTH:
            if request is not None and (request.cp_address or response.cp_address):
                lineage.remote_access = lineage.remote_access or (
                    response.frame if response.cp_address else request.frame)
            if not response.readable:
                lineage.unknown_exchanges += 1
                return []
            if response.child_proposals or set(response.errors) & CHILD_ERRORS:
                child_request = request if request is not None and request.child_proposals else \
                    self._auth_request.pop(ike, None)
                if child_request is None:
                    lineage.unknown_exchanges += 1
                    return []
                self._auth_request.pop(ike, None)
                return self._child_exchange(ike, requester, child_request, response)
            return []
        if exchange != ExchangeType.CREATE_CHILD_SA:
            return []
        if request is None or not request.readable or not response.readable:
            lineage.unknown_exchanges += 1
            return []
        if request.ike_rekey:
            self._ike_rekey(ike, requester, request, response)
            return []
        if not request.child_proposals:
            return []
        return self._child_exchange(ike, requester, request, response)

    def _ike_rekey(self, ike: IkeSa, requester: Side, request: Facts, response: Facts) -> None:
        """RFC 7296 §1.3.2: the new IKE SA's SPIs are the two proposals' 8-octet SPIs; its
        initiator is whoever started the rekey. Child SAs move to it (§2.18)."""
        offered = next((p for p in request.proposals if p.protocol_id == ProtocolId.IKE), None)
        chosen = next((p for p in response.proposals if p.protocol_id == ProtocolId.IKE), None)
        if offered is None or chosen is None or len(offered.spi) != 8 or len(chosen.spi) != 8:
            return
        lineage = ike.lineage
        new = IkeSa(offered.spi, chosen.spi, lineage, requester, lineage.addrs.get(requester),
                    lineage.addrs.get(requester.other), started=request.frame, created=response.frame,
                    rekey_of=ike.key)
        ike.rekeyed_into, ike.rekeyed = new.key, response.frame
        seen = self.ike_sas.get(new.key)
        lineage.ike_sas.append(new)
        self.ike_sas[new.key] = new
        self._by_spi_i[new.spi_i] = new
        if seen is not None and seen.lineage is not lineage:  # messages of the new IKE SA came first
            self._adopt(lineage, seen, new)
        for group in lineage.groups.values():
            for child in group.children:
                if child.ike_spis == ike.key and child.deleted is None:
                    child.ike_spis = new.key
        self._prune_ike_sas(lineage)

    def _adopt(self, lineage: IkeLineage, seen: IkeSa, new: IkeSa) -> None:
        """A rekeyed-into IKE SA whose later messages were captured before its rekey (out of
        order) got a mid-life lineage of its own: move what it holds into ``lineage``, told
        from ``lineage``'s sides, and drop the extra lineage."""
        other = seen.lineage
        flip = new.initiator_side is not seen.initiator_side
        new.highest_msgid.update({((k[0].other if flip else k[0]), k[1]): v for k, v in seen.highest_msgid.items()})
        new.last_seen, new.undecrypted = seen.last_seen, new.undecrypted + seen.undecrypted
        for key in [k for k in self._pending if k[0] is seen]:
            self._pending[(new, key[1].other if flip else key[1], key[2])] = self._pending.pop(key)
        if seen in self._auth_request:
            self._auth_request[new] = self._auth_request.pop(seen)
        for s in other.ike_sas:
            if s is not seen:
                s.lineage = lineage
                if flip:
                    s.initiator_side = s.initiator_side.other
                lineage.ike_sas.append(s)
        for key, g in other.groups.items():
            if flip:
                key = (key[1], key[0])
                g.ts_i, g.ts_r = g.ts_r, g.ts_i
            target = lineage.groups.get(key)
            if target is None:
                g.lineage = lineage
                lineage.groups[key] = target = g
            for c in g.children:
                if flip:
                    _flip_child(c)
                if target is not g:
                    c.group = target
                    target.children.append(c)
        for (side, spi), c in other.children_by_spi.items():
            lineage.children_by_spi.setdefault((side.other if flip else side, spi), c)
        lineage.unknown_exchanges += other.unknown_exchanges
        lineage.per_resource_accepted += other.per_resource_accepted
        if other in self.lineages:
            self.lineages.remove(other)
        self._closed.pop(other, None)

    def _prune_ike_sas(self, lineage: IkeLineage) -> None:
        """A lineage rekeyed again and again keeps its first IKE SA (where the capture found
        it) and the latest ``settings.history``; the rekeyed ones between are dropped and
        counted, so memory does not grow with the number of IKE SA rekeys."""
        while len(lineage.ike_sas) > self.settings.history + 1 and lineage.ike_sas[1].rekeyed_into:
            old = lineage.ike_sas.pop(1)
            lineage.pruned_ike_sas += 1
            if self.ike_sas.get(old.key) is old:
                del self.ike_sas[old.key]
            if self._by_spi_i.get(old.spi_i) is old:
                del self._by_spi_i[old.spi_i]
            for key in [k for k in self._pending if k[0] is old]:
                del self._pending[key]
            self._auth_request.pop(old, None)

    def _deletes(self, ike: IkeSa, side: Side, msg: IkeMessage, frame: FrameRef) -> None:
        """RFC 7296 §3.11: a Delete lists the SPIs its sender receives on; protocol IKE, none."""
        lineage = ike.lineage
        for p in msg.all_payloads():
            if not isinstance(p, DeletePayload) or p.malformed is not None:
                continue
            if p.protocol_id == ProtocolId.IKE:
                ike.deleted = ike.deleted or frame
                for group in lineage.groups.values():
                    for child in group.children:
                        if child.ike_spis == ike.key and child.deleted is None:
                            child.deleted, child.deleted_with_ike_sa = frame, True
                            child.delete_frames.append(frame.index)
                            group.deleted_now(child)
                    self._prune(group)
                self._close(lineage)
                continue
            for spi in p.spis:
                child = lineage.children_by_spi.get((side, spi))
                if child is None:
                    continue  # an SA negotiated before the capture started
                child.delete_frames.append(frame.index)
                if child.deleted is None:
                    child.deleted = frame
                    group = child.group
                    if group is not None:
                        group.deleted_now(child)
                    if group is not None and child.role == "member" and child.rekeyed_by is None:
                        group.last_member_delete = frame
                    if group is not None:
                        self._prune(group)

    # --- Child SAs -----------------------------------------------------------------------

    @staticmethod
    def _oriented(requester: Side, ts_i: TsSet | None, ts_r: TsSet | None) -> tuple[TsSet, TsSet]:
        """Exchange TSi/TSr (TSi = the requester's side) -> lineage orientation (I's first)."""
        a, b = ts_i or (), ts_r or ()
        return (a, b) if requester is Side.I else (b, a)

    def _group(self, lineage: IkeLineage, key: tuple[TsSet, TsSet]) -> ChildSaGroup:
        group = lineage.groups.get(key)
        if group is None:
            group = lineage.groups[key] = ChildSaGroup(lineage, key[0], key[1])
        return group

    def _child_exchange(self, ike: IkeSa, requester: Side, request: Facts, response: Facts) -> list[Finding]:
        lineage = ike.lineage
        rekey = request.notify(NotifyType.REKEY_SA)
        old = None
        if rekey is not None:
            old = lineage.children_by_spi.get((requester, rekey.spi)) or \
                lineage.children_by_spi.get((requester.other, rekey.spi))
        request_ts = self._oriented(requester, without_trigger(request.ts_i), without_trigger(request.ts_r))
        chosen = next(iter(response.child_proposals), None)
        if chosen is None:
            return self._refusal(ike, requester, request, response, old, rekey is not None, request_ts)
        offered = next((p for p in request.child_proposals if p.number == chosen.number),
                       request.child_proposals[0])
        ts = self._oriented(requester, without_trigger(response.ts_i or request.ts_i),
                            without_trigger(response.ts_r or request.ts_r))
        rid_req, rid_resp = request.resource_id, response.resource_id
        ipcomp_req = request.notify(NotifyType.IPCOMP_SUPPORTED)
        ipcomp_resp = response.notify(NotifyType.IPCOMP_SUPPORTED)
        child = ChildSa(
            spi_in=offered.spi if requester is Side.I else chosen.spi,
            spi_out=chosen.spi if requester is Side.I else offered.spi,
            protocol_id=chosen.protocol_id, proposal=ChildProposal.from_proposal(chosen),
            ts_i=ts[0], ts_r=ts[1], created_by=requester, exchange=response.exchange, ike_spis=ike.key,
            mode="transport" if request.notify(NotifyType.USE_TRANSPORT_MODE) and
            response.notify(NotifyType.USE_TRANSPORT_MODE) else "tunnel",
            ipcomp=_ipcomp_transform(ipcomp_resp) if ipcomp_req and ipcomp_resp else None,
            resource_id_i=rid_req if requester is Side.I else rid_resp,
            resource_id_r=rid_resp if requester is Side.I else rid_req,
            requested=request.frame, created=response.frame)
        # pre-RFC draft (CPU_QUEUES / CPU_QUEUE_INFO): the group is rebuilt as for RFC 9611
        queues = [q for q in (request.cpu_queues, response.cpu_queues) if q is not None]
        child.cpu_queues = max(queues) if queues else None
        child.pre_rfc = bool(queues) or any(
            f.notify(NotifyType.CPU_QUEUE_INFO) for f in (request, response))
        group = (old.group if old is not None else None) or self._group(lineage, ts)
        new_group = not group.children
        active_before, peak_before = len(group.active), group.peak_active
        if old is not None:
            child.rekey_of, child.role = old, old.role
            old.rekeyed_by, old.rekeyed = child, response.frame
        elif rekey is not None:
            child.rekey_of_spi, child.role = rekey.spi, "unknown"
        else:
            child.role = self._role(lineage, group, child, response.exchange)
        child.group = group
        group.add(child)
        self.new_children.append(child)
        group.peak_active = max(group.peak_active, len(group.active))
        for side, spi in ((requester, offered.spi), (requester.other, chosen.spi)):
            if spi:
                lineage.children_by_spi[(side, spi)] = child
                self._esp[spi] = child
        if rekey is None:
            if rid_req is not None:
                if rid_resp is not None:
                    lineage.resource_info_echoed.add(requester)
                else:
                    lineage.resource_info_unechoed[requester] = lineage.resource_info_unechoed.get(requester, 0) + 1
            if child.role == "member" and group.last_member_delete is not None:
                group.recreates.append(Recreate(group.last_member_delete, response.frame))
                group.last_member_delete = None
                if len(group.recreates) > self.settings.history:
                    del group.recreates[0]
        if child.per_resource:
            lineage.per_resource_accepted += 1
        return self._emit(ChildSaCreated(child, group, ike, request_ts, new_group, active_before, peak_before))

    def _prune(self, group: ChildSaGroup) -> None:
        """Keep at most ``settings.history`` deleted Child SAs in a group, dropping the oldest
        (and the links that would keep them alive), so memory follows the live SAs."""
        excess = group.deleted_count - self.settings.history
        if excess <= 0:
            return
        drop: list[ChildSa] = []
        for c in group.children:  # oldest first: stops at the excess-th deleted SA
            if c.deleted is not None:
                drop.append(c)
                if len(drop) == excess:
                    break
        lineage = group.lineage
        for c in drop:
            c.rekey_of = None
            for side in Side:
                spi = c.spi_of(side)
                if spi is not None and lineage.children_by_spi.get((side, spi)) is c:
                    del lineage.children_by_spi[(side, spi)]
                if spi is not None and self._esp.get(spi) is c:
                    del self._esp[spi]
        group.remove(drop)
        group.pruned += excess

    def _close(self, lineage: IkeLineage) -> None:
        """A lineage whose IKE SAs are all deleted is closed; beyond ``settings.history``
        closed lineages, the oldest is dropped from the state."""
        if not all(s.deleted or s.rekeyed_into for s in lineage.ike_sas) or lineage in self._closed:
            return
        self._closed[lineage] = None
        while len(self._closed) > self.settings.history:
            old = next(iter(self._closed))
            del self._closed[old]
            for s in old.ike_sas:
                self.ike_sas.pop(s.key, None)
                if self._by_spi_i.get(s.spi_i) is s:
                    del self._by_spi_i[s.spi_i]
                for key in [k for k in self._pending if k[0] is s]:
                    del self._pending[key]
                self._auth_request.pop(s, None)
            for g in old.groups.values():
                for c in g.children:
                    for spi in (c.spi_in, c.spi_out):
                        if spi is not None and self._esp.get(spi) is c:
                            del self._esp[spi]
            self.lineages.remove(old)
            self.pruned_lineages += 1

    @staticmethod
    def _role(lineage: IkeLineage, group: ChildSaGroup, child: ChildSa, exchange: int) -> str:
        """Initial (fallback) SA or additional member? RFC 9611 §3: the initial Child SA comes
        first for its selectors; a capture that started mid-life cannot tell, unless the SA
        names a resource."""
        named = bool(child.resource_id_i or child.resource_id_r)
        if child.pre_rfc:  # draft: CPU_QUEUES marks the fallback, CPU_QUEUE_INFO (maybe empty) a member
            named = child.cpu_queues is None and (child.resource_id_i is not None or child.resource_id_r is not None)
            if child.cpu_queues is not None and not named and (
                    group.fallback is None or group.fallback.deleted is not None):
                return "fallback"
        fallback = group.fallback
        if fallback is not None and fallback.deleted is None:
            return "member"
        if not group.children:
            if named and exchange != ExchangeType.IKE_AUTH and any(
                    g is not group and g.uses_resource_info and ts_overlap(g.ts_i, child.ts_i)
                    and ts_overlap(g.ts_r, child.ts_r) for g in lineage.groups.values()):
                return "member"  # a per-resource SA of an overlapping group, with other selectors
            if exchange == ExchangeType.IKE_AUTH or not lineage.partial:
                return "fallback"
            return "member" if named else "unknown"
        if group.fallbacks and not named:
            return "fallback"  # the initial SA was deleted and is being brought back
        if lineage.partial and not named:
            return "unknown"
        return "member"

    def _refusal(self, ike: IkeSa, requester: Side, request: Facts, response: Facts, old: ChildSa | None,
                 rekey: bool, request_ts: tuple[TsSet, TsSet]) -> list[Finding]:
        errors = response.errors
        if not errors:
            return []
        kind = next((t for t in errors if t in (NotifyType.TS_MAX_QUEUE, NotifyType.NO_ADDITIONAL_SAS)),
                    errors[0])
        group = (old.group if old is not None else None) or self._group(ike.lineage, request_ts)
        refusal = Refusal(kind, requester, request.frame, response.frame, request.resource_id, rekey,
                          per_resource=request.resource_id is not None or group.uses_resource_info)
        group.refusals.append(refusal)
        group.refused += 1
        group.ts_max_queue_seen |= kind == NotifyType.TS_MAX_QUEUE
        if len(group.refusals) > self.settings.history:
            del group.refusals[0]
        return self._emit(ChildSaRefused(refusal, group, ike, old))


def _flip_child(c: ChildSa) -> None:
    """Tell a Child SA from the other side (a lineage adopted with its peers the other way round)."""
    c.spi_in, c.spi_out = c.spi_out, c.spi_in
    c.ts_i, c.ts_r = c.ts_r, c.ts_i
    c.resource_id_i, c.resource_id_r = c.resource_id_r, c.resource_id_i
    c.esp_in, c.esp_out = c.esp_out, c.esp_in
    c.created_by = c.created_by.other


def without_trigger(ts: TsSet | None) -> TsSet | None:
    """Selectors without the trigger packet's: RFC 7296 §2.9 (and RFC 9611 §4) put the packet
    that triggered the request first, a narrow selector the others cover; a responder may echo
    it (the union is the same), as the reference peer did against charon's per-CPU acquires."""
    if ts and len(ts) > 1 and ts_covers(ts[1:], ts[:1]):
        return ts[1:]
    return ts


def _ipcomp_transform(n: NotifyPayload) -> int:
    """RFC 7296 §3.10.1: IPCOMP_SUPPORTED data is CPI (2 octets) then Transform ID (1)."""
    return n.data[2] if len(n.data) >= 3 else 0


def _incomplete_fragment(msg: IkeMessage) -> bool:
    """An SKF fragment (RFC 7383) that does not complete its message: nothing to read yet."""
    for p in msg.payloads:
        if isinstance(p, SkfPayload):
            return p.decrypted and not p.reassembled_from and not p.inner
    return False

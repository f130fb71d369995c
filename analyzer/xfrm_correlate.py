"""IKE groups + kernel XFRM snapshots (+ ESP on the wire) -> MS5xx findings.

Pure functions, I/O at the edges: ``correlate(lineages, series, wire)`` takes what the IKE
analyzer rebuilt, one host's XFRM samples (``analyzer.xfrm_state``) and the highest ESP
sequence number per SPI seen on the wire, and runs the MS5xx rules of the registry
(``analyzer/rules/xfrm.py``) on the events built here. ``lint_with_xfrm`` is the edge that
``multisa lint --xfrm`` calls (loads the snapshot files, scans ESP sequence numbers).

Which host is a snapshot? One snapshot is one host's SAD. For each IKE lineage of the capture
(peers ``I`` and ``R``), the snapshot's SAs between the two peer addresses say which side it
is: an SA with ``XFRMA_SA_DIR`` in (1) whose destination is a peer, or out (2) whose source
is a peer, makes that peer the host; without ``dir`` (iproute2 6.1 text, kernels < 6.10) the
replay state tells the direction (an outbound SA counts ``oseq`` and has no replay window, an
inbound one counts ``seq``). The side with the most evidence wins; a snapshot that names
neither side (only larval SAs, say) is reported as a note and not judged.

When is a negotiated SA expected on the SAD? When the snapshot was taken after its
CREATE_CHILD_SA/IKE_AUTH and before its DELETE. Live snapshots carry their time; imported ones
(the ``*.xfrm-sa.json`` of the shared capture, ``ip`` text) do not, and then a deleted Child
SA is expected when an SA deleted in the same or a later frame is still on the SAD (the
snapshot predates that delete).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from typing import TYPE_CHECKING

from dissectors.records import FrameRef

from .model import ChildSa, ChildSaGroup, Finding, IkeLineage, IkeSa, Side

if TYPE_CHECKING:  # annotations only: importing them loads pyroute2 (~130 ms), which lint never needs
    from dissectors.xfrm import XfrmPolicy, XfrmSaState

    from .xfrm_state import XfrmSnapshot

SA_DIR_IN, SA_DIR_OUT = 1, 2
POLICY_OUT = 1


@dataclass(frozen=True)
class XfrmSettings:
    """Knobs of the MS5xx rules."""

    oseq_tolerance: int = 64  # MS506: |oseq - highest wire seq| beyond this is "far"


@dataclass(frozen=True, eq=False)
class HostView:
    """One snapshot series matched to one peer of one IKE lineage."""

    label: str  # the snapshot's file (or "live:NS")
    lineage: IkeLineage
    side: Side
    address: str
    peer: str
    last: XfrmSnapshot
    first: XfrmSnapshot | None  # the first sample when the series has two or more

    @property
    def host_cpus(self) -> int | None:
        return self.last.host_cpus

    @property
    def name(self) -> str:
        return f"{self.address} ({self.label})"

    @property
    def pcpu_known(self) -> bool:
        """Can this snapshot show SA_PCPU? iproute2 < 7.0 text prints neither ``dir`` nor
        ``pcpu-num``: an SA without them there says nothing about the kernel's."""
        return self.last.source != "ip-text" or any(
            sa.pcpu is not None or sa.dir is not None for sa in self.last.sas)


@dataclass(frozen=True, eq=False)
class ChildOnHost:
    """One negotiated Child SA as the host's SAD should hold it."""

    child: ChildSa
    inbound_spi: int | None
    outbound_spi: int | None
    inbound: XfrmSaState | None  # in the last sample
    outbound: XfrmSaState | None
    outbound_first: XfrmSaState | None  # in the first sample (counter deltas)
    expected: bool  # was it alive when the (last) snapshot was taken?

    @property
    def fallback(self) -> bool:
        return self.child.role == "fallback"


@dataclass(frozen=True, slots=True)
class XfrmGroupSeen:
    """A Child SA group held against one host's SAD and SPD (MS501-MS508)."""

    host: HostView
    group: ChildSaGroup
    ike: IkeSa | None
    children: tuple[ChildOnHost, ...]
    policies: tuple[XfrmPolicy, ...]  # the host's outbound policies that match the group
    wire: dict[int, int] | None  # outbound SPI -> highest ESP sequence number on the wire
    settings: XfrmSettings

    @property
    def frames(self) -> tuple[FrameRef, ...]:
        return tuple(c.child.created for c in self.children if c.child.created is not None)[:1]

    @property
    def per_cpu(self) -> bool:
        """Does the group use per-resource SAs (negotiated, or SA_PCPU on the SAD)?"""
        return self.group.uses_resource_info or any(
            c.outbound is not None and c.outbound.pcpu is not None for c in self.children)


@dataclass(frozen=True, slots=True)
class XfrmHostSeen:
    """One host's SAs between the lineage's peers that no captured IKE exchange negotiated."""

    host: HostView
    ike: IkeSa | None
    unnegotiated: tuple[XfrmSaState, ...]
    group: ChildSaGroup | None = None

    @property
    def frames(self) -> tuple[FrameRef, ...]:
        first = self.host.lineage.first
        return tuple(f for f in (first.created or first.started,) if f is not None)


# --- matching ----------------------------------------------------------------------------


def sa_direction(sa: XfrmSaState, host: str) -> int | None:
    """1 in / 2 out as seen from ``host``; None when nothing tells."""
    if sa.dir in (SA_DIR_IN, SA_DIR_OUT):
        return sa.dir
    if sa.replay.oseq > 0 and sa.replay_window == 0 and sa.src == host:
        return SA_DIR_OUT
    if (sa.replay.seq > 0 or sa.replay_window > 0) and sa.dst == host:
        return SA_DIR_IN
    return None


def which_side(lineage: IkeLineage, snap: XfrmSnapshot) -> Side | None:
    """The lineage peer whose SAD ``snap`` is (see the module doc), or None."""
    a, b = lineage.addrs.get(Side.I), lineage.addrs.get(Side.R)
    if not a or not b:
        return None
    score = {Side.I: 0, Side.R: 0}
    for sa in snap.sas:
        if {sa.src, sa.dst} != {a, b}:
            continue
        d = sa.dir if sa.dir in (SA_DIR_IN, SA_DIR_OUT) else None
        if d is None:
            if sa.replay.oseq > 0 and sa.replay_window == 0:
                d = SA_DIR_OUT
            elif sa.replay.seq > 0 or sa.replay_window > 0:
                d = SA_DIR_IN
            else:
                continue
        host = sa.dst if d == SA_DIR_IN else sa.src
        score[Side.I if host == a else Side.R] += 1
    best = max(score, key=score.get)
    if score[best] == 0 or score[Side.I] == score[Side.R]:
        return None
    return best


def _spi(raw: bytes | None) -> int | None:
    return int.from_bytes(raw, "big") if raw and len(raw) == 4 else None


def _timed(snap: XfrmSnapshot) -> bool:
    return snap.ts is not None and snap.source in ("netlink", "json")


def _expected(child: ChildSa, snap: XfrmSnapshot, present_deleted: int | None) -> bool:
    """Was ``child`` alive when ``snap`` was taken? ``present_deleted``: the latest delete frame
    of a lineage SA still on the SAD (untimed snapshots)."""
    if _timed(snap):
        if child.created is not None and child.created.ts > snap.ts:
            return False
        return child.deleted is None or child.deleted.ts > snap.ts
    if child.deleted is None:
        return True
    return present_deleted is not None and present_deleted >= child.deleted.index


def _policy_matches(p: XfrmPolicy, reqids: set[int], group: ChildSaGroup) -> bool:
    if p.dir != POLICY_OUT or p.ptype not in (None, 0):
        return False
    if p.templates:
        return any(t.reqid in reqids for t in p.templates)
    sel = p.selector
    if sel is not None and sel.src and group.ts_i:
        import ipaddress

        try:
            net = ipaddress.ip_network(f"{sel.src}/{sel.prefixlen_s}", strict=False)
            ts = group.ts_i[0]
            return ipaddress.ip_address(ts.start_address) in net or ipaddress.ip_address(
                ts.start_address) in ipaddress.ip_network(f"{sel.dst}/{sel.prefixlen_d}", strict=False)
        except (TypeError, ValueError):
            return False
    return True  # an import without selector or template detail: every outbound policy


def host_events(view: HostView, wire: dict[int, int] | None,
                settings: XfrmSettings, negotiated: set[int]) -> list:
    """The MS5xx events of one host view: one per group, one for the host."""
    lin, snap, first = view.lineage, view.last, view.first
    side = view.side
    # the latest delete frame of any lineage Child SA still on the SAD
    present_deleted = None
    for g in lin.groups.values():
        for c in g.children:
            if c.deleted is None:
                continue
            for spi, dst in ((_spi(c.spi_of(side)), view.address), (_spi(c.spi_of(side.other)), view.peer)):
                if spi is not None and snap.sa(spi, dst) is not None:
                    present_deleted = max(present_deleted or 0, c.deleted.index)
    events: list = []
    for g in lin.groups.values():
        rows = []
        for c in g.children:
            spi_in, spi_out = _spi(c.spi_of(side)), _spi(c.spi_of(side.other))
            rows.append(ChildOnHost(
                c, spi_in, spi_out,
                snap.sa(spi_in, view.address) if spi_in is not None else None,
                snap.sa(spi_out, view.peer) if spi_out is not None else None,
                first.sa(spi_out, view.peer) if first is not None and spi_out is not None else None,
                _expected(c, snap, present_deleted)))
        reqids = {sa.reqid for r in rows for sa in (r.inbound, r.outbound) if sa is not None}
        pols = tuple(p for p in snap.policies if _policy_matches(p, reqids, g))
        events.append(XfrmGroupSeen(view, g, lin.current if lin.ike_sas else None, tuple(rows),
                                    pols, wire, settings))
    extra = tuple(sa for sa in snap.sas if {sa.src, sa.dst} == {view.address, view.peer}
                  and not sa.larval and sa.spi not in negotiated)
    events.append(XfrmHostSeen(view, lin.current if lin.ike_sas else None, extra))
    return events


@dataclass
class Correlation:
    """What one snapshot series told about one capture."""

    label: str
    views: list[HostView] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # checks that could not run, and why


def negotiated_spis(lineages: Iterable[IkeLineage]) -> set[int]:
    return {s for lin in lineages for g in lin.groups.values() for c in g.children
            for s in (_spi(c.spi_in), _spi(c.spi_out)) if s is not None}


def correlate(lineages: Sequence[IkeLineage], series: Sequence[XfrmSnapshot], label: str,
              wire: dict[int, int] | None = None, rules=None, settings: XfrmSettings | None = None,
              severity_of=None) -> Correlation:
    """Hold one host's XFRM samples (file order) against the capture's lineages.

    ``wire``: outbound SPI -> highest ESP sequence number seen (None: not available);
    ``rules``: the MS5xx rules to run (default: all of them); ``severity_of``: code ->
    configured severity. Pure: no I/O.
    """
    from .rules.xfrm import XFRM_RULES

    settings = settings or XfrmSettings()
    rules = list(XFRM_RULES.values()) if rules is None else [r for r in rules if r.code in XFRM_RULES]
    out = Correlation(label)
    if not series:
        out.notes.append(f"{label}: no XFRM sample")
        return out
    last, first = series[-1], (series[0] if len(series) > 1 else None)
    negotiated = negotiated_spis(lineages)
    for lin in lineages:
        side = which_side(lin, last)
        if side is None:
            a, b = lin.addrs.get(Side.I), lin.addrs.get(Side.R)
            if any({sa.src, sa.dst} == {a, b} for sa in last.sas):
                out.notes.append(f"{label}: cannot tell whether this SAD is {a}'s or {b}'s "
                                 "(no SA with a direction or moving counters); not judged")
            continue
        view = HostView(label, lin, side, lin.addrs[side], lin.addrs[side.other], last, first)
        out.views.append(view)
        for ev in host_events(view, wire, settings, negotiated):
            for r in rules:
                if isinstance(ev, r.event):
                    sev = severity_of(r.code) if severity_of else None
                    out.findings += r.run(ev, None, sev)
    if not out.views:
        out.notes.append(f"{label}: none of its SAs is between the peers of a captured IKE SA; "
                         "not judged")
        return out
    if any(not v.pcpu_known for v in out.views):
        out.notes.append(f"{label}: iproute2 text without dir/pcpu-num lines (iproute2 < 7.0): "
                         "MS501 and MS505 not judged")
    if first is None and any(r.code == "MS508" for r in rules):
        out.notes.append(f"{label}: one sample only: MS508 (per-CPU SA idle while the fallback "
                         "SA counts) needs two (`multisa xfrm snapshot --count 2`)")
    if last.host_cpus is None and any(r.code == "MS504" for r in rules):
        out.notes.append(f"{label}: the host's CPU count is unknown (imported file): MS504 "
                         "not judged")
    if wire is None and any(r.code == "MS506" for r in rules):
        out.notes.append(f"{label}: no ESP sequence numbers from the wire: MS506 not judged")
    return out


# --- the edges: files, the capture's ESP, the live kernel ---------------------------------


def load_xfrm(spec: str) -> tuple[str, list[XfrmSnapshot]]:
    """``FILE`` (snapshot JSON Lines, ``*.xfrm-sa.json``, ``ip xfrm`` text), ``live`` or
    ``live:NETNS`` (a dump right now). Raises ``XfrmImportError``/``XfrmError``/``OSError``."""
    from .xfrm_state import load_series, snapshot_from_kernel

    if spec == "live" or spec.startswith("live:"):
        ns = spec.partition(":")[2] or None
        return spec, [snapshot_from_kernel(ns)]
    return spec, load_series(spec)


def wire_sequence(path: str | os.PathLike[str]) -> dict[int, int]:
    """Highest ESP sequence number per SPI in a capture (one streaming pass)."""
    from .esp_scan import EspScan

    scan = EspScan(path)
    for _ in scan.datagrams():
        pass
    out: dict[int, int] = {}
    for t in scan.trackers():
        out[t.spi] = max(out.get(t.spi, 0), t.top)
    return out


def xfrm_rules(settings) -> list:
    """The MS5xx rules the user's --select/--ignore keep."""
    from . import rules as registry
    from .rules.xfrm import XFRM_RULES

    return [r for r in registry.select(settings.select, settings.ignore) if r.code in XFRM_RULES]


def lint_with_xfrm(results, specs: Sequence[str], settings) -> tuple[list, list[str]]:
    """``multisa lint --xfrm``: correlate every capture result with every snapshot; the
    findings go into the results. Returns (the MS5xx rules that ran, notes). Raises
    ``ValueError`` with a one-line message for an unreadable snapshot."""
    from dissectors.xfrm import XfrmError

    from .xfrm_state import XfrmImportError

    rules = xfrm_rules(settings)
    loaded = []
    for spec in specs:
        try:
            loaded.append(load_xfrm(spec))
        except (XfrmImportError, XfrmError) as err:
            raise ValueError(str(err)) from None
        except OSError as err:
            raise ValueError(f"{spec}: {err.strerror or err}") from None
    notes: list[str] = []
    sev = getattr(settings, "rule_severity", {}).get
    for result in results:
        wire = result.wire  # the lint pass's own trackers: the capture is read once
        lineages = list(result.analyzer.lineages)
        for label, series in loaded:
            corr = correlate(lineages, series, label, wire, rules, severity_of=sev)
            result.findings += corr.findings
            notes += corr.notes
    return rules, notes

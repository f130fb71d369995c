"""Immutable rows for the screens, built from what ``analyzer`` produced.

``build_snapshot`` walks ``Analyzer.lineages`` (IKE SA lineage -> per-TS groups -> Child SAs)
once and copies what the screens show into frozen dataclasses, so the UI thread never touches
model objects a worker is still updating. Counters come from three places, best first: the
kernel's XFRM state (``--xfrm`` or live netlink; per-SA ``pcpu``, ``curlft`` packets/bytes),
the reference peer's JSON status file (same shape), and the ESP packets the analyzer counted on
the wire (``ChildSa.esp_in``/``esp_out``).
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from analyzer.model import ChildSa, Finding, IkeLineage, Severity

#: Samples of history kept per SPI (one a second): what the sparklines draw.
HISTORY = 32
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Iterable[float], width: int | None = None) -> str:
    """Unicode block sparkline, scaled to the largest value; the last ``width`` values."""
    vals = list(values)
    if width is not None:
        vals = vals[-width:]
    if not vals:
        return ""
    top = max(vals)
    if top <= 0:
        return SPARK_BLOCKS[0] * len(vals)
    last = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[min(last, round(v / top * last))] for v in vals)


def human(n: float | None) -> str:
    """1234 -> 1.2k, 5e6 -> 5.0M; None -> '-'."""
    if n is None:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return f"{n:.0f}" if isinstance(n, float) else str(n)


# --- counters beside the model ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpiCounters:
    """One SA direction's counters as the kernel (or the reference peer) reports them."""

    packets: int
    bytes: int
    cpus: tuple[int, ...]
    source: str  # "xfrm" or "peer"


class CounterBoard:
    """Latest kernel/peer counters by SPI, plus per-SPI packet history for sparklines."""

    def __init__(self) -> None:
        self.by_spi: dict[int, SpiCounters] = {}
        self.kernel_hist: dict[int, deque[float]] = {}
        self.wire_hist: dict[int, deque[float]] = {}
        self._wire_last: dict[int, int] = {}
        self._wire_ts: float | None = None
        self._kernel_last: dict[tuple[str, int], tuple[float | None, int]] = {}
        self.rates: dict[int, float] = {}  # packets/s per SPI from the last two samples
        self.sources: set[str] = set()
        #: SPI -> host -> CPUs: each host's own XFRMA_SA_PCPU (moon and sun bind one Child SA to
        #: different CPUs); host -> its local addresses (from XFRMA_SA_DIR), to order them I/R
        self.host_cpus: dict[int, dict[str, tuple[int, ...]]] = {}
        self.host_addrs: dict[str, set[str]] = {}
        #: SPI -> (packets, bytes, packets/s) of the ESP seen on the wire, as ``multisa esp``
        #: counts them (both destinations of an SPI summed)
        self.wire: dict[int, tuple[int, int, float]] = {}

    def _record(self, source: str, spi: int, counters: SpiCounters, ts: float | None) -> None:
        old = self.by_spi.get(spi)
        if old is not None and old.source != counters.source and old.packets > counters.packets:
            counters = dataclasses.replace(counters, packets=old.packets, bytes=max(old.bytes, counters.bytes),
                                           cpus=tuple(sorted(set(old.cpus) | set(counters.cpus))))
        self.by_spi[spi] = counters
        last = self._kernel_last.get((source, spi))
        if last is not None:
            last_ts, last_packets = last
            delta = max(0, counters.packets - last_packets)
            self.kernel_hist.setdefault(spi, deque(maxlen=HISTORY)).append(float(delta))
            if ts is not None and last_ts is not None and ts > last_ts:
                self.rates[spi] = delta / (ts - last_ts)
        self._kernel_last[(source, spi)] = (ts, counters.packets)

    def add_xfrm(self, snap, host: str | None = None) -> None:
        """An ``analyzer.xfrm_state.XfrmSnapshot`` (file sample or live dump); ``host`` names
        whose SAD it is (the file it came from), else its namespace."""
        self.sources.add("xfrm")
        key = f"xfrm:{host or snap.netns or ''}:{snap.source}"
        addrs = self.host_addrs.setdefault(key, set())
        for sa in snap.sas:
            if sa.proto != 50 or sa.larval:
                continue
            cpus = () if sa.pcpu is None else (sa.pcpu,)
            if sa.dir in (1, 2):
                addrs.add(sa.dst if sa.dir == 1 else sa.src)
            self.host_cpus.setdefault(sa.spi, {})[key] = cpus
            self._record(key, sa.spi, SpiCounters(sa.curlft.packets, sa.curlft.bytes, cpus, "xfrm"), snap.ts)

    def add_peer_status(self, doc: dict, path: str = "") -> None:
        """The reference peer's status file (``peer.node.Node.status``)."""
        self.sources.add("peer")
        ts = doc.get("time")
        for sa in doc.get("sas", ()):
            try:
                spi = int(str(sa["spi"]), 16)
                cur = sa.get("curlft", {})
                pcpu = sa.get("pcpu")
                cpus = tuple(pcpu) if isinstance(pcpu, list) else (() if pcpu is None else (int(pcpu),))
                self.host_cpus.setdefault(spi, {})[f"peer:{path}"] = cpus
                c = SpiCounters(int(cur.get("packets", 0)), int(cur.get("bytes", 0)), cpus, "peer")
            except (KeyError, TypeError, ValueError):
                continue
            self._record(f"peer:{path}", spi, c, ts)

    def sample_model(self, analyzer, ts: float) -> None:
        """One history sample of the ESP packets the analyzer counted per Child SA."""
        dt = None if self._wire_ts is None else ts - self._wire_ts
        self._wire_ts = ts
        for lineage in analyzer.lineages:
            for group in lineage.groups.values():
                for c in group.children:
                    for spi, count in ((c.spi_in, c.esp_in), (c.spi_out, c.esp_out)):
                        if not spi:
                            continue
                        n = int.from_bytes(spi, "big")
                        last = self._wire_last.get(n)
                        if last is None and count == 0 and c.deleted is not None:
                            continue  # nothing to draw for an SA that never carried traffic
                        delta = count - (last or 0)
                        self._wire_last[n] = count
                        self.wire_hist.setdefault(n, deque(maxlen=HISTORY)).append(float(delta))
                        if dt and n not in self.by_spi:
                            self.rates[n] = delta / dt


# --- rows -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SaRow:
    key: str
    role: str  # fallback / member / unknown
    state: str  # installed / rekeyed / deleted
    resource: str  # "I/R" resource ids (hex), "-" without SA_RESOURCE_INFO
    spi_in: str
    spi_out: str
    cpu: str
    packets: int
    bytes: int | None
    rate: float | None
    spark: tuple[float, ...]
    counters: str  # where packets/bytes come from: wire, xfrm or peer
    proposal: str
    frames: tuple[int, ...]  # requested, created, rekeyed, deleted
    cpus: tuple[int, ...] = ()

    @property
    def spis(self) -> str:
        return f"{self.spi_in}/{self.spi_out}"


@dataclass(frozen=True, slots=True)
class GroupRow:
    key: str
    lineage_key: str
    label: str
    children: tuple[SaRow, ...]
    refusals: int
    per_cpu: tuple[int, ...]  # packets per CPU 0..n-1 (empty: no CPU known)
    findings: int
    worst: Severity | None
    frames: tuple[int, ...]

    @property
    def packets(self) -> int:
        return sum(c.packets for c in self.children)

    @property
    def active(self) -> int:
        return sum(c.state == "installed" for c in self.children)


@dataclass(frozen=True, slots=True)
class LineageRow:
    key: str
    label: str  # IKE SPIs, "a/b -> c/d" after IKE rekeys
    ike_spis: tuple[str, ...]
    state: str
    addrs: str
    groups: tuple[GroupRow, ...]
    findings: int
    worst: Severity | None
    frames: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    lineages: tuple[LineageRow, ...] = ()
    progress: object | None = None  # tui.feed.Progress (a copy)
    messages: int = 0
    esp_packets: int = 0
    findings: int = 0
    live: bool = False
    counter_sources: tuple[str, ...] = ()
    key_problems: tuple[str, ...] = ()

    def group(self, key: str) -> GroupRow | None:
        return next((g for lin in self.lineages for g in lin.groups if g.key == key), None)

    def lineage_of_finding(self, f: Finding) -> tuple[LineageRow | None, GroupRow | None]:
        for lin in self.lineages:
            if f.ike_spis and f.ike_spis in lin.ike_spis:
                group = next((g for g in lin.groups if g.label == f.group), None) if f.group else None
                return lin, group
        for lin in self.lineages:  # a group finding without IKE SPIs
            for g in lin.groups:
                if f.group and g.label == f.group:
                    return lin, g
        return None, None


def _rid(rid: bytes | None) -> str:
    if rid is None:
        return "-"
    return rid.hex()[:8] or "empty"


def _frames(*refs) -> tuple[int, ...]:
    return tuple(sorted({r.index for r in refs if r is not None}))


def _sa_row(lineage: IkeLineage, c: ChildSa, board: CounterBoard, live: bool) -> SaRow:
    spis = [int.from_bytes(s, "big") if s else None for s in (c.spi_in, c.spi_out)]
    kernel = [board.by_spi.get(s) for s in spis if s is not None]
    kernel = [k for k in kernel if k is not None]
    wire = [board.wire[s] for s in spis if s is not None and s in board.wire]
    wire_packets = sum(w[0] for w in wire)
    if kernel:
        packets = sum(k.packets for k in kernel)
        nbytes: int | None = sum(k.bytes for k in kernel)
        source = kernel[0].source
    else:
        packets, nbytes, source = (wire_packets if wire else c.esp_in + c.esp_out), None, "wire"
    if wire_packets:  # bytes as they crossed the wire (ESP from the SPI on), as `multisa esp`
        nbytes = sum(w[1] for w in wire)
    cpu, cpus = _cpu_text(lineage, spis, board)
    hists = [h for h in (board.kernel_hist.get(s) for s in spis if s is not None) if h]
    if not hists:  # no kernel/peer series: the ESP packets seen on the wire, per second
        hists = [h for h in (board.wire_hist.get(s) for s in spis if s is not None) if h]
    n = max((len(h) for h in hists), default=0)
    spark = tuple(sum(h[i - n + len(h)] if i - n + len(h) >= 0 else 0.0 for h in hists) for i in range(n))
    rate: float | None
    if not live and wire:  # a file: each direction's packets/s over its own span, as `multisa esp`
        rate = sum(w[2] for w in wire)
    else:
        rates = [board.rates[s] for s in spis if s is not None and s in board.rates]
        rate = sum(rates) if rates else None
    if c.per_resource or c.resource_id_i is not None or c.resource_id_r is not None:
        resource = f"{_rid(c.resource_id_i)}/{_rid(c.resource_id_r)}"
    else:
        resource = "-"
    return SaRow(
        key=f"sa:{lineage.index}:{c.spi_in.hex() if c.spi_in else '?'}:{c.spi_out.hex() if c.spi_out else '?'}",
        role=c.role, state=c.state, resource=resource,
        spi_in=c.spi_in.hex() if c.spi_in else "?", spi_out=c.spi_out.hex() if c.spi_out else "?",
        cpu=cpu, packets=packets, bytes=nbytes, rate=rate,
        spark=spark, counters=source, proposal=str(c.proposal) if c.proposal else "?",
        frames=_frames(c.requested, c.created, c.rekeyed, c.deleted), cpus=cpus)


def _cpu_text(lineage: IkeLineage, spis: list[int | None], board: CounterBoard) -> tuple[str, tuple[int, ...]]:
    """The CPU column: one host's XFRMA_SA_PCPU, or with two hosts' state each host's own,
    initiator's first (``0/1``: CPU 0 on the initiator, CPU 1 on the responder)."""
    hosts: dict[str, set[int]] = {}
    for s in spis:
        for host, cpus in board.host_cpus.get(s, {}).items() if s is not None else ():
            hosts.setdefault(host, set()).update(cpus)
    if not hosts:
        return "-", ()
    cur = lineage.current
    side_addr = [cur.addr(cur.initiator_side), cur.addr(cur.initiator_side.other)]

    def rank(item: tuple[int, str]) -> tuple[int, int]:
        order, host = item
        addrs = board.host_addrs.get(host, set())
        side = next((i for i, a in enumerate(side_addr) if a and a in addrs), 2)
        return side, order

    ordered = [h for _, h in sorted(enumerate(hosts), key=rank)]
    texts = [",".join(map(str, sorted(hosts[h]))) or "-" for h in ordered]
    first = tuple(sorted(hosts[ordered[0]]))
    if len(texts) == 1 or all(t == "-" for t in texts):
        return texts[0], first
    return "/".join(texts), first


def _worst(findings: list[Finding]) -> Severity | None:
    return max((f.severity for f in findings), default=None)


def build_snapshot(analyzer, board: CounterBoard, findings: list[Finding], progress=None, *,
                   live: bool = False, key_problems: tuple[str, ...] = ()) -> Snapshot:
    by_ike: dict[str, list[Finding]] = {}
    for f in findings:
        by_ike.setdefault(f.ike_spis or "", []).append(f)
    lineages = []
    for lin in analyzer.lineages:
        spis = tuple(s.spis for s in lin.ike_sas)
        lin_findings = [f for s in spis for f in by_ike.get(s, ())]
        groups = []
        for g in lin.groups.values():
            rows = tuple(_sa_row(lin, c, board, live) for c in g.children)
            g_findings = [f for f in lin_findings if f.group == g.label]
            g_findings += [f for f in by_ike.get("", ()) if f.group == g.label]
            per_cpu: list[int] = []
            for r in rows:
                for cpu in r.cpus:
                    if cpu < 4096:
                        per_cpu.extend([0] * (cpu + 1 - len(per_cpu)))
                        per_cpu[cpu] += r.packets // max(1, len(r.cpus))
            frames = _frames(*(ref for r in g.refusals for ref in (r.request, r.response)))
            groups.append(GroupRow(
                key=f"grp:{lin.index}:{g.label}", lineage_key=f"ike:{lin.index}", label=g.label,
                children=rows, refusals=len(g.refusals), per_cpu=tuple(per_cpu),
                findings=len(g_findings), worst=_worst(g_findings),
                frames=tuple(sorted({x for r in rows for x in r.frames} | set(frames)))))
        cur = lin.current
        a, b = cur.addr(cur.initiator_side), cur.addr(cur.initiator_side.other)
        lineages.append(LineageRow(
            key=f"ike:{lin.index}", label=lin.label, ike_spis=spis, state=cur.state,
            addrs=f"{a or '?'} <-> {b or '?'}", groups=tuple(groups), findings=len(lin_findings),
            worst=_worst(lin_findings),
            frames=_frames(*(r for s in lin.ike_sas for r in (s.started, s.created, s.deleted)))))
    return Snapshot(
        lineages=tuple(lineages), progress=dataclasses.replace(progress) if progress is not None else None,
        messages=analyzer.messages, esp_packets=analyzer.esp_packets, findings=len(findings), live=live,
        counter_sources=tuple(sorted(board.sources)), key_problems=key_problems)


@dataclass
class FindingFilter:
    """The filter bar: ``code:MS1 sev:error group:198.51 spi:c1f7e800 free words``."""

    codes: list[str] = field(default_factory=list)
    severity: Severity | None = None
    groups: list[str] = field(default_factory=list)
    spis: list[str] = field(default_factory=list)
    words: list[str] = field(default_factory=list)
    error: str | None = None

    @classmethod
    def parse(cls, text: str) -> FindingFilter:
        f = cls()
        for token in text.split():
            key, sep, value = token.partition(":")
            key = key.lower()
            if sep and value:
                if key in ("code", "c"):
                    f.codes += [v.upper() for v in value.split(",")]
                elif key in ("sev", "severity", "s"):
                    try:
                        f.severity = Severity.parse(value)
                    except ValueError as err:
                        f.error = str(err)
                elif key in ("group", "g", "ts"):
                    f.groups.append(value.lower())
                elif key == "spi":
                    f.spis.append(value.lower().removeprefix("0x"))
                else:
                    f.words.append(token.lower())
            elif token.upper().startswith("MS") and token[2:].isdigit():
                f.codes.append(token.upper())
            else:
                f.words.append(token.lower())
        return f

    @property
    def empty(self) -> bool:
        return not (self.codes or self.severity or self.groups or self.spis or self.words)

    def finding(self, f: Finding, snap: Snapshot | None = None) -> bool:
        if self.codes and not any(f.code.startswith(c) for c in self.codes):
            return False
        if self.severity is not None and f.severity < self.severity:
            return False
        if self.groups and not any(g in (f.group or "").lower() for g in self.groups):
            return False
        if self.spis and not self._spi_match(f, snap):
            return False
        text = f"{f.code} {f.name} {f.message} {f.group or ''} {f.rfc}".lower()
        return all(w in text for w in self.words)

    def _spi_match(self, f: Finding, snap: Snapshot | None) -> bool:
        """``spi:X`` keeps a finding about the SA (or IKE SA) with that SPI: one that names it,
        or whose frames are that Child SA's exchanges; a finding about another Child SA is
        hidden, and a group-wide one stays when the group holds the SA."""
        if f.ike_spis and any(s in f.ike_spis for s in self.spis):
            return True
        message = f.message.lower()
        if any(s in message for s in self.spis):
            return True
        if snap is None:
            return False
        _, group = snap.lineage_of_finding(f)
        rows = group.children if group is not None else ()
        frames = set(f.frames)
        about = [r for r in rows if frames & set(r.frames) or r.spi_in in message or r.spi_out in message]
        if about:
            return any(self.sa(r) for r in about)
        return any(self.sa(r) for r in rows)

    def group(self, g: GroupRow) -> bool:
        if self.groups and not any(x in g.label.lower() for x in self.groups):
            return False
        if self.spis and not any(self.sa(c) for c in g.children):
            return False
        return True

    def sa(self, c: SaRow) -> bool:
        return not self.spis or any(s in c.spis for s in self.spis)

    def message(self, summary: str, spis: str) -> bool:
        if self.spis and not any(s in spis for s in self.spis):
            return False
        return all(w in summary.lower() for w in self.words)

"""What the ESP pass tells the MS4xx rules (``analyzer/rules/esp.py``), once per SA and per group.

The ESP pass (``analyzer.esp_analysis``) runs the IKE analyzer and the sequence trackers in
one streaming pass; at the end of the capture it emits one ``EspSaSeen`` per ESP SA
(destination, SPI) and one ``EspGroupSeen`` per Child SA group, through the same rule
registry and ``Analyzer`` as the IKE rules, so ``--select``/``--ignore`` and severities apply.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from dissectors.esp import InnerFlow
from dissectors.records import FrameRef

from .esp_seq import DEFAULT_WINDOW, EspSeqTracker
from .model import ChildSa, ChildSaGroup, IkeSa

MAX_FLOWS = 64  # distinct inner flows kept per SA; the rest are counted in other_flows


@dataclass
class EspSettings:
    """Knobs of the ESP rules (``[tool.multisa]`` keys once the lead adds them to Settings)."""

    window: int = DEFAULT_WINDOW  # anti-replay window, packets (RFC 4303 §3.4.3)
    imbalance_ratio: float = 10.0  # MS414: busiest/quietest member packets
    min_packets: int = 10  # MS413-MS415 judge only groups that carried at least this many
    imbalance_min_packets: int = 100  # MS414 judges only members that carried this many together
    idle_seconds: float = 10.0  # MS413/MS415: a member is idle only after this long alive beside
    # a group carrying traffic (a member negotiated in the last second of a capture is not idle)


@dataclass(eq=False)
class EspSaView:
    """One ESP SA (one direction of a Child SA) with what the capture showed of it."""

    tracker: EspSeqTracker
    source: str = ""
    child: ChildSa | None = None
    group: ChildSaGroup | None = None
    group_id: int | None = None
    direction: str | None = None  # "I->R" / "R->I" (lineage orientation, analyzer.model)
    decrypted: int = 0  # packets whose ICV verified and that decrypted
    icv_failures: int = 0
    first_icv_failure: int = 0  # frame
    undecryptable: int = 0  # other decryption errors (short, bad padding)
    key_source: str | None = None
    key_note: str | None = None  # why no key (e.g. "PFS: not derivable without the DH secret")
    flows: Counter = field(default_factory=Counter)  # InnerFlow -> packets
    other_flows: int = 0

    @property
    def spi(self) -> int:
        return self.tracker.spi

    def frame(self, index: int, ts: float | None = None) -> FrameRef:
        t = self.tracker
        if ts is None:
            ts = t.first_ts if index == t.first_frame else t.last_ts if index == t.last_frame else 0.0
        return FrameRef(self.source, index, ts)

    @property
    def receiver_resource_id(self) -> bytes | None:
        """The SA_RESOURCE_INFO data the receiving side sent for this Child SA."""
        if self.child is None or self.direction is None:
            return None
        return self.child.resource_id_r if self.direction == "I->R" else self.child.resource_id_i

    def add_flow(self, flow: InnerFlow) -> None:
        if flow in self.flows or len(self.flows) < MAX_FLOWS:
            self.flows[flow] += 1
        else:
            self.other_flows += 1


@dataclass(frozen=True, slots=True)
class EspSaSeen:
    """The end of the capture, for one ESP SA."""

    sa: EspSaView
    ike: IkeSa | None
    group: ChildSaGroup | None
    settings: EspSettings
    any_ike: bool  # did the capture hold any IKE SA at all?

    @property
    def frames(self) -> tuple[FrameRef, ...]:
        return (self.sa.frame(self.sa.tracker.first_frame),)


@dataclass(frozen=True, slots=True)
class EspGroupSeen:
    """The end of the capture, for one Child SA group and the ESP SAs of its Child SAs."""

    group: ChildSaGroup
    ike: IkeSa | None
    sas: tuple[EspSaView, ...]
    settings: EspSettings
    # packets per Child SA and the group's last packet time, computed once (the rules ask per
    # member: a scan of ``sas`` each time made a group of n members cost n²)
    _packets: dict = field(init=False, repr=False, compare=False)
    _end: float | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        packets: dict[int, int] = {}
        for v in self.sas:
            if v.child is not None:
                packets[id(v.child)] = packets.get(id(v.child), 0) + v.tracker.packets
        object.__setattr__(self, "_packets", packets)
        object.__setattr__(self, "_end", max((v.tracker.last_ts for v in self.sas if v.tracker.packets),
                                             default=None))

    def packets_of(self, child: ChildSa) -> int:
        return self._packets.get(id(child), 0)

    def idle(self, child: ChildSa) -> bool:
        """``child`` carried no packet although it existed ``idle_seconds`` while its group
        carried traffic (until its Delete, if deleted)."""
        if self.packets_of(child) or child.created is None:
            return False
        end = self._end
        if end is None:
            return False
        if child.deleted is not None:
            end = min(end, child.deleted.ts)
        return end - child.created.ts >= self.settings.idle_seconds

    @property
    def frames(self) -> tuple[FrameRef, ...]:
        return tuple(f for c in self.group.children[:1] for f in (c.created,) if f is not None)

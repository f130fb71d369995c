"""What ``analyzer.state.Analyzer`` tells the rules, one record per thing that happened.

A rule subscribes to one event type and is called with each event of that type, after the
model has been updated, so ``event.group`` already holds the new Child SA. Events carry
model objects for reading; rules never change them.
"""

from __future__ import annotations

from dataclasses import dataclass

from dissectors.ikev2.message import IkeMessage
from dissectors.ikev2.payloads import NotifyPayload
from dissectors.records import FrameRef

from .model import ChildSa, ChildSaGroup, IkeLineage, IkeSa, Refusal, TsSet


@dataclass(frozen=True, slots=True)
class MessageSeen:
    """Every IKE message, retransmissions included (decryption and decoding problems)."""

    msg: IkeMessage
    frame: FrameRef
    ike: IkeSa | None
    retransmission: bool
    group: ChildSaGroup | None = None


@dataclass(frozen=True, slots=True)
class NotifySeen:
    """A Notify payload, clear or decrypted, in a message that is not a retransmission."""

    notify: NotifyPayload
    msg: IkeMessage
    frame: FrameRef
    ike: IkeSa | None
    negotiates_child: bool | None  # does the exchange negotiate a Child SA? None: unknown
    group: ChildSaGroup | None = None
    group_label: str | None = None  # the selectors' group, even before it has a Child SA

    @property
    def request(self) -> bool:
        return not self.msg.response


@dataclass(frozen=True, slots=True)
class ChildSaCreated:
    """A Child SA exchange completed with an SA payload in the response (new SA or rekey)."""

    child: ChildSa
    group: ChildSaGroup
    ike: IkeSa
    request_ts: tuple[TsSet, TsSet]  # what was asked for, lineage orientation
    new_group: bool  # the group did not exist before this SA
    active_before: int  # active SAs in the group before this one
    peak_before: int  # the group's highest active count before this one

    @property
    def lineage(self) -> IkeLineage:
        return self.group.lineage

    @property
    def rekey(self) -> bool:
        return self.child.rekey_of is not None or self.child.rekey_of_spi is not None

    @property
    def frames(self) -> tuple[FrameRef, ...]:
        return tuple(f for f in (self.child.requested, self.child.created) if f is not None)


@dataclass(frozen=True, slots=True)
class ChildSaRefused:
    """A Child SA request answered with an error notify and no SA payload."""

    refusal: Refusal
    group: ChildSaGroup
    ike: IkeSa
    rekey_of: ChildSa | None

    @property
    def frames(self) -> tuple[FrameRef, ...]:
        return tuple(f for f in (self.refusal.request, self.refusal.response) if f is not None)


@dataclass(frozen=True, slots=True)
class CaptureEnded:
    """The end of the input: rules that judge a whole group's history run here."""

    lineages: tuple[IkeLineage, ...]
    last: FrameRef | None
    ike: IkeSa | None = None
    group: ChildSaGroup | None = None


Event = MessageSeen | NotifySeen | ChildSaCreated | ChildSaRefused | CaptureEnded

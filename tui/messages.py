"""Messages workers post to the app (dataclasses, as toolong's ``messages.py``).

Workers run in threads; they only ``post_message`` these. ``EspCountersUpdated`` carries
nothing but a fresh snapshot, so a newer one replaces an older one still queued
(``can_replace``): a counter flood never backs up the UI.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from .feed import Published
from .view import Snapshot


@dataclass
class AnalysisPublished(Message, bubble=False):
    """New IKE messages and findings, and the rows as they stand now."""

    published: Published


@dataclass
class EspCountersUpdated(Message, bubble=False):
    """Only counters moved (XFRM, peer status, ESP on the wire): the latest snapshot wins."""

    snapshot: Snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EspCountersUpdated)


@dataclass
class SourceProblem(Message, bubble=False):
    """A capture, netlink or status-file problem, shown in the status line (never a traceback)."""

    source: str  # "capture", "xfrm", "peer", "keys"
    text: str
    fatal: bool = False  # the source stopped; what was collected stays on screen


@dataclass
class SourceRecovered(Message, bubble=False):
    """A source that had a problem works again: its line leaves the status bar."""

    source: str


@dataclass
class LoadFinished(Message, bubble=False):
    """The capture file was read to its end (or to the damage that stopped it)."""

    error: str | None = None

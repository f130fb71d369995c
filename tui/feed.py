"""What the TUI shows of one analysis run: the engine's state as immutable rows.

The TUI never dissects nor judges: a ``Datagram`` (from ``dissectors.capture``, whether read
from a file or from a live capture) goes into the one engine, ``analyzer.session.Session``
(the same object ``multisa lint`` and ``multisa monitor`` use). An ``AnalysisView`` is owned
by exactly one worker thread. What the UI gets from it is ``publish()``: immutable rows
(``tui.view``) plus the IKE messages and findings that are new since the previous publish,
so no model object is read while the worker changes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from analyzer.config import Settings
from analyzer.model import Finding
from analyzer.session import Session
from dissectors.capture import Datagram
from dissectors.ikev2 import IkeMessage

from .view import CounterBoard, Snapshot, build_snapshot

#: IKE messages the packet view keeps; older ones are dropped first (memory stays bounded).
MAX_MESSAGES = 100_000


@dataclass(frozen=True, slots=True)
class Published:
    """What a worker hands the UI thread: a fresh snapshot and what is new since the last."""

    snapshot: Snapshot
    messages: tuple[IkeMessage, ...] = ()
    findings: tuple[Finding, ...] = ()


@dataclass
class Progress:
    source: str
    done: bool = False
    fraction: float | None = None  # of the file read, when known
    frames: int = 0
    ike: int = 0
    esp: int = 0
    error: str | None = None
    started: float = field(default_factory=time.monotonic)

    @property
    def text(self) -> str:
        parts = [f"{self.frames} frames", f"{self.ike} IKE", f"{self.esp} ESP"]
        if self.done:
            state = "done"
        elif self.fraction is not None:
            state = f"{self.fraction:.0%}"
        else:
            state = "reading"
        return f"{state} · " + ", ".join(parts)


class AnalysisView:
    """The engine (``analyzer.session.Session``) and what is shown beside it (XFRM and
    reference-peer counters, sparkline history), for one source. It only renders: every
    datagram, sample and status file goes into the session."""

    def __init__(self, source: str, keys: Iterable[str] = (), settings: Settings | None = None,
                 live: bool = False) -> None:
        self.source = source
        self.live = live
        key_paths = [os.fspath(k) for k in keys]
        self.session = Session(source, None, settings, key_paths=key_paths, live=live,
                               per_packet=not live)
        self.analyzer = self.session.analyzer
        self.session.on_message = self._message
        self.session.on_esp_packet = self._esp_packet
        self.counters = CounterBoard()
        self.findings: list[Finding] = []
        self._new_messages: list[IkeMessage] = []
        self._new_findings: list[Finding] = []
        self._sample_second: int | None = None

    @property
    def key_problems(self) -> list[str]:
        return self.session.key_problems

    @property
    def scan(self):
        return self.session.scan

    # --- input (worker thread) -------------------------------------------------------------

    def feed(self, d: Datagram) -> None:
        """One UDP/ESP datagram, in capture order."""
        if not self.live:
            self._maybe_sample(d.frame.ts)
        self._found(self.session.feed(d))

    def finish(self) -> None:
        self._found(self.session.finish())
        if not self.live and self._sample_second is not None:
            self.counters.sample_model(self.analyzer, float(self._sample_second + 1))

    def set_xfrm(self, snapshots, host: str | None = None) -> None:
        """Kernel XFRM samples (a snapshot file's series, or one live dump); ``host``: whose
        (the file's path), so two hosts' files keep each host's own CPU per SA."""
        snapshots = list(snapshots)
        self.session.add_xfrm(snapshots)
        for snap in snapshots:
            self.counters.add_xfrm(snap, host)

    def set_peer_status(self, doc: dict, path: str = "") -> None:
        self.session.add_peer_status(doc, path)
        self.counters.add_peer_status(doc, path)

    def tick(self, now: float | None = None) -> None:
        """Live mode: the engine's time-based rules and one sample of every Child SA's
        counters (called at 1 Hz)."""
        now = now if now is not None else time.time()
        self.session.reload_keys()  # key files written as SAs come up (save-keys), even unasked
        self._found(self.session.tick(now))
        self.session.attached(count=True)
        self.counters.sample_model(self.analyzer, now)

    # --- output ----------------------------------------------------------------------------

    def publish(self, progress: Progress | None = None) -> Published:
        wire: dict[int, tuple[int, int, float]] = {}
        for t in self.session.scan.trackers():
            p, b, r = wire.get(t.spi, (0, 0, 0.0))
            wire[t.spi] = (p + t.packets, b + t.bytes, r + t.rate())
        self.counters.wire = wire
        snap = build_snapshot(self.analyzer, self.counters, self.findings, progress,
                              live=self.live, key_problems=tuple(self.key_problems))
        out = Published(snap, tuple(self._new_messages), tuple(self._new_findings))
        self._new_messages.clear()
        self._new_findings.clear()
        return out

    # --- helpers ---------------------------------------------------------------------------

    def _message(self, msg: IkeMessage) -> None:
        self._new_messages.append(msg)

    def _esp_packet(self, d: Datagram) -> None:
        """An ESP packet the trackers just counted: a sample due at its second must not hold it."""
        if self._sample_second is None or int(d.frame.ts) <= self._sample_second:
            self._maybe_sample(d.frame.ts)
            return
        self.session.attached(count=True)
        child = self.analyzer.child_by_spi(d.payload[:4]) if len(d.payload) >= 4 else None
        attr = None
        if child is not None:
            attr = "esp_in" if d.payload[:4] == child.spi_in else "esp_out"
            setattr(child, attr, getattr(child, attr) - 1)
        self._maybe_sample(d.frame.ts, counted=True)
        if attr is not None:
            setattr(child, attr, getattr(child, attr) + 1)

    def _found(self, findings: list[Finding]) -> None:
        if findings:
            self.findings += findings
            self._new_findings += findings

    def _maybe_sample(self, ts: float, counted: bool = False) -> None:
        """File mode: sample per-SA counters once per second of capture time (sparklines)."""
        second = int(ts)
        if self._sample_second is None:
            self._sample_second = second
            return
        if second > self._sample_second:
            if not counted:
                self.session.attached(count=True)
            self.counters.sample_model(self.analyzer, float(second))
            self._sample_second = second


def file_position(path: str) -> float | None:
    """How far this process has read ``path`` (0..1), from /proc/self/fdinfo; None if unknown."""
    try:
        real = os.path.realpath(path)
        size = os.path.getsize(real)
        if size <= 0:
            return None
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") != real:
                    continue
                with open(f"/proc/self/fdinfo/{fd}") as fh:
                    for line in fh:
                        if line.startswith("pos:"):
                            return min(1.0, int(line.split()[1]) / size)
            except OSError:
                continue
    except OSError:
        return None
    return None

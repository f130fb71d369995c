"""One analysis run behind the TUI: the analyzer pipeline fed datagram by datagram.

The TUI never dissects: a ``Datagram`` (from ``dissectors.capture``, whether read from a file
or from a live capture) goes to ``Analyzer.feed_esp`` when it is ESP, else through
``dissectors.ikev2.ike_message_of`` and ``IkeDecryptor`` into ``Analyzer.feed`` -- the same
steps ``analyzer.pipeline.analyze_capture`` takes, one datagram at a time so the screen can
be refreshed while a long capture is still being read.

An ``AnalysisSession`` is owned by exactly one worker thread. What the UI gets from it is
``publish()``: immutable rows (``tui.view``) plus the IKE messages and findings that are new
since the previous publish, so no model object is read while the worker changes it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from analyzer.config import Settings
from analyzer.esp_analysis import judge_esp
from analyzer.esp_scan import EspScan
from analyzer.model import Finding
from analyzer.pipeline import esp_settings
from analyzer.state import Analyzer
from dissectors.capture import Datagram
from dissectors.iana import IPPROTO_ESP, IPPROTO_UDP
from dissectors.ikev2 import IkeMessage, ike_message_of
from dissectors.ikev2.payloads import SkPayload
from dissectors.ikev2.sk import IkeDecryptor
from dissectors.keys import KeyStore, load_keys
from dissectors.udpencap import UdpKind, classify_udp

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


class AnalysisSession:
    """The analyzer plus the counters shown beside it (XFRM, reference peer), for one source."""

    def __init__(self, source: str, keys: Iterable[str] = (), settings: Settings | None = None,
                 live: bool = False) -> None:
        self.source = source
        self.live = live
        self.analyzer = Analyzer(settings, source=source)
        self.key_paths = [os.fspath(k) for k in keys]
        self.keys: KeyStore = load_keys(self.key_paths)
        self.key_problems = [str(p) for p in self.keys.problems]
        self._key_stamp = self._key_files_stamp()
        self._key_checked = time.monotonic()
        self.decryptor = IkeDecryptor(self.keys)
        self.counters = CounterBoard()
        self.findings: list[Finding] = []
        self.frames = 0
        self._new_messages: list[IkeMessage] = []
        self._new_findings: list[Finding] = []
        self._sample_second: int | None = None

    # --- input (worker thread) -------------------------------------------------------------

    def feed(self, d: Datagram) -> None:
        """One UDP/ESP datagram, in capture order."""
        self.frames = max(self.frames, d.frame.index)
        if not self.live:
            self._maybe_sample(d.frame.ts)
        if d.proto == IPPROTO_ESP:
            if len(d.payload) >= 4:
                self._found(self.analyzer.feed_esp(d.frame, d.payload[:4]))
            return
        if d.proto == IPPROTO_UDP and classify_udp(d.sport, d.dport, d.payload) is UdpKind.ESP:
            self._found(self.analyzer.feed_esp(d.frame, d.payload[:4]))
            return
        msg = ike_message_of(d)
        if msg is None:
            return
        if msg.malformed is None or msg.payloads:
            self.decryptor.decrypt(msg)
            if self.live and _lacks_key(msg) and self._reload_keys():
                msg = ike_message_of(d)  # decrypt again from the wire bytes with the new keys
                self.decryptor.decrypt(msg)
        self._found(self.analyzer.feed(msg))
        self._new_messages.append(msg)

    def esp_scan(self, path: str) -> EspScan:
        """File mode: a pass over ``path`` whose ESP packets reach ``feed`` (counters) and the
        per-SA sequence trackers, so ``finish(scan)`` can judge the ESP rules (MS4xx) as lint does."""
        scan = EspScan(path, esp_settings(self.analyzer.settings).window, engine="python")
        scan.on_esp = lambda d, payload, spi, tracker: self.feed(d)
        return scan

    def finish(self, scan: EspScan | None = None) -> None:
        if scan is not None:
            self._found(judge_esp(self.analyzer, scan, esp_settings(self.analyzer.settings), counted=True)[2])
        self._found(self.analyzer.finish())
        if not self.live and self._sample_second is not None:
            self.counters.sample_model(self.analyzer, float(self._sample_second + 1))

    def set_xfrm(self, snapshots) -> None:
        """Kernel XFRM samples (a snapshot file's series, or one live dump)."""
        for snap in snapshots:
            self.counters.add_xfrm(snap)

    def set_peer_status(self, doc: dict, path: str = "") -> None:
        self.counters.add_peer_status(doc, path)

    def tick(self, now: float | None = None) -> None:
        """Live mode: one sample of every Child SA's counters (called at 1 Hz)."""
        self.counters.sample_model(self.analyzer, now if now is not None else time.time())

    # --- output ----------------------------------------------------------------------------

    def publish(self, progress: Progress | None = None) -> Published:
        snap = build_snapshot(self.analyzer, self.counters, self.findings, progress,
                              live=self.live, key_problems=tuple(self.key_problems))
        out = Published(snap, tuple(self._new_messages), tuple(self._new_findings))
        self._new_messages.clear()
        self._new_findings.clear()
        return out

    # --- helpers ---------------------------------------------------------------------------

    def _found(self, findings: list[Finding]) -> None:
        if findings:
            self.findings += findings
            self._new_findings += findings

    def _maybe_sample(self, ts: float) -> None:
        """File mode: sample per-SA counters once per second of capture time (sparklines)."""
        second = int(ts)
        if self._sample_second is None:
            self._sample_second = second
            return
        if second > self._sample_second:
            self.counters.sample_model(self.analyzer, float(second))
            self._sample_second = second

    def _key_files_stamp(self) -> tuple:
        stamp = []
        for p in self.key_paths:
            names = [os.path.join(p, n) for n in sorted(os.listdir(p))] if os.path.isdir(p) else [p]
            for n in names:
                try:
                    st = os.stat(n)
                    stamp.append((n, st.st_mtime_ns, st.st_size))
                except OSError:
                    pass
        return tuple(stamp)

    def _reload_keys(self) -> bool:
        """Live mode: key files grow as SAs are set up; load them again when they changed."""
        now = time.monotonic()
        if not self.key_paths or now - self._key_checked < 0.2:
            return False
        self._key_checked = now
        try:
            stamp = self._key_files_stamp()
        except OSError:
            return False
        if stamp == self._key_stamp:
            return False
        self._key_stamp = stamp
        self.keys = load_keys(self.key_paths)
        self.key_problems = [str(p) for p in self.keys.problems]
        self.decryptor.keys = self.keys
        return True


def _lacks_key(msg: IkeMessage) -> bool:
    return any(isinstance(p, SkPayload) and not p.decrypted and (p.error or "").startswith("not decrypted")
               for p in msg.payloads)


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

"""The one analysis engine: files and live traffic, datagram by datagram (issue 12).

A ``Session`` owns everything a front end needs to judge IPsec traffic: IKE decryption (with
key files re-read when they change), the group ``Analyzer``, the per-SA ESP sequence trackers
(``EspScan``: the C loop for files where it is built, the Python engine otherwise and for
live traffic), SK_d key derivation and ESP decryption, XFRM samples, and the attribution of
every ESP SA to its Child SA and group.

    s = Session("live:eth0", keys, settings, live=True)
    for d in datagrams:            # every UDP/ESP Datagram, in capture order
        report(s.feed(d))          # findings that became certain with this datagram
        report(s.tick(time.time()))  # at least once a second: time-based rules
    report(s.finish())             # end of input: the end-of-capture rules, once

Files go through ``run_file`` (``Session.for_file(path, ...)``): the same object, but the
capture is read once by the ``EspScan`` loop, which settles the ESP packets itself (in C
where built) and hands the rest to ``feed``; the end-of-input rules then judge the whole
capture, which gives exactly the findings ``multisa lint`` always gave.

Live (``live=True``): the ESP sequence rules are judged as packets arrive. A finding is
reported once per SA and rule, as soon as it is certain: a replay (MS401), a reorder beyond
the window (MS403), a wrap without ESN (MS404) or an ICV failure (MS420) with the packet
that shows it; a gap (MS402) once the window moved past the missing number (a late packet can
no longer fill it) or the number stayed missing ``settle_seconds``; ESP after a Delete (MS411) with the packet; ESP before its Child SA was
created (MS412) with the response that created it; an SA whose lowest number is not 1
(MS405) or an SPI no IKE exchange negotiated (MS410) ``settle_seconds`` (0.5 s) after its first
packet. ``finish`` then adds only what was not reported yet (the message counts are those of
the moment a finding was judged). The group rules about traffic over time (MS304, MS413-MS415)
are judged by ``tick`` over the last ``group_window`` seconds (default 60) in live mode, once
per group and rule; over the whole input at ``finish`` in both modes.

Never raises on bad input: a damaged capture ends ``run_file`` with ``error`` set and
everything read before the damage analyzed.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dissectors.capture import CaptureError, Datagram
from dissectors.ikev2 import IkeMessage, ike_message_of
from dissectors.ikev2.payloads import SkPayload
from dissectors.ikev2.sk import IkeDecryptor
from dissectors.keys import KeyStore, load_keys

from .config import Settings
from .esp_analysis import EspResult, _attach, _Decryptor, _esp_rules_selected, _views
from .esp_events import EspGroupSeen, EspSaSeen, EspSaView, EspSettings
from .esp_keys import ChildKeyDeriver
from .esp_scan import EspScan
from .events import CaptureEnded, ChildSaCreated
from .model import ChildSa, ChildSaGroup, Finding
from .rules import Rule
from .state import Analyzer

#: Live: seconds after an SA's first packet before "lowest number is not 1" (MS405) and
#: "unknown SPI" (MS410) are judged (a reordered packet 1, or the IKE response, may follow).
SETTLE_SECONDS = 0.5
#: Live: the group rules about traffic over time judge the last this many seconds.
GROUP_WINDOW = 60.0
#: Codes judged per packet / per SA as soon as the counter that proves them is non-zero.
_AT_ONCE = {"MS401": "replays", "MS403": "reorders", "MS404": "wraps"}
_GROUP_CODES = ("MS413", "MS414", "MS415", "MS304")
KEY_CHECK_EVERY = 0.2  # seconds between looks at the key files' modification times


class _ChildWatch:
    """Not a rule: hears ``ChildSaCreated`` so the session indexes each new Child SA's SPIs
    (ESN, live attribution) without walking every group's Child SAs per message."""

    code = ""

    def __init__(self) -> None:
        self.new: list[ChildSa] = []

    def run(self, event, settings, severity=None) -> list[Finding]:
        self.new.append(event.child)
        return []


@dataclass
class SessionStats:
    """What a status line shows: datagrams in, IKE messages, ESP packets, findings."""

    datagrams: int = 0
    ike: int = 0
    esp: int = 0
    findings: int = 0


class Session:
    """One analysis run over one source (a capture file or a live interface)."""

    def __init__(self, source: str = "", keys: KeyStore | None = None, settings: Settings | None = None,
                 esp_settings: EspSettings | None = None, *, rules: Iterable[Rule] | None = None,
                 key_paths: Iterable[str] = (), live: bool = False, decrypt: bool = False,
                 engine: str = "auto", per_packet: bool = False, settle_seconds: float = SETTLE_SECONDS,
                 group_window: float = GROUP_WINDOW) -> None:
        from .pipeline import esp_settings as settings_esp

        self.source = os.fspath(source)
        self.settings = settings or Settings()
        self.esp_settings = esp_settings or settings_esp(self.settings)
        self.live = live
        self.decrypt = decrypt
        self.settle_seconds = settle_seconds
        self.group_window = group_window
        self.key_paths = [os.fspath(k) for k in key_paths]
        if keys is None:
            keys = load_keys(self.key_paths) if self.key_paths else KeyStore()
        self.keys = keys
        self._key_stamp = self._key_files_stamp()
        self._key_checked = time.monotonic()
        self.analyzer = Analyzer(self.settings, rules if rules is not None else _esp_rules_selected(self.settings),
                                 source=self.source)
        self._watch = _ChildWatch()
        self.analyzer._rules.setdefault(ChildSaCreated, []).insert(0, self._watch)
        self.ike_decryptor = IkeDecryptor(keys)
        self.deriver = ChildKeyDeriver(keys)
        self.esp_decryptor: _Decryptor | None = None
        #: SPI -> Child SA, kept as Child SAs are created (never rebuilt from the groups)
        self.by_spi: dict[int, ChildSa] = {}
        self._esn: set[int] = set()
        python = live or decrypt or per_packet
        self.scan = EspScan(self.source, self.esp_settings.window, "python" if python else engine) \
            if not live else _LiveScan(self.source, self.esp_settings.window)
        self.views: dict[tuple[str, int], EspSaView] = {}
        if decrypt:
            self.esp_decryptor = _Decryptor(self.deriver, self.scan)
            self.views = self.esp_decryptor.views
        if python:
            self.scan.on_esp = self._on_esp
        #: per_packet: called with every ESP datagram after its tracker saw it (the TUI samples
        #: per-SA counters once per second of capture time)
        self.on_esp_packet: Callable[[Datagram], None] | None = None
        self.findings: list[Finding] = []
        self.error: str | None = None
        self.stats = SessionStats()
        self.now = 0.0  # the latest packet time (or tick time)
        self.finished = False
        #: listeners: called with each IKE message (the TUI's packet list), each XFRM sample
        self.on_message: Callable[[IkeMessage], None] | None = None
        self.xfrm: list = []  # XFRM snapshots fed with ``add_xfrm`` (kernel SAD samples)
        self.seeded: dict[int, str] = {}  # SPI -> where it was learned (kernel SAD, peer status)
        # live judgement state
        self._reported: set[tuple] = set()  # (dst, spi, code) / (group id, code)
        self._pending: dict[tuple[str, int], EspSaView] = {}  # SAs with something still to judge
        self._group_marks: dict[int, list[tuple[float, dict[int, int]]]] = {}

    @classmethod
    def for_file(cls, path: str | os.PathLike[str], keys: KeyStore | None = None, settings: Settings | None = None,
                 esp_settings: EspSettings | None = None, **kw) -> Session:
        return cls(os.fspath(path), keys, settings, esp_settings, **kw)

    # --- input ---------------------------------------------------------------------------

    def feed(self, d: Datagram) -> list[Finding]:
        """One UDP/ESP datagram in capture order; the findings that became certain with it."""
        self.stats.datagrams += 1
        ts = d.frame.ts
        if ts > self.now:
            self.now = ts
        if not self.scan._esp_datagram(d):  # ESP (accounted, judged in _on_esp) or nothing for us
            return self._take()
        msg = ike_message_of(d)
        if msg is None:
            return self._take()
        if msg.malformed is None or msg.payloads:
            self.ike_decryptor.decrypt(msg)
            if self.live and self.key_paths and _lacks_key(msg) and self.reload_keys():
                msg = ike_message_of(d)  # decrypt again from the wire bytes with the new keys
                self.ike_decryptor.decrypt(msg)
        return self.feed_message(msg)

    def feed_message(self, msg: IkeMessage) -> list[Finding]:
        """One decoded (and decrypted) IKE message."""
        self.stats.ike += 1
        out = self.analyzer.feed(msg)
        self.deriver.feed(msg)
        if self._watch.new:
            new, self._watch.new = self._watch.new, []
            for child in new:
                self._index(child)
        if self.on_message is not None:
            self.on_message(msg)
        self._found(out)
        return self._take()

    def tick(self, now: float | None = None) -> list[Finding]:
        """Time-based rules (live): SAs waiting to settle, the group rules over the window."""
        if now is not None and now > self.now:
            self.now = now
        if not self.live or self.finished:
            return []
        out: list[Finding] = []
        for v in list(self._pending.values()):
            out += self._judge_sa(v)
        out += self._judge_groups()
        self._found(out)
        return self._take()

    def finish(self) -> list[Finding]:
        """End of input: the ESP SA and group rules, then the IKE end-of-capture rules (once)."""
        if self.finished:
            return []
        self.finished = True
        sas, groups, esp = self.judge()
        if self.live:
            esp = [f for f in esp if self._first_report(f)]
        ike = self.analyzer.finish()
        if self.live:
            ike = [f for f in ike if self._first_report(f)]
        self.sas, self.groups = sas, groups
        self._found(esp + ike)
        return self._take()

    def run_file(self, progress: Callable[[int, int], None] | None = None) -> EspResult:
        """File mode: read the capture once (ESP settled by the scan loop), then ``finish``."""
        scan = self.scan
        if progress is not None:
            progress(0, scan.size)
            scan.on_progress = lambda: progress(scan.bytes_read, scan.size)
        try:
            for d in scan.datagrams():
                self.feed(d)
        except CaptureError as err:
            self.error = str(err)
        except OSError as err:
            self.error = f"{self.source}: {err.strerror or err}"
        if progress is not None:
            progress(scan.size, scan.size)
        self.finish()
        return self.result()

    def result(self) -> EspResult:
        sas = getattr(self, "sas", None)
        groups = getattr(self, "groups", None)
        if sas is None:
            sas, groups = self.attached()
        return EspResult(self.source, self.analyzer, sas, groups, self.scan.esp, self.scan.engine,
                         list(self.findings), self.error, self.scan.stats.frames, self.scan.stats,
                         self.scan.ah_trackers())

    # --- side inputs ---------------------------------------------------------------------

    def add_xfrm(self, snapshots) -> None:
        """Kernel XFRM samples (a snapshot file's series, or one live dump); the SAD's SPIs
        seed the attribution of ESP whose IKE SA came up before the session started."""
        for snap in snapshots:
            self.xfrm.append(snap)
            del self.xfrm[:-2]  # the rules and rates need the last two samples
            for sa in getattr(snap, "sas", ()):
                spi = getattr(sa, "spi", None)
                if isinstance(spi, int) and spi not in self.seeded:
                    self.seeded[spi] = "kernel SAD"

    def add_peer_status(self, doc: dict, path: str = "") -> None:
        """The reference peer's status file: its SAs' SPIs seed the attribution."""
        for sa in doc.get("sas", []) if isinstance(doc, dict) else []:
            for k in ("spi_in", "spi_out", "spi"):
                v = sa.get(k) if isinstance(sa, dict) else None
                try:
                    spi = int(v, 16) if isinstance(v, str) else v
                except ValueError:
                    continue
                if isinstance(spi, int) and spi not in self.seeded:
                    self.seeded[spi] = f"peer status {path}".strip()

    def reload_keys(self, force: bool = False) -> bool:
        """Key files grow as SAs are set up (strongSwan save-keys): load them again when they
        changed. True when new keys were loaded."""
        now = time.monotonic()
        if not self.key_paths or (not force and now - self._key_checked < KEY_CHECK_EVERY):
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
        self.ike_decryptor.keys = self.keys
        self.deriver.keys = self.keys
        self.deriver._esp_cache.clear()
        return True

    @property
    def key_problems(self) -> list[str]:
        return [str(p) for p in self.keys.problems]

    # --- ESP -----------------------------------------------------------------------------

    def _index(self, child: ChildSa) -> None:
        for raw in (child.spi_in, child.spi_out):
            if not raw or len(raw) != 4:
                continue
            spi = int.from_bytes(raw, "big")
            self.by_spi[spi] = child
            if child.esn and spi not in self._esn:
                self._esn.add(spi)
                self.scan.set_esn(spi)
            if self.live:  # ESP seen before the exchange that created it (MS412), now certain
                for key, v in list(self.views.items()):
                    if key[1] == spi:
                        self._pending[key] = v

    def _on_esp(self, d: Datagram, payload: bytes, spi: int, tracker) -> None:
        """Each ESP packet after its tracker saw it (Python engine: live, ``--decrypt``)."""
        self.stats.esp += 1
        if self.esp_decryptor is not None:
            self.esp_decryptor(d, payload, spi, tracker)
        if self.on_esp_packet is not None:
            self.on_esp_packet(d)
        key = (tracker.dst, spi)
        v = self.views.get(key)
        if v is None:
            v = self.views[key] = EspSaView(tracker, self.source)
        v.tracker = tracker
        t, index = tracker, d.frame.index
        if index in (t.first_replay_frame, t.first_gap_frame, t.first_reorder_frame, t.first_wrap_frame):
            v.__dict__.setdefault("times", {})[index] = d.frame.ts  # the time of a frame findings name
        if not self.live:
            return
        if t.gaps > 0:
            v.__dict__.setdefault("gap_since", d.frame.ts)
        else:
            v.__dict__.pop("gap_since", None)
        self._pending[key] = v
        self._found(self._judge_sa(v))

    def _judge_sa(self, v: EspSaView) -> list[Finding]:
        """Live: the SA rules that are certain now, each once per SA."""
        t = v.tracker
        key = (t.dst, t.spi)
        due: set[str] = {code for code, attr in _AT_ONCE.items() if getattr(t, attr)}
        if "MS404" in due and t.esn:
            due.discard("MS404")
        if v.icv_failures:
            due.add("MS420")
        if t.gaps > 0 and (self.now - v.__dict__.get("gap_since", self.now) >= self.settle_seconds
                           or _certain_gaps(t) > 0):
            due.add("MS402")  # the window moved past the missing number, or it stayed missing 1 s
        child = self.analyzer.child_by_spi(t.spi)
        settled = self.now - t.first_ts >= self.settle_seconds
        if child is not None:
            v.child, v.group = child, child.group
            v.direction = "R->I" if t.spi.to_bytes(4, "big") == child.spi_in else "I->R"
            if child.deleted is not None:
                due.add("MS411")
            if child.created is not None and t.first_frame < child.created.index:
                due.add("MS412")
            if child.created is not None and t.first_frame >= child.created.index and \
                    (t.lowest == 0 or (settled and t.lowest != 1)):
                due.add("MS405")
        elif settled and t.spi not in self.seeded:
            due.add("MS410")
        left = {c for c in due if (key + (c,)) not in self._reported}
        waiting = (not settled) or (t.gaps and "MS402" not in due)
        if not waiting and not left and (child is None or child.deleted is not None):
            self._pending.pop(key, None)
        elif not waiting and not left and child is not None:
            self._pending.pop(key, None)
        if not left:
            return []
        ike = v.group.lineage.current if v.group is not None else None
        out = []
        for f in self.analyzer._emit(EspSaSeen(v, ike, v.group, self.esp_settings, self._any_ike())):
            if f.code in left:
                self._reported.add(key + (f.code,))
                out.append(_timed(f, v))
        return out

    def _judge_groups(self) -> list[Finding]:
        """Live: the group rules (MS413-MS415) over the last ``group_window`` seconds."""
        sas, groups = self.attached(count=True)
        out = []
        for g in groups:
            members = tuple(v for v in sas if v.group is g)
            if not members:
                continue
            gid = id(g)
            counts = {id(v): v.tracker.packets for v in members}
            marks = self._group_marks.setdefault(gid, [])
            marks.append((self.now, counts))
            while len(marks) > 1 and self.now - marks[1][0] >= self.group_window:
                del marks[0]
            base = marks[0][1]
            windowed = tuple(_Windowed(v, v.tracker.packets - base.get(id(v), 0)) for v in members)
            event = EspGroupSeen(g, g.lineage.current, windowed, self.esp_settings)
            for f in self.analyzer._emit(event):
                k = (gid, f.code, f.message.split(":")[0])
                if k not in self._reported and f.code in _GROUP_CODES:
                    self._reported.add(k)
                    self._reported.add((gid, f.code))
                    out.append(f)
        return out

    def attached(self, count: bool = False) -> tuple[list[EspSaView], list[ChildSaGroup]]:
        """Every ESP SA held against the groups now (``count``: refresh the Child SAs' ESP
        counters, which the group rules and the views read)."""
        views = _views(self.scan, self.esp_decryptor or _Views(self.views), self.source)
        groups = list(self.analyzer.groups())
        sas = _attach(self.analyzer, views, groups, self.deriver)
        if count:
            _count(self.analyzer, sas)
        return sas, groups

    def judge(self) -> tuple[list[EspSaView], list[ChildSaGroup], list[Finding]]:
        """The end-of-input ESP judgement: per SA, then per group (identical for files)."""
        sas, groups = self.attached(count=True)
        any_ike = self._any_ike()
        findings: list[Finding] = []
        for v in sas:
            ike = v.group.lineage.current if v.group is not None else None
            findings += [_timed(f, v) for f in self.analyzer._emit(EspSaSeen(v, ike, v.group, self.esp_settings,
                                                                             any_ike))]
        for g in groups:
            members = tuple(v for v in sas if v.group is g)
            findings += self.analyzer._emit(EspGroupSeen(g, g.lineage.current, members, self.esp_settings))
        return sas, groups, findings

    def _any_ike(self) -> bool:
        """MS410 can only judge SPIs when every IKE exchange so far was readable."""
        a = self.analyzer
        return bool(a.lineages) and not any(
            ike.undecrypted or ike.integrity_failures for ike in a.ike_sas.values()) and not any(
            lin.unknown_exchanges or lin.partial for lin in a.lineages)

    # --- helpers -------------------------------------------------------------------------

    def _first_report(self, f: Finding) -> bool:
        """Live ``finish``: a finding is new unless the same rule already fired for its SA/group."""
        if not f.code.startswith("MS4"):
            return True
        for k in self._reported:
            if len(k) == 3 and k[2] == f.code and isinstance(k[1], int) and f"0x{k[1]:08x} to {k[0]}" in f.message:
                return False
            if len(k) == 3 and k[1] == f.code and isinstance(k[2], str) and f.message.startswith(k[2]):
                return False
        return True

    def _found(self, findings: list[Finding]) -> None:
        if findings:
            self.findings += findings
            self.stats.findings += len(findings)
            self._new = getattr(self, "_new", []) + findings

    def _take(self) -> list[Finding]:
        """The findings judged since the last ``feed`` returned (ESP, judged in callbacks)."""
        new = getattr(self, "_new", None)
        if not new:
            return []
        self._new = []
        return new

    def take_new(self) -> list[Finding]:
        return self._take()

    def _key_files_stamp(self) -> tuple:
        stamp = []
        for p in self.key_paths:
            try:
                names = [os.path.join(p, n) for n in sorted(os.listdir(p))] if os.path.isdir(p) else [p]
            except OSError:
                continue
            for n in names:
                try:
                    st = os.stat(n)
                    stamp.append((n, st.st_mtime_ns, st.st_size))
                except OSError:
                    pass
        return tuple(stamp)


class _LiveScan(EspScan):
    """The Python sequence engine fed one datagram at a time (no file behind it)."""

    def __init__(self, source: str, window: int) -> None:
        super().__init__(source, window, "python")
        self.size = 0

    def datagrams(self):  # pragma: no cover - live datagrams come from the caller
        return iter(())


class _Views:
    """``_views`` looks for per-SA views in a decryptor; live sessions keep them here."""

    def __init__(self, views: dict) -> None:
        self.views = views


@dataclass(frozen=True)
class _Windowed:
    """An ESP SA as the live group rules see it: its packets inside the window only."""

    view: EspSaView
    packets: int

    def __getattr__(self, name):
        return getattr(self.view, name)

    @property
    def tracker(self):
        return _Count(self.view.tracker, self.packets)


@dataclass(frozen=True)
class _Count:
    tracker: object
    packets: int

    def __getattr__(self, name):
        return getattr(self.tracker, name)


def _count(analyzer: Analyzer, sas: list[EspSaView]) -> None:
    """The Child SAs' ESP counters from the trackers (the group rules such as MS304 read them)."""
    children = {id(v.child): v.child for v in sas if v.child is not None}
    for c in children.values():
        c.esp_in = c.esp_out = 0
    for v in sas:
        c = v.child
        if c is None:
            continue
        if v.direction == "R->I":
            c.esp_in += v.tracker.packets
        else:
            c.esp_out += v.tracker.packets
        c.esp_last = max(c.esp_last or 0.0, v.tracker.last_ts)
    analyzer.esp_packets = sum(v.tracker.packets for v in sas)


def _certain_gaps(t) -> int:
    """Missing numbers the window has moved past: no late packet can fill them any more."""
    w, ring, top = t.window, t._ring, t.top
    lo = max(t._base + 1, top - w + 1)
    pending = 0
    bits = t._bits
    for n in range(lo, top):
        if not bits >> (n % ring) & 1:
            pending += 1
    return t.gaps - pending


def _timed(f: Finding, v: EspSaView) -> Finding:
    """The finding with its packet time: the trackers keep frame numbers, the time of an SA's
    first and last packet, and (live) the time of each frame a finding names."""
    if f.time or not f.frames:
        return f
    t = v.tracker
    times = getattr(v, "times", None) or {}
    ts = times.get(f.frames[0]) or (t.first_ts if f.frames[0] == t.first_frame else
                                    t.last_ts if f.frames[0] == t.last_frame else None)
    return dataclasses.replace(f, time=ts) if ts else f


def _lacks_key(msg: IkeMessage) -> bool:
    return any(isinstance(p, SkPayload) and not p.decrypted and (p.error or "").startswith("not decrypted")
               for p in msg.payloads)


def analyze(path: str | os.PathLike[str], keys: KeyStore | None = None, settings: Settings | None = None,
            esp_settings: EspSettings | None = None, *, decrypt: bool = False, engine: str = "auto",
            rules: Iterable[Rule] | None = None,
            progress: Callable[[int, int], None] | None = None) -> EspResult:
    """One pass over a capture file through a ``Session`` (``lint``, ``groups``, ``esp``)."""
    s = Session.for_file(path, keys, settings, esp_settings, rules=rules, decrypt=decrypt, engine=engine)
    return s.run_file(progress)


__all__ = ["Session", "analyze", "CaptureEnded", "SETTLE_SECONDS", "GROUP_WINDOW"]

"""``MultisaApp``: the Textual app behind ``multisa tui`` (one App, global keys, one .tcss).

Sources run in workers and only post messages (``tui.messages``):

* a capture file: ``load_capture`` (thread) streams datagrams into the engine (``AnalysisView``
  around ``analyzer.session.Session``) and
  publishes every ``PUBLISH_EVERY`` seconds, so the views fill (and can be browsed) while the
  file is still being read, with progress in the status line;
* live: ``capture_loop`` (dumpcap/scapy), ``xfrm_poll`` (exclusive group ``xfrm-poll``,
  netlink every second), ``peer_poll`` (the reference peer's status file) feed one queue;
  ``analysis_loop`` owns the session and publishes at 1 Hz, coalescing whatever arrived.

A problem in any source is a line in the status bar and a notification; collected data stays.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from pathlib import Path

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.worker import get_current_worker

from analyzer import rules as registry
from analyzer.config import ConfigError, Settings, load_settings
from analyzer.model import Finding
from dissectors.capture import CaptureError, CaptureStats
from dissectors.ikev2 import IkeMessage

from .messages import AnalysisPublished, EspCountersUpdated, LoadFinished, SourceProblem, SourceRecovered
from .screens.findings import FindingsScreen
from .screens.groups import GroupsScreen
from .screens.help import ExportScreen, HelpScreen, RuleHelpScreen
from .screens.packets import PacketScreen
from .feed import MAX_MESSAGES, AnalysisView, Progress, file_position
from .view import FindingFilter, Snapshot

PUBLISH_EVERY = 0.3  # seconds between batches while a file loads
LIVE_PERIOD = 1.0  # live refresh (1 Hz)


def focus_text_for(f: Finding) -> str | None:
    """Where the decode tree goes for a finding that names no field (``Finding.offset``):
    the decrypted part, where the exchange's payloads are."""
    return "Decrypted Data"


class MultisaApp(App):
    CSS_PATH = Path(__file__).with_name("multisa.tcss")  # absolute: subclasses elsewhere keep it
    TITLE = "multisa"
    MODES = {"groups": GroupsScreen, "findings": FindingsScreen, "packets": PacketScreen}
    DEFAULT_MODE = "groups"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("g,1", "mode('groups')", "Groups"),
        Binding("f,2", "mode('findings')", "Findings"),
        Binding("p,3", "mode('packets')", "Packets"),
        Binding("slash", "filter", "Filter", key_display="/"),
        Binding("r", "rule_help", "Rule"),
        Binding("e", "export", "Export"),
    ]

    def __init__(self, capture: str | None = None, keys: list[str] | None = None,
                 xfrm: list[str] | None = None, *, live: bool = False, iface: str | None = None,
                 netns: str | None = None, peer_status: list[str] | None = None,
                 settings: Settings | None = None, poll_xfrm: bool = True) -> None:
        super().__init__()
        self.capture = capture
        self.keys = list(keys or [])
        self.xfrm_paths = list(xfrm or [])
        self.live = live
        self.iface = iface or "any"
        self.netns = netns
        self.peer_status = list(peer_status or [])
        self.poll_xfrm_enabled = poll_xfrm
        self.problems: list[str] = []
        if settings is None:
            try:
                settings = load_settings(None)
            except (ConfigError, ValueError, OSError) as err:
                self.problems.append(f"config: {err}")
                settings = Settings()
        self.settings = settings
        self.snapshot = Snapshot(live=live)
        self.messages: deque[IkeMessage] = deque(maxlen=MAX_MESSAGES)
        self.findings: list[Finding] = []
        self.filter_text = ""
        self.views: set = set()
        self.loaded = False
        self.load_error: str | None = None
        self._queue: queue.Queue = queue.Queue(maxsize=200_000)
        self._stop = threading.Event()
        self._capture = None

    @property
    def source_label(self) -> str:
        if self.live:
            where = f"{self.iface}{' netns ' + self.netns if self.netns else ''}"
            return f"live {where}"
        return os.path.basename(self.capture) if self.capture else "(no capture)"

    # --- start and stop ------------------------------------------------------------------

    def on_mount(self) -> None:
        self.sub_title = self.source_label
        if self.live:
            self.analysis_loop()
            self.capture_loop()
            if self.poll_xfrm_enabled:
                self.xfrm_poll()
            if self.peer_status:
                self.peer_poll()
        elif self.capture:
            self.load_capture()
        else:
            self.loaded = True

    def stop_sources(self) -> None:
        self._stop.set()
        cap = self._capture
        if cap is not None:
            cap.stop()

    async def action_quit(self) -> None:
        self.stop_sources()
        self.exit()

    def on_unmount(self) -> None:
        self.stop_sources()

    # --- workers -------------------------------------------------------------------------

    def _session(self, source: str, live: bool) -> AnalysisView:
        session = AnalysisView(source, self.keys, self.settings, live=live)
        self.model = session.analyzer  # what the export's ``esp_sas`` is built from
        for p in session.key_problems:
            self.post_message(SourceProblem("keys", p))
        return session

    @work(thread=True, exclusive=True, group="load", name="capture-file")
    def load_capture(self) -> None:
        worker = get_current_worker()
        path = str(self.capture)
        session = self._session(path, live=False)
        self._load_side_files(session)
        progress = Progress(os.path.basename(path))
        scan = session.scan  # the engine's one pass: ESP settled inside it, the rest to feed
        stats = scan.stats
        last = time.monotonic()
        error = None
        try:
            for d in scan.datagrams():
                if worker.is_cancelled:
                    return
                session.feed(d)
                now = time.monotonic()
                if now - last >= PUBLISH_EVERY:
                    last = now
                    self._progress(progress, session, stats, file_position(path))
                    self.post_message(AnalysisPublished(session.publish(progress)))
        except CaptureError as err:
            error = str(err)
        except OSError as err:
            error = f"{path}: {err.strerror or err}"
        session.finish()
        progress.done, progress.error = True, error
        self._progress(progress, session, stats, 1.0)
        self.post_message(AnalysisPublished(session.publish(progress)))
        self.post_message(LoadFinished(error))

    @staticmethod
    def _progress(progress: Progress, session: AnalysisView, stats: CaptureStats, fraction) -> None:
        progress.frames = stats.frames
        progress.ike = session.analyzer.messages
        progress.esp = session.scan.esp.esp
        progress.fraction = fraction

    def _load_side_files(self, session: AnalysisView) -> None:
        from analyzer.xfrm_state import XfrmImportError, load_series

        from .live import LiveProblem, read_peer_status

        for p in self.xfrm_paths:
            try:
                session.set_xfrm(load_series(p), p)
            except (XfrmImportError, OSError) as err:
                self.post_message(SourceProblem("xfrm", str(err) if isinstance(err, XfrmImportError)
                                                else f"{p}: {err.strerror or err}"))
        if not self.live:
            for p in self.peer_status:
                try:
                    session.set_peer_status(read_peer_status(p), p)
                except LiveProblem as err:
                    self.post_message(SourceProblem("peer", str(err)))

    @work(thread=True, exclusive=True, group="analysis", name="analysis")
    def analysis_loop(self) -> None:
        worker = get_current_worker()
        session = self._session(f"live:{self.iface}", live=True)
        self._load_side_files(session)
        key_problems = list(session.key_problems)
        last = time.monotonic()
        while not self._stop.is_set() and not worker.is_cancelled:
            try:
                kind, item = self._queue.get(timeout=0.1)
                self._consume(session, kind, item)
                deadline = time.monotonic() + 0.2
                while time.monotonic() < deadline:  # drain what is queued, a bounded slice at a time
                    kind, item = self._queue.get_nowait()
                    self._consume(session, kind, item)
            except queue.Empty:
                pass
            now = time.monotonic()
            if now - last >= LIVE_PERIOD:
                last = now
                session.tick()
                if session.key_problems != key_problems:  # keys arrived (or a file went bad)
                    key_problems = list(session.key_problems)
                    self.post_message(SourceRecovered("keys"))
                    for p in key_problems:
                        self.post_message(SourceProblem("keys", p))
                pub = session.publish()
                if pub.messages or pub.findings:
                    self.post_message(AnalysisPublished(pub))
                else:
                    self.post_message(EspCountersUpdated(pub.snapshot))

    @staticmethod
    def _consume(session: AnalysisView, kind: str, item) -> None:
        if kind == "datagram":
            session.feed(item)
        elif kind == "xfrm":
            session.set_xfrm([item])
        elif kind == "peer":
            session.set_peer_status(item[1], item[0])

    @work(thread=True, exclusive=True, group="capture", name="capture")
    def capture_loop(self) -> None:
        from .live import LiveProblem, open_capture

        try:
            self._capture = open_capture(self.iface, self.netns)
            for d in self._capture.datagrams():
                if self._stop.is_set():
                    break
                self._queue.put(("datagram", d))
        except LiveProblem as err:
            if not self._stop.is_set():
                self.post_message(SourceProblem("capture", str(err), fatal=True))

    @work(thread=True, exclusive=True, group="xfrm-poll", name="xfrm-poll")
    def xfrm_poll(self) -> None:
        from .live import poll_xfrm

        poll_xfrm(self.netns, lambda snap: self._queue.put(("xfrm", snap)), self._reporter("xfrm"), self._stop,
                  LIVE_PERIOD)

    @work(thread=True, exclusive=True, group="peer-poll", name="peer-poll")
    def peer_poll(self) -> None:
        from .live import poll_peer_status

        poll_peer_status(self.peer_status, lambda path, doc: self._queue.put(("peer", (path, doc))),
                         self._reporter("peer"), self._stop, LIVE_PERIOD)

    def _reporter(self, source: str):
        """A callback for a polling thread: a text is a problem, None means it recovered."""

        def report(text: str | None) -> None:
            self.post_message(SourceProblem(source, text) if text else SourceRecovered(source))

        return report

    # --- data from workers ---------------------------------------------------------------

    def on_analysis_published(self, message: AnalysisPublished) -> None:
        pub = message.published
        self.snapshot = pub.snapshot
        self.messages.extend(pub.messages)
        self.findings += pub.findings
        for view in list(self.views):
            view.data_arrived(pub.messages, pub.findings, pub.snapshot)

    def on_esp_counters_updated(self, message: EspCountersUpdated) -> None:
        self.snapshot = message.snapshot
        for view in list(self.views):
            view.counters_arrived(message.snapshot)

    def on_source_problem(self, message: SourceProblem) -> None:
        self.problems.append(f"{message.source}: {message.text}")
        self.notify(message.text, title=message.source, severity="error" if message.fatal else "warning",
                    timeout=8)
        for view in list(self.views):
            view.problem()

    def on_source_recovered(self, message: SourceRecovered) -> None:
        self.problems = [p for p in self.problems if not p.startswith(f"{message.source}: ")]
        for view in list(self.views):
            view.problem()

    def on_load_finished(self, message: LoadFinished) -> None:
        self.loaded = True
        self.load_error = message.error
        if message.error:
            self.problems.append(message.error)
            self.notify(message.error, title="capture", severity="error", timeout=10)
            for view in list(self.views):
                view.problem()

    # --- navigation ----------------------------------------------------------------------

    def action_mode(self, mode: str) -> None:
        if self.current_mode != mode:
            self.switch_mode(mode)

    def action_filter(self) -> None:
        if hasattr(self.screen, "action_filter"):
            self.screen.action_filter()

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def current_finding(self) -> Finding | None:
        getter = getattr(self.screen, "current_finding", None)
        return getter() if getter else None

    def action_rule_help(self) -> None:
        f = self.current_finding()
        self.push_screen(RuleHelpScreen(f.code if f else None))

    def show_finding_packet(self, f: Finding) -> None:
        if not f.frames:
            self.notify(f"{f.code} names no frame", severity="warning")
            self.show_finding_group(f)
            return
        self.show_frame(f.frames[0], focus_text_for(f), f.offset)

    def show_frame(self, frame: int, focus_text: str | None = None, focus_offset: int | None = None) -> None:
        async def go() -> None:
            if self.current_mode != "packets":
                await self.switch_mode("packets")
            screen = self.screen
            if isinstance(screen, PacketScreen) and not screen.select_frame(frame, focus_text, focus_offset):
                self.notify(f"frame {frame} is not an IKE message on screen (filter?)", severity="warning")

        self.call_later(go)

    def show_finding_group(self, f: Finding) -> None:
        lin, group = self.snapshot.lineage_of_finding(f)
        target = group.key if group is not None else lin.key if lin is not None else None

        async def go() -> None:
            if self.current_mode != "groups":
                await self.switch_mode("groups")
            if target and isinstance(self.screen, GroupsScreen):
                self.screen.table.select_key(target)
                self.screen.table.focus()

        self.call_later(go)

    # --- export --------------------------------------------------------------------------

    def shown_findings(self) -> list[Finding]:
        flt = FindingFilter.parse(self.filter_text)
        return [f for f in self.findings if flt.finding(f, self.snapshot)]

    def default_export_path(self) -> str:
        stem = Path(self.capture).stem if self.capture else "live"
        return str(Path.cwd() / f"{stem}.multisa.sarif")

    def action_export(self) -> None:
        findings = self.shown_findings()

        def done(path: str | None) -> None:
            if path:
                self.export_to(path, findings)

        self.push_screen(ExportScreen(self.default_export_path(), len(findings)), done)

    def export_to(self, path: str, findings: list[Finding] | None = None) -> str | None:
        from .export import export_findings

        findings = self.shown_findings() if findings is None else findings
        try:
            rules = registry.select(self.settings.select, self.settings.ignore)
        except ValueError:
            rules = registry.all_rules()
        try:
            fmt = export_findings(path, findings, source=self.capture or f"live:{self.iface}", rules=rules,
                                  messages=self.snapshot.messages, esp_packets=self.snapshot.esp_packets,
                                  error=self.load_error, analyzer=getattr(self, "model", None))
        except OSError as err:
            self.notify(f"{path}: {err.strerror or err}", title="export", severity="error")
            return None
        self.notify(f"wrote {len(findings)} finding(s) to {path} ({fmt.upper()})", title="export")
        return fmt

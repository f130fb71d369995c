"""The ESP pass: IKE groups and ESP sequence numbers from one streaming read of a capture.

``analyze_esp(path, keys)`` drives ``EspScan`` (ESP into C or Python trackers, everything
else out), feeds the IKE messages among the rest to the group ``Analyzer`` (issue 4's
``analyzer.state``) and, with ``decrypt=True``, decrypts ESP with ``esp_sa`` keys or keys
derived from SK_d (``analyzer.esp_keys``). At the end it attaches each ESP SA to its Child SA
and group, sets the Child SAs' packet counters (so the group rules such as MS304 see them)
and runs the MS4xx rules (``analyzer/rules/esp.py``) through the same registry.

``multisa lint`` runs it through ``analyzer.pipeline.analyze_capture`` (several captures in
worker processes with ``--jobs``); ``multisa esp`` calls it directly.

Never raises on bad input: a damaged capture ends the pass with ``result.error`` set and
everything read before the damage analyzed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dissectors.capture import CaptureError, CaptureStats, Datagram
from dissectors.crypto import DecryptError, IntegrityError
from dissectors.esp import esp_decrypt, inner_esp, inner_flow
from dissectors.iana import IPPROTO_ESP
from dissectors.ikev2 import ike_messages
from dissectors.keys import KeyStore

from . import rules as rule_registry
from .config import Settings
from .esp_events import EspGroupSeen, EspSaSeen, EspSaView, EspSettings
from .esp_keys import ChildKeyDeriver
from .esp_scan import EspCounters, EspScan
from .model import ChildSa, ChildSaGroup, Finding
from .rules import Rule
from .rules.esp import ESP_RULES
from .state import Analyzer


@dataclass
class EspResult:
    path: str
    analyzer: Analyzer
    sas: list[EspSaView]  # grouped: group by group, Child SA by Child SA, then unknown SPIs
    groups: list[ChildSaGroup]
    counters: EspCounters
    engine: str
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None
    frames: int = 0
    stats: CaptureStats | None = None
    ah: list = field(default_factory=list)  # AH SAs' trackers (RFC 4302), same replay/gap logic


def _esp_rules_selected(settings: Settings) -> list[Rule]:
    """The registry's selection, plus the MS4xx rules (``ESP_RULES``) with the same prefix logic
    (the longer of a matching --select / --ignore prefix wins), also while they are not in
    the global registry."""
    if all(code in rule_registry.RULES for code in ESP_RULES):
        return rule_registry.select(settings.select, settings.ignore)
    known = [p for p in (settings.select or []) if not p.upper().startswith("MS4")]
    chosen = rule_registry.select(known if settings.select is not None else None,
                                  [p for p in settings.ignore if not p.upper().startswith("MS4")])
    if settings.select is not None and not known:
        chosen = []
    codes = {r.code for r in chosen}
    sel = [("MS" if p.upper() == "ALL" else p.upper()) for p in (settings.select or ["MS"])]
    ign = [p.upper() for p in settings.ignore]
    for r in ESP_RULES.values():
        if r.code in codes or r.removed:
            continue
        best_sel = max((len(p) for p in sel if r.code.startswith(p)), default=-1)
        best_ign = max((len(p) for p in ign if r.code.startswith(p)), default=-1)
        if best_sel >= 0 and best_sel >= best_ign:
            chosen.append(r)
    return chosen


#: ESP inside ESP inside ...: followed this deep at most.
MAX_NESTING = 4


class _Decryptor:
    """Per-packet ESP decryption (Python engine only): ICV check, inner flows."""

    def __init__(self, deriver: ChildKeyDeriver, scan: EspScan) -> None:
        self.deriver = deriver
        self.scan = scan
        self.views: dict[tuple[str, int], EspSaView] = {}
        self.depth = 0  # ESP-in-ESP nesting of the packet being decrypted

    def __call__(self, d: Datagram, payload: bytes, spi: int, tracker) -> None:
        key = (d.dst, spi)
        view = self.views.get(key)
        if view is None:
            view = self.views[key] = EspSaView(tracker, d.frame.source)
        keys = self.deriver.keys_for(d.dst, spi, d.src)
        if keys is None:
            return
        view.key_source = keys.source
        esn_high = (tracker.top >> 32) if (keys.esn or tracker.esn) else None
        try:
            plain = esp_decrypt(payload, keys.encr, keys.encr_key, keys.integ, keys.integ_key, esn_high)
        except IntegrityError:
            view.icv_failures += 1
            if not view.first_icv_failure:
                view.first_icv_failure = d.frame.index
            return
        except DecryptError:
            view.undecryptable += 1
            return
        view.decrypted += 1
        flow = inner_flow(plain, d.src, d.dst)
        if flow is not None:
            view.add_flow(flow)
        nested = inner_esp(plain, d.src, d.dst)  # ESP inside ESP: followed after decryption
        if nested is not None and self.depth < MAX_NESTING:
            self.depth += 1
            try:
                self.scan.feed_inner(Datagram(d.frame, nested[0], nested[1], IPPROTO_ESP, None, None, nested[2]))
            finally:
                self.depth -= 1


def analyze_esp(path: str | os.PathLike[str], keys: KeyStore | None = None, settings: Settings | None = None,
                esp_settings: EspSettings | None = None, *, decrypt: bool = False, engine: str = "auto",
                rules: Iterable[Rule] | None = None,
                progress: Callable[[int, int], None] | None = None) -> EspResult:
    """One pass over ``path``: groups, ESP trackers, optional decryption, IKE + MS4xx findings."""
    keys = keys or KeyStore()
    settings = settings or Settings()
    esp_settings = esp_settings or EspSettings()
    path = os.fspath(path)
    analyzer = Analyzer(settings, rules if rules is not None else _esp_rules_selected(settings), source=path)
    scan = EspScan(path, esp_settings.window, "python" if decrypt else engine)
    deriver = ChildKeyDeriver(keys)
    decryptor = _Decryptor(deriver, scan) if decrypt else None
    if decryptor is not None:
        scan.on_esp = decryptor
    findings: list[Finding] = []
    error = None
    esn_known: set[int] = set()
    children_seen = 0
    if progress is not None:
        progress(0, scan.size)
        scan.on_progress = lambda: progress(scan.bytes_read, scan.size)
    try:
        for msg in ike_messages(scan.datagrams(), keys):
            findings += analyzer.feed(msg)
            deriver.feed(msg)
            children = [c for g in analyzer.groups() for c in g.children]
            if len(children) != children_seen:
                children_seen = len(children)
                for c in children:
                    if c.esn:
                        for spi in (c.spi_in, c.spi_out):
                            if spi and len(spi) == 4 and int.from_bytes(spi, "big") not in esn_known:
                                esn_known.add(int.from_bytes(spi, "big"))
                                scan.set_esn(int.from_bytes(spi, "big"))
    except CaptureError as err:
        error = str(err)
    except OSError as err:
        error = f"{path}: {err.strerror or err}"
    if progress is not None:
        progress(scan.size, scan.size)

    sas, groups, esp_findings = judge_esp(analyzer, scan, esp_settings, deriver, decryptor)
    findings += esp_findings
    findings += analyzer.finish()
    return EspResult(path, analyzer, sas, groups, scan.esp, scan.engine, findings, error, scan.stats.frames,
                     scan.stats, scan.ah_trackers())


def judge_esp(analyzer: Analyzer, scan: EspScan, esp_settings: EspSettings,
              deriver: ChildKeyDeriver | None = None, decryptor: _Decryptor | None = None,
              counted: bool = False) -> tuple[list[EspSaView], list[ChildSaGroup], list[Finding]]:
    """After a pass: the ESP SAs held against the groups, and the MS4xx findings (per SA, then
    per group). ``counted``: the analyzer already counted ESP per Child SA (``feed_esp``, as
    the TUI does while loading), so the trackers' packets are not added again."""
    views = _views(scan, decryptor, scan.path)
    groups = list(analyzer.groups())
    sas = _attach(analyzer, views, groups, deriver)
    if not counted:  # the group rules of issue 4 (MS304) read the Child SAs' ESP counters
        for v in sas:
            c = v.child
            if c is None:
                continue
            if v.direction == "R->I":
                c.esp_in += v.tracker.packets
            else:
                c.esp_out += v.tracker.packets
            c.esp_last = max(c.esp_last or 0.0, v.tracker.last_ts)
        analyzer.esp_packets += sum(v.tracker.packets for v in sas)
    # MS410 can only judge SPIs when every IKE exchange of the capture was readable
    any_ike = bool(analyzer.lineages) and not any(
        ike.undecrypted or ike.integrity_failures for ike in analyzer.ike_sas.values()) and not any(
        lin.unknown_exchanges or lin.partial for lin in analyzer.lineages)
    findings: list[Finding] = []
    for v in sas:
        ike = v.group.lineage.current if v.group is not None else None
        findings += analyzer._emit(EspSaSeen(v, ike, v.group, esp_settings, any_ike))
    for g in groups:
        members = tuple(v for v in sas if v.group is g)
        findings += analyzer._emit(EspGroupSeen(g, g.lineage.current, members, esp_settings))
    return sas, groups, findings


def _views(scan: EspScan, decryptor: _Decryptor | None, path: str) -> list[EspSaView]:
    out = []
    for t in scan.trackers():
        v = decryptor.views.get((t.dst, t.spi)) if decryptor is not None else None
        if v is None:
            v = EspSaView(t, path)
        v.tracker = t
        out.append(v)
    return out


def _attach(analyzer: Analyzer, views: list[EspSaView], groups: list[ChildSaGroup],
            deriver: ChildKeyDeriver | None) -> list[EspSaView]:
    """Child SA, group and direction of each ESP SA; ordered group by group."""
    by_child: dict[int, list[EspSaView]] = {}
    for v in views:
        child: ChildSa | None = analyzer.child_by_spi(v.spi)
        if child is not None:
            v.child, v.group = child, child.group
            spi = v.spi.to_bytes(4, "big")
            v.direction = "R->I" if spi == child.spi_in else "I->R"
            by_child.setdefault(id(child), []).append(v)
        if v.key_source is None and deriver is not None:
            v.key_note = deriver.note(v.spi)
    ordered: list[EspSaView] = []
    for gid, g in enumerate(groups, 1):
        for c in g.children:
            for v in sorted(by_child.get(id(c), []), key=lambda v: v.direction or ""):
                v.group_id = gid
                ordered.append(v)
    ordered += [v for v in views if v.child is None or v.group is None]
    return ordered

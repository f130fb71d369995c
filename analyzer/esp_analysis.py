"""The ESP pass: IKE groups and ESP sequence numbers from one streaming read of a capture.

``analyze_esp(path, keys)`` runs a capture through the one engine, ``analyzer.session.Session``:
``EspScan`` (ESP into C or Python trackers, everything else out) feeds the IKE messages
among the rest to the group ``Analyzer`` (issue 4's ``analyzer.state``) and, with
``decrypt=True``, ESP is decrypted with ``esp_sa`` keys or keys derived from SK_d
(``analyzer.esp_keys``). At the end each ESP SA is attached to its Child SA and group
(``_attach``), the Child SAs' packet counters are set (so the group rules such as MS304 see
them) and the MS4xx rules (``analyzer/rules/esp.py``) run through the same registry. This
module keeps the result type and the per-SA helpers the session uses.

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
    """One pass over ``path`` through the one engine (``analyzer.session.Session``): groups,
    ESP trackers, optional decryption, IKE + MS4xx findings."""
    from .session import analyze

    return analyze(path, keys, settings, esp_settings, decrypt=decrypt, engine=engine, rules=rules,
                   progress=progress)


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

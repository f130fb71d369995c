"""``--format json`` (one document) and ``--format json-lines`` (one finding per line).

Contract::

    {"findings": [{"code", "name", "severity": "error|warning|info", "message", "rfc",
                   "level", "frames": [int], "ike_spis", "group", "category", "file",
                   "time"}],   # time: epoch seconds of the first frame
     "summary": {"findings", "by_severity", "by_code", "threshold", "rules",
                 "captures": [{"file", "ike_messages", "esp_packets", "findings", "error"}]},
     "esp_sas": [{"file", "spi", "dst", "role", "group", "ike_spis", "resource_id",
                  "child_sa"}]}

``category`` is the rule's Wireshark expert-info group (``ExpertGroup``: "Protocol",
"Sequence", ...). ``esp_sas`` has one entry per SPI of every Child SA the IKE exchanges
negotiated (two per Child SA, one each way), whatever the threshold: ``spi`` in hex as on the
wire (8 digits), ``dst`` the address of the peer receiving on it (the IKE peer's address;
None if unknown), ``role`` "fallback" (the group's initial SA), "member" or "unknown",
``group`` the group's label (TSi === TSr), ``resource_id`` the SA_RESOURCE_INFO data the
receiving peer announced (hex, "" when empty, None without the notify), ``child_sa`` the
Child SA's ``in/out`` SPIs as ``multisa groups`` shows them. The Wireshark plugin
(``wireshark/multisa.lua``) reads ``findings`` and ``esp_sas``.
"""

from __future__ import annotations

import dataclasses
import json

from ..model import Finding, Side
from ..pipeline import CaptureResult, LintReport



def esp_sas(result: CaptureResult) -> list[dict]:
    """One entry per SPI of every Child SA of the capture (see the module's contract)."""
    out = []
    for lineage in result.analyzer.lineages:
        for group in lineage.groups.values():
            for child in group.children:
                label = f"{child.spi_in.hex() if child.spi_in else '?'}/{child.spi_out.hex() if child.spi_out else '?'}"
                for side in (Side.I, Side.R):
                    spi = child.spi_of(side)
                    if not spi:
                        continue
                    rid = child.resource_id(side)
                    out.append({"file": result.path, "spi": spi.hex(), "dst": lineage.addrs.get(side),
                                "role": child.role, "group": group.label,
                                "ike_spis": "/".join(x.hex() for x in child.ike_spis),
                                "resource_id": None if rid is None else rid.hex(), "child_sa": label})
    return out


def with_times(findings: list[Finding]) -> list[Finding]:
    """``time`` is the epoch time of the finding's first frame. The ESP pass knows the frame
    numbers of what it counts but not every packet's time: those are read back from the
    capture (records only, up to the last frame needed, once per capture)."""
    need: dict[str, set[int]] = {}
    for f in findings:
        if not f.time and f.frames and f.source:
            need.setdefault(f.source, set()).add(f.frames[0])
    if not need:
        return findings
    from dissectors.capture import CaptureError, iter_frames

    times: dict[tuple[str, int], float] = {}
    for source, frames in need.items():
        last = max(frames)
        try:
            for ref, _link, _data in iter_frames(source):
                if ref.index in frames:
                    times[(source, ref.index)] = ref.ts
                if ref.index >= last:
                    break
        except (CaptureError, OSError):
            pass  # what was read before the damage is kept; the error is reported elsewhere
    return [dataclasses.replace(f, time=times[(f.source, f.frames[0])])
            if not f.time and f.frames and (f.source, f.frames[0]) in times else f for f in findings]


def render(report: LintReport) -> str:
    doc = {"findings": [f.to_dict() for f in with_times(report.findings)], "summary": report.summary(),
           "esp_sas": [sa for r in report.results for sa in esp_sas(r)]}
    return json.dumps(doc, indent=2) + "\n"


def render_lines(report: LintReport) -> str:
    return "".join(json.dumps(f.to_dict()) + "\n" for f in with_times(report.findings))

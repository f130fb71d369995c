"""``--format json`` (one document) and ``--format json-lines`` (one finding per line).

Contract::

    {"findings": [{"code", "name", "severity": "error|warning|info", "message", "rfc",
                   "level", "frames": [int], "ike_spis", "group", "category", "file",
                   "time"}],   # time: epoch seconds of the first frame
     "summary": {"findings", "by_severity", "by_code", "threshold", "rules",
                 "captures": [{"file", "ike_messages", "esp_packets", "findings", "error"}]}}
"""

from __future__ import annotations

import dataclasses
import json

from ..model import Finding
from ..pipeline import LintReport


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
    doc = {"findings": [f.to_dict() for f in with_times(report.findings)], "summary": report.summary()}
    return json.dumps(doc, indent=2) + "\n"


def render_lines(report: LintReport) -> str:
    return "".join(json.dumps(f.to_dict()) + "\n" for f in with_times(report.findings))

"""``--format json`` (one document) and ``--format json-lines`` (one finding per line).

Contract::

    {"findings": [{"code", "name", "severity": "error|warning|info", "message", "rfc",
                   "level", "frames": [int], "ike_spis", "group", "category", "file",
                   "time"}],
     "summary": {"findings", "by_severity", "by_code", "threshold", "rules",
                 "captures": [{"file", "ike_messages", "esp_packets", "findings", "error"}]}}
"""

from __future__ import annotations

import json

from ..pipeline import LintReport


def render(report: LintReport) -> str:
    doc = {"findings": [f.to_dict() for f in report.findings], "summary": report.summary()}
    return json.dumps(doc, indent=2) + "\n"


def render_lines(report: LintReport) -> str:
    return "".join(json.dumps(f.to_dict()) + "\n" for f in report.findings)

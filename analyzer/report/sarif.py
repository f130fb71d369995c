"""``--format sarif``: SARIF 2.1.0 (OASIS), with every selected rule in ``tool.driver.rules``.

Captures are binary artifacts, so a result's location is the capture file (no line region)
plus a logical location per frame; frames, IKE SPIs and the group travel in ``properties``.
``partialFingerprints`` lets code-scanning services follow a finding across runs.
"""

from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import quote

from ..model import Finding, Severity
from ..pipeline import LintReport
from ..rules import Rule

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
RFC_URL = "https://www.rfc-editor.org/rfc/rfc{number}"


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("multisa")
    except Exception:  # not installed (running from a checkout)
        return "0.1.0"


def help_uri(rfc: str) -> str:
    if rfc.startswith("draft-"):  # an Internet-Draft (MS109 cites the pre-RFC per-CPU draft)
        return f"https://datatracker.ietf.org/doc/html/{rfc.split()[0]}"
    m = re.match(r"RFC (\d+)(?: §([\d.]+))?", rfc)
    if not m:
        return RFC_URL.format(number=9611)
    url = RFC_URL.format(number=m.group(1))
    return url + (f"#section-{m.group(2)}" if m.group(2) else "")


def rule_descriptor(rule: Rule) -> dict:
    sections = rule.doc_sections()
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": " ".join(sections.get("What it does", rule.title).split())},
        "help": {"text": rule.doc, "markdown": rule.doc},
        "helpUri": help_uri(rule.rfc),
        "defaultConfiguration": {"level": LEVEL[rule.severity]},
        "properties": {"rfc": rule.rfc, "level": rule.level.value or None, "group": rule.group.value,
                       "tags": ["ipsec", "ikev2", "rfc9611", rule.group.value.lower()]},
    }


def _uri(path: str) -> str:
    return quote(path.replace("\\", "/"), safe="/:")


def result(f: Finding, index: dict[str, int]) -> dict:
    fingerprint = hashlib.sha256(f"{f.code}|{f.source}|{f.ike_spis}|{f.frames}|{f.message}".encode()).hexdigest()
    out = {
        "ruleId": f.code,
        "level": LEVEL[f.severity],
        "message": {"text": f"{f.message} [{f.citation}]"},
        "locations": [{
            "physicalLocation": {"artifactLocation": {"uri": _uri(f.source)}},
            "logicalLocations": [{"name": f"frame {n}", "kind": "frame"} for n in f.frames],
        }],
        "partialFingerprints": {"multisaFinding/v1": fingerprint},
        "properties": {"frames": list(f.frames), "ike_spis": f.ike_spis, "group": f.group,
                       "rfc": f.rfc, "level": f.level.value or None, "name": f.name},
    }
    if f.code in index:
        out["ruleIndex"] = index[f.code]
    return out


def document(report: LintReport) -> dict:
    rules = list(report.rules)
    codes = {r.code for r in rules}
    from ..rules import get

    for f in report.findings:  # a finding from a rule not selected cannot happen, but stay valid
        if f.code not in codes and (r := get(f.code)):
            rules.append(r)
            codes.add(f.code)
    index = {r.code: i for i, r in enumerate(rules)}
    notifications = [{"level": "error", "message": {"text": e}} for e in report.errors]
    return {
        "$schema": SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "multisa", "version": _version(),
                                "informationUri": RFC_URL.format(number=9611),
                                "rules": [rule_descriptor(r) for r in rules]}},
            "artifacts": [{"location": {"uri": _uri(r.path)}, "roles": ["analysisTarget"]}
                          for r in report.results],
            "invocations": [{"executionSuccessful": not report.errors,
                             "toolExecutionNotifications": notifications}],
            "results": [result(f, index) for f in report.findings],
        }],
    }


def render(report: LintReport) -> str:
    return json.dumps(document(report), indent=2) + "\n"

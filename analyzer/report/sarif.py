"""``--format sarif``: SARIF 2.1.0 (OASIS), with every selected rule in ``tool.driver.rules``.

Valid for GitHub code scanning (checked with Microsoft's SARIF Multitool, ``validate
--rule-kind "Gh;Sarif"``, 0 errors 0 warnings, in tests/test_sarif_multitool.py):

- a capture has no lines, so a result's region is its **first frame number as the line**
  (``startLine`` = ``endLine`` = frame; a finding with no frame points at line 1); every
  frame is also a logical location, and frames, IKE SPIs and the group are in ``properties``;
- URIs are relative to the current directory (run lint from the repository root) with
  ``uriBaseId`` ``%SRCROOT%``, given in ``originalUriBaseIds``; a capture outside the current
  directory keeps an absolute ``file://`` URI;
- ``partialFingerprints`` hash what identifies a finding (rule, file, IKE SPIs, frames,
  message) so alerts do not duplicate between runs;
- the security rules (group Security, replay, integrity) carry the ``security`` tag and a
  ``security-severity`` (error 7.5, warning 5.0, info 2.0), as GitHub ranks security alerts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from urllib.parse import quote

from ..model import Finding, Severity
from ..pipeline import LintReport
from ..rules import Rule

SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
RFC_URL = "https://www.rfc-editor.org/rfc/rfc{number}"


SRCROOT = "%SRCROOT%"
#: Rules about the security of the deployment (beyond protocol conformance).
SECURITY_RULES = frozenset({"MS305", "MS306", "MS307", "MS401", "MS404", "MS420", "MS902"})
SECURITY_SEVERITY = {Severity.ERROR: "7.5", Severity.WARNING: "5.0", Severity.INFO: "2.0"}


def _version() -> str:
    from ..cli_common import version

    return version()


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
    tags = ["ipsec", "ikev2", "rfc9611", rule.group.value.lower()]
    props = {"rfc": rule.rfc, "level": rule.level.value or None, "group": rule.group.value, "tags": tags}
    if rule.code in SECURITY_RULES:
        tags += [] if "security" in tags else ["security"]
        props["security-severity"] = SECURITY_SEVERITY[rule.severity]
    return {
        "id": rule.code,
        "name": rule.name,
        "shortDescription": {"text": rule.title},
        "fullDescription": {"text": " ".join(sections.get("What it does", rule.title).split())},
        "help": {"text": rule.doc, "markdown": rule.doc},
        "helpUri": help_uri(rule.rfc),
        "defaultConfiguration": {"level": LEVEL[rule.severity]},
        "properties": props,
    }


def _uri(path: str) -> str:
    return quote(path.replace("\\", "/"), safe="/:")


def artifact_location(path: str) -> dict:
    """Relative to the current directory under ``%SRCROOT%``; else an absolute file URI."""
    try:
        rel = Path(os.path.abspath(path)).relative_to(Path.cwd())
    except ValueError:
        return {"uri": Path(os.path.abspath(path)).as_uri()}
    return {"uri": _uri(rel.as_posix()), "uriBaseId": SRCROOT}


def result(f: Finding, index: dict[str, int]) -> dict:
    line = f.frames[0] if f.frames else 1  # the frame number as the line (README, lint)
    fingerprint = hashlib.sha256(f"{f.code}|{f.source}|{f.ike_spis}|{f.frames}|{f.message}".encode()).hexdigest()
    out = {
        "ruleId": f.code,
        "level": LEVEL[f.severity],
        "message": {"text": f"{f.message} [{f.citation}]"},
        "locations": [{
            "physicalLocation": {"artifactLocation": artifact_location(f.source),
                                 "region": {"startLine": line, "startColumn": 1,
                                            "endLine": line, "endColumn": 2}},
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
            "originalUriBaseIds": {SRCROOT: {"uri": Path.cwd().as_uri() + "/"}},
            "artifacts": [{"location": artifact_location(r.path), "roles": ["analysisTarget"]}
                          for r in report.results],
            "invocations": [{"executionSuccessful": not report.errors,
                             "toolExecutionNotifications": notifications}],
            "results": [result(f, index) for f in report.findings],
        }],
    }


def render(report: LintReport) -> str:
    return json.dumps(document(report), indent=2) + "\n"

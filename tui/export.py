"""Export the findings on screen through ``analyzer.report`` (SARIF 2.1.0 or the JSON report)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from analyzer.model import Finding, Severity
from analyzer.pipeline import CaptureResult, LintReport
from analyzer.report import json as json_report
from analyzer.report import sarif


def format_of(path: str) -> str:
    return "json" if path.lower().endswith(".json") else "sarif"


def export_findings(path: str, findings: list[Finding], *, source: str, rules, messages: int = 0,
                    esp_packets: int = 0, error: str | None = None, analyzer=None) -> str:
    """Write ``findings`` to ``path``; returns the format written. OSError on I/O problems.
    ``analyzer`` (the engine's model) gives the JSON report its ``esp_sas``; without it the
    report has the findings and counts only."""
    counts = SimpleNamespace(messages=messages, esp_packets=esp_packets,
                             lineages=list(getattr(analyzer, "lineages", ())))
    result = CaptureResult(source, counts, list(findings), error)  # type: ignore[arg-type]
    report = LintReport([result], list(rules), Severity.INFO)
    fmt = format_of(path)
    text = json_report.render(report) if fmt == "json" else sarif.render(report)
    Path(path).write_text(text, encoding="utf-8")
    return fmt

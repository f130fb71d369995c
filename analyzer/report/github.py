"""``--format github``: GitHub Actions workflow commands (``::error file=…::message``).

Escaping follows the Actions toolkit (``@actions/core`` ``command.ts``): ``%``, CR and LF in
the message; additionally ``:`` and ``,`` in properties.
"""

from __future__ import annotations

from ..model import Finding, Severity
from ..pipeline import LintReport

COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def annotation(f: Finding) -> str:
    frames = ", ".join(map(str, f.frames)) or "-"
    title = escape_property(f"{f.code} {f.name}")
    message = escape_data(f"{f.message} (frame{'s' if len(f.frames) > 1 else ''} {frames}) [{f.citation}]")
    return f"::{COMMAND[f.severity]} file={escape_property(f.source)},title={title}::{message}"


def render(report: LintReport) -> str:
    lines = [annotation(f) for f in report.findings]
    lines += [f"::error title=multisa::{escape_data(e)}" for e in report.errors]
    return "".join(line + "\n" for line in lines)

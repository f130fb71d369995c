"""``--format github``: GitHub Actions workflow commands (``::error file=…::message``).

Escaping follows the Actions toolkit (``@actions/core`` ``command.ts``): ``%``, CR and LF in
the message; additionally ``:`` and ``,`` in properties. ``line=`` is the finding's first
frame number (captures have no lines; SARIF does the same).
"""

from __future__ import annotations

import re

from ..model import Finding, Severity
from ..pipeline import LintReport

COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def escape_data(s: str) -> str:
    return s.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def annotation(f: Finding) -> str:
    """``line`` is the first frame (as in SARIF); the message says the other frames once, and
    not at all when it already names them."""
    title = escape_property(f"{f.code} {f.name}")
    text = f.message
    if len(f.frames) > 1 and not all(re.search(rf"\\b{n}\\b", text) for n in f.frames):
        text += f" (frames {', '.join(map(str, f.frames))})"
    line = f",line={f.frames[0]}" if f.frames else ""
    message = escape_data(f"{text} [{f.citation}]")
    return f"::{COMMAND[f.severity]} file={escape_property(f.source)}{line},title={title}::{message}"


def render(report: LintReport) -> str:
    lines = [annotation(f) for f in report.findings]
    lines += [f"::error title=multisa::{escape_data(e)}" for e in report.errors]
    return "".join(line + "\n" for line in lines)

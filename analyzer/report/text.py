"""``--format text``: one line per finding, ``file:frame: CODE message [RFC 9611 §x MUST]``.

As compilers and ruff print them, so editors and ``grep`` can jump to the frame. A summary
line closes the output.
"""

from __future__ import annotations

from ..model import Finding
from ..pipeline import LintReport


def finding_line(f: Finding) -> str:
    frame = f.frames[0] if f.frames else "-"
    more = f" (frames {', '.join(map(str, f.frames))})" if len(f.frames) > 1 else ""
    return f"{f.source}:{frame}: {f.code} {f.message}{more} [{f.citation}]"


def render(report: LintReport) -> str:
    lines = [finding_line(f) for f in report.findings]
    s = report.summary()
    if s["findings"]:
        counts = ", ".join(f"{n} {label}" for label, n in s["by_severity"].items() if n)
        lines.append(f"Found {s['findings']} finding{'s' if s['findings'] != 1 else ''} ({counts}).")
    elif not report.errors:
        lines.append("All checks passed!")
    return "\n".join(lines) + "\n"

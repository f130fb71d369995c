"""``--format text``: one line per finding, ``file:frame: CODE message [RFC 9611 §x MUST]``.

As compilers and ruff print them, so editors and ``grep`` can jump to the frame. A summary
line closes the output, and it is honest: "All checks passed!" only when at least one rule
judged at least one IKE message or ESP packet and nothing at or above the threshold was
found; findings below ``--severity`` are counted ("3 findings below warning hidden").
``quiet`` (``-q``) prints the findings and nothing else; ``statistics`` prints one line per
rule that fired, ``count  CODE  name``, as ruff's ``--statistics``. ``color`` paints the
codes by severity (the CLI turns it on for a terminal, off for pipes and ``NO_COLOR``).
"""

from __future__ import annotations

from ..cli_common import paint
from ..model import Finding, Severity
from ..pipeline import LintReport

STYLE = {Severity.ERROR: "bold-red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def finding_line(f: Finding, color: bool = False) -> str:
    frame = f.frames[0] if f.frames else "-"
    more = f" (frames {', '.join(map(str, f.frames))})" if len(f.frames) > 1 else ""
    return (f"{paint(f.source, 'bold', color)}:{frame}: {paint(f.code, STYLE[f.severity], color)} "
            f"{f.message}{more} [{f.citation}]")


def hidden_count(report: LintReport) -> int:
    """Findings below the ``--severity`` threshold (not shown, not failing)."""
    return sum(len(r.findings) for r in report.results) - len(report.findings)


def judged(report: LintReport) -> str | None:
    """None when something was judged; else why nothing was."""
    if not report.rules:
        return "no selected rule can judge a capture alone (MS5xx need --xfrm)"
    readable = [r for r in report.results if r.analyzer.messages or r.analyzer.esp_packets]
    if not readable:
        return "no IKE message or ESP packet in " + ("the capture" if len(report.results) == 1 else "any capture")
    return None


def summary_line(report: LintReport, color: bool = False) -> str | None:
    s = report.summary()
    hidden = hidden_count(report)
    below = f"; {plural(hidden, 'finding')} below {report.threshold.label} hidden" if hidden else ""
    if s["findings"]:
        counts = ", ".join(plural(n, label, "info" if label == "info" else None)
                           for label, n in s["by_severity"].items() if n)
        return paint(f"Found {plural(s['findings'], 'finding')} ({counts}){below}.", "bold", color)
    if report.errors:
        return None
    why = judged(report)
    if why is not None:
        return paint(f"Nothing judged: {why}.", "yellow", color)
    return paint("All checks passed!", "bold-green", color) + (f" ({below[2:]})" if below else "")


def statistics(report: LintReport) -> list[str]:
    counts: dict[str, tuple[int, Finding]] = {}
    for f in report.findings:
        n, first = counts.get(f.code, (0, f))
        counts[f.code] = (n + 1, first)
    rows = sorted(counts.items(), key=lambda kv: (-kv[1][0], kv[0]))
    width = max((len(str(n)) for _, (n, _) in rows), default=1)
    return [f"{n:>{width}}  {code}  {first.name}" for code, (n, first) in rows]


def render(report: LintReport, quiet: bool = False, statistics: bool = False, color: bool = False) -> str:
    lines = _statistics(report) if statistics else [finding_line(f, color) for f in report.findings]
    if not quiet:
        line = summary_line(report, color)
        if line is not None:
            lines.append(line)
    return "".join(line + "\n" for line in lines)


_statistics = statistics

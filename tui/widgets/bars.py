"""The status line (source, progress, counts, problems) and the filter bar."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Input, Static

from analyzer.model import Severity

FILTER_HELP = "filter: code:MS1 sev:warning group:198.51 spi:c1f7e800 words  (Esc: leave, empty: all)"


class FilterBar(Input):
    """One line: the filter every view applies (``tui.view.FindingFilter`` syntax)."""

    DEFAULT_CLASSES = "filter-bar"

    def __init__(self, **kwargs) -> None:
        super().__init__(placeholder=FILTER_HELP, **kwargs)


class StatusLine(Static):
    """``source · progress · counts · findings by severity · counters`` and the last problem."""

    COMPONENT_CLASSES = {"status-line--error", "status-line--warning", "status-line--ok"}

    def show(self, app) -> None:
        snap = app.snapshot
        t = Text()
        t.append(" multisa ", self.get_component_rich_style("status-line--ok", partial=True))
        t.append(f" {app.source_label} ")
        prog = snap.progress
        if prog is not None:
            t.append(f"· {prog.text} ")
        elif snap.live:
            t.append("· live ")
        counts = {s: 0 for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)}
        for f in app.findings:
            counts[f.severity] += 1
        t.append("· ")
        t.append(f"{counts[Severity.ERROR]}E ", self.get_component_rich_style("status-line--error", partial=True))
        t.append(f"{counts[Severity.WARNING]}W ", self.get_component_rich_style("status-line--warning",
                                                                               partial=True))
        t.append(f"{counts[Severity.INFO]}I ")
        if snap.counter_sources:
            t.append(f"· counters: {'+'.join(snap.counter_sources)} ")
        if app.problems:
            t.append("\n")
            t.append(f" ! {app.problems[-1]}", self.get_component_rich_style("status-line--error", partial=True))
        self.update(t)

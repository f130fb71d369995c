"""``FindingList``: the findings table (severity, code, RFC §, frames, message)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from analyzer.model import Finding, Severity

from ..view import FindingFilter, Snapshot

SEV_CLASS = {Severity.ERROR: "finding-list--error", Severity.WARNING: "finding-list--warning",
             Severity.INFO: "finding-list--info"}


def frames_text(frames: tuple[int, ...], limit: int = 3) -> str:
    if not frames:
        return "-"
    shown = ",".join(map(str, frames[:limit]))
    return shown + ("…" if len(frames) > limit else "")


class FindingList(DataTable):
    """Every finding that passes the filter, in the order the analyzer reported them."""

    COMPONENT_CLASSES = {"finding-list--error", "finding-list--warning", "finding-list--info"}

    @dataclass
    class FindingChosen(Message):
        finding: Finding

    @dataclass
    class FindingHighlighted(Message):
        finding: Finding

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        self.findings: list[Finding] = []  # every finding, unfiltered
        self.shown: list[Finding] = []
        self.filter = FindingFilter()
        self.snapshot = Snapshot()

    def on_mount(self) -> None:
        self.add_column("sev", width=7, key="sev")
        self.add_column("code", width=5, key="code")
        self.add_column("RFC §", width=19, key="rfc")
        self.add_column("frames", width=9, key="frames")
        # the message column is sized here, before its rows are added, not by the table's
        # auto width: that is measured on idle, after a row may already have been painted and
        # cached at the old width (a row cut to the header's 7 cells under load)
        self.add_column("message", width=len("message"), key="message")

    def _fit_message(self, findings) -> None:
        column = self.columns["message"]
        column.width = max(column.width, max((cell_len(f.message) for f in findings), default=0))

    def _row(self, f: Finding) -> tuple:
        style = self.get_component_rich_style(SEV_CLASS[f.severity], partial=True)
        return (Text(f.severity.label, style), Text(f.code, style), f.citation.removeprefix("RFC "),
                frames_text(f.frames), Text(f.message))  # Text: a message is not markup

    def add_findings(self, new: list[Finding] | tuple[Finding, ...]) -> None:
        """Append what a worker found since the last batch (cheap: no table rebuild)."""
        base = len(self.findings)
        self.findings += new
        self._fit_message(new)
        for i, f in enumerate(new, base):
            if self.filter.finding(f, self.snapshot):
                self.shown.append(f)
                self.add_row(*self._row(f), key=str(i))

    def set_filter(self, flt: FindingFilter, snap: Snapshot | None = None) -> None:
        if snap is not None:
            self.snapshot = snap
        self.filter = flt
        self.refill()

    def refill(self) -> None:
        self.clear()
        self.shown = []
        self._fit_message(self.findings)
        for i, f in enumerate(self.findings):
            if self.filter.finding(f, self.snapshot):
                self.shown.append(f)
                self.add_row(*self._row(f), key=str(i))

    @property
    def current(self) -> Finding | None:
        if not self.shown or self.cursor_row < 0 or self.cursor_row >= len(self.shown):
            return None
        return self.shown[self.cursor_row]

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if self.current is not None:
            self.post_message(self.FindingChosen(self.current))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if self.current is not None:
            self.post_message(self.FindingHighlighted(self.current))

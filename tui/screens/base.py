"""What every data view shares: the status line, the filter bar and how new data arrives."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Input

from ..view import FindingFilter
from ..widgets.bars import FilterBar, StatusLine
from ..widgets.finding_list import FindingList


class DataScreen(Screen):
    """A view of the app's data; the app calls ``data_arrived`` after each worker batch."""

    def compose_top(self) -> ComposeResult:
        yield StatusLine(id="status")
        bar = FilterBar(id="filter")
        bar.display = bool(self.app.filter_text)
        bar.value = self.app.filter_text
        yield bar

    @property
    def flt(self) -> FindingFilter:
        return FindingFilter.parse(self.app.filter_text)

    def on_mount(self) -> None:
        self.app.views.add(self)
        self.fill()

    def on_unmount(self) -> None:
        self.app.views.discard(self)

    def on_screen_resume(self) -> None:
        bar = self.query_one(FilterBar)
        if bar.value != self.app.filter_text:
            bar.value = self.app.filter_text
            self.filter_changed()
        bar.display = bool(self.app.filter_text)
        self.query_one(StatusLine).show(self.app)

    # --- hooks ---------------------------------------------------------------------------

    def fill(self) -> None:
        """Show everything the app holds (first mount)."""
        self.query_one(StatusLine).show(self.app)

    def data_arrived(self, messages, findings, snapshot) -> None:
        self.query_one(StatusLine).show(self.app)

    def counters_arrived(self, snapshot) -> None:
        self.query_one(StatusLine).show(self.app)

    def filter_changed(self) -> None:
        pass

    def problem(self) -> None:
        self.query_one(StatusLine).show(self.app)

    # --- the filter bar ------------------------------------------------------------------

    def action_filter(self) -> None:
        bar = self.query_one(FilterBar)
        bar.display = True
        bar.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if isinstance(event.input, FilterBar):
            event.stop()
            self._apply(event.value)
            self.focus_main()

    def on_input_changed(self, event: Input.Changed) -> None:
        """Filter as you type, once typing pauses (a rebuild per key would lag on big trees)."""
        if isinstance(event.input, FilterBar):
            event.stop()
            timer = getattr(self, "_filter_timer", None)
            if timer is not None:
                timer.stop()
            value = event.value
            self._filter_timer = self.set_timer(0.25, lambda: self._apply(value))

    def _apply(self, text: str) -> None:
        if text != self.app.filter_text:
            self.app.filter_text = text
            flt = FindingFilter.parse(text)
            if flt.error:
                self.notify(flt.error, severity="warning")
            self.filter_changed()

    def action_leave_filter(self) -> None:
        bar = self.query_one(FilterBar)
        if bar.has_focus:
            bar.display = bool(bar.value)
            self.focus_main()
        elif self.app.filter_text:
            bar.value = ""
            self._apply("")
            bar.display = False

    def focus_main(self) -> None:
        pass


class FindingsPane:
    """For a ``DataScreen`` holding a ``FindingList``: filling it and adding what arrives."""

    @property
    def finding_list(self) -> FindingList:
        return self.query_one(FindingList)

    def fill_findings(self) -> None:
        self.finding_list.snapshot = self.app.snapshot
        self.finding_list.filter = self.flt
        self.finding_list.add_findings(self.app.findings)

    def findings_arrived(self, findings, snapshot) -> None:
        self.finding_list.snapshot = snapshot
        if findings:
            self.finding_list.add_findings(findings)

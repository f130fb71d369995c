"""``FindingsScreen``: every finding, with the selected one explained from the rule registry."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Markdown

from analyzer import rules as registry
from analyzer.model import Finding

from ..widgets.finding_list import FindingList
from .base import DataScreen, FindingsPane


def finding_markdown(f: Finding) -> str:
    rule = registry.get(f.code)
    frames = ", ".join(map(str, f.frames)) or "-"
    lines = [f"**{f.code}** `{f.name}` · **{f.severity.label}** · {f.citation} · {f.category.value}",
             "", f.message, "",
             f"Frames: {frames}  ·  IKE SA: `{f.ike_spis or '-'}`  ·  group: `{f.group or '-'}`"]
    if rule is not None:
        why = rule.doc_sections().get("Why is this bad?", "")
        if why:
            lines += ["", "**Why is this bad?** " + " ".join(why.split())]
    return "\n".join(lines)


class FindingsScreen(FindingsPane, DataScreen):
    BINDINGS = [
        Binding("escape", "leave_filter", "Clear filter", show=False),
        Binding("g", "goto_group", "Go to group"),
    ]

    def compose(self) -> ComposeResult:
        yield from self.compose_top()
        yield FindingList(id="all-findings")
        with VerticalScroll(id="finding-detail"):
            yield Markdown("", id="finding-md")
        yield Footer()

    def fill(self) -> None:
        super().fill()
        self.fill_findings()
        self.finding_list.focus()
        self._explain()

    def data_arrived(self, messages, findings, snapshot) -> None:
        super().data_arrived(messages, findings, snapshot)
        self.findings_arrived(findings, snapshot)
        if findings and len(self.finding_list.shown) == len(findings):
            self._explain()

    def filter_changed(self) -> None:
        self.finding_list.set_filter(self.flt, self.app.snapshot)
        self._explain()

    def focus_main(self) -> None:
        self.finding_list.focus()

    def _explain(self) -> None:
        f = self.finding_list.current
        self.query_one("#finding-md", Markdown).update(finding_markdown(f) if f else "*No finding selected.*")

    def on_finding_list_finding_highlighted(self, event: FindingList.FindingHighlighted) -> None:
        self._explain()

    def on_finding_list_finding_chosen(self, event: FindingList.FindingChosen) -> None:
        self.app.show_finding_packet(event.finding)

    def action_goto_group(self) -> None:
        """``g``: the selected finding's group, or (nothing selected) the groups view, as ``g``
        does everywhere else."""
        if self.finding_list.current is not None:
            self.app.show_finding_group(self.finding_list.current)
        else:
            self.app.action_mode("groups")

    def current_finding(self):
        return self.finding_list.current

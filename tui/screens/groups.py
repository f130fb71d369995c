"""``GroupsScreen`` (default): the Child SA group tree above the findings pane."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.widgets import Footer, Static

from ..view import human, sparkline
from ..widgets.finding_list import FindingList
from ..widgets.group_table import GroupTable
from .base import DataScreen, FindingsPane


class GroupsScreen(FindingsPane, DataScreen):
    BINDINGS = [
        Binding("tab", "switch_pane", "Pane", show=False),
        Binding("escape", "leave_filter", "Clear filter", show=False),
        Binding("o", "open_packets", "Packets of row"),
    ]

    def compose(self) -> ComposeResult:
        yield from self.compose_top()
        with Vertical(id="groups-pane"):
            yield Static("", id="group-header", classes="col-header")
            yield GroupTable(id="groups")
        yield Static("", id="group-detail", classes="detail")
        with Vertical(id="findings-pane"):
            yield Static("Findings  (Enter: go to packet, r: rule help)", classes="pane-title")
            yield FindingList(id="findings")
        yield Footer()

    @property
    def table(self) -> GroupTable:
        return self.query_one(GroupTable)

    def fill(self) -> None:
        super().fill()
        self.fill_findings()
        self.table.update_snapshot(self.app.snapshot, self.flt)
        self.table.rebuild()
        self.table.focus()
        self.call_after_refresh(self._header)

    def _header(self) -> None:
        self.query_one("#group-header", Static).update(self.table.header_text())

    def on_resize(self) -> None:
        self.call_after_refresh(self._header)

    def data_arrived(self, messages, findings, snapshot) -> None:
        super().data_arrived(messages, findings, snapshot)
        self.findings_arrived(findings, snapshot)
        self.table.update_snapshot(snapshot)
        self._detail()

    def counters_arrived(self, snapshot) -> None:
        super().counters_arrived(snapshot)
        self.table.update_snapshot(snapshot)
        self._detail()

    def filter_changed(self) -> None:
        flt = self.flt
        self.table.update_snapshot(self.app.snapshot, flt)
        self.finding_list.set_filter(flt, self.app.snapshot)

    def focus_main(self) -> None:
        self.table.focus()

    def action_switch_pane(self) -> None:
        (self.finding_list if self.table.has_focus else self.table).focus()

    # --- selection -----------------------------------------------------------------------

    def on_tree_node_highlighted(self, event) -> None:
        self._detail()

    def _detail(self) -> None:
        node = self.table.cursor_node
        key = str(node.data) if node is not None and node.data else ""
        snap = self.app.snapshot
        text = ""
        for lin in snap.lineages:
            if key == lin.key:
                text = (f"IKE SA lineage {lin.label}: {lin.state}, {len(lin.groups)} group(s), "
                        f"frames {','.join(map(str, lin.frames)) or '-'}")
            for g in lin.groups:
                if key == g.key:
                    cpu = (f"; packets per CPU {list(g.per_cpu)} {sparkline(g.per_cpu)}" if g.per_cpu
                           else "; no CPU information (use --xfrm, --live or --peer-status)")
                    text = (f"group {g.label}: {len(g.children)} Child SAs, {g.active} active, "
                            f"{g.refusals} refused, {human(g.packets)} packets{cpu}")
                for r in g.children:
                    if key == r.key:
                        text = (f"{r.role} Child SA {r.spis} ({r.state}) {r.proposal}; resource I/R "
                                f"{r.resource}; CPU {r.cpu}; {r.packets} packets"
                                f"{'' if r.bytes is None else f', {r.bytes} bytes'} ({r.counters}); "
                                f"frames {','.join(map(str, r.frames)) or '-'}")
        self.query_one("#group-detail", Static).update(text)

    def on_finding_list_finding_highlighted(self, event: FindingList.FindingHighlighted) -> None:
        """Highlighting a finding moves the tree to its group (or IKE SA)."""
        lin, group = self.app.snapshot.lineage_of_finding(event.finding)
        target = group.key if group is not None else lin.key if lin is not None else None
        if target:
            self.table.select_key(target)

    def on_finding_list_finding_chosen(self, event: FindingList.FindingChosen) -> None:
        self.app.show_finding_packet(event.finding)

    def on_group_table_row_chosen(self, event: GroupTable.RowChosen) -> None:
        pass  # Enter toggles the node (Tree's own behaviour); "o" opens its packets

    def action_open_packets(self) -> None:
        node = self.table.cursor_node
        key = str(node.data) if node is not None and node.data else ""
        frames: tuple[int, ...] = ()
        for lin in self.app.snapshot.lineages:
            if key == lin.key:
                frames = lin.frames
            for g in lin.groups:
                if key == g.key:
                    frames = g.frames
                for r in g.children:
                    if key == r.key:
                        frames = r.frames
        if frames:
            self.app.show_frame(frames[0])
        else:
            self.notify("no IKE frame known for this row", severity="warning")

    def current_finding(self):
        return self.finding_list.current

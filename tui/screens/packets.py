"""``PacketScreen``: Wireshark's three panes for IKE messages (list, decoded tree, bytes)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer

from dissectors.ikev2 import IkeMessage

from ..widgets.packet_views import DecodeTree, HexView, PacketList, message_info, message_spis
from .base import DataScreen


class PacketScreen(DataScreen):
    BINDINGS = [
        Binding("escape", "leave_filter", "Clear filter", show=False),
        Binding("tab", "next_pane", "Pane", show=False),
    ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.focus_text: str | None = None
        self.focus_offset: int | None = None
        self._shown: IkeMessage | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_top()
        yield PacketList(id="packet-list")
        yield DecodeTree(id="decode-tree")
        with VerticalScroll(id="hex-pane"):
            yield HexView(id="hex")
        yield Footer()

    @property
    def packet_list(self) -> PacketList:
        return self.query_one(PacketList)

    def _passes(self, msg: IkeMessage) -> bool:
        flt = self.flt
        if not flt.spis and not flt.words:
            return True
        return flt.message(message_info(msg), message_spis(msg) if flt.spis else "")

    def fill(self) -> None:
        super().fill()
        for msg in self.app.messages:
            if self._passes(msg):
                self.packet_list.append(msg)
        self.packet_list.focus()

    def data_arrived(self, messages, findings, snapshot) -> None:
        super().data_arrived(messages, findings, snapshot)
        first = not self.packet_list.shown
        for msg in messages:
            if self._passes(msg):
                self.packet_list.append(msg)
        if first and self.packet_list.shown and self._shown is None:
            self._show(self.packet_list.shown[0])

    def filter_changed(self) -> None:
        current = self.packet_list.current
        self.packet_list.reset()
        for msg in self.app.messages:
            if self._passes(msg):
                self.packet_list.append(msg)
        if current is not None and current.frame is not None:
            self.packet_list.select_frame(current.frame.index)

    def focus_main(self) -> None:
        self.packet_list.focus()

    def select_frame(self, frame: int, focus_text: str | None = None, focus_offset: int | None = None) -> bool:
        """Show ``frame``; the tree cursor on the field at ``focus_offset`` (a finding's), else
        on the first line containing ``focus_text``."""
        self.focus_text = focus_text
        self.focus_offset = focus_offset
        found = self.packet_list.select_frame(frame)
        msg = next((m for m in self.packet_list.shown if m.frame and m.frame.index == frame), None)
        if msg is None:
            msg = next((m for m in self.app.messages if m.frame and m.frame.index == frame), None)
        if msg is not None:
            self._show(msg)
        return found or msg is not None

    def _show(self, msg: IkeMessage) -> None:
        self._shown = msg
        self.query_one(DecodeTree).show(msg, self.focus_text, self.focus_offset)
        self.query_one(HexView).show(msg)

    def on_tree_node_highlighted(self, event) -> None:
        """A line of the decoded tree: its octets highlighted in the hex pane (decrypted)."""
        if isinstance(event.control, DecodeTree) and self._shown is not None:
            self.query_one(HexView).show(self._shown, event.node.data if isinstance(event.node.data, tuple) else None)

    def on_packet_list_packet_highlighted(self, event: PacketList.PacketHighlighted) -> None:
        if event.msg is not self._shown:
            if self._shown is not None:
                self.focus_text = self.focus_offset = None
            self._show(event.msg)

    def action_next_pane(self) -> None:
        order = [self.packet_list, self.query_one(DecodeTree), self.query_one("#hex-pane")]
        current = next((i for i, w in enumerate(order) if w.has_focus), -1)
        order[(current + 1) % len(order)].focus()

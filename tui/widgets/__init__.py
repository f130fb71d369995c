"""Widgets of the TUI: the group tree, the findings table, the packet panes, the bars."""

from .bars import FilterBar, StatusLine
from .finding_list import FindingList
from .group_table import GroupTable
from .packet_views import DecodeTree, HexView, PacketList

__all__ = ["DecodeTree", "FilterBar", "FindingList", "GroupTable", "HexView", "PacketList", "StatusLine"]

"""The TUI's screens: groups (default), findings, packets, and the modal help/rule/export ones."""

from .findings import FindingsScreen
from .groups import GroupsScreen
from .help import ExportScreen, HelpScreen, RuleHelpScreen
from .packets import PacketScreen

__all__ = ["ExportScreen", "FindingsScreen", "GroupsScreen", "HelpScreen", "PacketScreen", "RuleHelpScreen"]

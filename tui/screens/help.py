"""Modal screens: ``HelpScreen`` (keys, filter syntax), ``RuleHelpScreen`` (the rule registry's
documentation) and ``ExportScreen`` (write the current findings as SARIF or JSON)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, Markdown, OptionList
from textual.widgets.option_list import Option

from analyzer import rules as registry

HELP = """\
# multisa TUI

| key | what |
|---|---|
| `g` / `1` | Child SA groups (IKE SA → group → Child SAs) with the findings pane |
| `f` / `2` | findings table with the rule's explanation |
| `p` / `3` | packets: message list, decoded tree (decrypted payloads), hex |
| `Enter` | on a finding: its packet; on a tree node: open/close it |
| `o` | packets of the highlighted IKE SA, group or Child SA |
| `Tab` | next pane |
| `/` | filter bar; `Esc` leaves it, `Esc` again clears it |
| `r` | rule help (for the highlighted finding's rule) |
| `e` | export the findings shown (after the filter) as SARIF or JSON |
| `?` | this help · `q` quit |

**Filter** (all views): `code:MS1` (code prefix, or just `MS101`), `sev:warning`
(that severity and above), `group:198.51` (text in the TS pair), `spi:c1f7e800`
(IKE or Child SA SPI), other words match the message text.

**Columns**: resource I/R = SA_RESOURCE_INFO data sent by the lineage initiator / responder
(hex, first 4 octets; `-` none); SPI in/out = the SPI the initiator receives / sends on;
CPU = the kernel's `XFRMA_SA_PCPU` (or the reference peer's worker CPUs); pkts/bytes from
XFRM or peer counters when given, else ESP packets seen on the wire; history = packets per
second, one block a second.
"""


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box", classes="modal-box"):
            yield Markdown(HELP)
        yield Footer()


def rule_markdown(rule) -> str:
    head = (f"# {rule.code} `{rule.name}`\n\n**{rule.title}**\n\n"
            f"{rule.citation} · default severity **{rule.severity.label}** · group {rule.group.value}"
            f"{' · removed' if rule.removed else ''}\n\n")
    return head + rule.doc


class RuleHelpScreen(ModalScreen):
    """Every rule of the registry; the documentation of the highlighted one."""

    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, code: str | None = None) -> None:
        super().__init__()
        self.code = code
        self.rules = registry.all_rules(include_removed=True)

    def compose(self) -> ComposeResult:
        with Horizontal(id="rules-box", classes="modal-box"):
            yield OptionList(*[Option(f"{r.code} {r.name}", id=r.code) for r in self.rules], id="rule-list")
            with VerticalScroll(id="rule-doc"):
                yield Markdown("", id="rule-md")
        yield Footer()

    def on_mount(self) -> None:
        ol = self.query_one(OptionList)
        index = next((i for i, r in enumerate(self.rules) if r.code == self.code), 0)
        if self.rules:
            ol.highlighted = index
            self._show(self.rules[index])
        ol.focus()

    def _show(self, rule) -> None:
        self.query_one("#rule-md", Markdown).update(rule_markdown(rule))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        rule = registry.get(str(event.option.id))
        if rule is not None:
            self._show(rule)


class ExportScreen(ModalScreen[str | None]):
    """Ask for a path; ``.json`` writes the JSON report, anything else SARIF 2.1.0."""

    BINDINGS = [Binding("escape", "dismiss(None)", "Cancel")]

    def __init__(self, default_path: str, count: int) -> None:
        super().__init__()
        self.default_path = default_path
        self.count = count

    def compose(self) -> ComposeResult:
        with Vertical(id="export-box", classes="modal-box"):
            yield Label(f"Export {self.count} finding(s) shown — .sarif (SARIF 2.1.0) or .json:")
            yield Input(self.default_path, id="export-path")
            yield Label("Enter: write · Esc: cancel", classes="dim")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip() or None)

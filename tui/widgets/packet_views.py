"""Wireshark's three panes: ``PacketList`` (one row per IKE message), ``DecodeTree`` (the
``analyzer.report.tree.render_message`` text as a collapsible tree, decrypted payloads
included) and ``HexView`` (the message bytes as received)."""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable, Static, Tree

from analyzer.report.tree import render_message_lines
from dissectors.iana import ExchangeType, NotifyType, PayloadType, name_of
from dissectors.ikev2 import IkeMessage
from dissectors.ikev2.payloads import NotifyPayload, SkPayload

_SHORT = {PayloadType.VENDOR_ID: "V", PayloadType.NONCE: "N(nonce)", PayloadType.NOTIFY: "N"}


def payload_summary(msg: IkeMessage) -> str:
    """``SK{IDi AUTH SA TSi TSr N(SA_RESOURCE_INFO)}`` -- what Wireshark's Info column says."""
    parts = []
    for p in msg.payloads:
        if isinstance(p, SkPayload):
            inner = " ".join(_one(q) for q in p.inner) if p.decrypted else "encrypted"
            parts.append(f"{name_of(PayloadType, p.type)}{{{inner}}}")
        else:
            parts.append(_one(p))
    return " ".join(parts)


def _one(p) -> str:
    if isinstance(p, NotifyPayload):
        return f"N({name_of(NotifyType, p.notify_type)})"
    if p.type == PayloadType.NONCE:
        return "Ni/r"
    return name_of(PayloadType, p.type)


def message_info(msg: IkeMessage) -> str:
    kind = "response" if msg.response else "request"
    if msg.version >> 4 == 1:  # IKEv1: its own exchange and payload registries
        return f"{msg.exchange_name} MID={msg.message_id} " + " ".join(getattr(p, "name", "?") for p in msg.payloads)
    return f"{name_of(ExchangeType, msg.exchange)} {kind} MID={msg.message_id} {payload_summary(msg)}"


def message_spis(msg: IkeMessage) -> str:
    """Every SPI a message names (IKE SPIs, SA proposals, notifies, deletes), for the filter."""
    out = [msg.spi_i.hex(), msg.spi_r.hex()]
    for p in msg.all_payloads():
        for attr in ("spi",):
            v = getattr(p, attr, None)
            if isinstance(v, bytes):
                out.append(v.hex())
        for prop in getattr(p, "proposals", ()) or ():
            if isinstance(getattr(prop, "spi", None), bytes):
                out.append(prop.spi.hex())
        for s in getattr(p, "spis", ()) or ():
            if isinstance(s, bytes):
                out.append(s.hex())
    return " ".join(out)


def hex_dump(data: bytes, width: int = 16) -> str:
    lines = []
    for off in range(0, len(data), width):
        chunk = data[off:off + width]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        if width == 16:
            hexes = hexes[:23] + " " + hexes[23:]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        pad = width * 3 + (1 if width == 16 else 0) - 1
        lines.append(f"{off:04x}  {hexes:<{pad}}  {text}")
    return "\n".join(lines)


class PacketList(DataTable):
    """IKE messages in capture order, filtered; row key = frame number."""

    @dataclass
    class PacketHighlighted(Message):
        msg: IkeMessage

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", **kwargs)
        self.shown: list[IkeMessage] = []
        self.t0: float | None = None

    def on_mount(self) -> None:
        self.add_column("No.", width=6, key="no")
        self.add_column("Time", width=9, key="time")
        self.add_column("Source", width=15, key="src")
        self.add_column("Destination", width=15, key="dst")
        # sized before each row is added, not by the table's auto width (measured on idle,
        # after a row may have been painted and cached at the old width; see FindingList)
        self.add_column("Info", width=len("Info"), key="info")

    def append(self, msg: IkeMessage) -> None:
        frame = msg.frame.index if msg.frame else len(self.shown) + 1
        ts = msg.frame.ts if msg.frame else 0.0
        if self.t0 is None:
            self.t0 = ts
        info = Text(message_info(msg))  # Text: never parsed as markup
        if msg.malformed is not None:
            info = Text(f"{info.plain} [Malformed: {msg.malformed}]", "bold red")
        column = self.columns["info"]
        column.width = max(column.width, info.cell_len)
        self.shown.append(msg)
        self.add_row(str(frame), f"{ts - self.t0:.3f}", msg.src or "?", msg.dst or "?", info, key=str(frame))

    def reset(self) -> None:
        self.clear()
        self.shown = []

    def select_frame(self, frame: int) -> bool:
        """Move the cursor to ``frame`` (or the first shown message after it)."""
        for i, msg in enumerate(self.shown):
            if msg.frame is not None and msg.frame.index >= frame:
                self.move_cursor(row=i, scroll=True)
                return msg.frame.index == frame
        return False

    @property
    def current(self) -> IkeMessage | None:
        if 0 <= self.cursor_row < len(self.shown):
            return self.shown[self.cursor_row]
        return None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if self.current is not None:
            self.post_message(self.PacketHighlighted(self.current))


class DecodeTree(Tree):
    """The decoded message: each line of ``render_message`` a node, indentation = depth."""

    def __init__(self, **kwargs) -> None:
        super().__init__("(no packet selected)", **kwargs)
        self.guide_depth = 2
        self.lines: list[str] = []

    def show(self, msg: IkeMessage | None, focus_text: str | None = None, focus_offset: int | None = None) -> None:
        """``focus_offset`` (a finding's field offset in the message) puts the cursor on the line
        showing the field that starts there (the narrowest); else ``focus_text`` on the first
        line containing it."""
        self.clear()
        if msg is None:
            self.root.set_label("(no packet selected)")
            self.lines = []
            return
        rendered = render_message_lines(msg)
        self.lines = [text for text, _ in rendered]
        self.root.set_label(self.lines[0] if self.lines else "?")
        stack: list[tuple[int, object]] = [(-1, self.root)]
        target = by_text = None
        for line, span in rendered[1:]:
            depth = (len(line) - len(line.lstrip(" "))) // 4
            while len(stack) > 1 and stack[-1][0] >= depth:
                stack.pop()
            node = stack[-1][1].add(line.strip(), data=span, expand=True)
            node.allow_expand = False
            parent = stack[-1][1]
            parent.allow_expand = True
            stack.append((depth, node))
            if focus_offset is not None and span is not None and span[0] == focus_offset and (
                    target is None or span[1] < target.data[1]):
                target = node
            if by_text is None and focus_text and focus_text in line:
                by_text = node
        self.root.expand_all()
        target = target or by_text
        if target is not None:
            self.call_after_refresh(self._focus_node, target)

    def _focus_node(self, node) -> None:
        self.move_cursor(node)
        self.scroll_to_node(node)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def decrypted_image(msg: IkeMessage) -> tuple[bytes, list[tuple[int, int]]]:
    """The message bytes with each decrypted SK payload's inner payloads written in clear at
    the offsets of their ciphertext (what ``Finding.offset`` and the tree's spans point at),
    and the ``(offset, length)`` ranges shown decrypted."""
    image = bytearray(msg.raw or b"")
    clear: list[tuple[int, int]] = []
    for p in msg.payloads:
        if not isinstance(p, SkPayload) or not p.decrypted or not p.inner:
            continue
        for q in p.inner:
            try:
                body = q.wire if q.wire is not None else q.body()
            except Exception:  # noqa: BLE001 - a payload that cannot serialise stays encrypted
                continue
            head = bytes([q.next_payload & 0xFF, (0x80 if q.critical else 0) | (q.reserved & 0x7F)])
            chunk = head + (len(body) + 4).to_bytes(2, "big") + body
            end = q.offset + len(chunk)
            if end > len(image):
                image.extend(b"\0" * (end - len(image)))
            image[q.offset:end] = chunk
            clear.append((q.offset, len(chunk)))
    return bytes(image), clear


class HexView(Static):
    """Hex and ASCII of the message (from the IKE header on), decrypted payloads in clear
    (underlined), the bytes of the selected tree line highlighted."""

    def show(self, msg: IkeMessage | None, span: tuple[int, int] | None = None) -> None:
        if msg is None or not msg.raw:
            self.update("")
            return
        data, clear = decrypted_image(msg)
        self.span = span
        text = Text()
        if clear:
            text.append(f"decrypted payloads in clear (underlined): "
                        f"{', '.join(f'0x{o:04x}-0x{o + n - 1:04x}' for o, n in clear)}\n", "italic")
        hi = set(range(span[0], span[0] + span[1])) if span else set()
        plain = {i for o, n in clear for i in range(o, o + n)}
        for off in range(0, len(data), 16):
            chunk = data[off:off + 16]
            text.append(f"{off:04x}  ")
            for i, b in enumerate(chunk):
                n = off + i
                style = "reverse" if n in hi else "underline" if n in plain else ""
                text.append(f"{b:02x}", style)
                text.append("  " if i == 7 else " ")
            text.append("   " * (16 - len(chunk)) + (" " if len(chunk) <= 8 else ""))
            text.append(" ")
            for i, b in enumerate(chunk):
                n = off + i
                text.append(chr(b) if 32 <= b < 127 else ".", "reverse" if n in hi else "underline" if n in plain else "")
            text.append("\n")
        self.update(text)
        if span:
            line = span[0] // 16 + (1 if clear else 0)
            parent = self.parent
            if parent is not None and hasattr(parent, "scroll_to"):
                self.call_after_refresh(parent.scroll_to, 0, max(0, line - 1), animate=False)

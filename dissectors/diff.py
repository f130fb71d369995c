"""Differences between two engines' messages in the JSON contract (``dissectors.ikev2.export``).

Used to cross-check multisa against tshark (``dissectors.tshark``). Only the fields below are
compared, so what one engine cannot know (offsets, time, ID data) never shows up. Messages are
paired by frame; payloads by position once both sides agree on the payload types.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from typing import Any

from .iana import IsakmpPayloadType, PayloadType, name_of

Message = dict[str, Any]

SA, NOTIFY, DELETE, TSI, TSR, SK, SKF = 33, 41, 42, 44, 45, 46, 53

# --- what is compared --------------------------------------------------------------------

HEADER_KEYS = ("version", "exchange", "message_id", "initiator", "response", "spi_i", "spi_r")
V1_HEADER_KEYS = ("flags",)  # IKEv1 (ISAKMP): E, C, A
PAYLOAD_KEYS: dict[int, tuple[str, ...]] = {
    NOTIFY: ("notify_type", "protocol_id", "spi", "data"),  # data: RFC 9611 resource id
    DELETE: ("protocol_id", "spis"),
    SK: ("decrypted",),
    SKF: ("decrypted",),
}
PROPOSAL_KEYS = ("protocol_id", "spi")
TRANSFORM_KEYS = ("type", "id", "key_length")
SELECTOR_KEYS = ("ts_type", "ip_protocol", "start_port", "end_port", "start_address", "end_address")


def _hex(v: Any) -> Any:
    return v.replace(":", "").lower() if isinstance(v, str) else v


def _address(v: Any) -> Any:
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        return v


#: How values are normalised before comparing (anything else: as is).
NORMALISE: dict[str, Callable[[Any], Any]] = {
    "spi_i": _hex, "spi_r": _hex, "spi": _hex, "data": _hex,
    "spis": lambda v: [_hex(s) for s in v] if isinstance(v, list) else v,
    "start_address": _address, "end_address": _address,
}


# --- comparing ---------------------------------------------------------------------------

class _Diff:
    """Collects one line per difference, prefixed with where it is."""

    def __init__(self, labels: tuple[str, str], v1: bool = False) -> None:
        self.labels = labels
        self.lines: list[str] = []
        self.registry = IsakmpPayloadType if v1 else PayloadType  # payload type names

    def value(self, where: str, key: str, a: Any, b: Any) -> None:
        norm = NORMALISE.get(key, lambda v: v)
        va, vb = norm(a), norm(b)
        if va != vb:
            self.lines.append(f"{where}{key}: {self.labels[0]} {va!r}, {self.labels[1]} {vb!r}")

    def keys(self, where: str, keys: Iterable[str], a: dict[str, Any], b: dict[str, Any]) -> None:
        for key in keys:
            self.value(where, key, a.get(key), b.get(key))

    def count(self, where: str, what: str, a: list[Any], b: list[Any]) -> bool:
        if len(a) != len(b):
            self.value(where, f"number of {what}", len(a), len(b))
            return False
        return True

    def payloads(self, where: str, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
        ta = [name_of(self.registry, p.get("type", -1)) for p in a]
        tb = [name_of(self.registry, p.get("type", -1)) for p in b]
        if ta != tb:
            self.lines.append(f"{where}payload types: {self.labels[0]} [{', '.join(ta)}], "
                              f"{self.labels[1]} [{', '.join(tb)}]")
            return
        for i, (pa, pb, name) in enumerate(zip(a, b, ta)):
            self.payload(f"{where}payload {i} {name}: ", pa, pb)

    def payload(self, where: str, a: dict[str, Any], b: dict[str, Any]) -> None:
        kind = a.get("type")
        if self.registry is IsakmpPayloadType:  # IKEv1: the chain, and whether it is encrypted
            self.keys(where, ("encrypted",), a, b)
            return
        self.keys(where, PAYLOAD_KEYS.get(kind, ()), a, b)
        if kind == SA:
            pa, pb = a.get("proposals") or [], b.get("proposals") or []
            if self.count(where, "proposals", pa, pb):
                for i, (x, y) in enumerate(zip(pa, pb)):
                    self.proposal(f"{where}proposal {i + 1}: ", x, y)
        elif kind in (TSI, TSR):
            sa, sb = a.get("selectors") or [], b.get("selectors") or []
            if self.count(where, "selectors", sa, sb):
                for i, (x, y) in enumerate(zip(sa, sb)):
                    self.keys(f"{where}selector {i + 1}: ", SELECTOR_KEYS, x, y)
        elif kind in (SK, SKF) and a.get("decrypted") and b.get("decrypted"):
            self.payloads(f"{where}inner ", a.get("inner") or [], b.get("inner") or [])

    def proposal(self, where: str, a: dict[str, Any], b: dict[str, Any]) -> None:
        self.keys(where, PROPOSAL_KEYS, a, b)
        # a damaged transform tshark lists without any field ("Payload (bogus, length ...)"):
        # multisa keeps only what decoded before it (partial decoding), so both drop it
        ta = [t for t in a.get("transforms") or [] if t.get("type") is not None]
        tb = [t for t in b.get("transforms") or [] if t.get("type") is not None]
        if self.count(where, "transforms", ta, tb):
            for i, (x, y) in enumerate(zip(ta, tb)):
                self.keys(f"{where}transform {i + 1}: ", TRANSFORM_KEYS, x, y)


def _summary(msg: Message) -> str:
    return (f"exchange {msg.get('exchange')} message id {msg.get('message_id')}"
            f" {'response' if msg.get('response') else 'request'}")


def _by_frame(messages: Iterable[Message]) -> dict[tuple[Any, int], Message]:
    """Key each message by (frame, n-th message of that frame)."""
    out: dict[tuple[Any, int], Message] = {}
    for msg in messages:
        n = 0
        while (msg.get("frame"), n) in out:
            n += 1
        out[(msg.get("frame"), n)] = msg
    return out


def compare_messages(ours: list[Message], theirs: list[Message],
                     labels: tuple[str, str] = ("multisa", "tshark")) -> list[str]:
    """Human-readable differences, one line each, in frame order; empty if they agree.

    Compared: exchange, message id, I/R flags, SPIs, payload types in order (outer and
    decrypted inner), Notify type/protocol/SPI, proposal SPIs and transforms
    (type, id, key length), TS ranges, Delete protocol and SPIs, decrypted yes/no; plus
    messages only one side has.
    """
    a, b = _by_frame(ours), _by_frame(theirs)
    lines: list[str] = []
    for key in sorted(a.keys() | b.keys(), key=lambda k: (k[0] is None, k[0] or 0, k[1])):
        frame = f"frame {key[0]}" + (f" (message {key[1] + 1})" if key[1] else "")
        if key not in b:
            lines.append(f"{frame}: only {labels[0]} has a message ({_summary(a[key])})")
        elif key not in a:
            lines.append(f"{frame}: only {labels[1]} has a message ({_summary(b[key])})")
        else:
            v1 = a[key].get("version") == 1 or b[key].get("version") == 1
            diff = _Diff(labels, v1)
            diff.keys("", HEADER_KEYS + (V1_HEADER_KEYS if v1 else ()), a[key], b[key])
            diff.payloads("", a[key].get("payloads") or [], b[key].get("payloads") or [])
            lines += [f"{frame}: {line}" for line in diff.lines]
    return lines

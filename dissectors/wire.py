"""A small declarative base for wire structures: a header is a table of (name, struct code).

In the manner of dpkt's ``__hdr__``: ``FIELDS = (("protocol_id", "B"), ("spi_size", "B"), ...)``
parses a fixed header; variable tails are handled by the structure's own ``parse`` with the
RFC section in a comment. ``ParseError`` carries the byte offset and the field name so that a
malformed input becomes a record (``records.Malformed``), never a traceback.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass


class ParseError(Exception):
    """``partial``: what decoded before the problem (a structure holding the complete parts),
    so that a damaged substructure keeps the rest, as tshark shows it."""

    def __init__(self, offset: int, field: str, reason: str, partial: object = None) -> None:
        super().__init__(f"{field} at offset {offset}: {reason}")
        self.offset = offset
        self.field = field
        self.reason = reason
        self.partial = partial

    def with_partial(self, partial: object) -> ParseError:
        self.partial = partial
        return self


@dataclass(slots=True)
class Cursor:
    """Reads big-endian fields from ``data``; ``base`` is the offset of ``data`` in the message."""

    data: bytes
    base: int = 0
    pos: int = 0

    @property
    def offset(self) -> int:
        return self.base + self.pos

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ParseError(self.offset, field, f"needs {n} bytes, {self.remaining} left")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def rest(self) -> bytes:
        return self.take(self.remaining, "data")

    def fields(self, table: tuple[tuple[str, str], ...], where: str) -> dict[str, int]:
        compiled, names = _compiled(table)
        if self.pos + compiled.size > len(self.data):
            self.take(compiled.size, f"{where}.{table[0][0]}")  # raises ParseError
        values = compiled.unpack_from(self.data, self.pos)
        self.pos += compiled.size
        return dict(zip(names, values))


#: id(table) -> (table, its struct.Struct, its field names): tables are module constants, so
#: the format is compiled once, not joined and parsed per header (the table is kept alive
#: here and checked by identity, so an id is never reused for another table).
_COMPILED: dict[int, tuple[tuple, struct.Struct, tuple[str, ...]]] = {}


def _compiled(table: tuple[tuple[str, str], ...]) -> tuple[struct.Struct, tuple[str, ...]]:
    got = _COMPILED.get(id(table))
    if got is None or got[0] is not table:
        got = _COMPILED[id(table)] = (table, struct.Struct(">" + "".join(code for _, code in table)),
                                      tuple(name for name, _ in table))
    return got[1], got[2]


def pack_fields(table: tuple[tuple[str, str], ...], values: dict[str, int]) -> bytes:
    compiled, names = _compiled(table)
    return compiled.pack(*(values[name] for name in names))

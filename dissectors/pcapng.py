"""pcapng at the block level: read a capture's blocks as they are, write them back with packet
comments (draft-ietf-opsawg-pcapng §4.2 ``opt_comment``, §4.3 EPB).

``iter_blocks(path)`` yields every block of a pcapng file unchanged (``Block.raw``), with the
frame number Wireshark gives the packet blocks (EPB, obsolete PB, SPB); a pcap file comes out
converted: one Section Header Block, one Interface Description Block (``if_tsresol`` 9 for a
nanosecond pcap) and one EPB per record, timestamps exact (integers, never floats).
``PcapngWriter`` writes blocks to a stream; ``write(block, comments)`` rebuilds a packet block
as an EPB carrying one ``opt_comment`` per comment, keeping its own options (flags, hash, the
comments it had) and its section's byte order. ``Annotator`` couples the two for a whole
file (``multisa lint --annotate``) or incrementally, frame by frame, holding back a bounded
window of frames so comments arriving a little late still land (a live source).

Frame numbering and damage follow ``dissectors.capture`` (whose constants, byte-order
structures and ``CaptureError`` this module reuses): every good block is yielded before the
one-line ``CaptureError`` naming the frame and offset of the damage.
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from .capture import (
    _NG, BT_EPB, BT_IDB, BT_PB, BT_SHB, BT_SPB, MAX_BLOCK, MAX_CAPLEN, PCAP_MAGIC, PCAPNG_BYTE_ORDER_MAGIC,
    PCAPNG_SHB, CaptureError, _open,
)

__all__ = ["Annotator", "Block", "PcapngWriter", "iter_blocks"]

OPT_COMMENT = 1  # opt_comment: UTF-8 text, valid in every block (§3.5)
OPT_EPB_DROPCOUNT = 4  # epb_dropcount: what an obsolete PB's drops_count becomes
OPT_IF_TSRESOL = 9
MAX_COMMENT = 0xFFFF  # an option value's length is 16 bits
PACKET_BLOCKS = frozenset({BT_EPB, BT_PB, BT_SPB})


@dataclass(slots=True)
class Block:
    """One pcapng block exactly as it is on disk (type, total length, body, total length)."""

    endian: str  # "<" or ">": the byte order of the block's section
    btype: int
    raw: bytes
    frame: int | None = None  # 1-based frame number of a packet block, else None
    snaplen: int = 0  # an SPB's interface snap length (its captured length depends on it)


def _pad(n: int) -> int:
    return -n % 4


def _option(endian: str, code: int, value: bytes) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + value + b"\0" * _pad(len(value))


def _block(endian: str, btype: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack(endian + "II", btype, total) + body + struct.pack(endian + "I", total)


def _epb(endian: str, ifid: int, ts: int, caplen: int, wirelen: int, data: bytes, options: bytes) -> bytes:
    """An Enhanced Packet Block (§4.3); ``options`` are encoded options without opt_endofopt."""
    body = struct.pack(endian + "IIIII", ifid, ts >> 32, ts & 0xFFFFFFFF, caplen, wirelen)
    body += data + b"\0" * _pad(len(data))
    if options:
        body += options + b"\0\0\0\0"  # opt_endofopt
    return _block(endian, BT_EPB, body)


def _options(endian: str, opts: bytes) -> bytes:
    """The encoded options of an option list, without opt_endofopt (a malformed list ends early)."""
    out, p = [], 0
    while p + 4 <= len(opts):
        code, length = struct.unpack_from(endian + "HH", opts, p)
        end = p + 4 + length + _pad(length)
        if code == 0 or p + 4 + length > len(opts):
            break
        out.append(opts[p:end])
        p = end
    return b"".join(out)


# --------------------------------------------------------------------------------------
# Reading


def iter_blocks(path: str) -> Iterator[Block]:
    """Every block of a pcapng file as it is, or a pcap file converted to pcapng blocks."""
    f, magic = _open(path)
    with f:
        if magic in PCAP_MAGIC:
            yield from _pcap_blocks(path, f, *PCAP_MAGIC[magic])
        elif magic == PCAPNG_SHB:
            yield from _pcapng_blocks(path, f, magic)
        else:
            raise CaptureError(path, "not a pcap or pcapng file")


def _pcap_blocks(path: str, f: BinaryIO, endian: str, units: int) -> Iterator[Block]:
    """pcap -> SHB, IDB, EPB per record (draft-ietf-opsawg-pcap §4-5)."""
    read = f.read
    frame, pos = 0, 4
    out = "<"
    try:
        hdr = read(20)
        if len(hdr) < 20:
            raise CaptureError(path, f"truncated pcap file header ({4 + len(hdr)} of 24 bytes)", 1, 0)
        _major, _minor, _r1, _r2, snaplen, linktype = struct.unpack(endian + "HHIIII", hdr)
        shb = struct.pack(out + "IHHq", 0x1A2B3C4D, 1, 0, -1)  # byte-order magic, v1.0, length unknown
        yield Block(out, BT_SHB, _block(out, BT_SHB, shb))
        idb = struct.pack(out + "HHI", linktype & 0x03FFFFFF, 0, snaplen)
        if units == 1_000_000_000:
            idb += _option(out, OPT_IF_TSRESOL, b"\x09") + b"\0\0\0\0"
        yield Block(out, BT_IDB, _block(out, BT_IDB, idb))
        pos = 24
        record = struct.Struct(endian + "IIII").unpack
        while True:
            rh = read(16)
            if len(rh) < 16:
                if not rh:
                    return
                raise CaptureError(path, f"truncated record header ({len(rh)} of 16 bytes)", frame + 1, pos)
            sec, frac, caplen, wirelen = record(rh)
            if caplen > MAX_CAPLEN:
                raise CaptureError(path, f"captured length {caplen} exceeds {MAX_CAPLEN} (corrupt record)",
                                   frame + 1, pos)
            data = read(caplen)
            if len(data) < caplen:
                raise CaptureError(path, f"truncated packet data ({len(data)} of {caplen} bytes)", frame + 1, pos)
            frame += 1
            yield Block(out, BT_EPB, _epb(out, 0, sec * units + frac, caplen, wirelen, data, b""), frame)
            pos += 16 + caplen
    except (OSError, EOFError, zlib.error) as e:
        raise CaptureError(path, f"read error: {e}", frame + 1, pos) from None


def _pcapng_blocks(path: str, f: BinaryIO, magic: bytes) -> Iterator[Block]:
    """pcapng blocks unchanged, validated as ``dissectors.capture`` validates them."""
    read = f.read
    frame = pos = 0
    ng, endian = _NG[b"\x4d\x3c\x2b\x1a"], "<"
    snaplens: list[int] = []  # per interface of the current section

    def fail(reason: str) -> CaptureError:
        return CaptureError(path, reason, frame + 1, pos)

    try:
        head = magic + read(4)
        while head:
            if len(head) < 8:
                raise fail(f"truncated block header ({len(head)} of 8 bytes)")
            if head[:4] == PCAPNG_SHB:
                bom = read(4)
                if bom not in _NG:
                    if len(bom) < 4:
                        raise fail(f"truncated section header ({8 + len(bom)} of 12 bytes)")
                    if pos == 0:
                        raise CaptureError(path, "not a pcap or pcapng file")
                    raise fail(f"bad byte-order magic {bom.hex()} in section header")
                ng, endian = _NG[bom], PCAPNG_BYTE_ORDER_MAGIC[bom]
                btype, blen = BT_SHB, ng.u32(head, 4)[0]
                if blen < 28 or blen % 4 or blen > MAX_BLOCK:
                    raise fail(f"bad section header length {blen}")
                body = bom + read(blen - 12)
            else:
                btype, blen = ng.block(head)
                if blen < 12 or blen % 4 or blen > MAX_BLOCK:
                    raise fail(f"bad block length {blen} (block type {btype:#x})")
                body = read(blen - 8)
            if len(body) < blen - 8:
                raise fail(f"truncated block ({8 + len(body)} of {blen} bytes)")
            if ng.u32(body, blen - 12)[0] != blen:
                raise fail(f"block length {blen} does not match its trailing copy")
            number, snaplen = None, 0
            if btype in (BT_EPB, BT_PB):
                if blen < 32:
                    raise fail(f"packet block too short ({blen} bytes)")
                ifid = ng.epb(body)[0] if btype == BT_EPB else ng.pb(body)[0]
                caplen = ng.epb(body)[3] if btype == BT_EPB else ng.pb(body)[4]
                if caplen > blen - 32:
                    raise fail(f"captured length {caplen} exceeds its block")
                if ifid >= len(snaplens):
                    raise fail(f"interface {ifid} not described by an IDB ({len(snaplens)} in this section)")
                frame += 1
                number = frame
            elif btype == BT_SPB:
                if blen < 16:
                    raise fail(f"simple packet block too short ({blen} bytes)")
                if not snaplens:
                    raise fail("simple packet block before any IDB")
                frame += 1
                number, snaplen = frame, snaplens[0]
            elif btype == BT_IDB:
                if blen < 20:
                    raise fail(f"interface description block too short ({blen} bytes)")
                snaplens.append(ng.idb(body)[2])
            elif btype == BT_SHB:
                snaplens = []
            yield Block(endian, btype, head + body, number, snaplen)
            pos += blen
            head = read(8)
    except (OSError, EOFError, zlib.error) as e:
        raise fail(f"read error: {e}") from None


# --------------------------------------------------------------------------------------
# Writing


def comment_option(endian: str, text: str) -> bytes:
    """One opt_comment; text past 65535 UTF-8 bytes is cut at a character boundary."""
    raw = text.encode("utf-8")
    if len(raw) > MAX_COMMENT:
        raw = raw[:MAX_COMMENT].decode("utf-8", "ignore").encode("utf-8")
    return _option(endian, OPT_COMMENT, raw)


def with_comments(block: Block, comments: Iterable[str]) -> bytes:
    """A packet block rebuilt as an EPB with ``comments`` added to its options."""
    e, raw = block.endian, block.raw
    added = b"".join(comment_option(e, c) for c in comments)
    body = raw[8:-4]
    if block.btype == BT_EPB:
        ifid, high, low, caplen, wirelen = struct.unpack_from(e + "IIIII", body)
        data = body[20 : 20 + caplen]
        kept = _options(e, body[20 + caplen + _pad(caplen) :])
    elif block.btype == BT_PB:  # obsolete Packet Block (Appendix A): same options, plus drops
        ifid, drops, high, low, caplen, wirelen = struct.unpack_from(e + "HHIIII", body)
        data = body[20 : 20 + caplen]
        kept = _options(e, body[20 + caplen + _pad(caplen) :])
        if drops != 0xFFFF:  # 0xFFFF: not known
            kept += _option(e, OPT_EPB_DROPCOUNT, struct.pack(e + "Q", drops))
    elif block.btype == BT_SPB:  # no timestamp, interface 0, captured length from the snap length
        ifid, high, low = 0, 0, 0
        wirelen = struct.unpack_from(e + "I", body)[0]
        caplen = min(wirelen, len(body) - 4, block.snaplen or MAX_BLOCK)
        data, kept = body[4 : 4 + caplen], b""
    else:
        raise ValueError(f"block type {block.btype:#x} is not a packet block")
    return _epb(e, ifid, (high << 32) | low, caplen, wirelen, data, kept + added)


class PcapngWriter:
    """Blocks to a binary stream, a packet block with comments rebuilt as an EPB."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.commented = 0  # frames written with at least one comment
        self.comments = 0

    def write(self, block: Block, comments: Iterable[str] = ()) -> None:
        comments = list(comments)
        if comments and block.btype in PACKET_BLOCKS:
            self.out.write(with_comments(block, comments))
            self.commented += 1
            self.comments += len(comments)
        else:
            self.out.write(block.raw)


@dataclass
class Annotator:
    """Copy a capture's blocks to a pcapng stream with comments on frames, incrementally.

    ``comment(frame, text)`` may come before or after ``feed`` gives the frame's block: blocks
    wait in a window of ``hold`` frames (``hold=None``: until ``close``), so a comment that
    names a frame still in the window lands on it; one naming a frame already written is
    counted in ``late``. For a file whose findings are all known, give every comment first
    and ``hold=0``: one streaming pass, nothing held.
    """

    writer: PcapngWriter
    hold: int | None = 0
    late: int = 0
    pending: dict[int, list[str]] = field(default_factory=dict)  # frame -> comments not yet written
    _window: deque[Block] = field(default_factory=deque)
    _written: int = 0  # highest frame number written
    _held: int = 0  # frames in the window

    def comment(self, frame: int, text: str) -> None:
        if frame <= self._written:
            self.late += 1
            return
        self.pending.setdefault(frame, []).append(text)

    def feed(self, block: Block) -> None:
        self._window.append(block)
        if block.frame is not None:
            self._held += 1
        while self._window and self.hold is not None and self._held > self.hold:
            self._flush_one()

    def _flush_one(self) -> int | None:
        block = self._window.popleft()
        comments = self.pending.pop(block.frame, ()) if block.frame is not None else ()
        self.writer.write(block, comments)
        if block.frame is not None:
            self._written = block.frame
            self._held -= 1
        return block.frame

    def close(self) -> None:
        """Write every held block; comments on frames never seen are dropped (``pending``)."""
        while self._window:
            self._flush_one()
        self.writer.out.flush()

"""Damaged capture files through the reader (``dissectors.capture``) and the command line.

Inputs start from the project's real captures (samples/) and from generated ones
(``pcapgen``: pcap µs/ns, both byte orders, pcapng with several interfaces, every link type),
then one field is damaged where it matters: a pcap record's caplen, a pcapng block's type,
total length or trailing copy, an EPB's interface id or captured length, an IDB's link type,
snap length or ``if_tsresol``, the file header (magic, version, link type), or the file is
cut at a random offset; byte mutations on top. Checks: only ``CaptureError`` escapes, one
line, naming the file and (past the header) "frame N, offset K" with K inside the file and N
at most one past the frames read; records read before the damage are the same as in the
undamaged file up to it (a cut at a record boundary ends cleanly); one input in 12 goes
through ``multisa lint|show|esp|groups`` for the exit-code and one-line contract.
"""

from __future__ import annotations

import glob
import os
import re
import struct
from random import Random

from dissectors.capture import CaptureError, CaptureStats, iter_datagrams, iter_frames

from . import pcapgen as g
from .common import FuzzProblem, Secrets, check_one_line_error
from .drive import Scratch, check_cli, mutate

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
_scratch: Scratch | None = None
_corpus: list[bytes] | None = None
_WHERE = re.compile(r": frame (\d+), offset (\d+): ")


def _dir() -> Scratch:
    global _scratch
    if _scratch is None:
        _scratch = Scratch("capture")
    return _scratch


def corpus() -> list[bytes]:
    global _corpus
    if _corpus is None:
        files = sorted(glob.glob(os.path.join(ROOT, "samples", "**", "*.pcap*"), recursive=True))
        _corpus = []
        for f in files[:8]:
            with open(f, "rb") as fh:
                data = fh.read()
            if len(data) < 400_000:
                _corpus.append(data)
    return _corpus


def _generated(rng: Random) -> bytes:
    from .targets_esp import _capture

    return _capture(rng)


def _pcap_offsets(data: bytes) -> tuple[str, list[int]] | None:
    """Byte order and record header offsets of a classic pcap."""
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        return None
    offs, p = [], 24
    while p + 16 <= len(data):
        offs.append(p)
        p += 16 + struct.unpack_from(e + "I", data, p + 8)[0]
    return e, offs


def _blocks(data: bytes) -> tuple[str, list[tuple[int, int, int]]] | None:
    """Byte order and (offset, type, length) of each pcapng block."""
    if data[:4] != b"\x0a\x0d\x0d\x0a" or len(data) < 12:
        return None
    e = "<" if data[8:12] == b"\x4d\x3c\x2b\x1a" else ">"
    out, p = [], 0
    while p + 8 <= len(data):
        btype, blen = struct.unpack_from(e + "II", data, p)
        if blen < 12 or blen % 4:
            break
        out.append((p, btype, blen))
        p += blen
    return e, out


def _damage(rng: Random, data: bytes) -> bytes:
    buf = bytearray(data)
    pc = _pcap_offsets(data)
    if pc is not None:
        e, offs = pc
        what = rng.randrange(5)
        if what == 0 and offs:  # a record's caplen
            o = rng.choice(offs)
            struct.pack_into(e + "I", buf, o + 8, rng.choice((0, 1, 15, 65535, 262144, 262145, 0xFFFFFFFF,
                                                             struct.unpack_from(e + "I", buf, o + 8)[0] + 1)))
        elif what == 1:  # link type (and the FCS bits)
            struct.pack_into(e + "I", buf, 20, rng.choice(g.LINKTYPES + (0x10000001, 0xFFFFFFFF, 147)))
        elif what == 2:  # snaplen / version
            struct.pack_into(e + "I", buf, 16, rng.choice((0, 1, 60, 0xFFFFFFFF)))
            struct.pack_into(e + "H", buf, 4, rng.choice((2, 1, 0, 0xFFFF)))
        elif what == 3 and offs:  # a record's timestamp fraction beyond a second
            o = rng.choice(offs)
            struct.pack_into(e + "I", buf, o + 4, rng.choice((999_999, 1_000_000, 0xFFFFFFFF)))
        else:
            buf[: rng.randrange(1, 5)] = rng.randbytes(4)[: rng.randrange(1, 5)]
        return bytes(buf)
    ng = _blocks(data)
    if ng is not None and ng[1]:
        e, blocks = ng
        off, btype, blen = rng.choice(blocks)
        what = rng.randrange(8)
        if what == 0:  # block type
            struct.pack_into(e + "I", buf, off, rng.choice((0, 1, 2, 3, 5, 6, 0x0A0D0D0A, 0x80000001, 0xFFFFFFFF)))
        elif what == 1:  # total length
            struct.pack_into(e + "I", buf, off + 4, rng.choice((0, 4, 8, 12, 16, 28, 31, blen - 4, blen + 4,
                                                               16 * 1024 * 1024 + 4, 0xFFFFFFFC)))
        elif what == 2:  # trailing copy
            struct.pack_into(e + "I", buf, off + blen - 4, rng.choice((0, blen + 4, blen - 4)))
        elif what == 3 and btype == 6 and blen >= 28:  # EPB interface id / captured length
            field = rng.choice((8, 20))
            struct.pack_into(e + "I", buf, off + field, rng.choice((0, 1, 2, 7, blen - 31, blen - 32, 0xFFFFFFFF)))
        elif what == 4 and btype == 1 and blen >= 20:  # IDB link type / snap length
            struct.pack_into(e + "H", buf, off + 8, rng.choice(g.LINKTYPES + (0xFFFF,)))
            struct.pack_into(e + "I", buf, off + 12, rng.choice((0, 1, 14, 0xFFFFFFFF)))
        elif what == 5 and btype == 1 and blen >= 24:  # IDB options: if_tsresol, a broken option length
            struct.pack_into(e + "HH", buf, off + 16, rng.choice((9, 14, 0, 2)), rng.choice((1, 8, 0, 0xFFFF)))
            if off + 20 < len(buf):
                buf[off + 20] = rng.randrange(256)
        elif what == 6 and btype == 0x0A0D0D0A:  # section header: byte-order magic, version
            struct.pack_into(e + "H", buf, off + 12, rng.choice((0, 2, 0xFFFF)))
            if rng.random() < 0.5:
                buf[off + 8:off + 12] = rng.randbytes(4)
        else:  # a new section in the middle, other byte order
            at = rng.choice(blocks)[0]
            buf[at:at] = g.shb(rng.choice("<>")) + g.idb(1, rng.choice("<>"))
        return bytes(buf)
    return mutate(rng, data)


def _read_all(path: str) -> tuple[list, str | None, CaptureStats]:
    stats = CaptureStats()
    out, error = [], None
    try:
        for d in iter_datagrams(path, stats):
            out.append((d.frame.index, d.src, d.dst, d.proto, d.sport, d.dport, d.payload))
    except CaptureError as err:
        error = str(err)
    return out, error, stats


def fuzz_capture_files(rng: Random) -> None:
    base = rng.choice(corpus()) if rng.random() < 0.4 else _generated(rng)
    r = rng.random()
    if r < 0.2:  # cut anywhere
        data = base[: rng.randrange(len(base) + 1)]
    elif r < 0.85:
        data = _damage(rng, base)
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data) + 1)]
    else:
        data = mutate(rng, base, 6)
    path = _dir().write("c.pcapng" if data[:4] == b"\x0a\x0d\x0d\x0a" else "c.pcap", data)
    got, error, stats = _read_all(path)
    if error is not None:
        check_one_line_error(error, "capture error")
        if not error.startswith(path + ": "):
            raise FuzzProblem("contract", f"error does not name the file: {error[:200]!r}", data)
        m = _WHERE.search(error)
        if m is None:
            if not any(s in error for s in ("not a pcap or pcapng file", "read error")):
                raise FuzzProblem("contract", f"error names no frame/offset: {error[:200]!r}", data)
        else:
            frame, offset = int(m.group(1)), int(m.group(2))
            if offset > len(data):
                raise FuzzProblem("contract", f"offset {offset} beyond the {len(data)}-byte file: {error!r}", data)
            if frame != stats.frames + 1:
                raise FuzzProblem("contract", f"frame {frame} but {stats.frames} frames read: {error!r}", data)
    if r < 0.2 and len(data) < len(base):  # a cut: what was read agrees with the whole file
        whole_path = _dir().write("whole" + os.path.splitext(path)[1], base)
        whole, _, _ = _read_all(whole_path)
        if got != whole[: len(got)]:
            raise FuzzProblem("contract", "a cut file decoded differently before the cut", data)
    # frames without a decoder are counted, never a crash
    list(iter_frames(path, CaptureStats())) if error is None else None
    if rng.random() < 1 / 12:
        cmd = rng.choice((["lint"], ["show"], ["esp"], ["groups"], ["lint", "--format", "json"], ["show", "--json"],
                          ["esp", "--json"], ["esp", "--engine", "python"]))
        check_cli([cmd[0], path] + cmd[1:], Secrets.of([]), (path,), f"multisa {' '.join(cmd)}")

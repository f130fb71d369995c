"""ESP streams through both engines (``dissectors/_espscan.c`` and the Python path of
``analyzer/esp_scan.py``), compared field by field.

Each input is a capture (pcap µs/ns, either byte order, or pcapng with random
``if_tsresol``/``if_tsoffset``, several interfaces) of a few ESP SAs (IPv4/IPv6, raw ESP and
ESP-in-UDP on 4500, NAT-keepalives, IKE behind the Non-ESP Marker) whose sequence numbers
replay, skip, reorder and wrap, on a random link type, with random timestamps; one input in
four is damaged at the byte level. Both engines must give the same datagrams handed on, the
same per-SA counters (timestamps exactly, not rounded), the same counters and the same
error; every value must be JSON without NaN/Infinity; an error is one line naming the file,
frame and offset.
"""

from __future__ import annotations

import json
import os
import struct
from random import Random

from analyzer import esp_scan
from analyzer.esp_scan import EspScan
from dissectors.capture import CaptureError

from . import pcapgen as g
from .common import FuzzProblem, check_one_line_error
from .drive import Scratch, mutate

_scratch: Scratch | None = None


def _path(name: str) -> str:
    global _scratch
    if _scratch is None:
        _scratch = Scratch("esp")
    return _scratch.path(name)


def _seqs(rng: Random, n: int) -> list[int]:
    start = rng.choice((1, 1, 1, 0, 2, rng.getrandbits(32), 0xFFFFFFF0))
    out = []
    s = start
    for _ in range(n):
        out.append(s & 0xFFFFFFFF)
        r = rng.random()
        if r < 0.7:
            s += 1
        elif r < 0.78:
            pass  # replay
        elif r < 0.88:
            s += rng.randint(2, 200)  # gap
        else:
            s -= rng.randint(1, 150)  # late / reorder
    return out


def _packets(rng: Random) -> list[bytes]:
    """IP packets of a few ESP SAs interleaved, with some other traffic."""
    v6 = rng.random() < 0.3
    hosts = g.V6 if v6 else g.V4
    sas = []
    for _ in range(rng.randint(1, 4)):
        a, b = rng.sample(hosts, 2)
        sas.append((a, b, rng.getrandbits(32) if rng.random() < 0.9 else rng.choice((0, 1, 0xFFFFFFFF)),
                    rng.random() < 0.3, _seqs(rng, rng.randint(1, 40))))
    streams = [[(a, b, spi, encap, s) for s in seqs] for a, b, spi, encap, seqs in sas]
    out = []
    ident = rng.randrange(65536)
    while any(streams):
        live = [s for s in streams if s]
        a, b, spi, encap, seq = rng.choice(live).pop(0)
        body = struct.pack(">II", spi, seq) + rng.randbytes(rng.choice((0, 8, 16, 24, 40)))
        if rng.random() < 0.03:
            body = body[: rng.randrange(8)]  # too short for SPI + Sequence Number
        if encap:
            pkt = g.ip(a, b, 17, g.udp(4500, 4500, body), ident)
        else:
            pkt = g.ip(a, b, 50, body, ident)
        ident += 1
        out.append(pkt)
        r = rng.random()
        if r < 0.05:
            out.append(g.ip(a, b, 17, g.udp(4500, 4500, b"\xff"), ident))  # NAT-keepalive
        elif r < 0.1:
            out.append(g.ip(a, b, 17, g.udp(4500, 4500, b"\0\0\0\0" + rng.randbytes(28)), ident))  # IKE
        elif r < 0.13:
            out.append(g.ip(a, b, 17, g.udp(500, 500, rng.randbytes(28)), ident))
        elif r < 0.15:
            out.append(g.ip(a, b, 6, rng.randbytes(20), ident))  # not for us
    return out


def _ticks(rng: Random, n: int, units: int) -> list[int]:
    kind = rng.randrange(4)
    if kind == 0:  # ordinary: 2023-2025 in these units
        base = rng.randrange(1_600_000_000, 1_800_000_000) * units + rng.randrange(units)
    elif kind == 1:
        base = rng.getrandbits(64)
    elif kind == 2:
        base = rng.getrandbits(rng.randint(1, 63))
    else:
        base = 0
    out, t = [], base
    for _ in range(n):
        out.append(t & 0xFFFFFFFFFFFFFFFF)
        t += rng.choice((0, 1, rng.randrange(max(1, units // 1000) + 1), rng.randrange(units + 1)))
    return out


def _capture(rng: Random) -> bytes:
    packets = _packets(rng)
    linktype = rng.choice(g.LINKTYPES)
    frames = [g.link(linktype, p, rng) for p in packets]
    if rng.random() < 0.4:  # classic pcap
        nano = rng.random() < 0.5
        units = 1_000_000_000 if nano else 1_000_000
        ts = [t / units for t in _ticks(rng, len(frames), units)] if rng.random() < 0.5 else \
            [rng.randrange(1_600_000_000, 1_800_000_000) + rng.random() for _ in frames]
        return g.pcap(list(zip(ts, frames)), linktype, nano, rng.random() < 0.3)
    e = rng.choice("<>")
    r = rng.random()
    if r < 0.3:
        tsresol = None
    elif r < 0.6:
        tsresol = rng.choice((0, 3, 6, 9, 12, 19, 0x80 | 10, 0x80 | 20, 0x80 | 63))
    elif r < 0.9:
        tsresol = rng.randrange(20) if rng.random() < 0.5 else 0x80 | rng.randrange(64)
    else:
        tsresol = rng.randrange(256)  # also beyond what 64-bit units can count
    base = (2 ** (tsresol & 0x7F) if tsresol & 0x80 else 10 ** tsresol) if tsresol is not None else 10 ** 6
    tsoffset = rng.choice((None, None, 0, rng.randrange(-(2 ** 40), 2 ** 40)))
    out = [g.shb(e), g.idb(linktype, e, tsresol, tsoffset, snaplen=rng.choice((0, 0, 65535, 60, 100)))]
    n_if = 1
    if rng.random() < 0.2:
        out.append(g.idb(rng.choice(g.LINKTYPES), e, rng.choice((None, 9, 6)), None))
        n_if = 2
    units = base if base < 2 ** 64 else 10 ** 6
    for t, f in zip(_ticks(rng, len(frames), units), frames):
        if rng.random() < 0.03:
            out.append(g.spb(f, e))
        else:
            out.append(g.epb(t, f, e, ifid=0 if rng.random() < 0.9 else rng.randrange(n_if + 1)))
    return b"".join(out)


def run_engine(path: str, engine: str, window: int, esn: tuple[int, ...]) -> dict:
    scan = EspScan(path, window, engine)
    for spi in esn:
        scan.set_esn(spi)
    rest, error = [], None
    try:
        for d in scan.datagrams():
            rest.append((d.frame.index, d.frame.ts, d.src, d.dst, d.proto, d.sport, d.dport, d.payload, d.truncated))
    except CaptureError as err:
        error = str(err)
    st = scan.stats
    return {"rest": rest, "sas": [t.counters() for t in scan.trackers()], "error": error,
            "esp": (scan.esp.esp, scan.esp.esp_in_udp, scan.esp.keepalives, scan.esp.esp_truncated),
            "stats": (st.frames, st.datagrams, st.not_ip, st.other_proto, st.malformed, st.ip_fragments,
                      st.reassembled, st.truncated, st.skipped_linktype, sorted(st.unknown_linktypes))}


def _first_difference(a: dict, b: dict) -> str:
    for k in a:
        if a[k] != b[k]:
            if isinstance(a[k], list) and isinstance(b[k], list):
                if len(a[k]) != len(b[k]):
                    return f"{k}: {len(a[k])} vs {len(b[k])} entries"
                for i, (x, y) in enumerate(zip(a[k], b[k])):
                    if x != y:
                        if isinstance(x, dict):
                            diff = {f: (x[f], y.get(f)) for f in x if x[f] != y.get(f)}
                            return f"{k}[{i}]: {diff}"[:300]
                        return f"{k}[{i}]: {x!r:.120} vs {y!r:.120}"
            return f"{k}: {a[k]!r:.140} vs {b[k]!r:.140}"
    return "?"


def fuzz_esp_engines(rng: Random) -> None:
    if esp_scan._c is None:
        raise FuzzProblem("crash", "the C engine (dissectors._espscan) is not built: nothing to compare")
    data = _capture(rng)
    if rng.random() < 0.25:
        data = mutate(rng, data, 3)
    path = _path("esp.pcapng")
    with open(path, "wb") as f:
        f.write(data)
    window = rng.choice((64, 64, 32, 1, 128, 1024))
    esn = ()
    c = run_engine(path, "c", window, esn)
    if c["sas"] and rng.random() < 0.2:
        esn = (c["sas"][0]["spi"],)
        c = run_engine(path, "c", window, esn)
    py = run_engine(path, "python", window, esn)
    if c != py:
        raise FuzzProblem("disagree", f"C vs Python: {_first_difference(c, py)}", data)
    try:
        json.dumps(c["sas"], allow_nan=False)
        json.dumps([r[1] for r in c["rest"]], allow_nan=False)
    except ValueError as err:
        raise FuzzProblem("contract", f"a value JSON cannot hold: {err}", data) from None
    if c["error"] is not None:
        check_one_line_error(c["error"], "capture error")
        if not c["error"].startswith(path + ":"):
            raise FuzzProblem("contract", f"error does not name the file: {c['error'][:200]!r}", data)
        if "not a pcap or pcapng file" not in c["error"] and ": frame " not in c["error"]:
            raise FuzzProblem("contract", f"error names no frame/offset: {c['error'][:200]!r}", data)
    os.unlink(path)

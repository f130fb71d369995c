"""ESP sequence analysis: multisa against tshark on a generated capture, speed and memory.

Generates its own captures: ``--packets`` ESP packets (default 2,000,000) on 16 SPIs with
injected replays, gaps and reorders, once as plain ESP (IP protocol 50) and once as
ESP-in-UDP (RFC 3948, port 4500). Runs, each in a child process:

- ``tshark -o esp.do_esp_sequence_analysis:TRUE -q -z expert -r FILE`` (one core);
- ``multisa lint FILE`` (the full lint: IKE and ESP rules, groups, in one streaming pass),
  on one core, and ``multisa lint --jobs 2 ESP.pcap ESP-IN-UDP.pcap`` on two cores;
- ``multisa esp FILE --json``, whose per-SPI replays/gaps must equal tshark's expert items,

and prints packets/s, the ratios to tshark and each tool's peak RSS (``os.wait4`` of the
child), plus multisa's peak RSS on a 10x smaller capture (memory must stay flat).

    python benchmarks/esp_bench.py [--packets 2000000] [--small 200000] [--keep DIR]

The generator is also used by the tests (``generate`` / ``Injected``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

ETH_IPV4 = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
SRC, DST = bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])


@dataclass
class Injected:
    """What the generator injected, per SPI (what both tools must find)."""

    packets: int = 0
    replays: dict[int, int] = field(default_factory=dict)  # immediate duplicates
    gaps: dict[int, int] = field(default_factory=dict)  # sequence numbers skipped
    reorders: dict[int, int] = field(default_factory=dict)  # adjacent swaps
    spis: list[int] = field(default_factory=list)


def _ipv4_header(proto: int, payload_len: int) -> bytes:
    total = 20 + payload_len
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, proto, 0, SRC, DST)
    s = sum(struct.unpack(">10H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return hdr[:10] + struct.pack(">H", ~s & 0xFFFF) + hdr[12:]


def generate(path: str | os.PathLike[str], packets: int, *, spis: int = 16, udp: bool = False,
             replay_every: int = 10007, gap_every: int = 15013, reorder_every: int = 20011,
             body_len: int = 64, seed: int = 9611) -> Injected:
    """Write a classic pcap (Ethernet, IPv4) with ``packets`` ESP packets on ``spis`` SPIs.

    Each SPI counts from 1. Every ``replay_every``-th packet is followed by a copy of itself
    (a replay tshark calls "repeated"); every ``gap_every``-th packet skips 1-3 numbers; every
    ``reorder_every``-th packet is swapped with its SPI's next one (inside the window).
    """
    rng = random.Random(seed)
    inj = Injected(spis=[0xC0000000 | (rng.getrandbits(24) << 4) | i for i in range(spis)])
    body = bytes(rng.getrandbits(8) for _ in range(body_len))
    esp_len = 8 + body_len
    if udp:
        l4 = 8 + esp_len
        prefix = ETH_IPV4 + _ipv4_header(17, l4) + struct.pack(">HHHH", 4500, 4500, l4, 0)
    else:
        prefix = ETH_IPV4 + _ipv4_header(50, esp_len)
    frame_len = len(prefix) + esp_len
    rec = struct.Struct("<IIII")
    esp_hdr = struct.Struct(">II")
    seqs = [0] * spis
    held: list[tuple[int, int] | None] = [None] * spis  # a packet held back for a swap
    t0 = 1_700_000_000
    written = 0
    chunk: list[bytes] = []
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))

        def emit(spi: int, seq: int) -> None:
            nonlocal written
            usec = written  # one microsecond apart
            chunk.append(rec.pack(t0 + usec // 1_000_000, usec % 1_000_000, frame_len, frame_len))
            chunk.append(prefix)
            chunk.append(esp_hdr.pack(spi, seq))
            chunk.append(body)
            written += 1

        n = 0
        while written < packets:
            i = n % spis
            spi = inj.spis[i]
            n += 1
            seqs[i] += 1
            if n % gap_every == 0:
                skip = 1 + n % 3
                seqs[i] += skip
                inj.gaps[spi] = inj.gaps.get(spi, 0) + skip
            seq = seqs[i]
            if held[i] is not None:
                emit(spi, seq)
                emit(*held[i])  # the earlier number after the later one
                held[i] = None
                continue
            if n % reorder_every == 0:
                held[i] = (spi, seq)
                inj.reorders[spi] = inj.reorders.get(spi, 0) + 1
                continue
            emit(spi, seq)
            if n % replay_every == 0:
                emit(spi, seq)
                inj.replays[spi] = inj.replays.get(spi, 0) + 1
            if len(chunk) > 40_000:
                out.write(b"".join(chunk))
                chunk.clear()
        for i, h in enumerate(held):
            if h is not None:
                emit(*h)
        out.write(b"".join(chunk))
    inj.packets = written
    return inj


# --------------------------------------------------------------------------------------
# tshark


def tshark_expert(path: str | os.PathLike[str]) -> dict[str, dict[int, int]]:
    """tshark's ESP sequence-analysis expert items, per SPI: repeated / missing / less-than."""
    out = subprocess.run(["tshark", "-o", "esp.do_esp_sequence_analysis:TRUE", "-r", str(path), "-q", "-z",
                          "expert,warn", "-Y", "esp"], capture_output=True, text=True, check=False).stdout
    return parse_tshark_expert(out)


def parse_tshark_expert(text: str) -> dict[str, dict[int, int]]:
    """Per SPI: ``repeated`` (events), ``missing`` (numbers: frequency x N), ``less`` (events)
    and ``less_by`` (frequency x N) from ``-z expert`` output (packet-ipsec.c wording)."""
    import re

    res: dict[str, dict[int, int]] = {"repeated": {}, "missing": {}, "less": {}, "less_by": {}}
    pat = re.compile(r"^\s*(\d+)\s+\S+\s+ESP\s+Wrong Sequence Number for SPI ([0-9a-f]{8}) - (\d+) "
                     r"(repeated|missing|less than expected)", re.M)
    for m in pat.finditer(text):
        count, spi, n, kind = int(m.group(1)), int(m.group(2), 16), int(m.group(3)), m.group(4)

        def add(key: str, amount: int) -> None:
            res[key][spi] = res[key].get(spi, 0) + amount

        if kind == "repeated":  # N is the repeated number itself
            add("repeated", count)
        elif kind == "missing":
            add("missing", count * n)
        else:
            add("less", count)
            add("less_by", count * n)
    return res


# --------------------------------------------------------------------------------------
# Running both tools as measured children

MULTISA = [sys.executable, "-m", "analyzer.cli"]


@dataclass
class Run:
    seconds: float
    rss_mib: float
    stdout: str


def measure(argv: list[str], cpus: set[int] | None = None) -> Run:
    """Wall time and peak RSS of one child (os.wait4's rusage: that child alone)."""
    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, preexec_fn=pin, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed with status {proc.returncode}")
    return Run(elapsed, usage.ru_maxrss / 1024, out)


def tshark_run(path: Path, cpus: set[int] | None) -> Run:
    return measure(["tshark", "-o", "esp.do_esp_sequence_analysis:TRUE", "-q", "-z", "expert", "-r", str(path)], cpus)


def multisa_lint(paths: list[Path], jobs: int, cpus: set[int] | None) -> Run:
    return measure([*MULTISA, "lint", *map(str, paths), "--isolated", "--exit-zero", "-f", "json",
                    "--jobs", str(jobs)], cpus)


def multisa_esp(path: Path, cpus: set[int] | None) -> Run:
    return measure([*MULTISA, "esp", str(path), "--json"], cpus)


def _warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=2_000_000)
    parser.add_argument("--small", type=int, default=200_000, help="the smaller capture for the RSS check")
    parser.add_argument("--keep", metavar="DIR", help="write the captures here and keep them")
    args = parser.parse_args()
    if shutil.which("tshark") is None:
        print("tshark is not installed (apt-get install tshark)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    from analyzer.esp_scan import c_engine_available

    tmp = None
    if args.keep:
        folder = Path(args.keep)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name)
    try:
        esp_path, udp_path, small_path = folder / "esp.pcap", folder / "esp-in-udp.pcap", folder / "small.pcap"
        t = time.perf_counter()
        inj = generate(esp_path, args.packets)
        generate(udp_path, args.packets, udp=True)
        generate(small_path, args.small)
        print(f"generated 2 x {args.packets:,} ESP packets on {len(inj.spis)} SPIs "
              f"({sum(inj.replays.values())} replays, {sum(inj.gaps.values())} missing numbers, "
              f"{sum(inj.reorders.values())} reorders each) in {time.perf_counter() - t:.1f} s; "
              f"C engine {'built' if c_engine_available() else 'NOT built: pure Python'}")
        one, two = {min(os.sched_getaffinity(0))}, set(sorted(os.sched_getaffinity(0))[:2])
        for p in (esp_path, udp_path, small_path):
            _warm(p)
        rows = []
        agree = True
        for label, path in (("ESP (proto 50)", esp_path), ("ESP-in-UDP 4500", udp_path)):
            ts = tshark_run(path, one)
            lint = multisa_lint([path], 1, one)
            esp = multisa_esp(path, one)
            doc = json.loads(esp.stdout)
            by_spi = {int(sa["spi"], 16): sa for sa in doc["sas"]}
            expert = parse_tshark_expert(ts.stdout)
            for spi in inj.spis:
                sa = by_spi[spi]
                same = (sa["replays"] == expert["repeated"].get(spi, 0) == inj.replays.get(spi, 0)
                        and sa["gaps"] == expert["missing"].get(spi, 0) - expert["less_by"].get(spi, 0)
                        and sa["late"] == expert["less"].get(spi, 0))
                agree &= same
            findings = json.loads(lint.stdout)["summary"]["by_code"]
            rows.append((label, args.packets, ts, lint, esp, findings))
        print()
        print(f"{'capture':18} {'tshark pkt/s':>13} {'RSS MiB':>8} {'lint pkt/s':>12} {'RSS MiB':>8} {'ratio':>6}"
              f" {'esp pkt/s':>12} {'ratio':>6}  lint findings")
        for label, n, ts, lint, esp, findings in rows:
            print(f"{label:18} {n / ts.seconds:13,.0f} {ts.rss_mib:8.0f} {n / lint.seconds:12,.0f} {lint.rss_mib:8.0f} "
                  f"{ts.seconds / lint.seconds:5.1f}x {n / esp.seconds:12,.0f} {ts.seconds / esp.seconds:5.1f}x  "
                  f"{findings}")
        ts_total = sum(r[2].seconds for r in rows)
        ms_one = sum(r[3].seconds for r in rows)
        both = multisa_lint([esp_path, udp_path], 2, two)
        total = 2 * args.packets
        one_ratio, two_ratio = ts_total / ms_one, ts_total / both.seconds
        print()
        print(f"full `multisa lint` (IKE + groups + ESP rules), both captures, {total:,} packets:")
        print(f"  tshark, one core                  {total / ts_total:12,.0f} pkt/s")
        print(f"  multisa lint, one core            {total / ms_one:12,.0f} pkt/s   ratio {one_ratio:5.1f}x  (bar 4x)")
        print(f"  multisa lint --jobs 2 (2 cores)   {total / both.seconds:12,.0f} pkt/s   ratio {two_ratio:5.1f}x  "
              f"(bar 7x)")
        small = multisa_lint([small_path], 1, one)
        big = max(rows[0][3].rss_mib, rows[1][3].rss_mib)
        print(f"  peak RSS: tshark {max(r[2].rss_mib for r in rows):.0f} MiB; multisa lint {args.small:,} packets "
              f"{small.rss_mib:.0f} MiB, {args.packets:,} packets {big:.0f} MiB, --jobs 2 {both.rss_mib:.0f} MiB "
              f"(bar 64 MiB, flat)")
        print(f"  replays/gaps of `multisa esp` agree with tshark's expert items on every SPI: {'yes' if agree else 'NO'}")
        ok = agree and one_ratio >= 4 and two_ratio >= 7 and max(big, small.rss_mib, both.rss_mib) <= 64
        print(f"  bar met: {'yes' if ok else 'NO'}")
        return 0 if ok else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())

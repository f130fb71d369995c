"""ESP sequence analysis: EspSeqTracker semantics, C engine == Python engine, tshark agreement, bad input."""

from __future__ import annotations

import importlib.util
import random
import shutil
import struct
import subprocess
import sys
import sysconfig

import pytest
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.inet6 import IPv6, IPv6ExtHdrDestOpt
from scapy.layers.l2 import CookedLinux, Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import PcapNgWriter, PcapWriter

from analyzer import esp_scan
from analyzer.esp_scan import EspScan
from analyzer.esp_seq import EspSeqTracker
from dissectors.capture import CaptureError
from tests.conftest import ROOT, SHARED, needs_shared, needs_tshark

A4, B4, A6, B6 = "192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
T0 = 1_700_000_000


def esp(spi: int, seq: int, body: int = 24) -> bytes:
    return struct.pack(">II", spi, seq) + bytes(body)


def _bench():
    spec = importlib.util.spec_from_file_location("esp_bench", ROOT / "benchmarks" / "esp_bench.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["esp_bench"] = mod
    spec.loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------------------
# The C engine: built by pip install; else compiled here with gcc (skipped without it)


@pytest.fixture(scope="session")
def c_engine(tmp_path_factory):
    if esp_scan._c is not None:
        return esp_scan._c
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler and dissectors._espscan is not built (pip install -e .)")
    out = tmp_path_factory.mktemp("espscan") / ("_espscan" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run([gcc, "-O2", "-shared", "-fPIC", "-I" + sysconfig.get_paths()["include"],
                    str(ROOT / "dissectors" / "_espscan.c"), "-o", str(out)], check=True)
    spec = importlib.util.spec_from_file_location("dissectors._espscan", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    esp_scan._c = mod
    return mod


def run(path, engine: str, window: int = 64, esn: tuple[int, ...] = ()):
    scan = EspScan(path, window, engine)
    for spi in esn:
        scan.set_esn(spi)
    rest, error = [], None
    try:
        for d in scan.datagrams():
            rest.append((d.frame.index, d.proto, d.sport, d.dport, d.payload))
    except CaptureError as err:
        error = str(err)
    sas = [t.counters() for t in scan.trackers()]
    for s in sas:
        s["first_ts"], s["last_ts"] = round(s["first_ts"], 5), round(s["last_ts"], 5)
    stats = scan.stats
    return {"rest": rest, "sas": sas, "error": error, "esp": scan.esp,
            "stats": (stats.frames, stats.datagrams, stats.not_ip, stats.other_proto, stats.malformed,
                      stats.ip_fragments, stats.reassembled, stats.truncated, stats.skipped_linktype)}


def same(path, **kw):
    py, c = run(path, "python", **kw), run(path, "c", **kw)
    assert c == py
    return py


# --------------------------------------------------------------------------------------
# EspSeqTracker


def track(seqs, window=64, esn=False) -> EspSeqTracker:
    t = EspSeqTracker("192.0.2.2", 0xC1F7E800, window, esn)
    for i, s in enumerate(seqs, 1):
        t.observe(s, 100, T0 + i, i)
    return t


def test_in_order():
    t = track(range(1, 101))
    assert (t.packets, t.bytes, t.first_seq, t.last_seq, t.replays, t.gaps, t.late, t.reorders) == \
        (100, 10_000, 1, 100, 0, 0, 0, 0)


def test_replay_gap_late_beyond_window():
    t = track([1, 2, 2, 3, 7, 5, 4, 8, 9, 200, 100, 199, 199])
    assert t.replays == 2 and t.first_replay_frame == 3
    # 4, 5 arrive late inside the window (fill 2 of the 3 missing after 3), 6 stays lost;
    # 10..199 missing (190) minus 199 arriving late inside the window
    assert t.gaps == 1 + 189
    assert t.late == 3
    assert t.reorders == 1 and t.first_reorder_frame == 11  # 100 is 100 below 200 > window 64


def test_window_size_matters():
    seqs = [1, 2, 3, 40, 20]
    assert track(seqs, window=64).late == 1
    assert track(seqs, window=16).reorders == 1


def test_first_seq_not_one_counts_no_gap_before_it():
    t = track([17, 18, 16, 19])
    assert (t.first_seq, t.gaps, t.late, t.lowest) == (17, 0, 1, 16)


def test_lowest_follows_a_late_first_packet_in_both_engines(tmp_path, c_engine):
    """Two CPUs sending on one SA: packet 2 reaches the capture before packet 1 (seen in the
    reference peer's demo). The SA still started at 1: ``lowest_seq``, which MS405 judges."""
    path = tmp_path / "late-first.pcap"
    with PcapWriter(str(path), linktype=1) as w:
        for s in (2, 1, 3, 4):
            w.write(Ether(**MAC) / IP(src=A4, dst=B4, proto=50) / Raw(esp(0x416A1F1E, s)))
    (sa,) = same(path)["sas"]
    assert (sa["first_seq"], sa["lowest_seq"], sa["late"], sa["gaps"]) == (2, 1, 1, 0)


def test_wrap_without_esn():
    t = track([0xFFFFFFFE, 0xFFFFFFFF, 1, 2])
    assert t.wraps == 1 and t.first_wrap_frame == 3
    assert t.gaps == 1  # number 0 (2^32) never appears
    assert t.highest_seq == (1 << 32) + 2


def test_esn_high_bits_inferred():
    t = track([0xFFFFFFF0 + i for i in range(16)] + [0, 1, 2, 0xFFFFFFFE], esn=True)
    assert t.wraps == 0 and t.highest_seq == (1 << 32) + 2
    assert t.replays == 1  # 0xFFFFFFFE again: still inside the window, below the new epoch
    assert t.gaps == 0


def test_large_window_ring():
    t = track(list(range(1, 5000)) + [10, 4000], window=4096)
    assert t.reorders == 1 and t.replays == 1


# --------------------------------------------------------------------------------------
# C and Python engines: identical results


def test_engines_agree_on_generated_capture(tmp_path, c_engine):
    bench = _bench()
    path = tmp_path / "gen.pcap"
    bench.generate(path, 20_000, spis=16, replay_every=101, gap_every=157, reorder_every=211)
    res = same(path)
    assert len(res["sas"]) == 16 and sum(s["packets"] for s in res["sas"]) == 20_000
    res_udp = same(_gen_udp(tmp_path, bench))
    assert all(s["encap"] for s in res_udp["sas"])


def _gen_udp(tmp_path, bench):
    path = tmp_path / "gen-udp.pcap"
    bench.generate(path, 5_000, spis=4, udp=True, replay_every=53, gap_every=71, reorder_every=97)
    return path


def _mixed_packets():
    """Every kind of frame the scanner must settle or hand back, with varied sequences."""
    rng = random.Random(4303)
    pkts = []
    seqs = {0x1000 + i: 0 for i in range(6)}
    for n in range(3000):
        spi = 0x1000 + rng.randrange(6)
        r = rng.random()
        if r < 0.02:
            seq = seqs[spi]  # replay
        elif r < 0.04:
            seq = max(1, seqs[spi] - rng.randrange(1, 200))  # late or beyond the window
        else:
            seqs[spi] += 1 + (rng.random() < 0.03) * rng.randrange(1, 5)
            seq = seqs[spi]
        kind = n % 7
        if kind == 0:
            p = Ether(**MAC) / IP(src=A4, dst=B4, proto=50) / Raw(esp(spi, seq))
        elif kind == 1:
            p = Ether(**MAC) / Dot1Q(vlan=7) / IP(src=B4, dst=A4) / UDP(sport=4500, dport=4500) / Raw(esp(spi, seq))
        elif kind == 2:
            p = Ether(**MAC) / IPv6(src=A6, dst=B6, nh=50) / Raw(esp(spi, seq))
        elif kind == 3:
            p = Ether(**MAC) / IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt(nh=50) / Raw(esp(spi, seq))
        elif kind == 4:
            p = Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=4500, dport=4500) / Raw(b"\xff")  # keepalive
        elif kind == 5:
            p = Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=500, dport=500) / Raw(bytes(28))  # IKE-ish
        else:
            p = Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=53, dport=53) / Raw(b"dns")
        pkts.append(p)
    # odd ones: a truncated ESP header, ESP in IPv4 fragments, a non-IP frame, the marker
    pkts.append(Ether(**MAC) / IP(src=A4, dst=B4, proto=50) / Raw(b"\x00\x00\x10\x00\x00"))
    pkts.extend(Ether(**MAC) / f for f in fragment(IP(src=A4, dst=B4, proto=50, id=9) / Raw(esp(0x1000, 10_000, 1400)), 600))
    pkts.append(Ether(**MAC, type=0x0806) / Raw(bytes(28)))
    pkts.append(Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=4500, dport=4500) / Raw(bytes(4) + bytes(28)))
    pkts.append(Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=4500, dport=4500) / Raw(b"\x01\x02\x03"))
    return pkts


def test_engines_agree_on_every_frame_kind(tmp_path, c_engine):
    pkts = _mixed_packets()
    path = tmp_path / "mixed.pcap"
    with PcapWriter(str(path), linktype=1) as w:
        for i, p in enumerate(pkts):
            p.time = T0 + i / 1000
            w.write(p)
    res = same(path)
    assert res["esp"].keepalives == 428 and res["esp"].esp_truncated == 2
    assert res["stats"][6] == 1  # the fragmented ESP was reassembled and accounted
    ng = tmp_path / "mixed.pcapng"
    with PcapNgWriter(str(ng)) as w:
        for i, p in enumerate(pkts[:500]):
            p.time = T0 + i / 1000
            w.write(p)
    same(ng)
    sll = tmp_path / "sll.pcap"
    with PcapWriter(str(sll), linktype=113) as w:
        for i in range(200):
            w.write(CookedLinux(proto=0x0800) / IP(src=A4, dst=B4, proto=50) / Raw(esp(7, i + 1)))
    assert same(sll)["sas"][0]["packets"] == 200


def test_engines_agree_with_windows_and_esn(tmp_path, c_engine):
    path = tmp_path / "wrap.pcap"
    seqs = [0xFFFFFF00 + i for i in range(0x100)] + list(range(300)) + [0xFFFFFFF0, 5, 5]
    with PcapWriter(str(path), linktype=1) as w:
        for i, s in enumerate(seqs):
            w.write(Ether(**MAC) / IP(src=A4, dst=B4, proto=50) / Raw(esp(0xAB, s)))
    for window in (1, 32, 64, 1000, 4096):
        plain = same(path, window=window)
        assert plain["sas"][0]["wraps"] == 1
        with_esn = same(path, window=window, esn=(0xAB,))
        assert with_esn["sas"][0]["wraps"] == 0 and with_esn["sas"][0]["esn"]


def test_engines_agree_on_cut_file(tmp_path, c_engine):
    bench = _bench()
    path = tmp_path / "cut.pcap"
    bench.generate(path, 1000, spis=2)
    data = path.read_bytes()
    for cut in (len(data) - 30, len(data) - 100, 24 + 8, 10):
        p = tmp_path / f"cut{cut}.pcap"
        p.write_bytes(data[:cut])
        res = same(p)
        assert res["error"] is not None and "frame" in res["error"] or cut == 10
    huge = bytearray(data)
    struct.pack_into("<I", huge, 24 + 8, 10_000_000)  # an absurd captured length in record 1
    p = tmp_path / "absurd.pcap"
    p.write_bytes(bytes(huge))
    res = same(p)
    assert "exceeds" in res["error"] and res["sas"] == []
    assert run(p, "python")["error"] == f"{p}: frame 1, offset 24: captured length 10000000 exceeds 262144 (corrupt record)"


@needs_shared
def test_engines_agree_on_shared_captures(c_engine):
    for pcap in sorted(SHARED.glob("*.pcap")) + sorted(SHARED.glob("*/*.pcap")):
        res = same(pcap)
        assert res["sas"]


# --------------------------------------------------------------------------------------
# tshark: replays and gaps agree on the shared part of the checks


@needs_tshark
@pytest.mark.parametrize("udp", [False, True], ids=["esp", "esp-in-udp"])
def test_replays_and_gaps_agree_with_tshark(tmp_path, udp):
    """tshark (packet-ipsec.c) compares each packet with the previous one of its SPI:
    "N repeated" (a duplicate of the previous), "N missing", "N less than expected".
    On a capture of immediate duplicates, gaps and adjacent swaps: our replays are its
    repeated, our gaps its missing minus its less-than, our late packets its less-than events."""
    bench = _bench()
    path = tmp_path / "small.pcap"
    inj = bench.generate(path, 6000, spis=4, udp=udp, replay_every=101, gap_every=157, reorder_every=211)
    ts = bench.tshark_expert(path)
    scan = EspScan(path)
    list(scan.datagrams())
    trackers = {t.spi: t for t in scan.trackers()}
    assert set(trackers) == set(inj.spis)
    for spi, t in trackers.items():
        assert t.replays == ts["repeated"].get(spi, 0) == inj.replays.get(spi, 0)
        assert t.gaps == ts["missing"].get(spi, 0) - ts["less_by"].get(spi, 0) == inj.gaps.get(spi, 0)
        assert t.late == ts["less"].get(spi, 0) == inj.reorders.get(spi, 0)
        assert t.reorders == 0


@needs_tshark
@needs_shared
def test_spis_and_counts_match_tshark_on_shared_captures():
    for pcap in sorted(SHARED.glob("sswan-*.pcap")) + sorted(SHARED.glob("*/*.pcap")):
        out = subprocess.run(["tshark", "-r", str(pcap), "-Y", "esp", "-T", "fields", "-e", "esp.spi"],
                             capture_output=True, text=True, check=True).stdout
        expected: dict[int, int] = {}
        for line in out.split():
            expected[int(line, 16)] = expected.get(int(line, 16), 0) + 1
        scan = EspScan(pcap)
        list(scan.datagrams())
        assert {t.spi: t.packets for t in scan.trackers()} == expected
        if pcap.name.startswith("sswan-"):
            assert len(expected) == 14

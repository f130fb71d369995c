"""dissectors.capture: pcap/pcapng reading, link layers, IP (fragments), UDP/ESP datagrams.

Captures are written in each test with scapy's writers or by hand with struct; the real
strongSwan captures are cross-checked against tshark.
"""

from __future__ import annotations

import random
import struct
import subprocess
import tracemalloc
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.l2 import ARP, CookedLinux, CookedLinuxV2, Dot1AD, Dot1Q, Ether
from scapy.packet import Padding, Raw
from scapy.utils import PcapNgWriter, PcapWriter

from dissectors.capture import (
    CaptureError,
    CaptureStats,
    Datagram,
    Reassembler,
    iter_datagrams,
    iter_frames,
)
from dissectors.records import FrameRef
from tests.conftest import all_captures, capture_id, needs_tshark

A4, B4 = "192.0.2.1", "192.0.2.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
IKE = bytes(range(28)) * 3  # stands in for an IKE message (content is not parsed here)
ESP = struct.pack("!II", 0xC0FFEE01, 7) + bytes(48)  # SPI, sequence number, "ciphertext"
T0 = 1_700_000_000


# --------------------------------------------------------------------------------------
# Capture builders


def write_scapy(path: Path, packets, linktype: int | None = None, **kw) -> Path:
    """A pcap from scapy packets (or bytes), timestamps T0 + i."""
    with PcapWriter(str(path), linktype=linktype, **kw) as w:
        for i, p in enumerate(packets):
            if isinstance(p, bytes):
                if not w.header_present:
                    w.write_header(p)
                w.write_packet(p, sec=T0 + i, usec=0)
            else:
                p.time = T0 + i
                w.write(p)
    return path


def pcap_bytes(linktype: int, frames: list[bytes], endian: str = "<", nano: bool = False,
               ts: tuple[int, int] = (T0, 0)) -> bytes:
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for f in frames:
        out += struct.pack(endian + "IIII", ts[0], ts[1], len(f), len(f)) + f
    return out


def ng_block(btype: int, body: bytes, e: str = "<") -> bytes:
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack(e + "II", btype, n) + body + struct.pack(e + "I", n)


def ng_shb(e: str = "<") -> bytes:
    return ng_block(0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1), e)


def ng_option(code: int, value: bytes, e: str = "<") -> bytes:
    return struct.pack(e + "HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def ng_idb(linktype: int, e: str = "<", snaplen: int = 0, options: bytes = b"") -> bytes:
    if options:
        options += struct.pack(e + "HH", 0, 0)
    return ng_block(1, struct.pack(e + "HHI", linktype, 0, snaplen) + options, e)


def ng_epb(ifid: int, units: int, data: bytes, e: str = "<") -> bytes:
    fixed = struct.pack(e + "IIIII", ifid, units >> 32, units & 0xFFFFFFFF, len(data), len(data))
    return ng_block(6, fixed + data, e)


def ng_spb(data: bytes, e: str = "<") -> bytes:
    return ng_block(3, struct.pack(e + "I", len(data)) + data, e)


def ng_pb(ifid: int, units: int, data: bytes, e: str = "<") -> bytes:
    """The obsolete Packet Block (type 2): 16-bit interface id and drops count."""
    fixed = struct.pack(e + "HHIIII", ifid, 0, units >> 32, units & 0xFFFFFFFF, len(data), len(data))
    return ng_block(2, fixed + data, e)


def ike4(sport: int = 500, dport: int = 500, payload: bytes = IKE) -> IP:
    return IP(src=A4, dst=B4) / UDP(sport=sport, dport=dport) / Raw(payload)


def esp6(src: str = A6, dst: str = B6) -> IPv6:
    return IPv6(src=src, dst=dst, nh=50) / Raw(ESP)


def read_all(path: Path, stats: CaptureStats | None = None) -> list[Datagram]:
    return list(iter_datagrams(str(path), stats))


def read_until_error(path: Path) -> tuple[list[int], CaptureError | None]:
    """Frame numbers yielded by iter_frames, and the error that ended it (if any)."""
    seen: list[int] = []
    try:
        for ref, _linktype, _data in iter_frames(str(path)):
            seen.append(ref.index)
    except CaptureError as err:
        return seen, err
    return seen, None


# --------------------------------------------------------------------------------------
# Link layers


def test_ethernet_ike_nat_t_and_esp(tmp_path):
    packets = [
        Ether(**MAC) / ike4(),
        Ether(**MAC) / ike4(4500, 4500, b"\0\0\0\0" + IKE),
        Ether(**MAC) / ike4(4500, 4500, ESP),
        Ether(**MAC) / IP(src=B4, dst=A4, proto=50) / Raw(ESP),
        Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=500, dport=500) / Raw(b"x") / Padding(b"\0" * 17),
        Ether(**MAC) / IP(src=A4, dst=B4) / ICMP(),
        Ether(**MAC) / IP(src=A4, dst=B4) / TCP(),
        Ether(**MAC) / ARP(psrc=A4, pdst=B4),
    ]
    stats = CaptureStats()
    got = read_all(write_scapy(tmp_path / "eth.pcap", packets), stats)
    path = str(tmp_path / "eth.pcap")
    assert got == [
        Datagram(FrameRef(path, 1, T0 + 0.0), A4, B4, 17, 500, 500, IKE),
        Datagram(FrameRef(path, 2, T0 + 1.0), A4, B4, 17, 4500, 4500, b"\0\0\0\0" + IKE),
        Datagram(FrameRef(path, 3, T0 + 2.0), A4, B4, 17, 4500, 4500, ESP),
        Datagram(FrameRef(path, 4, T0 + 3.0), B4, A4, 50, None, None, ESP),
        Datagram(FrameRef(path, 5, T0 + 4.0), A4, B4, 17, 500, 500, b"x"),  # Ethernet padding dropped
    ]
    assert (stats.frames, stats.datagrams, stats.other_proto, stats.not_ip) == (8, 5, 2, 1)
    assert (stats.skipped_linktype, stats.malformed, stats.ip_fragments) == (0, 0, 0)


def test_vlan_tags_stacked_and_single(tmp_path):
    packets = [
        Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=200) / ike4(),  # QinQ: S-tag then C-tag
        Ether(**MAC) / Dot1Q(vlan=7) / IPv6(src=A6, dst=B6) / UDP(sport=4500, dport=4500) / Raw(ESP),
        Ether(**MAC, type=0x9100) / Dot1Q(vlan=1) / Dot1Q(vlan=2) / IP(src=A4, dst=B4, proto=50) / Raw(ESP),
    ]
    got = read_all(write_scapy(tmp_path / "vlan.pcap", packets))
    assert [(d.frame.index, d.src, d.proto, d.sport, d.payload) for d in got] == [
        (1, A4, 17, 500, IKE), (2, A6, 17, 4500, ESP), (3, A4, 50, None, ESP)]


def test_linux_cooked_sll_and_sll2(tmp_path):
    sll = write_scapy(tmp_path / "sll.pcap", [CookedLinux(proto=0x0800) / ike4(),
                                               CookedLinux(proto=0x86DD) / esp6()])
    sll2 = write_scapy(tmp_path / "sll2.pcap", [CookedLinuxV2(proto=0x0800) / ike4(),
                                                 CookedLinuxV2(proto=0x86DD) / esp6()])
    for path, linktype in ((sll, 113), (sll2, 276)):
        assert {lt for _, lt, _ in iter_frames(str(path))} == {linktype}
        got = read_all(path)
        assert [(d.src, d.dst, d.proto, d.sport, d.payload) for d in got] == [
            (A4, B4, 17, 500, IKE), (A6, B6, 50, None, ESP)]


@pytest.mark.parametrize("linktype", [101, 12, 14, 228, 229])
def test_raw_ip_link_types(tmp_path, linktype):
    v4 = bytes(ike4(4500, 4500, b"\0\0\0\0" + IKE))
    v6 = bytes(IPv6(src=A6, dst=B6) / UDP(sport=500, dport=500) / Raw(IKE))
    frames = {228: [v4], 229: [v6]}.get(linktype, [v4, v6])
    got = read_all(write_scapy(tmp_path / "raw.pcap", frames, linktype=linktype))
    assert [(d.src, d.sport, d.payload[-len(IKE):]) for d in got] == [
        (A6 if f is v6 else A4, 500 if f is v6 else 4500, IKE) for f in frames]


@pytest.mark.parametrize(("linktype", "order", "family", "ip"), [
    (0, "<", 2, 4), (0, ">", 2, 4),  # BSD null: the capturing host's byte order
    (0, "<", 24, 6), (0, ">", 28, 6), (0, "<", 30, 6),  # AF_INET6 of Net/OpenBSD, FreeBSD, Darwin
    (108, ">", 2, 4), (108, ">", 24, 6),  # OpenBSD loop: network byte order
])
def test_loopback_link_types(tmp_path, linktype, order, family, ip):
    packet = bytes(ike4() if ip == 4 else IPv6(src=A6, dst=B6) / UDP(sport=500, dport=500) / Raw(IKE))
    other = struct.pack(order + "I", 7) + b"\0" * 20  # some non-IP family
    stats = CaptureStats()
    path = tmp_path / "lo.pcap"
    path.write_bytes(pcap_bytes(linktype, [struct.pack(order + "I", family) + packet, other]))
    got = read_all(path, stats)
    assert [(d.src, d.payload) for d in got] == [(A4 if ip == 4 else A6, IKE)]
    assert stats.not_ip == 1


def test_unknown_link_type_skipped_and_counted(tmp_path):
    path = write_scapy(tmp_path / "unknown.pcap", [bytes(ike4())] * 3, linktype=147)  # LINKTYPE_USER0
    stats = CaptureStats()
    assert read_all(path, stats) == []
    assert (stats.frames, stats.skipped_linktype, stats.unknown_linktypes) == (3, 3, {147})
    assert [lt for _, lt, _ in iter_frames(str(path))] == [147] * 3


# --------------------------------------------------------------------------------------
# IP


def test_ipv4_options_total_length_and_udp_length(tmp_path):
    with_options = IP(src=A4, dst=B4, options=[b"\x01\x01\x01\x00"]) / UDP(sport=500, dport=500) / Raw(IKE)
    short_udp = bytearray(bytes(ike4()))
    short_udp[24:26] = struct.pack("!H", 8 + 10)  # UDP Length covers 10 payload bytes only
    struct.pack_into("!H", short_udp, 26, 0)  # (no UDP checksum)
    got = read_all(write_scapy(tmp_path / "v4.pcap", [bytes(with_options), bytes(short_udp)], linktype=101))
    assert [d.payload for d in got] == [IKE, IKE[:10]]


def test_ipv6_extension_headers(tmp_path):
    packets = [
        IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrRouting(addresses=["2001:db8::9"])
        / IPv6ExtHdrDestOpt() / UDP(sport=500, dport=500) / Raw(IKE),
        IPv6(src=B6, dst=A6) / IPv6ExtHdrDestOpt() / Raw(ESP),
        IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(m=0, offset=0, id=9) / UDP(sport=4500, dport=4500)
        / Raw(ESP),
    ]
    packets[1][IPv6ExtHdrDestOpt].nh = 50
    stats = CaptureStats()
    got = read_all(write_scapy(tmp_path / "v6.pcap", packets), stats)
    assert [(d.src, d.dst, d.proto, d.sport, d.payload) for d in got] == [
        (A6, B6, 17, 500, IKE), (B6, A6, 50, None, ESP), (A6, B6, 17, 4500, ESP)]
    assert stats.ip_fragments == 0  # an atomic fragment (RFC 6946) is not reassembled


def test_ipv4_fragments_reassembled_out_of_order(tmp_path):
    big = bytes(random.Random(1).randbytes(3000))  # an IKE message with certificates
    frags = fragment(IP(src=A4, dst=B4, id=77) / UDP(sport=500, dport=500) / Raw(big), fragsize=1000)
    assert len(frags) == 4
    other = IP(src=B4, dst=A4, proto=50) / Raw(ESP)
    order = [frags[2], other, frags[0], frags[3] / Padding(b"\0" * 18), frags[1]]  # padded to 60 bytes
    stats = CaptureStats()
    got = read_all(write_scapy(tmp_path / "frag.pcap", [Ether(**MAC) / p for p in order]), stats)
    assert [(d.frame.index, d.proto, d.sport, d.payload) for d in got] == [
        (2, 50, None, ESP), (5, 17, 500, big)]  # the datagram belongs to its last fragment's frame
    assert (stats.ip_fragments, stats.reassembled, stats.reassembly_dropped) == (4, 1, 0)


def test_ipv6_fragments_reassembled(tmp_path):
    big = bytes(random.Random(2).randbytes(4000))
    packet = (IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=0x1234) / UDP(sport=4500, dport=4500)
              / Raw(b"\0\0\0\0" + big))
    frags = fragment6(packet, 1280)
    assert len(frags) == 4
    stats = CaptureStats()
    got = read_all(write_scapy(tmp_path / "frag6.pcap", [Ether(**MAC) / f for f in reversed(frags)]), stats)
    assert [(d.frame.index, d.src, d.sport, d.payload) for d in got] == [(4, A6, 4500, b"\0\0\0\0" + big)]
    assert (stats.ip_fragments, stats.reassembled) == (4, 1)


def test_reassembly_is_bounded_and_ages_out(tmp_path):
    # 20 first fragments that never complete: at most max_pending are held.
    heads = [fragment(IP(src=A4, dst=B4, id=i) / UDP(sport=500, dport=500) / Raw(IKE * 20), 600)[0]
             for i in range(20)]
    reassembler = Reassembler(max_pending=4, timeout=30.0)
    stats = CaptureStats()
    path = write_scapy(tmp_path / "heads.pcap", [Ether(**MAC) / p for p in heads])
    assert list(iter_datagrams(str(path), stats, reassembler)) == []
    assert len(reassembler.pending) == 4 and reassembler.held <= 4 * 600
    assert (stats.ip_fragments, stats.reassembly_dropped) == (20, 16)

    # The rest of a datagram arriving after the timeout finds nothing to complete.
    first, second = fragment(IP(src=A4, dst=B4, id=99) / UDP(sport=500, dport=500) / Raw(IKE * 20), 1000)
    first, second = Ether(**MAC) / first, Ether(**MAC) / second
    first.time, second.time = T0, T0 + 31
    late = tmp_path / "late.pcap"
    with PcapWriter(str(late)) as w:
        w.write(first)
        w.write(second)
    stats = CaptureStats()
    assert list(iter_datagrams(str(late), stats, Reassembler(timeout=30.0))) == []
    assert (stats.reassembled, stats.reassembly_dropped) == (0, 1)


def test_snaplen_cut_packet_is_yielded_as_truncated(tmp_path):
    esp = bytes(Ether(**MAC) / IP(src=A4, dst=B4, proto=50) / Raw(ESP))
    path = tmp_path / "snap.pcap"
    record = struct.pack("<IIII", T0, 0, 14 + 20 + 8, len(esp)) + esp[: 14 + 20 + 8]  # tcpdump -s 42
    path.write_bytes(pcap_bytes(1, []) + record)
    stats = CaptureStats()
    (got,) = read_all(path, stats)
    assert (got.proto, got.payload, got.truncated, stats.truncated) == (50, ESP[:8], True, 1)


# --------------------------------------------------------------------------------------
# File formats


@pytest.mark.parametrize("endian", ["<", ">"])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(tmp_path, endian, nano):
    frac = 123_456_789 if nano else 123_456
    path = tmp_path / "ts.pcap"
    path.write_bytes(pcap_bytes(1, [bytes(Ether(**MAC) / ike4())] * 2, endian, nano, (T0, frac)))
    got = read_all(path)
    assert [d.frame.index for d in got] == [1, 2]
    assert got[0].frame.ts == pytest.approx(T0 + frac / (1e9 if nano else 1e6), abs=1e-6)
    assert got[0].payload == IKE


def test_scapy_nanosecond_pcap(tmp_path):
    packet = Ether(**MAC) / ike4()
    path = tmp_path / "nano.pcap"
    with PcapWriter(str(path), linktype=1, nano=True) as w:
        w.write_header(packet)
        w.write_packet(packet, sec=T0, usec=987_654_321)  # usec carries nanoseconds here
    assert path.read_bytes()[:4] == b"\x4d\x3c\xb2\xa1"
    (got,) = read_all(path)
    assert got.frame.ts == pytest.approx(T0 + 0.987654321, abs=1e-6)


def test_pcapng_two_interfaces_with_different_link_types(tmp_path):
    eth = Ether(**MAC) / ike4()
    eth.sniffed_on, eth.time = "eth0", T0
    raw = IP(src=B4, dst=A4, proto=50) / Raw(ESP)  # LINKTYPE_IPV4 (228) in scapy
    raw.sniffed_on, raw.time = "tun0", T0 + 1
    sll = CookedLinux(proto=0x0800) / ike4(4500, 4500, ESP)
    sll.sniffed_on, sll.time = "any", T0 + 2
    path = tmp_path / "two.pcapng"
    with PcapNgWriter(str(path)) as w:
        for p in (eth, raw, eth, sll):
            w.write(p)
    assert [(ref.index, lt) for ref, lt, _ in iter_frames(str(path))] == [(1, 1), (2, 228), (3, 1), (4, 113)]
    got = read_all(path)
    assert [(d.frame.index, d.frame.ts, d.proto, d.payload) for d in got] == [
        (1, T0, 17, IKE), (2, T0 + 1, 50, ESP), (3, T0, 17, IKE), (4, T0 + 2, 17, ESP)]


def blocks_pcapng() -> bytes:
    """Big-endian section: IDB with if_tsresol 10^-9 and if_tsoffset, EPB, SPB, obsolete PB, an
    unknown link type and an NRB; then a little-endian section whose interface ids restart."""
    v4 = bytes(Ether(**MAC) / ike4())
    e = ">"
    section1 = (ng_shb(e)
                + ng_idb(1, e, options=ng_option(9, b"\x09", e) + ng_option(14, struct.pack(">q", 100), e))
                + ng_idb(147, e)  # unknown link type
                + ng_epb(0, T0 * 10**9 + 5, v4, e)
                + ng_block(4, b"\0" * 4, e)  # Name Resolution Block: skipped, not a frame
                + ng_epb(1, 0, b"opaque", e)
                + ng_spb(v4, e)  # first interface, no timestamp
                + ng_pb(0, T0 * 10**9, v4, e))
    section2 = (ng_shb("<")
                + ng_idb(229, "<", options=ng_option(9, b"\x94"))  # 2^-20 seconds
                + ng_epb(0, (T0 << 20) + (1 << 19), bytes(esp6())))  # interface 0 again: now IPv6
    return section1 + section2


def test_pcapng_blocks_resolutions_and_sections(tmp_path):
    path = tmp_path / "blocks.pcapng"
    path.write_bytes(blocks_pcapng())
    stats = CaptureStats()
    got = read_all(path, stats)
    assert [(d.frame.index, d.frame.ts, d.src, d.proto) for d in got] == [
        (1, pytest.approx(T0 + 100 + 5e-9), A4, 17), (3, 0.0, A4, 17),
        (4, pytest.approx(T0 + 100), A4, 17), (5, T0 + 0.5, A6, 50)]
    assert (stats.frames, stats.skipped_linktype, stats.unknown_linktypes) == (5, 1, {147})


def test_reassembler_duplicates_overlaps_and_oversize():
    stats = CaptureStats()
    r = Reassembler()
    assert r.add("k", 8, True, b"B" * 8, 17, 0.0, stats) is None
    assert r.add("k", 8, True, b"B" * 8, 17, 0.0, stats) is None  # a duplicate replaces, not adds
    assert r.held == 8
    assert r.add("k", 12, False, b"C" * 8, 17, 0.0, stats) is None  # overlaps the 2nd; no offset 0 yet
    assert r.add("k", 0, True, b"A" * 8, 17, 0.0, stats) == (b"A" * 8 + b"B" * 4 + b"C" * 8, 17)
    assert (r.pending, r.held, stats.reassembled) == ({}, 0, 1)
    assert r.add("big", 65_528, True, b"x" * 16, 17, 0.0, stats) is None  # past 65535: discarded
    assert r.add("k2", 0, True, b"x" * 8, 17, 0.0, stats) is None
    assert r.add("k2", 16, False, b"x" * 8, 17, 0.0, stats) is None
    assert r.add("k2", 24, True, b"x" * 8, 17, 0.0, stats) is None  # beyond the last fragment's end
    assert (list(r.pending), r.held, stats.reassembly_dropped) == ([], 0, 2)


def test_pcapng_packet_on_undescribed_interface(tmp_path):
    path = tmp_path / "noidb.pcapng"
    good = ng_shb() + ng_idb(1) + ng_epb(0, 0, bytes(Ether(**MAC) / ike4()))
    path.write_bytes(good + ng_epb(3, 0, b"x" * 20))
    seen, err = read_until_error(path)
    assert seen == [1]
    assert str(err) == f"{path}: frame 2, offset {len(good)}: interface 3 not described by an IDB (1 in this section)"


# --------------------------------------------------------------------------------------
# Damaged and foreign files


def test_pcap_cut_in_record_header(tmp_path):
    frames = [bytes(Ether(**MAC) / ike4())] * 3
    good = pcap_bytes(1, frames)
    path = tmp_path / "cut.pcap"
    third = 24 + 2 * (16 + len(frames[0]))
    path.write_bytes(good[: third + 5])
    got = []
    with pytest.raises(CaptureError) as err:
        for d in iter_datagrams(str(path)):
            got.append(d.frame.index)
    assert got == [1, 2]
    assert str(err.value) == f"{path}: frame 3, offset {third}: truncated record header (5 of 16 bytes)"
    assert (err.value.frame, err.value.offset) == (3, third)


def test_pcap_cut_in_record_body(tmp_path):
    frames = [bytes(Ether(**MAC) / ike4())] * 3
    path = tmp_path / "cut.pcap"
    third = 24 + 2 * (16 + len(frames[0]))
    path.write_bytes(pcap_bytes(1, frames)[: third + 16 + 10])
    seen, err = read_until_error(path)
    assert seen == [1, 2]
    assert str(err) == f"{path}: frame 3, offset {third}: truncated packet data (10 of {len(frames[0])} bytes)"
    assert (err.frame, err.offset, err.reason) == (3, third, f"truncated packet data (10 of {len(frames[0])} bytes)")


def test_pcapng_cut_in_block(tmp_path):
    blocks = [ng_shb(), ng_idb(1)] + [ng_epb(0, 0, bytes(Ether(**MAC) / ike4()))] * 3
    data = b"".join(blocks)
    third = len(b"".join(blocks[:4]))
    path = tmp_path / "cut.pcapng"
    path.write_bytes(data[: third + 40])
    seen, err = read_until_error(path)
    assert seen == [1, 2]
    assert str(err) == f"{path}: frame 3, offset {third}: truncated block (40 of {len(blocks[4])} bytes)"
    path.write_bytes(data[: third + 3])
    err = read_until_error(path)[1]
    assert str(err) == f"{path}: frame 3, offset {third}: truncated block header (3 of 8 bytes)"


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
def test_cut_anywhere_yields_every_whole_frame_then_one_line_error(tmp_path, kind):
    frame = bytes(Ether(**MAC) / IP(src=A4, dst=B4, proto=50) / Raw(ESP))
    if kind == "pcap":
        data = pcap_bytes(1, [frame] * 3)
        ends = [24 + i * (16 + len(frame)) for i in range(4)]  # where frame i ends (0: header)
        clean = set(ends)
    else:
        head, epb = ng_shb() + ng_idb(1), ng_epb(0, 0, frame)
        data = head + epb * 3
        ends = [len(head) + i * len(epb) for i in range(4)]
        clean = set(ends) | {len(ng_shb())}  # a file may end after any block
    path = tmp_path / f"cut.{kind}"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        seen, err = read_until_error(path)
        whole = sum(1 for end in ends[1:] if end <= cut)
        assert seen == list(range(1, whole + 1)), cut
        if cut in clean:
            assert err is None, cut  # a clean record boundary is a complete file
        else:
            assert err is not None and "\n" not in str(err), cut
            if cut >= 4:
                assert f"frame {whole + 1}, offset " in str(err), (cut, str(err))


def test_corrupted_bytes_never_escape_as_traceback(tmp_path):
    frames = [bytes(Ether(**MAC) / ike4()), bytes(Ether(**MAC) / IPv6(src=A6, dst=B6) / IPv6ExtHdrDestOpt() / Raw(ESP))]
    frames += [bytes(Ether(**MAC) / f) for f in fragment(ike4(payload=IKE * 10), 400)]
    frames += [bytes(Ether(**MAC) / f) for f in fragment6(IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment()
                                                          / UDP(sport=500, dport=500) / Raw(IKE * 30), 1280)]
    captures = [pcap_bytes(1, frames),
                ng_shb() + ng_idb(1) + b"".join(ng_epb(0, i, f) for i, f in enumerate(frames))]
    rng = random.Random(7)
    path = tmp_path / "fuzz"
    read_whole, refused = 0, 0
    for _ in range(400):
        data = bytearray(rng.choice(captures))
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:  # anything but CaptureError escapes and fails the test
            for _ in iter_datagrams(str(path)):
                pass
            read_whole += 1
        except CaptureError as err:
            refused += 1
            assert "\n" not in str(err) and str(err).startswith(f"{path}: "), str(err)
    assert read_whole and refused  # both outcomes were exercised


def test_garbage_empty_and_missing_files(tmp_path):
    garbage = tmp_path / "notes.txt"
    garbage.write_text("this is not a capture\n")
    with pytest.raises(CaptureError) as err:
        list(iter_datagrams(str(garbage)))
    assert str(err.value) == f"{garbage}: not a pcap or pcapng file"

    empty = tmp_path / "empty.pcap"
    empty.write_bytes(b"")
    with pytest.raises(CaptureError, match="not a pcap or pcapng file"):
        list(iter_datagrams(str(empty)))

    short = tmp_path / "short.pcap"
    short.write_bytes(pcap_bytes(1, [])[:10])
    with pytest.raises(CaptureError, match=r"frame 1, offset 0: truncated pcap file header \(10 of 24 bytes\)$"):
        list(iter_datagrams(str(short)))

    missing = tmp_path / "missing.pcap"
    with pytest.raises(CaptureError) as err:
        list(iter_datagrams(str(missing)))
    assert str(err.value) == f"{missing}: No such file or directory"


def test_corrupt_record_length_is_an_error_not_an_allocation(tmp_path):
    path = tmp_path / "huge.pcap"
    frame = bytes(Ether(**MAC) / ike4())
    path.write_bytes(pcap_bytes(1, [frame]) + struct.pack("<IIII", T0, 0, 0xFFFFFFF0, 60) + b"\0" * 60)
    seen, err = read_until_error(path)
    assert seen == [1]
    offset = 24 + 16 + len(frame)
    assert str(err) == f"{path}: frame 2, offset {offset}: captured length 4294967280 exceeds 262144 (corrupt record)"


def test_iter_frames_gives_raw_frames(tmp_path):
    frame = bytes(Ether(**MAC) / ike4())
    path = tmp_path / "frames.pcap"
    path.write_bytes(pcap_bytes(1, [frame, b"\x01\x02"]))
    stats = CaptureStats()
    assert list(iter_frames(str(path), stats)) == [
        (FrameRef(str(path), 1, float(T0)), 1, frame), (FrameRef(str(path), 2, float(T0)), 1, b"\x01\x02")]
    assert stats.frames == 2


def test_gzip_compressed_pcap(tmp_path):
    path = write_scapy(tmp_path / "c.pcap.gz", [Ether(**MAC) / ike4()], gz=True)
    assert [d.payload for d in read_all(path)] == [IKE]


# --------------------------------------------------------------------------------------
# Real captures against tshark

REAL = all_captures()


def tshark_datagrams(path: Path) -> tuple[int, list[tuple[int, int, int | None, int | None]]]:
    """(frame count, [(frame.number, ip.proto, udp.srcport, udp.dstport)] for UDP and ESP)."""
    out = subprocess.run(
        ["tshark", "-n", "-r", str(path), "-T", "fields", "-e", "frame.number", "-e", "ip.proto",
         "-e", "ipv6.nxt", "-e", "udp.srcport", "-e", "udp.dstport"],
        capture_output=True, text=True, check=True).stdout
    rows, frames = [], 0
    for line in out.splitlines():
        number, proto4, proto6, sport, dport = (line.split("\t") + [""] * 5)[:5]
        frames += 1
        proto = int((proto4 or proto6 or "0").split(",")[0])
        if proto in (17, 50):
            rows.append((int(number), proto, int(sport.split(",")[0]) if sport else None,
                         int(dport.split(",")[0]) if dport else None))
    return frames, rows


@needs_tshark
@pytest.mark.parametrize("item", REAL, ids=[capture_id(c) for c in REAL])
def test_real_capture_matches_tshark(item):
    path = item[0]
    stats = CaptureStats()
    mine = [(d.frame.index, d.proto, d.sport, d.dport) for d in iter_datagrams(str(path), stats)]
    frames, theirs = tshark_datagrams(path)
    assert mine == theirs
    assert stats.frames == frames
    assert {p for _, p, _, _ in mine} <= {17, 50} and mine


def test_real_captures_are_present():
    """The cross-check above must not silently run on nothing: samples/ ships one."""
    assert any(path.suffix == ".pcap" for path, _ in REAL)


def synthetic_captures(tmp: Path) -> list[Path]:
    """Hand-made captures whose frame numbering tshark must agree with."""
    vlan = write_scapy(tmp / "vlan.pcap", [
        Ether(**MAC) / Dot1AD(vlan=100) / Dot1Q(vlan=200) / ike4(), Ether(**MAC) / ARP(),
        Ether(**MAC) / Dot1Q(vlan=7) / IPv6(src=A6, dst=B6) / UDP(sport=4500, dport=4500) / Raw(ESP)])
    sll2 = write_scapy(tmp / "sll2.pcap", [CookedLinuxV2(proto=0x86DD) / esp6(), CookedLinuxV2(proto=0x0800) / ike4()])
    null = tmp / "null.pcap"
    null.write_bytes(pcap_bytes(0, [struct.pack(">I", 30) + bytes(esp6()), struct.pack("<I", 2) + bytes(ike4())]))
    blocks = tmp / "blocks.pcapng"
    blocks.write_bytes(blocks_pcapng())
    return [vlan, sll2, null, blocks]


@needs_tshark
def test_synthetic_captures_match_tshark(tmp_path):
    for path in synthetic_captures(tmp_path):
        stats = CaptureStats()
        mine = [(d.frame.index, d.proto, d.sport, d.dport) for d in iter_datagrams(str(path), stats)]
        frames, theirs = tshark_datagrams(path)
        assert (mine, stats.frames) == (theirs, frames), path.name


# --------------------------------------------------------------------------------------
# Memory


def test_memory_does_not_grow_with_capture_length(tmp_path):
    frame = bytes(Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=4500, dport=4500) / Raw(ESP))
    record = struct.pack("<IIII", T0, 0, len(frame), len(frame)) + frame
    path = tmp_path / "long.pcap"
    with open(path, "wb") as f:
        f.write(pcap_bytes(1, []))
        for _ in range(200):
            f.write(record * 1000)  # 200k frames, ~23 MB
    stats = CaptureStats()
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_datagrams(str(path), stats))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == stats.frames == 200_000
    assert peak < 5 * 1024 * 1024, f"peak {peak} bytes while streaming 200k frames"

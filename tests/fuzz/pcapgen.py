"""Capture files built byte by byte for the fuzz targets: pcap and pcapng, every link type the
reader decodes, IPv4/IPv6, UDP, ESP, ESP-in-UDP, IP fragments, random timestamps and
``if_tsresol``/``if_tsoffset``. No scapy: a target builds thousands of files a second."""

from __future__ import annotations

import socket
import struct
from random import Random

MAC = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01"
V4 = ["192.0.2.1", "192.0.2.2", "198.51.100.7", "203.0.113.9"]
V6 = ["2001:db8::1", "2001:db8::2", "2001:db8:1::9"]
LINKTYPES = (1, 0, 12, 14, 101, 108, 113, 228, 229, 276, 9999)


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes, ident: int = 0, frag: int = 0, more: bool = False,
         ttl: int = 64) -> bytes:
    flags = (0x2000 if more else 0) | (frag // 8)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, flags, ttl, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    return hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:] + payload


def ipv6(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), proto, 64, socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + payload


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def ip(src: str, dst: str, proto: int, payload: bytes, ident: int = 0) -> bytes:
    return ipv6(src, dst, proto, payload) if ":" in src else ipv4(src, dst, proto, payload, ident)


def link(linktype: int, packet: bytes, rng: Random | None = None) -> bytes:
    """The packet behind the link header of ``linktype``."""
    v6 = packet[:1] and packet[0] >> 4 == 6
    et = 0x86DD if v6 else 0x0800
    if linktype == 1:
        if rng is not None and rng.random() < 0.2:  # a VLAN tag
            return MAC + struct.pack("!HHH", 0x8100, rng.randrange(4096), et) + packet
        return MAC + struct.pack("!H", et) + packet
    if linktype == 0:
        return struct.pack("<I", 30 if v6 else 2) + packet
    if linktype == 108:
        return struct.pack(">I", 30 if v6 else 2) + packet
    if linktype == 113:  # Linux cooked
        return struct.pack("!HHH8sH", 0, 1, 6, MAC[:8], et) + packet
    if linktype == 276:  # Linux cooked v2
        return struct.pack("!HHIHBB8s", et, 0, 1, 1, 0, 6, MAC[:8]) + packet
    return packet  # raw IP (12, 14, 101, 228, 229) or an unknown link type


def pcap(records: list[tuple[float, bytes]], linktype: int = 1, nano: bool = False, big: bool = False,
         snaplen: int = 65535) -> bytes:
    e = ">" if big else "<"
    units = 1_000_000_000 if nano else 1_000_000
    magic = 0xA1B23C4D if nano else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for ts, data in records:
        sec = int(ts)
        frac = min(units - 1, max(0, int(round((ts - sec) * units))))
        out.append(struct.pack(e + "IIII", sec & 0xFFFFFFFF, frac, len(data), len(data)) + data)
    return b"".join(out)


def _block(e: str, btype: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    return struct.pack(e + "II", btype, 12 + len(body)) + body + struct.pack(e + "I", 12 + len(body))


def shb(e: str = "<") -> bytes:
    return _block(e, 0x0A0D0D0A, struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1))


def idb(linktype: int, e: str = "<", tsresol: int | None = None, tsoffset: int | None = None,
        snaplen: int = 0) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += struct.pack(e + "HH", 9, 1) + bytes([tsresol]) + b"\0\0\0"
    if tsoffset is not None:
        opts += struct.pack(e + "HHq", 14, 8, tsoffset)
    if opts:
        opts += struct.pack(e + "HH", 0, 0)
    return _block(e, 1, struct.pack(e + "HHI", linktype, 0, snaplen) + opts)


def epb(ticks: int, data: bytes, e: str = "<", ifid: int = 0, caplen: int | None = None) -> bytes:
    ticks &= (1 << 64) - 1
    n = len(data) if caplen is None else caplen
    return _block(e, 6, struct.pack(e + "IIIII", ifid, ticks >> 32, ticks & 0xFFFFFFFF, n, len(data)) + data)


def spb(data: bytes, e: str = "<") -> bytes:
    return _block(e, 3, struct.pack(e + "I", len(data)) + data)

"""ESP (RFC 4303): the two-field header, decryption with ICV check, and the inner flow.

The header is a table (dpkt's ``esp.py``: ``('spi', 'I', 0), ('seq', 'I', 0)``); everything
after it is cipher-specific. Decryption reuses ``dissectors.crypto`` (the spec tables by
transform id): AEAD ciphers (AES-GCM RFC 4106, AES-CCM RFC 4309, ChaCha20-Poly1305 RFC 7634)
authenticate AAD = SPI | Sequence Number (SPI | Seq high | Seq low with ESN, RFC 4106 §5);
the others check the HMAC over SPI .. ciphertext (RFC 4303 §3.3.2, with the ESN high bits
appended for the ICV only, §2.2.1) *before* decrypting. A mismatch raises
``crypto.IntegrityError``; nothing of that packet is parsed further.

Nothing here keeps state: the streaming sequence analysis is ``analyzer.esp_scan``.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

from . import crypto
from .crypto import DecryptError, EncrSpec, IntegrityError, IntegSpec
from .wire import Cursor, pack_fields

__all__ = ["EspHeader", "EspPlain", "InnerFlow", "esp_decrypt", "inner_flow", "DecryptError", "IntegrityError"]

#: RFC 4303 §2: Security Parameters Index (4) | Sequence Number (4).
ESP_HEADER = (("spi", "I"), ("seq", "I"))
ESP_HEADER_LEN = 8
NEXT_HEADER_IPV4, NEXT_HEADER_IPV6 = 4, 41  # tunnel mode inner packet (RFC 4303 §2.6)
NEXT_HEADER_NONE = 59  # a dummy packet (RFC 4303 §2.6)


@dataclass(frozen=True, slots=True)
class EspHeader:
    spi: int
    seq: int

    @classmethod
    def parse(cls, data: bytes) -> EspHeader:
        """Raises ``wire.ParseError`` (offset, field) on a packet shorter than 8 octets."""
        return cls(**Cursor(data).fields(ESP_HEADER, "ESP"))

    def __bytes__(self) -> bytes:
        return pack_fields(ESP_HEADER, {"spi": self.spi, "seq": self.seq})


@dataclass(frozen=True, slots=True)
class EspPlain:
    """A decrypted ESP packet: the payload without padding, and its Next Header."""

    spi: int
    seq: int
    payload: bytes  # the inner IP packet in tunnel mode, the transport header in transport mode
    next_header: int


def esp_decrypt(packet: bytes, encr: EncrSpec, encr_key: bytes, integ: IntegSpec | None, integ_key: bytes,
                esn_high: int | None = None) -> EspPlain:
    """Verify and decrypt one ESP packet (from the SPI to the end of the ICV)."""
    icv_len = encr.icv_len if encr.aead else (integ.icv_len if integ is not None else 0)
    minimum = ESP_HEADER_LEN + encr.iv_len + 2 + icv_len
    if len(packet) < minimum:
        raise DecryptError(f"ESP packet of {len(packet)} octets; {encr.name} needs at least {minimum}")
    spi, seq = struct.unpack_from(">II", packet)
    end = len(packet) - icv_len
    iv = packet[ESP_HEADER_LEN:ESP_HEADER_LEN + encr.iv_len]
    ciphertext = packet[ESP_HEADER_LEN + encr.iv_len:end]
    icv = packet[end:]
    if encr.aead:
        aad = packet[:4] + (struct.pack(">I", esn_high) if esn_high is not None else b"") + packet[4:8]
        plain = crypto.encr_decrypt(encr, encr_key, iv, ciphertext, aad=aad, icv=icv)
    else:
        if integ is not None and integ.checks:
            covered = packet[:end] + (struct.pack(">I", esn_high) if esn_high is not None else b"")
            integ.verify(integ_key, covered, icv)
        plain = crypto.encr_decrypt(encr, encr_key, iv, ciphertext)
    if len(plain) < 2:
        raise DecryptError("decrypted payload lacks the Pad Length and Next Header octets")
    pad_len, next_header = plain[-2], plain[-1]
    if pad_len + 2 > len(plain):
        raise DecryptError(f"Pad Length {pad_len} exceeds the {len(plain)} decrypted octets")
    return EspPlain(spi, seq, plain[: len(plain) - pad_len - 2], next_header)


@dataclass(frozen=True, slots=True, order=True)
class InnerFlow:
    """The 5-tuple of a decrypted packet (ports 0 when the protocol has none)."""

    src: str
    dst: str
    proto: int
    sport: int = 0
    dport: int = 0

    def __str__(self) -> str:
        def ep(a: str, p: int) -> str:
            return (f"[{a}]:{p}" if ":" in a else f"{a}:{p}") if p else a

        return f"{ep(self.src, self.sport)} -> {ep(self.dst, self.dport)} proto {self.proto}"


_PORTS = {6, 17, 132, 136}  # TCP, UDP, SCTP, UDP-Lite: ports in the first four octets


def inner_flow(plain: EspPlain, outer_src: str = "", outer_dst: str = "") -> InnerFlow | None:
    """The inner 5-tuple: tunnel mode (IPv4/IPv6 inside), or transport mode with the outer
    addresses. None for dummy packets and unreadable payloads."""
    p, nh = plain.payload, plain.next_header
    if nh == NEXT_HEADER_IPV4 and len(p) >= 20 and p[0] >> 4 == 4:
        ihl = (p[0] & 0x0F) * 4
        src, dst = socket.inet_ntop(socket.AF_INET, p[12:16]), socket.inet_ntop(socket.AF_INET, p[16:20])
        return _ports(src, dst, p[9], p[ihl:])
    if nh == NEXT_HEADER_IPV6 and len(p) >= 40 and p[0] >> 4 == 6:
        src, dst = socket.inet_ntop(socket.AF_INET6, p[8:24]), socket.inet_ntop(socket.AF_INET6, p[24:40])
        return _ports(src, dst, p[6], p[40:])
    if nh == NEXT_HEADER_NONE:
        return None
    if outer_src and outer_dst:
        return _ports(outer_src, outer_dst, nh, p)
    return None


def _ports(src: str, dst: str, proto: int, l4: bytes) -> InnerFlow:
    if proto in _PORTS and len(l4) >= 4:
        sport, dport = struct.unpack_from(">HH", l4)
        return InnerFlow(src, dst, proto, sport, dport)
    return InnerFlow(src, dst, proto)

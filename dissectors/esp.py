"""ESP (RFC 4303): the two-field header, decryption with ICV check, and the inner flow.

The header is a table (dpkt's ``esp.py``: ``('spi', 'I', 0), ('seq', 'I', 0)``); everything
after it is cipher-specific. Decryption reuses ``dissectors.crypto`` (the spec tables by
transform id): AEAD ciphers (AES-GCM RFC 4106, AES-CCM RFC 4309, ChaCha20-Poly1305 RFC 7634)
authenticate AAD = SPI | Sequence Number (SPI | Seq high | Seq low with ESN, RFC 4106 §5);
the others check the HMAC over SPI .. ciphertext (RFC 4303 §3.3.2, with the ESN high bits
appended for the ICV only, §2.2.1) *before* decrypting. A mismatch raises
``crypto.IntegrityError``; nothing of that packet is parsed further.

Sending (the reference peer's, and the tests' generators): ``esp_encrypt`` is the inverse
of ``esp_decrypt`` (RFC 4303 §2.4 padding 1, 2, 3 ...); ``EspSa`` is one direction of a
Child SA (SPI, IANA transform ids, keys) with ``seal(seq, inner)`` / ``open(packet)`` and its
Wireshark ``esp_sa`` line; ``ReplayWindow`` is the receiver's RFC 4303 §3.4.3 sliding window
(``check`` before the ICV, ``accept`` after it). ``ipv4_udp`` builds an inner IPv4/UDP packet.
Sequence numbers belong to whoever sends: ``seal`` takes the number, so one worker owns one
counter and nothing is shared.

Nothing here keeps state across packets except ``ReplayWindow``: the streaming sequence
analysis of captures is ``analyzer.esp_scan``.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass, field

from . import crypto
from .crypto import DecryptError, EncrSpec, IntegrityError, IntegSpec
from .iana import IntegId
from .records import Secret
from .wire import Cursor, pack_fields

__all__ = ["DecryptError", "EspError", "EspHeader", "EspIntegrityError", "EspPlain", "EspSa", "InnerFlow",
           "IntegrityError", "ReplayWindow", "encr_key_len", "esp_auth_spec", "esp_decrypt", "esp_encr_name",
           "esp_encrypt", "inner_flow", "integ_key_len", "ipv4_udp"]

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
    pad: bytes = b""  # the Padding octets (RFC 4303 §2.4), for display


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
    return EspPlain(spi, seq, plain[: len(plain) - pad_len - 2], next_header, plain[len(plain) - pad_len - 2:-2])


def esp_encrypt(spi: int, seq: int, payload: bytes, encr: EncrSpec, encr_key: bytes, integ: IntegSpec | None,
                integ_key: bytes, next_header: int = NEXT_HEADER_IPV4, iv: bytes | None = None,
                esn_high: int | None = None) -> bytes:
    """One ESP packet (SPI .. ICV) for ``payload``: the inverse of ``esp_decrypt``.

    ``seq``'s low 32 bits go on the wire; with ESN pass the high 32 bits as ``esn_high``
    (covered by the ICV / AEAD AAD only, RFC 4303 §2.2.1, RFC 4106 §5). Padding is
    1, 2, 3 ... to the cipher's block (at least 4-octet) alignment (§2.4); ``iv`` defaults to
    random octets (a counter-based IV is as valid for GCM/CTR, RFC 4106 §3.1)."""
    head = struct.pack(">II", spi & 0xFFFFFFFF, seq & 0xFFFFFFFF)
    align = max(4, encr.block_len)
    pad_len = (-(len(payload) + 2)) % align
    plain = bytes(payload) + bytes(range(1, pad_len + 1)) + bytes([pad_len, next_header])
    iv = os.urandom(encr.iv_len) if iv is None else iv
    high = struct.pack(">I", esn_high) if esn_high is not None else b""
    if encr.aead:  # AAD = SPI | [Seq high |] Seq low
        ct, tag = crypto.encr_encrypt(encr, encr_key, iv, plain, aad=head[:4] + high + head[4:])
        return head + iv + ct + tag
    ct, _ = crypto.encr_encrypt(encr, encr_key, iv, plain)
    body = head + iv + ct
    if integ is not None and integ.checks:
        return body + integ.compute(integ_key, body + high)
    return body


# --------------------------------------------------------------------------------------
# One direction of a Child SA, for a sender or receiver (the reference peer)


class EspError(Exception):
    """Too short, bad padding or unknown SPI (never contains key bytes)."""


class EspIntegrityError(EspError):
    """ICV or AEAD tag mismatch (the receiver discards the packet, RFC 4303 §3.4.4)."""


def esp_encr_name(encr: int) -> str:
    """Wireshark's esp_sa encryption name for an IANA ENCR id (``crypto.ESP_ENCR_NAMES``)."""
    return next(e.name for e in crypto.ESP_ENCR_NAMES if e.transform_id == encr)


def esp_auth_spec(integ: int) -> IntegSpec:
    """Wireshark's esp_sa authentication entry for an IANA INTEG id."""
    return next(s for s in crypto.ESP_AUTH_BY_NAME.values()
                if s.transform_id == integ and not s.name.startswith("ANY"))


def encr_key_len(encr: int, key_bits: int) -> int:
    """Key octets incl. the salt (RFC 4106 §8.1)."""
    return crypto.encr_spec(encr, key_bits).key_len


def integ_key_len(integ: int) -> int:
    return esp_auth_spec(integ).key_len


@dataclass
class EspSa:
    """One direction of a Child SA: SPI, IANA ENCR id and key length, INTEG id, keys.

    ``seal(seq, inner)`` -> ESP packet; ``open(packet)`` -> (seq, inner, next header), raising
    ``EspIntegrityError`` / ``EspError``. With ``esn`` the high 32 bits of ``seq`` are
    authenticated (``seal`` takes the 64-bit number; ``open`` takes ``esn_high``)."""

    spi: int
    encr: int
    key_bits: int
    encr_key: Secret = field(repr=False)
    integ: int = IntegId.NONE
    integ_key: Secret = field(default=Secret(b""), repr=False)
    src: str = ""  # outer addresses, for the key file
    dst: str = ""
    esn: bool = False

    def __post_init__(self) -> None:
        self._encr = crypto.encr_spec(self.encr, self.key_bits)
        self._auth = esp_auth_spec(self.integ)
        self._key = bytes(self.encr_key)
        self._akey = bytes(self.integ_key)

    @property
    def icv_len(self) -> int:
        return self._encr.icv_len if self._encr.aead else self._auth.icv_len

    @property
    def iv_len(self) -> int:
        return self._encr.iv_len

    def esp_sa_line(self) -> str:
        """One line of Wireshark's esp_sa file, as strongSwan's save-keys writes it."""
        auth_key = f'"0x{self._akey.hex()}"' if self._akey else '""'
        family = "IPv6" if ":" in self.dst else "IPv4"
        return (f'"{family}","{self.src}","{self.dst}","0x{self.spi:08x}","{esp_encr_name(self.encr)}",'
                f'"0x{self._key.hex()}","{self._auth.name}",{auth_key}')

    def seal(self, seq: int, inner: bytes, next_header: int = NEXT_HEADER_IPV4, iv: bytes | None = None) -> bytes:
        """ESP packet for ``inner`` with sequence number ``seq`` (RFC 4303 §2)."""
        return esp_encrypt(self.spi, seq, inner, self._encr, self._key, self._auth, self._akey, next_header, iv,
                           (seq >> 32) & 0xFFFFFFFF if self.esn else None)

    def open(self, packet: bytes, esn_high: int = 0) -> tuple[int, bytes, int]:
        """Verify, then decrypt: (sequence number as on the wire, inner packet, next header)."""
        try:
            plain = esp_decrypt(packet, self._encr, self._key, self._auth if self._auth.checks else None,
                                self._akey, esn_high if self.esn else None)
        except IntegrityError:
            spi, seq = struct.unpack_from(">II", packet)
            raise EspIntegrityError(f"ICV mismatch on SPI 0x{spi:08x} seq {seq}") from None
        except DecryptError as err:
            raise EspError(str(err)) from None
        return plain.seq, plain.payload, plain.next_header


class ReplayWindow:
    """RFC 4303 §3.4.3 receiver window: accept a number once, and only within ``size`` of the
    highest seen (default 64, the RFC's SHOULD; strongSwan installs 32). ``check`` before the
    ICV is verified (does not record), ``accept`` after; ``check_and_accept`` for both."""

    def __init__(self, size: int = 64) -> None:
        if size < 1:
            raise ValueError(f"replay window must be at least 1 packet, not {size}")
        self.size = size
        self.top = 0  # highest authenticated sequence number
        self.bitmap = 0  # bit i = top - i seen

    def check(self, seq: int) -> bool:
        """True if ``seq`` is new and inside the window (0 is never sent, §3.3.3)."""
        if seq == 0:
            return False
        if seq > self.top:
            return True
        diff = self.top - seq
        return diff < self.size and not (self.bitmap >> diff) & 1

    def accept(self, seq: int) -> None:
        """Record ``seq`` (after the ICV verified, §3.4.3)."""
        if seq > self.top:
            shift = seq - self.top
            self.bitmap = ((self.bitmap << shift) | 1) & ((1 << self.size) - 1) if shift < self.size else 1
            self.top = seq
        elif self.top - seq < self.size:
            self.bitmap |= 1 << (self.top - seq)

    def check_and_accept(self, seq: int) -> bool:
        if not self.check(seq):
            return False
        self.accept(seq)
        return True


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes, ident: int = 0) -> bytes:
    """An inner IPv4/UDP packet (header checksum set; UDP checksum 0, allowed over IPv4, RFC 768)."""
    total = 20 + 8 + len(payload)
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0x4000, 64, 17, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    s = sum(struct.unpack(">10H", hdr))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    hdr = hdr[:10] + struct.pack(">H", ~s & 0xFFFF) + hdr[12:]
    return hdr + struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


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


def inner_esp(plain: EspPlain, outer_src: str = "", outer_dst: str = "") -> tuple[str, str, bytes] | None:
    """(src, dst, ESP bytes from the SPI) when the decrypted payload is itself ESP (ESP in
    ESP): an inner IPv4/IPv6 packet of protocol 50 or UDP 4500 without the Non-ESP marker
    (tunnel mode), or Next Header 50 (transport mode, the outer addresses). Else None."""
    p, nh = plain.payload, plain.next_header
    if nh == NEXT_HEADER_IPV4 and len(p) >= 20 and p[0] >> 4 == 4:
        ihl = (p[0] & 0x0F) * 4
        total = min(struct.unpack_from(">H", p, 2)[0], len(p))
        src, dst = socket.inet_ntop(socket.AF_INET, p[12:16]), socket.inet_ntop(socket.AF_INET, p[16:20])
        proto, body = p[9], p[ihl:total]
    elif nh == NEXT_HEADER_IPV6 and len(p) >= 40 and p[0] >> 4 == 6:
        src, dst = socket.inet_ntop(socket.AF_INET6, p[8:24]), socket.inet_ntop(socket.AF_INET6, p[24:40])
        proto, body = p[6], p[40:40 + struct.unpack_from(">H", p, 4)[0]]
    elif nh == 50 and outer_src and outer_dst:
        src, dst, proto, body = outer_src, outer_dst, 50, p
    else:
        return None
    if proto == 17 and len(body) >= 16 and 4500 in struct.unpack_from(">HH", body) and body[8:12] != bytes(4):
        body = body[8:]  # RFC 3948 ESP-in-UDP inside the tunnel
    elif proto != 50:
        return None
    return (src, dst, bytes(body)) if len(body) >= ESP_HEADER_LEN else None

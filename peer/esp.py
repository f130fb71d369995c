"""Userspace ESP (RFC 4303) in tunnel mode, carried in UDP (RFC 3948), for the reference peer.

One ``EspSa`` is one direction of a Child SA: SPI, cipher and keys. ``seal`` builds an ESP
packet (SPI | Sequence Number | IV | ciphertext | ICV) with the RFC 4303 §2.4 padding
(1, 2, 3, ...) and Next Header 4 (IPv4); ``open`` verifies and decrypts it. AES-GCM follows
RFC 4106 (nonce = 4-octet salt from the end of the key | 8-octet IV, AAD = SPI | SeqNo);
AES-CBC follows RFC 3602 with HMAC-SHA2 (RFC 4868) over SPI | SeqNo | IV | ciphertext.
``ReplayWindow`` is the RFC 4303 §3.4.3 sliding window (64 packets by default).

Sequence numbers belong to whoever sends: the sender passes the number in, so that one
worker process owns one counter and nothing is shared.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from dissectors import crypto
from dissectors.iana import IntegId
from dissectors.records import Secret

NEXT_HEADER_IPV4 = 4


class EspError(Exception):
    """Too short, bad padding or unknown SPI (never contains key bytes)."""


class EspIntegrityError(EspError):
    """ICV mismatch (as scapy's IPSecIntegrityError)."""


def esp_encr_name(encr: int) -> str:
    """Wireshark's esp_sa encryption name for an IANA ENCR id (``crypto.ESP_ENCR_NAMES``)."""
    return next(e.name for e in crypto.ESP_ENCR_NAMES if e.transform_id == encr)


def esp_auth_spec(integ: int) -> crypto.IntegSpec:
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
    spi: int
    encr: int
    key_bits: int
    encr_key: Secret = field(repr=False)
    integ: int = IntegId.NONE
    integ_key: Secret = field(default=Secret(b""), repr=False)
    src: str = ""  # outer addresses, for the key file
    dst: str = ""

    def __post_init__(self) -> None:
        self._encr = crypto.encr_spec(self.encr, self.key_bits)
        self._auth = esp_auth_spec(self.integ)
        self._key = bytes(self.encr_key)
        self._akey = bytes(self.integ_key)
        self._align = max(4, self._encr.block_len)

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
        """ESP packet for ``inner`` with sequence number ``seq`` (RFC 4303 §2; padding 1, 2, 3 ... §2.4)."""
        head = struct.pack(">II", self.spi, seq & 0xFFFFFFFF)
        pad_len = (-(len(inner) + 2)) % self._align
        plain = inner + bytes(range(1, pad_len + 1)) + bytes([pad_len, next_header])
        iv = iv or os.urandom(self.iv_len)
        if self._encr.aead:  # RFC 4106 §5: AAD = SPI | Sequence Number
            ct, tag = crypto.encr_encrypt(self._encr, self._key, iv, plain, aad=head)
            return head + iv + ct + tag
        ct, _ = crypto.encr_encrypt(self._encr, self._key, iv, plain)
        body = head + iv + ct
        return body + self._auth.compute(self._akey, body) if self._auth.checks else body

    def open(self, packet: bytes) -> tuple[int, bytes, int]:
        """Verify, then decrypt: (sequence number, inner packet, next header)."""
        if len(packet) < 8 + self.iv_len + self.icv_len + 4:
            raise EspError(f"ESP packet of {len(packet)} octets is too short")
        spi, seq = struct.unpack_from(">II", packet)
        iv = packet[8:8 + self.iv_len]
        end = len(packet) - self.icv_len
        try:
            if self._encr.aead:
                plain = crypto.encr_decrypt(self._encr, self._key, iv, packet[8 + self.iv_len:end],
                                            aad=packet[:8], icv=packet[end:])
            else:
                if self._auth.checks:
                    self._auth.verify(self._akey, packet[:end], packet[end:])
                plain = crypto.encr_decrypt(self._encr, self._key, iv, packet[8 + self.iv_len:end])
        except crypto.IntegrityError:
            raise EspIntegrityError(f"ICV mismatch on SPI 0x{spi:08x} seq {seq}") from None
        except crypto.DecryptError as err:
            raise EspError(f"SPI 0x{spi:08x} seq {seq}: {err}") from None
        pad_len, next_header = plain[-2], plain[-1]
        if pad_len + 2 > len(plain):
            raise EspError(f"pad length {pad_len} exceeds the payload")
        return seq, plain[:-(pad_len + 2)], next_header


class ReplayWindow:
    """RFC 4303 §3.4.3: accept a number once, and only within ``size`` of the highest seen."""

    def __init__(self, size: int = 64) -> None:
        self.size = size
        self.top = 0  # highest authenticated sequence number
        self.bitmap = 0  # bit i = top - i seen

    def check(self, seq: int) -> bool:
        """True if ``seq`` is new and inside the window (does not record it)."""
        if seq == 0:
            return False
        if seq > self.top:
            return True
        diff = self.top - seq
        return diff < self.size and not (self.bitmap >> diff) & 1

    def accept(self, seq: int) -> None:
        """Record ``seq`` (call after the ICV verified, §3.4.3)."""
        if seq > self.top:
            shift = seq - self.top
            self.bitmap = ((self.bitmap << shift) | 1) & ((1 << self.size) - 1)
            self.top = seq
        else:
            self.bitmap |= 1 << (self.top - seq)


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes, ident: int = 0) -> bytes:
    """An inner IPv4/UDP packet (checksum 0 for UDP is allowed over IPv4, RFC 768)."""
    import ipaddress

    total = 20 + 8 + len(payload)
    hdr = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, ident & 0xFFFF, 0x4000, 64, 17, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    csum = _checksum(hdr)
    hdr = hdr[:10] + struct.pack(">H", csum) + hdr[12:]
    return hdr + struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload


def _checksum(data: bytes) -> int:
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

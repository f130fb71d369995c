"""Key files as Wireshark and strongSwan's save-keys plugin write them.

- ``ikev2_decryption_table``: Wireshark's "IKEv2 Decryption Table" UAT (packet-isakmp.c,
  ``ikev2_uat_flds``): ``SPIi,SPIr,SK_ei,SK_er,"encryption",SK_ai,SK_ar,"integrity"``, hex
  fields unquoted, algorithm names quoted. Rows are checked as ``ikev2_uat_data_update_cb``
  does: 8-octet SPIs, key lengths matching the algorithms (salt included), and AEAD ciphers
  only with integrity "NONE [RFC4306]".
- ``esp_sa``: Wireshark's ESP SA UAT (packet-ipsec.c): ``"IPv4","src","dst","0xSPI","encr",
  "0xkey","auth","0xkey"``; the key length picks the AES key size.
- ``ikev2_sk_d`` (multisa's own): ``SPIi,SPIr,SK_d[,PRF]``, PRF as an IANA name
  (``PRF_HMAC_SHA2_256``) or number; SK_d then has to be the PRF's output length (RFC 7296 §2.14).

A bad line becomes a ``KeyProblem`` ("path:line: reason", naming the field, never its value)
and the other lines still load. Keys are ``Secret``s: no repr, str or error shows them.

CONTRACT (implemented here):

    @dataclass(frozen=True)
    class IkeKeys:  spi_i: bytes(8), spi_r: bytes(8), encr: EncrSpec, sk_ei, sk_er: Secret,
                    integ: IntegSpec | None, sk_ai, sk_ar: Secret
        repr never shows keys.
    @dataclass(frozen=True)
    class EspKeys:  family, src, dst, spi: int, encr_name, encr_key: Secret, auth_name,
                    auth_key: Secret
    @dataclass(frozen=True)
    class KeyProblem: path, line, reason   # str(): "path:line: reason" -- no key bytes

    class KeyStore:
        ike: dict[tuple[bytes, bytes], IkeKeys]
        esp: dict[tuple[str, int], EspKeys]    # (dst, spi)
        problems: list[KeyProblem]
        def ike_keys(spi_i: bytes, spi_r: bytes) -> IkeKeys | None
        def load(path) -> None    # file or directory; files named *ikev2_decryption_table*
                                  # or *esp_sa* (directories: what save-keys writes)
    def load_keys(paths: Iterable[str]) -> KeyStore

EXTENSIONS: ``IkeKeys.source`` / ``EspKeys.source`` ("path:line"); ``EspKeys.encr`` /
``.auth`` (the resolved specs); ``KeyStore.sk_d: dict[(spi_i, spi_r), Secret]`` and
``KeyStore.sk_d_prf: dict[(spi_i, spi_r), int]`` from ``ikev2_sk_d`` files;
``KeyStore.esp_keys(dst, spi)`` (falls back to a "*" destination); ``KeyStore.sources``.
"""

from __future__ import annotations

import csv
import hashlib
import ipaddress
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum

from .crypto import (ENCR_BY_NAME, ESP_AUTH_BY_NAME, ESP_ENCR_ALIASES, ESP_ENCR_BY_NAME,
                     INTEG_BY_NAME, PRF_BY_ID, EncrSpec, IntegSpec)
from .iana import PrfId
from .records import Secret

__all__ = ["IkeKeys", "EspKeys", "KeyProblem", "KeyStore", "KeyFileKind", "load_keys"]

SPI_LEN = 8  # IKE SPI octets (RFC 7296 §3.1), Wireshark's COOKIE_SIZE
IKE_FIELDS = ("SPIi", "SPIr", "SK_ei", "SK_er", "encryption algorithm", "SK_ai", "SK_ar",
              "integrity algorithm")
ESP_FIELDS = ("protocol", "src", "dst", "SPI", "encryption algorithm", "encryption key",
              "authentication algorithm", "authentication key")
SK_D_FIELDS = ("SPIi", "SPIr", "SK_d", "PRF")
NONE_INTEG = "NONE [RFC4306]"


class KeyFileKind(Enum):
    IKEV2 = "ikev2_decryption_table"
    ESP = "esp_sa"
    SK_D = "ikev2_sk_d"


def kind_of_name(name: str) -> KeyFileKind | None:
    """The key file kind from a file name ending (``sswan-x.ikev2_decryption_table``)."""
    return next((k for k in KeyFileKind if name.endswith(k.value)), None)


# --------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True, slots=True)
class IkeKeys:
    spi_i: bytes
    spi_r: bytes
    encr: EncrSpec
    sk_ei: Secret = field(repr=False)
    sk_er: Secret = field(repr=False)
    integ: IntegSpec | None
    sk_ai: Secret = field(repr=False)
    sk_ar: Secret = field(repr=False)
    source: str = ""  # "path:line"

    def __repr__(self) -> str:
        integ = self.integ.name if self.integ else None
        return (f"IkeKeys(spi_i={self.spi_i.hex()}, spi_r={self.spi_r.hex()}, "
                f"encr={self.encr.name!r}, integ={integ!r}, source={self.source!r})")

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class EspKeys:
    family: str  # "IPv4" / "IPv6"
    src: str  # address text, or "*"
    dst: str
    spi: int
    encr_name: str
    encr_key: Secret = field(repr=False)
    auth_name: str
    auth_key: Secret = field(repr=False)
    encr: EncrSpec | None = None
    auth: IntegSpec | None = None
    source: str = ""
    spi_pattern: str | None = None  # a wildcard SPI ("*", "0xc0ffee*"); ``spi`` is then -1

    @property
    def wildcard(self) -> bool:
        """Matched as Wireshark's get_esp_sa does (a pattern), not looked up by (dst, SPI)."""
        return self.spi_pattern is not None or _is_pattern(self.dst) or _is_pattern(self.src)

    def matches(self, dst: str, spi: int, src: str | None = None) -> bool:
        """Wireshark's filter_address_match / filter_spi_match for this row (src: when known)."""
        if (":" in dst) != (self.family == "IPv6"):  # the protocol column must match too
            return False
        if self.spi_pattern is not None:
            if not _spi_match(self.spi_pattern, spi):
                return False
        elif spi != self.spi:
            return False
        return _address_match(self.dst, dst) and (src is None or _address_match(self.src, src))

    def __repr__(self) -> str:
        spi = self.spi_pattern if self.spi_pattern is not None else f"0x{self.spi:08x}"
        return (f"EspKeys({self.family} {self.src} -> {self.dst} spi={spi}, "
                f"encr={self.encr_name!r}, auth={self.auth_name!r}, source={self.source!r})")

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class KeyProblem:
    path: str
    line: int  # 1-based; 0 for the file as a whole
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}" if self.line else f"{self.path}: {self.reason}"


class _BadLine(Exception):
    """One reason a line is rejected (never contains a field's value if it may be a key)."""


# --------------------------------------------------------------------------------------
# Field parsers


_HEX = re.compile(r"[0-9a-fA-F]*")
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_KEYISH = re.compile(r"[0-9a-fA-F]{16,}")


def _unescape(text: str) -> str:
    """Wireshark's UAT writes non-printable characters in strings as \\xNN."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


#: Characters of an unrecognised name shown when it is not a near miss of a known one: fewer
#: than the 8 octets a key window needs, so a key pasted (or shifted) into a name field never
#: reaches an error message, in ASCII or in hex.
SHOWN_NAME_CHARS = 4


def _digits(text: str) -> bool:
    """ASCII decimal digits only: ``str.isdigit`` also accepts "²", which ``int`` refuses."""
    return text.isascii() and text.isdigit()


def _quoted(text: str, known: Iterable[str] = ()) -> str:
    """An unrecognised algorithm name for an error message, never a key.

    A near miss of a known name (a typo, a missing bracket) is shown with the name meant;
    anything else could be key material (an ASCII esp_sa key, a column shifted into the name
    field), so only its first characters and its length are shown.
    """
    import difflib

    if not _KEYISH.search(text):
        known = list(known)
        close = [n for n in known if n.startswith(text + " ") or text.startswith(n)][:1] or \
            difflib.get_close_matches(text, known, n=1, cutoff=0.6)
        if len(text) < 8:
            return f'"{text}"'
        if close:
            matched = sum(b.size for b in difflib.SequenceMatcher(None, text, close[0]).get_matching_blocks())
            if len(text) - matched < 8:  # at most a few characters of it are not the known name
                return f'"{text}" (did you mean "{close[0]}"?)'
            return f'{_withheld(text)} (did you mean "{close[0]}"?)'
    return _withheld(text)


def _withheld(text: str) -> str:
    return f'"{text[:SHOWN_NAME_CHARS]}…" ({len(text)} characters, the rest withheld: it could be a key)'


def _hex(field_name: str, text: str) -> bytes:
    if not _HEX.fullmatch(text):
        raise _BadLine(f"{field_name} is not hexadecimal")
    if len(text) % 2:
        raise _BadLine(f"{field_name} has an odd number of hex digits")
    return bytes.fromhex(text)


def _spi(field_name: str, text: str) -> bytes:
    spi = _hex(field_name, text)
    if len(spi) != SPI_LEN:
        raise _BadLine(f"{field_name} must be {SPI_LEN} octets ({2 * SPI_LEN} hex characters), "
                       f"found {len(spi)}")
    return spi


def _key_len(field_name: str, key: bytes, expected: int, name: str, what: str) -> None:
    if len(key) != expected:
        raise _BadLine(f"{field_name} is {len(key)} octets; the {what} algorithm {name} "
                       f"needs {expected}")


def _esp_key(field_name: str, text: str) -> bytes:
    """Wireshark's compute_ascii_key: "0x" + hex digits, else the text's own octets."""
    if text[:2].lower() != "0x":
        return text.encode()
    digits = text[2:]
    if not _HEX.fullmatch(digits):
        raise _BadLine(f"{field_name} is not hexadecimal after 0x")
    if len(digits) % 2:
        raise _BadLine(f"{field_name} has an odd number of hex digits")
    return bytes.fromhex(digits)


# Wildcards as Wireshark's esp_sa matches them (packet-ipsec.c get_esp_sa): "*" for any
# address or SPI; an IPv4 address with "*" octets (190.*.*.1); an IPv6 address with "*"
# groups (2001:db8::*); an address with a /prefix length; an SPI "0x" + 8 characters with
# "*" for any hex digit (0xc0ffee**). The first row that matches wins.

_SPI_PATTERN = re.compile(r"0[xX][0-9a-fA-F*]{8}")


def _is_pattern(text: str) -> bool:
    return text != "*" and ("*" in text or "/" in text)


def _v4_pattern(text: str) -> bool:
    octets = text.split(".")
    return len(octets) == 4 and all(o == "*" or (_digits(o) and int(o) <= 255) for o in octets)


def _v6_groups(text: str) -> list[str] | None:
    """The 8 groups of an IPv6 address whose groups may be "*" (None if it is not one)."""
    head, sep, tail = text.partition("::")
    left = [g for g in head.split(":") if g] if head else []
    right = [g for g in tail.split(":") if g] if tail else []
    if not sep and len(left) != 8 or sep and len(left) + len(right) > 7:
        return None
    groups = left + ["0"] * (8 - len(left) - len(right)) + right
    if not all(g == "*" or re.fullmatch(r"[0-9a-fA-F]{1,4}", g) for g in groups):
        return None
    return groups


def _address_match(pattern: str, addr: str) -> bool:
    if pattern == "*":
        return True
    if "/" in pattern:
        try:
            return ipaddress.ip_address(addr) in ipaddress.ip_network(pattern, strict=False)
        except ValueError:
            return False
    if "*" not in pattern:
        return pattern == addr
    if "." in pattern:
        return all(p == "*" or p == a for p, a in zip(pattern.split("."), addr.split(".")))
    want, have = _v6_groups(pattern), _v6_groups(addr)
    return want is not None and have is not None and all(
        w == "*" or int(w, 16) == int(h, 16) for w, h in zip(want, have))


def _spi_match(pattern: str, spi: int) -> bool:
    if pattern == "*":
        return True
    text = f"0x{spi:08x}"
    return all(p == "*" or p == t for p, t in zip(pattern[2:].lower(), text[2:]))


def _esp_address(field_name: str, text: str, family: str) -> str:
    if text == "*":
        return text
    if "/" in text:  # a prefix: Wireshark masks the address (nibble by nibble); a network here
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise _BadLine(f"{field_name} is not an {family} address, prefix or pattern") from None
        if (net.version == 4) != (family == "IPv4"):
            raise _BadLine(f"{field_name} is not an {family} prefix")
        return str(net)
    if "*" in text:
        if (_v4_pattern(text) if family == "IPv4" else _v6_groups(text) is not None):
            return text
        raise _BadLine(f"{field_name} is not an {family} address pattern (e.g. "
                       f"{'190.*.*.1' if family == 'IPv4' else '2001:db8::*'})")
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise _BadLine(f"{field_name} is not an {family} address or *") from None
    if (addr.version == 4) != (family == "IPv4"):
        raise _BadLine(f"{field_name} is not an {family} address")
    return str(addr)


SPI_ACCEPTED = ('SPI must be "*", a number (0x hex, decimal, 0 octal as strtoul reads it) or "0x" and '
                '8 characters with * for any hex digit (e.g. 0xc0ffee**)')


def _esp_spi(text: str) -> tuple[int, str | None]:
    """(SPI, None), or (-1, pattern) for a wildcard SPI."""
    if text == "*" or "*" in text:
        if text == "*" or _SPI_PATTERN.fullmatch(text):
            return -1, text
        raise _BadLine(SPI_ACCEPTED)
    try:  # strtoul(text, NULL, 0), as Wireshark reads it
        if not text.isascii() or "_" in text:  # strtoul reads ASCII digits, no separators
            raise ValueError(text)
        if text[:2].lower() == "0x":
            spi = int(text, 16)
        elif len(text) > 1 and text[0] == "0":
            spi = int(text, 8)
        else:
            spi = int(text, 10)
    except ValueError:
        raise _BadLine(SPI_ACCEPTED) from None
    if not 0 <= spi <= 0xFFFFFFFF:
        raise _BadLine("SPI does not fit in 32 bits")
    return spi, None


def _prf_id(text: str) -> int:
    names = [PrfId(n).name for n in PRF_BY_ID]
    if _digits(text):
        value = int(text)
    else:
        try:
            value = PrfId[text.upper()]
        except KeyError:
            raise _BadLine(f"unknown PRF {_quoted(text, names)}") from None
    if value not in PRF_BY_ID:
        known = f'"{PrfId(value).name}"' if value in PrfId._value2member_map_ else _quoted(text)
        raise _BadLine(f"unsupported PRF {known}")
    return value


# --------------------------------------------------------------------------------------
# Line parsers


def _fields(line: str, names: tuple[str, ...], optional: int = 0) -> list[str]:
    fields = [_unescape(f.strip()) for f in next(csv.reader([line], skipinitialspace=True))]
    if not len(names) - optional <= len(fields) <= len(names):
        count = f"{len(names) - optional} or {len(names)}" if optional else str(len(names))
        raise _BadLine(f"expected {count} fields ({','.join(names)}), found {len(fields)}")
    return fields


def parse_ike_line(line: str, source: str = "") -> IkeKeys:
    """One ikev2_decryption_table row, checked as Wireshark's ikev2_uat_data_update_cb."""
    spi_i, spi_r, ei, er, encr_name, ai, ar, integ_name = _fields(line, IKE_FIELDS)
    spi_i_b, spi_r_b = _spi("SPIi", spi_i), _spi("SPIr", spi_r)
    sk_ei, sk_er = _hex("SK_ei", ei), _hex("SK_er", er)
    sk_ai, sk_ar = _hex("SK_ai", ai), _hex("SK_ar", ar)
    encr = ENCR_BY_NAME.get(encr_name)
    if encr is None:
        raise _BadLine(f"unknown encryption algorithm {_quoted(encr_name, ENCR_BY_NAME)}")
    integ = INTEG_BY_NAME.get(integ_name)
    if integ is None:
        raise _BadLine(f"unknown integrity algorithm {_quoted(integ_name, INTEG_BY_NAME)}")
    if encr.aead and integ.name != NONE_INTEG:
        raise _BadLine(f'encryption algorithm "{encr.name}" requires integrity algorithm "{NONE_INTEG}"')
    _key_len("SK_ei", sk_ei, encr.key_len, encr.name, "encryption")
    _key_len("SK_er", sk_er, encr.key_len, encr.name, "encryption")
    _key_len("SK_ai", sk_ai, integ.key_len, integ.name, "integrity")
    _key_len("SK_ar", sk_ar, integ.key_len, integ.name, "integrity")
    return IkeKeys(spi_i_b, spi_r_b, encr, Secret(sk_ei), Secret(sk_er), integ, Secret(sk_ai),
                   Secret(sk_ar), source)


def parse_esp_line(line: str, source: str = "") -> EspKeys:
    """One esp_sa row (Wireshark's uat_esp_sa_record_t), with key lengths checked."""
    family, src, dst, spi_text, encr_name, encr_text, auth_name, auth_text = _fields(line, ESP_FIELDS)
    if family not in ("IPv4", "IPv6"):
        raise _BadLine('protocol must be "IPv4" or "IPv6"')
    src = _esp_address("src", src, family)
    dst = _esp_address("dst", dst, family)
    spi, spi_pattern = _esp_spi(spi_text)
    encr_entry = ESP_ENCR_BY_NAME.get(ESP_ENCR_ALIASES.get(encr_name, encr_name))
    if encr_entry is None:
        raise _BadLine(f"unknown encryption algorithm {_quoted(encr_name, ESP_ENCR_BY_NAME)}; esp_sa accepts "
                       + ", ".join(f'"{n}"' for n in ESP_ENCR_BY_NAME))
    auth = ESP_AUTH_BY_NAME.get(auth_name)
    if auth is None:
        raise _BadLine(f"unknown authentication algorithm {_quoted(auth_name, ESP_AUTH_BY_NAME)}; esp_sa accepts "
                       + ", ".join(f'"{n}"' for n in ESP_AUTH_BY_NAME))
    if encr_entry.unsupported:
        raise _BadLine(encr_entry.unsupported)
    if auth.hash_name and auth.hash_name not in hashlib.algorithms_available:
        raise _BadLine(f"not supported: {auth.name} (this Python's OpenSSL has no {auth.hash_name})")
    encr_key = _esp_key("encryption key", encr_text)
    auth_key = _esp_key("authentication key", auth_text)
    if encr_entry.transform_id is None and auth.icv_len not in (8, 12, 16):
        raise _BadLine(f'encryption algorithm "{encr_entry.name}" takes its ICV length from an '
                       '"ANY 64/96/128 bit authentication [no checking]" algorithm')
    encr = encr_entry.spec(len(encr_key), auth.icv_len)
    if encr is None:
        raise _BadLine(f'encryption key is {len(encr_key)} octets; the encryption algorithm '
                       f'"{encr_entry.name}" needs {encr_entry.key_lens_text()}')
    if encr.aead and auth.checks:
        raise _BadLine(f'encryption algorithm "{encr_entry.name}" is AEAD: authentication must be '
                       '"NULL" or "ANY n bit authentication [no checking]"')
    if auth.checks:
        _key_len("authentication key", auth_key, auth.key_len, f'"{auth.name}"', "authentication")
    return EspKeys(family, src, dst, spi, encr_entry.name, Secret(encr_key), auth.name,
                   Secret(auth_key), encr, auth, source, spi_pattern)


def parse_sk_d_line(line: str) -> tuple[bytes, bytes, Secret, int | None]:
    """One ikev2_sk_d row: SPIi, SPIr, SK_d and the optional PRF."""
    fields = _fields(line, SK_D_FIELDS, optional=1)
    spi_i, spi_r = _spi("SPIi", fields[0]), _spi("SPIr", fields[1])
    sk_d = _hex("SK_d", fields[2])
    if not sk_d:
        raise _BadLine("SK_d is empty")
    prf_id = _prf_id(fields[3]) if len(fields) == 4 and fields[3] else None
    if prf_id is not None and len(sk_d) != PRF_BY_ID[prf_id].out_len:
        raise _BadLine(f"SK_d is {len(sk_d)} octets; {PrfId(prf_id).name} needs "
                       f"{PRF_BY_ID[prf_id].out_len}")
    return spi_i, spi_r, Secret(sk_d), prf_id


def _sniff(first_line: str) -> KeyFileKind:
    """Kind of a key file whose name says nothing, from its first data line."""
    if first_line.startswith(('"IPv4"', '"IPv6"', "IPv4,", "IPv6,")):
        return KeyFileKind.ESP
    fields = next(csv.reader([first_line]))
    return KeyFileKind.SK_D if len(fields) in (3, 4) else KeyFileKind.IKEV2


def _data_lines(path: str) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip().lstrip("\ufeff")
            if line and not line.startswith("#"):
                yield number, line


# --------------------------------------------------------------------------------------
# The store


class KeyStore:
    """Every key loaded, by (SPIi, SPIr) for IKE and by (dst, SPI) for ESP."""

    def __init__(self) -> None:
        self.ike: dict[tuple[bytes, bytes], IkeKeys] = {}
        self.esp: dict[tuple[str, int], EspKeys] = {}
        self.esp_patterns: list[EspKeys] = []  # wildcard esp_sa rows, in file order
        self.sk_d: dict[tuple[bytes, bytes], Secret] = {}
        self.sk_d_prf: dict[tuple[bytes, bytes], int] = {}
        self.problems: list[KeyProblem] = []
        self.sources: list[str] = []  # files loaded, in order
        self._seen: set[str] = set()

    def __repr__(self) -> str:
        return (f"<KeyStore {len(self.ike)} IKE SAs, {len(self.esp)} ESP SAs, {len(self.sk_d)} SK_d, "
                f"{len(self.problems)} problems>")

    __str__ = __repr__

    def ike_keys(self, spi_i: bytes, spi_r: bytes) -> IkeKeys | None:
        return self.ike.get((bytes(spi_i), bytes(spi_r)))

    def esp_keys(self, dst: str, spi: int, src: str | None = None) -> EspKeys | None:
        """The esp_sa row for an ESP packet: by (dst, SPI), then a "*" destination, then the
        wildcard rows in file order (Wireshark's first match); ``src`` is matched when given."""
        for row in (self.esp.get((dst, spi)), self.esp.get(("*", spi))):
            if row is not None and (src is None or row.src == "*" or _address_match(row.src, src)) and \
                    (":" in dst) == (row.family == "IPv6"):
                return row
        for row in self.esp_patterns:
            if row.matches(dst, spi, src):
                return row
        return None

    def load(self, path: str | os.PathLike[str]) -> None:
        """Load a key file, or every key file (by name) in a directory."""
        path = os.fspath(path)
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if kind_of_name(n))
            files = [os.path.join(path, n) for n in names if os.path.isfile(os.path.join(path, n))]
            if not files:
                kinds = ", ".join(f"*{k.value}" for k in KeyFileKind)
                self.problems.append(KeyProblem(path, 0, f"no key files ({kinds}) in this directory"))
            for file in files:
                self._load_file(file, kind_of_name(os.path.basename(file)))
        elif os.path.exists(path):
            self._load_file(path, kind_of_name(os.path.basename(path)))
        else:
            self.problems.append(KeyProblem(path, 0, "no such file or directory"))

    def _load_file(self, path: str, kind: KeyFileKind | None) -> None:
        real = os.path.realpath(path)
        if real in self._seen:  # the same file named twice (--keys dir --keys dir/esp_sa)
            return
        self._seen.add(real)
        try:
            for number, line in _data_lines(path):
                if kind is None:
                    kind = _sniff(line)
                try:
                    self._add(kind, line, path, number)
                except _BadLine as bad:
                    self.problems.append(KeyProblem(path, number, str(bad)))
        except OSError as err:
            self.problems.append(KeyProblem(path, 0, f"cannot read: {err.strerror or type(err).__name__}"))
            return
        self.sources.append(path)

    def _add(self, kind: KeyFileKind, line: str, path: str, number: int) -> None:
        source = f"{path}:{number}"
        if kind is KeyFileKind.IKEV2:
            keys = parse_ike_line(line, source)
            self._replace(self.ike, (keys.spi_i, keys.spi_r), keys,
                          f"SPIs {keys.spi_i.hex()}/{keys.spi_r.hex()}", path, number)
        elif kind is KeyFileKind.ESP:
            keys = parse_esp_line(line, source)
            if keys.spi_pattern is not None or _is_pattern(keys.dst):
                self.esp_patterns.append(keys)
            else:
                self._replace(self.esp, (keys.dst, keys.spi), keys,
                              f"SPI 0x{keys.spi:08x} to {keys.dst}", path, number)
        else:
            spi_i, spi_r, sk_d, prf_id = parse_sk_d_line(line)
            self.sk_d[(spi_i, spi_r)] = sk_d
            if prf_id is not None:
                self.sk_d_prf[(spi_i, spi_r)] = prf_id

    def _replace(self, table: dict, key: tuple, keys: IkeKeys | EspKeys, what: str,
                 path: str, number: int) -> None:
        """Later rows win, as in Wireshark's hash; differing keys for one SA are reported."""
        old = table.get(key)
        if old is not None and _key_material(old) != _key_material(keys):
            self.problems.append(KeyProblem(path, number, f"{what} already loaded from {old.source} "
                                            "with different keys; this line replaces them"))
        table[key] = keys


def _key_material(keys: IkeKeys | EspKeys) -> tuple:
    if isinstance(keys, IkeKeys):
        return (keys.encr, keys.integ, keys.sk_ei, keys.sk_er, keys.sk_ai, keys.sk_ar)
    return (keys.encr, keys.auth, keys.encr_key, keys.auth_key)


def load_keys(paths: Iterable[str | os.PathLike[str]]) -> KeyStore:
    """A KeyStore with every path loaded in order (repeated ``--keys``)."""
    store = KeyStore()
    for path in paths:
        store.load(path)
    return store

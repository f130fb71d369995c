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

    def __repr__(self) -> str:
        return (f"EspKeys({self.family} {self.src} -> {self.dst} spi=0x{self.spi:08x}, "
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


def _quoted(text: str) -> str:
    """An algorithm name for an error message; withheld if it looks like key material."""
    return "(a value that looks like key material)" if _KEYISH.search(text) else f'"{text}"'


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


def _esp_address(field_name: str, text: str, family: str) -> str:
    if text == "*":
        return text
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise _BadLine(f"{field_name} is not an {family} address or *") from None
    if (addr.version == 4) != (family == "IPv4"):
        raise _BadLine(f"{field_name} is not an {family} address")
    return str(addr)


def _esp_spi(text: str) -> int:
    try:
        spi = int(text, 16) if text[:2].lower() == "0x" else int(text, 10)
    except ValueError:
        raise _BadLine("SPI must be 0x followed by up to 8 hex digits (wildcards are not supported)") from None
    if not 0 <= spi <= 0xFFFFFFFF:
        raise _BadLine("SPI does not fit in 32 bits")
    return spi


def _prf_id(text: str) -> int:
    if text.isdigit():
        value = int(text)
    else:
        try:
            value = PrfId[text.upper()]
        except KeyError:
            raise _BadLine(f"unknown PRF {_quoted(text)}") from None
    if value not in PRF_BY_ID:
        raise _BadLine(f"unsupported PRF {_quoted(text)}")
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
        raise _BadLine(f"unknown encryption algorithm {_quoted(encr_name)}")
    integ = INTEG_BY_NAME.get(integ_name)
    if integ is None:
        raise _BadLine(f"unknown integrity algorithm {_quoted(integ_name)}")
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
    spi = _esp_spi(spi_text)
    encr_entry = ESP_ENCR_BY_NAME.get(ESP_ENCR_ALIASES.get(encr_name, encr_name))
    if encr_entry is None:
        raise _BadLine(f"unknown encryption algorithm {_quoted(encr_name)}")
    auth = ESP_AUTH_BY_NAME.get(auth_name)
    if auth is None:
        raise _BadLine(f"unknown authentication algorithm {_quoted(auth_name)}")
    encr_key = _esp_key("encryption key", encr_text)
    auth_key = _esp_key("authentication key", auth_text)
    if encr_entry.transform_id is None and auth.icv_len not in (8, 12, 16):
        raise _BadLine(f'encryption algorithm "{encr_entry.name}" takes its ICV length from an '
                       '"ANY 64/96/128 bit authentication [no checking]" algorithm')
    encr = encr_entry.spec(len(encr_key), auth.icv_len)
    if encr is None:
        lens = ", ".join(str(n) for n in encr_entry.key_lens())
        raise _BadLine(f'encryption key is {len(encr_key)} octets; the encryption algorithm '
                       f'"{encr_entry.name}" needs {lens}')
    if encr.aead and auth.checks:
        raise _BadLine(f'encryption algorithm "{encr_entry.name}" is AEAD: authentication must be '
                       '"NULL" or "ANY n bit authentication [no checking]"')
    if auth.checks:
        _key_len("authentication key", auth_key, auth.key_len, f'"{auth.name}"', "authentication")
    return EspKeys(family, src, dst, spi, encr_entry.name, Secret(encr_key), auth.name,
                   Secret(auth_key), encr, auth, source)


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

    def esp_keys(self, dst: str, spi: int) -> EspKeys | None:
        return self.esp.get((dst, spi)) or self.esp.get(("*", spi))

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

"""Cipher, integrity and PRF specs keyed by IANA transform id, and SK payload (de)cryption.

The spec tables follow Wireshark's ``ikev2_encr_algs`` / ``ikev2_auth_algs`` (packet-isakmp.c)
and carry the exact names of its "IKEv2 Decryption Table" UAT, which strongSwan's save-keys
plugin writes; ``ESP_ENCR_BY_NAME`` / ``ESP_AUTH_BY_NAME`` do the same for the ``esp_sa`` UAT
(packet-ipsec.c). Wireshark 4.0 has no ChaCha20-Poly1305; we add "ChaCha20-Poly1305 [RFC7634]".

SK payload (RFC 7296 §3.14, RFC 7383 §2.5 for SKF): IV | ciphertext | ICV. Non-AEAD ciphers:
the HMAC over the whole message up to the ICV is checked (in constant time) *before*
anything is decrypted. AEAD ciphers (RFC 5282, RFC 7634): AAD is the IKE header up to the
end of the SK/SKF generic header, nonce is salt | IV with the salt taken from the end of SK_e.
Errors never carry key bytes: keys are only ever measured, never formatted.

CONTRACT (implemented here; other modules rely on exactly this):

    @dataclass(frozen=True)
    class EncrSpec:
        transform_id: int   # iana.EncrId
        key_bits: int       # 128/192/256 (key length without salt)
        name: str           # Wireshark's UAT name, e.g. "AES-CBC-256 [RFC3602]"
        salt_len: int       # 0, 4 (GCM/CTR/ChaCha) or 3 (CCM)
        iv_len: int
        block_len: int      # padding alignment for the SK plaintext
        icv_len: int        # AEAD tag length, 0 for non-AEAD
        # .aead property, .key_len (bytes incl. salt, as in the key file)

    @dataclass(frozen=True)
    class IntegSpec:
        transform_id: int   # iana.IntegId
        name: str           # Wireshark's UAT name, e.g. "HMAC_SHA2_256_128 [RFC4868]"
        key_len: int
        icv_len: int
        # NONE / "ANY n-bits [No Checking]": icv_len n/8 but verify() does nothing

    ENCR_BY_NAME: dict[str, EncrSpec]   # exact Wireshark names + "ChaCha20-Poly1305 [RFC7634]"
    INTEG_BY_NAME: dict[str, IntegSpec]
    def encr_spec(transform_id: int, key_bits: int | None) -> EncrSpec | None
    def integ_spec(transform_id: int) -> IntegSpec | None

    class IntegrityError(Exception)  # ICV/tag mismatch (message must never contain keys)
    class DecryptError(Exception)    # bad padding, too short, ...

    def sk_decrypt(encr, integ, sk_e: bytes, sk_a: bytes, message: bytes,
                   sk_offset: int, sk_header_len: int) -> bytes
        `message` is the whole IKE message (IKE header .. end); the SK (4-byte generic
        header) or SKF (8-byte header) payload starts at `sk_offset` and runs to the end of
        the message. Verifies the ICV first (HMAC over message[:-icv] for non-AEAD; AEAD
        with AAD = message[:sk_offset + sk_header_len]) and raises IntegrityError on
        mismatch; returns the inner plaintext with padding and the Pad Length octet removed.

    def sk_encrypt(encr, integ, sk_e, sk_a, aad_prefix: bytes, plaintext: bytes,
                   iv: bytes | None = None) -> bytes
        The reverse, for the reference peer: `aad_prefix` is the IKE header + SK header
        with lengths already final (use sk_encrypted_len to compute them); returns
        IV | ciphertext | ICV.

    def sk_encrypted_len(encr, integ, plaintext_len: int) -> int

EXTENSIONS (compatible with the contract):

- ``EncrSpec.mode`` (``CipherMode``) and ``IntegSpec.hash_name``/``.checks``/``.compute()``;
- ``encr_decrypt`` / ``encr_encrypt``: the bare cipher (no SK framing), reused for ESP;
- ``ESP_ENCR_BY_NAME`` (``EspEncrName.spec(key_len, icv_len)``), ``ESP_ENCR_ALIASES``,
  ``ESP_AUTH_BY_NAME``: Wireshark's ``esp_sa`` names;
- ``PrfSpec``, ``PRF_BY_ID``, ``prf(prf_id, key, data)``, ``prf_plus(prf_id, key, seed, length)``.
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
import os
from dataclasses import dataclass
from enum import Enum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

try:  # cryptography >= 43 keeps 3DES, Blowfish and CAST5 among the "decrepit" algorithms
    from cryptography.hazmat.decrepit.ciphers.algorithms import CAST5, Blowfish, TripleDES
except ImportError:  # pragma: no cover - older cryptography
    TripleDES, Blowfish, CAST5 = algorithms.TripleDES, algorithms.Blowfish, algorithms.CAST5

from .iana import EncrId, IntegId, PrfId, name_of

__all__ = [
    "CipherMode", "EncrSpec", "IntegSpec", "EspEncrName", "PrfSpec",
    "ENCR_SPECS", "ENCR_BY_NAME", "INTEG_SPECS", "NO_CHECKING_SPECS", "INTEG_BY_NAME",
    "ESP_ENCR_NAMES", "ESP_LEGACY_SPECS", "ENCR_TWOFISH_CBC", "ESP_ENCR_BY_NAME", "ESP_ENCR_ALIASES", "ESP_AUTH_BY_NAME", "PRF_BY_ID",
    "MODE_BY_ID", "AEAD_MODES",
    "encr_spec", "integ_spec", "IntegrityError", "DecryptError",
    "encr_decrypt", "encr_encrypt", "sk_decrypt", "sk_encrypt", "sk_encrypted_len",
    "prf", "prf_plus",
]


class IntegrityError(Exception):
    """ICV or AEAD tag mismatch: wrong keys or a tampered message. Never carries key bytes."""


class DecryptError(Exception):
    """The payload cannot be decrypted: too short, bad length or padding, wrong key size."""


# --------------------------------------------------------------------------------------
# Encryption (ENCR, RFC 7296 §3.3.2)


class CipherMode(str, Enum):
    NULL = "null"  # RFC 2410
    CBC = "cbc"  # RFC 3602 (AES), RFC 2451 (3DES)
    CTR = "ctr"  # RFC 3686 (ESP), RFC 5930 (IKEv2)
    GCM = "gcm"  # RFC 4106 (ESP), RFC 5282 (IKEv2)
    CCM = "ccm"  # RFC 4309 (ESP), RFC 5282 (IKEv2)
    CHACHA20_POLY1305 = "chacha20-poly1305"  # RFC 7634


#: Cipher mode of each supported ENCR transform id.
MODE_BY_ID: dict[int, CipherMode] = {
    EncrId.NULL: CipherMode.NULL,
    EncrId.TRIPLE_DES: CipherMode.CBC,
    EncrId.AES_CBC: CipherMode.CBC,
    EncrId.AES_CTR: CipherMode.CTR,
    EncrId.AES_GCM_8: CipherMode.GCM,
    EncrId.AES_GCM_12: CipherMode.GCM,
    EncrId.AES_GCM_16: CipherMode.GCM,
    EncrId.AES_CCM_8: CipherMode.CCM,
    EncrId.AES_CCM_12: CipherMode.CCM,
    EncrId.AES_CCM_16: CipherMode.CCM,
    EncrId.CHACHA20_POLY1305: CipherMode.CHACHA20_POLY1305,
    # legacy ESP ciphers Wireshark's esp_sa accepts (RFC 2405, RFC 2451, RFC 2144)
    EncrId.DES: CipherMode.CBC,
    EncrId.BLOWFISH: CipherMode.CBC,
    EncrId.CAST: CipherMode.CBC,
}
#: Twofish has no IANA ENCR id; strongSwan's private-use ENCR_TWOFISH_CBC number.
ENCR_TWOFISH_CBC = 1027
MODE_BY_ID[ENCR_TWOFISH_CBC] = CipherMode.CBC

AEAD_MODES = frozenset({CipherMode.GCM, CipherMode.CCM, CipherMode.CHACHA20_POLY1305})


@dataclass(frozen=True, slots=True)
class EncrSpec:
    transform_id: int  # iana.EncrId
    key_bits: int  # key length without salt (0 for NULL)
    name: str  # Wireshark's UAT name
    salt_len: int  # octets taken from the end of SK_e: 4 (GCM, CTR, ChaCha20), 3 (CCM)
    iv_len: int
    block_len: int  # SK plaintext padding alignment (RFC 7296 §3.14)
    icv_len: int  # AEAD tag length, 0 for non-AEAD

    @property
    def mode(self) -> CipherMode:
        return MODE_BY_ID[self.transform_id]

    @property
    def aead(self) -> bool:
        return self.mode in AEAD_MODES

    @property
    def key_len(self) -> int:
        """Octets of SK_e as in the key file: the cipher key followed by the salt."""
        return self.key_bits // 8 + self.salt_len


AES_KEY_BITS = (128, 192, 256)
AEAD_ICV_LENS = ((EncrId.AES_GCM_8, EncrId.AES_CCM_8, 8),
                 (EncrId.AES_GCM_12, EncrId.AES_CCM_12, 12),
                 (EncrId.AES_GCM_16, EncrId.AES_CCM_16, 16))

#: Every supported ENCR transform; lengths as in Wireshark's ikev2_encr_algs.
#: (id, key bits, name, salt, iv, block, icv)
ENCR_SPECS: tuple[EncrSpec, ...] = (
    EncrSpec(EncrId.NULL, 0, "NULL [RFC2410]", 0, 0, 1, 0),
    EncrSpec(EncrId.TRIPLE_DES, 192, "3DES [RFC2451]", 0, 8, 8, 0),
    *(EncrSpec(EncrId.AES_CBC, b, f"AES-CBC-{b} [RFC3602]", 0, 16, 16, 0) for b in AES_KEY_BITS),
    # RFC 5930 §2: 4-octet nonce from the keying material, 8-octet IV, counter from 1
    *(EncrSpec(EncrId.AES_CTR, b, f"AES-CTR-{b} [RFC5930]", 4, 8, 1, 0) for b in AES_KEY_BITS),
    # RFC 5282 §7.1: GCM salt 4 octets, CCM salt 3 octets, IV 8 octets
    *(EncrSpec(gcm, b, f"AES-GCM-{b} with {icv} octet ICV [RFC5282]", 4, 8, 1, icv)
      for gcm, _, icv in AEAD_ICV_LENS for b in AES_KEY_BITS),
    *(EncrSpec(ccm, b, f"AES-CCM-{b} with {icv} octet ICV [RFC5282]", 3, 8, 1, icv)
      for _, ccm, icv in AEAD_ICV_LENS for b in AES_KEY_BITS),
    # RFC 7634 §2-3: 32-octet key + 4-octet salt, 8-octet IV, 16-octet tag, no padding needed
    EncrSpec(EncrId.CHACHA20_POLY1305, 256, "ChaCha20-Poly1305 [RFC7634]", 4, 8, 1, 16),
)

ENCR_BY_NAME: dict[str, EncrSpec] = {s.name: s for s in ENCR_SPECS}
#: Legacy ESP-only ciphers (Wireshark's esp_sa, packet-ipsec.c), not IKEv2 SK ciphers:
#: DES 64-bit key (RFC 2405), Blowfish 40-448 bits (RFC 2451 §2.2), CAST5 40-128 bits
#: (RFC 2144, RFC 2451), Twofish 128/192/256 bits; all CBC with an IV of one block.
ESP_LEGACY_SPECS: tuple[EncrSpec, ...] = (
    EncrSpec(EncrId.DES, 64, "DES-CBC [RFC2405]", 0, 8, 8, 0),
    *(EncrSpec(EncrId.BLOWFISH, b, f"BLOWFISH-CBC-{b} [RFC2451]", 0, 8, 8, 0) for b in range(40, 449, 8)),
    *(EncrSpec(EncrId.CAST, b, f"CAST5-CBC-{b} [RFC2144]", 0, 8, 8, 0) for b in range(40, 129, 8)),
    *(EncrSpec(ENCR_TWOFISH_CBC, b, f"TWOFISH-CBC-{b}", 0, 16, 16, 0) for b in AES_KEY_BITS),
)
_ENCR_BY_ID: dict[tuple[int, int], EncrSpec] = {(s.transform_id, s.key_bits): s for s in ENCR_SPECS}
#: Transforms with one key size (no Key Length attribute, RFC 7296 §3.3.5).
_FIXED_KEY_BITS: dict[int, int] = {EncrId.NULL: 0, EncrId.TRIPLE_DES: 192, EncrId.CHACHA20_POLY1305: 256}


def encr_spec(transform_id: int, key_bits: int | None) -> EncrSpec | None:
    """The spec for a negotiated ENCR transform and its Key Length attribute (bits).

    ``key_bits`` may be None for fixed-size ciphers (3DES, NULL, ChaCha20-Poly1305).
    """
    if key_bits is None:
        key_bits = _FIXED_KEY_BITS.get(transform_id)
        if key_bits is None:
            return None
    return _ENCR_BY_ID.get((transform_id, key_bits))


# --------------------------------------------------------------------------------------
# Integrity (INTEG, RFC 7296 §3.3.2)

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "md5": hashes.MD5, "sha1": hashes.SHA1, "sha256": hashes.SHA256,
    "sha384": hashes.SHA384, "sha512": hashes.SHA512,
}


def _hmac_digest(hash_name: str, key: bytes, data: bytes) -> bytes:
    if hash_name not in _HASHES:  # RIPEMD-160 (RFC 2857): OpenSSL's, through the stdlib
        return _hmac.new(bytes(key), data, hash_name).digest()
    mac = _crypto_hmac.HMAC(bytes(key), _HASHES[hash_name]())
    mac.update(data)
    return mac.finalize()


@dataclass(frozen=True, slots=True)
class IntegSpec:
    transform_id: int  # iana.IntegId (NONE for the "no checking" entries)
    name: str  # Wireshark's UAT name
    key_len: int
    icv_len: int
    hash_name: str | None = None  # HMAC hash; None: no ICV is computed or checked

    @property
    def checks(self) -> bool:
        return self.hash_name is not None

    def compute(self, key: bytes, data: bytes) -> bytes:
        """The truncated HMAC (RFC 2104; truncation per RFC 2403/2404/4868 §2.3)."""
        if self.hash_name is None:
            raise ValueError(f"{self.name} computes no ICV")
        return _hmac_digest(self.hash_name, key, data)[: self.icv_len]

    def verify(self, key: bytes, data: bytes, icv: bytes) -> None:
        """Raise IntegrityError unless ``icv`` matches; compared in constant time."""
        if self.hash_name is None:
            return
        if not _hmac.compare_digest(self.compute(key, data), bytes(icv)):
            raise IntegrityError(f"ICV mismatch ({self.name})")


#: INTEG transforms with an IANA id, as in Wireshark's ikev2_auth_algs.
INTEG_SPECS: tuple[IntegSpec, ...] = (
    IntegSpec(IntegId.NONE, "NONE [RFC4306]", 0, 0),
    IntegSpec(IntegId.AUTH_HMAC_MD5_96, "HMAC_MD5_96 [RFC2403]", 16, 12, "md5"),
    IntegSpec(IntegId.AUTH_HMAC_SHA1_96, "HMAC_SHA1_96 [RFC2404]", 20, 12, "sha1"),
    IntegSpec(IntegId.AUTH_HMAC_MD5_128, "HMAC_MD5_128 [RFC4595]", 16, 16, "md5"),
    IntegSpec(IntegId.AUTH_HMAC_SHA1_160, "HMAC_SHA1_160 [RFC4595]", 20, 20, "sha1"),
    IntegSpec(IntegId.AUTH_HMAC_SHA2_256_128, "HMAC_SHA2_256_128 [RFC4868]", 32, 16, "sha256"),
    IntegSpec(IntegId.AUTH_HMAC_SHA2_384_192, "HMAC_SHA2_384_192 [RFC4868]", 48, 24, "sha384"),
    IntegSpec(IntegId.AUTH_HMAC_SHA2_512_256, "HMAC_SHA2_512_256 [RFC4868]", 64, 32, "sha512"),
)
#: Wireshark's "skip the ICV" entries: the ICV length is known, its value is never checked.
NO_CHECKING_SPECS: tuple[IntegSpec, ...] = tuple(
    IntegSpec(IntegId.NONE, f"ANY {bits}-bits of Authentication [No Checking]", 0, bits // 8)
    for bits in (64, 96, 128, 160, 192, 256)
)

INTEG_BY_NAME: dict[str, IntegSpec] = {s.name: s for s in INTEG_SPECS + NO_CHECKING_SPECS}
_INTEG_BY_ID: dict[int, IntegSpec] = {s.transform_id: s for s in INTEG_SPECS}


def integ_spec(transform_id: int) -> IntegSpec | None:
    """The spec for a negotiated INTEG transform (``IntegId.NONE`` for AEAD ciphers)."""
    return _INTEG_BY_ID.get(transform_id)


# --------------------------------------------------------------------------------------
# ESP names (Wireshark's esp_sa UAT, packet-ipsec.c): the key length picks the key size.


@dataclass(frozen=True, slots=True)
class EspEncrName:
    """An ``esp_sa`` encryption name. ``transform_id`` None is the deprecated
    "AES-GCM [RFC4106]", whose ICV length comes from the "ANY n bit" authentication."""

    name: str
    transform_id: int | None

    def spec(self, key_len: int, icv_len: int = 0) -> EncrSpec | None:
        """The EncrSpec for a key of ``key_len`` octets (salt included), or None."""
        tid = self.transform_id
        if tid is None:
            tid = {8: EncrId.AES_GCM_8, 12: EncrId.AES_GCM_12, 16: EncrId.AES_GCM_16}.get(icv_len)
        return next((s for s in ENCR_SPECS + ESP_LEGACY_SPECS if s.transform_id == tid and s.key_len == key_len),
                    None)

    def key_lens(self) -> tuple[int, ...]:
        """Key lengths (octets) this name accepts, for error messages."""
        tid = EncrId.AES_GCM_16 if self.transform_id is None else self.transform_id
        return tuple(s.key_len for s in ENCR_SPECS + ESP_LEGACY_SPECS if s.transform_id == tid)

    def key_lens_text(self) -> str:
        lens = self.key_lens()
        if len(lens) > 4 and lens == tuple(range(lens[0], lens[-1] + 1)):
            return f"{lens[0]} to {lens[-1]}"
        return ", ".join(str(n) for n in lens)

    @property
    def unsupported(self) -> str | None:
        """Why this build cannot decrypt it (a missing optional library), else None."""
        if self.transform_id == ENCR_TWOFISH_CBC and _twofish() is None:
            return f"not supported: {self.name} (needs the oxifish package: pip install oxifish)"
        return None


def _twofish():
    """oxifish (RustCrypto's Twofish), if installed; cryptography has no Twofish."""
    try:
        import oxifish
    except ImportError:
        return None
    return oxifish


ESP_ENCR_NAMES: tuple[EspEncrName, ...] = (
    EspEncrName("NULL", EncrId.NULL),
    EspEncrName("TripleDES-CBC [RFC2451]", EncrId.TRIPLE_DES),
    EspEncrName("AES-CBC [RFC3602]", EncrId.AES_CBC),
    EspEncrName("AES-CTR [RFC3686]", EncrId.AES_CTR),
    EspEncrName("AES-GCM [RFC4106]", None),
    EspEncrName("AES-GCM with 8 octet ICV [RFC4106]", EncrId.AES_GCM_8),
    EspEncrName("AES-GCM with 12 octet ICV [RFC4106]", EncrId.AES_GCM_12),
    EspEncrName("AES-GCM with 16 octet ICV [RFC4106]", EncrId.AES_GCM_16),
    EspEncrName("DES-CBC [RFC2405]", EncrId.DES),
    EspEncrName("CAST5-CBC [RFC2144]", EncrId.CAST),
    EspEncrName("BLOWFISH-CBC [RFC2451]", EncrId.BLOWFISH),
    EspEncrName("TWOFISH-CBC", ENCR_TWOFISH_CBC),
    EspEncrName("ChaCha20-Poly1305 [RFC7634]", EncrId.CHACHA20_POLY1305),  # not in Wireshark
)
ESP_ENCR_BY_NAME: dict[str, EspEncrName] = {e.name: e for e in ESP_ENCR_NAMES}
#: Spellings other writers use: strongSwan's save-keys writes "TripleDes-CBC", which
#: Wireshark's case-sensitive UAT check rejects.
ESP_ENCR_ALIASES: dict[str, str] = {"TripleDes-CBC [RFC2451]": "TripleDES-CBC [RFC2451]"}

#: esp_sa authentication names, as IntegSpecs of the same IANA transforms.
ESP_AUTH_BY_NAME: dict[str, IntegSpec] = {s.name: s for s in (
    IntegSpec(IntegId.NONE, "NULL", 0, 0),
    IntegSpec(IntegId.AUTH_HMAC_SHA1_96, "HMAC-SHA-1-96 [RFC2404]", 20, 12, "sha1"),
    # the pre-RFC 4868 truncation (USAGI/KAME, old Linux): SHA-256 cut to 96 bits
    IntegSpec(IntegId.NONE, "HMAC-SHA-256-96 [draft-ietf-ipsec-ciph-sha-256-00]", 32, 12, "sha256"),
    IntegSpec(IntegId.AUTH_HMAC_SHA2_256_128, "HMAC-SHA-256-128 [RFC4868]", 32, 16, "sha256"),
    IntegSpec(IntegId.AUTH_HMAC_SHA2_384_192, "HMAC-SHA-384-192 [RFC4868]", 48, 24, "sha384"),
    IntegSpec(IntegId.AUTH_HMAC_SHA2_512_256, "HMAC-SHA-512-256 [RFC4868]", 64, 32, "sha512"),
    IntegSpec(IntegId.AUTH_HMAC_MD5_96, "HMAC-MD5-96 [RFC2403]", 16, 12, "md5"),
    IntegSpec(IntegId.NONE, "MAC-RIPEMD-160-96 [RFC2857]", 20, 12, "ripemd160"),
    *(IntegSpec(IntegId.NONE, f"ANY {bits} bit authentication [no checking]", 0, bits // 8)
      for bits in (64, 96, 128, 192, 256)),
)}


# --------------------------------------------------------------------------------------
# The bare ciphers


def _check_len(what: str, value: bytes, expected: int, name: str,
               error: type[Exception] = DecryptError) -> None:
    if len(value) != expected:
        raise error(f"{what} is {len(value)} octets; {name} needs {expected}")


#: CBC block ciphers by transform id (AES otherwise).
_BLOCK_CIPHERS = {EncrId.TRIPLE_DES: TripleDES, EncrId.DES: TripleDES, EncrId.BLOWFISH: Blowfish,
                  EncrId.CAST: CAST5}


def _aes_or_3des(encr: EncrSpec, key: bytes):
    if encr.transform_id == EncrId.DES:  # single DES = 3DES with K1 = K2 = K3 (cryptography's advice)
        key = bytes(key) * 3
    return _BLOCK_CIPHERS.get(encr.transform_id, algorithms.AES)(key)


def _twofish_cbc(key: bytes, iv: bytes, data: bytes, decrypt: bool) -> bytes:
    lib = _twofish()
    if lib is None:
        raise DecryptError("not supported: TWOFISH-CBC (needs the oxifish package: pip install oxifish)")
    k = lib.TwofishKey(bytes(key))
    if decrypt:
        return k.decrypt(bytes(data), lib.Mode.CBC, iv=bytes(iv), padding=lib.Padding.NONE)
    return k.encrypt(bytes(data), lib.Mode.CBC, iv=bytes(iv), padding=lib.Padding.NONE)


def _split_key(encr: EncrSpec, key: bytes, error: type[Exception] = DecryptError) -> tuple[bytes, bytes]:
    """SK_e = cipher key | salt (RFC 5282 §7.1, RFC 5930 §2, RFC 7634 §2)."""
    _check_len("encryption key", key, encr.key_len, encr.name, error)
    key = bytes(key)
    cut = len(key) - encr.salt_len
    return key[:cut], key[cut:]


def encr_decrypt(encr: EncrSpec, key: bytes, iv: bytes, ciphertext: bytes,
                 aad: bytes = b"", icv: bytes = b"") -> bytes:
    """Decrypt with the bare cipher; AEAD ciphers check ``icv`` over ``aad`` | ciphertext.

    ``key`` is SK_e as in the key file (salt included). No padding is removed.
    """
    cipher_key, salt = _split_key(encr, key)
    _check_len("IV", iv, encr.iv_len, encr.name)
    mode = encr.mode
    if encr.aead:
        _check_len("ICV", icv, encr.icv_len, encr.name)
        nonce = salt + bytes(iv)
        try:
            if mode is CipherMode.CCM:
                return AESCCM(cipher_key, tag_length=encr.icv_len).decrypt(nonce, ciphertext + icv, aad)
            if mode is CipherMode.CHACHA20_POLY1305:
                return ChaCha20Poly1305(cipher_key).decrypt(nonce, ciphertext + icv, aad)
            if encr.icv_len == 16:
                return AESGCM(cipher_key).decrypt(nonce, ciphertext + icv, aad)
            # truncated GCM tags (RFC 4106 §6, NIST SP 800-38D §5.2.1.2)
            dec = Cipher(algorithms.AES(cipher_key), modes.GCM(nonce, icv, min_tag_length=len(icv))).decryptor()
            dec.authenticate_additional_data(aad)
            return dec.update(ciphertext) + dec.finalize()
        except InvalidTag:
            raise IntegrityError(f"AEAD tag mismatch ({encr.name})") from None
    if mode is CipherMode.NULL:
        return bytes(ciphertext)
    if mode is CipherMode.CTR:  # RFC 3686 §4: nonce | IV | 32-bit block counter from 1
        cipher = Cipher(algorithms.AES(cipher_key), modes.CTR(salt + bytes(iv) + b"\0\0\0\1"))
    else:
        if len(ciphertext) % encr.block_len:
            raise DecryptError(f"ciphertext is {len(ciphertext)} octets, not a multiple of "
                               f"the {encr.block_len}-octet block of {encr.name}")
        if encr.transform_id == ENCR_TWOFISH_CBC:
            return _twofish_cbc(cipher_key, iv, ciphertext, True)
        cipher = Cipher(_aes_or_3des(encr, cipher_key), modes.CBC(bytes(iv)))
    dec = cipher.decryptor()
    return dec.update(ciphertext) + dec.finalize()


def encr_encrypt(encr: EncrSpec, key: bytes, iv: bytes, plaintext: bytes,
                 aad: bytes = b"") -> tuple[bytes, bytes]:
    """Encrypt with the bare cipher; returns (ciphertext, AEAD tag or b"")."""
    cipher_key, salt = _split_key(encr, key, ValueError)
    _check_len("IV", iv, encr.iv_len, encr.name, ValueError)
    mode = encr.mode
    if encr.aead:
        nonce = salt + bytes(iv)
        if mode is CipherMode.CCM:
            out = AESCCM(cipher_key, tag_length=encr.icv_len).encrypt(nonce, plaintext, aad)
        elif mode is CipherMode.CHACHA20_POLY1305:
            out = ChaCha20Poly1305(cipher_key).encrypt(nonce, plaintext, aad)
        else:
            out = AESGCM(cipher_key).encrypt(nonce, plaintext, aad)
            out = out[:-16] + out[-16:][: encr.icv_len]  # truncated tag = leftmost octets
        return out[: -encr.icv_len], out[-encr.icv_len:]
    if mode is CipherMode.NULL:
        return bytes(plaintext), b""
    if mode is CipherMode.CTR:
        cipher = Cipher(algorithms.AES(cipher_key), modes.CTR(salt + bytes(iv) + b"\0\0\0\1"))
    else:
        if len(plaintext) % encr.block_len:
            raise ValueError(f"plaintext is not a multiple of the {encr.block_len}-octet block")
        if encr.transform_id == ENCR_TWOFISH_CBC:
            return _twofish_cbc(cipher_key, iv, plaintext, False), b""
        cipher = Cipher(_aes_or_3des(encr, cipher_key), modes.CBC(bytes(iv)))
    enc = cipher.encryptor()
    return enc.update(plaintext) + enc.finalize(), b""


# --------------------------------------------------------------------------------------
# The SK / SKF payload (RFC 7296 §3.14, RFC 7383 §2.5)


def _icv_len(encr: EncrSpec, integ: IntegSpec | None) -> int:
    if encr.aead:
        return encr.icv_len
    return integ.icv_len if integ is not None else 0


def sk_encrypted_len(encr: EncrSpec, integ: IntegSpec | None, plaintext_len: int) -> int:
    """Octets after the SK header: IV | payloads | Padding | Pad Length | ICV."""
    padded = plaintext_len + 1
    padded += -padded % encr.block_len
    return encr.iv_len + padded + _icv_len(encr, integ)


class _SkOpener:
    """The ICV check and decryption of one (cipher, integrity, SK_e, SK_a), keyed once.

    Building an OpenSSL context costs ~15 µs (``Cipher(...).decryptor()``) and an HMAC key
    schedule ~2 µs, against ~1.5 µs for the work itself on an IKE message, so per key they
    are made once: CBC runs as ECB over the ciphertext XORed with IV | C[0..n-2] (the CBC
    definition, NIST SP 800-38A §6.2; an ECB context keeps no state between calls), HMAC
    copies the hashes of K^ipad / K^opad (RFC 2104 §2), AEAD reuses its keyed object. Only
    built when every key length is right; anything else takes the general path below.
    """

    __slots__ = ("iv_len", "icv_len", "block_len", "inner", "outer", "ecb", "aead", "salt")

    def __init__(self, encr: EncrSpec, integ: IntegSpec | None, sk_e: bytes, sk_a: bytes) -> None:
        self.iv_len, self.icv_len, self.block_len = encr.iv_len, _icv_len(encr, integ), encr.block_len
        self.inner = self.outer = self.ecb = self.aead = None
        cipher_key, self.salt = _split_key(encr, sk_e)
        mode = encr.mode
        if encr.aead:
            if mode is CipherMode.CCM:
                self.aead = AESCCM(cipher_key, tag_length=encr.icv_len)
            elif mode is CipherMode.CHACHA20_POLY1305:
                self.aead = ChaCha20Poly1305(cipher_key)
            else:
                self.aead = AESGCM(cipher_key)
            return
        if integ is not None and integ.checks:
            new = getattr(hashlib, integ.hash_name)
            key = bytes(sk_a)
            block = new().block_size
            if len(key) > block:
                key = new(key).digest()
            key = key.ljust(block, b"\0")
            self.inner = new(bytes(b ^ 0x36 for b in key))
            self.outer = new(bytes(b ^ 0x5C for b in key))
        self.ecb = Cipher(_aes_or_3des(encr, cipher_key), modes.ECB()).decryptor()

    @staticmethod
    def usable(encr: EncrSpec, integ: IntegSpec | None, sk_e: bytes, sk_a: bytes) -> bool:
        mode = encr.mode
        if encr.aead:
            return len(sk_e) == encr.key_len and (mode is not CipherMode.GCM or encr.icv_len == 16)
        if mode is not CipherMode.CBC or len(sk_e) != encr.key_len:
            return False
        return integ is None or not integ.checks or len(sk_a) == integ.key_len

    def open(self, encr: EncrSpec, message: bytes, start: int, end: int) -> bytes:
        iv_end = start + self.iv_len
        if self.aead is not None:
            try:
                return self.aead.decrypt(self.salt + message[start:iv_end], message[iv_end:], message[:start])
            except InvalidTag:
                raise IntegrityError(f"AEAD tag mismatch ({encr.name})") from None
        if self.inner is not None:
            h = self.inner.copy()
            h.update(message[:end])
            o = self.outer.copy()
            o.update(h.digest())
            if not _hmac.compare_digest(o.digest()[: self.icv_len], message[end:]):
                raise IntegrityError("ICV mismatch")  # named by sk_decrypt
        n = end - iv_end
        if n % self.block_len:
            raise DecryptError(f"ciphertext is {n} octets, not a multiple of "
                               f"the {self.block_len}-octet block of {encr.name}")
        ct = message[iv_end:end]
        return (int.from_bytes(self.ecb.update(ct), "big")
                ^ int.from_bytes(message[start:end - self.block_len], "big")).to_bytes(n, "big")


_OPENERS: dict[tuple, tuple[_SkOpener, str]] = {}
_OPENERS_MAX = 4096


def _opener(encr: EncrSpec, integ: IntegSpec | None, sk_e: bytes, sk_a: bytes) -> tuple[_SkOpener, str] | None:
    key = (sk_e, sk_a, encr.name, integ.name if integ is not None else None)
    got = _OPENERS.get(key)
    if got is None:
        if not _SkOpener.usable(encr, integ, sk_e, sk_a):
            return None
        if len(_OPENERS) >= _OPENERS_MAX:
            _OPENERS.clear()
        got = _OPENERS[key] = (_SkOpener(encr, integ, sk_e, sk_a), integ.name if integ is not None else "")
    return got


def sk_decrypt(encr: EncrSpec, integ: IntegSpec | None, sk_e: bytes, sk_a: bytes, message: bytes,
               sk_offset: int, sk_header_len: int) -> bytes:
    """Check the ICV, then decrypt the SK/SKF payload; returns the inner payload chain."""
    start = sk_offset + sk_header_len
    icv_len = _icv_len(encr, integ)
    body = len(message) - start
    minimum = encr.iv_len + max(encr.block_len, 1) + icv_len
    if start < 0 or body < minimum:
        raise DecryptError(f"encrypted part is {max(body, 0)} octets; {encr.name} needs at least "
                           f"{minimum} (IV {encr.iv_len} + data + ICV {icv_len})")
    end = len(message) - icv_len
    fast = _opener(encr, integ, sk_e, sk_a)
    if fast is not None:
        opener, integ_name = fast
        try:
            plain = opener.open(encr, message, start, end)
        except IntegrityError:
            if opener.aead is not None:
                raise
            raise IntegrityError(f"ICV mismatch ({integ_name})") from None
        pad_len = plain[-1]
        if pad_len >= len(plain):
            raise DecryptError(f"Pad Length {pad_len} exceeds the {len(plain)} decrypted octets")
        return plain[: len(plain) - pad_len - 1]
    iv = message[start:start + encr.iv_len]
    ciphertext = message[start + encr.iv_len:end]
    icv = message[end:]
    if encr.aead:
        plain = encr_decrypt(encr, sk_e, iv, ciphertext, aad=message[:start], icv=icv)
    else:
        if integ is not None and integ.checks:
            _check_len("SK_a", sk_a, integ.key_len, integ.name)
            integ.verify(sk_a, message[:end], icv)  # before anything is decrypted
        plain = encr_decrypt(encr, sk_e, iv, ciphertext)
    pad_len = plain[-1]
    if pad_len >= len(plain):
        raise DecryptError(f"Pad Length {pad_len} exceeds the {len(plain)} decrypted octets")
    return plain[: len(plain) - pad_len - 1]


def sk_encrypt(encr: EncrSpec, integ: IntegSpec | None, sk_e: bytes, sk_a: bytes, aad_prefix: bytes,
               plaintext: bytes, iv: bytes | None = None) -> bytes:
    """IV | ciphertext | ICV for ``plaintext``; ``aad_prefix`` is the message up to the SK body."""
    if iv is None:
        iv = os.urandom(encr.iv_len)
    pad_len = -(len(plaintext) + 1) % encr.block_len
    padded = bytes(plaintext) + bytes(pad_len) + bytes([pad_len])
    if encr.aead:
        ciphertext, tag = encr_encrypt(encr, sk_e, iv, padded, aad=bytes(aad_prefix))
        return bytes(iv) + ciphertext + tag
    ciphertext, _ = encr_encrypt(encr, sk_e, iv, padded)
    out = bytes(iv) + ciphertext
    if integ is None or integ.icv_len == 0:
        return out
    _check_len("SK_a", sk_a, integ.key_len, integ.name, ValueError)
    return out + integ.compute(sk_a, bytes(aad_prefix) + out)


# --------------------------------------------------------------------------------------
# PRF (RFC 7296 §2.13) for the reference peer's key derivation


@dataclass(frozen=True, slots=True)
class PrfSpec:
    prf_id: int  # iana.PrfId
    hash_name: str

    @property
    def name(self) -> str:
        return name_of(PrfId, self.prf_id)

    @property
    def out_len(self) -> int:
        """Output length, which is also the preferred key length (RFC 7296 §2.13-2.14)."""
        return _HASHES[self.hash_name].digest_size


PRF_BY_ID: dict[int, PrfSpec] = {p.prf_id: p for p in (
    PrfSpec(PrfId.PRF_HMAC_MD5, "md5"),  # RFC 2104
    PrfSpec(PrfId.PRF_HMAC_SHA1, "sha1"),  # RFC 2104
    PrfSpec(PrfId.PRF_HMAC_SHA2_256, "sha256"),  # RFC 4868 §2.1
    PrfSpec(PrfId.PRF_HMAC_SHA2_384, "sha384"),
    PrfSpec(PrfId.PRF_HMAC_SHA2_512, "sha512"),
)}


def _prf_spec(prf_id: int) -> PrfSpec:
    spec = PRF_BY_ID.get(prf_id)
    if spec is None:
        raise ValueError(f"unsupported PRF {name_of(PrfId, prf_id)}")
    return spec


def prf(prf_id: int, key: bytes, data: bytes) -> bytes:
    """prf(K, S): HMAC with the PRF's hash (RFC 7296 §2.13, RFC 4868 §2.1)."""
    return _hmac_digest(_prf_spec(prf_id).hash_name, key, data)


def prf_plus(prf_id: int, key: bytes, seed: bytes, length: int) -> bytes:
    """prf+(K, S) = T1 | T2 | ..., Tn = prf(K, Tn-1 | S | n), cut to ``length`` (§2.13)."""
    spec = _prf_spec(prf_id)
    if length > 255 * spec.out_len:
        raise ValueError(f"prf+ yields at most {255 * spec.out_len} octets with {spec.name}")
    out, block, n = b"", b"", 1
    while len(out) < length:
        block = _hmac_digest(spec.hash_name, key, block + bytes(seed) + bytes([n]))
        out += block
        n += 1
    return out[:length]

"""dissectors.crypto against vectors it did not produce itself.

- published vectors: RFC 3602 (AES-CBC), RFC 3686 (AES-CTR), the GCM specification's test
  cases 3/4/9/15 (the vectors RFC 4106 points to), RFC 8439 §2.8.2 (ChaCha20-Poly1305 AEAD),
  NIST SP 800-67 (3DES), RFC 2202 (HMAC-MD5/SHA-1), RFC 4231 / RFC 4868 (HMAC-SHA-2);
- IKE messages assembled here byte by byte and sealed with `cryptography`'s primitives and the
  standard library's hmac directly (not with sk_encrypt), then opened with sk_decrypt;
- real SK payloads from the strongSwan captures in ../shared/captures and samples/.
"""

from __future__ import annotations

import hmac
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from dissectors import crypto
from dissectors.capture import iter_datagrams
from dissectors.crypto import (ENCR_BY_NAME, ESP_AUTH_BY_NAME, ESP_ENCR_BY_NAME,
                               INTEG_BY_NAME, DecryptError, IntegrityError, encr_decrypt,
                               encr_spec, integ_spec, prf, prf_plus, sk_decrypt, sk_encrypt,
                               sk_encrypted_len)
from dissectors.iana import EncrId, IntegId, PrfId
from dissectors.keys import load_keys
from dissectors.udpencap import UdpKind, classify_udp
from tests.conftest import all_captures, capture_id

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover
    TripleDES = algorithms.TripleDES

h = bytes.fromhex

# --------------------------------------------------------------------------------------
# The tables: our own expectations, written from the RFCs (not read back from crypto.py)

#: name -> (IANA id, cipher key octets, salt, IV, block, ICV)   [RFC 3602, 2451, 5930, 5282, 7634]
ENCR_EXPECTED = {
    "NULL [RFC2410]": (EncrId.NULL, 0, 0, 0, 1, 0),
    "3DES [RFC2451]": (EncrId.TRIPLE_DES, 24, 0, 8, 8, 0),
    **{f"AES-CBC-{b} [RFC3602]": (EncrId.AES_CBC, b // 8, 0, 16, 16, 0) for b in (128, 192, 256)},
    **{f"AES-CTR-{b} [RFC5930]": (EncrId.AES_CTR, b // 8, 4, 8, 1, 0) for b in (128, 192, 256)},
    **{f"AES-GCM-{b} with {icv} octet ICV [RFC5282]": (gcm, b // 8, 4, 8, 1, icv)
       for gcm, icv in ((EncrId.AES_GCM_8, 8), (EncrId.AES_GCM_12, 12), (EncrId.AES_GCM_16, 16))
       for b in (128, 192, 256)},
    **{f"AES-CCM-{b} with {icv} octet ICV [RFC5282]": (ccm, b // 8, 3, 8, 1, icv)
       for ccm, icv in ((EncrId.AES_CCM_8, 8), (EncrId.AES_CCM_12, 12), (EncrId.AES_CCM_16, 16))
       for b in (128, 192, 256)},
    "ChaCha20-Poly1305 [RFC7634]": (EncrId.CHACHA20_POLY1305, 32, 4, 8, 1, 16),
}

#: name -> (IANA id, key octets, ICV octets, hashlib name or None)
INTEG_EXPECTED = {
    "NONE [RFC4306]": (IntegId.NONE, 0, 0, None),
    "HMAC_MD5_96 [RFC2403]": (IntegId.AUTH_HMAC_MD5_96, 16, 12, "md5"),
    "HMAC_SHA1_96 [RFC2404]": (IntegId.AUTH_HMAC_SHA1_96, 20, 12, "sha1"),
    "HMAC_MD5_128 [RFC4595]": (IntegId.AUTH_HMAC_MD5_128, 16, 16, "md5"),
    "HMAC_SHA1_160 [RFC4595]": (IntegId.AUTH_HMAC_SHA1_160, 20, 20, "sha1"),
    "HMAC_SHA2_256_128 [RFC4868]": (IntegId.AUTH_HMAC_SHA2_256_128, 32, 16, "sha256"),
    "HMAC_SHA2_384_192 [RFC4868]": (IntegId.AUTH_HMAC_SHA2_384_192, 48, 24, "sha384"),
    "HMAC_SHA2_512_256 [RFC4868]": (IntegId.AUTH_HMAC_SHA2_512_256, 64, 32, "sha512"),
    **{f"ANY {n}-bits of Authentication [No Checking]": (IntegId.NONE, 0, n // 8, None)
       for n in (64, 96, 128, 160, 192, 256)},
}

#: Wireshark 4.0.17's IKEv2 UAT names (libwireshark strings / packet-isakmp.c vs_ikev2_*_algs).
WIRESHARK_IKEV2_NAMES = {name for name in ENCR_EXPECTED if "ChaCha" not in name} | set(INTEG_EXPECTED)

#: Wireshark 4.0.17's esp_sa names we support (packet-ipsec.c esp_*_type_vals).
# Wireshark's esp_encryption_type_vals / esp_authentication_type_vals (packet-ipsec.c), all of them
WIRESHARK_ESP_ENCR = {"NULL", "TripleDES-CBC [RFC2451]", "AES-CBC [RFC3602]", "AES-CTR [RFC3686]",
                      "DES-CBC [RFC2405]", "CAST5-CBC [RFC2144]", "BLOWFISH-CBC [RFC2451]", "TWOFISH-CBC",
                      "AES-GCM [RFC4106]", "AES-GCM with 8 octet ICV [RFC4106]",
                      "AES-GCM with 12 octet ICV [RFC4106]", "AES-GCM with 16 octet ICV [RFC4106]"}
WIRESHARK_ESP_AUTH = {"NULL", "HMAC-SHA-1-96 [RFC2404]", "HMAC-SHA-256-96 [draft-ietf-ipsec-ciph-sha-256-00]",
                      "HMAC-SHA-256-128 [RFC4868]", "HMAC-SHA-384-192 [RFC4868]", "HMAC-SHA-512-256 [RFC4868]",
                      "HMAC-MD5-96 [RFC2403]", "MAC-RIPEMD-160-96 [RFC2857]",
                      *(f"ANY {n} bit authentication [no checking]" for n in (64, 96, 128, 192, 256))}


def test_every_encr_name_resolves_to_its_rfc_parameters():
    assert set(ENCR_BY_NAME) == set(ENCR_EXPECTED)
    for name, (tid, key, salt, iv, block, icv) in ENCR_EXPECTED.items():
        spec = ENCR_BY_NAME[name]
        assert (spec.transform_id, spec.key_bits, spec.salt_len, spec.iv_len, spec.block_len,
                spec.icv_len) == (tid, key * 8, salt, iv, block, icv), name
        assert spec.key_len == key + salt
        assert spec.aead == (icv > 0)
        assert encr_spec(tid, key * 8) is spec
        assert spec.name == name


def test_every_integ_name_resolves_to_its_rfc_parameters():
    assert set(INTEG_BY_NAME) == set(INTEG_EXPECTED)
    for name, (tid, key, icv, hash_name) in INTEG_EXPECTED.items():
        spec = INTEG_BY_NAME[name]
        assert (spec.transform_id, spec.key_len, spec.icv_len, spec.hash_name) == (tid, key, icv, hash_name)
        assert spec.checks == (hash_name is not None)
        if not name.startswith("ANY"):
            assert integ_spec(tid) is spec


def test_lookup_by_transform_id():
    assert encr_spec(EncrId.TRIPLE_DES, None).name == "3DES [RFC2451]"
    assert encr_spec(EncrId.NULL, None).name == "NULL [RFC2410]"
    assert encr_spec(EncrId.CHACHA20_POLY1305, None).name == "ChaCha20-Poly1305 [RFC7634]"
    assert encr_spec(EncrId.AES_CBC, None) is None  # AES needs its Key Length attribute
    assert encr_spec(EncrId.AES_CBC, 512) is None
    assert encr_spec(EncrId.CAMELLIA_CBC, 128) is None
    assert integ_spec(IntegId.NONE).name == "NONE [RFC4306]"
    assert integ_spec(IntegId.AUTH_AES_XCBC_96) is None


def test_wireshark_names():
    assert WIRESHARK_IKEV2_NAMES <= set(ENCR_BY_NAME) | set(INTEG_BY_NAME)
    assert set(ESP_ENCR_BY_NAME) == WIRESHARK_ESP_ENCR | {"ChaCha20-Poly1305 [RFC7634]"}
    assert set(ESP_AUTH_BY_NAME) == WIRESHARK_ESP_AUTH


def test_esp_names_pick_the_key_size_from_the_key_length():
    cbc = ESP_ENCR_BY_NAME["AES-CBC [RFC3602]"]
    assert [cbc.spec(n).name for n in (16, 24, 32)] == [f"AES-CBC-{b} [RFC3602]" for b in (128, 192, 256)]
    assert cbc.spec(20) is None
    assert ESP_ENCR_BY_NAME["AES-CTR [RFC3686]"].spec(20).name == "AES-CTR-128 [RFC5930]"
    assert ESP_ENCR_BY_NAME["AES-GCM with 16 octet ICV [RFC4106]"].spec(36).name == \
        "AES-GCM-256 with 16 octet ICV [RFC5282]"
    deprecated = ESP_ENCR_BY_NAME["AES-GCM [RFC4106]"]  # ICV length from "ANY n bit"
    assert deprecated.spec(20, 8).transform_id == EncrId.AES_GCM_8
    assert deprecated.spec(20, 16).transform_id == EncrId.AES_GCM_16
    assert deprecated.spec(20, 0) is None
    assert ESP_ENCR_BY_NAME["TripleDES-CBC [RFC2451]"].spec(24).name == "3DES [RFC2451]"
    assert crypto.ESP_ENCR_ALIASES["TripleDes-CBC [RFC2451]"] == "TripleDES-CBC [RFC2451]"


# --------------------------------------------------------------------------------------
# Published vectors through the bare cipher (encr_decrypt) and IntegSpec.compute

SINGLE_BLOCK = b"Single block msg"
COUNT_32 = bytes(range(32))


@pytest.mark.parametrize("key, iv, ct, pt", [
    # RFC 3602 §4, Case #1 and Case #2
    ("06a9214036b8a15b512e03d534120006", "3dafba429d9eb430b422da802c9fac41",
     "e353779c1079aeb82708942dbe77181a", SINGLE_BLOCK),
    ("c286696d887c9aa0611bbb3e2025a45a", "562e17996d093d28ddb3ba695a2e6f58",
     "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1", COUNT_32),
])
def test_aes_cbc_rfc3602(key, iv, ct, pt):
    assert encr_decrypt(ENCR_BY_NAME["AES-CBC-128 [RFC3602]"], h(key), h(iv), h(ct)) == pt


@pytest.mark.parametrize("bits, key, nonce, iv, ct, pt", [
    # RFC 3686 §6, Test Vectors #1, #2, #4, #7 (SK_e = key | nonce, RFC 5930 §2)
    (128, "ae6852f8121067cc4bf7a5765577f39e", "00000030", "0000000000000000",
     "e4095d4fb7a7b3792d6175a3261311b8", SINGLE_BLOCK),
    (128, "7e24067817fae0d743d6ce1f32539163", "006cb6db", "c0543b59da48d90b",
     "5104a106168a72d9790d41ee8edad388eb2e1efc46da57c8fce630df9141be28", COUNT_32),
    (192, "16af5b145fc9f579c175f93e3bfb0eed863d06ccfdb78515", "00000048", "36733c147d6d93cb",
     "4b55384fe259c9c84e7935a003cbe928", SINGLE_BLOCK),
    (256, "776beff2851db06f4c8a0542c8696f6c6a81af1eec96b4d37fc1d689e6c1c104", "00000060",
     "db5672c97aa8f0b2", "145ad01dbf824ec7560863dc71e3e0c0", SINGLE_BLOCK),
])
def test_aes_ctr_rfc3686(bits, key, nonce, iv, ct, pt):
    spec = ENCR_BY_NAME[f"AES-CTR-{bits} [RFC5930]"]
    assert encr_decrypt(spec, h(key + nonce), h(iv), h(ct)) == pt


GCM_PT = h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
           "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255")
GCM_SALT, GCM_IV = h("cafebabe"), h("facedbaddecaf888")  # the spec's 96-bit IV = salt | IV (RFC 4106 §4)
GCM_VECTORS = [  # McGrew & Viega, "The GCM mode of operation", test cases 3, 9, 15 (no AAD)
    (128, "feffe9928665731c6d6a8f9467308308",
     "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
     "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
     "4d5c2af327cd64a62cf35abd2ba6fab4"),
    (192, "feffe9928665731c6d6a8f9467308308feffe9928665731c",
     "3980ca0b3c00e841eb06fac4872a2757859e1ceaa6efd984628593b40ca1e19c"
     "7d773d00c144c525ac619d18c84a3f4718e2448b2fe324d9ccda2710acade256",
     "9924a7c8587336bfb118024db8674a14"),
    (256, "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
     "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
     "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
     "b094dac5d93471bdec1a502270e3cc6c"),
]


@pytest.mark.parametrize("icv", [8, 12, 16])
@pytest.mark.parametrize("bits, key, ct, tag", GCM_VECTORS)
def test_aes_gcm_published_vectors(bits, key, ct, tag, icv):
    spec = ENCR_BY_NAME[f"AES-GCM-{bits} with {icv} octet ICV [RFC5282]"]
    # a truncated GCM tag is the leftmost octets of the full tag (RFC 4106 §6)
    assert encr_decrypt(spec, h(key) + GCM_SALT, GCM_IV, h(ct), icv=h(tag)[:icv]) == GCM_PT
    bad = bytearray(h(tag)[:icv])
    bad[-1] ^= 1
    with pytest.raises(IntegrityError):
        encr_decrypt(spec, h(key) + GCM_SALT, GCM_IV, h(ct), icv=bytes(bad))


def test_aes_gcm_with_aad_test_case_4():
    spec = ENCR_BY_NAME["AES-GCM-128 with 16 octet ICV [RFC5282]"]
    ct = h("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
           "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091")
    aad = h("feedfacedeadbeeffeedfacedeadbeefabaddad2")
    key = h("feffe9928665731c6d6a8f9467308308") + GCM_SALT
    tag = h("5bc94fbc3221a5db94fae95ae7121a47")
    assert encr_decrypt(spec, key, GCM_IV, ct, aad=aad, icv=tag) == GCM_PT[:60]
    with pytest.raises(IntegrityError):
        encr_decrypt(spec, key, GCM_IV, ct, aad=aad[:-1] + b"\0", icv=tag)


def test_chacha20_poly1305_rfc8439_aead_vector():
    """RFC 8439 §2.8.2; its nonce 07000000 | 4041424344454647 is salt | IV (RFC 7634 §2)."""
    spec = ENCR_BY_NAME["ChaCha20-Poly1305 [RFC7634]"]
    key = h("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f") + h("07000000")
    ct = h("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6"
           "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36"
           "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc"
           "3ff4def08e4b7a9de576d26586cec64b6116")
    plain = encr_decrypt(spec, key, h("4041424344454647"), ct, aad=h("50515253c0c1c2c3c4c5c6c7"),
                         icv=h("1ae10b594f09e26a7e902ecbd0600691"))
    assert plain == (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip "
                     b"for the future, sunscreen would be it.")


def test_3des_sp800_67_vector():
    """NIST SP 800-67 example, first block (CBC with a zero IV equals ECB on block 1)."""
    spec = ENCR_BY_NAME["3DES [RFC2451]"]
    key = h("0123456789abcdef23456789abcdef01456789abcdef0123")
    assert encr_decrypt(spec, key, bytes(8), h("a826fd8ce53b855f")) == b"The qufc"


def test_null_encryption_is_identity():
    assert encr_decrypt(ENCR_BY_NAME["NULL [RFC2410]"], b"", b"", b"clear") == b"clear"


JEFE = (b"Jefe", b"what do ya want for nothing?")
HI = b"Hi There"


@pytest.mark.parametrize("name, key, data, full_mac", [
    # RFC 2202 test cases 1 and 2
    ("HMAC_MD5_96 [RFC2403]", b"\x0b" * 16, HI, "9294727a3638bb1c13f48ef8158bfc9d"),
    ("HMAC_MD5_128 [RFC4595]", *JEFE, "750c783e6ab0b503eaa86e310a5db738"),
    ("HMAC_SHA1_96 [RFC2404]", b"\x0b" * 20, HI, "b617318655057264e28bc0b6fb378c8ef146be00"),
    ("HMAC_SHA1_160 [RFC4595]", *JEFE, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    # RFC 4868 §2.7.2.1 AUTH256-1 and RFC 4231 test case 2
    ("HMAC_SHA2_256_128 [RFC4868]", b"\x0b" * 32, HI,
     "198a607eb44bfbc69903a0f1cf2bbdc5ba0aa3f3d9ae3c1c7a3b1696a0b68cf7"),
    ("HMAC_SHA2_256_128 [RFC4868]", *JEFE, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    ("HMAC_SHA2_384_192 [RFC4868]", *JEFE,
     "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649"),
    ("HMAC_SHA2_512_256 [RFC4868]", *JEFE,
     "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
     "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"),
])
def test_hmac_vectors_truncated(name, key, data, full_mac):
    spec = INTEG_BY_NAME[name]
    icv = h(full_mac)[: spec.icv_len]
    assert spec.compute(key, data) == icv
    spec.verify(key, data, icv)
    with pytest.raises(IntegrityError):
        spec.verify(key, data, icv[:-1] + bytes([icv[-1] ^ 0x80]))
    esp = {"md5": "HMAC-MD5-96 [RFC2403]", "sha1": "HMAC-SHA-1-96 [RFC2404]",
           "sha256": "HMAC-SHA-256-128 [RFC4868]", "sha384": "HMAC-SHA-384-192 [RFC4868]",
           "sha512": "HMAC-SHA-512-256 [RFC4868]"}[spec.hash_name]
    esp_spec = ESP_AUTH_BY_NAME[esp]
    assert esp_spec.compute(key, data) == h(full_mac)[: esp_spec.icv_len]


@pytest.mark.parametrize("name", [n for n in INTEG_BY_NAME if not INTEG_BY_NAME[n].checks])
def test_no_checking_integrity_accepts_anything(name):
    spec = INTEG_BY_NAME[name]
    spec.verify(b"", b"data", b"\xff" * spec.icv_len)
    with pytest.raises(ValueError):
        spec.compute(b"", b"data")


@pytest.mark.parametrize("prf_id, full_mac", [  # RFC 4231 test case 2; RFC 2202 test case 2
    (PrfId.PRF_HMAC_SHA2_256, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (PrfId.PRF_HMAC_SHA2_384, "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e"
                              "8e2240ca5e69e2c78b3239ecfab21649"),
    (PrfId.PRF_HMAC_SHA2_512, "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
                              "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"),
    (PrfId.PRF_HMAC_SHA1, "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
    (PrfId.PRF_HMAC_MD5, "750c783e6ab0b503eaa86e310a5db738"),
])
def test_prf_is_untruncated_hmac(prf_id, full_mac):
    assert prf(prf_id, *JEFE) == h(full_mac)


@pytest.mark.parametrize("prf_id, hash_name", [(PrfId.PRF_HMAC_SHA2_256, "sha256"),
                                               (PrfId.PRF_HMAC_SHA1, "sha1"),
                                               (PrfId.PRF_HMAC_SHA2_512, "sha512")])
def test_prf_plus_follows_rfc7296_2_13(prf_id, hash_name):
    key, seed = b"K" * 32, b"Ni | Nr | SPIi | SPIr"
    t1 = hmac.new(key, seed + b"\x01", hash_name).digest()
    blocks = [t1]
    while sum(map(len, blocks)) < 100:  # Tn = prf(K, Tn-1 | S | n)
        blocks.append(hmac.new(key, blocks[-1] + seed + bytes([len(blocks) + 1]), hash_name).digest())
    want = b"".join(blocks)[:100]
    assert prf_plus(prf_id, key, seed, 100) == want
    assert prf_plus(prf_id, key, seed, 7) == t1[:7]
    with pytest.raises(ValueError):
        prf_plus(prf_id, key, seed, 255 * len(t1) + 1)


def test_unsupported_prf():
    with pytest.raises(ValueError, match="PRF_AES128_XCBC"):
        prf(PrfId.PRF_AES128_XCBC, b"k", b"d")


# --------------------------------------------------------------------------------------
# Hand-assembled IKE messages, sealed with cryptography's primitives directly

SPI_I, SPI_R = h("0123456789abcdef"), h("fedcba9876543210")
INNER = bytes([0, 0, 0, 12]) + b"RFC9611!"  # one generic payload, 12 octets (Next Payload NONE)


def ike_header(length: int, next_payload: int, flags: int = 0x08) -> bytes:
    """RFC 7296 §3.1, INFORMATIONAL (37), message id 7."""
    return SPI_I + SPI_R + bytes([next_payload, 0x20, 37, flags]) + struct.pack("!II", 7, length)


def seal(name: str, integ_name: str, sk_e: bytes, sk_a: bytes, inner: bytes = INNER,
         skf: tuple[int, int] | None = None, extra_pad: int = 0) -> tuple[bytes, int, int]:
    """An IKE message with one SK (or SKF) payload; returns (message, sk_offset, header_len)."""
    tid, key_len, salt_len, iv_len, block, icv_len = ENCR_EXPECTED[name]
    _, _, integ_icv, hash_name = INTEG_EXPECTED[integ_name]
    pad = (-(len(inner) + 1)) % block + extra_pad * block
    padded = inner + bytes((0xA5 + i) & 0xFF for i in range(pad)) + bytes([pad])  # any padding value
    iv = bytes(range(0x40, 0x40 + iv_len))
    tag_len = icv_len if icv_len else integ_icv
    header_len = 8 if skf else 4
    body_len = iv_len + len(padded) + tag_len
    sk_header = bytes([41, 0]) + struct.pack("!H", header_len + body_len)  # Next Payload: N
    if skf:
        sk_header += struct.pack("!HH", *skf)
    aad = ike_header(28 + header_len + body_len, 53 if skf else 46) + sk_header
    key, salt = sk_e[: key_len], sk_e[key_len:]
    if icv_len:  # AEAD: AAD = IKE header .. SK header, nonce = salt | IV (RFC 5282 §5.1, RFC 7634 §4)
        nonce = salt + iv
        if tid == EncrId.CHACHA20_POLY1305:
            out = ChaCha20Poly1305(key).encrypt(nonce, padded, aad)
        elif salt_len == 3:
            out = AESCCM(key, tag_length=icv_len).encrypt(nonce, padded, aad)
        else:
            full = AESGCM(key).encrypt(nonce, padded, aad)
            out = full[:-16] + full[-16:][:icv_len]
        return aad + iv + out, 28, header_len
    if tid == EncrId.NULL:
        ct = padded
    elif salt_len:  # CTR: nonce | IV | counter starting at 1 (RFC 3686 §4)
        enc = Cipher(algorithms.AES(key), modes.CTR(salt + iv + b"\0\0\0\1")).encryptor()
        ct = enc.update(padded) + enc.finalize()
    else:
        algo = TripleDES(key) if tid == EncrId.TRIPLE_DES else algorithms.AES(key)
        enc = Cipher(algo, modes.CBC(iv)).encryptor()
        ct = enc.update(padded) + enc.finalize()
    msg = aad + iv + ct
    icv = hmac.new(sk_a, msg, hash_name).digest()[:integ_icv] if hash_name else bytes(integ_icv)
    return msg + icv, 28, header_len


def keys_for(name: str, integ_name: str) -> tuple[bytes, bytes]:
    _, key_len, salt_len, *_ = ENCR_EXPECTED[name]
    return (bytes((7 * i + 1) & 0xFF for i in range(key_len + salt_len)),
            bytes((5 * i + 3) & 0xFF for i in range(INTEG_EXPECTED[integ_name][1])))


def integ_for(name: str) -> str:
    return "NONE [RFC4306]" if ENCR_EXPECTED[name][5] else "HMAC_SHA2_256_128 [RFC4868]"


@pytest.mark.parametrize("name", list(ENCR_EXPECTED))
def test_sk_decrypt_every_cipher(name):
    integ_name = integ_for(name)
    sk_e, sk_a = keys_for(name, integ_name)
    encr, integ = ENCR_BY_NAME[name], INTEG_BY_NAME[integ_name]
    for extra_pad in (0, 1):
        msg, off, hl = seal(name, integ_name, sk_e, sk_a, extra_pad=extra_pad)
        assert sk_decrypt(encr, integ, sk_e, sk_a, msg, off, hl) == INNER


@pytest.mark.parametrize("integ_name", [n for n in INTEG_EXPECTED if n != "NONE [RFC4306]"])
def test_sk_decrypt_every_integrity(integ_name):
    name = "AES-CBC-128 [RFC3602]"
    sk_e, sk_a = keys_for(name, integ_name)
    msg, off, hl = seal(name, integ_name, sk_e, sk_a)
    encr, integ = ENCR_BY_NAME[name], INTEG_BY_NAME[integ_name]
    assert sk_decrypt(encr, integ, sk_e, sk_a, msg, off, hl) == INNER
    tampered = msg[:-1] + bytes([msg[-1] ^ 1])  # flip an ICV bit
    if integ.checks:
        with pytest.raises(IntegrityError):
            sk_decrypt(encr, integ, sk_e, sk_a, tampered, off, hl)
    else:  # "ANY n-bits [No Checking]": the ICV is only skipped
        assert sk_decrypt(encr, integ, sk_e, sk_a, tampered, off, hl) == INNER


@pytest.mark.parametrize("name", list(ENCR_EXPECTED))
def test_tampered_ciphertext_and_wrong_key_fail_integrity(name):
    integ_name = integ_for(name)
    sk_e, sk_a = keys_for(name, integ_name)
    encr, integ = ENCR_BY_NAME[name], INTEG_BY_NAME[integ_name]
    msg, off, hl = seal(name, integ_name, sk_e, sk_a)
    at = off + hl + encr.iv_len  # first ciphertext octet
    tampered = msg[:at] + bytes([msg[at] ^ 0x01]) + msg[at + 1:]
    with pytest.raises(IntegrityError) as err:
        sk_decrypt(encr, integ, sk_e, sk_a, tampered, off, hl)
    wrong_e = bytes([sk_e[0] ^ 0xFF]) + sk_e[1:] if sk_e else sk_e
    wrong_a = bytes([sk_a[0] ^ 0xFF]) + sk_a[1:] if sk_a else sk_a
    with pytest.raises(IntegrityError) as err2:
        sk_decrypt(encr, integ, wrong_e if encr.aead else sk_e, wrong_a, msg, off, hl)
    for e in (err.value, err2.value):
        assert all(k.hex() not in str(e) for k in (sk_e, sk_a, wrong_e, wrong_a) if k)


def test_tampered_header_fails_aead_and_hmac():
    for name in ("AES-GCM-128 with 16 octet ICV [RFC5282]", "AES-CBC-256 [RFC3602]"):
        integ_name = integ_for(name)
        sk_e, sk_a = keys_for(name, integ_name)
        msg, off, hl = seal(name, integ_name, sk_e, sk_a)
        tampered = msg[:20] + bytes([msg[20] ^ 1]) + msg[21:]  # message id
        with pytest.raises(IntegrityError):
            sk_decrypt(ENCR_BY_NAME[name], INTEG_BY_NAME[integ_name], sk_e, sk_a, tampered, off, hl)


def test_icv_is_checked_before_decryption():
    """A CBC body of the wrong length with a bad ICV reports the ICV, not the length."""
    name, integ_name = "AES-CBC-128 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]"
    sk_e, sk_a = keys_for(name, integ_name)
    msg, off, hl = seal(name, integ_name, sk_e, sk_a, inner=INNER * 3)  # 48 ciphertext octets
    cut = msg[:-17] + msg[-16:]  # drop one ciphertext octet
    with pytest.raises(IntegrityError):
        sk_decrypt(ENCR_BY_NAME[name], INTEG_BY_NAME[integ_name], sk_e, sk_a, cut, off, hl)


@pytest.mark.parametrize("name", ["AES-GCM-256 with 16 octet ICV [RFC5282]", "AES-CCM-128 with 8 octet ICV [RFC5282]",
                                  "ChaCha20-Poly1305 [RFC7634]", "AES-CBC-128 [RFC3602]"])
def test_skf_uses_its_8_octet_header_as_aad(name):
    integ_name = integ_for(name)
    sk_e, sk_a = keys_for(name, integ_name)
    encr, integ = ENCR_BY_NAME[name], INTEG_BY_NAME[integ_name]
    msg, off, hl = seal(name, integ_name, sk_e, sk_a, skf=(2, 3))
    assert hl == 8
    assert sk_decrypt(encr, integ, sk_e, sk_a, msg, off, hl) == INNER
    other_fragment = msg[:off + 5] + b"\x01" + msg[off + 6:]  # Fragment Number 2 -> 1
    with pytest.raises(IntegrityError):
        sk_decrypt(encr, integ, sk_e, sk_a, other_fragment, off, hl)
    if encr.aead:  # treating the SKF header as a 4-octet SK header changes AAD and IV
        with pytest.raises((IntegrityError, DecryptError)):
            sk_decrypt(encr, integ, sk_e, sk_a, msg, off, 4)


def test_decrypt_errors_name_lengths_not_keys():
    name, integ_name = "AES-CBC-128 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]"
    sk_e, sk_a = keys_for(name, integ_name)
    encr, integ = ENCR_BY_NAME[name], INTEG_BY_NAME[integ_name]
    msg, off, hl = seal(name, integ_name, sk_e, sk_a)
    with pytest.raises(DecryptError, match="needs at least"):
        sk_decrypt(encr, integ, sk_e, sk_a, msg[:off + hl + 20], off, hl)
    with pytest.raises(DecryptError, match="SK_a is 31 octets"):
        sk_decrypt(encr, integ, sk_e, sk_a[:-1], msg, off, hl)
    with pytest.raises(DecryptError, match="encryption key is 15 octets") as err:
        sk_decrypt(encr, integ, sk_e[:-1], sk_a, msg, off, hl)
    assert sk_e[:-1].hex() not in str(err.value)


def test_bad_pad_length_is_a_decrypt_error():
    name, integ_name = "AES-CBC-128 [RFC3602]", "HMAC_SHA2_256_128 [RFC4868]"
    sk_e, sk_a = keys_for(name, integ_name)
    padded = bytes(15) + b"\x20"  # Pad Length 32 in a 16-octet plaintext
    iv = bytes(16)
    enc = Cipher(algorithms.AES(sk_e), modes.CBC(iv)).encryptor()
    ct = enc.update(padded) + enc.finalize()
    msg = ike_header(28 + 4 + 16 + 16 + 16, 46) + bytes([0, 0]) + struct.pack("!H", 4 + 48) + iv + ct
    msg += hmac.new(sk_a, msg, "sha256").digest()[:16]
    with pytest.raises(DecryptError, match="Pad Length 32"):
        sk_decrypt(ENCR_BY_NAME[name], INTEG_BY_NAME[integ_name], sk_e, sk_a, msg, 28, 4)


# --------------------------------------------------------------------------------------
# sk_encrypt: round trip, and its output opens with the independent primitives


@pytest.mark.parametrize("name", list(ENCR_EXPECTED))
@pytest.mark.parametrize("plaintext", [b"", INNER, bytes(range(256)) * 3])
def test_sk_encrypt_round_trip(name, plaintext):
    integ_name = integ_for(name)
    sk_e, sk_a = keys_for(name, integ_name)
    encr, integ = ENCR_BY_NAME[name], INTEG_BY_NAME[integ_name]
    body_len = sk_encrypted_len(encr, integ, len(plaintext))
    aad = ike_header(28 + 4 + body_len, 46) + bytes([41, 0]) + struct.pack("!H", 4 + body_len)
    body = sk_encrypt(encr, integ, sk_e, sk_a, aad, plaintext)
    assert len(body) == body_len
    assert (body_len - encr.iv_len - (encr.icv_len or integ.icv_len)) % encr.block_len == 0
    assert sk_decrypt(encr, integ, sk_e, sk_a, aad + body, 28, 4) == plaintext


@pytest.mark.parametrize("name", list(ENCR_EXPECTED))
def test_sk_encrypt_matches_independent_sealing(name):
    """With the same IV and padding, sk_encrypt's bytes equal those sealed by hand above."""
    integ_name = integ_for(name)
    sk_e, sk_a = keys_for(name, integ_name)
    encr, integ = ENCR_BY_NAME[name], INTEG_BY_NAME[integ_name]
    inner = INNER + bytes(3)  # 15 octets + Pad Length: no padding octets in any cipher
    want, off, hl = seal(name, integ_name, sk_e, sk_a, inner=inner)
    aad = want[:off + hl]
    got = sk_encrypt(encr, integ, sk_e, sk_a, aad, inner, iv=want[off + hl:off + hl + encr.iv_len])
    assert aad + got == want


def test_sk_encrypt_refuses_no_checking_icv():
    encr, integ = ENCR_BY_NAME["AES-CBC-128 [RFC3602]"], INTEG_BY_NAME["ANY 96-bits of Authentication [No Checking]"]
    with pytest.raises(ValueError):
        sk_encrypt(encr, integ, bytes(16), b"", bytes(32), b"x")


# --------------------------------------------------------------------------------------
# Real SK payloads written by strongSwan (../shared/captures, samples/)

SK, SKF = 46, 53


def ike_payloads(pcap: str):
    """(message, sk_offset, sk_header_len) for every IKE message carrying SK/SKF."""
    for d in iter_datagrams(pcap):
        if d.proto != 17:
            continue
        kind = classify_udp(d.sport, d.dport, d.payload)
        if kind not in (UdpKind.IKE, UdpKind.IKE_NAT_T):
            continue
        msg = d.payload[4:] if kind is UdpKind.IKE_NAT_T else d.payload
        next_payload, off = msg[16], 28
        while next_payload not in (0, SK, SKF) and off + 4 <= len(msg):  # RFC 7296 §3.2
            next_payload, off = msg[off], off + struct.unpack_from("!H", msg, off + 2)[0]
        if next_payload in (SK, SKF):
            yield msg, off, 4 if next_payload == SK else 8


def walk_chain(plain: bytes) -> int:
    """Number of inner payloads; asserts their lengths add up exactly (RFC 7296 §3.2)."""
    off = count = 0
    while off < len(plain):
        length = struct.unpack_from("!H", plain, off + 2)[0]
        assert length >= 4
        off, count = off + length, count + 1
    assert off == len(plain)
    return count


REAL = all_captures()
#: SK/SKF messages per capture: every IKE message but the two IKE_SA_INIT ones (README of
#: ../shared/captures: 28 IKE messages each; the per-CPU capture has 10, frames 1-4, 7-10, 25-26).
SK_MESSAGES = {"sswan-aes128cbc-sha256-modp2048.pcap": 26, "sswan-aes256gcm16.pcap": 26,
               "strongswan6-percpu-2cpu/capture.pcap": 8, "strongswan6-percpu/capture.pcap": 8}


@pytest.mark.parametrize("item", REAL, ids=[capture_id(c) for c in REAL])
def test_real_strongswan_sk_payloads(item):
    capture, key_paths = item
    store = load_keys([str(p) for p in key_paths])
    assert store.problems == []
    opened = 0
    for msg, off, hl in ike_payloads(str(capture)):
        keys = store.ike_keys(msg[:8], msg[8:16])
        assert keys is not None
        sk_e, sk_a = (keys.sk_ei, keys.sk_ai) if msg[19] & 0x08 else (keys.sk_er, keys.sk_ar)
        plain = sk_decrypt(keys.encr, keys.integ, sk_e, sk_a, msg, off, hl)
        assert walk_chain(plain) >= (0 if msg[18] == 37 else 1)  # INFORMATIONAL may be empty
        at = len(msg) - 20
        with pytest.raises(IntegrityError):
            sk_decrypt(keys.encr, keys.integ, sk_e, sk_a, msg[:at] + bytes([msg[at] ^ 4]) + msg[at + 1:], off, hl)
        opened += 1
    key = next((k for k in SK_MESSAGES if capture_id(item).endswith(k)), None)
    assert opened == SK_MESSAGES[key] if key else opened > 0


@pytest.mark.parametrize("encr_name", sorted(ENCR_BY_NAME))
@pytest.mark.parametrize("integ_name", ["HMAC_SHA2_256_128 [RFC4868]", "HMAC_SHA1_96 [RFC2404]",
                                        "HMAC_SHA2_512_256 [RFC4868]", "NONE [RFC4306]"])
def test_sk_decrypt_keyed_once_equals_the_general_path(encr_name, integ_name):
    """The per-key contexts of ``sk_decrypt`` (CBC built on ECB, precomputed HMAC pads, reused
    AEAD objects) open what ``sk_encrypt`` sealed, twice over, and fail as the general path
    does: a flipped ICV bit is an IntegrityError naming the algorithm, a short SK_e a
    DecryptError."""
    import os

    encr, integ = ENCR_BY_NAME[encr_name], crypto.INTEG_BY_NAME[integ_name]
    integ = None if encr.aead else integ
    sk_e, sk_a = os.urandom(encr.key_len), os.urandom(integ.key_len if integ else 0)
    header = os.urandom(28) + b"\x00\x00\x00\x00"
    for size in (0, 1, 15, 16, 17, 200):
        plaintext = os.urandom(size)
        msg = header + crypto.sk_encrypt(encr, integ, sk_e, sk_a, header, plaintext)
        crypto._OPENERS.clear()
        assert crypto.sk_decrypt(encr, integ, sk_e, sk_a, msg, 28, 4) == plaintext
        assert crypto.sk_decrypt(encr, integ, sk_e, sk_a, msg, 28, 4) == plaintext  # keyed context again
        bad = msg[:-1] + bytes([msg[-1] ^ 1])
        if encr.aead or (integ is not None and integ.checks):
            with pytest.raises(crypto.IntegrityError) as err:
                crypto.sk_decrypt(encr, integ, sk_e, sk_a, bad, 28, 4)
            assert str(err.value).endswith(f"({encr.name if encr.aead else integ.name})")
    if encr.key_len:  # a key of the wrong length: the general path's DecryptError, every time
        for _ in range(2):
            with pytest.raises(crypto.DecryptError):
                crypto.sk_decrypt(encr, integ, sk_e[:-1], sk_a, msg, 28, 4)


# Known-answer vectors for the legacy esp_sa ciphers: DES (FIPS 81's "Now is t" example),
# Twofish (the reference paper's 128-bit all-zero key / plaintext), Blowfish (Schneier's
# test vector, key 0x0000000000000000 is 8 octets: below Wireshark's range, so the 16-octet
# variant of Eric Young's set), CAST5 (RFC 2144 B.1, 128-bit key).
LEGACY_KATS = [
    ("DES-CBC [RFC2405]", "0123456789abcdef", "4e6f772069732074", "3fa40e8a984d4815"),
    ("TWOFISH-CBC", "00" * 16, "00" * 16, "9f589f5cf6122c32b6bfec2f2ae8c35a"),
    ("CAST5-CBC [RFC2144]", "0123456712345678234567893456789a", "0123456789abcdef", "238b4fe5847e44b2"),
    ("BLOWFISH-CBC [RFC2451]", "f0e1d2c3b4a5968778695a4b3c2d1e0f", "fedcba9876543210", "93142887ee3be15c"),
]


@pytest.mark.parametrize("name, key, plain, cipher", LEGACY_KATS, ids=[k[0] for k in LEGACY_KATS])
def test_legacy_esp_ciphers_known_answers(name, key, plain, cipher):
    """One block under a zero IV: CBC's first block is the block cipher's (ECB) output."""
    entry = ESP_ENCR_BY_NAME[name]
    if entry.unsupported:
        pytest.skip(entry.unsupported)
    spec = entry.spec(len(bytes.fromhex(key)))
    iv = bytes(spec.iv_len)
    ct, _ = crypto.encr_encrypt(spec, bytes.fromhex(key), iv, bytes.fromhex(plain))
    assert ct.hex() == cipher
    assert crypto.encr_decrypt(spec, bytes.fromhex(key), iv, ct) == bytes.fromhex(plain)


def test_ripemd160_96_and_sha256_96():
    """RFC 2286 test case 1 (HMAC-RIPEMD160, key 0x0b * 20, "Hi There"), truncated to 96 bits."""
    ripemd = ESP_AUTH_BY_NAME["MAC-RIPEMD-160-96 [RFC2857]"]
    assert ripemd.compute(b"\x0b" * 20, b"Hi There").hex() == "24cb4bd67d20fc1a5d2ed773"
    sha = ESP_AUTH_BY_NAME["HMAC-SHA-256-96 [draft-ietf-ipsec-ciph-sha-256-00]"]
    # RFC 4231 test case 1, truncated to 96 bits
    assert sha.compute(b"\x0b" * 20, b"Hi There").hex() == "b0344c61d8db38535ca8afce"

"""dissectors.keymat against published vectors and against HMAC written out in the test."""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes, hmac

from dissectors import keymat
from dissectors.iana import PrfId

SHA256 = PrfId.PRF_HMAC_SHA2_256


def _hmac(key, data, algo=hashes.SHA256):
    h = hmac.HMAC(key, algo())
    h.update(data)
    return h.finalize()


def test_prf_rfc4868_vectors():
    # RFC 4868 §2.7.1 Test Case PRF-1 and PRF-2 (PRF-HMAC-SHA-256/384/512)
    assert keymat.prf(SHA256, b"\x0b" * 20, b"Hi There").hex() == \
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    assert keymat.prf(SHA256, b"Jefe", b"what do ya want for nothing?").hex() == \
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert keymat.prf(PrfId.PRF_HMAC_SHA2_384, b"\x0b" * 20, b"Hi There").hex().startswith("afd03944d84895626b0825f4ab46907f")
    assert keymat.prf(PrfId.PRF_HMAC_SHA2_512, b"\x0b" * 20, b"Hi There").hex().startswith("87aa7cdea5ef619d4ff0b4241a1d6cb0")


def test_prf_plus_is_t1_t2_t3():
    key, seed = b"k" * 32, b"seed"
    t1 = _hmac(key, seed + b"\x01")
    t2 = _hmac(key, t1 + seed + b"\x02")
    t3 = _hmac(key, t2 + seed + b"\x03")
    assert keymat.prf_plus(SHA256, key, seed, 80) == (t1 + t2 + t3)[:80]


def test_ike_keymat_splits_prf_plus_in_rfc_order():
    ni, nr, spi_i, spi_r = b"N" * 32, b"R" * 32, b"I" * 8, b"S" * 8
    g_ir = b"\x42" * 256
    seed = keymat.skeyseed(SHA256, ni, nr, g_ir)
    assert seed == _hmac(ni + nr, g_ir)
    km = keymat.ike_keymat(SHA256, seed, ni, nr, spi_i, spi_r, encr_key_len=16, integ_key_len=32)
    stream = keymat.prf_plus(SHA256, seed, ni + nr + spi_i + spi_r, 32 + 32 + 32 + 16 + 16 + 32 + 32)
    assert (km.sk_d, km.sk_ai, km.sk_ar, km.sk_ei, km.sk_er, km.sk_pi, km.sk_pr) == (
        stream[0:32], stream[32:64], stream[64:96], stream[96:112], stream[112:128],
        stream[128:160], stream[160:192])
    assert "secret" in repr(km.sk_d)


def test_aead_ike_keymat_has_no_integrity_keys_and_salted_encr_keys():
    km = keymat.ike_keymat(SHA256, b"s" * 32, b"n" * 32, b"m" * 32, b"i" * 8, b"r" * 8, 36, 0)
    assert km.sk_ai == km.sk_ar == b"" and len(km.sk_ei) == len(km.sk_er) == 36


def test_child_keymat_with_and_without_pfs():
    sk_d, ni, nr = b"d" * 32, b"n" * 32, b"m" * 32
    plain = keymat.child_keymat(SHA256, sk_d, ni, nr, 32, 32)
    stream = keymat.prf_plus(SHA256, sk_d, ni + nr, 128)
    assert (plain.encr_i, plain.integ_i, plain.encr_r, plain.integ_r) == (
        stream[:32], stream[32:64], stream[64:96], stream[96:])
    g_ir = b"\x07" * 32
    pfs = keymat.child_keymat(SHA256, sk_d, ni, nr, 36, 0, g_ir=g_ir)
    stream = keymat.prf_plus(SHA256, sk_d, g_ir + ni + nr, 72)
    assert (pfs.encr_i, pfs.encr_r, pfs.integ_i) == (stream[:36], stream[36:], b"")


def test_rekey_skeyseed():
    assert keymat.skeyseed_rekey(SHA256, b"d" * 32, b"g", b"n", b"r") == _hmac(b"d" * 32, b"gnr")


def test_psk_auth_rfc7296_2_15():
    psk, msg, nonce, sk_p, id_body = b"secret", b"M" * 300, b"N" * 32, b"P" * 32, b"\x02\0\0\0moon"
    octets = keymat.signed_octets(msg, nonce, sk_p, id_body, SHA256)
    assert octets == msg + nonce + _hmac(sk_p, id_body)
    assert keymat.psk_auth(SHA256, psk, octets) == _hmac(_hmac(psk, b"Key Pad for IKEv2"), octets)

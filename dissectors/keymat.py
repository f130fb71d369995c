"""IKEv2 key derivation (RFC 7296 §2.13-§2.18): pure functions, bytes in, ``Secret`` out.

Used by the reference peer to key its SAs and by the analyzer to derive Child SA keys from
SK_d. Nothing here does I/O or keeps state; results are ``Secret`` so they never print.

    prf(prf_id, key, data) -> Secret                       §2.13
    prf_plus(prf_id, key, seed, length) -> Secret          §2.13: T1 | T2 | ...
    skeyseed(prf_id, ni, nr, g_ir) -> Secret               §2.14
    skeyseed_rekey(prf_id, old_sk_d, g_ir, ni, nr)         §2.18
    ike_keymat(prf_id, skeyseed, ni, nr, spi_i, spi_r,
               encr_key_len, integ_key_len) -> IkeKeymat   §2.14: SK_d|ai|ar|ei|er|pi|pr
    child_keymat(prf_id, sk_d, ni, nr, encr_key_len,
                 integ_key_len, g_ir=None) -> ChildKeymat  §2.17 (g_ir for PFS)
    psk_auth(prf_id, psk, signed_octets) -> Secret         §2.15
    signed_octets(message, peer_nonce, sk_p, id_body, prf_id) -> bytes   §2.15

Key lengths are in octets and include the salt for AEAD/CTR ciphers (RFC 5282 §7.1, RFC
4106 §8.1: "the salt is taken from the end of the KEYMAT"), as in the key files. The PRF's
key length is its output length (HMAC PRFs, RFC 4868 §2.2); AES-XCBC/CMAC PRFs are not
supported.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import crypto
from .records import Secret

#: RFC 7296 §2.15: the pad string for the shared-secret AUTH method.
KEY_PAD = b"Key Pad for IKEv2"


class KeymatError(ValueError):
    """An unsupported PRF or impossible length (never contains key bytes)."""


def prf_len(prf_id: int) -> int:
    """Output (and preferred key) length of the PRF in octets."""
    spec = crypto.PRF_BY_ID.get(prf_id)
    if spec is None:
        raise KeymatError(f"PRF transform {prf_id} is not supported (HMAC PRFs 1, 2, 5, 6, 7)")
    return spec.out_len


def prf(prf_id: int, key: bytes, data: bytes) -> Secret:
    """§2.13 prf(K, S) (``crypto.prf``), as a Secret."""
    prf_len(prf_id)
    return Secret(crypto.prf(prf_id, bytes(key), bytes(data)))


def prf_plus(prf_id: int, key: bytes, seed: bytes, length: int) -> Secret:
    """§2.13: prf+(K,S) = T1 | T2 | ..., T1 = prf(K, S | 0x01), Tn = prf(K, Tn-1 | S | n)."""
    prf_len(prf_id)
    try:
        return Secret(crypto.prf_plus(prf_id, bytes(key), bytes(seed), length))
    except ValueError as err:
        raise KeymatError(str(err)) from None


def skeyseed(prf_id: int, ni: bytes, nr: bytes, g_ir: bytes) -> Secret:
    """§2.14: SKEYSEED = prf(Ni | Nr, g^ir)."""
    return prf(prf_id, ni + nr, g_ir)


def skeyseed_rekey(prf_id: int, old_sk_d: bytes, g_ir: bytes, ni: bytes, nr: bytes) -> Secret:
    """§2.18: SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr); the *old* SA's PRF."""
    return prf(prf_id, old_sk_d, g_ir + ni + nr)


@dataclass(frozen=True)
class IkeKeymat:
    sk_d: Secret
    sk_ai: Secret
    sk_ar: Secret
    sk_ei: Secret
    sk_er: Secret
    sk_pi: Secret
    sk_pr: Secret


def ike_keymat(prf_id: int, seed: bytes, ni: bytes, nr: bytes, spi_i: bytes, spi_r: bytes,
               encr_key_len: int, integ_key_len: int) -> IkeKeymat:
    """§2.14: {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).

    ``seed`` is SKEYSEED; ``integ_key_len`` is 0 for AEAD ciphers.
    """
    p = prf_len(prf_id)
    lengths = (p, integ_key_len, integ_key_len, encr_key_len, encr_key_len, p, p)
    stream = prf_plus(prf_id, seed, ni + nr + spi_i + spi_r, sum(lengths))
    parts, pos = [], 0
    for n in lengths:
        parts.append(Secret(stream[pos:pos + n]))
        pos += n
    return IkeKeymat(*parts)


@dataclass(frozen=True)
class ChildKeymat:
    """§2.17: keys for initiator->responder traffic come first, encryption before integrity."""

    encr_i: Secret  # protects traffic sent by the exchange initiator
    integ_i: Secret
    encr_r: Secret  # protects traffic sent by the exchange responder
    integ_r: Secret


def child_keymat(prf_id: int, sk_d: bytes, ni: bytes, nr: bytes, encr_key_len: int,
                 integ_key_len: int, g_ir: bytes | None = None) -> ChildKeymat:
    """§2.17: KEYMAT = prf+(SK_d, Ni | Nr), or prf+(SK_d, g^ir (new) | Ni | Nr) with PFS.

    ``ni``/``nr`` are the nonces of the exchange that created the Child SA (IKE_AUTH: those
    of IKE_SA_INIT); "initiator" is that exchange's initiator.
    """
    seed = (g_ir or b"") + ni + nr
    total = 2 * (encr_key_len + integ_key_len)
    km = prf_plus(prf_id, sk_d, seed, total)
    e, a = encr_key_len, integ_key_len
    return ChildKeymat(Secret(km[:e]), Secret(km[e:e + a]), Secret(km[e + a:2 * e + a]), Secret(km[2 * e + a:]))


def signed_octets(message: bytes, peer_nonce: bytes, sk_p: bytes, id_body: bytes, prf_id: int) -> bytes:
    """§2.15: RealMessage | NonceData of the peer | prf(SK_p, RestOfIDPayload).

    For the initiator: its IKE_SA_INIT request, Nr, prf(SK_pi, IDi body); for the responder:
    its IKE_SA_INIT response, Ni, prf(SK_pr, IDr body). ``id_body`` is the ID payload without
    its generic header (ID Type | RESERVED | Identification Data).
    """
    return message + peer_nonce + prf(prf_id, sk_p, id_body)


def psk_auth(prf_id: int, psk: bytes, octets: bytes) -> Secret:
    """§2.15: AUTH = prf( prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>)."""
    return prf(prf_id, prf(prf_id, psk, KEY_PAD), octets)

"""Diffie-Hellman groups for IKEv2 (RFC 7296 §3.4), keyed by IANA group number.

The Key Exchange Data of a KE payload is, per group:

- MODP (RFC 3526, group 14): the public value ``g^x mod p`` as a big-endian integer
  left-padded to the length of the prime (RFC 7296 §3.4);
- ECP (RFC 5903 §7, group 19): ``x | y``, each coordinate 32 octets, no 0x04 prefix;
- Curve25519 (RFC 8031 §3.1, group 31): the 32-octet little-endian u-coordinate.

The shared secret (g^ir) has the same encoding: the MODP value padded to the prime's length,
the ECP x-coordinate, the X25519 output (RFC 5903 §7, RFC 8031 §3.1).

API::

    kex = key_exchange(group)          # a fresh private key
    kex.public                         # bytes for the KE payload
    kex.shared(peer_public) -> Secret  # raises DhError on a bad peer value
    GROUPS                             # the supported group numbers
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import dh, ec, x25519

from .iana import DhGroup
from .records import Secret

#: RFC 3526 §3: 2048-bit MODP group, generator 2.
MODP_2048_P = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A0879"
    "8E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B"
    "0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA4836"
    "1C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804"
    "F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6"
    "955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF", 16)
MODP_2048_G = 2

GROUPS = (DhGroup.MODP_2048, DhGroup.ECP_256, DhGroup.CURVE25519)

#: Length of the KE payload's Key Exchange Data per group (§3.4; RFC 5903 §7; RFC 8031).
PUBLIC_LEN = {DhGroup.MODP_2048: 256, DhGroup.ECP_256: 64, DhGroup.CURVE25519: 32}

_MODP_PARAMS = dh.DHParameterNumbers(MODP_2048_P, MODP_2048_G).parameters()


class DhError(Exception):
    """An unsupported group or an invalid peer public value (never contains key bytes)."""


@dataclass
class KeyExchange:
    group: int
    _private: object = field(repr=False)
    public: bytes = b""

    def shared(self, peer_public: bytes) -> Secret:
        """g^ir for ``peer_public`` (the peer's Key Exchange Data)."""
        if len(peer_public) != PUBLIC_LEN[self.group]:
            raise DhError(f"group {self.group}: public value has {len(peer_public)} octets, "
                          f"expected {PUBLIC_LEN[self.group]}")
        try:
            if self.group == DhGroup.MODP_2048:
                y = int.from_bytes(peer_public, "big")
                if not 1 < y < MODP_2048_P - 1:
                    raise DhError("group 14: public value out of range")
                peer = dh.DHPublicNumbers(y, _MODP_PARAMS.parameter_numbers()).public_key()
                raw = self._private.exchange(peer)
                return Secret(raw.rjust(256, b"\0"))
            if self.group == DhGroup.ECP_256:
                peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + peer_public)
                return Secret(self._private.exchange(ec.ECDH(), peer))
            peer = x25519.X25519PublicKey.from_public_bytes(peer_public)
            return Secret(self._private.exchange(peer))
        except DhError:
            raise
        except ValueError as err:  # invalid point, all-zero X25519 output, ...
            raise DhError(f"group {self.group}: invalid peer public value ({err.__class__.__name__})") from None


def key_exchange(group: int) -> KeyExchange:
    """A fresh ephemeral key for IANA DH ``group`` (14, 19 or 31)."""
    if group == DhGroup.MODP_2048:
        priv = _MODP_PARAMS.generate_private_key()
        y = priv.public_key().public_numbers().y
        return KeyExchange(group, priv, y.to_bytes(256, "big"))
    if group == DhGroup.ECP_256:
        priv = ec.generate_private_key(ec.SECP256R1())
        nums = priv.public_key().public_numbers()
        return KeyExchange(group, priv, nums.x.to_bytes(32, "big") + nums.y.to_bytes(32, "big"))
    if group == DhGroup.CURVE25519:
        priv = x25519.X25519PrivateKey.generate()
        from cryptography.hazmat.primitives import serialization as ser

        return KeyExchange(group, priv, priv.public_key().public_bytes(ser.Encoding.Raw, ser.PublicFormat.Raw))
    raise DhError(f"DH group {group} is not supported (supported: {', '.join(str(int(g)) for g in GROUPS)})")

"""Decrypting SK (RFC 7296 §3.14) and reassembling SKF (RFC 7383 §2.5-2.6) payloads.

Keys come from the user's ``ikev2_decryption_table`` (``keys.KeyStore``), looked up by the
header's (SPIi, SPIr) as in Wireshark's ``ikev2_key_hash``; the I flag picks the initiator's
or the responder's keys. The ICV is always verified first: on a mismatch nothing of the
payload is parsed and ``error`` reads "integrity check failed for SPIs … — wrong keys?".
Each SKF fragment is authenticated and decrypted on its own, then the plaintexts are joined
in fragment order and parsed with fragment 1's Next Payload.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import crypto
from ..iana import PayloadType
from .message import IKE_HEADER_LEN, IkeMessage
from .payloads import Payload, SkfPayload, SkPayload, build_chain, first_type, parse_chain

if TYPE_CHECKING:
    from ..keys import KeyStore

#: Pending SKF reassemblies kept at once; the oldest is dropped beyond this.
MAX_PENDING_REASSEMBLIES = 64


def spi_text(spi_i: bytes, spi_r: bytes) -> str:
    return f"{spi_i.hex()}/{spi_r.hex()}"


@dataclass
class _Reassembly:
    total: int
    first_next_payload: int = PayloadType.NONE
    base: int = 0
    parts: dict[int, bytes] = field(default_factory=dict)
    frames: dict[int, int] = field(default_factory=dict)


class IkeDecryptor:
    """Decrypts SK/SKF payloads of messages in capture order, in place."""

    def __init__(self, keys: KeyStore) -> None:
        self.keys = keys
        self._pending: OrderedDict[tuple, _Reassembly] = OrderedDict()

    def decrypt(self, msg: IkeMessage) -> None:
        sk = next((p for p in msg.payloads if isinstance(p, SkPayload)), None)
        if sk is None or sk.malformed is not None:
            return
        keys = self.keys.ike_keys(msg.spi_i, msg.spi_r)
        if keys is None:
            sk.error = f"not decrypted: no key for SPIs {spi_text(msg.spi_i, msg.spi_r)}"
            return
        sk_e, sk_a = (keys.sk_ei, keys.sk_ai) if msg.initiator else (keys.sk_er, keys.sk_ar)
        try:
            plain = crypto.sk_decrypt(keys.encr, keys.integ, sk_e, sk_a, msg.raw, sk.offset, sk.HEADER_LEN)
        except crypto.IntegrityError:
            sk.error = f"integrity check failed for SPIs {spi_text(msg.spi_i, msg.spi_r)} — wrong keys?"
            return
        except crypto.DecryptError as err:
            sk.error = f"not decrypted: {err}"
            return
        base = sk.offset + sk.HEADER_LEN + keys.encr.iv_len
        if isinstance(sk, SkfPayload):
            self._add_fragment(msg, sk, plain, base)
            return
        sk.decrypted = True
        sk.inner, problem = parse_chain(plain, sk.next_payload, base)
        if problem and msg.malformed is None:
            msg.malformed = problem

    def _add_fragment(self, msg: IkeMessage, skf: SkfPayload, plain: bytes, base: int) -> None:
        """RFC 7383 §2.6: fragments of one message share SPIs, Message ID and flags."""
        skf.decrypted = True  # this fragment's ICV verified
        if not 1 <= skf.fragment_number <= skf.total_fragments:
            skf.error = f"fragment {skf.fragment_number} of {skf.total_fragments} is out of range"
            return
        key = (msg.spi_i, msg.spi_r, msg.message_id, msg.flags & 0x28)
        entry = self._pending.get(key)
        if entry is None or entry.total != skf.total_fragments:
            entry = self._pending[key] = _Reassembly(skf.total_fragments)
            while len(self._pending) > MAX_PENDING_REASSEMBLIES:
                self._pending.popitem(last=False)
        if skf.fragment_number == 1:
            entry.first_next_payload, entry.base = skf.next_payload, base
        entry.parts.setdefault(skf.fragment_number, plain)
        entry.frames.setdefault(skf.fragment_number, msg.frame.index if msg.frame else 0)
        if len(entry.parts) < entry.total:
            return
        del self._pending[key]
        joined = b"".join(entry.parts[n] for n in range(1, entry.total + 1))
        skf.reassembled_from = [entry.frames[n] for n in range(1, entry.total + 1)]
        skf.inner, problem = parse_chain(joined, entry.first_next_payload, entry.base)
        if problem and msg.malformed is None:
            msg.malformed = problem


def seal(msg: IkeMessage, inner: list[Payload], encr, integ, sk_e: bytes, sk_a: bytes,
         iv: bytes | None = None) -> bytes:
    """Build ``msg`` with ``inner`` encrypted in one SK payload (used by the reference peer).

    Payloads already in ``msg.payloads`` travel in clear before the SK payload (§3.14).
    """
    clear = list(msg.payloads)
    sk = SkPayload(next_payload=first_type(inner))
    chain: list[Payload] = clear + [sk]
    for here, after in zip(clear, chain[1:]):
        here.next_payload = after.type
    plaintext = build_chain(inner)
    enc_len = crypto.sk_encrypted_len(encr, integ, len(plaintext))
    clear_bytes = b"".join(bytes(p) for p in clear)
    sk_header = sk.header(enc_len)
    msg.next_payload = chain[0].type
    msg.length = IKE_HEADER_LEN + len(clear_bytes) + len(sk_header) + enc_len
    aad = msg.header_bytes() + clear_bytes + sk_header
    return aad + crypto.sk_encrypt(encr, integ, sk_e, sk_a, aad, plaintext, iv)


def seal_fragments(msg: IkeMessage, inner: list[Payload], encr, integ, sk_e: bytes, sk_a: bytes,
                   max_len: int) -> list[bytes]:
    """RFC 7383 §2.5: ``inner`` encrypted in SKF fragments, each message at most ``max_len`` octets.

    The plaintext chain is cut into equal pieces; every fragment carries the same IKE header
    (Next Payload SKF, its own Length), Fragment Number n of Total Fragments, and is encrypted
    and authenticated on its own (AAD: IKE header | SKF header, as for SK). Only fragment 1
    names the first inner payload (§2.5). The reverse is ``IkeDecryptor``.
    """
    plaintext = build_chain(inner)
    room = max_len - IKE_HEADER_LEN - SkfPayload.HEADER_LEN
    chunk = room - crypto.sk_encrypted_len(encr, integ, 0)
    while chunk > 0 and crypto.sk_encrypted_len(encr, integ, chunk) > room:
        chunk -= 1
    if chunk <= 0:
        raise ValueError(f"fragment size {max_len} leaves no room for data")
    parts = [plaintext[i:i + chunk] for i in range(0, len(plaintext), chunk)] or [b""]
    msg.next_payload = PayloadType.SKF
    out = []
    for number, part in enumerate(parts, 1):
        skf = SkfPayload(next_payload=first_type(inner) if number == 1 else PayloadType.NONE,
                         fragment_number=number, total_fragments=len(parts))
        enc_len = crypto.sk_encrypted_len(encr, integ, len(part))
        skf_header = skf.header(4 + enc_len) + struct.pack(">HH", number, len(parts))
        aad = msg.header_bytes(IKE_HEADER_LEN + len(skf_header) + enc_len) + skf_header
        out.append(aad + crypto.sk_encrypt(encr, integ, sk_e, sk_a, aad, part))
    return out

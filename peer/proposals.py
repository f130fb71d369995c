"""Cipher suites for the reference peer: strongSwan-style proposal strings <-> SA payload proposals.

A ``Suite`` is one choice of transforms (RFC 7296 §3.3). Proposal strings use strongSwan's
keywords, so a config reads like swanctl.conf: ``aes256gcm16-prfsha256-x25519`` (IKE),
``aes256-sha256-modp2048`` (IKE or ESP with PFS), ``aes256gcm16`` (ESP without PFS).
Negotiation (§2.7): the responder takes the first of the initiator's proposals that one of
its own suites matches exactly, and answers with that single proposal under its number.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from dissectors.iana import DhGroup, EncrId, EsnId, IntegId, PrfId, ProtocolId, TransformAttr, TransformType
from dissectors.ikev2.payloads import Proposal, Transform, TransformAttribute

ENCR_WORDS = {
    "aes128": (EncrId.AES_CBC, 128), "aes192": (EncrId.AES_CBC, 192), "aes256": (EncrId.AES_CBC, 256),
    "aes128gcm16": (EncrId.AES_GCM_16, 128), "aes256gcm16": (EncrId.AES_GCM_16, 256),
    "aes128gcm": (EncrId.AES_GCM_16, 128), "aes256gcm": (EncrId.AES_GCM_16, 256),
}
INTEG_WORDS = {"sha256": IntegId.AUTH_HMAC_SHA2_256_128, "sha384": IntegId.AUTH_HMAC_SHA2_384_192,
               "sha512": IntegId.AUTH_HMAC_SHA2_512_256}
PRF_WORDS = {"prfsha256": PrfId.PRF_HMAC_SHA2_256, "prfsha384": PrfId.PRF_HMAC_SHA2_384,
             "prfsha512": PrfId.PRF_HMAC_SHA2_512}
DH_WORDS = {"modp2048": DhGroup.MODP_2048, "ecp256": DhGroup.ECP_256, "x25519": DhGroup.CURVE25519,
            "curve25519": DhGroup.CURVE25519}
#: strongSwan derives the PRF from the integrity algorithm when none is named.
_PRF_OF_INTEG = {IntegId.AUTH_HMAC_SHA2_256_128: PrfId.PRF_HMAC_SHA2_256,
                 IntegId.AUTH_HMAC_SHA2_384_192: PrfId.PRF_HMAC_SHA2_384,
                 IntegId.AUTH_HMAC_SHA2_512_256: PrfId.PRF_HMAC_SHA2_512}
AEAD = {EncrId.AES_GCM_8, EncrId.AES_GCM_12, EncrId.AES_GCM_16}


class ProposalError(ValueError):
    pass


@dataclass(frozen=True)
class Suite:
    encr: int
    key_bits: int
    integ: int = IntegId.NONE
    prf: int = 0  # IKE only
    dh: int = 0  # IKE: the KE group; ESP: the PFS group, 0 = no PFS
    esn: int = EsnId.NO_ESN  # ESP only

    @property
    def aead(self) -> bool:
        return self.encr in AEAD

    def proposal(self, number: int, protocol: int, spi: bytes) -> Proposal:
        """This suite as a proposal (§3.3.1): ENCR, PRF, INTEG, DH, ESN in that order."""
        ts = [Transform(TransformType.ENCR, self.encr,
                        [TransformAttribute(TransformAttr.KEY_LENGTH, self.key_bits)])]
        if protocol == ProtocolId.IKE:
            ts.append(Transform(TransformType.PRF, self.prf))
        if not self.aead:
            ts.append(Transform(TransformType.INTEG, self.integ))
        if self.dh:
            ts.append(Transform(TransformType.DH, self.dh))
        if protocol != ProtocolId.IKE:
            ts.append(Transform(TransformType.ESN, self.esn))
        for t in ts[:-1]:
            t.last = 3
        return Proposal(number, protocol, spi, ts)

    def __str__(self) -> str:
        enc = next(w for w, v in ENCR_WORDS.items() if v == (self.encr, self.key_bits))
        parts = [enc]
        if not self.aead:
            parts.append(next(w for w, v in INTEG_WORDS.items() if v == self.integ))
        if self.prf:
            parts.append(next(w for w, v in PRF_WORDS.items() if v == self.prf))
        if self.dh:
            parts.append(next(w for w, v in DH_WORDS.items() if v == self.dh))
        return "-".join(parts)


def parse_suite(text: str, protocol: int) -> Suite:
    """``aes256-sha256-prfsha256-modp2048`` -> Suite. IKE needs a DH group."""
    encr = integ = prf = dh = None
    esn = EsnId.NO_ESN
    for word in text.strip().lower().split("-"):
        if word in ENCR_WORDS:
            encr = ENCR_WORDS[word]
        elif word in INTEG_WORDS:
            integ = INTEG_WORDS[word]
        elif word in PRF_WORDS:
            prf = PRF_WORDS[word]
        elif word in DH_WORDS:
            dh = DH_WORDS[word]
        elif word in ("esn", "noesn"):
            esn = EsnId.ESN if word == "esn" else EsnId.NO_ESN
        else:
            raise ProposalError(f"proposal {text!r}: unknown keyword {word!r}")
    if encr is None:
        raise ProposalError(f"proposal {text!r}: no encryption algorithm")
    aead = encr[0] in AEAD
    if not aead and integ is None:
        raise ProposalError(f"proposal {text!r}: {encr[0].name} needs an integrity algorithm")
    if aead:
        integ = IntegId.NONE
    if protocol == ProtocolId.IKE:
        prf = prf or _PRF_OF_INTEG.get(integ)
        if prf is None:
            raise ProposalError(f"proposal {text!r}: an AEAD IKE proposal needs a PRF (prfsha256 ...)")
        if dh is None:
            raise ProposalError(f"proposal {text!r}: an IKE proposal needs a DH group")
    elif prf is not None:
        raise ProposalError(f"proposal {text!r}: ESP proposals have no PRF")
    return Suite(encr[0], encr[1], integ, prf or 0, dh or 0, esn)


def suite_of(p: Proposal) -> Suite | None:
    """The suite a proposal with exactly one transform of each type describes, else None."""
    by_type: dict[int, list[Transform]] = {}
    for t in p.transforms:
        by_type.setdefault(t.type, []).append(t)
    if any(len(v) > 1 for v in by_type.values()) or TransformType.ENCR not in by_type:
        return None
    enc = by_type[TransformType.ENCR][0]

    def one(kind: int, default: int = 0) -> int:
        return by_type[kind][0].id if kind in by_type else default

    return Suite(enc.id, enc.key_length or 0, one(TransformType.INTEG, IntegId.NONE), one(TransformType.PRF),
                 one(TransformType.DH), one(TransformType.ESN, EsnId.NO_ESN))


def expand(p: Proposal) -> list[Suite]:
    """Every suite a proposal allows (one transform of each type, §3.3.6)."""
    by_type: dict[int, list[Transform]] = {}
    for t in p.transforms:
        by_type.setdefault(t.type, []).append(t)
    out = [Suite(0, 0)]
    for kind, field_name in ((TransformType.ENCR, "encr"), (TransformType.INTEG, "integ"),
                             (TransformType.PRF, "prf"), (TransformType.DH, "dh"), (TransformType.ESN, "esn")):
        if kind not in by_type:
            continue
        nxt = []
        for s in out:
            for t in by_type[kind]:
                if kind == TransformType.ENCR:
                    nxt.append(replace(s, encr=t.id, key_bits=t.key_length or 0))
                else:
                    nxt.append(replace(s, **{field_name: t.id}))
        out = nxt
    return out


def choose(offered: list[Proposal], ours: list[Suite], protocol: int) -> tuple[Proposal, Suite] | None:
    """§2.7: the first offered proposal that matches one of our suites; ESN defaults to none."""
    for p in offered:
        if p.protocol_id != protocol:
            continue
        for cand in expand(p):
            for s in ours:
                if cand == s:
                    return p, s
    return None

"""ESP keys for decryption: Wireshark's ``esp_sa`` rows, or derived from SK_d (RFC 7296 §2.17).

Beyond what tshark can do: given ``SPIi,SPIr,SK_d[,PRF]`` for an IKE SA (an ``ikev2_sk_d``
file, multisa's own format, see ``dissectors.keys``), ``ChildKeyDeriver`` follows the IKE
messages of the capture and derives each Child SA's KEYMAT itself::

    KEYMAT = prf+(SK_d, Ni | Nr)            IKE_AUTH (nonces of IKE_SA_INIT), and
                                            CREATE_CHILD_SA without KE
    KEYMAT = prf+(SK_d, g^ir (new) | Ni | Nr)   CREATE_CHILD_SA with KE (PFS): g^ir is not
                                            on the wire, so these SAs are reported as
                                            "PFS: not derivable without the DH secret"

Ni/Nr are the nonces of the exchange that created the Child SA; the first ENCR key then
INTEG key of KEYMAT protect traffic *sent by that exchange's initiator* (to the SPI in the
response's SA payload), the second pair the other direction (§2.17). The derivation itself
is ``dissectors.keymat.child_keymat``. Keys are ``Secret``s and never printed.
"""

from __future__ import annotations

from dataclasses import dataclass

from dissectors import crypto, keymat
from dissectors.iana import EsnId, ExchangeType, ProtocolId, TransformType
from dissectors.ikev2.message import IkeMessage
from dissectors.ikev2.payloads import KePayload, NoncePayload, Proposal, SaPayload
from dissectors.keys import KeyStore
from dissectors.records import Secret

PFS_NOTE = "PFS: not derivable without the DH secret"


@dataclass(frozen=True, slots=True)
class SaKeys:
    """What ``dissectors.esp.esp_decrypt`` needs for one SA (one direction)."""

    encr: crypto.EncrSpec
    encr_key: Secret
    integ: crypto.IntegSpec | None
    integ_key: Secret
    source: str  # "esp_sa FILE:LINE" or "derived from SK_d"
    esn: bool = False

    def __repr__(self) -> str:
        return f"SaKeys({self.encr.name}, {self.integ.name if self.integ else None}, {self.source!r})"


@dataclass(slots=True)
class _Request:
    nonce: bytes | None
    proposals: list[Proposal]
    ke: bool
    src: str


def _chosen_suite(p: Proposal) -> tuple[crypto.EncrSpec | None, crypto.IntegSpec | None, bool]:
    encr = integ = None
    esn = False
    for t in p.transforms:
        if t.type == TransformType.ENCR and encr is None:
            encr = crypto.encr_spec(t.id, t.key_length)
        elif t.type == TransformType.INTEG and integ is None:
            integ = crypto.integ_spec(t.id)
        elif t.type == TransformType.ESN:
            esn = esn or t.id == EsnId.ESN
    return encr, integ, esn


def _prf_of(p: Proposal) -> int | None:
    return next((t.id for t in p.transforms if t.type == TransformType.PRF), None)


class ChildKeyDeriver:
    """Follows IKE messages; ``keys_for(dst, spi)`` gives esp_sa or SK_d-derived keys."""

    def __init__(self, keys: KeyStore, use_sk_d: bool = True) -> None:
        self.keys = keys
        self.use_sk_d = use_sk_d
        self.derived: dict[tuple[str, int], SaKeys] = {}
        self.notes: dict[int, str] = {}  # SPI -> why no derived key
        self._ni: dict[bytes, bytes] = {}  # IKE_SA_INIT Ni by SPIi
        self._nonces: dict[tuple[bytes, bytes], tuple[bytes, bytes]] = {}
        self._prf: dict[tuple[bytes, bytes], int] = {}
        self._pending: dict[tuple[bytes, bytes, int, bool], _Request] = {}
        self._esp_cache: dict[tuple[str, int, str | None], SaKeys | None] = {}

    # --- IKE -----------------------------------------------------------------------------

    def feed(self, msg: IkeMessage) -> None:
        if msg.malformed is not None and not msg.payloads:
            return
        payloads = [p for p in msg.all_payloads() if p.malformed is None]  # partly decoded: not used
        nonce = next((p.data for p in payloads if isinstance(p, NoncePayload)), None)
        sa = next((p for p in payloads if isinstance(p, SaPayload)), None)
        ke = any(isinstance(p, KePayload) for p in payloads)
        if msg.exchange == ExchangeType.IKE_SA_INIT:
            if not msg.response and nonce is not None:
                self._ni[msg.spi_i] = nonce
            elif msg.response and nonce is not None and msg.spi_i in self._ni:
                self._nonces[(msg.spi_i, msg.spi_r)] = (self._ni[msg.spi_i], nonce)
                if sa is not None and sa.proposals:
                    prf = _prf_of(sa.proposals[0])
                    if prf is not None:
                        self._prf[(msg.spi_i, msg.spi_r)] = prf
            return
        if msg.exchange not in (ExchangeType.IKE_AUTH, ExchangeType.CREATE_CHILD_SA):
            return
        spis = (msg.spi_i, msg.spi_r)
        if not msg.response:
            key = (*spis, msg.message_id, msg.initiator)
            if sa is not None:
                self._pending[key] = _Request(nonce, list(sa.proposals), ke, msg.src)
            return
        req = self._pending.pop((*spis, msg.message_id, not msg.initiator), None)
        if req is None or sa is None or not sa.proposals:
            return
        chosen = sa.proposals[0]
        if chosen.protocol_id == ProtocolId.IKE:  # IKE SA rekey: its PRF for later Child SAs
            offered = next((p for p in req.proposals if p.protocol_id == ProtocolId.IKE), None)
            prf = _prf_of(chosen)
            if offered is not None and len(offered.spi) == 8 and len(chosen.spi) == 8 and prf is not None:
                self._prf[(offered.spi, chosen.spi)] = prf
            return
        if chosen.protocol_id != ProtocolId.ESP:
            return
        offered = next((p for p in req.proposals if p.number == chosen.number and p.protocol_id == chosen.protocol_id),
                       None) or next((p for p in req.proposals if p.protocol_id == chosen.protocol_id), None)
        if offered is None:  # the response chose an ESP proposal the request never offered
            return
        spi_to_responder = int.from_bytes(chosen.spi, "big")  # traffic sent by the exchange initiator
        spi_to_initiator = int.from_bytes(offered.spi, "big")
        responder_addr, initiator_addr = msg.src, req.src
        if msg.exchange == ExchangeType.IKE_AUTH:
            nonces = self._nonces.get(spis)
            pfs = False
        else:
            nonces = (req.nonce, next((p.data for p in payloads if isinstance(p, NoncePayload)), None))
            pfs = req.ke or ke
        why = self._cannot(spis, nonces, pfs)
        if why is not None:
            self.notes[spi_to_responder] = self.notes[spi_to_initiator] = why
            return
        encr, integ, esn = _chosen_suite(chosen)
        if encr is None or (not encr.aead and integ is None):
            self.notes[spi_to_responder] = self.notes[spi_to_initiator] = "unsupported ESP transforms"
            return
        prf_id = self.keys.sk_d_prf.get(spis) or self._prf[spis]
        integ_len = 0 if encr.aead or integ is None else integ.key_len
        try:
            km = keymat.child_keymat(prf_id, self.keys.sk_d[spis], nonces[0], nonces[1], encr.key_len, integ_len)
        except keymat.KeymatError as err:
            self.notes[spi_to_responder] = self.notes[spi_to_initiator] = str(err)
            return
        integ_spec = None if encr.aead else integ
        self.derived[(responder_addr, spi_to_responder)] = SaKeys(encr, km.encr_i, integ_spec, km.integ_i,
                                                                  "derived from SK_d", esn)
        self.derived[(initiator_addr, spi_to_initiator)] = SaKeys(encr, km.encr_r, integ_spec, km.integ_r,
                                                                  "derived from SK_d", esn)

    def _cannot(self, spis: tuple[bytes, bytes], nonces, pfs: bool) -> str | None:
        if not self.use_sk_d:
            return "no key"
        if pfs:
            return PFS_NOTE
        if spis not in self.keys.sk_d:
            return "no SK_d for its IKE SA"
        if nonces is None or nonces[0] is None or nonces[1] is None:
            return "nonces not captured"
        if spis not in self.keys.sk_d_prf and spis not in self._prf:
            return "PRF unknown (IKE_SA_INIT not captured; give it in the ikev2_sk_d line)"
        return None

    # --- lookup --------------------------------------------------------------------------

    def keys_for(self, dst: str, spi: int, src: str | None = None) -> SaKeys | None:
        """esp_sa keys first (what the user exported; wildcard rows matched on ``src`` too,
        as Wireshark does), else keys derived from SK_d."""
        k = (dst, spi)
        ck = (dst, spi, src)
        if ck in self._esp_cache:
            cached = self._esp_cache[ck]
            if cached is not None:
                return cached
        row = self.keys.esp_keys(dst, spi, src)
        if row is not None and row.encr is not None:
            found = SaKeys(row.encr, row.encr_key, None if row.encr.aead else row.auth, row.auth_key,
                           f"esp_sa {row.source}")
            self._esp_cache[ck] = found
            return found
        self._esp_cache[ck] = None
        return self.derived.get(k)

    def note(self, spi: int) -> str | None:
        return self.notes.get(spi)

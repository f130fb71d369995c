"""Sample captures built with the codec (``tests.ikesim``), for what the reference peer does not
speak. ``python3 -m tests.make_samples samples`` rewrites them; tests build them afresh too.

- ``prerfc-cpu-queues``: the pre-RFC per-CPU negotiation of
  draft-pwouters-ipsecme-multi-sa-performance-02 (strongSwan's proof of concept): CPU_QUEUES
  (40970, 4-octet count) both ways with the fallback SA in IKE_AUTH, then two additional
  per-CPU Child SAs whose CREATE_CHILD_SA request and response carry CPU_QUEUE_INFO (40971),
  one empty, one with identifying data.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dissectors.iana import NotifyType
from tests import ikesim


def prerfc_cpu_queues(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    conv = ikesim.Conversation(source="capture.pcap")
    queues = ikesim.notify(NotifyType.CPU_QUEUES, (2).to_bytes(4, "big"))
    conv.ike_sa_init()
    fallback = conv.ike_auth(None, None, req_extra=[queues], resp_extra=[queues]).child
    conv.esp(fallback, 2)
    m1 = conv.create_child("I", None, None, req_extra=[ikesim.notify(NotifyType.CPU_QUEUE_INFO)],
                           resp_extra=[ikesim.notify(NotifyType.CPU_QUEUE_INFO)]).child
    m2 = conv.create_child("I", None, None, req_extra=[ikesim.notify(NotifyType.CPU_QUEUE_INFO, b"cpu-q1")],
                           resp_extra=[ikesim.notify(NotifyType.CPU_QUEUE_INFO, b"cpu-q1")]).child
    conv.esp(m1, 2)
    conv.esp(m2, 2)
    capture = folder / "capture.pcap"
    ikesim.write_pcap(capture, conv.records, encrypt=True)
    ikesim.write_key_table(folder / "ikev2_decryption_table", conv.records)
    return capture


SAMPLES = {"prerfc-cpu-queues": prerfc_cpu_queues}


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "samples")
    for name, build in SAMPLES.items():
        print(build(out / name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


# --- IKEv1 (ISAKMP) -----------------------------------------------------------------------------


def _v1(kind: int, body: bytes):
    from dissectors.ikev2.ikev1 import IsakmpPayload

    return IsakmpPayload(payload_type=kind, data=body)


def _v1_sa() -> bytes:
    """RFC 2407 §4.6.1 SA body: DOI IPsec, situation SIT_IDENTITY_ONLY, one ISAKMP proposal with
    one KEY_IKE transform (AES-CBC-128, SHA1, PSK, MODP-2048, 28800 s)."""
    import struct

    attrs = b"".join(struct.pack(">HH", 0x8000 | t, v) for t, v in
                     ((1, 7), (14, 128), (2, 2), (3, 1), (4, 14), (11, 1), (12, 28800)))
    transform = struct.pack(">BBHBBH", 0, 0, 8 + len(attrs), 1, 1, 0) + attrs
    proposal = struct.pack(">BBHBBBB", 0, 0, 8 + len(transform), 1, 1, 0, 1) + transform
    return struct.pack(">II", 1, 1) + proposal


def ikev1_records(conv: ikesim.Conversation | None = None, encrypted_qm: int = 2) -> list:
    """IKEv1 Main Mode (6 messages, the last two encrypted) and ``encrypted_qm`` Quick Mode
    messages, as ``IkeMessage`` records with IKEv1 payloads (version 1.0), in wire order."""
    import hashlib

    from dissectors.iana import IsakmpExchangeType as X, IsakmpPayloadType as T
    from dissectors.ikev2.ikev1 import IsakmpEncrypted
    from dissectors.ikev2.message import IkeMessage

    conv = conv or ikesim.Conversation(source="ikev1.pcap")
    ci = hashlib.sha256(b"v1-ci").digest()[:8]
    cr = hashlib.sha256(b"v1-cr").digest()[:8]
    a, b = conv.addr["I"], conv.addr["R"]
    nat_d = hashlib.sha1(b"nat").digest()
    plan = [
        (a, b, bytes(8), X.IDENTITY_PROTECTION, 0, 0, [_v1(T.SA, _v1_sa()), _v1(T.VID, bytes(16))]),
        (b, a, cr, X.IDENTITY_PROTECTION, 0, 0, [_v1(T.SA, _v1_sa()), _v1(T.VID, bytes(16))]),
        (a, b, cr, X.IDENTITY_PROTECTION, 0, 0, [_v1(T.KE, bytes(256)), _v1(T.NONCE, bytes(32)),
                                                 _v1(T.NAT_D, nat_d), _v1(T.NAT_D, nat_d)]),
        (b, a, cr, X.IDENTITY_PROTECTION, 0, 0, [_v1(T.KE, bytes(256)), _v1(T.NONCE, bytes(32)),
                                                 _v1(T.NAT_D, nat_d), _v1(T.NAT_D, nat_d)]),
        (a, b, cr, X.IDENTITY_PROTECTION, 1, 0, [IsakmpEncrypted(first_type=T.ID, data=bytes(64))]),
        (b, a, cr, X.IDENTITY_PROTECTION, 1, 0, [IsakmpEncrypted(first_type=T.ID, data=bytes(64))]),
    ]
    for n in range(encrypted_qm):
        src, dst = (a, b) if n % 2 == 0 else (b, a)
        plan.append((src, dst, cr, X.QUICK_MODE, 1, 0x5A5A0001, [IsakmpEncrypted(first_type=T.HASH, data=bytes(96))]))
    for src, dst, resp, exch, flags, mid, payloads in plan:
        msg = IkeMessage(ci, resp, exch, mid, flags, 0x10, payloads=payloads, src=src, dst=dst, sport=500, dport=500)
        conv.send(msg)
    return conv.records


def ikev1_capture(path: Path, with_ikev2: bool = False) -> Path:
    """An IKEv1 capture; ``with_ikev2`` adds an IKEv2 IKE SA (per-resource, with keys beside
    the capture in ``ikev2_decryption_table``) between the two versions' messages."""
    conv = ikesim.Conversation(source=path.name)
    if with_ikev2:
        conv.established()
        conv.create_child("I", ikesim.rid(1), ikesim.rid(2))
    ikev1_records(conv)
    path.parent.mkdir(parents=True, exist_ok=True)
    ikesim.write_pcap(path, conv.records, encrypt=True)
    if with_ikev2:
        ikesim.write_key_table(path.parent / "ikev2_decryption_table", conv.records)
    return path

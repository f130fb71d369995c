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


# --- ESP with legacy ciphers, wildcard esp_sa rows, AH, ESP in ESP ---------------------------------

#: (encryption name, key octets, authentication name, key octets) for ``legacy_esp_capture``
LEGACY_SUITES = [
    ("DES-CBC [RFC2405]", 8, "HMAC-MD5-96 [RFC2403]", 16),
    ("BLOWFISH-CBC [RFC2451]", 16, "HMAC-SHA-1-96 [RFC2404]", 20),
    ("TWOFISH-CBC", 32, "HMAC-SHA-256-96 [draft-ietf-ipsec-ciph-sha-256-00]", 32),
    ("CAST5-CBC [RFC2144]", 16, "MAC-RIPEMD-160-96 [RFC2857]", 20),
    ("NULL", 0, "ANY 96 bit authentication [no checking]", 0),
    ("TripleDES-CBC [RFC2451]", 24, "HMAC-SHA-256-128 [RFC4868]", 32),
]
#: how each suite's esp_sa row names its SA: Wireshark's wildcards (packet-ipsec.c get_esp_sa)
WILDCARD_ROWS = [
    ("{src}", "{dst}", "0x{spi:08x}"),  # exact
    ("*", "{dst}", "*"),  # any SPI to this destination
    ("{src}", "203.0.113.*", "0x{spi:08x}"),  # an IPv4 pattern
    ("*", "*", "0x{spi6}**"),  # an SPI pattern: the last two hex digits are any
    ("198.51.100.*", "203.0.113.*", "{spi}"),  # patterns both ways, and a decimal SPI
    ("*", "*", "0x{spi:08x}"),
]


def _frame(src: str, dst: str, proto: int, body: bytes, ident: int) -> bytes:
    eth = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
    return eth + ikesim._ipv4(src, dst, proto, body, ident)


def _write_frames(path: Path, frames: list[bytes], t0: float = 1_700_000_000.0) -> Path:
    import struct

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, pkt in enumerate(frames):
            ts = t0 + i * 0.01
            out.write(struct.pack("<IIII", int(ts), int(round((ts - int(ts)) * 1e6)), len(pkt), len(pkt)))
            out.write(pkt)
    return path


def _suite(encr_name: str, encr_len: int, auth_name: str, auth_len: int, seed: int):
    import hashlib

    from dissectors.crypto import ESP_AUTH_BY_NAME, ESP_ENCR_BY_NAME

    entry = ESP_ENCR_BY_NAME[encr_name]
    key = hashlib.sha512(b"ek%d" % seed).digest()[:encr_len]
    akey = hashlib.sha512(b"ak%d" % seed).digest()[:auth_len]
    return entry.spec(len(key), ESP_AUTH_BY_NAME[auth_name].icv_len), key, ESP_AUTH_BY_NAME[auth_name], akey


def _esp_row(src: str, dst: str, spi: str, encr_name: str, key: bytes, auth_name: str, akey: bytes) -> str:
    family = "IPv6" if ":" in dst else "IPv4"
    return (f'"{family}","{src}","{dst}","{spi}","{encr_name}","0x{key.hex()}","{auth_name}",'
            + (f'"0x{akey.hex()}"' if akey else '""'))


def legacy_esp_capture(folder: Path, packets: int = 3) -> Path:
    """ESP from 198.51.100.10 to 203.0.113.20 on one SA per ``LEGACY_SUITES`` entry, tunnel
    mode (inner IPv4/UDP), and an ``esp_sa`` naming each SA with one of ``WILDCARD_ROWS``
    (the exact row of the next SA's SPI first, so that a wildcard row never catches it)."""
    from dissectors.esp import esp_encrypt, ipv4_udp

    src, dst = "198.51.100.10", "203.0.113.20"
    frames, rows = [], []
    for n, (encr_name, elen, auth_name, alen) in enumerate(LEGACY_SUITES):
        spi = 0xC0DE0100 + n * 0x100 + 7
        encr, key, auth, akey = _suite(encr_name, elen, auth_name, alen, n)
        s_src, s_dst, s_spi = WILDCARD_ROWS[n % len(WILDCARD_ROWS)]
        rows.append(_esp_row(s_src.format(src=src), s_dst.format(dst=dst),
                             s_spi.format(spi=spi, spi6=f"{spi:08x}"[:6]), encr_name, key, auth_name, akey))
        for seq in range(1, packets + 1):
            inner = ipv4_udp("10.1.0.1", "10.2.0.1", 5000 + n, 6000, b"legacy %d/%d" % (n, seq))
            esp = esp_encrypt(spi, seq, inner, encr, key, auth, akey, iv=bytes(encr.iv_len))
            if not auth.checks:  # "ANY n bit authentication [no checking]": an ICV nobody checks
                esp += b"\x5a" * auth.icv_len
            frames.append(_frame(src, dst, 50, esp, len(frames)))
    # a wildcard row placed first would catch every later SPI to this destination: put the
    # exact rows first, as a user would, and the "any SPI" row last
    rows.sort(key=lambda r: '"*"' in r.split(",")[3])
    (folder / "esp_sa").parent.mkdir(parents=True, exist_ok=True)
    _write_frames(folder / "capture.pcap", frames)
    (folder / "esp_sa").write_text("".join(r + "\n" for r in rows), encoding="ascii")
    return folder / "capture.pcap"


def ah_esp_capture(folder: Path, packets: int = 10, replay_at: int | None = 5, gap_after: int | None = 7) -> Path:
    """IPv4 | AH (RFC 4302, HMAC-SHA1-96 ICV left as zeros: not checked) | ESP (AES-CBC-128 +
    HMAC-SHA1-96): ``packets`` ESP packets behind AH. AH's sequence number repeats at
    ``replay_at`` and skips 3 after ``gap_after`` (ESP's stay in order)."""
    import struct

    from dissectors.esp import esp_encrypt, ipv4_udp

    src, dst = "198.51.100.10", "203.0.113.20"
    encr, key, auth, akey = _suite("AES-CBC [RFC3602]", 16, "HMAC-SHA-1-96 [RFC2404]", 20, 99)
    frames, ah_seq = [], 0
    for seq in range(1, packets + 1):
        inner = ipv4_udp("10.1.0.1", "10.2.0.1", 5000, 6000, b"behind AH %d" % seq)
        esp = esp_encrypt(0xA11CE5E5, seq, inner, encr, key, auth, akey, iv=bytes(16))
        ah_seq = ah_seq if replay_at is not None and seq == replay_at + 1 else ah_seq + 1
        if gap_after is not None and seq == gap_after + 1:
            ah_seq += 3
        ah = struct.pack(">BBHII", 50, (12 + 12) // 4 - 2, 0, 0xAAAA0001, ah_seq) + bytes(12)
        frames.append(_frame(src, dst, 51, ah + esp, seq))
    folder.mkdir(parents=True, exist_ok=True)
    _write_frames(folder / "capture.pcap", frames)
    (folder / "esp_sa").write_text(_esp_row(src, dst, "0xa11ce5e5", "AES-CBC [RFC3602]", key,
                                            "HMAC-SHA-1-96 [RFC2404]", akey) + "\n", encoding="ascii")
    return folder / "capture.pcap"


def nested_esp_capture(folder: Path, packets: int = 8) -> Path:
    """ESP inside ESP: an outer tunnel (AES-CBC-256 + HMAC-SHA-256-128, gateways 192.0.2.1 ->
    192.0.2.2) carrying inner IPv4 packets of protocol 50 on an inner SA (3DES + HMAC-SHA1-96,
    hosts 10.1.0.1 -> 10.2.0.1), each carrying UDP: 2 x ``packets`` ESP packets decrypt."""
    from dissectors.esp import esp_encrypt, ipv4_udp

    o_encr, o_key, o_auth, o_akey = _suite("AES-CBC [RFC3602]", 32, "HMAC-SHA-256-128 [RFC4868]", 32, 7)
    i_encr, i_key, i_auth, i_akey = _suite("TripleDES-CBC [RFC2451]", 24, "HMAC-SHA-1-96 [RFC2404]", 20, 8)
    frames = []
    for seq in range(1, packets + 1):
        udp = ipv4_udp("10.1.0.1", "10.2.0.1", 5000, 6000, b"nested %d" % seq)
        inner_esp = esp_encrypt(0x1A1A1A1A, seq, udp, i_encr, i_key, i_auth, i_akey, iv=bytes(8))
        inner_ip = ikesim._ipv4("10.1.0.1", "10.2.0.1", 50, inner_esp, seq)
        outer = esp_encrypt(0x0B0B0B0B, seq, inner_ip, o_encr, o_key, o_auth, o_akey, iv=bytes(16))
        frames.append(_frame("192.0.2.1", "192.0.2.2", 50, outer, seq))
    folder.mkdir(parents=True, exist_ok=True)
    _write_frames(folder / "capture.pcap", frames)
    rows = [_esp_row("192.0.2.1", "192.0.2.2", "0x0b0b0b0b", "AES-CBC [RFC3602]", o_key,
                     "HMAC-SHA-256-128 [RFC4868]", o_akey),
            _esp_row("10.1.0.1", "10.2.0.1", "0x1a1a1a1a", "TripleDES-CBC [RFC2451]", i_key,
                     "HMAC-SHA-1-96 [RFC2404]", i_akey)]
    (folder / "esp_sa").write_text("".join(r + "\n" for r in rows), encoding="ascii")
    return folder / "capture.pcap"

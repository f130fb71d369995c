"""``dissectors.esp`` for senders and receivers: ``esp_encrypt``/``EspSa.seal`` the inverse of
``esp_decrypt``, byte-exact against real strongSwan/Linux ESP, and the ``ReplayWindow``
(RFC 4303 §3.4.3) that the reference peer's receiver uses."""

from __future__ import annotations

import random
import struct

import pytest

from analyzer.esp_seq import EspSeqTracker
from dissectors import crypto
from dissectors.capture import iter_datagrams
from dissectors.esp import (EspError, EspIntegrityError, EspSa, ReplayWindow, encr_key_len, esp_decrypt, esp_encrypt,
                            inner_flow, integ_key_len, ipv4_udp)
from dissectors.iana import IPPROTO_ESP, IPPROTO_UDP, EncrId, IntegId
from dissectors.keys import load_keys
from dissectors.records import Secret
from tests.conftest import SHARED, needs_shared

SUITES = [  # (ENCR id, key bits, INTEG id)
    (EncrId.AES_CBC, 128, IntegId.AUTH_HMAC_SHA2_256_128),
    (EncrId.AES_CBC, 256, IntegId.AUTH_HMAC_SHA2_512_256),
    (EncrId.AES_CBC, 128, IntegId.AUTH_HMAC_SHA1_96),
    (EncrId.AES_CTR, 128, IntegId.AUTH_HMAC_SHA2_256_128),
    (EncrId.TRIPLE_DES, 192, IntegId.AUTH_HMAC_SHA2_384_192),
    (EncrId.NULL, 0, IntegId.AUTH_HMAC_SHA2_256_128),
    (EncrId.AES_GCM_16, 128, IntegId.NONE),
    (EncrId.AES_GCM_16, 256, IntegId.NONE),
    (EncrId.AES_GCM_12, 256, IntegId.NONE),
    (EncrId.AES_GCM_8, 128, IntegId.NONE),
    (EncrId.CHACHA20_POLY1305, 256, IntegId.NONE),
]
INNER = ipv4_udp("10.1.0.1", "10.2.0.1", 40000, 5201, b"per-resource payload", ident=7)


def sa(encr: int, bits: int, integ: int, esn: bool = False, spi: int = 0xC0FFEE01) -> EspSa:
    rng = random.Random(encr * 1000 + bits + integ)
    key = Secret(rng.randbytes(encr_key_len(encr, bits)))
    akey = Secret(rng.randbytes(integ_key_len(integ)))
    return EspSa(spi, encr, bits, key, integ, akey, "192.0.2.1", "192.0.2.2", esn=esn)


@pytest.mark.parametrize("encr,bits,integ", SUITES, ids=lambda v: str(int(v)))
def test_seal_open_round_trip(encr, bits, integ):
    s = sa(encr, bits, integ)
    packet = s.seal(42, INNER)
    spi, seq = struct.unpack_from(">II", packet)
    assert (spi, seq) == (0xC0FFEE01, 42)
    assert (len(packet) - 8 - s.iv_len - s.icv_len) % max(4, crypto.encr_spec(encr, bits).block_len) == 0
    assert s.open(packet) == (42, INNER, 4)
    plain = esp_decrypt(packet, crypto.encr_spec(encr, bits), bytes(s.encr_key),
                        None if crypto.encr_spec(encr, bits).aead else crypto.integ_spec(integ), bytes(s.integ_key))
    flow = inner_flow(plain)
    assert str(flow) == "10.1.0.1:40000 -> 10.2.0.1:5201 proto 17"
    tampered = bytearray(packet)
    tampered[-1] ^= 1
    with pytest.raises(EspIntegrityError, match="ICV mismatch on SPI 0xc0ffee01 seq 42"):
        s.open(bytes(tampered))
    with pytest.raises(EspError):
        s.open(packet[:8])


@pytest.mark.parametrize("encr,bits,integ", [SUITES[0], SUITES[6]], ids=["cbc-hmac", "gcm"])
def test_esn_high_bits_are_authenticated_not_sent(encr, bits, integ):
    s = sa(encr, bits, integ, esn=True)
    seq = (3 << 32) | 17
    packet = s.seal(seq, INNER)
    assert struct.unpack_from(">I", packet, 4)[0] == 17  # only the low 32 bits on the wire
    assert s.open(packet, esn_high=3) == (17, INNER, 4)
    with pytest.raises(EspIntegrityError):
        s.open(packet, esn_high=2)
    spec = crypto.encr_spec(encr, bits)
    same = esp_encrypt(s.spi, seq, INNER, spec, bytes(s.encr_key), crypto.integ_spec(integ), bytes(s.integ_key),
                       iv=packet[8:8 + s.iv_len], esn_high=3)
    assert same == packet


def test_esp_sa_line_loads_back(tmp_path):
    s = sa(EncrId.AES_GCM_16, 256, IntegId.NONE)
    (tmp_path / "esp_sa").write_text(s.esp_sa_line() + "\n")
    store = load_keys([str(tmp_path)])
    assert store.problems == []
    row = store.esp_keys("192.0.2.2", s.spi)
    assert row is not None and bytes(row.encr_key) == bytes(s.encr_key)
    assert "0x" + bytes(s.encr_key).hex() not in repr(s)  # keys never in repr


@needs_shared
@pytest.mark.parametrize("name", ["sswan-aes128cbc-sha256-modp2048", "sswan-aes256gcm16"])
def test_reseal_reproduces_real_strongswan_packets(name):
    """Decrypt each ESP packet of a real capture (Linux kernel ESP), seal the inner packet
    again with the same SA, sequence number and IV: the bytes are the kernel's, padding and
    ICV included."""
    store = load_keys([str(SHARED / f"{name}.esp_sa")])
    checked = 0
    for d in iter_datagrams(str(SHARED / f"{name}.pcap")):
        if d.proto == IPPROTO_ESP:
            esp = d.payload
        elif d.proto == IPPROTO_UDP and 4500 in (d.sport, d.dport) and d.payload[:4] != b"\0\0\0\0" \
                and len(d.payload) > 8:
            esp = d.payload
        else:
            continue
        spi, seq = struct.unpack_from(">II", esp)
        row = store.esp_keys(d.dst, spi)
        assert row is not None and row.encr is not None
        integ = None if row.encr.aead else row.auth
        plain = esp_decrypt(esp, row.encr, bytes(row.encr_key), integ, bytes(row.auth_key))
        again = esp_encrypt(spi, seq, plain.payload, row.encr, bytes(row.encr_key), integ, bytes(row.auth_key),
                            plain.next_header, iv=esp[8:8 + row.encr.iv_len])
        assert again == esp
        checked += 1
    assert checked == 64


# --------------------------------------------------------------------------------------
# ReplayWindow


def test_replay_window_semantics():
    w = ReplayWindow(64)
    assert not w.check(0)  # never sent (RFC 4303 §3.3.3)
    for n in (1, 2, 3, 5):
        assert w.check_and_accept(n)
    assert not w.check(3)  # replay
    assert w.check(4) and w.check_and_accept(4)  # late, inside the window
    assert not w.check(4)
    assert w.check_and_accept(100)
    assert w.check(37) and not w.check(36)  # 100 - 64 + 1 is the lowest still inside
    assert w.check_and_accept(10_000)  # a jump past the window clears it
    assert not w.check(9_936) and w.check(9_937)
    w.accept(5)  # far below the window: ignored, not a crash
    assert w.top == 10_000
    with pytest.raises(ValueError):
        ReplayWindow(0)


@pytest.mark.parametrize("size", [32, 64, 1024])
def test_replay_window_drops_what_the_tracker_counts(size):
    """The receiver's window and the passive tracker (analyzer.esp_seq) judge alike: every packet
    the window drops is a replay or a reorder beyond the window for the tracker."""
    rng = random.Random(size)
    seqs, top = [], 0
    for _ in range(5000):
        r = rng.random()
        if r < 0.05 and seqs:
            seqs.append(rng.choice(seqs[-3 * size:]))  # replay, recent or old
        elif r < 0.1:
            top += rng.randint(2, 2 * size)  # gap
            seqs.append(top)
        elif r < 0.15 and top > 1:
            seqs.append(max(1, top - rng.randint(1, 2 * size)))  # late
        else:
            top += 1
            seqs.append(top)
    w = ReplayWindow(size)
    t = EspSeqTracker("192.0.2.2", 1, window=size)
    dropped = 0
    for i, n in enumerate(seqs):
        dropped += not w.check_and_accept(n)
        t.observe(n, 100, float(i), i + 1)
    assert dropped > 100
    assert dropped == t.replays + t.reorders

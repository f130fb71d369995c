"""The ESP pass held against the groups: MS4xx rules, decryption (esp_sa and SK_d), ``multisa esp``."""

from __future__ import annotations

import argparse
import json
import struct

import pytest

from analyzer import esp_commands
from analyzer.esp_analysis import analyze_esp
from analyzer.esp_keys import PFS_NOTE
from analyzer.rules import RULES
from analyzer.rules.esp import ESP_RULES
from dissectors import keymat
from dissectors.crypto import encr_spec, integ_spec
from dissectors.esp import EspSa, ipv4_udp
from dissectors.iana import DhGroup, EncrId, IntegId, PrfId
from dissectors.keys import load_keys
from tests import ikesim
from tests.conftest import SHARED, needs_shared

ETH = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
SK_D = bytes(range(32))


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="multisa")
    esp_commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["esp", *argv])
    return args.func(args)


def _captures():
    out = [(p, sorted(SHARED.glob(p.stem + ".*_*"))) for p in sorted(SHARED.glob("sswan-*.pcap"))]
    out += [(p, [p.parent]) for p in sorted(SHARED.glob("*/*.pcap"))]
    return out


# --------------------------------------------------------------------------------------
# Real strongSwan captures


@needs_shared
@pytest.mark.parametrize("engine", ["c", "python"])
def test_shared_captures_grouped(engine):
    from analyzer import esp_scan

    if engine == "c" and esp_scan._c is None:
        pytest.skip("dissectors._espscan is not built (pip install -e .)")
    for pcap, keys in _captures():
        r = analyze_esp(pcap, load_keys(keys), engine=engine)
        assert r.error is None and r.engine == engine
        expected = 14 if pcap.name.startswith("sswan-") else 6
        assert len(r.sas) == expected
        assert all(v.group_id == 1 and v.direction in ("I->R", "R->I") for v in r.sas)
        assert {v.tracker.dst for v in r.sas} == {"192.0.2.1", "192.0.2.2"}
        assert not [f for f in r.findings if f.code.startswith("MS4")]


@needs_shared
def test_shared_captures_decrypt_with_esp_sa():
    """AES-CBC-128 + HMAC-SHA-256-128 and AES-GCM-256: every ICV verifies."""
    for pcap, keys in _captures():
        r = analyze_esp(pcap, load_keys(keys), decrypt=True)
        for v in r.sas:
            assert v.decrypted == v.tracker.packets and v.icv_failures == 0, (pcap, hex(v.spi))
            assert v.key_source.startswith("esp_sa ")
            (flow,) = v.flows
            assert flow.proto == 1  # the pings
            assert {flow.src, flow.dst} == {"198.51.100.1", "203.0.113.1"}


@needs_shared
def test_wrong_keys_are_a_finding_not_garbage(tmp_path):
    pcap, keys = _captures()[0]
    esp_sa = next(k for k in keys if k.name.endswith("esp_sa"))
    lines = esp_sa.read_text().splitlines()
    bad = []
    for line in lines:  # flip one nibble of every authentication key
        head, key = line.rsplit(',"0x', 1)
        bad.append(f'{head},"0x{"0" if key[0] != "0" else "1"}{key[1:]}')
    (tmp_path / "bad.esp_sa").write_text("\n".join(bad) + "\n")
    r = analyze_esp(pcap, load_keys([tmp_path / "bad.esp_sa"]), decrypt=True)
    assert all(v.decrypted == 0 and v.icv_failures == v.tracker.packets for v in r.sas)
    assert {f.code for f in r.findings} >= {"MS420"}
    assert not any(v.flows for v in r.sas)


@needs_shared
def test_cli_json_contract(capsys):
    pcap = SHARED / "strongswan6-percpu-2cpu" / "capture.pcap"
    assert cli(str(pcap), "--keys", str(pcap.parent), "--json", "--decrypt") == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["sas"]) == 6 and doc["groups"][0]["id"] == 1
    for sa in doc["sas"]:
        assert len(sa["spi"]) == 8 and int(sa["spi"], 16)
        for key, kind in (("src", str), ("dst", str), ("packets", int), ("bytes", int), ("first_seq", int),
                          ("last_seq", int), ("replays", int), ("gaps", int), ("reorders", int),
                          ("decrypted", int), ("group", int)):
            assert isinstance(sa[key], kind), key
        assert sa["decrypted"] == sa["packets"]
    members = [sa for sa in doc["sas"] if sa["role"] == "member"]
    assert {sa["resource_id"] for sa in members} == {"00000000", "00000001"}


@needs_shared
def test_cli_text_and_truncated_capture(tmp_path, capsys):
    pcap = SHARED / "sswan-aes128cbc-sha256-modp2048.pcap"
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(pcap.read_bytes()[:15000])
    assert cli(str(cut)) == 2
    out, err = capsys.readouterr()
    assert "ESP SAs" in out
    assert err.startswith(f"multisa: error: {cut}: frame ") and "truncated" in err
    assert "Traceback" not in out + err


# --------------------------------------------------------------------------------------
# SK_d: keys derived per RFC 7296 §2.17 (a generated conversation with real ESP)


def _esp_frame(src: str, dst: str, body: bytes, ident: int) -> bytes:
    return ETH + ikesim._ipv4(src, dst, 50, body, ident)


def _sk_d_capture(tmp_path):
    """IKE_SA_INIT + IKE_AUTH (initial SA), a CREATE_CHILD_SA without KE and one with KE (PFS);
    ESP both ways on each, sealed with keys derived from SK_D and the exchanges' nonces."""
    conv = ikesim.Conversation(clear=True)
    conv.ike_sa_init()
    auth = conv.ike_auth(b"", b"")
    plain = conv.create_child("I", ikesim.rid(1), ikesim.rid(2), pfs=None)
    pfs = conv.create_child("R", ikesim.rid(3), ikesim.rid(4), pfs=DhGroup.CURVE25519)
    nonce = bytes(32)  # ikesim's nonces
    encr = encr_spec(EncrId.AES_CBC, 128)
    integ = integ_spec(IntegId.AUTH_HMAC_SHA2_256_128)
    frames = []
    for i, rec in enumerate(conv.records):
        frames.append((rec.frame.ts, ikesim.frame_bytes(rec, i)))
    t = conv.t
    spis = conv.spis
    for ex, by in ((auth, "I"), (plain, "I"), (pfs, "R")):
        km = keymat.child_keymat(PrfId.PRF_HMAC_SHA2_256, SK_D, nonce, nonce, encr.key_len, integ.key_len)
        other = "R" if by == "I" else "I"
        # the exchange initiator sends with the first keys to the responder's SPI
        for sender, keys in ((by, (km.encr_i, km.integ_i)), (other, (km.encr_r, km.integ_r))):
            receiver = "R" if sender == "I" else "I"
            sa = EspSa(int.from_bytes(ex.child.spi[receiver], "big"), EncrId.AES_CBC, 128, keys[0],
                       IntegId.AUTH_HMAC_SHA2_256_128, keys[1])
            for seq in range(1, 4):
                t += 0.01
                inner = ipv4_udp("198.51.100.7", "203.0.113.9", 40000 + seq, 5201, b"x" * 40)
                frames.append((t, _esp_frame(conv.addr[sender], conv.addr[receiver], sa.seal(seq, inner), seq)))
    path = tmp_path / "skd.pcap"
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for ts, data in frames:
            sec = int(ts)
            out.write(struct.pack("<IIII", sec, int(round((ts - sec) * 1e6)), len(data), len(data)) + data)
    sk_d = tmp_path / "test.ikev2_sk_d"
    sk_d.write_text(f"{spis[0].hex()},{spis[1].hex()},{SK_D.hex()},PRF_HMAC_SHA2_256\n")
    return path, sk_d, (auth, plain, pfs)


def test_sk_d_derives_every_non_pfs_child_sa(tmp_path, capsys):
    path, sk_d, (auth, plain, pfs) = _sk_d_capture(tmp_path)
    r = analyze_esp(path, load_keys([sk_d]), decrypt=True)
    assert r.error is None
    by_spi = {v.spi: v for v in r.sas}
    assert len(by_spi) == 6
    for ex in (auth, plain):
        for side in ("I", "R"):
            v = by_spi[int.from_bytes(ex.child.spi[side], "big")]
            assert v.decrypted == 3 and v.icv_failures == 0 and v.key_source == "derived from SK_d"
            assert {(f.proto, f.dport) for f in v.flows} == {(17, 5201)}
    for side in ("I", "R"):
        v = by_spi[int.from_bytes(pfs.child.spi[side], "big")]
        assert v.decrypted == 0 and v.key_note == PFS_NOTE
    # the CLI: --sk-d FILE, the PFS note in the table, keys never printed
    assert cli(str(path), "--sk-d", str(sk_d), "--flows") == 0
    out = capsys.readouterr().out
    assert "derived from SK_d" in out and PFS_NOTE in out and "198.51.100.7:40001 -> 203.0.113.9:5201" in out
    assert SK_D.hex() not in out


def test_sk_d_wrong_key_fails_icv(tmp_path):
    path, sk_d, _ = _sk_d_capture(tmp_path)
    sk_d.write_text(sk_d.read_text().replace(SK_D.hex(), bytes(32).hex()))
    r = analyze_esp(path, load_keys([sk_d]), decrypt=True)
    assert sum(v.icv_failures for v in r.sas) == 12 and sum(v.decrypted for v in r.sas) == 0
    assert "MS420" in {f.code for f in r.findings}


# --------------------------------------------------------------------------------------
# Rules held against the groups (generated conversations, ESP headers only)


def _write(tmp_path, conv, name="conv.pcap"):
    path = tmp_path / name
    ikesim.write_pcap(path, conv.records)
    return path


def codes(r) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in r.findings:
        out[f.code] = out.get(f.code, 0) + 1
    return out


def test_rules_registered():
    assert {"MS401", "MS402", "MS403", "MS404", "MS405", "MS410", "MS411", "MS412", "MS413", "MS414", "MS415",
            "MS420"} == set(ESP_RULES)
    assert set(ESP_RULES) <= set(RULES)  # the registry imports analyzer.rules.esp


def test_clean_group_has_no_esp_findings(tmp_path):
    conv = ikesim.Conversation(clear=True)
    fb = conv.established(b"", b"")
    m1 = conv.create_child("I", ikesim.rid(1), ikesim.rid(2)).child
    m2 = conv.create_child("I", ikesim.rid(3), ikesim.rid(4)).child
    for c in (m1, m2):
        conv.esp(c, 20, "R")
        conv.esp(c, 20, "I")
    conv.esp(fb, 2, "R")
    r = analyze_esp(_write(tmp_path, conv))
    assert not [c for c in codes(r) if c.startswith("MS4")]


def test_group_rules(tmp_path):
    conv = ikesim.Conversation(clear=True)
    conv.esp(ikesim.Child({"I": b"\x0b\xad\xca\xfe", "R": b"\x0b\xad\xca\xff"}, ((), ())), 3, "R")  # MS412 later? no: unknown
    fb = conv.established(b"", b"")
    m1 = conv.create_child("I", ikesim.rid(1), ikesim.rid(2)).child
    m2 = conv.create_child("I", ikesim.rid(3), ikesim.rid(4)).child
    m3 = conv.create_child("I", ikesim.rid(5), ikesim.rid(6)).child
    conv.at(30)  # members idle for longer than idle_seconds (10 s) while the group carries traffic
    conv.esp(fb, 500, "R")  # fallback busy (MS413)
    conv.esp(m1, 200, "R")
    conv.esp(m2, 5, "R")  # imbalance 200 vs 5 (MS414); m3 idle (MS415)
    conv.delete_child(m1)
    conv.esp(m1, 1, "R")  # after its Delete (MS411)
    r = analyze_esp(_write(tmp_path, conv))
    got = codes(r)
    assert got.get("MS410") == 1
    assert got.get("MS411") == 1
    assert got.get("MS413") == 1
    assert got.get("MS414") == 1
    assert got.get("MS415") == 1
    assert m3 is not None


def test_group_rules_wait_for_idle_seconds_and_enough_packets(tmp_path):
    """A short capture (members idle for 1 s, a dozen packets per member) gets no MS413-MS415."""
    conv = ikesim.Conversation(clear=True)
    fb = conv.established(b"", b"")
    m1 = conv.create_child("I", ikesim.rid(1), ikesim.rid(2)).child
    m2 = conv.create_child("I", ikesim.rid(3), ikesim.rid(4)).child
    conv.create_child("I", ikesim.rid(5), ikesim.rid(6))  # never used
    conv.at(1)
    conv.esp(fb, 40, "R")
    conv.esp(m1, 24, "R")
    conv.esp(m2, 2, "R")
    got = codes(analyze_esp(_write(tmp_path, conv)))
    assert not {"MS413", "MS414", "MS415"} & set(got), got


def test_sequence_rules(tmp_path):
    conv = ikesim.Conversation(clear=True)
    fb = conv.established(b"", b"")
    conv.esp(fb, 10, "R")
    path = _write(tmp_path, conv)
    r = analyze_esp(path)
    assert not [c for c in codes(r) if c.startswith("MS4")]
    # rewrite the sequence numbers of the ESP frames: replay, gap, beyond-window, wrap
    seqs = iter([1, 2, 2, 3, 8, 100, 9, 0xFFFFFFFF, 1, 2])
    data = bytearray(path.read_bytes())
    pos, n = 24, 0
    while pos < len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        frame = data[pos + 16: pos + 16 + caplen]
        if frame[23] == 50:
            struct.pack_into(">I", data, pos + 16 + 34 + 4, next(seqs))
            n += 1
        pos += 16 + caplen
    assert n == 10
    path.write_bytes(bytes(data))
    r = analyze_esp(path)
    got = codes(r)
    assert got.get("MS401") == 1 and got.get("MS402") == 1 and got.get("MS403") == 1 and got.get("MS404") == 1
    msg = next(f.message for f in r.findings if f.code == "MS401")
    assert "replayed" in msg and "64-packet" in msg


def test_select_and_ignore_reach_the_esp_rules(tmp_path):
    from analyzer.config import Settings

    conv = ikesim.Conversation(clear=True)
    fb = conv.established(b"", b"")
    conv.esp(ikesim.Child({"I": b"\x0b\xad\xca\xfe", "R": b"\x0b\xad\xca\xff"}, ((), ())), 3, "R")
    conv.esp(fb, 3, "R")
    path = _write(tmp_path, conv)
    assert "MS410" in codes(analyze_esp(path))
    assert "MS410" not in codes(analyze_esp(path, settings=Settings(ignore=["MS41"])))
    only = codes(analyze_esp(path, settings=Settings(select=["MS410"])))
    assert set(only) == {"MS410"}

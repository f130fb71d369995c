"""Importers of kernel XFRM state into the snapshot model, on the shared real files."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from analyzer.xfrm_commands import main as xfrm_main
from analyzer.xfrm_state import (
    SampleJsonWriter,
    XfrmImportError,
    counter_delta,
    load_series,
    load_snapshot,
    parse_ip_xfrm,
    snapshot_from_dict,
)
from tests.conftest import SHARED, needs_shared

PERCPU = SHARED / "strongswan6-percpu-2cpu"


@needs_shared
@pytest.mark.parametrize("peer", ["moon", "sun"])
def test_capture_json_is_the_per_cpu_group(peer):
    snap = load_snapshot(PERCPU / f"{peer}.xfrm-sa.json")
    assert snap.source == "capture-json" and snap.netns == peer
    assert len(snap.sas) == 6
    per_cpu = [sa for sa in snap.sas if sa.pcpu is not None]
    assert len(per_cpu) == 4
    for direction in (1, 2):  # each direction: CPU 0 and CPU 1 once, plus the fallback
        assert sorted(sa.pcpu for sa in per_cpu if sa.dir == direction) == [0, 1]
        fallback = [sa for sa in snap.sas if sa.dir == direction and sa.pcpu is None]
        assert len(fallback) == 1
    assert all(sa.reqid == 1 and sa.proto == 50 and sa.mode == 1 for sa in snap.sas)
    assert all(sa.replay_window == 0 for sa in snap.sas if sa.dir == 2)  # kernel rule for out
    (out,) = [p for p in snap.policies if p.dir == 1]
    assert out.cpu_acquire and out.flags == 4 and out.templates is None  # not in the dump
    assert not any(p.cpu_acquire for p in snap.policies if p.dir != 1)


@needs_shared
def test_moon_text_and_json_agree():
    """iproute2 6.1's text and the netlink dump of the same kernel at the same moment."""
    text = load_snapshot(PERCPU / "moon.ip-s-xfrm-state.txt")
    dump = load_snapshot(PERCPU / "moon.xfrm-sa.json")
    assert text.source == "ip-text"
    key = lambda s: (s.spi_hex, s.src, s.dst, s.reqid, s.mode, s.seq, s.replay_window,  # noqa: E731
                     s.flags, s.curlft.bytes, s.curlft.packets, s.replay.oseq, s.replay.seq,
                     s.replay.bitmap, s.lifetime_cfg.soft_add_expires_seconds,
                     s.lifetime_cfg.hard_add_expires_seconds, s.stats)
    assert [key(s) for s in text.sas] == [key(s) for s in dump.sas]
    assert all(s.pcpu is None and s.dir is None for s in text.sas)  # 6.1 prints neither
    ca = text.sa(0xCA2C6B46)
    assert {(a.kind, a.name, a.key_len, a.icv_len) for a in ca.algos} == {
        ("auth_trunc", "hmac(sha256)", 256, 128), ("crypt", "cbc(aes)", 128, None)}


@needs_shared
def test_moon_and_sun_mirror_each_other():
    moon, sun = (load_snapshot(PERCPU / f"{p}.xfrm-sa.json") for p in ("moon", "sun"))
    for sa in moon.sas:
        peer = sun.sa(sa.spi, dst=sa.dst)
        assert peer is not None and peer.dir == 3 - sa.dir
        # each kernel binds an SA to *its own* CPU: pcpu is per host, never mirrored
        assert (peer.pcpu is None) == (sa.pcpu is None)
        if sa.dir == 2:  # what moon sent is what sun received
            assert sa.replay.oseq == peer.replay.seq and sa.curlft.bytes == peer.curlft.bytes


@needs_shared
def test_no_key_material_in_any_import(tmp_path, capsys):
    text = (PERCPU / "moon.ip-s-xfrm-state.txt").read_text()
    keys = [line.split()[2] for line in text.splitlines()
            if line.strip().startswith(("auth-trunc", "enc "))]
    assert keys and all(k.startswith("0x") for k in keys)
    assert xfrm_main(["xfrm", "import", str(PERCPU / "moon.ip-s-xfrm-state.txt"), "--json"]) == 0
    out = capsys.readouterr().out
    for k in keys:
        assert k[2:] not in out


# iproute2 >= 7.0 prints XFRMA_SA_DIR and XFRMA_SA_PCPU as "dir in|out" and "pcpu-num N"
# (iproute2 commit b544c7c5 "ip-xfrm: add pcpu-num support", ipxfrm.c xfrm_xfrma_print).
IP7_STATE = """\
src 192.0.2.1 dst 192.0.2.2
\tproto esp spi 0xcdcf94a8 reqid 1 mode tunnel
\treplay-window 0 seq 0x00000000 flag af-unspec esn (0x00100080)
\taead rfc4106(gcm(aes)) 0x00 (160 bits) 128
\tanti-replay esn context:
\t seq-hi 0x0, seq 0x0, oseq-hi 0x1, oseq 0x4
\t replay_window 0, bitmap-length 0
\tdir out
\tpcpu-num 1
\tlifetime current:
\t  336(bytes), 4(packets)
\t  add 2026-11-22 07:59:16 use 2026-11-22 07:59:19
"""


def test_iproute2_7_pcpu_num_and_dir():
    snap = parse_ip_xfrm(IP7_STATE, "ip7")
    (sa,) = snap.sas
    assert (sa.spi, sa.dir, sa.pcpu) == (0xCDCF94A8, 2, 1)
    assert sa.replay.esn and (sa.replay.oseq, sa.replay.oseq_hi) == (4, 1)
    assert sa.flags == 32 | 128
    assert sa.algos[0].kind == "aead" and sa.algos[0].icv_len == 128
    assert (sa.curlft.bytes, sa.curlft.packets) == (336, 4)


def test_bad_text_names_file_and_line(tmp_path):
    bad = tmp_path / "state.txt"
    bad.write_text("src 192.0.2.1 dst 192.0.2.2\n\tsomething else\n")
    with pytest.raises(XfrmImportError, match=r"state.txt:1: neither an SA"):
        load_series(bad)
    bad.write_text("\tindented first\n")
    with pytest.raises(XfrmImportError, match=r"state.txt:1:"):
        load_series(bad)


def test_bad_json_lines_names_line(tmp_path):
    bad = tmp_path / "s.jsonl"
    bad.write_text('{"format": "multisa.xfrm", "version": 1, "sas": [], "policies": []}\n{oops\n')
    with pytest.raises(XfrmImportError, match=r"s.jsonl:2: not JSON"):
        load_series(bad)


def test_cli_import_bad_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "x.txt"
    bad.write_text("garbage line\n")
    assert xfrm_main(["xfrm", "import", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "x.txt" in err and "Traceback" not in err


@needs_shared
def test_json_round_trip_and_series(tmp_path):
    snap = load_snapshot(PERCPU / "moon.xfrm-sa.json")
    again = snapshot_from_dict(json.loads(json.dumps(snap.to_dict())))
    assert again.sas == snap.sas and again.policies == snap.policies
    # a two-sample series, the second with one more packet on every SA
    later = replace(snap, ts=2.0, sas=tuple(
        replace(sa, curlft=replace(sa.curlft, bytes=sa.curlft.bytes + 84,
                                   packets=sa.curlft.packets + 1)) for sa in snap.sas))
    series = tmp_path / "series.jsonl"
    series.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in (snap, later)))
    a, b = load_series(series)
    assert b.ts == 2.0
    assert counter_delta(a.sas[0], b.sas[0]) == {"bytes": 84, "packets": 1, "oseq": 0, "seq": 0}


@needs_shared
@pytest.mark.parametrize("peer", ["moon", "sun"])
def test_sample_lines_parse_to_the_snapshot_dict(peer):
    """``multisa xfrm snapshot``'s writer keeps each SA's encoded configuration across samples:
    every line still parses to exactly ``to_dict()``, when counters move and SAs come and go."""
    snap = load_snapshot(PERCPU / f"{peer}.xfrm-sa.json")
    later = replace(snap, ts=2.0, sas=tuple(
        replace(sa, curlft=replace(sa.curlft, packets=sa.curlft.packets + 7),
                replay=replace(sa.replay, oseq=sa.replay.oseq + 7), lastused=1795334399)
        for sa in snap.sas[1:]))
    rekeyed = replace(later, ts=3.0, sas=(replace(snap.sas[0], spi=0xC0FFEE01), *later.sas))
    writer = SampleJsonWriter()
    for sample in (snap, later, rekeyed, snap):
        line = writer.line(sample)
        assert "\n" not in line and json.loads(line) == sample.to_dict()
    assert len(writer._heads) == len(snap.sas) >= 3


@needs_shared
def test_cli_import_json_contract(capsys):
    assert xfrm_main(["xfrm", "import", str(PERCPU / "sun.xfrm-sa.json"), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    sa = doc["sas"][0]
    assert len(sa["spi"]) == 8 and int(sa["spi"], 16) == 3261884909
    assert isinstance(sa["proto"], int) and isinstance(sa["reqid"], int)
    assert set(sa["lifetime"]) >= {"bytes", "packets"} and set(sa["replay"]) >= {"oseq", "seq"}
    assert {"dir", "flags", "index", "priority", "selector", "templates"} <= set(doc["policies"][0])


def test_empty_file(tmp_path):
    p = tmp_path / "empty"
    p.write_text("")
    with pytest.raises(XfrmImportError, match="empty file"):
        load_series(p)



# --- issue 16: bad input never crashes and never leaks (minimal reproducers of the fuzz finds)

POLICY_HEAD = "src 198.51.100.0/24 dst 203.0.113.0/24\n"


@pytest.mark.parametrize("token", ["priority", "index", "action", "ptype", "share"])
def test_policy_token_without_its_value_names_the_line(tmp_path, token):
    """Was StopIteration out of ``xfrm import``: a keyword last on the line, its value gone."""
    bad = tmp_path / "pol.txt"
    bad.write_text(POLICY_HEAD + f"\tdir out {token}\n")
    with pytest.raises(XfrmImportError, match=rf"pol.txt:2: '{token}' without a value"):
        load_series(bad)


def test_policy_dir_without_its_value_names_the_line(tmp_path):
    """Was IndexError: ``dir`` alone on its line."""
    bad = tmp_path / "pol.txt"
    bad.write_text(POLICY_HEAD + "\tdir\n")
    with pytest.raises(XfrmImportError, match=r"pol.txt:2: 'dir' without in, out or fwd"):
        load_series(bad)


def test_policy_4000_digit_flag_is_a_one_line_error(tmp_path, capsys):
    """Was ValueError (Python's int-to-str digit limit) out of ``xfrm import --json``: the
    hex flag parsed into a 16,000-bit int that JSON could not print. Policy flags are 8 bits."""
    bad = tmp_path / "pol.txt"
    bad.write_text(POLICY_HEAD + "\tdir out priority 1 flag " + "f" * 4000 + "\n")
    assert xfrm_main(["xfrm", "import", str(bad), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pol.txt:2: flag: out of range (8 bits)" in err
    bad.write_text(POLICY_HEAD + "\tdir out priority 1 flag 1ff\n")
    with pytest.raises(XfrmImportError, match=r"pol.txt:2: flag: out of range"):
        load_series(bad)


SA_MIN = {"src": "192.0.2.1", "dst": "192.0.2.2", "spi": "c0ffee01", "proto": 50, "mode": 1, "reqid": 1}


@pytest.mark.parametrize("doc,field", [
    ({"sas": [1]}, "sas[0]: expected an object, got a number"),
    ({"sas": "x"}, "sas: expected a list, got a string"),
    ({"policies": [[]]}, "policies[0]: expected an object, got a list"),
    ({"sas": [{**SA_MIN, "src": 1}]}, "sas[0].src: expected a string, got a number"),
    ({"sas": [{**SA_MIN, "src": "x"}]}, "sas[0].src: not an IP address"),
    ({"sas": [{**SA_MIN, "proto": "esp"}]}, "sas[0].proto: expected an integer, got a string"),
    ({"sas": [{**SA_MIN, "lifetime": []}]}, "sas[0].lifetime: expected an object, got a list"),
    ({"sas": [{**SA_MIN, "lifetime": {"bytes": "1"}}]}, "sas[0].lifetime.bytes: expected an integer"),
    ({"sas": [{**SA_MIN, "algos": [{"kind": "crypt", "name": 1, "key_len": 1}]}]}, "sas[0].algos[0].name"),
    ({"sas": [{**SA_MIN, "reqid": 1 << 40}]}, "sas[0].reqid: out of range"),
    ({"sas": [{**SA_MIN, "mark": [1]}]}, "sas[0].mark: expected [value, mask]"),
    ({"sas": [], "ts": "now"}, "ts: expected a finite number"),
    ({"policies": [{"dir": "out", "index": 1, "priority": 1}]}, "policies[0].dir: expected an integer"),
    ({"policies": [{"dir": 1, "index": 1, "priority": 1, "templates": [{"dst": "192.0.2.2"}]}]},
     "policies[0].templates[0].spi: missing"),
    ({"sas": [{"src": "192.0.2.1", "dst": "192.0.2.2", "spi": 1, "proto": 50, "mode": 1, "reqid": 1,
               "curlft": [], "attr_names": []}]}, "sas[0].curlft: expected an object"),
])
def test_snapshot_json_of_wrong_types_names_the_field(tmp_path, capsys, doc, field):
    """Were AttributeError/TypeError out of ``xfrm_state`` or ``render_text`` (``{"sas": [1]}``,
    a number where an address goes, a list where an object goes), or accepted silently."""
    bad = tmp_path / "snap.json"
    bad.write_text(json.dumps(doc))
    for extra in ([], ["--json"]):
        assert xfrm_main(["xfrm", "import", str(bad), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"snap.json: sample 1: {field}" in err, err


def test_snapshot_json_number_past_the_digit_limit(tmp_path, capsys):
    bad = tmp_path / "snap.json"
    bad.write_text('{"sas": [], "ts": ' + "1" * 5000 + "}")
    assert xfrm_main(["xfrm", "import", str(bad)]) == 2
    assert "snap.json" in capsys.readouterr().err


KEY_HEX = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf"
SA_TEXT = ("src 192.0.2.1 dst 192.0.2.2\n\tproto esp spi 0xcdcf94a8 reqid 1 mode tunnel\n"
           "\treplay-window 0 flag af-unspec\n\t{algo}\n")


@pytest.mark.parametrize("algo", [f"enc 0x{KEY_HEX} (128 bits)",  # the name missing
                                  f"enc cbc(aes)0x{KEY_HEX} (128 bits)",  # the name glued to the key
                                  f"enc {KEY_HEX} 0x00 (128 bits)",  # a key where the name goes
                                  f"aead rfc4106(gcm(aes)){KEY_HEX} (160 bits) 128"])
def test_key_in_the_algorithm_name_is_withheld(tmp_path, capsys, algo):
    """LEAK: the key became the algorithm's "name" and ``xfrm import --json`` printed it."""
    src = tmp_path / "state.txt"
    src.write_text(SA_TEXT.format(algo=algo))
    for extra in ([], ["--json"]):
        assert xfrm_main(["xfrm", "import", str(src), *extra]) == 0
        out = capsys.readouterr().out
        assert KEY_HEX[:16] not in out and KEY_HEX[16:] not in out
    (sa,) = load_snapshot(src).sas
    assert sa.algos[0].name == "(withheld)"


def test_real_algorithm_names_are_kept():
    from dissectors.xfrm import safe_alg_name

    for name in ("cbc(aes)", "rfc4106(gcm(aes))", "authencesn(hmac(sha256),cbc(aes))", "hmac(sha512)",
                 "rfc7539esp(chacha20,poly1305)", "ecb(cipher_null)", "digest_null", "deflate", ""):
        assert safe_alg_name(name) == name


def _newsa(attrs=()) -> bytes:
    """A NEWSA built by the product's pyroute2 class, then raw attributes appended."""
    import struct

    from dissectors.xfrm import xfrm_usersa_info

    m = xfrm_usersa_info()
    m["id_daddr"], m["saddr"] = bytes([192, 0, 2, 2]) + bytes(12), bytes([192, 0, 2, 1]) + bytes(12)
    m["id_spi"], m["id_proto"], m["family"], m["sel_family"], m["mode"], m["reqid"] = 0xC0FFEE01, 50, 2, 2, 1, 1
    m["header"] = {"type": 0x10, "flags": 2, "sequence_number": 1}
    m.encode()
    raw = bytearray(m.data)
    for atype, body, declared in attrs:
        raw += struct.pack("HH", declared if declared is not None else 4 + len(body), atype) + body
        raw += bytes(-len(raw) % 4)
    struct.pack_into("I", raw, 0, len(raw))
    return bytes(raw)


def _both(data: bytes):
    from dissectors.xfrm import XfrmError, parse_messages, sa_from_bytes, sa_from_msg

    out = []
    for decode in (lambda: sa_from_bytes(data), lambda: sa_from_msg(next(parse_messages(data))[1])):
        try:
            out.append(decode())
        except XfrmError as err:
            out.append(f"XfrmError: {err}")
    return out


@pytest.mark.parametrize("data,why", [
    # XFRMA_ALG_CRYPT with 4 bytes of its 68 (fast path: struct.error)
    (_newsa([(2, b"\0" * 4, None)]), "attribute 2 at offset 240: 4 bytes, its struct needs 68"),
    # XFRMA_LTIME_VAL declared 36 bytes long, 8 there (both: struct.error)
    (_newsa([(9, b"\0" * 8, 36)]), "length 36 past the message end"),
    # a zero-length attribute, then XFRMA_IF_ID: the fast path stopped, pyroute2 read on
    (_newsa([(31, b"", 0), (31, b"\7\0\0\0", None)]), "length 0 under 4"),
], ids=["alg-short", "attr-past-end", "attr-length-0"])
def test_damaged_netlink_raises_xfrm_error_in_both_decoders(data, why):
    """Were struct.error in one decoder or both, or records that differ between them."""
    fast, slow = _both(data)
    assert fast == slow and fast.startswith("XfrmError") and why in fast


def test_netlink_body_shorter_than_usersa_info():
    """Was struct.error in pyroute2's decoder (the fast one raised XfrmError): both agree."""
    import struct

    data = bytearray(_newsa()[:16 + 100])
    struct.pack_into("I", data, 0, len(data))
    fast, slow = _both(bytes(data))
    assert fast == slow and "NEWSA message at offset 0: 116 bytes" in fast


def test_netlink_delsa_without_its_sa_attribute():
    """Was TypeError ('NoneType' is not subscriptable) out of ``xfrm watch``'s event decoder."""
    import struct

    from dissectors.xfrm import XfrmError, event_from_msg, parse_messages

    body = bytes([192, 0, 2, 2]) + bytes(12) + struct.pack(">I", 1) + struct.pack("HB", 2, 50) + bytes(1)
    data = struct.pack("IHHII", 16 + len(body), 0x11, 0, 1, 0) + body
    (hdr, msg), = list(parse_messages(data))
    with pytest.raises(XfrmError, match="DELSA message without its XFRMA_SA"):
        event_from_msg(msg, 0.0)


def test_good_netlink_still_agrees():
    data = _newsa([(31, b"\7\0\0\0", None), (33, b"\2", None)])
    fast, slow = _both(data)
    assert fast == slow and fast.if_id == 7 and fast.dir == 2

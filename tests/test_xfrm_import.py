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


"""``multisa show`` for Wireshark users (issue 15 item 6): ESP frames listed with SPI,
sequence number and (with esp_sa keys) the decrypted inner packet, IP/UDP layer lines,
IV / Pad / Pad Length / Next header / ICV status as tshark shows them, ``-c N`` and
``--frames A-B`` as tshark reads frames. Held against real tshark on a real capture."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLEAN = ROOT / "samples" / "peer" / "clean"
CAP = CLEAN / "capture.pcapng"


def show(*argv: str) -> str:
    res = subprocess.run([sys.executable, "-m", "analyzer.cli", "show", str(CAP), *argv], capture_output=True,
                         text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


def frames_of(text: str) -> dict[int, str]:
    blocks = {}
    for block in text.split("\n\n"):
        m = re.match(r"Frame (\d+):", block)
        if m:
            blocks[int(m.group(1))] = block
    return blocks


def tshark_fields(fields: list[str], keys: bool = True, tmp: Path | None = None) -> list[list[str]]:
    env = dict(os.environ)
    if keys:
        assert tmp is not None
        shutil.copy(CLEAN / "esp_sa", tmp / "esp_sa")
        (tmp / "preferences").write_text("esp.enable_encryption_decode: TRUE\n")
        env["WIRESHARK_CONFIG_DIR"] = str(tmp)
    cmd = ["tshark", "-n", "-r", str(CAP), "-Y", "esp", "-T", "fields", "-E", "separator=|"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120).stdout
    return [line.split("|") for line in out.splitlines()]


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")


@needs_tshark
def test_esp_frames_as_tshark_decodes_them(tmp_path):
    blocks = frames_of(show("-k", str(CLEAN)))
    rows = tshark_fields(["frame.number", "esp.spi", "esp.sequence", "esp.pad_len", "esp.protocol", "ip.src", "ip.dst",
                          "udp.srcport", "udp.dstport"], tmp=tmp_path)
    assert len(rows) > 20
    for number, spi, seq, pad_len, nh, ips, ipd, sports, dports in rows:
        block = blocks[int(number)]
        assert f"ESP SPI: 0x{int(spi, 16):08x} ({int(spi, 16)})" in block
        assert f"\n    ESP Sequence: {seq}\n" in block
        assert f"ESP Pad Length: {pad_len}" in block and f"(0x{int(nh, 0):02x})" in block
        assert "[ICV status: Good]" in block
        inner_src, inner_dst = ips.split(",")[1], ipd.split(",")[1]
        assert f"Internet Protocol Version 4, Src: {inner_src}, Dst: {inner_dst}" in block
        assert f"User Datagram Protocol, Src Port: {sports.split(',')[1]}, Dst Port: {dports.split(',')[1]}" in block


@needs_tshark
def test_esp_without_keys_and_with_wrong_keys(tmp_path):
    blocks = frames_of(show())
    esp = [b for b in blocks.values() if "Encapsulating Security Payload" in b]
    assert esp and all("not decrypted" in b and "ESP Sequence:" in b for b in esp)
    lines = (CLEAN / "esp_sa").read_text().splitlines()
    bad = []
    for line in lines:  # flip the last hex digit of each encryption key: the AEAD tag fails
        fields = line.split(",")
        key = fields[5]
        fields[5] = key[:-2] + ("0" if key[-2] != "0" else "1") + key[-1]
        bad.append(",".join(fields))
    (tmp_path / "esp_sa").write_text("\n".join(bad) + "\n")
    blocks = frames_of(show("-k", str(tmp_path / "esp_sa")))
    esp = [b for b in blocks.values() if "Encapsulating Security Payload" in b]
    assert esp and all("[ICV status: Bad -- wrong keys?]" in b and "Decrypted Data" not in b for b in esp)


@needs_tshark
def test_count_and_frame_ranges_like_tshark():
    text = show("-k", str(CLEAN), "-c", "12")
    numbers = sorted(frames_of(text))
    tshark = subprocess.run(["tshark", "-n", "-r", str(CAP), "-c", "12", "-T", "fields", "-e", "frame.number",
                             "-Y", "isakmp or esp"], capture_output=True, text=True, timeout=60).stdout.split()
    assert numbers == [int(n) for n in tshark]
    assert sorted(frames_of(show("-k", str(CLEAN), "--frames", "10-20"))) == list(range(10, 21))
    assert sorted(frames_of(show("--frames", "3,5-6"))) == [3, 5, 6]


def test_layer_lines_on_ike_frames():
    block = frames_of(show("-k", str(CLEAN), "--frames", "1"))[1]
    assert block.splitlines()[1:3] == ["Internet Protocol Version 4, Src: 192.0.2.1, Dst: 192.0.2.2",
                                       "User Datagram Protocol, Src Port: 500, Dst Port: 500"]


@needs_tshark
def test_tshark_engine_gives_the_same_json_offsets_and_id_data_included():
    import json

    def doc(*extra: str) -> list[dict]:
        return json.loads(show("-k", str(CLEAN), "--json", *extra))["messages"]

    ours, theirs = doc(), doc("--engine", "tshark")
    assert ours == theirs  # every field, payload offsets and IDi/IDr data included
    inner = [p for m in theirs for sk in m["payloads"] if sk["type"] == 46 for p in sk["inner"]]
    ids = [p for p in inner if p["type"] in (35, 36)]
    assert ids and all(p["data"] and p["offset"] for p in ids)
    assert all(p["offset"] is not None for m in theirs for p in m["payloads"])

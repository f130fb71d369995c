"""``dissectors.pcapng`` (block reader, comment writer, incremental annotator) and
``multisa lint --annotate``: the comments read back by the real tshark sit on exactly lint's
frames with lint's codes."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from dissectors.capture import CaptureError, iter_frames
from dissectors.pcapng import Annotator, Block, PcapngWriter, iter_blocks, with_comments
from tests.conftest import ROOT, SAMPLES, needs_tshark

SAMPLE_CAPTURES = sorted(p for p in SAMPLES.rglob("capture.pcap*"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
# `python -m analyzer.cli` would load analyzer.cli twice (as __main__ too): its UsageError
# would then not be the one the commands raise
MULTISA = [sys.executable, "-c", "import sys; from analyzer.cli import main; sys.exit(main())"]


def lint(capture: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MULTISA, "lint", str(capture), "-k", str(capture.parent),
                           "--isolated", *extra], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)


def lint_pairs(doc: dict) -> Counter:
    """(frame, code) of every finding, once per frame it names."""
    return Counter((frame, f["code"]) for f in doc["findings"] for frame in dict.fromkeys(f["frames"]))


def tshark_fields(capture: Path, *fields: str, display: str | None = None,
                  extra: tuple[str, ...] = ()) -> list[list[str]]:
    cmd = ["tshark", "-n", "-r", str(capture), *extra, "-T", "fields", "-E", "occurrence=a", "-E", "separator=\t",
           "-E", "aggregator=\x1f"]
    if display:
        cmd += ["-Y", display]
    for f in fields:
        cmd += ["-e", f]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return [line.split("\t") for line in run.stdout.splitlines()]


# --- the codec -------------------------------------------------------------------------------


def _frames(path: Path) -> list[tuple[int, float, int, bytes]]:
    return [(ref.index, ref.ts, linktype, data) for ref, linktype, data in iter_frames(path)]


def _copy(src: Path, dst: Path, comments: dict[int, list[str]]) -> None:
    with open(dst, "wb") as out:
        annotator = Annotator(PcapngWriter(out))
        for frame, texts in comments.items():
            for text in texts:
                annotator.comment(frame, text)
        for block in iter_blocks(str(src)):
            annotator.feed(block)
        annotator.close()


def test_pcapng_without_comments_is_copied_byte_for_byte(tmp_path):
    src = SAMPLES / "peer" / "clean" / "capture.pcapng"
    _copy(src, tmp_path / "out.pcapng", {})
    assert (tmp_path / "out.pcapng").read_bytes() == src.read_bytes()


def test_pcap_is_converted_with_the_same_frames(tmp_path):
    src = SAMPLES / "strongswan6-percpu" / "capture.pcap"
    out = tmp_path / "out.pcapng"
    _copy(src, out, {3: ["three"], 5: ["five a", "five b"]})
    assert out.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    assert _frames(out) == _frames(src)


def _shb(e: str) -> bytes:
    body = struct.pack(e + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    return struct.pack(e + "II", 0x0A0D0D0A, 12 + len(body)) + body + struct.pack(e + "I", 12 + len(body))


def _blk(e: str, btype: int, body: bytes) -> bytes:
    body += b"\0" * (-len(body) % 4)
    return struct.pack(e + "II", btype, 12 + len(body)) + body + struct.pack(e + "I", 12 + len(body))


def _synthetic(e: str) -> bytes:
    """A section in byte order ``e``: IDB (raw IP, snaplen 60), an EPB with a comment of its
    own, an obsolete PB, an SPB longer than the snap length, a Name Resolution Block."""
    pkt = bytes.fromhex("4500001c000000004011000001020304050607080035003500080000")
    existing = struct.pack(e + "HH", 1, 3) + b"old\0"
    return (_shb(e) + _blk(e, 1, struct.pack(e + "HHI", 101, 0, 60))
            + _blk(e, 6, struct.pack(e + "IIIII", 0, 1, 2, len(pkt), len(pkt)) + pkt + b"\0" * (-len(pkt) % 4)
                   + existing + b"\0\0\0\0")
            + _blk(e, 2, struct.pack(e + "HHIIII", 0, 7, 3, 4, len(pkt), len(pkt)) + pkt)
            + _blk(e, 3, struct.pack(e + "I", 80) + pkt + b"\xee" * 52)
            + _blk(e, 4, b"\0\0\0\0"))


@pytest.mark.parametrize("endian", ["<", ">"])
def test_every_packet_block_kind_takes_comments_in_its_own_byte_order(tmp_path, endian):
    src = tmp_path / "in.pcapng"
    src.write_bytes(_synthetic(endian))
    out = tmp_path / "out.pcapng"
    _copy(src, out, {1: ["one"], 2: ["two"], 3: ["three", "drei"]})
    assert _frames(out) == _frames(src)
    blocks = list(iter_blocks(str(out)))
    assert [b.btype for b in blocks] == [0x0A0D0D0A, 1, 6, 6, 6, 4]  # NRB kept; PB, SPB now EPBs
    assert {b.endian for b in blocks} == {endian}
    raw = out.read_bytes()
    for text in (b"old", b"one", b"two", b"three", b"drei"):
        assert text in raw
    if endian == "<":  # the PB's drops count (7) kept as epb_dropcount
        assert struct.pack("<HHQ", 4, 8, 7) in raw


@needs_tshark
@pytest.mark.parametrize("endian", ["<", ">"])
def test_tshark_reads_the_comments_of_every_block_kind(tmp_path, endian):
    src = tmp_path / "in.pcapng"
    src.write_bytes(_synthetic(endian))
    out = tmp_path / "out.pcapng"
    _copy(src, out, {1: ["one"], 2: ["two"], 3: ["three", "drei"]})
    rows = tshark_fields(out, "frame.number", "frame.comment")
    assert [(r[0], sorted(r[1].split("\x1f"))) for r in rows] == [
        ("1", ["old", "one"]), ("2", ["two"]), ("3", ["drei", "three"])]


def test_annotator_holds_a_window_for_late_comments(tmp_path):
    src = SAMPLES / "peer" / "clean" / "capture.pcapng"
    out = tmp_path / "out.pcapng"
    with open(out, "wb") as f:
        annotator = Annotator(PcapngWriter(f), hold=5)
        for block in iter_blocks(str(src)):
            annotator.feed(block)
            if block.frame == 10:
                annotator.comment(6, "within the window")  # frames 6..10 are held
                annotator.comment(5, "too late")  # frame 5 was written
        annotator.comment(1_000_000, "never seen")
        annotator.close()
    assert annotator.late == 1 and annotator.pending == {1_000_000: ["never seen"]}
    commented = [b for b in iter_blocks(str(out)) if b"within the window" in b.raw]
    assert [b.frame for b in commented] == [6]
    assert _frames(out) == _frames(src)


def test_damaged_capture_keeps_every_frame_before_the_damage(tmp_path):
    """The same frames and the same one-line error as the capture reader gives."""
    src = SAMPLES / "peer" / "clean" / "capture.pcapng"
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(src.read_bytes()[:len(src.read_bytes()) // 2])
    good, read = [], []
    with pytest.raises(CaptureError, match=r"cut\.pcapng: frame \d+, offset \d+: truncated block") as ours:
        for block in iter_blocks(str(cut)):
            good.append(block)
    with pytest.raises(CaptureError) as reader:
        for ref, _linktype, _data in iter_frames(cut):
            read.append(ref.index)
    assert str(ours.value) == str(reader.value)
    assert [b.frame for b in good if b.frame] == read and read


def test_comment_on_a_non_packet_block_is_refused():
    with pytest.raises(ValueError):
        with_comments(Block("<", 4, b""), ["x"])


# --- multisa lint --annotate through the real tshark -------------------------------------------


@needs_tshark
@pytest.mark.parametrize("capture", SAMPLE_CAPTURES, ids=lambda p: str(p.parent.relative_to(SAMPLES)))
def test_annotated_comments_are_lints_findings_per_frame(tmp_path, capture):
    out = tmp_path / "annotated.pcapng"
    run = lint(capture, "--format", "json", "--annotate", str(out))
    assert run.returncode in (0, 1), run.stderr
    doc = json.loads(run.stdout)
    rows = tshark_fields(out, "frame.number", "frame.comment", display="frame.comment")
    got = Counter()
    for number, comments in rows:
        for text in comments.split("\x1f"):
            assert text.startswith("multisa MS")
            got[(int(number), text.split()[1])] += 1
    assert got == lint_pairs(doc)
    assert len(tshark_fields(out, "frame.number")) == len(_frames(capture))  # every frame copied
    for f in doc["findings"]:  # the whole finding: code, severity, message, citation
        texts = {t for n, c in rows if int(n) in f["frames"] for t in c.split("\x1f")}
        assert any(f["message"] in t and f["severity"] in t and f["rfc"] in t for t in texts), f["code"]


def test_annotate_refuses_several_captures_and_its_own_input(tmp_path):
    a = SAMPLES / "peer" / "clean" / "capture.pcapng"
    run = subprocess.run([*MULTISA, "lint", str(a), str(a), "--isolated",
                          "--annotate", str(tmp_path / "x.pcapng")], capture_output=True, text=True, env=ENV)
    assert run.returncode == 2 and "one CAPTURE" in run.stderr and "Traceback" not in run.stderr
    copy = tmp_path / "c.pcapng"
    copy.write_bytes(a.read_bytes())
    for key in ("ikev2_decryption_table", "esp_sa"):
        (tmp_path / key).write_bytes((a.parent / key).read_bytes())
    run = lint(copy, "--annotate", str(copy))
    assert run.returncode == 2 and "overwrite" in run.stderr and "Traceback" not in run.stderr
    assert copy.read_bytes() == a.read_bytes()


# --- lint JSON for the Wireshark plugin ----------------------------------------------------------


def test_lint_json_esp_sas_are_every_child_sa_spi_of_groups():
    """``esp_sas``: both SPIs of every Child SA ``multisa groups --json`` shows, with its role."""
    capture = SAMPLES / "peer" / "clean" / "capture.pcapng"
    doc = json.loads(lint(capture, "--format", "json").stdout)
    run = subprocess.run([*MULTISA, "groups", str(capture), "-k", str(capture.parent), "--json"],
                         capture_output=True, text=True, env=ENV, cwd=ROOT)
    groups = json.loads(run.stdout)
    want = Counter()
    for lineage in groups["lineages"]:
        for group in lineage["groups"]:
            for child in group["child_sas"]:
                for spi, side in ((child["spi_in"], "I"), (child["spi_out"], "R")):
                    rid = child["resource_id_i" if side == "I" else "resource_id_r"]
                    want[(spi, lineage["peers"][side], child["role"], group["label"], rid)] += 1
    got = Counter((sa["spi"], sa["dst"], sa["role"], sa["group"], sa["resource_id"]) for sa in doc["esp_sas"])
    assert got == want and len(got) == 8
    assert {sa["role"] for sa in doc["esp_sas"]} == {"fallback", "member"}

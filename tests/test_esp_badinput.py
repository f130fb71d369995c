"""Bad input through the real ``multisa esp`` and ``multisa lint`` commands: truncated ESP
headers, absurd lengths, IP fragments carrying ESP, a pcap cut mid-record. Each is counted and
reported, the rest of the capture analyzed, never a traceback. And the progress bar: rich on a
terminal, nothing on a pipe."""

from __future__ import annotations

import json
import os
import pty
import struct
import subprocess
import sys

import pytest
from scapy.layers.inet import IP, UDP, fragment
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import PcapWriter

from tests.conftest import ROOT

A4, B4 = "192.0.2.1", "192.0.2.2"
MAC = {"src": "02:00:00:00:00:01", "dst": "02:00:00:00:00:02"}
MULTISA = [sys.executable, "-m", "analyzer.cli"]


def esp(spi: int, seq: int, body: int = 24) -> bytes:
    return struct.pack(">II", spi, seq) + bytes(body)


def run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*MULTISA, *argv], capture_output=True, text=True, cwd=ROOT, timeout=120)


def write(path, pkts) -> None:
    with PcapWriter(str(path), linktype=1) as w:
        for i, p in enumerate(pkts):
            p.time = 1_700_000_000 + i / 100
            w.write(p)


def good(n: int, spi: int = 0x1000, replay: bool = False) -> list:
    """``n`` ESP packets numbered 1..n (with ``replay``: number 2 sent twice, an MS401 for lint)."""
    seqs = list(range(1, n + 1))
    if replay:
        seqs.insert(2, 2)
        seqs.pop()
    return [Ether(**MAC) / IP(src=A4, dst=B4, proto=50) / Raw(esp(spi, s)) for s in seqs]


def esp_json(path) -> tuple[dict, subprocess.CompletedProcess]:
    r = run("esp", str(path), "--json")
    assert "Traceback" not in r.stdout + r.stderr
    return json.loads(r.stdout), r


def lint(path) -> subprocess.CompletedProcess:
    r = run("lint", str(path), "--isolated")
    assert "Traceback" not in r.stdout + r.stderr
    return r


def test_truncated_esp_headers_are_counted(tmp_path):
    pkts = good(10)
    pkts.insert(3, Ether(**MAC) / IP(src=A4, dst=B4, proto=50) / Raw(b"\x00\x00\x10\x00\x00"))  # 5 octets
    pkts.insert(6, Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=4500, dport=4500) / Raw(b"\x00\x00\x10\x01\x02\x03"))
    path = tmp_path / "short.pcap"
    write(path, pkts)
    doc, r = esp_json(path)
    assert r.returncode == 0
    assert doc["counters"]["esp_truncated"] == 2
    assert [(s["spi"], s["packets"], s["gaps"]) for s in doc["sas"]] == [("00001000", 10, 0)]
    r = lint(path)
    assert r.returncode == 0  # ESP only: no IKE to hold the SPI against (MS410 needs the exchanges)
    assert f"multisa: note: {path}: 2 ESP packet(s) too short for SPI and Sequence Number" in r.stderr


def test_absurd_lengths(tmp_path):
    pkts = good(6, replay=True)
    bad_ip = Ether(**MAC) / IP(src=A4, dst=B4, proto=50, len=65000) / Raw(esp(0x1000, 7))  # IP longer than the frame
    bad_ihl = Ether(**MAC) / IP(src=A4, dst=B4, proto=50, ihl=15) / Raw(b"\x00" * 8)  # header beyond the data
    bad_udp = Ether(**MAC) / IP(src=A4, dst=B4) / UDP(sport=4500, dport=4500, len=4000) / Raw(esp(0x2000, 1))
    path = tmp_path / "absurd.pcap"
    write(path, [*pkts, bad_ip, bad_ihl, bad_udp, *good(3, 0x3000)])
    doc, r = esp_json(path)
    assert r.returncode == 0, r.stderr
    c = doc["counters"]
    assert c["truncated"] + c["malformed"] >= 2, c  # counted, not accounted to an SA
    spis = {s["spi"]: s["packets"] for s in doc["sas"]}
    assert spis["00001000"] == 7 and spis["00003000"] == 3  # the IP length is the frame's fault, not ESP's
    # an absurd record length: the file is corrupt from there on; what came before is reported
    data = bytearray(path.read_bytes())
    off, n = 24, 0
    while n < 8:
        off += 16 + struct.unpack_from("<I", data, off + 8)[0]
        n += 1
    struct.pack_into("<I", data, off + 8, 0x7FFFFFF0)
    bad = tmp_path / "absurd-record.pcap"
    bad.write_bytes(bytes(data))
    doc, r = esp_json(bad)
    assert r.returncode == 2
    assert r.stderr.startswith(f"multisa: error: {bad}: frame 9, offset {off}: captured length")
    assert doc["sas"][0]["packets"] == 7 and doc["sas"][0]["replays"] == 1 and doc["error"]
    r = lint(bad)
    assert r.returncode == 2 and "frame 9" in r.stderr and "MS401" in r.stdout  # what was read is analyzed


def test_ip_fragments_carrying_esp(tmp_path):
    big = IP(src=A4, dst=B4, proto=50, id=9) / Raw(esp(0x1000, 4, 1400))
    frags = [Ether(**MAC) / f for f in fragment(big, 600)]
    lonely = [Ether(**MAC) / f for f in fragment(IP(src=A4, dst=B4, proto=50, id=10) / Raw(esp(0x1000, 5, 1400)), 600)]
    path = tmp_path / "frag.pcap"
    write(path, [*good(3), *frags, lonely[0], *[p for p in good(8)[5:]]])  # the second one's tail is lost
    doc, r = esp_json(path)
    assert r.returncode == 0
    c = doc["counters"]
    assert c["ip_fragments"] == len(frags) + 1 and c["reassembled"] == 1
    sa = doc["sas"][0]
    assert sa["packets"] == 3 + 1 + 3 and sa["gaps"] == 1  # seq 5 never arrived whole: one gap
    r = lint(path)
    assert f"multisa: note: {path}: {len(frags) + 1} IP fragment(s)" in r.stderr


def test_pcap_cut_mid_record(tmp_path):
    path = tmp_path / "cut.pcap"
    write(path, good(50, replay=True))
    data = path.read_bytes()
    cut = tmp_path / "cut-mid.pcap"
    cut.write_bytes(data[: len(data) - 20])
    doc, r = esp_json(cut)
    assert r.returncode == 2 and doc["sas"][0]["packets"] == 49
    assert r.stderr.startswith(f"multisa: error: {cut}: frame 50") and "truncated" in r.stderr
    r = lint(cut)
    assert r.returncode == 2 and "frame 50" in r.stderr and "MS401" in r.stdout  # what was read is analyzed


# --------------------------------------------------------------------------------------
# Progress: rich on a terminal, nothing on a pipe


def _on_terminal(argv: list[str]) -> tuple[int, bytes]:
    """Run with stderr on a pseudo-terminal (stdout to /dev/null); return (status, terminal output)."""
    master, slave = pty.openpty()
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen([*MULTISA, *argv], stdout=null, stderr=slave, cwd=ROOT,
                                env={**os.environ, "COLUMNS": "100", "TERM": "xterm"})
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return proc.wait(timeout=120), out


@pytest.mark.parametrize("command", ["esp", "lint"])
def test_progress_bar_on_a_terminal_only(tmp_path, command):
    path = tmp_path / "long.pcap"
    write(path, good(3000))
    argv = [command, str(path)] + (["--isolated"] if command == "lint" else [])
    status, out = _on_terminal(argv)
    assert status in (0, 1)
    assert b"long.pcap" in out and "━".encode() in out  # rich's bar
    r = run(*argv)
    assert "━" not in r.stderr and "long.pcap" not in r.stderr.replace(str(path), "")

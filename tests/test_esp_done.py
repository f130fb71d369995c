"""Issue 5's done-criteria, end to end through the real ``multisa`` entry point:

- ``multisa esp --json`` on the shared strongSwan captures lists every SPI with tshark's
  packet count (14 on the two sswan-* captures);
- with ``--sk-d`` the ESP of every non-PFS Child SA of every reference-peer sample decrypts
  with keys derived from SK_d, without ``esp_sa`` (the peer's key export writes
  ``ikev2_sk_d`` beside Wireshark's two tables);
- ``multisa lint`` runs the ESP rules in its one pass (MS401/MS402 on the replay-gap sample),
  in parallel with ``--jobs``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT, SHARED, needs_shared, needs_tshark

MULTISA = [sys.executable, "-m", "analyzer.cli"]


def multisa(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*MULTISA, *argv], capture_output=True, text=True, cwd=ROOT, timeout=300, **kw)


def tshark_counts(pcap) -> dict[str, int]:
    out = subprocess.run(["tshark", "-r", str(pcap), "-Y", "esp", "-T", "fields", "-e", "esp.spi"],
                         capture_output=True, text=True, check=True).stdout
    counts: dict[str, int] = {}
    for line in out.split():
        spi = f"{int(line, 16):08x}"
        counts[spi] = counts.get(spi, 0) + 1
    return counts


@needs_tshark
@needs_shared
@pytest.mark.parametrize("name", ["sswan-aes128cbc-sha256-modp2048", "sswan-aes256gcm16",
                                  "strongswan6-percpu-2cpu/capture"])
def test_multisa_esp_lists_every_spi_with_tsharks_counts(name):
    pcap = SHARED / f"{name}.pcap"
    keys = [str(p) for p in sorted(SHARED.glob(name + ".*_*"))] or [str(pcap.parent)]
    r = multisa("esp", str(pcap), *[a for k in keys for a in ("-k", k)], "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    got = {sa["spi"]: sa["packets"] for sa in doc["sas"]}
    assert got == tshark_counts(pcap)
    if name.startswith("sswan-"):
        assert len(got) == 14
    for sa in doc["sas"]:
        assert {"spi", "src", "dst", "packets", "bytes", "first_seq", "last_seq", "replays", "gaps", "reorders",
                "decrypted", "group"} <= set(sa)
        assert sa["group"] is not None and sa["replays"] == sa["gaps"] == sa["reorders"] == 0


# --------------------------------------------------------------------------------------
# SK_d: the reference peer's samples

SAMPLES = sorted(p for p in (ROOT / "samples" / "peer").glob("*") if (p / "ikev2_sk_d").is_file())


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.name)
def test_sk_d_decrypts_every_non_pfs_child_sa_of_a_sample(sample, tmp_path):
    """The reference peer's samples carry ``ikev2_sk_d`` beside Wireshark's two files: with
    only the IKE table (to read the exchanges) and SK_d, every Child SA's ESP decrypts with
    keys derived per RFC 7296 §2.17, exactly the packets the exported esp_sa keys decrypt."""
    keys = tmp_path / "keys"
    keys.mkdir()
    shutil.copy(sample / "ikev2_decryption_table", keys)
    capture = sample / "capture.pcapng"
    sk_d = sample / "ikev2_sk_d"
    r = multisa("esp", str(capture), "-k", str(keys), "--sk-d", str(sk_d), "--json", "--flows")
    assert r.returncode == 0, r.stderr
    sas = [sa for sa in json.loads(r.stdout)["sas"] if sa["packets"]]
    assert len(sas) >= 4  # the two members both ways at least
    for sa in sas:
        assert sa["key_note"] is None, sa  # the samples negotiate no PFS
        assert sa["decrypted"] == sa["packets"] and sa["icv_failures"] == 0, sa
        assert sa["key"] == "derived from SK_d" and sa["flows"], sa
    for line in sk_d.read_text().split():
        assert line.split(",")[2] not in r.stdout + r.stderr  # keys never printed
    r2 = multisa("esp", str(capture), "-k", str(sample), "--decrypt", "--json")
    by_spi = {sa["spi"]: sa["decrypted"] for sa in json.loads(r2.stdout)["sas"] if sa["packets"]}
    assert {sa["spi"]: sa["decrypted"] for sa in sas} == by_spi


def test_every_peer_sample_carries_sk_d():
    assert {p.name for p in SAMPLES} >= {"clean", "fault-esp-replay-gap"}


# --------------------------------------------------------------------------------------
# lint runs the ESP rules


def test_lint_reports_replay_and_gap_and_jobs_agree():
    folder = ROOT / "samples" / "peer" / "fault-esp-replay-gap"
    shared = ROOT / "samples" / "peer" / "fault-shared-sa"
    clean = ROOT / "samples" / "peer" / "clean"
    caps = [folder / "capture.pcapng", shared / "capture.pcapng", clean / "capture.pcapng"]
    if not all(c.is_file() for c in caps):
        pytest.skip("samples/peer is incomplete")
    args = ["lint", *map(str, caps), "-f", "json", "--isolated"]
    for c in caps:
        args += ["-k", str(c.parent)]
    one = multisa(*args)
    two = multisa(*args, "--jobs", "2")
    assert one.returncode == two.returncode == 1, one.stderr + two.stderr
    a, b = json.loads(one.stdout), json.loads(two.stdout)
    strip = [{k: v for k, v in f.items() if k != "time"} for f in a["findings"]]
    assert strip == [{k: v for k, v in f.items() if k != "time"} for f in b["findings"]]
    by_file: dict[str, set[str]] = {}
    for f in a["findings"]:
        by_file.setdefault(f["file"], set()).add(f["code"])
    assert by_file[str(caps[0])] == {"MS401", "MS402"}
    assert by_file[str(caps[1])] == {"MS401"}  # duplicate sequence numbers: two senders on one SA
    assert str(caps[2]) not in by_file
    assert "MS401" in a["summary"]["rules"] and "MS415" in a["summary"]["rules"]

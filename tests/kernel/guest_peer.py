"""Runs *inside* a Linux >= 6.13 UML guest: the reference peer end to end on the kernel data plane.

Initiator and responder run in two netns (``--dataplane kernel --keep-sas``): they negotiate
per-resource Child SAs over IKEv2, install them through XFRM netlink (peer/kernel.py: per-CPU
outbound SAs with ``XFRMA_SA_PCPU``, every inbound SA, the fallback SA without pcpu, a
``CPU_ACQUIRE`` policy) and send plain UDP that the kernel turns into ESP-in-UDP. dumpcap
captures the wire; ``multisa xfrm snapshot`` keeps both SADs; ``multisa lint CAPTURE --keys K
--xfrm SNAPSHOT`` must be silent on the clean run and find the faults of the broken one.

Not collected on the host; tests/kernel/test_uml_tier.py boots the guest and runs it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analyzer.cli import main as cli_main

from .guestnet import veth_pair

pytestmark = pytest.mark.skipif(os.environ.get("MULTISA_IN_GUEST") != "1",
                                reason="runs only inside the UML guest (tests/kernel/uml-run.sh)")

ROOT = Path(__file__).resolve().parents[2]
INI, RES = "192.0.2.1", "192.0.2.2"
INI_TS, RES_TS = "198.51.100.0/24", "203.0.113.0/24"
DURATION = 2.0
NCPU = os.cpu_count() or 1


def multisa(*argv: str) -> tuple[int, str]:
    """The real ``multisa`` command line, in-process (a new interpreter costs seconds in UML)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(list(argv))
    return rc, buf.getvalue()


def two_hosts():
    return veth_pair(("ini", INI, "198.51.100.1", RES_TS), ("res", RES, "203.0.113.1", INI_TS))

def peer(ns: str, role: str, args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "peer.cli", "peer", role, *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(log, "w"))


def run_pair(out: Path, resources: int, kernel_faults: list[str] = ()) -> dict:
    """Both peers on the kernel data plane, captured; returns the SAD snapshots' file names."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "psk").write_text("multisa-kernel-psk\n")
    faults = [a for f in kernel_faults for a in ("--kernel-fault", f)]
    common = ["--psk-file", str(out / "psk"), "--resource-info", "--resources", str(resources),
              "--rate", "20", "--duration", str(DURATION), "--dataplane", "kernel", "--keep-sas", "-v"]
    with two_hosts():
        cap = subprocess.Popen(["ip", "netns", "exec", "res", "dumpcap", "-q", "-i", "v0", "-w",
                                str(out / "capture.pcapng"), "-f", f"udp and host {INI} and host {RES}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(100):  # dumpcap is ready once the file exists
            if (out / "capture.pcapng").exists():
                break
            time.sleep(0.1)
        resp = peer("res", "responder", ["--listen", RES, "--local-id", "res.multisa.test",
                                         "--local-ts", RES_TS, "--remote-ts", INI_TS,
                                         "--lifetime", str(DURATION + 30), *common], out / "responder.log")
        time.sleep(1.0)
        init = peer("ini", "initiator", ["--connect", RES, "--local", INI, "--local-id", "ini.multisa.test",
                                         "--local-ts", INI_TS, "--remote-ts", RES_TS, "--keys-dir", str(out),
                                         "--lifetime", str(DURATION + 30), *common, *faults],
                    out / "initiator.log")
        try:
            rc = init.wait(timeout=DURATION + 40)
        finally:
            resp.send_signal(signal.SIGINT)  # by PID: our own child; the SAs stay (--keep-sas)
            resp.wait(timeout=10)
        time.sleep(0.3)
        snaps = {}
        for ns in ("ini", "res"):
            snaps[ns] = out / f"{ns}.xfrm.jsonl"
            assert multisa("xfrm", "snapshot", "--netns", ns, "-o", str(snaps[ns]), "--count", "2",
                           "--interval", "0.2")[0] == 0
        cap.send_signal(signal.SIGINT)
        cap.wait(timeout=10)
    assert rc == 0, (out / "initiator.log").read_text()[-2000:]
    return snaps


def sample(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[-1])


def lint(out: Path, snap: Path) -> list[dict]:
    rc, text = multisa("lint", str(out / "capture.pcapng"), "--keys", str(out), "--xfrm", str(snap),
                       "--format", "json", "--exit-zero")
    assert rc == 0, text
    doc = json.loads(text)
    return doc["findings"] if isinstance(doc, dict) else doc


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    return out, run_pair(out, resources=NCPU)  # one per-resource Child SA per CPU


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    out = tmp_path_factory.mktemp("faulty")
    return out, run_pair(out, resources=2, kernel_faults=["skip-inbound", "same-cpu"])


def test_kernel_esp_on_per_cpu_sas(clean):
    out, snaps = clean
    ini = sample(snaps["ini"])
    out_sas = [s for s in ini["sas"] if s["dir"] == 2]
    in_sas = [s for s in ini["sas"] if s["dir"] == 1]
    assert len(out_sas) == len(in_sas) == NCPU + 1  # fallback + one per-resource SA per CPU, each way
    pcpu = sorted((s for s in out_sas if s["pcpu"] is not None), key=lambda s: s["pcpu"])
    fallback = [s for s in out_sas if s["pcpu"] is None]
    assert [s["pcpu"] for s in pcpu] == list(range(NCPU)) and len(fallback) == 1
    # each CPU's sender went through kernel ESP on its CPU's SA, none on the fallback SA
    res = {s["spi"]: s for s in sample(snaps["res"])["sas"]}
    for sa in pcpu:
        assert sa["lifetime"]["packets"] >= 10 and sa["replay"]["oseq"] == sa["lifetime"]["packets"]
        assert res[sa["spi"]]["replay"]["seq"] == sa["replay"]["oseq"]  # received what was sent
    assert fallback[0]["lifetime"]["packets"] == 0
    pols = [p for p in ini["policies"] if p["dir"] == 1]
    assert len(pols) == 1 and pols[0]["flags"] & 4  # XFRM_POLICY_CPU_ACQUIRE
    # every ESP packet on the wire is ESP-in-UDP of a negotiated SPI, and tshark decrypts it
    if shutil.which("tshark"):
        from peer.demo import tshark_summary

        s = tshark_summary(str(out / "capture.pcapng"), str(out))
        assert s.esp >= sum(sa["lifetime"]["packets"] for sa in pcpu) and s.esp_decrypted == s.esp


def test_lint_is_silent_on_the_clean_run(clean):
    out, snaps = clean
    findings = lint(out, snaps["ini"])
    assert findings == [], findings


def test_lint_finds_the_kernel_faults(faulty):
    out, snaps = faulty
    ini = sample(snaps["ini"])
    pcpus = [s["pcpu"] for s in ini["sas"] if s["dir"] == 2 and s["pcpu"] is not None]
    assert pcpus == [0, 0]  # same-cpu: two per-resource SAs on CPU 0
    assert len([s for s in ini["sas"] if s["dir"] == 1]) == 2  # skip-inbound: 3 negotiated, 2 installed
    findings = lint(out, snaps["ini"])
    codes = {f["code"] for f in findings}
    # MS502: two outbound SAs of one group on one CPU; MS503: a negotiated inbound SA not in the SAD
    assert {"MS502", "MS503"} <= codes, findings

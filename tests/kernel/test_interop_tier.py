"""Interop on real per-CPU kernels: strongSwan 6.1 (sid root, ``per_cpu_sas = yes``) against the
reference peer in both directions, and against a second charon (tests/kernel/interop.sh).

Tier ``uml613`` (1 CPU, in CI) runs every direction; tier ``qemu`` (2 vCPUs) runs the two
directions with the reference peer and checks that each per-CPU SA counts only its CPU's
packets. The guest only produces the run's files; the checks run here, on the host, with the
real tshark and the real ``multisa`` command line:

- tshark decrypts every encrypted IKE message and every ESP packet with charon's keys only;
- SA_RESOURCE_INFO flows both ways;
- charon installs one outbound SA per CPU with distinct ``SA_PCPU`` and one fallback without,
  and the exact number of packets sent from CPU k lands on CPU k's SA (none on the fallback);
- ``multisa lint capture --keys DIR --xfrm charon.xfrm-sa.json --xfrm <other>.xfrm-sa.json``
  reports nothing at warning or above except MS307 (charon's resource ids are CPU numbers,
  RFC 9611 §7 SHOULD NOT: a charon deviation, listed in the README);
- ``multisa xfrm import charon.ip-s-xfrm-state.txt`` (sid's iproute2 7.x text) gives the SAs,
  ``pcpu`` and ``dir`` of the netlink dump.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from .test_uml_tier import HERE, ROOT, needs_modprobe, tiers

CHARON, PEER = "192.0.2.2", "192.0.2.1"
SEVERE = {"error", "warning"}
_RUNS: dict[tuple[str, str], Path] = {}


def run(tier: str, direction: str, tmp_root: Path) -> Path:
    """interop.sh once per (tier, direction) per session; the run's directory."""
    key = (tier, direction)
    if key not in _RUNS:
        out = tmp_root / f"{tier}-{direction}"
        res = subprocess.run([str(HERE / "interop.sh"), "strongswan6", "--direction", direction, "--out", str(out),
                              "--tier", tier], cwd=ROOT, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"interop.sh {direction} --tier {tier} failed ({res.returncode}): " \
                                    f"{(res.stdout + res.stderr)[-3000:]}"
        _RUNS[key] = out
    return _RUNS[key]


@pytest.fixture(scope="session")
def interop_tmp(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("interop")


def multisa(*argv: str) -> tuple[int, str]:
    res = subprocess.run(["python3", "-m", "analyzer.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    return res.returncode, res.stdout if res.returncode == 0 else res.stdout + res.stderr


def tshark_frames(out: Path) -> list[dict]:
    """Every frame of capture.pcap, decrypted with charon's two key files only."""
    with tempfile.TemporaryDirectory(prefix="multisa-ws-") as conf:
        for name in ("ikev2_decryption_table", "esp_sa"):
            shutil.copy(out / name, Path(conf) / name)
        (Path(conf) / "preferences").write_text("esp.enable_encryption_decode: TRUE\n")
        res = subprocess.run(["tshark", "-n", "-r", str(out / "capture.pcap"), "-T", "fields", "-E", "separator=|",
                              "-e", "frame.protocols", "-e", "ip.src", "-e", "isakmp.nextpayload",
                              "-e", "isakmp.enc.decrypted", "-e", "isakmp.notify.msgtype", "-e", "esp.spi"],
                             capture_output=True, text=True, timeout=120, env=dict(os.environ, WIRESHARK_CONFIG_DIR=conf))
    frames = []
    for line in res.stdout.splitlines():
        protos, src, nextp, dec, notifies, spi = (line.split("|") + [""] * 6)[:6]
        frames.append({"protos": protos, "src": src.split(",")[0], "sk": nextp.split(",")[0] == "46", "decrypted": bool(dec), "notifies": notifies.split(",") if notifies else [],
                       "spi": spi})
    return frames


def sas(path: Path) -> list[dict]:
    return json.loads(path.read_text())["sas"]


def other_dump(out: Path) -> Path:
    return out / "peer.xfrm-sa.json" if (out / "peer.xfrm-sa.json").exists() else out / "charon2.xfrm-sa.json"


def check_tshark(out: Path) -> None:
    frames = [f for f in tshark_frames(out) if "icmp" not in f["protos"]]
    ike = [f for f in frames if "isakmp" in f["protos"]]
    enc = [f for f in ike if f["sk"]]
    assert len(enc) >= 4 and all(f["decrypted"] for f in enc), ike  # IKE_AUTH, CREATE_CHILD_SA, ... both ways
    esp = [f for f in frames if "esp" in f["protos"]]
    assert esp and all(":esp:ip" in f["protos"] for f in esp), [f for f in esp if ":esp:ip" not in f["protos"]][:3]


def check_resource_info(out: Path) -> None:
    senders = {f["src"] for f in tshark_frames(out) if "16444" in f["notifies"]}
    assert senders == {CHARON, PEER}, senders  # SA_RESOURCE_INFO in both directions


def check_per_cpu(out: Path) -> None:
    info = json.loads((out / "run.json").read_text())
    ncpu = info["cpus"]
    assert info["per_cpu_sas_ready"], info
    after = [s for s in sas(out / "charon.xfrm-sa.json") if s["dir"] == 2]
    before = {s["spi"]: s for s in sas(out / "charon.before.xfrm-sa.json")}
    pcpu = sorted((s for s in after if s["pcpu"] is not None), key=lambda s: s["pcpu"])
    fallback = [s for s in after if s["pcpu"] is None]
    assert [s["pcpu"] for s in pcpu] == list(range(ncpu)) and len(fallback) == 1, after
    # phase 2 sent counts[k] packets from CPU k: exactly those on CPU k's SA, none on the fallback
    delta = {s["spi"]: s["lifetime"]["packets"] - before[s["spi"]]["lifetime"]["packets"] for s in after}
    assert [delta[s["spi"]] for s in pcpu] == info["counted_packets"], (delta, info)
    assert delta[fallback[0]["spi"]] == 0
    # inbound: every SA installed, the per-CPU ones with their CPU
    inbound = [s for s in sas(out / "charon.xfrm-sa.json") if s["dir"] == 1]
    assert len(inbound) == len(after)


def check_lint(out: Path) -> None:
    rc, text = multisa("lint", str(out / "capture.pcap"), "--keys", str(out), "--xfrm", str(out / "charon.xfrm-sa.json"),
                       "--xfrm", str(other_dump(out)), "--format", "json", "--exit-zero")
    assert rc == 0, text
    findings = json.loads(text)["findings"]
    severe = [f for f in findings if f["severity"] in SEVERE and f["code"] != "MS307"]
    assert severe == [], severe
    assert any(f["code"] == "MS307" for f in findings)  # charon's resource ids are CPU numbers


def check_import(out: Path) -> None:
    rc, text = multisa("xfrm", "import", str(out / "charon.ip-s-xfrm-state.txt"), "--json")
    assert rc == 0, text
    fields = ("src", "dst", "spi", "reqid", "mode", "dir", "pcpu", "seq", "encap")
    imported = sorted(tuple(json.dumps(s.get(k)) for k in fields) for s in json.loads(text)["sas"])
    dumped = sorted(tuple(json.dumps(s.get(k)) for k in fields) for s in sas(out / "charon.xfrm-sa.json"))
    assert imported == dumped and len(dumped) >= 4
    assert "iproute2-7" in json.loads((out / "run.json").read_text())["iproute2"]


CHECKS = {"tshark": check_tshark, "resource_info": check_resource_info, "per_cpu": check_per_cpu,
          "lint": check_lint, "import": check_import}

uml613 = [needs_modprobe,
          pytest.mark.skipif("uml613" not in tiers(),
                             reason="kernel tier 'uml613' not requested (MULTISA_KERNEL_TIERS=uml613)"),
          pytest.mark.skipif(os.geteuid() != 0, reason="needs root (debootstrap, the guest's netns)"),
          pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")]


@uml613[0]
@uml613[1]
@uml613[2]
@uml613[3]
@pytest.mark.parametrize("check", sorted(CHECKS))
@pytest.mark.parametrize("direction", ["peer-initiates", "charon-initiates", "charon-pair"])
def test_strongswan6_uml613(direction, check, interop_tmp):
    CHECKS[check](run("uml613", direction, interop_tmp))


@pytest.mark.parametrize("direction", ["peer-initiates", "charon-initiates"])
def test_strongswan6_qemu_two_cpus(direction, interop_tmp):
    if "qemu" not in tiers():
        pytest.skip("kernel tier 'qemu' not requested (MULTISA_KERNEL_TIERS=qemu)")
    if os.geteuid() != 0 or shutil.which("tshark") is None:
        pytest.skip("needs root and tshark")
    out = run("qemu", direction, interop_tmp)
    assert json.loads((out / "run.json").read_text())["cpus"] == 2
    for check in ("per_cpu", "tshark", "resource_info", "lint", "import"):
        CHECKS[check](out)

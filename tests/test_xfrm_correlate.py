"""MS5xx: the shared strongSwan 6 per-CPU capture held against moon's and sun's real SAD/SPD.

The clean run uses the files as dumped over netlink at the end of the capture; each fault is a
copy of moon's dump with one thing changed, as a broken IKE daemon or kernel would leave it.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from analyzer.cli import main as cli_main
from analyzer.model import Side
from analyzer.pipeline import analyze_capture
from analyzer.xfrm_correlate import (
    XfrmSettings,
    correlate,
    host_events,
    which_side,
    wire_sequence,
)
from analyzer.xfrm_state import load_series, load_snapshot, snapshot_from_capture_json
from dissectors.keys import load_keys

CAP = Path(__file__).resolve().parents[2] / "shared" / "captures" / "strongswan6-percpu-2cpu"
if not CAP.is_dir():
    CAP = Path("/work/shared/captures/strongswan6-percpu-2cpu")
pytestmark = pytest.mark.skipif(not (CAP / "moon.xfrm-sa.json").exists(),
                                reason="the shared strongSwan 6 per-CPU capture is not beside the checkout")

MOON, SUN = "192.0.2.1", "192.0.2.2"


@pytest.fixture(scope="module")
def lineages():
    result = analyze_capture(str(CAP / "capture.pcap"), load_keys([str(CAP)]), rules=[])
    assert result.error is None
    return result.analyzer.lineages


@pytest.fixture(scope="module")
def wire():
    return wire_sequence(CAP / "capture.pcap")


def _moon() -> dict:
    return json.loads((CAP / "moon.xfrm-sa.json").read_text())


def _sa(doc: dict, spi_hex: str) -> dict:
    return next(s for s in doc["sas"] if s["spi_hex"] == spi_hex)


def _codes(lineages, wire, series, label="moon") -> list[str]:
    return sorted(f.code for f in correlate(lineages, series, label, wire).findings)


@pytest.mark.parametrize("host", ["moon", "sun"])
def test_clean_capture_correlates_cleanly(lineages, wire, host):
    snap = load_snapshot(CAP / f"{host}.xfrm-sa.json")
    (lin,) = lineages
    side = which_side(lin, snap)
    assert side is (Side.I if host == "moon" else Side.R)
    corr = correlate(lineages, [snap], host, wire)
    assert corr.findings == []
    (view,) = corr.views
    assert view.address == (MOON if host == "moon" else SUN)
    events = host_events(view, wire, XfrmSettings(), set())
    (group_ev,) = [e for e in events if hasattr(e, "children")]
    rows = group_ev.children
    assert len(rows) == 3
    # every negotiated SA installed, both directions
    assert all(r.inbound is not None and r.outbound is not None and r.expected for r in rows)
    # per-CPU SAs on distinct CPUs, the fallback SA without pcpu
    members = [r for r in rows if not r.fallback]
    (fallback,) = [r for r in rows if r.fallback]
    assert sorted(r.outbound.pcpu for r in members) == [0, 1]
    assert fallback.outbound.pcpu is None and fallback.inbound.pcpu is None
    # oseq equals the wire's last sequence number, SA by SA
    for r in rows:
        assert r.outbound.replay.oseq == wire[r.outbound_spi] > 0
    # the outbound policy has CPU_ACQUIRE
    assert group_ev.policies and all(p.cpu_acquire for p in group_ev.policies)


def test_lint_cli_clean_on_both_snapshots_and_the_ip_text(capsys):
    rc = cli_main(["lint", str(CAP / "capture.pcap"), "-k", str(CAP), "--select", "MS5",
                   "--xfrm", str(CAP / "moon.xfrm-sa.json"), "--xfrm", str(CAP / "sun.xfrm-sa.json"),
                   "--xfrm", str(CAP / "moon.ip-s-xfrm-state.txt"), "-f", "json"])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert rc == 0 and doc["findings"] == []
    assert [c for c in doc["summary"]["rules"] if c.startswith("MS5")] == [f"MS50{i}" for i in range(1, 10)]
    assert "MS508" in err and "two" in err  # one sample only: said, not silently passed
    assert "iproute2 text without dir/pcpu-num" in err


def _fault(doc_edit) -> list:
    doc = _moon()
    doc_edit(doc)
    return [snapshot_from_capture_json(doc)]


def test_ms501_member_without_pcpu(lineages, wire):
    assert _codes(lineages, wire, _fault(lambda d: _sa(d, "ca2c6b46").update(pcpu=None))) == ["MS501"]


def test_ms502_two_outbound_sas_on_one_cpu(lineages, wire):
    assert _codes(lineages, wire, _fault(lambda d: _sa(d, "cdcf94a8").update(pcpu=0))) == ["MS502"]


def test_ms503_inbound_sa_missing(lineages, wire):
    def drop(d):
        d["sas"].remove(_sa(d, "c26c69ed"))

    findings = correlate(lineages, _fault(drop), "moon", wire).findings
    assert [f.code for f in findings] == ["MS503"]
    assert "c26c69ed" in findings[0].message and findings[0].severity.label == "error"


def test_ms503_outbound_missing_is_allowed(lineages, wire):
    """RFC 9611 §4: a peer may skip a duplicate outbound SA; only inbound ones are required."""
    def drop(d):
        d["sas"].remove(_sa(d, "cdcf94a8"))

    assert "MS503" not in _codes(lineages, wire, _fault(drop))


def test_ms504_pcpu_beyond_the_hosts_cpus(lineages, wire):
    snap = _fault(lambda d: _sa(d, "cdcf94a8").update(pcpu=2))[0]
    doc = snap.to_dict()
    doc["host_cpus"] = 2
    from analyzer.xfrm_state import snapshot_from_dict

    assert _codes(lineages, wire, [snapshot_from_dict(doc)]) == ["MS504"]
    clean = load_snapshot(CAP / "moon.xfrm-sa.json").to_dict()
    clean["host_cpus"] = 2
    assert _codes(lineages, wire, [snapshot_from_dict(clean)]) == []


def test_ms505_fallback_with_pcpu(lineages, wire):
    assert _codes(lineages, wire, _fault(lambda d: _sa(d, "c2d58759").update(pcpu=1))) == ["MS502", "MS505"]


def test_ms506_oseq_far_from_the_wire(lineages, wire):
    def bump(d):
        _sa(d, "cdcf94a8")["replay"]["oseq"] = 4000

    findings = correlate(lineages, _fault(bump), "moon", wire).findings
    assert [f.code for f in findings] == ["MS506"]
    assert "oseq 4000" in findings[0].message and "is 4 " in findings[0].message


def test_ms506_without_wire_says_so(lineages):
    corr = correlate(lineages, [load_snapshot(CAP / "moon.xfrm-sa.json")], "moon", None)
    assert corr.findings == [] and any("MS506 not judged" in n for n in corr.notes)


def test_ms507_policy_without_cpu_acquire(lineages, wire):
    def clear(d):
        next(p for p in d["policies"] if p["dir"] == 1)["flags"] = 0

    assert _codes(lineages, wire, _fault(clear)) == ["MS507"]


def test_ms508_per_cpu_sa_idle_while_fallback_counts(lineages, wire, tmp_path):
    first = load_snapshot(CAP / "moon.xfrm-sa.json").to_dict()
    last = copy.deepcopy(first)
    for s in last["sas"]:
        if s["spi"] == "c2d58759":  # fallback +100 packets
            s["lifetime"]["packets"] += 100
        if s["spi"] == "cdcf94a8":  # CPU 1's SA counts too; CPU 0's (ca2c6b46) stays idle
            s["lifetime"]["packets"] += 50
    path = tmp_path / "moon.jsonl"
    path.write_text(json.dumps(first) + "\n" + json.dumps(last) + "\n")
    series = load_series(path)
    assert len(series) == 2
    findings = correlate(lineages, series, "moon", wire).findings
    assert [f.code for f in findings] == ["MS508"]
    assert "ca2c6b46" in findings[0].message and "100 packet" in findings[0].message
    # both moving: clean
    last2 = copy.deepcopy(last)
    next(s for s in last2["sas"] if s["spi"] == "ca2c6b46")["lifetime"]["packets"] += 7
    path.write_text(json.dumps(first) + "\n" + json.dumps(last2) + "\n")
    assert _codes(lineages, wire, load_series(path)) == []


def test_ms509_sa_not_negotiated(lineages, wire):
    def add(d):
        extra = copy.deepcopy(_sa(d, "ca2c6b46"))
        extra.update(spi=0xDEADBEEF, spi_hex="deadbeef", pcpu=None)
        d["sas"].append(extra)

    findings = correlate(lineages, _fault(add), "moon", wire).findings
    assert [f.code for f in findings] == ["MS509"]
    assert "deadbeef" in findings[0].message and "out SA" in findings[0].message


def test_lint_cli_reports_a_fault_from_a_file(tmp_path, capsys):
    doc = _moon()
    doc["sas"].remove(_sa(doc, "c26c69ed"))
    path = tmp_path / "moon-missing-in.xfrm-sa.json"
    path.write_text(json.dumps(doc))
    rc = cli_main(["lint", str(CAP / "capture.pcap"), "-k", str(CAP), "--select", "MS5",
                   "--xfrm", str(path), "--xfrm", str(CAP / "sun.xfrm-sa.json")])
    out = capsys.readouterr().out
    assert rc == 1
    assert "MS503" in out and "192.0.2.1" in out and "c26c69ed" in out and "[RFC 9611 §4]" in out


def test_lint_cli_bad_snapshot_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json\n")
    rc = cli_main(["lint", str(CAP / "capture.pcap"), "-k", str(CAP), "--xfrm", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "bad.json" in err and "Traceback" not in err


def test_snapshot_of_another_host_is_not_judged(lineages, wire):
    doc = _moon()
    for s in doc["sas"]:
        s["src"], s["dst"] = s["src"].replace("192.0.2.", "198.18.0."), s["dst"].replace("192.0.2.", "198.18.0.")
    corr = correlate(lineages, [snapshot_from_capture_json(doc)], "other", wire)
    assert corr.findings == [] and corr.views == []
    assert any("not judged" in n for n in corr.notes)

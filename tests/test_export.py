"""``multisa export``: a real HTTP scrape of the real kernel's XFRM state in a throw-away netns.

The host kernel has XFRM but no ESP: the per-CPU group is made of larval SAs (ALLOCSPI with
SA_DIR/SA_PCPU) and a CPU_ACQUIRE policy, written by tests/kernel/writer.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from analyzer.exporter import XfrmCollector, parse_listen, serve, snapshot_metrics
from tests.test_xfrm_kernel import netns, per_cpu_setup, writer  # noqa: F401 - fixtures

ROOT = Path(__file__).resolve().parents[1]
CAP = ROOT.parent / "shared" / "captures" / "strongswan6-percpu-2cpu"
if not CAP.is_dir():
    CAP = Path("/work/shared/captures/strongswan6-percpu-2cpu")

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates a network namespace and "
                                                 "writes XFRM state into it"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) is not installed"),
]


def _scrape(url: str) -> dict:
    """{(name, frozenset(labels)): value} of one /metrics scrape."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def _get(samples: dict, name: str, **labels) -> float:
    hits = [v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= ls]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


def test_scrape_serves_per_sa_per_cpu_and_group_metrics(netns, per_cpu_setup):  # noqa: F811
    collector = XfrmCollector(netns)
    server, _ = serve("127.0.0.1:0", collector)
    try:
        port = server.server_address[1]
        m = _scrape(f"http://127.0.0.1:{port}/metrics")
        again = _scrape(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        collector.close()
    assert _get(m, "multisa_xfrm_up") == 1
    assert _get(m, "multisa_xfrm_sas", dir="out") == 3 and _get(m, "multisa_xfrm_sas", dir="in") == 1
    assert _get(m, "multisa_xfrm_policies", dir="out") == 1
    assert _get(m, "multisa_xfrm_policies", dir="in") == 1
    assert _get(m, "multisa_xfrm_cpu_acquire_policies") == 1
    # per SA: the CPU-1 SA with its labels, counters at zero (larval SAs carry no traffic)
    assert _get(m, "multisa_xfrm_sa_packets_total", spi="c0000012") == 0
    cpu1 = next(ls for (n, ls) in m if n == "multisa_xfrm_sa_bytes_total" and ("spi", "c0000012") in ls)
    assert dict(cpu1) == {"spi": "c0000012", "src": "192.0.2.1", "dst": "192.0.2.2", "proto": "50",
                          "reqid": "1", "dir": "out", "cpu": "1"}
    assert _get(m, "multisa_xfrm_sa_oseq", spi="c0000011") == 0
    # per CPU and per group
    assert _get(m, "multisa_xfrm_cpu_sas", cpu="0", dir="out") == 1
    assert _get(m, "multisa_xfrm_cpu_sas", cpu="1", dir="out") == 1
    assert _get(m, "multisa_xfrm_cpu_sas", cpu="none", dir="out") == 1
    assert _get(m, "multisa_xfrm_cpu_packets_total", cpu="none", dir="in") == 0
    assert _get(m, "multisa_xfrm_group_sas", reqid="1", dir="out") == 3
    assert _get(m, "multisa_xfrm_group_cpus", reqid="1") == 2
    assert _get(again, "multisa_xfrm_sas", dir="out") == 3  # every scrape dumps again


def test_cli_export_with_capture_serves_findings_and_group_sizes(netns, per_cpu_setup):  # noqa: F811
    if not (CAP / "capture.pcap").exists():
        pytest.skip("the shared strongSwan 6 capture is not beside the checkout")
    proc = subprocess.Popen(
        [sys.executable, "-m", "analyzer.cli", "export", "--listen", "127.0.0.1:0", "--netns", netns,
         "--capture", str(CAP / "capture.pcap"), "-k", str(CAP), "--duration", "30"],
        stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stderr.readline()
        port = re.search(r":(\d+)/metrics", line)
        assert port, line
        m = _scrape(f"http://127.0.0.1:{port.group(1)}/metrics")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert proc.returncode == 0
    assert _get(m, "multisa_xfrm_up") == 1
    assert _get(m, "multisa_findings", code="MS307", source="capture") == 4
    assert _get(m, "multisa_group_child_sas", group="198.51.100.0/24 === 203.0.113.0/24",
                state="deleted") == 3
    assert _get(m, "multisa_xfrm_group_cpus", reqid="1") == 2


def test_cli_export_bad_listen_and_missing_netns_are_one_line():
    for argv, what in ((["--listen", "nope"], "ADDR:PORT"),
                       (["--listen", "127.0.0.1:0", "--netns", "msa-does-not-exist"], "msa-does-not-exist")):
        res = subprocess.run([sys.executable, "-m", "analyzer.cli", "export", *argv], check=False, capture_output=True,
                             text=True, cwd=ROOT, timeout=60)
        assert res.returncode == 2, res.stderr
        assert res.stderr.count("\n") == 1 and what in res.stderr and "Traceback" not in res.stderr


def test_parse_listen():
    assert parse_listen("127.0.0.1:9964") == ("127.0.0.1", 9964)
    assert parse_listen("[::1]:9964") == ("::1", 9964)
    assert parse_listen(":9964") == ("0.0.0.0", 9964)
    with pytest.raises(ValueError):
        parse_listen("127.0.0.1")


def test_snapshot_metrics_of_the_shared_capture_dump():
    """The same families from moon's real netlink dump: per-CPU SAs with their real counters."""
    from analyzer.xfrm_state import load_snapshot

    if not (CAP / "moon.xfrm-sa.json").exists():
        pytest.skip("the shared strongSwan 6 capture is not beside the checkout")
    fams = {f.name: f for f in snapshot_metrics(load_snapshot(CAP / "moon.xfrm-sa.json"))}
    pkts = {(s.labels["spi"], s.labels["cpu"]): s.value for s in fams["multisa_xfrm_sa_packets"].samples}
    assert pkts[("ca2c6b46", "0")] == 3 and pkts[("cdcf94a8", "1")] == 4 and pkts[("c2d58759", "none")] == 1
    cpu = {(s.labels["cpu"], s.labels["dir"]): s.value for s in fams["multisa_xfrm_cpu_packets"].samples}
    assert cpu == {("0", "in"): 4, ("0", "out"): 3, ("1", "in"): 3, ("1", "out"): 4,
                   ("none", "in"): 1, ("none", "out"): 1}


def test_no_per_sa_keeps_the_aggregates(netns, per_cpu_setup):  # noqa: F811
    collector = XfrmCollector(netns, per_sa=False)
    server, _ = serve("127.0.0.1:0", collector)
    try:
        m = _scrape(f"http://127.0.0.1:{server.server_address[1]}/metrics")
    finally:
        server.shutdown()
        server.server_close()
        collector.close()
    assert not any(n.startswith("multisa_xfrm_sa_") for n, _ in m)
    assert _get(m, "multisa_xfrm_cpu_sas", cpu="1", dir="out") == 1
    assert _get(m, "multisa_xfrm_group_cpus", reqid="1") == 2


def test_lint_xfrm_live_reads_the_kernel(netns, per_cpu_setup, capsys):  # noqa: F811
    """``--xfrm live:NS``: the SAD dumped right now. The capture's SAs were deleted long before
    (timed snapshot: not expected), the larval SAs are no negotiated SAs: nothing to report."""
    if not (CAP / "capture.pcap").exists():
        pytest.skip("the shared strongSwan 6 capture is not beside the checkout")
    from analyzer.cli import main as cli_main

    rc = cli_main(["lint", str(CAP / "capture.pcap"), "-k", str(CAP), "--select", "MS5",
                   "--xfrm", f"live:{netns}", "-f", "json"])
    out, err = capsys.readouterr()
    import json

    doc = json.loads(out)
    assert rc == 0 and doc["findings"] == [], err
    assert "MS503" in doc["summary"]["rules"]
    assert "MS504 not judged" not in err  # a live dump knows the host's CPU count

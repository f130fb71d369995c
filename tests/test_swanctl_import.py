"""``multisa xfrm import`` and ``lint --xfrm`` read ``swanctl --list-sas`` text (issue 15 item
9): the real strongSwan 6 output beside the shared 2-CPU capture gives the same SAs, SPIs,
CPU ids and counters as the kernel's netlink dump taken at the same time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from analyzer.xfrm_state import load_snapshot
from tests.conftest import SHARED, needs_shared

ROOT = Path(__file__).resolve().parent.parent
S6 = SHARED / "strongswan6-percpu-2cpu"


def multisa(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer.cli", *argv], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=120)


@needs_shared
def test_list_sas_matches_the_netlink_dump():
    for host in ("moon", "sun"):
        text = load_snapshot(S6 / f"{host}.list-sas.txt")
        kernel = load_snapshot(S6 / f"{host}.xfrm-sa.json")
        assert text.source == "swanctl" and len(text.sas) == len(kernel.sas) == 6

        def key(sa):
            return (sa.spi, sa.src, sa.dst, sa.dir, sa.pcpu, sa.reqid, sa.mode, sa.curlft.bytes, sa.curlft.packets)

        assert sorted(map(key, text.sas)) == sorted(map(key, kernel.sas))
        for sa in text.sas:  # an outbound SA's oseq is its packet count, as the kernel says
            if sa.dir == 2:
                assert sa.replay.oseq == kernel.sa(sa.spi).replay.oseq


@needs_shared
def test_import_names_the_file_not_a_netns():
    res = multisa("xfrm", "import", str(S6 / "moon.list-sas.txt"))
    head = res.stdout.splitlines()[0]
    assert res.returncode == 0 and "current netns" not in head and "moon.list-sas.txt" in head, head
    assert "SAD: 6 SAs" in res.stdout and "cpu" not in res.stderr
    doc = json.loads(multisa("xfrm", "import", str(S6 / "moon.list-sas.txt"), "--json").stdout)
    assert {s["spi"]: s["pcpu"] for s in doc["sas"]}["ca2c6b46"] == 0
    res = multisa("xfrm", "import", str(S6 / "moon.ip-s-xfrm-state.txt"))
    assert "current netns" not in res.stdout.splitlines()[0]


@needs_shared
def test_lint_xfrm_with_list_sas(tmp_path):
    cap = str(S6 / "capture.pcap")
    clean = multisa("lint", cap, "-k", str(S6), "--select", "MS5", "--xfrm", str(S6 / "moon.list-sas.txt"),
                    "--xfrm", str(S6 / "sun.list-sas.txt"))
    assert clean.returncode == 0 and clean.stdout.strip() == "All checks passed!", clean.stdout + clean.stderr
    # moon's two per-CPU Child SAs on one CPU: MS502
    bad = tmp_path / "moon.list-sas.txt"
    bad.write_text((S6 / "moon.list-sas.txt").read_text().replace("cpu 1,", "cpu 0,"))
    res = multisa("lint", cap, "-k", str(S6), "--select", "MS5", "--xfrm", str(bad), "-f", "json")
    assert {f["code"] for f in json.loads(res.stdout)["findings"]} == {"MS502"}, res.stdout

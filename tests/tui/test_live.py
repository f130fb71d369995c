"""``multisa tui --live`` against real traffic: the reference peer's demo on loopback
(``multisa peer demo --loopback``), captured by the TUI with dumpcap, decrypted with the keys
the peer writes as it goes, and the peer's per-CPU counters polled from its status file."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tui.app import MultisaApp
from tui.screens import GroupsScreen

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="the peer binds UDP 500 and dumpcap captures: needs root"),
    pytest.mark.skipif(shutil.which("dumpcap") is None, reason="dumpcap is not installed (apt-get install tshark)"),
]


def test_live_loopback_demo_shows_groups_and_moving_per_cpu_counters(tmp_path):
    out = tmp_path / "demo"
    demo = subprocess.Popen([sys.executable, "-m", "peer.cli", "peer", "demo", "--out", str(out), "--loopback",
                             "--duration", "6", "--rate", "50", "--resources", "2"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    app = MultisaApp(live=True, iface="lo", keys=[str(out)], peer_status=[str(out / "initiator-status.json")])
    history: list[dict[str, int]] = []

    async def run() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                await pilot.pause(1.0)
                rows = {r.key: r.packets for lin in app.snapshot.lineages for g in lin.groups
                        for r in g.children if r.counters == "peer"}
                history.append(rows)
                if demo.poll() is not None and len(history) > 3 and history[-1] == history[-2]:
                    break
            assert isinstance(app.screen, GroupsScreen)
            snap = app.snapshot
            assert snap.live and snap.lineages, app.problems
            group = snap.lineages[0].groups[0]
            assert group.label == "198.51.100.0/24 === 203.0.113.0/24"
            members = [r for r in group.children if r.role == "member"]
            assert len(members) >= 2 and all(r.resource != "-" for r in members)
            assert {r.cpu for r in members} >= {"0", "1"}  # one worker per CPU, per the peer's status
            assert group.per_cpu and len(group.per_cpu) >= 2
            # IKE_AUTH and CREATE_CHILD_SA were decrypted with keys written while capturing
            assert any(m.exchange == 36 for m in app.messages)

    try:
        asyncio.run(run())
    finally:
        if demo.poll() is None:
            demo.terminate()
        demo.wait(timeout=30)
    moving = [k for k in history[-1] if any(0 < h.get(k, 0) < history[-1][k] for h in history)]
    assert moving, f"per-SA counters never moved: {history}"

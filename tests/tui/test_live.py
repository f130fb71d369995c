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


def watch_live(app: MultisaApp, done, seconds: float = 40) -> list[dict[str, int]]:
    """Run ``app`` headless until ``done()`` and the peer counters stop moving; assert what the
    live groups view must show; return the per-SA packet counts sampled once a second."""
    history: list[dict[str, int]] = []

    async def run() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                await pilot.pause(1.0)
                rows = {r.key: r.packets for lin in app.snapshot.lineages for g in lin.groups
                        for r in g.children if r.counters == "peer"}
                history.append(rows)
                if done() and len(history) > 3 and history[-1] == history[-2]:
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

    asyncio.run(run())
    moving = [k for k in history[-1] if any(0 < h.get(k, 0) < history[-1][k] for h in history)]
    assert moving, f"per-SA counters never moved: {history}"
    return history


def test_live_loopback_demo_shows_groups_and_moving_per_cpu_counters(tmp_path):
    out = tmp_path / "demo"
    app = MultisaApp(live=True, iface="lo", keys=[str(out)], peer_status=[str(out / "initiator-status.json")])
    demos: list[subprocess.Popen] = []
    capturing_since: list[float] = []

    def start_demo_or_done() -> bool:
        """The demo starts once the app's dumpcap has run a second (a loaded machine can take
        longer than the demo's IKE_SA_INIT to start a capture); done when the demo ended."""
        if demos:
            return demos[0].poll() is not None
        cap = getattr(app, "_capture", None)
        proc = getattr(cap, "proc", None)
        if proc is not None and proc.poll() is None:
            capturing_since.append(time.monotonic())
            if capturing_since[-1] - capturing_since[0] >= 1.0:
                demos.append(subprocess.Popen(
                    [sys.executable, "-m", "peer.cli", "peer", "demo", "--out", str(out), "--loopback",
                     "--duration", "6", "--rate", "50", "--resources", "2"],
                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        return False

    try:
        history = watch_live(app, start_demo_or_done, seconds=60)
    finally:
        for demo in demos:
            if demo.poll() is None:
                demo.terminate()
            demo.wait(timeout=30)
    assert demos, "the app's capture never started"
    assert demos[0].returncode == 0, demos[0].stderr.read().decode()[-2000:]
    assert len(history) > 3 and history[-1], history  # the counters were watched until they stood still


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 is not installed")
def test_live_in_a_network_namespace_with_peer_status(tmp_path):
    """``multisa tui --live --netns NS --iface IF --peer-status PATH``: the reference peers run in
    two namespaces joined by veth; the TUI captures inside the responder's namespace (dumpcap
    under ``ip netns exec``), polls XFRM there, and reads the initiator's status file."""
    from peer.demo import INITIATOR_TS, PSK, RESPONDER_TS, delete_netns, make_netns

    topo = make_netns(f"t{os.getpid() % 100000}")
    (tmp_path / "psk").write_text(PSK + "\n")
    keys, status = tmp_path / "keys", tmp_path / "initiator-status.json"
    common = ["--psk-file", str(tmp_path / "psk"), "--resource-info", "--rate", "50", "--duration", "6",
              "--resources", "2", "--lifetime", "60"]
    peers: list[subprocess.Popen] = []
    app = MultisaApp(live=True, iface=topo.iface, netns=topo.resp_ns, keys=[str(keys)], peer_status=[str(status)])

    def start_peers() -> bool:
        """Started from inside the app's first second, once its capture runs."""
        if not peers:
            peers.append(subprocess.Popen(
                [*topo.prefix(topo.resp_ns), sys.executable, "-m", "peer.cli", "peer", "responder",
                 "--listen", topo.resp_addr, "--once", "--local-ts", RESPONDER_TS, "--remote-ts", INITIATOR_TS,
                 *common], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.5)
            peers.append(subprocess.Popen(
                [*topo.prefix(topo.init_ns), sys.executable, "-m", "peer.cli", "peer", "initiator",
                 "--connect", topo.resp_addr, "--local", topo.init_addr, "--local-ts", INITIATOR_TS,
                 "--remote-ts", RESPONDER_TS, "--keys-dir", str(keys), "--status-file", str(status), *common],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            return False
        return peers[1].poll() is not None

    try:
        watch_live(app, start_peers)
        assert not [p for p in app.problems if "netns" in str(p) or "stopped" in str(p)], app.problems
    finally:
        for p in peers:
            if p.poll() is None:
                p.terminate()
            p.wait(timeout=30)
        delete_netns(topo.init_ns, topo.resp_ns)


def test_live_tui_shows_the_monitors_esp_findings_as_they_happen(tmp_path):
    """issue 12 item 4: ``multisa tui --live --iface lo`` watching a loopback ``peer demo --fault
    esp-replay-gap`` shows MS401 (replay) and MS402 (gap) while the demo still runs, from the
    same engine as ``multisa monitor`` (analyzer.session.Session, live)."""
    out = tmp_path / "demo"
    app = MultisaApp(live=True, iface="lo", keys=[str(out)], peer_status=[str(out / "initiator-status.json")],
                     poll_xfrm=False)
    demo: list[subprocess.Popen] = []
    seen: dict[str, bool] = {}

    async def run() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause(1.5)  # dumpcap is capturing before the first IKE_SA_INIT
            demo.append(subprocess.Popen(
                [sys.executable, "-m", "peer.cli", "peer", "demo", "--out", str(out), "--loopback", "--duration",
                 "8", "--rate", "50", "--resources", "2", "--fault", "esp-replay-gap"],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and demo[0].poll() is None:
                await pilot.pause(0.5)
                codes = {f.code for f in app.findings}
                for code in ("MS401", "MS402"):
                    seen.setdefault(code, False)
                    seen[code] = seen[code] or code in codes
            assert app.snapshot.live and app.snapshot.lineages, app.problems

    try:
        asyncio.run(run())
    finally:
        for p in demo:
            if p.poll() is None:
                p.terminate()
            p.wait(timeout=30)
    assert demo and demo[0].returncode == 0, demo[0].stderr.read().decode()[-2000:]
    assert seen.get("MS401"), f"MS401 never shown while the demo ran: {sorted({f.code for f in app.findings})}"
    assert seen.get("MS402"), f"MS402 never shown while the demo ran: {sorted({f.code for f in app.findings})}"

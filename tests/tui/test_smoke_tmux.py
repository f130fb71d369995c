"""``multisa tui`` for real, in a terminal: started inside tmux, driven with send-keys, read
back with capture-pane (skips without tmux)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FAULT = ROOT / "samples" / "peer" / "fault-resource-info-protocol-id"

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)")


def _command() -> list[str]:
    return [sys.executable, "-m", "analyzer.cli", "tui", str(FAULT / "capture.pcapng"), "--keys", str(FAULT)]


class Tmux:
    def __init__(self, name: str) -> None:
        self.name = name
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], capture_output=True, text=True, env=self.env,
                              timeout=20).stdout

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", self.name)

    def wait_for(self, text: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared; screen was:\n{screen}")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.name, *keys)


def test_tui_in_tmux_finding_to_packet():
    name = f"multisa-tui-smoke-{os.getpid()}"
    tmux = Tmux(name)
    cmd = " ".join(_command())
    env = f"cd {ROOT} && TERM=xterm-256color TEXTUAL_ANIMATIONS=none"
    tmux.run("new-session", "-d", "-s", name, "-x", "120", "-y", "40", f"{env} {cmd}; sleep 30")
    try:
        screen = tmux.wait_for("MS101")
        assert "198.51.100.0/24 === 203.0.113.0/24" in screen
        assert "done" in screen
        tmux.keys("Tab")
        time.sleep(0.5)
        tmux.keys("Enter")
        # Enter on MS101 selects the offending field: the notify's Protocol ID line
        screen = tmux.wait_for("Payload: Notify (41) - SA_RESOURCE_INFO")
        assert "Protocol ID: ESP (3)" in screen.split("Payload: Notify (41) - SA_RESOURCE_INFO", 1)[1]
        assert "IKE_AUTH request" in screen
        tmux.keys("f")
        screen = tmux.wait_for("resource-info-protocol-id-nonzero")
        tmux.keys("?")
        tmux.wait_for("Filter")
        tmux.keys("Escape")
        time.sleep(0.3)
        tmux.keys("q")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "MS101" in tmux.screen():
            time.sleep(0.2)
        assert "Traceback" not in tmux.screen()
    finally:
        tmux.run("kill-session", "-t", name)

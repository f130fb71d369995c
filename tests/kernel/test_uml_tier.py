"""Opt-in: boot Debian's user-mode-linux 6.1 (real ESP) and run tests/kernel/guest_esp.py in it.

Enable with MULTISA_KERNEL_TIERS=uml (CI sets it); needs root-free UML plus
``apt-get install user-mode-linux kmod``. About 10 s.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent

pytestmark = [
    pytest.mark.skipif("uml" not in os.environ.get("MULTISA_KERNEL_TIERS", "").split(","),
                       reason="kernel tier 'uml' not requested (MULTISA_KERNEL_TIERS=uml)"),
    pytest.mark.skipif(not Path("/usr/bin/linux.uml").exists() or shutil.which("modprobe") is None,
                       reason="user-mode-linux/kmod missing (apt-get install user-mode-linux kmod)"),
]


def test_esp_counters_in_uml_6_1():
    res = subprocess.run(
        [str(HERE / "uml-run.sh"), "--", "env", "MULTISA_IN_GUEST=1", sys.executable, "-m",
         "pytest", "-q", "--color=no", "-p", "no:cacheprovider", str(HERE / "guest_esp.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "uml: kernel 6.1" in out and " passed" in out and "skipped" not in out

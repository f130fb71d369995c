"""Opt-in kernel tier ``qemu``: 2 vCPUs under qemu (software emulation) booting trixie-backports'
cloud kernel (>= 6.13): each per-CPU SA counts only its own CPU's traffic (guest_smp.py).

Run it with ``MULTISA_KERNEL_TIERS=qemu python3 -m pytest -q tests/kernel/test_qemu_tier.py``;
tests/kernel/fetch.sh qemu (apt-get install qemu-system-x86; the kernel .debs unpacked into a
cache dir) runs first if needed. About 2.5 minutes: qemu emulates the CPUs in software.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from .test_uml_tier import HERE, ROOT, cache_dir, tiers

pytestmark = [
    pytest.mark.skipif("qemu" not in tiers(), reason="kernel tier 'qemu' not requested (MULTISA_KERNEL_TIERS=qemu)"),
    pytest.mark.skipif(shutil.which("modprobe") is None, reason="kmod missing (apt-get install kmod)"),
]


def test_each_per_cpu_sa_counts_only_its_cpu_in_a_2_cpu_guest():
    if not list((cache_dir() / "qemu").glob("root/usr/lib/modules/*/vmlinuz")) or not shutil.which(
            "qemu-system-x86_64"):
        res = subprocess.run([str(HERE / "fetch.sh"), "qemu"], check=False, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"fetch.sh qemu failed: {res.stderr.strip()[-500:]}"
    res = subprocess.run(
        [str(HERE / "qemu-run.sh"), "--smp", "2", "--", "env", "MULTISA_IN_GUEST=1", sys.executable, "-m", "pytest",
         "-q", "--color=no", "-p", "no:cacheprovider", str(HERE / "guest_smp.py"), str(HERE / "guest_peer.py")],
        cwd=ROOT, check=False, capture_output=True, text=True, timeout=900)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    m = re.search(r"guest: kernel (\d+)\.(\d+)\S*, (\d+) cpu", out)
    assert m and (int(m[1]), int(m[2])) >= (6, 13) and int(m[3]) == 2, out[:1000]
    assert "4 passed" in out and "skipped" not in out, out[-2000:]

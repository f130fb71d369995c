"""Kernel tiers: boot a throw-away kernel with the full ESP data path and run guest tests in it.

Opt-in through ``MULTISA_KERNEL_TIERS`` (comma- or space-separated; CI sets ``uml uml613``):

- ``uml``    Debian bookworm's user-mode-linux 6.1 (``apt-get install user-mode-linux kmod``):
             tests/kernel/guest_esp.py, real ESP between two netns, every counter moves.
- ``uml613`` sid's user-mode-linux (>= 6.13), unpacked into a cache by tests/kernel/fetch.sh
             (run here if the cache is empty): guest_pcpu.py (SA_PCPU/SA_DIR on valid SAs, a
             CPU_ACQUIRE policy) and guest_peer.py (the reference peer on the kernel data plane,
             lint --xfrm clean and faulty).
- ``qemu``   2 vCPUs: see test_qemu_tier.py.

Each boot takes seconds; the whole tier a few tens of seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def tiers() -> set[str]:
    return set(re.split(r"[\s,]+", os.environ.get("MULTISA_KERNEL_TIERS", "").strip())) - {""}


def cache_dir() -> Path:
    base = os.environ.get("MULTISA_KERNEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "multisa-kernels")
    return Path(base)


def boot(kernel: str, *guest_tests: str, timeout: float = 600) -> str:
    """Run pytest on ``guest_tests`` inside the guest kernel; returns the guest's output."""
    res = subprocess.run(
        [str(HERE / "uml-run.sh"), "--kernel", kernel, "--", "env", "MULTISA_IN_GUEST=1", sys.executable,
         "-m", "pytest", "-q", "--color=no", "-p", "no:cacheprovider", *(str(HERE / t) for t in guest_tests)],
        cwd=ROOT, check=False, capture_output=True, text=True, timeout=timeout)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert " passed" in out and "skipped" not in out and "deselected" not in out, out[-4000:]
    return out


needs_modprobe = pytest.mark.skipif(shutil.which("modprobe") is None, reason="kmod missing (apt-get install kmod)")


@needs_modprobe
@pytest.mark.skipif("uml" not in tiers(), reason="kernel tier 'uml' not requested (MULTISA_KERNEL_TIERS=uml)")
@pytest.mark.skipif(not Path("/usr/bin/linux.uml").exists(),
                    reason="user-mode-linux missing (apt-get install user-mode-linux kmod)")
def test_esp_counters_in_uml_6_1():
    out = boot("uml", "guest_esp.py", timeout=300)
    assert "guest: kernel 6.1" in out


@needs_modprobe
@pytest.mark.skipif("uml613" not in tiers(), reason="kernel tier 'uml613' not requested (MULTISA_KERNEL_TIERS=uml613)")
def test_per_cpu_sas_and_kernel_peer_in_uml_6_13():
    if not (cache_dir() / "uml613" / "linux.uml").exists():  # requested: fetch it (CI does so beforehand)
        res = subprocess.run([str(HERE / "fetch.sh"), "uml613"], check=False, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"fetch.sh uml613 failed: {res.stderr.strip()[-500:]}"
    out = boot("uml613", "guest_pcpu.py", "guest_peer.py")
    release = re.search(r"guest: kernel (\d+)\.(\d+)", out)
    assert release and (int(release[1]), int(release[2])) >= (6, 13), out[:500]
    assert re.search(r"\b5 passed\b", out), out[-2000:]

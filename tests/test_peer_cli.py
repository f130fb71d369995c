"""The reference peer's command line as a user meets it (issue 15 item 7): an initiator that
never got an IKE SA exits non-zero and says why, both sides print one status line on success
without -v, and every fault switch of ``peer demo`` reproduces its rule by itself."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def multisa(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "always", "-m", "analyzer.cli", *argv], capture_output=True,
                          text=True, env=ENV, cwd=ROOT, timeout=timeout)


def ports(n: int) -> list[int]:
    base = random.randrange(20000, 60000, 8)
    return [base + i for i in range(n)]


def test_initiator_without_ike_sa_exits_nonzero_and_says_why(tmp_path):
    (tmp_path / "psk").write_text("secret\n")
    a, b, c, d = ports(4)
    res = multisa("peer", "initiator", "--connect", f"127.0.0.1:{a}", "--local", f"127.0.0.1:{b}",
                  "--natt-port", str(c), "--remote-natt-port", str(d), "--psk-file", str(tmp_path / "psk"),
                  "--lifetime", "2")
    assert res.returncode == 1 and "no IKE SA established" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and "CryptographyDeprecationWarning" not in res.stderr


def test_both_sides_print_a_status_line_on_success(tmp_path):
    (tmp_path / "psk").write_text("secret\n")
    ike, natt_r, ike_i, natt_i = ports(4)
    n = os.getpid() % 200 + 20
    resp_addr, init_addr = f"127.78.{n}.2", f"127.78.{n}.1"
    resp = subprocess.Popen([sys.executable, "-m", "analyzer.cli", "peer", "responder", "--listen", f"{resp_addr}:{ike}",
                             "--natt-port", str(natt_r), "--psk-file", str(tmp_path / "psk"), "--resource-info",
                             "--once", "--local-ts", "203.0.113.0/24", "--remote-ts", "198.51.100.0/24",
                             "--lifetime", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=ROOT)
    try:
        time.sleep(1.0)
        init = multisa("peer", "initiator", "--connect", f"{resp_addr}:{ike}", "--local", f"{init_addr}:{ike_i}",
                       "--natt-port", str(natt_i), "--remote-natt-port", str(natt_r), "--psk-file",
                       str(tmp_path / "psk"), "--resource-info", "--resources", "2", "--duration", "1",
                       "--rate", "10", "--lifetime", "25", timeout=60)
        out, err = resp.communicate(timeout=30)
    finally:
        if resp.poll() is None:
            resp.kill()
    assert init.returncode == 0, init.stderr
    lines = init.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("multisa peer initiator: 1 IKE SA") and "done" in lines[0], lines
    assert "3 Child SAs" in lines[0]
    assert resp.returncode == 0 and out.strip().startswith("multisa peer responder: 1 IKE SA"), (out, err)
    for text in (init.stderr, err):
        assert "CryptographyDeprecationWarning" not in text and "Traceback" not in text


@pytest.mark.skipif(not (shutil.which("dumpcap") or shutil.which("tshark")), reason="the demo needs dumpcap or tshark")
@pytest.mark.parametrize("fault,code", [("no-additional-sas", "MS301"), ("ts-max-queue-data", "MS104"),
                                        ("no-ts-limit", "MS305")])
def test_each_fault_brings_its_scenario(fault, code, tmp_path):
    out = tmp_path / fault
    res = multisa("peer", "demo", "--out", str(out), "--loopback", "--fault", fault, "--duration", "1",
                  "--rate", "5", timeout=180)
    assert res.returncode == 0, res.stderr
    lint = multisa("lint", str(out / "capture.pcapng"), "-k", str(out), "-f", "json")
    codes = {f["code"] for f in json.loads(lint.stdout)["findings"]}
    assert code in codes, (fault, codes)

"""Runs *inside* a Linux >= 6.13 UML guest (tests/kernel/uml-run.sh --kernel uml613): per-CPU SAs
(``XFRMA_SA_PCPU`` + ``XFRMA_SA_DIR``) on valid SAs, a ``CPU_ACQUIRE`` policy, real ESP between
two netns, and ``multisa xfrm dump --json`` showing pcpu/dir and the counters moving.

Not collected on the host (the name does not match test_*.py); test_uml_tier.py runs it. The
SAs are written by the reference peer's kernel data plane writer (peer/kernel.py); keys are
throw-away constants for SAs that live only inside the guest kernel.
"""

from __future__ import annotations

import contextlib
import io
import ipaddress
import json
import os

import pytest

from analyzer.cli import main as cli_main
from dissectors.iana import EncrId, IntegId
from dissectors.records import Secret
from dissectors.xfrm import XFRM_POLICY_CPU_ACQUIRE, Mode, PolicyDir, SaDir
from dissectors.esp import EspSa
from peer.kernel import XfrmWriter

from .guestnet import udp_round_trips, veth_pair

pytestmark = pytest.mark.skipif(os.environ.get("MULTISA_IN_GUEST") != "1",
                                reason="runs only inside the UML guest (tests/kernel/uml-run.sh)")

MOON, SUN = "192.0.2.1", "192.0.2.2"
MOON_NET, SUN_NET = "198.51.100.0/24", "203.0.113.0/24"
MOON_IN, SUN_IN = "198.51.100.1", "203.0.113.1"
PCPU_MS, FALLBACK_MS, SM = 0xC0DE0101, 0xC0DE0100, 0xC0DE0200  # SPIs


def gcm(spi: int, src: str, dst: str, fill: int) -> EspSa:
    return EspSa(spi, EncrId.AES_GCM_16, 256, Secret(bytes([fill]) * 36), IntegId.NONE, Secret(b""), src, dst)


def cbc(spi: int, src: str, dst: str, fill: int) -> EspSa:
    return EspSa(spi, EncrId.AES_CBC, 128, Secret(bytes([fill]) * 16), IntegId.AUTH_HMAC_SHA2_256_128,
                 Secret(bytes([fill + 1]) * 32), src, dst)


def net(text: str):
    return ipaddress.ip_network(text)


@pytest.fixture(scope="module")
def pcpu_pair():
    with veth_pair(("moon", MOON, MOON_IN, SUN_NET), ("sun", SUN, SUN_IN, MOON_NET)):
        sas = {"ms_pcpu": gcm(PCPU_MS, MOON, SUN, 0x11), "ms_fallback": cbc(FALLBACK_MS, MOON, SUN, 0x21),
               "sm": gcm(SM, SUN, MOON, 0x31)}
        for ns in ("moon", "sun"):
            w = XfrmWriter(ns)
            try:
                out = ns == "moon"
                w.add_sa(sas["ms_fallback"], reqid=1, dir=SaDir.OUT if out else SaDir.IN, pcpu=None,
                         mode=Mode.TUNNEL, encap=None, replay_window=0 if out else 32)
                w.add_sa(sas["ms_pcpu"], reqid=1, dir=SaDir.OUT if out else SaDir.IN, pcpu=0,
                         mode=Mode.TUNNEL, encap=None, replay_window=0 if out else 32)
                w.add_sa(sas["sm"], reqid=1, dir=SaDir.IN if out else SaDir.OUT, pcpu=None,
                         mode=Mode.TUNNEL, encap=None, replay_window=32 if out else 0)
                local, remote, lo, ro = (MOON_NET, SUN_NET, MOON, SUN) if out else (SUN_NET, MOON_NET, SUN, MOON)
                w.add_policy(net(local), net(remote), dir=PolicyDir.OUT,
                             flags=XFRM_POLICY_CPU_ACQUIRE if out else 0, reqid=1, tmpl_src=lo, tmpl_dst=ro,
                             mode=Mode.TUNNEL)
                w.add_policy(net(remote), net(local), dir=PolicyDir.IN, flags=0, reqid=1, tmpl_src=ro,
                             tmpl_dst=lo, mode=Mode.TUNNEL)
            finally:
                w.close()
        yield sas


def echo(count: int) -> None:
    """``count`` UDP round trips between the inner addresses: one ESP packet each way each."""
    udp_round_trips(count, "moon", "sun", SUN_IN, MOON_IN)


def multisa(*argv: str) -> str:
    """The real ``multisa`` command line, in-process (a new interpreter costs seconds in UML)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli_main(list(argv)) == 0
    return buf.getvalue()


def dump(ns: str) -> dict:
    return json.loads(multisa("xfrm", "dump", "--netns", ns, "--json"))


def by_spi(doc: dict) -> dict:
    return {int(s["spi"], 16): s for s in doc["sas"]}


def test_pcpu_sa_carries_the_cpu_traffic(pcpu_pair):
    before = by_spi(dump("moon"))
    assert before[PCPU_MS]["pcpu"] == 0 and before[PCPU_MS]["dir"] == 2
    assert before[FALLBACK_MS]["pcpu"] is None and before[FALLBACK_MS]["dir"] == 2
    assert before[SM]["dir"] == 1 and before[SM]["pcpu"] is None
    echo(5)
    moon, sun = by_spi(dump("moon")), by_spi(dump("sun"))
    # one CPU: its per-CPU SA takes every packet, the fallback SA none (CPU_ACQUIRE policy)
    assert moon[PCPU_MS]["lifetime"]["packets"] - before[PCPU_MS]["lifetime"]["packets"] == 5
    assert moon[PCPU_MS]["replay"]["oseq"] == 5
    assert moon[FALLBACK_MS]["lifetime"]["packets"] == 0 and moon[FALLBACK_MS]["replay"]["oseq"] == 0
    assert sun[PCPU_MS]["replay"]["seq"] == 5 and sun[PCPU_MS]["pcpu"] == 0 and sun[PCPU_MS]["dir"] == 1
    assert sun[PCPU_MS]["lifetime"]["bytes"] == moon[PCPU_MS]["lifetime"]["bytes"] > 0
    assert moon[SM]["replay"]["seq"] == 5 and sun[SM]["replay"]["oseq"] == 5
    pol = [p for p in dump("moon")["policies"] if p["dir"] == 1]
    assert len(pol) == 1 and pol[0]["flags"] & XFRM_POLICY_CPU_ACQUIRE


def test_counters_keep_moving_in_a_snapshot_series(pcpu_pair, tmp_path):
    out = tmp_path / "series.jsonl"
    multisa("xfrm", "snapshot", "--netns", "moon", "-o", str(out), "--interval", "0.1", "--count", "1")
    echo(3)
    multisa("xfrm", "snapshot", "--netns", "moon", "-o", str(tmp_path / "after.jsonl"),
       "--interval", "0.1", "--count", "1")
    a = by_spi(json.loads(out.read_text().splitlines()[0]))
    b = by_spi(json.loads((tmp_path / "after.jsonl").read_text().splitlines()[0]))
    assert b[PCPU_MS]["replay"]["oseq"] - a[PCPU_MS]["replay"]["oseq"] == 3
    assert b[PCPU_MS]["pcpu"] == 0 and b[FALLBACK_MS]["pcpu"] is None

"""Runs *inside* the 2-vCPU qemu guest (tests/kernel/qemu-run.sh): each per-CPU SA counts only
its own CPU's traffic.

moon has one outbound per-CPU SA for each CPU (``XFRMA_SA_PCPU`` 0 and 1), the fallback SA
without pcpu and a ``CPU_ACQUIRE`` policy; a sender pinned to CPU 0 sends 3 datagrams, one
pinned to CPU 1 sends 5; ``multisa xfrm dump --json`` must show 3 on pcpu 0, 5 on pcpu 1 and
none on the fallback SA, and sun's inbound SAs the same. Not collected on the host.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dissectors.xfrm import XFRM_POLICY_CPU_ACQUIRE, Mode, PolicyDir, SaDir
from peer.kernel import XfrmWriter

from .guest_pcpu import (
    MOON,
    MOON_IN,
    MOON_NET,
    SUN,
    SUN_IN,
    SUN_NET,
    by_spi,
    cbc,
    dump,
    gcm,
    net,
)
from .guestnet import veth_pair

pytestmark = pytest.mark.skipif(os.environ.get("MULTISA_IN_GUEST") != "1",
                                reason="runs only inside the qemu guest (tests/kernel/qemu-run.sh)")

CPU0, CPU1, FALLBACK = 0xC0DE1000, 0xC0DE1001, 0xC0DE10FF

SEND = """
import os, socket
os.sched_setaffinity(0, {{{cpu}}})
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("{src}", 0))
for i in range({n}):
    s.sendto(b"cpu {cpu} %d" % i, ("{dst}", 9))
"""


@pytest.fixture(scope="module")
def two_cpu_pair():
    assert os.cpu_count() >= 2, "the qemu tier needs 2 vCPUs"
    with veth_pair(("moon", MOON, MOON_IN, SUN_NET), ("sun", SUN, SUN_IN, MOON_NET)):
        sas = [(gcm(CPU0, MOON, SUN, 0x41), 0), (gcm(CPU1, MOON, SUN, 0x51), 1), (cbc(FALLBACK, MOON, SUN, 0x61), None)]
        for ns in ("moon", "sun"):
            out = ns == "moon"
            w = XfrmWriter(ns)
            try:
                for esp, pcpu in sas:
                    w.add_sa(esp, reqid=1, dir=SaDir.OUT if out else SaDir.IN, pcpu=pcpu, mode=Mode.TUNNEL,
                             encap=None, replay_window=0 if out else 32)
                if out:
                    w.add_policy(net(MOON_NET), net(SUN_NET), dir=PolicyDir.OUT, flags=XFRM_POLICY_CPU_ACQUIRE,
                                 reqid=1, tmpl_src=MOON, tmpl_dst=SUN, mode=Mode.TUNNEL)
                else:
                    w.add_policy(net(MOON_NET), net(SUN_NET), dir=PolicyDir.IN, flags=0, reqid=1,
                                 tmpl_src=MOON, tmpl_dst=SUN, mode=Mode.TUNNEL)
            finally:
                w.close()
        yield


def send_from(cpu: int, n: int) -> None:
    subprocess.run(["ip", "netns", "exec", "moon", sys.executable, "-c",
                    SEND.format(cpu=cpu, src=MOON_IN, dst=SUN_IN, n=n)], check=True)


def test_each_per_cpu_sa_counts_only_its_cpu(two_cpu_pair):
    send_from(0, 3)
    send_from(1, 5)
    moon, sun = by_spi(dump("moon")), by_spi(dump("sun"))
    assert (moon[CPU0]["pcpu"], moon[CPU1]["pcpu"], moon[FALLBACK]["pcpu"]) == (0, 1, None)
    assert moon[CPU0]["lifetime"]["packets"] == 3 and moon[CPU0]["replay"]["oseq"] == 3
    assert moon[CPU1]["lifetime"]["packets"] == 5 and moon[CPU1]["replay"]["oseq"] == 5
    assert moon[FALLBACK]["lifetime"]["packets"] == 0
    assert sun[CPU0]["replay"]["seq"] == 3 and sun[CPU1]["replay"]["seq"] == 5

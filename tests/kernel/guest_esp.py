"""Runs *inside* a throw-away kernel with the ESP data path (tests/kernel/uml-run.sh): real ESP
between two netns over veth, and the product's read-only dump sees every counter move.

Not collected on the host (the file name does not match test_*.py); tests/kernel/test_uml_tier.py
boots the guest and runs ``pytest tests/kernel/guest_esp.py`` in it. The keys below are
throw-away test constants for SAs that live only inside the guest kernel.
"""

from __future__ import annotations

import os

import pytest

from analyzer.xfrm_state import counter_delta, parse_ip_xfrm, snapshot_from_kernel
from dissectors.xfrm import XfrmSocket

from .guestnet import sh, udp_round_trips, veth_pair

pytestmark = pytest.mark.skipif(os.environ.get("MULTISA_IN_GUEST") != "1",
                                reason="runs only inside the UML guest (tests/kernel/uml-run.sh)")

MOON, SUN = "192.0.2.1", "192.0.2.2"
SPI_MS, SPI_SM = 0xC0DE0001, 0xC0DE0002  # moon->sun, sun->moon
ENC = "0x" + "11" * 16
AUTH = "0x" + "22" * 32


@pytest.fixture(scope="module")
def esp_pair():
    with veth_pair(("moon", MOON, None, None), ("sun", SUN, None, None)):
        for ns in ("moon", "sun"):
            for src, dst, spi in ((MOON, SUN, SPI_MS), (SUN, MOON, SPI_SM)):
                sh("ip", "-n", ns, "xfrm", "state", "add", "src", src, "dst", dst, "proto", "esp",
                   "spi", hex(spi), "reqid", "1", "mode", "transport", "replay-window", "32",
                   "auth-trunc", "hmac(sha256)", AUTH, "128", "enc", "cbc(aes)", ENC)
            local, remote = (MOON, SUN) if ns == "moon" else (SUN, MOON)
            for d, s, t in (("out", local, remote), ("in", remote, local)):
                sh("ip", "-n", ns, "xfrm", "policy", "add", "src", f"{s}/32", "dst", f"{t}/32",
                   "dir", d, "tmpl", "src", s, "dst", t, "proto", "esp", "reqid", "1",
                   "mode", "transport")
        yield


def ping(count: int) -> None:
    """``count`` UDP round trips moon -> sun -> moon, each one ESP packet per direction."""
    udp_round_trips(count, "moon", "sun", SUN)


def test_counters_move_in_our_dump(esp_pair):
    before = {ns: snapshot_from_kernel(ns) for ns in ("moon", "sun")}
    ping(3)
    moon, sun = (snapshot_from_kernel(ns) for ns in ("moon", "sun"))
    m_out, s_in = moon.sa(SPI_MS, dst=SUN), sun.sa(SPI_MS, dst=SUN)
    s_out, m_in = sun.sa(SPI_SM, dst=MOON), moon.sa(SPI_SM, dst=MOON)
    assert counter_delta(before["moon"].sa(SPI_MS, SUN), m_out)["packets"] == 3
    assert m_out.replay.oseq == 3 and s_in.replay.seq == 3 and s_in.replay.bitmap == 0b111
    assert s_out.replay.oseq == 3 and m_in.replay.seq == 3
    assert m_out.curlft.bytes == s_in.curlft.bytes > 0
    assert {a.name for a in m_out.algos} == {"hmac(sha256)", "cbc(aes)"}
    assert m_out.stats.integrity_failed == 0
    with XfrmSocket("moon") as sock:
        ae = sock.get_ae(m_out)
    assert ae.replay.oseq == 3 and ae.curlft.packets == 3


def test_ip_text_agrees_on_moving_counters(esp_pair):
    ping(1)
    live = snapshot_from_kernel("sun")
    text = parse_ip_xfrm(sh("ip", "-n", "sun", "-s", "xfrm", "state"), "sun")
    key = lambda s: (s.spi, s.curlft.bytes, s.curlft.packets, s.replay.oseq, s.replay.seq)
    assert sorted(map(key, text.sas)) == sorted(map(key, live.sas))
    assert all(s.curlft.packets > 0 for s in live.sas)


def test_a_polling_socket_follows_moving_counters(esp_pair):
    """One socket polled across traffic: the SAs whose counters moved are decoded again (and
    only they), and every record equals what a fresh socket decodes."""
    with XfrmSocket("moon") as sock, XfrmSocket("moon") as fresh:
        fresh.reuse = False
        before = {sa.spi: sa for sa in sock.dump_sas()}
        assert sock.dump_sas() == list(before.values()) and sock.decoded == 2  # idle: kept
        ping(2)
        after = sock.dump_sas()
        assert sock.decoded == 4 and after == fresh.dump_sas()
        out = next(sa for sa in after if sa.spi == SPI_MS)
        inb = next(sa for sa in after if sa.spi == SPI_SM)
        assert counter_delta(before[SPI_MS], out)["packets"] == 2 and counter_delta(before[SPI_MS], out)["oseq"] == 2
        assert counter_delta(before[SPI_SM], inb)["seq"] == 2 and inb.replay.bitmap & 0b11 == 0b11

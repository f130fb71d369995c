"""The product's XFRM classes against this host's real kernel, in a throw-away netns.

The host kernel has XFRM netlink but no ESP: ALLOCSPI makes larval SAs (with XFRMA_SA_DIR and
XFRMA_SA_PCPU), policies with XFRM_POLICY_CPU_ACQUIRE can be added, and a packet matching an
outbound policy raises a real ACQUIRE. Only tests/kernel/writer.py writes; the product reads.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import uuid

import pytest

from analyzer.xfrm_commands import main as xfrm_main
from analyzer.xfrm_state import parse_ip_xfrm, snapshot_from_kernel
from dissectors.xfrm import (
    READ_ONLY_TYPES,
    XFRM_POLICY_CPU_ACQUIRE,
    XfrmError,
    XfrmGroup,
    XfrmMsg,
    XfrmSocket,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates a network namespace and "
                                                 "writes XFRM state into it"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) is not installed"),
]

SPI_FALLBACK, SPI_CPU0, SPI_CPU1, SPI_IN = 0xC0000010, 0xC0000011, 0xC0000012, 0xC0000013


def _ip(*args: str, netns: str | None = None) -> str:
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def netns():
    name = f"msa-{uuid.uuid4().hex[:8]}"
    try:
        _ip("netns", "add", name)
    except subprocess.CalledProcessError as err:
        pytest.skip(f"cannot create a network namespace: {err.stderr.strip()}")
    try:
        try:
            with XfrmSocket(name):
                pass
        except XfrmError as err:
            pytest.skip(f"no XFRM netlink here: {err}")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def writer(netns):
    from tests.kernel.writer import XfrmWriter

    w = XfrmWriter(netns)
    yield w
    w.close()


@pytest.fixture
def per_cpu_setup(writer):
    """What a 2-CPU per-resource group looks like before keys: a fallback SA without pcpu,
    one outbound SA per CPU, an inbound SA, and an outbound CPU_ACQUIRE policy."""
    a, b = "192.0.2.1", "192.0.2.2"
    writer.allocspi(a, b, reqid=1, spi_min=SPI_FALLBACK, spi_max=SPI_FALLBACK, dir=2)
    writer.allocspi(a, b, reqid=1, spi_min=SPI_CPU0, spi_max=SPI_CPU0, dir=2, pcpu=0)
    writer.allocspi(a, b, reqid=1, spi_min=SPI_CPU1, spi_max=SPI_CPU1, dir=2, pcpu=1)
    writer.allocspi(b, a, reqid=1, spi_min=SPI_IN, spi_max=SPI_IN, dir=1)
    writer.add_policy("198.51.100.0/24", "203.0.113.0/24", dir=1, flags=XFRM_POLICY_CPU_ACQUIRE,
                      priority=375423, tmpl_src=a, tmpl_dst=b, reqid=1)
    writer.add_policy("203.0.113.0/24", "198.51.100.0/24", dir=0, flags=0,
                      priority=375423, tmpl_src=b, tmpl_dst=a, reqid=1)
    return writer


def test_dump_sas_with_pcpu_and_dir(netns, per_cpu_setup):
    with XfrmSocket(netns) as sock:
        sas = {sa.spi: sa for sa in sock.dump_sas()}
    assert set(sas) == {SPI_FALLBACK, SPI_CPU0, SPI_CPU1, SPI_IN}
    assert (sas[SPI_CPU0].pcpu, sas[SPI_CPU1].pcpu, sas[SPI_FALLBACK].pcpu) == (0, 1, None)
    assert {sas[s].dir for s in (SPI_FALLBACK, SPI_CPU0, SPI_CPU1)} == {2}
    assert sas[SPI_IN].dir == 1 and sas[SPI_IN].pcpu is None
    cpu1 = sas[SPI_CPU1]
    assert (cpu1.src, cpu1.dst, cpu1.proto, cpu1.reqid, cpu1.mode) == ("192.0.2.1", "192.0.2.2", 50, 1, 1)
    assert cpu1.spi_hex == "c0000012" and cpu1.larval
    assert (cpu1.curlft.bytes, cpu1.curlft.packets, cpu1.replay.oseq, cpu1.replay.seq) == (0, 0, 0, 0)
    assert cpu1.curlft.add_time > 1_600_000_000
    assert cpu1.lifetime_cfg.hard_add_expires_seconds > 0  # larval SAs expire on their own


def test_dump_policies_with_cpu_acquire(netns, per_cpu_setup):
    with XfrmSocket(netns) as sock:
        pols = {p.dir: p for p in sock.dump_policies()}
    out = pols[1]
    assert out.flags == XFRM_POLICY_CPU_ACQUIRE and out.cpu_acquire
    assert out.priority == 375423 and out.index > 0 and out.ptype == 0
    sel = out.selector
    assert (sel.src, sel.prefixlen_s, sel.dst, sel.prefixlen_d, sel.family) == \
        ("198.51.100.0", 24, "203.0.113.0", 24, socket.AF_INET)
    (t,) = out.templates
    assert (t.src, t.dst, t.proto, t.reqid, t.mode, t.family) == ("192.0.2.1", "192.0.2.2", 50, 1, 1, 2)
    assert not pols[0].cpu_acquire


def test_getae_reports_pcpu_and_dir(netns, per_cpu_setup):
    with XfrmSocket(netns) as sock:
        sa = next(s for s in sock.dump_sas() if s.spi == SPI_CPU1)
        ae = sock.get_ae(sa)
    assert (ae.spi, ae.pcpu, ae.dir, ae.reqid) == (SPI_CPU1, 1, 2, 1)
    assert ae.replay.oseq == 0 and ae.curlft.packets == 0


class RecordingSocket:
    """Wraps the product's netlink socket: records the type of every message it sends and can
    make recv() fail once with ENOBUFS (as a kernel socket overrun does)."""

    def __init__(self, sock, enobufs_once: bool = False):
        self._sock, self.sent, self._enobufs = sock, [], enobufs_once

    def send(self, data, *a):
        offset = 0
        while offset < len(data):  # every nlmsghdr in the buffer
            length, mtype = int.from_bytes(data[offset:offset + 4], "little"), \
                int.from_bytes(data[offset + 4:offset + 6], "little")
            self.sent.append(mtype)
            offset += max(16, (length + 3) & ~3)
        return self._sock.send(data, *a)

    def recv(self, *a):
        if self._enobufs:
            self._enobufs = False
            self._sock.recv(*a)  # the data of the first part is lost, as on overrun
            raise OSError(errno.ENOBUFS, os.strerror(errno.ENOBUFS))
        return self._sock.recv(*a)

    def __getattr__(self, name):
        return getattr(self._sock, name)


def test_monitor_never_sends_a_state_changing_message(netns, per_cpu_setup):
    sock = XfrmSocket(netns, groups=tuple(XfrmGroup))
    rec = RecordingSocket(sock._sock)
    sock._sock = rec
    try:
        before = snapshot_from_kernel(netns, sock)
        sa = before.sas[0]
        sock.get_ae(sa)
        list(sock.events(timeout=0.2))
        with pytest.raises(XfrmError, match="read-only"):
            sock._send(XfrmMsg.NEWSA, 1)
        with pytest.raises(XfrmError, match="read-only"):
            sock._send(XfrmMsg.DELPOLICY, 1)
        after = snapshot_from_kernel(netns, sock)
    finally:
        sock.close()
    assert rec.sent, "nothing was sent at all"
    assert set(rec.sent) <= READ_ONLY_TYPES
    assert set(rec.sent) == {XfrmMsg.GETSA, XfrmMsg.GETPOLICY, XfrmMsg.GETAE}
    assert [s.spi for s in after.sas] == [s.spi for s in before.sas]
    assert after.policies == before.policies


def test_dump_is_retried_after_enobufs(netns, per_cpu_setup):
    with XfrmSocket(netns) as sock:
        rec = RecordingSocket(sock._sock, enobufs_once=True)
        sock._sock = rec
        sas = sock.dump_sas()
    assert {sa.spi for sa in sas} == {SPI_FALLBACK, SPI_CPU0, SPI_CPU1, SPI_IN}
    assert rec.sent == [XfrmMsg.GETSA, XfrmMsg.GETSA]


def test_watch_sees_policy_changes_acquire_and_expire(netns, writer):
    a, b = "192.0.2.1", "192.0.2.2"
    _ip("link", "add", "v0", "type", "veth", "peer", "name", "v1", netns=netns)
    _ip("addr", "add", "198.51.100.1/24", "dev", "v0", netns=netns)
    _ip("addr", "add", "192.0.2.1/24", "dev", "v0", netns=netns)
    _ip("link", "set", "v0", "up", netns=netns)
    _ip("link", "set", "v1", "up", netns=netns)
    _ip("route", "add", "203.0.113.0/24", "dev", "v0", netns=netns)
    with XfrmSocket(netns, groups=(XfrmGroup.ACQUIRE, XfrmGroup.POLICY, XfrmGroup.SA)) as sock:
        writer.add_policy("198.51.100.0/24", "203.0.113.0/24", dir=1,
                          flags=XFRM_POLICY_CPU_ACQUIRE, priority=100, tmpl_src=a, tmpl_dst=b,
                          reqid=5)
        # a packet that matches the outbound policy while no SA exists: the kernel asks for one
        subprocess.run(["ip", "netns", "exec", netns, "python3", "-c",
                        "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM);"
                        "s.bind(('198.51.100.1', 0));\n"
                        "try: s.sendto(b'x', ('203.0.113.5', 9))\nexcept OSError: pass"],
                       check=True)
        events = []
        for ev in sock.events(timeout=2.0):
            events.append(ev)
            if ev.kind == "acquire":
                break
    kinds = [e.kind for e in events]
    assert "newpolicy" in kinds and "acquire" in kinds, kinds
    newpol = next(e for e in events if e.kind == "newpolicy").policy
    assert newpol.cpu_acquire and newpol.priority == 100
    acq = next(e for e in events if e.kind == "acquire").acquire
    assert (acq.src, acq.dst, acq.proto) == (a, b, 50)
    assert acq.policy.cpu_acquire and acq.policy.dir == 1
    assert acq.templates and acq.templates[0].reqid == 5
    assert acq.selector.dst == "203.0.113.0" or acq.selector.dst == "203.0.113.5"
    assert acq.pcpu is None  # no SA at all yet: a plain acquire, not a per-CPU one


def test_ip_text_import_agrees_with_netlink_dump(netns, per_cpu_setup):
    """Differential: iproute2's text of the same kernel state, through our importer."""
    live = snapshot_from_kernel(netns)
    text = _ip("-s", "xfrm", "state", netns=netns) + _ip("xfrm", "policy", netns=netns)
    imported = parse_ip_xfrm(text, "ip-output")
    key = lambda s: (s.spi, s.src, s.dst, s.proto, s.reqid, s.mode, s.replay.oseq,  # noqa: E731
                     s.curlft.bytes, s.lifetime_cfg.hard_add_expires_seconds)
    assert sorted(map(key, imported.sas)) == sorted(map(key, live.sas))
    # iproute2 6.1 prints neither dir nor pcpu-num: only netlink has them
    if "pcpu-num" not in text:
        assert all(s.pcpu is None for s in imported.sas)
    pkey = lambda p: (p.dir, p.flags, p.priority, p.selector.src, p.selector.prefixlen_s,  # noqa: E731
                      p.selector.dst, p.selector.prefixlen_d,
                      tuple((t.src, t.dst, t.proto, t.reqid, t.mode) for t in p.templates))
    assert sorted(map(pkey, imported.policies)) == sorted(map(pkey, live.policies))
    stext = _ip("-s", "xfrm", "policy", netns=netns)
    sdetail = parse_ip_xfrm(stext, "ip-s-policy")
    assert sorted(p.index for p in sdetail.policies) == sorted(p.index for p in live.policies)


def test_cli_dump_json_contract(netns, per_cpu_setup, capsys):
    assert xfrm_main(["xfrm", "dump", "--netns", netns, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    sas = {s["spi"]: s for s in doc["sas"]}
    cpu0 = sas["c0000011"]
    for k in ("src", "dst", "spi", "proto", "reqid", "mode", "dir", "pcpu", "lifetime", "replay"):
        assert k in cpu0
    assert (cpu0["pcpu"], cpu0["dir"], cpu0["proto"], cpu0["reqid"]) == (0, 2, 50, 1)
    assert set(cpu0["lifetime"]) >= {"bytes", "packets"} and set(cpu0["replay"]) >= {"oseq", "seq"}
    assert sas["c0000010"]["pcpu"] is None
    out = next(p for p in doc["policies"] if p["dir"] == 1)
    assert out["flags"] == 4 and out["cpu_acquire"] is True
    assert set(out) >= {"dir", "flags", "index", "priority", "selector", "templates"}
    assert out["templates"][0]["dst"] == "192.0.2.2"
    assert doc["kernel"] == os.uname().release and doc["host_cpus"] == os.cpu_count()


def test_cli_dump_text(netns, per_cpu_setup, capsys):
    assert xfrm_main(["xfrm", "dump", "--netns", netns]) == 0
    out = capsys.readouterr().out
    assert "SAD: 4 SAs" in out and "c0000012" in out and "cpu-acquire" in out


def test_cli_snapshot_series(netns, per_cpu_setup, tmp_path):
    from analyzer.xfrm_state import load_series

    path = tmp_path / "series.jsonl"
    assert xfrm_main(["xfrm", "snapshot", "-o", str(path), "--netns", netns,
                      "--interval", "0.05", "--count", "3"]) == 0
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    series = load_series(path)
    assert [s.ts for s in series] == sorted(s.ts for s in series)
    assert all(len(s.sas) == 4 and s.netns == netns for s in series)


def test_cli_missing_netns_is_one_line(capsys):
    assert xfrm_main(["xfrm", "dump", "--netns", "msa-does-not-exist"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "msa-does-not-exist" in err and "Traceback" not in err


@pytest.mark.skipif(shutil.which("capsh") is None, reason="capsh is not installed (apt-get install libcap2-bin)")
@pytest.mark.parametrize("action", [["dump"], ["watch", "--duration", "0.5"]])
def test_without_cap_net_admin_says_so_in_one_line(action):
    import sys

    cmd = " ".join([sys.executable, "-m", "analyzer.xfrm_commands", "xfrm", *action])
    res = subprocess.run(["capsh", "--drop=cap_net_admin", "--", "-c", cmd], capture_output=True,
                         text=True, cwd=os.path.dirname(os.path.dirname(__file__)), timeout=60)
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "CAP_NET_ADMIN" in res.stderr
    assert "Traceback" not in res.stderr


def test_fast_dump_decoder_agrees_with_pyroute2_classes(netns, per_cpu_setup):
    """Differential: the dump fast path (``sa_from_bytes``) and pyroute2's generic codec give
    equal records for every SA the real kernel returns."""
    with XfrmSocket(netns) as sock:
        fast = sock.dump_sas()
        slow = sock.dump_sas(fast=False)
        assert sock.dump_restarts == 0
    assert len(fast) == 4
    assert sorted(fast, key=lambda s: s.spi) == sorted(slow, key=lambda s: s.spi)


def test_a_polling_socket_decodes_each_changed_sa_once(netns, per_cpu_setup, writer):
    """Polls on one socket (as `xfrm snapshot`, `export` and the live TUI poll) decode an
    SA's message only when it changed: an idle SA keeps its record; a new SA is decoded; the
    records equal a fresh socket's, and the memo holds the last dump only."""
    with XfrmSocket(netns) as sock, XfrmSocket(netns) as fresh:
        fresh.reuse = False
        first = sock.dump_sas()
        assert sock.decoded == 4
        again = sock.dump_sas()
        assert all(a is b for a, b in zip(first, again)) and sock.decoded == 4
        writer.allocspi("192.0.2.1", "192.0.2.9", reqid=9, spi_min=0xC0DE0001, spi_max=0xC0DE0001)
        now = sock.dump_sas()
        assert len(now) == 5 and sock.decoded == 5 and len(sock._sa_memo) == 5
        assert now == fresh.dump_sas()

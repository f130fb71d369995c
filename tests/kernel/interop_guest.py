"""Runs *inside* a Linux >= 6.13 guest (tests/kernel/interop.sh boots it): a real IKEv2
implementation from a cached Debian root (chroot) against the reference peer, or against a
second copy of itself, on the kernel's XFRM/ESP data path. Leaves the run's files in OUT.

    python3 -m tests.kernel.interop_guest strongswan6 --direction peer-initiates|charon-initiates|charon-pair
        --root ROOT --out OUT

Topology (guest-private): netns ``ch`` (charon, 192.0.2.2, protected 203.0.113.0/24) and
``ms`` (the reference peer, 192.0.2.1, 198.51.100.0/24; for ``charon-pair`` a second charon),
joined by veth ``v0``. charon runs chrooted in ROOT with a private /run (tmpfs), its own
strongswan.conf and vici socket; swanctl and sid's ``ip`` run chrooted too.

Files left in OUT: capture.pcap (dumpcap on the wire), ikev2_decryption_table and esp_sa
(charon's keys, written from its key log: Debian builds no save-keys plugin), charon.xfrm-sa.json
and peer.xfrm-sa.json (``multisa xfrm dump --json`` per netns, SAs kept), charon.ip-s-xfrm-state.txt
(sid's ``ip -s xfrm state``), swanctl-list-sas.txt, charon.log, peer.log (or charon2.log),
run.json (what ran: versions, CPUs, direction).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from analyzer.cli import main as cli_main

from .charon_keys import write_key_files
from .guestnet import sh, veth_pair

ROOT_DIR = Path(__file__).resolve().parents[2]
PSK = "multisa-interop-psk"
CH_ADDR, MS_ADDR = "192.0.2.2", "192.0.2.1"
CH_TS, MS_TS = "203.0.113.0/24", "198.51.100.0/24"
CH_HOST, MS_HOST = "203.0.113.1", "198.51.100.1"
NCPU = os.cpu_count() or 1
COUNT_BASE = 20
# swanctl reads strongswan.conf too: a minimal one (only the plugins swanctl needs, no noise)
SWANCTL_ENV = dict(os.environ, STRONGSWAN_CONF="/run/swanctl-strongswan.conf")

STRONGSWAN_CONF = """charon {{
  load_modular = no
  load = random nonce openssl pem pkcs1 x509 pubkey kernel-netlink socket-default vici
  install_routes = no
  retransmit_tries = 3
  plugins {{
    vici {{ socket = unix:///run/charon.vici }}
  }}
  filelog {{
    log {{ path = /run/charon.log
           time_format = %H:%M:%S
           ike_name = yes
           default = 1
           ike = 4
           chd = 4
           enc = 1
           flush_line = yes }}
  }}
}}
"""

SWANCTL_CONF = """connections {{
  gw {{
    local_addrs = {local}
    remote_addrs = {remote}
    version = 2
    encap = yes
    proposals = aes256gcm16-prfsha256-x25519
    local {{ auth = psk
             id = {local_id} }}
    remote {{ auth = psk
              id = {remote_id} }}
    children {{
      net {{ local_ts = {local_ts}
             remote_ts = {remote_ts}
             esp_proposals = aes256gcm16
             per_cpu_sas = yes
             start_action = {start} }}
    }}
  }}
}}
secrets {{
  ike-1 {{ id-1 = {local_id}
           id-2 = {remote_id}
           secret = "{psk}" }}
}}
"""

SENDER = """
import os, socket, sys, time
cpu, src, dst, n, gap = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
os.sched_setaffinity(0, {cpu})
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((src, 11000 + cpu))
for i in range(n):
    try:
        s.sendto(b"multisa interop cpu %d packet %d" % (cpu, i), (dst, 9))
    except OSError:
        pass  # the first packets raise the ACQUIRE and are dropped until the SA exists
    time.sleep(gap)
"""


def dump(ns: str) -> str:
    rc, text = multisa("xfrm", "dump", "--netns", ns, "--json")
    if rc != 0:
        raise SystemExit(f"interop: multisa xfrm dump --netns {ns} failed ({rc})")
    return text


def multisa(*argv: str) -> tuple[int, str]:
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli_main(list(argv))
    return rc, buf.getvalue()


class Charon:
    """charon 6.1 chrooted in ROOT, in netns ``ns``, with /run = ROOT/run/<name> (private)."""

    def __init__(self, root: Path, ns: str, name: str, conf: dict) -> None:
        self.root, self.ns, self.name = root, ns, name
        self.run = root / "run" / name
        self.run.mkdir(parents=True, exist_ok=True)
        (self.run / "strongswan.conf").write_text(STRONGSWAN_CONF.format())
        (root / "run" / "swanctl-strongswan.conf").write_text(
            "swanctl {\n  load = pem pkcs1 x509 pubkey openssl random\n}\n")
        (self.run / "swanctl.conf").write_text(SWANCTL_CONF.format(psk=PSK, **conf))
        env = dict(os.environ, STRONGSWAN_CONF="/run/strongswan.conf")
        script = (f"mount --bind {self.run} {root}/run && exec chroot {root} /usr/lib/ipsec/charon")
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private",
                                      "sh", "-c", script], env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(self.run / "charon.stderr", "w"), start_new_session=True)
        deadline = time.monotonic() + 30
        while not (self.run / "charon.vici").exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"interop: charon did not start in {ns}: {self.log()[-800:]}"
                                 f"{(self.run / 'charon.stderr').read_text()[-400:]}")
            time.sleep(0.2)
        out = self.swanctl("--load-all", "--file", f"/run/{name}/swanctl.conf")
        if "loaded connection 'gw'" not in out:
            raise SystemExit(f"interop: swanctl --load-all failed: {out.strip()[-500:]}")

    def chroot(self, *argv: str, timeout: float = 60, quiet: bool = False) -> str:
        """A command of the root in charon's netns; ``quiet``: its stdout only."""
        res = subprocess.run(["ip", "netns", "exec", self.ns, "chroot", str(self.root), *argv],
                             capture_output=True, text=True, timeout=timeout, env=SWANCTL_ENV)
        return res.stdout if quiet else res.stdout + res.stderr

    def swanctl(self, *args: str, timeout: float = 60) -> str:
        return self.chroot("swanctl", args[0], "--uri", f"unix:///run/{self.name}/charon.vici", *args[1:],
                           timeout=timeout)

    def log(self) -> str:
        p = self.run / "charon.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group we started (sh -> charon)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def send_from_every_cpu(ns: str, src: str, dst: str, counts: list[int], gap: float) -> None:
    """``counts[cpu]`` plain UDP packets from each CPU (one process pinned to it) to ``dst`` port 9."""
    procs = [subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", SENDER, str(cpu), src, dst,
                               str(n), str(gap)]) for cpu, n in enumerate(counts)]
    for p in procs:
        p.wait(timeout=120)


def udp_sink(ns: str, addr: str) -> subprocess.Popen:
    """Absorbs the other side's plain traffic to port 9 (no ICMP port unreachable through the SAs)."""
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c",
                             "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                             f"s.bind(({addr!r}, 9))\nwhile True: s.recv(2048)"], start_new_session=True)


def per_cpu_children(list_sas: str) -> set[int]:
    return {int(m) for m in re.findall(r"^\s+net: #\d+, reqid \d+, cpu (\d+), INSTALLED", list_sas, re.M)}


def wait_for(pred, timeout: float, step: float = 0.3) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def prepare_root(root: Path) -> None:
    """Guest-private mounts: the cached root stays untouched on the host."""
    sh("mount", "-t", "tmpfs", "tmpfs", str(root / "run"))
    sh("mount", "-t", "proc", "proc", str(root / "proc"))
    sh("mount", "--bind", "/dev", str(root / "dev"))
    sh("mount", "-t", "tmpfs", "tmpfs", str(root / "tmp"))


def peer_cmd(role: str, out: Path, duration: float) -> list[str]:
    common = ["--psk-file", str(out / "psk"), "--local-id", "multisa.multisa.test", "--remote-id",
              "charon.multisa.test", "--local-ts", MS_TS, "--remote-ts", CH_TS, "--resource-info",
              "--resources", str(NCPU), "--rate", "20", "--duration", str(duration), "--dataplane", "kernel",
              "--keep-sas", "--keys-dir", str(out / "peer-keys"), "--status-file", str(out / "peer-status.json"),
              "--lifetime", str(duration + 40), "-v"]
    if role == "initiator":
        return [sys.executable, "-m", "peer.cli", "peer", "initiator", "--connect", CH_ADDR, "--local", MS_ADDR,
                *common]
    return [sys.executable, "-m", "peer.cli", "peer", "responder", "--listen", MS_ADDR, "--once", *common]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="interop_guest")
    ap.add_argument("impl", choices=["strongswan6"])
    ap.add_argument("--direction", required=True, choices=["peer-initiates", "charon-initiates", "charon-pair"])
    ap.add_argument("--root", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--duration", type=float, default=4.0)
    a = ap.parse_args(argv)
    out, root = a.out.resolve(), a.root.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "psk").write_text(PSK + "\n")
    prepare_root(root)
    charons: list[Charon] = []
    peer = None
    hosts = (("ch", CH_ADDR, CH_HOST, MS_TS), ("ms", MS_ADDR, MS_HOST, CH_TS))
    info = {"direction": a.direction, "cpus": NCPU, "kernel": os.uname().release}
    sinks: list[subprocess.Popen] = []
    with veth_pair(*hosts):
        cap = subprocess.Popen(["ip", "netns", "exec", "ms", "dumpcap", "-q", "-P", "-i", "v0", "-w",
                                str(out / "capture.pcap"), "-f", f"host {CH_ADDR} and host {MS_ADDR}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: (out / "capture.pcap").exists(), 10, 0.1)
        time.sleep(0.5)
        sinks.append(udp_sink("ch", CH_HOST))
        try:
            charons.append(Charon(root, "ch", "c1", dict(
                local=CH_ADDR, remote=MS_ADDR, local_id="charon.multisa.test", remote_id="multisa.multisa.test",
                local_ts=CH_TS, remote_ts=MS_TS, start="trap")))
            if a.direction == "charon-pair":
                sinks.append(udp_sink("ms", MS_HOST))
                charons.append(Charon(root, "ms", "c2", dict(
                    local=MS_ADDR, remote=CH_ADDR, local_id="multisa.multisa.test",
                    remote_id="charon.multisa.test", local_ts=MS_TS, remote_ts=CH_TS, start="trap")))
            else:
                peer_log = open(out / "peer.log", "w")
                role = "initiator" if a.direction == "peer-initiates" else "responder"
                if role == "initiator":  # charon's trap policies must be in place first
                    time.sleep(0.5)
                peer = subprocess.Popen(["ip", "netns", "exec", "ms", *peer_cmd(role, out, a.duration)],
                                        cwd=ROOT_DIR, stdout=peer_log, stderr=subprocess.STDOUT)
                if not wait_for(lambda: "listening on" in (out / "peer.log").read_text(), 60):
                    raise SystemExit("interop: the reference peer did not start: "
                                     + (out / "peer.log").read_text()[-800:])
            c = charons[0]
            # phase 1: a few packets from every CPU of charon's side raise the per-CPU acquires
            # (charon initiates) or find charon's SAs; wait until charon has an SA per CPU
            ok = False
            for _ in range(6):
                send_from_every_cpu("ch", CH_HOST, MS_HOST, [3] * NCPU, 0.05)
                if wait_for(lambda: per_cpu_children(c.swanctl("--list-sas")) >= set(range(NCPU)), 8, 0.5):
                    ok = True
                    break
            info["per_cpu_sas_ready"] = ok
            time.sleep(0.5)
            # phase 2: an exact, different number of packets from each CPU; the dumps before and
            # after show which SA carried them
            counts = [COUNT_BASE + 7 * cpu for cpu in range(NCPU)]
            info["counted_packets"] = counts
            (out / "charon.before.xfrm-sa.json").write_text(dump("ch"))
            send_from_every_cpu("ch", CH_HOST, MS_HOST, counts, 0.02)
            time.sleep(0.5)
            if a.direction == "charon-pair":
                send_from_every_cpu("ms", MS_HOST, CH_HOST, [5] * NCPU, 0.05)
            elif a.direction == "peer-initiates":
                try:
                    peer.wait(timeout=a.duration + 45)
                except subprocess.TimeoutExpired:
                    pass
            time.sleep(0.3)
            (out / "swanctl-list-sas.txt").write_text(c.swanctl("--list-sas"))
            (out / "charon.ip-s-xfrm-state.txt").write_text(c.chroot("ip", "-s", "xfrm", "state", quiet=True))
            (out / "charon.ip-xfrm-policy.txt").write_text(c.chroot("ip", "xfrm", "policy", quiet=True))
            info["charon_version"] = c.chroot("dpkg-query", "-W", "strongswan-charon", quiet=True).strip()
            info["iproute2"] = c.chroot("ip", "-V", quiet=True).strip()
            (out / "charon.xfrm-sa.json").write_text(dump("ch"))
            (out / ("charon2.xfrm-sa.json" if a.direction == "charon-pair" else "peer.xfrm-sa.json")).write_text(
                dump("ms"))
            if a.direction != "peer-initiates":  # Delete exchanges on the wire, both answered
                info["terminate"] = c.swanctl("--terminate", "--ike", "gw", "--timeout", "20").strip()[-300:]
                if peer is not None:
                    try:
                        peer.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        pass
            time.sleep(0.5)
        finally:
            for c in charons:
                c.stop()
            if peer is not None:
                if peer.poll() is None:
                    peer.send_signal(signal.SIGINT)
                    peer.wait(timeout=10)
                info["peer_rc"] = peer.returncode
            for s_ in sinks:
                os.killpg(s_.pid, signal.SIGTERM)
                s_.wait(timeout=5)
            for i, c in enumerate(charons):
                shutil.copy(c.run / "charon.log", out / ("charon.log" if i == 0 else "charon2.log"))
            if cap.poll() is None:
                cap.send_signal(signal.SIGINT)
                cap.wait(timeout=10)
    info["keys"] = write_key_files(out / "charon.log", out, (out / "swanctl-list-sas.txt").read_text())
    (out / "run.json").write_text(json.dumps(info, indent=1) + "\n")
    print(f"interop: {a.impl} {a.direction}: files in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

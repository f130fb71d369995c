"""Interop: our reference peer against Debian's strongSwan (charon + swanctl, kernel-libipsec).

Both ways, in two network namespaces of our own joined by veth (192.0.2.1 = multisa,
192.0.2.2 = charon; protected 198.51.100.0/24 behind us, 203.0.113.0/24 behind charon), as
``../shared/interop-strongswan.md`` describes. charon 5.9.8 predates RFC 9611 and must ignore
SA_RESOURCE_INFO. Asserted: the SAs on both sides (``swanctl --list-sas``), ESP both ways, and
tshark decrypting the capture with the keys our peer exported.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peer.demo import delete_netns, make_netns, tshark_summary

ROOT = Path(__file__).resolve().parent.parent
CHARON = "/usr/lib/ipsec/charon"
PSK = "multisa-interop-psk"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(not os.path.exists(CHARON) or shutil.which("swanctl") is None,
                       reason="strongSwan is not installed (apt-get install strongswan-charon strongswan-swanctl "
                              "libcharon-extra-plugins libstrongswan-extra-plugins)"),
    pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed"),
    pytest.mark.skipif(not os.path.exists("/dev/net/tun"), reason="/dev/net/tun is missing (kernel-libipsec)"),
]

STRONGSWAN_CONF = """charon {{
  load_modular = no
  load = random nonce openssl aes sha1 sha2 hmac gcm ctr chapoly curve25519 gmp kdf pem pkcs1 x509 pubkey socket-default kernel-libipsec kernel-netlink vici
  install_virtual_ip = no
  retransmit_tries = 3
  plugins {{
    vici {{ socket = unix://{d}/charon.vici }}
  }}
  filelog {{
    log {{ path = {d}/charon.log
           default = 1
           flush_line = yes
           ike = 2 }}
  }}
}}
"""

SWANCTL_CONF = """connections {{
  gw {{
    local_addrs = 192.0.2.2
    remote_addrs = 192.0.2.1
    version = 2
    encap = yes
    proposals = aes256gcm16-prfsha256-x25519
    local {{ auth = psk
             id = charon.multisa.test }}
    remote {{ auth = psk
              id = multisa.multisa.test }}
    children {{
      net {{ local_ts = 203.0.113.0/24
             remote_ts = 198.51.100.0/24
             esp_proposals = aes256gcm16
             start_action = none }}
    }}
  }}
}}
secrets {{
  ike-1 {{ id-1 = charon.multisa.test
           id-2 = multisa.multisa.test
           secret = "{psk}" }}
}}
"""


class Charon:
    def __init__(self, ns: str, d: Path) -> None:
        self.ns, self.d = ns, d
        (d / "strongswan.conf").write_text(STRONGSWAN_CONF.format(d=d))
        (d / "swanctl.conf").write_text(SWANCTL_CONF.format(psk=PSK))
        env = dict(os.environ, STRONGSWAN_CONF=str(d / "strongswan.conf"))
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs tmpfs /run && exec {CHARON}"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while not (d / "charon.vici").exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"charon did not start: {self.log()[-500:]}")
            time.sleep(0.2)
        out = self.swanctl("--load-all", "--file", str(d / "swanctl.conf"))
        assert "loaded connection 'gw'" in out, out

    def swanctl(self, *args: str, timeout: float = 30) -> str:
        res = subprocess.run(["ip", "netns", "exec", self.ns, "swanctl", args[0], "--uri",
                              f"unix://{self.d}/charon.vici", *args[1:]], capture_output=True, text=True,
                             timeout=timeout)
        return res.stdout + res.stderr

    def log(self) -> str:
        p = self.d / "charon.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group we started (sh -> charon)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


@pytest.fixture
def lab(tmp_path):
    topo = make_netns(f"{os.getpid() % 10000}s")
    ours, theirs = topo.init_ns, topo.resp_ns
    subprocess.run(["ip", "-n", theirs, "addr", "add", "203.0.113.1/24", "dev", "lo"], check=True)
    cap = subprocess.Popen(["ip", "netns", "exec", ours, "dumpcap", "-q", "-i", f"msa{os.getpid() % 10000}sa",
                            "-w", str(tmp_path / "capture.pcapng"), "-f", "udp"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    charon = None
    try:
        charon = Charon(theirs, tmp_path)
        yield ours, theirs, charon, tmp_path
    finally:
        if charon is not None:
            charon.stop()
        if cap.poll() is None:
            cap.send_signal(signal.SIGINT)
            cap.wait(timeout=5)
        delete_netns(ours, theirs)


def ping_from_charon(theirs: str, count: int = 5) -> None:
    subprocess.run(["ip", "netns", "exec", theirs, "ping", "-c", str(count), "-i", "0.2", "-W", "1",
                    "-I", "203.0.113.1", "198.51.100.1"], capture_output=True, timeout=30)


def our_peer(ours: str, role: str, args: list[str], tmp: Path) -> subprocess.Popen:
    (tmp / "psk").write_text(PSK)
    return subprocess.Popen(["ip", "netns", "exec", ours, sys.executable, "-m", "peer.cli", "peer", role,
                             "--psk-file", str(tmp / "psk"), "--local-id", "multisa.multisa.test",
                             "--remote-id", "charon.multisa.test", "--local-ts", "198.51.100.0/24",
                             "--remote-ts", "203.0.113.0/24", "--keys-dir", str(tmp / "keys"),
                             "--status-file", str(tmp / "status.json"), "-v", *args],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def child_count(list_sas: str) -> int:
    return len(re.findall(r"^\s+net: #\d+", list_sas, re.M))


def test_our_initiator_against_charon_responder(lab):
    ours, theirs, charon, tmp = lab
    p = our_peer(ours, "initiator", ["--connect", "192.0.2.2", "--local", "192.0.2.1", "--resource-info",
                                     "--resources", "3", "--rekey-child-after", "2", "--duration", "6",
                                     "--rate", "20", "--lifetime", "40"], tmp)
    time.sleep(3.5)
    sas = charon.swanctl("--list-sas")
    ping_from_charon(theirs, 5)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0, err + charon.log()[-2000:]
    assert "ESTABLISHED" in sas
    assert child_count(sas) >= 4, sas  # initial + 3 additional with identical TS (one may be mid-rekey)
    assert sas.count("local  203.0.113.0/24") == sas.count("remote 198.51.100.0/24") == child_count(sas)
    st = json.loads((tmp / "status.json").read_text())
    outs = [s for s in st["sas"] if s["dir"] == "out"]
    assert len([s for s in outs if not s["fallback"]]) >= 4  # 3 per-resource + 1 rekeyed
    assert any(s["rekey_of"] for s in outs)
    assert sum(s["curlft"]["packets"] for s in outs) > 50  # ESP to charon
    assert sum(s["curlft"]["packets"] for s in st["sas"] if s["dir"] == "in") >= 3  # ESP from charon
    assert all(s["stats"]["integrity_failed"] == 0 for s in st["sas"] if s["dir"] == "in")
    assert "ESTABLISHED" not in charon.swanctl("--list-sas")  # our deletes were honoured
    assert "received DELETE for IKE_SA" in charon.log()
    # charon received SA_RESOURCE_INFO (an unknown status notify to 5.9.8) and ignored it
    assert "N((16444))" in charon.log() and "did not answer SA_RESOURCE_INFO" in err
    _check_tshark(tmp, min_esp=50)


def test_charon_initiator_against_our_responder(lab):
    ours, theirs, charon, tmp = lab
    p = our_peer(ours, "responder", ["--listen", "192.0.2.1", "--resource-info", "--resources", "2",
                                     "--duration", "5", "--rate", "20", "--lifetime", "25", "--once"], tmp)
    time.sleep(1.0)
    out = charon.swanctl("--initiate", "--child", "net", "--timeout", "15")
    assert "initiate completed successfully" in out, out + charon.log()[-2000:]
    ping_from_charon(theirs, 5)
    time.sleep(1.0)
    sas = charon.swanctl("--list-sas")
    assert "ESTABLISHED" in sas and child_count(sas) == 1
    m = re.search(r"^\s+in\s+[0-9a-f]{8}(?:\s*\([^)]*\))?,\s+(\d+) bytes,\s+(\d+) packets", sas, re.M)
    assert m and int(m.group(2)) > 0, sas  # our ESP reached charon and decrypted
    charon.swanctl("--terminate", "--ike", "gw", "--timeout", "10")
    _, err = p.communicate(timeout=30)
    assert p.returncode == 0, err
    st = json.loads((tmp / "status.json").read_text())
    assert sum(s["curlft"]["packets"] for s in st["sas"] if s["dir"] == "in") >= 3  # charon's pings
    _check_tshark(tmp, min_esp=20)


def _check_tshark(tmp: Path, min_esp: int) -> None:
    time.sleep(0.5)
    s = tshark_summary(str(tmp / "capture.pcapng"), str(tmp / "keys"))
    assert s.ike_decrypted >= s.ike - 2 > 0, s
    assert s.esp >= min_esp and s.esp_decrypted == s.esp, s

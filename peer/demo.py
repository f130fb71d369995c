"""``multisa peer demo``: a responder and an initiator, captured, with the keys beside the capture.

As root (and unless ``--loopback``) the two peers run in two network namespaces of our own,
joined by a veth pair with documentation addresses (192.0.2.1 initiator, 192.0.2.2 responder);
otherwise both run on loopback addresses 127.77.N.1/2. dumpcap (or tshark) writes
DIR/capture.pcapng; the initiator writes DIR/ikev2_decryption_table and DIR/esp_sa; both write
their JSON status. Everything is bounded in time and cleaned up: processes by PID, namespaces
by name. ``tshark_summary`` decrypts a capture with the exported keys (used by the tests).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .faults import FAULTS

PSK = "multisa-demo-psk"

#: What a fault needs around it to show (``--fault NAME`` alone reproduces its rule): a
#: refusal needs requests beyond the responder's limit, MS305 a group past 64 SAs. Used for
#: the settings the caller left at their defaults (the samples in peer/samples.py are the same).
FAULT_SCENARIOS: dict[str, dict] = {
    "no-additional-sas": {"max_per_ts": 2, "extra_requests": 1},
    "ts-max-queue-data": {"resources": 1, "max_per_ts": 1, "extra_requests": 1,
                          "init_args": ["--extra-ids", "reuse"]},
    "no-ts-limit": {"extra_requests": 63},
}
INITIATOR_TS, RESPONDER_TS = "198.51.100.0/24", "203.0.113.0/24"


@dataclass
class Topology:
    netns: bool
    init_addr: str
    resp_addr: str
    init_ns: str = ""
    resp_ns: str = ""
    iface: str = "lo"

    def prefix(self, ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns] if self.netns else []


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def make_netns(tag: str) -> Topology:
    """Two namespaces joined by veth, documentation addresses only (RFC 5737)."""
    ni, nr = f"msa{tag}i", f"msa{tag}r"
    vi, vr = f"msa{tag}a", f"msa{tag}b"
    try:
        _sh("ip", "netns", "add", ni)
        _sh("ip", "netns", "add", nr)
        _sh("ip", "link", "add", vi, "netns", ni, "type", "veth", "peer", "name", vr, "netns", nr)
        for ns, dev, addr in ((ni, vi, "192.0.2.1/24"), (nr, vr, "192.0.2.2/24")):
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            _sh("ip", "-n", ns, "link", "set", dev, "up")
    except (subprocess.CalledProcessError, FileNotFoundError):
        delete_netns(ni, nr)
        raise
    return Topology(True, "192.0.2.1", "192.0.2.2", ni, nr, vr)


def delete_netns(*names: str) -> None:
    for n in names:
        if n:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def _stop(proc: subprocess.Popen | None, sig=signal.SIGTERM, wait: float = 5.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)  # by PID: only processes this demo started
    try:
        proc.wait(timeout=wait)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=2)


def _peer_cmd(role: str, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "peer.cli", "peer", role, *args]


def _capture_tool() -> str | None:
    return shutil.which("dumpcap") or shutil.which("tshark")


def run_demo(out: str, resources: int | None = None, faults: list[str] | None = None, duration: float = 3.0,
             rate: float = 20.0, loopback: bool = False, log=print, max_per_ts: int = 0,
             extra_requests: int | None = None, init_args: list[str] | tuple = (),
             resp_args: list[str] | tuple = ()) -> int:
    """One run; the responder's per-TS limit is ``max_per_ts`` (default twice ``resources``, RFC
    9611 §6). The initiator creates the per-resource SAs, rekeys resource 0's SA at half time and
    the IKE SA at 70 % (§2.18), then deletes everything. ``init_args``/``resp_args``: more flags.
    A fault's scenario (FAULT_SCENARIOS) fills the settings left at None/0."""
    faults = list(faults or [])
    for f in faults:
        if f not in FAULTS:
            print(f"multisa: error: unknown fault {f!r} (see `multisa peer faults`)", file=sys.stderr)
            return 2
    for f in faults:
        scenario = FAULT_SCENARIOS.get(f, {})
        resources = scenario.get("resources", 2) if resources is None else resources
        max_per_ts = max_per_ts or scenario.get("max_per_ts", 0)
        extra_requests = scenario.get("extra_requests", 0) if extra_requests is None else extra_requests
        if "init_args" in scenario and not init_args:
            init_args = list(scenario["init_args"])
    resources = 2 if resources is None else resources
    extra_requests = extra_requests or 0
    max_per_ts = max_per_ts or 2 * resources
    outdir = Path(out)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        probe = outdir / ".multisa-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        print(f"multisa: error: {out}: cannot write there: {err.strerror or err}", file=sys.stderr)
        return 2
    for name in ("ikev2_decryption_table", "esp_sa", "capture.pcapng"):
        (outdir / name).unlink(missing_ok=True)
    tool = _capture_tool()
    if tool is None:
        print("multisa: error: demo needs dumpcap or tshark to capture (apt-get install tshark)", file=sys.stderr)
        return 2
    tag = f"{os.getpid() % 100000}"
    use_netns = os.geteuid() == 0 and not loopback and shutil.which("ip") is not None
    work = Path(tempfile.mkdtemp(prefix="multisa-demo-"))
    topo = None
    procs: list[subprocess.Popen] = []
    try:
        if use_netns:
            topo = make_netns(tag)
        else:
            n = os.getpid() % 250 + 1
            topo = Topology(False, f"127.77.{n}.1", f"127.77.{n}.2")
        (work / "psk").write_text(PSK + "\n")
        cap_cmd = [*topo.prefix(topo.resp_ns), tool, "-q", "-i", topo.iface, "-w", str(outdir / "capture.pcapng"),
                   "-f", f"udp and host {topo.resp_addr} and host {topo.init_addr}"]
        if os.path.basename(tool) == "tshark":
            cap_cmd.insert(len(topo.prefix(topo.resp_ns)) + 1, "-F")
            cap_cmd.insert(len(topo.prefix(topo.resp_ns)) + 2, "pcapng")
        capture = subprocess.Popen(cap_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(capture)
        _wait_capture_ready(capture, outdir / "capture.pcapng")

        side = {f: FAULTS[f].side for f in faults}
        resp_faults = [f for f in faults if side[f] in ("responder", "both")]
        init_faults = [f for f in faults if side[f] in ("initiator", "both")]
        common = ["--psk-file", str(work / "psk"), "--resource-info", "--rate", str(rate),
                  "--duration", str(duration), "--resources", str(resources)]
        lifetime = str(duration * 4 + 20)
        resp = subprocess.Popen(
            topo.prefix(topo.resp_ns) + _peer_cmd("responder", [
                "--listen", topo.resp_addr, "--once", "--local-id", "responder.multisa.test",
                "--local-ts", RESPONDER_TS, "--remote-ts", INITIATOR_TS, "--max-per-ts", str(max_per_ts),
                "--keys-dir", str(work / "responder-keys"), "--status-file", str(outdir / "responder-status.json"),
                "--lifetime", lifetime, *common, *sum((["--fault", f] for f in resp_faults), []), *resp_args]),
            cwd=_project_root(), stdout=subprocess.DEVNULL, stderr=open(outdir / "responder.log", "w"))
        procs.append(resp)
        time.sleep(0.5)
        init = subprocess.Popen(
            topo.prefix(topo.init_ns) + _peer_cmd("initiator", [
                "--connect", topo.resp_addr, "--local", topo.init_addr, "--local-id", "initiator.multisa.test",
                "--local-ts", INITIATOR_TS, "--remote-ts", RESPONDER_TS, "--extra-requests", str(extra_requests),
                "--rekey-child-after", str(round(duration * 0.5, 3)),
                "--rekey-ike-after", str(round(duration * 0.7, 3)), "--keys-dir", str(outdir),
                "--status-file", str(outdir / "initiator-status.json"), "--lifetime", lifetime, *common,
                *sum((["--fault", f] for f in init_faults), []), *init_args]),
            cwd=_project_root(), stdout=subprocess.DEVNULL, stderr=open(outdir / "initiator.log", "w"))
        procs.append(init)
        try:
            rc = init.wait(timeout=float(lifetime) + 5)
        except subprocess.TimeoutExpired:
            rc = 1
        try:
            resp.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        time.sleep(0.5)
        _stop(capture, signal.SIGINT)
        err = capture.stderr.read().decode(errors="replace").strip() if capture.stderr else ""
        if not (outdir / "capture.pcapng").exists():
            print(f"multisa: error: capture failed: {err.splitlines()[-1] if err else 'no file'}", file=sys.stderr)
            return 2
        log(f"demo: {'netns' if topo.netns else 'loopback'}, initiator exit {rc}; wrote {outdir}/capture.pcapng, "
            f"ikev2_decryption_table, esp_sa, initiator-status.json, responder-status.json")
        return 0 if rc == 0 else 1
    finally:
        for p in reversed(procs):
            _stop(p)
        if topo is not None and topo.netns:
            delete_netns(topo.init_ns, topo.resp_ns)
        shutil.rmtree(work, ignore_errors=True)


def _wait_capture_ready(proc: subprocess.Popen, path: Path | None = None) -> None:
    """dumpcap prints nothing with -q: wait until it has written the file's header (it has
    opened the interface then), at most 10 s on a busy machine, and a moment more."""
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and proc.poll() is None:
        if path is not None and path.exists() and path.stat().st_size > 0:
            break
        time.sleep(0.05)
    time.sleep(0.3)


def _project_root() -> str:
    return str(Path(__file__).resolve().parent.parent)


@dataclass
class TsharkSummary:
    frames: int = 0
    ike: int = 0
    ike_decrypted: int = 0  # IKE messages whose SK payload tshark decrypted
    notify_types: dict[int, int] = field(default_factory=dict)  # incl. decrypted ones
    esp: int = 0
    esp_decrypted: int = 0  # ESP packets with a decrypted inner IP header
    esp_spis: dict[str, int] = field(default_factory=dict)


def tshark_summary(capture: str, keys_dir: str) -> TsharkSummary:
    """Decrypt ``capture`` with tshark and the key files in ``keys_dir``."""
    with tempfile.TemporaryDirectory(prefix="multisa-ws-") as conf:
        for name in ("ikev2_decryption_table", "esp_sa"):
            src = Path(keys_dir) / name
            if src.exists():
                shutil.copy(src, Path(conf) / name)
        (Path(conf) / "preferences").write_text("esp.enable_encryption_decode: TRUE\n")
        env = dict(os.environ, WIRESHARK_CONFIG_DIR=conf)
        res = subprocess.run(["tshark", "-n", "-r", capture, "-T", "fields",
                              "-E", "separator=|", "-e", "frame.protocols", "-e", "isakmp.notify.msgtype",
                              "-e", "esp.spi", "-e", "isakmp.exchangetype", "-e", "isakmp.enc.decrypted"],
                             capture_output=True, text=True, env=env, timeout=120)
    s = TsharkSummary()
    for line in res.stdout.splitlines():
        protos, notifies, spi, exch, decrypted = (line.split("|") + ["", "", "", "", ""])[:5]
        s.frames += 1
        if "isakmp" in protos:
            s.ike += 1
            if decrypted:
                s.ike_decrypted += 1
            if notifies:
                for n in notifies.split(","):
                    s.notify_types[int(n)] = s.notify_types.get(int(n), 0) + 1
        if "esp" in protos:
            s.esp += 1
            s.esp_spis[spi] = s.esp_spis.get(spi, 0) + 1
            if protos.count(":ip:") >= 2 or protos.endswith("esp:ip:udp") or ":esp:ip" in protos:
                s.esp_decrypted += 1
    return s


def summary_json(s: TsharkSummary) -> str:
    return json.dumps(s.__dict__, indent=1)

"""XFRM netlink at scale: dump 100,000 SAs, poll 10,000 SAs at 1 Hz (issue 6, item 7).

    sudo python3 benchmarks/xfrm_bench.py [--dump-sas 100000] [--poll-sas 10000]
                                          [--poll-seconds 30] [--real-sas 3000] [--json]

Needs root (a throw-away network namespace). The host kernel needs XFRM netlink, not ESP:
the SAs are larval (XFRM_MSG_ALLOCSPI, as tests/kernel/writer.py makes them), three per
reqid like a per-CPU group on a 2-CPU host (one without SA_PCPU, one on CPU 0, one on CPU 1),
one peer address per group (198.18.0.0/15, never sent to: the namespace has no route),
and ``net.core.xfrm_acq_expires`` is raised in the namespace so they outlive the run. The
product only reads; the SAs are written by this script through the test writer's classes.

Each measurement runs in a fresh child process, so its peak RSS is its own:

* dump: one ``XfrmSocket.dump_sas()`` of the whole SAD (multipart replies until NLMSG_DONE;
  restarts on ENOBUFS / NLM_F_DUMP_INTR are counted), wall and CPU time, peak RSS;
* poll: ``snapshot_from_kernel`` (SAs + policies) once a second for ``--poll-seconds`` on one
  socket, as ``multisa xfrm snapshot``, ``multisa export`` and the live TUI do; CPU per poll as
  a share of one core, RSS after the first poll and at the end (bounded: it must not grow);
* poll-changed: the same with every SA's message decoded every second (``XfrmSocket.reuse``
  off), as when every SA's counters move between two polls: the busy case, and the one the
  target is held to (larval SAs never move, and this kernel has no ESP to move them);
* snapshot-json: poll-changed plus what ``multisa xfrm snapshot`` adds per sample (the JSON
  line of every SA and policy);
* export: one scrape of ``multisa export``'s collector (dump + exposition of every SA, every
  SA decoded), and one with ``--no-per-sa``; CPU per scrape, and its share of a core at a
  15 s scrape interval (Prometheus' usual; its default is 60 s);
* real SAs (``--real-sas N``, when sid's user-mode-linux is in the cache, see
  tests/kernel/fetch.sh): larval SAs carry no algorithm, replay or encap attributes, so
  ``xfrm_guest_sas.py`` installs N valid ESP SAs (a key, SA_DIR, SA_PCPU, ENCAP) in a
  >= 6.13 guest and records the kernel's dump of them; the host decodes that recording
  through ``XfrmSocket.dump_sas`` (its socket reads replaced by the recording): microseconds
  per SA, every SA decoded, against the same figure for the larval SAs.

Targets (README): poll of 10,000 SAs at 1 Hz under 10 % of one core; memory bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from xfrm_guest_sas import record_dump  # beside this file

A = "192.0.2.1"  # the host; peers are 198.18.0.0/15 (benchmark range), data only: no traffic
BATCH = 256


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fill(netns: str, first: int, last: int) -> float:
    """ALLOCSPI larval SAs number ``first`` .. ``last - 1`` into ``netns`` (distinct SPIs,
    three per reqid), BATCH requests per send; seconds taken."""
    from pyroute2 import netns as pr2netns
    from pyroute2.netlink import NLM_F_REQUEST, NLMSG_ERROR

    from dissectors.xfrm import (
        NETLINK_XFRM,
        XFRM_INF,
        XfrmMsg,
        parse_messages,
        xfrm_userspi_info,
    )

    def a(text):
        return socket.inet_aton(text).ljust(16, b"\0")

    sock = pr2netns.create_socket(netns=f"/run/netns/{netns}", family=socket.AF_NETLINK,
                                  socket_type=socket.SOCK_RAW, proto=NETLINK_XFRM, flags=0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((0, 0))
    start = time.perf_counter()
    seq = 0
    spi_base = 0xC1000000
    try:
        for lo in range(first, last, BATCH):
            buf = bytearray()
            n = min(BATCH, last - lo)
            for i in range(lo, lo + n):
                seq += 1
                m = xfrm_userspi_info()
                g = i // 3  # one peer address per group: the kernel hashes larval SAs by
                # address pair, and 100,000 SAs between one pair make every ALLOCSPI O(n)
                m["info_id_daddr"], m["info_id_proto"] = a(f"198.18.{g >> 8 & 0xFF}.{g & 0xFF}"
                                                           if g < 65536 else f"198.19.{g >> 8 & 0xFF}.{g & 0xFF}"), 50
                m["info_saddr"], m["info_family"], m["info_mode"] = a(A), socket.AF_INET, 1
                m["info_reqid"] = i // 3 + 1
                for k in ("soft_byte_limit", "hard_byte_limit", "soft_packet_limit",
                          "hard_packet_limit"):
                    m["info_lft_" + k] = XFRM_INF
                m["min"] = m["max"] = spi_base + i
                pcpu = (None, 0, 1)[i % 3]
                m["attrs"] = [("XFRMA_SA_DIR", 2)] + ([("XFRMA_SA_PCPU", pcpu)] if pcpu is not None else [])
                m["header"] = {"type": XfrmMsg.ALLOCSPI, "flags": NLM_F_REQUEST, "sequence_number": seq}
                m.encode()
                buf += m.data
            sock.send(bytes(buf))
            got = 0
            while got < n:
                for hdr, _msg in parse_messages(sock.recv(1 << 20)):
                    if hdr["type"] == NLMSG_ERROR and hdr.get("error"):
                        raise OSError(hdr["error"], os.strerror(hdr["error"]))
                    got += 1
    finally:
        sock.close()
    return time.perf_counter() - start


def child_dump(netns: str) -> dict:
    from dissectors.xfrm import XfrmSocket

    base = _rss_mb()
    with XfrmSocket(netns) as sock:
        c0, w0 = time.process_time(), time.perf_counter()
        sas = sock.dump_sas()
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        restarts = getattr(sock, "dump_restarts", 0)
    return {"sas": len(sas), "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "sas_per_s": round(len(sas) / wall), "restarts": restarts,
            "rss_before_mb": round(base, 1), "peak_rss_mb": round(_peak_mb(), 1),
            "pcpu_sas": sum(s.pcpu is not None for s in sas)}


SCRAPE_INTERVAL = 15.0  # seconds: Prometheus' usual scrape interval (its default is 60 s)


def child_poll(netns: str, seconds: float, kind: str) -> dict:
    """``kind``: poll, poll-changed, snapshot-json, export, export-no-per-sa."""
    from analyzer.xfrm_state import SampleJsonWriter, snapshot_from_kernel
    from dissectors.xfrm import XfrmSocket

    export = kind.startswith("export")
    reuse = kind == "poll"
    if export:
        from prometheus_client import generate_latest
        from prometheus_client.registry import CollectorRegistry

        from analyzer.exporter import XfrmCollector

        collector = XfrmCollector(netns, per_sa=kind == "export")
        collector._sock.reuse = False
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
    writer = SampleJsonWriter()  # as `multisa xfrm snapshot` writes its lines
    polls, cpu_per_poll, rss = 0, [], []
    size = 0
    with XfrmSocket(netns) as sock:
        sock.reuse = reuse
        start = time.monotonic()
        next_at = start
        while time.monotonic() - start < seconds:
            c0 = time.process_time()
            if export:
                size = len(generate_latest(registry))
            else:
                snap = snapshot_from_kernel(netns, sock)
                size = len(snap.sas)
                if kind == "snapshot-json":
                    size = len(writer.line(snap))
                del snap
            cpu_per_poll.append(time.process_time() - c0)
            rss.append(_rss_mb())
            polls += 1
            next_at += 1.0
            time.sleep(max(0.0, next_at - time.monotonic()))
        elapsed = time.monotonic() - start
    if export:
        collector.close()
    total_cpu = sum(cpu_per_poll)
    return {"polls": polls, "seconds": round(elapsed, 1), "what": size,
            "scrape_share_pct": round(100 * total_cpu / polls / SCRAPE_INTERVAL, 2),
            "cpu_per_poll_ms": round(1000 * total_cpu / polls, 1),
            "max_cpu_per_poll_ms": round(1000 * max(cpu_per_poll), 1),
            "core_share_pct": round(100 * total_cpu / elapsed, 2),
            "rss_after_first_mb": round(rss[0], 1), "rss_mid_mb": round(rss[len(rss) // 2], 1),
            "rss_end_mb": round(rss[-1], 1),
            "rss_max_mb": round(max(rss), 1),
            "decoded": collector._sock.decoded if export else sock.decoded}


def _child(*args: str) -> dict:
    res = subprocess.run([sys.executable, __file__, "--child", *args], check=False, capture_output=True,
                         text=True, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"xfrm_bench: child {args} failed: {res.stderr.strip().splitlines()[-1:]}")
    return json.loads(res.stdout)


class Netns:
    def __init__(self):
        self.name = f"msa-bench-{uuid.uuid4().hex[:6]}"

    def __enter__(self):
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "netns", "exec", self.name, "sysctl", "-qw",
                        "net.core.xfrm_acq_expires=3600"], check=True)
        return self.name

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "del", self.name], check=False)


def _decode_us_per_sa(datagrams: list[bytes], seq: int, rounds: int = 30) -> tuple[int, float]:
    """Decode a recorded GETSA dump ``rounds`` times through ``XfrmSocket.dump_sas`` (every SA
    decoded); the best round's microseconds per SA."""
    from dissectors.xfrm import XfrmSocket

    class RecordedDump(XfrmSocket):
        reuse = False

        def _send(self, msg_type, flags, body=b""):
            self._replay = iter(datagrams)
            return seq

        def _recv(self):
            return next(self._replay)

    best = float("inf")
    with RecordedDump() as sock:
        for _ in range(rounds):
            c0 = time.process_time()
            n = len(sock.dump_sas())
            best = min(best, time.process_time() - c0)
    return n, round(best / n * 1e6, 2)


def child_decode(path: str) -> dict:
    """Real SAs: the guest's recording; larval SAs: this host's dump, recorded the same way."""
    datagrams, data = [], Path(path).read_bytes()
    pos = 0
    while pos < len(data):
        size = int.from_bytes(data[pos:pos + 4], "little")
        datagrams.append(data[pos + 4:pos + 4 + size])
        pos += 4 + size
    meta = json.loads(Path(path + ".json").read_text())
    n, us = _decode_us_per_sa(datagrams, meta["seq"])
    return {**meta, "sas": n, "us_per_sa": us}


def decode_costs(real_sas: int, larval_ns: str) -> dict:
    """Decode cost per SA of this host's larval SAs and of ``real_sas`` real ESP SAs recorded
    in sid's user-mode-linux >= 6.13 (skipped, with uml-run.sh's reason, when it is not in
    the cache), both decoded here in a child process."""
    with tempfile.TemporaryDirectory(prefix="multisa-xfrm-bench-") as tmp:
        larval = os.path.join(tmp, "larval.dump")
        Path(larval + ".json").write_text(json.dumps(record_dump(larval_ns, larval)))
        out = {"larval": _child("decode", larval)}
        if real_sas <= 0:
            out["real"] = {"skipped": "--real-sas 0"}
            return out
        real = os.path.join(tmp, "real.dump")  # the guest's SAs' keys: removed with tmp
        res = subprocess.run([str(ROOT / "tests/kernel/uml-run.sh"), "--kernel", "uml613", "--mem", "1G",
                              "--", sys.executable, str(ROOT / "benchmarks/xfrm_guest_sas.py"), str(real_sas), real],
                             cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)
        meta = next((line for line in res.stdout.splitlines() if line.startswith("{")), None)
        if meta is None:
            why = (res.stderr.strip() or res.stdout.strip())[-300:]
            out["real"] = {"skipped": f"guest failed (status {res.returncode}): {why}"}
        else:
            Path(real + ".json").write_text(meta)
            out["real"] = _child("decode", real)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dump-sas", type=int, default=100_000)
    ap.add_argument("--poll-sas", type=int, default=10_000)
    ap.add_argument("--poll-seconds", type=float, default=30.0)
    ap.add_argument("--real-sas", type=int, default=3000,
                    help="valid ESP SAs for the decode measurement in a >= 6.13 UML guest (0: skip)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, netns = args.child[0], args.child[1]
        if kind == "decode":
            out = child_decode(netns)
        elif kind == "dump":
            out = child_dump(netns)
        else:
            out = child_poll(netns, float(args.child[2]), kind)
        print(json.dumps(out))
        return 0
    if os.geteuid() != 0:
        print("xfrm_bench: needs root (creates a network namespace)", file=sys.stderr)
        return 2
    results = {"kernel": os.uname().release, "cpus": os.cpu_count()}
    with Netns() as ns:
        results["fill_poll_s"] = round(fill(ns, 0, args.poll_sas), 2)
        for kind in ("poll", "poll-changed", "snapshot-json", "export", "export-no-per-sa"):
            results[kind.replace("-", "_")] = _child(kind, ns, str(args.poll_seconds))
        results["decode"] = decode_costs(args.real_sas, ns)
        results["dump_10k"] = _child("dump", ns)
        if args.dump_sas > args.poll_sas:
            results["fill_dump_s"] = round(fill(ns, args.poll_sas, args.dump_sas), 2)
            results["dump"] = _child("dump", ns)
        else:
            results["fill_dump_s"], results["dump"] = 0.0, results["dump_10k"]
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        _report(results, args)
    return 0


def _report(r: dict, args) -> None:
    p, e, d, d10 = r["poll"], r["export"], r["dump"], r["dump_10k"]
    print(f"kernel {r['kernel']}, {r['cpus']} CPUs; larval SAs, 3 per reqid (fallback, CPU 0, CPU 1)")
    print(f"fill: {args.poll_sas} SAs in {r['fill_poll_s']} s, then up to {args.dump_sas} in "
          f"{r['fill_dump_s']} s more (ALLOCSPI, {BATCH} per send)")
    for name, x in (("dump 10k", d10), ("dump", d)):
        print(f"{name}: {x['sas']} SAs in {x['wall_s']} s wall / {x['cpu_s']} s CPU "
              f"({x['sas_per_s']} SAs/s), {x['restarts']} restart(s), peak RSS {x['peak_rss_mb']} MB "
              f"(interpreter+imports {x['rss_before_mb']} MB)")
    for name, x in (("poll 1 Hz, idle SAs", p),
                    ("poll 1 Hz, every SA changed (decoded)", r["poll_changed"]),
                    ("xfrm snapshot 1 Hz, every SA changed, + JSON lines", r["snapshot_json"])):
        print(f"{name}: {x['polls']} polls of {args.poll_sas} SAs in {x['seconds']} s: "
              f"{x['cpu_per_poll_ms']} ms CPU/poll (max {x['max_cpu_per_poll_ms']}), "
              f"{x['core_share_pct']} % of one core; RSS {x['rss_after_first_mb']} MB after the "
              f"first poll, {x['rss_mid_mb']} MB half-way, {x['rss_end_mb']} MB at the end "
              f"(max {x['rss_max_mb']}); {x['decoded']} SA messages decoded")
    for name, x in (("export scrape", e), ("export scrape --no-per-sa", r["export_no_per_sa"])):
        print(f"{name}: {x['polls']} scrapes of {args.poll_sas} SAs: {x['cpu_per_poll_ms']} ms CPU/scrape "
              f"(max {x['max_cpu_per_poll_ms']}), {x['scrape_share_pct']} % of one core at a "
              f"{SCRAPE_INTERVAL:.0f} s scrape interval; exposition {x['what']} bytes; RSS "
              f"{x['rss_after_first_mb']} -> {x['rss_end_mb']} MB (max {x['rss_max_mb']})")
    dec = r["decode"]
    for name, g in (("larval SAs, this kernel", dec["larval"]), ("real ESP SAs, recorded in UML", dec["real"])):
        if "skipped" in g:
            print(f"decode, {name}: skipped ({g['skipped']})")
        else:
            print(f"decode, {name} ({g['kernel']}): {g['sas']} SAs"
                  + (f" ({', '.join(g['algos'])}, {g['pcpu_sas']} with SA_PCPU)" if g["algos"] else "")
                  + f": {g['us_per_sa']} us CPU per SA (best of 30 dumps, every SA decoded)")

if __name__ == "__main__":
    sys.exit(main())

"""XFRM netlink at scale: dump 100,000 SAs, poll 10,000 SAs at 1 Hz (issue 6, item 7).

    sudo python3 benchmarks/xfrm_bench.py [--dump-sas 100000] [--poll-sas 10000]
                                          [--poll-seconds 30] [--json]

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
  socket, as ``multisa xfrm snapshot`` and ``multisa export`` do; CPU per poll as a share of
  one core, RSS after the first poll and at the end (bounded: it must not grow);
* poll-decode: the same without reusing the records of unchanged SAs (``XfrmSocket.reuse``),
  i.e. as if every SA's counters moved every second: the worst case;
* export: a scrape of ``multisa export``'s collector (dump + exposition of every SA) at 1 Hz.

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
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def child_poll(netns: str, seconds: float, export: bool, reuse: bool = True) -> dict:
    from analyzer.xfrm_state import snapshot_from_kernel
    from dissectors.xfrm import XfrmSocket

    if export:
        from prometheus_client import generate_latest
        from prometheus_client.registry import CollectorRegistry

        from analyzer.exporter import XfrmCollector

        collector = XfrmCollector(netns)
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dump-sas", type=int, default=100_000)
    ap.add_argument("--poll-sas", type=int, default=10_000)
    ap.add_argument("--poll-seconds", type=float, default=30.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, netns = args.child[0], args.child[1]
        if kind == "dump":
            out = child_dump(netns)
        else:
            out = child_poll(netns, float(args.child[2]), kind == "export", kind != "poll-decode")
        print(json.dumps(out))
        return 0
    if os.geteuid() != 0:
        print("xfrm_bench: needs root (creates a network namespace)", file=sys.stderr)
        return 2
    results = {"kernel": os.uname().release, "cpus": os.cpu_count()}
    with Netns() as ns:
        results["fill_poll_s"] = round(fill(ns, 0, args.poll_sas), 2)
        results["poll"] = _child("poll", ns, str(args.poll_seconds))
        results["poll_decode"] = _child("poll-decode", ns, str(args.poll_seconds))
        results["export"] = _child("export", ns, str(args.poll_seconds))
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
    for name, x in (("poll 1 Hz", p), ("poll 1 Hz, every SA decoded", r["poll_decode"]),
                    ("export 1 Hz", e)):
        print(f"{name}: {x['polls']} polls of {args.poll_sas} SAs in {x['seconds']} s: "
              f"{x['cpu_per_poll_ms']} ms CPU/poll (max {x['max_cpu_per_poll_ms']}), "
              f"{x['core_share_pct']} % of one core; RSS {x['rss_after_first_mb']} MB after the "
              f"first poll, {x['rss_mid_mb']} MB half-way, {x['rss_end_mb']} MB at the end "
              f"(max {x['rss_max_mb']}); "
              f"{x['decoded']} SA messages decoded")


if __name__ == "__main__":
    sys.exit(main())

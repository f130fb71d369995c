"""Reference peer ESP throughput: per-resource SAs vs one SA shared behind a lock (RFC 9611 §2).

    python benchmarks/peer_bench.py [--seconds 3] [--size 64] [--repeat 3] [--json]

Runs the peer's own ``worker_main`` (the code ``multisa peer`` forks) as real processes pinned
to CPUs, sending ESP-in-UDP (AES-GCM-256) as fast as they can to a loopback sink, and prints
aggregate packets/s for: 1 worker on its own SA, 2 workers on their own SAs, 2 workers sharing
one SA whose sequence counter sits behind a lock. Not a test: figures go in the README.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dissectors.esp import EspSa
from dissectors.iana import EncrId, IntegId
from dissectors.records import Secret
from peer.worker import FALLBACK_SLOTS, ROW, SLOTS, WorkerPlan, worker_main


def _sa(spi: int) -> EspSa:
    return EspSa(spi, EncrId.AES_GCM_16, 256, Secret(os.urandom(36)), IntegId.NONE, Secret(b""), "127.0.0.1", "127.0.0.1")


def run(workers: int, shared: bool, seconds: float, size: int) -> float:
    ctx = mp.get_context("fork")
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    senders = []
    counters = ctx.RawArray("d", workers * SLOTS * ROW)
    seq = ctx.Array("Q", FALLBACK_SLOTS)  # locked: the shared SA's counter is slot 0
    cpus = sorted(os.sched_getaffinity(0))
    shared_sa = _sa(0x1000)
    procs = []
    pipes = []
    for w in range(workers):
        plan = WorkerPlan(w, cpus[w % len(cpus)], sink.getsockname(), 0, size, seconds, "198.51.100.1", "203.0.113.1")
        parent, child = ctx.Pipe()
        pipes.append(parent)  # kept open: a worker ends when its control pipe is closed
        if not shared:
            parent.send(("own", _sa(0x2000 + w)))
        senders.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))  # one socket per worker: no kernel lock
        p = ctx.Process(target=worker_main, args=(plan, senders[-1], shared_sa if shared else None, seq, child, counters))
        procs.append(p)
    start = time.monotonic()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    elapsed = time.monotonic() - start
    sink.close()
    for s in senders + pipes:
        s.close()
    sent = sum(counters[i * ROW + 1] for i in range(len(counters) // ROW))
    return sent / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=1, help="interleaved runs per setting; the median is shown")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    runs: dict[str, list[float]] = {"one": [], "two": [], "locked": []}
    for _ in range(max(1, args.repeat)):
        runs["one"].append(run(1, False, args.seconds, args.size))
        runs["two"].append(run(2, False, args.seconds, args.size))
        runs["locked"].append(run(2, True, args.seconds, args.size))
    one, two, locked = (statistics.median(runs[k]) for k in ("one", "two", "locked"))
    res = {"cpus": len(os.sched_getaffinity(0)), "loadavg_1min": os.getloadavg()[0], "one_sa_pps": round(one), "two_per_resource_sas_pps": round(two),
           "two_workers_shared_sa_pps": round(locked), "per_resource_scaling": round(two / one, 2),
           "shared_sa_scaling": round(locked / one, 2)}
    if args.json:
        print(json.dumps(res))
    else:
        print(f"CPUs available:                         {res['cpus']} (load average {res['loadavg_1min']:.1f})")
        print(f"1 worker, own SA:                       {one:10.0f} ESP packets/s")
        print(f"2 workers, per-resource SAs:            {two:10.0f} ESP packets/s  (x{two / one:.2f})")
        print(f"2 workers, one SA behind a lock:        {locked:10.0f} ESP packets/s  (x{locked / one:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

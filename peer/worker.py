"""ESP sender workers: one process per resource, pinned to its CPU (RFC 9611 §2, §4).

A worker owns the outbound half of its per-resource Child SA: the keys and the sequence
counter live in its own process, so sending needs no lock. Until its own SA is up it sends on
the initial (fallback) SA, whose counter is the one shared, locked value (§4: "one Child SA
can be used by all CPUs"). The node tells it about new SAs through a pipe:

    ("own", EspSa | None)            its per-resource SA (created or rekeyed; None: gone)
    ("fallback", EspSa | None, idx)  the fallback SA (rekeyed: new counter slot idx; None: gone)
    ("stop",)

Being told again about the SA it already sends on changes nothing (the counter goes on).
Counters go to a lock-free shared array the node reads: one writer per row.

Rows of ``counters`` (``ROW`` doubles each, ``SLOTS`` rows per worker): SPI, packets, bytes,
highest sequence number sent, CPU. A worker takes a new row for each SA it sends on.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from dissectors.esp import EspSa, ipv4_udp

ROW = 5
SLOTS = 16
FALLBACK_SLOTS = 16  # sequence counters for successive fallback SAs (one per rekey, reused round-robin)


@dataclass
class WorkerPlan:
    index: int
    cpu: int
    dest: tuple[str, int]
    rate: float  # packets per second, 0 = as fast as possible
    size: int
    duration: float
    inner_src: str
    inner_dst: str
    replay_gap: bool = False  # fault esp-replay-gap


def worker_main(plan: WorkerPlan, sock, fallback: EspSa | None, fallback_seqs, conn, counters) -> None:
    """Process body. Ends after ``plan.duration`` or on ("stop",); never raises.

    ``fallback_seqs`` is a locked shared array: slot ``idx`` is the sequence counter of the
    fallback SA announced with that index (slot 0: the initial one).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.sched_setaffinity(0, {plan.cpu})
    except (AttributeError, OSError):
        pass
    base = plan.index * SLOTS * ROW
    slot = -1
    sa: EspSa | None = None
    seq = 0
    own_sa: EspSa | None = None
    fb_idx = 0

    own = False

    def use(new: EspSa | None, is_own: bool) -> None:
        nonlocal sa, seq, slot, own
        if new is not None and sa is not None and new.spi == sa.spi and is_own == own:
            return  # already sending on it: keep the counter going
        sa, seq, own = new, 0, is_own
        if new is not None and slot + 1 < SLOTS:
            slot += 1
            counters[base + slot * ROW] = new.spi
            counters[base + slot * ROW + 4] = plan.cpu

    use(fallback, False)
    payload = bytes(plan.size)
    interval = 1.0 / plan.rate if plan.rate > 0 else 0.0
    start = time.monotonic()
    due = start
    sent = 0
    try:
        while time.monotonic() - start < plan.duration:
            while conn.poll():
                cmd = conn.recv()
                if cmd[0] == "stop":
                    return
                if cmd[0] in ("own", "sa"):
                    own_sa = cmd[1]
                elif cmd[0] == "fallback":
                    fallback, fb_idx = cmd[1], cmd[2]
                use(own_sa if own_sa is not None else fallback, own_sa is not None)
            if sa is None:
                time.sleep(0.01)
                continue
            if own:
                seq += 1
            else:
                lock = fallback_seqs.get_lock()
                with lock:
                    fallback_seqs[fb_idx] += 1
                    seq = fallback_seqs[fb_idx]
            wire = seq
            if plan.replay_gap and own and seq > 5:
                wire = seq - 1  # replay: 5 goes out twice
                if seq >= 10:
                    wire += 10  # gap: 9..18 never sent
            inner = ipv4_udp(plan.inner_src, plan.inner_dst, 10000 + plan.index, 9, payload, sent)
            pkt = sa.seal(wire, inner)
            try:
                sock.sendto(pkt, plan.dest)
            except OSError:
                pass
            sent += 1
            row = base + slot * ROW
            counters[row + 1] += 1
            counters[row + 2] += len(inner)
            counters[row + 3] = max(counters[row + 3], wire)
            if interval:
                due += interval
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
    except (KeyboardInterrupt, BrokenPipeError, EOFError):
        pass

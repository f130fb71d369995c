"""Live-mode refresh cost of the TUI: N Child SAs (default 1,000) refreshed at 1 Hz.

Builds a model with one IKE SA lineage, ``--groups`` per-TS groups and ``--sas`` Child SAs
(analyzer.model objects, as ``Analyzer`` would hold them after the negotiation), then, per
tick, as live mode does: a kernel XFRM sample with every SA's counters moved (per-CPU
``pcpu``), ``CounterBoard.add_xfrm`` + ``build_snapshot`` in the worker thread, and the
``EspCountersUpdated`` message applied to the group tree and painted in a headless app.
Prints the milliseconds per tick of each half; a tick must stay well under 1,000 ms.

    python benchmarks/tui_bench.py [--sas 1000] [--groups 10] [--ticks 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzer.model import ChildSa, ChildSaGroup, IkeLineage, IkeSa, Side  # noqa: E402
from analyzer.xfrm_state import XfrmSnapshot  # noqa: E402
from dissectors.iana import TsType  # noqa: E402
from dissectors.ikev2.payloads import TrafficSelector  # noqa: E402
from dissectors.records import FrameRef  # noqa: E402
from dissectors.xfrm import XfrmAlgo, XfrmLifetimeCur, XfrmSaState  # noqa: E402
from tui.messages import EspCountersUpdated  # noqa: E402
from tui.view import CounterBoard, build_snapshot  # noqa: E402

CPUS = 64


class Model:
    """What the TUI reads of an ``Analyzer``: lineages, message and ESP counts."""

    def __init__(self, sas: int, groups: int) -> None:
        self.lineages = [IkeLineage(index=1)]
        lin = self.lineages[0]
        ike = IkeSa(b"\x11" * 8, b"\x22" * 8, lin, initiator_addr="192.0.2.1", responder_addr="192.0.2.2")
        lin.ike_sas.append(ike)
        self.messages, self.esp_packets = 2 + 2 * sas, 0
        self.spis: list[int] = []
        per_group = max(1, sas // groups)
        for g in range(groups):
            ts_i = (TrafficSelector(TsType.TS_IPV4_ADDR_RANGE, start_address=f"10.{g}.0.0",
                                    end_address=f"10.{g}.0.255"),)
            ts_r = (TrafficSelector(TsType.TS_IPV4_ADDR_RANGE, start_address=f"10.{g}.1.0",
                                    end_address=f"10.{g}.1.255"),)
            group = ChildSaGroup(lin, ts_i, ts_r)
            lin.groups[(ts_i, ts_r)] = group
            for n in range(per_group):
                spi_in = (0x10000000 + g * 0x10000 + n).to_bytes(4, "big")
                spi_out = (0x20000000 + g * 0x10000 + n).to_bytes(4, "big")
                rid = (n % CPUS).to_bytes(4, "big") if n else b""
                c = ChildSa(spi_in, spi_out, 3, None, ts_i, ts_r, Side.I, 36, ike.key,
                            resource_id_i=rid, resource_id_r=rid, role="fallback" if n == 0 else "member",
                            created=FrameRef("bench", 3 + n, 1000.0), group=group)
                group.children.append(c)
                self.spis += [int.from_bytes(spi_in, "big"), int.from_bytes(spi_out, "big")]


def xfrm_sample(model: Model, tick: int) -> XfrmSnapshot:
    algos = (XfrmAlgo("aead", "rfc4106(gcm(aes))", 288),)
    sas = tuple(XfrmSaState("192.0.2.1", "192.0.2.2", spi, 50, 2, 1, 1, pcpu=i // 2 % CPUS, algos=algos,
                            curlft=XfrmLifetimeCur(bytes=(tick * 1000 + i) * 100, packets=tick * 1000 + i))
                for i, spi in enumerate(model.spis))
    return XfrmSnapshot(sas=sas, policies=(), ts=1000.0 + tick, source="netlink")


async def run(sas: int, groups: int, ticks: int, size: tuple[int, int]) -> None:
    from tui.app import MultisaApp
    from tui.widgets import GroupTable

    model = Model(sas, groups)
    board = CounterBoard()
    worker_ms, ui_ms = [], []
    app = MultisaApp(live=False)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        table = app.screen.query_one(GroupTable)
        for tick in range(ticks + 1):
            t0 = time.perf_counter()
            board.add_xfrm(xfrm_sample(model, tick))
            snap = build_snapshot(model, board, [], None, live=True)
            t1 = time.perf_counter()
            app.post_message(EspCountersUpdated(snap))
            await pilot.pause()  # the message handled, the tree updated
            await pilot.wait_for_scheduled_animations()
            await pilot.pause()  # and painted
            t2 = time.perf_counter()
            if tick:  # tick 0 builds the tree; the steady state is what 1 Hz costs
                worker_ms.append((t1 - t0) * 1000)
                ui_ms.append((t2 - t1) * 1000)
        shown = sum(1 for k in table.nodes if k.startswith("sa:"))
    print(f"{sas} Child SAs in {groups} groups ({shown} in the tree), {ticks} ticks, terminal {size[0]}x{size[1]}")
    print(f"  worker: XFRM sample + snapshot  median {statistics.median(worker_ms):7.1f} ms  "
          f"max {max(worker_ms):7.1f} ms")
    print(f"  UI: apply + paint               median {statistics.median(ui_ms):7.1f} ms  "
          f"max {max(ui_ms):7.1f} ms")
    total = statistics.median(worker_ms) + statistics.median(ui_ms)
    print(f"  per 1 Hz tick: {total:.1f} ms ({total / 10:.1f}% of the second)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sas", type=int, default=1000)
    ap.add_argument("--groups", type=int, default=10)
    ap.add_argument("--ticks", type=int, default=10)
    ap.add_argument("--size", default="160x48", help="terminal WIDTHxHEIGHT (default 160x48)")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    asyncio.run(run(args.sas, args.groups, args.ticks, (w, h)))


if __name__ == "__main__":
    main()

"""Run the fuzz targets: ``python3 -m tests.fuzz.run [--target NAME] [--inputs N] [--seed S] [--seconds T]``.

Every ``fuzz_<name>`` function of every ``tests/fuzz/targets_*.py`` module is a target (see
``tests/fuzz/common.py``). Input ``i`` of target ``name`` under ``--seed S`` is built from
``random.Random(input_seed(S, name, i))``, so a run is reproducible and each failure prints
the one seed that replays it::

    python3 -m tests.fuzz.run --target esp_engines --replay 1234567890123

Per target the summary gives inputs, inputs/s, crashes (an exception other than
``FuzzProblem``, or an input that ran longer than ``--hang`` seconds), leaks (an 8-octet key
window in an output), contract failures (an error that is not one line naming the input)
and disagreements (two engines, two decoders). Exit 0 iff every count is zero.

Budget: ``--inputs N`` per target, ``--seconds T`` per target (whichever ends first; one of
them is needed). ``--json FILE`` also writes the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import pkgutil
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from random import Random

from .common import FuzzProblem

KINDS = ("crash", "leak", "contract", "disagree")
MAX_REPORTED = 5  # failures printed per target and kind (all are counted)


@dataclass
class Tally:
    target: str
    inputs: int = 0
    seconds: float = 0.0
    crash: int = 0
    leak: int = 0
    contract: int = 0
    disagree: int = 0
    failures: list[dict] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return self.crash + self.leak + self.contract + self.disagree

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0


def discover() -> dict[str, Callable[[Random], None]]:
    """Every ``fuzz_*`` function of every ``targets_*`` module, by name (without ``fuzz_``)."""
    from . import __path__ as here

    out: dict[str, Callable[[Random], None]] = {}
    for info in sorted(pkgutil.iter_modules(here), key=lambda m: m.name):
        if not info.name.startswith("targets_"):
            continue
        module = importlib.import_module(f"{__package__}.{info.name}")
        for attr in sorted(vars(module)):
            fn = getattr(module, attr)
            if attr.startswith("fuzz_") and callable(fn) and getattr(fn, "__module__", "") == module.__name__:
                name = attr[len("fuzz_"):]
                if name in out:
                    raise SystemExit(f"fuzz: target {name} defined twice")
                out[name] = fn
    return out


def input_seed(seed: int, target: str, index: int) -> int:
    digest = hashlib.sha256(f"{seed}:{target}:{index}".encode()).digest()
    return int.from_bytes(digest[:6], "big")


class _Hang(Exception):
    pass


def _alarm(signum, frame):  # pragma: no cover - only on a hang
    raise _Hang()


def run_one(fn: Callable[[Random], None], seed: int, hang: float) -> tuple[str, str] | None:
    """(kind, detail) of the problem input ``seed`` shows, or None."""
    old = signal.signal(signal.SIGALRM, _alarm) if hang else None
    if hang:
        signal.setitimer(signal.ITIMER_REAL, hang)
    try:
        fn(Random(seed))
    except FuzzProblem as p:
        return (p.kind if p.kind in KINDS else "crash"), p.detail
    except _Hang:
        return "crash", f"hang: no result after {hang:g} s"
    except RecursionError as err:
        return "crash", f"RecursionError: {err}"
    except Exception as err:  # noqa: BLE001 - anything else a target raises is a crash
        tb = traceback.extract_tb(err.__traceback__)
        where = f"{tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else "?"
        return "crash", f"{type(err).__name__} at {where}: {' '.join(str(err).split())[:200]}"
    finally:
        if hang:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    return None


def run_target(name: str, fn, seed: int, inputs: int | None, seconds: float | None, hang: float,
               out=sys.stdout) -> Tally:
    tally = Tally(name)
    start = time.perf_counter()
    deadline = start + seconds if seconds else None
    i = 0
    while (inputs is None or i < inputs) and (deadline is None or time.perf_counter() < deadline):
        s = input_seed(seed, name, i)
        problem = run_one(fn, s, hang)
        i += 1
        if problem is None:
            continue
        kind, detail = problem
        setattr(tally, kind, getattr(tally, kind) + 1)
        if sum(1 for f in tally.failures if f["kind"] == kind) < MAX_REPORTED:
            tally.failures.append({"kind": kind, "seed": s, "detail": detail})
            print(f"fuzz: {name}: {kind}: {detail} (replay: python3 -m tests.fuzz.run --target {name} "
                  f"--replay {s})", file=out, flush=True)
    tally.inputs = i
    tally.seconds = time.perf_counter() - start
    return tally


def replay(fn, seed: int) -> int:
    """Run one input and show everything, the traceback included."""
    try:
        fn(Random(seed))
    except FuzzProblem as p:
        print(f"{p.kind}: {p.detail}")
        if p.reproducer is not None:
            print(f"reproducer: {p.reproducer!r}"[:4000])
        return 1
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        return 1
    print("no problem")
    return 0


def table(tallies: list[Tally]) -> str:
    rows = [("target", "inputs", "inputs/s", "crashes", "leaks", "contract", "disagree")]
    for t in tallies:
        rows.append((t.target, str(t.inputs), f"{t.rate:.0f}", str(t.crash), str(t.leak), str(t.contract),
                     str(t.disagree)))
    total = Tally("total", sum(t.inputs for t in tallies), sum(t.seconds for t in tallies),
                  *(sum(getattr(t, k) for t in tallies) for k in KINDS))
    rows.append((total.target, str(total.inputs), f"{total.rate:.0f}", str(total.crash), str(total.leak),
                 str(total.contract), str(total.disagree)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m tests.fuzz.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", action="append", metavar="NAME", help="run only this target (repeatable)")
    p.add_argument("--inputs", type=int, metavar="N", help="inputs per target")
    p.add_argument("--seconds", type=float, metavar="T", help="seconds per target")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="base seed (default 0)")
    p.add_argument("--hang", type=float, default=20.0, metavar="T",
                   help="an input running longer than T seconds is a crash (default 20; 0: off)")
    p.add_argument("--replay", type=int, metavar="SEED", help="run the one input SEED printed for a failure")
    p.add_argument("--list", action="store_true", help="list the targets")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = p.parse_args(argv)
    targets = discover()
    if args.list:
        print("\n".join(targets))
        return 0
    chosen = args.target or list(targets)
    unknown = [t for t in chosen if t not in targets]
    if unknown:
        p.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(targets)}")
    if args.replay is not None:
        if len(chosen) != 1:
            p.error("--replay needs one --target")
        return replay(targets[chosen[0]], args.replay)
    if args.inputs is None and args.seconds is None:
        p.error("give --inputs N and/or --seconds T")
    tallies = []
    for name in chosen:
        tallies.append(run_target(name, targets[name], args.seed, args.inputs, args.seconds, args.hang))
        print(f"fuzz: {name}: {tallies[-1].inputs} inputs in {tallies[-1].seconds:.1f} s, "
              f"{tallies[-1].problems} problems", flush=True)
    print(table(tallies))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"seed {args.seed}; max RSS {rss} MB")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"seed": args.seed, "max_rss_mb": rss,
                       "targets": [asdict(t) | {"inputs_per_s": round(t.rate, 1)} for t in tallies]}, f, indent=1)
    return 0 if all(t.problems == 0 for t in tallies) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate ``samples/peer/*``: ``python3 -m peer.samples --out samples/peer [NAME ...]``.

One ``multisa peer demo`` run per sample (root: two network namespaces; else loopback), with
the settings below, then ``multisa lint`` on the result. Every sample has 2 resources, ESP at
10 packets/s per worker for 1.2 s, a Child SA rekey at half time and an IKE SA rekey at 70 %
(§2.18), and the responder's per-TS limit of twice the resources (RFC 9611 §6) unless a
sample needs a refusal. The rule each sample should make ``multisa lint`` report is the one
its row in samples/README.md names; the command exits 1 when lint reports anything else.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from .demo import run_demo
from .faults import FAULTS

BASE = {"resources": 2, "duration": 1.2, "rate": 10.0}

#: sample -> run_demo overrides (besides ``faults``)
SETTINGS: dict[str, dict] = {
    "clean": {},
    # a refusal is needed: the limit is tight on purpose (MS302 looks at TS_MAX_QUEUE only)
    "fault-no-additional-sas": {"max_per_ts": 2, "extra_requests": 1},
    # a TS_MAX_QUEUE that is fine but for its data: 1 resource, limit 1, a second request for it
    "fault-ts-max-queue-data": {"resources": 1, "max_per_ts": 1, "extra_requests": 1,
                                "init_args": ["--extra-ids", "reuse"]},
    # the group must grow past MS305's default threshold of 64 active SAs
    "fault-no-ts-limit": {"extra_requests": 63},
    "fault-esp-replay-gap": {"rate": 40.0},
}

README = Path(__file__).resolve().parent.parent / "samples" / "README.md"


def expected_codes(readme: Path = README) -> dict[str, set[str]]:
    """What each sample's row in samples/README.md says lint reports: its MSxxx codes (the
    ESP sequence codes, MS4xx, come from ``multisa esp`` and are left out)."""
    rows = re.findall(r"^\| peer/([a-z0-9-]+) \| (.+) \|$", readme.read_text(encoding="utf-8"), flags=re.M)
    return {name: {c for c in re.findall(r"MS\d{3}", text) if not c.startswith("MS4")} for name, text in rows}


def sample_names() -> list[str]:
    return ["clean", *(f"fault-{f}" for f in FAULTS)]


def make(out: Path, name: str) -> int:
    kw = {**BASE, **SETTINGS.get(name, {})}
    faults = [] if name == "clean" else [name.removeprefix("fault-")]
    rc = run_demo(str(out / name), faults=faults, log=lambda *_: None, **kw)
    for log in ("initiator.log", "responder.log"):
        (out / name / log).unlink(missing_ok=True)
    return rc


def lint_codes(d: Path) -> set[str] | None:
    res = subprocess.run([sys.executable, "-m", "analyzer.cli", "lint", str(d / "capture.pcapng"), "-k", str(d),
                          "--format", "json"], capture_output=True, text=True, check=False)
    try:
        data = json.loads(res.stdout)
    except json.JSONDecodeError:
        return None
    found = data["findings"] if isinstance(data, dict) else data
    return {f["code"] for f in found}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m peer.samples", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="samples/peer", help="directory of the sample folders")
    ap.add_argument("--check", action="store_true", help="only run lint on the existing samples")
    ap.add_argument("names", nargs="*", help="samples to make (default: all)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    names = args.names or sample_names()
    expect = expected_codes()
    bad = 0
    for name in names:
        if name not in expect:
            print(f"multisa: error: unknown sample {name!r}", file=sys.stderr)
            return 2
        if not args.check and make(out, name) != 0:
            print(f"{name}: demo failed", file=sys.stderr)
            bad += 1
            continue
        codes = lint_codes(out / name)
        ok = codes is not None and {c for c in codes if not c.startswith("MS4")} == expect[name]
        bad += not ok
        print(f"{name:<36} lint: {', '.join(sorted(codes)) if codes else 'nothing'}{'' if ok else '  (UNEXPECTED)'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""``multisa lint`` throughput: a generated capture of 10,000 IKE messages and 1,000 Child SAs.

The capture is built with the IKEv2 codec (``tests/ikesim.py``): ``--ike-sas`` IKE SA
lineages run side by side, each with a fallback SA from IKE_AUTH, per-resource Child SAs
(SA_RESOURCE_INFO with random-looking ids, from either peer), rekeys of them followed by
deletes, and INFORMATIONAL liveness checks until the capture holds ``--messages`` IKE
messages; ``--esp`` ESP packets per Child SA ride along. Every message after IKE_SA_INIT is
really encrypted (AES-CBC-128 + HMAC-SHA2-256-128 via ``dissectors.ikev2.sk.seal``) and the
key table is written beside it, so the timing includes decryption, as ``multisa lint
--keys`` runs it. Then it times the whole lint pass (read, decrypt, analyze, all rules,
text report).

    python benchmarks/lint_bench.py [--messages 10000] [--children 1000] [--ike-sas 20]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analyzer.config import Settings  # noqa: E402
from analyzer.pipeline import LintReport, analyze_capture  # noqa: E402
from analyzer.report import text  # noqa: E402
from analyzer.rules import select  # noqa: E402
from dissectors.keys import load_keys  # noqa: E402
from tests.ikesim import Conversation, rid, write_key_table, write_pcap  # noqa: E402


def lineage_script(conv: Conversation, index: int, children: int, esp: int):
    """One IKE SA lineage, one exchange per step: ``children`` Child SAs in all."""
    base = index * 100_000
    fallback = conv.established()
    conv.esp(fallback, esp)
    yield
    made, live, n = 1, [], 0
    while made < children:
        n += 1
        if live and (n % 2 == 0 or made + len(live) >= children):
            old, ids, by = live.pop(0)  # rekeyed on the same resource (same ids), then deleted
            ex = conv.create_child(by, ids[by], ids["R" if by == "I" else "I"], rekey=old)
            conv.delete_child(old, by=by)
        else:
            by = "I" if n % 3 else "R"
            ids = {"I": rid(base + n), "R": rid(base + 50_000 + n)}
            ex = conv.create_child(by, ids[by], ids["R" if by == "I" else "I"])
        made += 1
        if ex.child is not None:
            live.append((ex.child, ids, "I" if n % 2 else "R"))
            conv.esp(ex.child, esp)
        yield
    while True:  # liveness checks fill the capture up to the message budget
        conv.informational("I" if n % 2 else "R")
        n += 1
        yield


def build(path: Path, messages: int, children: int, ike_sas: int, esp: int) -> tuple[int, int]:
    records: list = []
    convs = [Conversation(source=str(path), addr={"I": f"10.{k // 250}.{k % 250}.1", "R": "192.0.2.2"},
                          records=records, seed=k * 1_000_003) for k in range(ike_sas)]
    per = [children // ike_sas + (1 if k < children % ike_sas else 0) for k in range(ike_sas)]
    scripts = [lineage_script(c, k, per[k], esp) for k, c in enumerate(convs)]
    clock, frame, ike_count = convs[0].t, 0, 0
    while ike_count < messages:
        for conv, script in zip(convs, scripts, strict=True):
            conv.t, conv.frame_no = clock, frame
            before = len(records)
            next(script)
            ike_count += sum(1 for r in records[before:] if not hasattr(r, "seq"))
            clock, frame = conv.t, conv.frame_no
            if ike_count >= messages:
                break
    write_pcap(path, records, encrypt=True)
    write_key_table(path.parent / "ikev2_decryption_table", records)
    return ike_count, len(records) - ike_count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000, help="IKE messages in the capture")
    parser.add_argument("--children", type=int, default=1_000, help="Child SAs negotiated in all")
    parser.add_argument("--ike-sas", type=int, default=20, help="IKE SA lineages side by side")
    parser.add_argument("--esp", type=int, default=4, help="ESP packets per Child SA")
    parser.add_argument("--build-only", metavar="PCAP", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:  # child process: the capture's construction stays out of the lint's RSS
        ike, esp = build(Path(args.build_only), args.messages, args.children, args.ike_sas, args.esp)
        print(json.dumps({"ike": ike, "esp": esp}))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "lint-bench.pcap"
        t0 = time.perf_counter()
        built_out = subprocess.run(
            [sys.executable, __file__, "--build-only", str(pcap), "--messages", str(args.messages),
             "--children", str(args.children), "--ike-sas", str(args.ike_sas), "--esp", str(args.esp)],
            check=True, capture_output=True, text=True).stdout
        counts = json.loads(built_out)
        built = time.perf_counter() - t0
        size = pcap.stat().st_size
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        settings = Settings()
        rules = select()
        start = time.perf_counter()
        keys = load_keys([tmp])
        result = analyze_capture(str(pcap), keys, settings, rules)
        report = text.render(LintReport([result], rules, settings.severity))
        elapsed = time.perf_counter() - start
    a = result.analyzer
    children = sum(len(g.children) for g in a.groups())
    codes = Counter(f.code for f in result.findings)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert result.error is None and a.messages == counts["ike"] and report
    print(f"capture: {counts['ike']} IKE messages, {counts['esp']} ESP packets, {size / 1e6:.1f} MB "
          f"(built in {built:.1f} s)")
    print(f"lint: {a.messages} IKE messages, {children} Child SAs in {len(a.lineages)} IKE SA lineages, "
          f"{len(result.findings)} findings {dict(sorted(codes.items()))}")
    print(f"{elapsed:.2f} s: {a.messages / elapsed:,.0f} IKE messages/s, peak RSS {rss:.0f} MiB "
          f"({rss_before:.0f} MiB after imports)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Soak: ``multisa monitor`` and ``multisa export`` for a long run under the reference peer's traffic.

    python benchmarks/soak.py [--minutes 30] [--sample 10] [--fault esp-replay-gap]...
                              [--round 4] [--json OUT]

The reference peer runs ``multisa peer demo --loopback`` back to back (one IKE SA, its
per-resource Child SAs, ESP, rekeys, deletes: a round every ~10 s), each round with the faults
given (default ``esp-replay-gap``: a replay and a gap on worker 0's SA, so every round fires
MS401/MS402 on a new SA: findings all the time). Beside it, for the whole run:

* ``multisa monitor --iface lo -k DIR --format json-lines`` (headless, dumpcap on loopback,
  key files re-read as each round rewrites them);
* ``multisa export --listen 127.0.0.1:PORT --netns NS`` on a network namespace of the soak's
  own whose SAD churns (class ``Sad``: ``--churn`` new SPIs per scrape, each living 30 s),
  ``/metrics`` scraped every ``--scrape`` s.

Every ``--sample`` seconds the RSS of both processes is read from /proc. At the end it prints
(and with ``--json`` writes) the RSS series, the growth after warm-up (the first 20 % of the
run), the rounds, and the findings: every finding must be printed once (no line twice; MS401
and MS402 once per round's faulty SA). Exit 0 when RSS is flat (growth under ``--max-growth-mb``)
and no finding is printed twice, 1 otherwise. Not a test: figures go in the README ("Soak").
"""

from __future__ import annotations

import argparse
import json
import re
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def _ip(*args: str, check: bool = True) -> None:
    subprocess.run(["ip", *args], check=check, capture_output=True)


class Sad:
    """A namespace of the soak's own whose SAD churns: the host kernel has no ESP (see
    /work/shared/kernel-xfrm), so its SAs are larval ones (``ip xfrm state allocspi``), which
    the kernel expires after 30 s; ``churn(k)`` allocates ``k`` more with new SPIs, so the
    exporter keeps seeing SAs come and go (what rekeys do to its per-SA series)."""

    def __init__(self, name: str, n: int) -> None:
        self.name, self.reqid = name, 0
        _ip("netns", "add", name)
        try:
            self.churn(n)
        except (subprocess.CalledProcessError, FileNotFoundError):
            self.close()
            raise

    def churn(self, k: int) -> None:
        for _ in range(k):
            self.reqid = self.reqid % 4 + 1
            _ip("-n", self.name, "xfrm", "state", "allocspi", "src", "192.0.2.1", "dst", "192.0.2.2",
                "proto", "esp", "mode", "tunnel", "reqid", str(self.reqid), "min", "0x50000000",
                "max", "0x5fffffff")

    def close(self) -> None:
        _ip("netns", "del", self.name, check=False)


def peer_rounds(out: Path, faults: list[str], esp_seconds: float, stop: threading.Event, rounds: list) -> None:
    """Demo after demo on loopback until ``stop``; each round's exit code and duration."""
    while not stop.is_set():
        t0 = time.monotonic()
        cmd = [PY, "-m", "peer.cli", "peer", "demo", "--loopback", "--out", str(out), "--duration", str(esp_seconds),
               *sum((["--fault", f] for f in faults), [])]
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, timeout=esp_seconds * 4 + 60).returncode
        except subprocess.TimeoutExpired:
            rc = -1
        rounds.append({"rc": rc, "seconds": round(time.monotonic() - t0, 2)})


def scraper(port: int, every: float, stop: threading.Event, sad: Sad | None, churn: int, out: dict) -> None:
    url = f"http://127.0.0.1:{port}/metrics"
    while not stop.wait(every):
        if sad is not None and churn:
            sad.churn(churn)
        try:
            body = urllib.request.urlopen(url, timeout=10).read().decode()
            out["scrapes"] += 1
            out["last_series"] = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
            out["sa_series"] = sum(1 for line in body.splitlines() if line.startswith("multisa_xfrm_sa_bytes_total{"))
        except OSError as err:
            out["errors"] += 1
            out["last_error"] = str(err)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between RSS samples (default 10)")
    ap.add_argument("--scrape", type=float, default=5.0, help="seconds between /metrics scrapes (default 5)")
    ap.add_argument("--fault", action="append", dest="faults", help="peer fault per round (default esp-replay-gap)")
    ap.add_argument("--round", type=float, default=4.0, help="seconds of ESP per peer round (default 4)")
    ap.add_argument("--churn", type=int, default=8, help="new SAs per scrape in the exporter's namespace (default 8)")
    ap.add_argument("--max-growth-mb", type=float, default=8.0)
    ap.add_argument("--workdir", default=None, help="default: benchmarks/out/soak-PID")
    ap.add_argument("--json", metavar="OUT", help="write the figures here")
    a = ap.parse_args(argv)
    faults = a.faults or ["esp-replay-gap"]
    work = Path(a.workdir or ROOT / "benchmarks" / "out" / f"soak-{os.getpid()}")
    keys = work / "demo"
    keys.mkdir(parents=True, exist_ok=True)
    seconds = a.minutes * 60
    port = free_port()
    sad = None
    if os.geteuid() == 0:
        try:
            sad = Sad(f"msasoak{os.getpid() % 100000}", a.churn)
        except (subprocess.CalledProcessError, FileNotFoundError) as err:
            print(f"soak: no namespace of our own ({err}); export reads the current one", file=sys.stderr)
            sad = None
    env = _env()
    mon_out = open(work / "monitor.jsonl", "w")
    mon_err = open(work / "monitor.err", "w")
    monitor = subprocess.Popen([PY, "-m", "analyzer.cli", "monitor", "--iface", "lo", "-k", str(keys),
                                "--format", "json-lines", "--status-interval", "60", "--duration", str(seconds + 60)],
                               cwd=ROOT, env=env, stdout=mon_out, stderr=mon_err)
    export = subprocess.Popen([PY, "-m", "analyzer.cli", "export", "--listen", f"127.0.0.1:{port}",
                               *(["--netns", sad.name] if sad else []), "--duration", str(seconds + 5)],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=open(work / "export.err", "w"))
    time.sleep(3)  # dumpcap up before the first round
    stop = threading.Event()
    rounds: list = []
    scrapes = {"scrapes": 0, "errors": 0}
    threads = [threading.Thread(target=peer_rounds, args=(keys, faults, a.round, stop, rounds), daemon=True),
               threading.Thread(target=scraper, args=(port, a.scrape, stop, sad, a.churn, scrapes), daemon=True)]
    for t in threads:
        t.start()
    samples = []
    t0 = time.monotonic()
    try:
        while time.monotonic() - t0 < seconds:
            samples.append({"t": round(time.monotonic() - t0, 1), "monitor_kb": rss_kb(monitor.pid),
                            "export_kb": rss_kb(export.pid), "rounds": len(rounds)})
            print(json.dumps(samples[-1]), flush=True)
            if monitor.poll() is not None or export.poll() is not None:
                print("soak: monitor or export ended early", file=sys.stderr)
                break
            time.sleep(min(a.sample, max(0.0, seconds - (time.monotonic() - t0))))
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=a.round * 4 + 70)
        for p in (monitor, export):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # by PID: the processes this soak started
        for p in (monitor, export):
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        mon_out.close()
        mon_err.close()
        if sad is not None:
            sad.close()
    return report(a, work, samples, rounds, scrapes, monitor.returncode, export.returncode)


def _growth(series: list[int]) -> tuple[int, int, int]:
    """(RSS after warm-up, at the end, peak) in kB: warm-up = the first 20 % of the samples."""
    warm = series[max(1, len(series) // 5):] or series
    head = statistics.median(warm[:max(1, len(warm) // 10)])
    tail = statistics.median(warm[-max(1, len(warm) // 10):])
    return int(head), int(tail), max(series)


def report(a, work: Path, samples, rounds, scrapes, mon_rc, exp_rc) -> int:
    lines = (work / "monitor.jsonl").read_text().splitlines()
    docs = [json.loads(line) for line in lines if line.startswith("{")]
    findings = [d for d in docs if d.get("type") == "finding"]
    keyed = Counter(json.dumps({k: v for k, v in f.items() if k != "time"}, sort_keys=True) for f in findings)
    twice = [k for k, n in keyed.items() if n > 1]
    # the same rule on the same SA twice (frames aside) is a finding printed twice too
    per_sa = Counter((f.get("code"), m.group(1)) for f in findings
                     if (m := re.search(r"ESP SA 0x([0-9a-f]{8})", f.get("message", ""))))
    twice += [f"{code} on SA {spi}" for (code, spi), n in per_sa.items() if n > 1]
    by_code = Counter(f.get("code") for f in findings)
    summary = next((d for d in docs if d.get("type") == "summary"), {})
    fig: dict = {"minutes": a.minutes, "faults": a.faults or ["esp-replay-gap"], "rounds": len(rounds),
                 "rounds_ok": sum(1 for r in rounds if r["rc"] == 0), "findings": len(findings),
                 "findings_printed_twice": len(twice), "sas_with_findings": len({spi for _, spi in per_sa}), "by_code": dict(sorted(by_code.items())),
                 "monitor_exit": mon_rc, "export_exit": exp_rc, "scrapes": scrapes,
                 "esp_packets": summary.get("esp_packets"), "frames": summary.get("frames"),
                 "dropped": (summary.get("capture") or {}).get("dropped")}
    ok = not twice
    for who in ("monitor", "export"):
        series = [s[f"{who}_kb"] for s in samples if s[f"{who}_kb"]]
        if not series:
            ok = False
            continue
        head, tail, peak = _growth(series)
        fig[who] = {"rss_after_warmup_mb": round(head / 1024, 1), "rss_end_mb": round(tail / 1024, 1),
                    "rss_peak_mb": round(peak / 1024, 1), "growth_mb": round((tail - head) / 1024, 1)}
        ok &= (tail - head) / 1024 < a.max_growth_mb
    fig["flat"] = ok
    print(json.dumps(fig, indent=1))
    if twice:
        print(f"soak: {len(twice)} finding(s) printed more than once, e.g. {twice[0][:200]}", file=sys.stderr)
    if a.json:
        Path(a.json).write_text(json.dumps({**fig, "samples": samples}, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""``multisa lint`` against tshark on the same encrypted IKE captures, side by side in one run.

Builds captures of 20,000, 80,000 and 320,000 IKE messages with ``benchmarks/lint_bench.py
--build-only`` (every message after IKE_SA_INIT really encrypted, AES-CBC-128 +
HMAC-SHA2-256-128; one Child SA per 10 messages, 20 IKE SA lineages), then times, per capture
and whole process (CPU = user + system, from ``wait4``):

- ``multisa lint --keys DIR CAPTURE`` (read, decrypt, analyze, every rule, text report);
- ``tshark -r CAPTURE -q -Y 'isakmp.notify.msgtype == 16444' -z expert``, with the same
  key table as ``ikev2_decryption_table`` in a private ``WIRESHARK_CONFIG_DIR`` (tshark
  decrypts and dissects every SK payload to evaluate the filter).

Prints both CPU times, the ratio (tshark CPU / multisa CPU: above 1 means multisa is faster)
and the growth factor of each from one size to the next (4x the messages each step: linear
cost grows 4x).

    python benchmarks/ike_vs_tshark.py [--sizes 20000,80000,320000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILTER = "isakmp.notify.msgtype == 16444"


def run(cmd: list[str], env: dict | None = None) -> tuple[float, float, int, bytes]:
    """(CPU seconds, wall seconds, peak RSS KiB, stdout) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}")
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - start, usage.ru_maxrss, out


def build(folder: Path, messages: int) -> Path:
    pcap = folder / "capture.pcap"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "lint_bench.py"), "--build-only", str(pcap),
                    "--messages", str(messages), "--children", str(messages // 10)],
                   check=True, capture_output=True)
    return pcap


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="20000,80000,320000", help="IKE messages per capture, comma-separated")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each tool per capture (the fastest counts)")
    args = parser.parse_args()
    tshark = shutil.which("tshark")
    if tshark is None:
        print("tshark not found (apt-get install tshark)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            folder = Path(tmp) / f"m{n}"
            folder.mkdir()
            pcap = build(folder, n)
            wsdir = Path(tmp) / f"ws{n}"
            wsdir.mkdir()
            shutil.copy(folder / "ikev2_decryption_table", wsdir / "ikev2_decryption_table")
            ws_env = dict(os.environ, WIRESHARK_CONFIG_DIR=str(wsdir))
            lint = [sys.executable, "-m", "analyzer.cli", "lint", "--keys", str(folder), str(pcap)]
            ts = [tshark, "-r", str(pcap), "-q", "-Y", FILTER, "-z", "expert"]
            m = min((run(lint, env) for _ in range(args.repeat)), key=lambda r: r[0])
            t = min((run(ts, ws_env) for _ in range(args.repeat)), key=lambda r: r[0])
            # tshark really decrypted: the filter matches the SA_RESOURCE_INFO notifies inside SK
            shown = run([tshark, "-r", str(pcap), "-Y", FILTER], ws_env)[3].count(b"\n")
            rows.append((n, pcap.stat().st_size, m, t, shown))
            print(f"{n:>8} IKE messages: multisa {m[0]:6.2f} s CPU ({m[2] // 1024} MiB), "
                  f"tshark {t[0]:6.2f} s CPU ({t[2] // 1024} MiB), ratio {t[0] / m[0]:.2f}x", flush=True)
    print()
    print(f"{'messages':>9} {'MB':>6} {'multisa CPU s':>14} {'growth':>7} {'RSS MiB':>8} "
          f"{'tshark CPU s':>13} {'growth':>7} {'RSS MiB':>8} {'ratio':>7} {'16444 pkts':>10}")
    prev = None
    for n, size, m, t, shown in rows:
        gm = f"{m[0] / prev[2][0]:.2f}x" if prev else "-"
        gt = f"{t[0] / prev[3][0]:.2f}x" if prev else "-"
        print(f"{n:>9} {size / 1e6:>6.1f} {m[0]:>14.2f} {gm:>7} {m[2] // 1024:>8} {t[0]:>13.2f} {gt:>7} "
              f"{t[2] // 1024:>8} {t[0] / m[0]:>6.2f}x {shown:>10}")
        prev = (n, size, m, t)
    print("\nratio = tshark CPU / multisa CPU (above 1: multisa faster); growth: CPU against the "
          "previous size")
    return 0


if __name__ == "__main__":
    sys.exit(main())

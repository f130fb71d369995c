"""IKE messages decoded + decrypted per second, end to end from a pcap file.

Builds a capture by repeating the real strongSwan 5.9.8 captures' frames (AES-CBC-128 +
HMAC-SHA2-256-128 and AES-GCM-256) until it holds --messages IKE messages, then times
`ike_messages(iter_datagrams(...))` with the captures' key files, as `multisa show` runs it.

    python benchmarks/ike_bench.py [--messages 50000]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

from scapy.utils import RawPcapReader, RawPcapWriter

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dissectors.capture import iter_datagrams  # noqa: E402
from dissectors.ikev2 import ike_messages  # noqa: E402
from dissectors.keys import load_keys  # noqa: E402

SHARED = ROOT.parent / "shared" / "captures"
SOURCES = ["sswan-aes128cbc-sha256-modp2048", "sswan-aes256gcm16"]


def build_capture(path: Path, messages: int) -> int:
    frames = []
    for name in SOURCES:
        for data, _meta in RawPcapReader(str(SHARED / f"{name}.pcap")):
            frames.append(data)
    written = 0
    with RawPcapWriter(str(path), linktype=1) as out:
        while written < messages:
            for data in frames:
                out.write(data)
            written += 56
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000)
    args = parser.parse_args()
    keys = load_keys([str(p) for name in SOURCES for p in SHARED.glob(name + ".*_*")])
    with tempfile.TemporaryDirectory() as tmp:
        pcap = Path(tmp) / "ike.pcap"
        build_capture(pcap, args.messages)
        start = time.perf_counter()
        count = decrypted = 0
        for msg in ike_messages(iter_datagrams(str(pcap)), keys):
            count += 1
            decrypted += any(getattr(p, "decrypted", False) for p in msg.payloads)
        elapsed = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{count} IKE messages ({decrypted} decrypted) in {elapsed:.2f} s: "
          f"{count / elapsed:,.0f} messages/s, peak RSS {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run inside a throw-away kernel with ESP (``tests/kernel/uml-run.sh``), by xfrm_bench.py:
record the GETSA dump of real (valid) ESP SAs, which the host kernel cannot hold.

    tests/kernel/uml-run.sh --kernel uml613 -- python3 benchmarks/xfrm_guest_sas.py N OUT

Installs N ESP SAs as the reference peer's kernel data plane does (``peer.kernel.XfrmWriter``:
AES-GCM-16 with a key, SA_DIR, SA_PCPU on two of three outbound SAs, ENCAP on one in four; a
kernel >= 6.13), dumps them once through ``XfrmSocket`` and writes the kernel's datagrams to
OUT (a throw-away file: they carry the SAs' random keys) for the host to decode and time:
timing inside UML would mostly measure its slow traps into the guest kernel.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def record_dump(netns: str | None, out: Path | str) -> dict:
    """Dump the SAD of ``netns`` once through ``XfrmSocket``, write the kernel's datagrams
    (each after its 4-byte little-endian length) to ``out``; what the replay needs to know."""
    from dissectors.xfrm import XfrmSocket

    datagrams = []
    with XfrmSocket(netns) as sock:
        recv = sock._recv

        def recording():
            data = recv()
            datagrams.append(data)
            return data

        sock._recv = recording
        sas = sock.dump_sas()
        seq = sock._seq
    with open(out, "wb") as f:
        f.writelines(len(data).to_bytes(4, "little") + data for data in datagrams)
    return {"kernel": os.uname().release, "sas": len(sas), "seq": seq,
            "pcpu_sas": sum(sa.pcpu is not None for sa in sas),
            "algos": sorted({a.name for sa in sas for a in sa.algos})}


def main() -> int:
    from dissectors.esp import EspSa
    from dissectors.iana import EncrId, IntegId
    from dissectors.records import Secret
    from peer.kernel import XfrmWriter

    n, out = int(sys.argv[1]), Path(sys.argv[2])
    cpus = os.cpu_count() or 1
    writer = XfrmWriter()
    for i in range(n):
        outbound = bool(i % 2)
        esp = EspSa(0xC2000000 + i, EncrId.AES_GCM_16, 256, Secret(os.urandom(36)), IntegId.NONE,
                    Secret(b""), "10.1.0.1", f"10.2.{i >> 8 & 0xFF}.{i & 0xFF}")
        writer.add_sa(esp, reqid=i // 3 + 1, dir=2 if outbound else 1,
                      pcpu=(None, 0, 1 % cpus)[i % 3] if outbound else None, mode=1,
                      encap=(4500, 4500) if i % 4 == 0 else None, replay_window=0 if outbound else 32)
    writer.close()
    print(json.dumps(record_dump(None, out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

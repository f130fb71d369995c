"""Sample captures built with the codec (``tests.ikesim``), for what the reference peer does not
speak. ``python3 -m tests.make_samples samples`` rewrites them; tests build them afresh too.

- ``prerfc-cpu-queues``: the pre-RFC per-CPU negotiation of
  draft-pwouters-ipsecme-multi-sa-performance-02 (strongSwan's proof of concept): CPU_QUEUES
  (40970, 4-octet count) both ways with the fallback SA in IKE_AUTH, then two additional
  per-CPU Child SAs whose CREATE_CHILD_SA request and response carry CPU_QUEUE_INFO (40971),
  one empty, one with identifying data.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dissectors.iana import NotifyType
from tests import ikesim


def prerfc_cpu_queues(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    conv = ikesim.Conversation(source="capture.pcap")
    queues = ikesim.notify(NotifyType.CPU_QUEUES, (2).to_bytes(4, "big"))
    conv.ike_sa_init()
    fallback = conv.ike_auth(None, None, req_extra=[queues], resp_extra=[queues]).child
    conv.esp(fallback, 2)
    m1 = conv.create_child("I", None, None, req_extra=[ikesim.notify(NotifyType.CPU_QUEUE_INFO)],
                           resp_extra=[ikesim.notify(NotifyType.CPU_QUEUE_INFO)]).child
    m2 = conv.create_child("I", None, None, req_extra=[ikesim.notify(NotifyType.CPU_QUEUE_INFO, b"cpu-q1")],
                           resp_extra=[ikesim.notify(NotifyType.CPU_QUEUE_INFO, b"cpu-q1")]).child
    conv.esp(m1, 2)
    conv.esp(m2, 2)
    capture = folder / "capture.pcap"
    ikesim.write_pcap(capture, conv.records, encrypt=True)
    ikesim.write_key_table(folder / "ikev2_decryption_table", conv.records)
    return capture


SAMPLES = {"prerfc-cpu-queues": prerfc_cpu_queues}


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "samples")
    for name, build in SAMPLES.items():
        print(build(out / name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

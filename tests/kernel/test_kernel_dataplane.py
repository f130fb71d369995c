"""peer/kernel.py on the host kernel (XFRM netlink, no ESP): what can be checked without a VM.

The full data path (valid SAs, moving counters, the peer end to end) runs in the kernel tiers
(guest_pcpu.py, guest_peer.py); here: the NEWSA encoding against the monitor's decoder, the
policy writer against the real kernel in a throw-away netns, one-line errors.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from dissectors.iana import EncrId, IntegId
from dissectors.records import Secret
from dissectors.xfrm import (
    XFRM_POLICY_CPU_ACQUIRE,
    Mode,
    PolicyDir,
    SaDir,
    XfrmSocket,
    parse_messages,
    sa_from_msg,
    xfrm_usersa_info,
)
from dissectors.esp import EspSa
from peer.kernel import (
    AEAD,
    KernelDataplane,
    KernelError,
    XfrmWriter,
    _alg,
    _usersa_keyed,
)

KEY = bytes(range(1, 37))


def test_newsa_encoding_decodes_with_the_monitor_classes_and_hides_the_key():
    xfrm_usersa_info()  # the monitor's class used first in this process (pyroute2 caches per class)
    m = _usersa_keyed()
    m["id_daddr"], m["id_spi"], m["id_proto"] = bytes([192, 0, 2, 2]) + bytes(12), 0xC0DE0001, 50
    m["saddr"], m["family"], m["mode"], m["reqid"] = bytes([192, 0, 2, 1]) + bytes(12), 2, 1, 7
    name, icv = AEAD[EncrId.AES_GCM_16]
    m["attrs"] = [("XFRMA_ALG_AEAD", _alg(name, KEY, icv)), ("XFRMA_SA_DIR", 2), ("XFRMA_SA_PCPU", 1)]
    m["header"] = {"type": 0x10, "flags": 1, "sequence_number": 1}
    m.encode()
    assert KEY in bytes(m.data)  # the kernel needs it ...
    [(_hdr, msg)] = list(parse_messages(bytes(m.data)))
    sa = sa_from_msg(msg)
    assert (sa.spi, sa.reqid, sa.dir, sa.pcpu, sa.src, sa.dst) == (0xC0DE0001, 7, 2, 1, "192.0.2.1", "192.0.2.2")
    assert [(a.kind, a.name, a.key_len, a.icv_len) for a in sa.algos] == [("aead", "rfc4106(gcm(aes))", 288, 128)]
    assert KEY.hex() not in repr(sa)  # ... the record never carries it


def test_unknown_kernel_fault_is_refused():
    with pytest.raises(ValueError, match="unknown kernel fault 'nope'"):
        KernelDataplane(["nope"])


needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")


@pytest.fixture
def netns():
    name = f"msakdp{os.getpid() % 100000}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield name
    subprocess.run(["ip", "netns", "del", name], check=False)


@needs_root
def test_policies_written_to_the_real_kernel_read_back(netns):
    import ipaddress

    w = XfrmWriter(netns)
    try:
        a, b = ipaddress.ip_network("198.51.100.0/24"), ipaddress.ip_network("203.0.113.0/24")
        w.add_policy(a, b, dir=PolicyDir.OUT, flags=XFRM_POLICY_CPU_ACQUIRE, reqid=3, tmpl_src="192.0.2.1",
                     tmpl_dst="192.0.2.2", mode=Mode.TUNNEL)
        w.add_policy(b, a, dir=PolicyDir.IN, flags=0, reqid=3, tmpl_src="192.0.2.2", tmpl_dst="192.0.2.1",
                     mode=Mode.TUNNEL)
        with XfrmSocket(netns) as s:
            pols = {p.dir: p for p in s.dump_policies()}
        assert pols[PolicyDir.OUT].flags == XFRM_POLICY_CPU_ACQUIRE
        assert pols[PolicyDir.OUT].templates[0].reqid == 3 and pols[PolicyDir.IN].flags == 0
        w.del_policy(a, b, dir=PolicyDir.OUT)
        with XfrmSocket(netns) as s:
            assert [p.dir for p in s.dump_policies()] == [PolicyDir.IN]
    finally:
        w.close()


@needs_root
def test_a_refused_sa_is_one_line_without_key_bytes(netns):
    esp = EspSa(0xC0DE0002, EncrId.AES_CBC, 128, Secret(KEY[:16]), IntegId.AUTH_HMAC_SHA2_256_128,
                Secret(KEY[:32]), "192.0.2.1", "192.0.2.2")
    w = XfrmWriter(netns)
    try:  # the host kernel has no ESP (EPROTONOSUPPORT); an ESP kernel refuses pcpu without a valid CPU
        w.add_sa(esp, reqid=1, dir=SaDir.OUT, pcpu=4096, mode=Mode.TUNNEL, encap=None, replay_window=0)
    except KernelError as err:
        text = str(err)
        assert text.startswith("NEWSA 0xc0de0002: kernel answered E") and "\n" not in text
        assert KEY[:16].hex() not in text
    else:
        pytest.fail("the kernel accepted an SA on CPU 4096")
    finally:
        w.close()

"""Test-only XFRM writer: puts larval SAs (ALLOCSPI) and policies into a throw-away netns.

This is the *only* code in the project that sends state-changing XFRM messages, and it lives
under tests/: the product (``dissectors.xfrm.XfrmSocket``) refuses to. It reuses the product's
message classes, so a test that dumps what this wrote checks both directions of the codec
against the real kernel.
"""

from __future__ import annotations

import ipaddress
import os
import socket

from pyroute2 import netns as pr2netns
from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR

from dissectors.xfrm import (
    NETLINK_XFRM,
    XFRM_INF,
    XfrmMsg,
    parse_messages,
    sa_from_msg,
    xfrm_userpolicy_id,
    xfrm_userpolicy_info,
    xfrm_userspi_info,
)

NLM_F_CREATE, NLM_F_EXCL = 0x400, 0x200


def _a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed.ljust(16, b"\0")


class XfrmWriter:
    def __init__(self, netns: str):
        self.sock = pr2netns.create_socket(netns=f"/run/netns/{netns}", family=socket.AF_NETLINK,
                                           socket_type=socket.SOCK_RAW, proto=NETLINK_XFRM,
                                           flags=0)
        self.sock.bind((0, 0))
        self.seq = 100

    def close(self):
        self.sock.close()

    def _request(self, msg, msg_type: int, flags: int):
        self.seq += 1
        msg["header"] = {"type": msg_type, "flags": flags, "sequence_number": self.seq}
        msg.encode()
        self.sock.send(bytes(msg.data))
        while True:
            for hdr, reply in parse_messages(self.sock.recv(65536)):
                if hdr["sequence_number"] != self.seq:
                    continue
                if hdr["type"] == NLMSG_ERROR:
                    if hdr["error"]:
                        raise OSError(hdr["error"], os.strerror(hdr["error"]))
                    return None
                return reply

    def allocspi(self, src: str, dst: str, *, reqid: int, spi_min: int, spi_max: int,
                 dir: int | None = None, pcpu: int | None = None, seq: int = 0):
        """XFRM_MSG_ALLOCSPI: a larval ESP SA in tunnel mode; returns the kernel's NEWSA as a
        record."""
        m = xfrm_userspi_info()
        m["info_id_daddr"], m["info_id_proto"] = _a(dst), 50
        m["info_saddr"], m["info_family"], m["info_mode"] = _a(src), socket.AF_INET, 1
        m["info_reqid"], m["info_seq"] = reqid, seq
        for k in ("soft_byte_limit", "hard_byte_limit", "soft_packet_limit", "hard_packet_limit"):
            m["info_lft_" + k] = XFRM_INF
        m["min"], m["max"] = spi_min, spi_max
        attrs = []
        if dir is not None:
            attrs.append(("XFRMA_SA_DIR", dir))
        if pcpu is not None:
            attrs.append(("XFRMA_SA_PCPU", pcpu))
        m["attrs"] = attrs
        reply = self._request(m, XfrmMsg.ALLOCSPI, NLM_F_REQUEST)
        return sa_from_msg(reply)

    def add_policy(self, src_net: str, dst_net: str, *, dir: int, flags: int, priority: int,
                   index: int = 0, tmpl_src: str, tmpl_dst: str, reqid: int):
        """XFRM_MSG_NEWPOLICY with one ESP tunnel template."""
        s, d = ipaddress.ip_network(src_net), ipaddress.ip_network(dst_net)
        m = xfrm_userpolicy_info()
        m["sel_saddr"], m["sel_daddr"] = _a(str(s.network_address)), _a(str(d.network_address))
        m["sel_prefixlen_s"], m["sel_prefixlen_d"] = s.prefixlen, d.prefixlen
        m["sel_family"] = socket.AF_INET
        for k in ("soft_byte_limit", "hard_byte_limit", "soft_packet_limit", "hard_packet_limit"):
            m["lft_" + k] = XFRM_INF
        m["priority"], m["index"], m["dir"], m["flags"] = priority, index, dir, flags
        m["attrs"] = [("XFRMA_TMPL", [{
            "id_daddr": _a(tmpl_dst), "id_spi": 0, "id_proto": 50, "family": socket.AF_INET,
            "saddr": _a(tmpl_src), "reqid": reqid, "mode": 1, "share": 0, "optional": 0,
            "aalgos": 0xFFFFFFFF, "ealgos": 0xFFFFFFFF, "calgos": 0xFFFFFFFF}])]
        self._request(m, XfrmMsg.NEWPOLICY, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)

    def delete_policy(self, *, dir: int, index: int):
        m = xfrm_userpolicy_id()
        m["index"], m["dir"] = index, dir
        self._request(m, XfrmMsg.DELPOLICY, NLM_F_REQUEST | NLM_F_ACK)

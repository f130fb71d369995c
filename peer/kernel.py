"""The reference peer's kernel data plane (``--dataplane kernel``): negotiated SAs go to XFRM.

Instead of sealing ESP in userspace workers, the peer installs every Child SA it negotiates
into the Linux kernel over XFRM netlink, the way strongSwan 6 does on a Linux >= 6.13 gateway
with per-CPU SAs (RFC 9611 on Linux: ``XFRMA_SA_PCPU``, ``XFRM_POLICY_CPU_ACQUIRE``):

- the initial (fallback) Child SA: outbound without ``XFRMA_SA_PCPU``, inbound, both with
  ``XFRMA_SA_DIR``;
- each per-resource Child SA: outbound with ``XFRMA_SA_PCPU`` = the CPU of its resource
  (``Node.cpu_of``), inbound with the same CPU (as strongSwan does);
- every inbound SA (RFC 9611 §4: all of them must be installed);
- per TS pair one reqid and an outbound policy with ``XFRM_POLICY_CPU_ACQUIRE`` (per-CPU
  groups) and an inbound policy, ESP templates carrying the group's reqid;
- ESP in UDP (RFC 3948) on the NAT-T port, as the userspace data plane sends it: the SAs carry
  ``XFRMA_ENCAP`` and the NAT-T socket is switched to ``UDP_ENCAP_ESPINUDP`` so the kernel
  takes ESP off it while IKE (behind the Non-ESP marker) still reaches the peer.

The traffic is plain UDP from one sender process per resource pinned to its CPU (inner
addresses: the first host of each side's TS, which must be a local address / routed on the
test host); the kernel picks the SA of the sending CPU. This is the only state-changing XFRM
code of the product: it lives in ``peer/``; the monitor (``dissectors.xfrm.XfrmSocket``)
stays read-only. The message classes are the monitor's (``dissectors.xfrm``); only the key
carrying algorithm attributes are packed here, and keys never reach a log or an error.

Kernel faults (``--kernel-fault``), each breaking one rule the correlation checks:
``skip-inbound`` (the inbound SA of the first per-resource Child SA is left out of the SAD),
``same-cpu`` (every per-resource outbound SA on the CPU of resource 0), ``fallback-pcpu``
(the fallback SA carries ``XFRMA_SA_PCPU``), ``no-cpu-acquire`` (outbound policy without it).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import multiprocessing as mp
import os
import signal
import socket
import struct
import time
from dataclasses import dataclass, field

from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR

from dissectors.iana import EncrId, IntegId
from dissectors.xfrm import (
    NETLINK_XFRM,
    XFRM_INF,
    XFRM_POLICY_CPU_ACQUIRE,
    Mode,
    PolicyDir,
    SaDir,
    XfrmMsg,
    parse_messages,
    xfrm_userpolicy_id,
    xfrm_userpolicy_info,
    xfrm_usersa_id,
    xfrm_usersa_info,
)

log = logging.getLogger("multisa.peer")

NLM_F_CREATE, NLM_F_EXCL = 0x400, 0x200
SOL_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP = 17, 100, 2
IPPROTO_ESP = 50
REPLAY_WINDOW_IN = 32
KERNEL_FAULTS = ("skip-inbound", "same-cpu", "fallback-pcpu", "no-cpu-acquire")

# IANA transform -> (kernel algorithm name, ICV / truncation bits); RFC 4106/3686/7634 names
AEAD = {EncrId.AES_GCM_16: ("rfc4106(gcm(aes))", 128), EncrId.AES_GCM_12: ("rfc4106(gcm(aes))", 96),
        EncrId.AES_GCM_8: ("rfc4106(gcm(aes))", 64), EncrId.AES_CCM_16: ("rfc4309(ccm(aes))", 128),
        EncrId.AES_CCM_12: ("rfc4309(ccm(aes))", 96), EncrId.AES_CCM_8: ("rfc4309(ccm(aes))", 64),
        EncrId.CHACHA20_POLY1305: ("rfc7539esp(chacha20,poly1305)", 128)}
CRYPT = {EncrId.AES_CBC: "cbc(aes)", EncrId.AES_CTR: "rfc3686(ctr(aes))", EncrId.TRIPLE_DES: "cbc(des3_ede)",
         EncrId.NULL: "ecb(cipher_null)"}
AUTH = {IntegId.AUTH_HMAC_SHA2_256_128: ("hmac(sha256)", 128), IntegId.AUTH_HMAC_SHA2_384_192: ("hmac(sha384)", 192),
        IntegId.AUTH_HMAC_SHA2_512_256: ("hmac(sha512)", 256), IntegId.AUTH_HMAC_SHA1_96: ("hmac(sha1)", 96),
        IntegId.AUTH_HMAC_MD5_96: ("hmac(md5)", 96), IntegId.AUTH_AES_XCBC_96: ("xcbc(aes)", 96)}
_KEYED = {"XFRMA_ALG_AEAD", "XFRMA_ALG_CRYPT", "XFRMA_ALG_AUTH_TRUNC"}


class KernelError(OSError):
    """One line: what the kernel refused (never key bytes)."""


class _usersa_keyed(xfrm_usersa_info):
    """``xfrm_usersa_info`` whose algorithm attributes carry their key (packed by ``_alg``)."""

    nla_map = tuple((i, n, "cdata" if n in _KEYED else t) for i, n, t in xfrm_usersa_info.nla_map)
    # pyroute2 caches the compiled NLA table on the class (name-mangled ``__compiled_nla``); a
    # subclass inherits the parent's flag once the parent was used, and would then encode with the
    # parent's table (the key as a struct). Its own caches make it compile its own map.
    _nlmsg_base__compiled_nla = False
    _nlmsg_base__t_nla_map = None
    _nlmsg_base__r_nla_map = None


def _alg(name: str, key: bytes, extra: int | None = None) -> bytes:
    """struct xfrm_algo / xfrm_algo_auth / xfrm_algo_aead followed by the key."""
    head = struct.pack("64sI", name.encode(), len(key) * 8)
    return head + (struct.pack("I", extra) if extra is not None else b"") + key


def _a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed.ljust(16, b"\0")


def _family(text: str) -> int:
    return socket.AF_INET6 if ":" in text else socket.AF_INET


def _nets(tss) -> list:
    out = []
    for ts in tss:
        out += ipaddress.summarize_address_range(ipaddress.ip_address(ts.start_address),
                                                 ipaddress.ip_address(ts.end_address))
    return out


def _inf(msg, prefix: str) -> None:
    for k in ("soft_byte_limit", "hard_byte_limit", "soft_packet_limit", "hard_packet_limit"):
        msg[prefix + k] = XFRM_INF


class XfrmWriter:
    """A NETLINK_XFRM socket that changes state (NEWSA/DELSA/NEWPOLICY/DELPOLICY), acked."""

    def __init__(self, netns: str | None = None) -> None:
        if netns is None:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
        else:
            from pyroute2 import netns as pr2netns

            path = netns if "/" in netns else f"/run/netns/{netns}"
            self.sock = pr2netns.create_socket(netns=path, family=socket.AF_NETLINK,
                                               socket_type=socket.SOCK_RAW, proto=NETLINK_XFRM, flags=0)
        self.sock.bind((0, 0))
        self.seq = int(time.time()) & 0xFFFF

    def close(self) -> None:
        self.sock.close()

    def request(self, msg, msg_type: int, flags: int = 0, what: str = "") -> None:
        self.seq += 1
        msg["header"] = {"type": msg_type, "flags": NLM_F_REQUEST | NLM_F_ACK | flags, "sequence_number": self.seq}
        msg.encode()
        self.sock.send(bytes(msg.data))
        while True:
            for hdr, _reply in parse_messages(self.sock.recv(65536)):
                if hdr["sequence_number"] == self.seq and hdr["type"] == NLMSG_ERROR:
                    if hdr["error"]:
                        raise KernelError(f"{what or XfrmMsg(msg_type).name}: kernel answered "
                                          f"{errno.errorcode.get(hdr['error'], hdr['error'])} "
                                          f"({os.strerror(hdr['error'])})")
                    return

    def add_sa(self, esp, *, reqid: int, dir: int, pcpu: int | None, mode: int,
               encap: tuple[int, int] | None, replay_window: int) -> None:
        """XFRM_MSG_NEWSA for one direction (``dissectors.esp.EspSa``) of a Child SA."""
        m = _usersa_keyed()
        fam = _family(esp.dst)
        m["id_daddr"], m["id_spi"], m["id_proto"] = _a(esp.dst), esp.spi, IPPROTO_ESP
        m["saddr"], m["family"], m["mode"], m["reqid"] = _a(esp.src), fam, mode, reqid
        m["sel_family"] = fam  # an all-zero selector of our family: any inner traffic
        m["replay_window"] = replay_window
        _inf(m, "lft_")
        key = bytes(esp.encr_key)
        attrs = []
        if esp.encr in AEAD:
            name, icv = AEAD[esp.encr]
            attrs.append(("XFRMA_ALG_AEAD", _alg(name, key, icv)))
        elif esp.encr in CRYPT:
            attrs.append(("XFRMA_ALG_CRYPT", _alg(CRYPT[esp.encr], key)))
            if esp.integ in AUTH:
                name, trunc = AUTH[esp.integ]
                attrs.append(("XFRMA_ALG_AUTH_TRUNC", _alg(name, bytes(esp.integ_key), trunc)))
            elif esp.integ != IntegId.NONE:
                raise KernelError(f"SPI 0x{esp.spi:08x}: integrity transform {esp.integ} has no kernel name here")
        else:
            raise KernelError(f"SPI 0x{esp.spi:08x}: encryption transform {esp.encr} has no kernel name here")
        if encap is not None:
            attrs.append(("XFRMA_ENCAP", {"encap_type": UDP_ENCAP_ESPINUDP, "encap_sport": encap[0],
                                          "encap_dport": encap[1], "encap_oa": bytes(16)}))
        attrs.append(("XFRMA_SA_DIR", dir))
        if pcpu is not None:
            attrs.append(("XFRMA_SA_PCPU", pcpu))
        m["attrs"] = attrs
        self.request(m, XfrmMsg.NEWSA, NLM_F_CREATE | NLM_F_EXCL, f"NEWSA 0x{esp.spi:08x}")

    def del_sa(self, dst: str, spi: int) -> None:
        m = xfrm_usersa_id()
        m["daddr"], m["spi"], m["family"], m["proto"] = _a(dst), spi, _family(dst), IPPROTO_ESP
        self.request(m, XfrmMsg.DELSA, 0, f"DELSA 0x{spi:08x}")

    def add_policy(self, src_net, dst_net, *, dir: int, flags: int, reqid: int, tmpl_src: str,
                   tmpl_dst: str, mode: int, priority: int = 1000) -> None:
        m = xfrm_userpolicy_info()
        fam = socket.AF_INET6 if src_net.version == 6 else socket.AF_INET
        m["sel_saddr"], m["sel_daddr"] = _a(str(src_net.network_address)), _a(str(dst_net.network_address))
        m["sel_prefixlen_s"], m["sel_prefixlen_d"], m["sel_family"] = src_net.prefixlen, dst_net.prefixlen, fam
        _inf(m, "lft_")
        m["priority"], m["dir"], m["flags"] = priority, dir, flags
        m["attrs"] = [("XFRMA_TMPL", [{
            "id_daddr": _a(tmpl_dst), "id_spi": 0, "id_proto": IPPROTO_ESP, "family": _family(tmpl_dst),
            "saddr": _a(tmpl_src), "reqid": reqid, "mode": mode, "share": 0, "optional": 0,
            "aalgos": 0xFFFFFFFF, "ealgos": 0xFFFFFFFF, "calgos": 0xFFFFFFFF}])]
        self.request(m, XfrmMsg.UPDPOLICY, NLM_F_CREATE, f"policy {src_net} -> {dst_net} dir {dir}")

    def del_policy(self, src_net, dst_net, *, dir: int) -> None:
        m = xfrm_userpolicy_id()
        fam = socket.AF_INET6 if src_net.version == 6 else socket.AF_INET
        m["sel_saddr"], m["sel_daddr"] = _a(str(src_net.network_address)), _a(str(dst_net.network_address))
        m["sel_prefixlen_s"], m["sel_prefixlen_d"], m["sel_family"] = src_net.prefixlen, dst_net.prefixlen, fam
        m["dir"] = dir
        self.request(m, XfrmMsg.DELPOLICY, 0, f"DELPOLICY {src_net} -> {dst_net}")


@dataclass
class _Installed:
    sas: list[tuple[str, int]] = field(default_factory=list)  # (dst, spi)
    policies: list[tuple] = field(default_factory=list)  # (src_net, dst_net, dir)


def sender_main(index: int, cpu: int, src: str, dst: str, rate: float, size: int, duration: float,
                stop) -> None:
    """One resource's plain-UDP traffic, pinned to its CPU: the kernel picks that CPU's SA."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):
        pass
    s = socket.socket(_family(src), socket.SOCK_DGRAM)
    try:
        s.bind((src, 10000 + index))
    except OSError:
        pass  # not a local address: the kernel picks one (the policy may then not match)
    interval = 1.0 / rate if rate > 0 else 0.0
    start = due = time.monotonic()
    payload = bytes(size)
    while time.monotonic() - start < duration and not stop.is_set():
        try:
            s.sendto(payload, (dst, 9))
        except OSError:
            pass  # e.g. EAGAIN while an ACQUIRE is pending: the packet is dropped
        if interval:
            due += interval
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    s.close()


class KernelDataplane:
    """Installs a ``Node``'s Child SAs into XFRM and drives plain traffic through them."""

    def __init__(self, faults: list[str] | None = None, keep: bool = False, netns: str | None = None) -> None:
        self.faults = set(faults or ())
        unknown = self.faults - set(KERNEL_FAULTS)
        if unknown:
            raise ValueError(f"unknown kernel fault {min(unknown)!r} (one of {', '.join(KERNEL_FAULTS)})")
        self.keep = keep
        self.netns = netns
        self.node = None
        self.writer: XfrmWriter | None = None
        self.reqids: dict[tuple, int] = {}
        self.installed = _Installed()
        self.skipped_inbound = False
        self.senders: list[mp.Process] = []
        self.ctx = mp.get_context("fork")
        self.stop_event = self.ctx.Event()
        self.sink: socket.socket | None = None
        self.started = False

    # -- hooks called by Node --------------------------------------------------------------

    def attach(self, node) -> None:
        """After the node bound its sockets: open XFRM, let the kernel take ESP off NAT-T."""
        self.node = node
        try:
            self.writer = XfrmWriter(self.netns)
        except PermissionError:
            raise KernelError("--dataplane kernel needs CAP_NET_ADMIN (run as root)") from None
        except OSError as err:
            raise KernelError(f"cannot open XFRM netlink: {err.strerror}") from None
        node.sock_natt.setsockopt(SOL_UDP, UDP_ENCAP, UDP_ENCAP_ESPINUDP)
        local = _host1(node.cfg.local_ts)
        try:  # absorb the peer's traffic (no ICMP port unreachable going back through the SAs)
            self.sink = socket.socket(_family(local), socket.SOCK_DGRAM)
            self.sink.bind((local, 9))
        except OSError:
            self.sink = None

    def _reqid(self, key: tuple) -> int:
        return self.reqids.setdefault(key, len(self.reqids) + 1)

    def child_installed(self, ike, child) -> None:
        if (child.outbound.dst, child.outbound.spi) in self.installed.sas:
            return  # told twice (a rekey is reported by both exchanges of a collision)
        node = self.node
        key = child.ts_key
        new_group = key not in self.reqids
        reqid = self._reqid(key)
        mode = Mode.TRANSPORT if child.transport else Mode.TUNNEL
        encap = (node.natt_port, ike.remote[1]) if ike.natt else None
        rencap = (ike.remote[1], node.natt_port) if ike.natt else None
        per_cpu = child.resource is not None
        if per_cpu:
            res = 0 if "same-cpu" in self.faults else child.resource
            pcpu = node.cpu_of(res)
        else:
            pcpu = 0 if "fallback-pcpu" in self.faults else None
        w = self.writer
        if per_cpu and "skip-inbound" in self.faults and not self.skipped_inbound:
            self.skipped_inbound = True
            log.info("kernel fault skip-inbound: inbound SA 0x%08x left out of the SAD", child.inbound.spi)
        else:
            w.add_sa(child.inbound, reqid=reqid, dir=SaDir.IN, pcpu=pcpu if per_cpu else None, mode=mode,
                     encap=rencap, replay_window=REPLAY_WINDOW_IN)
            self.installed.sas.append((child.inbound.dst, child.inbound.spi))
        self.installed.sas.append((child.outbound.dst, child.outbound.spi))  # claimed: no second install
        try:  # the outbound half after our IKE response has gone out (it is sent when we return)
            asyncio.get_running_loop().call_soon(self._install_outbound, ike, child, reqid, pcpu, mode, encap,
                                                 new_group)
        except RuntimeError:  # no event loop (direct use)
            self._install_outbound(ike, child, reqid, pcpu, mode, encap, new_group)

    def _install_outbound(self, ike, child, reqid: int, pcpu: int | None, mode: int, encap, new_group: bool) -> None:
        cfg, w = self.node.cfg, self.writer
        try:
            w.add_sa(child.outbound, reqid=reqid, dir=SaDir.OUT, pcpu=pcpu, mode=mode, encap=encap,
                     replay_window=0)
        except KernelError as err:
            log.error("%s", err)
            self.installed.sas.remove((child.outbound.dst, child.outbound.spi))
            return
        if new_group:
            flags = XFRM_POLICY_CPU_ACQUIRE if cfg.resource_info and "no-cpu-acquire" not in self.faults else 0
            lsrc, ldst = child.outbound.src, child.outbound.dst
            for ln in _nets(child.local_ts):
                for rn in _nets(child.remote_ts):
                    w.add_policy(ln, rn, dir=PolicyDir.OUT, flags=flags, reqid=reqid, tmpl_src=lsrc,
                                 tmpl_dst=ldst, mode=mode)
                    w.add_policy(rn, ln, dir=PolicyDir.IN, flags=0, reqid=reqid, tmpl_src=ldst,
                                 tmpl_dst=lsrc, mode=mode)
                    self.installed.policies += [(ln, rn, PolicyDir.OUT), (rn, ln, PolicyDir.IN)]
        log.info("kernel: Child SA %08x/%08x installed (reqid %d, %s)", child.spi_in, child.spi_out, reqid,
                 f"pcpu {pcpu}" if pcpu is not None else "fallback")
        self._maybe_start(ike)

    def child_deleted(self, ike, child) -> None:
        for dst, spi in ((child.outbound.dst, child.outbound.spi), (child.inbound.dst, child.inbound.spi)):
            if (dst, spi) in self.installed.sas:
                try:
                    self.writer.del_sa(dst, spi)
                except KernelError as err:
                    log.warning("%s", err)
                self.installed.sas.remove((dst, spi))

    def _maybe_start(self, ike) -> None:
        """Traffic starts once every resource has its SA (no ACQUIRE, no drops), or 1 s after
        the fallback SA at the latest."""
        node = self.node
        cfg = node.cfg
        if self.started or cfg.rate <= 0:
            return
        live = ike.live() if hasattr(ike, "live") else ike
        per = {c.resource for c in live.children.values() if c.state == "installed" and c.resource is not None}
        if not cfg.resource_info or len(per) >= cfg.resources:
            self._start(ike)
        else:
            asyncio.get_running_loop().call_later(1.0, self._start, ike)

    def _start(self, ike) -> None:
        if self.started:
            return
        self.started = True
        node = self.node
        cfg = node.cfg
        src = getattr(ike, "remote_access_address", None) or _host1(cfg.local_ts)
        dst = _host1(cfg.remote_ts)
        for r in range(max(1, cfg.resources)):
            p = self.ctx.Process(target=sender_main, name=f"multisa-udp-{r}", daemon=True,
                                 args=(r, node.cpu_of(r), src, dst, cfg.rate, cfg.size, cfg.duration,
                                       self.stop_event))
            p.start()
            self.senders.append(p)
        log.info("kernel: %d senders started (pids %s)", len(self.senders), ",".join(str(p.pid) for p in self.senders))

    def stop_traffic(self) -> None:
        self.stop_event.set()
        for p in self.senders:
            p.join(timeout=2)
            if p.is_alive():
                p.terminate()  # by PID, only our own child
                p.join(timeout=1)

    def close(self) -> None:
        """At exit: remove what we installed, unless ``keep`` (for snapshots after the run)."""
        self.stop_traffic()
        if self.writer is None:
            return
        if not self.keep:
            for dst, spi in self.installed.sas:
                try:
                    self.writer.del_sa(dst, spi)
                except KernelError:
                    pass
            for src, dst, d in self.installed.policies:
                try:
                    self.writer.del_policy(src, dst, dir=d)
                except KernelError:
                    pass
        self.writer.close()
        if self.sink is not None:
            self.sink.close()


def _host1(cidr: str) -> str:
    net = ipaddress.ip_network(cidr, strict=False)
    return str(net.network_address + 1) if net.num_addresses > 1 else str(net.network_address)

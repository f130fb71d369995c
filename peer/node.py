"""The reference peer at run time: sockets, timers, the Child SA group plan, workers, status.

One ``Node`` is one ``multisa peer responder`` or ``initiator`` process. It binds the IKE port
and the NAT-T port (RFC 3948: IKE behind the Non-ESP marker and ESP-in-UDP share it), feeds
IKE datagrams to ``IkeSa`` and ESP datagrams to the receiver (decrypt, anti-replay, count),
plans the per-resource Child SAs of RFC 9611 (initiator), forks one ``worker`` per resource,
writes the key files (``KeyLog``) and the JSON status file, and stops by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import multiprocessing as mp
import os
import socket
import struct
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from dissectors.iana import DhGroup, ExchangeType, NotifyType, PrfId, ProtocolId
from dissectors.ikev2.message import IkeMessage, parse_message
from dissectors.ikev2.payloads import NoncePayload, NotifyPayload

from .config import PeerConfig
from dissectors.esp import EspError, EspIntegrityError, ReplayWindow
from .ike import ChildSa, IkeError, IkeSa, child_request, notify, subnet_ts
from .proposals import parse_suite
from .worker import FALLBACK_SLOTS, ROW, SLOTS, WorkerPlan, worker_main

log = logging.getLogger("multisa.peer")

NON_ESP_MARKER = b"\0\0\0\0"


class KeyLog:
    """Appends Wireshark's ``ikev2_decryption_table`` and ``esp_sa`` lines (save-keys format),
    and multisa's own ``ikev2_sk_d`` (``SPIi,SPIr,SK_d,PRF``: what ``multisa esp --sk-d``
    derives every non-PFS Child SA's keys from, RFC 7296 §2.17)."""

    def __init__(self, directory: str) -> None:
        self.dir = Path(directory) if directory else None
        self.seen: set[str] = set()
        if self.dir:
            self.dir.mkdir(parents=True, exist_ok=True)

    def _write(self, name: str, line: str) -> None:
        if self.dir is None or line in self.seen:
            return
        self.seen.add(line)
        with open(self.dir / name, "a") as fh:
            fh.write(line + "\n")

    def ike(self, ike: IkeSa) -> None:
        km, integ = ike.km, ike.integ
        integ_name = integ.name if integ else "NONE [RFC4306]"
        self._write("ikev2_decryption_table",
                    f'{ike.spi_i.hex()},{ike.spi_r.hex()},{bytes(km.sk_ei).hex()},{bytes(km.sk_er).hex()},'
                    f'"{ike.encr.name}",{bytes(km.sk_ai).hex()},{bytes(km.sk_ar).hex()},"{integ_name}"')
        self._write("ikev2_sk_d", f"{ike.spi_i.hex()},{ike.spi_r.hex()},{bytes(km.sk_d).hex()},"
                                  f"{PrfId(ike.suite.prf).name}")

    def child(self, child: ChildSa) -> None:
        self._write("esp_sa", child.outbound.esp_sa_line())
        self._write("esp_sa", child.inbound.esp_sa_line())


@dataclass
class InboundCounters:
    child: ChildSa
    window: ReplayWindow = field(default_factory=ReplayWindow)
    packets: int = 0
    bytes: int = 0
    replay: int = 0
    integrity_failed: int = 0


@dataclass
class Worker:
    plan: WorkerPlan
    process: mp.Process
    conn: object


class Node:
    def __init__(self, cfg: PeerConfig, listen: tuple[str, int], natt_port: int = 4500,
                 remote: tuple[str, int] | None = None, remote_natt_port: int = 4500, once: bool = False) -> None:
        self.cfg = cfg
        self.listen = listen
        self.natt_port = natt_port
        self.remote_addr = remote
        self.remote_natt_port = remote_natt_port
        self.once = once
        self.local_host = listen[0]
        self.keylog = KeyLog(cfg.keys_dir)
        self.ike_sas: dict[tuple[bytes, bytes], IkeSa] = {}
        self.half_open: dict[bytes, IkeSa] = {}
        self.spis_in: set[int] = set()
        self.inbound: dict[int, InboundCounters] = {}
        self.resource_ids: dict[tuple, dict[int | None, bytes]] = {}
        self.used_ids: dict[tuple, set[bytes]] = {}
        self.refusals = 0
        self.workers: list[Worker] = []
        self.ctx = mp.get_context("fork")
        self.fallback_seqs = self.ctx.Array("Q", FALLBACK_SLOTS)  # one locked counter per fallback SA
        self.fallback_idx = 0
        self.history: list[IkeSa] = []  # every IKE SA that got keys, in order (status, after rekeys)
        self.collided: set[str] = set()
        self.cookie_secret = os.urandom(32)
        self.counters = self.ctx.RawArray("d", max(1, cfg.resources) * SLOTS * ROW)
        self.exit_code = 0
        self.done: asyncio.Event | None = None
        self.established: IkeSa | None = None
        self.events: list[str] = []
        self.sock_ike = self.sock_natt = None
        self.dataplane = None  # peer.kernel.KernelDataplane with --dataplane kernel

    # -- sockets --------------------------------------------------------------------------

    def _bind(self, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.local_host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.local_host, port))
        s.setblocking(False)
        return s

    def open(self) -> None:
        self.sock_ike = self._bind(self.listen[1])
        self.sock_natt = self._bind(self.natt_port)
        if self.dataplane is not None:
            self.dataplane.attach(self)  # the kernel takes ESP off the NAT-T socket

    def send(self, ike: IkeSa, data: bytes) -> None:
        try:
            if ike.natt:
                self.sock_natt.sendto(NON_ESP_MARKER + data, ike.remote)
            else:
                self.sock_ike.sendto(data, ike.remote)
        except OSError as err:
            log.warning("send to %s failed: %s", ike.remote[0], err.strerror)

    def _readable(self, sock: socket.socket, natt: bool) -> None:
        for _ in range(256):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                self.datagram(data, addr[:2], natt)
            except Exception as err:  # noqa: BLE001 - one bad datagram must never stop the peer
                log.warning("datagram from %s dropped: %s: %s", addr[0], type(err).__name__, err)

    def datagram(self, data: bytes, addr: tuple[str, int], natt: bool) -> None:
        if natt:
            if data == b"\xff":
                return  # NAT-keepalive
            if data[:4] != NON_ESP_MARKER:
                self.esp_received(data, addr)
                return
            data = data[4:]
        msg = parse_message(data)
        if msg.malformed is not None and not msg.payloads:
            log.warning("IKE message from %s dropped: %s", addr[0], msg.malformed)
            return
        ike = self.ike_sas.get((msg.spi_i, msg.spi_r))
        if ike is None and msg.exchange == 34:  # IKE_SA_INIT
            if msg.response:
                ike = self.half_open.get(msg.spi_i)
            elif msg.spi_r == bytes(8) and self.cfg.role == "responder":
                self._new_responder_sa(msg, addr, natt)
                return
        if ike is None:
            log.info("IKE message from %s for unknown SPIs %s/%s dropped", addr[0], msg.spi_i.hex(), msg.spi_r.hex())
            return
        if natt and not ike.natt and ike.state not in ("init-sent",):
            ike.natt = True
        if natt:
            ike.remote = addr
        ike.handle(msg)

    def _new_responder_sa(self, msg, addr, natt) -> None:
        again = next((s for s in self.half_open.values() if s.spi_i == msg.spi_i), None)
        if again is not None and again.last_response:
            again._send(again.last_response[1])
            return
        if self.cfg.cookies and not self._cookie_ok(msg, addr, natt):
            return
        now = time.time()
        for spi, s in list(self.half_open.items()):
            if now - s.created > 30:
                del self.half_open[spi]
                self.ike_sas.pop(s.spis, None)
        if len(self.half_open) >= self.cfg.max_half_open:
            log.warning("IKE_SA_INIT from %s dropped: %d half-open IKE SAs (limit)", addr[0], len(self.half_open))
            return
        ike = IkeSa(self, False, msg.spi_i, os.urandom(8), addr, self.listen)
        ike.natt = natt
        resp = ike.respond_init(msg)
        if resp is None:
            return
        self.send(ike, resp)
        if ike.state == "dead":
            return
        self.half_open[ike.spi_r] = ike
        self.ike_sas[ike.spis] = ike

    def _cookie_ok(self, msg, addr, natt: bool) -> bool:
        """RFC 7296 §2.6: Cookie = <VersionIDofSecret> | Hash(Ni | IPi | SPIi | <secret>). Without
        the right one, answer N(COOKIE) statelessly and keep nothing."""
        nonce = next((p for p in msg.payloads if isinstance(p, NoncePayload)), None)
        if nonce is None:
            return True  # respond_init answers INVALID_SYNTAX
        want = b"\x01" + hashlib.sha256(nonce.data + addr[0].encode() + msg.spi_i + self.cookie_secret).digest()[:16]
        got = next((p for p in msg.payloads if isinstance(p, NotifyPayload) and p.notify_type == NotifyType.COOKIE), None)
        if got is not None and hmac.compare_digest(got.data, want):
            return True
        out = IkeMessage(msg.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, 0, 0x20)
        out.payloads = [notify(NotifyType.COOKIE, want)]
        log.info("IKE_SA_INIT from %s answered with a COOKIE (%s)", addr[0], "wrong cookie" if got else "none")
        try:
            if natt:
                self.sock_natt.sendto(NON_ESP_MARKER + bytes(out), addr)
            else:
                self.sock_ike.sendto(bytes(out), addr)
        except OSError as err:
            log.warning("send to %s failed: %s", addr[0], err.strerror)
        return False

    # -- callbacks from IkeSa -------------------------------------------------------------

    def rekeyed_spis(self, ike: IkeSa) -> None:
        self.half_open.pop(ike.spi_i, None)
        self.ike_sas[ike.spis] = ike

    def new_ike_spi(self) -> bytes:
        while True:
            spi = os.urandom(8)
            if spi != bytes(8) and not any(spi in k for k in self.ike_sas):
                return spi

    def ike_registered(self, ike: IkeSa) -> None:
        """A new IKE SA from a rekey (ours or the peer's): reachable by its SPIs from now on."""
        self.ike_sas[ike.spis] = ike
        if ike not in self.history:
            self.history.append(ike)

    def ike_rekeyed(self, old: IkeSa, new: IkeSa) -> None:
        """§2.18: the Child SAs of ``old`` now live under ``new`` (keys already exported)."""
        if self.established is None or self.established is old or self.established.live() is new:
            self.established = new
        self.events.append("ike-rekeyed")
        log.info("IKE SA %s rekeyed to %s", old.name, new.name)

    def child_keyed(self, child: ChildSa) -> None:
        self.keylog.child(child)

    def new_spi(self) -> int:
        while True:
            spi = struct.unpack(">I", os.urandom(4))[0]
            if spi >= 256 and spi not in self.spis_in:
                self.spis_in.add(spi)
                return spi

    def esp_offer(self) -> list:
        suites = self.cfg.esp_suites
        if self.cfg.pfs and self.established is not None:
            suites = [s if s.dh else replace(s, dh=self.established.suite.dh) for s in suites]
        return suites

    def esp_accept(self) -> list:
        out = []
        for s in self.cfg.esp_suites:
            out.append(s)
            if not s.dh:
                out += [replace(s, dh=g) for g in (DhGroup.MODP_2048, DhGroup.ECP_256, DhGroup.CURVE25519)]
        return out

    def resource_info_notify(self, rid: bytes) -> NotifyPayload:
        """RFC 9611 §5.1: Protocol ID 0, SPI Size 0, C 0, the opaque resource id as data."""
        n = notify(NotifyType.SA_RESOURCE_INFO, rid)
        if self.cfg.fault("resource-info-protocol-id"):
            n.protocol_id = ProtocolId.ESP
        if self.cfg.fault("resource-info-spi-size"):
            n.spi = struct.pack(">I", 0x01020304)
        if self.cfg.fault("resource-info-critical"):
            n.critical = True
        return n

    def new_resource_id(self, key: tuple, resource: int | None, reuse: bool = False) -> bytes:
        """RFC 9611 §3, §7: opaque random octets, unique in the group, never the CPU number.

        Every new Child SA gets an id of its own (a rekey keeps its SA's id, §3), even when
        two SAs share a resource; ``reuse`` returns the latest id given to ``resource``.
        """
        group = self.resource_ids.setdefault(key, {})  # resource -> latest id
        used = self.used_ids.setdefault(key, set())
        if reuse and resource in group:
            return group[resource]
        if self.cfg.fault("cpu-number-resource-id") and resource is not None:
            rid = struct.pack(">I", self.cpu_of(resource))
        elif self.cfg.fault("duplicate-resource-id") and resource == 1 and 0 in group:
            rid = group[0]
        else:
            rid = os.urandom(4)
            while rid in used:
                rid = os.urandom(4)
        used.add(rid)
        group[resource] = rid
        return rid

    def cpu_of(self, resource: int) -> int:
        cpus = sorted(os.sched_getaffinity(0))
        return cpus[resource % len(cpus)]

    def least_loaded_resource(self, key: tuple) -> int:
        """RFC 9611 §4: the resource with the fewest Child SAs of this TS pair."""
        load = {r: 0 for r in range(self.cfg.resources)}
        for ike in self.ike_sas.values():
            for c in list(ike.children.values()):
                if c.state == "installed" and c.ts_key == key and c.resource is not None:
                    load[c.resource] = load.get(c.resource, 0) + 1
        return min(load, key=lambda r: (load[r], r))

    def plan_auth_child(self, ike: IkeSa):
        rid = b"" if self.cfg.resource_info else None  # §3: the initial SA is bound to no resource
        return child_request(self, None, rid)

    def ike_established(self, ike: IkeSa, child: ChildSa | None) -> None:
        self.half_open.pop(ike.spi_r, None)
        self.established = ike
        if ike not in self.history:
            self.history.append(ike)
        self.events.append("ike-established")
        if self.cfg.role == "responder" and (self.cfg.rekey_ike_after > 0 or self.cfg.rekey_child_after > 0
                                             or self.cfg.create_children > 0):
            asyncio.get_running_loop().create_task(self._responder_plan(ike))
        if self.cfg.role == "initiator":
            if child is None:
                self.exit_code = 1
                self._teardown(ike)
                return
            self.child_installed(ike, child)
            asyncio.get_running_loop().create_task(self._initiator_plan(ike))

    def child_installed(self, ike: IkeSa, child: ChildSa) -> None:
        if self.dataplane is not None:
            return self.dataplane.child_installed(ike, child)
        self.inbound[child.spi_in] = InboundCounters(child)
        if child.resource is None and not self.workers and self.cfg.rate > 0:
            # after our IKE_AUTH response has gone out: the peer must know the SA first
            asyncio.get_running_loop().call_later(0.05, self._start_workers, ike, child)
        elif child.resource is not None:
            w = self._worker(child.resource, shared=self.cfg.fault("shared-sa"))
            for wk in w:
                _safe_send(wk.conn, ("own", child.outbound))

    def child_rekeyed(self, ike: IkeSa, old: ChildSa, new: ChildSa) -> None:
        """§3: the new SA stays on the old one's resource; the fallback SA gets a fresh counter."""
        if self.dataplane is not None:
            return self.dataplane.child_installed(ike, new)
        if new.spi_in in self.inbound and self.inbound[new.spi_in].child is new:
            return
        self.inbound[new.spi_in] = InboundCounters(new)
        self.events.append("child-rekeyed")
        if new.resource is not None:
            for wk in self._worker(new.resource, shared=self.cfg.fault("shared-sa")):
                _safe_send(wk.conn, ("own", new.outbound))
        else:
            self.fallback_idx = (self.fallback_idx + 1) % len(self.fallback_seqs)
            self.fallback_seqs[self.fallback_idx] = 0
            for wk in self.workers:
                _safe_send(wk.conn, ("fallback", new.outbound, self.fallback_idx))

    def child_deleted(self, ike: IkeSa, child: ChildSa) -> None:
        if self.dataplane is not None:
            return self.dataplane.child_deleted(ike, child)
        # workers go on with the newest installed SA of the resource (after a rekey: the new one)
        live = [c for c in ike.live().children.values() if c.state == "installed" and c.resource == child.resource]
        if child.resource is None:
            for wk in self.workers:
                _safe_send(wk.conn, ("fallback", live[-1].outbound if live else None, self.fallback_idx))
            return
        for wk in self._worker(child.resource, shared=self.cfg.fault("shared-sa")):
            _safe_send(wk.conn, ("own", live[-1].outbound if live else None))

    def _worker(self, resource: int, shared: bool = False) -> list[Worker]:
        out = [w for w in self.workers if w.plan.index == resource]
        if shared and resource == 0:
            out += [w for w in self.workers if w.plan.index == 1]  # fault: worker 1 joins SA 0
        if shared and resource == 1:
            return []
        return out

    def ike_dead(self, ike: IkeSa) -> None:
        ike.state = "dead"
        self.ike_sas.pop(ike.spis, None)
        self.half_open.pop(ike.spi_r, None)
        self.half_open.pop(ike.spi_i, None)
        if ike.successor is not None or (self.established is not None and ike is not self.established
                                         and ike.live() is not self.established):
            log.info("IKE SA %s given up (rekeyed or redundant): the Child SAs live on", ike.name)
            return
        if self.cfg.role == "initiator" or self.once:
            self.exit_code = self.exit_code or 1
            self._finish()

    def ike_deleted(self, ike: IkeSa) -> None:
        self.ike_sas.pop(ike.spis, None)
        if ike.successor is not None or (self.established is not None and ike is not self.established):
            log.info("IKE SA %s deleted (rekeyed or redundant)", ike.name)
            return  # an old (rekeyed) or redundant IKE SA: the Child SAs live on elsewhere
        for c in ike.children.values():
            if c.state != "deleted":
                c.state = "deleted"
        self.events.append("ike-deleted")
        if self.cfg.role == "initiator" or self.once:
            self._finish()

    def collide_child(self, ike: IkeSa, old: ChildSa) -> None:
        """``--collide``: answer the peer's first Child SA rekey by rekeying the same SA at once
        (a simultaneous rekey, RFC 7296 §2.8.1), our request crossing theirs on the wire."""
        if "child" in self.collided or not self.cfg.collide:
            return
        self.collided.add("child")
        log.info("collide: rekeying Child SA %08x while the peer does", old.spi_in)
        ike.rekey_child(self._rekey_request(old), lambda child, why: None)

    def collide_ike(self, ike: IkeSa) -> None:
        """``--collide``: the same for the peer's first IKE SA rekey (§2.8.2)."""
        if "ike" in self.collided or not self.cfg.collide:
            return
        self.collided.add("ike")
        log.info("collide: rekeying IKE SA %s while the peer does", ike.name)
        ike.rekey_ike(lambda new, why: None)

    def _rekey_request(self, old: ChildSa):
        """§2.8: the same properties (suite, TS, mode) and, §3, the same resource and id."""
        resource, rid = old.resource, old.resource_id
        if self.cfg.fault("rekey-moves-resource") and old.resource is not None:
            resource = (old.resource + 1) % max(2, self.cfg.resources)
            rid = self.new_resource_id(old.ts_key, resource, reuse=True) if self.cfg.resource_info else None
        return child_request(self, resource, rid, old.suite.dh, old,
                             old.local_ts, old.remote_ts, transport=old.transport, suites=[old.suite])

    # -- workers and ESP ------------------------------------------------------------------

    def _start_workers(self, ike: IkeSa, fallback: ChildSa) -> None:
        if self.workers or fallback.state != "installed" or (self.done is not None and self.done.is_set()):
            return
        inner_src = ike.remote_access_address or _host1(self.cfg.local_ts)
        for r in range(self.cfg.resources):
            plan = WorkerPlan(r, self.cpu_of(r), ike.remote, self.cfg.rate, self.cfg.size, self.cfg.duration,
                              inner_src, _host1(self.cfg.remote_ts),
                              replay_gap=self.cfg.fault("esp-replay-gap") and r == 0)
            parent, child_conn = self.ctx.Pipe()
            proc = self.ctx.Process(target=worker_main, name=f"multisa-esp-{r}",
                                    args=(plan, self.sock_natt, fallback.outbound, self.fallback_seqs, child_conn,
                                          self.counters), daemon=True)
            proc.start()
            self.workers.append(Worker(plan, proc, parent))
        for c in ike.live().children.values():
            if c.state == "installed" and c.resource is not None:
                for wk in self._worker(c.resource, shared=self.cfg.fault("shared-sa")):
                    _safe_send(wk.conn, ("own", c.outbound))
        log.info("%d ESP workers started (pids %s)", len(self.workers), ",".join(str(w.process.pid) for w in self.workers))

    def esp_received(self, data: bytes, addr) -> None:
        if len(data) < 8:
            return
        spi, seq = struct.unpack_from(">II", data)
        entry = self.inbound.get(spi)
        if entry is None:
            return
        if not entry.window.check(seq):
            entry.replay += 1
            return
        try:
            _, inner, _ = entry.child.inbound.open(data)
        except EspIntegrityError:
            entry.integrity_failed += 1
            return
        except EspError:
            entry.integrity_failed += 1
            return
        entry.window.accept(seq)
        entry.packets += 1
        entry.bytes += len(inner)

    def status(self) -> dict:
        """Counters shaped like the kernel's XFRM state (``XfrmSaState``: pcpu, oseq/seq, curlft, stats)."""
        sas = []
        out_rows = {}
        for i in range(len(self.counters) // ROW):
            spi = int(self.counters[i * ROW])
            if spi:
                r = out_rows.setdefault(spi, {"packets": 0, "bytes": 0, "oseq": 0, "cpus": set()})
                r["packets"] += int(self.counters[i * ROW + 1])
                r["bytes"] += int(self.counters[i * ROW + 2])
                r["oseq"] = max(r["oseq"], int(self.counters[i * ROW + 3]))
                r["cpus"].add(int(self.counters[i * ROW + 4]))
        seen: set[int] = set()
        ikes = list(dict.fromkeys([*self.history, *self.ike_sas.values()]))
        for ike in ikes:
            for c in list(ike.children.values()):
                if c.spi_in in seen:
                    continue
                seen.add(c.spi_in)
                common = {"ike_spis": f"{ike.spi_i.hex()}/{ike.spi_r.hex()}", "state": c.state,
                          "resource": c.resource, "resource_id": c.resource_id.hex() if c.resource_id else None,
                          "peer_resource_id": c.peer_resource_id.hex() if c.peer_resource_id is not None else None,
                          "fallback": c.resource is None, "ts": list(c.ts_key), "proposal": str(c.suite),
                          "rekey_of": f"0x{c.rekey_of:08x}" if c.rekey_of else None}
                o = out_rows.get(c.spi_out, {"packets": 0, "bytes": 0, "oseq": 0, "cpus": set()})
                sas.append({"dir": "out", "spi": f"0x{c.spi_out:08x}", "src": c.outbound.src, "dst": c.outbound.dst,
                            "pcpu": sorted(o["cpus"]), "oseq": o["oseq"],
                            "curlft": {"packets": o["packets"], "bytes": o["bytes"]}, **common})
                i = self.inbound.get(c.spi_in)
                sas.append({"dir": "in", "spi": f"0x{c.spi_in:08x}", "src": c.inbound.src, "dst": c.inbound.dst,
                            "seq": i.window.top if i else 0,
                            "curlft": {"packets": i.packets if i else 0, "bytes": i.bytes if i else 0},
                            "stats": {"replay_window": i.window.size if i else 64, "replay": i.replay if i else 0,
                                      "integrity_failed": i.integrity_failed if i else 0}, **common})
        cpus: dict[int, dict] = {}
        for s in sas:
            if s["dir"] == "out":
                for cpu in s["pcpu"]:
                    row = cpus.setdefault(cpu, {"cpu": cpu, "packets_out": 0, "bytes_out": 0})
                    row["packets_out"] += s["curlft"]["packets"]
                    row["bytes_out"] += s["curlft"]["bytes"]
        ike_rows = [{"spis": ike.name, "state": ike.state, "proposal": str(ike.suite) if ike.suite else None,
                     "successor": ike.successor.name if ike.successor else None, "redundant": ike.redundant}
                    for ike in ikes if ike.km is not None]
        return {"pid": os.getpid(), "role": self.cfg.role, "time": time.time(), "refusals_sent": self.refusals,
                "ike_sas": ike_rows, "events": list(self.events),
                "workers": [{"index": w.plan.index, "cpu": w.plan.cpu, "pid": w.process.pid,
                             "alive": w.process.is_alive()} for w in self.workers],
                "sas": sas, "cpus": sorted(cpus.values(), key=lambda r: r["cpu"])}

    def write_status(self) -> None:
        if not self.cfg.status_file:
            return
        tmp = self.cfg.status_file + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.status(), fh, indent=1)
        os.replace(tmp, self.cfg.status_file)

    # -- the initiator's plan (RFC 9611 §3) -----------------------------------------------

    async def _initiator_plan(self, ike: IkeSa) -> None:
        cfg = self.cfg
        started = time.monotonic()
        by_resource: dict[int, ChildSa] = {}
        fallback = next(iter(ike.children.values()))
        if cfg.resource_info:
            if not ike.peer_supports_resource_info:
                log.info("peer did not answer SA_RESOURCE_INFO in IKE_AUTH: additional SAs are plain Child SAs")
            total = cfg.resources + cfg.extra_requests
            for r in range(total):
                if not cfg.all_at_once and r < cfg.resources:
                    await asyncio.sleep(min(0.5, cfg.duration / (cfg.resources + 1)))
                reuse = r >= cfg.resources and cfg.extra_ids == "reuse"
                child, why = await self._create(ike, r % cfg.resources if reuse else r, fallback, reuse_id=reuse)
                if child is not None and not reuse:
                    by_resource[r] = child
                elif why:
                    log.info("additional Child SA for resource %d refused: %s", r, why)
                    self.events.append(f"refused:{why}")
            if cfg.fault("delete-recreate-loop") and 0 in by_resource:
                for _ in range(3):
                    await self._await(lambda done: ike.delete_children([by_resource[0]], done))
                    child, _why = await self._create(ike, 0, fallback)
                    if child is None:
                        break
                    by_resource[0] = child
        await self._rekeys(ike, started, lambda: by_resource.get(0, fallback), by_resource)
        remaining = cfg.duration - (time.monotonic() - started)
        await asyncio.sleep(max(0.2, remaining + 0.3))
        self._teardown(ike)

    async def _rekeys(self, ike: IkeSa, started: float, pick, by_resource: dict) -> None:
        """Child SA rekey after ``rekey_child_after`` s, IKE SA rekey after ``rekey_ike_after`` s."""
        cfg = self.cfg
        steps = sorted([(t, kind) for t, kind in ((cfg.rekey_child_after, "child"), (cfg.rekey_ike_after, "ike"))
                        if t > 0])
        for t, kind in steps:
            await asyncio.sleep(max(0.0, t - (time.monotonic() - started)))
            if kind == "child":
                old = pick()
                if old.state == "installed":
                    await self._rekey(ike, old, by_resource)
            else:
                new, why = await self._fut(lambda done: ike.live().rekey_ike(done))
                if new is None:
                    log.warning("IKE SA rekey failed: %s", why)

    async def _responder_plan(self, ike: IkeSa) -> None:
        """The responder starts exchanges too (§1.3, §2.8): additional Child SAs, rekeys."""
        cfg = self.cfg
        started = time.monotonic()
        fallback = next(iter(ike.children.values()), None)
        if fallback is None:
            return
        by_resource: dict[int, ChildSa] = {}
        await asyncio.sleep(0.2)
        for _ in range(cfg.create_children):
            r = self.least_loaded_resource(fallback.ts_key) if cfg.resource_info else 0
            child, why = await self._create(ike.live(), r, fallback)
            if child is not None and child.resource is not None:
                by_resource[child.resource] = child
            elif why:
                log.info("additional Child SA refused: %s", why)
                self.events.append(f"refused:{why}")
        await self._rekeys(ike, started, lambda: by_resource.get(0, fallback), by_resource)

    async def _fut(self, start):
        fut = asyncio.get_running_loop().create_future()
        start(lambda *a: fut.done() or fut.set_result(a))
        try:
            return await asyncio.wait_for(fut, timeout=self.cfg.retransmit_timeout * 40)
        except TimeoutError:
            return None, "timeout"

    async def _await(self, start) -> None:
        fut = asyncio.get_running_loop().create_future()
        start(lambda *a: fut.done() or fut.set_result(a))
        await asyncio.wait_for(fut, timeout=self.cfg.retransmit_timeout * 40)

    async def _create(self, ike: IkeSa, r: int, fallback: ChildSa, rekey_of: ChildSa | None = None,
                      reuse_id: bool = False):
        """An additional Child SA for resource ``r`` (a fresh resource id, or with ``reuse_id``
        a second request for a resource that has one: its id again), or a rekey of ``rekey_of``."""
        cfg = self.cfg
        if rekey_of is not None:
            creq = self._rekey_request(rekey_of)
            return await self._fut(lambda done: ike.live().rekey_child(creq, done))
        key = fallback.ts_key
        resource = r
        rid = self.new_resource_id(key, resource, reuse=reuse_id) if cfg.resource_info else None
        suites = None
        kex_group = 0
        offer = self.esp_offer()
        if rekey_of is None and r == 1 and cfg.fault("other-transforms"):
            other = "aes256-sha256" if fallback.suite.aead else "aes256gcm16"
            suites = [parse_suite(other, ProtocolId.ESP)]
            offer = suites
        if offer[0].dh:
            kex_group = offer[0].dh
        local_ts = remote_ts = None
        if rekey_of is None and r == 1 and cfg.fault("other-ts"):
            local_ts = [_half(cfg.local_ts)]
        creq = child_request(self, resource, rid, kex_group, rekey_of, local_ts, remote_ts,
                             transport=(rekey_of is None and r == 1 and cfg.fault("other-mode")), suites=suites)
        child, why = await self._fut(lambda done: ike.live().create_child(creq, done))
        if child is not None:
            self.child_installed(ike.live(), child)
        return child, why

    async def _rekey(self, ike: IkeSa, old: ChildSa, by_resource: dict) -> None:
        """``rekey_child`` switches the workers and deletes the old SA (§2.8) itself."""
        new, why = await self._create(ike, old.resource or 0, old, rekey_of=old)
        if new is None:
            log.warning("rekey of Child SA %08x: %s", old.spi_in, why)
            return
        if old.resource is not None:
            by_resource[old.resource] = new

    def _teardown(self, ike: IkeSa) -> None:
        self.stop_workers()  # every packet is out before the SAs go
        ike = ike.live()
        if ike.state != "established" or not self.cfg.delete_after:
            self._finish()
            return
        live = [c for c in ike.children.values() if c.state != "deleted"]
        ike.delete_children(live, lambda *a: ike.delete(lambda *b: self._finish()))

    def _finish(self) -> None:
        if self.done is not None:
            self.done.set()

    # -- main loop ------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.done = asyncio.Event()
        self.open()
        loop.add_reader(self.sock_ike.fileno(), self._readable, self.sock_ike, False)
        loop.add_reader(self.sock_natt.fileno(), self._readable, self.sock_natt, True)
        log.info("%s listening on %s:%d and :%d", self.cfg.role, self.local_host, self.listen[1], self.natt_port)
        if self.cfg.role == "initiator":
            ike = IkeSa(self, True, os.urandom(8), bytes(8), self.remote_addr, self.listen)
            self.half_open[ike.spi_i] = ike
            ike.start()
        deadline = time.monotonic() + self.cfg.lifetime if self.cfg.lifetime else None
        last_status = 0.0
        last_live = time.monotonic()
        try:
            while not self.done.is_set():
                try:
                    await asyncio.wait_for(self.done.wait(), timeout=0.1)
                except TimeoutError:
                    pass
                now = time.monotonic()
                for ike in list(self.ike_sas.values()) + list(self.half_open.values()):
                    try:
                        ike.tick(now)
                    except IkeError as err:
                        log.error("%s", err)
                if self.cfg.liveness and now - last_live > self.cfg.liveness:
                    last_live = now
                    for ike in list(self.ike_sas.values()):
                        if ike.state == "established" and ike.inflight is None:
                            ike.liveness()
                if now - last_status > 0.5:
                    last_status = now
                    self.write_status()
                if deadline and now > deadline:
                    log.info("lifetime of %.1f s reached", self.cfg.lifetime)
                    if self.cfg.role == "initiator" and self.established and self.established.state == "established":
                        self.exit_code = self.exit_code or 1
                    if self.cfg.role == "initiator" and self.established is None:
                        log.warning("no IKE SA established with %s:%d within the %.1f s lifetime",
                                    self.remote_addr[0], self.remote_addr[1], self.cfg.lifetime)
                        self.exit_code = self.exit_code or 1
                    break
        finally:
            loop.remove_reader(self.sock_ike.fileno())
            loop.remove_reader(self.sock_natt.fileno())
            self.stop_workers()
            self.write_status()
            if self.dataplane is not None:
                self.dataplane.close()
            self.sock_ike.close()
            self.sock_natt.close()
        return self.exit_code

    def stop_workers(self) -> None:
        if self.dataplane is not None:
            self.dataplane.stop_traffic()
        for w in self.workers:
            _safe_send(w.conn, ("stop",))
        for w in self.workers:
            w.process.join(timeout=2)
            if w.process.is_alive():
                w.process.terminate()  # by PID, only our own child
                w.process.join(timeout=1)


def _safe_send(conn, msg) -> None:
    try:
        conn.send(msg)
    except (BrokenPipeError, OSError):
        pass


def _host1(cidr: str) -> str:
    import ipaddress

    net = ipaddress.ip_network(cidr, strict=False)
    return str(net.network_address + 1) if net.num_addresses > 1 else str(net.network_address)


def _half(cidr: str):
    import ipaddress

    net = ipaddress.ip_network(cidr, strict=False)
    sub = next(net.subnets(prefixlen_diff=1)) if net.prefixlen < net.max_prefixlen else net
    return subnet_ts(str(sub))

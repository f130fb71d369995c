"""The IKEv2 protocol engine of the reference peer (RFC 7296, RFC 7383, RFC 9611), without sockets.

``IkeSa`` is one IKE SA seen from this peer: it builds requests and responses with the codec
of ``dissectors.ikev2`` (payload dataclasses, ``sk.seal`` / ``sk.seal_fragments``), decrypts
and reassembles SK/SKF with ``sk.IkeDecryptor``, and keys itself with ``dissectors.keymat`` /
``dissectors.dh``. The ``Node`` (``peer.node``) owns the sockets, the clock and the ESP
workers; it feeds datagrams in through ``handle`` and gets everything to send through
``node.send``.

Message IDs use a window of one (§2.3) in each direction: one request of ours in flight,
retransmitted with back-off by ``tick``; a retransmitted request of the peer gets the cached
response. Either side may start any exchange, so our request and the peer's may cross.

Rekeying (§1.3.2, §2.8, §2.18):

- a Child SA rekey (``rekey_child``) installs the new SA, switches the workers and deletes
  the old one; if the peer rekeys the same Child SA at the same time, both exchanges finish
  and the SA created with the lowest of the four nonces is deleted by whoever created it
  (§2.8.1); the survivor's creator deletes the old SA;
- an IKE SA rekey (``rekey_ike``, or answering the peer's) derives the new IKE SA from the
  old SK_d (§2.18), moves the Child SAs and any requests not yet sent to it (message IDs
  restart at 0), and deletes the old IKE SA with its last request. Simultaneous IKE SA rekeys
  are resolved like Child SA ones (§2.8.2). ``successor`` leads from an old IKE SA to the one
  that inherited its Child SAs; requests made on an old IKE SA go to ``live()``.
- While our IKE SA rekey is in flight, the peer's requests to create or rekey Child SAs get
  TEMPORARY_FAILURE (§2.25.2); a request to rekey a Child SA we are closing too (§2.25.1).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from dissectors import crypto, keymat
from dissectors.dh import DhError, KeyExchange, key_exchange
from dissectors.iana import (AuthMethod, CfgAttr, CfgType, ExchangeType, IdType, NotifyType, PayloadType, ProtocolId,
                             TsType)
from dissectors.ikev2.message import IKE_HEADER_LEN, IkeMessage, parse_message
from dissectors.ikev2.payloads import (AuthPayload, CfgAttribute, CpPayload, DeletePayload, IdPayload, KePayload,
                                       NoncePayload, NotifyPayload, Payload, SaPayload, SkfPayload, SkPayload,
                                       TrafficSelector, TsPayload)
from dissectors.ikev2.sk import IkeDecryptor, seal, seal_fragments
from dissectors.keys import IkeKeys
from dissectors.records import Secret

from dissectors.esp import EspSa
from .proposals import Suite, choose

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("multisa.peer")

NONCE_LEN = 32
R9611 = NotifyType.SA_RESOURCE_INFO


class IkeError(Exception):
    """A protocol failure that ends the IKE SA (one line, never key bytes)."""


# --- small helpers ------------------------------------------------------------------------


def subnet_ts(cidr: str) -> TrafficSelector:
    net = ipaddress.ip_network(cidr, strict=False)
    kind = TsType.TS_IPV4_ADDR_RANGE if net.version == 4 else TsType.TS_IPV6_ADDR_RANGE
    return TrafficSelector(kind, 0, 0, 65535, str(net.network_address), str(net.broadcast_address))


def narrow(offered: list[TrafficSelector], ours: TrafficSelector) -> list[TrafficSelector]:
    """§2.9: the part of ``offered`` that ``ours`` allows (address and port ranges intersected)."""
    out = []
    for ts in offered:
        if ts.ts_type != ours.ts_type or (ts.ip_protocol and ours.ip_protocol and ts.ip_protocol != ours.ip_protocol):
            continue
        lo = max(ipaddress.ip_address(ts.start_address), ipaddress.ip_address(ours.start_address))
        hi = min(ipaddress.ip_address(ts.end_address), ipaddress.ip_address(ours.end_address))
        plo, phi = max(ts.start_port, ours.start_port), min(ts.end_port, ours.end_port)
        if lo <= hi and plo <= phi:
            out.append(TrafficSelector(ts.ts_type, ts.ip_protocol or ours.ip_protocol, plo, phi, str(lo), str(hi)))
    # the union is what counts: a selector inside another one of the answer adds nothing (e.g.
    # the trigger packet's, which an acquire-driven initiator puts first, §2.9); answering with
    # it would make this SA's selectors differ from its group's (RFC 9611 §3)
    return [ts for i, ts in enumerate(out)
            if not any(j != i and _ts_inside(ts, o) and (not _ts_inside(o, ts) or j < i) for j, o in enumerate(out))]


def _ts_inside(a: TrafficSelector, b: TrafficSelector) -> bool:
    """``a`` lies within ``b`` (protocol, ports and addresses)."""
    return (a.ts_type == b.ts_type and (not b.ip_protocol or a.ip_protocol == b.ip_protocol)
            and b.start_port <= a.start_port and a.end_port <= b.end_port
            and ipaddress.ip_address(b.start_address) <= ipaddress.ip_address(a.start_address)
            and ipaddress.ip_address(a.end_address) <= ipaddress.ip_address(b.end_address))


def ts_text(sels: list[TrafficSelector]) -> str:
    return ",".join(f"{s.start_address}-{s.end_address}" for s in sels)


def nat_hash(spi_i: bytes, spi_r: bytes, host: str, port: int) -> bytes:
    """§2.23: SHA-1(SPIi | SPIr | IP address | port)."""
    return hashlib.sha1(spi_i + spi_r + ipaddress.ip_address(host).packed + struct.pack(">H", port)).digest()


def notify(kind: int, data: bytes = b"", protocol: int = 0, spi: bytes = b"") -> NotifyPayload:
    return NotifyPayload(notify_type=kind, data=data, protocol_id=protocol, spi=spi)


def find_notify(payloads: list[Payload], kind: int) -> NotifyPayload | None:
    return next((p for p in payloads if isinstance(p, NotifyPayload) and p.notify_type == kind), None)


def error_notify(payloads: list[Payload]) -> NotifyPayload | None:
    return next((p for p in payloads if isinstance(p, NotifyPayload) and p.notify_type < 16384), None)


def first(payloads: list[Payload], cls, ptype: int | None = None):
    return next((p for p in payloads if isinstance(p, cls) and (ptype is None or p.type == ptype)), None)


def lowest_nonce_in(mine: tuple[bytes, bytes], theirs: tuple[bytes, bytes]) -> bool:
    """§2.8.1: is the lowest of the four nonces one of ``mine``? Octet by octet; a prefix is lower."""
    return min(mine) < min(theirs)


# --- Child SAs ----------------------------------------------------------------------------


@dataclass
class ChildSa:
    spi_in: int
    spi_out: int
    suite: Suite
    local_ts: list[TrafficSelector]
    remote_ts: list[TrafficSelector]
    inbound: EspSa = field(repr=False)
    outbound: EspSa = field(repr=False)
    resource_id: bytes | None = None  # what this peer announced in SA_RESOURCE_INFO
    peer_resource_id: bytes | None = None
    resource: int | None = None  # local resource (worker/CPU slot); None: the fallback SA (§4)
    transport: bool = False
    created: float = field(default_factory=time.time)
    rekey_of: int | None = None  # spi_in of the SA this one rekeyed
    state: str = "installed"  # installed | rekeyed | redundant (lost a rekey collision) | deleted
    nonces: tuple[bytes, bytes] = (b"", b"")  # Ni, Nr of the exchange that created it (§2.8.1)
    created_by_us: bool = True  # we initiated the exchange that created it
    rekeying: bool = False  # our CREATE_CHILD_SA rekeying it is in flight
    collision: ChildSa | None = field(default=None, repr=False)  # the peer's rekey of it, while ours runs
    deleting: bool = False  # our Delete for it is queued or in flight

    @property
    def ts_key(self) -> tuple[str, str]:
        return ts_text(self.local_ts), ts_text(self.remote_ts)


@dataclass
class _Request:
    exchange: int
    inner: list[Payload]
    on_response: Callable[[IkeSa, list[Payload]], None]  # gets the IKE SA it went over
    kind: str = ""  # "ike-rekey", "delete-ike" (stay on their IKE SA) or ""
    before_send: Callable[[IkeSa], str | None] | None = None  # a reason to drop it instead
    on_drop: Callable[[str], None] | None = None
    message_id: int = -1
    data: list[bytes] = field(default_factory=list)
    tries: int = 0
    deadline: float = 0.0
    timeout: float = 1.0


@dataclass
class _ChildRequest:
    """What this peer offered in a CREATE_CHILD_SA (or IKE_AUTH) it initiated."""

    spi_in: int
    nonce: bytes
    kex: KeyExchange | None
    local_ts: list[TrafficSelector]
    remote_ts: list[TrafficSelector]
    resource: int | None
    resource_id: bytes | None
    rekey_of: ChildSa | None = None
    transport: bool = False
    suites: list[Suite] = field(default_factory=list)


# --- the IKE SA ---------------------------------------------------------------------------


class IkeSa:
    def __init__(self, node: Node, original_initiator: bool, spi_i: bytes, spi_r: bytes,
                 remote: tuple[str, int], local: tuple[str, int]) -> None:
        self.node, self.cfg = node, node.cfg
        self.original_initiator = original_initiator
        self.spi_i, self.spi_r = spi_i, spi_r
        self.remote, self.local = remote, local
        self.natt = False  # IKE on the NAT-T port behind the Non-ESP marker (§2.23)
        self.state = "new"  # new init-sent init-done auth-sent established rekeyed deleted dead
        self.suite: Suite | None = None
        self.encr = self.integ = None
        self.km: keymat.IkeKeymat | None = None
        self.keys: IkeKeys | None = None  # the same keys as sk.IkeDecryptor wants them
        self.decryptor = IkeDecryptor(self)  # SK and SKF (RFC 7383) reassembly, one implementation
        self.ni = self.nr = b""
        self.kex: KeyExchange | None = None
        self.cookie = b""  # §2.6: the responder's cookie, echoed in IKE_SA_INIT
        self.cookie_tries = 0
        self.init_request = self.init_response = b""
        self.next_id = 0  # our next request's Message ID
        self.peer_id = 0  # the peer's next request's Message ID
        self.last_response: tuple[int, list[bytes]] | None = None
        self.inflight: _Request | None = None
        self.queue: deque[_Request] = deque()
        self.children: dict[int, ChildSa] = {}
        self.created = time.time()
        self.last_heard = time.time()
        self.auth_child: _ChildRequest | None = None
        self.peer_supports_resource_info = False
        self.peer_fragmentation = False  # the peer sent IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383 §2.3)
        self.remote_access_address: str | None = None
        self.successor: IkeSa | None = None  # the IKE SA that took over after a rekey (§2.18)
        self.redundant = False  # lost a simultaneous IKE SA rekey (§2.8.2)
        self.rekeying = False  # our IKE SA rekey request is in flight
        self.collision: IkeSa | None = None  # the peer's rekey of this IKE SA, answered while ours runs
        self.deleting = False  # our Delete of this IKE SA is in flight

    # -- identity -----------------------------------------------------------------------

    @property
    def spis(self) -> tuple[bytes, bytes]:
        return self.spi_i, self.spi_r

    def __repr__(self) -> str:
        return f"IkeSa({self.spi_i.hex()}/{self.spi_r.hex()} {self.state})"

    @property
    def name(self) -> str:
        return f"{self.spi_i.hex()}/{self.spi_r.hex()}"

    def live(self) -> IkeSa:
        """This IKE SA, or the one that inherited its Child SAs after (possibly several) rekeys."""
        ike = self
        while ike.successor is not None:
            ike = ike.successor
        return ike

    def ike_keys(self, spi_i: bytes, spi_r: bytes) -> IkeKeys | None:
        """The key lookup ``sk.IkeDecryptor`` makes (a KeyStore of one IKE SA)."""
        return self.keys if (bytes(spi_i), bytes(spi_r)) == self.spis else None

    def _id_payload(self, ptype: int) -> IdPayload:
        if self.cfg.local_id:
            return IdPayload(kind=IdType.ID_FQDN, data=self.cfg.local_id.encode(), id_payload_type=ptype)
        return IdPayload(kind=IdType.ID_IPV4_ADDR, data=ipaddress.ip_address(self.local[0]).packed,
                         id_payload_type=ptype)

    # -- sending --------------------------------------------------------------------------

    def _flags(self, response: bool) -> int:
        return (0x08 if self.original_initiator else 0) | (0x20 if response else 0)

    def _seal(self, exchange: int, message_id: int, response: bool, inner: list[Payload]) -> list[bytes]:
        """The message as datagrams: one SK message, or SKF fragments (RFC 7383) when it is too big."""
        msg = IkeMessage(self.spi_i, self.spi_r, exchange, message_id, self._flags(response))
        mine = self.original_initiator
        e = self.km.sk_ei if mine else self.km.sk_er
        a = self.km.sk_ai if mine else self.km.sk_ar
        whole = seal(msg, inner, self.encr, self.integ, e, a)
        limit = self.cfg.fragment_size
        if self.peer_fragmentation and limit and len(whole) > limit:
            frags = seal_fragments(IkeMessage(self.spi_i, self.spi_r, exchange, message_id, self._flags(response)),
                                   inner, self.encr, self.integ, e, a, limit)
            log.info("IKE SA %s: message %d sent in %d SKF fragments", self.spi_i.hex(), message_id, len(frags))
            return frags
        return [whole]

    def _send(self, data: bytes | list[bytes]) -> None:
        for d in [data] if isinstance(data, (bytes, bytearray)) else data:
            self.node.send(self, d)

    def request(self, exchange: int, inner: list[Payload], on_response: Callable[[IkeSa, list[Payload]], None],
                kind: str = "", before_send: Callable[[IkeSa], str | None] | None = None,
                on_drop: Callable[[str], None] | None = None) -> None:
        """Queue an encrypted request; ``on_response(ike, payloads)`` gets the decrypted response.

        Made on a rekeyed IKE SA, it goes to ``live()`` (§1.4: "or its successor"), except the
        ones that belong to this IKE SA (its own rekey and Delete).
        """
        target = self if kind in ("ike-rekey", "delete-ike") else self.live()
        target.queue.append(_Request(exchange, inner, on_response, kind, before_send, on_drop,
                                     timeout=self.cfg.retransmit_timeout))
        target._pump()

    def _pump(self) -> None:
        while self.inflight is None and self.queue and self.state in ("established", "rekeyed"):
            req = self.queue.popleft()
            if self.state == "rekeyed" and req.kind != "delete-ike":
                self.live().queue.append(req)  # arrived here after the hand-over
                self.live()._pump()
                continue
            why = req.before_send(self) if req.before_send else None
            if why:
                log.info("IKE SA %s: request dropped: %s", self.spi_i.hex(), why)
                if req.on_drop:
                    req.on_drop(why)
                continue
            req.message_id = self.next_id
            self.next_id += 1
            req.data = self._seal(req.exchange, req.message_id, False, req.inner)
            req.deadline = time.monotonic() + req.timeout
            self.inflight = req
            self._send(req.data)

    def tick(self, now: float) -> None:
        """Retransmit with exponential back-off (§2.1); give up after ``retransmit_tries``."""
        req = self.inflight
        if req is None or now < req.deadline:
            return
        if req.tries + 1 >= self.cfg.retransmit_tries:
            log.warning("IKE SA %s: no answer to message %d after %d tries, giving up",
                        self.spi_i.hex(), req.message_id, req.tries + 1)
            self.node.ike_dead(self)
            return
        req.tries += 1
        req.timeout *= 2
        req.deadline = now + req.timeout
        log.info("IKE SA %s: retransmitting message %d (try %d)", self.spi_i.hex(), req.message_id, req.tries + 1)
        self._send(req.data)

    # -- IKE_SA_INIT (§1.2, §2.6 cookies) -------------------------------------------------

    def start(self) -> None:
        """Initiator: send IKE_SA_INIT (again with N(COOKIE) first, if the responder asked, §2.6)."""
        suites = self.cfg.ike_suites
        group = self.kex.group if self.kex else suites[0].dh
        if self.kex is None or self.kex.group != group:
            self.kex = key_exchange(group)
        self.ni = self.ni or os.urandom(NONCE_LEN)  # the same Ni on every retry: the cookie covers it
        sa = SaPayload(proposals=[s.proposal(i + 1, ProtocolId.IKE, b"") for i, s in enumerate(suites)])
        for p in sa.proposals[:-1]:
            p.last = 2
        msg = IkeMessage(self.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, 0, self._flags(False))
        msg.payloads = [*([notify(NotifyType.COOKIE, self.cookie)] if self.cookie else []),
                        sa, KePayload(dh_group=group, data=self.kex.public), NoncePayload(data=self.ni),
                        *self._nat_notifies(), notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED)]
        self.init_request = bytes(msg)
        self.state = "init-sent"
        self.next_id = 1
        self.inflight = _Request(ExchangeType.IKE_SA_INIT, [], lambda ike, p: None, message_id=0,
                                 data=[self.init_request], deadline=time.monotonic() + self.cfg.retransmit_timeout,
                                 timeout=self.cfg.retransmit_timeout)
        self._send(self.init_request)

    def _nat_notifies(self) -> list[NotifyPayload]:
        # Like strongSwan's encap=yes: a source hash that cannot match forces UDP
        # encapsulation (ESP-in-UDP on the NAT-T port, RFC 3948), which userspace ESP needs.
        src = hashlib.sha1(b"multisa-encap" + os.urandom(8)).digest()
        dst = nat_hash(self.spi_i, self.spi_r, self.remote[0], self.remote[1])
        return [notify(NotifyType.NAT_DETECTION_SOURCE_IP, src), notify(NotifyType.NAT_DETECTION_DESTINATION_IP, dst)]

    def _on_init_response(self, msg: IkeMessage) -> None:
        payloads = msg.payloads
        cookie = find_notify(payloads, NotifyType.COOKIE)
        if cookie is not None:
            self.cookie_tries += 1
            if self.cookie_tries > 3 or not 1 <= len(cookie.data) <= 64:
                raise IkeError("the responder keeps asking for a COOKIE")
            log.info("IKE SA %s: responder sent a COOKIE (%d octets), retrying IKE_SA_INIT with it",
                     self.spi_i.hex(), len(cookie.data))
            self.cookie = cookie.data
            self.inflight = None
            self.start()
            return
        inv = find_notify(payloads, NotifyType.INVALID_KE_PAYLOAD)
        if inv is not None and len(inv.data) == 2:
            group = struct.unpack(">H", inv.data)[0]
            if group in {s.dh for s in self.cfg.ike_suites} and (self.kex is None or group != self.kex.group):
                log.info("IKE SA %s: responder wants DH group %d, retrying", self.spi_i.hex(), group)
                self.inflight = None
                self.kex = key_exchange(group)
                self.start()
                return
        err = error_notify(payloads)
        if err is not None:
            raise IkeError(f"IKE_SA_INIT refused: {_nname(err.notify_type)}")
        sa, ke, nonce = first(payloads, SaPayload), first(payloads, KePayload), first(payloads, NoncePayload)
        if not (sa and ke and nonce) or len(sa.proposals) != 1:
            raise IkeError("IKE_SA_INIT response lacks SA, KE or Nonce")
        chosen = choose(sa.proposals, self.cfg.ike_suites, ProtocolId.IKE)
        if chosen is None or chosen[1].dh != ke.dh_group or ke.dh_group != self.kex.group:
            raise IkeError("IKE_SA_INIT response chose a proposal we did not offer")
        self.inflight = None
        self.spi_r = msg.spi_r
        self.init_response = msg.raw
        self.nr = nonce.data
        self.peer_fragmentation = find_notify(payloads, NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        self.natt = True  # NAT detection was forced above: move to the NAT-T port (§2.23)
        self.remote = (self.remote[0], self.node.remote_natt_port)
        self._derive(chosen[1], self.kex.shared(ke.data))
        self.node.rekeyed_spis(self)
        self._send_auth()

    def respond_init(self, msg: IkeMessage) -> bytes | None:
        """Responder: answer IKE_SA_INIT (returns the response, or None to stay silent)."""
        payloads = msg.payloads
        sa, ke, nonce = first(payloads, SaPayload), first(payloads, KePayload), first(payloads, NoncePayload)
        if not (sa and ke and nonce):
            return self._clear_error(msg, NotifyType.INVALID_SYNTAX)
        chosen = choose(sa.proposals, self.cfg.ike_suites, ProtocolId.IKE)
        if chosen is None:
            return self._clear_error(msg, NotifyType.NO_PROPOSAL_CHOSEN)
        prop, suite = chosen
        if ke.dh_group != suite.dh:
            return self._clear_error(msg, NotifyType.INVALID_KE_PAYLOAD, struct.pack(">H", suite.dh))
        self.kex = key_exchange(suite.dh)
        try:
            g_ir = self.kex.shared(ke.data)
        except DhError as err:
            log.warning("IKE_SA_INIT from %s dropped: %s", self.remote[0], err)
            return self._clear_error(msg, NotifyType.INVALID_SYNTAX)
        self.ni, self.nr = nonce.data, os.urandom(NONCE_LEN)
        self.init_request = msg.raw  # with the cookie, if there was one: AUTH signs what was sent (§2.15)
        self.peer_fragmentation = find_notify(payloads, NotifyType.IKEV2_FRAGMENTATION_SUPPORTED) is not None
        out = IkeMessage(self.spi_i, self.spi_r, ExchangeType.IKE_SA_INIT, 0, self._flags(True))
        out.payloads = [SaPayload(proposals=[suite.proposal(prop.number, ProtocolId.IKE, b"")]),
                        KePayload(dh_group=suite.dh, data=self.kex.public), NoncePayload(data=self.nr),
                        *self._nat_notifies(), notify(NotifyType.IKEV2_FRAGMENTATION_SUPPORTED)]
        self.init_response = bytes(out)
        self._derive(suite, g_ir)
        self.state = "init-done"
        self.peer_id = 1
        self.last_response = (0, [self.init_response])
        return self.init_response

    def _clear_error(self, msg: IkeMessage, kind: int, data: bytes = b"") -> bytes:
        out = IkeMessage(msg.spi_i, bytes(8), ExchangeType.IKE_SA_INIT, 0, 0x20)
        out.payloads = [notify(kind, data)]
        self.state = "dead"
        return bytes(out)

    def _derive(self, suite: Suite, g_ir: bytes, old_sk_d: bytes | None = None, old_prf: int = 0) -> None:
        """§2.14 (or §2.18 for an IKE SA rekey): SKEYSEED and the seven SK_* keys."""
        self.suite = suite
        self.encr = crypto.encr_spec(suite.encr, suite.key_bits)
        self.integ = None if self.encr.aead else crypto.integ_spec(suite.integ)
        if old_sk_d is None:
            seed = keymat.skeyseed(suite.prf, self.ni, self.nr, g_ir)
        else:
            seed = keymat.skeyseed_rekey(old_prf, old_sk_d, g_ir, self.ni, self.nr)
        self.km = keymat.ike_keymat(suite.prf, seed, self.ni, self.nr, self.spi_i, self.spi_r,
                                    self.encr.key_len, self.integ.key_len if self.integ else 0)
        self.keys = IkeKeys(self.spi_i, self.spi_r, self.encr, self.km.sk_ei, self.km.sk_er, self.integ,
                            self.km.sk_ai, self.km.sk_ar, source="peer")
        self.node.keylog.ike(self)

    # -- IKE_AUTH (§1.2, §2.15) -----------------------------------------------------------

    def _auth_octets(self, of_initiator: bool, id_body: bytes) -> bytes:
        if of_initiator:
            return keymat.signed_octets(self.init_request, self.nr, self.km.sk_pi, id_body, self.suite.prf)
        return keymat.signed_octets(self.init_response, self.ni, self.km.sk_pr, id_body, self.suite.prf)

    def _send_auth(self) -> None:
        idi = self._id_payload(PayloadType.IDi)
        auth = keymat.psk_auth(self.suite.prf, self.cfg.psk, self._auth_octets(True, idi.body()))
        creq = self.node.plan_auth_child(self)
        self.auth_child = creq
        inner: list[Payload] = [idi, AuthPayload(kind=AuthMethod.SHARED_KEY_MIC, data=bytes(auth))]
        if self.cfg.fault("remote-access"):
            inner.append(CpPayload(cfg_type=CfgType.CFG_REQUEST,
                                   attributes=[CfgAttribute(CfgAttr.INTERNAL_IP4_ADDRESS, b"")]))
        inner += self._child_offer(creq, with_nonce=False)
        req = _Request(ExchangeType.IKE_AUTH, inner, lambda ike, resp: ike._on_auth_response(resp),
                       timeout=self.cfg.retransmit_timeout)
        self.state = "auth-sent"
        req.message_id = self.next_id
        self.next_id += 1
        req.data = self._seal(req.exchange, req.message_id, False, req.inner)
        req.deadline = time.monotonic() + req.timeout
        self.inflight = req
        self._send(req.data)

    def _on_auth_response(self, inner: list[Payload]) -> None:
        err = error_notify(inner)
        if err is not None and first(inner, AuthPayload) is None:
            raise IkeError(f"IKE_AUTH refused: {_nname(err.notify_type)}")
        idr, auth = first(inner, IdPayload, PayloadType.IDr), first(inner, AuthPayload)
        if idr is None or auth is None:
            raise IkeError("IKE_AUTH response lacks IDr or AUTH")
        if self.cfg.remote_id and idr.data != self.cfg.remote_id.encode():
            raise IkeError(f"responder identity {idr.data!r} is not {self.cfg.remote_id!r}")
        expected = keymat.psk_auth(self.suite.prf, self.cfg.psk, self._auth_octets(False, idr.body()))
        if not _equal(auth.data, expected):
            raise IkeError("responder AUTH does not verify (wrong PSK?)")
        self.state = "established"
        cp = first(inner, CpPayload)
        if cp is not None:
            for a in cp.attributes:
                if a.type == CfgAttr.INTERNAL_IP4_ADDRESS and len(a.value) == 4:
                    self.remote_access_address = str(ipaddress.ip_address(a.value))
        self.peer_supports_resource_info = find_notify(inner, R9611) is not None
        log.info("IKE SA %s/%s established with %s (%s)", self.spi_i.hex(), self.spi_r.hex(), self.remote[0],
                 self.suite)
        child = None
        if err is None:
            child = self._accept_child_response(self.auth_child, inner, self.ni, self.nr)
        else:
            log.warning("IKE SA %s: no Child SA in IKE_AUTH: %s", self.spi_i.hex(), _nname(err.notify_type))
        self.node.ike_established(self, child)

    def _respond_auth(self, inner: list[Payload]) -> list[Payload]:
        idi, auth = first(inner, IdPayload, PayloadType.IDi), first(inner, AuthPayload)
        if idi is None or auth is None or auth.method != AuthMethod.SHARED_KEY_MIC:
            self.state = "dead"
            return [notify(NotifyType.AUTHENTICATION_FAILED)]
        expected = keymat.psk_auth(self.suite.prf, self.cfg.psk, self._auth_octets(True, idi.body()))
        if not _equal(auth.data, expected) or (self.cfg.remote_id and idi.data != self.cfg.remote_id.encode()):
            log.warning("IKE_AUTH from %s: AUTHENTICATION_FAILED (identity %r)", self.remote[0],
                        idi.data.decode(errors="replace"))
            self.state = "dead"
            return [notify(NotifyType.AUTHENTICATION_FAILED)]
        idr = self._id_payload(PayloadType.IDr)
        mine = keymat.psk_auth(self.suite.prf, self.cfg.psk, self._auth_octets(False, idr.body()))
        out: list[Payload] = [idr, AuthPayload(kind=AuthMethod.SHARED_KEY_MIC, data=bytes(mine))]
        self.state = "established"
        self.peer_supports_resource_info = find_notify(inner, R9611) is not None
        cp = first(inner, CpPayload)
        if cp is not None and cp.cfg_type == CfgType.CFG_REQUEST:
            base = ipaddress.ip_network(self.cfg.remote_ts, strict=False)
            addr = base.network_address + 10
            out.append(CpPayload(cfg_type=CfgType.CFG_REPLY,
                                 attributes=[CfgAttribute(CfgAttr.INTERNAL_IP4_ADDRESS, addr.packed)]))
        out += self._respond_child(inner, self.ni, self.nr, in_auth=True)
        log.info("IKE SA %s/%s established with %s (%s)", self.spi_i.hex(), self.spi_r.hex(), self.remote[0],
                 self.suite)
        self.node.ike_established(self, None)
        return out

    # -- Child SAs (§1.3, §2.17; RFC 9611 §3) ---------------------------------------------

    def _child_offer(self, creq: _ChildRequest, with_nonce: bool) -> list[Payload]:
        spi = struct.pack(">I", creq.spi_in)
        suites = creq.suites or self.node.esp_offer()
        if not with_nonce:  # IKE_AUTH: no KE, so no DH transforms (§1.2)
            suites = list(dict.fromkeys(replace(s, dh=0) for s in suites))
        sa = SaPayload(proposals=[s.proposal(i + 1, ProtocolId.ESP, spi) for i, s in enumerate(suites)])
        for p in sa.proposals[:-1]:
            p.last = 2
        out: list[Payload] = []
        if creq.rekey_of is not None:
            out.append(notify(NotifyType.REKEY_SA, protocol=ProtocolId.ESP,
                              spi=struct.pack(">I", creq.rekey_of.spi_in)))
        if creq.transport:
            out.append(notify(NotifyType.USE_TRANSPORT_MODE))
        out.append(sa)
        if with_nonce:
            out.append(NoncePayload(data=creq.nonce))
            if creq.kex is not None:
                out.append(KePayload(dh_group=creq.kex.group, data=creq.kex.public))
        out += [TsPayload(ts_payload_type=PayloadType.TSi, selectors=creq.local_ts),
                TsPayload(ts_payload_type=PayloadType.TSr, selectors=creq.remote_ts)]
        if creq.resource_id is not None:
            out.append(self.node.resource_info_notify(creq.resource_id))
        return out

    def create_child(self, creq: _ChildRequest, on_done: Callable[[ChildSa | None, str], None]) -> None:
        """CREATE_CHILD_SA for an additional Child SA; ``on_done(child, refusal)``.

        For a rekey use ``rekey_child``.
        """
        inner = self._child_offer(creq, with_nonce=True)

        def on_response(ike: IkeSa, resp: list[Payload]) -> None:
            err = error_notify(resp)
            if err is not None:
                on_done(None, _nname(err.notify_type))
                return
            nonce = first(resp, NoncePayload)
            if nonce is None:
                on_done(None, "no Nonce in response")
                return
            child = ike._accept_child_response(creq, resp, creq.nonce, nonce.data)
            on_done(child, "" if child else "unacceptable response")

        self.request(ExchangeType.CREATE_CHILD_SA, inner, on_response, on_drop=lambda why: on_done(None, why))

    def rekey_child(self, creq: _ChildRequest, on_done: Callable[[ChildSa | None, str], None]) -> None:
        """§1.3.3: CREATE_CHILD_SA with N(REKEY_SA); ``on_done(surviving new SA or None, why)``.

        On success the old SA is marked ``rekeyed``, the node switches its workers and the old
        SA is deleted by whoever created the surviving new one (§2.8, §2.8.1).
        """
        old = creq.rekey_of
        assert old is not None
        inner = self._child_offer(creq, with_nonce=True)

        def before_send(ike: IkeSa) -> str | None:
            if old.state != "installed" or old.deleting:
                return f"Child SA {old.spi_in:08x} is {old.state}: not rekeyed"
            old.rekeying = True
            return None

        def on_response(ike: IkeSa, resp: list[Payload]) -> None:
            old.rekeying = False
            partner, old.collision = old.collision, None
            err = error_notify(resp)
            mine, why = None, ""
            if err is not None:
                why = _nname(err.notify_type)
            elif (nonce := first(resp, NoncePayload)) is None:
                why = "no Nonce in response"
            else:
                mine = ike._accept_child_response(creq, resp, creq.nonce, nonce.data)
                why = "" if mine else "unacceptable response"
            survivor = ike._settle_child_rekey(old, mine, partner)
            if mine is not None and survivor is not mine:
                why = "rekey collision: the peer's new SA survives (§2.8.1)"
            on_done(survivor if survivor is mine else None, why)

        self.request(ExchangeType.CREATE_CHILD_SA, inner, on_response, before_send=before_send,
                     on_drop=lambda why: on_done(None, why))

    def _settle_child_rekey(self, old: ChildSa, mine: ChildSa | None, partner: ChildSa | None) -> ChildSa | None:
        """§2.8.1: pick the surviving new SA; close what we created and lost, or the old SA if we won."""
        if mine is not None and partner is not None:
            if lowest_nonce_in(mine.nonces, partner.nonces):
                loser, survivor = mine, partner
            else:
                loser, survivor = partner, mine
            loser.state = "redundant"
            log.info("Child SA rekey collision on %08x: %08x survives, %08x is redundant (lowest nonce)",
                     old.spi_in, survivor.spi_in, loser.spi_in)
            self.node.events.append("child-rekey-collision")
        else:
            survivor = mine or partner
        if survivor is None:
            return None
        if old.state == "installed":
            old.state = "rekeyed"
        self.node.child_rekeyed(self, old, survivor)
        if mine is not None and mine.state == "redundant":
            self.delete_children([mine])  # we created it, we close it
        if survivor is mine:
            self.delete_children([old])  # the creator of the survivor deletes the old SA
        return survivor

    def _accept_child_response(self, creq: _ChildRequest, resp: list[Payload], ni: bytes, nr: bytes) -> ChildSa | None:
        sa = first(resp, SaPayload)
        tsi, tsr = first(resp, TsPayload, PayloadType.TSi), first(resp, TsPayload, PayloadType.TSr)
        if sa is None or tsi is None or tsr is None or len(sa.proposals) != 1 or len(sa.proposals[0].spi) != 4:
            log.warning("IKE SA %s: Child SA response lacks SA/TSi/TSr", self.spi_i.hex())
            return None
        offered = creq.suites or self.node.esp_offer()
        if creq.kex is None:
            offered = [replace(s, dh=0) for s in offered]
        chosen = choose(sa.proposals, offered, ProtocolId.ESP)
        if chosen is None:
            log.warning("IKE SA %s: peer chose an ESP proposal we did not offer", self.spi_i.hex())
            return None
        suite = chosen[1]
        g_ir = None
        if suite.dh:
            ke = first(resp, KePayload)
            if ke is None or creq.kex is None:
                return None
            g_ir = creq.kex.shared(ke.data)
        info = find_notify(resp, R9611)
        child = self._install(suite, creq.spi_in, struct.unpack(">I", sa.proposals[0].spi)[0], True, ni, nr, g_ir,
                              tsi.selectors, tsr.selectors, creq.resource, creq.resource_id,
                              info.data if info is not None else None,
                              creq.rekey_of, find_notify(resp, NotifyType.USE_TRANSPORT_MODE) is not None)
        return child

    def _install(self, suite: Suite, spi_in: int, spi_out: int, exchange_initiator: bool, ni: bytes, nr: bytes,
                 g_ir: bytes | None, tsi: list, tsr: list, resource: int | None, rid: bytes | None,
                 peer_rid: bytes | None, rekey_of: ChildSa | None, transport: bool) -> ChildSa:
        encr = crypto.encr_spec(suite.encr, suite.key_bits)
        integ = None if encr.aead else crypto.integ_spec(suite.integ)
        # KEYMAT from the SK_d of the IKE SA the exchange ran over (this one, §2.17)
        ck = keymat.child_keymat(self.suite.prf, self.km.sk_d, ni, nr, encr.key_len,
                                 integ.key_len if integ else 0, g_ir)
        mine = (ck.encr_i, ck.integ_i) if exchange_initiator else (ck.encr_r, ck.integ_r)
        theirs = (ck.encr_r, ck.integ_r) if exchange_initiator else (ck.encr_i, ck.integ_i)
        local, remote = self.node.local_host, self.remote[0]
        out_sa = EspSa(spi_out, suite.encr, suite.key_bits, mine[0], suite.integ, mine[1], local, remote)
        in_sa = EspSa(spi_in, suite.encr, suite.key_bits, theirs[0], suite.integ, theirs[1], remote, local)
        local_ts, remote_ts = (tsi, tsr) if exchange_initiator else (tsr, tsi)
        child = ChildSa(spi_in, spi_out, suite, local_ts, remote_ts, in_sa, out_sa, rid, peer_rid, resource,
                        transport, rekey_of=rekey_of.spi_in if rekey_of else None, nonces=(ni, nr),
                        created_by_us=exchange_initiator)
        self.live().children[spi_in] = child  # after an IKE SA rekey, the successor owns it
        self.node.child_keyed(child)
        log.info("Child SA %08x/%08x installed (%s, resource %s, id %s%s)", spi_in, spi_out, suite,
                 "fallback" if resource is None else resource, rid.hex() if rid else "-",
                 f", rekeys {rekey_of.spi_in:08x}" if rekey_of else "")
        return child

    def _find_child(self, match: Callable[[ChildSa], bool]) -> ChildSa | None:
        ike: IkeSa | None = self
        while ike is not None:
            hit = next((c for c in ike.children.values() if match(c)), None)
            if hit is not None:
                return hit
            ike = ike.successor
        return None

    def _respond_child(self, inner: list[Payload], ni: bytes, nr: bytes, in_auth: bool,
                       nr_payload: bytes | None = None) -> list[Payload]:
        """Responder side of a Child SA negotiation; returns payloads for the response."""
        sa = first(inner, SaPayload)
        tsi, tsr = first(inner, TsPayload, PayloadType.TSi), first(inner, TsPayload, PayloadType.TSr)
        if sa is None or tsi is None or tsr is None:
            return [notify(NotifyType.INVALID_SYNTAX)] if not in_auth else []
        rekey = find_notify(inner, NotifyType.REKEY_SA)
        old = None
        if rekey is not None:
            old_spi = struct.unpack(">I", rekey.spi)[0] if len(rekey.spi) == 4 else -1
            old = self._find_child(lambda c: c.spi_out == old_spi and c.state != "deleted")
            if old is None:
                return [notify(NotifyType.CHILD_SA_NOT_FOUND, protocol=ProtocolId.ESP, spi=rekey.spi)]
            if old.state != "installed" or old.deleting:
                log.info("rekey of Child SA %08x refused: TEMPORARY_FAILURE (we are closing it, §2.25.1)",
                         old.spi_in)
                return [notify(NotifyType.TEMPORARY_FAILURE)]
            if not old.rekeying:
                self.node.collide_child(self, old)  # --collide: our rekey of it crosses theirs
        ke = first(inner, KePayload)
        ours = self.node.esp_accept()
        if ke is None:
            ours = list(dict.fromkeys(replace(s, dh=0) for s in ours))
        chosen = choose(sa.proposals, ours, ProtocolId.ESP)
        if chosen is None or len(chosen[0].spi) != 4:
            return [notify(NotifyType.NO_PROPOSAL_CHOSEN)]
        prop, suite = chosen
        if suite.dh and (ke is None or ke.dh_group != suite.dh):
            return [notify(NotifyType.INVALID_KE_PAYLOAD, struct.pack(">H", suite.dh))]
        nts_i = narrow(tsi.selectors, subnet_ts(self.cfg.remote_ts))
        nts_r = narrow(tsr.selectors, subnet_ts(self.cfg.local_ts))
        if not nts_i or not nts_r:
            return [notify(NotifyType.TS_UNACCEPTABLE)]
        info = find_notify(inner, R9611)
        key = (ts_text(nts_r), ts_text(nts_i))
        same = [c for c in self.live().children.values() if c.state == "installed" and c.ts_key == key]
        if old is None and not in_auth and len(same) - 1 >= self.cfg.max_per_ts and not self.cfg.fault("no-ts-limit"):
            log.info("refusing Child SA %d+1 for TS %s <-> %s: TS_MAX_QUEUE (limit %d additional)",
                     len(same), key[0], key[1], self.cfg.max_per_ts)
            self.node.refusals += 1
            if self.cfg.fault("no-additional-sas"):
                return [notify(NotifyType.NO_ADDITIONAL_SAS)]
            return [notify(NotifyType.TS_MAX_QUEUE, b"\0\0\0\0" if self.cfg.fault("ts-max-queue-data") else b"")]
        g_ir = None
        kex = None
        if suite.dh:
            kex = key_exchange(suite.dh)
            g_ir = kex.shared(ke.data)
        spi_in = self.node.new_spi()
        if old is not None:
            resource, rid = old.resource, old.resource_id
        elif in_auth:
            resource, rid = None, (b"" if info is not None else None)
        else:
            resource = self.node.least_loaded_resource(key) if info is not None or self.cfg.resource_info else None
            rid = self.node.new_resource_id(key, resource) if (info is not None and self.cfg.resource_info) else None
        if info is not None and not self.cfg.resource_info:
            rid = None  # RFC 9611 §7: only with the explicit switch do we answer SA_RESOURCE_INFO
        transport = find_notify(inner, NotifyType.USE_TRANSPORT_MODE) is not None
        child = self._install(suite, spi_in, struct.unpack(">I", prop.spi)[0], False, ni, nr, g_ir,
                              nts_i, nts_r, resource, rid,
                              info.data if info is not None else None, old, transport)
        out: list[Payload] = []
        if transport:
            out.append(notify(NotifyType.USE_TRANSPORT_MODE))
        out.append(SaPayload(proposals=[suite.proposal(prop.number, ProtocolId.ESP, struct.pack(">I", spi_in))]))
        if nr_payload is not None:
            out.append(NoncePayload(data=nr_payload))
        if kex is not None:
            out.append(KePayload(dh_group=kex.group, data=kex.public))
        out += [TsPayload(ts_payload_type=PayloadType.TSi, selectors=nts_i),
                TsPayload(ts_payload_type=PayloadType.TSr, selectors=nts_r)]
        if rid is not None:
            out.append(self.node.resource_info_notify(rid))
        if old is not None and old.rekeying:
            # §2.8.1: we are rekeying it too; answer as usual, settle when our response is in
            log.info("Child SA %08x: the peer rekeys it while we do (collision)", old.spi_in)
            old.collision = child
        elif old is not None:
            old.state = "rekeyed"
            self.node.child_rekeyed(self, old, child)
        else:
            self.node.child_installed(self, child)
        return out

    # -- IKE SA rekey (§1.3.2, §2.18, §2.8.2) ---------------------------------------------

    def _ike_proposals(self, spi: bytes) -> tuple[SaPayload, list[Suite]]:
        suites = [self.suite, *[s for s in self.cfg.ike_suites if s != self.suite]]
        sa = SaPayload(proposals=[s.proposal(i + 1, ProtocolId.IKE, spi) for i, s in enumerate(suites)])
        for p in sa.proposals[:-1]:
            p.last = 2
        return sa, suites

    def rekey_ike(self, on_done: Callable[[IkeSa | None, str], None], group: int = 0) -> None:
        """CREATE_CHILD_SA {SA(new SPIi), Ni, KEi}; ``on_done(new IKE SA or None, why)``.

        The new IKE SA gets its keys from SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr)
        (§2.18, the old PRF), takes over the Child SAs, and the old one is deleted.
        """
        spi = self.node.new_ike_spi()
        nonce = os.urandom(NONCE_LEN)
        kex = key_exchange(group or self.suite.dh)  # §2.18: a rekeyed IKE SA always has a new DH
        sa, suites = self._ike_proposals(spi)
        inner: list[Payload] = [sa, NoncePayload(data=nonce), KePayload(dh_group=kex.group, data=kex.public)]

        def before_send(ike: IkeSa) -> str | None:
            if ike.state != "established" or ike.deleting:
                return f"IKE SA {ike.spi_i.hex()} is {ike.state}: not rekeyed"
            ike.rekeying = True
            return None

        def on_response(ike: IkeSa, resp: list[Payload]) -> None:
            ike.rekeying = False
            partner, ike.collision = ike.collision, None
            mine, why = None, ""
            err = error_notify(resp)
            inv = find_notify(resp, NotifyType.INVALID_KE_PAYLOAD)
            if inv is not None and len(inv.data) == 2 and not group and partner is None:
                wanted = struct.unpack(">H", inv.data)[0]
                if wanted in {s.dh for s in suites} and wanted != kex.group:
                    log.info("IKE SA %s rekey: the peer wants DH group %d, retrying", ike.spi_i.hex(), wanted)
                    ike.rekey_ike(on_done, wanted)
                    return
            if err is not None:
                why = _nname(err.notify_type)
            else:
                rsa, rnonce, rke = first(resp, SaPayload), first(resp, NoncePayload), first(resp, KePayload)
                chosen = choose(rsa.proposals, suites, ProtocolId.IKE) if rsa and len(rsa.proposals) == 1 else None
                if chosen is None or rnonce is None or rke is None or len(chosen[0].spi) != 8 \
                        or rke.dh_group != kex.group or chosen[1].dh != kex.group:
                    why = "unacceptable IKE SA rekey response"
                else:
                    mine = IkeSa(ike.node, True, spi, chosen[0].spi, ike.remote, ike.local)
                    mine._inherit(ike, nonce, rnonce.data)
                    mine._derive(chosen[1], kex.shared(rke.data), ike.km.sk_d, ike.suite.prf)
                    ike.node.ike_registered(mine)
            survivor = ike._settle_ike_rekey(mine, partner)
            if mine is not None and survivor is not mine:
                why = "rekey collision: the peer's new IKE SA survives (§2.8.2)"
            if why:
                log.info("IKE SA %s rekey: %s", ike.spi_i.hex(), why)
            on_done(survivor, why)

        self.request(ExchangeType.CREATE_CHILD_SA, inner, on_response, kind="ike-rekey", before_send=before_send,
                     on_drop=lambda why: on_done(None, why))

    def _inherit(self, old: IkeSa, ni: bytes, nr: bytes) -> None:
        """What a new IKE SA keeps from the one it rekeys; message IDs restart at 0 (§2.18)."""
        self.ni, self.nr = ni, nr
        self.natt = old.natt
        self.peer_fragmentation = old.peer_fragmentation
        self.peer_supports_resource_info = old.peer_supports_resource_info
        self.remote_access_address = old.remote_access_address
        self.state = "established"
        self.next_id = self.peer_id = 0

    def _respond_ike_rekey(self, inner: list[Payload], sa: SaPayload, nonce: NoncePayload) -> list[Payload]:
        if self.state != "established" or self.deleting:
            return [notify(NotifyType.TEMPORARY_FAILURE)]  # §2.25.2: we are closing it
        if not self.rekeying:
            self.node.collide_ike(self)  # --collide: our rekey of it crosses theirs
        chosen = choose(sa.proposals, self.cfg.ike_suites, ProtocolId.IKE)
        if chosen is None:
            return [notify(NotifyType.NO_PROPOSAL_CHOSEN)]
        prop, suite = chosen
        if len(prop.spi) != 8:
            return [notify(NotifyType.INVALID_SYNTAX)]
        ke = first(inner, KePayload)
        if ke is None or ke.dh_group != suite.dh:  # §2.18: a new DH is a MUST
            return [notify(NotifyType.INVALID_KE_PAYLOAD, struct.pack(">H", suite.dh))]
        kex = key_exchange(suite.dh)
        g_ir = kex.shared(ke.data)
        nr = os.urandom(NONCE_LEN)
        spi = self.node.new_ike_spi()
        theirs = IkeSa(self.node, False, prop.spi, spi, self.remote, self.local)
        theirs._inherit(self, nonce.data, nr)
        theirs._derive(suite, g_ir, self.km.sk_d, self.suite.prf)
        self.node.ike_registered(theirs)
        log.info("IKE SA %s rekeyed by the peer: new IKE SA %s", self.spi_i.hex(), theirs.name)
        if self.rekeying:
            log.info("IKE SA %s: the peer rekeys it while we do (collision)", self.spi_i.hex())
            self.collision = theirs  # settled when our rekey's response is in (§2.8.2)
        else:
            self._hand_over(theirs)
        return [SaPayload(proposals=[suite.proposal(prop.number, ProtocolId.IKE, spi)]), NoncePayload(data=nr),
                KePayload(dh_group=kex.group, data=kex.public)]

    def _settle_ike_rekey(self, mine: IkeSa | None, partner: IkeSa | None) -> IkeSa | None:
        """§2.8.2: the IKE SA created with the lowest nonce is closed by its creator; the
        survivor inherits the Child SAs; the survivor's creator deletes this (old) IKE SA."""
        if mine is not None and partner is not None:
            if lowest_nonce_in((mine.ni, mine.nr), (partner.ni, partner.nr)):
                loser, survivor = mine, partner
            else:
                loser, survivor = partner, mine
            loser.redundant = True
            log.info("IKE SA rekey collision on %s: %s survives, %s is redundant (lowest nonce)",
                     self.spi_i.hex(), survivor.name, loser.name)
            self.node.events.append("ike-rekey-collision")
        else:
            survivor = mine or partner
        if survivor is None:
            return None
        self._hand_over(survivor)
        if mine is not None and mine.redundant:
            mine.delete()  # we created it, we close it
        if survivor is mine:
            self.delete()  # the last request on the old IKE SA (§2.18)
        return survivor

    def _hand_over(self, new: IkeSa) -> None:
        """The Child SAs and the requests not yet sent move to ``new`` (§2.18)."""
        for spi, c in list(self.children.items()):
            if c.state != "deleted":
                new.children[spi] = c
                del self.children[spi]
        keep, moved = deque(), []
        for req in self.queue:
            if req.kind == "ike-rekey":
                if req.on_drop:
                    req.on_drop("the IKE SA was rekeyed meanwhile")
            elif req.kind == "delete-ike":
                keep.append(req)
            else:
                moved.append(req)
        self.queue = keep
        new.queue.extend(moved)
        self.successor = new
        self.state = "rekeyed"
        log.info("IKE SA %s rekeyed: Child SAs now under %s (message IDs from 0)", self.spi_i.hex(), new.name)
        self.node.ike_rekeyed(self, new)
        new._pump()

    # -- receiving ------------------------------------------------------------------------

    def handle(self, msg: IkeMessage) -> None:
        """A datagram for this IKE SA (already matched by SPIs). Never raises."""
        try:
            self._handle(msg)
        except IkeError as err:
            log.error("IKE SA %s: %s", self.spi_i.hex(), err)
            self.node.ike_dead(self)
        except (DhError, keymat.KeymatError, ValueError, struct.error) as err:
            log.warning("IKE SA %s: message %d dropped: %s", self.spi_i.hex(), msg.message_id, err)

    def _open(self, msg: IkeMessage) -> list[Payload] | None:
        """Decrypt SK, or add an SKF fragment (RFC 7383 §2.6) with ``sk.IkeDecryptor``.

        None: dropped (logged), or a fragment that does not complete its message yet.
        """
        sk = first(msg.payloads, SkPayload)
        if sk is None or self.keys is None:
            return None
        before = msg.malformed
        self.decryptor.decrypt(msg)
        if sk.error:
            log.warning("IKE SA %s: message %d from %s dropped: %s", self.spi_i.hex(), msg.message_id,
                        self.remote[0], sk.error.replace(" — wrong keys?", ""))
            return None
        if not sk.decrypted:
            return None
        if isinstance(sk, SkfPayload):
            if not sk.reassembled_from:
                log.debug("IKE SA %s: message %d fragment %d/%d kept", self.spi_i.hex(), msg.message_id,
                          sk.fragment_number, sk.total_fragments)
                return None
            log.info("IKE SA %s: message %d reassembled from %d SKF fragments", self.spi_i.hex(),
                     msg.message_id, sk.total_fragments)
        if msg.malformed is not None and msg.malformed is not before:
            log.warning("IKE SA %s: message %d malformed: %s", self.spi_i.hex(), msg.message_id, msg.malformed)
            return None
        return sk.inner

    def _handle(self, msg: IkeMessage) -> None:
        if msg.exchange == ExchangeType.IKE_SA_INIT:
            if msg.response and self.state == "init-sent" and self.inflight is not None:
                self._on_init_response(msg)
            elif not msg.response and self.last_response and self.last_response[0] == 0:
                self._send(self.last_response[1])  # retransmitted IKE_SA_INIT request
            return
        sk = first(msg.payloads, SkPayload)
        if msg.response:
            req = self.inflight
            if req is None or msg.message_id != req.message_id:
                return  # late retransmission or stray
            inner = self._open(msg)
            if inner is None:
                return
            self.last_heard = time.time()
            self.inflight = None
            req.on_response(self, inner)
            self._pump()
            return
        if self.last_response and msg.message_id == self.last_response[0]:
            # a retransmitted request; fragmented: answer on its first fragment only (RFC 7383 §2.6.1)
            if not isinstance(sk, SkfPayload) or sk.fragment_number == 1:
                self._send(self.last_response[1])
            return
        if msg.message_id != self.peer_id:
            log.info("IKE SA %s: request with message id %d, expected %d: dropped", self.spi_i.hex(),
                     msg.message_id, self.peer_id)
            return
        inner = self._open(msg)
        if inner is None:
            return
        self.last_heard = time.time()
        if msg.exchange == ExchangeType.IKE_AUTH and self.state == "init-done":
            out = self._respond_auth(inner)
        elif self.state not in ("established", "rekeyed"):
            return
        elif msg.exchange == ExchangeType.CREATE_CHILD_SA:
            out = self._respond_create(inner)
        elif msg.exchange == ExchangeType.INFORMATIONAL:
            out = self._respond_informational(inner)
        else:
            out = [notify(NotifyType.INVALID_SYNTAX)]
        data = self._seal(msg.exchange, msg.message_id, True, out)
        self.last_response = (msg.message_id, data)
        self.peer_id += 1
        self._send(data)
        if self.state == "dead":
            self.node.ike_dead(self)
        elif self.state == "deleted":
            self.node.ike_deleted(self)

    def _respond_create(self, inner: list[Payload]) -> list[Payload]:
        sa = first(inner, SaPayload)
        nonce = first(inner, NoncePayload)
        if sa is None or nonce is None:
            return [notify(NotifyType.INVALID_SYNTAX)]
        if sa.proposals and sa.proposals[0].protocol_id == ProtocolId.IKE:
            return self._respond_ike_rekey(inner, sa, nonce)
        if self.rekeying or self.state != "established":
            # §2.25.2: no Child SA creation or rekey while we rekey (or have rekeyed) the IKE SA
            log.info("IKE SA %s: CREATE_CHILD_SA answered TEMPORARY_FAILURE (IKE SA rekey)", self.spi_i.hex())
            return [notify(NotifyType.TEMPORARY_FAILURE)]
        nr = os.urandom(NONCE_LEN)
        return self._respond_child(inner, nonce.data, nr, in_auth=False, nr_payload=nr)

    def _respond_informational(self, inner: list[Payload]) -> list[Payload]:
        out: list[Payload] = []
        for d in inner:
            if not isinstance(d, DeletePayload):
                continue
            if d.protocol_id == ProtocolId.IKE:
                log.info("IKE SA %s deleted by the peer", self.spi_i.hex())
                self.state = "deleted"
                return []
            if d.protocol_id == ProtocolId.ESP:
                mine = []
                for spi in d.spis:
                    if len(spi) != 4:
                        continue
                    spi_out = struct.unpack(">I", spi)[0]
                    child = self._find_child(lambda c, spi=spi_out: c.spi_out == spi and c.state != "deleted")
                    if child is not None:
                        if not child.deleting:  # §1.4.1: both closing it: no Delete in the answer
                            mine.append(struct.pack(">I", child.spi_in))
                        self._forget(child)
                if mine:
                    out.append(DeletePayload(protocol_id=ProtocolId.ESP, spi_size=4, spis=mine))
        return out

    def _forget(self, child: ChildSa) -> None:
        child.state = "deleted"
        log.info("Child SA %08x/%08x deleted", child.spi_in, child.spi_out)
        self.node.child_deleted(self, child)

    # -- deleting -------------------------------------------------------------------------

    def delete_children(self, children: list[ChildSa], on_done: Callable[[], None] | None = None) -> None:
        todo = [c for c in children if c.state != "deleted" and not c.deleting]
        if not todo:
            if on_done:
                on_done()
            return
        for c in todo:
            c.deleting = True

        def on_response(ike: IkeSa, resp: list[Payload]) -> None:
            for c in todo:
                if c.state != "deleted":
                    ike._forget(c)
            if on_done:
                on_done()

        self.request(ExchangeType.INFORMATIONAL,
                     [DeletePayload(protocol_id=ProtocolId.ESP, spi_size=4,
                                    spis=[struct.pack(">I", c.spi_in) for c in todo])],
                     on_response, on_drop=lambda why: on_done() if on_done else None)

    def delete(self, on_done: Callable[[], None] | None = None) -> None:
        """INFORMATIONAL {D(IKE)} on this very IKE SA (§1.4.1)."""
        def before_send(ike: IkeSa) -> str | None:
            ike.deleting = True
            return None

        def on_response(ike: IkeSa, resp: list[Payload]) -> None:
            ike.state = "deleted"
            ike.node.ike_deleted(ike)
            if on_done:
                on_done()

        self.request(ExchangeType.INFORMATIONAL, [DeletePayload(protocol_id=ProtocolId.IKE)], on_response,
                     kind="delete-ike", before_send=before_send)

    def liveness(self) -> None:
        """§1.4: an empty INFORMATIONAL request."""
        self.request(ExchangeType.INFORMATIONAL, [], lambda ike, resp: None)


def _equal(a: bytes, b: bytes) -> bool:
    import hmac

    return hmac.compare_digest(bytes(a), bytes(b))


def _nname(kind: int) -> str:
    try:
        return NotifyType(kind).name
    except ValueError:
        return f"notify {kind}"


def child_request(node: Node, resource: int | None, resource_id: bytes | None, kex_group: int = 0,
                  rekey_of: ChildSa | None = None, local_ts: list | None = None, remote_ts: list | None = None,
                  transport: bool = False, suites: list[Suite] | None = None) -> _ChildRequest:
    return _ChildRequest(node.new_spi(), os.urandom(NONCE_LEN), key_exchange(kex_group) if kex_group else None,
                         local_ts or [subnet_ts(node.cfg.local_ts)], remote_ts or [subnet_ts(node.cfg.remote_ts)],
                         resource, resource_id, rekey_of, transport, suites or [])


__all__ = [
    "IKE_HEADER_LEN",
    "ChildSa",
    "IkeError",
    "IkeSa",
    "Secret",
    "child_request",
    "narrow",
    "parse_message",
    "subnet_ts",
]

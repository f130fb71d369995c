"""Linux XFRM netlink (NETLINK_XFRM = 6): message classes, typed records, a read-only socket.

Wire tables
-----------
Every number below was checked against the kernel's ``include/uapi/linux/xfrm.h`` as of
**Linux 6.17** (read through the search tool: a torvalds/linux mirror at commit
``9b44fff655e2``, Makefile 6.17-rc3; the torvalds/linux copies in the index predate 4.14).
That header is the one with ``XFRMA_SA_DIR = 33`` (6.10), ``XFRMA_SA_PCPU = 35`` and
``XFRM_POLICY_CPU_ACQUIRE = 4`` (6.13), the IP-TFS attributes 36..41 (6.14) and
``XFRM_MSG_SETDEFAULT``/``GETDEFAULT`` (0x27/0x28). The host kernel the tests run on is 6.18;
Debian's UML 6.1 simply never sends attributes above 32.

The message classes follow pyroute2's ``ifaddrmsg`` style (``fields`` + explicit-id
``nla_map`` triples). ``pack = 'struct'`` is declared where the C layout has holes, but
pyroute2 0.9.7's generic codec packs field by field, so every hole and trailing pad is also
written out as an explicit ``'Nx'`` field; ``tests/test_xfrm_wire.py`` checks each body size
against the C ``sizeof`` computed by ctypes. The SPI and the ports are big-endian on the wire.

Key material: the algorithm attributes carry keys after the fixed part; these classes declare
only name, key length and ICV/truncation length, so no key is ever decoded into a record.

Records and socket
------------------
``XfrmSaState``/``XfrmPolicy``/... are frozen dataclasses built from decoded messages
(``sa_from_msg`` etc.). ``XfrmSocket`` only dumps and listens: it refuses to send any message
type outside ``READ_ONLY_TYPES``.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import select
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import IntEnum

from pyroute2.netlink import (
    NLM_F_DUMP,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    nla,
    nlmsg,
    nlmsg_base,
    nlmsg_decoder_generic,
    nlmsg_encoder_generic,
)

NETLINK_XFRM = 6
NLM_F_DUMP_INTR = 0x10
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
AF_INET, AF_INET6 = int(socket.AF_INET), int(socket.AF_INET6)
XFRM_INF = 0xFFFFFFFFFFFFFFFF
PCPU_NONE = 0xFFFFFFFF  # the kernel's "no CPU" (x->pcpu_num == UINT_MAX), never sent


class XfrmMsg(IntEnum):
    """``XFRM_MSG_*`` (uapi enum starting at XFRM_MSG_BASE = 0x10)."""

    NEWSA = 0x10
    DELSA = 0x11
    GETSA = 0x12
    NEWPOLICY = 0x13
    DELPOLICY = 0x14
    GETPOLICY = 0x15
    ALLOCSPI = 0x16
    ACQUIRE = 0x17
    EXPIRE = 0x18
    UPDPOLICY = 0x19
    UPDSA = 0x1A
    POLEXPIRE = 0x1B
    FLUSHSA = 0x1C
    FLUSHPOLICY = 0x1D
    NEWAE = 0x1E
    GETAE = 0x1F
    REPORT = 0x20
    MIGRATE = 0x21
    NEWSADINFO = 0x22
    GETSADINFO = 0x23
    NEWSPDINFO = 0x24
    GETSPDINFO = 0x25
    MAPPING = 0x26
    SETDEFAULT = 0x27
    GETDEFAULT = 0x28


#: The only message types ``XfrmSocket`` will ever send: they read, never change, kernel state.
READ_ONLY_TYPES = frozenset({XfrmMsg.GETSA, XfrmMsg.GETPOLICY, XfrmMsg.GETAE,
                             XfrmMsg.GETSADINFO, XfrmMsg.GETSPDINFO, XfrmMsg.GETDEFAULT})


class XfrmAttr(IntEnum):
    """``enum xfrm_attr_type_t`` (XFRMA_*)."""

    UNSPEC = 0
    ALG_AUTH = 1
    ALG_CRYPT = 2
    ALG_COMP = 3
    ENCAP = 4
    TMPL = 5
    SA = 6
    POLICY = 7
    SEC_CTX = 8
    LTIME_VAL = 9
    REPLAY_VAL = 10
    REPLAY_THRESH = 11
    ETIMER_THRESH = 12
    SRCADDR = 13
    COADDR = 14
    LASTUSED = 15
    POLICY_TYPE = 16
    MIGRATE = 17
    ALG_AEAD = 18
    KMADDRESS = 19
    ALG_AUTH_TRUNC = 20
    MARK = 21
    TFCPAD = 22
    REPLAY_ESN_VAL = 23
    SA_EXTRA_FLAGS = 24
    PROTO = 25
    ADDRESS_FILTER = 26
    PAD = 27
    OFFLOAD_DEV = 28
    SET_MARK = 29
    SET_MARK_MASK = 30
    IF_ID = 31
    MTIMER_THRESH = 32
    SA_DIR = 33
    NAT_KEEPALIVE_INTERVAL = 34
    SA_PCPU = 35
    IPTFS_DROP_TIME = 36
    IPTFS_REORDER_WINDOW = 37
    IPTFS_DONT_FRAG = 38
    IPTFS_INIT_DELAY = 39
    IPTFS_MAX_QSIZE = 40
    IPTFS_PKT_SIZE = 41


class XfrmGroup(IntEnum):
    """``enum xfrm_nlgroups`` (multicast group numbers for NETLINK_ADD_MEMBERSHIP)."""

    ACQUIRE = 1
    EXPIRE = 2
    SA = 3
    POLICY = 4
    AEVENTS = 5
    REPORT = 6
    MIGRATE = 7
    MAPPING = 8


class SaDir(IntEnum):
    """``enum xfrm_sa_dir`` (value of XFRMA_SA_DIR)."""

    IN = 1
    OUT = 2


class PolicyDir(IntEnum):
    """``XFRM_POLICY_IN/OUT/FWD`` (xfrm_userpolicy_info.dir)."""

    IN = 0
    OUT = 1
    FWD = 2


class Mode(IntEnum):
    """``XFRM_MODE_*``."""

    TRANSPORT = 0
    TUNNEL = 1
    ROUTEOPTIMIZATION = 2
    IN_TRIGGER = 3
    BEET = 4
    IPTFS = 5


# xfrm_userpolicy_info.flags
XFRM_POLICY_LOCALOK = 1
XFRM_POLICY_ICMP = 2
XFRM_POLICY_CPU_ACQUIRE = 4
# xfrm_usersa_info.flags
XFRM_STATE_NOECN = 1
XFRM_STATE_DECAP_DSCP = 2
XFRM_STATE_NOPMTUDISC = 4
XFRM_STATE_WILDRECV = 8
XFRM_STATE_ICMP = 16
XFRM_STATE_AF_UNSPEC = 32
XFRM_STATE_ALIGN4 = 64
XFRM_STATE_ESN = 128
# XFRMA_SA_EXTRA_FLAGS
XFRM_SA_XFLAG_DONT_ENCAP_DSCP = 1
XFRM_SA_XFLAG_OSEQ_MAY_WRAP = 2
# xfrm_aevent_id.flags (enum xfrm_ae_ftype_t)
XFRM_AE_RTHR, XFRM_AE_RVAL, XFRM_AE_LVAL, XFRM_AE_ETHR = 1, 2, 4, 8
XFRM_AE_CR, XFRM_AE_CE, XFRM_AE_CU = 16, 32, 64
# XFRM_POLICY_TYPE_*
XFRM_POLICY_TYPE_MAIN, XFRM_POLICY_TYPE_SUB = 0, 1


# ---------------------------------------------------------------------------------------
# Field tables. One tuple per C struct, in C order; holes are explicit 'x' fields named
# '__pad' (dropped on decode). Nested structs are flattened with a name prefix.

def _nest(prefix: str, fields: tuple) -> tuple:
    return tuple(f if f[0] == "__pad" else (prefix + f[0], f[1]) for f in fields)


ADDRESS = "16s"  # xfrm_address_t: union { __be32 a4; __be32 a6[4]; }

SELECTOR = (  # struct xfrm_selector, 56 bytes
    ("daddr", ADDRESS), ("saddr", ADDRESS),
    ("dport", ">H"), ("dport_mask", ">H"), ("sport", ">H"), ("sport_mask", ">H"),
    ("family", "H"), ("prefixlen_d", "B"), ("prefixlen_s", "B"), ("proto", "B"),
    ("__pad", "3x"), ("ifindex", "i"), ("user", "I"),
)
ID = (("daddr", ADDRESS), ("spi", ">I"), ("proto", "B"), ("__pad", "3x"))  # xfrm_id, 24
LIFETIME_CFG = tuple((n, "Q") for n in (  # xfrm_lifetime_cfg, 64
    "soft_byte_limit", "hard_byte_limit", "soft_packet_limit", "hard_packet_limit",
    "soft_add_expires_seconds", "hard_add_expires_seconds",
    "soft_use_expires_seconds", "hard_use_expires_seconds"))
LIFETIME_CUR = (("bytes", "Q"), ("packets", "Q"), ("add_time", "Q"), ("use_time", "Q"))  # 32
STATS = (("replay_window", "I"), ("replay", "I"), ("integrity_failed", "I"))  # 12

USERSA_INFO = (  # struct xfrm_usersa_info, 224
    *_nest("sel_", SELECTOR), *_nest("id_", ID), ("saddr", ADDRESS),
    *_nest("lft_", LIFETIME_CFG), *_nest("curlft_", LIFETIME_CUR), *_nest("stats_", STATS),
    ("seq", "I"), ("reqid", "I"), ("family", "H"), ("mode", "B"), ("replay_window", "B"),
    ("flags", "B"), ("__pad", "7x"),
)
USERSA_ID = (("daddr", ADDRESS), ("spi", ">I"), ("family", "H"), ("proto", "B"),
             ("__pad", "1x"))  # struct xfrm_usersa_id, 24
AEVENT_ID = (*_nest("sa_id_", USERSA_ID), ("saddr", ADDRESS), ("flags", "I"),
             ("reqid", "I"))  # struct xfrm_aevent_id, 48
USERSPI_INFO = (*_nest("info_", USERSA_INFO), ("min", "I"), ("max", "I"))  # 232
USERPOLICY_INFO = (  # struct xfrm_userpolicy_info, 168
    *_nest("sel_", SELECTOR), *_nest("lft_", LIFETIME_CFG), *_nest("curlft_", LIFETIME_CUR),
    ("priority", "I"), ("index", "I"), ("dir", "B"), ("action", "B"), ("flags", "B"),
    ("share", "B"), ("__pad", "4x"),
)
USERPOLICY_ID = (*_nest("sel_", SELECTOR), ("index", "I"), ("dir", "B"),
                 ("__pad", "3x"))  # struct xfrm_userpolicy_id, 64
USER_ACQUIRE = (  # struct xfrm_user_acquire, 280
    *_nest("id_", ID), ("saddr", ADDRESS), *_nest("sel_", SELECTOR),
    *_nest("policy_", USERPOLICY_INFO),
    ("aalgos", "I"), ("ealgos", "I"), ("calgos", "I"), ("seq", "I"),
)
USER_EXPIRE = (*_nest("state_", USERSA_INFO), ("hard", "B"), ("__pad", "7x"))  # 232
USER_POLEXPIRE = (*_nest("pol_", USERPOLICY_INFO), ("hard", "B"), ("__pad", "7x"))  # 176
USERSA_FLUSH = (("proto", "B"), ("__pad", "3x"))  # struct xfrm_usersa_flush (1 + nlmsg pad)
USER_REPORT = (("proto", "B"), ("__pad", "3x"), *_nest("sel_", SELECTOR))  # 60
USER_MAPPING = (*_nest("id_", USERSA_ID), ("reqid", "I"), ("old_saddr", ADDRESS),
                ("new_saddr", ADDRESS), ("old_sport", ">H"), ("new_sport", ">H"))  # 64
USER_TMPL = (  # struct xfrm_user_tmpl, 64
    *_nest("id_", ID), ("family", "H"), ("__pad", "2x"), ("saddr", ADDRESS), ("reqid", "I"),
    ("mode", "B"), ("share", "B"), ("optional", "B"), ("__pad", "1x"),
    ("aalgos", "I"), ("ealgos", "I"), ("calgos", "I"),
)
ENCAP_TMPL = (("encap_type", "H"), ("encap_sport", ">H"), ("encap_dport", ">H"),
              ("__pad", "2x"), ("encap_oa", ADDRESS))  # struct xfrm_encap_tmpl, 24
REPLAY_STATE = (("oseq", "I"), ("seq", "I"), ("bitmap", "I"))  # 12
REPLAY_STATE_ESN = (("bmp_len", "I"), ("oseq", "I"), ("seq", "I"), ("oseq_hi", "I"),
                    ("seq_hi", "I"), ("replay_window", "I"))  # 24 + bmp[bmp_len]

_BYTES_DEFAULT = 16 * b"\0"


def _defaults(fields: tuple) -> dict:
    return {name: _BYTES_DEFAULT for name, fmt in fields if fmt == ADDRESS}


def sizeof(fields: tuple) -> int:
    """Byte size of a field table (each field packed on its own, as pyroute2 does)."""
    return sum(struct.calcsize(fmt) for _, fmt in fields)


def _drop_pads(msg: dict) -> None:
    msg.pop("__pad", None)


# ---------------------------------------------------------------------------------------
# NLA classes (attribute payloads) and message classes.

class _struct_nla(nla):
    """An attribute whose payload is a fixed C struct."""

    pack = "struct"

    def decode(self):
        nla.decode(self)
        _drop_pads(self)


class xfrm_attrs:
    """The XFRMA_* attribute table shared by every XFRM message (explicit ids, uapi order).

    Only the attributes multisa reads are decoded; the rest stay raw ('hex'/'cdata')."""

    prefix = "XFRMA_"
    nla_map = (
        (XfrmAttr.UNSPEC, "XFRMA_UNSPEC", "none"),
        (XfrmAttr.ALG_AUTH, "XFRMA_ALG_AUTH", "xfrm_algo"),
        (XfrmAttr.ALG_CRYPT, "XFRMA_ALG_CRYPT", "xfrm_algo"),
        (XfrmAttr.ALG_COMP, "XFRMA_ALG_COMP", "xfrm_algo"),
        (XfrmAttr.ENCAP, "XFRMA_ENCAP", "xfrm_encap_tmpl"),
        (XfrmAttr.TMPL, "XFRMA_TMPL", "xfrm_tmpl_list"),
        (XfrmAttr.SA, "XFRMA_SA", "xfrm_usersa_info_nla"),
        (XfrmAttr.POLICY, "XFRMA_POLICY", "xfrm_userpolicy_info_nla"),
        (XfrmAttr.SEC_CTX, "XFRMA_SEC_CTX", "hex"),
        (XfrmAttr.LTIME_VAL, "XFRMA_LTIME_VAL", "xfrm_lifetime_cur"),
        (XfrmAttr.REPLAY_VAL, "XFRMA_REPLAY_VAL", "xfrm_replay_state"),
        (XfrmAttr.REPLAY_THRESH, "XFRMA_REPLAY_THRESH", "uint32"),
        (XfrmAttr.ETIMER_THRESH, "XFRMA_ETIMER_THRESH", "uint32"),
        (XfrmAttr.SRCADDR, "XFRMA_SRCADDR", "cdata"),
        (XfrmAttr.COADDR, "XFRMA_COADDR", "cdata"),
        (XfrmAttr.LASTUSED, "XFRMA_LASTUSED", "uint64"),
        (XfrmAttr.POLICY_TYPE, "XFRMA_POLICY_TYPE", "xfrm_userpolicy_type"),
        (XfrmAttr.MIGRATE, "XFRMA_MIGRATE", "hex"),
        (XfrmAttr.ALG_AEAD, "XFRMA_ALG_AEAD", "xfrm_algo_aead"),
        (XfrmAttr.KMADDRESS, "XFRMA_KMADDRESS", "hex"),
        (XfrmAttr.ALG_AUTH_TRUNC, "XFRMA_ALG_AUTH_TRUNC", "xfrm_algo_auth"),
        (XfrmAttr.MARK, "XFRMA_MARK", "xfrm_mark"),
        (XfrmAttr.TFCPAD, "XFRMA_TFCPAD", "uint32"),
        (XfrmAttr.REPLAY_ESN_VAL, "XFRMA_REPLAY_ESN_VAL", "xfrm_replay_state_esn"),
        (XfrmAttr.SA_EXTRA_FLAGS, "XFRMA_SA_EXTRA_FLAGS", "uint32"),
        (XfrmAttr.PROTO, "XFRMA_PROTO", "uint8"),
        (XfrmAttr.ADDRESS_FILTER, "XFRMA_ADDRESS_FILTER", "hex"),
        (XfrmAttr.PAD, "XFRMA_PAD", "none"),
        (XfrmAttr.OFFLOAD_DEV, "XFRMA_OFFLOAD_DEV", "hex"),
        (XfrmAttr.SET_MARK, "XFRMA_SET_MARK", "uint32"),
        (XfrmAttr.SET_MARK_MASK, "XFRMA_SET_MARK_MASK", "uint32"),
        (XfrmAttr.IF_ID, "XFRMA_IF_ID", "uint32"),
        (XfrmAttr.MTIMER_THRESH, "XFRMA_MTIMER_THRESH", "uint32"),
        (XfrmAttr.SA_DIR, "XFRMA_SA_DIR", "uint8"),
        (XfrmAttr.NAT_KEEPALIVE_INTERVAL, "XFRMA_NAT_KEEPALIVE_INTERVAL", "uint32"),
        (XfrmAttr.SA_PCPU, "XFRMA_SA_PCPU", "uint32"),
        (XfrmAttr.IPTFS_DROP_TIME, "XFRMA_IPTFS_DROP_TIME", "uint32"),
        (XfrmAttr.IPTFS_REORDER_WINDOW, "XFRMA_IPTFS_REORDER_WINDOW", "uint16"),
        (XfrmAttr.IPTFS_DONT_FRAG, "XFRMA_IPTFS_DONT_FRAG", "flag"),
        (XfrmAttr.IPTFS_INIT_DELAY, "XFRMA_IPTFS_INIT_DELAY", "uint32"),
        (XfrmAttr.IPTFS_MAX_QSIZE, "XFRMA_IPTFS_MAX_QSIZE", "uint32"),
        (XfrmAttr.IPTFS_PKT_SIZE, "XFRMA_IPTFS_PKT_SIZE", "uint32"),
    )

    class xfrm_algo(_struct_nla):
        # struct xfrm_algo: name, key length in bits; the key (alg_key[]) is never decoded
        fields = (("alg_name", "64s"), ("alg_key_len", "I"))

    class xfrm_algo_auth(_struct_nla):
        fields = (("alg_name", "64s"), ("alg_key_len", "I"), ("alg_trunc_len", "I"))

    class xfrm_algo_aead(_struct_nla):
        fields = (("alg_name", "64s"), ("alg_key_len", "I"), ("alg_icv_len", "I"))

    class xfrm_encap_tmpl(_struct_nla):
        fields = ENCAP_TMPL
        defaults = _defaults(ENCAP_TMPL)

    class xfrm_lifetime_cur(_struct_nla):
        fields = LIFETIME_CUR

    class xfrm_replay_state(_struct_nla):
        fields = REPLAY_STATE

    class xfrm_replay_state_esn(_struct_nla):
        fields = REPLAY_STATE_ESN  # bmp[bmp_len] follows; the bitmap words are not kept

    class xfrm_mark(_struct_nla):
        fields = (("v", "I"), ("m", "I"))

    class xfrm_userpolicy_type(_struct_nla):
        fields = (("type", "B"), ("__pad", "1x"), ("reserved1", "H"), ("reserved2", "B"),
                  ("__pad", "1x"))

    class xfrm_usersa_info_nla(_struct_nla):
        fields = USERSA_INFO
        defaults = _defaults(USERSA_INFO)

    class xfrm_userpolicy_info_nla(_struct_nla):
        fields = USERPOLICY_INFO
        defaults = _defaults(USERPOLICY_INFO)

    class xfrm_tmpl_list(nla):
        """XFRMA_TMPL: an array of struct xfrm_user_tmpl packed back to back (no NLA per cell)."""

        fields = ()

        def decode(self):
            nla.decode(self)
            start, end = self.offset + 4, self.offset + self.length
            cells = []
            step = sizeof(USER_TMPL)
            for off in range(start, end - step + 1, step):
                cell = xfrm_user_tmpl(self.data, offset=off, length=step)
                cell.decode()
                cells.append(dict(cell))
            self.value = cells
            self["value"] = cells

        def encode(self):
            body = bytearray()
            for value in self.getvalue() or ():
                cell = xfrm_user_tmpl()
                cell.update({k: v for k, v in value.items()})
                cell.encode()
                body += cell.data
            self["header"]["length"] = 4 + len(body)
            self.length = 4 + len(body)
            self.data.extend(struct.pack("HH", self.length, self["header"]["type"]) + body)


class xfrm_user_tmpl(nlmsg_base, nlmsg_encoder_generic, nlmsg_decoder_generic):
    """struct xfrm_user_tmpl, one cell of XFRMA_TMPL (no header of its own)."""

    header = None
    pack = "struct"
    fields = USER_TMPL
    defaults = _defaults(USER_TMPL)

    def decode(self):
        nlmsg_base.decode(self)
        _drop_pads(self)
        self.pop("attrs", None)


class _xfrm_msg(xfrm_attrs, nlmsg):
    pack = "struct"

    def decode(self):
        nlmsg.decode(self)
        _drop_pads(self)


class xfrm_usersa_info(_xfrm_msg):
    fields = USERSA_INFO
    defaults = _defaults(USERSA_INFO)


class xfrm_usersa_id(_xfrm_msg):
    fields = USERSA_ID
    defaults = _defaults(USERSA_ID)


class xfrm_aevent_id(_xfrm_msg):
    fields = AEVENT_ID
    defaults = _defaults(AEVENT_ID)


class xfrm_userspi_info(_xfrm_msg):
    fields = USERSPI_INFO
    defaults = _defaults(USERSPI_INFO)


class xfrm_userpolicy_info(_xfrm_msg):
    fields = USERPOLICY_INFO
    defaults = _defaults(USERPOLICY_INFO)


class xfrm_userpolicy_id(_xfrm_msg):
    fields = USERPOLICY_ID
    defaults = _defaults(USERPOLICY_ID)


class xfrm_user_acquire(_xfrm_msg):
    fields = USER_ACQUIRE
    defaults = _defaults(USER_ACQUIRE)


class xfrm_user_expire(_xfrm_msg):
    fields = USER_EXPIRE
    defaults = _defaults(USER_EXPIRE)


class xfrm_user_polexpire(_xfrm_msg):
    fields = USER_POLEXPIRE
    defaults = _defaults(USER_POLEXPIRE)


class xfrm_usersa_flush(_xfrm_msg):
    fields = USERSA_FLUSH


class xfrm_user_report(_xfrm_msg):
    fields = USER_REPORT
    defaults = _defaults(USER_REPORT)


class xfrm_user_mapping(_xfrm_msg):
    fields = USER_MAPPING
    defaults = _defaults(USER_MAPPING)


class xfrm_empty(_xfrm_msg):
    """FLUSHPOLICY and the *INFO requests: attributes only."""

    fields = ()


#: Message type -> body class, for decoding what the kernel sends.
MSG_CLASSES: dict[int, type[_xfrm_msg]] = {
    XfrmMsg.NEWSA: xfrm_usersa_info,
    XfrmMsg.UPDSA: xfrm_usersa_info,
    XfrmMsg.DELSA: xfrm_usersa_id,
    XfrmMsg.GETSA: xfrm_usersa_id,
    XfrmMsg.NEWPOLICY: xfrm_userpolicy_info,
    XfrmMsg.UPDPOLICY: xfrm_userpolicy_info,
    XfrmMsg.DELPOLICY: xfrm_userpolicy_id,
    XfrmMsg.GETPOLICY: xfrm_userpolicy_id,
    XfrmMsg.ALLOCSPI: xfrm_userspi_info,
    XfrmMsg.ACQUIRE: xfrm_user_acquire,
    XfrmMsg.EXPIRE: xfrm_user_expire,
    XfrmMsg.POLEXPIRE: xfrm_user_polexpire,
    XfrmMsg.FLUSHSA: xfrm_usersa_flush,
    XfrmMsg.FLUSHPOLICY: xfrm_empty,
    XfrmMsg.NEWAE: xfrm_aevent_id,
    XfrmMsg.GETAE: xfrm_aevent_id,
    XfrmMsg.REPORT: xfrm_user_report,
    XfrmMsg.MAPPING: xfrm_user_mapping,
}


# ---------------------------------------------------------------------------------------
# Typed read-only records

#: Tokens of kernel crypto API names (``authencesn(hmac(sha256),cbc(aes))``) eight or more
#: characters long; shorter tokens cannot hold an 8-octet window of a key.
_LONG_ALG_TOKENS = frozenset({
    "authenc", "authencesn", "cipher_null", "digest_null", "compress_null", "des3_ede", "chacha20",
    "xchacha20", "poly1305", "rfc7539esp", "echainiv", "blowfish", "camellia", "aegis128",
    "streebog256", "streebog512", "kuznyechik", "generic"})
_ALG_NAME = re.compile(r"[a-z0-9_-]+(?:[(),]+[a-z0-9_-]*)*\)*")
WITHHELD = "(withheld)"


def safe_alg_name(name: str) -> str:
    """An algorithm name as the kernel crypto API spells it, or ``WITHHELD`` when it could be
    key material (a key in the name's place, or glued to it): anything outside that grammar, or
    with a token of eight or more characters that no algorithm name has. The key of an SA is
    never printed, whatever the input put where."""
    if name in ("", WITHHELD):
        return name
    if len(name) > 63 or not _ALG_NAME.fullmatch(name):
        return WITHHELD
    for tok in re.split(r"[(),]+", name):
        for part in tok.split("-"):
            if len(part) >= 8 and part not in _LONG_ALG_TOKENS:
                return WITHHELD
    return name


def addr_str(raw: bytes, family: int) -> str:
    """xfrm_address_t -> text; AF_UNSPEC/0 shows as the IPv4 form when the tail is zero."""
    if family == AF_INET6 or (family not in (AF_INET,) and any(raw[4:16])):
        return str(ipaddress.IPv6Address(bytes(raw[:16])))
    return str(ipaddress.IPv4Address(bytes(raw[:4])))


@dataclass(frozen=True, slots=True)
class XfrmSelector:
    """struct xfrm_selector. ``src``/``dst``/prefix lengths are None when an import did not
    carry them (the capture JSON records only the selector's family)."""

    family: int
    src: str | None = None
    dst: str | None = None
    prefixlen_s: int | None = None
    prefixlen_d: int | None = None
    proto: int = 0
    sport: int = 0
    dport: int = 0
    sport_mask: int = 0
    dport_mask: int = 0
    ifindex: int = 0

    def __str__(self) -> str:
        return f"src {self.src}/{self.prefixlen_s} dst {self.dst}/{self.prefixlen_d} proto {self.proto}"


@dataclass(frozen=True, slots=True)
class XfrmLifetimeCfg:
    soft_byte_limit: int = XFRM_INF
    hard_byte_limit: int = XFRM_INF
    soft_packet_limit: int = XFRM_INF
    hard_packet_limit: int = XFRM_INF
    soft_add_expires_seconds: int = 0
    hard_add_expires_seconds: int = 0
    soft_use_expires_seconds: int = 0
    hard_use_expires_seconds: int = 0


#: The records built once per SA per dump (``XfrmSaState`` and the counters inside it) are
#: plain slotted dataclasses, not frozen ones: a frozen dataclass sets each field through
#: ``object.__setattr__``, 4.5 us for XfrmSaState's 23 fields against 0.3 us, which was half
#: the cost of polling 10,000 SAs (benchmarks/xfrm_bench.py). They are read-only by
#: convention: dumps hand the same record to every reader and reuse it across polls.
@dataclass(slots=True)
class XfrmLifetimeCur:
    bytes: int = 0
    packets: int = 0
    add_time: int = 0
    use_time: int = 0


@dataclass(slots=True)
class XfrmStats:
    replay_window: int = 0
    replay: int = 0
    integrity_failed: int = 0


@dataclass(slots=True)
class XfrmReplay:
    """Replay state from XFRMA_REPLAY_VAL, or XFRMA_REPLAY_ESN_VAL when ``esn``."""

    oseq: int = 0
    seq: int = 0
    bitmap: int = 0
    oseq_hi: int = 0
    seq_hi: int = 0
    replay_window: int | None = None
    esn: bool = False


@dataclass(frozen=True, slots=True)
class XfrmAlgo:
    """An SA's algorithm without its key. ``kind``: crypt, auth, auth_trunc, aead, comp."""

    kind: str
    name: str
    key_len: int  # bits
    icv_len: int | None = None  # truncation (auth_trunc) or ICV (aead) length, bits


@dataclass(frozen=True, slots=True)
class XfrmEncap:
    type: int
    sport: int
    dport: int
    oa: str


@dataclass(slots=True)
class XfrmSaState:
    """One SAD entry as the kernel reports it (GETSA dump, NEWSA/UPDSA/DELSA, EXPIRE)."""

    src: str
    dst: str
    spi: int
    proto: int
    family: int
    mode: int
    reqid: int
    dir: int | None = None  # XFRMA_SA_DIR: 1 in, 2 out; None when absent
    pcpu: int | None = None  # XFRMA_SA_PCPU; None when the SA is bound to no CPU
    seq: int = 0
    replay_window: int = 0
    flags: int = 0
    extra_flags: int = 0
    selector: XfrmSelector | None = None
    lifetime_cfg: XfrmLifetimeCfg = field(default_factory=XfrmLifetimeCfg)
    curlft: XfrmLifetimeCur = field(default_factory=XfrmLifetimeCur)
    stats: XfrmStats = field(default_factory=XfrmStats)
    replay: XfrmReplay = field(default_factory=XfrmReplay)
    algos: tuple[XfrmAlgo, ...] = ()
    encap: XfrmEncap | None = None
    mark: tuple[int, int] | None = None
    if_id: int | None = None
    lastused: int | None = None

    @property
    def spi_hex(self) -> str:
        return f"{self.spi:08x}"

    @property
    def larval(self) -> bool:
        """An ALLOCSPI/ACQUIRE placeholder: no algorithm yet."""
        return not self.algos


@dataclass(frozen=True, slots=True)
class XfrmTemplate:
    dst: str
    spi: int
    proto: int
    family: int
    src: str
    reqid: int
    mode: int
    share: int = 0
    optional: int = 0
    aalgos: int = 0
    ealgos: int = 0
    calgos: int = 0


@dataclass(frozen=True, slots=True)
class XfrmPolicy:
    """One SPD entry (GETPOLICY dump, NEWPOLICY/UPDPOLICY/DELPOLICY, or inside an ACQUIRE)."""

    dir: int
    index: int
    priority: int
    flags: int = 0
    action: int = 0
    share: int = 0
    selector: XfrmSelector | None = None
    templates: tuple[XfrmTemplate, ...] | None = ()
    ptype: int | None = None
    lifetime_cfg: XfrmLifetimeCfg = field(default_factory=XfrmLifetimeCfg)
    curlft: XfrmLifetimeCur = field(default_factory=XfrmLifetimeCur)
    mark: tuple[int, int] | None = None
    if_id: int | None = None

    @property
    def cpu_acquire(self) -> bool:
        return bool(self.flags & XFRM_POLICY_CPU_ACQUIRE)


@dataclass(frozen=True, slots=True)
class XfrmAcquire:
    """XFRM_MSG_ACQUIRE: the kernel asks the IKE daemon for an SA (per CPU with CPU_ACQUIRE)."""

    dst: str
    proto: int
    src: str
    selector: XfrmSelector
    policy: XfrmPolicy
    seq: int
    pcpu: int | None = None
    templates: tuple[XfrmTemplate, ...] = ()


@dataclass(frozen=True, slots=True)
class XfrmAeEvent:
    """XFRM_MSG_NEWAE: replay/lifetime counters of one SA (GETAE reply or AEVENTS group)."""

    dst: str
    spi: int
    proto: int
    family: int
    src: str
    flags: int
    reqid: int
    replay: XfrmReplay | None = None
    curlft: XfrmLifetimeCur | None = None
    pcpu: int | None = None
    dir: int | None = None

    @property
    def spi_hex(self) -> str:
        return f"{self.spi:08x}"


@dataclass(frozen=True, slots=True)
class XfrmEvent:
    """One multicast notification, for ``multisa xfrm watch``."""

    msg_type: int
    kind: str  # "newsa", "delsa", "acquire", "expire", ...
    ts: float
    sa: XfrmSaState | None = None
    policy: XfrmPolicy | None = None
    acquire: XfrmAcquire | None = None
    ae: XfrmAeEvent | None = None
    hard: bool | None = None  # EXPIRE / POLEXPIRE
    proto: int | None = None  # FLUSHSA


def _sub(msg: dict, prefix: str) -> dict:
    n = len(prefix)
    return {k[n:]: v for k, v in msg.items() if k.startswith(prefix)}


def _selector(d: dict) -> XfrmSelector:
    fam = d["family"]
    return XfrmSelector(
        family=fam, src=addr_str(d["saddr"], fam), dst=addr_str(d["daddr"], fam),
        prefixlen_s=d["prefixlen_s"], prefixlen_d=d["prefixlen_d"], proto=d["proto"],
        sport=d["sport"], dport=d["dport"], sport_mask=d["sport_mask"],
        dport_mask=d["dport_mask"], ifindex=d["ifindex"])


def _attr(msg, name: str):
    return msg.get_attr(name)


def _algos(msg) -> tuple[XfrmAlgo, ...]:
    out = []
    for name, kind, extra in (("XFRMA_ALG_CRYPT", "crypt", None),
                              ("XFRMA_ALG_AUTH", "auth", None),
                              ("XFRMA_ALG_AUTH_TRUNC", "auth_trunc", "alg_trunc_len"),
                              ("XFRMA_ALG_AEAD", "aead", "alg_icv_len"),
                              ("XFRMA_ALG_COMP", "comp", None)):
        a = _attr(msg, name)
        if a is not None:
            out.append(XfrmAlgo(kind, safe_alg_name(a["alg_name"].split(b"\0", 1)[0].decode("ascii", "replace")),
                                a["alg_key_len"], a.get(extra) if extra else None))
    return tuple(out)


def _replay(msg) -> XfrmReplay | None:
    esn = _attr(msg, "XFRMA_REPLAY_ESN_VAL")
    if esn is not None:
        return XfrmReplay(oseq=esn["oseq"], seq=esn["seq"], oseq_hi=esn["oseq_hi"],
                          seq_hi=esn["seq_hi"], replay_window=esn["replay_window"], esn=True)
    r = _attr(msg, "XFRMA_REPLAY_VAL")
    if r is not None:
        return XfrmReplay(oseq=r["oseq"], seq=r["seq"], bitmap=r["bitmap"])
    return None


def _mark(msg) -> tuple[int, int] | None:
    m = _attr(msg, "XFRMA_MARK")
    return None if m is None else (m["v"], m["m"])


def _templates(msg, family_hint: int) -> tuple[XfrmTemplate, ...]:
    cells = _attr(msg, "XFRMA_TMPL") or []
    out = []
    for c in cells:
        fam = c["family"] or family_hint
        out.append(XfrmTemplate(
            dst=addr_str(c["id_daddr"], fam), spi=c["id_spi"], proto=c["id_proto"], family=fam,
            src=addr_str(c["saddr"], fam), reqid=c["reqid"], mode=c["mode"], share=c["share"],
            optional=c["optional"], aalgos=c["aalgos"], ealgos=c["ealgos"],
            calgos=c["calgos"]))
    return tuple(out)


def sa_from_fields(info: dict, msg) -> XfrmSaState:
    """Build an ``XfrmSaState`` from a decoded xfrm_usersa_info (``info``) and the message
    holding the attributes (``msg``; the same object for NEWSA)."""
    fam = info["family"]
    pcpu = _attr(msg, "XFRMA_SA_PCPU")
    lt = _attr(msg, "XFRMA_LTIME_VAL")
    curlft = XfrmLifetimeCur(**_sub(info, "curlft_"))
    if lt is not None:  # the AE value is the fresher one when both are present
        curlft = XfrmLifetimeCur(**{k: lt[k] for k in ("bytes", "packets", "add_time", "use_time")})
    encap = _attr(msg, "XFRMA_ENCAP")
    return XfrmSaState(
        src=addr_str(info["saddr"], fam), dst=addr_str(info["id_daddr"], fam),
        spi=info["id_spi"], proto=info["id_proto"], family=fam, mode=info["mode"],
        reqid=info["reqid"], dir=_attr(msg, "XFRMA_SA_DIR"),
        pcpu=None if pcpu is None or pcpu == PCPU_NONE else pcpu,
        seq=info["seq"], replay_window=info["replay_window"], flags=info["flags"],
        extra_flags=_attr(msg, "XFRMA_SA_EXTRA_FLAGS") or 0,
        selector=_selector(_sub(info, "sel_")),
        lifetime_cfg=XfrmLifetimeCfg(**_sub(info, "lft_")),
        curlft=curlft, stats=XfrmStats(**_sub(info, "stats_")),
        replay=_replay(msg) or XfrmReplay(), algos=_algos(msg),
        encap=None if encap is None else XfrmEncap(
            encap["encap_type"], encap["encap_sport"], encap["encap_dport"],
            addr_str(encap["encap_oa"], fam)),
        mark=_mark(msg), if_id=_attr(msg, "XFRMA_IF_ID"), lastused=_attr(msg, "XFRMA_LASTUSED"))


def policy_from_fields(info: dict, msg) -> XfrmPolicy:
    sel = _selector(_sub(info, "sel_"))
    ptype = _attr(msg, "XFRMA_POLICY_TYPE") if msg is not None else None
    return XfrmPolicy(
        dir=info["dir"], index=info["index"], priority=info["priority"], flags=info["flags"],
        action=info["action"], share=info["share"], selector=sel,
        templates=_templates(msg, sel.family) if msg is not None else (),
        ptype=None if ptype is None else ptype["type"],
        lifetime_cfg=XfrmLifetimeCfg(**_sub(info, "lft_")),
        curlft=XfrmLifetimeCur(**_sub(info, "curlft_")),
        mark=_mark(msg) if msg is not None else None,
        if_id=_attr(msg, "XFRMA_IF_ID") if msg is not None else None)


def sa_from_msg(msg) -> XfrmSaState:
    """NEWSA/UPDSA (xfrm_usersa_info), or DELSA (xfrm_usersa_id + XFRMA_SA)."""
    if isinstance(msg, xfrm_usersa_id):
        inner = _attr(msg, "XFRMA_SA")
        if inner is None:
            raise XfrmError("DELSA message without its XFRMA_SA attribute")
        return sa_from_fields(inner, msg)
    return sa_from_fields(msg, msg)


def policy_from_msg(msg) -> XfrmPolicy:
    """NEWPOLICY/UPDPOLICY (xfrm_userpolicy_info), or DELPOLICY (+ XFRMA_POLICY)."""
    if isinstance(msg, xfrm_userpolicy_id):
        inner = _attr(msg, "XFRMA_POLICY")
        if inner is None:  # DELPOLICY by index only
            sel = _selector(_sub(msg, "sel_"))
            return XfrmPolicy(dir=msg["dir"], index=msg["index"], priority=0, selector=sel,
                              templates=None)
        return policy_from_fields(inner, msg)
    return policy_from_fields(msg, msg)


def acquire_from_msg(msg) -> XfrmAcquire:
    sel = _selector(_sub(msg, "sel_"))
    fam = sel.family or AF_INET
    pcpu = _attr(msg, "XFRMA_SA_PCPU")
    tmpls = _templates(msg, fam)
    pol = policy_from_fields(_sub(msg, "policy_"), None)
    pol = XfrmPolicy(**{**{f: getattr(pol, f) for f in XfrmPolicy.__dataclass_fields__},
                        "templates": tmpls, "mark": _mark(msg),
                        "if_id": _attr(msg, "XFRMA_IF_ID")})
    return XfrmAcquire(
        dst=addr_str(msg["id_daddr"], fam), proto=msg["id_proto"], src=addr_str(msg["saddr"], fam),
        selector=sel, policy=pol, seq=msg["seq"],
        pcpu=None if pcpu is None or pcpu == PCPU_NONE else pcpu,
        templates=tmpls)


def ae_from_msg(msg) -> XfrmAeEvent:
    fam = msg["sa_id_family"]
    lt = _attr(msg, "XFRMA_LTIME_VAL")
    pcpu = _attr(msg, "XFRMA_SA_PCPU")
    return XfrmAeEvent(
        dst=addr_str(msg["sa_id_daddr"], fam), spi=msg["sa_id_spi"], proto=msg["sa_id_proto"],
        family=fam, src=addr_str(msg["saddr"], fam), flags=msg["flags"], reqid=msg["reqid"],
        replay=_replay(msg),
        curlft=None if lt is None else XfrmLifetimeCur(
            **{k: lt[k] for k in ("bytes", "packets", "add_time", "use_time")}),
        pcpu=None if pcpu is None or pcpu == PCPU_NONE else pcpu,
        dir=_attr(msg, "XFRMA_SA_DIR"))


_EVENT_KIND = {t: t.name.lower() for t in XfrmMsg}


def event_from_msg(msg, ts: float | None = None) -> XfrmEvent:
    """Turn one decoded multicast message into an ``XfrmEvent``."""
    mtype = msg["header"]["type"]
    kind = _EVENT_KIND.get(mtype, f"type{mtype}")
    ts = time.time() if ts is None else ts
    if mtype in (XfrmMsg.NEWSA, XfrmMsg.UPDSA, XfrmMsg.DELSA):
        return XfrmEvent(mtype, kind, ts, sa=sa_from_msg(msg))
    if mtype in (XfrmMsg.NEWPOLICY, XfrmMsg.UPDPOLICY, XfrmMsg.DELPOLICY):
        return XfrmEvent(mtype, kind, ts, policy=policy_from_msg(msg))
    if mtype == XfrmMsg.ACQUIRE:
        return XfrmEvent(mtype, kind, ts, acquire=acquire_from_msg(msg))
    if mtype == XfrmMsg.EXPIRE:
        return XfrmEvent(mtype, kind, ts, sa=sa_from_fields(_sub(msg, "state_"), msg),
                         hard=bool(msg["hard"]))
    if mtype == XfrmMsg.POLEXPIRE:
        return XfrmEvent(mtype, kind, ts, policy=policy_from_fields(_sub(msg, "pol_"), msg),
                         hard=bool(msg["hard"]))
    if mtype == XfrmMsg.NEWAE:
        return XfrmEvent(mtype, kind, ts, ae=ae_from_msg(msg))
    if mtype == XfrmMsg.FLUSHSA:
        return XfrmEvent(mtype, kind, ts, proto=msg["proto"])
    return XfrmEvent(mtype, kind, ts)


# ---------------------------------------------------------------------------------------
# Parsing a receive buffer

class XfrmError(Exception):
    """A one-line problem talking to the kernel's XFRM netlink."""


class XfrmPermissionError(XfrmError):
    pass


class DumpInterrupted(Exception):
    """ENOBUFS or NLM_F_DUMP_INTR: the dump must be restarted."""


CAP_MESSAGE = ("reading XFRM state needs CAP_NET_ADMIN in the target network namespace "
               "(run as root or grant cap_net_admin)")


_NLA_FLAGS = 0xC000  # NLA_F_NESTED | NLA_F_NET_BYTEORDER: never set on XFRM attributes
_INT_SIZE = {"uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8}


def _attr_min_sizes() -> dict[int, int]:
    """Attribute type -> the payload size its class reads (a struct or an integer)."""
    out = {}
    for atype, _name, kind in xfrm_attrs.nla_map:
        if kind in _INT_SIZE:
            out[int(atype)] = _INT_SIZE[kind]
        elif kind != "xfrm_tmpl_list" and hasattr(xfrm_attrs, kind):
            out[int(atype)] = sizeof(getattr(xfrm_attrs, kind).fields)
    return out


_ATTR_MIN = _attr_min_sizes()
_BODY_SIZE = {int(t): sizeof(cls.fields) for t, cls in MSG_CLASSES.items()}


def check_message(data: bytes, offset: int, length: int, mtype: int) -> None:
    """Validate one XFRM message's layout before any decoder reads it: the body is as long as
    its type's struct, the attributes tile the rest (each at least a header long, none past the
    message's end, no flag bits), and each attribute the records read is as long as its struct.
    Raises ``XfrmError`` naming the offset and field, so both decoders (pyroute2's classes and
    ``sa_from_bytes``) see only messages they read the same way."""
    name = XfrmMsg(mtype).name if mtype in XfrmMsg._value2member_map_ else f"type {mtype}"
    body = _BODY_SIZE.get(mtype, 0)
    if length < 16 + body:
        raise XfrmError(f"{name} message at offset {offset}: {length} bytes, shorter than its "
                        f"header and {body}-byte body")
    pos, end = offset + 16 + body, offset + length
    while pos + 4 <= end:
        alen, atype = _NLA.unpack_from(data, pos)
        if alen < 4 or pos + alen > end:
            raise XfrmError(f"{name} message at offset {offset}: attribute at offset {pos}: "
                            f"length {alen} {'under 4' if alen < 4 else 'past the message end'}")
        if atype & _NLA_FLAGS:
            raise XfrmError(f"{name} message at offset {offset}: attribute at offset {pos}: "
                            f"type {atype:#x} has flag bits set")
        need = _ATTR_MIN.get(atype)
        if need is not None and alen - 4 < need:
            raise XfrmError(f"{name} message at offset {offset}: attribute {atype} at offset {pos}: "
                            f"{alen - 4} bytes, its struct needs {need}")
        pos += (alen + 3) & ~3
    if pos < end:
        raise XfrmError(f"{name} message at offset {offset}: {end - pos} bytes after the last attribute")


def parse_messages(data: bytes) -> Iterator[tuple[dict, object]]:
    """Split one recv() buffer into (header, decoded message or None). Errors/DONE carry None.
    Each message is validated (``check_message``) before it is decoded."""
    offset = 0
    while offset + 16 <= len(data):
        length, mtype, flags, seq, pid = struct.unpack_from("IHHII", data, offset)
        if length < 16 or offset + length > len(data):
            raise XfrmError(f"truncated netlink message at offset {offset} (length {length})")
        hdr = {"length": length, "type": mtype, "flags": flags, "sequence_number": seq,
               "pid": pid}
        if mtype == NLMSG_ERROR:
            if length < 20:
                raise XfrmError(f"NLMSG_ERROR at offset {offset} too short ({length} bytes)")
            (err,) = struct.unpack_from("i", data, offset + 16)
            hdr["error"] = -err
            yield hdr, None
        elif mtype == NLMSG_DONE:
            yield hdr, None
        else:
            cls = MSG_CLASSES.get(mtype)
            msg = None
            if cls is not None:
                check_message(data, offset, length, mtype)
                msg = cls(bytes(data[offset:offset + length]))
                msg.decode()
            yield hdr, msg
        offset += (length + 3) & ~3


# ---------------------------------------------------------------------------------------
# Fast path for dumps: NEWSA bytes -> XfrmSaState without pyroute2's generic codec.
#
# Polling 10,000 SAs a second through pyroute2's field-by-field decoder costs about 100 us per
# SA (a whole core); this reads the same struct xfrm_usersa_info (USERSA_INFO above, 224
# bytes) and attributes with precompiled ``struct`` formats, and shares the parts that rarely
# change between SAs and polls (selector, lifetime configuration, stats, algorithms,
# addresses) through small bounded caches. It builds records equal to ``sa_from_msg``'s;
# tests/test_xfrm_kernel.py and tests/test_xfrm_wire.py compare the two on every SA.

_SEL = struct.Struct("=16s16s8sHBBB3xiI")  # selector without the big-endian ports
_PORTS = struct.Struct(">HHHH")
_SPI = struct.Struct(">I")
_LFT = struct.Struct("=8Q")
_CUR = struct.Struct("=4Q")
_STATS = struct.Struct("=3I")
_TAIL = struct.Struct("=IIHBBB")  # seq, reqid, family, mode, replay_window, flags
_NLA = struct.Struct("=HH")
_NLMSGHDR = struct.Struct("=IHHII")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_REPLAY = struct.Struct("=3I")
_REPLAY_ESN = struct.Struct("=6I")
_ALGO = struct.Struct("=64sI")
_ALGO2 = struct.Struct("=64sII")
_MARK = struct.Struct("=II")
_ENCAP_PORTS = struct.Struct(">HH")  # encap_type (host order) first, then big-endian ports
_CACHE_MAX = 1 << 16
_cache: dict = {}
_ALG_KIND = {XfrmAttr.ALG_CRYPT: "crypt", XfrmAttr.ALG_AUTH: "auth",
             XfrmAttr.ALG_AUTH_TRUNC: "auth_trunc", XfrmAttr.ALG_AEAD: "aead",
             XfrmAttr.ALG_COMP: "comp"}
_ALG_ORDER = (XfrmAttr.ALG_CRYPT, XfrmAttr.ALG_AUTH, XfrmAttr.ALG_AUTH_TRUNC, XfrmAttr.ALG_AEAD,
              XfrmAttr.ALG_COMP)  # as _algos() lists them


#: hot caches without tuple keys (raw bytes -> record), filled by the slow paths below and
#: cleared with ``_cache``: per address family, selectors, lifetime configurations.
_hot: list[dict] = [{} for _ in range(max(AF_INET, AF_INET6) + 1)]
_sels: dict = {}
_lfts: dict = {}
_algo_sets: dict = {}  # the (type, fixed part) of an SA's algorithm attributes -> its algos tuple


def _cached(key, make):
    v = _cache.get(key)
    if v is None:
        if len(_cache) >= _CACHE_MAX:
            # bounded: memory does not grow with the number of SAs ever seen
            _cache.clear()
            _sels.clear()
            _lfts.clear()
            _algo_sets.clear()
            for h in _hot:
                h.clear()
        v = _cache[key] = make()
        kind = key[0]
        if kind == "a" and key[2] < len(_hot):
            _hot[key[2]][key[1]] = v
        elif kind == "s":
            _sels[key[1]] = v
        elif kind == "l":
            _lfts[key[1]] = v
        elif kind == "G":
            _algo_sets[key[1]] = v
    return v


def _addr(raw: bytes, family: int) -> str:
    return _cached(("a", raw, family), lambda: addr_str(raw, family))


def _fast_selector(raw: bytes) -> XfrmSelector:
    def make():
        daddr, saddr, _ports, fam, plen_d, plen_s, proto, ifindex, _user = _SEL.unpack(raw)
        dport, dport_mask, sport, sport_mask = _PORTS.unpack_from(raw, 32)
        return XfrmSelector(family=fam, src=addr_str(saddr, fam), dst=addr_str(daddr, fam),
                            prefixlen_s=plen_s, prefixlen_d=plen_d, proto=proto, sport=sport,
                            dport=dport, sport_mask=sport_mask, dport_mask=dport_mask,
                            ifindex=ifindex)

    return _cached(("s", raw), make)


_ALG_FIXED = {t: _ALGO2.size if t in (XfrmAttr.ALG_AUTH_TRUNC, XfrmAttr.ALG_AEAD) else _ALGO.size
              for t in _ALG_ORDER}  # the part of an algorithm attribute before its key


def _fast_algo(atype: int, raw: bytes) -> XfrmAlgo:
    def make():
        if atype in (XfrmAttr.ALG_AUTH_TRUNC, XfrmAttr.ALG_AEAD):
            name, key_len, extra = _ALGO2.unpack_from(raw)
        else:
            (name, key_len), extra = _ALGO.unpack_from(raw), None
        return XfrmAlgo(_ALG_KIND[atype], safe_alg_name(name.split(b"\0", 1)[0].decode("ascii", "replace")),
                        key_len, extra)

    # only the fixed part is the key of the cache (and read at all): never the key material
    fixed = raw[:_ALGO2.size if atype in (XfrmAttr.ALG_AUTH_TRUNC, XfrmAttr.ALG_AEAD) else _ALGO.size]
    return _cached(("g", atype, fixed), make)


_INFO = struct.Struct("=56s16s4sB3x16s64s32s12sIIHBBB7x")  # struct xfrm_usersa_info, 224
_A_LTIME, _A_REPLAY, _A_LASTUSED, _A_ENCAP = 9, 10, 15, 4
_A_MARK, _A_ESN, _A_XFLAGS, _A_IF_ID, _A_DIR, _A_PCPU = 21, 23, 24, 31, 33, 35
_NO_REPLAY = XfrmReplay()


def sa_from_bytes(data, offset: int = 0, length: int | None = None) -> XfrmSaState:
    """One XFRM_MSG_NEWSA message (header included) at ``offset`` of ``data`` -> record,
    equal to ``sa_from_msg`` of the same bytes."""
    if not isinstance(data, bytes):
        data = bytes(data)  # slices must be hashable (cache keys)
    if length is None:
        if len(data) < offset + 4:
            raise XfrmError(f"NEWSA message at offset {offset}: no header")
        (length,) = _U32.unpack_from(data, offset)
    if length < 16 or offset + length > len(data):
        raise XfrmError(f"truncated netlink message at offset {offset} (length {length})")
    if length < 16 + 224:
        check_message(data, offset, length, XfrmMsg.NEWSA)  # raises, naming what is short
    (sel, daddr, spi, proto, saddr, lft, cur, stats,
     seq, reqid, fam, mode, rwin, flags) = _INFO.unpack_from(data, offset + 16)
    attrs: dict[int, bytes] = {}
    algs = []  # (type, fixed part) of the algorithm attributes: never their key bytes
    pos, end = offset + 240, offset + length
    nla = _NLA.unpack_from
    while pos + 4 <= end:
        alen, atype = nla(data, pos)
        if alen < 4 or pos + alen > end or atype & _NLA_FLAGS or alen - 4 < _ATTR_MIN.get(atype, 0):
            check_message(data, offset, length, XfrmMsg.NEWSA)  # the same checks as the
            # pyroute2 path, inline here only as far as telling good from bad: it raises
        if atype not in attrs:
            fixed = _ALG_FIXED.get(atype)
            if fixed is None:
                attrs[atype] = data[pos + 4:pos + alen]
            else:
                attrs[atype] = None
                algs.append((atype, data[pos + 4:pos + 4 + min(fixed, alen - 4)]))
        pos += (alen + 3) & ~3
    if pos < end:
        check_message(data, offset, length, XfrmMsg.NEWSA)
    get = attrs.get
    lt = get(_A_LTIME)
    curlft = XfrmLifetimeCur(*_CUR.unpack(cur if lt is None else lt[:32]))
    if (r := get(_A_ESN)) is not None:
        _bmp, oseq, rseq, oseq_hi, seq_hi, win = _REPLAY_ESN.unpack_from(r)
        replay = XfrmReplay(oseq, rseq, 0, oseq_hi, seq_hi, win, True)
    elif (r := get(_A_REPLAY)) is not None:
        replay = XfrmReplay(*_REPLAY.unpack_from(r))
    else:
        replay = _NO_REPLAY
    pcpu = get(_A_PCPU)
    if pcpu is not None:
        pcpu = _U32.unpack_from(pcpu)[0]
        if pcpu == PCPU_NONE:
            pcpu = None
    sdir = get(_A_DIR)
    encap = get(_A_ENCAP)
    if encap is not None:
        sport, dport = _ENCAP_PORTS.unpack_from(encap, 2)
        encap = XfrmEncap(_NLA.unpack_from(encap)[0], sport, dport, _addr(encap[8:24], fam))
    mark = get(_A_MARK)
    xflags = get(_A_XFLAGS)
    if_id = get(_A_IF_ID)
    lastused = get(_A_LASTUSED)
    if algs:
        algs = tuple(algs)
        algos = _algo_sets.get(algs)
        if algos is None:
            algos = _cached(("G", algs), lambda: tuple(_fast_algo(t, raw) for t, raw in sorted(
                algs, key=lambda a: _ALG_ORDER.index(a[0]))))
    else:
        algos = ()
    hot = _hot[fam & 0xFF] if fam < len(_hot) else None  # per-family address cache
    src = hot.get(saddr) if hot is not None else None
    if src is None:
        src = _addr(saddr, fam)
    dst = hot.get(daddr) if hot is not None else None
    if dst is None:
        dst = _addr(daddr, fam)
    selector = _sels.get(sel)
    if selector is None:
        selector = _fast_selector(sel)
    lifetime_cfg = _lfts.get(lft)
    if lifetime_cfg is None:
        lifetime_cfg = _cached(("l", lft), lambda: XfrmLifetimeCfg(*_LFT.unpack(lft)))
    xstats = _cache.get(("t", stats))
    if xstats is None:
        xstats = _cached(("t", stats), lambda: XfrmStats(*_STATS.unpack(stats)))
    return XfrmSaState(
        src, dst, _SPI.unpack(spi)[0], proto, fam, mode, reqid,
        None if sdir is None else sdir[0], pcpu, seq, rwin, flags,
        _U32.unpack_from(xflags)[0] if xflags else 0,
        selector, lifetime_cfg, curlft, xstats, replay, algos,
        encap, None if mark is None else _MARK.unpack_from(mark),
        None if if_id is None else _U32.unpack_from(if_id)[0],
        None if lastused is None else _U64.unpack_from(lastused)[0])


# ---------------------------------------------------------------------------------------
# The read-only socket

def netns_path(netns: str) -> str:
    return netns if "/" in netns else os.path.join("/run/netns", netns)


class XfrmSocket:
    """A NETLINK_XFRM socket that only reads: GETSA/GETPOLICY dumps, GETAE, multicast groups.

    ``netns``: a name under /run/netns (as ``ip netns`` makes) or a path to a netns file;
    the socket is opened inside it (pyroute2's netns support) and never creates it.
    Every send goes through ``_send``, which refuses any type outside ``READ_ONLY_TYPES``.
    """

    RCVBUF = 1 << 20
    RECV_SIZE = 1 << 16
    DUMP_RETRIES = 5
    dump_restarts = 0  # dumps restarted after ENOBUFS / NLM_F_DUMP_INTR, over the socket's life
    reuse = True  # dump_sas: keep the records of SAs whose message did not change
    decoded = 0  # NEWSA messages decoded (not reused) by dump_sas, over the socket's life

    def __init__(self, netns: str | None = None, groups: tuple[int, ...] = ()):
        self.netns = netns
        self._sa_memo: dict[bytes, XfrmSaState] = {}  # dump_sas: the last dump's SAs
        self._seq = int(time.time()) & 0xFFFF
        try:
            if netns is None:
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_XFRM)
            else:
                path = netns_path(netns)
                if not os.path.exists(path):
                    raise XfrmError(f"network namespace {netns!r} does not exist ({path})")
                from pyroute2 import netns as pr2netns

                sock = pr2netns.create_socket(netns=path, family=socket.AF_NETLINK,
                                              socket_type=socket.SOCK_RAW,
                                              proto=NETLINK_XFRM, flags=0)
        except PermissionError:
            raise XfrmPermissionError(CAP_MESSAGE) from None
        except OSError as err:
            if err.errno in (errno.EPERM, errno.EACCES):
                raise XfrmPermissionError(CAP_MESSAGE) from None
            if err.errno == errno.EPROTONOSUPPORT:
                raise XfrmError("this kernel has no XFRM netlink (CONFIG_XFRM_USER)") from None
            raise XfrmError(f"cannot open XFRM netlink socket: {err.strerror}") from None
        self._sock = sock
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF)
            sock.bind((0, 0))
            for g in groups:
                sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, int(g))
        except OSError as err:
            sock.close()
            if err.errno in (errno.EPERM, errno.EACCES):
                raise XfrmPermissionError(CAP_MESSAGE) from None
            raise XfrmError(f"cannot bind XFRM netlink socket: {err.strerror}") from None

    # -- plumbing
    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> XfrmSocket:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    def _send(self, msg_type: int, flags: int, body: bytes = b"") -> int:
        if msg_type not in READ_ONLY_TYPES:
            raise XfrmError(f"refusing to send XFRM message type {msg_type:#x}: "
                            "the monitor is read-only")
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        hdr = struct.pack("IHHII", 16 + len(body), msg_type, flags, self._seq, 0)
        self._sock.send(hdr + body)
        return self._seq

    def _recv(self) -> bytes:
        return self._sock.recv(self.RECV_SIZE)

    def _drain(self) -> None:
        while select.select([self._sock], [], [], 0)[0]:
            try:
                self._sock.recv(self.RECV_SIZE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno != errno.ENOBUFS:
                    raise

    def _raise_errno(self, code: int) -> None:
        if code in (errno.EPERM, errno.EACCES):
            raise XfrmPermissionError(CAP_MESSAGE)
        raise XfrmError(f"kernel answered {errno.errorcode.get(code, code)}: {os.strerror(code)}")

    def _dump_once(self, msg_type: int, fast=None) -> list:
        """One GET* dump. ``fast``: (message type, decoder(data, offset, length)); messages of
        that type are decoded by it (``sa_from_bytes``), others are dropped. Without it every
        message is decoded by the pyroute2 classes."""
        seq = self._send(msg_type, NLM_F_REQUEST | NLM_F_DUMP)
        out = []
        unpack = _NLMSGHDR.unpack_from
        while True:
            try:
                data = self._recv()
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    raise DumpInterrupted("ENOBUFS") from None
                raise
            if fast is None:
                for hdr, msg in parse_messages(data):
                    if hdr["sequence_number"] != seq:
                        continue  # stale reply of an abandoned dump
                    if hdr["flags"] & NLM_F_DUMP_INTR:
                        raise DumpInterrupted("NLM_F_DUMP_INTR")
                    if hdr["type"] == NLMSG_DONE:
                        return out
                    if hdr["type"] == NLMSG_ERROR:
                        if hdr["error"] == errno.ENOBUFS:
                            raise DumpInterrupted("ENOBUFS")
                        self._raise_errno(hdr["error"])
                    if msg is not None:  # NLM_F_MULTI parts: keep reading until NLMSG_DONE
                        out.append(msg)
                continue
            want, decode = fast
            offset, size = 0, len(data)
            while offset + 16 <= size:
                length, mtype, flags, mseq, _pid = unpack(data, offset)
                if length < 16 or offset + length > size:
                    raise XfrmError(f"truncated netlink message at offset {offset} (length {length})")
                if mseq == seq:
                    if flags & NLM_F_DUMP_INTR:
                        raise DumpInterrupted("NLM_F_DUMP_INTR")
                    if mtype == NLMSG_DONE:
                        return out
                    if mtype == NLMSG_ERROR:
                        code = -struct.unpack_from("i", data, offset + 16)[0]
                        if code == errno.ENOBUFS:
                            raise DumpInterrupted("ENOBUFS")
                        self._raise_errno(code)
                    if mtype == want:
                        out.append(decode(data, offset, length))
                offset += (length + 3) & ~3

    def dump(self, msg_type: int, fast=None) -> list:
        """One complete GET* dump; restarted from scratch on ENOBUFS or NLM_F_DUMP_INTR
        (counted in ``dump_restarts``)."""
        last = None
        for _ in range(self.DUMP_RETRIES):
            try:
                return self._dump_once(msg_type, fast)
            except DumpInterrupted as why:
                last = why
                self.dump_restarts += 1
                self._drain()
        raise XfrmError(f"XFRM dump kept being interrupted ({last}) after "
                        f"{self.DUMP_RETRIES} attempts")

    # -- public API
    def dump_sas(self, fast: bool = True) -> list[XfrmSaState]:
        """The SAD. ``fast=False`` decodes through the pyroute2 classes (same records).

        With ``reuse`` (the default), an SA whose message is byte for byte the one of the
        previous dump on this socket (an idle SA: same counters, same lastused) is not decoded
        again: its previous record is returned. Only the last dump's messages are kept, so
        memory follows the SAD's size, not the number of polls."""
        if fast:
            if not self.reuse:
                out = self.dump(XfrmMsg.GETSA, (XfrmMsg.NEWSA, sa_from_bytes))
                self.decoded += len(out)
                return out
            prev, cur = self._sa_memo, {}

            def decode(data, offset, length):
                key = data[offset + 16:offset + length]  # the body: the header's seq changes
                sa = prev.get(key)
                if sa is None:
                    sa = sa_from_bytes(data, offset, length)
                    self.decoded += 1
                cur[key] = sa
                return sa

            out = self.dump(XfrmMsg.GETSA, (XfrmMsg.NEWSA, decode))
            self._sa_memo = cur
            return out
        return [sa_from_msg(m) for m in self.dump(XfrmMsg.GETSA)
                if m["header"]["type"] == XfrmMsg.NEWSA]

    def dump_policies(self) -> list[XfrmPolicy]:
        return [policy_from_msg(m) for m in self.dump(XfrmMsg.GETPOLICY)
                if m["header"]["type"] == XfrmMsg.NEWPOLICY]

    def get_ae(self, sa: XfrmSaState) -> XfrmAeEvent:
        """XFRM_MSG_GETAE for one SA: its replay and lifetime counters right now."""
        req = xfrm_aevent_id()
        req["sa_id_daddr"] = _addr_bytes(sa.dst)
        req["sa_id_spi"] = sa.spi
        req["sa_id_family"] = sa.family
        req["sa_id_proto"] = sa.proto
        req["saddr"] = _addr_bytes(sa.src)
        req["flags"] = XFRM_AE_RVAL | XFRM_AE_LVAL
        req["reqid"] = sa.reqid
        if sa.mark is not None:
            req["attrs"] = [("XFRMA_MARK", {"v": sa.mark[0], "m": sa.mark[1]})]
        req["header"] = {"type": XfrmMsg.GETAE, "flags": NLM_F_REQUEST}
        req.encode()
        seq = self._send(XfrmMsg.GETAE, NLM_F_REQUEST, bytes(req.data[16:]))
        while True:
            for hdr, msg in parse_messages(self._recv()):
                if hdr["sequence_number"] != seq:
                    continue
                if hdr["type"] == NLMSG_ERROR:
                    self._raise_errno(hdr["error"])
                if hdr["type"] == XfrmMsg.NEWAE and msg is not None:
                    return ae_from_msg(msg)

    def events(self, timeout: float | None = None) -> Iterator[XfrmEvent]:
        """Multicast notifications of the groups given at construction, as they arrive.

        Yields nothing more once ``timeout`` seconds pass without a message. A socket
        overrun (ENOBUFS) is reported as an ``XfrmEvent`` of kind "overrun" and reading goes on.
        """
        while True:
            ready = select.select([self._sock], [], [], timeout)[0]
            if not ready:
                return
            try:
                data = self._recv()
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    yield XfrmEvent(0, "overrun", time.time())
                    continue
                raise
            now = time.time()
            for hdr, msg in parse_messages(data):
                if msg is not None:
                    yield event_from_msg(msg, now)


def _addr_bytes(text: str) -> bytes:
    return ipaddress.ip_address(text).packed.ljust(16, b"\0")


def host_cpu_count() -> int:
    return os.cpu_count() or 1

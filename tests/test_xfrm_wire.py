"""XFRM wire tables: sizes against C layout (ctypes), numbers against the uapi header."""

from __future__ import annotations

import ctypes as C
import re
import struct
from pathlib import Path

import pytest

from dissectors import xfrm as X

# --- the uapi structs, transcribed as ctypes (C alignment rules, independent of our tables)
ADDR = C.c_uint8 * 16


class Selector(C.Structure):
    _fields_ = [("daddr", ADDR), ("saddr", ADDR), ("dport", C.c_uint16), ("dport_mask", C.c_uint16),
                ("sport", C.c_uint16), ("sport_mask", C.c_uint16), ("family", C.c_uint16),
                ("prefixlen_d", C.c_uint8), ("prefixlen_s", C.c_uint8), ("proto", C.c_uint8),
                ("ifindex", C.c_int), ("user", C.c_uint32)]


class Id(C.Structure):
    _fields_ = [("daddr", C.c_uint32 * 4), ("spi", C.c_uint32), ("proto", C.c_uint8)]


class LftCfg(C.Structure):
    _fields_ = [(f"f{i}", C.c_uint64) for i in range(8)]


class LftCur(C.Structure):
    _fields_ = [(f"f{i}", C.c_uint64) for i in range(4)]


class Stats(C.Structure):
    _fields_ = [(f"f{i}", C.c_uint32) for i in range(3)]


class UsersaInfo(C.Structure):
    _fields_ = [("sel", Selector), ("id", Id), ("saddr", C.c_uint32 * 4), ("lft", LftCfg),
                ("curlft", LftCur), ("stats", Stats), ("seq", C.c_uint32), ("reqid", C.c_uint32),
                ("family", C.c_uint16), ("mode", C.c_uint8), ("replay_window", C.c_uint8),
                ("flags", C.c_uint8)]


class UsersaId(C.Structure):
    _fields_ = [("daddr", C.c_uint32 * 4), ("spi", C.c_uint32), ("family", C.c_uint16),
                ("proto", C.c_uint8)]


class AeventId(C.Structure):
    _fields_ = [("sa_id", UsersaId), ("saddr", C.c_uint32 * 4), ("flags", C.c_uint32),
                ("reqid", C.c_uint32)]


class UserspiInfo(C.Structure):
    _fields_ = [("info", UsersaInfo), ("min", C.c_uint32), ("max", C.c_uint32)]


class UserpolicyInfo(C.Structure):
    _fields_ = [("sel", Selector), ("lft", LftCfg), ("curlft", LftCur), ("priority", C.c_uint32),
                ("index", C.c_uint32), ("dir", C.c_uint8), ("action", C.c_uint8),
                ("flags", C.c_uint8), ("share", C.c_uint8)]


class UserpolicyId(C.Structure):
    _fields_ = [("sel", Selector), ("index", C.c_uint32), ("dir", C.c_uint8)]


class UserAcquire(C.Structure):
    _fields_ = [("id", Id), ("saddr", C.c_uint32 * 4), ("sel", Selector),
                ("policy", UserpolicyInfo), ("aalgos", C.c_uint32), ("ealgos", C.c_uint32),
                ("calgos", C.c_uint32), ("seq", C.c_uint32)]


class UserExpire(C.Structure):
    _fields_ = [("state", UsersaInfo), ("hard", C.c_uint8)]


class UserPolexpire(C.Structure):
    _fields_ = [("pol", UserpolicyInfo), ("hard", C.c_uint8)]


class UserTmpl(C.Structure):
    _fields_ = [("id", Id), ("family", C.c_uint16), ("saddr", C.c_uint32 * 4),
                ("reqid", C.c_uint32), ("mode", C.c_uint8), ("share", C.c_uint8),
                ("optional", C.c_uint8), ("aalgos", C.c_uint32), ("ealgos", C.c_uint32),
                ("calgos", C.c_uint32)]


class EncapTmpl(C.Structure):
    _fields_ = [("type", C.c_uint16), ("sport", C.c_uint16), ("dport", C.c_uint16),
                ("oa", C.c_uint32 * 4)]


class UserReport(C.Structure):
    _fields_ = [("proto", C.c_uint8), ("sel", Selector)]


class UserMapping(C.Structure):
    _fields_ = [("id", UsersaId), ("reqid", C.c_uint32), ("old_saddr", C.c_uint32 * 4),
                ("new_saddr", C.c_uint32 * 4), ("old_sport", C.c_uint16), ("new_sport", C.c_uint16)]


@pytest.mark.parametrize("table,ctype", [
    (X.SELECTOR, Selector), (X.ID, Id), (X.USERSA_INFO, UsersaInfo), (X.USERSA_ID, UsersaId),
    (X.AEVENT_ID, AeventId), (X.USERSPI_INFO, UserspiInfo), (X.USERPOLICY_INFO, UserpolicyInfo),
    (X.USERPOLICY_ID, UserpolicyId), (X.USER_ACQUIRE, UserAcquire), (X.USER_EXPIRE, UserExpire),
    (X.USER_POLEXPIRE, UserPolexpire), (X.USER_TMPL, UserTmpl), (X.ENCAP_TMPL, EncapTmpl),
    (X.USER_REPORT, UserReport), (X.USER_MAPPING, UserMapping),
], ids=lambda v: getattr(v, "__name__", ""))
def test_table_size_matches_c_sizeof(table, ctype):
    assert X.sizeof(table) == C.sizeof(ctype)


@pytest.mark.parametrize("cls", sorted(set(X.MSG_CLASSES.values()), key=lambda c: c.__name__),
                         ids=lambda c: c.__name__)
def test_message_body_encodes_to_table_size(cls):
    msg = cls()
    msg["header"] = {"type": 0x10, "flags": 1}
    msg.encode()
    assert len(msg.data) - 16 == X.sizeof(cls.fields)


def test_per_cpu_numbers_from_uapi_6_13():
    # include/uapi/linux/xfrm.h (6.13+): the numbers RFC 9611 support hangs on
    assert X.XfrmAttr.SA_DIR == 33
    assert X.XfrmAttr.NAT_KEEPALIVE_INTERVAL == 34
    assert X.XfrmAttr.SA_PCPU == 35
    assert X.XFRM_POLICY_CPU_ACQUIRE == 4
    assert (X.SaDir.IN, X.SaDir.OUT) == (1, 2)
    assert X.XfrmMsg.NEWSA == 0x10 and X.XfrmMsg.GETAE == 0x1F and X.XfrmMsg.MAPPING == 0x26
    assert X.XfrmGroup.ACQUIRE == 1 and X.XfrmGroup.AEVENTS == 5 and X.XfrmGroup.MAPPING == 8


def _header_enum(text: str, name: str) -> list[str]:
    body = re.search(r"enum " + name + r"\s*{(.*?)}", text, re.DOTALL).group(1)
    body = re.sub(r"/\*.*?\*/", "", body, flags=re.DOTALL)
    body = re.sub(r"#define[^\n]*", "", body)
    return [e.strip().split("=")[0].strip() for e in body.split(",") if e.strip()]


SYS_HEADER = Path("/usr/include/linux/xfrm.h")


@pytest.mark.skipif(not SYS_HEADER.exists(), reason="no /usr/include/linux/xfrm.h (apt-get install linux-libc-dev)")
def test_attribute_numbers_agree_with_installed_uapi_header():
    """Every XFRMA_* the installed (older) header knows has the same number here."""
    names = _header_enum(SYS_HEADER.read_text(), "xfrm_attr_type_t")
    for value, name in enumerate(names):
        if name.startswith("__"):
            break
        assert X.XfrmAttr[name.removeprefix("XFRMA_")] == value, name
    assert len(names) > 30


@pytest.mark.skipif(not SYS_HEADER.exists(), reason="no /usr/include/linux/xfrm.h")
def test_group_numbers_agree_with_installed_uapi_header():
    names = _header_enum(SYS_HEADER.read_text(), "xfrm_nlgroups")
    for value, name in enumerate(names):
        if name.startswith("__") or name == "XFRMNLGRP_NONE":
            continue
        assert X.XfrmGroup[name.removeprefix("XFRMNLGRP_")] == value


def test_nla_map_uses_explicit_ids_in_uapi_order():
    ids = [entry[0] for entry in X.xfrm_attrs.nla_map]
    assert ids == sorted(ids) and ids == list(range(len(ids)))
    assert all(isinstance(e[0], int) and len(e) == 3 for e in X.xfrm_attrs.nla_map)


def test_read_only_set_has_no_state_changing_type():
    writes = {X.XfrmMsg.NEWSA, X.XfrmMsg.UPDSA, X.XfrmMsg.DELSA, X.XfrmMsg.ALLOCSPI,
              X.XfrmMsg.NEWPOLICY, X.XfrmMsg.UPDPOLICY, X.XfrmMsg.DELPOLICY, X.XfrmMsg.FLUSHSA,
              X.XfrmMsg.FLUSHPOLICY, X.XfrmMsg.NEWAE, X.XfrmMsg.MIGRATE, X.XfrmMsg.NEWSPDINFO,
              X.XfrmMsg.SETDEFAULT, X.XfrmMsg.ACQUIRE, X.XfrmMsg.EXPIRE, X.XfrmMsg.POLEXPIRE,
              X.XfrmMsg.REPORT, X.XfrmMsg.MAPPING, X.XfrmMsg.NEWSADINFO}
    assert not (X.READ_ONLY_TYPES & writes)
    assert writes | X.READ_ONLY_TYPES == set(X.XfrmMsg)


def test_fast_sa_decoder_agrees_with_pyroute2_on_every_attribute():
    """A NEWSA with every attribute the records read (algorithms with keys, encap, ESN replay,
    lifetime, mark, if_id, dir, pcpu), encoded by the product's pyroute2 class: the dump fast
    path decodes it to the same record, and the key bytes appear nowhere in it."""
    import ipaddress

    from dissectors.xfrm import sa_from_bytes, sa_from_msg, xfrm_usersa_info

    def a(t):
        return ipaddress.ip_address(t).packed.ljust(16, b"\0")

    key = bytes(range(0xA0, 0xB0))
    m = xfrm_usersa_info()
    m["sel_daddr"], m["sel_saddr"], m["sel_family"] = a("203.0.113.0"), a("198.51.100.0"), 2
    m["sel_prefixlen_d"], m["sel_prefixlen_s"], m["sel_proto"] = 24, 24, 17
    m["sel_dport"], m["sel_dport_mask"], m["sel_sport"], m["sel_sport_mask"] = 4500, 0xFFFF, 53, 0xFFFF
    m["id_daddr"], m["id_spi"], m["id_proto"], m["saddr"] = a("192.0.2.2"), 0xCDCF94A8, 50, a("192.0.2.1")
    m["lft_hard_byte_limit"], m["lft_soft_add_expires_seconds"] = 1 << 40, 3586
    m["curlft_bytes"], m["curlft_packets"], m["stats_integrity_failed"] = 999, 9, 2
    m["seq"], m["reqid"], m["family"], m["mode"], m["replay_window"], m["flags"] = 7, 1, 2, 1, 32, 128
    m["attrs"] = [
        ("XFRMA_ALG_CRYPT", {"alg_name": b"cbc(aes)", "alg_key_len": 128}),
        ("XFRMA_ALG_AUTH_TRUNC", {"alg_name": b"hmac(sha256)", "alg_key_len": 256,
                                  "alg_trunc_len": 128}),
        ("XFRMA_ENCAP", {"encap_type": 2, "encap_sport": 4500, "encap_dport": 4501,
                         "encap_oa": a("0.0.0.0")}),
        ("XFRMA_LTIME_VAL", {"bytes": 336, "packets": 4, "add_time": 1795334356, "use_time": 1795334359}),
        ("XFRMA_REPLAY_ESN_VAL", {"bmp_len": 0, "oseq": 4, "seq": 0, "oseq_hi": 1, "seq_hi": 0,
                                  "replay_window": 0}),
        ("XFRMA_MARK", {"v": 42, "m": 0xFF}),
        ("XFRMA_IF_ID", 7), ("XFRMA_SA_EXTRA_FLAGS", 2), ("XFRMA_LASTUSED", 1795334365),
        ("XFRMA_SA_DIR", 2), ("XFRMA_SA_PCPU", 1),
    ]
    m["header"] = {"type": 0x10, "flags": 2, "sequence_number": 1}
    m.encode()
    raw = bytearray(m.data)
    # put key bytes after the fixed part of XFRMA_ALG_CRYPT (name, key_len), as the kernel does
    pos = 16 + 224
    while pos < len(raw):
        alen, atype = struct.unpack_from("HH", raw, pos)
        if atype == 2:  # XFRMA_ALG_CRYPT
            struct.pack_into("H", raw, pos, alen + len(key))
            raw[pos + alen:pos + alen] = key  # 68 + 16: still 4-aligned
            struct.pack_into("I", raw, 0, len(raw))
            break
        pos += (alen + 3) & ~3
    decoded = xfrm_usersa_info(bytes(raw))
    decoded.decode()
    slow = sa_from_msg(decoded)
    fast = sa_from_bytes(bytes(raw))
    assert fast == slow
    assert (fast.pcpu, fast.dir, fast.mark, fast.if_id, fast.extra_flags) == (1, 2, (42, 0xFF), 7, 2)
    assert fast.replay.esn and fast.replay.oseq_hi == 1 and fast.curlft.packets == 4
    assert [(x.kind, x.name, x.key_len, x.icv_len) for x in fast.algos] == [
        ("crypt", "cbc(aes)", 128, None), ("auth_trunc", "hmac(sha256)", 256, 128)]
    assert fast.encap.sport == 4500 and fast.encap.dport == 4501 and fast.encap.type == 2
    assert key.hex() not in repr(fast)

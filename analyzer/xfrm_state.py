"""Kernel XFRM state as snapshots: one model for live netlink dumps, ``ip xfrm`` text and JSON.

An ``XfrmSnapshot`` is the SAD and SPD of one network namespace at one instant, built from
``dissectors.xfrm`` records. Sources:

* live: ``snapshot_from_kernel(netns)`` (a GETSA + GETPOLICY dump through ``XfrmSocket``);
* ``ip -s xfrm state`` / ``ip xfrm policy`` text of iproute2 6.1, and of iproute2 >= 7.0
  (``dir in|out`` and ``pcpu-num N`` lines): ``parse_ip_xfrm``;
* the JSON that ``multisa xfrm dump --json`` / ``snapshot`` write (``snapshot_from_dict``);
* the netlink dumps beside the shared strongSwan 6 capture (``*.xfrm-sa.json``:
  ``snapshot_from_capture_json``).

``load_series(path)`` detects the format and returns the samples in file order, so rules can
work on one snapshot or on counter deltas between samples.

JSON contract (``to_dict``), version 1::

    {"format": "multisa.xfrm", "version": 1, "ts": float|null, "source": str,
     "netns": str|null, "host_cpus": int|null, "kernel": str|null,
     "sas": [{"src", "dst", "spi": "8 hex", "proto": int, "family": int, "mode": int,
              "reqid": int, "dir": int|null, "pcpu": int|null, "seq": int,
              "replay_window": int, "flags": int, "extra_flags": int,
              "lifetime": {"bytes", "packets", "add_time", "use_time"},
              "lifetime_cfg": {"soft_byte_limit", ... "hard_use_expires_seconds"},
              "replay": {"oseq", "seq", "bitmap", "oseq_hi", "seq_hi", "replay_window", "esn"},
              "stats": {"replay_window", "replay", "integrity_failed"},
              "selector": {...}|null, "algos": [{"kind", "name", "key_len", "icv_len"}],
              "encap": {...}|null, "mark": [v, m]|null, "if_id": int|null,
              "lastused": int|null}],
     "policies": [{"dir": int, "flags": int, "index": int, "priority": int, "action": int,
                   "share": int, "ptype": int|null, "cpu_acquire": bool,
                   "selector": {"family", "src", "dst", "prefixlen_s", "prefixlen_d",
                                "proto", "sport", "dport", "sport_mask", "dport_mask",
                                "ifindex"},
                   "templates": [{"src", "dst", "spi": "8 hex", "proto", "family", "reqid",
                                  "mode", "share", "optional", "aalgos", "ealgos",
                                  "calgos"}] | null,
                   "mark": [v, m]|null, "if_id": int|null}]}

Keys never appear: neither the records nor the importers keep key material. Policy
``templates`` is null only for imports that did not carry them (the capture JSON); a live
dump always gives a list. Selector fields are null when an import did not carry them.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, dataclass, field, fields, replace
from operator import attrgetter
from pathlib import Path

from dissectors.xfrm import (
    AF_INET,
    AF_INET6,
    XfrmAlgo,
    XfrmEncap,
    XfrmLifetimeCfg,
    XfrmLifetimeCur,
    XfrmPolicy,
    XfrmReplay,
    XfrmSaState,
    XfrmSelector,
    XfrmStats,
    WITHHELD,
    XfrmTemplate,
    safe_alg_name,
)

FORMAT = "multisa.xfrm"
VERSION = 1


class XfrmImportError(Exception):
    """A one-line problem with an imported file: ``path:line: reason``."""


@dataclass(frozen=True, slots=True)
class XfrmSnapshot:
    """SAD + SPD of one namespace at one instant (``ts``: seconds since the epoch, or None)."""

    sas: tuple[XfrmSaState, ...]
    policies: tuple[XfrmPolicy, ...]
    ts: float | None = None
    source: str = "netlink"  # netlink | ip-text | swanctl | capture-json | json
    netns: str | None = None
    host_cpus: int | None = None
    kernel: str | None = None
    _by_spi: dict = field(default=None, init=False, repr=False, compare=False)

    # -- lookups for rules: pure, no I/O
    def sa(self, spi: int, dst: str | None = None, proto: int = 50) -> XfrmSaState | None:
        """The SA with this SPI (and destination, when SPIs could clash across peers)."""
        index = self._index()
        for sa in index.get(spi, ()):
            if sa.proto == proto and (dst is None or sa.dst == dst):
                return sa
        return None

    def _index(self) -> dict[int, list[XfrmSaState]]:
        if self._by_spi is None:
            idx: dict[int, list[XfrmSaState]] = {}
            for sa in self.sas:
                idx.setdefault(sa.spi, []).append(sa)
            object.__setattr__(self, "_by_spi", idx)
        return self._by_spi

    def sas_of_reqid(self, reqid: int) -> list[XfrmSaState]:
        return [sa for sa in self.sas if sa.reqid == reqid]

    def outbound_policies(self) -> list[XfrmPolicy]:
        return [p for p in self.policies if p.dir == 1]

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "ts": self.ts, "source": self.source,
                "netns": self.netns, "host_cpus": self.host_cpus, "kernel": self.kernel,
                "sas": [sa_to_dict(s) for s in self.sas],
                "policies": [policy_to_dict(p) for p in self.policies]}


def counter_delta(before: XfrmSaState, after: XfrmSaState) -> dict[str, int]:
    """How far one SA's counters moved between two samples (for idle/rate checks)."""
    return {"bytes": after.curlft.bytes - before.curlft.bytes,
            "packets": after.curlft.packets - before.curlft.packets,
            "oseq": after.replay.oseq - before.replay.oseq,
            "seq": after.replay.seq - before.replay.seq}


# ---------------------------------------------------------------------------------------
# records <-> JSON

_FLAT: dict[type, tuple[tuple[str, ...], attrgetter]] = {}


def _flat_fields(cls: type) -> tuple[tuple[str, ...], attrgetter]:
    """A record class's field names and one getter of all their values, made once."""
    names_get = _FLAT.get(cls)
    if names_get is None:
        names = tuple(f.name for f in fields(cls))
        names_get = _FLAT[cls] = (names, attrgetter(*names))
    return names_get


def _flat(rec) -> dict:
    """A flat record (no nested records) as a dict: ``dataclasses.asdict`` without its
    recursive deep copy, ten times faster, which counts at 10,000 SAs a second."""
    names, get = _flat_fields(type(rec))
    return dict(zip(names, get(rec)))


def _selector_dict(sel: XfrmSelector | None) -> dict | None:
    return None if sel is None else _flat(sel)


def sa_to_dict(sa: XfrmSaState) -> dict:
    return {
        "src": sa.src, "dst": sa.dst, "spi": sa.spi_hex, "proto": sa.proto, "family": sa.family,
        "mode": sa.mode, "reqid": sa.reqid, "dir": sa.dir, "pcpu": sa.pcpu, "seq": sa.seq,
        "replay_window": sa.replay_window, "flags": sa.flags, "extra_flags": sa.extra_flags,
        "lifetime": _flat(sa.curlft), "lifetime_cfg": _flat(sa.lifetime_cfg),
        "replay": _flat(sa.replay), "stats": _flat(sa.stats),
        "selector": _selector_dict(sa.selector),
        "algos": [_flat(a) for a in sa.algos],
        "encap": None if sa.encap is None else _flat(sa.encap),
        "mark": None if sa.mark is None else list(sa.mark),
        "if_id": sa.if_id, "lastused": sa.lastused,
    }


def policy_to_dict(p: XfrmPolicy) -> dict:
    return {
        "dir": p.dir, "flags": p.flags, "index": p.index, "priority": p.priority,
        "action": p.action, "share": p.share, "ptype": p.ptype, "cpu_acquire": p.cpu_acquire,
        "selector": _selector_dict(p.selector),
        "templates": None if p.templates is None else [
            {**_flat(t), "spi": f"{t.spi:08x}"} for t in p.templates],
        "mark": None if p.mark is None else list(p.mark), "if_id": p.if_id,
    }


_JSON = json.JSONEncoder(separators=(",", ":")).encode
_TEMPLATES: dict[type, tuple[str, bool]] = {}


def _scalar(v) -> str:
    """An int, None or bool as JSON (the counters records hold nothing else)."""
    if type(v) is int:
        return str(v)
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    raise TypeError(f"not a counter value: {v!r}")


def _counters_json(rec) -> str:
    """A flat record of counters as compact JSON, ``_JSON(_flat(rec))`` without the encoder's
    per-call cost (1.5 us, three records per SA per sample). Records whose fields are all
    ``int`` go straight through ``%d``."""
    cls = type(rec)
    names, get = _flat_fields(cls)
    known = _TEMPLATES.get(cls)
    if known is None:
        all_int = all(f.type == "int" for f in fields(cls))
        fmt = "%d" if all_int else "%s"
        known = _TEMPLATES[cls] = ("{" + ",".join(f'"{n}":{fmt}' for n in names) + "}", all_int)
    template, all_int = known
    values = get(rec)
    return template % (values if all_int else tuple(map(_scalar, values)))


class SampleJsonWriter:
    """One compact JSON line per snapshot (``multisa xfrm snapshot``), equal once parsed to
    ``json.dumps(snap.to_dict())``, for a series of samples of one SAD: each SA's identity
    and configuration are encoded once and kept while the SA is in the samples, only its
    counters every sample (at 10,000 SAs a second this is most of the work)."""

    def __init__(self) -> None:
        self._heads: dict[tuple, str] = {}  # the SAs of the last sample: key -> JSON prefix

    @staticmethod
    def _key(sa: XfrmSaState) -> tuple:
        return (sa.src, sa.dst, sa.spi, sa.proto, sa.family, sa.mode, sa.reqid, sa.dir, sa.pcpu,
                sa.seq, sa.replay_window, sa.flags, sa.extra_flags, sa.selector, sa.lifetime_cfg,
                sa.algos, sa.encap, sa.mark, sa.if_id)

    def line(self, snap: XfrmSnapshot) -> str:
        last, heads = self._heads, {}
        parts = []
        for sa in snap.sas:
            key = self._key(sa)
            head = last.get(key) or heads.get(key)
            if head is None:
                d = sa_to_dict(sa)
                for moving in ("lifetime", "replay", "stats", "lastused"):
                    del d[moving]
                head = _JSON(d)[:-1]  # without the closing brace: the counters follow
            heads[key] = head
            parts.append(f'{head},"lifetime":{_counters_json(sa.curlft)},"replay":{_counters_json(sa.replay)},'
                         f'"stats":{_counters_json(sa.stats)},"lastused":{_scalar(sa.lastused)}}}')
        self._heads = heads
        meta = {"format": FORMAT, "version": VERSION, "ts": snap.ts, "source": snap.source,
                "netns": snap.netns, "host_cpus": snap.host_cpus, "kernel": snap.kernel}
        return (f'{_JSON(meta)[:-1]},"sas":[{",".join(parts)}],'
                f'"policies":{_JSON([policy_to_dict(p) for p in snap.policies])}}}')


# Decoding JSON is validation: every value is checked for its type and range where it is read,
# and a bad one raises ValueError naming the field (``sas[0].lifetime.bytes: ...``), so what
# reaches the records is what the records hold and ``to_dict``/``render_text`` cannot fail.
# Values are never echoed (a key pasted into a field must not reach the error line).

_REQUIRED = object()
_U64_MAX = (1 << 64) - 1


def _kind(v) -> str:
    return "null" if v is None else {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
                                     int: "a number", float: "a number"}.get(type(v), type(v).__name__)


def _get(d: dict, key: str, where: str, default=_REQUIRED):
    if key in d:
        return d[key]
    if default is _REQUIRED:
        raise ValueError(f"{where}.{key}: missing")
    return default


def _int(v, where: str, bits: int = 64, null: bool = False, signed: bool = False):
    if v is None and null:
        return None
    if type(v) is not int:
        raise ValueError(f"{where}: expected {'an integer or null' if null else 'an integer'}, got {_kind(v)}")
    lo = -(1 << (bits - 1)) if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    if not lo <= v <= hi:
        raise ValueError(f"{where}: out of range for {'a signed' if signed else 'an unsigned'} {bits}-bit field")
    return v


def _str(v, where: str, null: bool = False, limit: int = 256):
    if v is None and null:
        return None
    if type(v) is not str:
        raise ValueError(f"{where}: expected {'a string or null' if null else 'a string'}, got {_kind(v)}")
    if len(v) > limit:
        raise ValueError(f"{where}: longer than {limit} characters")
    return v


def _ip(v, where: str, null: bool = False):
    if v is None and null:
        return None
    _str(v, where)
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        raise ValueError(f"{where}: not an IP address") from None


ALGO_KINDS = ("crypt", "auth", "auth_trunc", "aead", "comp")


def _one_of(v, where: str, allowed: tuple) -> str:
    if v not in allowed:
        raise ValueError(f"{where}: not one of {', '.join(allowed)}")
    return v


def _obj(v, where: str) -> dict:
    if type(v) is not dict:
        raise ValueError(f"{where}: expected an object, got {_kind(v)}")
    return v


def _list(v, where: str) -> list:
    if type(v) is not list:
        raise ValueError(f"{where}: expected a list, got {_kind(v)}")
    return v


#: per record class: field -> checker(value, where)
_U8 = lambda v, w: _int(v, w, 8)  # noqa: E731
_U16 = lambda v, w: _int(v, w, 16)  # noqa: E731
_U32 = lambda v, w: _int(v, w, 32)  # noqa: E731
_U64 = lambda v, w: _int(v, w, 64)  # noqa: E731
_FIELDS: dict[type, dict] = {
    XfrmSelector: {"family": _U16, "src": lambda v, w: _ip(v, w, True), "dst": lambda v, w: _ip(v, w, True),
                   "prefixlen_s": lambda v, w: _int(v, w, 8, True), "prefixlen_d": lambda v, w: _int(v, w, 8, True),
                   "proto": _U8, "sport": _U16, "dport": _U16, "sport_mask": _U16, "dport_mask": _U16,
                   "ifindex": lambda v, w: _int(v, w, 32, signed=True)},
    XfrmLifetimeCfg: dict.fromkeys(f.name for f in fields(XfrmLifetimeCfg)),
    XfrmLifetimeCur: dict.fromkeys(f.name for f in fields(XfrmLifetimeCur)),
    XfrmStats: dict.fromkeys(f.name for f in fields(XfrmStats)),
    XfrmReplay: {"oseq": _U32, "seq": _U32, "bitmap": _U32, "oseq_hi": _U32, "seq_hi": _U32,
                 "replay_window": lambda v, w: _int(v, w, 32, True),
                 "esn": lambda v, w: v if type(v) is bool else _int(v, w, 1) == 1},
    XfrmAlgo: {"kind": lambda v, w: _one_of(v, w, ALGO_KINDS), "name": lambda v, w: safe_alg_name(_str(v, w, limit=64)),
               "key_len": _U32, "icv_len": lambda v, w: _int(v, w, 32, True)},
    XfrmEncap: {"type": _U16, "sport": _U16, "dport": _U16, "oa": _ip},
    XfrmTemplate: {"dst": _ip, "spi": lambda v, w: _spi(v, w), "proto": _U8, "family": _U16, "src": _ip,
                   "reqid": _U32, "mode": _U8, "share": _U8, "optional": _U8, "aalgos": _U32,
                   "ealgos": _U32, "calgos": _U32},
}
for _cls in (XfrmLifetimeCfg, XfrmLifetimeCur):
    _FIELDS[_cls] = dict.fromkeys(_FIELDS[_cls], _U64)
_FIELDS[XfrmStats] = dict.fromkeys(_FIELDS[XfrmStats], _U32)


def _record(cls, v, where: str, defaults: bool = True):
    """A flat record from a JSON object: known fields only, each checked."""
    d = _obj(v, where)
    spec = _FIELDS[cls]
    kw = {}
    for k, x in d.items():
        check = spec.get(k)
        if check is None:
            raise ValueError(f"{where}: unknown field {k[:32]!r}" if k.isidentifier() and len(k) <= 32
                             else f"{where}: unknown field")
        kw[k] = check(x, f"{where}.{k}")
    for f in fields(cls):
        if f.name not in kw and f.default is MISSING and f.default_factory is MISSING:
            raise ValueError(f"{where}.{f.name}: missing")
    return cls(**kw)


def _spi(v, where: str = "spi") -> int:
    if type(v) is str:
        if not 1 <= len(v) <= 8 or not all(c in "0123456789abcdefABCDEF" for c in v):
            raise ValueError(f"{where}: expected 8 hex digits")
        return int(v, 16)
    return _int(v, where, 32)


def _mark(v, where: str):
    if v is None:
        return None
    pair = _list(v, where)
    if len(pair) != 2:
        raise ValueError(f"{where}: expected [value, mask]")
    return (_int(pair[0], f"{where}[0]", 32), _int(pair[1], f"{where}[1]", 32))


def sa_from_dict(d: dict, where: str = "sa") -> XfrmSaState:
    d = _obj(d, where)
    g = lambda key, default=_REQUIRED: _get(d, key, where, default)  # noqa: E731
    w = lambda key: f"{where}.{key}"  # noqa: E731
    dst = _ip(g("dst"), w("dst"))
    sel, encap = g("selector", None), g("encap", None)
    return XfrmSaState(
        src=_ip(g("src"), w("src")), dst=dst, spi=_spi(g("spi"), w("spi")), proto=_int(g("proto"), w("proto"), 8),
        family=_int(g("family", AF_INET6 if ":" in dst else AF_INET), w("family"), 16),
        mode=_int(g("mode"), w("mode"), 8), reqid=_int(g("reqid"), w("reqid"), 32),
        dir=_int(g("dir", None), w("dir"), 8, True), pcpu=_int(g("pcpu", None), w("pcpu"), 32, True),
        seq=_int(g("seq", 0), w("seq"), 32), replay_window=_int(g("replay_window", 0), w("replay_window"), 32),
        flags=_int(g("flags", 0), w("flags"), 8), extra_flags=_int(g("extra_flags", 0), w("extra_flags"), 32),
        selector=None if sel is None else _record(XfrmSelector, sel, w("selector")),
        lifetime_cfg=_record(XfrmLifetimeCfg, g("lifetime_cfg", {}), w("lifetime_cfg")),
        curlft=_record(XfrmLifetimeCur, g("lifetime", {}), w("lifetime")),
        stats=_record(XfrmStats, g("stats", {}), w("stats")),
        replay=_record(XfrmReplay, g("replay", {}), w("replay")),
        algos=tuple(_record(XfrmAlgo, a, f"{where}.algos[{i}]")
                    for i, a in enumerate(_list(g("algos", []), w("algos")))),
        encap=None if encap is None else _record(XfrmEncap, encap, w("encap")),
        mark=_mark(g("mark", None), w("mark")), if_id=_int(g("if_id", None), w("if_id"), 32, True),
        lastused=_int(g("lastused", None), w("lastused"), 64, True))


def policy_from_dict(d: dict, where: str = "policy") -> XfrmPolicy:
    d = _obj(d, where)
    g = lambda key, default=_REQUIRED: _get(d, key, where, default)  # noqa: E731
    w = lambda key: f"{where}.{key}"  # noqa: E731
    tmpls, sel = g("templates", None), g("selector", None)
    return XfrmPolicy(
        dir=_int(g("dir"), w("dir"), 8), index=_int(g("index"), w("index"), 32),
        priority=_int(g("priority"), w("priority"), 32), flags=_int(g("flags", 0), w("flags"), 8),
        action=_int(g("action", 0), w("action"), 8), share=_int(g("share", 0), w("share"), 8),
        selector=None if sel is None else _record(XfrmSelector, sel, w("selector")),
        templates=None if tmpls is None else tuple(
            _record(XfrmTemplate, t, f"{where}.templates[{i}]") for i, t in enumerate(_list(tmpls, w("templates")))),
        ptype=_int(g("ptype", None), w("ptype"), 8, True), mark=_mark(g("mark", None), w("mark")),
        if_id=_int(g("if_id", None), w("if_id"), 32, True))


SOURCES = ("netlink", "ip-text", "swanctl", "capture-json", "json")


def _ts(v, where: str = "ts"):
    if v is None:
        return None
    if type(v) not in (int, float) or not math.isfinite(v):
        raise ValueError(f"{where}: expected a finite number of seconds or null, got {_kind(v)}")
    return v


def snapshot_from_dict(d: dict, source: str = "json") -> XfrmSnapshot:
    d = _obj(d, "snapshot")
    src = _str(d.get("source", source), "source")
    if src not in SOURCES:
        raise ValueError(f"source: not one of {', '.join(SOURCES)}")
    return XfrmSnapshot(
        sas=tuple(sa_from_dict(s, f"sas[{i}]") for i, s in enumerate(_list(d.get("sas", []), "sas"))),
        policies=tuple(policy_from_dict(p, f"policies[{i}]")
                       for i, p in enumerate(_list(d.get("policies", []), "policies"))),
        ts=_ts(d.get("ts")), source=src, netns=_label(d.get("netns"), "netns"),
        host_cpus=_int(d.get("host_cpus"), "host_cpus", 32, True), kernel=_label(d.get("kernel"), "kernel"))


_HEX_RUN = re.compile(r"[0-9a-fA-F]{16}")


def _label(v, where: str) -> str | None:
    """A namespace name or kernel release: printed as is, unless it holds a run of 16 hex
    digits (8 octets: it could be a key), which is withheld."""
    v = _str(v, where, True)
    return WITHHELD if v is not None and _HEX_RUN.search(v) else v


_CAPTURE_CFG = (("soft_byte_limit", "soft_byte"), ("hard_byte_limit", "hard_byte"),
                ("soft_packet_limit", "soft_packet"), ("hard_packet_limit", "hard_packet"),
                ("soft_add_expires_seconds", "soft_add"), ("hard_add_expires_seconds", "hard_add"),
                ("soft_use_expires_seconds", "soft_use"), ("hard_use_expires_seconds", "hard_use"))


def snapshot_from_capture_json(d: dict) -> XfrmSnapshot:
    """The ``*.xfrm-sa.json`` netlink dumps beside the shared strongSwan 6 capture."""
    d = _obj(d, "dump")
    sas = []
    for i, s in enumerate(_list(d.get("sas", []), "sas")):
        where = f"sas[{i}]"
        s = _obj(s, where)
        g = lambda key, default=_REQUIRED: _get(s, key, where, default)  # noqa: E731,B023
        w = lambda key: f"{where}.{key}"  # noqa: E731,B023
        cfg = _obj(g("lifetime_cfg", {}), w("lifetime_cfg"))
        names = _list(g("attr_names", []), w("attr_names"))
        sas.append(XfrmSaState(
            src=_ip(g("src"), w("src")), dst=_ip(g("dst"), w("dst")), spi=_int(g("spi"), w("spi"), 32),
            proto=_int(g("proto"), w("proto"), 8), family=_int(g("family", AF_INET), w("family"), 16),
            mode=_int(g("mode"), w("mode"), 8), reqid=_int(g("reqid"), w("reqid"), 32),
            dir=_int(g("dir", None), w("dir"), 8, True), pcpu=_int(g("pcpu", None), w("pcpu"), 32, True),
            seq=_int(g("seq", 0), w("seq"), 32), replay_window=_int(g("replay_window", 0), w("replay_window"), 32),
            flags=_int(g("flags", 0), w("flags"), 8),
            selector=XfrmSelector(family=_int(g("sel_family", 0), w("sel_family"), 16)),
            lifetime_cfg=XfrmLifetimeCfg(**{f: _int(cfg.get(k, 0), f"{where}.lifetime_cfg.{k}")
                                            for f, k in _CAPTURE_CFG}),
            curlft=_record(XfrmLifetimeCur, g("curlft", {}), w("curlft")),
            stats=_record(XfrmStats, g("stats", {}), w("stats")),
            replay=_record(XfrmReplay, g("replay", {}), w("replay")),
            algos=tuple(XfrmAlgo(kind=n.lower().removeprefix("alg_"), name="", key_len=0)
                        for j, n in enumerate(names)
                        if _str(n, f"{where}.attr_names[{j}]").startswith("ALG_")
                        and n.lower().removeprefix("alg_") in ALGO_KINDS),
            lastused=_int(g("lastused", None), w("lastused"), 64, True)))
    pols = []
    for i, p in enumerate(_list(d.get("policies", []), "policies")):
        where = f"policies[{i}]"
        p = _obj(p, where)
        g = lambda key, default=_REQUIRED: _get(p, key, where, default)  # noqa: E731,B023
        w = lambda key: f"{where}.{key}"  # noqa: E731,B023
        pols.append(XfrmPolicy(
            dir=_int(g("dir"), w("dir"), 8), index=_int(g("index"), w("index"), 32),
            priority=_int(g("priority"), w("priority"), 32), flags=_int(g("flags", 0), w("flags"), 8),
            action=_int(g("action", 0), w("action"), 8),
            selector=XfrmSelector(family=_int(g("sel_family", 0), w("sel_family"), 16)),
            templates=None if "TMPL" in _list(g("attrs", []), w("attrs")) else ()))
    return XfrmSnapshot(sas=tuple(sas), policies=tuple(pols), ts=None, source="capture-json",
                        netns=_label(d.get("netns"), "netns"))


# ---------------------------------------------------------------------------------------
# iproute2 text (``ip -s xfrm state``, ``ip [-s] xfrm policy``), 6.1 and >= 7.0

PROTO_BY_NAME = {"esp": 50, "ah": 51, "comp": 108, "route2": 43, "hao": 60}
MODE_BY_NAME = {"transport": 0, "tunnel": 1, "ro": 2, "in_trigger": 3, "beet": 4, "iptfs": 5}
SA_FLAG_BY_NAME = {"noecn": 1, "decap-dscp": 2, "nopmtudisc": 4, "wildrecv": 8, "icmp": 16,
                   "af-unspec": 32, "align4": 64, "esn": 128}
POLICY_FLAG_BY_NAME = {"localok": 1, "icmp": 2}
POLICY_DIR_BY_NAME = {"in": 0, "out": 1, "fwd": 2}
SA_DIR_BY_NAME = {"in": 1, "out": 2}
ALGO_KIND = {"enc": "crypt", "auth": "auth", "auth-trunc": "auth_trunc", "aead": "aead",
             "comp": "comp"}

_INT = r"(\d+)"
_RE = {
    "id": re.compile(r"proto (\S+) spi 0x([0-9a-f]+)(?:\(\d+\))? reqid (\d+)(?:\(0x[0-9a-f]+\))?"
                     r" mode (\S+)"),
    "rw": re.compile(r"replay-window (\d+)(?: seq 0x([0-9a-f]+))?(?: flag ?(.*?))?"
                     r"(?: \(0x[0-9a-f]+\))? *$"),
    "replay": re.compile(r"anti-replay context: seq 0x([0-9a-f]+), oseq 0x([0-9a-f]+), "
                         r"bitmap 0x([0-9a-f]+)"),
    "esn": re.compile(r"seq-hi 0x([0-9a-f]+), seq 0x([0-9a-f]+), oseq-hi 0x([0-9a-f]+), "
                      r"oseq 0x([0-9a-f]+)"),
    "esn_win": re.compile(r"replay_window (\d+), bitmap-length (\d+)"),
    "cur": re.compile(r"^(\d+)\(bytes\), (\d+)\(packets\)"),
    "curtime": re.compile(r"^add (\S+ \S+|-) use (\S+ \S+|-)"),
    "stats": re.compile(r"^replay-window (\d+) replay (\d+) failed (\d+)"),
    "limit": re.compile(r"^limit: soft (\S+)\((bytes|packets)\), hard (\S+)\((bytes|packets)\)"),
    "expire": re.compile(r"^expire (add|use): soft (\d+)\(sec\), hard (\d+)\(sec\)"),
    "algo": re.compile(r"^(enc|auth|auth-trunc|aead|comp) (\S+)(?: \S+ \((\d+) bits\))?"
                       r"(?: (\d+))?"),
    "sel": re.compile(r"^(?:sel )?src (\S+) dst (\S+)(.*)$"),
    "mark": re.compile(r"^mark 0x([0-9a-f]+)/0x([0-9a-f]+)"),
    "if_id": re.compile(r"^if_id 0x([0-9a-f]+)"),
    "encap": re.compile(r"^encap type (\S+) sport (\d+) dport (\d+) addr (\S+)"),
    "tmpl_id": re.compile(r"proto (\S+)(?: spi 0x([0-9a-f]+)(?:\(\d+\))?)? reqid (\d+)"
                          r"(?:\(0x[0-9a-f]+\))? mode (\S+)"),
}
ENCAP_BY_NAME = {"espinudp-nonike": 1, "espinudp": 2, "espintcp": 7}


# Text is validated token by token as it is read: a number is ASCII digits within its field's
# width, an address parses, a keyword has its value; a bad one raises ValueError naming the
# field, never echoing the token (it could be a key pasted out of place).

def _num(text: str | None, what: str, bits: int = 32, base: int = 10) -> int:
    digits = "0123456789abcdefABCDEF" if base == 16 else "0123456789"
    if not text or not all(c in digits for c in text):
        raise ValueError(f"{what}: not a {'hex ' if base == 16 else ''}number")
    if len(text.lstrip("0")) > 20:
        raise ValueError(f"{what}: out of range ({bits} bits)")
    v = int(text, base)
    if v >= 1 << bits:
        raise ValueError(f"{what}: out of range ({bits} bits)")
    return v


def _addr_text(text: str, what: str) -> str:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError(f"{what}: not an IP address") from None


def _split_net(text: str, what: str = "address") -> tuple[str, int | None]:
    if "/" in text:
        addr, plen = text.split("/", 1)
        addr = _addr_text(addr, what)
        plen = _num(plen, f"{what} prefix length", 8)
        if plen > (128 if ":" in addr else 32):
            raise ValueError(f"{what} prefix length: out of range")
        return addr, plen
    return _addr_text(text, what), None


def _family(addr: str) -> int:
    return AF_INET6 if ":" in addr else AF_INET


def _limit(v: str, what: str) -> int:
    return 0xFFFFFFFFFFFFFFFF if v == "(INF)" else _num(v, what, 64)


def _localtime(v: str, what: str = "time") -> int:
    if v == "-":
        return 0
    try:
        return int(time.mktime(time.strptime(v, "%Y-%m-%d %H:%M:%S")))
    except (ValueError, OverflowError):
        raise ValueError(f"{what}: not a YYYY-MM-DD HH:MM:SS time") from None


_SEL_PROTO = {"tcp": 6, "udp": 17, "icmp": 1, "ipv6-icmp": 58, "sctp": 132}


def _selector_from_line(src: str, dst: str, rest: str) -> XfrmSelector:
    s, plen_s = _split_net(src, "src")
    d, plen_d = _split_net(dst, "dst")
    fam = _family(s)
    proto = 0
    m = re.search(r"proto (\S+)", rest)
    if m:
        proto = _SEL_PROTO.get(m.group(1), _num(m.group(1), "proto", 8) if m.group(1).isdigit() else 0)
    sport = re.search(r"sport (\d+)", rest)
    dport = re.search(r"dport (\d+)", rest)
    full = 128 if fam == AF_INET6 else 32
    return XfrmSelector(family=fam, src=s, dst=d,
                        prefixlen_s=full if plen_s is None else plen_s,
                        prefixlen_d=full if plen_d is None else plen_d, proto=proto,
                        sport=_num(sport.group(1), "sport", 16) if sport else 0,
                        dport=_num(dport.group(1), "dport", 16) if dport else 0,
                        sport_mask=0xFFFF if sport else 0, dport_mask=0xFFFF if dport else 0)


class _LineError(ValueError):
    """A problem on one line of a block: ``lineno`` is the file's line number."""

    def __init__(self, lineno: int, msg: str) -> None:
        super().__init__(msg)
        self.lineno = lineno


def _blocks(lines: list[str]) -> Iterator[list[tuple[int, str]]]:
    """Each block starting with an unindented line, as (line number, line) pairs."""
    cur: list[tuple[int, str]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if not line[0].isspace():
            if cur:
                yield cur
            cur = [(n, line)]
        else:
            if not cur:
                raise _LineError(n, "indented line before any 'src ... dst ...' line")
            cur.append((n, line))
    if cur:
        yield cur


def _numbered(parse):
    """Run a block parser line by line: a ValueError names the line it was raised on."""
    def run(block: list[tuple[int, str]]):
        where = {"n": block[0][0]}

        def lines():
            for n, line in block:
                where["n"] = n
                yield line
        try:
            return parse(lines())
        except _LineError:
            raise
        except ValueError as err:
            raise _LineError(where["n"], str(err)) from None
    return run


@_numbered
def _parse_sa_block(lines: Iterator[str]) -> XfrmSaState:
    m = re.match(r"^src (\S+) dst (\S+)", next(lines))
    if not m:
        raise ValueError("expected 'src ADDR dst ADDR'")
    src, dst = _addr_text(m.group(1), "src"), _addr_text(m.group(2), "dst")
    f: dict = {"src": src, "dst": dst, "family": _family(dst)}
    cfg: dict = {}
    cur: dict = {}
    replay: dict = {}
    stats: dict = {}
    algos = []
    section = None
    for raw in lines:
        line = raw.strip()
        if (m := _RE["id"].match(line)) and "spi" not in f:
            f["proto"] = PROTO_BY_NAME.get(m.group(1), _num(m.group(1), "proto", 8) if m.group(1).isdigit() else 0)
            f["spi"] = _num(m.group(2), "spi", 32, 16)
            f["reqid"] = _num(m.group(3), "reqid")
            f["mode"] = MODE_BY_NAME.get(m.group(4), 0)
        elif m := _RE["rw"].match(line):
            f["replay_window"] = _num(m.group(1), "replay-window")
            # iproute2 prints the SA's seq as "0x%08u": decimal digits behind "0x"
            f["seq"] = _num(m.group(2), "seq") if m.group(2) and m.group(2).isdigit() else \
                _num(m.group(2) or "0", "seq", 32, 16)
            f["flags"] = sum(SA_FLAG_BY_NAME.get(t, 0) for t in set((m.group(3) or "").split()))
        elif m := _RE["replay"].match(line):
            replay = {"seq": _num(m.group(1), "seq", 32, 16), "oseq": _num(m.group(2), "oseq", 32, 16),
                      "bitmap": _num(m.group(3), "bitmap", 32, 16)}
        elif line.startswith("anti-replay esn context"):
            replay = {"esn": True}
        elif (m := _RE["esn"].match(line)) and replay.get("esn"):
            replay.update(seq_hi=_num(m.group(1), "seq-hi", 32, 16), seq=_num(m.group(2), "seq", 32, 16),
                          oseq_hi=_num(m.group(3), "oseq-hi", 32, 16), oseq=_num(m.group(4), "oseq", 32, 16))
        elif (m := _RE["esn_win"].match(line)) and replay.get("esn"):
            replay["replay_window"] = _num(m.group(1), "replay_window")
        elif line.startswith("lifetime config:"):
            section = "cfg"
        elif line.startswith("lifetime current:"):
            section = "cur"
        elif line.startswith("stats:"):
            section = "stats"
        elif section == "cfg" and (m := _RE["limit"].match(line)):
            unit = "byte" if m.group(2) == "bytes" else "packet"
            cfg[f"soft_{unit}_limit"] = _limit(m.group(1), "soft limit")
            cfg[f"hard_{unit}_limit"] = _limit(m.group(3), "hard limit")
        elif section == "cfg" and (m := _RE["expire"].match(line)):
            cfg[f"soft_{m.group(1)}_expires_seconds"] = _num(m.group(2), "soft expire", 64)
            cfg[f"hard_{m.group(1)}_expires_seconds"] = _num(m.group(3), "hard expire", 64)
        elif section == "cur" and (m := _RE["cur"].match(line)):
            cur.update(bytes=_num(m.group(1), "bytes", 64), packets=_num(m.group(2), "packets", 64))
        elif section == "cur" and (m := _RE["curtime"].match(line)):
            cur.update(add_time=_localtime(m.group(1), "add time"), use_time=_localtime(m.group(2), "use time"))
        elif section == "stats" and (m := _RE["stats"].match(line)):
            stats = {"replay_window": _num(m.group(1), "replay-window"), "replay": _num(m.group(2), "replay"),
                     "integrity_failed": _num(m.group(3), "failed")}
        elif m := _RE["algo"].match(line):
            # the key (third token) is deliberately not kept; a name that could be a key (the
            # name missing, or glued to the key) is withheld
            algos.append(XfrmAlgo(kind=ALGO_KIND[m.group(1)], name=safe_alg_name(m.group(2)),
                                  key_len=_num(m.group(3) or "0", "key length"),
                                  icv_len=_num(m.group(4), "icv length") if m.group(4) else None))
        elif line.startswith("sel ") and (m := _RE["sel"].match(line)):
            f["selector"] = _selector_from_line(*m.groups())
        elif line.startswith("dir "):
            f["dir"] = SA_DIR_BY_NAME.get(line.split()[1])
        elif line.startswith("pcpu-num "):
            f["pcpu"] = _num(line.split()[1], "pcpu-num")
        elif m := _RE["mark"].match(line):
            f["mark"] = (_num(m.group(1), "mark", 32, 16), _num(m.group(2), "mark mask", 32, 16))
        elif m := _RE["if_id"].match(line):
            f["if_id"] = _num(m.group(1), "if_id", 32, 16)
        elif m := _RE["encap"].match(line):
            f["encap"] = XfrmEncap(ENCAP_BY_NAME.get(m.group(1), 0), _num(m.group(2), "encap sport", 16),
                                   _num(m.group(3), "encap dport", 16), _addr_text(m.group(4), "encap addr"))
        elif line.startswith("lastused "):
            f["lastused"] = _localtime(line[len("lastused "):].strip(), "lastused")
    if "spi" not in f:
        raise ValueError("SA without a 'proto ... spi ... reqid ... mode ...' line")
    return XfrmSaState(
        **f, lifetime_cfg=XfrmLifetimeCfg(**cfg), curlft=XfrmLifetimeCur(**cur),
        stats=XfrmStats(**stats), replay=XfrmReplay(**replay), algos=tuple(algos))


def _value(it: Iterator[str], tok: str) -> str:
    v = next(it, None)
    if v is None:
        raise ValueError(f"'{tok}' without a value")
    return v


@_numbered
def _parse_policy_block(lines: Iterator[str]) -> XfrmPolicy:
    m = _RE["sel"].match(next(lines))
    if not m:
        raise ValueError("expected 'src NET dst NET'")
    sel = _selector_from_line(*m.groups())
    f: dict = {"index": 0, "priority": 0, "flags": 0}
    tmpls = []
    pending: dict | None = None
    for raw in lines:
        line = raw.strip()
        toks = line.split()
        if toks and toks[0] in ("dir", "socket"):
            if len(toks) < 2 or toks[1] not in POLICY_DIR_BY_NAME:
                raise ValueError(f"'{toks[0]}' without in, out or fwd")
            f["dir"] = POLICY_DIR_BY_NAME[toks[1]] + (3 if toks[0] == "socket" else 0)
            it = iter(toks[2:])
            for tok in it:
                if tok == "priority":
                    f["priority"] = _num(_value(it, tok), "priority")
                elif tok == "index":
                    f["index"] = _num(_value(it, tok), "index")
                elif tok == "action":
                    f["action"] = 1 if _value(it, tok) == "block" else 0
                elif tok == "ptype":
                    f["ptype"] = {"main": 0, "sub": 1}.get(_value(it, tok), None)
                elif tok == "share":
                    _value(it, tok)
                elif tok == "flag":
                    for ftok in it:
                        if ftok.startswith("(0x"):
                            break  # iproute2's raw dump of the field, not the flags
                        if ftok in POLICY_FLAG_BY_NAME:
                            f["flags"] |= POLICY_FLAG_BY_NAME[ftok]
                        elif re.fullmatch(r"[0-9a-f]+", ftok):
                            f["flags"] |= _num(ftok, "flag", 8, 16)  # bits iproute2 has no name for
        elif toks and toks[0] == "tmpl":
            tm = re.match(r"tmpl src (\S+) dst (\S+)", line)
            if not tm:
                raise ValueError("expected 'tmpl src ADDR dst ADDR'")
            pending = {"src": _addr_text(tm.group(1), "tmpl src"), "dst": _addr_text(tm.group(2), "tmpl dst")}
        elif pending is not None and (tm := _RE["tmpl_id"].match(line)):
            fam = _family(pending["dst"])
            tmpls.append(XfrmTemplate(
                dst=pending["dst"], spi=_num(tm.group(2) or "0", "tmpl spi", 32, 16),
                proto=PROTO_BY_NAME.get(tm.group(1), 0), family=fam, src=pending["src"],
                reqid=_num(tm.group(3), "tmpl reqid"), mode=MODE_BY_NAME.get(tm.group(4), 0)))
            pending = None
        elif line.startswith("level ") and tmpls:
            if "use" in toks[1:2]:
                tmpls[-1] = replace(tmpls[-1], optional=1)
        elif m2 := _RE["mark"].match(line):
            f["mark"] = (_num(m2.group(1), "mark", 32, 16), _num(m2.group(2), "mark mask", 32, 16))
        elif m2 := _RE["if_id"].match(line):
            f["if_id"] = _num(m2.group(1), "if_id", 32, 16)
    if "dir" not in f:
        raise ValueError("policy without a 'dir ...' line")
    return XfrmPolicy(**f, selector=sel, templates=tuple(tmpls))


def parse_ip_xfrm(text: str, name: str = "<text>", ts: float | None = None) -> XfrmSnapshot:
    """``ip -s xfrm state`` and/or ``ip [-s] xfrm policy`` output (both may be concatenated).
    A problem raises ``XfrmImportError`` naming the file, the line and the field."""
    sas, pols = [], []
    try:
        for block in _blocks(text.splitlines()):
            second = block[1][1].strip() if len(block) > 1 else ""
            if second.startswith("proto ") and " spi " in second:
                sas.append(_parse_sa_block(block))
            elif second.split()[:1] and second.split()[0] in ("dir", "socket"):
                pols.append(_parse_policy_block(block))
            else:
                raise _LineError(block[0][0], "neither an SA ('proto ... spi') nor a policy ('dir ...')")
    except _LineError as err:
        raise XfrmImportError(f"{name}:{err.lineno}: {err}") from None
    return XfrmSnapshot(sas=tuple(sas), policies=tuple(pols), ts=ts, source="ip-text")


# ---------------------------------------------------------------------------------------
# files

def load_series(path: str | os.PathLike) -> list[XfrmSnapshot]:
    """Every sample in ``path``: our JSON (one document or JSON Lines, as ``multisa xfrm
    snapshot`` writes), the capture's ``*.xfrm-sa.json``, or ``ip xfrm`` text."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise XfrmImportError(f"{p}: not a text file") from None
    stripped = text.lstrip()
    if not stripped:
        raise XfrmImportError(f"{p}: empty file")
    if stripped[0] != "{":
        from .swanctl_text import looks_like_swanctl, parse_swanctl

        if looks_like_swanctl(text):  # swanctl --list-sas (analyzer/swanctl_text.py)
            try:
                sas = parse_swanctl(text, str(p))
            except ValueError as err:
                raise XfrmImportError(str(err)) from None
            return [XfrmSnapshot(sas=tuple(sas), policies=(), ts=p.stat().st_mtime, source="swanctl")]
        return [parse_ip_xfrm(text, str(p), ts=p.stat().st_mtime)]
    try:
        docs = [json.loads(text)]
    except RecursionError:
        raise XfrmImportError(f"{p}: JSON nested too deeply") from None
    except ValueError:  # JSONDecodeError, or a number past Python's int-to-str digit limit
        docs = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise XfrmImportError(f"{p}:{n}: not JSON: {err.msg} at column {err.colno}") \
                    from None
            except RecursionError:
                raise XfrmImportError(f"{p}:{n}: JSON nested too deeply") from None
            except ValueError:
                raise XfrmImportError(f"{p}:{n}: a number with too many digits") from None
    out = []
    for n, doc in enumerate(docs, 1):
        try:
            out.append(_snapshot_from_doc(doc))
        except ValueError as err:
            raise XfrmImportError(f"{p}: sample {n}: {err}") from None
    return out


def _snapshot_from_doc(doc: dict) -> XfrmSnapshot:
    if type(doc) is not dict:
        raise ValueError(f"expected a JSON object, got {_kind(doc)}")
    if doc.get("format") == FORMAT:
        return snapshot_from_dict(doc)
    sas = doc.get("sas", [])
    if (type(sas) is list and sas and type(sas[0]) is dict and type(sas[0].get("spi")) is int
            and "curlft" in sas[0]):
        return snapshot_from_capture_json(doc)
    if "sas" in doc or "policies" in doc:
        return snapshot_from_dict(doc)
    raise ValueError("sas: missing (neither a multisa.xfrm snapshot nor a netlink dump)")


def load_snapshot(path: str | os.PathLike) -> XfrmSnapshot:
    """The last sample of ``path`` (the state at the end of a run)."""
    return load_series(path)[-1]


# ---------------------------------------------------------------------------------------
# live

def kernel_release() -> str:
    return os.uname().release


def snapshot_from_kernel(netns: str | None = None, sock=None) -> XfrmSnapshot:
    """Dump SAD and SPD over netlink (read-only) into a snapshot."""
    from dissectors.xfrm import XfrmSocket, host_cpu_count

    own = sock is None
    sock = sock or XfrmSocket(netns)
    try:
        ts = time.time()
        sas = tuple(sock.dump_sas())
        pols = tuple(sock.dump_policies())
    finally:
        if own:
            sock.close()
    return XfrmSnapshot(sas=sas, policies=pols, ts=ts, source="netlink", netns=netns,
                        host_cpus=host_cpu_count(), kernel=kernel_release())


def iter_samples(netns: str | None, interval: float, count: int,
                 sleep=time.sleep) -> Iterable[XfrmSnapshot]:
    """``count`` snapshots ``interval`` seconds apart (count 0: forever), one socket."""
    from dissectors.xfrm import XfrmSocket

    with XfrmSocket(netns) as sock:
        n = 0
        next_at = time.monotonic()
        while count == 0 or n < count:
            yield snapshot_from_kernel(netns, sock)
            n += 1
            if count and n >= count:
                break
            next_at += interval
            sleep(max(0.0, next_at - time.monotonic()))


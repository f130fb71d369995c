"""``multisa groups``: the tree IKE SA lineage -> per-TS group -> Child SAs, as text or JSON.

Everything is told from the lineage initiator's side (``I``): ``in``/``out`` SPIs are what
``I`` receives on / sends to, as ``swanctl --list-sas`` on that peer shows them.
"""

from __future__ import annotations

import json

from dissectors.iana import ExchangeType, NotifyType, name_of

from ..model import ChildSa, ChildSaGroup, IkeLineage, IkeSa, Refusal, ts_text
from ..pipeline import CaptureResult


def _rid(rid: bytes | None) -> str:
    if rid is None:
        return "-"
    return rid.hex() if rid else "(empty)"


def _frame(f) -> int | None:
    return None if f is None else f.index


def _spi(spi: bytes | None) -> str | None:
    return None if spi is None else spi.hex()


# --- JSON ------------------------------------------------------------------------------------


def ike_sa_dict(s: IkeSa) -> dict:
    return {"spi_i": s.spi_i.hex(), "spi_r": s.spi_r.hex(), "state": s.state,
            "initiator": s.initiator_side.value, "initiator_addr": s.initiator_addr,
            "responder_addr": s.responder_addr, "created_frame": _frame(s.created),
            "rekey_of": None if s.rekey_of is None else "/".join(x.hex() for x in s.rekey_of),
            "rekeyed_into": None if s.rekeyed_into is None else "/".join(x.hex() for x in s.rekeyed_into),
            "rekeyed_frame": _frame(s.rekeyed), "deleted_frame": _frame(s.deleted), "partial": s.partial}


def child_dict(c: ChildSa) -> dict:
    return {
        "role": c.role, "state": c.state, "protocol": c.protocol_id,
        "spi_in": _spi(c.spi_in), "spi_out": _spi(c.spi_out),
        "created_by": c.created_by.value, "exchange": name_of(ExchangeType, c.exchange),
        "ike_spis": "/".join(x.hex() for x in c.ike_spis),
        "proposal": str(c.proposal) if c.proposal else None,
        "mode": c.mode, "ipcomp": c.ipcomp, "esn": c.esn,
        "resource_id_i": None if c.resource_id_i is None else c.resource_id_i.hex(),
        "resource_id_r": None if c.resource_id_r is None else c.resource_id_r.hex(),
        "pre_rfc": c.pre_rfc, "cpu_queues": c.cpu_queues,
        "ts_i": [ts_text((s,)) for s in c.ts_i], "ts_r": [ts_text((s,)) for s in c.ts_r],
        "requested_frame": _frame(c.requested), "created_frame": _frame(c.created),
        "created_time": c.created.ts if c.created else None,
        "rekey_of": None if c.rekey_of is None else {"spi_in": _spi(c.rekey_of.spi_in),
                                                      "spi_out": _spi(c.rekey_of.spi_out)},
        "rekey_of_spi": _spi(c.rekey_of_spi),
        "rekeyed_by": None if c.rekeyed_by is None else {"spi_in": _spi(c.rekeyed_by.spi_in),
                                                          "spi_out": _spi(c.rekeyed_by.spi_out)},
        "rekeyed_frame": _frame(c.rekeyed), "deleted_frame": _frame(c.deleted),
        "deleted_with_ike_sa": c.deleted_with_ike_sa, "lifetime": c.lifetime,
        "esp_in": c.esp_in, "esp_out": c.esp_out,
    }


def refusal_dict(r: Refusal) -> dict:
    return {"notify": name_of(NotifyType, r.notify_type), "notify_type": r.notify_type,
            "requested_by": r.requested_by.value, "request_frame": _frame(r.request),
            "response_frame": _frame(r.response), "resource_id": None if r.resource_id is None else r.resource_id.hex(),
            "rekey": r.rekey, "per_resource": r.per_resource}


def group_dict(g: ChildSaGroup) -> dict:
    fb = g.fallback
    return {"label": g.label, "ts_i": [ts_text((s,)) for s in g.ts_i], "ts_r": [ts_text((s,)) for s in g.ts_r],
            "uses_resource_info": g.uses_resource_info, "pre_rfc": g.pre_rfc,
            "fallback": None if fb is None else {"spi_in": _spi(fb.spi_in), "spi_out": _spi(fb.spi_out)},
            "installed": len(g.installed), "active": len(g.active), "pruned": g.pruned, "refused": g.refused,
            "child_sas": [child_dict(c) for c in g.children],
            "refusals": [refusal_dict(r) for r in g.refusals]}


def lineage_dict(lin: IkeLineage) -> dict:
    return {"index": lin.index, "peers": {k.value: v for k, v in sorted(lin.addrs.items(), key=lambda kv: kv[0].value)},
            "partial": lin.partial, "remote_access_frame": _frame(lin.remote_access),
            "unknown_exchanges": lin.unknown_exchanges, "pruned_ike_sas": lin.pruned_ike_sas,
            "ike_sas": [ike_sa_dict(s) for s in lin.ike_sas],
            "groups": [group_dict(g) for g in lin.groups.values()]}


def document(result: CaptureResult) -> dict:
    a = result.analyzer
    return {"file": result.path, "ike_messages": a.messages, "ikev1_messages": a.ikev1_messages,
            "esp_packets": a.esp_packets,
            "error": result.error, "pruned_lineages": a.pruned_lineages,
            "lineages": [lineage_dict(lin) for lin in a.lineages]}


def render_json(result: CaptureResult) -> str:
    return json.dumps(document(result), indent=2) + "\n"


# --- text ------------------------------------------------------------------------------------


def _ike_line(s: IkeSa) -> str:
    parts = [f"IKE SA {s.spis}", f"{s.initiator_side.value}={s.initiator_addr or '?'} initiator"]
    if s.partial:
        parts.append("first seen mid-life")
    if s.created:
        parts.append(f"established frame {s.created.index}")
    if s.rekey_of:
        parts.append(f"rekey of {'/'.join(x.hex() for x in s.rekey_of)}")
    if s.rekeyed_into:
        into = "/".join(x.hex() for x in s.rekeyed_into)
        parts.append(f"rekeyed into {into} frame {s.rekeyed.index if s.rekeyed else '?'}")
    if s.deleted:
        parts.append(f"deleted frame {s.deleted.index}")
    return ", ".join(parts)


def _child_line(c: ChildSa, t0: float | None) -> str:
    proto = str(c.proposal) if c.proposal else "?"
    parts = [f"{c.role:<8} {c.state:<9} in {_spi(c.spi_in) or '?'} out {_spi(c.spi_out) or '?'}",
             f"resource I:{_rid(c.resource_id_i)} R:{_rid(c.resource_id_r)}", proto, c.mode]
    if c.ipcomp is not None:
        parts.append(f"IPComp {c.ipcomp}")
    when = f" ({c.created.ts - t0:.3f} s)" if c.created and t0 is not None else ""
    frames = "-".join(str(f.index) for f in (c.requested, c.created) if f)
    parts.append(f"by {c.created_by.value} in {name_of(ExchangeType, c.exchange)} frames {frames}{when}")
    if c.rekey_of is not None:
        parts.append(f"rekey of {_spi(c.rekey_of.spi_in)}")
    elif c.rekey_of_spi is not None:
        parts.append(f"rekey of unseen SPI {c.rekey_of_spi.hex()}")
    if c.rekeyed:
        parts.append(f"rekeyed frame {c.rekeyed.index}")
    if c.deleted:
        parts.append(f"deleted frame {c.deleted.index}" + (" (with IKE SA)" if c.deleted_with_ike_sa else ""))
    if c.lifetime is not None:
        parts.append(f"lifetime {c.lifetime:.3f} s")
    if c.esp_in or c.esp_out:
        parts.append(f"ESP in {c.esp_in} out {c.esp_out}")
    return ", ".join(parts)


def render_text(result: CaptureResult) -> str:
    a = result.analyzer
    t0 = a.first.ts if a.first else None
    from .text import plural

    out = [f"{result.path}: {plural(a.messages, 'IKE message')}, {plural(a.esp_packets, 'ESP packet')}, "
           f"{plural(len(a.lineages), 'IKE SA lineage')}"
           + (f" ({plural(a.ikev1_messages, 'IKEv1 message')}, not analyzed)" if a.ikev1_messages else "")]
    for lin in a.lineages:
        peers = ", ".join(f"{k.value}={v}" for k, v in sorted(lin.addrs.items(), key=lambda kv: kv[0].value))
        extra = f", remote access (CP frame {lin.remote_access.index})" if lin.remote_access else ""
        unknown = f", {lin.unknown_exchanges} exchanges unreadable" if lin.unknown_exchanges else ""
        out.append(f"lineage {lin.index} ({peers}){extra}{unknown}")
        for n, s in enumerate(lin.ike_sas):
            if n == 1 and lin.pruned_ike_sas:
                out.append(f"  ({lin.pruned_ike_sas} older rekeyed IKE SAs not kept)")
            out.append(f"  {_ike_line(s)}")
        for g in lin.groups.values():
            n_fb, n_members = len(g.fallbacks), len(g.members)
            info = "SA_RESOURCE_INFO both ways" if g.uses_resource_info else "no SA_RESOURCE_INFO"
            if g.pre_rfc:
                info = ("CPU_QUEUE_INFO both ways" if g.uses_resource_info else "CPU_QUEUES") + \
                    " (pre-RFC draft, private-use notifies)"
            older = f" (+{g.pruned} older deleted ones not kept)" if g.pruned else ""
            out.append(f"    group {g.label}: {info}; {len(g.children)} Child SAs{older} "
                       f"({n_fb} fallback, {n_members} additional), {len(g.active)} active, "
                       f"{g.refused} refused")
            for c in g.children:
                out.append(f"      {_child_line(c, t0)}")
            for r in g.refusals:
                out.append(f"      refused  {name_of(NotifyType, r.notify_type)} to {r.requested_by.value}, "
                           f"frames {_frame(r.request)}-{_frame(r.response)}, resource {_rid(r.resource_id)}"
                           + (", rekey" if r.rekey else ""))
    return "\n".join(out) + "\n"

"""``IkeMessage`` -> the JSON contract of ``multisa show --json`` (README "JSON output").

The same contract is produced from tshark by ``dissectors.tshark``; the differential test
compares the two. Byte strings are lowercase hex; payloads are in wire order.
"""

from __future__ import annotations

from typing import Any

from ..iana import ISAKMP_FLAGS, CfgAttr, name_of
from .ikev1 import IsakmpEncrypted, IsakmpPayload
from .message import IkeMessage
from .payloads import (AuthPayload, CertPayload, CpPayload, DeletePayload, EapPayload, IdPayload,
                       KePayload, NotifyPayload, Payload, RawPayload, SaPayload, SkfPayload,
                       SkPayload, TsPayload, _Opaque)


def message_to_dict(msg: IkeMessage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "frame": msg.frame.index if msg.frame else None,
        "time": msg.frame.ts if msg.frame else None,
        "src": msg.src, "dst": msg.dst, "sport": msg.sport, "dport": msg.dport,
        "version": msg.major_version,
        "exchange": msg.exchange,
        "message_id": msg.message_id,
        "initiator": msg.initiator,
        "response": msg.response,
        "spi_i": msg.spi_i.hex(),
        "spi_r": msg.spi_r.hex(),
        "length": msg.length,
        "payloads": [payload_to_dict(p) for p in msg.payloads],
    }
    if msg.ikev1:  # ISAKMP has no I/R flags (RFC 2408 §3.1): E, C and A instead
        out.update(initiator=None, response=None,
                   flags={name: bool(msg.flags & bit) for name, bit in ISAKMP_FLAGS.items()})
    if msg.malformed:
        out["malformed"] = {"offset": msg.malformed.offset, "field": msg.malformed.field,
                            "reason": msg.malformed.reason}
    return out


def payload_to_dict(p: Payload) -> dict[str, Any]:
    if isinstance(p, IsakmpEncrypted):  # IKEv1 with the E flag: the encrypted chain
        return {"type": p.first_type, "offset": p.offset, "encrypted": True, "data_length": len(p.data)}
    if isinstance(p, IsakmpPayload):  # IKEv1: type, offset, length (the body is not decoded)
        return {"type": p.type, "offset": p.offset, "data_length": len(p.data)}
    d: dict[str, Any] = {"type": p.type, "critical": p.critical, "offset": p.offset}
    if isinstance(p, SaPayload):
        d["proposals"] = [{
            "number": pr.number, "protocol_id": pr.protocol_id, "spi": pr.spi.hex(),
            "transforms": [{"type": t.type, "id": t.id, "key_length": t.key_length} for t in pr.transforms],
        } for pr in p.proposals]
    elif isinstance(p, NotifyPayload):
        d.update(notify_type=p.notify_type, protocol_id=p.protocol_id, spi_size=p.spi_size,
                 spi=p.spi.hex(), data=p.data.hex())
    elif isinstance(p, DeletePayload):
        d.update(protocol_id=p.protocol_id, spi_size=p.spi_size, spis=[s.hex() for s in p.spis])
    elif isinstance(p, TsPayload):
        d["selectors"] = [{"ts_type": s.ts_type, "ip_protocol": s.ip_protocol, "start_port": s.start_port,
                           "end_port": s.end_port, "start_address": s.start_address,
                           "end_address": s.end_address} for s in p.selectors]
    elif isinstance(p, KePayload):
        d.update(dh_group=p.dh_group, data_length=len(p.data))
    elif isinstance(p, IdPayload):
        d.update(id_type=p.id_type, data=p.data.hex())
    elif isinstance(p, AuthPayload):
        d.update(method=p.method, data_length=len(p.data))
    elif isinstance(p, CertPayload):
        d.update(encoding=p.encoding, data_length=len(p.data))
    elif isinstance(p, CpPayload):
        d.update(cfg_type=p.cfg_type,
                 attributes=[{"type": a.type, "name": name_of(CfgAttr, a.type), "value": a.value.hex()}
                             for a in p.attributes])
    elif isinstance(p, EapPayload):
        d.update(code=p.code, identifier=p.identifier, eap_type=p.eap_type)
    elif isinstance(p, SkPayload):
        if isinstance(p, SkfPayload):
            d.update(fragment_number=p.fragment_number, total_fragments=p.total_fragments,
                     reassembled_from=p.reassembled_from)
        d.update(decrypted=p.decrypted, inner=[payload_to_dict(i) for i in p.inner])
        if p.error:
            d["error"] = p.error
    elif isinstance(p, _Opaque):
        d["data"] = p.data.hex()
    elif isinstance(p, RawPayload):
        d["data_length"] = len(p.data)
    if p.malformed:
        d["malformed"] = {"offset": p.malformed.offset, "field": p.malformed.field, "reason": p.malformed.reason}
    return d

"""Fault switches: each makes the reference peer break one rule on purpose.

One row per fault: name, who misbehaves, the RFC text it violates, and what the capture
shows. ``multisa peer faults`` prints this table; ``--fault NAME`` (repeatable) turns one on.
The analyzer's rule for each is named in ``rule`` once it exists (MS1xx notify format, MS2xx
group/rekey, MS3xx refusals, MS4xx ESP sequence).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    name: str
    side: str  # "initiator", "responder" or "both"
    rfc: str
    shows: str
    rule: str = ""  # analyzer rule family that should fire


FAULTS: dict[str, Fault] = {f.name: f for f in (
    Fault("resource-info-protocol-id", "both", "RFC 9611 §5.1 Protocol ID MUST be 0",
          "SA_RESOURCE_INFO notifies carry Protocol ID 3 (ESP)", "MS1xx"),
    Fault("resource-info-spi-size", "both", "RFC 9611 §5.1 SPI Size MUST be 0",
          "SA_RESOURCE_INFO notifies carry a 4-octet SPI (SPI Size 4)", "MS1xx"),
    Fault("resource-info-critical", "both", "RFC 9611 §5.1 Critical flag MUST be 0",
          "SA_RESOURCE_INFO notifies have the critical bit set", "MS1xx"),
    Fault("ts-max-queue-data", "responder", "RFC 9611 §5.2 no data with TS_MAX_QUEUE",
          "the responder's TS_MAX_QUEUE refusals carry 4 octets of data", "MS1xx"),
    Fault("no-additional-sas", "responder", "RFC 9611 §6 MUST NOT return NO_ADDITIONAL_SAS",
          "the responder refuses Child SAs beyond its limit with NO_ADDITIONAL_SAS", "MS3xx"),
    Fault("other-transforms", "initiator", "RFC 9611 §3 identical Child SA properties",
          "one additional Child SA uses another ESP cipher suite than the initial one", "MS2xx"),
    Fault("other-ts", "initiator", "RFC 9611 §3 identical Traffic Selectors",
          "one additional Child SA carries SA_RESOURCE_INFO with narrower TSi/TSr", "MS2xx"),
    Fault("other-mode", "initiator", "RFC 9611 §3 identical Mode",
          "one additional Child SA asks for transport mode (USE_TRANSPORT_MODE)", "MS2xx"),
    Fault("duplicate-resource-id", "initiator", "RFC 9611 §3 SHOULD be unique within the group",
          "two per-resource Child SAs carry the same resource identifier", "MS2xx"),
    Fault("cpu-number-resource-id", "initiator", "RFC 9611 §7 SHOULD NOT reveal the CPU number",
          "resource identifiers are the CPU numbers 0, 1, ... as 4-octet integers", "MS1xx"),
    Fault("rekey-moves-resource", "initiator", "RFC 9611 §3 rekeyed SA stays on the same resource",
          "a Child SA rekey announces another resource's identifier and moves workers", "MS2xx"),
    Fault("no-ts-limit", "responder", "RFC 9611 §7 RECOMMENDED per-TS limit",
          "the responder accepts every additional Child SA (no TS_MAX_QUEUE however many)", "MS3xx"),
    Fault("delete-recreate-loop", "initiator", "RFC 9611 §6 avoid delete/re-create loops",
          "the initiator deletes a per-resource Child SA and re-creates it at once, repeatedly", "MS2xx"),
    Fault("remote-access", "both", "RFC 9611 §7 NOT RECOMMENDED for remote access",
          "per-resource Child SAs negotiated in a remote-access setup (CP payloads in IKE_AUTH)", "MS2xx"),
    Fault("esp-replay-gap", "initiator", "RFC 4303 §3.3.3 sequence numbers increase by one",
          "worker 0 sends sequence number 5 twice (replay) and skips 9..18 (gap) on its own SA", "MS4xx"),
    Fault("shared-sa", "initiator", "RFC 9611 §2 one SA per resource",
          "two workers send on one Child SA with separate counters (duplicate numbers)", "MS4xx"),
)}


def check_faults(names: list[str]) -> list[str]:
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        raise ValueError(f"unknown fault {unknown[0]!r} (see `multisa peer faults`)")
    return names

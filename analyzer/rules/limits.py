"""MS3xx: refusals, limits and operational hazards of per-resource Child SAs (RFC 9611 §6, §7)."""

from __future__ import annotations

import re
from collections.abc import Iterator

from dissectors.iana import NotifyType

from ..config import Settings
from ..events import CaptureEnded, ChildSaCreated, ChildSaRefused, NotifySeen
from ..model import ExpertGroup, Level, Severity
from . import Hit, rule

_CPU_TEXT = re.compile(r"(?i)(cpu|core|queue|rxq|txq|q)?[ _#:-]?\d{1,4}")


def hardware_id_reason(rid: bytes, max_value: int) -> str | None:
    """Why ``rid`` looks like a CPU or queue number, or None (RFC 9611 §7)."""
    if len(rid) in (1, 2, 4, 8):
        be = int.from_bytes(rid, "big")
        if be < max_value:
            return f"the {len(rid)}-octet big-endian integer {be}"
        le = int.from_bytes(rid, "little")
        if le < max_value:
            return f"the {len(rid)}-octet little-endian integer {le}"
    try:
        text = rid.decode("ascii")
    except UnicodeDecodeError:
        return None
    if _CPU_TEXT.fullmatch(text):
        return f"the text {text!r}"
    return None


@rule(code="MS301", name="refusal-uses-no-additional-sas",
      title="Per-resource Child SA refused with NO_ADDITIONAL_SAS instead of TS_MAX_QUEUE",
      rfc="RFC 9611 §6", level=Level.MUST_NOT, group=ExpertGroup.RESPONSE_CODE)
def refusal_uses_no_additional_sas(e: ChildSaRefused) -> Iterator[Hit]:
    """## What it does
    Flags a CREATE_CHILD_SA response that refuses a per-resource Child SA (the request carried
    SA_RESOURCE_INFO, or its selectors are those of a group using it) with NO_ADDITIONAL_SAS.

    ## Why is this bad?
    RFC 9611 §6: "An implementation that does not accept any further resource-specific Child
    SAs MUST NOT return the NO_ADDITIONAL_SAS error because this can be interpreted by the
    peer that no other Child SAs with different TSi/TSr are allowed either. Instead, it MUST
    return TS_MAX_QUEUE."

    ## Example
    Bad: `CREATE_CHILD_SA request: SA, Ni, TSi, TSr, N(SA_RESOURCE_INFO, ...)` answered by
    `CREATE_CHILD_SA response: N(NO_ADDITIONAL_SAS)`.
    Good: answered by `CREATE_CHILD_SA response: N(TS_MAX_QUEUE)`.
    """
    r = e.refusal
    if r.notify_type == NotifyType.NO_ADDITIONAL_SAS and r.per_resource and not r.rekey:
        yield Hit(f"per-resource Child SA request for group {e.group.label} refused with "
                  "NO_ADDITIONAL_SAS; the refusal must be TS_MAX_QUEUE")


@rule(code="MS302", name="ts-max-queue-below-double-resources",
      title="TS_MAX_QUEUE while the group has fewer SAs than twice the peer's resources",
      rfc="RFC 9611 §6", level=Level.RECOMMENDED, group=ExpertGroup.RESPONSE_CODE)
def ts_max_queue_below_double_resources(e: ChildSaRefused) -> Iterator[Hit]:
    """## What it does
    When a responder returns TS_MAX_QUEUE, counts the group's installed Child SAs (the
    initial SA included) and the resources the requesting peer has shown: the distinct
    non-empty resource identifiers it sent in its own accepted requests for new Child SAs of
    the group (an RFC 9611 peer asks one SA per CPU; rekeys, its answers to the other peer's
    requests and the refused request itself are not counted). Flags the refusal when the
    group holds fewer SAs than twice that many. Nothing is reported when the requester never
    sent a non-empty identifier.

    ## Why is this bad?
    RFC 9611 §6: "Peers SHOULD be flexible with the maximum number of Child SAs ... allowing
    at the very least double the number of available CPUs is RECOMMENDED", to absorb rekey
    overlap and simultaneous on-demand requests from both peers. A tight limit makes CPUs
    fall back to the shared SA.

    ## Example
    Bad: the peer has asked for SAs for resource ids a, b, c and d; the group holds 5 SAs
    (the initial one and those 4) and the next request gets `N(TS_MAX_QUEUE)`.
    Good: TS_MAX_QUEUE only once the group holds 8 or more SAs, e.g. after the other peer
    started 3 per-resource SAs of its own for the same selectors.
    """
    r = e.refusal
    if r.notify_type != NotifyType.TS_MAX_QUEUE:
        return
    shown = e.group.resources_requested(r.requested_by)
    installed = len(e.group.installed)
    if shown and installed < 2 * len(shown):
        yield Hit(f"TS_MAX_QUEUE for group {e.group.label} with {installed} Child SAs installed; "
                  f"the requester has asked for SAs for {len(shown)} resources, so at least "
                  f"{2 * len(shown)} are recommended")


@rule(code="MS303", name="delete-recreate-loop",
      title="Per-resource Child SAs deleted and re-created again and again",
      rfc="RFC 9611 §6", level=Level.RECOMMENDED, severity=Severity.WARNING,
      group=ExpertGroup.SEQUENCE)
def delete_recreate_loop(e: ChildSaCreated, settings: Settings) -> Iterator[Hit]:
    """## What it does
    Counts, per group, how often a per-resource Child SA is created within
    `recreate_window` seconds (default 30) after one of the group's per-resource SAs was
    deleted (not rekeyed). Reports once, when this happens `recreate_count` times (default 3).

    ## Why is this bad?
    RFC 9611 §6: an implementation without per-CPU packet triggers "needs to be careful when
    receiving a Delete Notify request for a per-CPU Child SA ... bringing the deleted per-CPU
    Child SA up again immediately after receiving the Delete Notify might cause an infinite
    loop between the peers. ... It is therefore RECOMMENDED to implement per-CPU packet
    trigger messages." The loop burns CPU on both peers and churns keys.

    ## Example
    Bad: R deletes the CPU 1 SA, I re-creates it 0.1 s later; three times in a minute.
    Good: I re-creates a per-resource SA only when a packet on that CPU needs it.
    """
    g = e.group
    if not g.recreates or g.recreates[-1].created is not e.child.created:
        return
    loops = [r for r in g.recreates if r.gap <= settings.recreate_window]
    if g.recreates[-1].gap <= settings.recreate_window and len(loops) == settings.recreate_count:
        frames = tuple(f for r in loops for f in (r.deleted, r.created))
        yield Hit(f"group {g.label}: a per-resource Child SA was re-created within "
                  f"{settings.recreate_window:g} s of a delete {len(loops)} times "
                  f"(last gap {g.recreates[-1].gap:.2f} s): delete/re-create loop", frames=frames)


@rule(code="MS304", name="group-stuck-at-initial-sa",
      title="Both peers support per-resource SAs but the group never grows while traffic flows",
      rfc="RFC 9611 §6", level=Level.RECOMMENDED, severity=Severity.WARNING,
      group=ExpertGroup.SEQUENCE)
def group_stuck_at_initial_sa(e: CaptureEnded, settings: Settings) -> Iterator[Hit]:
    """## What it does
    At the end of the capture, flags each group whose initial SA was negotiated with
    SA_RESOURCE_INFO in both directions (both peers support RFC 9611), that never got an
    additional Child SA, while at least `initial_only_packets` ESP packets (default 10) used
    its SAs.

    ## Why is this bad?
    RFC 9611 §6: "if the peer acts similarly, the two peers might end up with only the first
    Child SA without ever activating any per-CPU Child SAs. It is therefore RECOMMENDED to
    implement per-CPU packet trigger messages." All traffic stays on one CPU.

    ## Example
    Bad: IKE_AUTH with `N(SA_RESOURCE_INFO)` both ways, 1000 ESP packets on the fallback SA,
    no CREATE_CHILD_SA.
    Good: the first packet on CPU 1 triggers a CREATE_CHILD_SA with `N(SA_RESOURCE_INFO)`.
    """
    for lineage in e.lineages:
        for g in lineage.groups.values():
            fallbacks = g.fallbacks
            if not fallbacks or g.members or not fallbacks[0].per_resource:
                continue
            packets = sum(c.esp_in + c.esp_out for c in fallbacks)
            if packets >= settings.initial_only_packets:
                frames = tuple(f for c in fallbacks[:1] for f in (c.requested, c.created) if f)
                yield Hit(f"group {g.label}: both peers sent SA_RESOURCE_INFO but only the initial "
                          f"Child SA exists while {packets} ESP packets flowed",
                          frames=frames, ike=lineage.current, group=g)


@rule(code="MS305", name="no-per-ts-limit",
      title="Group grew past the configured size without TS_MAX_QUEUE",
      rfc="RFC 9611 §7", level=Level.RECOMMENDED, severity=Severity.WARNING,
      group=ExpertGroup.SECURITY)
def no_per_ts_limit(e: ChildSaCreated, settings: Settings) -> Iterator[Hit]:
    """## What it does
    Flags the Child SA that makes a group's active (not rekeyed, not deleted) SAs exceed
    `max_group_size` (default 64) when no TS_MAX_QUEUE was ever returned for the group.

    ## Why is this bad?
    RFC 9611 §7: "it is RECOMMENDED that an implementation limits the maximum number of
    additional Child SAs allowed per unique TSi/TSr", as for half-open SAs: without a limit a
    peer can exhaust the SAD, and "a very large number ... of SAs may slow down per-packet SAD
    lookup" (§6).

    ## Example
    Bad: 65 active Child SAs with identical TSi/TSr and never a TS_MAX_QUEUE.
    Good: the responder answers the request beyond its limit with `N(TS_MAX_QUEUE)`.
    """
    g = e.group
    size = len(g.active)
    if size > settings.max_group_size >= e.peak_before and not g.ts_max_queue_seen:
        yield Hit(f"group {g.label} has {size} active Child SAs, more than {settings.max_group_size}, "
                  "and no TS_MAX_QUEUE limited it")


@rule(code="MS306", name="per-resource-remote-access",
      title="Per-resource Child SAs negotiated in a remote-access (CP) IKE SA",
      rfc="RFC 9611 §7", level=Level.NOT_RECOMMENDED, severity=Severity.WARNING,
      group=ExpertGroup.SECURITY)
def per_resource_remote_access(e: ChildSaCreated) -> Iterator[Hit]:
    """## What it does
    Flags the first Child SA negotiated with SA_RESOURCE_INFO both ways in an IKE SA lineage
    that assigned an internal address through a Configuration Payload (INTERNAL_IP4_ADDRESS
    or INTERNAL_IP6_ADDRESS), i.e. a remote-access VPN.

    ## Why is this bad?
    RFC 9611 §7: per-resource SAs suit gateways whose administrators trust each other; "This
    trust relationship is usually not present for the deployments of remote access VPNs, and
    allowing per-CPU Child SAs is NOT RECOMMENDED in these scenarios." A road warrior could
    make the gateway install many SAs.

    ## Example
    Bad: `IKE_AUTH request: ..., CP(CFG_REQUEST, INTERNAL_IP4_ADDRESS), N(SA_RESOURCE_INFO)`
    answered with `CP(CFG_REPLY, INTERNAL_IP4_ADDRESS 10.3.0.1), N(SA_RESOURCE_INFO)`.
    Good: the gateway answers a remote-access client without SA_RESOURCE_INFO.
    """
    lin = e.lineage
    if e.child.per_resource and lin.remote_access is not None and lin.per_resource_accepted == 1:
        yield Hit(f"Child SA {e.child.label} negotiated with SA_RESOURCE_INFO in a remote-access IKE SA "
                  f"(internal address assigned in frame {lin.remote_access.index})",
                  frames=(lin.remote_access,) + e.frames)


@rule(code="MS307", name="resource-id-hardware-info",
      title="Resource identifier that reveals hardware information (a CPU or queue number)",
      rfc="RFC 9611 §7", level=Level.SHOULD_NOT, group=ExpertGroup.SECURITY)
def resource_id_hardware_info(e: NotifySeen, settings: Settings) -> Iterator[Hit]:
    """## What it does
    Flags SA_RESOURCE_INFO data that looks like a CPU or queue number: a 1-, 2-, 4- or
    8-octet integer below `hardware_id_max` (default 4096) in either byte order, or short
    text such as `cpu3`. Empty data (the fallback SA) is fine.

    ## Why is this bad?
    RFC 9611 §7: "The notify data SHOULD NOT be an identifier that can be used to gain
    information about the hardware. For example, using the CPU number itself as the
    identifier might give an attacker knowledge of which packets are handled by which CPU
    ID, and it might optimize a brute-force attack against the system." strongSwan 6 sends
    htonl(cpu).

    ## Example
    Bad: `N(SA_RESOURCE_INFO, 00000001)`.
    Good: `N(SA_RESOURCE_INFO, 9a3c51e7)`, a random or keyed value per resource, or empty.
    """
    n = e.notify
    if n.notify_type != NotifyType.SA_RESOURCE_INFO or not n.data:
        return
    reason = hardware_id_reason(n.data, settings.hardware_id_max)
    if reason:
        kind = "response" if e.msg.response else "request"
        yield Hit(f"SA_RESOURCE_INFO {n.data.hex()} in {kind} is {reason}: it looks like a CPU or "
                  "queue number", offset=n.offset + 8 + n.spi_size)  # the Notification Data

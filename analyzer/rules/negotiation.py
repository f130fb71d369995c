"""MS2xx: how a per-TS group of Child SAs is negotiated and rekeyed (RFC 9611 §3, §4)."""

from __future__ import annotations

from collections.abc import Iterator

from dissectors.iana import name_of

from ..events import ChildSaCreated
from ..model import ChildSa, ExpertGroup, Level, Side, ts_covers, ts_overlap, ts_text
from . import Hit, rule


def rid_text(rid: bytes | None) -> str:
    if rid is None:
        return "no SA_RESOURCE_INFO"
    return rid.hex() if rid else "(empty)"


def _asks_per_resource(e: ChildSaCreated) -> bool:
    """A new (non-rekey) SA whose requester sent SA_RESOURCE_INFO: an additional per-resource
    SA in the sense of RFC 9611 §3, compared with the group's initial SA."""
    return not e.rekey and e.child.resource_id(e.child.created_by) is not None


def _reference(e: ChildSaCreated) -> ChildSa | None:
    ref = e.group.reference
    return None if ref is None or ref is e.child else ref


def _peer(side: Side, e: ChildSaCreated) -> str:
    addr = e.lineage.addrs.get(side)
    return f"{side.value} ({addr})" if addr else side.value


@rule(code="MS201", name="per-resource-transforms-differ",
      title="Per-resource Child SA with other algorithms than the initial SA",
      rfc="RFC 9611 §3", level=Level.MUST, group=ExpertGroup.PROTOCOL)
def per_resource_transforms_differ(e: ChildSaCreated) -> Iterator[Hit]:
    """## What it does
    Compares the protocol, encryption (with key length) and integrity transforms chosen for
    an additional per-resource Child SA with those of the group's initial (fallback) SA. The
    key exchange (PFS) group is not compared: IKE_AUTH never negotiates one.

    ## Why is this bad?
    RFC 9611 §3: per-resource Child SAs "MUST be negotiated with identical Child SA
    properties that were negotiated for the initial Child SA. This includes cryptographic
    algorithms". Traffic moved from one CPU to another would silently change protection.

    ## Example
    Bad: initial SA `ESP:AES_CBC-128/AUTH_HMAC_SHA2_256_128`, the CPU 1 SA
    `ESP:AES_GCM_16-256`.
    Good: both `ESP:AES_CBC-128/AUTH_HMAC_SHA2_256_128` (the CPU 1 SA may add a PFS group).
    """
    ref = _reference(e)
    c = e.child
    if not _asks_per_resource(e) or ref is None or ref.proposal is None or c.proposal is None:
        return
    if c.proposal.suite != ref.proposal.suite:
        yield Hit(f"per-resource Child SA {c.label} uses {name_of_suite(c)}, the group's initial SA "
                  f"{ref.label} uses {name_of_suite(ref)}")


def name_of_suite(c: ChildSa) -> str:
    from dissectors.iana import ProtocolId

    assert c.proposal is not None
    return f"{name_of(ProtocolId, c.proposal.protocol_id)}:{c.proposal.suite_text()}"


@rule(code="MS202", name="per-resource-ts-differ",
      title="Per-resource Child SA with other traffic selectors than its group",
      rfc="RFC 9611 §3", level=Level.MUST, group=ExpertGroup.PROTOCOL)
def per_resource_ts_differ(e: ChildSaCreated) -> Iterator[Hit]:
    """## What it does
    Flags a per-resource Child SA (SA_RESOURCE_INFO in the request) whose negotiated TSi/TSr
    differ from the group it was asked for: the request named a group's selectors but the
    response narrowed them, or the SA carries a resource identifier and lands beside an
    overlapping group that uses SA_RESOURCE_INFO.

    ## Why is this bad?
    RFC 9611 §3: per-resource SAs "MUST be negotiated with identical Child SA properties ...
    This includes ... Traffic Selectors". An SA with other selectors is not a per-resource
    copy of the group: some CPUs get no SA for part of the traffic.

    ## Example
    Bad: group `10.0.0.0/8 === 10.0.0.0/8`; CPU 1 asks for the same but the responder
    narrows to `10.1.0.0/16 === 10.0.0.0/8`.
    Good: the response's TSi/TSr equal the request's and the group's.
    """
    c = e.child
    if not _asks_per_resource(e):
        return
    key = (c.ts_i, c.ts_r)
    asked = e.lineage.groups.get(e.request_ts)
    if asked is not None and asked is not e.group and e.request_ts != key:
        yield Hit(f"per-resource Child SA {c.label} was asked for group {asked.label} but "
                  f"negotiated {ts_text(c.ts_i)} === {ts_text(c.ts_r)}", group=asked)
        return
    if not e.new_group or not c.resource_id(c.created_by):
        return
    for g in e.lineage.groups.values():
        if g is e.group or not g.uses_resource_info:
            continue
        if ts_overlap(g.ts_i, c.ts_i) and ts_overlap(g.ts_r, c.ts_r):
            yield Hit(f"per-resource Child SA {c.label} (resource id "
                      f"{rid_text(c.resource_id(c.created_by))}) has selectors "
                      f"{ts_text(c.ts_i)} === {ts_text(c.ts_r)}, overlapping but not equal to "
                      f"group {g.label}", group=g)
            return


@rule(code="MS203", name="per-resource-mode-differs",
      title="Per-resource Child SA in another mode (tunnel/transport) than the initial SA",
      rfc="RFC 9611 §3", level=Level.MUST, group=ExpertGroup.PROTOCOL)
def per_resource_mode_differs(e: ChildSaCreated) -> Iterator[Hit]:
    """## What it does
    Compares the mode (transport when USE_TRANSPORT_MODE was sent both ways, else tunnel) of
    an additional per-resource Child SA with the group's initial SA.

    ## Why is this bad?
    RFC 9611 §3 lists "Mode (e.g., transport mode)" among the properties that "MUST" be
    identical. Packets of one flow would be encapsulated differently depending on the CPU.

    ## Example
    Bad: initial SA negotiated with N(USE_TRANSPORT_MODE) both ways, the CPU 0 SA without.
    Good: every SA of the group with N(USE_TRANSPORT_MODE) in request and response.
    """
    ref = _reference(e)
    if _asks_per_resource(e) and ref is not None and e.child.mode != ref.mode:
        yield Hit(f"per-resource Child SA {e.child.label} uses {e.child.mode} mode, the group's "
                  f"initial SA {ref.label} {ref.mode} mode")


@rule(code="MS204", name="per-resource-ipcomp-differs",
      title="Per-resource Child SA with other IPComp use than the initial SA",
      rfc="RFC 9611 §3", level=Level.MUST, group=ExpertGroup.PROTOCOL)
def per_resource_ipcomp_differs(e: ChildSaCreated) -> Iterator[Hit]:
    """## What it does
    Compares IPComp (IPCOMP_SUPPORTED sent both ways, and its transform) of an additional
    per-resource Child SA with the group's initial SA.

    ## Why is this bad?
    RFC 9611 §3 lists "compression usage" among the properties that "MUST" be identical.

    ## Example
    Bad: initial SA with N(IPCOMP_SUPPORTED, DEFLATE) both ways, the CPU 1 SA without.
    Good: both with N(IPCOMP_SUPPORTED, DEFLATE), or neither.
    """
    ref = _reference(e)
    if _asks_per_resource(e) and ref is not None and e.child.ipcomp != ref.ipcomp:
        yield Hit(f"per-resource Child SA {e.child.label} has IPComp {_ipcomp(e.child.ipcomp)}, the "
                  f"group's initial SA {ref.label} {_ipcomp(ref.ipcomp)}")


def _ipcomp(v: int | None) -> str:
    return "off" if v is None else f"transform {v}"


@rule(code="MS205", name="per-resource-esn-differs",
      title="Per-resource Child SA with other ESN use than the initial SA",
      rfc="RFC 9611 §3", level=Level.MUST, group=ExpertGroup.PROTOCOL)
def per_resource_esn_differs(e: ChildSaCreated) -> Iterator[Hit]:
    """## What it does
    Compares the Extended Sequence Numbers transform chosen for an additional per-resource
    Child SA with the group's initial SA.

    ## Why is this bad?
    ESN is a negotiated Child SA property (RFC 7296 §3.3.2); RFC 9611 §3 requires every
    per-resource SA to have the properties of the initial one ("MUST"). Mixed ESN in one group
    makes replay windows and 2^32 rollover behave differently per CPU.

    ## Example
    Bad: initial SA chose `ESN`, the CPU 0 SA chose `NO_ESN`.
    Good: both chose `ESN`.
    """
    ref = _reference(e)
    c = e.child
    if _asks_per_resource(e) and ref is not None and None not in (c.esn, ref.esn) and c.esn != ref.esn:
        yield Hit(f"per-resource Child SA {c.label} has ESN {'on' if c.esn else 'off'}, the group's "
                  f"initial SA {ref.label} {'on' if ref.esn else 'off'}")


@rule(code="MS206", name="resource-id-not-unique",
      title="Resource identifier reused by the same peer within a group",
      rfc="RFC 9611 §3", level=Level.SHOULD, group=ExpertGroup.PROTOCOL)
def resource_id_not_unique(e: ChildSaCreated) -> Iterator[Hit]:
    """## What it does
    Flags a new Child SA whose SA_RESOURCE_INFO data, as sent by one peer, equals what the
    same peer sent for another active Child SA of the group. Identifiers are compared per
    sender: both peers numbering their own CPUs 0, 1, ... is fine. Rekeys are left out: one
    that keeps its SA's id is doing what §3 asks, one that changes it is MS208's.

    ## Why is this bad?
    RFC 9611 §3: the identifying data "SHOULD be a unique identifier within all the Child SAs
    with the same TS payloads". Duplicates make the identifier useless for the debugging it
    exists for, and usually mean two SAs were bound to one CPU while another has none.

    ## Example
    Bad: I sends `N(SA_RESOURCE_INFO, 00000001)` for two CREATE_CHILD_SAs of one group.
    Good: I sends `00000000` then `00000001`; R answers `00000001` then `00000000`.
    """
    c = e.child
    if e.rekey:
        return
    for side in Side:
        rid = c.resource_id(side)
        if not rid:
            continue
        for other in e.group.active:
            if other is c or other.resource_id(side) != rid:
                continue
            frame = f" (frame {other.created.index})" if other.created else ""
            yield Hit(f"{_peer(side, e)} sent resource id {rid.hex()} for Child SA {c.label}, "
                      f"already its id for active Child SA {other.label}{frame}")
            break


@rule(code="MS207", name="resource-info-never-echoed",
      title="SA_RESOURCE_INFO requests continue though the peer never echoed it",
      rfc="RFC 9611 §3", level=Level.SHOULD_NOT, group=ExpertGroup.SEQUENCE)
def resource_info_never_echoed(e: ChildSaCreated) -> Iterator[Hit]:
    """## What it does
    Flags the second Child SA a peer negotiates with SA_RESOURCE_INFO in its request when the
    other peer has answered none of them with SA_RESOURCE_INFO. Rekeys are not counted (the
    notify is optional there). Reported once per peer and IKE SA lineage.

    ## Why is this bad?
    RFC 9611 §3: "A responder that is willing to have multiple Child SAs for the same Traffic
    Selectors will respond by also adding the SA_RESOURCE_INFO notify payload." Without that
    echo the peer has not agreed to per-resource SAs; adding more same-TS SAs is outside
    RFC 9611 and may be treated as duplicates. §3 has no BCP 14 keyword here.

    ## Example
    Bad: I asks twice with `N(SA_RESOURCE_INFO, ...)`, R's responses carry no
    SA_RESOURCE_INFO, and I goes on.
    Good: R answers `N(SA_RESOURCE_INFO)`, or I stops asking for per-resource SAs.
    """
    c = e.child
    side = c.created_by
    if e.rekey or c.resource_id(side) is None or c.resource_id(side.other) is not None:
        return
    lin = e.lineage
    if side not in lin.resource_info_echoed and lin.resource_info_unechoed.get(side, 0) == 2:
        yield Hit(f"{_peer(side, e)} keeps requesting Child SAs with SA_RESOURCE_INFO "
                  f"({c.label} is the second) though {_peer(side.other, e)} never echoed it")


@rule(code="MS208", name="rekey-moves-resource",
      title="Rekeyed Child SA bound to another resource than the SA it replaces",
      rfc="RFC 9611 §3", level=Level.SHOULD, group=ExpertGroup.PROTOCOL)
def rekey_moves_resource(e: ChildSaCreated) -> Iterator[Hit]:
    """## What it does
    Flags a Child SA rekey where a peer's SA_RESOURCE_INFO data for the new SA differs from
    what the same peer sent for the SA being replaced (including the fallback SA, bound to no
    resource, becoming bound to one). A rekey without SA_RESOURCE_INFO is fine.

    ## Why is this bad?
    RFC 9611 §3: "regardless of whether or not it is included, the rekeyed Child SA should be
    bound to the same resource(s) as the Child SA that is being rekeyed" (lower-case
    "should"). Moving it leaves the old CPU without an SA and doubles another.

    ## Example
    Bad: SA created with `N(SA_RESOURCE_INFO, 00000001)`, rekeyed with
    `N(REKEY_SA), N(SA_RESOURCE_INFO, 00000002)`.
    Good: rekeyed with `N(REKEY_SA), N(SA_RESOURCE_INFO, 00000001)`, or with no
    SA_RESOURCE_INFO.
    """
    old, new = e.child.rekey_of, e.child
    if old is None:
        return
    for side in Side:
        before, after = old.resource_id(side), new.resource_id(side)
        if before is not None and after is not None and before != after:
            yield Hit(f"rekey of Child SA {old.label} into {new.label}: {_peer(side, e)} moves it "
                      f"from resource {rid_text(before)} to {rid_text(after)}")


@rule(code="MS209", name="per-resource-sa-without-resource-info",
      title="Additional Child SA without SA_RESOURCE_INFO in a group that uses it",
      rfc="RFC 9611 §3", level=Level.SHOULD, group=ExpertGroup.PROTOCOL)
def per_resource_sa_without_resource_info(e: ChildSaCreated) -> Iterator[Hit]:
    """## What it does
    Flags a new (non-rekey) Child SA negotiated without SA_RESOURCE_INFO in its request in a
    group whose SAs were already negotiated with SA_RESOURCE_INFO both ways.

    ## Why is this bad?
    RFC 9611 §3: additional resource-specific Child SAs "are similarly identified by an
    accompanying SA_RESOURCE_INFO notification". Without it the peer cannot tell a
    per-resource SA from a duplicate and may replace or delete one (§3 has no BCP 14 keyword
    here).

    ## Example
    Bad: IKE_AUTH with `N(SA_RESOURCE_INFO)` both ways, then `CREATE_CHILD_SA request: SA,
    Ni, TSi, TSr` for the same selectors.
    Good: `CREATE_CHILD_SA request: SA, Ni, TSi, TSr, N(SA_RESOURCE_INFO, ...)`.
    """
    c = e.child
    if e.rekey or c.resource_id(c.created_by) is not None:
        return
    earlier = e.group.per_resource_count  # ``c`` is not one: its requester sent no SA_RESOURCE_INFO
    if earlier:
        yield Hit(f"Child SA {c.label} joins group {e.group.label} without SA_RESOURCE_INFO, "
                  f"though {earlier} of its SAs were negotiated with it")


@rule(code="MS210", name="rekey-narrows-ts",
      title="Child SA rekey with narrower traffic selectors than the SA it replaces",
      rfc="RFC 9611 §4", level=Level.SHOULD, group=ExpertGroup.PROTOCOL)
def rekey_narrows_ts(e: ChildSaCreated) -> Iterator[Hit]:
    """## What it does
    Flags a Child SA rekey whose negotiated TSi or TSr does not cover the selectors of the
    SA it replaces.

    ## Why is this bad?
    RFC 9611 §4: "rekeying a Child SA SHOULD use the same (or wider) Traffic Selectors to
    ensure that the new Child SA covers everything that the rekeyed Child SA covers."
    Narrowing drops traffic of that CPU from the per-resource group.

    ## Example
    Bad: SA `198.51.100.0/24 === 203.0.113.0/24` rekeyed into
    `198.51.100.0/25 === 203.0.113.0/24`.
    Good: rekeyed into the same selectors or wider ones.
    """
    old, new = e.child.rekey_of, e.child
    if old is None or not old.ts_i or not old.ts_r:
        return
    if not (ts_covers(new.ts_i, old.ts_i) and ts_covers(new.ts_r, old.ts_r)):
        yield Hit(f"rekey of Child SA {old.label} into {new.label} narrows "
                  f"{ts_text(old.ts_i)} === {ts_text(old.ts_r)} to "
                  f"{ts_text(new.ts_i)} === {ts_text(new.ts_r)}")

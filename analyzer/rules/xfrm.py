"""MS5xx: the kernel's XFRM state (SAD/SPD of one host) held against what IKE negotiated.

Events come from ``analyzer.xfrm_correlate``: ``XfrmGroupSeen`` once per Child SA group and
host snapshot, ``XfrmHostSeen`` once per host snapshot and IKE lineage. ``multisa lint
--xfrm SNAPSHOT`` and ``multisa export --capture`` produce them; the IKE-only pass never
does, so there these rules are inert (``pipeline.evaluated`` leaves them out).

"Outbound"/"inbound" are the host's: the SA it sends on / receives on. ``pcpu`` is
``XFRMA_SA_PCPU`` (Linux 6.13+), the CPU an outbound SA is used on.
"""

from __future__ import annotations

from collections.abc import Iterator

from ..model import ExpertGroup, Level, Severity
from ..xfrm_correlate import XfrmGroupSeen, XfrmHostSeen
from . import RULES, Hit, Rule, rule

#: code -> Rule for the MS5xx rules (what ``analyzer.xfrm_correlate`` runs).
XFRM_RULES: dict[str, Rule] = {}


def _xrule(**kw):
    def register(fn):
        code = kw["code"]
        if code in RULES and RULES[code].name == kw["name"] and RULES[code].check is not fn:
            del RULES[code]  # re-import: the module object changed
        rule(**kw)(fn)
        XFRM_RULES[code] = RULES[code]
        return fn

    return register


def _spi(v: int | None) -> str:
    return "?" if v is None else f"{v:08x}"


@_xrule(code="MS501", name="xfrm-member-sa-without-pcpu",
        title="additional per-resource outbound SA installed without SA_PCPU",
        rfc="RFC 9611 §3", level=Level.NONE, severity=Severity.WARNING, group=ExpertGroup.PROTOCOL)
def xfrm_member_sa_without_pcpu(e: XfrmGroupSeen) -> Iterator[Hit]:
    """## What it does
    For each additional (per-resource) Child SA of a group, looks up the host's outbound SA on
    its SAD and flags it when it carries no `XFRMA_SA_PCPU`.

    ## Why is this bad?
    RFC 9611 §3: "Upon installation, each resource-specific Child SA is associated with an
    additional local selector, such as the CPU." On Linux that selector is `SA_PCPU`; an
    additional outbound SA without it competes with the fallback SA for every CPU's packets,
    so the per-CPU split never happens.

    ## Example
    Bad: `out ca2c6b46 reqid 1` (member, resource 00000001) with no `pcpu`.
    Good: `out ca2c6b46 reqid 1 pcpu 0`; only the fallback SA has no `pcpu`.
    """
    if not e.host.pcpu_known:
        return
    for r in e.children:
        if r.fallback or r.outbound is None or not r.expected or not r.child.per_resource:
            continue
        if r.outbound.pcpu is None:
            yield Hit(f"{e.host.name}: per-resource outbound SA {_spi(r.outbound_spi)} (reqid "
                      f"{r.outbound.reqid}) has no SA_PCPU: it is not bound to a CPU")


@_xrule(code="MS502", name="xfrm-outbound-sas-share-cpu",
        title="two outbound SAs of one group installed on the same CPU",
        rfc="RFC 9611 §4", level=Level.NONE, severity=Severity.WARNING, group=ExpertGroup.PROTOCOL)
def xfrm_outbound_sas_share_cpu(e: XfrmGroupSeen) -> Iterator[Hit]:
    """## What it does
    Groups the host's outbound SAs of one Child SA group (TSi/TSr) by `SA_PCPU` and flags a
    CPU that holds two or more of them.

    ## Why is this bad?
    RFC 9611 §4: the simple procedure installs "one additional Child SA on each CPU", and a
    responder "should install the additional Child SA on a CPU with the least amount of
    additional Child SAs". The kernel sends on one of two SAs bound to the same CPU; the other
    never carries traffic while another CPU has none and falls back.

    ## Example
    Bad: `out ca2c6b46 pcpu 0` and `out cdcf94a8 pcpu 0` for 198.51.100.0/24 === 203.0.113.0/24.
    Good: `pcpu 0` and `pcpu 1`.
    """
    by_cpu: dict[int, list[str]] = {}
    for r in e.children:
        if r.outbound is not None and r.outbound.pcpu is not None:
            by_cpu.setdefault(r.outbound.pcpu, []).append(_spi(r.outbound_spi))
    for cpu, spis in sorted(by_cpu.items()):
        if len(spis) > 1:
            yield Hit(f"{e.host.name}: {len(spis)} outbound SAs of the group on CPU {cpu}: "
                      f"{', '.join(spis)}")


@_xrule(code="MS503", name="xfrm-inbound-sa-missing",
        title="a negotiated inbound Child SA is not installed in the SAD",
        rfc="RFC 9611 §4", level=Level.NONE, severity=Severity.ERROR, group=ExpertGroup.PROTOCOL)
def xfrm_inbound_sa_missing(e: XfrmGroupSeen) -> Iterator[Hit]:
    """## What it does
    For every Child SA the capture shows negotiated and still alive when the snapshot was
    taken, looks for the host's inbound SA (destination the host, the SPI it chose) in the SAD.

    ## Why is this bad?
    RFC 9611 §4: a peer with fewer CPUs may skip a duplicate outbound SA, "However, it must
    install all inbound Child SAs because it has committed to receiving traffic on these
    negotiated Child SAs." (lower-case "must" in the RFC; the error is real: the peer's packets
    on that SA are dropped with XfrmInNoStates).

    ## Example
    Bad: IKE negotiated `in c26c69ed` for moon, moon's SAD has no SA with SPI c26c69ed.
    Good: every negotiated inbound SPI is on the SAD, per-CPU or not.
    """
    for r in e.children:
        if r.expected and r.inbound_spi is not None and r.inbound is None:
            yield Hit(f"{e.host.name}: negotiated inbound SA {_spi(r.inbound_spi)} ({r.child.role}) "
                      f"is not in the SAD", frames=tuple(f for f in (r.child.created,) if f))


@_xrule(code="MS504", name="xfrm-pcpu-out-of-range",
        title="SA_PCPU names a CPU the host does not have",
        rfc="RFC 9611 §3", level=Level.NONE, severity=Severity.ERROR, group=ExpertGroup.PROTOCOL)
def xfrm_pcpu_out_of_range(e: XfrmGroupSeen) -> Iterator[Hit]:
    """## What it does
    Compares each outbound SA's `SA_PCPU` with the host's CPU count (known for live dumps and
    `multisa xfrm snapshot` files; imported text does not carry it).

    ## Why is this bad?
    RFC 9611 §3 binds a per-resource SA to a resource of the host. An SA bound to CPU 7 on a
    4-CPU host is never used: no CPU's lookup finds it, its resource is wasted and the peer's
    group is one SA larger than the host can use.

    ## Example
    Bad: `out cdcf94a8 pcpu 2` on a 2-CPU host.
    Good: `pcpu 0` or `pcpu 1` on a 2-CPU host.
    """
    cpus = e.host.host_cpus
    if not cpus:
        return
    for r in e.children:
        if r.outbound is not None and r.outbound.pcpu is not None and r.outbound.pcpu >= cpus:
            yield Hit(f"{e.host.name}: outbound SA {_spi(r.outbound_spi)} has SA_PCPU "
                      f"{r.outbound.pcpu} but the host has {cpus} CPU(s)")


@_xrule(code="MS505", name="xfrm-fallback-sa-with-pcpu",
        title="the initial (fallback) Child SA is bound to a CPU",
        rfc="RFC 9611 §4", level=Level.NONE, severity=Severity.WARNING, group=ExpertGroup.PROTOCOL)
def xfrm_fallback_sa_with_pcpu(e: XfrmGroupSeen) -> Iterator[Hit]:
    """## What it does
    Flags the host's outbound SA of the group's initial (fallback) Child SA when it carries
    `SA_PCPU`.

    ## Why is this bad?
    RFC 9611 §4: "An implementation can ensure that one Child SA can be used by all CPUs, so
    that while negotiating a new per-CPU Child SA ... the CPU with no CPU-specific Child SA can
    still encrypt its packets using the Child SA that is available for all CPUs." A fallback
    SA pinned to one CPU leaves every other CPU without an SA until its own is negotiated.

    ## Example
    Bad: `out c2d58759` (fallback, negotiated in IKE_AUTH) with `pcpu 0`.
    Good: `out c2d58759` without `pcpu`; members carry `pcpu 0`, `pcpu 1`.
    """
    if not e.host.pcpu_known:
        return
    for r in e.children:
        if r.fallback and r.expected and r.outbound is not None and r.outbound.pcpu is not None:
            yield Hit(f"{e.host.name}: fallback outbound SA {_spi(r.outbound_spi)} carries "
                      f"SA_PCPU {r.outbound.pcpu}")


@_xrule(code="MS506", name="xfrm-oseq-far-from-wire",
        title="outbound SA's sequence counter (oseq) disagrees with the wire",
        rfc="RFC 9611 §2", level=Level.NONE, severity=Severity.WARNING,
        group=ExpertGroup.SEQUENCE)
def xfrm_oseq_far_from_wire(e: XfrmGroupSeen) -> Iterator[Hit]:
    """## What it does
    Compares each outbound SA's `oseq` (the kernel's last used ESP sequence number) with the
    highest sequence number the capture shows for that SPI; a difference beyond the tolerance
    (64) is flagged. SPIs without ESP on the wire, and captures without ESP, are not judged.

    ## Why is this bad?
    RFC 9611 §2: a Child SA is restricted to one resource because its sequence numbers cannot
    be shared among CPUs; RFC 4303 §3.3.3: the sender increments the counter for every packet,
    so at the end of a capture taken next to the sender the two agree. A large difference
    means the capture missed the SA's traffic (another path or queue), or the kernel sends on
    another SA than IKE thinks.

    ## Example
    Bad: `out cdcf94a8 oseq 4000`, the capture's highest sequence number for cdcf94a8 is 4.
    Good: `oseq 4` and the wire's last sequence number is 4.
    """
    if e.wire is None:
        return
    tol = e.settings.oseq_tolerance
    for r in e.children:
        sa = r.outbound
        if sa is None or r.outbound_spi not in e.wire:
            continue
        oseq = (sa.replay.oseq_hi << 32 | sa.replay.oseq) if sa.replay.esn else sa.replay.oseq
        wire = e.wire[r.outbound_spi]
        if abs(oseq - wire) > tol:
            yield Hit(f"{e.host.name}: outbound SA {_spi(r.outbound_spi)} has oseq {oseq}, the "
                      f"wire's highest sequence number is {wire} (off by {oseq - wire:+d})")


@_xrule(code="MS507", name="xfrm-policy-without-cpu-acquire",
        title="the outbound policy of a per-CPU group lacks XFRM_POLICY_CPU_ACQUIRE",
        rfc="RFC 9611 §4", level=Level.NONE, severity=Severity.WARNING, group=ExpertGroup.PROTOCOL)
def xfrm_policy_without_cpu_acquire(e: XfrmGroupSeen) -> Iterator[Hit]:
    """## What it does
    For a group that uses per-resource SAs, finds the host's outbound policies for it (by the
    templates' reqid, else the selector; an import without either: every outbound policy) and
    flags them when none has the `CPU_ACQUIRE` flag (4).

    ## Why is this bad?
    RFC 9611 §4 triggers per-CPU Child SAs by per-CPU "SADB_ACQUIRE" messages. Linux sends an
    ACQUIRE for a CPU without an SA only when the outbound policy has
    `XFRM_POLICY_CPU_ACQUIRE`; without it every CPU keeps using the fallback SA and no new
    per-CPU SA is ever negotiated on demand.

    ## Example
    Bad: `src 198.51.100.0/24 dst 203.0.113.0/24 dir out` with flags 0 for a per-CPU group.
    Good: the same policy with `flag 4` (cpu-acquire).
    """
    if not e.per_cpu or not e.policies:
        return
    if not any(p.cpu_acquire for p in e.policies):
        idx = ", ".join(str(p.index) for p in e.policies)
        yield Hit(f"{e.host.name}: outbound policy (index {idx}) of a per-CPU group has no "
                  f"CPU_ACQUIRE flag")


@_xrule(code="MS508", name="xfrm-per-cpu-sa-idle",
        title="a per-CPU SA stays idle while the fallback SA's counters grow",
        rfc="RFC 9611 §4", level=Level.NONE, severity=Severity.WARNING, group=ExpertGroup.SEQUENCE)
def xfrm_per_cpu_sa_idle(e: XfrmGroupSeen) -> Iterator[Hit]:
    """## What it does
    With two or more samples (`multisa xfrm snapshot --count N`), compares the first and last:
    flags a per-CPU outbound SA whose packet counter did not move while the group's fallback
    outbound SA's did.

    ## Why is this bad?
    RFC 9611 §4: the SA "available for all CPUs" is meant for the short time until a CPU's
    own SA is negotiated. Traffic going through the fallback SA while a per-CPU SA sits idle
    means the CPU selector does not match (wrong `pcpu`, packets processed on another CPU,
    RPS/XPS steering): the per-resource SAs bring nothing.

    ## Example
    Bad: between samples `out c2d58759` (fallback) +1200 packets, `out ca2c6b46 pcpu 0` +0.
    Good: each per-CPU SA counts its CPU's packets; the fallback barely moves.
    """
    grew = [r for r in e.children if r.fallback and r.outbound is not None
            and r.outbound_first is not None
            and r.outbound.curlft.packets > r.outbound_first.curlft.packets]
    if not grew:
        return
    fb = grew[0]
    delta = fb.outbound.curlft.packets - fb.outbound_first.curlft.packets
    for r in e.children:
        if r.fallback or r.outbound is None or r.outbound_first is None or r.outbound.pcpu is None:
            continue
        if r.outbound.curlft.packets == r.outbound_first.curlft.packets:
            yield Hit(f"{e.host.name}: per-CPU outbound SA {_spi(r.outbound_spi)} (CPU "
                      f"{r.outbound.pcpu}) sent nothing while the fallback SA "
                      f"{_spi(fb.outbound_spi)} sent {delta} packet(s)")


@_xrule(code="MS509", name="xfrm-sa-not-negotiated",
        title="an SA between the peers that no captured IKE exchange negotiated",
        rfc="RFC 9611 §3", level=Level.NONE, severity=Severity.INFO, group=ExpertGroup.PROTOCOL)
def xfrm_sa_not_negotiated(e: XfrmHostSeen) -> Iterator[Hit]:
    """## What it does
    Lists the host's SAs between the two peers of a captured IKE SA whose SPI no Child SA
    exchange of the capture carried. Larval SAs (an SPI allocated, no keys yet) are left out;
    SAs to peers the capture never saw are out of scope.

    ## Why is this bad?
    RFC 9611 §3: per-resource SAs are negotiated as regular Child SAs, each with its
    SA_RESOURCE_INFO. An SA the capture does not explain was negotiated before the capture
    started (start it earlier), over another IKE SA, or installed by hand: the group the
    analyzer shows is then not what the kernel uses.

    ## Example
    Bad: moon's SAD holds `out deadbeef reqid 1` besides the six negotiated SPIs.
    Good: every non-larval SA between moon and sun has an SPI seen in IKE.
    """
    for sa in e.unnegotiated:
        way = "in" if sa.dst == e.host.address else "out"
        cpu = f" pcpu {sa.pcpu}" if sa.pcpu is not None else ""
        yield Hit(f"{e.host.name}: {way} SA {sa.spi_hex} (reqid {sa.reqid}{cpu}) {sa.src} -> "
                  f"{sa.dst} was not negotiated in the capture")

"""MS4xx: ESP sequence numbers on the wire, per SA (RFC 4303) and held against the groups (RFC 9611).

Events come from the ESP pass (``analyzer.esp_analysis``): ``EspSaSeen`` once per ESP SA
(destination, SPI), ``EspGroupSeen`` once per Child SA group, both at the end of the capture.

Registration. Each rule goes through the registry's ``@rule`` (same validation: code, slug,
docstring sections) and lands in the global ``RULES`` (the registry imports this module) and
in ``ESP_RULES``, which ``analyzer.esp_analysis`` runs: the IKE-only pass never emits the
ESP events, so there they are inert. ``REGISTER_GLOBALLY = False`` keeps them out of
``RULES`` (``multisa rules``) while still runnable by the ESP pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ..esp_events import EspGroupSeen, EspSaSeen
from ..model import ExpertGroup, Level, Severity
from . import RULES, Hit, Rule
from . import rule as _registry_rule

REGISTER_GLOBALLY = True
#: code -> Rule for the MS4xx rules, registered globally or not.
ESP_RULES: dict[str, Rule] = {}



def _n(n: int, word: str) -> str:
    """``1 packet``, ``2 packets``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"

def rule(**kw) -> Callable[[Callable], Callable]:
    def register(fn: Callable) -> Callable:
        code = kw["code"]
        if code in RULES and RULES[code].check is not fn:  # re-import: the module object changed
            if RULES[code].name == kw["name"]:
                del RULES[code]
        _registry_rule(**kw)(fn)
        ESP_RULES[code] = RULES[code] if REGISTER_GLOBALLY else RULES.pop(code)
        return fn

    return register


def _sa(e: EspSaSeen) -> str:
    t = e.sa.tracker
    return f"ESP SA 0x{t.spi:08x} to {t.dst}"


@rule(code="MS401", name="esp-replayed-sequence-number",
      title="ESP sequence number seen twice inside the anti-replay window",
      rfc="RFC 4303 §3.3.3", level=Level.MUST, severity=Severity.WARNING, group=ExpertGroup.SEQUENCE)
def esp_replayed_sequence_number(e: EspSaSeen) -> Iterator[Hit]:
    """## What it does
    Counts, per ESP SA, packets whose Sequence Number was already seen inside the receiver's
    anti-replay window (default 64 packets, `--window`).

    ## Why is this bad?
    RFC 4303 §3.3.3: the sender increments the counter for every packet, so a number never
    repeats; §3.4.3: the receiver discards duplicates. A per-CPU Child SA shared by two CPUs
    (the very thing RFC 9611 avoids) sends duplicates; so does a replay attack.

    ## Example
    Bad: SPI c1f7e800 carries 41, 42, 42, 43.
    Good: 41, 42, 43.
    """
    t = e.sa.tracker
    if t.replays:
        yield Hit(f"{_sa(e)}: {_n(t.replays, 'replayed sequence number')} inside the {e.settings.window}-packet "
                  f"window (first in frame {t.first_replay_frame})", frames=(e.sa.frame(t.first_replay_frame),))


@rule(code="MS402", name="esp-sequence-gap",
      title="ESP sequence numbers missing (packets lost before the capture point)",
      rfc="RFC 4303 §3.4.3", level=Level.NONE, severity=Severity.INFO, group=ExpertGroup.SEQUENCE)
def esp_sequence_gap(e: EspSaSeen) -> Iterator[Hit]:
    """## What it does
    Counts the Sequence Numbers between an SA's first and highest that never appeared (late
    packets that arrive inside the window fill their gap again).

    ## Why is this bad?
    Each missing number is a packet lost (or not captured) between the sender and the
    capture point; with per-resource SAs a gap on one member only points at its CPU/queue.

    ## Example
    Bad: 41, 42, 45 (2 lost).
    Good: 41, 42, 43.
    """
    t = e.sa.tracker
    if t.gaps > 0:
        yield Hit(f"{_sa(e)}: {_n(t.gaps, 'sequence number')} missing between {t.first_seq} and "
                  f"{t.highest_seq} (first gap in frame {t.first_gap_frame})",
                  frames=(e.sa.frame(t.first_gap_frame),))


@rule(code="MS403", name="esp-reordered-beyond-window",
      title="ESP packet arrived more than a replay window late (the receiver drops it)",
      rfc="RFC 4303 §3.4.3", level=Level.NONE, severity=Severity.WARNING, group=ExpertGroup.SEQUENCE)
def esp_reordered_beyond_window(e: EspSaSeen) -> Iterator[Hit]:
    """## What it does
    Counts packets whose Sequence Number lies more than the window below the highest number
    already seen on the SA.

    ## Why is this bad?
    RFC 4303 §3.4.3: packets left of the window are discarded by the receiver, so this
    reordering is loss. Reordering that deep usually means one SA's packets are sent by
    several CPUs or queues: exactly what per-resource Child SAs (RFC 9611 §2) are for.

    ## Example
    Bad: with a 64-packet window, 1000 arrives after 1100.
    Good: reordering stays within the window (1000 after 1010 is accepted).
    """
    t = e.sa.tracker
    if t.reorders:
        yield Hit(f"{_sa(e)}: {_n(t.reorders, 'packet')} reordered beyond the {e.settings.window}-packet window "
                  f"(first in frame {t.first_reorder_frame})", frames=(e.sa.frame(t.first_reorder_frame),))


@rule(code="MS404", name="esp-sequence-cycled-without-esn",
      title="32-bit ESP sequence number wrapped on an SA without ESN",
      rfc="RFC 4303 §3.3.3", level=Level.MUST_NOT, group=ExpertGroup.SEQUENCE)
def esp_sequence_cycled_without_esn(e: EspSaSeen) -> Iterator[Hit]:
    """## What it does
    Flags an SA without Extended Sequence Numbers whose 32-bit counter went from near 2^32
    back to small numbers.

    ## Why is this bad?
    RFC 4303 §3.3.3: "the sender's counter and the receiver's counter MUST NOT be allowed to
    cycle" -- the SA must be rekeyed before 2^32 packets; after the wrap every packet is a
    replay to the receiver.

    ## Example
    Bad: 4294967295 then 1 on the same SPI.
    Good: a CREATE_CHILD_SA rekey before the counter runs out, or ESN negotiated.
    """
    t = e.sa.tracker
    if t.wraps and not t.esn:
        yield Hit(f"{_sa(e)}: the 32-bit sequence number cycled {_n(t.wraps, 'time')} without ESN "
                  f"(frame {t.first_wrap_frame})", frames=(e.sa.frame(t.first_wrap_frame),))


@rule(code="MS405", name="esp-first-sequence-not-one",
      title="First ESP packet of a Child SA negotiated in the capture is not number 1",
      rfc="RFC 4303 §3.3.3", level=Level.MUST, severity=Severity.WARNING, group=ExpertGroup.SEQUENCE)
def esp_first_sequence_not_one(e: EspSaSeen) -> Iterator[Hit]:
    """## What it does
    For an SA whose Child SA was negotiated in the capture, flags an SA whose lowest captured
    sequence number is other than 1 (0 included). The lowest, not the first captured: two
    CPUs sending on one SA can put packet 2 on the wire (or in the capture) ahead of packet 1.
    SAs negotiated before the capture started are not judged: their first captured packet can
    have any number.

    ## Why is this bad?
    RFC 4303 §3.3.3: the counter starts at 0 and "the first packet sent using a given SA will
    contain a sequence number of 1". Anything else is loss before the capture point, or a
    sender reusing a counter across SAs.

    ## Example
    Bad: CREATE_CHILD_SA in frame 9, the ESP on its SPI numbered 17, 18, 19, ...
    Good: the ESP on the new SPI starts at number 1 (2, 1, 3, ... from two CPUs is fine).
    """
    t, child = e.sa.tracker, e.sa.child
    if child is None or child.created is None or t.first_frame < child.created.index:
        return
    if t.lowest != 1:
        yield Hit(f"{_sa(e)}: lowest packet number after the Child SA was created (frame "
                  f"{child.created.index}) is {t.lowest}, not 1")


@rule(code="MS410", name="esp-unknown-spi",
      title="ESP on an SPI that no captured IKE exchange negotiated",
      rfc="RFC 4303 §3.4.2", level=Level.NONE, severity=Severity.WARNING, group=ExpertGroup.SEQUENCE)
def esp_unknown_spi(e: EspSaSeen) -> Iterator[Hit]:
    """## What it does
    Flags ESP SAs whose SPI appears in no SA payload of the capture's IKE exchanges, when the
    capture holds IKE at all (a capture of ESP only cannot tell).

    ## Why is this bad?
    RFC 4303 §3.4.2: a packet for which no SA exists is discarded. Either the SA was
    negotiated before the capture started (then nothing is wrong), or a peer sends on an SA
    the other never agreed to (a stale SA after a failed delete, a per-CPU SA installed on
    one side only).

    ## Example
    Bad: ESP to SPI 0badcafe; no CREATE_CHILD_SA or IKE_AUTH carried it.
    Good: every SPI on the wire was negotiated in the capture.
    """
    if e.any_ike and e.sa.child is None:
        t = e.sa.tracker
        yield Hit(f"{_sa(e)}: {_n(t.packets, 'packet')} on an SPI no captured IKE exchange negotiated")


@rule(code="MS411", name="esp-after-delete",
      title="ESP on a Child SA after its Delete",
      rfc="RFC 7296 §1.4.1", level=Level.NONE, severity=Severity.WARNING, group=ExpertGroup.SEQUENCE)
def esp_after_delete(e: EspSaSeen) -> Iterator[Hit]:
    """## What it does
    Flags an ESP SA whose last packet came after the INFORMATIONAL exchange that deleted its
    Child SA (directly, with its IKE SA, or as the old SA of a rekey) had completed.

    ## Why is this bad?
    RFC 7296 §1.4.1: Delete closes both directions of the Child SA; after the response each
    end has removed it, so later packets are dropped. With per-resource SAs it shows a CPU
    still bound to an SA the daemon replaced (RFC 9611 §3: the rekeyed SA takes its place).

    ## Example
    Bad: Delete for SPI c1f7e800 in frames 20/21, ESP on c1f7e800 in frame 30.
    Good: the last packet on c1f7e800 precedes frame 20.
    """
    child, t = e.sa.child, e.sa.tracker
    if child is None or child.deleted is None:
        return
    last_delete = max(child.delete_frames) if child.delete_frames else child.deleted.index
    if t.last_frame > last_delete:
        yield Hit(f"{_sa(e)}: packet(s) after the Child SA was deleted in frame {last_delete} "
                  f"(last in frame {t.last_frame})", frames=(e.sa.frame(t.last_frame), child.deleted))


@rule(code="MS412", name="esp-before-child-sa-created",
      title="ESP on a Child SA before the exchange creating it completed",
      rfc="RFC 7296 §2.17", level=Level.NONE, severity=Severity.WARNING, group=ExpertGroup.SEQUENCE)
def esp_before_child_sa_created(e: EspSaSeen) -> Iterator[Hit]:
    """## What it does
    Flags an ESP SA whose first packet precedes the response that created its Child SA.

    ## Why is this bad?
    RFC 7296 §2.17: the Child SA's keys come from the nonces of both messages of the
    exchange, so no packet can be protected before the response was sent. A packet earlier
    in the capture means a reused SPI, clock skew between capture points, or an SA installed
    before negotiation finished.

    ## Example
    Bad: ESP on the new SPI in frame 8, CREATE_CHILD_SA response in frame 10.
    Good: the first packet follows frame 10.
    """
    child, t = e.sa.child, e.sa.tracker
    if child is not None and child.created is not None and t.first_frame < child.created.index:
        yield Hit(f"{_sa(e)}: first packet in frame {t.first_frame}, before the Child SA was created in "
                  f"frame {child.created.index}", frames=(e.sa.frame(t.first_frame), child.created))


@rule(code="MS413", name="fallback-busy-members-idle",
      title="The initial (fallback) SA carries the traffic while per-resource members sit idle",
      rfc="RFC 9611 §4", level=Level.NONE, severity=Severity.WARNING, group=ExpertGroup.SEQUENCE)
def fallback_busy_members_idle(e: EspGroupSeen) -> Iterator[Hit]:
    """## What it does
    In a group with per-resource members, flags the fallback (initial) Child SA carrying more
    packets than all the members together, with at least one member idle (no packet although
    it existed `idle_seconds` (10) while the group carried traffic), once the group carried
    `min_packets` (10).

    ## Why is this bad?
    RFC 9611 §4: the SA "available for all CPUs" is for packets of a CPU that has no
    CPU-specific Child SA *yet*; once the members exist, traffic on the fallback means the
    per-CPU SAs are not used (wrong CPU selector, missing outbound SA) and one CPU does
    all the work again.

    ## Example
    Bad: fallback 90,000 packets; CPU 0 member 10,000; CPU 1 member 0.
    Good: the members carry the traffic, the fallback only the first packets.
    """
    fallbacks = [c for c in e.group.children if c.role == "fallback"]
    members = [c for c in e.group.children if c.role == "member"]
    if not fallbacks or not members:
        return
    fb = sum(e.packets_of(c) for c in fallbacks)
    per_member = [e.packets_of(c) for c in members]
    idle = sum(1 for c in members if e.idle(c))
    if fb + sum(per_member) < e.settings.min_packets or fb <= sum(per_member) or not idle:
        return
    yield Hit(f"group {e.group.label}: the fallback SA carried {fb} ESP packets, its {len(members)} "
              f"per-resource member(s) {sum(per_member)} ({idle} idle)")


@rule(code="MS414", name="member-traffic-imbalance",
      title="Traffic spread unevenly across the per-resource members of a group",
      rfc="RFC 9611 §4", level=Level.NONE, severity=Severity.INFO, group=ExpertGroup.SEQUENCE)
def member_traffic_imbalance(e: EspGroupSeen) -> Iterator[Hit]:
    """## What it does
    Among a group's active members that carried traffic, flags a busiest/quietest packet
    ratio above `imbalance_ratio` (10) once they carried `imbalance_min_packets` (100) together
    (a few packets per member in a short capture say nothing about the spread).

    ## Why is this bad?
    RFC 9611 §4: responders "should install the additional Child SA on a CPU with the least
    amount of additional Child SAs"; per-resource SAs exist to spread the load. A large
    imbalance shows flows pinned to one CPU or queue (RSS hashing, one elephant flow).

    ## Example
    Bad: member CPU 0 100,000 packets, CPU 1 500.
    Good: members within a factor of a few of each other.
    """
    members = [c for c in e.group.children if c.role == "member"]
    counts = [(e.packets_of(c), c) for c in members]
    busy = [(n, c) for n, c in counts if n > 0]
    if len(busy) < 2 or sum(n for n, _ in busy) < max(e.settings.min_packets, e.settings.imbalance_min_packets):
        return
    hi, lo = max(busy, key=lambda x: x[0]), min(busy, key=lambda x: x[0])
    if hi[0] > e.settings.imbalance_ratio * lo[0]:
        yield Hit(f"group {e.group.label}: member {hi[1].label} carried {hi[0]} packets, member "
                  f"{lo[1].label} {lo[0]} (ratio {hi[0] / lo[0]:.1f} > {e.settings.imbalance_ratio:g})")


@rule(code="MS415", name="member-never-carries-traffic",
      title="A per-resource Child SA that never carried a packet while its group did",
      rfc="RFC 9611 §3", level=Level.NONE, severity=Severity.INFO, group=ExpertGroup.SEQUENCE)
def member_never_carries_traffic(e: EspGroupSeen) -> Iterator[Hit]:
    """## What it does
    Flags each per-resource member with no ESP packet in either direction although it existed
    `idle_seconds` (10) while its group carried traffic (until its Delete, if deleted), when
    the group as a whole carried `min_packets` (10). A member negotiated at the end of a short
    capture, or deleted right away (a delete/re-create loop, MS303), is not judged.

    ## Why is this bad?
    RFC 9611 §3: "Peers may also delete specific per-resource Child SAs if they deem the
    associated resource to be idle." A member that is never used costs an SAD entry and a
    rekey per lifetime; it may also be bound to a CPU that never sends (§4: the peer with
    fewer resources may skip installing the outbound SA, but it is then idle by design).

    ## Example
    Bad: CPU 1 member negotiated in frame 9, no packet on either of its SPIs.
    Good: each member carries the traffic of its CPU, or is deleted when idle.
    """
    total = sum(v.tracker.packets for v in e.sas)
    if total < e.settings.min_packets:
        return
    for c in e.group.children:
        if c.role == "member" and e.idle(c):
            frames = tuple(f for f in (c.requested, c.created) if f is not None)
            yield Hit(f"group {e.group.label}: member {c.label} never carried an ESP packet "
                      f"({total} in the group)", frames=frames)


@rule(code="MS420", name="esp-integrity-check-failed",
      title="ESP ICV did not verify with the supplied or derived keys",
      rfc="RFC 4303 §3.4.4", level=Level.NONE, severity=Severity.WARNING, group=ExpertGroup.CHECKSUM)
def esp_integrity_check_failed(e: EspSaSeen) -> Iterator[Hit]:
    """## What it does
    With `--decrypt`, counts the packets of an SA whose ICV (HMAC, or AEAD tag) did not verify.

    ## Why is this bad?
    RFC 4303 §3.4.4: the receiver discards such packets. Either the keys are wrong (a stale
    esp_sa row, a wrong SK_d line) or packets are corrupted or forged; nothing of them is
    shown as decrypted.

    ## Example
    Bad: SPI c1f7e800 with esp_sa keys of an earlier SA: every ICV fails.
    Good: every packet verifies.
    """
    v = e.sa
    if v.icv_failures:
        yield Hit(f"{_sa(e)}: {v.icv_failures} of {_n(v.tracker.packets, 'packet')} failed the integrity check "
                  f"with keys {v.key_source or '?'} (first in frame {v.first_icv_failure})",
                  frames=(v.frame(v.first_icv_failure),))

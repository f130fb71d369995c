"""The state machine: IKE SA lineages, request/response matching, Child SAs, groups, refusals.

Conversations are built with the codec (``tests/ikesim.py``) and fed to the real Analyzer;
the real-capture tests run the whole pipeline on ../shared/captures.
"""

from __future__ import annotations

import pytest

from analyzer.model import ChildProposal, Side, selector_covers, ts_covers, ts_overlap, ts_text
from analyzer.pipeline import analyze_capture
from analyzer.state import Analyzer
from dissectors.iana import DhGroup, EncrId, ExchangeType, IntegId, NotifyType, ProtocolId
from dissectors.records import FrameRef
from tests.conftest import SHARED, needs_shared
from tests.ikesim import NET_I, NET_R, Conversation, cidr, esp_proposal, feed_all, rid, selector

S6 = SHARED / "strongswan6-percpu-2cpu"


def run(conv: Conversation) -> Analyzer:
    a = Analyzer(source=conv.source)
    feed_all(a, conv.records)
    return a


def only_group(a: Analyzer):
    [lineage] = a.lineages
    [group] = lineage.groups.values()
    return lineage, group


def test_crossing_exchanges_pair_by_requester_and_message_id():
    c = Conversation()
    fb = c.established()
    x = c.create_child("I", bytes(4), (1).to_bytes(4, "big"), emit=False)
    y = c.create_child("R", bytes(4), (1).to_bytes(4, "big"), emit=False)
    # same Message ID? I's request is its #2, R's its #0: cross them on the wire
    c.send(x.request, y.request, x.response, y.response)
    a = run(c)
    lineage, g = only_group(a)
    assert [ch.role for ch in g.children] == ["fallback", "member", "member"]
    fallback, from_i, from_r = g.children
    assert (fallback.spi_in, fallback.spi_out) == (fb.spi["I"], fb.spi["R"])
    assert (from_i.spi_in, from_i.spi_out) == (x.child.spi["I"], x.child.spi["R"])
    assert (from_r.spi_in, from_r.spi_out) == (y.child.spi["I"], y.child.spi["R"])
    assert from_i.created_by is Side.I and from_r.created_by is Side.R
    # resource ids per sender: each peer's request carried 0, each response 1
    assert (from_i.resource_id_i, from_i.resource_id_r) == (bytes(4), (1).to_bytes(4, "big"))
    assert (from_r.resource_id_i, from_r.resource_id_r) == ((1).to_bytes(4, "big"), bytes(4))
    assert (fallback.resource_id_i, fallback.resource_id_r) == (b"", b"")
    assert g.uses_resource_info and g.fallback is fallback and g.members == [from_i, from_r]
    assert g.resource_ids_sent(Side.I) == {bytes(4), (1).to_bytes(4, "big")}
    assert from_i.requested.index == 5 and from_i.created.index == 7
    assert from_r.requested.index == 6 and from_r.created.index == 8
    assert lineage.resource_info_echoed == {Side.I, Side.R}


def test_ts_are_told_from_the_lineage_initiator():
    c = Conversation()
    c.established()
    c.create_child("R", rid(1), rid(2))  # R's TSi is its own subnet
    a = run(c)
    _, g = only_group(a)
    assert g.label == "198.51.100.0/24 === 203.0.113.0/24"
    assert all(ch.ts_i == (selector(NET_I),) and ch.ts_r == (selector(NET_R),) for ch in g.children)


def test_proposal_mode_ipcomp_esn_are_recorded():
    c = Conversation()
    c.established(transport=True, ipcomp=True, esn=True)
    a = run(c)
    _, g = only_group(a)
    [fb] = g.children
    assert fb.mode == "transport" and fb.ipcomp == 2 and fb.esn is True
    assert fb.proposal == ChildProposal(ProtocolId.ESP, ((EncrId.AES_CBC, 128),),
                                        (IntegId.AUTH_HMAC_SHA2_256_128,), (), (1,))
    assert str(fb.proposal) == "ESP:AES_CBC-128/AUTH_HMAC_SHA2_256_128/ESN"


def test_pfs_group_is_not_part_of_the_suite():
    with_pfs = ChildProposal.from_proposal(esp_proposal(b"1234", dh=DhGroup.CURVE25519))
    without = ChildProposal.from_proposal(esp_proposal(b"5678"))
    assert with_pfs.suite == without.suite and with_pfs.ke == (DhGroup.CURVE25519,)


def test_child_rekey_and_delete():
    c = Conversation()
    c.established()
    old = c.create_child("I", rid(1), rid(2)).child
    c.at(10)
    new = c.create_child("R", rid(2), rid(1), rekey=old).child  # R rekeys I's SA
    c.delete_child(old, by="R")
    a = run(c)
    lineage, g = only_group(a)
    fallback, first, second = g.children
    assert second.rekey_of is first and first.rekeyed_by is second
    assert first.state == "deleted" and second.state == "installed" and second.role == "member"
    assert first.deleted.index == 9 and first.delete_frames == [9, 10]
    assert first.lifetime == pytest.approx(first.deleted.ts - first.created.ts)
    assert (second.spi_in, second.spi_out) == (new.spi["I"], new.spi["R"])
    assert g.active == [fallback, second] and len(g.installed) == 2


def test_ike_rekey_moves_children_and_restarts_message_ids():
    c = Conversation()
    c.established()
    child = c.create_child("I", rid(1), rid(2)).child
    old_spis = c.spis
    c.rekey_ike("R")  # the responder rekeys: it is the new IKE SA's initiator
    new_spis = c.spis
    c.delete_ike("R", old_spis)
    c.create_child("I", rid(3), rid(4))  # Message ID 0 again, under the new IKE SA
    c.create_child("R", rid(5), rid(6))
    a = run(c)
    lineage, g = only_group(a)
    first, second = lineage.ike_sas
    assert first.key == old_spis and second.key == new_spis
    assert first.rekeyed_into == new_spis and second.rekey_of == old_spis
    assert first.state == "deleted" and second.state == "established"
    assert second.initiator_side is Side.R
    assert [ch.ike_spis for ch in g.children] == [new_spis] * 4
    assert all(ch.state == "installed" for ch in g.children)
    assert [ch.created_by for ch in g.children] == [Side.I, Side.I, Side.I, Side.R]
    assert g.children[3].spi_in == c.records[-1].payloads[0].inner[0].proposals[0].spi  # I's SA payload
    assert a.ike_sas[new_spis] is second and lineage.label.count("->") == 1
    del child


def test_delete_of_the_ike_sa_deletes_its_children():
    c = Conversation()
    c.established()
    c.create_child("I", rid(1), rid(2))
    c.delete_ike("I")
    a = run(c)
    _, g = only_group(a)
    assert all(ch.deleted_with_ike_sa and ch.state == "deleted" for ch in g.children)
    assert g.last_member_delete is None  # not a per-resource delete


def test_refusals_attach_to_the_group_they_refused():
    c = Conversation()
    c.established()
    c.create_child("I", rid(1), b"", refuse=NotifyType.TS_MAX_QUEUE)
    other = ((selector(cidr("10.0.0.0/8")),), (selector(cidr("10.1.0.0/16")),))
    c.create_child("R", None, None, ts=other, refuse=NotifyType.TS_UNACCEPTABLE)
    a = run(c)
    [lineage] = a.lineages
    g, g2 = lineage.groups.values()
    [r] = g.refusals
    assert (r.notify_type, r.requested_by, r.resource_id, r.per_resource, r.rekey) == (
        NotifyType.TS_MAX_QUEUE, Side.I, rid(1), True, False)
    assert (r.request.index, r.response.index) == (5, 6)
    assert g2.label == "10.0.0.0/8 === 10.1.0.0/16" and g2.children == []
    assert g2.refusals[0].notify_type == NotifyType.TS_UNACCEPTABLE and not g2.refusals[0].per_resource


def test_ike_auth_refusal_and_multi_round_trip():
    c = Conversation()
    c.ike_sa_init()
    c.ike_auth(b"", None, refuse=NotifyType.TS_UNACCEPTABLE)
    a = run(c)
    [lineage] = a.lineages
    [g] = lineage.groups.values()
    assert g.children == [] and g.refusals[0].notify_type == NotifyType.TS_UNACCEPTABLE


def test_retransmissions_are_ignored():
    c = Conversation()
    c.established()
    x = c.create_child("I", rid(1), rid(2), emit=False)
    c.send(x.request, x.request, x.response, x.response)
    a = run(c)
    _, g = only_group(a)
    assert len(g.children) == 2


def test_esp_is_counted_per_child_sa():
    c = Conversation()
    fb = c.established()
    c.esp(fb, 3, to="R")
    c.esp(fb, 2, to="I")
    c.esp(type(fb)({"I": b"zzzz", "R": b"yyyy"}, fb.ts), 1)  # unknown SPI: counted, not attributed
    a = run(c)
    _, g = only_group(a)
    assert (g.children[0].esp_out, g.children[0].esp_in) == (3, 2)
    assert a.esp_packets == 6
    assert a.child_by_spi(int.from_bytes(fb.spi["R"], "big")) is g.children[0]


def test_unreadable_exchange_is_unknown_not_fatal():
    c = Conversation()
    c.established()
    x = c.create_child("I", rid(1), rid(2), emit=False)
    resp = c.message(ExchangeType.CREATE_CHILD_SA, "R", True, x.request.message_id, [],
                     sk_error="not decrypted: no key for SPIs x/y")
    c.send(x.request, resp)
    a = run(c)
    lineage, g = only_group(a)
    assert lineage.unknown_exchanges == 1 and len(g.children) == 1


def test_partial_capture_starting_mid_life():
    """The capture starts after IKE_AUTH: no IKE_SA_INIT, a response whose request is
    missing, a rekey of a Child SA never seen, a delete of an unknown SPI."""
    full = Conversation()
    full.established()
    seen_before = full.create_child("I", rid(1), rid(2)).child
    lost = full.create_child("R", rid(3), rid(4), emit=False)
    start = len(full.records)
    full.send(lost.response)  # its request was before the capture started
    full.create_child("I", rid(1), rid(2), rekey=seen_before)
    full.delete_child(seen_before)
    full.create_child("I", b"", b"")
    full.informational("R")
    a = Analyzer(source="partial.pcap")
    findings = feed_all(a, full.records[start:])
    assert findings == []
    [lineage] = a.lineages
    assert lineage.partial and lineage.first.state == "established"
    [g] = lineage.groups.values()
    rekeyed, unnamed = g.children
    assert rekeyed.rekey_of is None and rekeyed.rekey_of_spi == seen_before.spi["I"]
    assert rekeyed.role == "unknown" and unnamed.role == "unknown"
    assert g.fallback is None and g.reference is rekeyed


def test_messages_without_frames_or_ike_spis_do_not_crash():
    from dissectors.ikev2.message import IkeMessage

    a = Analyzer(source="x")
    assert a.feed(IkeMessage(b"", b"", 0, 0)) == []
    assert a.feed(IkeMessage(bytes(8), bytes(8), ExchangeType.INFORMATIONAL, 0, 0x20)) == []
    odd = IkeMessage(b"\x01" * 8, b"\x02" * 8, 99, 5, 0x08)  # unknown exchange, mid-life
    assert a.feed(odd) == []
    assert a.finish() == [] and a.finish() == []
    assert a.last == FrameRef("x", 3, 0.0)


def test_selector_geometry():
    wide, narrow = selector(cidr("10.0.0.0/8")), selector(cidr("10.1.0.0/16"))
    tcp = selector(cidr("10.1.0.0/16"), proto=6, ports=(25, 25))
    assert selector_covers(wide, narrow) and not selector_covers(narrow, wide)
    assert selector_covers(narrow, tcp) and not selector_covers(tcp, narrow)
    assert ts_covers((wide,), (narrow, tcp)) and not ts_covers((narrow,), (wide,))
    assert ts_overlap((narrow,), (wide,)) and not ts_overlap((narrow,), (selector(cidr("10.2.0.0/16")),))
    assert ts_text((tcp,)) == "10.1.0.0/16[6/25]"
    assert ts_text((selector(("10.0.0.1", "10.0.0.5")),)) == "10.0.0.1-10.0.0.5"
    v6 = selector(cidr("2001:db8::/32"))
    assert ts_text((v6,)) == "2001:db8::/32" and not ts_overlap((v6,), (wide,))


# --- real captures ---------------------------------------------------------------------------


@needs_shared
def test_strongswan6_capture_groups():
    result = analyze_capture(str(S6 / "capture.pcap"), _keys([S6]))
    a = result.analyzer
    assert result.error is None and a.messages == 10 and a.esp_packets == 16
    lineage, g = only_group(a)
    assert g.label == "198.51.100.0/24 === 203.0.113.0/24"
    fb, m0, m1 = g.children
    # moon's view (moon.list-sas.txt): fallback in ccae5922 out c2d58759, CPU 0 in c1f7e800
    # out ca2c6b46, CPU 1 in c26c69ed out cdcf94a8
    assert [(c.spi_in.hex(), c.spi_out.hex()) for c in g.children] == [
        ("ccae5922", "c2d58759"), ("c1f7e800", "ca2c6b46"), ("c26c69ed", "cdcf94a8")]
    assert [c.role for c in g.children] == ["fallback", "member", "member"]
    assert (fb.resource_id_i, fb.resource_id_r) == (b"", b"")
    assert (m0.resource_id_i.hex(), m0.resource_id_r.hex()) == ("00000000", "00000001")
    assert (m1.resource_id_i.hex(), m1.resource_id_r.hex()) == ("00000001", "00000000")
    assert (m0.created_by, m1.created_by) == (Side.I, Side.R)
    assert [(c.requested.index, c.created.index) for c in g.children] == [(3, 4), (7, 9), (8, 10)]
    # packet counts as moon's kernel saw them
    assert [(c.esp_in, c.esp_out) for c in g.children] == [(1, 1), (4, 3), (3, 4)]
    assert all(c.deleted.index == 25 and c.deleted_with_ike_sa for c in g.children)
    assert lineage.first.deleted.index == 25


@needs_shared
@pytest.mark.parametrize("name", ["sswan-aes128cbc-sha256-modp2048", "sswan-aes256gcm16"])
def test_strongswan5_capture_groups(name):
    keys = sorted(SHARED.glob(name + ".*_*"))
    result = analyze_capture(str(SHARED / f"{name}.pcap"), _keys(keys))
    a = result.analyzer
    assert result.error is None and a.messages == 28 and a.esp_packets == 64
    lineage, g = only_group(a)
    assert len(lineage.ike_sas) == 2 and lineage.ike_sas[0].rekeyed_into == lineage.ike_sas[1].key
    assert lineage.unknown_exchanges == 0
    # 7 Child SAs: 4 + 2 rekeys + 1 under the new IKE SA (README steps 1-9)
    assert len(g.children) == 7
    assert [c.created_by.value for c in g.children] == ["I", "I", "I", "R", "I", "R", "I"]
    assert [c.role for c in g.children] == ["fallback", "member", "member", "member", "fallback", "member", "member"]
    rekeys = [c for c in g.children if c.rekey_of]
    assert [(c.rekey_of.created_by.value, c.created_by.value) for c in rekeys] == [("I", "I"), ("R", "R")]
    assert all(c.resource_id_i is None and c.resource_id_r is None for c in g.children)
    assert all(c.esp_in + c.esp_out > 0 for c in g.children)
    assert sum(c.esp_in + c.esp_out for c in g.children) == 64
    new_ike = lineage.ike_sas[1].key
    assert [c.ike_spis == new_ike for c in g.children] == [False, False, True, False, True, True, True]


def _keys(paths):
    from dissectors.keys import load_keys

    store = load_keys([str(p) for p in paths])
    assert store.problems == []
    return store


def test_history_is_bounded():
    """Memory follows the live SAs, not the capture's length: deleted Child SAs beyond
    ``history`` per group, and closed lineages beyond ``history``, are dropped and counted."""
    from analyzer.config import Settings

    c = Conversation()
    c.established()
    gone = []
    for n in range(5):
        child = c.create_child("I", rid(n), rid(100 + n)).child
        c.delete_child(child)
        gone.append(child)
    c.create_child("I", b"", refuse=NotifyType.TS_MAX_QUEUE)
    c.create_child("I", b"", refuse=NotifyType.TS_MAX_QUEUE)
    a = Analyzer(Settings(history=2), source="x")
    feed_all(a, c.records)
    lineage, g = only_group(a)
    assert [ch.state for ch in g.children] == ["installed", "deleted", "deleted"]
    assert g.pruned == 3 and g.refused == 2 and len(g.refusals) == 2 and g.ts_max_queue_seen
    assert (Side.I, gone[0].spi["I"]) not in lineage.children_by_spi
    assert (Side.I, gone[4].spi["I"]) in lineage.children_by_spi

    a = Analyzer(Settings(history=1), source="x")
    for k in range(3):
        conv = Conversation(seed=1000 * (k + 1))
        conv.established()
        conv.delete_ike()
        for r in conv.records:
            a.feed(r)
    assert len(a.lineages) == 1 and a.pruned_lineages == 2 and len(a.ike_sas) == 1


def test_ike_sa_rekeys_are_bounded():
    """A lineage rekeyed many times keeps its first IKE SA and the latest ``history`` ones;
    the Child SAs follow the live IKE SA and a new one still lands in the same lineage."""
    from analyzer.config import Settings

    c = Conversation()
    c.established()
    child = c.create_child("I", rid(1), rid(2)).child
    seen = [c.spis]
    for n in range(6):
        old = c.spis
        c.rekey_ike("I" if n % 2 else "R")
        c.delete_ike("I", old)
        seen.append(c.spis)
    c.create_child("R", rid(3), rid(4))
    a = Analyzer(Settings(history=2), source="x")
    feed_all(a, c.records)
    lineage, g = only_group(a)
    assert [s.key for s in lineage.ike_sas] == [seen[0], seen[-2], seen[-1]]
    assert lineage.pruned_ike_sas == 4 and set(a.ike_sas) == {seen[0], seen[-2], seen[-1]}
    assert "(4 more)" in lineage.label and len(a.lineages) == 1
    assert [ch.ike_spis for ch in g.children] == [seen[-1]] * 3 and all(ch.active for ch in g.children)
    from analyzer.pipeline import CaptureResult
    from analyzer.report import groups

    text = groups.render_text(CaptureResult("x", a)).splitlines()
    assert text[3] == "  (4 older rekeyed IKE SAs not kept)" and text[2].startswith(f"  IKE SA {seen[0][0].hex()}")
    del child


def _real_captures():
    from tests.conftest import all_captures, capture_id

    return [pytest.param(item, id=capture_id(item)) for item in all_captures()]


@pytest.mark.parametrize("item", _real_captures())
def test_real_captures_cut_anywhere_do_not_crash(item):
    """Partial captures: each real capture, started at every IKE message in turn (mid-life),
    runs through every rule and renders its groups; nothing raises."""
    import json

    from analyzer import rules
    from analyzer.pipeline import CaptureResult
    from analyzer.report import groups
    from dissectors.capture import iter_datagrams
    from dissectors.ikev2 import ike_messages

    pcap, key_paths = item
    keys = _keys(key_paths)
    msgs = list(ike_messages(iter_datagrams(str(pcap)), keys))
    assert msgs
    for start in range(len(msgs)):
        a = Analyzer(source=str(pcap), rules=rules.all_rules())
        for m in msgs[start:]:
            a.feed(m)
        a.finish()
        result = CaptureResult(str(pcap), a)
        assert groups.render_text(result) and json.loads(groups.render_json(result))

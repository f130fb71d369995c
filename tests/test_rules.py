"""Every rule fires on a message sequence made for it and stays silent on the clean variant.

In pylint's layout (``doc/data/messages/<x>/<symbol>/{bad,good}.py``): each rule has a
``bad`` and a ``good`` conversation, built with the IKEv2 codec in ``tests/ikesim.py`` and fed
to the real ``Analyzer``; the bad one must yield exactly that rule's code, the good one none.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer import rules
from analyzer.config import Settings
from analyzer.events import NotifySeen
from analyzer.model import ExpertGroup, Level, Severity
from analyzer.pipeline import evaluated
from analyzer.rules.limits import hardware_id_reason
from analyzer.state import Analyzer
from dissectors.iana import DhGroup, ExchangeType, NotifyType, ProtocolId
from dissectors.ikev2.payloads import RawPayload
from dissectors.records import Malformed
from tests.ikesim import AES_GCM_256, NET_I, NET_R, Conversation, cidr, feed_all, notify, resource_info, rid, selector

ROOT = Path(__file__).resolve().parent.parent
NO_KEY = "not decrypted: no key for SPIs 0123456789abcdef/fedcba9876543210"
BAD_ICV = "integrity check failed for SPIs 0123456789abcdef/fedcba9876543210 — wrong keys?"


def per_resource_group() -> tuple[Conversation, object]:
    """The clean start every scenario builds on: IKE_AUTH with empty SA_RESOURCE_INFO both
    ways (the fallback SA), then one per-resource SA with random-looking ids."""
    c = Conversation()
    fallback = c.established()
    c.create_child("I", rid(1), rid(2))
    return c, fallback


# --- MS1xx ---------------------------------------------------------------------------------


def ms101(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    n = notify(NotifyType.SA_RESOURCE_INFO, rid(3), protocol_id=ProtocolId.ESP if bad else 0)
    c.create_child("I", None, rid(4), req_extra=[n])
    return c


def ms102(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    n = notify(NotifyType.SA_RESOURCE_INFO, rid(3), spi=b"\xc1\xf7\xe8\x00" if bad else b"")
    c.create_child("I", None, rid(4), req_extra=[n])
    return c


def ms103(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    n = notify(NotifyType.SA_RESOURCE_INFO, rid(4), critical=bad)
    c.create_child("I", rid(3), None, resp_extra=[n])
    return c


def _ts_max_queue(refusal) -> Conversation:
    c, _ = per_resource_group()
    c.create_child("I", b"", refusal=refusal)  # empty id: no resources shown, MS302 stays out
    return c


def ms104(bad: bool) -> Conversation:
    n = notify(NotifyType.TS_MAX_QUEUE, b"\x00\x01" if bad else b"")
    return _ts_max_queue(n)


def ms104_spi(bad: bool) -> Conversation:
    n = notify(NotifyType.TS_MAX_QUEUE, protocol_id=ProtocolId.ESP if bad else 0,
               spi=b"\x01\x02\x03\x04" if bad else b"")
    return _ts_max_queue(n)


def ms105(bad: bool) -> Conversation:
    return _ts_max_queue(notify(NotifyType.TS_MAX_QUEUE, critical=bad))


def ms106(bad: bool) -> Conversation:
    c = Conversation()
    c.ike_sa_init(req_extra=resource_info(b"") if bad else [])
    c.ike_auth(b"", b"")
    if bad:
        c.informational("R", req=resource_info(b""))
    return c


def ms107(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    if bad:
        c.informational("I", resp=[notify(NotifyType.TS_MAX_QUEUE)])
    else:
        c.create_child("I", b"", refuse=NotifyType.TS_MAX_QUEUE)
    return c


def ms108(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    if bad:
        c.create_child("I", rid(3), rid(4), req_extra=[notify(NotifyType.TS_MAX_QUEUE)])
    else:
        c.create_child("I", b"", refuse=NotifyType.TS_MAX_QUEUE)
    return c


def ms109(bad: bool) -> Conversation:
    """The draft's CPU_QUEUES with the fallback SA and CPU_QUEUE_INFO on a per-CPU SA; the
    good variant is the same negotiation with RFC 9611's SA_RESOURCE_INFO."""
    c = Conversation()
    if bad:
        queues = notify(NotifyType.CPU_QUEUES, (2).to_bytes(4, "big"))
        c.ike_sa_init()
        c.ike_auth(None, None, req_extra=[queues], resp_extra=[queues])
        info = [notify(NotifyType.CPU_QUEUE_INFO, rid(1))]
        c.create_child("I", None, None, req_extra=info, resp_extra=info)
    else:
        c.established()
        c.create_child("I", rid(1), rid(2))
    return c


# --- MS2xx ---------------------------------------------------------------------------------


def ms201(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    if bad:
        c.create_child("I", rid(3), rid(4), suite=AES_GCM_256)
    else:  # a PFS group the IKE_AUTH SA cannot have is not a difference
        c.create_child("I", rid(3), rid(4), pfs=DhGroup.MODP_2048)
    return c


def ms202(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    narrowed = ((selector(cidr("198.51.100.0/25")),), (selector(NET_R),))
    c.create_child("I", rid(3), rid(4), resp_ts=narrowed if bad else None)
    return c


def ms202_overlap(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    ts = ((selector(cidr("198.51.100.128/25")),), (selector(NET_R),)) if bad else \
        ((selector(cidr("192.0.2.128/25")),), (selector(NET_R),))
    c.create_child("R", rid(5), rid(6), ts=ts)  # not the group's selectors
    return c


def ms202_trigger(bad: bool) -> Conversation:
    """RFC 7296 §2.9: the request's first selectors are the trigger packet's (strongSwan 6 does
    this); the group asked for is the rest."""
    c, _ = per_resource_group()
    trigger_i, trigger_r = selector(("198.51.100.1",) * 2, 1), selector(("203.0.113.1",) * 2, 1)
    asked = ((trigger_i, selector(NET_I)), (trigger_r, selector(NET_R)))
    got = ((selector(cidr("198.51.100.0/25")),), (selector(NET_R),)) if bad else \
        ((selector(NET_I),), (selector(NET_R),))
    c.create_child("R", rid(5), rid(6), ts=asked, resp_ts=got)
    return c


def ms203(bad: bool) -> Conversation:
    c = Conversation()
    c.established(transport=not bad)
    c.create_child("I", rid(1), rid(2), transport=True)
    return c


def ms204(bad: bool) -> Conversation:
    c = Conversation()
    c.established(ipcomp=True)
    c.create_child("I", rid(1), rid(2), ipcomp=not bad)
    return c


def ms205(bad: bool) -> Conversation:
    c = Conversation()
    c.established(esn=True)
    c.create_child("R", rid(1), rid(2), esn=not bad)
    return c


def ms206(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    c.create_child("I", rid(1) if bad else rid(3), rid(4))
    # both peers numbering their own resources alike is fine: R sends the ids I sent, I R's
    c.create_child("R", rid(1), rid(2))
    return c


def ms207(bad: bool) -> Conversation:
    c = Conversation()
    c.established(None, None)
    c.create_child("I", rid(1), None if bad else rid(2))
    c.create_child("I", rid(3), None if bad else rid(4))
    return c


def ms208(bad: bool) -> Conversation:
    c = Conversation()
    c.established()
    child = c.create_child("I", rid(1), rid(2)).child
    c.create_child("I", rid(5) if bad else rid(1), rid(2), rekey=child)
    c.delete_child(child)
    if not bad:  # a rekey without SA_RESOURCE_INFO is fine too
        other = c.create_child("R", rid(7), rid(8)).child
        c.create_child("R", None, None, rekey=other)
    return c


def ms209(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    c.create_child("R", None if bad else rid(5), rid(6))
    return c


def ms210(bad: bool) -> Conversation:
    c = Conversation()
    c.established()
    child = c.create_child("I", rid(1), rid(2)).child
    ts = ((selector(cidr("198.51.100.0/25")),), (selector(NET_R),)) if bad else None
    c.create_child("I", rid(1), rid(2), rekey=child, ts=ts)
    c.delete_child(child)
    return c


# --- MS3xx ---------------------------------------------------------------------------------


def ms301(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    c.create_child("I", b"", refuse=NotifyType.NO_ADDITIONAL_SAS if bad else NotifyType.TS_MAX_QUEUE)
    return c


def ms302(bad: bool) -> Conversation:
    c, _ = per_resource_group()  # I has shown rid(1)
    c.create_child("I", rid(3), rid(4))  # ... and rid(3): 2 resources, 3 SAs
    if not bad:
        c.create_child("R", rid(5), b"")  # a 4th SA: twice the resources I has shown
    c.create_child("I", b"", refuse=NotifyType.TS_MAX_QUEUE)
    return c


def ms303(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    for n in range(3):
        child = c.create_child("I", rid(10 + n), rid(20 + n)).child
        c.at(5.0)
        c.delete_child(child, by="R")
        c.at(1.0 if bad else 120.0)
    c.create_child("I", rid(30), rid(31))
    return c


def ms304(bad: bool) -> Conversation:
    c = Conversation()
    fallback = c.established()
    c.esp(fallback, 10, to="R")
    c.esp(fallback, 10, to="I")
    if not bad:
        c.create_child("I", rid(1), rid(2))
    return c


def ms305(bad: bool) -> Conversation:
    c = Conversation()
    c.established()
    for n in range(64 if bad else 63):  # 64 additional + the fallback = 65 > 64
        c.create_child("I" if n % 2 else "R", rid(100 + n), rid(300 + n))
    return c


def ms306(bad: bool) -> Conversation:
    c = Conversation()
    c.established(b"", b"", cp=True) if bad else c.established(None, None, cp=True)
    c.create_child("I", rid(1), rid(2) if bad else None)
    return c


def ms307(bad: bool) -> Conversation:
    c = Conversation()
    c.established()
    c.create_child("I", bytes.fromhex("00000001") if bad else rid(1), rid(2))
    return c


# --- MS9xx ---------------------------------------------------------------------------------


def ms901(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    if bad:  # no key for two messages: reported once per IKE SA
        for sender, resp in (("I", False), ("R", True)):
            c.send(c.message(ExchangeType.INFORMATIONAL, sender, resp, 9, [], sk_error=NO_KEY))
    return c


def ms902(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    if bad:
        c.send(c.message(ExchangeType.INFORMATIONAL, "I", False, 9, [], sk_error=BAD_ICV))
    return c


def ms903(bad: bool) -> Conversation:
    c, _ = per_resource_group()
    if bad:
        raw = RawPayload(payload_type=41, data=b"\x00\x00",
                         malformed=Malformed(40, "Notify.notify_type", "needs 4 bytes, 2 left"))
        c.send(c.message(ExchangeType.INFORMATIONAL, "I", False, 9, [raw]))
    return c


CASES = {
    "MS101": [ms101], "MS102": [ms102], "MS103": [ms103], "MS104": [ms104, ms104_spi], "MS105": [ms105],
    "MS106": [ms106], "MS107": [ms107], "MS108": [ms108], "MS109": [ms109],
    "MS201": [ms201], "MS202": [ms202, ms202_overlap, ms202_trigger], "MS203": [ms203], "MS204": [ms204],
    "MS205": [ms205],
    "MS206": [ms206], "MS207": [ms207], "MS208": [ms208], "MS209": [ms209], "MS210": [ms210],
    "MS301": [ms301], "MS302": [ms302], "MS303": [ms303], "MS304": [ms304], "MS305": [ms305],
    "MS306": [ms306], "MS307": [ms307],
    "MS901": [ms901], "MS902": [ms902], "MS903": [ms903],
}
PARAMS = [pytest.param(code, build, id=f"{code}-{build.__name__}") for code, builds in CASES.items()
          for build in builds]


def codes(conv: Conversation, settings: Settings | None = None) -> list[str]:
    return [f.code for f in feed_all(Analyzer(settings, source=conv.source), conv.records)]


def test_every_rule_has_a_case():
    """Every rule the IKE pass judges (MS1xx-MS3xx, MS9xx; MS4xx belong to the ESP pass)."""
    assert sorted(CASES) == [r.code for r in evaluated(rules.all_rules()) if not r.code.startswith("MS4")]


@pytest.mark.parametrize("code,build", PARAMS)
def test_bad_fires_exactly_this_rule(code, build):
    found = codes(build(True))
    assert found and set(found) == {code}, found


@pytest.mark.parametrize("code,build", PARAMS)
def test_good_is_silent(code, build):
    assert codes(build(False)) == []


def test_rules_fire_once_where_it_matters():
    assert codes(ms901(True)) == ["MS901"]  # two undecryptable messages, one finding
    assert codes(ms305(True)) == ["MS305"]
    assert codes(ms303(True)) == ["MS303"]
    assert codes(ms207(True)) == ["MS207"]


def test_finding_carries_its_context():
    conv = ms301(True)
    [f] = feed_all(Analyzer(source=conv.source), conv.records)
    assert (f.code, f.name, f.rfc, f.level, f.severity) == (
        "MS301", "refusal-uses-no-additional-sas", "RFC 9611 §6", Level.MUST_NOT, Severity.ERROR)
    req, resp = conv.records[-2:]
    assert f.frames == (req.frame.index, resp.frame.index)
    assert f.ike_spis == f"{conv.spis[0].hex()}/{conv.spis[1].hex()}"
    assert f.group == "198.51.100.0/24 === 203.0.113.0/24"
    assert f.source == "test.pcap" and f.time == req.frame.ts
    assert f.citation == "RFC 9611 §6 MUST NOT"


def test_settings_tune_rules():
    conv = ms305(False)  # 64 SAs: fine at the default
    assert codes(conv, Settings(max_group_size=10)) == ["MS305"]
    assert codes(ms307(True), Settings(hardware_id_max=1)) == []  # 00000001 is not below 1
    assert codes(ms303(True), Settings(recreate_count=4)) == []
    assert codes(ms303(False), Settings(recreate_window=200.0)) == ["MS303"]
    assert codes(ms304(True), Settings(initial_only_packets=21)) == []


def _limit_scenario(crossing: bool) -> Conversation:
    """I asks SAs for resources a-d (fresh ids) up to R's limit of 4 additional SAs; with
    ``crossing``, R started 2 of those 4 itself for its own resources (I answering with ids
    of its own), so I has asked for only 2 when its next request is refused."""
    c, _ = per_resource_group()  # I asked for rid(1)
    c.create_child("I", rid(3), rid(4))
    if crossing:
        c.create_child("R", rid(5), rid(6))
        c.create_child("R", rid(7), rid(8))
    else:
        c.create_child("I", rid(9), rid(10))
        c.create_child("I", rid(11), rid(12))
    c.create_child("I", rid(13), refuse=NotifyType.TS_MAX_QUEUE)  # 5 installed: the limit
    return c


def test_ts_max_queue_counts_the_resources_the_requester_asked_for():
    """MS302 counts the ids the requester sent in its own accepted requests for new SAs: not
    the refused request's, not its answers to the other peer (RFC 9611 §6: at least twice
    the CPUs, an RFC 9611 peer asking one SA per CPU)."""
    assert codes(_limit_scenario(crossing=True)) == []  # I asked for 2: 5 >= 4
    found = feed_all(Analyzer(source="x"), _limit_scenario(crossing=False).records)
    assert [f.code for f in found] == ["MS302"]  # I asked for 4: 5 < 8
    assert "with 5 Child SAs installed; the requester has asked for SAs for 4 resources, so at " \
           "least 8 are recommended" in found[0].message


def test_rule_severity_override():
    conv = ms307(True)
    [f] = feed_all(Analyzer(Settings(rule_severity={"MS307": Severity.ERROR}), source=conv.source), conv.records)
    assert f.severity is Severity.ERROR


def test_strongswan6_like_crossing_is_only_ms307():
    """Codec replay of the strongSwan 6 capture: crossing CREATE_CHILD_SAs, each request with
    id 00000000 and each response 00000001, from both peers."""
    c = Conversation()
    c.established()
    a = c.create_child("I", bytes(4), (1).to_bytes(4, "big"), emit=False)
    b = c.create_child("R", bytes(4), (1).to_bytes(4, "big"), emit=False)
    c.send(a.request, b.request, a.response, b.response)
    found = feed_all(Analyzer(source=c.source), c.records)
    assert [(f.code, f.frames) for f in found] == [("MS307", (5,)), ("MS307", (6,)), ("MS307", (7,)), ("MS307", (8,))]


@pytest.mark.parametrize("data,expected", [
    (bytes.fromhex("00000003"), "the 4-octet big-endian integer 3"),
    (bytes.fromhex("03000000"), "the 4-octet little-endian integer 3"),
    (b"\x07", "the 1-octet big-endian integer 7"),
    (b"cpu12", "the text 'cpu12'"),
    (b"q-3", "the text 'q-3'"),
    (bytes.fromhex("9a3c51e7"), None),
    (bytes.fromhex("0123456789abcdef0011"), None),
    (b"", None),
])
def test_hardware_id_heuristic(data, expected):
    assert hardware_id_reason(data, 4096) == expected


def test_registry_shape():
    for r in rules.all_rules():
        assert rules.CODE_RE.match(r.code) and rules.NAME_RE.match(r.name)
        assert r.check.__name__ == r.name.replace("-", "_")
        sections = r.doc_sections()
        for heading in rules.DOC_SECTIONS:
            assert sections.get(heading), (r.code, heading)
        assert "Bad:" in sections["Example"] and "Good:" in sections["Example"]
        if r.rfc.startswith("draft-"):  # MS109: the pre-RFC negotiation cites the draft RFC 9611 replaced
            assert r.level is Level.NONE and "RFC 9611" in r.doc
            continue
        assert r.rfc.startswith("RFC ") and "§" in r.rfc
        if r.code.startswith("MS9"):
            assert r.level is Level.NONE
        elif r.code[:3] in ("MS1", "MS2", "MS3"):
            assert r.rfc.startswith("RFC 9611") and r.level is not Level.NONE


def test_registry_rejects_bad_rules():
    with pytest.raises(ValueError, match="duplicate"):
        @rules.rule(code="MS101", name="x", title="x", rfc="RFC 9611 §5", level=Level.MUST, group=ExpertGroup.PROTOCOL)
        def x(e: NotifySeen):
            """## What it does\n## Why is this bad?\n## Example"""
    with pytest.raises(ValueError, match="must be named"):
        @rules.rule(code="MS199", name="some-rule", title="x", rfc="RFC 9611 §5", level=Level.MUST,
                    group=ExpertGroup.PROTOCOL)
        def other_name(e: NotifySeen):
            """## What it does\n## Why is this bad?\n## Example"""
    with pytest.raises(ValueError, match="lacks"):
        @rules.rule(code="MS198", name="undocumented", title="x", rfc="RFC 9611 §5", level=Level.MUST,
                    group=ExpertGroup.PROTOCOL)
        def undocumented(e: NotifySeen):
            """## What it does"""
    assert "MS198" not in rules.RULES and "MS199" not in rules.RULES


@pytest.mark.parametrize("select,ignore,expected", [
    (None, [], None),
    (["MS3"], [], ["MS301", "MS302", "MS303", "MS304", "MS305", "MS306", "MS307"]),
    (["MS3"], ["MS307"], ["MS301", "MS302", "MS303", "MS304", "MS305", "MS306"]),
    (["MS307"], ["MS3"], ["MS307"]),
    (["ALL"], ["MS1", "MS2", "MS3", "MS4", "MS5"], ["MS901", "MS902", "MS903"]),
    (["ms90"], [], ["MS901", "MS902", "MS903"]),
])
def test_select_ignore_prefixes(select, ignore, expected):
    got = [r.code for r in rules.select(select, ignore)]
    assert got == (expected or [r.code for r in rules.all_rules()])


@pytest.mark.parametrize("bad", ["XX1", "MS6", "MS999", ""])
def test_unknown_prefix_is_rejected(bad):
    with pytest.raises(ValueError, match="unknown rule code"):
        rules.select([bad])


def test_docs_rules_md_matches_registry():
    """docs/rules.md is generated; regenerate with
    ``python -m analyzer.rules --markdown --write docs/rules.md``."""
    assert (ROOT / "docs" / "rules.md").read_text(encoding="utf-8") == rules.markdown_document()


def test_readme_rule_table_matches_registry():
    """The README's rules:start/rules:end section is generated; regenerate with
    ``python -m analyzer.rules --readme README.md``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(rules.README_START) == 1 and readme.count(rules.README_END) == 1
    assert rules.readme_section() in readme
    assert rules.with_readme_section(readme) == readme


def test_readme_generator_rewrites_only_its_section(tmp_path):
    from analyzer.rules.__main__ import main

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{rules.README_START}\n| stale |\n{rules.README_END}\n\n## after\n")
    assert main(["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\n" + rules.README_START) and text.endswith(rules.README_END + "\n\n## after\n")
    assert "| stale |" not in text and all(f"| {r.code} |" in text for r in rules.all_rules())
    readme.write_text("# no markers\n")
    assert main(["--readme", str(readme)]) == 2


def test_markdown_table_lists_every_rule():
    table = rules.markdown_table()
    for r in rules.all_rules():
        assert f"| {r.code} | `{r.name}` |" in table

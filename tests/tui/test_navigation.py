"""Behaviour of the TUI driven through Textual's Pilot on real captures and keys."""

from __future__ import annotations

import asyncio
import functools
import json
import shutil
import struct
from pathlib import Path

import pytest

from analyzer.model import Severity
from tui.app import MultisaApp
from tui.screens import FindingsScreen, GroupsScreen, HelpScreen, PacketScreen, RuleHelpScreen
from tui.widgets import DecodeTree, FindingList, GroupTable, PacketList

ROOT = Path(__file__).resolve().parents[2]
PERCPU = ROOT / "samples" / "strongswan6-percpu"
FAULT = ROOT / "samples" / "peer" / "fault-resource-info-protocol-id"


def percpu_app(**kw) -> MultisaApp:
    return MultisaApp(str(PERCPU / "capture.pcap"), [str(PERCPU)], [str(PERCPU / "moon.xfrm-sa.json")], **kw)


def fault_app() -> MultisaApp:
    return MultisaApp(str(FAULT / "capture.pcapng"), [str(FAULT)])


def run_async(fn):
    """Run an ``async def`` test with asyncio (no async pytest plugin needed)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))

    return wrapper


async def settle(pilot) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.pause()


@run_async
async def test_groups_tree_shows_ike_sa_group_and_child_sas():
    app = percpu_app()
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, GroupsScreen)
        table = app.screen.query_one(GroupTable)
        keys = list(table.nodes)
        assert keys[0] == "ike:1" and keys[1].startswith("grp:1:198.51.100.0/24 === 203.0.113.0/24")
        sas = {k: table.nodes[k].label.plain for k in keys if k.startswith("sa:")}
        assert len(sas) == 3
        member = sas["sa:1:c1f7e800:ca2c6b46"]
        # resource ids I/R from SA_RESOURCE_INFO, SPIs, CPU 0 from XFRMA_SA_PCPU, moon's packets,
        # bytes as they crossed the wire (multisa esp: 544 + 408)
        assert "00000000/00000001" in member and "c1f7e800/ca2c6b46" in member
        assert " 0 " in member and " 7 " in member and " 952 " in member
        assert "fallback" in sas["sa:1:ccae5922:c2d58759"]
        group = table.nodes[keys[1]].label.plain
        assert "3 SAs" in group and "per-CPU" in group and "(2 CPUs)" in group
        assert "4 findings" in table.nodes["ike:1"].label.plain


@run_async
async def test_open_and_close_a_group_and_open_its_packets():
    app = percpu_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(GroupTable)
        group = next(n for k, n in table.nodes.items() if k.startswith("grp:"))
        table.focus()
        table.move_cursor(group)
        await pilot.pause()
        assert group.is_expanded
        await pilot.press("enter")
        assert not group.is_expanded
        await pilot.press("enter")
        assert group.is_expanded
        await pilot.press("down", "down")  # first member Child SA
        assert str(table.cursor_node.data) == "sa:1:c1f7e800:ca2c6b46"
        await pilot.press("o")  # its packets: the CREATE_CHILD_SA that made it
        await settle(pilot)
        assert isinstance(app.screen, PacketScreen)
        assert app.screen.query_one(PacketList).current.frame.index == 7


@run_async
async def test_enter_on_finding_lands_on_offending_packet_with_decrypted_payload():
    app = fault_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        findings = app.screen.query_one(FindingList)
        assert findings.shown[0].code == "MS101"
        await pilot.press("tab")  # findings pane
        assert findings.has_focus
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, PacketScreen)
        packet = app.screen.query_one(PacketList).current
        assert packet.frame.index == findings.shown[0].frames[0] == 3
        tree = app.screen.query_one(DecodeTree)
        assert "Decrypted Data" in tree.text
        assert "Notify Message Type: SA_RESOURCE_INFO (16444)" in tree.text
        assert "Protocol ID: ESP (3)" in tree.text  # the fault itself, inside the SK payload
        # the offending field itself (Finding.offset), not the Notify type line
        assert str(tree.cursor_node.label) == "Protocol ID: ESP (3)"
        assert tree.cursor_node.parent.label.plain == "Payload: Notify (41) - SA_RESOURCE_INFO"


@run_async
async def test_highlighting_a_finding_selects_its_group_then_g_goes_there():
    app = fault_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f")
        await settle(pilot)
        assert isinstance(app.screen, FindingsScreen)
        flist = app.screen.query_one(FindingList)
        row, finding = next((i, f) for i, f in enumerate(flist.shown) if f.group)
        flist.move_cursor(row=row)
        await pilot.pause()
        await pilot.press("g")
        await settle(pilot)
        assert isinstance(app.screen, GroupsScreen)
        table = app.screen.query_one(GroupTable)
        assert str(table.cursor_node.data).startswith("grp:") and finding.group in str(table.cursor_node.data)


@run_async
async def test_filter_by_code_severity_spi_and_clear():
    app = fault_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        flist = app.screen.query_one(FindingList)
        every = list(flist.shown)
        code = every[0].code
        await pilot.press("slash", *f"code:{code}", "enter")
        assert flist.shown and [f.code for f in flist.shown] == [f.code for f in every if f.code == code]
        assert app.filter_text == f"code:{code}"
        await pilot.press("slash", "ctrl+u", *"sev:error", "enter")
        assert list(flist.shown) == [f for f in every if f.severity >= Severity.ERROR]
        await pilot.press("slash", "ctrl+u", *"spi:deadbeef", "enter")
        table = app.screen.query_one(GroupTable)
        assert not [k for k in table.nodes if k.startswith("grp:")]
        await pilot.press("escape")  # leaves, then clears the filter
        await pilot.pause()
        assert app.filter_text == ""
        assert list(flist.shown) == every
        assert [k for k in table.nodes if k.startswith("grp:")]
        # the packet list follows the same filter (SPIs named in any payload): take a Child SA's
        # SPI from the groups tree; the messages naming it are shown, IKE_SA_INIT (frame 1) is not
        spi = next(k for k in table.nodes if k.startswith("sa:")).split(":")[2]
        await pilot.press("slash", *f"spi:{spi}", "enter", "p")
        await settle(pilot)
        plist = app.screen.query_one(PacketList)
        frames = {m.frame.index for m in plist.shown}
        assert frames and 1 not in frames


@run_async
async def test_help_and_rule_help():
    app = fault_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, GroupsScreen)
        await pilot.press("f")
        await settle(pilot)
        await pilot.press("r")
        await pilot.pause()
        assert isinstance(app.screen, RuleHelpScreen)
        assert app.screen.code == "MS101"
        md = app.screen.query_one("#rule-md")
        assert "resource-info-protocol-id-nonzero" in md.source
        assert "Why is this bad?" in md.source
        await pilot.press("escape")
        assert isinstance(app.screen, FindingsScreen)


@pytest.mark.parametrize("name", ["findings.sarif", "findings.json"])
@run_async
async def test_export_current_findings(tmp_path, name):
    app = fault_app()
    out = tmp_path / name
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"code:MS101", "enter")
        expected = [f for f in app.findings if f.code == "MS101"]
        await pilot.press("e")
        await pilot.pause()
        inp = app.screen.query_one("#export-path")
        inp.value = str(out)
        await pilot.press("enter")
        await pilot.pause()
    doc = json.loads(out.read_text())
    if name.endswith(".sarif"):
        assert doc["version"] == "2.1.0"
        results = doc["runs"][0]["results"]
        assert len(results) == len(expected)
        assert {r["ruleId"] for r in results} == {"MS101"}
        assert "MS101" in {r["id"] for r in doc["runs"][0]["tool"]["driver"]["rules"]}
    else:
        assert [f["code"] for f in doc["findings"]] == ["MS101"] * len(expected)
        assert doc["findings"][0]["frames"] == [3]


@run_async
async def test_damaged_capture_keeps_what_was_read(tmp_path):
    data = (FAULT / "capture.pcapng").read_bytes()
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(data[: len(data) * 2 // 3])
    app = MultisaApp(str(cut), [str(FAULT)])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.load_error and "cut.pcapng" in app.load_error and "frame" in app.load_error
        assert app.problems[-1] == app.load_error
        assert len(app.messages) >= 10  # everything before the cut is on screen
        assert app.screen.query_one(GroupTable).nodes
        assert any(f.code == "MS101" for f in app.findings)


def _write_long_pcap(path: Path, repeats: int) -> int:
    """The strongSwan sample's frames, repeated (same IKE SPIs: retransmissions to the analyzer)."""
    raw = (PERCPU / "capture.pcap").read_bytes()
    endian = "<" if raw[:4] == b"\xd4\xc3\xb2\xa1" else ">"
    records, pos = [], 24
    while pos + 16 <= len(raw):
        caplen = struct.unpack_from(endian + "I", raw, pos + 8)[0]
        records.append(raw[pos: pos + 16 + caplen])
        pos += 16 + caplen
    with path.open("wb") as fh:
        fh.write(raw[:24])
        for _ in range(repeats):
            fh.writelines(records)
    return len(records) * repeats


@run_async
async def test_long_capture_is_browsable_with_progress_before_the_end(tmp_path, monkeypatch):
    import tui.app as app_module

    monkeypatch.setattr(app_module, "PUBLISH_EVERY", 0.01)
    path = tmp_path / "long.pcap"
    frames = _write_long_pcap(path, 150)
    seen = []

    class Recording(MultisaApp):
        def on_analysis_published(self, message):
            prog = message.published.snapshot.progress
            seen.append((prog.done, prog.frames, prog.fraction, len(self.messages)))
            super().on_analysis_published(message)

    app = Recording(str(path), [str(PERCPU)])
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.loaded
    partial = [s for s in seen if not s[0]]
    assert partial, "no batch before the end of the file"
    assert any(0 < s[1] < frames for s in partial)
    assert any(s[2] is not None and 0 < s[2] < 1 for s in partial)
    assert seen[-1][0] and seen[-1][1] == frames


def test_counter_updates_coalesce():
    from tui.messages import AnalysisPublished, EspCountersUpdated
    from tui.feed import Published
    from tui.view import Snapshot

    a, b = EspCountersUpdated(Snapshot()), EspCountersUpdated(Snapshot())
    assert b.can_replace(a)
    assert not AnalysisPublished(Published(Snapshot())).can_replace(a)


def test_filter_syntax():
    from tui.view import FindingFilter

    f = FindingFilter.parse("code:MS1,MS3 sev:warning group:198.51 spi:0xC1F7E800 MS205 gap")
    assert f.codes == ["MS1", "MS3", "MS205"] and f.severity is Severity.WARNING
    assert f.groups == ["198.51"] and f.spis == ["c1f7e800"] and f.words == ["gap"]
    assert FindingFilter.parse("sev:loud").error


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip")
@run_async
async def test_live_missing_namespace_is_a_message_not_a_traceback():
    app = MultisaApp(live=True, iface="lo", netns="multisa-tui-no-such-ns")
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(50):
            await pilot.pause(0.1)
            if len(app.problems) >= 2:
                break
        text = "\n".join(app.problems)
        assert "multisa-tui-no-such-ns" in text
        assert "XFRM" in text and "does not exist" in text
        assert isinstance(app.screen, GroupsScreen)  # still running, still browsable
        await pilot.press("f")
        await pilot.pause()
        assert isinstance(app.screen, FindingsScreen)


@pytest.mark.parametrize("sample", ["fault-esp-replay-gap", "fault-shared-sa", "fault-other-ts", "clean"])
def test_tui_findings_are_lints_findings_including_esp_rules(sample):
    """The TUI loads a file in one pass like lint: the same findings, the ESP rules (MS4xx) too."""
    from analyzer.pipeline import analyze_capture
    from dissectors.keys import load_keys

    folder = ROOT / "samples" / "peer" / sample
    capture = str(folder / "capture.pcapng")
    lint = analyze_capture(capture, load_keys([str(folder)]))
    expected = sorted((f.code, tuple(f.frames)) for f in lint.findings)

    async def run() -> list:
        app = MultisaApp(capture, [str(folder)])
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            return sorted((f.code, tuple(f.frames)) for f in app.screen.query_one(FindingList).shown)

    assert asyncio.run(run()) == expected
    assert bool(expected) == (sample != "clean")

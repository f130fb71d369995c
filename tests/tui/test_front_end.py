"""What a new user met in the TUI (issue 15 item 5, and the TUI parts of items 2 and 8), each
driven through the real command or Textual's Pilot on the bundled captures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tui.app import MultisaApp
from tui.screens import FindingsScreen, GroupsScreen, PacketScreen
from tui.widgets import DecodeTree, GroupTable, StatusLine

from .test_navigation import PERCPU, ROOT, percpu_app, run_async, settle

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def tui(*args: str, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer.cli", "tui", *args], cwd=ROOT, env=ENV, stdin=stdin,
                          capture_output=True, text=True, timeout=30)


def lint_error(*args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "analyzer.cli", "lint", *args], cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    return out.stderr


# --- the command line: one line, exit 2, never an empty UI or a spinning process -----------


def test_directory_without_capture_is_lints_one_line(tmp_path):
    out = tui(str(tmp_path))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == lint_error(str(tmp_path)) == f"multisa: error: {tmp_path}: no pcap or pcapng files in this directory\n"


def test_file_that_is_not_a_capture_is_lints_one_line(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a capture\n")
    out = tui(str(text))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == lint_error(str(text)) == f"multisa: error: {text}: not a pcap or pcapng file\n"


def test_capture_given_as_key_file_is_one_line():
    cap = str(PERCPU / "capture.pcap")
    out = tui(cap, "-k", cap)
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1
    assert "this is a capture, not a key file" in out.stderr


def test_without_a_terminal_one_line_instead_of_spinning():
    started = time.monotonic()
    out = tui(str(PERCPU / "capture.pcap"), "-k", str(PERCPU))  # stdin </dev/null, stdout a pipe
    assert time.monotonic() - started < 20
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.splitlines() == [
        "multisa: error: tui needs a terminal (stdin is not one): use `multisa lint` or `multisa monitor` "
        "without one"]


# --- 80x24 -----------------------------------------------------------------------------------


@run_async
async def test_80x24_keeps_resource_ids_and_one_line_status():
    app = percpu_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.pause(0.3)
        table = app.screen.query_one(GroupTable)
        assert "resource I/R" in table.header_text()
        member = table.nodes["sa:1:c1f7e800:ca2c6b46"].label.plain
        assert "00000000/00000001" in member and "c1f7e800/ca2c6b46" in member
        assert len(member) + 4 <= 79  # the tree's guides, the row, the scrollbar: no cut
        status = app.screen.query_one(StatusLine)
        assert status.size.height == 1  # the header line is cut with an ellipsis, never wrapped
        assert status.size.width == 80


# --- counters ----------------------------------------------------------------------------------


def esp_json() -> dict[str, dict]:
    out = subprocess.run([sys.executable, "-m", "analyzer.cli", "esp", str(PERCPU / "capture.pcap"), "-k",
                          str(PERCPU), "--json"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=60)
    return {sa["spi"]: sa for sa in json.loads(out.stdout)["sas"]}


@run_async
async def test_bytes_from_the_wire_and_rate_as_multisa_esp():
    esp = esp_json()
    app = percpu_app()  # moon's XFRM dump too: its counters must not replace the wire's bytes
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        rows = [r for lin in app.snapshot.lineages for g in lin.groups for r in g.children]
        assert len(rows) == 3
        for r in rows:
            a, b = esp[r.spi_in], esp[r.spi_out]
            assert r.bytes == a["bytes"] + b["bytes"]
            assert r.rate == pytest.approx(a["rate"] + b["rate"], abs=2e-3)
        table = app.screen.query_one(GroupTable)
        member = table.nodes["sa:1:c1f7e800:ca2c6b46"].label.plain
        assert f" {(esp['c1f7e800']['rate'] + esp['ca2c6b46']['rate']):.1f} " in member


@run_async
async def test_two_hosts_xfrm_each_hosts_own_cpu():
    """moon (the initiator, 192.0.2.1) binds c1f7e800/ca2c6b46 to CPU 0, sun to CPU 1."""
    app = MultisaApp(str(PERCPU / "capture.pcap"), [str(PERCPU)],
                     [str(PERCPU / "sun.xfrm-sa.json"), str(PERCPU / "moon.xfrm-sa.json")])
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot)
        cpu = {r.spis: r.cpu for lin in app.snapshot.lineages for g in lin.groups for r in g.children}
        assert cpu == {"c1f7e800/ca2c6b46": "0/1", "c26c69ed/cdcf94a8": "1/0", "ccae5922/c2d58759": "-"}
        member = app.screen.query_one(GroupTable).nodes["sa:1:c1f7e800:ca2c6b46"].label.plain
        assert " 0/1 " in member


# --- findings view ---------------------------------------------------------------------------


@run_async
async def test_g_from_findings_with_nothing_selected_goes_to_groups():
    app = percpu_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f")
        await settle(pilot)
        await pilot.press("slash", *"code:MS999", "enter")  # nothing shown, nothing selected
        await settle(pilot)
        assert isinstance(app.screen, FindingsScreen) and app.screen.finding_list.current is None
        await pilot.press("g")
        await settle(pilot)
        assert isinstance(app.screen, GroupsScreen)


@run_async
async def test_spi_filter_hides_other_child_sas_findings():
    app = percpu_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f")
        await settle(pilot)
        await pilot.press("slash", *"spi:c1f7e800", "enter")
        await settle(pilot)
        # MS307 of frames 7 (request) and 9 (response) made c1f7e800/ca2c6b46; 8 and 10 the other SA
        assert [f.frames for f in app.screen.finding_list.shown] == [(7,), (9,)]
        await pilot.press("escape", "escape")
        await pilot.press("slash", *"spi:cdcf94a8", "enter")
        await settle(pilot)
        assert [f.frames for f in app.screen.finding_list.shown] == [(8,), (10,)]


# --- live: key files that arrive late ------------------------------------------------------


@run_async
async def test_stale_no_key_files_banner_goes_when_keys_arrive(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    app = MultisaApp(live=True, iface="lo", keys=[str(keys)], poll_xfrm=False)
    async with app.run_test(size=(120, 40)) as pilot:
        deadline = time.monotonic() + 10
        while not any(p.startswith("keys: ") for p in app.problems) and time.monotonic() < deadline:
            await pilot.pause(0.2)
        assert any("no key files" in p for p in app.problems), app.problems
        shutil.copy(PERCPU / "ikev2_decryption_table", keys / "ikev2_decryption_table")
        deadline = time.monotonic() + 10
        while any(p.startswith("keys: ") for p in app.problems) and time.monotonic() < deadline:
            await pilot.pause(0.2)
        assert not [p for p in app.problems if p.startswith("keys: ")], app.problems
        assert "no key files" not in str(app.screen.query_one(StatusLine).render())
        await pilot.press("q")


# --- Enter on a finding: the offending field -----------------------------------------------


@run_async
async def test_enter_on_ms307_selects_the_resource_identifier_line():
    app = percpu_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("f")
        await settle(pilot)
        await pilot.press("down", "enter")  # the second MS307: frame 8, SA_RESOURCE_INFO 00000000
        await settle(pilot)
        await pilot.pause(0.3)
        assert isinstance(app.screen, PacketScreen)
        assert app.screen.packet_list.current.frame.index == 8
        node = app.screen.query_one(DecodeTree).cursor_node
        assert str(node.label) == 'Resource Identifier: 00000000 ("....")'
        assert node.parent.label.plain == "Payload: Notify (41) - SA_RESOURCE_INFO"


@run_async
async def test_hex_pane_shows_the_selected_decrypted_field_in_clear():
    """MS101's Protocol ID is inside the SK payload: the hex pane shows the decrypted notify and
    highlights the field's octet, 03 (ESP)."""
    from tui.widgets import HexView

    from .test_navigation import fault_app

    app = fault_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("tab", "enter")
        await settle(pilot)
        await pilot.pause(0.3)
        f = app.findings[0]
        hexview = app.screen.query_one(HexView)
        assert hexview.span == (f.offset, 1)
        rendered = hexview.render()
        text = getattr(rendered, "plain", str(rendered))
        assert "decrypted payloads in clear" in text
        row = next(line for line in text.splitlines() if line.startswith(f"{f.offset // 16 * 16:04x}"))
        col = f.offset % 16
        cells = row[6:].replace("  ", " ", 1).split(" ")
        assert cells[col] == "03"  # Protocol ID 3 in clear, not ciphertext

"""Layout of every view at a fixed terminal size (pytest-textual-snapshot), on the bundled
strongSwan 6 per-CPU capture. Regenerate after a deliberate change with
``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at the SVGs."""

from __future__ import annotations

from pathlib import Path


APP_PATH = str(Path(__file__).parent / "snapshot_app.py")
SIZE = (120, 40)


async def loaded(pilot) -> None:
    """Wait for the capture worker to finish and the screen to settle (harlequin's recipe)."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause()
    # Some layout happens after a refresh (the groups view's column header, a DataTable's
    # auto-width columns on idle): on a busy machine after the pauses above. Photograph only
    # once two screenshots 0.1 s apart agree (bounded).
    previous = None
    for _ in range(50):
        shot = pilot.app.export_screenshot()
        if shot == previous:
            break
        previous = shot
        await pilot.pause(0.1)
    await pilot.pause()


def test_groups_view(snap_compare):
    assert snap_compare(APP_PATH, terminal_size=SIZE, run_before=loaded)


def test_groups_view_80x24(snap_compare):
    assert snap_compare(APP_PATH, terminal_size=(80, 24), run_before=loaded)


def test_groups_view_160x48(snap_compare):
    assert snap_compare(APP_PATH, terminal_size=(160, 48), run_before=loaded)


def test_findings_view(snap_compare):
    async def run_before(pilot):
        await loaded(pilot)
        await pilot.press("f")
        await loaded(pilot)

    assert snap_compare(APP_PATH, terminal_size=SIZE, run_before=run_before)


def test_packet_view_from_finding(snap_compare):
    async def run_before(pilot):
        await loaded(pilot)
        await pilot.press("tab", "down", "enter")  # second finding (frame 8) -> packets
        await loaded(pilot)

    assert snap_compare(APP_PATH, terminal_size=SIZE, run_before=run_before)


def test_filter_bar(snap_compare):
    async def run_before(pilot):
        await loaded(pilot)
        await pilot.press("slash", *"sev:warning spi:c1f7e800", "enter")
        await loaded(pilot)

    assert snap_compare(APP_PATH, terminal_size=SIZE, run_before=run_before)


def test_help_screen(snap_compare):
    async def run_before(pilot):
        await loaded(pilot)
        await pilot.press("question_mark")
        await loaded(pilot)

    assert snap_compare(APP_PATH, terminal_size=SIZE, run_before=run_before)


def test_rule_help_screen(snap_compare):
    async def run_before(pilot):
        await loaded(pilot)
        await pilot.press("tab", "r")  # the highlighted finding's rule (MS307)
        await loaded(pilot)

    assert snap_compare(APP_PATH, terminal_size=SIZE, run_before=run_before)

"""The app the snapshot tests photograph: the bundled strongSwan 6 per-CPU capture, its keys
and moon's XFRM dump (per-CPU counters), as ``multisa tui`` would open it."""

from pathlib import Path

from tui.app import MultisaApp

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "strongswan6-percpu"

app = MultisaApp(str(SAMPLE / "capture.pcap"), [str(SAMPLE)], [str(SAMPLE / "moon.xfrm-sa.json")])

if __name__ == "__main__":
    app.run()

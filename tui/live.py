"""Live sources for ``multisa tui --live``: the engine's own (``analyzer.live``), shared with
``multisa monitor`` and ``multisa export --iface``."""

from analyzer.live import (BPF, DumpcapCapture, LiveProblem, ScapyCapture, open_capture,  # noqa: F401
                           poll_peer_status, poll_xfrm, read_peer_status)

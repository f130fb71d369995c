"""Live sources (``multisa monitor``, ``multisa tui --live``, ``multisa export --iface``): packets,
kernel XFRM state, the peer's status file.

Each function runs in a worker thread and never raises: problems come back as one-line
``LiveProblem``s for the status line, and whatever was collected before stays on screen.

* packets: ``dumpcap -w - -P`` (pcap) (inside ``ip netns exec NS`` for ``--netns``), its pcap
  stream read by ``dissectors.capture`` (``iter_frames`` + ``FrameDecoder``, frames named
  ``live:IFACE``); without dumpcap, scapy's ``AsyncSniffer`` feeds the same decoder;
* XFRM: ``analyzer.xfrm_state.snapshot_from_kernel`` over one read-only ``XfrmSocket``;
* peer: the JSON file the reference peer rewrites twice a second (``peer.node.Node.status``).
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterator

from dissectors.capture import CaptureError, CaptureStats, Datagram, FrameDecoder, Reassembler, iter_frames

#: Capture filter: IKE (500/4500, NAT-T ESP inside 4500) and plain ESP.
BPF = "udp port 500 or udp port 4500 or ip proto 50 or ip6 proto 50"


class LiveProblem(Exception):
    """A one-line reason a live source stopped or cannot start."""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:  # dumpcap names itself on the line that says what went wrong
        if ln.lower().startswith("dumpcap:"):
            return ln
    # dumpcap explains itself over several lines; the first "dumpcap:"/error line is the reason
    for ln in lines:
        low = ln.lower()
        if any(k in low for k in ("permission", "no such device", "cannot", "error", "not running",
                                  "doesn't exist", "does not exist", "failed")):
            return ln
    return lines[-1] if lines else "capture process ended"


_COUNTS = re.compile(r"Packets received/dropped on interface .*?: (\d+)/(\d+)")


def dumpcap_counts(text: str) -> tuple[int | None, int | None]:
    """dumpcap's own figures at its end: packets received and dropped (None when not said)."""
    got = _COUNTS.findall(text)
    if not got:
        return None, None
    return sum(int(a) for a, _ in got), sum(int(b) for _, b in got)


class DumpcapCapture:
    """``dumpcap`` writing pcap to a pipe that ``dissectors.capture`` reads as it grows."""

    def __init__(self, iface: str, netns: str | None = None, bpf: str = BPF) -> None:
        self.iface, self.netns, self.bpf = iface, netns, bpf
        self.proc: subprocess.Popen | None = None
        self.stats = CaptureStats()
        self.received: int | None = None  # dumpcap's counts, known once it ended
        self.dropped: int | None = None

    @staticmethod
    def available() -> bool:
        return shutil.which("dumpcap") is not None

    def command(self) -> list[str]:
        cmd = [shutil.which("dumpcap") or "dumpcap", "-q", "-i", self.iface, "-w", "-", "-P",
               "-f", self.bpf]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns, *cmd]
        return cmd

    def datagrams(self) -> Iterator[Datagram]:
        try:
            self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         stdin=subprocess.DEVNULL)
        except OSError as err:
            raise LiveProblem(f"cannot start dumpcap: {err.strerror or err}") from None
        decoder = FrameDecoder(f"live:{self.iface}", self.stats, Reassembler())
        path = f"/proc/self/fd/{self.proc.stdout.fileno()}"
        try:
            for ref, linktype, data in iter_frames(path, self.stats):
                d = decoder.decode(ref.index, ref.ts, linktype, data)
                if d is not None:
                    yield d
        except CaptureError as err:
            if err.reason != "not a pcap or pcapng file":  # an empty stream: dumpcap failed
                self.stop()
                raise LiveProblem(f"capture on {self.iface}: {err.reason}") from None
        rc = self.proc.wait()
        err_text = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        self.received, self.dropped = dumpcap_counts(err_text)
        if rc not in (0, -signal.SIGTERM, -signal.SIGINT) or not self.stats.frames:
            if rc in (-signal.SIGTERM, -signal.SIGINT) and not err_text.strip():
                return
            raise LiveProblem(f"capture on {self.iface}"
                              f"{' in netns ' + self.netns if self.netns else ''} stopped: {_last_line(err_text)}")

    def stop(self) -> None:
        p = self.proc
        if p is not None and p.poll() is None:
            p.terminate()  # our own child, by its Popen handle
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()


class ScapyCapture:
    """scapy's AsyncSniffer (no netns support): frames into the same ``FrameDecoder``."""

    def __init__(self, iface: str, bpf: str = BPF) -> None:
        self.iface, self.bpf = iface, bpf
        self.sniffer = None
        self.stats = CaptureStats()
        self._q: queue.Queue = queue.Queue(maxsize=100_000)
        self._stop = threading.Event()

    def datagrams(self) -> Iterator[Datagram]:
        try:
            from scapy.config import conf
            from scapy.sendrecv import AsyncSniffer
        except ImportError as err:
            raise LiveProblem(f"live capture needs dumpcap or scapy: {err}") from None
        decoder = FrameDecoder(f"live:{self.iface}", self.stats, Reassembler())
        index = 0

        def on_packet(pkt) -> None:
            try:
                self._q.put_nowait((float(pkt.time), conf.l2types.layer2num.get(type(pkt), 1), bytes(pkt)))
            except queue.Full:
                pass

        try:
            self.sniffer = AsyncSniffer(iface=self.iface, filter=self.bpf, prn=on_packet, store=False)
            self.sniffer.start()
        except (OSError, ValueError) as err:
            raise LiveProblem(f"capture on {self.iface}: {err}") from None
        while not self._stop.is_set():
            try:
                ts, linktype, data = self._q.get(timeout=0.2)
            except queue.Empty:
                if self.sniffer.thread is not None and not self.sniffer.thread.is_alive():
                    raise LiveProblem(f"capture on {self.iface} stopped (interface gone or no privileges)")
                continue
            index += 1
            self.stats.frames += 1
            d = decoder.decode(index, ts, linktype, data)
            if d is not None:
                yield d

    def stop(self) -> None:
        self._stop.set()
        if self.sniffer is not None and getattr(self.sniffer, "running", False):
            try:
                self.sniffer.stop()
            except Exception:  # noqa: BLE001 - the interface may already be gone
                pass


def open_capture(iface: str, netns: str | None):
    if DumpcapCapture.available():
        return DumpcapCapture(iface, netns)
    if netns:
        raise LiveProblem("--netns needs dumpcap (apt-get install tshark)")
    return ScapyCapture(iface)


def poll_xfrm(netns: str | None, put: Callable[[object], None], problem: Callable[[str | None], None],
              stop: threading.Event, interval: float = 1.0) -> None:
    """Dump the SAD every ``interval`` seconds; on failure say why, retry every 5 s."""
    from analyzer.xfrm_state import snapshot_from_kernel
    from dissectors.xfrm import XfrmError, XfrmSocket

    sock = None
    last_problem = None
    while not stop.is_set():
        try:
            if sock is None:
                sock = XfrmSocket(netns)
            put(snapshot_from_kernel(netns, sock))
            if last_problem is not None:
                problem(None)  # recovered
            last_problem = None
            stop.wait(interval)
        except (XfrmError, OSError) as err:
            text = f"XFRM: {err}"
            if text != last_problem:
                problem(text)
                last_problem = text
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
                sock = None
            stop.wait(5.0)
    if sock is not None:
        sock.close()


def read_peer_status(path: str) -> dict:
    """The reference peer's status document; LiveProblem when unreadable."""
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except FileNotFoundError:
        raise LiveProblem(f"peer status {path}: no such file (yet)") from None
    except OSError as err:
        raise LiveProblem(f"peer status {path}: {err.strerror or err}") from None
    except json.JSONDecodeError as err:
        raise LiveProblem(f"peer status {path}: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("sas"), list):
        raise LiveProblem(f"peer status {path}: no 'sas' list")
    return doc


def poll_peer_status(paths: list[str], put: Callable[[str, dict], None], problem: Callable[[str | None], None],
                     stop: threading.Event, interval: float = 1.0) -> None:
    stamps: dict[str, tuple] = {}
    said: dict[str, str] = {}
    while not stop.is_set():
        for path in paths:
            try:
                st = os.stat(path)
                stamp = (st.st_mtime_ns, st.st_size)
                if stamps.get(path) == stamp:
                    continue
                doc = read_peer_status(path)
                stamps[path] = stamp
                if said.pop(path, None) is not None:
                    problem(None)  # recovered
                put(path, doc)
            except (LiveProblem, OSError) as err:
                text = str(err) if isinstance(err, LiveProblem) else f"peer status {path}: {err.strerror}"
                if said.get(path) != text:
                    problem(text)
                    said[path] = text
        stop.wait(interval)

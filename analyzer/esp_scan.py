"""One streaming pass over a capture: ESP packets into ``EspSeqTracker``s, everything else out.

``EspScan(path).datagrams()`` yields the UDP ``Datagram``s that may carry IKE (port 500, and
4500 behind the Non-ESP Marker), in file order, so the IKE dissector and the group analyzer can run in
the same pass; ESP (IP protocol 50, and ESP-in-UDP on 4500 that is neither behind the
Non-ESP Marker nor a NAT-keepalive, RFC 3948 §2) never becomes a Python object.

Two engines give identical results (``tests/test_esp_scan.py`` holds them to it):

- ``c``: ``dissectors._espscan`` walks pcap/pcapng records, skips the link, IPv4/IPv6 and
  UDP headers, reads SPI and Sequence Number and keeps the per-SA trackers in C; it hands
  back to Python only the frames it does not settle itself (IKE, IP fragments, IPv6
  extension headers, snap-length-cut or odd headers), which go through the ordinary
  ``dissectors.capture.FrameDecoder``;
- ``python``: every frame through ``FrameDecoder``, ESP into ``analyzer.esp_seq``. Used when
  the extension is not built, and for gzip-compressed captures.

Errors: a damaged capture raises ``CaptureError`` ("file: frame N, offset K: reason") after
everything before the damage was accounted; ``trackers()`` still returns what was read.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dissectors.capture import CaptureError, CaptureStats, Datagram, FrameDecoder, iter_frames
from dissectors.iana import IKE_PORT, IPPROTO_AH, IPPROTO_ESP, IPPROTO_UDP, NAT_T_PORT
from dissectors.udpencap import NAT_KEEPALIVE, NON_ESP_MARKER

from .esp_seq import DEFAULT_WINDOW, MAX_WINDOW, EspSeqTracker

try:  # the C engine (built by setuptools from dissectors/_espscan.c)
    from dissectors import _espscan as _c
except ImportError:  # pragma: no cover - depends on the build
    _c = None

ENGINES = ("auto", "c", "python")
ESP_HEADER_LEN = 8  # SPI (4) | Sequence Number (4), RFC 4303 §2
PROGRESS_EVERY = 1 << 22  # octets between on_progress calls


def c_engine_available() -> bool:
    return _c is not None


@dataclass(slots=True)
class EspCounters:
    """ESP-level counters of one pass (beside ``CaptureStats``)."""

    esp: int = 0  # ESP packets accounted to an SA
    esp_in_udp: int = 0  # ... of them ESP-in-UDP
    keepalives: int = 0  # NAT-keepalives on 4500 (skipped)
    esp_truncated: int = 0  # ESP too short for SPI + Sequence Number (not accounted)


def _ip_bytes(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def _ip_text(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


class EspScan:
    """One pass over ``path``; iterate ``datagrams()`` to drive it, then read ``trackers()``."""

    def __init__(self, path: str | os.PathLike[str], window: int = DEFAULT_WINDOW, engine: str = "auto") -> None:
        if not 1 <= window <= MAX_WINDOW:
            raise ValueError(f"replay window must be 1..{MAX_WINDOW} packets, not {window}")
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}")
        self.path = os.fspath(path)
        self.window = window
        self.stats = CaptureStats()
        self.esp = EspCounters()
        self.decoder = FrameDecoder(self.path, self.stats)
        self._esn: set[int] = set()
        self._py: dict[tuple[str, int], EspSeqTracker] = {}
        self._ah: dict[tuple[str, int], EspSeqTracker] = {}  # AH SAs (RFC 4302), same replay/gap logic
        self._core = None
        #: called as on_esp(datagram, esp_bytes, spi, tracker) for each ESP packet after the
        #: tracker saw it (decryption); Python engine only
        self.on_esp: Callable[[Datagram, bytes, int, EspSeqTracker], None] | None = None
        if engine == "c" and _c is None:
            raise ValueError("the C engine is not built (pip install -e . builds dissectors/_espscan)")
        if engine != "python" and _c is not None and not _gzipped(self.path):
            self.engine = "c"
        else:
            self.engine = "python"
        self.bytes_read = 0  # progress, in file octets (exact with C, approximate in Python)
        self.size = _size(self.path)
        #: called with no argument about every ``PROGRESS_EVERY`` file octets (a progress bar)
        self.on_progress: Callable[[], None] | None = None

    # --- the pass ------------------------------------------------------------------------

    def datagrams(self) -> Iterator[Datagram]:
        if self.on_esp is not None:
            self.engine = "python"
        if self.engine == "c":
            yield from self._c_datagrams()
        else:
            yield from self._py_datagrams()

    def _py_datagrams(self) -> Iterator[Datagram]:
        decode = self.decoder.decode
        mark = PROGRESS_EVERY
        for ref, linktype, data in iter_frames(self.path, self.stats):
            self.bytes_read += len(data) + 16  # approximate: the record header of a pcap
            if self.on_progress is not None and self.bytes_read >= mark:
                mark = self.bytes_read + PROGRESS_EVERY
                self.on_progress()
            d = decode(ref.index, ref.ts, linktype, data)
            if d is not None and self._esp_datagram(d):
                yield d

    def _c_datagrams(self) -> Iterator[Datagram]:
        try:
            core = self._core = _c.Scanner(self.path, self.window)
        except OSError as err:
            raise CaptureError(self.path, err.strerror or str(err)) from None
        for spi in self._esn:
            core.set_esn(spi)
        decode = self.decoder.decode
        nxt = core.next_frame
        if self.on_progress is not None:
            core.set_progress(PROGRESS_EVERY)
        try:
            while True:
                rec = nxt()
                if rec is None:
                    break
                if rec is False:  # a progress mark
                    self.bytes_read = core.offset
                    self.on_progress()
                    continue
                index, ts, linktype, data = rec
                self.bytes_read = core.offset
                d = decode(index, ts, linktype, data)
                if d is not None and self._esp_datagram(d):
                    yield d
        except _c.ScanError as err:
            reason, frame, offset = err.args
            raise CaptureError(self.path, reason, frame, offset) from None
        finally:
            self.bytes_read = core.offset
            self._merge_c_stats()

    def _merge_c_stats(self) -> None:
        s = self._core.stats()
        st = self.stats
        st.frames += s["frames"]
        st.datagrams += s["datagrams"]
        st.not_ip += s["not_ip"]
        st.other_proto += s["other_proto"]
        st.skipped_linktype += s["skipped_linktype"]
        st.unknown_linktypes.update(s["unknown_linktypes"])
        self.esp.esp += s["esp"]
        self.esp.esp_in_udp += s["esp_in_udp"]
        self.esp.keepalives += s["keepalives"]

    def _esp_datagram(self, d: Datagram) -> bool:
        """Account ``d`` if it is ESP; True when it is something else (to be yielded)."""
        if d.ah is not None:  # AH before it (RFC 4302): its SPI and sequence number are tracked
            self._track_ah(d)
            if d.proto == IPPROTO_AH:
                return False
        payload = d.payload
        if d.proto == IPPROTO_ESP:
            encap = False
        elif d.proto == IPPROTO_UDP and (d.sport == NAT_T_PORT or d.dport == NAT_T_PORT):
            if payload == NAT_KEEPALIVE:
                self.esp.keepalives += 1
                return False
            if payload[:4] == NON_ESP_MARKER:
                return True
            encap = True
        elif d.proto == IPPROTO_UDP and (d.sport == IKE_PORT or d.dport == IKE_PORT):
            return True
        else:
            return False  # UDP on other ports: nothing for multisa (the C engine drops it too)
        if len(payload) < ESP_HEADER_LEN:
            self.esp.esp_truncated += 1
            return False
        spi = int.from_bytes(payload[:4], "big")
        seq = int.from_bytes(payload[4:8], "big")
        self.esp.esp += 1
        if encap:
            self.esp.esp_in_udp += 1
        if self._core is not None:
            self._core.feed(_ip_bytes(d.dst), _ip_bytes(d.src), spi, seq, len(payload), d.frame.ts,
                            d.frame.index, encap)
            return False
        t = self._py.get((d.dst, spi))
        if t is None:
            t = self._py[(d.dst, spi)] = EspSeqTracker(d.dst, spi, self.window, spi in self._esn, d.src, encap)
        t.observe(seq, len(payload), d.frame.ts, d.frame.index)
        if self.on_esp is not None:
            self.on_esp(d, payload, spi, t)
        return False

    def _track_ah(self, d: Datagram) -> None:
        spi, seq = d.ah
        t = self._ah.get((d.dst, spi))
        if t is None:
            t = self._ah[(d.dst, spi)] = EspSeqTracker(d.dst, spi, self.window, False, d.src, False)
        t.observe(seq, len(d.payload), d.frame.ts, d.frame.index)

    def feed_inner(self, d: Datagram) -> None:
        """An ESP packet found inside a decrypted one (ESP in ESP): tracked, and decrypted
        through ``on_esp`` like any other (Python engine)."""
        self._esp_datagram(d)

    def ah_trackers(self) -> list[EspSeqTracker]:
        """Every AH SA seen, in order of its first packet."""
        return sorted(self._ah.values(), key=lambda t: t.first_frame)

    # --- control and results -------------------------------------------------------------

    def set_esn(self, spi: int) -> None:
        """The SA(s) with this SPI negotiated Extended Sequence Numbers (RFC 7296 §3.3.2)."""
        self._esn.add(spi)
        if self._core is not None:
            self._core.set_esn(spi)
        for (_, s), t in self._py.items():
            if s == spi and t.packets <= 1:
                t.esn = True

    def trackers(self) -> list[EspSeqTracker]:
        """Every SA seen, in order of its first packet."""
        if self._core is None:
            return sorted(self._py.values(), key=lambda t: t.first_frame)
        out = []
        for row in self._core.sas():
            (dst, spi, src, encap, esn, packets, nbytes, first_ts, last_ts, first_frame, last_frame,
             first_seq, last_seq, top, replays, gaps, late, reorders, wraps, seq_zero,
             f_replay, f_gap, f_reorder, f_wrap, lowest) = row
            t = EspSeqTracker(_ip_text(dst), spi, self.window, bool(esn), _ip_text(src), bool(encap))
            t.packets, t.bytes, t.first_ts, t.last_ts = packets, nbytes, first_ts, last_ts
            t.first_frame, t.last_frame, t.first_seq, t.last_seq, t.top = first_frame, last_frame, first_seq, last_seq, top
            t.lowest = lowest
            t.replays, t.gaps, t.late, t.reorders, t.wraps, t.seq_zero = replays, gaps, late, reorders, wraps, seq_zero
            t.first_replay_frame, t.first_gap_frame = f_replay, f_gap
            t.first_reorder_frame, t.first_wrap_frame = f_reorder, f_wrap
            out.append(t)
        return sorted(out, key=lambda t: t.first_frame)


def _gzipped(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0

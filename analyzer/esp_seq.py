"""ESP sequence-number analysis per SA, keyed (destination, SPI): RFC 4303 §3.3.3, §3.4.3, App. A.

``EspSeqTracker`` is what a passive observer can say about one ESP SA from the Sequence
Number field alone, judged as the receiver's anti-replay window would judge it:

- **replays**: a number already seen inside the window (the receiver drops it, §3.4.3);
- **gaps**: numbers never seen (lost packets, counted one by one); a number that arrives
  late but still inside the window fills its gap again;
- **late**: such late arrivals (reordered inside the window: accepted by the receiver);
- **reorders**: numbers more than a window below the highest seen (reordered *beyond* the
  window, or very old replays: the receiver drops them either way);
- **wraps**: without ESN, the 32-bit counter went round (§3.3.3: "the sender's counter and
  the receiver's counter MUST NOT be allowed to cycle"; the SA must be rekeyed first);
- with ESN (RFC 4303 §2.2.1, App. A2) the high 32 bits are inferred from the window;
- ``first_seq`` other than 1: the capture started mid-SA, or the sender skipped numbers.

Window: ``window`` packets (default 64: RFC 4303 §3.4.3 "a minimum window size of 32
packets MUST be supported ... a window size of 64 is preferred and SHOULD be the default").
The Linux kernel uses whatever the IKE daemon installs (``replay_window`` of the SA, or
``XFRMA_REPLAY_ESN_VAL.replay_window`` with ESN; 0 disables the check); strongSwan installs
``charon.replay_window = 32`` by default, Libreswan ``replay-window=128``.

The same algorithm runs in C (``dissectors/_espscan.c``); tests hold the two to identical
results. The bitmap is a ring indexed by sequence number modulo a power of two, as Linux's
``xfrm_replay_advance_esn`` keeps it, so a window of thousands costs nothing per packet.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_WINDOW = 64
MAX_WINDOW = 4096  # Linux caps XFRMA_REPLAY_ESN_VAL bitmaps at 4096 bits (XFRMA_REPLAY_ESN_MAX)
_U32 = 1 << 32


@dataclass(slots=True)
class EspSeqTracker:
    """Counters and anti-replay state of one ESP SA as seen on the wire."""

    dst: str
    spi: int
    window: int = DEFAULT_WINDOW
    esn: bool = False
    src: str = ""
    encap: bool = False  # ESP-in-UDP (RFC 3948)
    packets: int = 0
    bytes: int = 0
    first_ts: float = 0.0
    last_ts: float = 0.0
    first_frame: int = 0
    last_frame: int = 0
    first_seq: int = 0  # as on the wire (32 bits)
    last_seq: int = 0  # the last packet's number (32 bits), not the highest
    top: int = 0  # highest number seen, extended to 64 bits (ESN high bits or wraps)
    lowest: int = 0  # lowest number seen, extended likewise (a reordered first packet lowers it)
    replays: int = 0
    gaps: int = 0
    late: int = 0
    reorders: int = 0
    wraps: int = 0
    seq_zero: int = 0  # packets numbered 0 (never sent: the first packet is 1, §3.3.3)
    first_replay_frame: int = 0
    first_gap_frame: int = 0
    first_reorder_frame: int = 0
    first_wrap_frame: int = 0
    _base: int = 0  # extended number of the first packet
    _bits: int = 0  # ring bitmap: bit (n % _ring) set when n was seen
    _ring: int = field(default=0, repr=False)

    def observe(self, seq: int, length: int, ts: float, frame: int) -> None:
        """Account one packet with 32-bit Sequence Number ``seq`` and ``length`` octets."""
        if self._ring == 0:
            ring = 64
            while ring < self.window:
                ring <<= 1
            self._ring = ring
        self.bytes += length
        self.last_ts, self.last_frame, self.last_seq = ts, frame, seq
        if seq == 0:
            self.seq_zero += 1
        if self.packets == 0:
            self.packets = 1
            self.first_ts, self.first_frame, self.first_seq = ts, frame, seq
            self.top = self._base = self.lowest = seq
            self._bits = 1 << (seq % self._ring)
            return
        self.packets += 1
        w, ring, top = self.window, self._ring, self.top
        if self.esn:  # RFC 4303 Appendix A2.2: infer the high-order 32 bits
            tl, th = top & 0xFFFFFFFF, top >> 32
            if tl >= w - 1:
                hi = th if seq >= tl - w + 1 else th + 1
            else:
                hi = th - 1 if th and seq >= (tl - w + 1) % _U32 else th
            full = (hi << 32) | seq
        else:
            full = ((top >> 32) << 32) | seq
            if full < top and top - full > _U32 // 2:  # the 32-bit counter cycled
                full += _U32
                self.wraps += 1
                if not self.first_wrap_frame:
                    self.first_wrap_frame = frame
            elif full > top and full - top > _U32 // 2 and full >= _U32:  # a late one from before a wrap
                full -= _U32
        if full > top:
            d = full - top
            if d > 1:
                self.gaps += d - 1
                if not self.first_gap_frame:
                    self.first_gap_frame = frame
            if d >= ring:
                self._bits = 0
            else:
                bits = self._bits
                for n in range(top + 1, full):
                    bits &= ~(1 << (n % ring))
                self._bits = bits
            self._bits |= 1 << (full % ring)
            self.top = full
            return
        if full < self.lowest:
            self.lowest = full
        off = top - full
        if off >= w:
            self.reorders += 1
            if not self.first_reorder_frame:
                self.first_reorder_frame = frame
        elif self._bits >> (full % ring) & 1:
            self.replays += 1
            if not self.first_replay_frame:
                self.first_replay_frame = frame
        else:
            self._bits |= 1 << (full % ring)
            self.late += 1
            if full > self._base:  # it was counted missing when the window moved past it
                self.gaps -= 1

    @property
    def highest_seq(self) -> int:
        """The highest number seen (64-bit with ESN or after wraps)."""
        return self.top

    def rate(self) -> float:
        """Packets per second between the first and the last packet (0 for one packet)."""
        span = self.last_ts - self.first_ts
        return self.packets / span if span > 0 and self.packets > 1 else 0.0

    def counters(self) -> dict:
        """Everything observable, for comparing implementations and for JSON output."""
        return {
            "spi": self.spi, "dst": self.dst, "src": self.src, "encap": self.encap, "esn": self.esn,
            "packets": self.packets, "bytes": self.bytes, "first_frame": self.first_frame,
            "last_frame": self.last_frame, "first_ts": self.first_ts, "last_ts": self.last_ts,
            "first_seq": self.first_seq, "last_seq": self.last_seq, "highest_seq": self.top,
            "lowest_seq": self.lowest, "replays": self.replays, "gaps": self.gaps, "late": self.late, "reorders": self.reorders,
            "wraps": self.wraps, "seq_zero": self.seq_zero,
            "first_replay_frame": self.first_replay_frame, "first_gap_frame": self.first_gap_frame,
            "first_reorder_frame": self.first_reorder_frame, "first_wrap_frame": self.first_wrap_frame,
        }

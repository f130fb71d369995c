"""``multisa monitor``: the engine on live traffic, headless (a gateway, a CI job).

    multisa monitor --iface IF [--netns NS] [-k KEYS]... [--xfrm live|live:NS]
                    [--peer-status FILE]... [--format text|json-lines] [--duration S]
                    [--status-interval S] [--window N] [--group-window S]

dumpcap captures (as ``multisa tui --live`` does, inside ``ip netns exec NS`` with
``--netns``); every datagram goes into one ``analyzer.session.Session`` with ``live=True``,
which judges the ESP sequence rules as packets arrive and the group rules over a sliding
window. Each finding is printed once, when judged: text ``SOURCE:FRAME: CODE message
[citation]``; json-lines one object per line, ``{"type": "finding", ...}`` with the lint
JSON finding fields (``time`` is the packet's). Every ``--status-interval`` seconds (default
10, 0 = never) a status: per ESP SA packets, bytes, rate, replays and gaps, with its group and
direction; per CPU the kernel's packet/byte counters when ``--xfrm`` is given; dumpcap's
frames. Key files are re-read when they change (a daemon writing save-keys files as SAs come
up). ``--xfrm`` / ``--peer-status`` also seed the SPIs a monitor started after the IKE SAs
came up can learn, so their ESP is not reported as unknown (MS410).

On SIGINT/SIGTERM or after ``--duration`` the end-of-input rules run, a summary is printed
(json-lines: ``{"type": "summary", ...}``, with dumpcap's received/dropped counts) and the
exit status is lint's: 0 no findings, 1 findings, 2 the capture failed (an interface or
namespace that vanished: one line on stderr, the findings so far printed).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
import time
from typing import TextIO

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2
TICK = 0.25  # seconds between the engine's time-based judgements


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .commands import KEYS_HELP
    from .session import GROUP_WINDOW

    p = sub.add_parser("monitor", help="judge live traffic headless: findings as they happen, "
                                       "status, exit like lint")
    p.add_argument("--iface", "-i", required=True, metavar="IF", help="interface to capture on (dumpcap)")
    p.add_argument("--netns", metavar="NS", help="network namespace of the interface")
    p.add_argument("--keys", "-k", action="append", metavar="PATH", help=KEYS_HELP + "; re-read when they change")
    p.add_argument("--xfrm", metavar="live|live:NS",
                   help="poll the kernel SAD once a second: per-CPU counters, SPIs of SAs set up earlier")
    p.add_argument("--peer-status", action="append", metavar="FILE",
                   help="the reference peer's --status-file: SPIs of SAs set up earlier (repeatable)")
    p.add_argument("--format", "-f", choices=("text", "json-lines"), default="text")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: until a signal)")
    p.add_argument("--status-interval", type=float, default=10.0, metavar="S",
                   help="seconds between status reports (default 10, 0 = none)")
    p.add_argument("--window", type=int, metavar="N", help="anti-replay window in packets (default 64)")
    p.add_argument("--group-window", type=float, default=GROUP_WINDOW, metavar="S",
                   help=f"seconds of traffic the group rules (MS413-MS415) judge live (default {GROUP_WINDOW:g})")
    p.set_defaults(func=cmd_monitor)
    return p


class Printer:
    """Findings, status and summary on stdout, text or JSON Lines, flushed line by line."""

    def __init__(self, fmt: str, out: TextIO = sys.stdout) -> None:
        self.fmt, self.out = fmt, out

    def finding(self, f) -> None:
        if self.fmt == "json-lines":
            self._json({"type": "finding", **f.to_dict()})
        else:
            frame = f.frames[0] if f.frames else 0
            self.out.write(f"{f.source}:{frame}: {f.code} [{f.severity.label}] {f.message} [{f.citation}]\n")
            self.out.flush()

    def status(self, doc: dict) -> None:
        if self.fmt == "json-lines":
            self._json(doc)
            return
        sas = doc["sas"]
        self.out.write(f"status {time.strftime('%H:%M:%S', time.localtime(doc['time']))}: "
                       f"{doc['frames']} frames, {doc['ike_messages']} IKE, {doc['esp_packets']} ESP on "
                       f"{len(sas)} SA(s), {doc['findings']} finding(s)\n")
        for sa in sas:
            self.out.write(f"  {sa['spi']} {sa['dst']} {sa['direction'] or '?'} group {sa['group'] or '-'}: "
                           f"{sa['packets']} pkts {sa['rate']:.1f}/s replays {sa['replays']} gaps {sa['gaps']}\n")
        for cpu in doc.get("cpus", []):
            self.out.write(f"  cpu {cpu['cpu']}: {cpu['packets']} pkts {cpu['bytes']} B (kernel SAD)\n")
        self.out.flush()

    def summary(self, doc: dict) -> None:
        if self.fmt == "json-lines":
            self._json(doc)
            return
        by = ", ".join(f"{c} {n}" for c, n in doc["by_code"].items()) or "none"
        drops = doc["capture"].get("dropped")
        self.out.write(f"summary: {doc['findings']} finding(s) ({by}); {doc['frames']} frames, "
                       f"{doc['ike_messages']} IKE, {doc['esp_packets']} ESP"
                       + (f"; dumpcap received {doc['capture']['received']}, dropped {drops}"
                          if drops is not None else "") + "\n")
        self.out.flush()

    def _json(self, doc: dict) -> None:
        self.out.write(json.dumps(doc) + "\n")
        self.out.flush()


def status_doc(session, capture, previous: dict | None = None) -> dict:
    """One status object: per ESP SA and per CPU counters, rates, the capture's figures."""
    now = time.time()
    sas, groups = session.attached(count=True)
    gid = {id(g): i for i, g in enumerate(groups, 1)}
    prev = (previous or {}).get("_packets", {})
    dt = now - previous["time"] if previous else None
    rows = []
    packets = {}
    for v in sas:
        t = v.tracker
        key = f"{t.dst}/{t.spi:08x}"
        packets[key] = t.packets
        rate = (t.packets - prev.get(key, 0)) / dt if dt else t.rate()
        rows.append({"spi": f"{t.spi:08x}", "dst": t.dst, "src": t.src, "direction": v.direction,
                     "group": v.group.label if v.group is not None else None,
                     "group_id": gid.get(id(v.group)) if v.group is not None else None,
                     "role": v.child.role if v.child is not None else None,
                     "seeded": session.seeded.get(t.spi) if v.child is None else None,
                     "packets": t.packets, "bytes": t.bytes, "rate": round(rate, 3),
                     "highest_seq": t.top, "replays": t.replays, "gaps": t.gaps, "reorders": t.reorders})
    cpus: dict[int, dict] = {}
    if session.xfrm:
        for sa in session.xfrm[-1].sas:
            if sa.pcpu is None:
                continue
            c = cpus.setdefault(sa.pcpu, {"cpu": sa.pcpu, "sas": 0, "packets": 0, "bytes": 0})
            c["sas"] += 1
            c["packets"] += sa.curlft.packets
            c["bytes"] += sa.curlft.bytes
    st = capture.stats if capture is not None else None
    return {"type": "status", "time": now, "frames": st.frames if st else 0,
            "ike_messages": session.analyzer.messages, "esp_packets": session.scan.esp.esp,
            "findings": len(session.findings), "sas": rows, "cpus": [cpus[k] for k in sorted(cpus)],
            "dropped": getattr(capture, "dropped", None), "_packets": packets}


def cmd_monitor(args: argparse.Namespace) -> int:
    from dissectors.keys import load_keys

    from .config import ConfigError, Settings, load_settings
    from .esp_events import EspSettings
    from .esp_seq import MAX_WINDOW
    from .live import LiveProblem, open_capture, poll_peer_status, poll_xfrm
    from .pipeline import esp_settings
    from .session import Session

    try:
        settings = load_settings(None)
    except (ConfigError, ValueError, OSError) as err:
        print(f"multisa: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    if args.window is not None and not 1 <= args.window <= MAX_WINDOW:
        print(f"multisa: error: the replay window is 1..{MAX_WINDOW} packets", file=sys.stderr)
        return EXIT_ERROR
    keys = load_keys(args.keys or [])  # a key directory may appear later (save-keys): re-read then
    for problem in keys.problems:
        print(f"multisa: warning: {problem}", file=sys.stderr)
    esp = esp_settings(settings or Settings())
    if args.window is not None:
        esp = EspSettings(**{**esp.__dict__, "window": args.window})
    source = f"live:{args.iface}"
    session = Session(source, keys, settings, esp, key_paths=args.keys or [], live=True,
                      group_window=args.group_window)
    printer = Printer(args.format)
    q: queue.Queue = queue.Queue(maxsize=1_000_000)
    stop = threading.Event()
    try:
        capture = open_capture(args.iface, args.netns)
    except LiveProblem as err:
        print(f"multisa: error: {err}", file=sys.stderr)
        return EXIT_ERROR

    def capture_thread() -> None:
        try:
            for d in capture.datagrams():
                q.put(("datagram", d))
        except LiveProblem as err:
            if not stop.is_set():
                q.put(("problem", str(err)))
                return
        q.put(("ended", None))

    def problem(text: str | None) -> None:
        if text:
            print(f"multisa: warning: {text}", file=sys.stderr)

    threads = [threading.Thread(target=capture_thread, name="capture", daemon=True)]
    if args.xfrm:
        if args.xfrm != "live" and not args.xfrm.startswith("live:"):
            print("multisa: error: monitor --xfrm takes live or live:NETNS", file=sys.stderr)
            return EXIT_ERROR
        ns = args.xfrm.partition(":")[2] or args.netns
        threads.append(threading.Thread(target=poll_xfrm, args=(ns, lambda s: q.put(("xfrm", s)), problem, stop),
                                        name="xfrm", daemon=True))
    if args.peer_status:
        threads.append(threading.Thread(
            target=poll_peer_status, args=(args.peer_status, lambda p, doc: q.put(("peer", (p, doc))), problem, stop),
            name="peer", daemon=True))

    def on_signal(signum, frame) -> None:
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    for t in threads:
        t.start()
    error = None
    started = time.monotonic()
    last_tick = last_status = started
    previous = None
    try:
        while not stop.is_set():
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
            try:
                kind, item = q.get(timeout=TICK)
            except queue.Empty:
                kind, item = None, None
            if kind == "datagram":
                for f in session.feed(item):
                    printer.finding(f)
            elif kind == "xfrm":
                session.add_xfrm([item])
            elif kind == "peer":
                session.add_peer_status(item[1], item[0])
            elif kind == "problem":
                error = item
                break
            elif kind == "ended":
                break
            now = time.monotonic()
            if now - last_tick >= TICK:
                last_tick = now
                session.reload_keys()
                for f in session.tick(time.time()):
                    printer.finding(f)
            if args.status_interval and now - last_status >= args.status_interval:
                last_status = now
                previous = status_doc(session, capture, previous)
                printer.status({k: v for k, v in previous.items() if not k.startswith("_")})
    finally:
        stop.set()
        capture.stop()
        for s, h in old.items():
            signal.signal(s, h)
    # what was captured before the stop, then the end-of-input rules
    deadline = time.monotonic() + 2.0
    for t in threads[:1]:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    while True:
        try:
            kind, item = q.get_nowait()
        except queue.Empty:
            break
        if kind == "datagram":
            for f in session.feed(item):
                printer.finding(f)
        elif kind == "problem" and error is None:
            error = item
    for f in session.tick(time.time()) + session.finish():
        printer.finding(f)
    by_code: dict[str, int] = {}
    for f in session.findings:
        by_code[f.code] = by_code.get(f.code, 0) + 1
    printer.summary({"type": "summary", "source": source, "findings": len(session.findings),
                     "by_code": dict(sorted(by_code.items())), "frames": capture.stats.frames,
                     "ike_messages": session.analyzer.messages, "esp_packets": session.scan.esp.esp,
                     "capture": {"received": getattr(capture, "received", None),
                                 "dropped": getattr(capture, "dropped", None)},
                     "error": error})
    if error:
        print(f"multisa: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_FINDINGS if session.findings else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="multisa")
    register(parser.add_subparsers(dest="command", required=True))
    a = parser.parse_args()
    sys.exit(a.func(a))

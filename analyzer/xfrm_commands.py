"""``multisa xfrm``: dump, watch, snapshot and import kernel XFRM state (read-only).

``register(sub)`` adds the ``xfrm`` command to the ``multisa`` subparsers; each handler
returns an exit code (0 ok, 2 abnormal: no permission, no such netns, bad import file) and
reports problems as one line on stderr, never a traceback.

    multisa xfrm dump [--netns NS] [--json]
    multisa xfrm watch [--netns NS] [--json] [--group G ...] [--duration S] [--count N]
    multisa xfrm snapshot -o FILE [--netns NS] [--interval S] [--count N]
    multisa xfrm import FILE [--json] [-o OUT]

``snapshot`` writes JSON Lines: one sample (the ``dump --json`` document plus ``ts``) per
line, flushed as it is taken, so an interrupted run keeps every finished sample and rates
can be computed offline (``analyzer.xfrm_state.load_series``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TextIO

from analyzer.xfrm_state import (
    SampleJsonWriter,
    XfrmImportError,
    XfrmSnapshot,
    iter_samples,
    load_series,
    policy_to_dict,
    sa_to_dict,
    snapshot_from_kernel,
)
from dissectors.xfrm import (
    XfrmError,
    XfrmEvent,
    XfrmGroup,
    XfrmPolicy,
    XfrmSaState,
    XfrmSocket,
)

EXIT_OK, EXIT_ERROR = 0, 2

PROTO_NAME = {50: "esp", 51: "ah", 108: "comp"}
MODE_NAME = {0: "transport", 1: "tunnel", 2: "ro", 3: "in_trigger", 4: "beet", 5: "iptfs"}
SA_DIR_NAME = {1: "in", 2: "out"}
POLICY_DIR_NAME = {0: "in", 1: "out", 2: "fwd", 3: "sock-in", 4: "sock-out", 5: "sock-fwd"}
DEFAULT_GROUPS = ("acquire", "expire", "sa", "policy", "aevents")


def _err(msg: str) -> int:
    sys.stdout.flush()
    print(f"multisa: error: {msg}", file=sys.stderr)
    return EXIT_ERROR


def _policy_flags(flags: int) -> str:
    names = [n for bit, n in ((1, "localok"), (2, "icmp"), (4, "cpu-acquire")) if flags & bit]
    rest = flags & ~7
    if rest:
        names.append(f"{rest:#x}")
    return ",".join(names) or "-"


def _opt(v) -> str:
    return "-" if v is None else str(v)


def render_text(snap: XfrmSnapshot, out: TextIO, path: str | None = None) -> None:
    """A tshark-like summary: one line per SA and per policy. ``path``: the imported file
    (then the header names it, not a namespace)."""
    where = f"netns {snap.netns}" if snap.netns else "current netns"
    if path is not None:
        where = f"{path}" + (f" (netns {snap.netns})" if snap.netns else "")
    kernel = f", kernel {snap.kernel}" if snap.kernel else ""
    cpus = f", {snap.host_cpus} CPUs" if snap.host_cpus else ""
    out.write(f"XFRM state {'from' if path is not None else 'of'} {where} ({snap.source}{kernel}{cpus})\n")
    out.write(f"SAD: {len(snap.sas)} SA{'' if len(snap.sas) == 1 else 's'}\n")
    out.write(f"  {'dir':4} {'spi':8}  {'src -> dst':33} {'proto':5} {'mode':9} {'reqid':>5} "
              f"{'pcpu':>4} {'bytes':>10} {'packets':>8} {'oseq':>8} {'seq':>8}\n")
    out.writelines(f"  {SA_DIR_NAME.get(sa.dir, _opt(sa.dir)):4} {sa.spi_hex:8}  "
                  f"{sa.src + ' -> ' + sa.dst:33} {PROTO_NAME.get(sa.proto, str(sa.proto)):5} "
                  f"{MODE_NAME.get(sa.mode, str(sa.mode)):9} {sa.reqid:>5} {_opt(sa.pcpu):>4} "
                  f"{sa.curlft.bytes:>10} {sa.curlft.packets:>8} {sa.replay.oseq:>8} "
                  f"{sa.replay.seq:>8}{'  larval' if sa.larval and snap.source == 'netlink' else ''}\n" for sa in snap.sas)
    out.write(f"SPD: {len(snap.policies)} polic{'y' if len(snap.policies) == 1 else 'ies'}\n")
    for p in snap.policies:
        sel = p.selector
        if sel is not None and sel.src is not None:
            what = f"{sel.src}/{sel.prefixlen_s} -> {sel.dst}/{sel.prefixlen_d}"
        else:
            what = f"family {sel.family if sel else '?'}"
        tmpls = ("?" if p.templates is None else
                 " ".join(f"{t.src}->{t.dst}/{PROTO_NAME.get(t.proto, t.proto)}/reqid {t.reqid}"
                          for t in p.templates) or "-")
        out.write(f"  {POLICY_DIR_NAME.get(p.dir, str(p.dir)):8} index {p.index:<6} "
                  f"prio {p.priority:<8} flags {_policy_flags(p.flags):12} {what}  tmpl {tmpls}\n")


def cmd_dump(args: argparse.Namespace) -> int:
    try:
        snap = snapshot_from_kernel(args.netns)
    except XfrmError as err:
        return _err(str(err))
    if args.json:
        json.dump(snap.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        render_text(snap, sys.stdout)
    return EXIT_OK


def event_to_dict(ev: XfrmEvent) -> dict:
    d: dict = {"ts": ev.ts, "event": ev.kind, "msg_type": ev.msg_type}
    if ev.sa is not None:
        d["sa"] = sa_to_dict(ev.sa)
    if ev.policy is not None:
        d["policy"] = policy_to_dict(ev.policy)
    if ev.acquire is not None:
        a = ev.acquire
        d["acquire"] = {"src": a.src, "dst": a.dst, "proto": a.proto, "seq": a.seq,
                        "pcpu": a.pcpu, "policy": policy_to_dict(a.policy),
                        "selector": policy_to_dict(a.policy)["selector"]}
    if ev.ae is not None:
        ae = ev.ae
        d["ae"] = {"src": ae.src, "dst": ae.dst, "spi": ae.spi_hex, "proto": ae.proto,
                   "reqid": ae.reqid, "flags": ae.flags, "pcpu": ae.pcpu, "dir": ae.dir,
                   "lifetime": None if ae.curlft is None else
                   {"bytes": ae.curlft.bytes, "packets": ae.curlft.packets},
                   "replay": None if ae.replay is None else
                   {"oseq": ae.replay.oseq, "seq": ae.replay.seq}}
    if ev.hard is not None:
        d["hard"] = ev.hard
    if ev.proto is not None:
        d["proto"] = ev.proto
    return d


def event_to_text(ev: XfrmEvent) -> str:
    stamp = time.strftime("%H:%M:%S", time.localtime(ev.ts)) + f".{int(ev.ts * 1000) % 1000:03d}"
    if ev.sa is not None:
        sa: XfrmSaState = ev.sa
        extra = f" hard={ev.hard}" if ev.hard is not None else ""
        return (f"{stamp} {ev.kind:9} spi {sa.spi_hex} {sa.src} -> {sa.dst} reqid {sa.reqid} "
                f"dir {SA_DIR_NAME.get(sa.dir, '-')} pcpu {_opt(sa.pcpu)} "
                f"bytes {sa.curlft.bytes} oseq {sa.replay.oseq} seq {sa.replay.seq}{extra}")
    if ev.acquire is not None:
        a = ev.acquire
        return (f"{stamp} {ev.kind:9} {a.src} -> {a.dst} seq {a.seq} pcpu {_opt(a.pcpu)} "
                f"policy index {a.policy.index} flags {_policy_flags(a.policy.flags)}")
    if ev.policy is not None:
        p: XfrmPolicy = ev.policy
        return (f"{stamp} {ev.kind:9} dir {POLICY_DIR_NAME.get(p.dir, p.dir)} index {p.index} "
                f"prio {p.priority} flags {_policy_flags(p.flags)}")
    if ev.ae is not None:
        ae = ev.ae
        lt = ae.curlft
        rp = ae.replay
        return (f"{stamp} {ev.kind:9} spi {ae.spi_hex} pcpu {_opt(ae.pcpu)} "
                f"bytes {lt.bytes if lt else '-'} oseq {rp.oseq if rp else '-'} "
                f"seq {rp.seq if rp else '-'}")
    return f"{stamp} {ev.kind}"


def cmd_watch(args: argparse.Namespace) -> int:
    groups = tuple(XfrmGroup[g.upper()] for g in (args.group or DEFAULT_GROUPS))
    deadline = None if args.duration is None else time.monotonic() + args.duration
    seen = 0
    try:
        with XfrmSocket(args.netns, groups=groups) as sock:
            while deadline is None or time.monotonic() < deadline:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                got = False
                for ev in sock.events(timeout=left if left is not None else 1.0):
                    got = True
                    line = json.dumps(event_to_dict(ev)) if args.json else event_to_text(ev)
                    print(line, flush=True)
                    seen += 1
                    if args.count and seen >= args.count:
                        return EXIT_OK
                    if deadline is not None and time.monotonic() >= deadline:
                        return EXIT_OK
                if not got and deadline is not None:
                    return EXIT_OK
    except XfrmError as err:
        return _err(str(err))
    except KeyboardInterrupt:
        return EXIT_OK
    return EXIT_OK


def cmd_snapshot(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        return _err("--interval must be > 0")
    try:
        out = open(args.output, "w", encoding="utf-8")
    except OSError as err:
        return _err(f"{args.output}: {err.strerror}")
    n = 0
    writer = SampleJsonWriter()
    try:
        with out:
            for snap in iter_samples(args.netns, args.interval, args.count):
                out.write(writer.line(snap) + "\n")
                out.flush()
                n += 1
    except XfrmError as err:
        return _err(str(err))
    except KeyboardInterrupt:
        pass
    print(f"multisa: wrote {n} sample(s) to {args.output}", file=sys.stderr)
    return EXIT_OK


def cmd_import(args: argparse.Namespace) -> int:
    try:
        series = load_series(args.file)
    except XfrmImportError as err:
        return _err(str(err))
    except OSError as err:
        return _err(f"{args.file}: {err.strerror}")
    out = sys.stdout if args.output in (None, "-") else open(args.output, "w", encoding="utf-8")
    try:
        if args.json or out is not sys.stdout:
            if len(series) == 1:
                json.dump(series[0].to_dict(), out, indent=1)
                out.write("\n")
            else:
                for snap in series:
                    out.write(json.dumps(snap.to_dict(), separators=(",", ":")) + "\n")
        else:
            for snap in series:
                render_text(snap, out, args.file)
    finally:
        if out is not sys.stdout:
            out.close()
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``xfrm`` (dump/watch/snapshot/import) to the ``multisa`` subparsers."""
    xfrm = sub.add_parser("xfrm", help="read kernel XFRM state (SAs, policies, per-CPU SAs) "
                                       "over netlink, read-only")
    xsub = xfrm.add_subparsers(dest="xfrm_command", required=True, metavar="ACTION")
    netns_help = "network namespace name (ip netns) or path; default: the current one"

    dump = xsub.add_parser("dump", help="SAs and policies with per-CPU attribute and counters")
    dump.add_argument("--netns", metavar="NS", help=netns_help)
    dump.add_argument("--json", action="store_true", help="the JSON contract (see README)")
    dump.set_defaults(func=cmd_dump)

    watch = xsub.add_parser("watch", help="stream acquires (with CPU), expires, SA/policy "
                                          "changes and AE events")
    watch.add_argument("--netns", metavar="NS", help=netns_help)
    watch.add_argument("--json", action="store_true", help="JSON Lines, one event per line")
    watch.add_argument("--group", action="append", choices=[g.name.lower() for g in XfrmGroup],
                       help=f"multicast group (repeatable; default: {' '.join(DEFAULT_GROUPS)})")
    watch.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    watch.add_argument("--count", type=int, default=0, metavar="N", help="stop after N events")
    watch.set_defaults(func=cmd_watch)

    snap = xsub.add_parser("snapshot", help="timestamped JSON Lines samples of dump --json")
    snap.add_argument("-o", "--output", required=True, metavar="FILE")
    snap.add_argument("--netns", metavar="NS", help=netns_help)
    snap.add_argument("--interval", type=float, default=1.0, metavar="S",
                      help="seconds between samples (default 1)")
    snap.add_argument("--count", type=int, default=1, metavar="N",
                      help="number of samples (default 1; 0: until interrupted)")
    snap.set_defaults(func=cmd_snapshot)

    imp = xsub.add_parser("import", help="read `ip -s xfrm state` / `ip xfrm policy` / `swanctl --list-sas` text, "
                                         "a *.xfrm-sa.json dump or a snapshot file")
    imp.add_argument("file", metavar="FILE")
    imp.add_argument("--json", action="store_true", help="print the snapshot JSON")
    imp.add_argument("-o", "--output", metavar="OUT", help="write the JSON to OUT")
    imp.set_defaults(func=cmd_import)
    register_export(sub)
    return xfrm


def _cmd_export(args: argparse.Namespace) -> int:
    from analyzer.exporter import cmd_export

    return cmd_export(args)


def register_export(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``export`` (``analyzer.exporter``, imported when it runs)."""
    from analyzer.commands import KEYS_HELP

    p = sub.add_parser("export", help="serve kernel XFRM counters, group sizes and finding counts "
                                      "to Prometheus")
    p.add_argument("--listen", required=True, metavar="ADDR:PORT",
                   help="address and port of /metrics, e.g. 127.0.0.1:9964 (:9964: all addresses)")
    p.add_argument("--netns", metavar="NS", help="network namespace name or path; default: the current one")
    p.add_argument("--capture", action="append", metavar="FILE",
                   help="capture whose IKE groups and findings to export and hold against the live "
                        "SAD (MS5xx); repeatable")
    p.add_argument("--keys", "-k", action="append", metavar="PATH", help=KEYS_HELP)
    p.add_argument("--select", action="append", metavar="CODES", help="only these rule codes or prefixes")
    p.add_argument("--ignore", action="append", metavar="CODES", help="skip these rule codes or prefixes")
    p.add_argument("--config", metavar="FILE", help="settings file (multisa.toml or pyproject.toml)")
    p.add_argument("--isolated", action="store_true", help="ignore configuration files")
    p.add_argument("--no-per-sa", action="store_true",
                   help="leave out the per-SA series (very large SADs); per-CPU and per-reqid stay")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds (default: run "
                                                              "until interrupted)")
    p.set_defaults(func=_cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m analyzer.xfrm_commands``) until the lead wires
    ``register`` into ``analyzer/cli.py``."""
    parser = argparse.ArgumentParser(prog="multisa")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())

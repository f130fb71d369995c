"""``multisa esp``: the per-SA ESP table, grouped by Child SA group, with sequence analysis.

``register(sub)`` adds the command to the ``multisa`` subparsers::

    multisa esp CAPTURE [--keys K]... [--json] [--decrypt] [--sk-d FILE] [--window N]
                        [--engine auto|c|python] [--flows]

One streaming pass (``analyzer.esp_analysis``): IKE messages rebuild the Child SA groups,
ESP packets (IP protocol 50 and ESP-in-UDP on 4500) go to per-SA trackers keyed
(destination, SPI). Text output is one table per group (``multisa groups`` order), SAs
that no captured IKE negotiated last, then the MS4xx findings. ``--decrypt`` verifies ICVs
and decrypts with ``esp_sa`` keys, or with keys derived from SK_d (``--sk-d FILE`` or an
``ikev2_sk_d`` file in a ``--keys`` directory); ``--flows`` lists the inner 5-tuples per SA.

JSON (``--json``): one document::

    {"capture", "engine", "window", "frames", "error",
     "counters": {"esp", "esp_in_udp", "keepalives", "esp_truncated", "ip_fragments",
                  "reassembled", "truncated", "malformed", ...},
     "groups": [{"id", "label", "ike_spis", "lineage"}],
     "sas": [{"spi": "8 hex", "src", "dst", "encap": bool, "esn": bool,
              "packets", "bytes", "first_time", "last_time", "rate",
              "first_seq", "last_seq", "highest_seq", "lowest_seq",
              "replays", "gaps", "late", "reorders", "wraps",
              "decrypted", "icv_failures", "key", "key_note",
              "group": id | null, "direction": "I->R" | "R->I" | null,
              "role": "fallback" | "member" | "unknown" | null, "resource_id": hex | null,
              "child_sa": "ESP in/out" | null,
              "flows": [{"src", "dst", "proto", "sport", "dport", "packets"}]}],
     "findings": [Finding.to_dict()]}

Exit status: 0 whatever the findings (it is a report: ``multisa lint`` fails on findings,
exit 1), or 2 on bad input -- a missing capture or key path, a file that is not a capture,
``--flows`` without ``--decrypt`` -- or when the capture could not be read to its end
(everything before the damage is still printed, then ``multisa: error: FILE: frame N,
offset K: reason``). Besides the MS4xx sequence findings the text and JSON carry every other
finding ``multisa lint`` reports for the capture (MS1xx-MS3xx IKE rules, MS9xx decoding),
since the same pass judged them.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO

from dissectors.keys import KeyStore

from . import cli_common
from .esp_analysis import EspResult, analyze_esp
from .esp_events import EspSaView, EspSettings
from .esp_seq import DEFAULT_WINDOW, MAX_WINDOW
from .pipeline import progress_bar

EXIT_OK, EXIT_ERROR = 0, 2


def _window(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 1 <= n <= MAX_WINDOW:
        raise argparse.ArgumentTypeError(f"the replay window is 1..{MAX_WINDOW} packets")
    return n


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``esp`` to the ``multisa`` subparsers."""
    p = sub.add_parser("esp", help="per-SA ESP sequence analysis, grouped by Child SA group",
                       description="Per-SA ESP sequence analysis, grouped by Child SA group.",
                       epilog="Prints the per-SA table, then the MS4xx sequence findings and the other "
                              "findings `multisa lint` reports for the capture (MS1xx-MS3xx, MS9xx). "
                              "Exit status: 0 whatever the findings (`multisa lint` exits 1 on them); "
                              "2 on bad input or a capture that breaks off (what was read is printed).")
    p.add_argument("capture", help=cli_common.CAPTURE_HELP)
    cli_common.add_keys(p)
    cli_common.add_format(p)
    cli_common.add_output(p)
    p.add_argument("--decrypt", action="store_true",
                   help="verify ICVs and decrypt ESP (esp_sa keys, or keys derived from SK_d)")
    p.add_argument("--sk-d", action="append", metavar="FILE",
                   help="SPIi,SPIr,SK_d[,PRF] lines: derive every non-PFS Child SA's keys (implies --decrypt)")
    p.add_argument("--window", type=_window, default=DEFAULT_WINDOW, metavar="N",
                   help=f"anti-replay window in packets (default {DEFAULT_WINDOW}; strongSwan installs 32)")
    p.add_argument("--engine", choices=("auto", "c", "python"), default="auto",
                   help="sequence-analysis engine (default: the C extension when built)")
    p.add_argument("--flows", action="store_true", help="with --decrypt: list inner flows per SA")
    p.set_defaults(func=cmd_esp)
    return p


def _load(args: argparse.Namespace, beside: list[str] | tuple = ()) -> KeyStore:
    return cli_common.load_keys((args.keys or []) + (args.sk_d or []), beside)


def cmd_esp(args: argparse.Namespace) -> int:
    decrypt = args.decrypt or bool(args.sk_d)
    if args.flows and not decrypt:
        raise cli_common.UsageError("--flows lists decrypted inner flows: add --decrypt (or --sk-d FILE)")
    inputs = cli_common.resolve_captures([args.capture])
    for n, item in enumerate(inputs):
        if len(inputs) > 1 and args.format != "json":
            print(("\n" if n else "") + f"==> {item.name} <==", flush=True)
        rc = _esp_one(args, item, decrypt)
        if rc:
            return rc
    return EXIT_OK


def _esp_one(args: argparse.Namespace, item, decrypt: bool) -> int:
    keys = _load(args, item.beside)
    settings = EspSettings(window=args.window)
    try:
        with progress_bar(item.path, sys.stderr.isatty()) as update:  # rich on a terminal, else nothing
            result = analyze_esp(item.path, keys, esp_settings=settings, decrypt=decrypt, engine=args.engine,
                                 progress=update)
    except ValueError as err:  # e.g. --engine c without the extension
        print(f"multisa: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    if args.format == "json":
        json.dump(result_to_dict(result), sys.stdout)
        sys.stdout.write("\n")
    else:
        render_text(result, sys.stdout, decrypt=decrypt, flows=args.flows)
    sys.stdout.flush()
    if result.error:
        print(f"multisa: error: {result.error}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


# --------------------------------------------------------------------------------------
# Output


def _hex(b: bytes | None) -> str | None:
    return None if b is None else b.hex()


def sa_to_dict(v: EspSaView) -> dict:
    t = v.tracker
    return {
        "spi": f"{t.spi:08x}", "src": t.src, "dst": t.dst, "encap": t.encap, "esn": t.esn,
        "packets": t.packets, "bytes": t.bytes, "first_time": t.first_ts, "last_time": t.last_ts,
        "first_frame": t.first_frame, "last_frame": t.last_frame, "rate": round(t.rate(), 3),
        "first_seq": t.first_seq, "last_seq": t.last_seq, "highest_seq": t.highest_seq,
        "lowest_seq": t.lowest, "replays": t.replays, "gaps": t.gaps, "late": t.late, "reorders": t.reorders, "wraps": t.wraps,
        "decrypted": v.decrypted, "icv_failures": v.icv_failures, "undecryptable": v.undecryptable,
        "key": v.key_source, "key_note": v.key_note if v.key_source is None else None,
        "group": v.group_id, "direction": v.direction,
        "role": v.child.role if v.child is not None else None,
        "resource_id": _hex(v.receiver_resource_id),
        "child_sa": v.child.label if v.child is not None else None,
        "flows": [{"src": f.src, "dst": f.dst, "proto": f.proto, "sport": f.sport, "dport": f.dport,
                   "packets": n} for f, n in v.flows.most_common()],
        "other_flows": v.other_flows,
    }


def ah_to_dict(t) -> dict:
    """An AH SA (RFC 4302): its SPI and sequence numbers, judged as ESP's are."""
    return {"spi": f"{t.spi:08x}", "src": t.src, "dst": t.dst, "packets": t.packets,
            "first_frame": t.first_frame, "last_frame": t.last_frame, "first_seq": t.first_seq,
            "last_seq": t.last_seq, "highest_seq": t.highest_seq, "replays": t.replays, "gaps": t.gaps,
            "late": t.late, "reorders": t.reorders}


def result_to_dict(r: EspResult) -> dict:
    return {
        "capture": r.path, "engine": r.engine, "window": r.sas[0].tracker.window if r.sas else None,
        "frames": r.frames, "error": r.error,
        "counters": _counters(r),
        "groups": [{"id": i, "label": g.label, "ike_spis": g.lineage.current.spis, "lineage": g.lineage.index}
                   for i, g in enumerate(r.groups, 1)],
        "sas": [sa_to_dict(v) for v in r.sas],
        "ah_sas": [ah_to_dict(t) for t in r.ah],
        "findings": [f.to_dict() for f in r.findings],
    }


def _counters(r: EspResult) -> dict[str, int]:
    out = {"esp": r.counters.esp, "esp_in_udp": r.counters.esp_in_udp, "keepalives": r.counters.keepalives,
           "esp_truncated": r.counters.esp_truncated}
    if r.stats is not None:
        st = r.stats
        out.update(ip_fragments=st.ip_fragments, reassembled=st.reassembled,
                   reassembly_dropped=st.reassembly_dropped, truncated=st.truncated, malformed=st.malformed,
                   skipped_linktype=st.skipped_linktype, not_ip=st.not_ip, other_proto=st.other_proto)
    return out


_COUNTER_TEXT = (("esp_truncated", "ESP packets too short for SPI and Sequence Number (not accounted)"),
                 ("ip_fragments", "IP fragments"), ("reassembled", "datagrams reassembled from fragments"),
                 ("reassembly_dropped", "incomplete reassemblies dropped"),
                 ("truncated", "packets cut by the snap length"), ("malformed", "malformed link/IP/UDP headers"),
                 ("skipped_linktype", "frames on an unsupported link type"))


def _seq_range(v: EspSaView) -> str:
    t = v.tracker
    return f"{t.first_seq}..{t.last_seq}"


def render_text(r: EspResult, out: TextIO, decrypt: bool = False, flows: bool = False) -> None:
    total = sum(v.tracker.packets for v in r.sas)
    from .report.text import plural

    out.write(f"{r.path}: {plural(len(r.sas), 'ESP SA')}, {plural(total, 'ESP packet')} in "
              f"{plural(r.frames, 'frame')} (engine {r.engine})\n")
    head = ["SPI", "dir", "role", "resource", "dst", "packets", "bytes", "pkt/s", "seq first..last",
            "replays", "gaps", "reorders"]
    if decrypt:
        head += ["decrypted", "key"]

    def row(v: EspSaView) -> list[str]:
        t = v.tracker
        rid = v.receiver_resource_id
        cells = [f"{t.spi:08x}", v.direction or "?", v.child.role if v.child else "-",
                 (rid.hex() or "(empty)") if rid is not None else "-", t.dst + (" udp" if t.encap else ""),
                 str(t.packets), str(t.bytes), f"{t.rate():.1f}", _seq_range(v), str(t.replays), str(t.gaps),
                 str(t.reorders)]
        if decrypt:
            cells.append(f"{v.decrypted}" + (f" ({v.icv_failures} ICV failed)" if v.icv_failures else ""))
            cells.append(v.key_source or (v.key_note or "no key"))
        return cells

    def table(rows: list[list[str]]) -> None:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
        out.write("  " + "  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip() + "\n")
        for cells in rows:
            out.write("  " + "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() + "\n")

    for gid, g in enumerate(r.groups, 1):
        views = [v for v in r.sas if v.group_id == gid]
        out.write(f"\ngroup {gid}: {g.label}   IKE SA {g.lineage.current.spis}\n")
        if views:
            table([row(v) for v in views])
        else:
            out.write("  (no ESP)\n")
        _flows(views, out, flows)
    unknown = [v for v in r.sas if v.group_id is None]
    if unknown:
        out.write("\nSPIs no captured IKE exchange negotiated:\n")
        table([row(v) for v in unknown])
        _flows(unknown, out, flows)
    if r.ah:
        out.write("\nAH SAs (RFC 4302):\n")
        for t in r.ah:
            out.write(f"  {t.spi:08x}  {t.src} -> {t.dst}  {t.packets} packets  seq {t.first_seq}..{t.last_seq}  "
                      f"replays {t.replays}  gaps {t.gaps}  reorders {t.reorders}\n")
    counters = _counters(r)
    notes = [f"{counters[k]} {text}" for k, text in _COUNTER_TEXT if counters.get(k)]
    if notes:
        out.write("\n" + "; ".join(notes) + "\n")
    if r.findings:
        out.write("\n")
        for f in r.findings:
            frame = f.frames[0] if f.frames else 0
            out.write(f"{f.source or r.path}:{frame}: {f.code} {f.message} [{f.citation}]\n")


def _flows(views: list[EspSaView], out: TextIO, enabled: bool) -> None:
    if not enabled:
        return
    for v in views:
        if v.flows or v.other_flows:
            out.write(f"    {v.spi:08x} inner flows:\n")
            for f, n in v.flows.most_common():
                out.write(f"      {f}  {n} packets\n")
            if v.other_flows:
                out.write(f"      ... {v.other_flows} packets of other flows\n")

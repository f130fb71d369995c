"""``multisa tui``: ``register(sub)`` adds the subcommand; textual is imported only when it runs.

    multisa tui CAPTURE [--keys K]... [--xfrm SNAPSHOT]... [--peer-status PATH]...
    multisa tui --live [--iface IF] [--netns NS] [--keys K]... [--peer-status PATH]...

Returns ruff's exit codes (0 ok, 2 usage problems: a missing capture or key path), printed as
one line on stderr, never a traceback. Problems met while running (a damaged capture, a lost
interface, a vanished namespace, no privileges) are shown inside the TUI instead.
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_OK, EXIT_ERROR = 0, 2
KEYS_HELP = ("key file or directory: Wireshark's ikev2_decryption_table / esp_sa as strongSwan's "
             "save-keys writes them (repeatable)")


def cmd_tui(args: argparse.Namespace) -> int:
    from analyzer.cli_common import UsageError

    try:
        capture, beside = _check(args)
    except UsageError as err:
        print(f"multisa: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    try:
        from .app import MultisaApp
    except ImportError as err:  # textual missing from a partial install
        print(f"multisa: error: the TUI needs textual ({err})", file=sys.stderr)
        return EXIT_ERROR
    app = MultisaApp(capture, (args.keys or []) + beside, args.xfrm, live=args.live, iface=args.iface,
                     netns=args.netns, peer_status=args.peer_status, poll_xfrm=not args.no_xfrm_poll)
    app.run()
    return EXIT_OK


def _check(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """The same one-line refusals as every other command (``analyzer.cli_common``): a missing
    path, a directory without exactly one capture, a file that is not a capture, a capture given
    as a key file; and a TUI needs a terminal on both ends (without one Textual would spin)."""
    from analyzer.cli_common import UsageError, check_key_path, one_capture

    if not args.live and not args.capture:
        raise UsageError("tui needs a CAPTURE file or --live")
    if args.live and args.capture:
        raise UsageError("tui takes a CAPTURE file or --live, not both")
    if (args.iface or args.netns) and not args.live:
        raise UsageError("--iface and --netns need --live")
    capture, beside = None, []
    if args.capture:
        if args.capture == "-":
            raise UsageError("-: the TUI reads its keyboard from stdin: give the capture as a file")
        found = one_capture(args.capture)
        capture, beside = found.path, found.beside
    for path in [] if args.live else args.keys or []:  # live: key files may come with the SAs
        check_key_path(path)
    for path in (args.xfrm or []) + ([] if args.live else (args.peer_status or [])):
        if not os.path.exists(path):
            raise UsageError(f"{path}: no such file or directory")
    for name, stream in (("stdin", sys.stdin), ("stdout", sys.stdout)):
        try:
            tty = stream is not None and stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        if not tty:
            raise UsageError(f"tui needs a terminal ({name} is not one): use `multisa lint` or "
                             "`multisa monitor` without one")
    return capture, beside


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``tui`` to the ``multisa`` subparsers."""
    p = sub.add_parser("tui", help="Textual UI: Child SA groups, findings, packets (capture file or --live)")
    p.add_argument("capture", nargs="?", help="pcap or pcapng file (omit with --live)")
    p.add_argument("--keys", "-k", action="append", metavar="PATH", help=KEYS_HELP)
    p.add_argument("--xfrm", action="append", metavar="SNAPSHOT",
                   help="kernel XFRM state beside the capture: `multisa xfrm snapshot` JSON Lines, a "
                        "*.xfrm-sa.json dump or `ip -s xfrm state` text (repeatable; per-CPU counters)")
    p.add_argument("--live", action="store_true", help="capture live (dumpcap, else scapy), poll XFRM over netlink")
    p.add_argument("--iface", "-i", metavar="IF", help="interface for --live (default: any)")
    p.add_argument("--netns", metavar="NS", help="network namespace for --live capture and XFRM polling")
    p.add_argument("--peer-status", action="append", metavar="PATH",
                   help="the reference peer's --status-file (repeatable; polled in --live)")
    p.add_argument("--no-xfrm-poll", action="store_true", help="--live without netlink XFRM polling")
    p.set_defaults(func=cmd_tui)
    return p


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m tui.commands``), the same as ``multisa tui``."""
    parser = argparse.ArgumentParser(prog="multisa")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

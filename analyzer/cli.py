"""The ``multisa`` command line.

Exit codes follow ruff: 0 clean, 1 findings (lint), 2 abnormal (bad input, missing tool).
Errors are one line on stderr, never a traceback; what was analyzed before an error is
still printed. Key material never reaches any output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator

from dissectors.capture import CaptureError, iter_datagrams
from dissectors.ikev2 import IkeMessage, ike_messages
from dissectors.ikev2.export import message_to_dict
from dissectors.keys import KeyStore, load_keys

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


class UsageError(Exception):
    """A one-line problem with the command's input (file, key, tool)."""


def _load_keys(paths: list[str] | None) -> KeyStore:
    store = load_keys(paths or [])
    for problem in store.problems:
        print(f"multisa: warning: {problem}", file=sys.stderr)
    return store


def _messages(path: str, keys: KeyStore) -> Iterator[IkeMessage]:
    return ike_messages(iter_datagrams(path), keys)


def cmd_show(args: argparse.Namespace) -> int:
    if args.engine == "tshark":
        return _show_tshark(args)
    from analyzer.report.tree import render_message

    keys = _load_keys(args.keys)
    if args.json:
        out = sys.stdout
        out.write('{"messages": [')
        first = True
        try:
            for msg in _messages(args.capture, keys):
                out.write(("" if first else ",") + "\n  " + json.dumps(message_to_dict(msg)))
                first = False
        finally:
            out.write("\n]}\n")
            out.flush()
        return EXIT_OK
    for msg in _messages(args.capture, keys):
        print(render_message(msg))
        print()
    return EXIT_OK


def _show_tshark(args: argparse.Namespace) -> int:
    from dissectors.tshark import TsharkError, tshark_messages

    try:
        messages = tshark_messages(args.capture, args.keys or [])
    except TsharkError as err:
        raise UsageError(str(err)) from None
    if not args.json:
        raise UsageError("--engine tshark prints the JSON contract only: add --json")
    json.dump({"messages": messages}, sys.stdout, indent=None)
    print()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multisa", description="Analyzer for IPsec per-resource Child SAs (RFC 9611).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keys_help = ("key file or directory: Wireshark's ikev2_decryption_table / esp_sa as "
                 "strongSwan's save-keys writes them (repeatable)")
    show = sub.add_parser("show", help="decode and decrypt every IKEv2 message (like tshark -V)")
    show.add_argument("capture", help="pcap or pcapng file")
    show.add_argument("--keys", "-k", action="append", metavar="PATH", help=keys_help)
    show.add_argument("--json", action="store_true", help="one JSON document (see README)")
    show.add_argument("--engine", choices=("multisa", "tshark"), default="multisa",
                      help="tshark: the same JSON from tshark via pyshark, to cross-check")
    show.set_defaults(func=cmd_show)

    from analyzer import commands, esp_commands, monitor, xfrm_commands
    from peer import cli as peer_cli
    from tui import commands as tui_commands

    commands.register(sub)
    esp_commands.register(sub)
    monitor.register(sub)
    xfrm_commands.register(sub)
    tui_commands.register(sub)
    peer_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CaptureError as err:
        sys.stdout.flush()
        print(f"multisa: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except (UsageError, OSError) as err:
        if isinstance(err, BrokenPipeError):
            return EXIT_OK
        print(f"multisa: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

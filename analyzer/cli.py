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
from dissectors.keys import KeyStore

from . import cli_common
from .cli_common import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, UsageError  # noqa: F401  (re-exported)


def _load_keys(paths: list[str] | None, beside: list[str] | tuple = ()) -> KeyStore:
    return cli_common.load_keys(paths, beside)


def _messages(path: str, keys: KeyStore) -> Iterator[IkeMessage]:
    return ike_messages(iter_datagrams(path), keys)


def frame_selection(text: str | None, count: int | None):
    """``--frames 10-20,25,30-`` and ``-c N`` (tshark's: the first N frames) as (predicate,
    last frame needed or None)."""
    ranges: list[tuple[int, float]] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        try:
            a = int(lo) if lo else 1
            b = (int(hi) if hi else float("inf")) if dash else a
        except ValueError:
            raise UsageError(f"--frames {text}: frame numbers or ranges like 10-20,25,30-") from None
        if a < 1 or b < a:
            raise UsageError(f"--frames {text}: {part} is not a range of frame numbers (1-based)")
        ranges.append((a, b))
    if count is not None:
        ranges = [(a, min(b, count)) for a, b in ranges if a <= count] if ranges else [(1, count)]
        if not ranges:
            ranges = [(1, 0)]
    if not ranges:
        return (lambda n: True), None
    last = max(b for _, b in ranges)
    return (lambda n: any(a <= n <= b for a, b in ranges)), (None if last == float("inf") else int(last))


def _is_esp(d) -> bool:
    if d.proto == 50:
        return True
    if 4500 not in (d.sport, d.dport) or len(d.payload) < 8:
        return False
    return d.payload[:4] != b"\0\0\0\0"  # not behind the Non-ESP marker (IKE), not a keepalive


def cmd_show(args: argparse.Namespace) -> int:
    inputs = cli_common.resolve_captures([args.capture])
    for n, item in enumerate(inputs):
        if len(inputs) > 1 and args.format != "json":
            print(f"==> {item.name} <==")
        if args.engine == "tshark":
            rc = _show_tshark(args, item)
        else:
            rc = _show_one(args, item, first=n == 0, last=n == len(inputs) - 1, many=len(inputs) > 1)
        if rc:
            return rc
    return EXIT_OK


def _show_one(args: argparse.Namespace, item, first: bool = True, last: bool = True, many: bool = False) -> int:
    from analyzer.report.tree import render_esp, render_message

    keys = _load_keys(args.keys, item.beside)
    wanted, stop = frame_selection(getattr(args, "frames", None), getattr(args, "count", None))
    text = args.format != "json"

    def datagrams():
        for d in iter_datagrams(item.path):
            if stop is not None and d.frame.index > stop:
                return
            if _is_esp(d):
                if text and wanted(d.frame.index):
                    print(render_esp(d.frame, d.src, d.dst, d.sport, d.dport, d.payload,
                                     keys.esp_keys(d.dst, int.from_bytes(d.payload[:4], "big"))))
                    print()
                continue
            yield d

    messages = (m for m in ike_messages(datagrams(), keys) if m.frame is None or wanted(m.frame.index))
    if not text:
        out = sys.stdout
        out.write(("[" if many and first else "") + '{"messages": [')
        sep = ""
        try:
            for msg in messages:
                out.write(sep + "\n  " + json.dumps(message_to_dict(msg)))
                sep = ","
        finally:
            out.write("\n]}" + ((",\n" if not last else "]\n") if many else "\n"))
            out.flush()
        return EXIT_OK
    for msg in messages:
        print(render_message(msg))
        print()
    return EXIT_OK


def _show_tshark(args: argparse.Namespace, item) -> int:
    from dissectors.tshark import TsharkError, tshark_messages

    for path in args.keys or []:
        cli_common.check_key_path(path)
    if args.format != "json":
        raise UsageError("--engine tshark prints the JSON contract only: add --json")
    try:
        messages = tshark_messages(item.path, (args.keys or []) + item.beside)
    except TsharkError as err:
        raise UsageError(str(err)) from None
    json.dump({"messages": messages}, sys.stdout, indent=None)
    print()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="multisa", description="Analyzer for IPsec per-resource Child SAs (RFC 9611).")
    parser.add_argument("--version", action="version", version=f"multisa {cli_common.version()}")
    parser.add_argument("--debug", action="store_true",
                        help="on an internal error, print the traceback (also accepted after the command)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    show = sub.add_parser("show", help="decode and decrypt every IKEv2 message (like tshark -V)")
    show.add_argument("capture", help=cli_common.CAPTURE_HELP)
    cli_common.add_keys(show)
    cli_common.add_format(show)
    cli_common.add_output(show)
    show.add_argument("--engine", choices=("multisa", "tshark"), default="multisa",
                      help="tshark: the same JSON from tshark via pyshark, to cross-check")
    show.add_argument("-c", "--count", type=cli_common.positive_int, metavar="N",
                      help="read only the first N frames (as tshark -c)")
    show.add_argument("--frames", metavar="RANGES", help="only these frames, e.g. 10-20,25,30-")
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
    _tag_parsers(parser)
    return parser


def _tag_parsers(parser: argparse.ArgumentParser) -> None:
    """Each (sub)command's parser remembers itself, so that an unknown option prints the
    usage of the command it was given to, not the top-level one."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in set(action.choices.values()):
                child.set_defaults(_parser=child)
                _tag_parsers(child)


def _redirect_output(args: argparse.Namespace):
    """``-o FILE`` for commands that print their report to stdout."""
    path = getattr(args, "output", None)
    if not path or getattr(args, "command", None) not in ("show", "groups", "esp"):
        return None
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as err:
        raise UsageError(f"{path}: cannot write: {err.strerror or err}") from None


def main(argv: list[str] | None = None) -> int:
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:cut] or bool(os.environ.get("MULTISA_DEBUG"))
    argv = [a for i, a in enumerate(argv) if not (a == "--debug" and i < cut)]
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        getattr(args, "_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    cli_common.install_renaming()
    saved = sys.stdout
    try:
        out = _redirect_output(args)
        if out is not None:
            sys.stdout = cli_common._Renaming(out)
        try:
            return args.func(args)
        finally:
            if out is not None:
                sys.stdout.flush()
                sys.stdout = saved
                out.close()
    except CaptureError as err:
        sys.stdout.flush()
        print(f"multisa: error: {cli_common.display(str(err))}", file=sys.stderr)
        return EXIT_ERROR
    except (UsageError, OSError) as err:
        if isinstance(err, BrokenPipeError):
            _quiet_broken_pipe()
            return EXIT_OK
        if isinstance(err, OSError) and not isinstance(err, UsageError):
            where = getattr(err, "filename", None) or cli_common.input_of(args)
            text = f"{where}: {err.strerror or err}"
        else:
            text = str(err)
        print(f"multisa: error: {cli_common.display(text)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    except Exception as err:  # the last resort: a bug is never exit 1 ("findings") nor a traceback
        try:
            sys.stdout.flush()
        except Exception:
            pass
        if debug:
            import traceback

            traceback.print_exc()
        print(cli_common.internal_error_line(args, err), file=sys.stderr)
        return EXIT_ERROR


def _quiet_broken_pipe() -> None:
    """``multisa show … | head``: stop quietly, and keep Python from complaining at exit."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


if __name__ == "__main__":
    sys.exit(main())

"""What every ``multisa`` command shares on its command line, defined once.

- exit codes (ruff's: 0 clean, 1 findings, 2 input/usage/internal error) and ``UsageError``;
- option spellings: ``-k/--keys``, ``-f/--format`` (``--json`` kept as an alias of
  ``--format json``), ``-o/--output`` (``add_keys``, ``add_format``, ``add_output``);
- key paths: a missing or unreadable path is a ``UsageError`` (exit 2, one line) for every
  command, and a capture given as a key file says so in one line (``load_keys``);
- capture inputs (``resolve_captures``): a directory is walked for pcap/pcapng files (by
  their magic, sorted) and the key files beside each capture are used for it (``-k`` adds
  to them); ``-`` reads the capture from stdin (spooled to a private temporary file, shown
  as ``-`` in every output); a missing path, a directory without captures or a file that is
  not a capture gives the same one line everywhere;
- colour: on a terminal only, ``NO_COLOR`` honoured, ``FORCE_COLOR`` forces it;
- positive-number argument types so that ``--jobs -1``, ``--duration -1`` are refused;
- the last-resort handler's message (``internal_error_line``): one line naming the input
  and what failed, long hex runs (key material?) withheld.
"""

from __future__ import annotations

import argparse
import atexit
import gzip
import io
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2

KEYS_HELP = ("key file or directory: Wireshark's ikev2_decryption_table / esp_sa as strongSwan's "
             "save-keys writes them, multisa's ikev2_sk_d (repeatable; a directory of captures "
             "also uses the key files beside each capture)")
CAPTURE_HELP = "pcap or pcapng file, a directory of them, or - for stdin"
STDIN = "-"


class UsageError(Exception):
    """A one-line problem with the command's input (file, key, tool, option values)."""


def version() -> str:
    try:
        from importlib.metadata import version as _v

        return _v("multisa")
    except Exception:  # not installed (running from a checkout)
        return "0.1.0"


# --- options -----------------------------------------------------------------------------------


def add_keys(p: argparse.ArgumentParser, help: str = KEYS_HELP) -> None:
    p.add_argument("-k", "--keys", action="append", metavar="PATH", help=help)


def add_format(p: argparse.ArgumentParser, choices: tuple[str, ...] = ("text", "json"),
               default: str | None = "text") -> None:
    """``-f/--format`` plus ``--json`` (an alias of ``--format json``); both set ``args.format``."""
    p.add_argument("-f", "--format", choices=choices, default=default,
                   help=f"output format (default {default or 'text'})")
    p.add_argument("--json", dest="format", action="store_const", const="json",
                   help="same as --format json")


def add_output(p: argparse.ArgumentParser, dest: str = "output") -> None:
    p.add_argument("-o", "--output", dest=dest, metavar="FILE",
                   help="write the report to FILE instead of stdout")


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {n}")
    return n


def non_negative_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {n}")
    return n


def non_negative_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not x >= 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of 0 or more, not {text}")
    return x


def positive_float(text: str) -> float:
    try:
        x = non_negative_float(text)
    except argparse.ArgumentTypeError:
        x = -1.0
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be a finite number more than 0, not {text}")
    return x


def refuse_together(args: argparse.Namespace, *names: str) -> None:
    """``--config F --isolated``: options that contradict each other are a usage error."""
    given = [n for n in names if getattr(args, n.lstrip("-").replace("-", "_"), None)]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} contradict each other: give one")


# --- colour ------------------------------------------------------------------------------------


def color_enabled(stream=None) -> bool:
    """Colour on a terminal only; ``NO_COLOR`` (any value, https://no-color.org) turns it off,
    ``FORCE_COLOR`` on."""
    stream = sys.stdout if stream is None else stream
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


_SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "blue": "34",
        "magenta": "35", "cyan": "36", "bold-red": "1;31", "bold-green": "1;32"}


def paint(text: str, style: str, enabled: bool) -> str:
    return f"\x1b[{_SGR[style]}m{text}\x1b[0m" if enabled and text else text


# --- key paths ---------------------------------------------------------------------------------

_PCAP_MAGICS = (b"\xa1\xb2\xc3\xd4", b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\x3c\x4d", b"\x4d\x3c\xb2\xa1",
                b"\x0a\x0d\x0d\x0a")


def is_capture(path: str) -> bool:
    """Does the file start like a pcap or pcapng (possibly gzipped)?"""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            if head[:2] == b"\x1f\x8b":
                with gzip.open(path, "rb") as g:
                    head = g.read(4)
    except (OSError, EOFError):
        return False
    return head in _PCAP_MAGICS


def check_key_path(path: str) -> None:
    if not os.path.exists(path):
        raise UsageError(f"{path}: no such file or directory")
    if os.path.isfile(path) and is_capture(path):
        raise UsageError(f"{path}: this is a capture, not a key file (give the folder holding the "
                         "key files, or the ikev2_decryption_table / esp_sa file itself)")


def load_keys(paths: list[str] | None, beside: list[str] | tuple = (), warn=None):
    """A KeyStore from ``-k`` paths plus the key folders ``beside`` captures. A missing,
    unreadable or empty key path, or a capture given as a key file, is a UsageError; a bad
    line in a key file is a warning (the other lines still load)."""
    from dissectors.keys import KeyStore

    warn = warn or (lambda text: print(f"multisa: warning: {text}", file=sys.stderr))
    paths = list(paths or [])
    for path in paths:
        check_key_path(path)
    store = KeyStore()
    for path in [*paths, *beside]:
        store.load(path)
    for problem in store.problems:
        if problem.line == 0 and problem.path in paths:
            raise UsageError(str(problem))
        if problem.line != 0:
            warn(str(problem))
    return store


# --- capture inputs ----------------------------------------------------------------------------


@dataclass
class CaptureInput:
    path: str  # what to open
    name: str  # what to show (the argument, or "-" for stdin)
    beside: list[str] = field(default_factory=list)  # key folders found beside the capture


_DISPLAY: dict[str, str] = {}  # spooled stdin file -> "-"


def display(text: str) -> str:
    """Replace the spooled stdin file's private path by ``-`` in an output text."""
    for real, shown in _DISPLAY.items():
        if real in text:
            text = text.replace(real, shown)
    return text


def _spool_stdin() -> str:
    stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin
    try:
        if stream.isatty():
            raise UsageError("-: stdin is a terminal: pipe a capture in (cat c.pcap | multisa lint - -k KEYS)")
    except (AttributeError, ValueError):
        pass
    folder = tempfile.mkdtemp(prefix="multisa-stdin-")
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "stdin")
    with open(path, "wb") as out:
        shutil.copyfileobj(stream, out, 1 << 20)
    _DISPLAY[path] = STDIN
    return path


def _key_folder(folder: str) -> bool:
    from dissectors.keys import kind_of_name

    try:
        return any(kind_of_name(n) and os.path.isfile(os.path.join(folder, n)) for n in os.listdir(folder))
    except OSError:
        return False


def _walk(root: str) -> list[str]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            if is_capture(path):
                found.append(path)
    return found


def resolve_captures(paths: list[str], check_format: bool = True) -> list[CaptureInput]:
    """The captures the arguments name, in order. ``check_format=False`` leaves a file that
    is not a capture to the reader (``lint`` reports it and goes on with the others)."""
    out: list[CaptureInput] = []
    for arg in paths:
        if arg == STDIN:
            out.append(CaptureInput(_spool_stdin(), STDIN))
        elif os.path.isdir(arg):
            found = _walk(arg)
            if not found:
                raise UsageError(f"{arg}: no pcap or pcapng files in this directory")
            for path in found:
                folder = os.path.dirname(path)
                out.append(CaptureInput(path, path, [folder] if _key_folder(folder) else []))
        elif not os.path.exists(arg):
            raise UsageError(f"{arg}: no such file or directory")
        elif check_format and os.path.isfile(arg) and not is_capture(arg):
            if not os.access(arg, os.R_OK):
                raise UsageError(f"{arg}: permission denied")
            raise UsageError(f"{arg}: not a pcap or pcapng file")
        else:
            out.append(CaptureInput(arg, arg))
    return out


def one_capture(path: str) -> CaptureInput:
    """For commands that read one capture: the path, a directory with exactly one capture, or -."""
    found = resolve_captures([path])
    if len(found) > 1:
        raise UsageError(f"{path}: {len(found)} captures in this directory: name one, "
                         "or use `multisa lint DIR`")
    return found[0]


# --- output ------------------------------------------------------------------------------------


class _Renaming(io.TextIOBase):
    """A text stream that shows the spooled stdin file as ``-``."""

    def __init__(self, inner):
        self.inner = inner

    def write(self, s: str) -> int:
        self.inner.write(display(s) if _DISPLAY else s)
        return len(s)

    def flush(self) -> None:
        self.inner.flush()

    def isatty(self) -> bool:
        return self.inner.isatty()

    def fileno(self) -> int:
        return self.inner.fileno()

    @property
    def encoding(self):  # type: ignore[override]
        return getattr(self.inner, "encoding", "utf-8")


def install_renaming() -> None:
    if not isinstance(sys.stdout, _Renaming):
        sys.stdout = _Renaming(sys.stdout)
    if not isinstance(sys.stderr, _Renaming):
        sys.stderr = _Renaming(sys.stderr)


def write_output(text: str, path: str | None) -> None:
    """The report to ``-o FILE`` (one-line error if it cannot be written) or to stdout."""
    text = display(text)
    if path and path != STDIN:
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as err:
            raise UsageError(f"{path}: cannot write: {err.strerror or err}") from None
    else:
        sys.stdout.write(text)
        sys.stdout.flush()


# --- the last-resort handler -------------------------------------------------------------------

_HEX_RUN = re.compile(r"(?:[0-9a-fA-F]{2}[:\s]?){12,}")
_INPUT_ATTRS = ("capture", "captures", "file", "snapshot", "out", "listen", "connect")


def input_of(args: argparse.Namespace | None) -> str:
    for name in _INPUT_ATTRS:
        value = getattr(args, name, None)
        if value:
            return display(", ".join(value) if isinstance(value, list) else str(value))
    return getattr(args, "command", None) or "the command line"


def internal_error_line(args: argparse.Namespace | None, err: BaseException) -> str:
    """``multisa: error: FILE: internal error in X: Type: message`` -- one line, no key."""
    import traceback

    tb = traceback.extract_tb(err.__traceback__)
    where = f" in {os.path.basename(tb[-1].filename)}:{tb[-1].lineno}" if tb else ""
    text = " ".join(str(err).split())
    text = _HEX_RUN.sub("<withheld>", text)
    if len(text) > 160:
        text = text[:157] + "..."
    what = type(err).__name__ + (f": {text}" if text else "")
    return (f"multisa: error: {input_of(args)}: internal error{where}: {what} "
            "(a bug: --debug shows the traceback)")

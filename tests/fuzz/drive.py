"""What the targets use to build inputs and to drive the ``multisa`` command line in-process.

- ``mutate(rng, data)``: one to a few byte-level changes (bit flips, interesting values,
  inserted/deleted/duplicated ranges, truncation), AFL-style.
- ``cli(argv)``: ``analyzer.cli.main`` with stdout/stderr captured: (exit code, out, err).
- ``check_cli(...)``: the command line's contract on any input: exit 0, 1 (findings) or 2; on 2
  one line on stderr that names the input, never "internal error" (the last-resort handler
  caught a bug: a crash); no traceback; no key window in stdout or stderr.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import struct
import tempfile
from random import Random

from .common import FuzzProblem, Secrets, check_one_line_error

INTERESTING_8 = (0, 1, 0x7F, 0x80, 0xFF)
INTERESTING_16 = (0, 1, 3, 4, 8, 0x7FFF, 0x8000, 0xFFFF)
INTERESTING_32 = (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x10000, 0x1000000)


def mutate(rng: Random, data: bytes, max_ops: int = 4) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, max_ops)):
        op = rng.randrange(9)
        n = len(buf)
        if op == 0 and n:  # flip a bit
            i = rng.randrange(n)
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # a random byte
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n:  # an interesting 8-bit value
            buf[rng.randrange(n)] = rng.choice(INTERESTING_8)
        elif op == 3 and n >= 2:  # an interesting 16-bit value, either order
            i = rng.randrange(n - 1)
            buf[i:i + 2] = struct.pack(rng.choice("<>") + "H", rng.choice(INTERESTING_16))
        elif op == 4 and n >= 4:
            i = rng.randrange(n - 3)
            buf[i:i + 4] = struct.pack(rng.choice("<>") + "I", rng.choice(INTERESTING_32))
        elif op == 5 and n:  # delete a range
            i = rng.randrange(n)
            del buf[i:i + rng.randint(1, min(32, n - i))]
        elif op == 6:  # insert random bytes
            i = rng.randint(0, n)
            buf[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 7 and n:  # duplicate a range
            i = rng.randrange(n)
            j = min(n, i + rng.randint(1, 64))
            k = rng.randint(0, n)
            buf[k:k] = buf[i:j]
        elif op == 8 and n:  # truncate
            del buf[rng.randrange(n):]
    return bytes(buf)


_NOT_HEX = re.compile(r"[^0-9a-f]")


def leaked(secrets: Secrets, text: str | bytes) -> str | None:
    """``Secrets.leaked`` (the same two views: the output's hex digits run together, and the
    hex of its octets), by one set intersection over the output's 16-digit windows instead of
    one search per key window: the same answer, ~50x faster on long outputs."""
    if not secrets.windows:
        return None
    if isinstance(text, bytes):
        hexed = text.hex()
        text = text.decode("latin-1")
    else:
        hexed = text.encode("latin-1", "replace").hex()
    flat = _NOT_HEX.sub("", text.lower())
    found = {flat[i:i + 16] for i in range(len(flat) - 15)} & secrets.windows
    if not found:
        found = {hexed[i:i + 16] for i in range(0, len(hexed) - 15)} & secrets.windows
    return min(found) if found else None


def no_leak(secrets: Secrets, *outputs: str | bytes) -> None:
    """``check_no_leak``, with the output that shows the window kept for ``--replay``."""
    for out in outputs:
        w = leaked(secrets, out)
        if w:
            raise FuzzProblem("leak", f"key window {w[:4]}… in output", out if isinstance(out, str) else None)


def cli(argv: list[str], stdin: bytes | None = None) -> tuple[int, str, str]:
    from analyzer.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as exc:  # argparse: a usage error is exit 2 too
            rc = exc.code if isinstance(exc.code, int) else 2
    return rc, out.getvalue(), err.getvalue()


def check_cli(argv: list[str], secrets: Secrets, names: tuple[str, ...], what: str) -> tuple[int, str, str]:
    """Run ``multisa ARGV`` and apply the contract; ``names``: the input paths an error may name."""
    rc, out, err = cli(argv)
    if "internal error" in err:
        raise FuzzProblem("crash", f"{what}: {err.strip()[:300]}")
    no_leak(secrets, out, err)
    if "Traceback" in out or "Traceback" in err:
        raise FuzzProblem("contract", f"{what}: a traceback: {err[-300:]!r}")
    if rc not in (0, 1, 2):
        raise FuzzProblem("contract", f"{what}: exit {rc}")
    if rc == 2:
        errors = [line for line in err.splitlines() if line.startswith("multisa: error:")]
        if not errors:
            raise FuzzProblem("contract", f"{what}: exit 2 without an error line: {err[:300]!r}")
        for line in errors:
            check_one_line_error(line, what)
            if names and not any(n in line for n in names):
                raise FuzzProblem("contract", f"{what}: error names no input: {line[:300]!r}")
    return rc, out, err


class Scratch:
    """A private directory for one target's files (re-used from input to input)."""

    def __init__(self, prefix: str) -> None:
        self.dir = tempfile.mkdtemp(prefix=f"multisa-fuzz-{prefix}-")

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def write(self, name: str, data: bytes | str) -> str:
        path = self.path(name)
        mode = "wb" if isinstance(data, bytes) else "w"
        with open(path, mode, **({} if isinstance(data, bytes) else {"encoding": "utf-8", "newline": ""})) as f:
            f.write(data)
        return path

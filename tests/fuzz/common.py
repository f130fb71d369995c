"""What every fuzz target shares: the problem it reports and the checks it applies.

A target is a function ``fuzz_<name>(rng: random.Random) -> None`` in a module
``tests/fuzz/targets_<surface>.py``. One call builds one input from ``rng`` (so a seed
reproduces it), drives the public entry point with it and raises ``FuzzProblem`` when a
check fails. Anything else it raises is a crash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable


class FuzzProblem(Exception):
    """A check failed: ``kind`` is ``crash``, ``leak``, ``contract`` or ``disagree``."""

    def __init__(self, kind: str, detail: str, reproducer: bytes | str | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail, self.reproducer = kind, detail, reproducer


@dataclass(frozen=True)
class Secrets:
    """Key material an output must never show: no 8-octet window of any key, raw or in hex."""

    windows: frozenset[str]

    @classmethod
    def of(cls, keys: Iterable[bytes]) -> "Secrets":
        out: set[str] = set()
        for key in keys:
            if len(key) < 8:
                continue
            h = key.hex()
            for i in range(len(key) - 7):
                out.add(h[2 * i:2 * i + 16])
        return cls(frozenset(out))

    def leaked(self, text: str | bytes) -> str | None:
        """The first window found in ``text`` (hex in any case, with or without separators)."""
        if isinstance(text, bytes):
            hexed = text.hex()
            text = text.decode("latin-1")
        else:
            hexed = text.encode("latin-1", "replace").hex()
        flat = re.sub(r"[^0-9a-f]", "", text.lower())
        for w in self.windows:
            if w in flat or w in hexed:
                return w
        return None


def check_no_leak(secrets: Secrets, *outputs: str | bytes) -> None:
    for out in outputs:
        w = secrets.leaked(out)
        if w:
            raise FuzzProblem("leak", f"key window {w[:4]}… in output")


_ONE_LINE = re.compile(r"^[^\n]+\n?$")


def check_one_line_error(text: str, what: str) -> None:
    """The error contract: one line, no traceback."""
    if "Traceback" in text or not _ONE_LINE.match(text or "x"):
        raise FuzzProblem("contract", f"{what}: error is not one line: {text[:200]!r}")

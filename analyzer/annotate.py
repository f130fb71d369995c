"""Findings as pcapng packet comments (``multisa lint CAPTURE --annotate OUT.pcapng``).

A copy of the capture, as pcapng (``dissectors.pcapng``), with one ``opt_comment`` per
finding on every frame the finding names: ``multisa CODE SEVERITY: message (RFC citation)``.
Wireshark lists packet comments in its Expert Information dialog (and ``pkt_comment`` /
``frame.comment`` filters them); tshark prints them with ``-e frame.comment``. The text is the
finding's own message: no key material (messages never carry keys).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from dissectors.capture import CaptureError
from dissectors.pcapng import Annotator, PcapngWriter, iter_blocks

from .model import Finding

PREFIX = "multisa "


def comment_text(f: Finding) -> str:
    """``multisa MS401 warning: <message> (RFC 4303 §3.3.3 MUST)``."""
    return f"{PREFIX}{f.code} {f.severity.label}: {f.message} ({f.citation})"


@dataclass(frozen=True, slots=True)
class Annotated:
    frames: int  # frames with at least one comment
    comments: int
    error: str | None = None  # the capture broke off: everything before the damage was written


def annotate(capture: str, findings: Iterable[Finding], out_path: str) -> Annotated:
    """Write ``capture`` to ``out_path`` as pcapng with the findings as packet comments.
    Raises OSError when ``out_path`` cannot be written, ValueError when it is the capture."""
    if os.path.exists(out_path) and os.path.exists(capture) and os.path.samefile(capture, out_path):
        raise ValueError(f"{out_path}: --annotate would overwrite the capture it reads")
    with open(out_path, "wb") as out:
        annotator = Annotator(PcapngWriter(out), hold=0)
        for f in findings:
            for frame in dict.fromkeys(f.frames):  # a frame named twice by one finding: one comment
                annotator.comment(frame, comment_text(f))
        error = None
        try:
            for block in iter_blocks(capture):
                annotator.feed(block)
        except CaptureError as err:
            error = str(err)
        annotator.close()
    return Annotated(annotator.writer.commented, annotator.writer.comments, error)

"""Shared test fixtures: where the real captures are, and what each needs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "captures"
SAMPLES = ROOT / "samples"
CAPTURE_SUFFIXES = (".pcap", ".pcapng")


def _shared_captures() -> list[tuple[Path, list[Path]]]:
    """The strongSwan captures in ../shared/captures: NAME.pcap with NAME.<keyfile> beside it,
    or a folder holding capture.pcap and its key files."""
    out = []
    if not SHARED.is_dir():
        return out
    for pcap in sorted(SHARED.glob("*.pcap")):
        keys = sorted(SHARED.glob(pcap.stem + ".*_*"))  # .ikev2_decryption_table, .esp_sa
        out.append((pcap, keys))
    for folder in sorted(p for p in SHARED.iterdir() if p.is_dir()):
        for pcap in sorted(folder.glob("*.pcap*")):
            out.append((pcap, [folder]))
    return out


def _sample_captures() -> list[tuple[Path, list[Path]]]:
    """Every capture under samples/: its folder holds its key files."""
    return [(p, [p.parent]) for p in sorted(SAMPLES.rglob("*")) if p.suffix in CAPTURE_SUFFIXES]


def all_captures() -> list[tuple[Path, list[Path]]]:
    return _shared_captures() + _sample_captures()


def capture_id(item: tuple[Path, list[Path]]) -> str:
    path = item[0]
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path.relative_to(SHARED.parent))


needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt-get install tshark)")
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/captures is not beside this checkout")

"""Shared by the guest test modules (they run inside a throw-away kernel): shell commands and
two network namespaces joined by a veth pair."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


@contextlib.contextmanager
def veth_pair(*hosts: tuple[str, str, str | None, str | None]) -> Iterator[None]:
    """Two namespaces ``(name, address/24, inner address or None, remote subnet or None)``
    joined by veth ``v0``; the inner address (a /32 on v0) is the source of the route to the
    remote subnet. Deleted on exit."""
    (a, *_), (b, *_) = hosts
    sh("ip", "netns", "add", a)
    sh("ip", "netns", "add", b)
    try:
        sh("ip", "-n", a, "link", "add", "v0", "type", "veth", "peer", "name", "v0", "netns", b)
        for ns, addr, inner, remote in hosts:
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "v0")
            if inner:
                sh("ip", "-n", ns, "addr", "add", f"{inner}/32", "dev", "v0")
            sh("ip", "-n", ns, "link", "set", "v0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            if remote:
                sh("ip", "-n", ns, "route", "add", remote, "dev", "v0", "src", inner)
        yield
    finally:
        sh("ip", "netns", "del", a)
        sh("ip", "netns", "del", b)

"""Shared by the guest test modules (they run inside a throw-away kernel): shell commands,
two network namespaces joined by a veth pair, and UDP round trips between them."""

from __future__ import annotations

import contextlib
import subprocess
import sys
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


ECHO_SERVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("{server}", 7000)); s.settimeout(10)
print("ready", flush=True)
for _ in range({n}):
    data, peer = s.recvfrom(2048); s.sendto(data, peer)
"""
ECHO_CLIENT = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("{client}", 0)); s.settimeout(5)
for i in range({n}):
    s.sendto(b"multisa %d" % i, ("{server}", 7000)); s.recvfrom(2048)
"""


def udp_round_trips(count: int, client_ns: str, server_ns: str, server: str, client: str = "") -> None:
    """``count`` UDP round trips from ``client_ns`` (bound to ``client``, any address when
    empty) to ``server`` port 7000 in ``server_ns``: one packet each way each (the guest has
    no ping binary; this needs only the interpreter)."""
    proc = subprocess.Popen(["ip", "netns", "exec", server_ns, sys.executable, "-c",
                             ECHO_SERVER.format(server=server, n=count)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        sh("ip", "netns", "exec", client_ns, sys.executable, "-c",
           ECHO_CLIENT.format(server=server, client=client, n=count))
    finally:
        assert proc.wait(timeout=15) == 0

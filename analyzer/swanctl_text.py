"""``swanctl --list-sas`` text as an XFRM snapshot (``multisa xfrm import``, ``lint --xfrm``).

strongSwan prints, per IKE SA, its Child SAs with the per-CPU id strongSwan 6 gives each
(``cpu N``, ``cpu -`` for the fallback SA) and the counters of both directions::

    gw-gw: #1, ESTABLISHED, IKEv2, dec911dfe4749783_i* aa484f32a059bd45_r
      local  'moon.example.net' @ 192.0.2.1[500]
      remote 'sun.example.net' @ 192.0.2.2[500]
      ...
      net-net: #3, reqid 1, cpu 0, INSTALLED, TUNNEL, ESP:AES_CBC-128/HMAC_SHA2_256_128/CURVE_25519
        in  c1f7e800,    336 bytes,     4 packets,     2s ago
        out ca2c6b46,    252 bytes,     3 packets,     3s ago

Each ``in``/``out`` line becomes one SA: ``in`` from the remote to the local address, ``out``
the other way (as the kernel's SAD holds them), ``dir`` 1/2, ``pcpu`` the Child SA's cpu (the
kernel sets SA_PCPU on both directions), ``reqid``, mode, bytes and packets. An outbound
SA's ``oseq`` is its packet count (each sent packet takes the next number); the inbound
replay state is not printed by swanctl and stays 0. Algorithm names are kept (never keys:
swanctl prints none). Policies are not listed by ``--list-sas``.
"""

from __future__ import annotations

import re

from dissectors.xfrm import XfrmAlgo, XfrmEncap, XfrmLifetimeCur, XfrmReplay, XfrmSaState

AF_INET, AF_INET6 = 2, 10
MODES = {"TRANSPORT": 0, "TUNNEL": 1, "BEET": 4}
PROTOS = {"ESP": 50, "AH": 51}

_IKE = re.compile(r"^(?P<name>[^\s:]+): #(?P<n>[0-9]+), (?P<state>[A-Z_]+), IKEv(?P<v>[12]), "
                  r"(?P<spi_i>[0-9a-f]{16})_i\*? (?P<spi_r>[0-9a-f]{16})_r\*?")
_END = re.compile(r"^\s+(?P<side>local|remote)\s+'.*' @ (?P<addr>[0-9a-fA-F.:]+)\[(?P<port>[0-9]+)\]")
_CHILD = re.compile(r"^\s+(?P<name>[^\s:]+): #(?P<n>[0-9]+), reqid (?P<reqid>[0-9]+), (?:cpu (?P<cpu>[0-9]+|-), )?"
                    r"(?P<state>[A-Z_]+), (?P<mode>[A-Z]+)(?P<udp>-in-UDP)?, (?P<proto>ESP|AH):(?P<algs>\S+)")
_DIR = re.compile(r"^\s+(?P<dir>in|out)\s+(?P<spi>[0-9a-f]{8})(?:_i)?(?:\s*\(-\|[0-9a-fx/]+\))?,\s+"
                  r"(?P<bytes>[0-9]+) bytes,\s+(?P<packets>[0-9]+) packets")


def _number(text: str, limit: int, what: str, where: str) -> int:
    """An ASCII decimal field no larger than ``limit`` (a counter, a port, a reqid): a number
    strongSwan cannot print is damage, named, not an int the size of the file."""
    if len(text) > len(str(limit)) or int(text) > limit:
        shown = text if len(text) <= 20 else f"{text[:20]}... ({len(text)} digits)"
        raise ValueError(f"{where}: {what} {shown} is larger than {limit}")
    return int(text)


U32, U64 = 2**32 - 1, 2**64 - 1


def looks_like_swanctl(text: str) -> bool:
    for line in text.splitlines():
        if line.strip():
            return bool(_IKE.match(line))
    return False


def _algos(text: str) -> tuple[XfrmAlgo, ...]:
    out = []
    for part in text.split("/"):
        name, _, bits = part.partition("-")
        if name.startswith(("MODP", "CURVE", "ECP", "X25519", "X448", "KE")) or name in ("NO_EXT_SEQ", "EXT_SEQ"):
            continue
        kind = "aead" if "GCM" in name or "CCM" in name or "CHACHA" in name else (
            "auth_trunc" if name.startswith(("HMAC", "AES_XCBC", "AES_CMAC")) else "crypt")
        key_len = int(bits) if bits.isascii() and bits.isdigit() and kind != "auth_trunc" else 0
        out.append(XfrmAlgo(kind=kind, name=part.lower(), key_len=key_len))
    return tuple(out)


def parse_swanctl(text: str, name: str = "<text>") -> list[XfrmSaState]:
    """Every Child SA direction of ``swanctl --list-sas`` output. Raises ValueError naming
    ``name:line`` when a Child SA line is not understood."""
    sas: list[XfrmSaState] = []
    local = remote = None
    local_port = remote_port = 500
    child = None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if _IKE.match(line):
            local = remote = child = None
            continue
        if m := _END.match(line):
            port = _number(m.group("port"), 65535, "port", f"{name}:{number}")
            if m.group("side") == "local":
                local, local_port = m.group("addr"), port
            else:
                remote, remote_port = m.group("addr"), port
            continue
        if m := _CHILD.match(line):
            child = m
            continue
        if m := _DIR.match(line):
            if child is None or local is None or remote is None:
                raise ValueError(f"{name}:{number}: an SA line outside a Child SA with local/remote addresses")
            out = m.group("dir") == "out"
            src, dst = (local, remote) if out else (remote, local)
            where = f"{name}:{number}"
            packets = _number(m.group("packets"), U64, "packet count", where)
            nbytes = _number(m.group("bytes"), U64, "byte count", where)
            reqid = _number(child.group("reqid"), U32, "reqid", where)
            cpu = child.group("cpu")
            cpu = None if cpu in (None, "-") else _number(cpu, U32, "cpu", where)
            encap = None
            if child.group("udp"):
                sport, dport = (local_port, remote_port) if out else (remote_port, local_port)
                encap = XfrmEncap(type=2, sport=sport, dport=dport, oa="0.0.0.0")
            sas.append(XfrmSaState(
                src=src, dst=dst, spi=int(m.group("spi"), 16), proto=PROTOS[child.group("proto")],
                family=AF_INET6 if ":" in dst else AF_INET, mode=MODES.get(child.group("mode"), 1),
                reqid=reqid, dir=2 if out else 1, pcpu=cpu,
                curlft=XfrmLifetimeCur(bytes=nbytes, packets=packets),
                replay=XfrmReplay(oseq=packets if out else 0), algos=_algos(child.group("algs")),
                encap=encap))
            continue
    if not sas and looks_like_swanctl(text):
        return sas  # IKE SAs without Child SAs
    return sas

"""``multisa peer``: the reference peer's command line (wired into ``analyzer/cli.py``).

    multisa peer responder --listen ADDR[:PORT] [options]
    multisa peer initiator --connect ADDR[:PORT] --local ADDR [--resources N] [options]
    multisa peer demo --out DIR [--resources N] [--fault NAME] [--duration S]
    multisa peer faults

Handlers return exit codes (0 ok, 1 the IKE SA failed, 2 bad usage/config). The PSK comes
from a file (``--psk-file``) or the environment (``MULTISA_PSK``), never from the command
line, and is never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from analyzer.cli_common import non_negative_float, non_negative_int, positive_float, positive_int

EXIT_OK, EXIT_FAILED, EXIT_ERROR = 0, 1, 2


def _addr(text: str, default_port: int) -> tuple[str, int]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, port = text.split(":")
        return host, int(port)
    return text, default_port


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML file with PeerConfig keys (flags override it)")
    p.add_argument("--psk-file", help="file holding the pre-shared key (or set MULTISA_PSK)")
    p.add_argument("--local-id", help="our identity (ID_FQDN); default: our IP address")
    p.add_argument("--remote-id", help="the peer's identity we insist on (default: any)")
    p.add_argument("--local-ts", help="our protected subnet (default: initiator 198.51.100.0/24, "
                   "responder 203.0.113.0/24)")
    p.add_argument("--remote-ts", help="the peer's protected subnet (default: the other of the two)")
    p.add_argument("--ike-proposal", action="append", dest="ike_proposals", metavar="PROPOSAL",
                   help="strongSwan-style, e.g. aes256gcm16-prfsha256-x25519 (repeatable)")
    p.add_argument("--esp-proposal", action="append", dest="esp_proposals", metavar="PROPOSAL",
                   help="e.g. aes256gcm16 or aes256-sha256[-modp2048 for PFS] (repeatable)")
    p.add_argument("--resources", type=positive_int, help="per-resource Child SAs / ESP workers (default: CPU count)")
    p.add_argument("--resource-info", action="store_true", default=None,
                   help="enable RFC 9611 SA_RESOURCE_INFO and per-resource Child SAs (off by default, §7)")
    p.add_argument("--max-per-ts", type=non_negative_int, help="additional Child SAs allowed per TS pair (default 2 x CPUs)")
    p.add_argument("--rate", type=non_negative_float, help="ESP packets/s per worker (default 100, 0 = no ESP)")
    p.add_argument("--size", type=non_negative_int, help="inner payload octets (default 64)")
    p.add_argument("--duration", type=non_negative_float, help="seconds of ESP per worker (default 5)")
    p.add_argument("--lifetime", type=positive_float, help="stop after this many seconds whatever happens")
    p.add_argument("--keys-dir", help="write ikev2_decryption_table and esp_sa here")
    p.add_argument("--status-file", help="JSON counters, rewritten twice a second")
    p.add_argument("--fault", action="append", dest="faults", metavar="NAME",
                   help="break one rule on purpose (see `multisa peer faults`; repeatable)")
    p.add_argument("--natt-port", type=int, default=4500, help="local NAT-T port (default 4500)")
    p.add_argument("--rekey-child-after", type=positive_float, help="rekey resource 0's Child SA after S seconds")
    p.add_argument("--rekey-ike-after", type=positive_float, help="rekey the IKE SA after S seconds (§2.18)")
    p.add_argument("--collide", action="store_true", default=None,
                   help="answer the peer's first rekey by rekeying the same SA too (simultaneous rekey, §2.8.1)")
    p.add_argument("--fragment-size", type=non_negative_int, help="send larger encrypted IKE messages as SKF fragments "
                   "(RFC 7383; default 1280, 0 = never)")
    p.add_argument("--dataplane", choices=("user", "kernel"), default="user",
                   help="ESP in userspace workers (default) or through kernel XFRM: install the negotiated "
                   "SAs with per-CPU SA_PCPU and a CPU_ACQUIRE policy (root, Linux >= 6.13)")
    p.add_argument("--keep-sas", action="store_true",
                   help="kernel data plane: send no Delete and leave the SAs in the kernel at exit")
    p.add_argument("--kernel-fault", action="append", dest="kernel_faults", metavar="NAME",
                   help="kernel data plane fault: skip-inbound, same-cpu, fallback-pcpu, no-cpu-acquire")
    p.add_argument("-v", "--verbose", action="store_true")


def register(sub) -> None:
    """Add ``peer`` with its sub-subcommands to an argparse subparsers object."""
    peer = sub.add_parser("peer", help="reference IKEv2 peer with per-resource Child SAs (RFC 9611)")
    psub = peer.add_subparsers(dest="peer_command", required=True, metavar="PEER_COMMAND")

    r = psub.add_parser("responder", help="answer IKE SAs and Child SAs (enforces the per-TS limit)")
    r.add_argument("--listen", required=True, metavar="ADDR[:PORT]", help="address and IKE port (default 500)")
    r.add_argument("--once", action="store_true", help="exit when the first IKE SA is gone")
    r.add_argument("--cookies", action="store_true", default=None,
                   help="demand a COOKIE in every IKE_SA_INIT (RFC 7296 §2.6, as under a half-open flood)")
    r.add_argument("--create-children", type=non_negative_int, help="additional Child SAs the responder starts itself")
    _common(r)
    r.set_defaults(func=cmd_responder)

    i = psub.add_parser("initiator", help="set up an IKE SA, the per-resource Child SAs, ESP, then delete")
    i.add_argument("--connect", required=True, metavar="ADDR[:PORT]")
    i.add_argument("--local", metavar="ADDR[:PORT]", help="our address and IKE port (default: route to peer, 500)")
    i.add_argument("--remote-natt-port", type=int, default=4500)
    i.add_argument("--extra-requests", type=non_negative_int, help="ask for this many Child SAs beyond --resources")
    i.add_argument("--extra-ids", choices=("new", "reuse"),
                   help="extra requests carry new resource ids (default) or reuse those of resources 0, 1, ...")
    i.add_argument("--on-demand", action="store_true", help="create per-resource SAs one by one, not all at once")
    i.add_argument("--pfs", action="store_true", default=None, help="CREATE_CHILD_SA with KE (the IKE SA's group)")
    _common(i)
    i.set_defaults(func=cmd_initiator)

    d = psub.add_parser("demo", help="responder + initiator in two netns (root) or on loopback, captured")
    d.add_argument("--out", required=True, help="directory for capture.pcapng and the key files")
    d.add_argument("--resources", type=positive_int, default=None,
                   help="per-resource Child SAs (default 2, or what the --fault needs)")
    d.add_argument("--fault", action="append", dest="faults", default=[], metavar="NAME")
    d.add_argument("--duration", type=positive_float, default=3.0, help="seconds of ESP (default 3)")
    d.add_argument("--rate", type=non_negative_float, default=20.0, help="ESP packets/s per worker (default 20)")
    d.add_argument("--loopback", action="store_true", help="use loopback even as root")
    d.add_argument("--max-per-ts", type=non_negative_int, default=0,
                   help="the responder's per-TS limit of additional SAs (default 2 x --resources, RFC 9611 §6)")
    d.add_argument("--extra-requests", type=non_negative_int, default=None,
                   help="initiator requests beyond --resources (default 0, or what the --fault needs)")
    d.add_argument("-v", "--verbose", action="store_true")
    d.set_defaults(func=cmd_demo)

    f = psub.add_parser("faults", help="list the fault switches")
    f.set_defaults(func=cmd_faults)


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="multisa peer: %(message)s")


def _config(args, role: str):
    from .config import ConfigError, load_config

    over = {k: getattr(args, k, None) for k in (
        "psk_file", "local_id", "remote_id", "local_ts", "remote_ts", "ike_proposals", "esp_proposals",
        "resources", "resource_info", "max_per_ts", "rate", "size", "duration", "lifetime", "keys_dir",
        "status_file", "faults", "extra_requests", "pfs", "rekey_child_after", "rekey_ike_after",
        "create_children", "collide", "fragment_size", "extra_ids", "cookies")}
    over["role"] = role
    if role == "responder" and not args.config and args.local_ts is None and args.remote_ts is None:
        # the mirror of the initiator's defaults, so that the two sides agree out of the box
        over["local_ts"], over["remote_ts"] = "203.0.113.0/24", "198.51.100.0/24"
    if getattr(args, "on_demand", False):
        over["all_at_once"] = False
    if not args.psk_file and os.environ.get("MULTISA_PSK"):
        over["psk"] = os.environ["MULTISA_PSK"]
    try:
        cfg = load_config(args.config, over)
    except ConfigError as err:
        print(f"multisa: error: {err}", file=sys.stderr)
        return None
    if not cfg.psk:
        print("multisa: error: no PSK: give --psk-file or set MULTISA_PSK", file=sys.stderr)
        return None
    return cfg


def _dataplane(args, node):
    """``--dataplane kernel``: the Node installs its Child SAs through XFRM (peer/kernel.py)."""
    if getattr(args, "dataplane", "user") != "kernel":
        return node
    from .kernel import KernelDataplane

    try:
        node.dataplane = KernelDataplane(args.kernel_faults, keep=args.keep_sas)
    except ValueError as err:
        print(f"multisa: error: {err}", file=sys.stderr)
        return None
    if args.keep_sas:
        node.cfg.delete_after = False
    return node


def _run(node) -> int:
    if node is None:
        return EXIT_ERROR
    try:
        rc = asyncio.run(node.run())
    except KeyboardInterrupt:
        node.stop_workers()
        return EXIT_FAILED
    except OSError as err:
        print(f"multisa: error: {err.strerror or err} ({node.local_host})", file=sys.stderr)
        return EXIT_ERROR
    print(status_line(node, rc), file=sys.stderr if rc else sys.stdout, flush=True)
    return rc


def status_line(node, rc: int) -> str:
    """One line at exit, with or without -v: what was set up, or why nothing was."""
    role = node.cfg.role
    ikes = list(getattr(node, "history", []))
    if not ikes and node.established is None:
        peer = f" with {node.remote_addr[0]}" if getattr(node, "remote_addr", None) else ""
        why = "no IKE SA established" + peer + (" (no answer, wrong PSK or proposals? -v says more)"
                                                if role == "initiator" else "")
        return f"multisa peer {role}: {why}" + (f"; exit {rc}" if rc else "")
    children = sum(len(getattr(ike, "children", {})) for ike in ikes)
    esp = sum(getattr(w, "packets", 0) or 0 for w in getattr(node, "workers", []))
    what = (f"{len(ikes)} IKE SA{'s' if len(ikes) != 1 else ''} (rekeys included), "
            f"{children} Child SA{'s' if children != 1 else ''}")
    if esp:
        what += f", {esp} ESP packets sent"
    verdict = "done" if rc == 0 else f"failed (exit {rc}: see the warnings above)"
    return f"multisa peer {role}: {what}; {verdict}"


def cmd_responder(args) -> int:
    from .node import Node

    _logging(args.verbose)
    cfg = _config(args, "responder")
    if cfg is None:
        return EXIT_ERROR
    return _run(_dataplane(args, Node(cfg, _addr(args.listen, 500), args.natt_port, once=args.once)))


def cmd_initiator(args) -> int:
    import socket

    from .node import Node

    _logging(args.verbose)
    cfg = _config(args, "initiator")
    if cfg is None:
        return EXIT_ERROR
    remote = _addr(args.connect, 500)
    if args.local:
        local = _addr(args.local, 500)
    else:
        probe = socket.socket(socket.AF_INET6 if ":" in remote[0] else socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect(remote)
        local = (probe.getsockname()[0], 500)
        probe.close()
    return _run(_dataplane(args, Node(cfg, local, args.natt_port, remote, args.remote_natt_port)))


def cmd_demo(args) -> int:
    from .demo import run_demo

    _logging(args.verbose)
    return run_demo(args.out, resources=args.resources, faults=args.faults, duration=args.duration,
                    rate=args.rate, loopback=args.loopback, max_per_ts=args.max_per_ts,
                    extra_requests=args.extra_requests)


def cmd_faults(args) -> int:
    from .faults import FAULTS

    width = max(len(n) for n in FAULTS)
    for f in FAULTS.values():
        print(f"{f.name:<{width}}  {f.side:<9}  {f.rfc}: {f.shows}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m peer.cli ...``) until analyzer/cli.py wires ``register``."""
    parser = argparse.ArgumentParser(prog="multisa")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

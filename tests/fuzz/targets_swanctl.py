"""``swanctl --list-sas`` text (``analyzer/swanctl_text.py``) as ``multisa xfrm import`` reads it.

Inputs are generated listings (IKE SAs, their local/remote lines, Child SAs with cpu ids,
modes, -in-UDP, algorithm lists, in/out counter lines) damaged line by line: tokens
dropped or duplicated, numbers replaced by huge, negative or non-ASCII digits, lines moved,
cut or repeated, bytes mutated. Checks: ``parse_swanctl`` raises nothing but ``ValueError``
whose text is one line naming "file:line"; every value it returns can be written as JSON; one
input in 10 goes through ``multisa xfrm import FILE [--json]`` for the command line's contract.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from random import Random

from analyzer.swanctl_text import parse_swanctl

from .common import FuzzProblem, Secrets, check_one_line_error
from .drive import Scratch, check_cli, mutate

_scratch: Scratch | None = None
ALGS = ("AES_CBC-128/HMAC_SHA2_256_128", "AES_GCM_16-256", "AES_CBC-256/HMAC_SHA2_512_256/CURVE_25519",
        "CHACHA20_POLY1305", "AES_CBC-128/HMAC_SHA2_256_128/ESN", "3DES_CBC/HMAC_MD5_96/MODP_2048")
NUMBERS = ("0", "-1", "1" * 30, "9" * 5000, "\u0665", "\u00b2", "１", "0x10", "", "4294967296", "18446744073709551616")


def _listing(rng: Random) -> list[str]:
    lines = []
    for n in range(1, rng.randint(1, 3) + 1):
        v6 = rng.random() < 0.3
        a, b = ("2001:db8::1", "2001:db8::2") if v6 else ("192.0.2.1", "192.0.2.2")
        lines += [f"gw-gw: #{n}, ESTABLISHED, IKEv2, {rng.getrandbits(64):016x}_i* {rng.getrandbits(64):016x}_r",
                  f"  local  'moon.example.net' @ {a}[{rng.choice((500, 4500))}]",
                  f"  remote 'sun.example.net' @ {b}[{rng.choice((500, 4500))}]",
                  "  AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519",
                  "  established 15s ago, rekeying in 13943s"]
        for c in range(rng.randint(0, 4)):
            cpu = rng.choice(("", "cpu -, ", f"cpu {rng.randrange(8)}, "))
            mode = rng.choice(("TUNNEL", "TRANSPORT", "BEET", "TUNNEL-in-UDP"))
            lines += [f"  net-net: #{n * 10 + c}, reqid {rng.randrange(1, 9)}, {cpu}INSTALLED, {mode}, "
                      f"{rng.choice(('ESP', 'AH'))}:{rng.choice(ALGS)}",
                      "    installed 11s ago, rekeying in 3456s, expires in 3949s"]
            for d in ("in ", "out"):
                spi = f"{rng.getrandbits(32):08x}" + rng.choice(("", "", "_i", " (-|0x00000010/0xffffffff)"))
                lines.append(f"    {d} {spi}, {rng.randrange(10 ** rng.randint(1, 9)):6d} bytes, "
                             f"{rng.randrange(10 ** rng.randint(1, 6)):5d} packets, {rng.randrange(100):5d}s ago")
            lines += ["    local  198.51.100.0/24", "    remote 203.0.113.0/24"]
    return lines


def _damage(rng: Random, lines: list[str]) -> list[str]:
    lines = list(lines)
    for _ in range(rng.randint(1, 3)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        tokens = lines[i].split(" ")
        op = rng.randrange(8)
        if op == 0 and tokens:
            del tokens[rng.randrange(len(tokens))]
        elif op == 1 and tokens:
            j = rng.randrange(len(tokens))
            tokens.insert(j, tokens[j])
        elif op == 2 and tokens:  # a number replaced
            nums = [j for j, t in enumerate(tokens) if any(ch.isdigit() for ch in t)] or [0]
            j = rng.choice(nums)
            tokens[j] = "".join(rng.choice(NUMBERS) if ch.isdigit() and rng.random() < 0.5 else ch
                                for ch in tokens[j]) if rng.random() < 0.5 else rng.choice(NUMBERS)
        elif op == 3:
            lines.insert(rng.randrange(len(lines) + 1), lines.pop(i))
        elif op == 4:
            lines.insert(i, lines[i])
        elif op == 5:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
            continue
        elif op == 6:
            del lines[i]
            continue
        else:
            lines[i] = mutate(rng, lines[i].encode(), 2).decode("utf-8", "replace")
            continue
        lines[i] = " ".join(tokens)
    return lines


def fuzz_swanctl_text(rng: Random) -> None:
    global _scratch
    lines = _listing(rng)
    if rng.random() < 0.85:
        lines = _damage(rng, lines)
    text = "\n".join(lines) + "\n"
    name = "moon.list-sas.txt"
    try:
        sas = parse_swanctl(text, name)
    except ValueError as err:
        msg = str(err)
        check_one_line_error(msg, "swanctl error")
        if not msg.startswith(name + ":"):
            raise FuzzProblem("contract", f"error names no file:line: {msg[:200]!r}", text) from None
        sas = []
    try:
        json.dumps([asdict(sa) for sa in sas], allow_nan=False, default=str)
    except ValueError as err:
        raise FuzzProblem("crash", f"an SA JSON cannot hold: {' '.join(str(err).split())[:160]}", text) from None
    if rng.random() < 0.1:
        if _scratch is None:
            _scratch = Scratch("swanctl")
        path = _scratch.write(name, text)
        argv = ["xfrm", "import", path] + (["--json"] if rng.random() < 0.5 else [])
        check_cli(argv, Secrets.of([]), (path,), "multisa " + " ".join(argv[:2]))

"""Fuzz targets for the XFRM surfaces: netlink bytes, ``ip xfrm`` text, snapshot JSON.

* ``fuzz_xfrm_netlink``: a NEWSA message (every attribute the records read, keys after the
  algorithms' fixed parts), encoded by the product's pyroute2 class and then damaged; the fast
  dump decoder (``sa_from_bytes``) and the pyroute2 one (``parse_messages`` + ``sa_from_msg``)
  must both raise ``XfrmError`` or build equal records, and no record shows a key.
* ``fuzz_xfrm_text``: ``ip -s xfrm state`` (iproute2 6.1 and 7.x) and ``ip xfrm policy`` text
  with real-looking keys, mutated by line, token and character (tokens dropped, values
  missing, keys glued to or in place of algorithm names, huge numbers), through
  ``multisa xfrm import`` and ``--json``.
* ``fuzz_xfrm_json``: snapshot JSON (``multisa xfrm dump --json``) with values replaced by
  other types, huge numbers, keys in string fields, whole documents like ``{"sas": [1]}``.

Checks: nothing escapes the entry points (exit 0 or 2), an error is one line naming the
file, no 8-octet window of any key in any output, the two decoders agree.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import io
import ipaddress
import json
import os
import random
import shutil
import struct
import tempfile

from tests.fuzz.common import FuzzProblem, Secrets, check_no_leak, check_one_line_error

_TMP: str | None = None


def _tmpdir() -> str:
    global _TMP
    if _TMP is None:
        _TMP = tempfile.mkdtemp(prefix="multisa-fuzz-xfrm-")
        atexit.register(shutil.rmtree, _TMP, True)
    return _TMP


def _import(text: str | bytes, suffix: str, secrets: Secrets, json_out: bool) -> tuple[int, str, str]:
    """``multisa xfrm import FILE [--json]`` in process: (exit status, stdout, stderr)."""
    from analyzer.xfrm_commands import main

    path = os.path.join(_tmpdir(), f"in{suffix}")
    with open(path, "wb") as f:
        f.write(text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text)
    out, err = io.StringIO(), io.StringIO()
    argv = ["xfrm", "import", path] + (["--json"] if json_out else [])
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except Exception as exc:  # the check this target exists for
        raise FuzzProblem("crash", f"xfrm import{' --json' if json_out else ''}: "
                                   f"{type(exc).__name__}: {str(exc)[:120]}", text) from exc
    o, e = out.getvalue(), err.getvalue()
    try:
        check_no_leak(secrets, o, e)
    except FuzzProblem as p:
        raise FuzzProblem(p.kind, f"xfrm import{' --json' if json_out else ''}: {p.detail}", text) from None
    if rc not in (0, 2):
        raise FuzzProblem("contract", f"xfrm import exit {rc}", text)
    if rc == 2:
        check_one_line_error(e, "xfrm import")
        if path not in e:
            raise FuzzProblem("contract", f"error does not name the file: {e[:160]!r}", text)
    elif json_out:
        try:
            json.loads(o)
        except ValueError as exc:
            raise FuzzProblem("contract", f"--json output is not JSON: {exc}", text) from None
    return rc, o, e


# ---------------------------------------------------------------------------------------
# ip xfrm text

def _key(rng: random.Random, n: int) -> bytes:
    return bytes(rng.getrandbits(8) for _ in range(n))


def _state_text(rng: random.Random, keys: list[bytes]) -> str:
    enc, auth, aead = _key(rng, 16), _key(rng, 32), _key(rng, 20)
    keys += [enc, auth, aead]
    spi = rng.getrandbits(32)
    ip7 = rng.random() < 0.5
    aead_sa = rng.random() < 0.4
    lines = [f"src 192.0.2.{rng.randint(1, 254)} dst 192.0.2.{rng.randint(1, 254)}",
             f"\tproto esp spi 0x{spi:08x} reqid {rng.randint(0, 9)} mode {rng.choice(['tunnel', 'transport'])}",
             f"\treplay-window {rng.choice([0, 32, 64])} seq 0x00000000 flag af-unspec esn (0x00100080)"]
    if aead_sa:
        lines.append(f"\taead rfc4106(gcm(aes)) 0x{aead.hex()} (160 bits) 128")
    else:
        lines += [f"\tauth-trunc hmac(sha256) 0x{auth.hex()} (256 bits) 128",
                  f"\tenc cbc(aes) 0x{enc.hex()} (128 bits)"]
    lines += ["\tencap type espinudp sport 4500 dport 4500 addr 0.0.0.0",
              "\tanti-replay esn context:", "\t seq-hi 0x0, seq 0x0, oseq-hi 0x1, oseq 0x4",
              "\t replay_window 0, bitmap-length 0"]
    if ip7:
        lines += [f"\tdir {rng.choice(['in', 'out'])}", f"\tpcpu-num {rng.randint(0, 3)}"]
    lines += ["\tlifetime config:", "\t  limit: soft (INF)(bytes), hard (INF)(bytes)",
              "\t  limit: soft (INF)(packets), hard (INF)(packets)",
              "\t  expire add: soft 3586(sec), hard 3600(sec)", "\t  expire use: soft 0(sec), hard 0(sec)",
              "\tlifetime current:", "\t  336(bytes), 4(packets)",
              "\t  add 2026-11-22 07:59:16 use 2026-11-22 07:59:19",
              "\tstats:", "\t  replay-window 0 replay 0 failed 0",
              "\tsel src 198.51.100.0/24 dst 203.0.113.0/24 proto udp sport 53 dport 4500",
              "\tmark 0x2a/0xff", "\tif_id 0x7", "\tlastused 2026-11-22 07:59:25"]
    return "\n".join(lines) + "\n"


def _policy_text(rng: random.Random) -> str:
    d = rng.choice(["out", "in", "fwd"])
    lines = ["src 198.51.100.0/24 dst 203.0.113.0/24 proto udp",
             f"\tdir {d} priority {rng.randint(0, 400000)} index {rng.randint(0, 9999)} ptype main "
             f"share any flag localok icmp {rng.choice(['', '4 ', '(0x00000004)'])}".rstrip(),
             "\tmark 0x2a/0xff", "\tif_id 0x7",
             "\ttmpl src 192.0.2.1 dst 192.0.2.2",
             f"\t\tproto esp spi 0x{rng.getrandbits(32):08x} reqid 1 mode tunnel",
             "\t\tlevel use share any"]
    return "\n".join(lines) + "\n"


_TOKENS = ["dir", "priority", "index", "action", "ptype", "share", "flag", "proto", "spi", "reqid",
           "mode", "src", "dst", "sel", "enc", "auth", "auth-trunc", "aead", "comp", "pcpu-num",
           "mark", "if_id", "encap", "lastused", "tmpl", "level", "socket", "0x", "(INF)", "-", ""]


def _huge(rng: random.Random) -> str:
    return rng.choice(["0x", ""]) + "".join(rng.choice("0123456789abcdef") for _ in range(rng.choice([9, 17, 33, 4001])))


def _mutate_text(rng: random.Random, text: str, keys: list[bytes]) -> str:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 4)):
        if not lines:
            break
        i = rng.randrange(len(lines))
        toks = lines[i].split(" ")
        op = rng.randrange(12)
        if op == 0:  # drop a line
            del lines[i]
        elif op == 1:  # duplicate a line
            lines.insert(i, lines[i])
        elif op == 2:  # cut the line after a token (a keyword without its value)
            lines[i] = " ".join(toks[:rng.randint(1, len(toks))])
        elif op == 3:  # drop one token
            del toks[rng.randrange(len(toks))]
            lines[i] = " ".join(toks)
        elif op == 4:  # glue two tokens
            j = rng.randrange(len(toks))
            if j + 1 < len(toks):
                toks[j:j + 2] = [toks[j] + toks[j + 1]]
            lines[i] = " ".join(toks)
        elif op == 5:  # a number (or anything) replaced by a huge hex/decimal run
            toks[rng.randrange(len(toks))] = _huge(rng)
            lines[i] = " ".join(toks)
        elif op == 6 and keys:  # a key where another token was (an algorithm name, an address ...)
            k = rng.choice(keys)
            toks[rng.randrange(len(toks))] = rng.choice(["0x", ""]) + k.hex()
            lines[i] = " ".join(toks)
        elif op == 7:  # an algorithm line without its name, or the name glued to the key
            algo = [n for n, line in enumerate(lines) if line.strip().split(" ")[:1]
                    and line.strip().split(" ")[0] in ("enc", "auth-trunc", "aead", "auth")]
            if algo:
                n = rng.choice(algo)
                t = lines[n].split(" ")
                if len(t) > 2:
                    if rng.random() < 0.5:
                        del t[1]
                    else:
                        t[1:3] = [t[1] + t[2]]
                lines[n] = " ".join(t)
        elif op == 8:  # a keyword token inserted
            toks.insert(rng.randrange(len(toks) + 1), rng.choice(_TOKENS))
            lines[i] = " ".join(toks)
        elif op == 9:  # characters changed
            s = list(lines[i])
            for _ in range(rng.randint(1, 3)):
                if s:
                    s[rng.randrange(len(s))] = rng.choice("0x9f(): /\t-\u00b2\u0661a\x00")
            lines[i] = "".join(s)
        elif op == 10:  # indentation changed
            lines[i] = lines[i].lstrip() if lines[i][:1].isspace() else "\t" + lines[i]
        else:  # lines swapped
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines) + ("\n" if rng.random() < 0.9 else "")


def fuzz_xfrm_text(rng: random.Random) -> None:
    keys: list[bytes] = []
    parts = [_state_text(rng, keys) if rng.random() < 0.6 else _policy_text(rng)
             for _ in range(rng.randint(1, 3))]
    text = _mutate_text(rng, "".join(parts), keys)
    _import(text, ".txt", Secrets.of(keys), json_out=rng.random() < 0.5)


# ---------------------------------------------------------------------------------------
# snapshot JSON

_BASE_DOC: dict | None = None


def _base_doc() -> dict:
    global _BASE_DOC
    if _BASE_DOC is None:
        from analyzer.xfrm_state import parse_ip_xfrm

        rng = random.Random(1)
        snap = parse_ip_xfrm(_state_text(rng, []) + _state_text(rng, []) + _policy_text(rng), "base")
        _BASE_DOC = snap.to_dict()
    return _BASE_DOC


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, prefix + (i,))


def _strange(rng: random.Random, keys: list[bytes]):
    k = rng.choice(keys)
    return rng.choice([1, -1, 0, 2 ** 64, -(2 ** 70), 10 ** 30, 1.5, float("nan"), float("inf"), True, False,
                       None, "", "x", "0x" + k.hex(), k.hex(), "cbc(aes)" + k.hex(), [], [1], [1, 2, 3], {},
                       {"a": 1}, "192.0.2.1", "ffffffff", "1" * 40, [[[]]]])


def fuzz_xfrm_json(rng: random.Random) -> None:
    keys = [_key(rng, rng.choice([16, 20, 32])) for _ in range(2)]
    r = rng.random()
    if r < 0.1:
        doc = rng.choice([{"sas": [1]}, {"sas": "x"}, {"policies": [1]}, {"sas": [[]]}, {"policies": {"a": 1}},
                          [1], 1, "x", None, {"sas": [{}]}, {"format": "multisa.xfrm", "sas": None},
                          {"sas": [{"spi": 1, "curlft": 1}]}, {"sas": [{"spi": 1, "curlft": {}, "src": 1}]}])
    else:
        doc = copy.deepcopy(_base_doc())
        if r < 0.2:  # the capture's netlink dump format instead
            doc = {"netns": "moon", "sas": [{"src": "192.0.2.1", "dst": "192.0.2.2", "spi": 1, "proto": 50,
                                             "mode": 1, "reqid": 1, "curlft": {"bytes": 1}, "stats": {},
                                             "replay": {}, "lifetime_cfg": {"soft_byte": 1},
                                             "attr_names": ["ALG_CRYPT", "SA_DIR"]}],
                   "policies": [{"dir": 1, "index": 8, "priority": 1, "attrs": ["TMPL"]}]}
        for _ in range(rng.randint(1, 3)):
            paths = [p for p in _paths(doc) if p]
            if not paths:
                break
            path = rng.choice(paths)
            parent = doc
            for step in path[:-1]:
                parent = parent[step]
            if rng.random() < 0.15 and isinstance(parent, dict):
                del parent[path[-1]]
            elif rng.random() < 0.3 and path[-1] == "name":
                parent[path[-1]] = rng.choice(["0x", "", "cbc(aes)"]) + rng.choice(keys).hex()
            else:
                parent[path[-1]] = _strange(rng, keys)
    if rng.random() < 0.2:  # JSON Lines: the same document twice, the second maybe broken
        text = json.dumps(doc) + "\n" + json.dumps(doc)[:rng.randint(0, 200)] + "\n"
    else:
        text = json.dumps(doc, indent=rng.choice([None, 1]))
    _import(text, ".json", Secrets.of(keys), json_out=rng.random() < 0.5)


# ---------------------------------------------------------------------------------------
# netlink bytes: both decoders

_BASES: list[tuple[bytes, list[bytes]]] = []


def _a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed.ljust(16, b"\0")


def _newsa(rng: random.Random) -> tuple[bytes, list[bytes]]:
    """A NEWSA as the kernel sends it, built with the product's pyroute2 class, keys placed
    after each algorithm's fixed part."""
    from dissectors.xfrm import xfrm_usersa_info

    v6 = rng.random() < 0.3
    fam = 10 if v6 else 2
    ad = (lambda n: _a(f"2001:db8::{n}")) if v6 else (lambda n: _a(f"192.0.2.{n}"))
    m = xfrm_usersa_info()
    m["sel_daddr"], m["sel_saddr"], m["sel_family"] = ad(0), ad(0), fam
    m["sel_prefixlen_d"], m["sel_prefixlen_s"], m["sel_proto"] = 24, 24, 17
    m["sel_dport"], m["sel_dport_mask"], m["sel_sport"], m["sel_sport_mask"] = 4500, 0xFFFF, 53, 0xFFFF
    m["id_daddr"], m["id_spi"], m["id_proto"], m["saddr"] = ad(2), rng.getrandbits(32), 50, ad(1)
    m["lft_hard_byte_limit"], m["lft_soft_add_expires_seconds"] = 1 << 40, 3586
    m["curlft_bytes"], m["curlft_packets"] = rng.getrandbits(20), rng.getrandbits(10)
    m["seq"], m["reqid"], m["family"], m["mode"], m["replay_window"], m["flags"] = 7, 1, fam, 1, 32, 128
    attrs = []
    aead = rng.random() < 0.4
    if aead:
        attrs.append(("XFRMA_ALG_AEAD", {"alg_name": b"rfc4106(gcm(aes))", "alg_key_len": 160, "alg_icv_len": 128}))
    else:
        attrs += [("XFRMA_ALG_CRYPT", {"alg_name": b"cbc(aes)", "alg_key_len": 128}),
                  ("XFRMA_ALG_AUTH_TRUNC", {"alg_name": b"hmac(sha256)", "alg_key_len": 256, "alg_trunc_len": 128})]
    optional = [
        ("XFRMA_ENCAP", {"encap_type": 2, "encap_sport": 4500, "encap_dport": 4501, "encap_oa": ad(0)}),
        ("XFRMA_LTIME_VAL", {"bytes": 336, "packets": 4, "add_time": 1795334356, "use_time": 1795334359}),
        ("XFRMA_REPLAY_ESN_VAL", {"bmp_len": 0, "oseq": 4, "seq": 0, "oseq_hi": 1, "seq_hi": 0, "replay_window": 0}),
        ("XFRMA_REPLAY_VAL", {"oseq": 4, "seq": 3, "bitmap": 7}),
        ("XFRMA_MARK", {"v": 42, "m": 0xFF}), ("XFRMA_IF_ID", 7), ("XFRMA_SA_EXTRA_FLAGS", 2),
        ("XFRMA_LASTUSED", 1795334365), ("XFRMA_SA_DIR", 2), ("XFRMA_SA_PCPU", rng.choice([0, 1, 0xFFFFFFFF])),
    ]
    attrs += [x for x in optional if rng.random() < 0.6]
    m["attrs"] = attrs
    m["header"] = {"type": 0x10, "flags": 2, "sequence_number": 1}
    m.encode()
    raw = bytearray(m.data)
    keys = []
    pos = 16 + 224
    while pos + 4 <= len(raw):
        alen, atype = struct.unpack_from("HH", raw, pos)
        if atype in (1, 2, 18, 20):  # AUTH, CRYPT, AEAD, AUTH_TRUNC: the key follows the fixed part
            key = _key(rng, {2: 16, 20: 32, 18: 20, 1: 20}[atype])
            keys.append(key)
            pad = (-(alen + len(key))) % 4
            struct.pack_into("H", raw, pos, alen + len(key))
            raw[pos + alen:pos + alen] = key + b"\0" * pad
            alen += len(key)
        pos += (alen + 3) & ~3
    struct.pack_into("I", raw, 0, len(raw))
    return bytes(raw), keys


def _damage(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(8)
        if op == 0 and b:  # bit flips / random bytes anywhere
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.getrandbits(8)
        elif op == 1:  # truncation (header length kept or fixed up)
            b = b[:rng.randrange(len(b) + 1)]
            if rng.random() < 0.5 and len(b) >= 4:
                struct.pack_into("I", b, 0, len(b))
        elif op == 2 and len(b) >= 4:  # the message length field
            struct.pack_into("I", b, 0, rng.choice([0, 15, 16, 239, 240, len(b) - 1, len(b) + 4, rng.getrandbits(32)]))
        elif op == 3 and len(b) > 244:  # an attribute's length or type
            pos = 240
            attrs = []
            while pos + 4 <= len(b):
                alen, _ = struct.unpack_from("HH", b, pos)
                attrs.append(pos)
                if alen < 4:
                    break
                pos += (alen + 3) & ~3
            if attrs:
                p = rng.choice(attrs)
                if rng.random() < 0.6:
                    struct.pack_into("H", b, p, rng.choice([0, 1, 3, 4, 5, 8, 12, 67, 68, 72, 0xFFFF, rng.getrandbits(16)]))
                else:
                    struct.pack_into("H", b, p + 2, rng.choice([rng.randrange(48), rng.getrandbits(16), 0x8000 | 2, 0x4000 | 21]))
        elif op == 4 and len(b) >= 240:  # the family (selector's or the SA's)
            struct.pack_into("H", b, rng.choice([16 + 40, 16 + 220]), rng.choice([0, 1, 2, 10, 17, 0xFFFF]))
        elif op == 5:  # an attribute appended (random type, random size)
            t = rng.randrange(48)
            body = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 1, 2, 4, 8, 16, 64, 72])))
            b += struct.pack("HH", 4 + len(body), t) + body + b"\0" * ((-len(body)) % 4)
            struct.pack_into("I", b, 0, len(b))
        elif op == 6 and b:  # garbage appended after the message (a second, broken one)
            b += bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 40)))
        elif op == 7 and len(b) >= 6:  # the message type
            struct.pack_into("H", b, 4, rng.choice([0x10, 0x10, 0x11, 0x13, 2, 3]))
    return bytes(b)


def decode_both(data: bytes):
    """(fast result, pyroute2 result): each a record or the string "XfrmError"."""
    from dissectors.xfrm import XfrmError, XfrmMsg, parse_messages, sa_from_bytes, sa_from_msg

    def fast():
        if len(data) < 16:
            raise XfrmError("short")
        (length,) = struct.unpack_from("I", data, 0)
        if length < 16 or length > len(data):
            raise XfrmError("truncated")
        return sa_from_bytes(data, 0, length)

    def slow():
        for hdr, msg in parse_messages(data):
            if msg is None or hdr["type"] != XfrmMsg.NEWSA:
                raise XfrmError("not NEWSA")
            return sa_from_msg(msg)
        raise XfrmError("empty")

    out = []
    for name, fn in (("fast", fast), ("pyroute2", slow)):
        try:
            out.append(fn())
        except XfrmError:
            out.append("XfrmError")
        except Exception as exc:
            raise FuzzProblem("crash", f"{name} decoder: {type(exc).__name__}: {str(exc)[:120]}", data) from exc
    return out


def fuzz_xfrm_netlink(rng: random.Random) -> None:
    if len(_BASES) < 24:
        _BASES.append(_newsa(random.Random(rng.getrandbits(32))))
    base, keys = rng.choice(_BASES)
    data = _damage(rng, base) if rng.random() < 0.97 else base
    if len(data) >= 6 and struct.unpack_from("H", data, 4)[0] != 0x10:
        _events(data, keys)  # another message type: the multicast path (``xfrm watch``)
        return
    fast, slow = decode_both(data)
    if fast != slow:
        which = "only fast raised" if fast == "XfrmError" else "only pyroute2 raised" if slow == "XfrmError" \
            else "records differ"
        raise FuzzProblem("disagree", f"fast vs pyroute2 decoder: {which}", data)
    if fast != "XfrmError":
        from analyzer.xfrm_commands import render_text
        from analyzer.xfrm_state import XfrmSnapshot, sa_to_dict

        snap = XfrmSnapshot(sas=(fast,), policies=())
        buf = io.StringIO()
        render_text(snap, buf)
        check_no_leak(Secrets.of(keys), repr(fast), json.dumps(sa_to_dict(fast)), buf.getvalue())


def _events(data: bytes, keys: list[bytes]) -> None:
    """Any XFRM message through ``parse_messages`` + ``event_from_msg`` and ``xfrm watch``'s
    renderings: XfrmError or an event, never another exception, never a key."""
    from analyzer.xfrm_commands import event_to_dict, event_to_text
    from dissectors.xfrm import XfrmError, event_from_msg, parse_messages

    try:
        out = []
        for _hdr, msg in parse_messages(data):
            if msg is not None:
                ev = event_from_msg(msg, 0.0)
                out += [event_to_text(ev), json.dumps(event_to_dict(ev))]
    except XfrmError:
        return
    except Exception as exc:
        raise FuzzProblem("crash", f"event decoder: {type(exc).__name__}: {str(exc)[:120]}", data) from exc
    try:
        check_no_leak(Secrets.of(keys), *out)
    except FuzzProblem as p:
        raise FuzzProblem(p.kind, f"xfrm watch: {p.detail}", data) from None

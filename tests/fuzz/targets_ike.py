"""IKEv2 messages: mutated plaintext re-sealed with the real keys, SKF fragments, outer damage.

The corpus is the project's real conversations (samples/*/capture.pcap*, each with the key
files beside it). An input takes one conversation and rewrites one to three of its messages:

- ``plain`` (most): the decrypted payload chain is damaged structurally (a payload's length,
  its Next Payload, a payload deleted, duplicated, moved, or spliced in from another
  message, an SA payload emptied of proposals, the critical bit, bytes inside one body with
  its length kept right) and sealed again with the IKE SA's real SK_e/SK_a, so the inner
  parsers, the group analyzer, the Child SA key derivation and the rules see it;
- ``fragments``: the (maybe damaged) chain sealed as RFC 7383 SKF fragments of a random
  size, fragments dropped, duplicated or reordered;
- ``wrong-key``: sealed with a wrong SK_e and the right SK_a (the ICV verifies);
- ``outer``: the message bytes as sent damaged (header, clear payloads of IKE_SA_INIT, SK).

Then the whole conversation runs through ``analyzer.session.Session`` (the engine behind
lint, groups, esp, monitor, the TUI), with ESP decryption on or off, and the damaged
messages through the ``show`` renderers (text tree and JSON); one input in 20 is written
as a pcap and run through ``multisa lint|show|groups|esp -k DIR``. Checks: no exception, no
internal error, the one-line contract, no 8-octet window of any key (SK_e/a, SK_d, ESP keys)
in any output.
"""

from __future__ import annotations

import glob
import json
import os
import struct
from dataclasses import dataclass, replace
from random import Random

from analyzer.config import Settings
from analyzer.report.tree import render_message
from analyzer.session import Session
from dissectors import crypto
from dissectors.capture import Datagram, iter_datagrams
from dissectors.iana import PayloadType
from dissectors.ikev2 import ike_message_of
from dissectors.ikev2.export import message_to_dict
from dissectors.ikev2.message import IKE_HEADER_LEN
from dissectors.ikev2.payloads import SkfPayload, SkPayload
from dissectors.keys import load_keys

from . import pcapgen as g
from .common import FuzzProblem, Secrets
from .drive import Scratch, check_cli, mutate, no_leak

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


@dataclass
class Sealable:
    """An encrypted message of the corpus: enough to seal a new plaintext in its place."""

    index: int  # datagram index in the conversation
    prefix: bytes  # what precedes the IKE header in the UDP payload (the Non-ESP Marker)
    header: bytes  # the IKE header (28 octets) as sent
    clear: bytes  # payloads in clear before SK
    first: int  # SK's Next Payload: the first inner payload
    plain: bytes
    encr: object
    integ: object
    sk_e: bytes
    sk_a: bytes


@dataclass
class Conversation:
    name: str
    keydir: str
    datagrams: list[Datagram]
    sealable: list[Sealable]
    keys: object
    secrets: Secrets


_corpus: list[Conversation] | None = None
_plains: list[tuple[int, bytes]] = []  # (first payload type, plaintext) of every message, for splicing
_scratch: Scratch | None = None


def _load() -> list[Conversation]:
    global _corpus
    if _corpus is not None:
        return _corpus
    _corpus = []
    for cap in sorted(glob.glob(os.path.join(ROOT, "samples", "**", "capture.pcap*"), recursive=True)):
        keydir = os.path.dirname(cap)
        keys = load_keys([keydir])
        if not keys.ike:
            continue
        datagrams = list(iter_datagrams(cap))
        sealable = []
        for i, d in enumerate(datagrams):
            msg = ike_message_of(d)
            if msg is None or msg.malformed is not None:
                continue
            sk = next((p for p in msg.payloads if isinstance(p, SkPayload)), None)
            k = keys.ike_keys(msg.spi_i, msg.spi_r)
            if sk is None or k is None or isinstance(sk, SkfPayload):
                continue
            sk_e, sk_a = (k.sk_ei, k.sk_ai) if msg.initiator else (k.sk_er, k.sk_ar)
            try:
                plain = crypto.sk_decrypt(k.encr, k.integ, sk_e, sk_a, msg.raw, sk.offset, sk.HEADER_LEN)
            except (crypto.IntegrityError, crypto.DecryptError):
                continue
            prefix = d.payload[: len(d.payload) - len(msg.raw)] if d.payload.endswith(msg.raw) else b""
            sealable.append(Sealable(i, prefix, msg.raw[:IKE_HEADER_LEN], msg.raw[IKE_HEADER_LEN:sk.offset],
                                     sk.next_payload, plain, k.encr, k.integ, bytes(sk_e), bytes(sk_a)))
            _plains.append((sk.next_payload, plain))
        windows: list[bytes] = []
        for k in keys.ike.values():
            windows += [bytes(k.sk_ei), bytes(k.sk_er), bytes(k.sk_ai), bytes(k.sk_ar)]
        windows += [bytes(v) for v in keys.sk_d.values()]
        for e in list(keys.esp.values()) + list(keys.esp_patterns):
            windows += [bytes(e.encr_key), bytes(e.auth_key)]
        if sealable:
            _corpus.append(Conversation(os.path.basename(keydir), keydir, datagrams, sealable, keys,
                                        Secrets.of(windows)))
        if len(_corpus) >= 12:
            break
    return _corpus


# --- the payload chain, structurally --------------------------------------------------------


def _chain(plain: bytes, first: int) -> list[list]:
    """[type, flags, body] of each payload while the chain parses."""
    out, pos, kind = [], 0, first
    while kind != 0 and pos + 4 <= len(plain):
        nxt, flags, length = struct.unpack_from(">BBH", plain, pos)
        if length < 4 or pos + length > len(plain):
            break
        out.append([kind, flags, plain[pos + 4:pos + length]])
        pos += length
        kind = nxt
    return out


def _build(chain: list[list]) -> tuple[int, bytes]:
    parts = []
    for i, (kind, flags, body) in enumerate(chain):
        nxt = chain[i + 1][0] if i + 1 < len(chain) else 0
        parts.append(struct.pack(">BBH", nxt, flags, 4 + len(body)) + body)
    return (chain[0][0] if chain else 0), b"".join(parts)


def _damage_plain(rng: Random, first: int, plain: bytes) -> tuple[int, bytes]:
    chain = _chain(plain, first)
    if not chain:
        return first, mutate(rng, plain)
    op = rng.randrange(11)
    i = rng.randrange(len(chain))
    if op == 0:  # a payload's length lies: rebuild then patch the length field
        nfirst, out = _build(chain)
        pos = sum(4 + len(b) for _, _, b in chain[:i])
        value = rng.choice((0, 1, 3, 4, 5, 4 + len(chain[i][2]) + rng.choice((-1, 1, 8)), 0xFFFF))
        return nfirst, out[:pos + 2] + struct.pack(">H", value & 0xFFFF) + out[pos + 4:]
    if op == 1:  # a Next Payload changed
        chain[i][0] = rng.choice((0, 1, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 53, 54,
                                  rng.randrange(256)))
    elif op == 2:
        del chain[i]
    elif op == 3:
        chain.insert(rng.randint(0, len(chain)), list(chain[i]))
    elif op == 4 and len(chain) > 1:
        chain.insert(rng.randrange(len(chain)), chain.pop(i))
    elif op == 5 and _plains:  # a payload from another message
        other = _chain(*_pick_plain(rng))
        if other:
            chain.insert(rng.randint(0, len(chain)), list(rng.choice(other)))
    elif op == 6:  # an SA payload without proposals (or with its proposals cut)
        sas = [c for c in chain if c[0] == PayloadType.SA] or [chain[i]]
        c = rng.choice(sas)
        c[2] = b"" if rng.random() < 0.6 else c[2][: rng.randrange(len(c[2]) + 1)]
    elif op == 7:
        chain[i][1] ^= 0x80
    elif op == 8:  # bytes inside one body, its length kept right
        chain[i][2] = mutate(rng, chain[i][2], 3)
    elif op == 9:  # one interesting field in a body (counts, lengths, SPI sizes, protocol ids)
        body = bytearray(chain[i][2])
        if body:
            j = rng.randrange(len(body))
            body[j] = rng.choice((0, 1, 2, 3, 4, 8, 0x7F, 0x80, 0xFF))
        chain[i][2] = bytes(body)
    else:
        return first, mutate(rng, plain, 2)  # anything at all
    return _build(chain)


def _pick_plain(rng: Random) -> tuple[bytes, int]:
    first, plain = rng.choice(_plains)
    return plain, first


def _seal(s: Sealable, first: int, plain: bytes, sk_e: bytes | None = None) -> bytes:
    enc_len = crypto.sk_encrypted_len(s.encr, s.integ, len(plain))
    sk_header = struct.pack(">BBH", first, 0, 4 + enc_len)
    header = s.header[:24] + struct.pack(">I", IKE_HEADER_LEN + len(s.clear) + len(sk_header) + enc_len)
    aad = header + s.clear + sk_header
    return aad + crypto.sk_encrypt(s.encr, s.integ, sk_e or s.sk_e, s.sk_a, aad, plain)


def _fragments(rng: Random, s: Sealable, first: int, plain: bytes) -> list[bytes]:
    """RFC 7383 SKF: ``plain`` cut in pieces, each sealed on its own (IKE header | SKF header as AAD)."""
    n = rng.randint(1, 5)
    size = max(1, -(-len(plain) // n))
    parts = [plain[i:i + size] for i in range(0, len(plain), size)] or [b""]
    total = len(parts) if rng.random() < 0.85 else rng.choice((0, 1, len(parts) + 1, 0xFFFF))
    out = []
    for number, part in enumerate(parts, 1):
        if rng.random() < 0.05:
            number = rng.choice((0, total + 1, 0xFFFF))
        enc_len = crypto.sk_encrypted_len(s.encr, s.integ, len(part))
        skf = struct.pack(">BBHHH", first if number == 1 else 0, 0, 8 + enc_len, number & 0xFFFF, total & 0xFFFF)
        header = s.header[:16] + bytes([PayloadType.SKF]) + s.header[17:24] + \
            struct.pack(">I", IKE_HEADER_LEN + len(skf) + enc_len)
        aad = header + skf
        out.append(aad + crypto.sk_encrypt(s.encr, s.integ, s.sk_e, s.sk_a, aad, part))
    r = rng.random()
    if r < 0.15 and len(out) > 1:
        del out[rng.randrange(len(out))]
    elif r < 0.3:
        out.insert(rng.randint(0, len(out)), rng.choice(out))
    elif r < 0.5:
        rng.shuffle(out)
    return out


def _rewrite(rng: Random, conv: Conversation) -> tuple[list[Datagram], set[int]]:
    datagrams = list(conv.datagrams)
    inserted: dict[int, list[Datagram]] = {}
    touched: set[int] = set()
    for _ in range(rng.randint(1, 3)):
        mode = rng.random()
        if mode < 0.12:  # outer damage of any IKE message (IKE_SA_INIT is in clear)
            candidates = [i for i, d in enumerate(conv.datagrams) if d.proto == 17]
            if not candidates:
                continue
            i = rng.choice(candidates)
            d = datagrams[i]
            datagrams[i] = replace(d, payload=d.payload[:4] + mutate(rng, d.payload[4:], 3)
                                   if d.payload[:4] == b"\0\0\0\0" else mutate(rng, d.payload, 3))
            touched.add(i)
            continue
        s = rng.choice(conv.sealable)
        d = conv.datagrams[s.index]
        first, plain = _damage_plain(rng, s.first, s.plain) if rng.random() < 0.9 else (s.first, s.plain)
        if mode < 0.27:
            pieces = _fragments(rng, s, first, plain)
            datagrams[s.index] = replace(d, payload=s.prefix + pieces[0])
            inserted[s.index] = [replace(d, payload=s.prefix + p) for p in pieces[1:]]
        elif mode < 0.35:  # wrong encryption key, right integrity key
            wrong = bytes(b ^ 0x5A for b in s.sk_e)
            datagrams[s.index] = replace(d, payload=s.prefix + _seal(s, s.first, s.plain, wrong))
        else:
            datagrams[s.index] = replace(d, payload=s.prefix + _seal(s, first, plain))
        touched.add(s.index)
    out: list[Datagram] = []
    marks: set[int] = set()
    if touched and rng.random() < 0.6:  # the conversation up to a little after the damage
        datagrams = datagrams[: max(touched) + rng.randint(1, 8)]
    for i, d in enumerate(datagrams):
        if i in touched:
            marks.add(d.frame.index)
        out.append(d)
        out.extend(inserted.get(i, ()))
    return out, marks


def _pcap(datagrams: list[Datagram]) -> bytes:
    records = []
    for d in datagrams:
        body = g.udp(d.sport or 500, d.dport or 500, d.payload) if d.proto == 17 else d.payload
        records.append((d.frame.ts, g.link(1, g.ip(d.src, d.dst, d.proto, body))))
    return g.pcap(records, 1)


def fuzz_ike_messages(rng: Random) -> None:
    global _scratch
    corpus = _load()
    if not corpus:
        raise FuzzProblem("crash", "no sample conversation with keys to fuzz")
    conv = rng.choice(corpus)
    datagrams, marks = _rewrite(rng, conv)
    if rng.random() < 0.05:
        if _scratch is None:
            _scratch = Scratch("ike")
        path = _scratch.write("ike.pcap", _pcap(datagrams))
        cmd = rng.choice((["lint"], ["lint", "--format", "json"], ["lint", "--format", "sarif"], ["show"],
                          ["show", "--json"], ["groups"], ["groups", "--json"], ["esp"], ["esp", "--decrypt"],
                          ["esp", "--json", "--decrypt"]))
        check_cli([cmd[0], path, "-k", conv.keydir] + cmd[1:], conv.secrets, (path, conv.keydir),
                  f"multisa {' '.join(cmd)} ({conv.name})")
        return
    decrypt = rng.random() < 0.5
    session = Session(f"fuzz:{conv.name}", conv.keys, Settings(), decrypt=decrypt)
    shown: list[str] = []

    def on_message(msg) -> None:
        if msg.frame is not None and msg.frame.index in marks:
            shown.append(render_message(msg))
            shown.append(json.dumps(message_to_dict(msg)))

    session.on_message = on_message
    findings = []
    for d in datagrams:
        findings += session.feed(d)
    findings += session.finish()
    outputs = [json.dumps([f.to_dict() for f in findings])] + shown
    no_leak(conv.secrets, *outputs)

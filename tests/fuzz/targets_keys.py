"""Key files, all three formats (``dissectors.keys``): ikev2_decryption_table, esp_sa, ikev2_sk_d.

Each input is a small file of rows built from valid ones (random keys: hex, and ASCII for
esp_sa as Wireshark's compute_ascii_key reads a key without 0x) and damaged at the text
level: fields shifted, swapped, dropped or duplicated, a key moved into a name field, quotes,
``\\xNN`` escapes, non-ASCII digits, byte mutations. Checks: loading never raises; every
problem is one line "path:line: reason"; no 8-octet window of any key of the file in any
problem, repr or output (a key moved into an SPI or address column is printed as such and is
not counted); one input in 25 goes through ``multisa show -k FILE`` for the command line's
contract.
"""

from __future__ import annotations

import csv
import io
import os
from random import Random

from dissectors.crypto import ENCR_SPECS, ESP_AUTH_BY_NAME, ESP_ENCR_BY_NAME, INTEG_BY_NAME, PRF_BY_ID
from dissectors.iana import PrfId
from dissectors.keys import load_keys

from .common import FuzzProblem, Secrets, check_one_line_error
from .drive import Scratch, check_cli, mutate, no_leak

_scratch: Scratch | None = None
_CAPTURE = os.path.join(os.path.dirname(__file__), "..", "..", "samples", "peer", "clean", "capture.pcapng")

ODD = ["\u00b2", "\u0665", "\uff11", "\u00e9", "\x00", '"', ",", "\\x41", "\\x2c", " ", "*", "0x", "-", "\ufeff",
       "\u2028", "\r"]

#: columns that are not secret (a key moved there is shown as an SPI/address by design)
IKE_PLAIN, ESP_PLAIN, SKD_PLAIN = {0, 1}, {0, 1, 2, 3}, {0, 1, 3}
IKE_KEYS, ESP_KEYS, SKD_KEYS = (2, 3, 5, 6), (5, 7), (2,)


def _scratch_dir() -> Scratch:
    global _scratch
    if _scratch is None:
        _scratch = Scratch("keys")
    return _scratch


def _hexkey(rng: Random, n: int) -> str:
    return rng.randbytes(n).hex()


def _ascii_key(rng: Random, n: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!$%&()*+-./:;<=>?@[]^_{|}~ "
    return "".join(rng.choice(alphabet) for _ in range(n))


def _ike_row(rng: Random) -> list[str]:
    encr = rng.choice(ENCR_SPECS)
    integ = INTEG_BY_NAME["NONE [RFC4306]"] if encr.aead else rng.choice(list(INTEG_BY_NAME.values()))
    return [_hexkey(rng, 8), _hexkey(rng, 8), _hexkey(rng, encr.key_len), _hexkey(rng, encr.key_len), encr.name,
            _hexkey(rng, integ.key_len), _hexkey(rng, integ.key_len), integ.name]


def _esp_row(rng: Random) -> list[str]:
    v6 = rng.random() < 0.3
    addr = (lambda: f"2001:db8::{rng.randrange(1, 0xFFFF):x}") if v6 else (lambda: f"192.0.2.{rng.randrange(1, 255)}")
    name = rng.choice(list(ESP_ENCR_BY_NAME))
    auth = rng.choice(list(ESP_AUTH_BY_NAME))
    klen = rng.choice((16, 20, 24, 32, 36))
    ekey = "0x" + _hexkey(rng, klen) if rng.random() < 0.6 else _ascii_key(rng, klen)
    alen = ESP_AUTH_BY_NAME[auth].key_len or rng.choice((0, 20, 32))
    akey = ("0x" + _hexkey(rng, alen) if rng.random() < 0.6 else _ascii_key(rng, alen)) if alen else ""
    spi = rng.choice((f"0x{rng.getrandbits(32):08x}", str(rng.getrandbits(32)), "*", "0xc0ffee**"))
    return ["IPv6" if v6 else "IPv4", rng.choice((addr(), "*")), addr(), spi, name, ekey, auth, akey]


def _skd_row(rng: Random) -> list[str]:
    prf = rng.choice(list(PRF_BY_ID))
    row = [_hexkey(rng, 8), _hexkey(rng, 8), _hexkey(rng, PRF_BY_ID[prf].out_len)]
    if rng.random() < 0.7:
        row.append(rng.choice((PrfId(prf).name, str(prf))))
    return row


def _secret_bytes(kind: str, text: str) -> bytes:
    text = text.strip()
    if kind == "esp_sa" and text[:2].lower() != "0x":
        return text.encode("utf-8", "replace")
    digits = text[2:] if text[:2].lower() == "0x" else text
    try:
        return bytes.fromhex(digits)
    except ValueError:
        return text.encode("utf-8", "replace")


def _damage(rng: Random, row: list[str], key_cols: tuple[int, ...], name_cols: tuple[int, ...]) -> list[str]:
    row = list(row)
    op = rng.randrange(10)
    if op == 0 and row:  # a column lost: everything after it shifts left
        del row[rng.randrange(len(row))]
    elif op == 1:  # a column gained
        row.insert(rng.randint(0, len(row)), rng.choice(row) if row else "")
    elif op == 2 and len(row) > 1:  # two columns swapped
        i, j = rng.sample(range(len(row)), 2)
        row[i], row[j] = row[j], row[i]
    elif op == 3 and name_cols and key_cols:  # a key where a name belongs
        k = rng.choice([c for c in key_cols if c < len(row)] or [0])
        n = rng.choice([c for c in name_cols if c < len(row)] or [0])
        row[n] = row[k]
    elif op == 4 and row:  # an odd character in a field
        i = rng.randrange(len(row))
        at = rng.randint(0, len(row[i]))
        row[i] = row[i][:at] + rng.choice(ODD) + row[i][at:]
    elif op == 5 and row:  # a field replaced by an odd token
        row[rng.randrange(len(row))] = rng.choice(ODD + ["", "0", "1" * rng.randint(1, 40), "5", "²", "NONE"])
    elif op == 6 and row:  # a field cut
        i = rng.randrange(len(row))
        row[i] = row[i][: rng.randrange(len(row[i]) + 1)]
    elif op == 7 and row:  # a name glued to a key
        i = rng.randrange(len(row))
        row[i] = row[i] + rng.choice(row)
    return row


def _line(rng: Random, row: list[str], quote_names: tuple[int, ...]) -> str:
    style = rng.randrange(4)
    if style == 0:  # as save-keys writes: names quoted
        return ",".join(f'"{f}"' if i in quote_names else f for i, f in enumerate(row))
    if style == 1:
        out = io.StringIO()
        csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="").writerow(row)
        return out.getvalue()
    if style == 2:
        return ",".join(row)
    return ", ".join(f'"{f}"' for f in row)


KINDS = {
    "ikev2_decryption_table": (_ike_row, IKE_KEYS, (4, 7), IKE_PLAIN),
    "esp_sa": (_esp_row, ESP_KEYS, (4, 6), ESP_PLAIN),
    "ikev2_sk_d": (_skd_row, SKD_KEYS, (3,), SKD_PLAIN),
}


def fuzz_key_files(rng: Random) -> None:
    kind = rng.choice(list(KINDS))
    make, key_cols, name_cols, plain = KINDS[kind]
    rows = [make(rng) for _ in range(rng.randint(1, 4))]
    secrets: list[bytes] = []
    lines = []
    for row in rows:
        for c in key_cols:
            if c < len(row):
                secrets.append(_secret_bytes(kind, row[c]))
        damaged = _damage(rng, row, key_cols, name_cols) if rng.random() < 0.8 else row
        # a key moved into a plain column is printed as that column: not a secret of this line
        shown = {damaged[c].strip() for c in plain if c < len(damaged)}
        secrets = [s for s in secrets if not any(_secret_bytes(kind, v) == s or s.hex() in v.lower() for v in shown)]
        lines.append(_line(rng, damaged, name_cols))
    text = "\n".join(lines) + rng.choice(("\n", "", "\r\n"))
    data = text.encode("utf-8", "surrogatepass")
    if rng.random() < 0.2:
        data = mutate(rng, data)
    scratch = _scratch_dir()
    name = kind if rng.random() < 0.85 else "keys.txt"  # unnamed: the kind is sniffed
    path = scratch.write(name, data)
    sec = Secrets.of(secrets)
    store = load_keys([path])
    outputs = [repr(store)] + [repr(k) for k in store.ike.values()] + [repr(k) for k in store.esp.values()]
    outputs += [repr(k) for k in store.esp_patterns]
    for problem in store.problems:
        text = str(problem)
        check_one_line_error(text, "key problem")
        if not text.startswith(path + ":"):
            raise FuzzProblem("contract", f"key problem does not name path:line: {text[:200]!r}")
        outputs += [text, repr(problem)]
    no_leak(sec, *outputs)
    if rng.random() < 0.04:
        check_cli(["show", _CAPTURE, "-k", path], sec, (path,), "multisa show -k")
    os.unlink(path)

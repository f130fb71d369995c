"""A second engine: the JSON contract of ``multisa show --json`` computed by tshark.

tshark (through pyshark, ``-T json --no-duplicate-keys``) dissects and decrypts the capture;
this module maps its field tree onto the contract of ``dissectors.ikev2.export`` so that the
two engines can be compared (``dissectors.diff.compare_messages``). Fields tshark does not
expose (certificate lengths) are ``None``; payload offsets and ID data come from the raw
bytes and positions ``-x`` adds (``FIELD_raw``: ``[hex, position, length, bitmask, type]``).

Keys reach tshark as files, never on its command line: the user's ``ikev2_decryption_table``
and ``esp_sa`` lines are copied into a private temporary configuration directory that
``WIRESHARK_CONFIG_DIR`` points at while tshark starts.

tshark's JSON shape, as relied on here (tshark 4.0):

* a payload is a pair of keys, ``isakmp.typepayload`` (its type) and
  ``isakmp.typepayload_tree`` (its fields); with ``--no-duplicate-keys`` the repeated pairs of one
  level become two parallel lists, in wire order;
* the SA payload nests proposals (type 2) and transforms (type 3) the same way;
* a decrypted SK holds ``isakmp.enc.decrypted`` -> ``isakmp.enc.contained`` -> payload pairs;
  without keys there is no ``isakmp.enc.decrypted`` at all; with wrong keys there is one (of
  garbage) and an ``isakmp.ikev2.integrity_checksum`` expert item under ``isakmp.enc.icd_tree``;
* each SKF fragment is decrypted alone (its ``isakmp.enc.contained`` stays empty); the fragment
  completing reassembly lists the frames under ``isakmp.fragments`` and holds the joined payload
  pairs directly in its own tree;
* byte strings are colon-separated hex, integers decimal, the message id ``0x%08x``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

IKE_TABLE, ESP_TABLE = "ikev2_decryption_table", "esp_sa"
SK, SKF, SA, NOTIFY, DELETE, TSI, TSR, CP, EAP = 46, 53, 33, 41, 42, 44, 45, 47, 48
IDI, IDR = 35, 36

Tree = dict[str, Any]


class TsharkError(Exception):
    """tshark is missing or failed. One line, never a command line or key material.

    ``messages`` holds what tshark had already produced before it failed.
    """

    def __init__(self, reason: str, messages: list[dict[str, Any]] | None = None) -> None:
        super().__init__(reason)
        self.messages = messages or []


# --- tshark value -> contract value ------------------------------------------------------

def _int(v: str) -> int:
    return int(v, 16) if v.startswith("0x") else int(v)


def _bool(v: str) -> bool:
    return v in ("1", "True", "true")


def _hex(v: str) -> str:
    return v.replace(":", "").lower()


def _length(v: str) -> int:
    return len(_hex(v)) // 2


def _address(v: str) -> str:
    return str(ipaddress.ip_address(v))


class Field(NamedTuple):
    """One row of a field map: contract key <- the first tshark field present, converted.

    ``tshark`` holds alternatives (written ``a|b``); a step into a subtree is written ``/``.
    Absent or empty fields give ``default``.
    """

    key: str
    tshark: tuple[str, ...]
    convert: Callable[[str], Any]
    default: Any = None


def _f(key: str, tshark: str, convert: Callable[[str], Any] = _int, default: Any = None) -> Field:
    return Field(key, tuple(tshark.split("|")), convert, default)


# --- the field map (tshark field -> contract key) ----------------------------------------

HEADER: tuple[Field, ...] = (
    _f("version", "isakmp.version_tree/isakmp.mjver"),
    _f("exchange", "isakmp.exchangetype"),
    _f("message_id", "isakmp.messageid"),
    _f("initiator", "isakmp.flags_tree/isakmp.flag_i", _bool),
    _f("response", "isakmp.flags_tree/isakmp.flag_r", _bool),
    _f("spi_i", "isakmp.ispi", _hex),
    _f("spi_r", "isakmp.rspi", _hex),
    _f("length", "isakmp.length"),
)
ADDRESSES: tuple[Field, ...] = (
    _f("src", "ip.src|ipv6.src", _address),
    _f("dst", "ip.dst|ipv6.dst", _address),
    _f("sport", "udp.srcport|tcp.srcport"),
    _f("dport", "udp.dstport|tcp.dstport"),
)
GENERIC: tuple[Field, ...] = (_f("critical", "isakmp.criticalpayload", _bool, False),)
#: IKEv1 (ISAKMP): flags E, C, A instead of I, V, R.
V1_FLAGS: tuple[Field, ...] = (
    _f("encryption", "isakmp.flags_tree/isakmp.flag_e", _bool, False),
    _f("commit", "isakmp.flags_tree/isakmp.flag_c", _bool, False),
    _f("authentication_only", "isakmp.flags_tree/isakmp.flag_a", _bool, False),
)

PAYLOAD: dict[int, tuple[Field, ...]] = {
    34: (_f("dh_group", "isakmp.key_exchange.dh_group"),
         _f("data_length", "isakmp.key_exchange.data", _length, 0)),
    35: (_f("id_type", "isakmp.id.type"),),
    36: (_f("id_type", "isakmp.id.type"),),
    37: (_f("encoding", "isakmp.cert.encoding"),),
    38: (_f("encoding", "isakmp.certreq.type"),),
    39: (_f("method", "isakmp.auth.method"),
         _f("data_length", "isakmp.auth.data", _length, 0)),
    40: (_f("data", "isakmp.nonce", _hex, ""),),
    NOTIFY: (_f("notify_type", "isakmp.notify.msgtype"),
             _f("protocol_id", "isakmp.notify.protoid"),
             _f("spi_size", "isakmp.spisize", default=0),
             _f("spi", "isakmp.spi", _hex, ""),
             _f("data", "isakmp.notify.data", _hex, "")),
    DELETE: (_f("protocol_id", "isakmp.delete.protoid"),
             _f("spi_size", "isakmp.spisize", default=0)),
    43: (_f("data", "isakmp.vid_bytes", _hex, ""),),
    CP: (_f("cfg_type", "isakmp.cfg.type"),),
    EAP: (_f("code", "eap/eap.code"),
          _f("identifier", "eap/eap.id"),
          _f("eap_type", "eap/eap.type")),
    SKF: (_f("fragment_number", "isakmp.frag.number"),
          _f("total_fragments", "isakmp.frag.total")),
}
PROPOSAL: tuple[Field, ...] = (
    _f("number", "isakmp.prop.number"),
    _f("protocol_id", "isakmp.prop.protoid"),
    _f("spi", "isakmp.spi", _hex, ""),
)
TRANSFORM: tuple[Field, ...] = (
    _f("type", "isakmp.tf.type"),
    _f("id", "isakmp.tf.id.encr|isakmp.tf.id.prf|isakmp.tf.id.integ|isakmp.tf.id.dh"
             "|isakmp.tf.id.esn|isakmp.tf.id"),
    _f("key_length", "isakmp.ike2.attr/isakmp.ike2.attr.key_length"),
)
SELECTOR: tuple[Field, ...] = (
    _f("ts_type", "isakmp.ts.type"),
    _f("ip_protocol", "isakmp.ts.protoid"),
    _f("start_port", "isakmp.ts.start_port"),
    _f("end_port", "isakmp.ts.end_port"),
    _f("start_address", "isakmp.ts.start_ipv4|isakmp.ts.start_ipv6", _address, ""),
    _f("end_address", "isakmp.ts.end_ipv4|isakmp.ts.end_ipv6", _address, ""),
)
INTEGRITY_FAILED = "isakmp.enc.icd_tree/_ws.expert/isakmp.ikev2.integrity_checksum"
CFG_ATTRIBUTE: tuple[Field, ...] = (
    _f("type", "isakmp.cfg.attr.type"),
    _f("value", "isakmp.cfg.attr.value", _hex, ""),
)


# --- walking tshark's tree ---------------------------------------------------------------

def _many(tree: Tree, key: str) -> list[Any]:
    """All values of ``key`` (``--no-duplicate-keys`` turns repeats into a list)."""
    value = tree.get(key)
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _lookup(tree: Any, path: str) -> str | None:
    """The first scalar at ``a/b/c``, searching every repeat of each step in order."""
    step, _, rest = path.partition("/")
    if not isinstance(tree, dict):
        return None
    for value in _many(tree, step):
        found = _lookup(value, rest) if rest else value if isinstance(value, str) else None
        if found is not None:
            return found
    return None


def _map(tree: Tree, fields: Iterable[Field]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in fields:
        raw = next((v for v in (_lookup(tree, t) for t in field.tshark) if v is not None), None)
        out[field.key] = field.default if raw in (None, "") else field.convert(raw)
    return out


def _raws(tree: Tree, key: str) -> list[list]:
    """The ``-x`` values ``[hex, position, length, bitmask, type]`` of ``key``, one per repeat."""
    value = tree.get(key + "_raw") if isinstance(tree, dict) else None
    if not isinstance(value, list) or not value:
        return []
    return [value] if isinstance(value[0], str) else [v for v in value if isinstance(v, list)]


def _payload_pairs(tree: Tree) -> Iterator[tuple[int, Tree]]:
    """(type, subtree) of each payload at one level, in wire order."""
    for kind, sub, _raw in _payload_triples(tree):
        yield kind, sub


def _payload_triples(tree: Tree) -> Iterator[tuple[int, Tree, list | None]]:
    """(type, subtree, raw) of each payload at one level; raw from tshark's ``-x``."""
    types, trees = _many(tree, "isakmp.typepayload"), _many(tree, "isakmp.typepayload_tree")
    raws = _raws(tree, "isakmp.typepayload")
    for n, (kind, sub) in enumerate(zip(types, trees)):
        yield _int(kind), sub if isinstance(sub, dict) else {}, raws[n] if len(raws) == len(types) else None


def _payload(kind: int, tree: Tree, raw: list | None = None, shift: int | None = None) -> dict[str, Any]:
    """``raw``/``shift``: the payload's ``-x`` bytes and position, and what to add to the
    position for multisa's ``offset`` (in the message; inner payloads counted from the SK
    payload's IV end, as if the plaintext stood there)."""
    offset = None if raw is None or shift is None else int(raw[1]) + shift
    out: dict[str, Any] = {"type": kind, **_map(tree, GENERIC), "offset": offset}
    out.update(_map(tree, PAYLOAD.get(kind, ())))
    if kind in (IDI, IDR) and raw is not None:
        out["data"] = str(raw[0])[16:]  # after the generic header and ID Type + RESERVED
    if kind == SA:
        out["proposals"] = [
            {**_map(prop, PROPOSAL),
             "transforms": [_map(tf, TRANSFORM) for _, tf in _payload_pairs(prop)]}
            for _, prop in _payload_pairs(tree)]
    elif kind == DELETE:
        out["spis"] = [_hex(s) for s in _many(tree, "isakmp.delete.spi")]
    elif kind in (TSI, TSR):
        out["selectors"] = [_map(ts, SELECTOR) for ts in _many(tree, "isakmp.ts.data")]
    elif kind == CP:
        out["attributes"] = [_map(a, CFG_ATTRIBUTE) for a in _many(tree, "isakmp.cfg.attr")]
    elif kind in (SK, SKF):
        inner_shift = None
        if kind == SK and offset is not None:
            iv = _raws(tree, "isakmp.enc.iv")
            inner_shift = offset + 4 + (int(iv[0][2]) if iv else 0)
        out.update(_encrypted(kind, tree, inner_shift))
    return out


def _encrypted(kind: int, tree: Tree, inner_shift: int | None = None) -> dict[str, Any]:
    """SK: inner payloads under decrypted/contained. SKF: each fragment is decrypted on its
    own; the fragment completing reassembly holds the joined inner payloads directly."""
    out: dict[str, Any] = {}
    if kind == SKF:
        fragments = next(iter(_many(tree, "isakmp.fragments")), None)
        frames = _many(fragments, "isakmp.fragment") if isinstance(fragments, dict) else []
        out["reassembled_from"] = [_int(f) for f in frames]
    decrypted = [d for d in _many(tree, "isakmp.enc.decrypted") if isinstance(d, dict)]
    if decrypted and _lookup(tree, INTEGRITY_FAILED) is not None:
        # tshark decrypts with wrong keys too and only flags the checksum: not decrypted
        return {**out, "decrypted": False, "inner": [], "error": "integrity check failed"}
    if kind == SKF:
        triples = [(k, t, None) for k, t, _ in _payload_triples(tree)]
    else:
        triples = [p for d in decrypted for c in _many(d, "isakmp.enc.contained")
                   if isinstance(c, dict) for p in _payload_triples(c)]
    return {**out, "decrypted": bool(decrypted),
            "inner": [_payload(k, t, raw, inner_shift) for k, t, raw in triples]}


def _message(frame: Tree, layers: dict[str, Tree], isakmp: Tree) -> dict[str, Any]:
    addresses: Tree = {}
    for name in ("ip", "ipv6", "udp", "tcp"):
        first = next(iter(_many(layers, name)), None)
        if isinstance(first, dict):
            addresses.update(first)
    out = {
        "frame": _int(frame["frame.number"]),
        "time": float(frame["frame.time_epoch"]),
        **_map(addresses, ADDRESSES),
        **_map(isakmp, HEADER),
    }
    if out["version"] == 1:
        out["flags"] = _map(isakmp, V1_FLAGS)
        out["payloads"] = _v1_payloads(isakmp)
    else:
        out["payloads"] = [_payload(k, t, raw, _message_shift(isakmp)) for k, t, raw in _payload_triples(isakmp)]
    return out


def _message_shift(isakmp: Tree) -> int | None:
    """Minus the frame position of the IKE header (its Initiator SPI), from ``-x``."""
    ispi = _raws(isakmp, "isakmp.ispi")
    return -int(ispi[0][1]) if ispi else None


def _v1_payloads(isakmp: Tree) -> list[dict[str, Any]]:
    """IKEv1: the payload chain by type and length; with the E flag, one encrypted block."""
    if "isakmp.enc.data" in isakmp:
        first = _lookup(isakmp, "isakmp.nextpayload")
        length = _lookup(isakmp, "isakmp.length")
        return [{"type": _int(first) if first else None, "offset": None, "encrypted": True,
                 "data_length": _int(length) - 28 if length else None}]
    out = []
    for kind, tree in _payload_pairs(isakmp):
        length = _lookup(tree, "isakmp.payloadlength")
        out.append({"type": kind, "offset": None, "data_length": _int(length) - 4 if length else None})
    return out


def _is_ike(isakmp: Tree) -> bool:
    """IKEv2, or IKEv1 (ISAKMP) -- shown by both engines, analysed only as IKEv2."""
    major = _lookup(isakmp, "isakmp.version_tree/isakmp.mjver")
    return major is not None and _int(major) in (1, 2)


# --- keys --------------------------------------------------------------------------------

def _key_files(key_paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    for raw in key_paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.iterdir()
                              if p.is_file() and p.name.endswith((IKE_TABLE, ESP_TABLE)))
        elif path.is_file():
            yield path
        else:
            raise TsharkError(f"{path}: no such key file or directory")


def _table_of(path: Path, line: str) -> str:
    """Which UAT a key line belongs to: by file name, else by its shape."""
    if IKE_TABLE in path.name:
        return IKE_TABLE
    if ESP_TABLE in path.name:
        return ESP_TABLE
    return ESP_TABLE if line.startswith('"IPv') else IKE_TABLE


def _key_tables(key_paths: Iterable[str | os.PathLike[str]]) -> dict[str, list[str]]:
    tables: dict[str, list[str]] = {IKE_TABLE: [], ESP_TABLE: []}
    for path in _key_files(key_paths):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as err:
            raise TsharkError(f"{path}: cannot read ({err.strerror})") from None
        for line in (raw.strip() for raw in lines):
            if line and not line.startswith("#"):
                tables[_table_of(path, line)].append(line)
    return tables


_ENV_LOCK = threading.Lock()


@contextlib.contextmanager
def _config_dir(tables: dict[str, list[str]]) -> Iterator[None]:
    """A private WIRESHARK_CONFIG_DIR holding the key tables, set while tshark starts."""
    with tempfile.TemporaryDirectory(prefix="multisa-tshark-") as conf, _ENV_LOCK:
        for name, lines in tables.items():
            fd = os.open(Path(conf, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write("".join(line + "\n" for line in lines))
        saved = os.environ.get("WIRESHARK_CONFIG_DIR")
        os.environ["WIRESHARK_CONFIG_DIR"] = conf
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("WIRESHARK_CONFIG_DIR", None)
            else:
                os.environ["WIRESHARK_CONFIG_DIR"] = saved


# --- running tshark ----------------------------------------------------------------------

EXIT_GRACE_SECONDS = 10.0
_HEX_RUN = re.compile(r"(?:0x)?[0-9A-Fa-f]{2}(?::?[0-9A-Fa-f]{2}){7,}")


def _failure(path: str | os.PathLike[str], line: str | None) -> str:
    """One line from tshark's last stderr line, any long hex run (a key?) redacted."""
    text = (line or "").strip()
    text = "" if text.startswith("Running as user") else text.removeprefix("tshark: ")
    text = _HEX_RUN.sub("<redacted>", text.splitlines()[0] if text else "")
    if str(path) in text:
        return f"tshark: {text}"
    return f"tshark failed on {path}: {text or 'no reason given'}"


def _layers(packet: Any) -> Iterator[tuple[str, Tree]]:
    """(name, JSON object) of each layer of a pyshark JSON packet, duplicates included."""
    for layer in packet.layers:
        for one in (layer, *layer.duplicate_layers):
            # pyshark exposes no public accessor for the parsed JSON object of a layer
            yield layer.layer_name, one._all_fields  # noqa: SLF001


def _packet_messages(packet: Any) -> list[dict[str, Any]]:
    frame: Tree = packet.frame_info._all_fields  # noqa: SLF001
    layers: dict[str, Tree] = {}
    ikes: list[Tree] = []
    for name, tree in _layers(packet):
        if name == "isakmp":
            ikes.append(tree)
        else:
            layers.setdefault(name, tree)
    return [_message(frame, layers, ike) for ike in ikes if _is_ike(ike)]


@functools.cache
def _capture_class() -> type:
    import pyshark

    class FileCapture(pyshark.FileCapture):  # type: ignore[misc]
        """pyshark's FileCapture, letting tshark exit by itself after its last packet.

        pyshark kills tshark as soon as stdout ends: that loses tshark's exit status (a
        failure goes unnoticed) and races asyncio's child watcher ("Unknown child process").
        """

        async def _cleanup_subprocess(self, process: Any) -> None:
            if process.returncode is None and self._eof_reached:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(process.wait(), EXIT_GRACE_SECONDS)
            await super()._cleanup_subprocess(process)

    return FileCapture


def tshark_messages(path: str | os.PathLike[str],
                    key_paths: Iterable[str | os.PathLike[str]] = ()) -> list[dict[str, Any]]:
    """Every IKE message (IKEv2, and IKEv1 to its payload chain) of ``path`` as tshark decodes it, in capture order (frames 1-based).

    ``key_paths`` are ``--keys`` arguments: key files, or directories whose files' names end in
    ``ikev2_decryption_table`` / ``esp_sa``. Raises ``TsharkError`` (one line); its
    ``messages`` keep what was read before a failure.
    """
    try:
        from pyshark.capture.capture import TSharkCrashException
        from pyshark.tshark.tshark import TSharkNotFoundException, TSharkVersionException
    except ImportError:
        raise TsharkError("pyshark is not installed (pip install pyshark)") from None
    if not Path(path).is_file():
        raise TsharkError(f"{path}: no such capture file")
    tables = _key_tables(key_paths)
    messages: list[dict[str, Any]] = []
    capture = None
    # Our own loop: pyshark would otherwise install a SafeChildWatcher bound to the main
    # thread's loop, after which no other thread could start tshark.
    loop = asyncio.new_event_loop()
    try:
        with _config_dir(tables):
            capture = _capture_class()(str(path), use_json=True, include_raw=True,
                                       keep_packets=False, display_filter="isakmp",
                                       eventloop=loop)
            for packet in capture:
                try:
                    messages.extend(_packet_messages(packet))
                except (KeyError, ValueError, TypeError) as err:
                    raise TsharkError(f"{path}: frame {packet.number}: unexpected tshark output"
                                      f" ({type(err).__name__})", messages) from None
    except TSharkNotFoundException:
        raise TsharkError("tshark not found: install Wireshark's tshark (apt install tshark)") \
            from None
    except (TSharkCrashException, TSharkVersionException, OSError, RuntimeError):
        line = _close(capture) if capture is not None else None
        raise TsharkError(_failure(path, line), messages) from None
    finally:
        if capture is not None:
            _close(capture)
        loop.close()
    return messages


def _close(capture: Any) -> str | None:
    """Stop tshark, whatever its state; its last stderr line.

    pyshark re-raises a failure from ``close`` and again from ``__del__``: forget the process
    once it is stopped so that the failure is reported once, by us.
    """
    try:
        capture.close()
    except Exception:  # noqa: BLE001 -- reported by the caller, from the stderr line
        pass
    capture._running_processes.clear()  # noqa: SLF001
    return capture._last_error_line  # noqa: SLF001

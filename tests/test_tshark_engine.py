"""The tshark engine (``dissectors.tshark``) and the engine comparison (``dissectors.diff``).

Expected values were read by hand from ``tshark -T fields`` / ``-V`` on the real captures in
../shared/captures (strongSwan 5.9.8 and 6.0.6), independently of the mapping under test.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dissectors.diff import compare_messages
from dissectors.tshark import TsharkError, tshark_messages
from tests.conftest import SHARED, needs_shared, needs_tshark

GCM = "sswan-aes256gcm16"
CBC = "sswan-aes128cbc-sha256-modp2048"
PERCPU = SHARED / "strongswan6-percpu-2cpu"
SSWAN_FRAMES = [1, 2, 3, 4, 13, 14, 23, 24, 33, 34, 41, 42, 43, 44, 53, 54, 55, 56, 63, 64,
                71, 72, 73, 74, 83, 84, 91, 92]
PERCPU_FRAMES = [1, 2, 3, 4, 7, 8, 9, 10, 25, 26]
SK, NOTIFY, SA_RESOURCE_INFO, REKEY_SA = 46, 41, 16444, 16393
CONFIG_DIR_BEFORE = os.environ.get("WIRESHARK_CONFIG_DIR")


def real(test: Callable[..., None]) -> Callable[..., None]:
    """Needs tshark and the shared captures; skips with the reason otherwise."""
    return needs_shared(needs_tshark(test))


def _keys(name: str) -> list[str]:
    return [str(SHARED / f"{name}.ikev2_decryption_table"), str(SHARED / f"{name}.esp_sa")]


@pytest.fixture(scope="module")
def sswan() -> dict[str, list[dict[str, Any]]]:
    return {name: tshark_messages(SHARED / f"{name}.pcap", _keys(name)) for name in (GCM, CBC)}


@pytest.fixture(scope="module")
def percpu() -> list[dict[str, Any]]:
    return tshark_messages(PERCPU / "capture.pcap", [str(PERCPU)])


def _by_frame(messages: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {m["frame"]: m for m in messages}


def _inner(msg: dict[str, Any]) -> list[dict[str, Any]]:
    (sk,) = [p for p in msg["payloads"] if p["type"] == SK]
    assert sk["decrypted"] is True
    return sk["inner"]


def _inner_types(msg: dict[str, Any]) -> list[int]:
    return [p["type"] for p in _inner(msg)]


def _notifies(msg: dict[str, Any], kind: int) -> list[dict[str, Any]]:
    return [p for p in _inner(msg) if p["type"] == NOTIFY and p["notify_type"] == kind]


# --- (a) tshark_messages on the real captures ---------------------------------------------

@real
@pytest.mark.parametrize("name", [GCM, CBC])
def test_sswan_captures_have_28_decrypted_messages(sswan, name):
    messages = sswan[name]
    assert [m["frame"] for m in messages] == SSWAN_FRAMES
    assert {m["spi_i"] for m in messages} == ({"208ea4958b46bc8f", "4f740f2fb0e3ebb5"} if name == GCM
                                              else {"b6814a479ef5fcad", "576802704e5b5852"})
    for m in messages[2:]:  # everything after IKE_SA_INIT is one decrypted SK payload
        assert [p["type"] for p in m["payloads"]] == [SK]
        _inner(m)
    first, second = messages[0], messages[1]
    assert first["exchange"] == 34 and first["initiator"] and not first["response"]
    assert second["exchange"] == 34 and not second["initiator"] and second["response"]
    assert [p["type"] for p in first["payloads"]] == [33, 34, 40, 41, 41, 41, 41, 41]
    assert first["src"] == "192.0.2.1" and first["dport"] == 500


@real
@pytest.mark.parametrize("name, encr, key_length, child_spi, new_spi",
                         [(GCM, 20, 256, "391f3a9d", "79f7269a"),
                          (CBC, 12, 128, "96ee1ea8", "d800300d")])
def test_sswan_rekey_and_delete_facts(sswan, name, encr, key_length, child_spi, new_spi):
    frames = _by_frame(sswan[name])
    # IKE_AUTH request: the first Child SA's SPI; ENCR transform with its key length attribute
    auth = frames[3]
    assert (auth["exchange"], auth["message_id"]) == (35, 1)
    assert _inner_types(auth) == [35, 41, 36, 39, 33, 44, 45, 41, 41, 41]
    (sa,) = [p for p in _inner(auth) if p["type"] == 33]
    assert sa["proposals"][0]["protocol_id"] == 3 and sa["proposals"][0]["spi"] == child_spi
    assert sa["proposals"][0]["transforms"][0] == {"type": 1, "id": encr, "key_length": key_length}
    ts = [p for p in _inner(auth) if p["type"] in (44, 45)]
    assert [p["selectors"] for p in ts] == [
        [{"ts_type": 7, "ip_protocol": 0, "start_port": 0, "end_port": 65535,
          "start_address": "198.51.100.0", "end_address": "198.51.100.255"}],
        [{"ts_type": 7, "ip_protocol": 0, "start_port": 0, "end_port": 65535,
          "start_address": "203.0.113.0", "end_address": "203.0.113.255"}]]
    # step 4: B opens a Child SA, so its request has the I flag clear
    assert (frames[33]["initiator"], frames[33]["response"], frames[33]["message_id"]) == (False, False, 0)
    assert (frames[34]["initiator"], frames[34]["response"]) == (True, True)
    # step 5: A rekeys the first Child SA, then deletes the old one
    (rekey,) = _notifies(frames[41], REKEY_SA)
    assert (rekey["protocol_id"], rekey["spi_size"], rekey["spi"]) == (3, 4, child_spi)
    assert _inner_types(frames[41])[:2] == [41, 33]
    assert [p["proposals"][0]["spi"] for p in _inner(frames[41]) if p["type"] == 33] == [new_spi]
    (delete,) = _inner(frames[43])
    assert (delete["type"], delete["protocol_id"], delete["spis"]) == (42, 3, [child_spi])
    # step 8: IKE SA rekey (proposal protocol IKE, 8-byte SPI = the new IKE SA's SPIi)
    (ike_sa,) = [p for p in _inner(frames[71]) if p["type"] == 33]
    new_spi_i = frames[83]["spi_i"]
    assert ike_sa["proposals"][0]["protocol_id"] == 1 and ike_sa["proposals"][0]["spi"] == new_spi_i
    (ike_delete,) = _inner(frames[73])
    assert (ike_delete["protocol_id"], ike_delete["spis"]) == (1, [])
    assert _inner(frames[74]) == []  # empty INFORMATIONAL response
    # step 9: message ids restart under the new IKE SA
    assert (frames[83]["exchange"], frames[83]["message_id"]) == (36, 0)


@real
def test_percpu_capture_messages(percpu):
    assert [m["frame"] for m in percpu] == PERCPU_FRAMES
    assert [m["exchange"] for m in percpu] == [34, 34, 35, 35, 36, 36, 36, 36, 37, 37]
    assert all(m["spi_i"] == "dec911dfe4749783" for m in percpu)
    assert all(m["spi_r"] == "aa484f32a059bd45" for m in percpu[1:])
    for m in percpu[2:]:
        _inner(m)  # every SK decrypted
    frames = _by_frame(percpu)
    assert _inner_types(frames[3]) == [35, 41, 36, 39, 33, 44, 45, 41, 41, 41, 41]
    assert _inner_types(frames[4]) == [36, 39, 33, 44, 45, 41]
    for n in (7, 8, 9, 10):
        assert _inner_types(frames[n]) == [33, 40, 34, 44, 45, 41]
    # the CREATE_CHILD_SA requests cross on the wire: frame 8 is sun's request (I flag clear)
    flags = [(frames[n]["initiator"], frames[n]["response"], frames[n]["message_id"]) for n in (7, 8, 9, 10)]
    assert flags == [(True, False, 2), (False, False, 0), (False, True, 2), (True, True, 0)]
    assert _inner_types(frames[25]) == [42] and _inner(frames[25])[0]["protocol_id"] == 1
    assert _inner(frames[26]) == []


@real
def test_percpu_sa_resource_info(percpu):
    """RFC 9611 SA_RESOURCE_INFO (16444): empty in IKE_AUTH (the fallback SA), the 4-byte
    resource id in CREATE_CHILD_SA -- 00000000 in the requests, 00000001 in the responses."""
    frames = _by_frame(percpu)
    data = {n: [(p["protocol_id"], p["spi"], p["data"]) for p in _notifies(frames[n], SA_RESOURCE_INFO)]
            for n in (3, 4, 7, 8, 9, 10)}
    assert data == {3: [(0, "", "")], 4: [(0, "", "")],
                    7: [(0, "", "00000000")], 8: [(0, "", "00000000")],
                    9: [(0, "", "00000001")], 10: [(0, "", "00000001")]}
    # the per-CPU Child SA of frame 7/9: trap-triggered packet selector first (ICMP echo)
    ts_i = [p for p in _inner(frames[7]) if p["type"] == 44][0]["selectors"]
    assert ts_i[0] == {"ts_type": 7, "ip_protocol": 1, "start_port": 2048, "end_port": 2048,
                       "start_address": "198.51.100.1", "end_address": "198.51.100.1"}
    assert ts_i[1]["start_address"] == "198.51.100.0" and ts_i[1]["end_port"] == 65535
    spis = [[p["proposals"][0]["spi"] for p in _inner(frames[n]) if p["type"] == 33][0] for n in (7, 9)]
    assert spis == ["c1f7e800", "ca2c6b46"]


@real
def test_key_directory_and_key_files_agree(percpu):
    files = [str(PERCPU / "ikev2_decryption_table"), str(PERCPU / "esp_sa")]
    assert compare_messages(percpu, tshark_messages(PERCPU / "capture.pcap", files)) == []
    assert json.dumps(percpu) == json.dumps(tshark_messages(PERCPU / "capture.pcap", files))


@real
def test_without_keys_nothing_is_decrypted():
    messages = tshark_messages(PERCPU / "capture.pcap", [])
    sks = [p for m in messages for p in m["payloads"] if p["type"] == SK]
    assert len(messages) == 10 and len(sks) == 8
    assert all(p["decrypted"] is False and p["inner"] == [] for p in sks)


@real
def test_wrong_keys_are_not_decrypted(tmp_path):
    """tshark decrypts with any key of the right length and only flags the checksum."""
    line = (SHARED / f"{GCM}.ikev2_decryption_table").read_text().splitlines()[0].split(",")
    line[2], line[3] = line[3], line[2]  # SK_ei <-> SK_er
    (tmp_path / "ikev2_decryption_table").write_text(",".join(line) + "\n")
    messages = _by_frame(tshark_messages(SHARED / f"{GCM}.pcap", [str(tmp_path)]))
    sk = messages[3]["payloads"][0]
    assert (sk["decrypted"], sk["inner"], sk["error"]) == (False, [], "integrity check failed")


@real
def test_rejected_key_line_is_not_a_failure(tmp_path):
    """tshark warns about a key of the wrong length on stderr but still reads the capture."""
    line = (SHARED / f"{GCM}.ikev2_decryption_table").read_text().splitlines()[0].split(",")
    line[2] = line[3] = "00" * 16  # AES-GCM-256 needs 36 bytes
    (tmp_path / "ikev2_decryption_table").write_text(",".join(line) + "\n")
    messages = tshark_messages(SHARED / f"{GCM}.pcap", [str(tmp_path)])
    assert len(messages) == 28
    assert not any(p["decrypted"] for m in messages[2:] for p in m["payloads"])


@real
def test_runs_from_a_worker_thread(percpu):
    """As a TUI worker would call it, after a call from the main thread (the fixture)."""
    import threading

    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(
        tshark_messages(PERCPU / "capture.pcap", [str(PERCPU)])))
    worker.start()
    worker.join()
    assert out and compare_messages(percpu, out[0]) == []


@real
def test_keys_never_reach_the_output(sswan, percpu):
    secrets = []
    for table in [SHARED / f"{GCM}.ikev2_decryption_table", SHARED / f"{CBC}.ikev2_decryption_table",
                  PERCPU / "ikev2_decryption_table"]:
        for line in table.read_text().splitlines():
            secrets += [f.strip('"').lower() for f in line.split(",")[2:] if len(f) > 20]
    assert secrets
    text = json.dumps([sswan, percpu]).lower()
    assert not [s for s in secrets if s in text]
    assert os.environ.get("WIRESHARK_CONFIG_DIR") == CONFIG_DIR_BEFORE  # restored


def _skf_capture(folder: Path) -> Path:
    """No real capture has IKE fragments: build one (RFC 7383), an INFORMATIONAL request whose
    SK{N(SA_RESOURCE_INFO), D(ESP)} travels in 2 SKF fragments, AES-CBC-128/HMAC-SHA2-256-128,
    with made-up keys written as a Wireshark key table beside it."""
    import hashlib
    import hmac
    import struct

    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    spi_i, spi_r, ei, ai = b"\x11" * 8, b"\x22" * 8, bytes(range(16)), bytes(range(32))
    (folder / "ikev2_decryption_table").write_text(
        f'{spi_i.hex()},{spi_r.hex()},{ei.hex()},{ei.hex()},"AES-CBC-128 [RFC3602]",'
        f'{ai.hex()},{ai.hex()},"HMAC_SHA2_256_128 [RFC4868]"\n')
    inner = (struct.pack(">BBHBBH", 42, 0, 12, 3, 0, 16444) + bytes.fromhex("00000002")
             + struct.pack(">BBHBBH", 0, 0, 16, 3, 4, 2) + bytes.fromhex("c1f7e800ca2c6b46"))
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))  # raw IPv4
    for n, chunk in ((1, inner[:10]), (2, inner[10:])):
        pad = -(len(chunk) + 1) % 16
        iv = bytes([n]) * 16
        enc = Cipher(algorithms.AES(ei), modes.CBC(iv)).encryptor()
        ct = enc.update(chunk + bytes(pad) + bytes([pad])) + enc.finalize()
        skf_len = 8 + len(iv) + len(ct) + 16
        msg = (spi_i + spi_r + struct.pack(">BBBBII", 53, 0x20, 37, 0x08, 5, 28 + skf_len)
               + struct.pack(">BBHHH", 41 if n == 1 else 0, 0, skf_len, n, 2) + iv + ct)
        msg += hmac.new(ai, msg, hashlib.sha256).digest()[:16]
        udp = struct.pack(">HHHH", 500, 500, 8 + len(msg), 0) + msg
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n, 0, 64, 17, 0,
                         bytes([192, 0, 2, 1]), bytes([192, 0, 2, 2])) + udp
        out += struct.pack("<IIII", n, 0, len(ip), len(ip)) + ip
    (folder / "skf.pcap").write_bytes(bytes(out))
    return folder / "skf.pcap"


@needs_tshark
def test_skf_fragments_are_reassembled_on_the_last_one(tmp_path):
    first, last = tshark_messages(_skf_capture(tmp_path), [str(tmp_path)])
    assert [p["type"] for p in first["payloads"]] == [p["type"] for p in last["payloads"]] == [53]
    one, two = first["payloads"][0], last["payloads"][0]
    assert (one["fragment_number"], one["total_fragments"], one["decrypted"]) == (1, 2, True)
    assert (one["inner"], one["reassembled_from"]) == ([], [])
    assert (two["fragment_number"], two["decrypted"], two["reassembled_from"]) == (2, True, [1, 2])
    notify, delete = two["inner"]
    assert (notify["notify_type"], notify["protocol_id"], notify["data"]) == (16444, 3, "00000002")
    assert (delete["protocol_id"], delete["spis"]) == (3, ["c1f7e800", "ca2c6b46"])


# --- errors: one line, no command line, no keys ------------------------------------------

def test_missing_capture_is_one_line_error(tmp_path):
    with pytest.raises(TsharkError, match="no such capture file") as err:
        tshark_messages(tmp_path / "nope.pcap", [])
    assert "\n" not in str(err.value)


def test_missing_key_path_is_one_line_error(tmp_path):
    (tmp_path / "c.pcap").write_bytes(b"")
    with pytest.raises(TsharkError, match="no such key file or directory"):
        tshark_messages(tmp_path / "c.pcap", ["/nonexistent/keys"])


@real
def test_unreadable_capture_is_one_line_error(tmp_path):
    bad = tmp_path / "garbage.pcap"
    bad.write_bytes(b"not a capture\n")
    with pytest.raises(TsharkError, match="isn't a capture file") as err:
        tshark_messages(bad, [str(PERCPU)])
    text = str(err.value)
    assert "\n" not in text and "--no-duplicate-keys" not in text and "multisa-tshark-" not in text


@real
def test_truncated_capture_keeps_what_was_read(tmp_path):
    cut = tmp_path / "cut.pcap"
    cut.write_bytes((PERCPU / "capture.pcap").read_bytes()[:3000])
    with pytest.raises(TsharkError, match="cut short") as err:
        tshark_messages(cut, [str(PERCPU)])
    assert [m["frame"] for m in err.value.messages] == PERCPU_FRAMES[: len(err.value.messages)]
    assert len(err.value.messages) >= 4


def test_tshark_missing_is_one_line_error(tmp_path, monkeypatch):
    (tmp_path / "c.pcap").write_bytes(b"")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TsharkError, match="tshark not found"):
        tshark_messages(tmp_path / "c.pcap", [])


# --- (b) compare_messages ------------------------------------------------------------------

def _message() -> dict[str, Any]:
    """A CREATE_CHILD_SA request in the contract: SK{N(REKEY_SA), SA, Ni, TSi, TSr, D}."""
    def ts(lo: str, hi: str) -> dict[str, Any]:
        return {"ts_type": 7, "ip_protocol": 0, "start_port": 0, "end_port": 65535,
                "start_address": lo, "end_address": hi}

    inner = [
        {"type": 41, "critical": False, "offset": 40, "notify_type": 16393, "protocol_id": 3,
         "spi_size": 4, "spi": "391f3a9d", "data": ""},
        {"type": 33, "critical": False, "offset": 52, "proposals": [
            {"number": 1, "protocol_id": 3, "spi": "79f7269a", "transforms": [
                {"type": 1, "id": 20, "key_length": 256}, {"type": 5, "id": 0, "key_length": None}]}]},
        {"type": 40, "critical": False, "offset": 96, "data": "00" * 32},
        {"type": 44, "critical": False, "offset": 132, "selectors": [ts("198.51.100.0", "198.51.100.255")]},
        {"type": 45, "critical": False, "offset": 156, "selectors": [ts("2001:db8::", "2001:db8::ffff")]},
        {"type": 42, "critical": False, "offset": 180, "protocol_id": 3, "spi_size": 4,
         "spis": ["c1f7e800", "ca2c6b46"]},
    ]
    return {"frame": 41, "time": 4.5, "src": "192.0.2.1", "dst": "192.0.2.2", "sport": 4500,
            "dport": 4500, "exchange": 36, "message_id": 4, "initiator": True, "response": False,
            "spi_i": "208ea4958b46bc8f", "spi_r": "dc3b922637ba126c", "length": 235,
            "payloads": [{"type": 46, "critical": False, "offset": 28, "decrypted": True, "inner": inner}]}


def _sk(m: dict[str, Any]) -> dict[str, Any]:
    return m["payloads"][0]


def _in(m: dict[str, Any], i: int) -> dict[str, Any]:
    return _sk(m)["inner"][i]


def _tf(m: dict[str, Any], i: int) -> dict[str, Any]:
    return _in(m, 1)["proposals"][0]["transforms"][i]


ALTERATIONS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "exchange": lambda m: m.update(exchange=37),
    "message_id": lambda m: m.update(message_id=5),
    "initiator flag": lambda m: m.update(initiator=False),
    "response flag": lambda m: m.update(response=True),
    "spi_i": lambda m: m.update(spi_i="208ea4958b46bc8e"),
    "spi_r": lambda m: m.update(spi_r="0000000000000000"),
    "outer payload type": lambda m: _sk(m).update(type=53),
    "outer payload added": lambda m: m["payloads"].insert(0, {"type": 43, "data": ""}),
    "inner payload type": lambda m: _in(m, 2).update(type=43),
    "inner payload removed": lambda m: _sk(m)["inner"].pop(),
    "inner payload order": lambda m: _sk(m)["inner"].reverse(),
    "notify type": lambda m: _in(m, 0).update(notify_type=16444),
    "notify protocol id": lambda m: _in(m, 0).update(protocol_id=2),
    "notify spi": lambda m: _in(m, 0).update(spi="391f3a9e"),
    "proposal spi": lambda m: _in(m, 1)["proposals"][0].update(spi="79f7269b"),
    "proposal added": lambda m: _in(m, 1)["proposals"].append(copy.deepcopy(_in(m, 1)["proposals"][0])),
    "transform type": lambda m: _tf(m, 1).update(type=4),
    "transform id": lambda m: _tf(m, 0).update(id=12),
    "transform key_length": lambda m: _tf(m, 0).update(key_length=128),
    "transform key_length missing": lambda m: _tf(m, 0).update(key_length=None),
    "transform removed": lambda m: _in(m, 1)["proposals"][0]["transforms"].pop(),
    "ts type": lambda m: _in(m, 3)["selectors"][0].update(ts_type=8),
    "ts ip protocol": lambda m: _in(m, 3)["selectors"][0].update(ip_protocol=6),
    "ts start port": lambda m: _in(m, 3)["selectors"][0].update(start_port=1),
    "ts end port": lambda m: _in(m, 3)["selectors"][0].update(end_port=65534),
    "ts start address": lambda m: _in(m, 3)["selectors"][0].update(start_address="198.51.100.1"),
    "ts end address": lambda m: _in(m, 4)["selectors"][0].update(end_address="2001:db8::fffe"),
    "ts selector added": lambda m: _in(m, 4)["selectors"].append(_in(m, 3)["selectors"][0]),
    "delete protocol": lambda m: _in(m, 5).update(protocol_id=1),
    "delete spi": lambda m: _in(m, 5).update(spis=["c1f7e800", "ca2c6b47"]),
    "delete spi order": lambda m: _in(m, 5)["spis"].reverse(),
    "decrypted": lambda m: _sk(m).update(decrypted=False, inner=[]),
}


def test_identical_messages_have_no_difference():
    assert compare_messages([_message()], [_message()]) == []
    assert compare_messages([], []) == []


@pytest.mark.parametrize("field", list(ALTERATIONS))
@pytest.mark.parametrize("side", ["ours", "theirs"])
def test_one_altered_field_is_reported(field, side):
    altered = _message()
    ALTERATIONS[field](altered)
    ours, theirs = ([altered], [_message()]) if side == "ours" else ([_message()], [altered])
    lines = compare_messages(ours, theirs)
    assert lines, field
    assert all(line.startswith("frame 41: ") and "\n" not in line for line in lines)


def test_difference_lines_say_where_and_what():
    altered = _message()
    _in(altered, 0).update(notify_type=16444)
    assert compare_messages([_message()], [altered]) == [
        "frame 41: payload 0 SK: inner payload 0 NOTIFY: notify_type: multisa 16393, tshark 16444"]


def test_missing_and_extra_messages_are_reported():
    other = dict(_message(), frame=42, response=True)
    assert compare_messages([_message(), other], [_message()]) == [
        "frame 42: only multisa has a message (exchange 36 message id 4 response)"]
    assert compare_messages([_message()], [_message(), other], labels=("a", "b")) == [
        "frame 42: only b has a message (exchange 36 message id 4 response)"]


@pytest.mark.parametrize("field, alter", [
    ("time, offsets, length, ports", lambda m: (m.update(time=None, length=None, sport=500),
                                                _sk(m).update(offset=None))),
    ("data tshark cannot know", lambda m: _in(m, 2).update(data="", offset=None)),
    ("hex spelling", lambda m: (m.update(spi_i="20:8E:A4:95:8B:46:BC:8F"),
                                _in(m, 5).update(spis=["C1:F7:E8:00", "ca2c6b46"]))),
    ("IPv6 spelling", lambda m: _in(m, 4)["selectors"][0].update(start_address="2001:0db8:0:0::0")),
])
def test_uncompared_fields_and_spellings_are_not_differences(field, alter):
    altered = _message()
    alter(altered)
    assert compare_messages([_message()], [altered]) == [], field


@real
@pytest.mark.parametrize("name", [GCM, CBC])
def test_compare_real_tshark_output(sswan, name):
    messages = sswan[name]
    assert compare_messages(messages, copy.deepcopy(messages)) == []
    altered = copy.deepcopy(messages)
    _inner(altered[10])[0]["spi"] = "00000000"  # frame 41's REKEY_SA
    assert compare_messages(messages, altered) == [
        f"frame 41: payload 0 SK: inner payload 0 NOTIFY: spi: multisa "
        f"{_inner(messages[10])[0]['spi']!r}, tshark '00000000'"]

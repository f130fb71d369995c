"""The reference peer against itself: real processes, real UDP sockets on loopback, real tshark.

Every run is bounded (--lifetime) and uses its own loopback addresses 127.77.x.y.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dissectors.iana import EncrId, IntegId, NotifyType, ProtocolId
from dissectors.keys import load_keys
from dissectors.records import Secret
from dissectors.esp import EspIntegrityError, EspSa, ReplayWindow, encr_key_len, integ_key_len, ipv4_udp
from peer.proposals import ProposalError, choose, parse_suite

ROOT = Path(__file__).resolve().parent.parent
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed (apt-get install tshark)")
needs_capture = pytest.mark.skipif(shutil.which("dumpcap") is None and shutil.which("tshark") is None,
                                   reason="dumpcap/tshark is not installed (apt-get install tshark)")


def peer(role: str, *args: str, stderr=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "peer.cli", "peer", role, *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=stderr or subprocess.PIPE, text=True)


@pytest.fixture
def addrs(request):
    n = (os.getpid() + hash(request.node.name)) % 200 + 20
    return f"127.78.{n}.2", f"127.78.{n}.1"  # responder, initiator


def run_pair(tmp_path, addrs, resp_args=(), init_args=(), psk_i="good-psk", duration="1.5"):
    resp_addr, init_addr = addrs
    (tmp_path / "psk").write_text("good-psk\n")
    (tmp_path / "psk_i").write_text(psk_i + "\n")
    r = peer("responder", "--listen", resp_addr, "--once", "--psk-file", str(tmp_path / "psk"), "-v",
             "--local-ts", "203.0.113.0/24", "--remote-ts", "198.51.100.0/24", "--lifetime", "25",
             "--status-file", str(tmp_path / "r.json"), "--keys-dir", str(tmp_path / "rkeys"),
             "--duration", duration, "--rate", "50", *resp_args)
    time.sleep(0.6)
    i = peer("initiator", "--connect", resp_addr, "--local", init_addr, "--psk-file", str(tmp_path / "psk_i"), "-v",
             "--lifetime", "25", "--status-file", str(tmp_path / "i.json"), "--keys-dir", str(tmp_path / "ikeys"),
             "--duration", duration, "--rate", "50", *init_args)
    try:
        _, ierr = i.communicate(timeout=40)
        try:
            _, rerr = r.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            r.terminate()
            _, rerr = r.communicate(timeout=5)
    finally:
        for p in (i, r):
            if p.poll() is None:
                p.kill()
    return i.returncode, ierr, rerr


def test_per_resource_child_sas_rekey_refusal_and_esp(tmp_path, addrs):
    rc, ierr, rerr = run_pair(tmp_path, addrs, ["--resource-info", "--max-per-ts", "2"],
                              ["--resource-info", "--resources", "2", "--extra-requests", "2",
                               "--rekey-child-after", "0.7"])
    assert rc == 0, ierr
    assert "Traceback" not in ierr + rerr
    st = json.loads((tmp_path / "i.json").read_text())
    outs = [s for s in st["sas"] if s["dir"] == "out"]
    fallback = [s for s in outs if s["fallback"]]
    members = [s for s in outs if not s["fallback"]]
    assert len(fallback) == 1 and len(members) == 3  # 2 per-resource + 1 rekeyed
    assert {s["proposal"] for s in outs} == {fallback[0]["proposal"]}  # RFC 9611 §3 identical
    assert len({tuple(s["ts"]) for s in outs}) == 1
    ids = {s["resource"]: s["resource_id"] for s in members if s["rekey_of"] is None}
    assert len(set(ids.values())) == 2 and all(len(v) == 8 for v in ids.values())  # 4 random octets each
    assert all(bytes.fromhex(v) not in (b"\0\0\0\0", b"\0\0\0\1") for v in ids.values())
    rekeyed = [s for s in members if s["rekey_of"]]
    assert rekeyed[0]["resource"] == 0 and rekeyed[0]["resource_id"] == ids[0]  # §3: same resource
    assert all(s["state"] == "deleted" for s in st["sas"])
    assert "refused: TS_MAX_QUEUE" in ierr and ierr.count("TS_MAX_QUEUE") == 2
    assert "NO_ADDITIONAL_SAS" not in ierr + rerr
    # ESP both ways, per SA, and no loss on loopback
    ins = [s for s in st["sas"] if s["dir"] == "in"]
    assert sum(s["curlft"]["packets"] for s in ins) > 20
    assert all(s["stats"]["replay"] == 0 and s["stats"]["integrity_failed"] == 0 for s in ins)
    assert sum(s["curlft"]["packets"] for s in members) > 20
    rst = json.loads((tmp_path / "r.json").read_text())
    assert rst["refusals_sent"] == 2
    sent = {s["spi"]: s["curlft"]["packets"] for s in outs}
    got = {s["spi"]: s["curlft"]["packets"] for s in rst["sas"] if s["dir"] == "in"}
    assert sent == got
    # key files: both sides wrote the same lines, and our own loader reads them
    for side in ("ikeys", "rkeys"):
        store = load_keys([str(tmp_path / side)])
        assert store.problems == []
        assert len(store.ike) == 1 and len(store.esp) == 2 * (len(outs))
    assert sorted((tmp_path / "ikeys/esp_sa").read_text().splitlines()) == \
        sorted((tmp_path / "rkeys/esp_sa").read_text().splitlines())
    assert "good-psk" not in ierr + rerr


def test_resource_info_is_off_by_default(tmp_path, addrs):
    rc, ierr, rerr = run_pair(tmp_path, addrs, init_args=["--resources", "2"], duration="0.5")
    assert rc == 0, ierr
    st = json.loads((tmp_path / "i.json").read_text())
    assert [s["fallback"] for s in st["sas"]] == [True, True]  # one Child SA only
    assert st["sas"][0]["peer_resource_id"] is None


def test_wrong_psk_gives_authentication_failed(tmp_path, addrs):
    rc, ierr, rerr = run_pair(tmp_path, addrs, init_args=["--resource-info"], psk_i="bad-psk", duration="0.5")
    assert rc == 1
    assert "IKE_AUTH refused: AUTHENTICATION_FAILED" in ierr
    assert "AUTHENTICATION_FAILED" in rerr
    assert "bad-psk" not in ierr + rerr and "Traceback" not in ierr + rerr


def test_garbage_is_dropped_and_the_responder_still_works(tmp_path, addrs):
    resp_addr, init_addr = addrs
    (tmp_path / "psk").write_text("good-psk\n")
    r = peer("responder", "--listen", resp_addr, "--once", "--psk-file", str(tmp_path / "psk"), "-v",
             "--local-ts", "203.0.113.0/24", "--remote-ts", "198.51.100.0/24", "--lifetime", "20",
             "--rate", "0")
    time.sleep(0.6)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((init_addr, 0))
    for data, port in ((b"\x00" * 3, 500), (os.urandom(8) + bytes(8) + b"\x21\x20\x22\x08" + bytes(8), 500),
                       (os.urandom(200), 500), (b"\0\0\0\0" + os.urandom(60), 4500), (os.urandom(80), 4500),
                       (b"\xff", 4500)):
        s.sendto(data, (resp_addr, port))
    s.close()
    time.sleep(0.3)
    (tmp_path / "psk_i").write_text("good-psk\n")
    i = peer("initiator", "--connect", resp_addr, "--local", init_addr, "--psk-file", str(tmp_path / "psk_i"),
             "--lifetime", "20", "--rate", "0", "--duration", "0.3")
    assert i.wait(timeout=30) == 0
    _, rerr = r.communicate(timeout=10)
    assert r.returncode == 0
    assert "Traceback" not in rerr and "dropped" in rerr


def test_flood_beyond_the_limit_always_gets_ts_max_queue(tmp_path, addrs):
    rc, ierr, rerr = run_pair(tmp_path, addrs, ["--resource-info", "--max-per-ts", "1"],
                              ["--resource-info", "--resources", "1", "--extra-requests", "12", "--rate", "0"],
                              duration="0.3")
    assert rc == 0, ierr
    assert ierr.count("refused: TS_MAX_QUEUE") == 12
    rst = json.loads((tmp_path / "r.json").read_text())
    assert rst["refusals_sent"] == 12
    assert len([s for s in rst["sas"] if s["dir"] == "in"]) == 2  # fallback + 1 member, nothing else kept


@needs_capture
@needs_tshark
def test_demo_on_loopback_is_decrypted_by_tshark(tmp_path):
    from peer.demo import run_demo, tshark_summary

    out = tmp_path / "demo"
    assert run_demo(str(out), resources=2, duration=1.5, rate=20, loopback=True, log=lambda *_: None) == 0
    s = tshark_summary(str(out / "capture.pcapng"), str(out))
    _assert_demo(s)


def _assert_demo(s):
    # all but IKE_SA_INIT, also after the IKE SA rekey (the new IKE SA's keys are exported)
    assert s.ike >= 16 and s.ike_decrypted == s.ike - 2
    # IKE_AUTH request+response, 2 member requests+responses, Child SA rekey request+response
    assert s.notify_types[NotifyType.SA_RESOURCE_INFO] == 8
    assert NotifyType.TS_MAX_QUEUE not in s.notify_types  # limit 2 x resources (RFC 9611 §6): no refusal
    assert NotifyType.NO_ADDITIONAL_SAS not in s.notify_types
    assert s.esp > 40 and s.esp_decrypted == s.esp
    assert len(s.esp_spis) >= 6


@needs_tshark
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and iproute2")
def test_demo_in_network_namespaces(tmp_path):
    from peer.demo import run_demo, tshark_summary

    out = tmp_path / "demo"
    assert run_demo(str(out), resources=2, duration=1.5, rate=20, log=lambda *_: None) == 0
    ours = f"msa{os.getpid() % 100000}"  # the demo's namespaces (others may run demos beside us)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert ours not in left  # cleaned up
    _assert_demo(tshark_summary(str(out / "capture.pcapng"), str(out)))
    assert "192.0.2.1" in (out / "esp_sa").read_text()
    lint = subprocess.run([sys.executable, "-m", "analyzer.cli", "lint", str(out / "capture.pcapng"), "-k", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert (lint.returncode, lint.stdout) == (0, "All checks passed!\n")  # the clean demo is clean


# --- rekeys, both sides starting exchanges, SKF, COOKIE: captured and decoded by multisa ---------

SK, SKF, NONCE, SA, NOTIFY = 46, 53, 40, 33, 41


def captured_pair(tmp_path, addrs, resp_args, init_args, duration="1.5"):
    """``run_pair`` with dumpcap on loopback; returns (rc, ierr, rerr, capture path)."""
    tool = shutil.which("dumpcap") or shutil.which("tshark")
    cap = tmp_path / "capture.pcapng"
    cmd = [tool, "-q", "-i", "lo", "-w", str(cap), "-f", f"udp and host {addrs[0]} and host {addrs[1]}"]
    if os.path.basename(tool) == "tshark":
        cmd[1:1] = ["-F", "pcapng"]
    dump = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not (cap.exists() and cap.stat().st_size > 0):
            time.sleep(0.05)
        time.sleep(0.2)
        rc, ierr, rerr = run_pair(tmp_path, addrs, resp_args, init_args, duration=duration)
        time.sleep(0.3)
    finally:
        dump.send_signal(2)  # SIGINT, by PID: dumpcap finishes the file
        try:
            dump.wait(timeout=5)
        except subprocess.TimeoutExpired:
            dump.kill()
    return rc, ierr, rerr, cap


def multisa_json(*args: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "analyzer.cli", *args, "--json"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    assert "Traceback" not in res.stderr, res.stderr
    return json.loads(res.stdout)


def _inner(m: dict) -> list[dict]:
    out = []
    for p in m["payloads"]:
        out += p.get("inner") or [] if p["type"] in (SK, SKF) else [p]
    return out


def _exchanges(messages: list[dict]) -> list[tuple[dict, dict]]:
    """(request, response) pairs of CREATE_CHILD_SA, matched by SPIs, Message ID and requester."""
    reqs, pairs = {}, []
    for m in messages:
        if m["exchange"] != 36 or not _inner(m):
            continue
        key = (m["spi_i"], m["spi_r"], m["message_id"], m["initiator"] != m["response"])
        if not m["response"]:
            reqs[key] = m
        elif key in reqs:
            pairs.append((reqs.pop(key), m))
    return pairs


def _nonce(m: dict) -> bytes:
    return bytes.fromhex(next(p["data"] for p in _inner(m) if p["type"] == NONCE))


def _sa_spi(m: dict) -> tuple[int, str]:
    prop = next(p for p in _inner(m) if p["type"] == SA)["proposals"][0]
    return prop["protocol_id"], prop["spi"]


@pytest.fixture(scope="module")
def rekey_run(tmp_path_factory):
    """One run with everything at once: the responder creates a Child SA itself (crossing the
    initiator's CREATE_CHILD_SAs), the initiator rekeys the IKE SA and then resource 0's Child
    SA, and the responder (``--collide``) answers each rekey by rekeying the same SA: two
    simultaneous rekeys (§2.8.1, §2.8.2). Encrypted messages over 200 octets go in SKF."""
    if shutil.which("dumpcap") is None and shutil.which("tshark") is None:
        pytest.skip("dumpcap/tshark is not installed (apt-get install tshark)")
    tmp = tmp_path_factory.mktemp("rekey")
    n = os.getpid() % 200 + 20
    addrs = (f"127.79.{n}.2", f"127.79.{n}.1")
    rc, ierr, rerr, cap = captured_pair(
        tmp, addrs, ["--resource-info", "--collide", "--create-children", "1", "--fragment-size", "200"],
        ["--resource-info", "--resources", "2", "--rekey-ike-after", "0.6", "--rekey-child-after", "0.9",
         "--fragment-size", "200"], duration="2.5")  # ESP goes on well past the rekeys, even on a busy machine
    assert rc == 0, ierr
    assert "Traceback" not in ierr + rerr
    show = multisa_json("show", str(cap), "-k", str(tmp / "ikeys"))
    groups = multisa_json("groups", str(cap), "-k", str(tmp / "ikeys"))
    return {"dir": tmp, "ierr": ierr, "rerr": rerr, "messages": show["messages"], "groups": groups,
            "i": json.loads((tmp / "i.json").read_text()), "r": json.loads((tmp / "r.json").read_text())}


def test_ike_sa_rekey_moves_the_child_sas_and_multisa_decrypts_across_it(rekey_run):
    i, r = rekey_run["i"], rekey_run["r"]
    assert [x["spis"] for x in i["ike_sas"]] == [x["spis"] for x in r["ike_sas"]] or \
        sorted(x["spis"] for x in i["ike_sas"]) == sorted(x["spis"] for x in r["ike_sas"])
    first, *new = i["ike_sas"]
    assert len(new) == 2 and first["successor"] in [x["spis"] for x in new]
    survivor = first["successor"]
    assert all(s["ike_spis"] == survivor for s in i["sas"])  # every Child SA moved over (§2.18)
    # the new IKE SAs' keys are exported: multisa decrypts every message after IKE_SA_INIT
    msgs = rekey_run["messages"]
    encrypted = [m for m in msgs if m["exchange"] != 34]
    assert encrypted and all(p.get("decrypted") for m in encrypted for p in m["payloads"] if p["type"] in (SK, SKF))
    assert {(m["spi_i"] + "/" + m["spi_r"]) for m in encrypted} == {x["spis"] for x in i["ike_sas"]}
    lineage = rekey_run["groups"]["lineages"]
    assert len(lineage) == 1
    ike_sas = {f'{x["spi_i"]}/{x["spi_r"]}': x for x in lineage[0]["ike_sas"]}
    # both crossing rekeys show; the analyzer does not apply §2.8.2's lowest nonce (yet)
    assert ike_sas[first["spis"]]["rekeyed_into"] in {x["spis"] for x in new}
    for side in ("ikeys", "rkeys"):
        assert len(load_keys([str(rekey_run["dir"] / side)]).ike) == 3


def test_simultaneous_ike_sa_rekey_keeps_the_one_without_the_lowest_nonce(rekey_run):
    ike_rekeys = [(q, a) for q, a in _exchanges(rekey_run["messages"]) if _sa_spi(q)[0] == ProtocolId.IKE]
    assert len(ike_rekeys) == 2  # ours and the peer's, crossing
    lowest = min(ike_rekeys, key=lambda qa: min(_nonce(qa[0]), _nonce(qa[1])))
    loser = f"{_sa_spi(lowest[0])[1]}/{_sa_spi(lowest[1])[1]}"
    for st in (rekey_run["i"], rekey_run["r"]):
        rows = {x["spis"]: x for x in st["ike_sas"]}
        assert rows[loser]["redundant"] and rows[loser]["state"] == "deleted"
        assert "ike-rekey-collision" in st["events"]
    assert rekey_run["i"]["ike_sas"][0]["successor"] != loser


def test_simultaneous_child_sa_rekey_deletes_the_lowest_nonce_sa_unused(rekey_run):
    rekeys = [(q, a) for q, a in _exchanges(rekey_run["messages"])
              if any(p["type"] == NOTIFY and p["notify_type"] == NotifyType.REKEY_SA for p in _inner(q))]
    assert len(rekeys) == 2
    lowest = min(rekeys, key=lambda qa: min(_nonce(qa[0]), _nonce(qa[1])))
    loser_spis = {_sa_spi(lowest[0])[1], _sa_spi(lowest[1])[1]}
    children = [c for g in rekey_run["groups"]["lineages"][0]["groups"] for c in g["child_sas"]]
    new = [c for c in children if c["rekey_of"]]
    assert len(new) == 2 and new[0]["rekey_of"] == new[1]["rekey_of"]  # both rekeyed the same SA
    for c in new:
        lost = {c["spi_in"], c["spi_out"]} == loser_spis
        assert c["state"] == "deleted"
        assert (c["esp_in"] + c["esp_out"] == 0) == lost  # the redundant SA never carried ESP
        assert c["resource_id_i"] == new[0]["resource_id_i"]  # §3: both stay on the resource
    assert all("child-rekey-collision" in st["events"] for st in (rekey_run["i"], rekey_run["r"]))


def test_the_responder_starts_a_child_sa_with_resource_info(rekey_run):
    children = [c for g in rekey_run["groups"]["lineages"][0]["groups"] for c in g["child_sas"]]
    by_r = [c for c in children if c["created_by"] == "R" and c["exchange"] == "CREATE_CHILD_SA" and not c["rekey_of"]]
    assert len(by_r) == 1
    assert by_r[0]["resource_id_i"] and by_r[0]["resource_id_r"]  # SA_RESOURCE_INFO both ways
    assert by_r[0]["esp_in"] + by_r[0]["esp_out"] > 0
    ids = [c["resource_id_r"] for c in children if c["role"] == "member" and not c["rekey_of"]]
    assert len(ids) == len(set(ids))  # one id per SA


def test_skf_fragments_are_sent_and_reassembled(rekey_run):
    frags = [m for m in rekey_run["messages"] if any(p["type"] == SKF for p in m["payloads"])]
    assert len(frags) >= 4 and all(m["length"] <= 200 for m in frags)
    assert all(p.get("decrypted") for m in frags for p in m["payloads"] if p["type"] == SKF)
    assert any(_inner(m) for m in frags)  # multisa put them back together
    assert "reassembled from" in rekey_run["ierr"] and "reassembled from" in rekey_run["rerr"]


@needs_capture
def test_the_responder_rekeys_the_fallback_sa_and_the_ike_sa(tmp_path, addrs):
    """Exchanges started by the responder alone (no crossing): CREATE_CHILD_SA with REKEY_SA for
    the initial SA, then CREATE_CHILD_SA with SA(IKE)+KE; the initiator follows both."""
    rc, ierr, rerr, cap = captured_pair(tmp_path, addrs, ["--resource-info", "--rekey-child-after", "0.5",
                                                          "--rekey-ike-after", "0.8"],
                                        ["--resource-info", "--resources", "2"])
    assert rc == 0, ierr
    assert "Traceback" not in ierr + rerr
    lineage = multisa_json("groups", str(cap), "-k", str(tmp_path / "ikeys"))["lineages"]
    assert len(lineage) == 1
    old, new = lineage[0]["ike_sas"]
    assert old["rekeyed_into"] == f'{new["spi_i"]}/{new["spi_r"]}' and new["initiator"] == "R"
    children = [c for g in lineage[0]["groups"] for c in g["child_sas"]]
    rekey = [c for c in children if c["rekey_of"]]
    assert len(rekey) == 1 and rekey[0]["created_by"] == "R" and rekey[0]["role"] == "fallback"
    st = json.loads((tmp_path / "i.json").read_text())
    assert [x["spis"] for x in st["ike_sas"]] == [f'{old["spi_i"]}/{old["spi_r"]}', f'{new["spi_i"]}/{new["spi_r"]}']
    assert {"child-rekeyed", "ike-rekeyed"} <= set(st["events"])


@needs_capture
def test_cookie_is_demanded_and_echoed(tmp_path, addrs):
    rc, ierr, _rerr, cap = captured_pair(tmp_path, addrs, ["--cookies"], ["--resources", "1"], duration="0.3")
    assert rc == 0, ierr
    inits = [m for m in multisa_json("show", str(cap), "-k", str(tmp_path / "ikeys"))["messages"]
             if m["exchange"] == 34]
    cookie = [p["data"] for p in inits[1]["payloads"] if p["type"] == NOTIFY and p["notify_type"] == NotifyType.COOKIE]
    assert [m["response"] for m in inits] == [False, True, False, True] and len(cookie) == 1
    assert inits[2]["payloads"][0]["notify_type"] == NotifyType.COOKIE and inits[2]["payloads"][0]["data"] == cookie[0]
    assert "established" in ierr


# --- units ------------------------------------------------------------------------------


@pytest.mark.parametrize("encr, bits, integ", [(EncrId.AES_GCM_16, 256, IntegId.NONE),
                                               (EncrId.AES_CBC, 256, IntegId.AUTH_HMAC_SHA2_256_128)])
def test_esp_round_trip_and_tamper(encr, bits, integ):
    sa = EspSa(0x1000, encr, bits, Secret(os.urandom(encr_key_len(encr, bits))), integ,
               Secret(os.urandom(integ_key_len(integ))), "192.0.2.1", "192.0.2.2")
    inner = ipv4_udp("198.51.100.1", "203.0.113.1", 1, 9, b"x" * 33)
    pkt = sa.seal(7, inner)
    assert pkt[:8] == bytes.fromhex("0000100000000007")
    assert sa.open(pkt) == (7, inner, 4)
    with pytest.raises(EspIntegrityError):
        sa.open(pkt[:-1] + bytes([pkt[-1] ^ 1]))
    assert "0x" not in repr(sa) or "secret" in repr(sa.encr_key)


def test_replay_window():
    w = ReplayWindow(64)
    for n in (1, 2, 5):
        assert w.check(n)
        w.accept(n)
    assert not w.check(2) and w.check(3) and not w.check(0)
    w.accept(100)
    assert not w.check(5) and w.check(40) and not w.check(36)


def test_proposal_strings():
    s = parse_suite("aes256-sha256-modp2048", ProtocolId.IKE)
    assert (s.encr, s.key_bits, s.integ, s.prf, s.dh) == (12, 256, 12, 5, 14)
    assert str(parse_suite("aes256gcm16-prfsha384-x25519", ProtocolId.IKE)) == "aes256gcm16-prfsha384-x25519"
    with pytest.raises(ProposalError):
        parse_suite("aes256", ProtocolId.ESP)
    with pytest.raises(ProposalError):
        parse_suite("aes256gcm16", ProtocolId.IKE)
    esp = parse_suite("aes256gcm16", ProtocolId.ESP)
    prop = esp.proposal(1, ProtocolId.ESP, b"\0\0\1\0")
    assert choose([prop], [esp], ProtocolId.ESP)[1] == esp
    assert choose([prop], [parse_suite("aes128gcm16", ProtocolId.ESP)], ProtocolId.ESP) is None


def test_faults_command_lists_every_fault(capsys):
    from peer.cli import main
    from peer.faults import FAULTS

    assert main(["peer", "faults"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in FAULTS) and len(FAULTS) >= 16


def test_missing_psk_is_one_line(tmp_path, capsys):
    from peer.cli import main

    env = os.environ.pop("MULTISA_PSK", None)
    try:
        assert main(["peer", "responder", "--listen", "127.0.0.1"]) == 2
    finally:
        if env is not None:
            os.environ["MULTISA_PSK"] = env
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_bad_config_is_one_line(tmp_path, capsys):
    from peer.cli import main

    (tmp_path / "c.toml").write_text('ike_proposals = ["aes256-foo"]\npsk = "x"\n')
    assert main(["peer", "responder", "--listen", "127.0.0.1", "--config", str(tmp_path / "c.toml")]) == 2
    err = capsys.readouterr().err
    assert "unknown keyword 'foo'" in err and err.count("\n") == 1


def test_every_fault_has_a_sample_with_keys_and_a_readme_line():
    from peer.faults import FAULTS

    readme = (ROOT / "samples/README.md").read_text()
    for name in ["clean", *(f"fault-{f}" for f in FAULTS)]:
        d = ROOT / "samples/peer" / name
        assert (d / "capture.pcapng").stat().st_size > 0, name
        assert (d / "ikev2_decryption_table").read_text().count("\n") >= 1, name
        assert (d / "esp_sa").read_text().count("\n") >= 6, name
        assert f"| peer/{name} |" in readme, name


@needs_tshark
def test_replay_gap_sample_shows_the_replay():
    st = json.loads((ROOT / "samples/peer/fault-esp-replay-gap/responder-status.json").read_text())
    assert any(s["stats"]["replay"] >= 1 for s in st["sas"] if s["dir"] == "in")


@pytest.mark.parametrize("encr, integ", [(EncrId.AES_GCM_16, IntegId.NONE),
                                         (EncrId.AES_CBC, IntegId.AUTH_HMAC_SHA2_256_128)])
def test_seal_fragments_round_trip_through_the_analyzers_decryptor(encr, integ):
    """RFC 7383: ``sk.seal_fragments`` cuts, ``sk.IkeDecryptor`` (the one the analyzer uses)
    verifies each fragment and puts the message back together, in any order."""
    from dissectors import crypto
    from dissectors.ikev2.message import IkeMessage, parse_message
    from dissectors.ikev2.payloads import NoncePayload, NotifyPayload, SkfPayload
    from dissectors.ikev2.sk import IkeDecryptor, seal_fragments
    from dissectors.keys import IkeKeys, KeyStore

    e = crypto.encr_spec(encr, 256)
    a = None if e.aead else crypto.integ_spec(integ)
    ke, ka = os.urandom(e.key_len), os.urandom(a.key_len if a else 0)
    spi_i, spi_r = os.urandom(8), os.urandom(8)
    inner = [NoncePayload(data=os.urandom(200)), NotifyPayload(notify_type=NotifyType.SA_RESOURCE_INFO, data=b"\1\2\3\4")]
    frags = seal_fragments(IkeMessage(spi_i, spi_r, 36, 7, 0x08), inner, e, a, ke, ka, 120)
    assert len(frags) >= 3 and all(len(f) <= 120 for f in frags)
    store = KeyStore()
    store.ike[(spi_i, spi_r)] = IkeKeys(spi_i, spi_r, e, Secret(ke), Secret(b""), a, Secret(ka), Secret(b""))
    dec = IkeDecryptor(store)
    msgs = [parse_message(f) for f in reversed(frags)]
    for m in msgs:
        dec.decrypt(m)
    skf = [next(p for p in m.payloads if isinstance(p, SkfPayload)) for m in msgs]
    assert all(p.decrypted for p in skf) and [bool(p.inner) for p in skf] == [False] * (len(frags) - 1) + [True]
    got = skf[-1].inner
    assert [type(p) for p in got] == [NoncePayload, NotifyPayload] and got[0].data == inner[0].data
    assert got[1].data == b"\1\2\3\4" and sorted(skf[-1].reassembled_from) == [0] * len(frags)

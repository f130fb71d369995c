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
from peer.esp import EspIntegrityError, EspSa, ReplayWindow, encr_key_len, integ_key_len, ipv4_udp
from peer.proposals import ProposalError, parse_suite, choose, Suite

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
    assert s.ike >= 12 and s.ike_decrypted == s.ike - 2  # all but IKE_SA_INIT
    # IKE_AUTH request+response, 2 member requests+responses, the refused request, rekey request+response
    assert s.notify_types[NotifyType.SA_RESOURCE_INFO] == 9
    assert s.notify_types[NotifyType.TS_MAX_QUEUE] == 1
    assert NotifyType.NO_ADDITIONAL_SAS not in s.notify_types
    assert s.esp > 40 and s.esp_decrypted == s.esp
    assert len(s.esp_spis) >= 6


@needs_tshark
@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and iproute2")
def test_demo_in_network_namespaces(tmp_path):
    from peer.demo import run_demo, tshark_summary

    out = tmp_path / "demo"
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert run_demo(str(out), resources=2, duration=1.5, rate=20, log=lambda *_: None) == 0
    assert subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout == before  # cleaned up
    _assert_demo(tshark_summary(str(out / "capture.pcapng"), str(out)))
    assert "192.0.2.1" in (out / "esp_sa").read_text()


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

"""Dissector coverage for what real captures hold (issue 17): the pre-RFC per-CPU notifies,
IKEv1 beside IKEv2, partial decodes, out-of-order captures, legacy ESP, AH and nested ESP.

Captures are built with the codec (``tests.ikesim``, ``tests.make_samples``) and read back
through the real capture reader; where tshark is installed, it decodes the same files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dissectors.iana import NotifyType
from tests import ikesim
from tests.make_samples import prerfc_cpu_queues

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "prerfc-cpu-queues"


def _run(capsys, *argv) -> tuple[int, str]:
    from analyzer.cli import main

    code = main(list(argv))
    return code, capsys.readouterr().out


# --- pre-RFC CPU_QUEUES / CPU_QUEUE_INFO ------------------------------------------------------


def test_prerfc_sample_lints_ms109_on_the_frames_that_carry_the_notifies(tmp_path, capsys):
    capture = prerfc_cpu_queues(tmp_path / "s")
    code, out = _run(capsys, "lint", str(capture), "-k", str(tmp_path / "s"), "-f", "json")
    findings = json.loads(out)["findings"]
    assert code == 1
    assert {f["code"] for f in findings} == {"MS109"}
    assert sorted(f["frames"][0] for f in findings) == [3, 4, 7, 8, 9, 10]
    assert all("RFC 9611 replaced it" in f["message"] and "private-use" in f["message"] for f in findings)
    assert findings[0]["rfc"] == "draft-pwouters-ipsecme-multi-sa-performance-02"


def test_prerfc_group_is_rebuilt_with_fallback_and_resource_ids(tmp_path, capsys):
    capture = prerfc_cpu_queues(tmp_path / "s")
    code, out = _run(capsys, "groups", str(capture), "-k", str(tmp_path / "s"), "--json")
    doc = json.loads(out)
    group = doc["lineages"][0]["groups"][0] if "lineages" in doc else doc["groups"][0]
    assert group["pre_rfc"] and group["uses_resource_info"]
    roles = [(c["role"], c["cpu_queues"], c["resource_id_i"], c["resource_id_r"]) for c in group["child_sas"]]
    assert roles == [("fallback", 2, "", ""), ("member", None, "", ""),
                     ("member", None, b"cpu-q1".hex(), b"cpu-q1".hex())]


def test_prerfc_notifies_are_named_and_decoded_in_show(tmp_path, capsys):
    capture = prerfc_cpu_queues(tmp_path / "s")
    code, out = _run(capsys, "show", str(capture), "-k", str(tmp_path / "s"))
    assert "Notify Message Type: CPU_QUEUES (40970)" in out
    assert "Minimum additional per-CPU SAs: 2" in out
    assert "Notify Message Type: CPU_QUEUE_INFO (40971)" in out
    assert 'Queue Identifier: 6370752d7131 ("cpu-q1")' in out
    assert "UNKNOWN(4097" not in out


def test_committed_prerfc_sample_is_what_the_builder_makes(tmp_path):
    if not SAMPLE.is_dir():
        pytest.skip("samples/prerfc-cpu-queues is missing")
    prerfc_cpu_queues(tmp_path)
    for name in ("capture.pcap", "ikev2_decryption_table"):
        assert (tmp_path / name).read_bytes() == (SAMPLE / name).read_bytes(), name


def test_rfc9611_rules_judge_prerfc_groups():
    """The draft says the same as RFC 9611 §3 for the identical-properties requirement: an
    additional per-CPU SA with other selectors than the fallback gets MS202 as well."""
    from analyzer.state import Analyzer

    conv = ikesim.Conversation()
    queues = ikesim.notify(NotifyType.CPU_QUEUES, (1).to_bytes(4, "big"))
    conv.ike_sa_init()
    conv.ike_auth(None, None, req_extra=[queues], resp_extra=[queues])
    info = ikesim.notify(NotifyType.CPU_QUEUE_INFO, b"q1")
    narrow = ((ikesim.selector(ikesim.cidr("198.51.100.0/25")),), (ikesim.selector(ikesim.NET_R),))
    conv.create_child("I", None, None, ts=narrow, req_extra=[info], resp_extra=[info])
    codes = {f.code for f in ikesim.feed_all(Analyzer(), conv.records)}
    assert {"MS109", "MS202"} <= codes

"""``wireshark/multisa.lua`` in the real tshark: its fields equal multisa's own results.

tshark decrypts with the sample's keys copied into a private WIRESHARK_CONFIG_DIR (as
``dissectors.tshark`` does); the plugin is loaded with ``-X lua_script:`` and given lint's
``--format json`` output through the preference ``multisa.findings``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES, needs_tshark

pytestmark = needs_tshark

PLUGIN = ROOT / "wireshark" / "multisa.lua"
SAMPLE_CAPTURES = sorted(p for p in SAMPLES.rglob("capture.pcap*"))
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
MULTISA = [sys.executable, "-c", "import sys; from analyzer.cli import main; sys.exit(main())"]
SA_RESOURCE_INFO = 16444


def _id(p: Path) -> str:
    return str(p.parent.relative_to(SAMPLES))


@functools.cache
def _work() -> Path:
    import tempfile

    return Path(tempfile.mkdtemp(prefix="multisa-wireshark-test-"))


@functools.cache
def lint_json(capture: Path) -> Path:
    """lint's JSON for ``capture`` (once per test run)."""
    out = _work() / (_id(capture).replace("/", "_") + ".json")
    run = subprocess.run([*MULTISA, "lint", str(capture), "-k", str(capture.parent), "--isolated",
                          "--format", "json", "-o", str(out)], capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert run.returncode in (0, 1), run.stderr
    return out


@functools.cache
def config_dir(keys: Path) -> Path:
    """A private Wireshark configuration directory holding the sample's key tables."""
    conf = _work() / ("conf-" + keys.name)
    conf.mkdir(exist_ok=True)
    for name in ("ikev2_decryption_table", "esp_sa"):
        if (keys / name).is_file():
            shutil.copy(keys / name, conf / name)
    return conf


def tshark(capture: Path, *args: str, findings: str | None = None) -> subprocess.CompletedProcess:
    cmd = ["tshark", "-n", "-X", f"lua_script:{PLUGIN}"]
    if findings is not None:
        cmd += ["-o", f"multisa.findings:{findings}"]
    cmd += ["-o", "esp.enable_encryption_decode:TRUE", "-r", str(capture), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WIRESHARK_CONFIG_DIR": str(config_dir(capture.parent))})


def stderr_lines(run: subprocess.CompletedProcess) -> list[str]:
    """tshark's stderr without its note about running as root."""
    return [line for line in run.stderr.splitlines() if line.strip() and not line.startswith("Running as user")]


def rows(run: subprocess.CompletedProcess) -> list[list[str]]:
    assert run.returncode == 0, run.stderr
    assert stderr_lines(run) == [], run.stderr
    return [line.split("\t") for line in run.stdout.splitlines()]


def resource_info_frames(capture: Path) -> dict[int, set[str]]:
    """multisa's own dissector: frame -> the SA_RESOURCE_INFO data (hex) it carries, if any."""
    run = subprocess.run([*MULTISA, "show", str(capture), "-k", str(capture.parent), "--json"],
                         capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    out: dict[int, set[str]] = {}

    def walk(payloads, frame):
        for p in payloads:
            if p.get("notify_type") == SA_RESOURCE_INFO and p.get("data"):
                out.setdefault(frame, set()).add(p["data"])
            walk(p.get("inner") or [], frame)

    for m in json.loads(run.stdout)["messages"]:
        walk(m["payloads"], m["frame"])
    return out


# --- findings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("capture", SAMPLE_CAPTURES, ids=_id)
def test_multisa_code_is_lints_frame_code_pairs(capture):
    findings = lint_json(capture)
    doc = json.loads(findings.read_text())
    want = Counter((frame, f["code"]) for f in doc["findings"] for frame in dict.fromkeys(f["frames"]))
    got = Counter()
    for number, codes in rows(tshark(capture, "-Y", "multisa.code", "-T", "fields", "-e", "frame.number",
                                     "-e", "multisa.code", findings=str(findings))):
        for code in codes.split(","):
            got[(int(number), code)] += 1
    assert got == want


def test_finding_fields_and_expert_info():
    """Severity, RFC, group, message and an expert item mapped from the rule's ExpertGroup."""
    capture = SAMPLES / "strongswan6-percpu" / "capture.pcap"
    findings = lint_json(capture)
    doc = json.loads(findings.read_text())
    assert doc["findings"]
    out = rows(tshark(capture, "-Y", "multisa.code", "-T", "fields", "-E", "aggregator=\x1f", "-e", "frame.number",
                      "-e", "multisa.severity", "-e", "multisa.rfc", "-e", "multisa.group", "-e", "multisa.message",
                      "-e", "_ws.expert.message", "-e", "_ws.expert.severity", "-e", "_ws.expert.group",
                      findings=str(findings)))
    severity = {"error": 0x00800000, "warning": 0x00600000, "info": 0x00400000}  # PI_ERROR, PI_WARN, PI_NOTE
    group = {"Protocol": 0x09000000, "Sequence": 0x02000000, "Security": 0x0A000000, "Response code": 0x03000000,
             "Malformed": 0x07000000, "Decryption": 0x0C000000, "Checksum": 0x01000000}
    by_frame = {int(r[0]): r[1:] for r in out}
    for f in doc["findings"]:
        for frame in f["frames"]:
            sev, rfc, grp, msg, emsg, esev, egrp = (v.split("\x1f") for v in by_frame[frame])
            assert f["severity"] in sev and f["rfc"] in rfc and f["message"] in msg
            assert f["group"] is None or f["group"] in grp
            mine = [i for i, text in enumerate(emsg) if text.startswith(f"multisa {f['code']} ")]
            assert mine, emsg
            assert {(int(esev[i]), int(egrp[i])) for i in mine} == {(severity[f["severity"]], group[f["category"]])}


# --- SA_RESOURCE_INFO ------------------------------------------------------------------------


#: samples that negotiate several SAs per TS without SA_RESOURCE_INFO
NO_RESOURCE_INFO = {"prerfc-cpu-queues"}


@pytest.mark.parametrize("capture", SAMPLE_CAPTURES, ids=_id)
def test_resource_id_marks_exactly_the_frames_with_sa_resource_info_data(capture):
    out = rows(tshark(capture, "-Y", "multisa.resource_id", "-T", "fields", "-e", "frame.number",
                      "-e", "multisa.resource_id"))
    got = {int(number): set(ids.split(",")) for number, ids in out}
    want = resource_info_frames(capture)
    if capture.parent.name in NO_RESOURCE_INFO:
        assert want == {}  # its multiple SAs come from a private pre-RFC notify (MS109)
    else:
        assert want  # every other sample announces resource ids
    assert got == want


def test_notifies_by_name():
    """SA_RESOURCE_INFO with and without data, and TS_MAX_QUEUE, named by the plugin."""
    capture = SAMPLES / "peer" / "fault-ts-max-queue-data" / "capture.pcapng"
    out = rows(tshark(capture, "-Y", "multisa.notify", "-T", "fields", "-e", "frame.number", "-e", "multisa.notify",
                      "-e", "isakmp.notify.msgtype"))
    names = {n for _, notifies, _ in out for n in notifies.split(",")}
    assert names == {"SA_RESOURCE_INFO", "TS_MAX_QUEUE"}
    for _, notifies, types in out:  # one name per RFC 9611 notify Wireshark decoded
        assert Counter(notifies.split(",")) == Counter(
            {"16444": "SA_RESOURCE_INFO", "48": "TS_MAX_QUEUE"}[t] for t in types.split(",") if t in ("16444", "48"))


# --- Child SAs on ESP frames -----------------------------------------------------------------


@pytest.mark.parametrize("capture", SAMPLE_CAPTURES, ids=_id)
def test_esp_frames_of_known_child_sas_have_role_and_spi(capture):
    findings = lint_json(capture)
    sas = {int(sa["spi"], 16): sa for sa in json.loads(findings.read_text())["esp_sas"]}
    assert sas
    seen = 0
    for number, spi, mspi, role in rows(tshark(capture, "-Y", "esp", "-T", "fields", "-e", "frame.number",
                                               "-e", "esp.spi", "-e", "multisa.spi", "-e", "multisa.role",
                                               findings=str(findings))):
        sa = sas.get(int(spi, 16))
        if sa is None:
            assert (mspi, role) == ("", ""), number
            continue
        seen += 1
        assert int(mspi, 16) == int(spi, 16) and role == sa["role"], number
    assert seen


# --- loading ---------------------------------------------------------------------------------


def test_capture_without_findings_loads_cleanly(tmp_path):
    capture = SAMPLES / "peer" / "clean" / "capture.pcapng"
    for findings in (None, str(lint_json(capture))):  # no preference; a file with no findings
        run = tshark(capture, "-T", "fields", "-e", "frame.number", "-e", "multisa.code", findings=findings)
        assert len(rows(run)) == 68
        assert all(code == "" for _, code in rows(run))


@pytest.mark.parametrize("content", [None, "", '{"findings": [ {"code": ', "[1, 2]", '{"findings": [{"code": 5}]}'],
                         ids=["missing", "empty", "cut", "not-lint", "bad-finding"])
def test_missing_or_broken_findings_file_gives_one_warning(tmp_path, content):
    capture = SAMPLES / "peer" / "clean" / "capture.pcapng"
    path = tmp_path / "findings.json"
    if content is not None:
        path.write_text(content)
    run = tshark(capture, "-Y", "multisa.resource_id", "-T", "fields", "-e", "frame.number", findings=str(path))
    assert run.returncode == 0
    errors = stderr_lines(run)
    assert len(errors) == 1 and errors[0].startswith("tshark: multisa: ") and str(path) in errors[0], errors
    assert "traceback" not in run.stderr.lower() and ".lua:" not in run.stderr
    assert [int(line) for line in run.stdout.split()] == sorted(resource_info_frames(capture))  # still decodes


def test_the_plugin_has_no_syntax_or_load_error():
    run = subprocess.run(["tshark", "-G", "fields", "-X", f"lua_script:{PLUGIN}"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and stderr_lines(run) == []
    fields = {line.split("\t")[2] for line in run.stdout.splitlines() if line.startswith("F\t")}
    assert {"multisa.code", "multisa.severity", "multisa.rfc", "multisa.group", "multisa.message",
            "multisa.resource_id", "multisa.role", "multisa.spi"} <= fields


def test_findings_of_several_captures_warn_once_and_show_the_first(tmp_path):
    first, second = SAMPLES / "peer" / "fault-shared-sa", SAMPLES / "strongswan6-percpu"
    out = tmp_path / "two.json"
    run = subprocess.run([*MULTISA, "lint", str(first / "capture.pcapng"), str(second / "capture.pcap"),
                          "-k", str(first), "-k", str(second), "--isolated", "-f", "json", "-o", str(out)],
                         capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert run.returncode == 1, run.stderr
    doc = json.loads(out.read_text())
    mine = str(first / "capture.pcapng")
    want = sorted({frame for f in doc["findings"] if f["file"] == mine for frame in f["frames"]})
    run = tshark(first / "capture.pcapng", "-Y", "multisa.code", "-T", "fields", "-e", "frame.number",
                 findings=str(out))
    errors = stderr_lines(run)
    assert len(errors) == 1 and "2 captures" in errors[0], errors
    assert [int(n) for n in run.stdout.split()] == want and want

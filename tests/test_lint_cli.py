"""``multisa lint``, ``groups`` and ``rules`` end to end: real captures, real output formats.

The subcommands come from ``analyzer.commands.register``; ``multisa()`` below builds the same
parser ``analyzer.cli`` does and handles ``UsageError`` the way its ``main`` does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from analyzer import commands, rules
from analyzer.pipeline import analyze_capture, evaluated
from dissectors.iana import NotifyType
from dissectors.keys import load_keys
from tests.conftest import SHARED, needs_shared
from tests.ikesim import Conversation, notify, rid, write_key_table, write_pcap
from tests.test_rules import PARAMS, ms301, ms307

S6 = SHARED / "strongswan6-percpu-2cpu"
S6_CAP, S6_KEYS = str(S6 / "capture.pcap"), str(S6)
S5 = ["sswan-aes128cbc-sha256-modp2048", "sswan-aes256gcm16"]
SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"
TEXT_LINE = re.compile(r"^(?P<file>.+):(?P<frame>\d+): (?P<code>MS\d{3}) (?P<msg>.+) "
                       r"\[(?P<cite>RFC \d+ §[\d.]+(?: [A-Z ]+)?)\]$")


def multisa(*argv: str) -> int:
    from analyzer.cli import UsageError

    parser = argparse.ArgumentParser(prog="multisa")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.register(sub)
    args = parser.parse_args(list(argv))
    try:
        return args.func(args)
    except UsageError as err:
        print(f"multisa: error: {err}", file=sys.stderr)
        return 2


def s5_args(name: str) -> list[str]:
    return [str(SHARED / f"{name}.pcap")] + [a for k in sorted(SHARED.glob(name + ".*_*")) for a in ("-k", str(k))]


@pytest.fixture(autouse=True)
def _no_config(tmp_path, monkeypatch):
    """Run from an empty directory so the repository's pyproject.toml is not picked up."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def codec_capture(tmp_path):
    """An encrypted capture built with the codec (ms301's bad case) and its key table."""
    conv = ms301(True)
    pcap = tmp_path / "ms301.pcap"
    write_pcap(pcap, conv.records, encrypt=True)
    keys = write_key_table(tmp_path / "ikev2_decryption_table", conv.records)
    return str(pcap), keys


# --- the real captures -----------------------------------------------------------------------


@needs_shared
def test_strongswan6_text(capsys):
    assert multisa("lint", S6_CAP, "--keys", S6_KEYS) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert err == ""
    matches = [TEXT_LINE.match(line) for line in lines[:-1]]
    assert all(matches), lines
    assert [(m["file"], int(m["frame"]), m["code"], m["cite"]) for m in matches] == [
        (S6_CAP, n, "MS307", "RFC 9611 §7 SHOULD NOT") for n in (7, 8, 9, 10)]
    assert "00000000 in request" in lines[0] and "00000001 in response" in lines[2]
    assert lines[-1] == "Found 4 findings (4 warnings)."


@needs_shared
def test_strongswan6_nothing_else_at_any_severity(capsys):
    assert multisa("lint", S6_CAP, "-k", S6_KEYS, "--format", "json") == 1
    doc = json.loads(capsys.readouterr().out)
    assert [(f["code"], f["frames"]) for f in doc["findings"]] == [("MS307", [n]) for n in (7, 8, 9, 10)]


@needs_shared
@pytest.mark.parametrize("name", S5)
def test_strongswan5_captures_are_clean(name, capsys):
    assert multisa("lint", *s5_args(name)) == 0
    assert capsys.readouterr().out == "All checks passed!\n"


@needs_shared
def test_several_captures_at_once(capsys):
    argv = ["lint", S6_CAP, str(SHARED / f"{S5[0]}.pcap"), "-k", S6_KEYS] + \
        [a for k in sorted(SHARED.glob(S5[0] + ".*_*")) for a in ("-k", str(k))] + ["-f", "json"]
    assert multisa(*argv) == 1
    doc = json.loads(capsys.readouterr().out)
    assert [c["file"] for c in doc["summary"]["captures"]] == [S6_CAP, str(SHARED / f"{S5[0]}.pcap")]
    assert [c["findings"] for c in doc["summary"]["captures"]] == [4, 0]
    assert [c["ike_messages"] for c in doc["summary"]["captures"]] == [10, 28]


@needs_shared
def test_without_keys_the_analysis_says_it_is_blind(capsys):
    assert multisa("lint", S6_CAP) == 1
    out = capsys.readouterr().out
    assert [TEXT_LINE.match(line)["code"] for line in out.splitlines()[:-1]] == ["MS901"]
    assert ":3: MS901 not decrypted: no key for SPIs dec911dfe4749783/aa484f32a059bd45" in out


# --- thresholds, selection, exit codes ---------------------------------------------------------


@needs_shared
@pytest.mark.parametrize("extra,code,shown", [
    ([], 1, 4),
    (["--severity", "error"], 0, 0),
    (["--severity", "warning"], 1, 4),
    (["--exit-zero"], 0, 4),
    (["--ignore", "MS307"], 0, 0),
    (["--ignore", "MS3"], 0, 0),
    (["--select", "MS3"], 1, 4),
    (["--select", "MS1,MS2"], 0, 0),
    (["--select", "MS3", "--ignore", "MS30"], 0, 0),
    (["--select", "ms307"], 1, 4),
])
def test_exit_codes_and_filters(extra, code, shown, capsys):
    assert multisa("lint", S6_CAP, "-k", S6_KEYS, "-f", "json", *extra) == code
    assert len(json.loads(capsys.readouterr().out)["findings"]) == shown


@pytest.mark.parametrize("argv,message", [
    (["lint", "missing.pcap"], "multisa: error: missing.pcap: "),
    (["lint", "--select", "XX1", "x.pcap"], "unknown rule code or prefix 'XX1'"),
    (["lint", "x.pcap", "--keys", "no/such/keys"], "multisa: error: no/such/keys: no such file or directory"),
    (["rules", "MS999"], "unknown rule 'MS999'"),
    (["lint", "x.pcap", "--config", "nope.toml"], "nope.toml: "),
])
def test_usage_and_input_errors_exit_2(argv, message, capsys):
    assert multisa(*argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@needs_shared
def test_damaged_capture_keeps_what_was_analyzed(tmp_path, capsys):
    data = (S6 / "capture.pcap").read_bytes()
    cut = tmp_path / "cut.pcap"
    # keep frames 1-12 and half of frame 13's record
    offset, frames = 24, 0
    while frames < 12:
        offset += 16 + int.from_bytes(data[offset + 8:offset + 12], "little")
        frames += 1
    cut.write_bytes(data[:offset + 30])
    assert multisa("lint", str(cut), "-k", S6_KEYS) == 2
    out, err = capsys.readouterr()
    assert [TEXT_LINE.match(line)["frame"] for line in out.splitlines()[:-1]] == ["7", "8", "9", "10"]
    assert err.startswith("multisa: error: ") and "frame 13" in err and len(err.splitlines()) == 1


# --- formats ---------------------------------------------------------------------------------


@needs_shared
def test_json_contract(capsys):
    multisa("lint", S6_CAP, "-k", S6_KEYS, "--format", "json")
    doc = json.loads(capsys.readouterr().out)
    f = doc["findings"][0]
    assert set(f) >= {"code", "name", "severity", "message", "rfc", "level", "frames", "ike_spis", "group"}
    assert (f["code"], f["name"], f["severity"], f["rfc"], f["level"], f["frames"]) == (
        "MS307", "resource-id-hardware-info", "warning", "RFC 9611 §7", "SHOULD NOT", [7])
    assert f["ike_spis"] == "dec911dfe4749783/aa484f32a059bd45"
    assert f["group"] == "198.51.100.0/24 === 203.0.113.0/24"
    assert f["category"] == "Security" and f["file"] == S6_CAP
    s = doc["summary"]
    assert s["findings"] == 4 and s["by_severity"] == {"error": 0, "warning": 4, "info": 0}
    assert s["by_code"] == {"MS307": 4} and s["threshold"] == "info"
    assert s["rules"] == [r.code for r in evaluated(rules.all_rules())]
    assert s["captures"] == [{"file": S6_CAP, "ike_messages": 10, "esp_packets": 16, "findings": 4, "error": None}]


@needs_shared
def test_json_lines(capsys):
    multisa("lint", S6_CAP, "-k", S6_KEYS, "--format", "json-lines")
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["frames"] for line in lines] == [[7], [8], [9], [10]]


def test_vendored_schema_is_the_oasis_one():
    import hashlib

    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == \
        "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"


def _sarif_validator():
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema")
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return jsonschema.Draft4Validator(schema)


@needs_shared
def test_sarif_validates_against_the_schema(capsys):
    validator = _sarif_validator()
    assert multisa("lint", S6_CAP, "-k", S6_KEYS, "--format", "sarif") == 1
    doc = json.loads(capsys.readouterr().out)
    errors = sorted(validator.iter_errors(doc), key=str)
    assert errors == [], errors[0].message if errors else ""
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert doc["version"] == "2.1.0" and driver["name"] == "multisa"
    assert [r["id"] for r in driver["rules"]] == [r.code for r in evaluated(rules.all_rules())]
    ms307 = next(r for r in driver["rules"] if r["id"] == "MS307")
    assert ms307["name"] == "resource-id-hardware-info" and ms307["defaultConfiguration"]["level"] == "warning"
    assert ms307["helpUri"] == "https://www.rfc-editor.org/rfc/rfc9611#section-7"
    assert "## Why is this bad?" in ms307["help"]["markdown"]
    results = run["results"]
    assert [r["ruleId"] for r in results] == ["MS307"] * 4
    assert all(driver["rules"][r["ruleIndex"]]["id"] == r["ruleId"] for r in results)
    assert [r["properties"]["frames"] for r in results] == [[7], [8], [9], [10]]
    assert results[0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == Path(S6_CAP).as_uri()
    assert results[0]["locations"][0]["physicalLocation"]["region"]["startLine"] == 7  # frame as line
    assert results[0]["level"] == "warning" and run["invocations"][0]["executionSuccessful"] is True


def test_sarif_of_a_damaged_run_and_of_a_clean_one_validate(tmp_path, codec_capture, capsys):
    validator = _sarif_validator()
    pcap, keys = codec_capture
    assert multisa("lint", pcap, "-k", keys, "-f", "sarif", "--select", "MS9") == 0
    clean = json.loads(capsys.readouterr().out)
    assert list(validator.iter_errors(clean)) == [] and clean["runs"][0]["results"] == []
    assert [r["id"] for r in clean["runs"][0]["tool"]["driver"]["rules"]] == ["MS901", "MS902", "MS903"]
    (tmp_path / "bad.pcap").write_bytes(b"\xd4\xc3\xb2\xa1" + bytes(10))
    assert multisa("lint", pcap, str(tmp_path / "bad.pcap"), "-k", keys, "-f", "sarif") == 2
    doc = json.loads(capsys.readouterr().out)
    assert list(validator.iter_errors(doc)) == []
    assert doc["runs"][0]["invocations"][0]["executionSuccessful"] is False
    assert [r["ruleId"] for r in doc["runs"][0]["results"]] == ["MS301"]


@needs_shared
def test_junit_one_case_per_rule_per_capture(capsys):
    argv = ["lint", S6_CAP, *s5_args(S5[1]), "-k", S6_KEYS, "--format", "junit"]
    assert multisa(*argv) == 1
    root = ET.fromstring(capsys.readouterr().out)
    n = len(evaluated(rules.all_rules()))
    assert root.tag == "testsuites" and root.get("tests") == str(2 * n) and root.get("failures") == "1"
    s6, s5 = root.findall("testsuite")
    assert s6.get("name") == S6_CAP and len(s6.findall("testcase")) == n
    failed = [c for c in s6.findall("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["MS307 resource-id-hardware-info"]
    failure = failed[0].find("failure")
    assert failure.get("type") == "warning" and failure.get("message").startswith("4 findings")
    assert len(failure.text.splitlines()) == 4 and ":7: MS307 " in failure.text
    assert all(c.find("failure") is None for c in s5.findall("testcase")) and s5.get("failures") == "0"


@needs_shared
def test_github_annotations(capsys):
    multisa("lint", S6_CAP, "-k", S6_KEYS, "--format", "github")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith(f"::warning file={S6_CAP},line=7,title=MS307 resource-id-hardware-info::")
    assert lines[0].endswith("queue number [RFC 9611 §7 SHOULD NOT]")


def test_github_escaping():
    from analyzer.report.github import escape_data, escape_property

    assert escape_data("50%\nnext") == "50%25%0Anext"
    assert escape_property("a:b,c") == "a%3Ab%2Cc"


def test_output_file(tmp_path, codec_capture, capsys):
    pcap, keys = codec_capture
    out = tmp_path / "report.json"
    assert multisa("lint", pcap, "-k", keys, "-f", "json", "-o", str(out)) == 1
    assert capsys.readouterr().out == ""
    assert [f["code"] for f in json.loads(out.read_text())["findings"]] == ["MS301"]


# --- codec-built captures through the real reader ----------------------------------------------


def test_encrypted_codec_capture(codec_capture, capsys):
    pcap, keys = codec_capture
    assert multisa("lint", pcap, "-k", keys) == 1
    out = capsys.readouterr().out.splitlines()
    assert TEXT_LINE.match(out[0])["code"] == "MS301" and out[0].startswith(f"{pcap}:7: MS301 ")
    assert out[0].endswith("[RFC 9611 §6 MUST NOT]")


def test_clear_codec_capture(tmp_path, capsys):
    conv = Conversation(clear=True)
    conv.established()
    conv.create_child("I", bytes.fromhex("00000002"), rid(2))
    pcap = tmp_path / "clear.pcap"
    write_pcap(pcap, conv.records)
    assert multisa("lint", str(pcap)) == 1
    assert ":5: MS307 SA_RESOURCE_INFO 00000002 in request" in capsys.readouterr().out


def test_wrong_keys_are_an_integrity_finding(tmp_path, codec_capture, capsys):
    pcap, keys = codec_capture
    text = Path(keys).read_text()
    wrong = tmp_path / "wrong" / "ikev2_decryption_table"
    wrong.parent.mkdir()
    # same SPIs and algorithms, other key bytes
    wrong.write_text("\n".join(
        ",".join(f if i in (0, 1, 4, 7) else "11" * (len(f) // 2) for i, f in enumerate(line.split(",")))
        for line in text.splitlines()) + "\n")
    assert multisa("lint", pcap, "-k", str(wrong.parent), "-f", "json") == 1
    found = json.loads(capsys.readouterr().out)["findings"]
    assert [f["code"] for f in found] == ["MS902"] and "integrity check failed" in found[0]["message"]


# --- configuration ---------------------------------------------------------------------------


def test_pyproject_configuration(tmp_path, codec_capture, capsys):
    pcap, keys = codec_capture
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.multisa]\nformat = "json"\nignore = ["MS3"]\n')
    assert multisa("lint", pcap, "-k", keys) == 0
    assert json.loads(capsys.readouterr().out)["findings"] == []
    assert multisa("lint", pcap, "-k", keys, "--select", "MS301") == 1  # the command line wins
    assert multisa("lint", pcap, "-k", keys, "--isolated") == 1
    capsys.readouterr()


def test_multisa_toml_wins_and_tunes_rules(tmp_path, capsys):
    conv = ms307(True)
    pcap = tmp_path / "c.pcap"
    write_pcap(pcap, conv.records, encrypt=True)
    keys = write_key_table(tmp_path / "ikev2_decryption_table", conv.records)
    (tmp_path / "pyproject.toml").write_text('[tool.multisa]\nselect = ["MS1"]\n')
    (tmp_path / "multisa.toml").write_text(
        'severity = "error"\nformat = "json"\n[rule_severity]\nMS307 = "error"\n')
    assert multisa("lint", str(pcap), "-k", keys) == 1
    [f] = json.loads(capsys.readouterr().out)["findings"]
    assert (f["code"], f["severity"]) == ("MS307", "error")
    (tmp_path / "multisa.toml").write_text("hardware_id_max = 1\n")
    assert multisa("lint", str(pcap), "-k", keys) == 0
    capsys.readouterr()


@pytest.mark.parametrize("toml,message", [
    ("colour = 1\n", "unknown key 'colour'"),
    ("severity = \"fatal\"\n", "severity: unknown severity 'fatal'"),
    ("select = [\"MS8\"]\n", "select: unknown rule code or prefix 'MS8'"),
    ("max_group_size = 0\n", "max_group_size: expected a positive integer"),
    ("[rule_severity]\nMS000 = \"info\"\n", "rule_severity: unknown rule 'MS000'"),
    ("format = [\n", "not valid TOML"),
])
def test_bad_configuration_is_one_line(tmp_path, toml, message, capsys):
    (tmp_path / "multisa.toml").write_text(toml)
    assert multisa("lint", "x.pcap") == 2
    err = capsys.readouterr().err
    assert "multisa.toml" in err and message in err and len(err.splitlines()) == 1


def test_config_is_found_in_a_parent_directory(tmp_path, monkeypatch):
    from analyzer.config import find_config, load_settings

    (tmp_path / "pyproject.toml").write_text('[tool.multisa]\nmax_group_size = 8\n')
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    (tmp_path / "a" / "pyproject.toml").write_text('[project]\nname = "no-multisa-table"\n')
    assert find_config(sub) == tmp_path / "pyproject.toml"
    assert load_settings(search_from=sub).max_group_size == 8


# --- groups and rules ------------------------------------------------------------------------


@needs_shared
def test_groups_text(capsys):
    assert multisa("groups", S6_CAP, "-k", S6_KEYS) == 0
    out = capsys.readouterr().out
    assert "IKE SA dec911dfe4749783/aa484f32a059bd45" in out
    assert ("group 198.51.100.0/24 === 203.0.113.0/24: SA_RESOURCE_INFO both ways; "
            "3 Child SAs (1 fallback, 2 additional)") in out
    assert "fallback deleted   in ccae5922 out c2d58759, resource I:(empty) R:(empty)" in out
    assert "member   deleted   in c1f7e800 out ca2c6b46, resource I:00000000 R:00000001" in out
    assert "by R in CREATE_CHILD_SA frames 8-10" in out


@needs_shared
def test_groups_json(capsys):
    assert multisa("groups", *s5_args(S5[0]), "--json") == 0
    doc = json.loads(capsys.readouterr().out)
    [lineage] = doc["lineages"]
    assert [s["state"] for s in lineage["ike_sas"]] == ["deleted", "deleted"]
    assert lineage["peers"] == {"I": "192.0.2.1", "R": "192.0.2.2"}
    [group] = lineage["groups"]
    assert group["label"] == "198.51.100.0/24 === 203.0.113.0/24" and not group["uses_resource_info"]
    children = group["child_sas"]
    assert [c["spi_in"] for c in children][:4] == ["96ee1ea8", "63f1978e", "ddf8e003", "d5166c54"]
    assert children[4]["rekey_of"] == {"spi_in": "96ee1ea8", "spi_out": "4a650d0d"}
    assert children[0]["rekeyed_frame"] == 42 and children[0]["deleted_frame"] == 43
    assert all(c["lifetime"] > 0 for c in children)


def test_rules_command(capsys):
    assert multisa("rules") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(rules.all_rules()) and lines[0].startswith("MS101  resource-info-protocol-id-nonzero")
    assert multisa("rules", "MS301") == 0
    doc = capsys.readouterr().out
    assert doc.startswith("MS301 refusal-uses-no-additional-sas: ")
    assert "RFC 9611 §6 MUST NOT" in doc and "## What it does" in doc and "Bad:" in doc
    assert multisa("rules", "resource-id-hardware-info", "--format", "json") == 0
    assert json.loads(capsys.readouterr().out)["code"] == "MS307"
    assert multisa("rules", "--format", "markdown") == 0
    assert capsys.readouterr().out == rules.markdown_table()


# --- secrets ---------------------------------------------------------------------------------


def _key_strings(paths) -> set[str]:
    out = set()
    for p in paths:
        for f in ([p] if p.is_file() else sorted(p.iterdir())):
            for line in f.read_text().splitlines():
                out |= {field.strip('"').lower().removeprefix("0x") for field in line.split(",")
                        if len(field.strip('"').removeprefix("0x")) >= 32}
    return out


@needs_shared
def test_keys_never_reach_any_output(capsys):
    secrets = _key_strings([S6 / "ikev2_decryption_table", S6 / "esp_sa"])
    assert secrets
    outputs = []
    for fmt in ("text", "json", "json-lines", "sarif", "junit", "github"):
        multisa("lint", S6_CAP, "-k", S6_KEYS, "-f", fmt)
        outputs.append(capsys.readouterr())
    multisa("groups", S6_CAP, "-k", S6_KEYS, "--json")
    outputs.append(capsys.readouterr())
    multisa("groups", S6_CAP, "-k", S6_KEYS)
    outputs.append(capsys.readouterr())
    text = "".join(o.out + o.err for o in outputs).lower()
    assert not [s for s in secrets if s in text]


def test_cli_entry_point_if_wired(capsys):
    """Once the lead wires ``register`` into ``analyzer.cli``, ``multisa rules`` runs there."""
    from analyzer import cli

    parser = cli.build_parser()
    names = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if "rules" not in names:
        pytest.skip("analyzer.cli does not register analyzer.commands yet")
    assert cli.main(["rules", "MS307"]) == 0
    assert capsys.readouterr().out.startswith("MS307 resource-id-hardware-info")



# --- every rule through a real, encrypted capture --------------------------------------------

WIRE_PARAMS = [p for p in PARAMS if not p.values[0].startswith("MS9")]


@pytest.mark.parametrize("code,build", WIRE_PARAMS)
@pytest.mark.parametrize("bad", [True, False], ids=["bad", "good"])
def test_rule_cases_through_the_capture_reader(code, build, bad, tmp_path):
    """The codec conversations of tests/test_rules.py, sealed with real keys into a pcap and
    linted by the real pipeline (reader, decryptor, analyzer) give the same findings."""
    conv = build(bad)
    pcap = tmp_path / f"{code}.pcap"
    write_pcap(pcap, conv.records, encrypt=True)
    keys = write_key_table(tmp_path / "ikev2_decryption_table", conv.records)
    result = analyze_capture(str(pcap), load_keys([keys]))
    assert result.error is None
    found = {f.code for f in result.findings}
    assert found == ({code} if bad else set())


class _Corrupt:
    """An IKE message whose bytes are damaged after building (for the malformed rule)."""

    def __init__(self, msg, data: bytes):
        self.msg, self.data = msg, data
        self.src, self.dst, self.sport, self.dport, self.frame = msg.src, msg.dst, 500, 500, msg.frame

    def __bytes__(self) -> bytes:
        return self.data


def test_malformed_message_on_the_wire(tmp_path, capsys):
    conv = Conversation(clear=True)
    conv.established()
    ex = conv.informational("I", req=[notify(NotifyType.INITIAL_CONTACT, b"abc")])
    data = bytearray(bytes(ex.request))
    data[28 + 2:28 + 4] = (200).to_bytes(2, "big")  # the Notify's Payload Length runs past the end
    conv.records[conv.records.index(ex.request)] = _Corrupt(ex.request, bytes(data))
    pcap = tmp_path / "malformed.pcap"
    write_pcap(pcap, conv.records)
    assert multisa("lint", str(pcap), "-f", "json") == 1
    [f] = json.loads(capsys.readouterr().out)["findings"]
    assert f["code"] == "MS903" and f["frames"] == [5] and f["severity"] == "error"
    assert "NOTIFY.payload_length at offset 30" in f["message"]


SAMPLE_S6 = Path(__file__).resolve().parent.parent / "samples" / "strongswan6-percpu"


@pytest.mark.skipif(not (SAMPLE_S6 / "capture.pcap").is_file(), reason="samples/strongswan6-percpu is missing")
def test_bundled_sample(capsys):
    assert multisa("lint", str(SAMPLE_S6 / "capture.pcap"), "-k", str(SAMPLE_S6), "-f", "json") == 1
    found = json.loads(capsys.readouterr().out)["findings"]
    assert [(f["code"], f["frames"]) for f in found] == [("MS307", [n]) for n in (7, 8, 9, 10)]

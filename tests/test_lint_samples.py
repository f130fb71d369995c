"""``multisa lint`` on the reference peer's samples gives exactly what samples/README.md promises.

``PROMISES`` is the README's table as rule codes (each row names its codes; a test checks
they agree): each fault sample yields the codes of the rule its line describes and nothing
else, at any severity; ``peer/clean`` yields nothing. Only the rules lint evaluates are
compared (the ESP sequence rules, MS4xx, come from ``multisa esp`` today and join in when
the ESP pass runs inside lint). The test reads whatever samples exist: a folder without a
promise fails, a promise whose folder is absent skips.

A sample folder may hold a ``multisa.toml`` with thresholds for its small capture
(``multisa lint`` picks it up for that capture, see ``analyzer.commands.capture_settings``);
the test uses it the same way.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from analyzer import commands, rules
from analyzer.pipeline import evaluated
from dissectors.keys import load_keys

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT / "samples" / "peer"
README = ROOT / "samples" / "README.md"

PROMISES = {
    "clean": set(),
    "fault-resource-info-protocol-id": {"MS101"},
    "fault-resource-info-spi-size": {"MS102"},
    "fault-resource-info-critical": {"MS103"},
    "fault-ts-max-queue-data": {"MS104"},
    "fault-no-additional-sas": {"MS301"},
    "fault-other-transforms": {"MS201"},
    "fault-other-ts": {"MS202"},
    "fault-other-mode": {"MS203"},
    "fault-duplicate-resource-id": {"MS206"},
    "fault-cpu-number-resource-id": {"MS307"},
    "fault-rekey-moves-resource": {"MS208"},
    "fault-no-ts-limit": {"MS305"},
    "fault-delete-recreate-loop": {"MS303"},
    "fault-remote-access": {"MS306"},
    "fault-esp-replay-gap": {"MS401", "MS402"},  # replay and gap on worker 0's SA
    "fault-shared-sa": {"MS401"},  # two counters on one SA: duplicate sequence numbers
}


def samples() -> list[str]:
    if not PEER.is_dir():
        return []
    return sorted(p.name for p in PEER.iterdir() if p.is_dir())


def _parser():
    import argparse

    parser = argparse.ArgumentParser(prog="multisa")
    commands.register(parser.add_subparsers(dest="command", required=True))
    return parser


def judged(codes: set[str]) -> set[str]:
    lint = {r.code for r in evaluated(rules.all_rules())}
    return codes & lint


@pytest.mark.parametrize("name", samples() or ["clean"])
def test_sample_gives_exactly_its_promise(name, monkeypatch, capsys):
    """``multisa lint CAPTURE -k FOLDER -f json`` from the repository's root, as the README
    shows it (a multisa.toml in the folder applies to its capture)."""
    folder = PEER / name
    capture = next(iter(sorted(folder.glob("capture.pcap*"))), None)
    if capture is None:
        pytest.skip(f"samples/peer/{name} holds no capture")
    assert name in PROMISES, f"samples/peer/{name} has no promise in PROMISES (samples/README.md)"
    assert load_keys([str(folder)]).problems == []
    monkeypatch.chdir(ROOT)
    args = _parser().parse_args(["lint", str(capture.relative_to(ROOT)), "-k", str(folder.relative_to(ROOT)),
                                 "-f", "json"])
    code = args.func(args)
    findings = json.loads(capsys.readouterr().out)["findings"]
    expected = judged(PROMISES[name])
    assert {f["code"] for f in findings} == expected, json.dumps(findings, indent=1)
    assert code == (1 if expected else 0)


def _readme_rows() -> dict[str, str]:
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| peer/([a-z0-9-]+) \| (.+) \|$", line)
        if m:
            rows[m[1]] = m[2]
    return rows


@pytest.mark.skipif(not README.is_file(), reason="samples/README.md is missing")
def test_promises_match_the_readme():
    """Every README row has a promise and every promise a README row; the codes a row names
    are its promise; a promised RFC 9611 rule's section is the one the row cites."""
    rows = _readme_rows()
    assert sorted(rows) == sorted(PROMISES)
    for name, codes in PROMISES.items():
        assert set(re.findall(r"\bMS\d{3}\b", rows[name])) == codes, (name, rows[name])
        for code in codes:
            r = rules.get(code)
            assert r is not None, code
            if r.rfc.startswith("RFC 9611"):
                assert r.section in rows[name], (name, code, r.section)


def test_every_sample_has_a_readme_row():
    missing = sorted(set(samples()) - set(_readme_rows()))
    assert missing == []


@pytest.mark.skipif(not (PEER / "clean").is_dir(), reason="samples/peer/clean is missing")
def test_cli_lints_the_clean_sample_silently(capsys, monkeypatch):
    """The text report of the clean sample, from the repository's root: exit 0, no finding."""
    monkeypatch.chdir(ROOT)
    capture = next(iter(sorted((PEER / "clean").glob("capture.pcap*"))))
    args = _parser().parse_args(["lint", str(capture.relative_to(ROOT)), "-k", "samples/peer/clean"])
    assert (args.func(args), capsys.readouterr().out) == (0, "All checks passed!\n")


def test_a_config_beside_the_capture_sets_its_thresholds(tmp_path, monkeypatch, capsys):
    """multisa.toml in the capture's folder tunes the rules for that capture only, whatever
    the current directory; --isolated and --config turn that off."""
    from tests.ikesim import write_key_table, write_pcap
    from tests.test_rules import ms305

    conv = ms305(False)  # 64 SAs: silent at the default threshold
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        write_pcap(tmp_path / sub / "capture.pcap", conv.records, encrypt=True)
    keys = str(write_key_table(tmp_path / "ikev2_decryption_table", conv.records))
    (tmp_path / "a" / "multisa.toml").write_text("max_group_size = 10\nformat = \"github\"\n")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    parser = _parser()

    def run(*argv):
        args = parser.parse_args(["lint", *argv, "-k", keys, "-f", "json"])
        code = args.func(args)
        doc = json.loads(capsys.readouterr().out)
        return code, [(Path(f["file"]).parent.name, f["code"]) for f in doc["findings"]]

    a, b = str(tmp_path / "a" / "capture.pcap"), str(tmp_path / "b" / "capture.pcap")
    assert run(a, b) == (1, [("a", "MS305")])
    assert run(a, "--isolated") == (0, [])
    (tmp_path / "cwd" / "multisa.toml").write_text("max_group_size = 64\n")
    assert run(a, "--config", str(tmp_path / "cwd" / "multisa.toml")) == (0, [])
    assert run(a) == (1, [("a", "MS305")])  # nearest to the capture wins over the cwd's

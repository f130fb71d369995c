"""lint's SARIF is valid for GitHub code scanning: Microsoft's SARIF Multitool (npm
``@microsoft/sarif-multitool`` 5.7.0, its linux binary called directly) reports 0 errors and
0 warnings with ``--rule-kind "Gh;Sarif"`` on a fault sample; and ``--format github``
annotations say each thing once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "peer"
TOOLS = Path(os.environ.get("MULTISA_TOOLS", Path.home() / ".cache" / "multisa-tools"))
MULTITOOL = TOOLS / "node_modules" / "@microsoft" / "sarif-multitool-linux" / "Sarif.Multitool"


def lint(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analyzer.cli", "lint", *argv], capture_output=True, text=True,
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=300)


@pytest.fixture(scope="module")
def sarif_file(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("sarif") / "multisa.sarif"
    res = lint("samples/peer/fault-resource-info-protocol-id", "samples/peer/fault-esp-replay-gap",
               "samples/peer/fault-cpu-number-resource-id", "-f", "sarif", "-o", str(out))
    assert res.returncode == 1, res.stderr
    return out


def test_github_needs_are_in_the_document(sarif_file):
    run = json.loads(sarif_file.read_text())["runs"][0]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == ROOT.as_uri() + "/"
    for r in run["results"]:
        loc = r["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
        assert loc["artifactLocation"]["uri"].startswith("samples/peer/fault-")
        assert loc["region"]["startLine"] == r["properties"]["frames"][0]  # frame number as line
        assert r["partialFingerprints"]
    rules = {d["id"]: d for d in run["tool"]["driver"]["rules"]}
    assert rules["MS307"]["properties"]["security-severity"] == "5.0"
    assert "security" in rules["MS307"]["properties"]["tags"]
    assert "security-severity" not in rules["MS101"]["properties"]


def test_fingerprints_stable_between_runs(sarif_file, tmp_path):
    again = tmp_path / "again.sarif"
    lint("samples/peer/fault-resource-info-protocol-id", "samples/peer/fault-esp-replay-gap",
         "samples/peer/fault-cpu-number-resource-id", "-f", "sarif", "-o", str(again))
    fp = [r["partialFingerprints"] for r in json.loads(sarif_file.read_text())["runs"][0]["results"]]
    assert fp == [r["partialFingerprints"] for r in json.loads(again.read_text())["runs"][0]["results"]]
    assert len({json.dumps(x) for x in fp}) == len(fp)


@pytest.mark.skipif(not MULTITOOL.exists(), reason=f"SARIF Multitool not installed at {MULTITOOL} "
                    "(.ci/run: npm install @microsoft/sarif-multitool@5.7.0 in ~/.cache/multisa-tools)")
def test_sarif_multitool_github_rules_0_errors_0_warnings(sarif_file, tmp_path):
    res = subprocess.run([str(MULTITOOL), "validate", "--rule-kind", "Gh;Sarif", str(sarif_file)],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=dict(os.environ, DOTNET_CLI_TELEMETRY_OPTOUT="1"))
    out = res.stdout + res.stderr
    problems = [line for line in out.splitlines() if re.search(r": (error|warning) [A-Z]+\d+:", line)]
    assert problems == [] and "Analysis completed successfully" in out, out[-3000:]


def test_github_annotations_say_things_once():
    res = lint("samples/peer/fault-esp-replay-gap", "samples/peer/fault-delete-recreate-loop", "-f", "github")
    lines = res.stdout.splitlines()
    assert len(lines) == 5
    for line in lines:
        props, _, message = line[2:].partition("::")
        frame = int(re.search(r",line=(\d+)", props).group(1))
        assert len(re.findall(rf"\bframes? {frame}\b|\bframes {frame},", message)) <= 1, line
        assert "(frame " not in message or "(first" in message, line

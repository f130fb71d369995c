"""CLI conventions shared by every command (analyzer/cli_common.py), through the real
``multisa`` entry point (``analyzer.cli.main``) in a subprocess: --version, directories of
captures with the keys beside each one, ``-`` for stdin, one option spelling, the
subcommand's usage for an unknown option, colour only on a terminal, one error policy, and
the last-resort handler (internal error -> exit 2, one line; --debug shows the traceback)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples" / "peer"
GAP = SAMPLES / "fault-esp-replay-gap"
PROTO = SAMPLES / "fault-resource-info-protocol-id"
CLEAN = SAMPLES / "clean"


def run(*argv: str, stdin: bytes | None = None, env: dict | None = None, cwd: Path = ROOT):
    e = dict(os.environ, PYTHONPATH=str(ROOT))
    e.pop("NO_COLOR", None)
    e.pop("FORCE_COLOR", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "analyzer.cli", *argv], input=stdin, capture_output=True,
                          env=e, cwd=cwd, timeout=300)


def one_line_error(res, *needles: str) -> str:
    err = res.stderr.decode()
    assert res.returncode == 2, (res.returncode, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def test_version():
    res = run("--version")
    assert res.returncode == 0 and res.stdout.decode().startswith("multisa ")


@pytest.mark.parametrize("command", ["lint", "groups", "esp", "show"])
def test_stdin_dash_reads_the_capture(command):
    data = (PROTO / "capture.pcapng").read_bytes()
    by_path = run(command, str(PROTO / "capture.pcapng"), "-k", str(PROTO))
    by_pipe = run(command, "-", "-k", str(PROTO), stdin=data)
    assert by_pipe.returncode == by_path.returncode, by_pipe.stderr
    # the same report, the capture named "-" (never the private spool file)
    assert "multisa-stdin-" not in (by_pipe.stdout + by_pipe.stderr).decode()
    assert by_pipe.stdout.decode() == by_path.stdout.decode().replace(str(PROTO / "capture.pcapng"), "-")


def test_lint_directory_uses_keys_beside_each_capture(tmp_path):
    for name in ("fault-esp-replay-gap", "fault-resource-info-protocol-id"):
        shutil.copytree(SAMPLES / name, tmp_path / name)
    res = run("lint", str(tmp_path), "-f", "json")
    doc = json.loads(res.stdout)
    codes = {f["code"] for f in doc["findings"]}
    # MS101 is inside IKE_AUTH (encrypted): it needs the keys beside that capture
    assert {"MS101", "MS401", "MS402"} <= codes and "MS901" not in codes, codes
    assert len(doc["summary"]["captures"]) == 2 and res.returncode == 1


@pytest.mark.parametrize("command", ["groups", "esp", "show"])
def test_other_commands_walk_a_directory(command, tmp_path):
    shutil.copytree(PROTO, tmp_path / "a")
    shutil.copytree(CLEAN, tmp_path / "b")
    res = run(command, str(tmp_path))
    assert res.returncode == 0, res.stderr
    out = res.stdout.decode()
    assert str(tmp_path / "a" / "capture.pcapng") in out and str(tmp_path / "b" / "capture.pcapng") in out
    if command == "show":  # decrypted with the keys beside the capture: SA_RESOURCE_INFO inside IKE_AUTH
        assert "SA_RESOURCE_INFO" in out and "no key" not in out


@pytest.mark.parametrize("command", ["groups", "esp", "show"])
def test_format_json_and_output_file(command, tmp_path):
    out = tmp_path / "o.json"
    a = run(command, str(GAP / "capture.pcapng"), "-k", str(GAP), "--json")
    b = run(command, str(GAP / "capture.pcapng"), "--keys", str(GAP), "-f", "json", "-o", str(out))
    assert a.returncode == b.returncode == 0 and b.stdout == b""
    assert json.loads(a.stdout) == json.loads(out.read_text())


def test_lint_output_spellings(tmp_path):
    for flag in ("-o", "--output", "--output-file"):
        out = tmp_path / f"r{flag}.json"
        res = run("lint", str(GAP / "capture.pcapng"), "-k", str(GAP), "--json", flag, str(out))
        assert res.returncode == 1 and json.loads(out.read_text())["summary"]["findings"] == 4


@pytest.mark.parametrize("argv,usage", [
    (["lint", "x.pcap", "--bogus"], "usage: multisa lint"),
    (["esp", "x.pcap", "--bogus"], "usage: multisa esp"),
    (["xfrm", "dump", "--bogus"], "usage: multisa xfrm dump"),
    (["peer", "initiator", "--connect", "1.2.3.4", "--bogus"], "usage: multisa peer initiator"),
])
def test_unknown_option_prints_the_subcommands_usage(argv, usage):
    res = run(*argv)
    err = res.stderr.decode()
    assert res.returncode == 2 and err.startswith(usage) and "unrecognized arguments: --bogus" in err, err


def test_colour_only_on_a_terminal_and_no_color():
    import pty

    argv = ["lint", str(GAP / "capture.pcapng"), "-k", str(GAP)]
    piped = run(*argv)
    assert b"\x1b[" not in piped.stdout

    def on_tty(env: dict) -> bytes:
        pid, fd = pty.fork()
        if pid == 0:
            os.environ.update(env, PYTHONPATH=str(ROOT))
            os.chdir(ROOT)
            os.execv(sys.executable, [sys.executable, "-m", "analyzer.cli", *argv])
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.waitpid(pid, 0)
        return b"".join(chunks)

    import re

    painted = re.compile(rb"\x1b\[[0-9;]*mMS40[12]")  # the rule code painted by its severity
    assert painted.search(on_tty({"TERM": "xterm"}))
    assert not painted.search(on_tty({"TERM": "xterm", "NO_COLOR": "1"}))


def test_quiet_and_statistics():
    argv = ["lint", str(GAP / "capture.pcapng"), "-k", str(GAP)]
    quiet = run(*argv, "-q").stdout.decode().splitlines()
    assert len(quiet) == 4 and all(" MS40" in line for line in quiet)
    stats = run(*argv, "--statistics").stdout.decode().splitlines()
    assert stats[:2] == ["2  MS401  esp-replayed-sequence-number", "2  MS402  esp-sequence-gap"], stats
    assert stats[-1].startswith("Found 4 findings")


# --- one error policy ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["lint", "groups", "esp", "show"])
def test_missing_key_path_is_exit_2_everywhere(command):
    line = one_line_error(run(command, str(CLEAN / "capture.pcapng"), "-k", "no/such/keys"))
    assert line == "multisa: error: no/such/keys: no such file or directory"


def test_missing_key_path_tshark_engine():
    line = one_line_error(run("show", str(CLEAN / "capture.pcapng"), "-k", "no/such/keys", "--engine", "tshark",
                              "--json"))
    assert line == "multisa: error: no/such/keys: no such file or directory"


@pytest.mark.parametrize("command", ["lint", "groups", "esp", "show"])
def test_capture_given_as_key_file(command):
    cap = str(CLEAN / "capture.pcapng")
    line = one_line_error(run(command, cap, "-k", cap))
    assert line.startswith(f"multisa: error: {cap}: this is a capture, not a key file ("), line


@pytest.mark.parametrize("command", ["lint", "groups", "esp", "show"])
def test_non_capture_and_empty_directory(command, tmp_path):
    line = one_line_error(run(command, str(ROOT / "README.md")))
    assert line == f"multisa: error: {ROOT / 'README.md'}: not a pcap or pcapng file"
    line = one_line_error(run(command, str(tmp_path)))
    assert line == f"multisa: error: {tmp_path}: no pcap or pcapng files in this directory"


@pytest.mark.parametrize("argv,needle", [
    (["lint", "x.pcap", "--jobs", "-1"], "--jobs"),
    (["peer", "demo", "--out", "/tmp/x", "--duration", "-1"], "--duration"),
    (["peer", "demo", "--out", "/tmp/x", "--resources", "0"], "--resources"),
    (["peer", "initiator", "--connect", "192.0.2.2", "--resources", "0"], "--resources"),
    (["esp", str(GAP / "capture.pcapng"), "--flows"], "--decrypt"),
    (["lint", str(GAP / "capture.pcapng"), "--config", "multisa.toml", "--isolated"], "contradict"),
])
def test_invalid_values_are_refused(argv, needle):
    res = run(*argv)
    err = res.stderr.decode()
    assert res.returncode == 2 and needle in err and "Traceback" not in err, err


def test_peer_demo_unwritable_out():
    line = one_line_error(run("peer", "demo", "--out", "/proc/nope"))
    assert line.startswith("multisa: error: /proc/nope: cannot write there"), line


# --- the last-resort handler ----------------------------------------------------------------------


def test_internal_error_is_exit_2_one_line_and_debug_shows_traceback(tmp_path):
    # a real bug injected from outside: a rule module that raises inside the analysis
    boom = tmp_path / "sitecustomize.py"
    boom.write_text("import analyzer.pipeline as p\n"
                    "def _boom(*a, **k):\n    raise RuntimeError('deliberate failure 0123456789abcdef0123456789abcdef')\n"
                    "p.analyze_captures = _boom\n")
    env = {"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"}
    cap = str(GAP / "capture.pcapng")
    e = dict(os.environ, **env)
    res = subprocess.run([sys.executable, "-m", "analyzer.cli", "lint", cap], capture_output=True, env=e,
                         cwd=ROOT, timeout=120)
    line = one_line_error(res, cap, "internal error", "RuntimeError", "--debug")
    assert "0123456789abcdef0123456789abcdef" not in line  # long hex runs (keys?) withheld
    res = subprocess.run([sys.executable, "-m", "analyzer.cli", "lint", cap, "--debug"], capture_output=True,
                         env=e, cwd=ROOT, timeout=120)
    assert res.returncode == 2 and b"Traceback (most recent call last)" in res.stderr


# --- honest summaries (issue 15 item 3) -----------------------------------------------------------


def test_nothing_judged_is_not_all_checks_passed():
    res = run("lint", str(CLEAN / "capture.pcapng"), "-k", str(CLEAN), "--select", "MS5")
    out = res.stdout.decode()
    assert "All checks passed!" not in out and out.startswith("Nothing judged: "), out


def test_hidden_findings_are_counted_and_plurals():
    res = run("lint", str(GAP / "capture.pcapng"), "-k", str(GAP), "--severity", "warning")
    last = res.stdout.decode().splitlines()[-1]
    assert last == "Found 2 findings (2 warnings); 2 findings below warning hidden.", last
    res = run("lint", str(GAP / "capture.pcapng"), "-k", str(GAP), "--severity", "error")
    assert res.stdout.decode().splitlines()[-1] == "All checks passed! (4 findings below error hidden)"
    assert "1 replayed sequence number inside" in run("lint", str(GAP / "capture.pcapng"), "-k", str(GAP)).stdout.decode()


def test_esp_help_documents_exit_status_and_other_findings():
    out = run("esp", "--help").stdout.decode()
    assert "Exit status: 0 whatever the findings" in " ".join(out.split()) and "MS1xx-MS3xx" in out


def test_junit_of_unreadable_capture_has_no_passing_case(tmp_path):
    import xml.etree.ElementTree as ET

    cut = tmp_path / "cut.pcapng"
    cut.write_bytes((CLEAN / "capture.pcapng").read_bytes()[:100])
    res = run("lint", str(cut), "-f", "junit")
    root = ET.fromstring(res.stdout)
    cases = root.findall(".//testcase")
    assert res.returncode == 2 and len(cases) == 1 and cases[0].find("error") is not None


def test_esp_findings_in_lint_json_carry_their_packet_time():
    import subprocess as sp

    doc = json.loads(run("lint", str(GAP / "capture.pcapng"), "-k", str(GAP), "-f", "json").stdout)
    esp = [f for f in doc["findings"] if f["code"].startswith("MS4")]
    assert esp and all(f["time"] and f["time"] > 1e9 for f in esp)
    if shutil.which("tshark"):
        frame = esp[0]["frames"][0]
        t = sp.run(["tshark", "-r", str(GAP / "capture.pcapng"), "-Y", f"frame.number=={frame}", "-T", "fields",
                    "-e", "frame.time_epoch"], capture_output=True, text=True, timeout=60).stdout.strip()
        assert abs(float(t) - esp[0]["time"]) < 1e-5

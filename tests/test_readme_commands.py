"""Every command in the README works as written, from a fresh clone (issue 15 item 8).

The commands are read from the README itself: every line of a fenced block or of an indented
block that starts a command (``multisa``, ``echo``, ``C=``, ``curl``, ``python3``, the kernel
tier scripts), with its ``\\`` continuations. Each one is run, in README order, from a
``git clone`` of this checkout (with the shared captures beside it as ``../shared`` when they
exist), through a ``multisa`` on PATH that runs the clone's code -- or skipped by a rule below
that says why (synopses with placeholders, root/netlink, a terminal, the test suite itself).
A command must not exit 2 nor print a traceback; lint may exit 1 (findings) unless the README
promises ``exit 0`` or ``All checks passed!``; the ``groups`` example output is the real one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

#: (pattern, why it is not run here). First match wins; everything else runs.
SKIP: list[tuple[str, str]] = [
    (r"pip install -e '\.\[test\]' && python3 -m pytest", "the test suite itself"),
    (r"MULTISA_KERNEL_TIERS=|tests/kernel/", "kernel tiers (tests/kernel runs them)"),
    (r"\b(CAPTURE|KEYS|FILE|PATH|SNAPSHOT|CODES|OUT|NS|IF|ADDR)\b|\[--", "a synopsis with placeholders"),
    (r"multisa xfrm (dump|watch|snapshot)|--xfrm live|multisa export|^curl ",
     "live kernel XFRM over netlink (root; tests/test_xfrm_kernel.py, tests/test_export.py)"),
    (r"multisa tui", "a full-screen terminal UI (tests/tui runs it under a pilot)"),
    (r"peer demo .*--duration 60 &", "the 60 s live demo for the TUI"),
    (r"(?<![/\w])(a|b|capture)\.pcap\b|(?<![/\w])keys/|moon\.jsonl", "illustrative file names, not files of the repository"),
]

COMMAND = re.compile(r"^(multisa |echo |C=|curl |python3 |tests/kernel/|MULTISA_KERNEL_TIERS=)")


def readme_commands(text: str) -> list[tuple[int, str, str]]:
    """(line number, command, trailing comment) of every command in a code block."""
    lines = text.splitlines()
    out: list[tuple[int, str, str]] = []
    fenced = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fenced = not fenced
            i += 1
            continue
        body = line if fenced else (line[4:] if line.startswith("    ") and not line.startswith("     ") else None)
        if body is not None and COMMAND.match(body):
            start, cmd = i + 1, body
            while cmd.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                cmd = cmd.rstrip()[:-1] + " " + lines[i].strip()
            command, _, comment = cmd.partition("   #")
            if "  # " in command:
                command, _, comment = command.partition("  # ")
            out.append((start, " ".join(command.split()), comment.strip().lstrip("#").strip()))
        i += 1
    return out


def skip_reason(command: str) -> str | None:
    for pattern, why in SKIP:
        if re.search(pattern, command):
            return why
    return None


def test_every_readme_command_is_run_or_skipped_for_a_reason():
    commands = readme_commands(README.read_text(encoding="utf-8"))
    assert len(commands) > 25
    run = [c for _, c, _ in commands if skip_reason(c) is None]
    assert any("peer responder" in c for c in run) and any(c.startswith("multisa groups") for c in run)


def _fresh_clone(tmp: Path) -> Path:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: no fresh clone to make")
    dest = tmp / "multisa"
    res = subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(dest)], capture_output=True,
                         text=True, timeout=300)
    if res.returncode != 0:
        pytest.skip(f"git clone failed: {res.stderr.strip()[:200]}")
    for so in (ROOT / "dissectors").glob("_espscan*.so"):  # the build artefact `pip install -e .` makes
        shutil.copy(so, dest / "dissectors" / so.name)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        (tmp / "shared").symlink_to(shared)
    return dest


def test_readme_commands_work_as_written(tmp_path):
    clone = _fresh_clone(tmp_path)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "multisa"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m analyzer.cli \"$@\"\n")
    wrapper.chmod(0o755)
    demo = tmp_path / "demo"
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(clone))
    env.pop("NO_COLOR", None)
    text = (clone / "README.md").read_text(encoding="utf-8")
    background: list[tuple[str, subprocess.Popen]] = []
    ran = 0
    prelude = ""  # shell variables the README sets (C=...) for the commands after them
    for number, command, comment in readme_commands(text):
        if skip_reason(command) is not None:
            continue
        if re.fullmatch(r"[A-Z_]+=\S+", command):
            prelude += command + "; "
            continue
        command = prelude + command
        if command.startswith("python3 -m pip install -e . && "):
            command = command.split("&& ", 1)[1]  # never pip install -e here: it would repoint the env
        if "../shared/" in command and not (tmp_path / "shared").exists():
            continue  # the shared captures are not beside this checkout (tests/conftest.needs_shared)
        command = command.replace("/tmp/demo", str(demo))
        where = f"README.md:{number}: {command}"
        if "peer responder" in command:  # the README says: in another terminal
            background.append((where, subprocess.Popen(["bash", "-c", command], cwd=clone, env=env,
                                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
            time.sleep(1.0)
            continue
        res = subprocess.run(["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True, timeout=300)
        ran += 1
        assert "Traceback" not in res.stderr, (where, res.stderr[-2000:])
        allowed = {0} if ("exit 0" in comment or "All checks passed" in comment
                          or not command.startswith("multisa lint")) else {0, 1}
        assert res.returncode in allowed, (where, res.returncode, res.stdout[-1500:], res.stderr[-1500:])
        if "All checks passed" in comment:
            assert "All checks passed!" in res.stdout, (where, res.stdout[-1500:])
        if command.startswith("multisa groups samples/strongswan6-percpu"):
            shown = _output_block_after(text, number)
            assert shown and shown == res.stdout.splitlines(), (where, shown, res.stdout)
    for where, proc in background:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0 and "Traceback" not in err, (where, proc.returncode, out, err)
    assert ran >= 12


def _output_block_after(text: str, number: int) -> list[str]:
    """The fenced block right after the one holding README line ``number`` (its output)."""
    lines = text.splitlines()
    i = number  # 0-based index of the line after the command
    while i < len(lines) and not lines[i].startswith("```"):
        i += 1
    i += 1  # past the closing fence of the command's block
    if i >= len(lines) or not lines[i].startswith("```"):
        return []
    out = []
    i += 1
    while i < len(lines) and not lines[i].startswith("```"):
        out.append(lines[i])
        i += 1
    return out

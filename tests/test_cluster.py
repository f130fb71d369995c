"""``multisa lint CAPTURES... --scheduler tcp://HOST:PORT`` on a real Dask cluster.

A ``dask scheduler`` and a ``dask worker`` process are started on loopback (free ports), the
worker with this checkout on its PYTHONPATH; ``multisa lint`` runs as a real subprocess,
once locally and once through the scheduler, and the two outputs must be byte-identical in
every format, results in input order. Skipped when dask/distributed are not installed
(``pip install 'multisa[dask]'``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from analyzer.config import FORMATS

pytest.importorskip("distributed", reason="the Dask test needs dask and distributed (pip install 'multisa[dask]')")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
#: Captures with findings of several kinds (IKE, ESP sequence), pcapng and pcap.
CAPTURES = [SAMPLES / "peer" / "fault-esp-replay-gap" / "capture.pcapng",
            SAMPLES / "strongswan6-percpu" / "capture.pcap",
            SAMPLES / "peer" / "fault-no-ts-limit" / "capture.pcapng",
            SAMPLES / "peer" / "clean" / "capture.pcapng"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """The address of a real scheduler with one real worker process (both on 127.0.0.1)."""
    from distributed import Client

    work = tmp_path_factory.mktemp("dask")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    dask = [sys.executable, "-m", "dask"]
    procs = [subprocess.Popen(dask + ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              cwd=work, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while True:  # the scheduler listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    pytest.fail("dask scheduler did not start")
                time.sleep(0.2)
        procs.append(subprocess.Popen(dask + ["worker", address, "--host", "127.0.0.1", "--nworkers", "1",
                                              "--nthreads", "1", "--no-dashboard", "--memory-limit", "0",
                                              "--local-directory", str(work)],
                                      cwd=work, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with Client(address, timeout=30) as client:
            client.wait_for_workers(1, timeout=60)
            assert all(os.getpid() != info.get("pid") for info in client.scheduler_info()["workers"].values())
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def _lint(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    keys = [a for c in CAPTURES for a in ("--keys", str(c.parent))]
    main = "import sys; from analyzer.cli import main; sys.exit(main())"  # what the multisa script runs
    return subprocess.run([sys.executable, "-c", main, "lint", *map(str, CAPTURES), *keys, *argv],
                          cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("fmt", FORMATS)
def test_lint_on_a_dask_cluster_equals_the_local_run(scheduler, fmt, tmp_path):
    local = _lint("--format", fmt, cwd=tmp_path)
    remote = _lint("--format", fmt, "--scheduler", scheduler, cwd=tmp_path)
    assert local.returncode == 1, local.stderr  # the fault captures have findings
    assert (remote.returncode, remote.stdout, remote.stderr) == (local.returncode, local.stdout, local.stderr)
    if fmt == "text":  # findings of every capture, in input order
        first = [next(i for i, line in enumerate(local.stdout.splitlines()) if line.startswith(str(c)))
                 for c in CAPTURES[:3]]
        assert first == sorted(first)


def test_unreachable_scheduler_is_one_line_and_exit_2(tmp_path):
    port = _free_port()  # nothing listens there
    out = _lint("--scheduler", f"tcp://127.0.0.1:{port}", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("multisa: error: cannot reach the Dask scheduler"), out.stderr

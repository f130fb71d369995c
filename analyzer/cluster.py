"""``multisa lint CAPTURES... --scheduler tcp://HOST:PORT``: the captures on a Dask cluster.

An existing Dask distributed cluster (``dask scheduler`` and ``dask worker`` processes,
``pip install 'multisa[dask]'`` on the client and on every worker) runs one task per
capture: ``analyzer.pipeline.analyze_capture`` with the client's key store, settings and
rule selection, which travel with the task (pickled), so key files need only be readable
where ``multisa lint`` runs. The capture is read by the worker, at the path given on the
command line: every worker must see it there (a shared file system, or the same copy on
each host). Results come back in input order, the same ``CaptureResult`` a local run
builds, so every output format renders them identically.

A capture the worker cannot read becomes that result's one-line ``error`` (as locally); a
cluster that cannot be reached, or a worker lost mid-task, is one ``ClusterError`` line.
"""

from __future__ import annotations

from collections.abc import Sequence

from .pipeline import CaptureResult, analyze_capture

#: Seconds to wait for the scheduler to answer before giving up.
CONNECT_TIMEOUT = 5


class ClusterError(Exception):
    """The Dask cluster could not run the captures (one line)."""


def _task(path, keys, settings, rules) -> CaptureResult:
    return analyze_capture(path, keys, settings, rules)


def analyze_on_cluster(jobs_list: Sequence[tuple], scheduler: str) -> list[CaptureResult]:
    """``analyze_capture`` for each (path, keys, settings, rules) on the Dask scheduler at
    ``scheduler`` (``tcp://HOST:PORT``); results in input order."""
    try:
        from distributed import Client
    except ImportError:
        raise ClusterError("--scheduler needs Dask: pip install 'multisa[dask]' "
                           "(dask and distributed)") from None
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise ClusterError(f"cannot reach the Dask scheduler at {scheduler}: {err}") from None
    try:
        # pure=False: two runs of one capture are two tasks (the file may have changed)
        futures = [client.submit(_task, *job, pure=False, key=f"multisa-lint-{i}-{_name(job[0])}")
                   for i, job in enumerate(jobs_list)]
        try:
            return client.gather(futures)
        except Exception as err:  # a worker died or could not import multisa: one line
            raise ClusterError(f"Dask cluster {scheduler}: {type(err).__name__}: {err}") from None
    finally:
        client.close()


def _name(path: str) -> str:
    import os

    return os.path.basename(os.fspath(path)) or "capture"

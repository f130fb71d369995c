"""``multisa export``: kernel XFRM counters and multisa's findings for Prometheus.

    multisa export --listen ADDR:PORT [--netns NS] [--capture FILE --keys K ...] [--no-per-sa]
                   [--duration S]

Every scrape of ``/metrics`` dumps the SAD and SPD over netlink (read-only, one socket kept
open; ENOBUFS restarts the dump) and answers in the Prometheus text exposition format
(prometheus-client), so a fleet of gateways is watched by an existing Prometheus. With
``--capture``, the capture is analyzed once at start (IKE groups, lint findings, the wire's
ESP sequence numbers) and each scrape holds the live SAD against it with the MS5xx rules
(``analyzer.xfrm_correlate``; MS508 compares with the previous scrape).

Metrics (``dir`` is ``in``/``out``/``""``, ``cpu`` the SA_PCPU or ``none``):

==============================================  =========  ==================================
``multisa_xfrm_up``                             gauge      1 when the last dump worked
``multisa_xfrm_dump_seconds``                   gauge      time the last dump took
``multisa_xfrm_sas{dir}``                       gauge      SAs in the SAD
``multisa_xfrm_policies{dir}``                  gauge      policies (in/out/fwd/...)
``multisa_xfrm_cpu_acquire_policies``           gauge      policies with XFRM_POLICY_CPU_ACQUIRE
``multisa_xfrm_sa_bytes_total{sa labels}``      counter    lifetime bytes of one SA
``multisa_xfrm_sa_packets_total{sa labels}``    counter    lifetime packets
``multisa_xfrm_sa_oseq{sa labels}``             gauge      last sent ESP sequence number
``multisa_xfrm_sa_seq{sa labels}``              gauge      highest received sequence number
``multisa_xfrm_sa_replay_drops_total{..}``      counter    replayed packets dropped
``multisa_xfrm_sa_replay_window_drops_total``   counter    packets left of the window
``multisa_xfrm_sa_integrity_failures_total``    counter    ICV failures
``multisa_xfrm_cpu_sas{cpu,dir}``               gauge      SAs bound to each CPU
``multisa_xfrm_cpu_bytes_total{cpu,dir}``       counter    bytes of the SAs of each CPU
``multisa_xfrm_cpu_packets_total{cpu,dir}``     counter    packets of the SAs of each CPU
``multisa_xfrm_group_sas{reqid,dir}``           gauge      SAs per reqid (the kernel's group)
``multisa_xfrm_group_cpus{reqid}``              gauge      distinct CPUs of a reqid's out SAs
``multisa_group_child_sas{group,state}``        gauge      (--capture) Child SAs per IKE group
``multisa_findings{code,severity,source}``      gauge      (--capture) findings by rule:
                                                           source "capture" (IKE, once) or
                                                           "xfrm" (live SAD, each scrape)
==============================================  =========  ==================================

``--no-per-sa`` leaves out the ``multisa_xfrm_sa_*`` families (one series per SA each) for
very large SADs; the per-CPU and per-reqid aggregates stay.

SA labels: ``spi`` (8 hex), ``src``, ``dst``, ``proto``, ``reqid``, ``dir``, ``cpu``. Keys never
appear: the records carry none.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from dissectors.xfrm import XfrmError, XfrmSocket

from .xfrm_state import XfrmSnapshot, snapshot_from_kernel

EXIT_OK, EXIT_ERROR = 0, 2
SA_DIR = {1: "in", 2: "out"}
POLICY_DIR = {0: "in", 1: "out", 2: "fwd", 3: "sock-in", 4: "sock-out", 5: "sock-fwd"}
SA_LABELS = ("spi", "src", "dst", "proto", "reqid", "dir", "cpu")


def _cpu(pcpu: int | None) -> str:
    return "none" if pcpu is None else str(pcpu)


def snapshot_metrics(snap: XfrmSnapshot, per_sa: bool = True) -> list:
    """Pure: the XFRM metric families of one snapshot (``per_sa=False``: without the per-SA
    families, for SADs too large to expose SA by SA)."""
    sas_by_dir = Counter(SA_DIR.get(sa.dir, "") for sa in snap.sas)
    g_sas = GaugeMetricFamily("multisa_xfrm_sas", "SAs in the SAD", labels=("dir",))
    for d, n in sorted(sas_by_dir.items()):
        g_sas.add_metric((d,), n)
    g_pol = GaugeMetricFamily("multisa_xfrm_policies", "policies in the SPD", labels=("dir",))
    for d, n in sorted(Counter(POLICY_DIR.get(p.dir, str(p.dir)) for p in snap.policies).items()):
        g_pol.add_metric((d,), n)
    g_acq = GaugeMetricFamily("multisa_xfrm_cpu_acquire_policies",
                              "policies with XFRM_POLICY_CPU_ACQUIRE",
                              value=sum(p.cpu_acquire for p in snap.policies))
    c_bytes = CounterMetricFamily("multisa_xfrm_sa_bytes", "bytes processed by the SA", labels=SA_LABELS)
    c_pkts = CounterMetricFamily("multisa_xfrm_sa_packets", "packets processed by the SA", labels=SA_LABELS)
    g_oseq = GaugeMetricFamily("multisa_xfrm_sa_oseq", "last ESP sequence number sent", labels=SA_LABELS)
    g_seq = GaugeMetricFamily("multisa_xfrm_sa_seq", "highest ESP sequence number received",
                              labels=SA_LABELS)
    c_replay = CounterMetricFamily("multisa_xfrm_sa_replay_drops", "replayed packets dropped",
                                   labels=SA_LABELS)
    c_window = CounterMetricFamily("multisa_xfrm_sa_replay_window_drops",
                                   "packets dropped left of the replay window", labels=SA_LABELS)
    c_icv = CounterMetricFamily("multisa_xfrm_sa_integrity_failures", "ICV check failures",
                                labels=SA_LABELS)
    cpu_sas: Counter = Counter()
    cpu_bytes: Counter = Counter()
    cpu_pkts: Counter = Counter()
    group_sas: Counter = Counter()
    group_cpus: dict[int, set] = {}
    for sa in snap.sas:
        d = SA_DIR.get(sa.dir, "")
        if per_sa:
            labels = (sa.spi_hex, sa.src, sa.dst, str(sa.proto), str(sa.reqid), d, _cpu(sa.pcpu))
            oseq = (sa.replay.oseq_hi << 32 | sa.replay.oseq) if sa.replay.esn else sa.replay.oseq
            seq = (sa.replay.seq_hi << 32 | sa.replay.seq) if sa.replay.esn else sa.replay.seq
            c_bytes.add_metric(labels, sa.curlft.bytes)
            c_pkts.add_metric(labels, sa.curlft.packets)
            g_oseq.add_metric(labels, oseq)
            g_seq.add_metric(labels, seq)
            c_replay.add_metric(labels, sa.stats.replay)
            c_window.add_metric(labels, sa.stats.replay_window)
            c_icv.add_metric(labels, sa.stats.integrity_failed)
        key = (_cpu(sa.pcpu), d)
        cpu_sas[key] += 1
        cpu_bytes[key] += sa.curlft.bytes
        cpu_pkts[key] += sa.curlft.packets
        group_sas[(str(sa.reqid), d)] += 1
        if sa.pcpu is not None and sa.dir != 1:
            group_cpus.setdefault(sa.reqid, set()).add(sa.pcpu)
        else:
            group_cpus.setdefault(sa.reqid, set())
    g_cpu = GaugeMetricFamily("multisa_xfrm_cpu_sas", "SAs bound to each CPU (SA_PCPU)",
                              labels=("cpu", "dir"))
    c_cpu_b = CounterMetricFamily("multisa_xfrm_cpu_bytes", "bytes of the SAs bound to each CPU",
                                  labels=("cpu", "dir"))
    c_cpu_p = CounterMetricFamily("multisa_xfrm_cpu_packets", "packets of the SAs bound to each CPU",
                                  labels=("cpu", "dir"))
    for key in sorted(cpu_sas):
        g_cpu.add_metric(key, cpu_sas[key])
        c_cpu_b.add_metric(key, cpu_bytes[key])
        c_cpu_p.add_metric(key, cpu_pkts[key])
    g_grp = GaugeMetricFamily("multisa_xfrm_group_sas", "SAs per reqid and direction",
                              labels=("reqid", "dir"))
    for key in sorted(group_sas):
        g_grp.add_metric(key, group_sas[key])
    g_gcpu = GaugeMetricFamily("multisa_xfrm_group_cpus",
                               "distinct CPUs of a reqid's outbound SAs", labels=("reqid",))
    for reqid in sorted(group_cpus):
        g_gcpu.add_metric((str(reqid),), len(group_cpus[reqid]))
    per = [c_bytes, c_pkts, g_oseq, g_seq, c_replay, c_window, c_icv] if per_sa else []
    return [g_sas, g_pol, g_acq, *per, g_cpu, c_cpu_b, c_cpu_p, g_grp, g_gcpu]


class CaptureContext:
    """What ``--capture`` contributes: analyzed once, held against each live snapshot."""

    def __init__(self, paths: list[str], keys, settings) -> None:
        from . import rules as registry
        from .pipeline import analyze_capture, evaluated
        from .xfrm_correlate import xfrm_rules

        selected = evaluated(registry.select(settings.select, settings.ignore))
        self.settings = settings
        self.results = [analyze_capture(p, keys, settings, selected) for p in paths]
        self.errors = [r.error for r in self.results if r.error]
        self.rules = xfrm_rules(settings)
        self.wires = [r.wire for r in self.results]  # the same pass: the capture is read once

    def metrics(self, snaps: list[XfrmSnapshot]) -> list:
        from .xfrm_correlate import correlate

        groups = GaugeMetricFamily("multisa_group_child_sas", "Child SAs of each IKE group (capture)",
                                   labels=("group", "state"))
        counts: Counter = Counter()
        for r in self.results:
            for lin in r.analyzer.lineages:
                for g in lin.groups.values():
                    for c in g.children:
                        counts[(g.label, c.state)] += 1
        for key in sorted(counts):
            groups.add_metric(key, counts[key])
        findings: Counter = Counter()
        for r in self.results:
            for f in r.findings:
                findings[(f.code, f.severity.label, "capture")] += 1
        sev = getattr(self.settings, "rule_severity", {}).get
        for r, wire in zip(self.results, self.wires):
            corr = correlate(list(r.analyzer.lineages), snaps, "live", wire, self.rules, severity_of=sev)
            for f in corr.findings:
                findings[(f.code, f.severity.label, "xfrm")] += 1
        fam = GaugeMetricFamily("multisa_findings", "lint findings by rule",
                                labels=("code", "severity", "source"))
        for key in sorted(findings):
            fam.add_metric(key, findings[key])
        return [groups, fam]


class XfrmCollector(Collector):
    """A prometheus-client collector: one netlink dump per scrape."""

    def __init__(self, netns: str | None = None, capture: CaptureContext | None = None,
                 per_sa: bool = True) -> None:
        self.netns = netns
        self.per_sa = per_sa
        self.capture = capture
        self._sock = XfrmSocket(netns)  # fails early, one line, without CAP_NET_ADMIN
        self._lock = threading.Lock()
        self._previous: XfrmSnapshot | None = None
        self.last_error: str | None = None

    def close(self) -> None:
        self._sock.close()

    def collect(self) -> Iterator:
        with self._lock:
            start = time.perf_counter()
            try:
                snap = snapshot_from_kernel(self.netns, self._sock)
                self.last_error = None
            except (XfrmError, OSError) as err:
                snap = None
                if str(err) != self.last_error:
                    print(f"multisa: error: XFRM dump failed: {err}", file=sys.stderr)
                self.last_error = str(err)
            took = time.perf_counter() - start
            yield GaugeMetricFamily("multisa_xfrm_up", "1 when the last XFRM dump worked",
                                    value=0 if snap is None else 1)
            yield GaugeMetricFamily("multisa_xfrm_dump_seconds", "time the last XFRM dump took",
                                    value=took)
            if snap is None:
                return
            yield from snapshot_metrics(snap, self.per_sa)
            if self.capture is not None:
                series = [s for s in (self._previous, snap) if s is not None]
                yield from self.capture.metrics(series)
            self._previous = snap


def parse_listen(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[v6]:PORT`` or ``:PORT`` (all addresses)."""
    host, sep, port = text.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen {text!r}: expected ADDR:PORT (e.g. 127.0.0.1:9964; port 0: any free one)")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def serve(listen: str, collector: XfrmCollector):
    """Start the HTTP server in a thread; returns (server, registry)."""
    from prometheus_client import start_http_server

    host, port = parse_listen(listen)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server, registry


def cmd_export(args: argparse.Namespace) -> int:
    def err(msg: str) -> int:
        print(f"multisa: error: {msg}", file=sys.stderr)
        return EXIT_ERROR

    try:
        parse_listen(args.listen)
    except ValueError as e:
        return err(str(e))
    capture = None
    if args.capture:
        from .cli import UsageError
        from .commands import _keys, settings_from_args

        try:
            settings = settings_from_args(args)
            capture = CaptureContext(args.capture, _keys(args.keys), settings)
        except UsageError as e:
            return err(str(e))
        for e in capture.errors:
            print(f"multisa: warning: {e}", file=sys.stderr)
    try:
        collector = XfrmCollector(args.netns, capture, per_sa=not args.no_per_sa)
    except XfrmError as e:
        return err(str(e))
    try:
        server, _ = serve(args.listen, collector)
    except OSError as e:
        collector.close()
        return err(f"cannot listen on {args.listen}: {e.strerror or e}")
    host, port = server.server_address[:2]
    print(f"multisa: serving Prometheus metrics on http://{args.listen.rpartition(':')[0] or host}:"
          f"{port}/metrics", file=sys.stderr, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait(args.duration)
    except KeyboardInterrupt:
        pass
    server.shutdown()
    server.server_close()
    collector.close()
    return EXIT_OK

"""From a capture file to an ``Analyzer`` full of state and findings (the I/O edge).

One pass, streaming, through the one engine (``analyzer.session.Session``): IKE datagrams go through the
IKEv2 dissector (decrypting with the user's keys) into the group ``Analyzer``; ESP
datagrams (IP protocol 50, or ESP-in-UDP on 4500 per RFC 3948) go to per-SA sequence
trackers (in C when ``dissectors._espscan`` is built) without becoming Python objects. At
the end each ESP SA is tied to its Child SA and group, and the ESP sequence and group
rules (MS4xx) run beside the IKE rules. A damaged capture stops the pass with a one-line
error, and what was analyzed up to the damage is kept: the end-of-capture rules still run
on it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dissectors.keys import KeyStore

from .config import Settings
from .esp_events import EspGroupSeen, EspSaSeen, EspSettings
from .events import CaptureEnded, ChildSaCreated, ChildSaRefused, MessageSeen, NotifySeen
from .model import Finding, Severity
from .rules import Rule
from .state import Analyzer

#: The events ``analyze_capture`` produces: rules on other events (the kernel XFRM MS5xx)
#: are not evaluated by it, so lint neither runs nor reports them as passed.
LINT_EVENTS = (MessageSeen, NotifySeen, ChildSaCreated, ChildSaRefused, CaptureEnded, EspSaSeen, EspGroupSeen)


def evaluated(rules: Iterable[Rule]) -> list[Rule]:
    """The rules ``analyze_capture`` can judge."""
    return [r for r in rules if r.event in LINT_EVENTS]


@dataclass
class CaptureResult:
    path: str
    analyzer: Analyzer
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None  # why the capture could not be read to its end
    esp: object | None = None  # the ESP pass's ``EspResult`` (per-SA trackers, counters)

    @property
    def wire(self) -> dict[int, int] | None:
        """Highest ESP sequence number per SPI (the kernel XFRM rules, MS506), from the same
        pass; None when the capture could not be read to its end."""
        if self.esp is None or self.error:
            return None
        out: dict[int, int] = {}
        for v in self.esp.sas:
            t = v.tracker
            out[t.spi] = max(out.get(t.spi, 0), t.top)
        return out

    @property
    def problems(self) -> dict[str, int]:
        """Damaged input the pass counted and skipped (non-zero counters only)."""
        if self.esp is None:
            return {}
        st, c = self.esp.stats, self.esp.counters
        out = {"esp_truncated": c.esp_truncated}
        for name in ("truncated", "malformed", "ip_fragments", "reassembly_dropped"):
            if st is not None:
                out[name] = getattr(st, name)
        return {k: v for k, v in out.items() if v}

    @property
    def notes(self) -> list[str]:
        """One line per kind of damaged input that was counted and skipped."""
        what = {"esp_truncated": "ESP packet(s) too short for SPI and Sequence Number",
                "truncated": "packet(s) cut by the snap length", "malformed": "malformed link/IP/UDP header(s)",
                "ip_fragments": "IP fragment(s) (reassembled where complete)",
                "reassembly_dropped": "incomplete fragment reassembly(ies) dropped"}
        out = [f"{self.path}: {n} {what[k]}" for k, n in self.problems.items()]
        if getattr(self.analyzer, "ikev1_messages", 0):
            out.append(f"{self.path}: IKEv1 traffic present, not analyzed ({self.analyzer.ikev1_messages} messages)")
        return out


def esp_settings(settings: Settings) -> EspSettings:
    """The ESP rules' knobs (``EspSettings``): ``esp_window``, ``esp_imbalance_ratio``, ...
    when the configuration has them, else the defaults."""
    d = EspSettings()
    return EspSettings(**{k: getattr(settings, "esp_" + k, getattr(d, k)) for k in EspSettings.__dataclass_fields__})


def analyze_capture(path: str, keys: KeyStore | None = None, settings: Settings | None = None,
                    rules: Iterable[Rule] | None = None,
                    progress: Callable[[int, int], None] | None = None) -> CaptureResult:
    """Run the analyzer (IKE, groups, ESP sequence numbers) over one capture file in one
    streaming pass; never raises on bad input."""
    from .esp_analysis import analyze_esp

    settings = settings or Settings()
    res = analyze_esp(os.fspath(path), keys or KeyStore(), settings, esp_settings(settings),
                      rules=list(rules) if rules is not None else None, progress=progress)
    return CaptureResult(str(path), res.analyzer, res.findings, res.error, res)


def _analyze_job(job: tuple) -> CaptureResult:
    path, keys, settings, rules = job
    return analyze_capture(path, keys, settings, rules)


def analyze_captures(jobs_list: list[tuple[str, KeyStore | None, Settings | None, list[Rule] | None]],
                     jobs: int = 1, progress: bool | None = None) -> list[CaptureResult]:
    """``analyze_capture`` over several captures, results in input order: ``jobs`` worker
    processes at a time (one capture per worker; ``multisa lint --jobs N``). ``progress``:
    a rich bar on stderr when it is a terminal (None: decide by ``isatty``), nothing on a pipe."""
    if progress is None:
        progress = sys.stderr.isatty()
    if jobs <= 1 or len(jobs_list) <= 1:
        out = []
        for path, keys, settings, rules in jobs_list:
            with progress_bar(path, progress) as update:
                out.append(analyze_capture(path, keys, settings, rules, progress=update))
        return out
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(min(jobs, len(jobs_list))) as pool:
        return pool.map(_analyze_job, jobs_list, chunksize=1)


class progress_bar:
    """A rich progress bar for one capture on stderr (``with progress_bar(path, on) as update``);
    ``update`` is None when off (not a terminal, or rich missing)."""

    def __init__(self, path: str, enabled: bool) -> None:
        self.path, self.enabled, self._prog = os.fspath(path), enabled, None

    def __enter__(self) -> Callable[[int, int], None] | None:
        if not self.enabled:
            return None
        try:
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn
        except ImportError:  # pragma: no cover - rich is a dependency
            return None
        self._prog = Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                              TimeRemainingColumn(), console=Console(stderr=True), transient=True)
        self._prog.start()
        task = self._prog.add_task(os.path.basename(self.path), total=None)
        prog = self._prog

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total or None)

        return update

    def __exit__(self, *exc) -> None:
        if self._prog is not None:
            self._prog.stop()


@dataclass
class LintReport:
    """What ``multisa lint`` reports: every capture's result, the rules that ran, the threshold."""

    results: list[CaptureResult]
    rules: list[Rule]
    threshold: Severity = Severity.INFO

    def shown(self, result: CaptureResult) -> list[Finding]:
        return [f for f in result.findings if f.severity >= self.threshold]

    @property
    def findings(self) -> list[Finding]:
        return [f for r in self.results for f in self.shown(r)]

    @property
    def errors(self) -> list[str]:
        return [r.error for r in self.results if r.error]

    def summary(self) -> dict:
        findings = self.findings
        by_code: dict[str, int] = {}
        for f in findings:
            by_code[f.code] = by_code.get(f.code, 0) + 1
        return {
            "findings": len(findings),
            "by_severity": {s.label: sum(f.severity is s for f in findings)
                            for s in (Severity.ERROR, Severity.WARNING, Severity.INFO)},
            "by_code": dict(sorted(by_code.items())),
            "threshold": self.threshold.label,
            "rules": [r.code for r in self.rules],
            "captures": [{"file": r.path, "ike_messages": r.analyzer.messages,
                          "esp_packets": r.analyzer.esp_packets, "findings": len(self.shown(r)),
                          "error": r.error} for r in self.results],
        }

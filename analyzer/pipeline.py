"""From a capture file to an ``Analyzer`` full of state and findings (the I/O edge).

One pass, streaming: datagrams go through the IKEv2 dissector (decrypting with the user's
keys); ESP datagrams (plain, or in UDP 4500 per RFC 3948) are tapped on the way to count
packets per Child SA. A damaged capture stops the pass with a one-line error, and what was
analyzed up to the damage is kept: the end-of-capture rules still run on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from dissectors.capture import CaptureError, Datagram, iter_datagrams
from dissectors.iana import IPPROTO_ESP, IPPROTO_UDP
from dissectors.ikev2 import ike_messages
from dissectors.keys import KeyStore
from dissectors.udpencap import UdpKind, classify_udp

from .config import Settings
from .events import CaptureEnded, ChildSaCreated, ChildSaRefused, MessageSeen, NotifySeen
from .model import Finding, Severity
from .rules import Rule
from .state import Analyzer

#: The events ``analyze_capture`` produces: rules on other events (the ESP pass's MS4xx) are
#: not evaluated by it, so lint neither runs nor reports them as passed.
LINT_EVENTS = (MessageSeen, NotifySeen, ChildSaCreated, ChildSaRefused, CaptureEnded)


def evaluated(rules: Iterable[Rule]) -> list[Rule]:
    """The rules ``analyze_capture`` can judge."""
    return [r for r in rules if r.event in LINT_EVENTS]


@dataclass
class CaptureResult:
    path: str
    analyzer: Analyzer
    findings: list[Finding] = field(default_factory=list)
    error: str | None = None  # why the capture could not be read to its end


def _tap_esp(datagrams: Iterable[Datagram], analyzer: Analyzer) -> Iterator[Datagram]:
    for d in datagrams:
        if d.proto == IPPROTO_ESP:
            if len(d.payload) >= 4:
                analyzer.feed_esp(d.frame, d.payload[:4])
            continue
        if d.proto == IPPROTO_UDP and classify_udp(d.sport, d.dport, d.payload) is UdpKind.ESP:
            analyzer.feed_esp(d.frame, d.payload[:4])
            continue
        yield d


def analyze_capture(path: str, keys: KeyStore | None = None, settings: Settings | None = None,
                    rules: Iterable[Rule] | None = None) -> CaptureResult:
    """Run the analyzer over one capture file; never raises on bad input."""
    analyzer = Analyzer(settings, rules, source=str(path))
    result = CaptureResult(str(path), analyzer)
    try:
        for msg in ike_messages(_tap_esp(iter_datagrams(str(path)), analyzer), keys or KeyStore()):
            result.findings += analyzer.feed(msg)
    except CaptureError as err:
        result.error = str(err)
    except OSError as err:
        result.error = f"{path}: {err.strerror or err}"
    result.findings += analyzer.finish()
    return result


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

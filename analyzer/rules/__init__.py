"""The rule registry: one rule is one small unit with a stable code (ruff's ``codes.rs``).

A rule is a pure function decorated with ``@rule``. It subscribes to one event type from
``analyzer.events`` (the annotation of its first parameter), may take the ``Settings`` as a
second parameter, and yields ``Hit``s; the registry turns them into ``Finding``s with the
rule's code, name, RFC citation, level and (configurable) severity. Its docstring is its
documentation, with fixed sections (*What it does*, *Why is this bad?*, *Example*) as ruff's
rule docs have.

Code families: MS1xx notify wire format (RFC 9611 §5), MS2xx group negotiation and rekey
(§3, §4), MS3xx refusals and limits (§6, §7), MS4xx ESP sequence correlation, MS5xx kernel
XFRM, MS9xx analyzer limits. Codes are never reused; a retired rule stays with
``removed=True``.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from dissectors.records import FrameRef

from ..model import ChildSaGroup, ExpertGroup, Finding, IkeSa, Level, Severity

CODE_RE = re.compile(r"^MS[1-9]\d\d$")
NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
DOC_SECTIONS = ("What it does", "Why is this bad?", "Example")


@dataclass(frozen=True, slots=True)
class Hit:
    """What a rule function reports; ``ike``/``group`` default to the event's."""

    message: str
    frames: tuple[FrameRef, ...] = ()
    ike: IkeSa | None = None
    group: ChildSaGroup | None = None
    offset: int | None = None  # the offending field in the message (default: the event's payload)


@dataclass(frozen=True)
class Rule:
    code: str
    name: str
    title: str
    rfc: str  # "RFC 9611 §5.1"
    level: Level
    severity: Severity  # default; users override it per rule
    group: ExpertGroup
    event: type
    check: Callable[..., Iterable[Hit]]
    doc: str
    removed: bool = False
    wants_settings: bool = False

    @property
    def section(self) -> str:
        return self.rfc.split(" ", 2)[-1] if self.rfc.startswith("RFC ") else self.rfc

    @property
    def citation(self) -> str:
        return f"{self.rfc} {self.level.value}".rstrip()

    def doc_sections(self) -> dict[str, str]:
        """The docstring's ``## Heading`` sections, by heading."""
        out: dict[str, str] = {}
        current = None
        for line in self.doc.splitlines():
            if line.startswith("## "):
                current = line[3:].strip()
                out[current] = ""
            elif current is not None:
                out[current] += line + "\n"
        return {k: v.strip() for k, v in out.items()}

    def run(self, event, settings, severity: Severity | None = None) -> list[Finding]:
        hits = self.check(event, settings) if self.wants_settings else self.check(event)
        return [self.finding(h, event, severity) for h in hits]

    def finding(self, hit: Hit, event, severity: Severity | None = None) -> Finding:
        frames = hit.frames or tuple(getattr(event, "frames", ())) or (
            (event.frame,) if getattr(event, "frame", None) is not None else ())
        ike = hit.ike or getattr(event, "ike", None)
        group = hit.group or getattr(event, "group", None)
        label = group.label if group is not None else getattr(event, "group_label", None)
        first = min(frames, key=lambda f: f.index) if frames else None
        offset = hit.offset
        if offset is None and not hit.frames:  # the payload the event is about (a Notify, ...)
            offset = getattr(getattr(event, "notify", None), "offset", None)
        return Finding(
            code=self.code, name=self.name, severity=severity or self.severity, message=hit.message,
            frames=tuple(sorted({f.index for f in frames})), ike_spis=ike.spis if ike else None,
            group=label, rfc=self.rfc, level=self.level, category=self.group,
            source=first.source if first else "", time=first.ts if first else None, offset=offset)


#: code -> rule, in code order (filled when the rule modules below are imported).
RULES: dict[str, Rule] = {}


def rule(*, code: str, name: str, title: str, rfc: str, level: Level, group: ExpertGroup,
         severity: Severity | None = None, removed: bool = False):
    """Register a rule function. Its name must be its kebab-case ``name`` in snake_case."""

    def register(fn: Callable) -> Callable:
        if not CODE_RE.match(code) or code in RULES:
            raise ValueError(f"bad or duplicate rule code {code!r}")
        if not NAME_RE.match(name) or fn.__name__ != name.replace("-", "_"):
            raise ValueError(f"rule {code}: function {fn.__name__!r} must be named after {name!r}")
        if any(r.name == name for r in RULES.values()):
            raise ValueError(f"duplicate rule name {name!r}")
        params = list(inspect.signature(fn).parameters.values())
        event_type = typing.get_type_hints(fn, globalns=fn.__globals__)[params[0].name]
        doc = inspect.cleandoc(fn.__doc__ or "")
        missing = [s for s in DOC_SECTIONS if f"## {s}" not in doc]
        if missing:
            raise ValueError(f"rule {code}: docstring lacks {', '.join(missing)}")
        RULES[code] = Rule(code, name, title, rfc, level, severity or level.default_severity, group,
                           event_type, fn, doc, removed, len(params) > 1)
        return fn

    return register


def all_rules(include_removed: bool = False) -> list[Rule]:
    return [r for _, r in sorted(RULES.items()) if include_removed or not r.removed]


def get(code_or_name: str) -> Rule | None:
    key = code_or_name.strip()
    return RULES.get(key.upper()) or next((r for r in RULES.values() if r.name == key.lower()), None)


def matches(code: str, prefixes: Iterable[str]) -> bool:
    return any(code.startswith(p) for p in prefixes)


def check_prefix(prefix: str) -> str:
    """Validate a ``--select``/``--ignore`` entry: a code prefix (``MS``, ``MS3``, ``MS307``) or
    ``ALL``. Raises ValueError naming the entry."""
    p = prefix.strip().upper()
    if p == "ALL":
        return "MS"
    if not p.startswith("MS") or not any(code.startswith(p) for code in RULES):
        raise ValueError(f"unknown rule code or prefix {prefix!r}")
    return p


def select(select: Iterable[str] | None = None, ignore: Iterable[str] = ()) -> list[Rule]:
    """Rules whose code starts with a ``select`` prefix and with no ``ignore`` prefix.

    As in ruff, the longer (more specific) prefix wins: ``--select MS3 --ignore MS307`` keeps
    MS301 and drops MS307; ``--ignore MS3 --select MS307`` keeps only MS307 of the MS3xx.
    """
    sel = [check_prefix(p) for p in (select if select is not None else ["MS"])]
    ign = [check_prefix(p) for p in ignore]
    out = []
    for r in all_rules():
        best_sel = max((len(p) for p in sel if r.code.startswith(p)), default=-1)
        best_ign = max((len(p) for p in ign if r.code.startswith(p)), default=-1)
        if best_sel >= 0 and best_sel >= best_ign:
            out.append(r)
    return out


def markdown_table() -> str:
    """The rule table for the README (``python -m analyzer.rules --markdown``)."""
    lines = ["| Code | Name | What it finds | RFC | Level | Severity | Group |",
             "|---|---|---|---|---|---|---|"]
    for r in all_rules():
        lines.append(f"| {r.code} | `{r.name}` | {r.title} | {r.rfc} | {r.level.value or '—'} "
                     f"| {r.severity.label} | {r.group.value} |")
    return "\n".join(lines) + "\n"


def markdown_document() -> str:
    return ("<!-- Generated from the rule registry by `python -m analyzer.rules --markdown`;"
            " do not edit. -->\n\n" + markdown_table())


README_START, README_END = "<!-- rules:start -->", "<!-- rules:end -->"


def readme_section() -> str:
    """What stands between the README's ``rules:start``/``rules:end`` markers."""
    return (f"{README_START}\n<!-- Generated by `python -m analyzer.rules --readme README.md`"
            f" from the rule registry; do not edit. -->\n\n{markdown_table()}{README_END}")


def with_readme_section(text: str) -> str:
    """``text`` (a README) with its marked rule section regenerated; ValueError when the
    markers are missing or out of order."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"no {README_START} ... {README_END} section")
    return text[:start] + readme_section() + text[end + len(README_END):]


# Importing the rule modules registers their rules; then keep RULES in code order.
# (esp: MS4xx, judged by the ESP pass, analyzer.esp_analysis; xfrm: MS5xx, judged by
# analyzer.xfrm_correlate.)
from . import decoding, esp, limits, negotiation, notify, xfrm  # noqa: E402,F401

_ordered = sorted(RULES.items())
RULES.clear()
RULES.update(_ordered)

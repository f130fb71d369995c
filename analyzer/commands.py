"""``multisa groups``, ``multisa lint`` and ``multisa rules``; ``register(sub)`` adds them.

Handlers return ruff's exit codes: 0 nothing at or above the severity threshold, 1 findings,
2 input or usage error (``--exit-zero`` turns 1 into 0, never 2). One-line problems are raised
as ``analyzer.cli.UsageError``; the CLI prints them. A capture that breaks off mid-file is
reported on stderr after everything analyzed before the damage, and lint exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import cli_common
from .cli_common import EXIT_ERROR, EXIT_FINDINGS, EXIT_OK, KEYS_HELP  # noqa: F401  (re-exported)
from .config import FORMATS, ConfigError, Settings, load_settings
from .model import Severity


def _usage_error(message: str) -> Exception:
    from .cli import UsageError

    return UsageError(message)


def _codes(values: list[str] | None) -> list[str] | None:
    """``--select MS1,MS3 --select MS9`` -> ["MS1", "MS3", "MS9"]."""
    if values is None:
        return None
    return [c.strip() for v in values for c in v.split(",") if c.strip()]


def _keys(paths: list[str] | None, beside: list[str] | tuple = ()):
    return cli_common.load_keys(paths, beside)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The configuration file's settings (``--config``, else the nearest one from the current
    directory up) with the command line's options on top."""
    from . import rules

    cli_common.refuse_together(args, "--config", "--isolated")
    try:
        settings = Settings() if getattr(args, "isolated", False) else load_settings(getattr(args, "config", None))
        select, ignore = _codes(getattr(args, "select", None)), _codes(getattr(args, "ignore", None))
        if select is not None:
            settings.select = [rules.check_prefix(c) for c in select]
        if ignore:
            settings.ignore = settings.ignore + [rules.check_prefix(c) for c in ignore]
        if getattr(args, "severity", None):
            settings.severity = Severity.parse(args.severity)
        if getattr(args, "exit_zero", False):
            settings.exit_zero = True
        if getattr(args, "format", None):
            settings.format = args.format
    except (ConfigError, ValueError) as err:
        raise _usage_error(str(err)) from None
    return settings


# --- lint ------------------------------------------------------------------------------------


def render(report, fmt: str, args: argparse.Namespace | None = None) -> str:
    from .report import github, junit, sarif, text
    from .report import json as json_report

    if fmt == "text" and args is not None:
        return text.render(report, quiet=getattr(args, "quiet", False),
                           statistics=getattr(args, "statistics", False),
                           color=not args.output_file and cli_common.color_enabled(sys.stdout))
    if fmt == "json":
        return json_report.render(report)
    if fmt == "json-lines":
        return json_report.render_lines(report)
    return {"text": text, "sarif": sarif, "junit": junit, "github": github}[fmt].render(report)


#: What a configuration file beside a capture may set for it: how the rules judge (thresholds,
#: per-rule severities). Which rules run, the output and the exit status are the run's.
CAPTURE_KEYS = ("rule_severity", "max_group_size", "recreate_window", "recreate_count",
                "initial_only_packets", "hardware_id_max", "history")


def capture_settings(args: argparse.Namespace, capture: str, run: Settings) -> Settings:
    """As ruff finds the configuration nearest to each file: without ``--config`` or
    ``--isolated``, a multisa.toml (or pyproject.toml with ``[tool.multisa]``) found from the
    capture's folder up, other than the run's, sets the rule thresholds for that capture."""
    if getattr(args, "isolated", False) or getattr(args, "config", None):
        return run
    from .config import find_config

    folder = Path(capture).parent
    if not folder.is_dir():
        return run
    found = find_config(folder)
    if found is None or (run.config_file and found.resolve() == Path(run.config_file).resolve()):
        return run
    try:
        own = load_settings(found)
    except ConfigError as err:
        raise _usage_error(str(err)) from None
    merged = Settings(**{k: getattr(run, k) for k in Settings.__dataclass_fields__})
    for key in CAPTURE_KEYS:
        setattr(merged, key, getattr(own, key))
    merged.config_file = own.config_file
    return merged


def cmd_lint(args: argparse.Namespace) -> int:
    from . import rules
    from .pipeline import LintReport, analyze_captures, evaluated

    settings = settings_from_args(args)
    if getattr(args, "annotate", None) and len(args.captures) > 1:
        raise _usage_error("--annotate writes one capture: give one CAPTURE")
    try:
        selected = evaluated(rules.select(settings.select, settings.ignore))
    except ValueError as err:
        raise _usage_error(str(err)) from None
    keys = _keys(args.keys)
    inputs = cli_common.resolve_captures(args.captures, check_format=False)
    jobs_list = [(c.path, _keys(args.keys, c.beside) if c.beside else keys,
                  capture_settings(args, c.path, settings), selected) for c in inputs]
    if getattr(args, "scheduler", None):  # a Dask cluster (analyzer.cluster)
        from .cluster import ClusterError, analyze_on_cluster

        try:
            results = analyze_on_cluster(jobs_list, args.scheduler)
        except ClusterError as err:
            raise _usage_error(str(err)) from None
    else:
        results = analyze_captures(jobs_list, jobs=getattr(args, "jobs", 1) or 1)
    if getattr(args, "xfrm", None):  # MS5xx: kernel XFRM snapshots (analyzer.xfrm_correlate)
        from .xfrm_correlate import lint_with_xfrm

        try:
            xfrm_rules, notes = lint_with_xfrm(results, args.xfrm, settings)
        except ValueError as err:
            raise _usage_error(str(err)) from None
        selected = selected + xfrm_rules
        for note in notes:
            print(f"multisa: note: {note}", file=sys.stderr)
    report = LintReport(results, selected, settings.severity)
    output = render(report, settings.format, args)
    cli_common.write_output(output, args.output_file)
    for result in results:  # damaged input the pass counted and skipped
        for note in result.notes:
            print(f"multisa: note: {note}", file=sys.stderr)
    for error in report.errors:
        print(f"multisa: error: {error}", file=sys.stderr)
    if getattr(args, "annotate", None):
        _annotate(args.captures[0], report.findings, args.annotate, bool(report.errors))
    if report.errors:
        return EXIT_ERROR
    return EXIT_FINDINGS if report.findings and not settings.exit_zero else EXIT_OK


def _annotate(capture: str, findings, out_path: str, reported: bool) -> None:
    """``--annotate OUT.pcapng``: the capture with the findings as packet comments."""
    from .annotate import annotate

    try:
        done = annotate(capture, findings, out_path)
    except (OSError, ValueError) as err:
        raise _usage_error(f"{out_path}: {getattr(err, 'strerror', None) or err}") from None
    if done.error and not reported:  # the analysis stopped at the same damage and said so
        raise _usage_error(done.error)
    print(f"multisa: note: {out_path}: {done.comments} comment(s) on {done.frames} frame(s)", file=sys.stderr)


# --- groups ----------------------------------------------------------------------------------


def cmd_groups(args: argparse.Namespace) -> int:
    from .pipeline import analyze_capture
    from .report import groups

    inputs = cli_common.resolve_captures([args.capture])
    docs: list[dict] = []

    def flush_json() -> None:
        if docs:
            sys.stdout.write(json.dumps(docs[0] if len(inputs) == 1 else docs, indent=2) + "\n")
            sys.stdout.flush()

    for item in inputs:
        result = analyze_capture(item.path, _keys(args.keys, item.beside), Settings(), rules=[])
        if args.format == "json":
            docs.append(groups.document(result))
        else:
            sys.stdout.write(groups.render_text(result))
            sys.stdout.flush()
        if result.error:
            flush_json()
            print(f"multisa: error: {result.error}", file=sys.stderr)
            return EXIT_ERROR
    flush_json()
    return EXIT_OK


# --- rules -----------------------------------------------------------------------------------


def rule_dict(r) -> dict:
    return {"code": r.code, "name": r.name, "title": r.title, "rfc": r.rfc, "level": r.level.value or None,
            "severity": r.severity.label, "group": r.group.value, "event": r.event.__name__,
            "removed": r.removed, "doc": r.doc}


def rule_text(r) -> str:
    head = f"{r.code} {r.name}: {r.title}"
    meta = (f"{r.citation} · default severity {r.severity.label} · group {r.group.value}"
            + (" · removed" if r.removed else ""))
    return f"{head}\n{meta}\n\n{r.doc}\n"


def cmd_rules(args: argparse.Namespace) -> int:
    from . import rules

    if args.code:
        r = rules.get(args.code)
        if r is None:
            raise _usage_error(f"unknown rule {args.code!r} (`multisa rules` lists them)")
        sys.stdout.write(json.dumps(rule_dict(r), indent=2) + "\n" if args.format == "json" else rule_text(r))
        return EXIT_OK
    listed = rules.all_rules()
    if args.format == "json":
        sys.stdout.write(json.dumps([rule_dict(r) for r in listed], indent=2) + "\n")
    elif args.format == "markdown":
        sys.stdout.write(rules.markdown_table())
    else:
        width = max(len(r.name) for r in listed)
        for r in listed:
            sys.stdout.write(f"{r.code}  {r.name:<{width}}  {r.severity.label:<7}  {r.citation}\n")
    return EXIT_OK


# --- argparse --------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``groups``, ``lint`` and ``rules`` to the ``multisa`` subparsers."""
    groups = sub.add_parser("groups", help="IKE SA -> per-TS Child SA group -> Child SAs, with resource ids")
    groups.add_argument("capture", help=cli_common.CAPTURE_HELP)
    cli_common.add_keys(groups)
    cli_common.add_format(groups)
    cli_common.add_output(groups)
    groups.set_defaults(func=cmd_groups)

    lint = sub.add_parser("lint", help="check captures against RFC 9611 (exit 0 clean, 1 findings, 2 error)")
    lint.add_argument("captures", nargs="+", metavar="CAPTURE",
                      help="pcap or pcapng files, directories of them (keys beside each capture are used), - for stdin")
    cli_common.add_keys(lint)
    lint.add_argument("--format", "-f", choices=FORMATS, help="output format (default text)")
    lint.add_argument("--json", dest="format", action="store_const", const="json", help="same as --format json")
    lint.add_argument("-q", "--quiet", action="store_true", help="print the findings and nothing else")
    lint.add_argument("--statistics", action="store_true",
                      help="print the number of findings per rule instead of the findings")
    lint.add_argument("--select", action="append", metavar="CODES",
                      help="only these rule codes or prefixes, comma-separated (e.g. MS1,MS307)")
    lint.add_argument("--ignore", action="append", metavar="CODES",
                      help="skip these rule codes or prefixes, comma-separated")
    lint.add_argument("--severity", choices=[s.label for s in Severity],
                      help="report (and fail on) findings at or above this severity (default info)")
    lint.add_argument("--exit-zero", action="store_true", help="exit 0 even when there are findings")
    lint.add_argument("--jobs", "-j", type=cli_common.positive_int, default=1, metavar="N",
                      help="analyze N captures at a time in worker processes (default 1)")
    lint.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                      help="run the captures on this Dask distributed scheduler's workers "
                           "(pip install 'multisa[dask]'; each worker must read the captures at "
                           "these paths; keys travel with the tasks)")
    lint.add_argument("--config", metavar="FILE",
                      help="settings file (multisa.toml or pyproject.toml); default: the nearest one "
                      "(and, for rule thresholds, the one nearest to each capture)")
    lint.add_argument("--isolated", action="store_true", help="ignore configuration files")
    lint.add_argument("--output", "-o", "--output-file", dest="output_file", metavar="FILE",
                      help="write the report here instead of stdout")
    lint.add_argument("--xfrm", action="append", metavar="SNAPSHOT",
                      help="one host's kernel XFRM state to hold against the capture (MS5xx): a "
                           "`multisa xfrm snapshot` file, a *.xfrm-sa.json dump, `ip -s xfrm "
                           "state` text, or live[:NETNS] (repeatable)")
    lint.add_argument("--annotate", metavar="OUT.pcapng",
                      help="also write the capture as pcapng with a packet comment per finding on "
                           "each frame it names (Wireshark: Expert Information; tshark: frame.comment)")
    lint.set_defaults(func=cmd_lint)

    rules = sub.add_parser("rules", help="list the lint rules, or print one rule's documentation")
    rules.add_argument("code", nargs="?", help="rule code or name, e.g. MS307")
    rules.add_argument("--format", choices=("text", "json", "markdown"), default="text")
    rules.set_defaults(func=cmd_rules)

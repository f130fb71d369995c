"""Lint settings: defaults, ``[tool.multisa]`` in pyproject.toml, or a multisa.toml.

As ruff does, the nearest configuration file wins, searched from the current directory up:
``multisa.toml`` (keys at top level) before ``pyproject.toml`` (keys under ``[tool.multisa]``;
a pyproject.toml without that table is skipped). Command-line options override the file.
Without ``--config``/``--isolated``, ``multisa lint`` also looks for the configuration nearest
to each capture (from the capture's folder up); one other than the run's sets the rule
thresholds and ``rule_severity`` for that capture (``analyzer.commands.CAPTURE_KEYS``), so a
sample folder can carry the ``multisa.toml`` its small capture needs.
Keys are lowercase with ``_`` (Wireshark README.dissector §2.6)::

    [tool.multisa]
    select = ["MS"]            # code prefixes; "ALL" is every rule
    ignore = ["MS9"]
    severity = "warning"       # report (and fail on) findings at or above this
    exit_zero = false
    format = "text"            # text, json, json-lines, sarif, junit, github
    max_group_size = 64        # MS305
    recreate_window = 30.0     # MS303, seconds
    recreate_count = 3         # MS303
    initial_only_packets = 10  # MS304
    hardware_id_max = 4096     # MS307
    history = 1000             # deleted Child SAs kept per group (memory bound)

    [tool.multisa.rule_severity]
    MS307 = "info"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .model import Severity

FORMATS = ("text", "json", "json-lines", "sarif", "junit", "github")


class ConfigError(ValueError):
    """A one-line problem with a configuration file or value: ``file: key: reason``."""


@dataclass
class Settings:
    select: list[str] | None = None  # None: every rule
    ignore: list[str] = field(default_factory=list)
    severity: Severity = Severity.INFO
    exit_zero: bool = False
    format: str = "text"
    rule_severity: dict[str, Severity] = field(default_factory=dict)
    max_group_size: int = 64
    recreate_window: float = 30.0
    recreate_count: int = 3
    initial_only_packets: int = 10
    hardware_id_max: int = 4096
    history: int = 1000  # deleted Child SAs (and refusals) kept per group; older ones are counted
    config_file: str | None = None


_INT_KEYS = ("max_group_size", "recreate_count", "initial_only_packets", "hardware_id_max", "history")


def find_config(start: Path | None = None) -> Path | None:
    """The nearest multisa.toml, or pyproject.toml with ``[tool.multisa]``, from ``start`` up."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        own = folder / "multisa.toml"
        if own.is_file():
            return own
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file():
            try:
                data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                continue
            if "multisa" in data.get("tool", {}):
                return pyproject
    return None


def load_settings(path: Path | str | None = None, *, search_from: Path | None = None) -> Settings:
    """Settings from ``path`` (or the file ``find_config`` finds; defaults if none)."""
    if path is None:
        path = find_config(search_from)
        if path is None:
            return Settings()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror or err}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    table = data.get("tool", {}).get("multisa", {}) if path.name == "pyproject.toml" else data
    settings = settings_from_dict(table, str(path))
    settings.config_file = str(path)
    return settings


def settings_from_dict(table: dict, where: str = "configuration") -> Settings:
    from . import rules

    s = Settings()
    known = {f.name for f in fields(Settings)} - {"config_file"}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        try:
            if key in ("select", "ignore"):
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise ValueError("expected a list of rule codes or prefixes")
                setattr(s, key, [rules.check_prefix(v) for v in value])
            elif key == "severity":
                s.severity = Severity.parse(_str(value))
            elif key == "exit_zero":
                if not isinstance(value, bool):
                    raise ValueError("expected true or false")
                s.exit_zero = value
            elif key == "format":
                if value not in FORMATS:
                    raise ValueError(f"expected one of {', '.join(FORMATS)}")
                s.format = value
            elif key == "rule_severity":
                if not isinstance(value, dict):
                    raise ValueError("expected a table of CODE = \"error|warning|info\"")
                for code, sev in value.items():
                    rule = rules.get(code)
                    if rule is None:
                        raise ValueError(f"unknown rule {code!r}")
                    s.rule_severity[rule.code] = Severity.parse(_str(sev))
            elif key in _INT_KEYS:
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise ValueError("expected a positive integer")
                setattr(s, key, value)
            elif key == "recreate_window":
                if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                    raise ValueError("expected a positive number of seconds")
                s.recreate_window = float(value)
        except ValueError as err:
            raise ConfigError(f"{where}: {key}: {err}") from None
    return s


def _str(value) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a string")
    return value

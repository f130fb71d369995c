"""Reference peer configuration: a TOML file and/or command-line flags (flags win).

TOML keys are the ``PeerConfig`` field names (lowercase, ``_``), e.g.::

    local_id = "moon.multisa.test"
    psk_file = "psk.txt"
    local_ts = "198.51.100.0/24"
    remote_ts = "203.0.113.0/24"
    ike_proposals = ["aes256gcm16-prfsha256-x25519", "aes256-sha256-modp2048"]
    esp_proposals = ["aes256gcm16", "aes256-sha256"]
    resources = 4
    resource_info = true        # RFC 9611 §7: off unless asked for
    max_per_ts = 8              # RFC 9611 §6: default twice the CPU count
    rate = 200                  # ESP packets/s per worker
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from dissectors.iana import ProtocolId
from dissectors.records import Secret

from .faults import check_faults
from .proposals import Suite, parse_suite


class ConfigError(ValueError):
    pass


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


@dataclass
class PeerConfig:
    role: str = "initiator"
    local_id: str = ""
    remote_id: str = ""  # empty: accept any identity
    psk: Secret = field(default=Secret(b""), repr=False)
    psk_file: str = ""
    local_ts: str = "198.51.100.0/24"
    remote_ts: str = "203.0.113.0/24"
    ike_proposals: list[str] = field(default_factory=lambda: ["aes256gcm16-prfsha256-x25519",
                                                              "aes256-sha256-modp2048", "aes256-sha256-ecp256"])
    esp_proposals: list[str] = field(default_factory=lambda: ["aes256gcm16", "aes256-sha256"])
    pfs: bool = False  # CREATE_CHILD_SA with KE (the IKE SA's group)
    resources: int = 0  # per-resource Child SAs to create (initiator); 0 = CPU count
    resource_info: bool = False  # send SA_RESOURCE_INFO (RFC 9611 §7: not by default)
    all_at_once: bool = True  # RFC 9611 §3: all per-resource SAs at once, or one per worker start
    extra_requests: int = 0  # additional CREATE_CHILD_SA beyond resources (to see TS_MAX_QUEUE)
    extra_ids: str = "new"  # extra requests: "new" resource ids, or "reuse" those of resources 0, 1, ...
    max_per_ts: int = 0  # responder limit of additional SAs per TS; 0 = 2 x CPU count (§6)
    max_half_open: int = 64
    rate: float = 100.0  # ESP packets per second per worker (0: no ESP)
    size: int = 64  # inner UDP payload octets
    duration: float = 5.0  # seconds of ESP traffic per worker
    rekey_child_after: float = 0.0  # seconds after creation to rekey per-resource SA 0 (0 = never)
    rekey_ike_after: float = 0.0  # seconds after IKE_AUTH to rekey the IKE SA (0 = never)
    create_children: int = 0  # responder: additional Child SAs it starts itself (CREATE_CHILD_SA)
    collide: bool = False  # answer the peer's first Child SA / IKE SA rekey by rekeying it too (§2.8.1)
    cookies: bool = False  # responder: demand a COOKIE in every IKE_SA_INIT (RFC 7296 §2.6)
    fragment_size: int = 1280  # RFC 7383: larger encrypted messages go in SKF fragments (0 = never)
    delete_after: bool = True  # initiator: INFORMATIONAL deletes at the end
    liveness: float = 0.0  # seconds between liveness checks (0 = off)
    retransmit_timeout: float = 1.0
    retransmit_tries: int = 5
    lifetime: float = 0.0  # whole run in seconds (0: until done / Ctrl-C)
    keys_dir: str = ""  # write ikev2_decryption_table and esp_sa here
    status_file: str = ""  # JSON counters, rewritten twice a second
    faults: list[str] = field(default_factory=list)
    cpus: int = 0  # CPUs to pin workers to; 0 = all this process may use

    def __post_init__(self) -> None:
        self.finish()

    def finish(self) -> None:
        if self.psk_file and not self.psk:
            try:
                self.psk = Secret(Path(self.psk_file).read_bytes().strip())
            except OSError as err:
                raise ConfigError(f"{self.psk_file}: cannot read the PSK file ({err.strerror})") from None
        self.cpus = self.cpus or cpu_count()
        self.resources = self.resources if self.resources > 0 else self.cpus
        self.max_per_ts = self.max_per_ts or 2 * self.cpus
        check_faults(self.faults)
        if self.extra_ids not in ("new", "reuse"):
            raise ConfigError(f"extra_ids must be 'new' or 'reuse', not {self.extra_ids!r}")

    @property
    def ike_suites(self) -> list[Suite]:
        return [parse_suite(p, ProtocolId.IKE) for p in self.ike_proposals]

    @property
    def esp_suites(self) -> list[Suite]:
        return [parse_suite(p, ProtocolId.ESP) for p in self.esp_proposals]

    def fault(self, name: str) -> bool:
        return name in self.faults


def load_config(path: str | None, overrides: dict) -> PeerConfig:
    """TOML file (optional) then flag overrides (keys with value None are ignored)."""
    values: dict = {}
    if path:
        try:
            with open(path, "rb") as fh:
                values = tomllib.load(fh)
        except OSError as err:
            raise ConfigError(f"{path}: {err.strerror}") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: {err}") from None
        values = values.get("peer", values)
    known = {f.name for f in fields(PeerConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key {unknown[0]!r}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "psk" in values and not isinstance(values["psk"], Secret):
        values["psk"] = Secret(str(values["psk"]).encode())
    try:
        cfg = PeerConfig(**values)
        cfg.ike_suites, cfg.esp_suites  # validate proposal strings early
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return cfg

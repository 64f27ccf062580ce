"""agent.toml: the daemon's settings. Unknown keys are errors that name the key."""

from __future__ import annotations

import ipaddress
import math
import os
import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 boards
    import tomli as tomllib

from edgefleet.accelerators import MISMATCH_POLICIES, NAMES, ChainError, check_edgetpu_device
from edgefleet.devices.profiles import list_profiles
from edgefleet.engines import APIS
from edgefleet.mqtt_security import MqttSecurity, SecurityError
from edgefleet.protocol.limits import MAX_INFER_REQUEST_BYTES
from edgefleet.protocol.topics import Topics, check_id
from edgefleet.runtime import RUNTIMES


class ConfigError(Exception):
    """agent.toml cannot be used; the message names the file, key and what is allowed."""


@dataclass
class MqttSettings:
    host: str = "localhost"
    port: int = 0  # 0: 1883, or 8883 with TLS
    prefix: str = "edgefleet"
    keepalive: int = 30
    client_id: str = ""  # default: edgefleet-agent-<device_id>
    protocol: str = "3.1.1"  # or "5": requests may then name their Response Topic
    # TLS (on as well when ca_file or cert_file is set) and credentials; docs/operations.md
    tls: bool = False
    ca_file: str = ""  # "": the system's certificate authorities
    cert_file: str = ""
    key_file: str = ""
    username: str = ""
    password_file: str = ""

    @property
    def security(self) -> MqttSecurity:
        return MqttSecurity(tls=self.tls, ca_file=self.ca_file, cert_file=self.cert_file,
                            key_file=self.key_file, username=self.username, password_file=self.password_file)

    @property
    def broker_port(self) -> int:
        return self.port or self.security.default_port()


@dataclass
class RuntimeSettings:
    runtime: str = "auto"  # auto | ai-edge-litert | tflite-runtime | tensorflow
    # auto: the board profile's chain (docs/runtime.md); or one accelerator of
    # edgefleet.accelerators.NAMES (cpu, edgetpu, vx, ethos-u, teflon, armnn, external, litert-gpu, ...)
    delegate: str = "auto"
    num_threads: int = 0  # 0: the runtime's default
    allow_cpu_fallback: bool = False  # a named delegate only: the CPU after it (reported, never silent)
    delegate_library: str = ""  # the delegate's library, instead of the known default
    delegate_options: dict[str, str] = field(default_factory=dict)
    api: str = "auto"  # auto (the faster, measured per model) | interpreter | compiled
    require_accelerator: bool = False  # refuse to activate a model that would run on the CPU
    target_mismatch: str = "refuse"  # a bundle for an accelerator this device lacks: refuse | warn


@dataclass
class ServeSettings:
    # "127.0.0.1:PORT", "unix:/path/to.sock", or "" for no local API
    http: str = "127.0.0.1:8470"
    mqtt: bool = True
    # MQTT inference requests queued or running at once; more are answered `busy`
    mqtt_max_pending: int = 32
    # request bytes held at once over HTTP and MQTT (agent/budget.py); more are answered `busy`
    max_inflight_mib: float = 16.0
    # an address beyond loopback serves the board's network: only when asked for, with a token
    allow_remote: bool = False
    token_file: str = ""  # holds the token clients send as "Authorization: Bearer <token>"

    @property
    def max_inflight_bytes(self) -> int:
        return int(self.max_inflight_mib * 2**20) if math.isfinite(self.max_inflight_mib) else 0


@dataclass
class TelemetrySettings:
    interval_s: float = 10.0


@dataclass
class DeliverySettings:
    window: int = 16  # chunk topics subscribed at once (refilled half a window at a time)
    chunk_timeout_s: float = 15.0  # re-subscribe a chunk that has not arrived by then
    max_bad_chunks: int = 3  # a chunk failing its hash this often fails the install
    manifest_timeout_s: float = 120.0  # no manifest on the broker by then: the install fails
    # bundles beyond these are refused at the manifest, before any chunk is fetched
    max_bundle_mib: float = 1024.0
    max_chunks: int = 65536
    keep_previous: int = 1  # installed bundles kept on disk besides the active one (rollback)


@dataclass
class SpoolSettings:
    # telemetry and reported states taken while the broker is away, kept on disk (agent/spool.py)
    max_mib: float = 16.0  # the oldest go first beyond this; 0: nothing is kept
    max_age_s: float = 7 * 86400.0  # and beyond this age


ON_REVOKED = ("report", "deactivate")


@dataclass
class TrustSettings:
    # the active bundle's key is revoked in trust_dir/revoked.txt: keep serving and report it
    # (every reported and telemetry message names the key), or stop serving it
    on_revoked: str = "report"  # report | deactivate
    # development only: take bundles, manifests and desired states made with --unsigned;
    # every reported and telemetry message then says so
    allow_unsigned: bool = False


@dataclass
class BoardSettings:
    profile: str = ""  # a board profile name (edgefleet inspect --profiles); "": detected
    # prefix of /sys, /proc and /dev for detection and sensors (a container that mounts the
    # host's elsewhere; tests give fixture trees)
    root: str = "/"
    vcgencmd: str = "vcgencmd"  # Raspberry Pi firmware tool: PMIC rails and throttling


@dataclass
class AgentConfig:
    device_id: str
    state_dir: Path
    trust_dir: Path
    groups: list[str] = field(default_factory=list)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    runtime: RuntimeSettings = field(default_factory=RuntimeSettings)
    serve: ServeSettings = field(default_factory=ServeSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    board: BoardSettings = field(default_factory=BoardSettings)
    trust: TrustSettings = field(default_factory=TrustSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)

    @property
    def topics(self) -> Topics:
        return Topics(self.mqtt.prefix)


_SECTIONS = {"mqtt": MqttSettings, "runtime": RuntimeSettings, "serve": ServeSettings,
             "telemetry": TelemetrySettings, "delivery": DeliverySettings, "board": BoardSettings,
             "trust": TrustSettings, "spool": SpoolSettings}


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    values = {}
    for name, value in data.items():
        f = known[name]
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        kind = type(default)
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not kind:
            raise ConfigError(f"{where}.{name}: expected {kind.__name__}, got {value!r}")
        values[name] = value
    return cls(**values)


def parse_config(data: dict[str, Any], source: str = "edgefleet.agent.toml",
                 base: Path | None = None) -> AgentConfig:
    """BASE: the folder relative paths (state_dir, trust_dir, a unix: socket) resolve against,
    the config file's own (load_config), so that the agent finds the same files whatever
    folder it is started from; None leaves them relative to the working folder."""
    top = dict(data)
    sections = {name: top.pop(name) for name in list(top) if name in _SECTIONS}
    allowed = {"device_id", "state_dir", "trust_dir", "groups"}
    unknown = set(top) - allowed
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {sorted(unknown)}; top-level keys are {sorted(allowed)} "
            f"and sections [{'], ['.join(_SECTIONS)}]"
        )
    for key in ("device_id", "state_dir", "trust_dir"):
        if not isinstance(top.get(key), str) or not top[key]:
            raise ConfigError(f"{source}: '{key}' is required (a string)")
    groups = top.get("groups", [])
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ConfigError(f"{source}: 'groups' must be a list of strings")
    try:
        check_id("device", top["device_id"])
        for g in groups:
            check_id("group", g)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    built = {}
    for name, cls in _SECTIONS.items():
        section = sections.get(name, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        built[name] = _build(cls, section, f"{source} [{name}]")
    cfg = AgentConfig(device_id=top["device_id"], state_dir=_path(top["state_dir"], base),
                      trust_dir=_path(top["trust_dir"], base), groups=groups, **built)
    if cfg.serve.http.startswith("unix:"):
        cfg.serve.http = f"unix:{_path(cfg.serve.http[len('unix:'):], base)}"
    if cfg.serve.token_file:
        cfg.serve.token_file = str(_path(cfg.serve.token_file, base))
    for key in MQTT_FILES:
        if getattr(cfg.mqtt, key):
            setattr(cfg.mqtt, key, str(_path(getattr(cfg.mqtt, key), base)))
    _check_values(cfg, source)
    return cfg


def _path(value: str, base: Path | None) -> Path:
    path = Path(value)
    return path if base is None or path.is_absolute() else base / path


def _check_values(cfg: AgentConfig, source: str) -> None:
    checks = [
        (0 <= cfg.mqtt.port <= 65535, "[mqtt] port must be 1..65535 (or 0: 1883, 8883 with TLS)"),
        (cfg.mqtt.keepalive >= 0, "[mqtt] keepalive must be 0 (off) or more seconds"),
        (cfg.runtime.num_threads >= 0, "[runtime] num_threads must be 0 (the runtime's default) or more"),
        (math.isfinite(cfg.telemetry.interval_s), "[telemetry] interval_s must be a number of seconds"),
        (math.isfinite(cfg.delivery.chunk_timeout_s) and cfg.delivery.chunk_timeout_s > 0,
         "[delivery] chunk_timeout_s must be above 0"),
        (math.isfinite(cfg.delivery.manifest_timeout_s) and cfg.delivery.manifest_timeout_s > 0,
         "[delivery] manifest_timeout_s must be above 0"),
        (cfg.delivery.max_bad_chunks >= 1, "[delivery] max_bad_chunks must be at least 1"),
        (math.isfinite(cfg.delivery.max_bundle_mib) and cfg.delivery.max_bundle_mib > 0,
         "[delivery] max_bundle_mib must be above 0"),
        (cfg.delivery.max_chunks >= 1, "[delivery] max_chunks must be at least 1"),
        (cfg.delivery.keep_previous >= 0, "[delivery] keep_previous must be 0 or more"),
        (math.isfinite(cfg.spool.max_mib) and cfg.spool.max_mib >= 0, "[spool] max_mib must be 0 or more"),
        (cfg.spool.max_age_s > 0, "[spool] max_age_s must be above 0"),
        (cfg.serve.mqtt_max_pending >= 1, "[serve] mqtt_max_pending must be at least 1"),
        (cfg.serve.max_inflight_bytes >= MAX_INFER_REQUEST_BYTES,
         f"[serve] max_inflight_mib must hold one request of the largest size "
         f"({MAX_INFER_REQUEST_BYTES >> 20} MiB)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{source} {message}")
    if cfg.mqtt.protocol not in ("3.1.1", "5"):
        raise ConfigError(f"{source} [mqtt] protocol: choose \"3.1.1\" or \"5\"")
    _check_mqtt_security(cfg.mqtt, source)
    if cfg.runtime.runtime != "auto" and cfg.runtime.runtime not in RUNTIMES:
        raise ConfigError(f"{source} [runtime] runtime: choose auto or one of {list(RUNTIMES)}")
    rt = cfg.runtime
    if rt.delegate != "auto" and rt.delegate not in NAMES:
        raise ConfigError(f"{source} [runtime] delegate: choose auto or one of {list(NAMES)}")
    if rt.delegate == "external" and not rt.delegate_library:
        raise ConfigError(f"{source} [runtime] delegate = \"external\" needs delegate_library "
                          "(the delegate's .so, e.g. /usr/lib/libvx_delegate.so)")
    if rt.api not in APIS:
        raise ConfigError(f"{source} [runtime] api: choose one of {list(APIS)}")
    if rt.target_mismatch not in MISMATCH_POLICIES:
        raise ConfigError(f"{source} [runtime] target_mismatch: choose one of {list(MISMATCH_POLICIES)}")
    if "device" in rt.delegate_options and rt.delegate in ("auto", "edgetpu"):
        try:
            check_edgetpu_device(rt.delegate_options["device"])
        except ChainError as exc:
            raise ConfigError(f"{source} [runtime] delegate_options: {exc}") from None
    if cfg.board.profile and cfg.board.profile not in list_profiles():
        raise ConfigError(f"{source} [board] profile: {cfg.board.profile!r} is not a board profile; "
                          f"choose one of {list_profiles()} or leave it out to detect the board")
    if cfg.trust.on_revoked not in ON_REVOKED:
        raise ConfigError(f"{source} [trust] on_revoked: choose one of {list(ON_REVOKED)}")
    if cfg.telemetry.interval_s <= 0:
        raise ConfigError(f"{source} [telemetry] interval_s must be above 0")
    if cfg.delivery.window < 1:
        raise ConfigError(f"{source} [delivery] window must be at least 1")
    http = cfg.serve.http
    if http and not http.startswith("unix:"):
        host, _, port = http.rpartition(":")
        if not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f"{source} [serve] http: use 'HOST:PORT' (port 0..65535), "
                              "'unix:/path.sock' or ''")
        if not is_loopback(host) and not cfg.serve.allow_remote:
            raise ConfigError(f"{source} [serve] http = {http!r} would serve inference to the board's "
                              "network: use 127.0.0.1 or a unix: socket, or set allow_remote = true "
                              "and token_file (clients then send the token)")
    if cfg.serve.allow_remote and not cfg.serve.token_file:
        raise ConfigError(f"{source} [serve] allow_remote needs token_file: a file holding the token "
                          "every client must send (e.g. openssl rand -hex 32 > token; chmod 600 token)")
    try:
        Topics(cfg.mqtt.prefix)
    except ValueError as exc:
        raise ConfigError(f"{source} [mqtt] prefix: {exc}") from None


MQTT_FILES = ("ca_file", "cert_file", "key_file", "password_file")


def _check_mqtt_security(mqtt: MqttSettings, source: str) -> None:
    """The certificate, key and password files load now, not at the first connection attempt."""
    security = mqtt.security
    if security.password_file and not security.username:
        raise ConfigError(f"{source} [mqtt] password_file needs username")
    try:
        if security.uses_tls:
            security.context()
        security.read_password()
    except SecurityError as exc:
        raise ConfigError(f"{source} [mqtt] {exc}") from None


def is_loopback(host: str) -> bool:
    """HOST (a name or an address, IPv6 in brackets or not) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a name: it may resolve to anything
        return False


def load_config(path: str | Path) -> AgentConfig:
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; see docs/operations.md for an example") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    # abspath, not resolve(): a symlinked config keeps the folder it is linked from
    return parse_config(data, str(path), base=Path(os.path.abspath(path)).parent)

"""`edgefleet agent check-config`: what would stop the agent, found before a unit is enabled.

`load_config` already refuses unknown keys, wrong types and bad values; this adds what a
parser cannot see: folders that must exist, keys that must load, a broker address in a
form the MQTT client takes, a runtime that is installed. Every problem says what to fix.
Nothing here connects to the network or imports a TFLite runtime (fast, and safe to run
on a board that is serving).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgefleet.accelerators import DELEGATE, library_found
from edgefleet.agent.config import AgentConfig, ConfigError, is_loopback, load_config
from edgefleet.agent.local_api import read_token
from edgefleet.agent.placement import Placement
from edgefleet.agent.power import board_profiles
from edgefleet.devices.detect import detect_board
from edgefleet.devices.profiles import ProfileError
from edgefleet.protocol.signing import SignatureError, TrustStore
from edgefleet.runtime import RuntimeLoadError

# one DNS label: letters, digits and inner hyphens (RFC 1123); underscores are common on LANs
_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_RUNTIME_MODULES = {"ai-edge-litert": "ai_edge_litert", "tflite-runtime": "tflite_runtime",
                    "tensorflow": "tensorflow"}


@dataclass(frozen=True)
class Problem:
    level: str  # "error": the agent cannot do its job; "warning": it can, but likely not as meant
    key: str  # where in the file, e.g. "[mqtt] host"
    message: str  # what is wrong and what to do

    def __str__(self) -> str:
        return f"{self.level}: {self.key}: {self.message}"


@dataclass
class Report:
    path: Path
    config: AgentConfig | None
    problems: list[Problem]

    @property
    def ok(self) -> bool:
        return not any(p.level == "error" for p in self.problems)

    def as_json(self) -> dict[str, Any]:
        return {"config": str(self.path), "ok": self.ok, "problems": [asdict(p) for p in self.problems],
                "resolved": None if self.config is None else {
                    "state_dir": str(self.config.state_dir), "trust_dir": str(self.config.trust_dir),
                    "broker": f"{self.config.mqtt.host}:{self.config.mqtt.broker_port}",
                    "local_api": self.config.serve.http}}


def check_config(path: str | Path) -> Report:
    path = Path(path)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        return Report(path, None, [Problem("error", "file", str(exc))])
    problems = [*_trust(cfg), *_state(cfg), *_broker(cfg), *_local_api(cfg), *_runtime(cfg)]
    return Report(path, cfg, problems)


def _trust(cfg: AgentConfig) -> list[Problem]:
    folder = cfg.trust_dir
    if not folder.exists():
        return [Problem("error", "trust_dir", f"{folder} does not exist: create it and copy the "
                        "publisher's public key into it (edgefleet keys generate writes keys/signing.pub)")]
    if not folder.is_dir():
        return [Problem("error", "trust_dir", f"{folder} is a file; give the folder of the .pub keys")]
    try:
        store = TrustStore.from_folder(folder)
    except SignatureError as exc:
        return [Problem("error", "trust_dir", f"{exc}; remove it or put the publisher's .pub file instead")]
    except OSError as exc:
        return [Problem("error", "trust_dir", f"cannot read {folder}: {exc}")]
    problems = []
    if cfg.trust.allow_unsigned:
        problems.append(Problem("warning", "trust", "allow_unsigned = true takes unsigned bundles: a "
                                "development setting, never for a board in the field"))
    if not set(store.keys) - set(store.revoked):
        problems.append(Problem("warning", "trust_dir", f"{folder} holds no trusted .pub key: every bundle "
                                "will be refused until you add the publisher's key (edgefleet keys trust; "
                                "no restart needed)"))
    return problems


def _state(cfg: AgentConfig) -> list[Problem]:
    folder = cfg.state_dir
    if folder.exists():
        if not folder.is_dir():
            return [Problem("error", "state_dir", f"{folder} is a file; give a folder (it holds bundles)")]
        if not os.access(folder, os.W_OK | os.X_OK):
            return [Problem("error", "state_dir", f"{folder} is not writable by this user; "
                            "the agent stores downloads and installed bundles there")]
        return []
    blocker = next((p for p in folder.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        return [Problem("error", "state_dir", f"{blocker} is a file, so {folder} cannot be created")]
    return []  # created at start (or by systemd's StateDirectory=)


def broker_host_problem(host: str) -> str | None:
    """Why [mqtt] host is not a host name or IP address the MQTT client can connect to."""
    if not host.strip():
        return "is empty; give the broker's host name or IP address"
    if "://" in host:
        return (f"{host!r} is a URL; give the host alone, e.g. host = \"broker.local\", and the "
                "port in [mqtt] port")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return None if host == host.strip("[]") else f"write the IPv6 address {host!r} without brackets"
    except ValueError:
        pass
    name, _, port = host.rpartition(":")
    if name and port.isdigit():
        return f"{host!r} holds a port; write host = {name!r} and port = {port} in [mqtt]"
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return f"{host!r} is not a host name (letters, digits, '-' and '.') nor an IP address"
    return None


def _broker(cfg: AgentConfig) -> list[Problem]:
    mqtt = cfg.mqtt
    why = broker_host_problem(mqtt.host)
    problems = [Problem("error", "[mqtt] host", why)] if why else []
    if mqtt.username and not mqtt.security.uses_tls and not is_loopback(mqtt.host):
        problems.append(Problem("warning", "[mqtt] tls", f"the password goes to {mqtt.host} in clear text: "
                                "set tls = true (and ca_file) on a broker with a TLS listener"))
    for key in ("password_file", "key_file"):
        path = getattr(mqtt, key)
        if path and Path(path).stat().st_mode & 0o077:
            problems.append(Problem("warning", f"[mqtt] {key}", f"{path} is readable by other users of the "
                                    "board: chmod 600 it (and chown it to the agent's user)"))
    return problems


def _local_api(cfg: AgentConfig) -> list[Problem]:
    http = cfg.serve.http
    if not http:
        return []
    if http.startswith("unix:"):
        sock = Path(http[len("unix:"):])
        if not http[len("unix:"):] or sock.is_dir():
            return [Problem("error", "[serve] http", "give the socket's file name, e.g. "
                            "\"unix:/run/edgefleet/agent.sock\"")]
    if not cfg.serve.token_file:
        return []  # beyond loopback without a token the config does not load at all
    try:
        read_token(cfg.serve.token_file)
    except (OSError, ValueError) as exc:
        return [Problem("error", "[serve] token_file", f"{exc}")]
    if Path(cfg.serve.token_file).stat().st_mode & 0o077:
        return [Problem("warning", "[serve] token_file", f"{cfg.serve.token_file} is readable by other "
                        "users of the board: chmod 600 it (and chown it to the agent's user)")]
    return []


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _on(name: str) -> str:
    return "the CPU" if name == "cpu" else name


def _runtime(cfg: AgentConfig) -> list[Problem]:
    rt = cfg.runtime
    wanted = ["ai-edge-litert", "tflite-runtime"] if rt.runtime == "auto" else [rt.runtime]
    problems = []
    if not any(_installed(_RUNTIME_MODULES[name]) for name in wanted):
        problems.append(Problem("error", "[runtime] runtime", f"{' or '.join(wanted)} is not installed "
                                "in this Python; pip install 'edgefleet[device]' (on 32-bit Raspberry Pi OS: "
                                "pip install tflite-runtime==2.14.0 'numpy<2')"))
    try:
        chain = Placement(rt, board_profiles(cfg.board, detect_board(cfg.board.root))).chain
    except (RuntimeLoadError, ProfileError) as exc:
        return [*problems, Problem("error", "[runtime] delegate", str(exc))]
    for i, accelerator in enumerate(chain):
        if accelerator.kind != DELEGATE or library_found(accelerator.library):
            continue
        rest = [a.name for a in chain[i + 1:]]
        last = not rest or (rt.require_accelerator and rest == ["cpu"])
        problems.append(Problem("error" if last else "warning", "[runtime] delegate",
                                f"{accelerator.library} is not installed ({accelerator.name}), so a model "
                                + ("would be refused" if last else f"would run on {_on(rest[0])} instead")
                                + ("; install libedgetpu1-std from Coral's package repository"
                                   if accelerator.name == "edgetpu" else "")))
    return problems

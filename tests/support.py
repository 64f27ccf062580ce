"""Shared test helpers: a private Mosquitto, agent processes, and an MQTT watcher."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edgefleet.fleet.broker import free_port
from edgefleet.fleet.publish import PublishResult
from edgefleet.mqtt_security import MqttSecurity
from edgefleet.protocol.desired import BundleRef, desired_payload
from edgefleet.protocol.signing import SigningKey

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"  # committed; made by tests/fixtures/make_fixtures.py


@dataclass(frozen=True)
class Keys:
    """The `keys` fixture: one signing key, its file and a trust folder that holds its public key."""

    key: SigningKey
    private: Path  # the private key file, for the CLI's --key
    trust_dir: Path  # a folder holding only the matching public key


GHOST = BundleRef("ghost", "1", "0" * 64)  # a bundle no broker holds: ghost-1-000000000000


def desired(key: SigningKey, device: str, bundle: BundleRef | PublishResult | dict[str, Any],
            **options: Any) -> bytes:
    """A device's signed desired state for BUNDLE: a reference, what publish_bundle returned, or
    a transfer manifest's body. OPTIONS go to desired_payload (rollback, set_at)."""
    if isinstance(bundle, PublishResult):
        bundle = BundleRef(bundle.name, bundle.version, bundle.bundle_sha256)
    elif isinstance(bundle, dict):
        bundle = BundleRef(bundle["name"], bundle["version"], bundle["bundle_sha256"])
    return desired_payload(key, "device", device, bundle, **options)


def signed_variant(src: Path, dst: Path, keys: Keys, version: str, signer: Any = None,
                   changes: dict[str, Any] | None = None, **replace: bytes) -> Path:
    """SRC as another version (with CHANGES to its manifest and the files in REPLACE), signed
    again (by SIGNER, else the test key): another valid bundle without running TensorFlow."""
    from edgefleet.protocol.bundle import open_bundle, write_bundle
    from edgefleet.protocol.signing import TrustStore

    bundle = open_bundle(src.read_bytes(), TrustStore.from_folder(keys.trust_dir))
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("format", "files")}
    manifest.update({"version": version, **(changes or {})})
    write_bundle(dst, manifest, {**bundle.files, **replace}, signer or keys.key)
    return dst


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def find_mosquitto() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None)


class Mosquitto:
    """A private Mosquitto on a free loopback port; tests may stop and restart it."""

    def __init__(self, binary: str, folder: Path, persistence: bool = False):
        """PERSISTENCE: retained messages saved to FOLDER every second, so they outlive a SIGKILL."""
        self.binary, self.folder = binary, folder
        folder.mkdir(parents=True, exist_ok=True)
        self.host, self.port = "127.0.0.1", free_port()
        self.conf = folder / "mosquitto.conf"
        self.db = folder / "mosquitto.db"
        saved = (f"persistence true\npersistence_location {folder}/\nautosave_interval 1\n" if persistence
                 else "persistence false\n")
        if persistence and os.geteuid() == 0:  # else it saves as `mosquitto`, which cannot write here
            saved += "user root\n"
        # set_tcp_nodelay: request/response over MQTT otherwise waits on Nagle (~40 ms a hop)
        self.conf.write_text(f"listener {self.port} {self.host}\nallow_anonymous true\n"
                             f"{saved}set_tcp_nodelay true\n"
                             f"log_dest file {folder / 'mosquitto.log'}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.host, self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def kill(self) -> None:
        """SIGKILL: no goodbye to clients, nothing saved since the last autosave."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


class Watcher:
    """Collects messages on some topics; tests wait for a condition on them."""

    def __init__(self, address: str, topics: list[str], security: MqttSecurity | None = None):
        """SECURITY: TLS and a login, for a broker that asks for them."""
        host, port = address.rsplit(":", 1)
        self.messages: list[tuple[str, bytes, bool]] = []
        self.latest: dict[str, bytes] = {}
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        if security is not None:
            security.apply(self.client)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.connect(host, int(port))
        self.client.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload), msg.retain))
            self.latest[msg.topic] = bytes(msg.payload)
            self._cond.notify_all()

    def json(self, topic: str) -> dict[str, Any] | None:
        with self._cond:
            raw = self.latest.get(topic)
        return json.loads(raw) if raw else None

    def wait_for(self, topic: str, predicate: Callable[[dict[str, Any]], bool],
                 timeout: float = 60.0) -> dict[str, Any]:
        """The first (latest) JSON payload on TOPIC that satisfies PREDICATE."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                raw = self.latest.get(topic)
                if raw:
                    body = json.loads(raw)
                    if predicate(body):
                        return body
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{topic}: condition not met in {timeout} s; last: {raw!r:.2000}")
                self._cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class AgentProcess:
    """`edgefleet agent run` in its own process, as on a board."""

    def __init__(self, folder: Path, device_id: str, broker: str, prefix: str, trust_dir: Path,
                 python: str = sys.executable, groups: tuple[str, ...] = (),
                 extra_toml: str = "", http_port: int | None = None, mqtt_toml: str = ""):
        """EXTRA_TOML goes at the end (into [delivery] unless it opens a table), MQTT_TOML into [mqtt]."""
        self.folder, self.device_id = folder, device_id
        folder.mkdir(parents=True, exist_ok=True)
        host, port = broker.rsplit(":", 1)
        self.http_port = http_port or free_port()
        self.state_dir = folder / "state"
        self.config = folder / "edgefleet.agent.toml"
        self.config.write_text(
            f'device_id = "{device_id}"\nstate_dir = "{self.state_dir}"\n'
            f'trust_dir = "{trust_dir}"\ngroups = {json.dumps(list(groups))}\n'
            f'[mqtt]\nhost = "{host}"\nport = {port}\nprefix = "{prefix}"\n{mqtt_toml}'
            f'[serve]\nhttp = "127.0.0.1:{self.http_port}"\n'
            f'[telemetry]\ninterval_s = 1.0\n'
            f'[delivery]\nchunk_timeout_s = 3.0\nmanifest_timeout_s = 5.0\n' + extra_toml)
        self.log = folder / "edgefleet.agent.log"
        self.python = python
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None,
              preexec_fn: Callable[[], None] | None = None) -> AgentProcess:
        """PREEXEC_FN runs in the child before the agent starts (e.g. to set a resource limit)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.python, "-m", "edgefleet", "agent", "run", "--config", str(self.config)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.folder,
                env={**os.environ, **(env or {})}, preexec_fn=preexec_fn)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def run_cli(*args: str, timeout: float = 120.0,
            python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    """Run `edgefleet ARGS` as a user would, in its own process."""
    return subprocess.run([python, "-m", "edgefleet", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def publish_cli(bundle: Path, broker: str, prefix: str, key: Path, *targets: str) -> dict[str, Any]:
    proc = run_cli("publish", str(bundle), "--broker", broker, "--prefix", prefix, "--key", str(key),
                   "--json", *targets)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def http_infer(port: int, body: bytes, content_type: str = "application/x-npy") -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/infer", data=body,
                                 headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def npy_bytes(array: Any) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float32))
    return buf.getvalue()


def is_active(bundle_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda r: r.get("state") == "active" and (r.get("active") or {}).get("bundle_id") == bundle_id


def top1(answer: dict[str, Any]) -> list[int]:
    """The top-1 of an answer from a model with one output of class scores."""
    (scores,) = answer["top1"].values()
    return scores

"""Security on the wire (issue 10, item 9), against Mosquitto set up as docs/operations.md says
(tests/secure_broker.py): TLS with certificates made by docs/mosquitto/make-certs.sh,
passwords, per-device ACLs, and client certificates as the devices' identities. The agent and
every kind of CLI command connect; a plaintext client, a wrong CA, a name the broker's
certificate does not hold and a wrong password are refused with a reason; a device cannot
write another device's topics nor read its requests."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import pytest

from edgefleet.mqtt_security import MqttSecurity
from edgefleet.protocol.topics import Topics
from tests.secure_broker import SecureMosquitto, make_certs
from tests.support import AgentProcess, Watcher, find_mosquitto, is_active, run_cli

pytestmark = pytest.mark.slow  # agents and brokers in their own processes
TOPICS = Topics("edgefleet")  # the prefix the documented ACL names


@pytest.fixture
def mosquitto_binary() -> str:
    binary = find_mosquitto()
    if binary is None or shutil.which("mosquitto_passwd") is None or shutil.which("openssl") is None:
        if os.environ.get("EDGEFLEET_REQUIRE_MOSQUITTO") == "1":
            pytest.fail("mosquitto, mosquitto_passwd and openssl are needed (Debian: mosquitto, openssl)")
        pytest.skip("needs Mosquitto with mosquitto_passwd, and openssl")
    return binary


class Client:
    """A paho client logged in with SECURITY that records what it receives."""

    def __init__(self, broker: SecureMosquitto, security: MqttSecurity, topics: list[str] = ()):
        self.got: list[tuple[str, bytes]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        security.apply(self.client)
        self.client.on_message = self._message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        for topic in topics:  # MQTT 3.1.1: a SUBACK grants even what the ACL will never deliver
            self.client.subscribe(topic, 1)
        time.sleep(0.3)

    def _message(self, client, userdata, msg) -> None:
        with self.cond:
            self.got.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)

    def wait_for(self, topic: str, timeout: float = 10.0) -> bytes:
        with self.cond:
            assert self.cond.wait_for(lambda: any(t == topic for t, _ in self.got), timeout), self.got
            return next(p for t, p in self.got if t == topic)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _wait_log(agent: AgentProcess, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = agent.log_text()
        if text in log:
            return log
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in the agent's log:\n{agent.log_text()}")


def test_agent_and_cli_over_tls_with_passwords_and_per_device_acls(tmp_path, mosquitto_binary, keys, tiny):
    broker = SecureMosquitto(mosquitto_binary, tmp_path / "broker",
                             users=("dev-a", "dev-b", "operator", "app")).start()
    operator, app = broker.security("operator"), broker.security("app")
    watcher = Watcher(broker.address, [TOPICS.all_devices("#")], security=operator)
    agent = AgentProcess(tmp_path / "a", "dev-a", broker.address, "edgefleet", keys.trust_dir,
                         mqtt_toml=broker.mqtt_toml(broker.security("dev-a"))).start()
    dev_b = Client(broker, broker.security("dev-b"), [TOPICS.request("dev-a", "#")])
    try:
        # every kind of CLI command: publish, desired states, inference, the monitor
        proc = run_cli("publish", str(tiny.bundle), "--device", "dev-a", "--key", str(keys.private),
                       "--json", *broker.cli_options(operator))
        assert proc.returncode == 0, proc.stderr
        bundle_id = json.loads(proc.stdout)["bundle_id"]
        watcher.wait_for(TOPICS.reported("dev-a"), is_active(bundle_id), 60)
        np.save(tmp_path / "x.npy", tiny.x[:1])
        proc = run_cli("infer", str(tmp_path / "x.npy"), "--device", "dev-a", "--json",
                       *broker.cli_options(app))
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["bundle_id"] == bundle_id
        proc = run_cli("gc", "--dry-run", "--json", "--wait", "2", *broker.cli_options(operator))
        assert proc.returncode == 0, proc.stderr
        if importlib.util.find_spec("rich"):  # the fleet extra (not in the legacy environment)
            proc = run_cli("monitor", "--once", "--json", "--wait", "3", *broker.cli_options(operator))
            assert proc.returncode == 0 and "dev-a" in proc.stdout, proc.stderr
        assert "over TLS" in agent.log_text()

        # dev-b's credentials: its own topics only (its telemetry arrives: the control)
        fake = b'{"state": "failed", "forged": true}'
        dev_b.publish(TOPICS.reported("dev-a"), fake, retain=True)
        dev_b.publish(TOPICS.status("dev-a"), b'{"status": "offline"}', retain=True)
        dev_b.publish(TOPICS.device_desired("dev-a"), b'{"forged": true}', retain=True)
        dev_b.publish(TOPICS.request("dev-a", "infer"), b'{"transaction": "from-b"}')
        dev_b.publish(TOPICS.telemetry("dev-b"), b'{"control": true}')
        watcher.wait_for(TOPICS.telemetry("dev-b"), lambda m: m.get("control") is True, 10)
        # an operator's request to dev-a reaches dev-a (its answer comes back) but not dev-b
        app_client = Client(broker, app, [TOPICS.response("dev-a", "#")])
        app_client.publish(TOPICS.request("dev-a", "infer"), b'{"transaction": "probe"}')
        app_client.wait_for(TOPICS.response("dev-a", "infer"))
        app_client.close()
        time.sleep(0.5)
        assert all(b"forged" not in p for t, p, _ in watcher.messages if "dev-a" in t)
        assert watcher.json(TOPICS.status("dev-a"))["state"] == "online"
        answers = [json.loads(p) for t, p, _ in watcher.messages if t == TOPICS.response("dev-a", "infer")]
        assert [a.get("transaction") for a in answers] == ["probe"]  # from-b never reached the agent
        assert dev_b.got == []  # dev-a's requests are not for dev-b's eyes
        assert "Denied PUBLISH" in (broker.folder / "mosquitto.log").read_text()

        # refused, each with a reason that says what to do
        plain = run_cli("gc", "--dry-run", "--wait", "1", "--broker", broker.address)
        assert plain.returncode != 0 and "TLS listener" in plain.stderr, plain.stderr
        other_ca = make_certs(tmp_path / "other-ca", "127.0.0.1") / "ca.crt"
        wrong_ca = run_cli("gc", "--dry-run", "--wait", "1",
                           *broker.cli_options(broker.security("operator", ca=other_ca)))
        assert wrong_ca.returncode != 0 and "certificate" in wrong_ca.stderr, wrong_ca.stderr
        assert "CA file" in wrong_ca.stderr
        by_name = run_cli("gc", "--dry-run", "--wait", "1", *broker.cli_options(operator)[2:],
                          "--broker", f"mqtts://localhost:{broker.port}")
        assert by_name.returncode != 0 and "does not name 'localhost'" in by_name.stderr, by_name.stderr
        bad_password = tmp_path / "bad.password"
        bad_password.write_text("not-it\n")
        wrong_pw = run_cli("gc", "--dry-run", "--wait", "1", "--broker", f"mqtts://{broker.address}",
                           "--ca-file", operator.ca_file, "--username", "operator",
                           "--password-file", str(bad_password))
        assert wrong_pw.returncode != 0 and "refused the connection" in wrong_pw.stderr, wrong_pw.stderr
        assert "--password-file" in wrong_pw.stderr
    finally:
        dev_b.close()
        watcher.close()
        code = agent.stop()
        broker.stop()
    assert code == 0, agent.log_text()
    assert "Traceback" not in agent.log_text(), agent.log_text()


def test_agent_says_why_it_cannot_connect(tmp_path, mosquitto_binary, keys):
    broker = SecureMosquitto(mosquitto_binary, tmp_path / "broker", users=("dev-a",)).start()
    other_ca = make_certs(tmp_path / "other-ca", "127.0.0.1") / "ca.crt"
    wrong_ca = broker.security("dev-a", ca=other_ca)
    agents = [
        (AgentProcess(tmp_path / "plain", "dev-a", broker.address, "edgefleet", keys.trust_dir),
         "if it listens with TLS, set [mqtt] tls = true"),
        (AgentProcess(tmp_path / "ca", "dev-a", broker.address, "edgefleet", keys.trust_dir,
                      mqtt_toml=broker.mqtt_toml(wrong_ca)),
         "check the CA file"),
    ]
    try:
        for agent, _ in agents:
            agent.start()
        for agent, text in agents:
            log = _wait_log(agent, text)
            assert "connected to broker" not in log
    finally:
        codes = [agent.stop() for agent, _ in agents]
        broker.stop()
    assert codes == [0, 0], [agent.log_text() for agent, _ in agents]


def test_client_certificates_identify_devices(tmp_path, mosquitto_binary, keys, tiny):
    broker = SecureMosquitto(mosquitto_binary, tmp_path / "broker", users=(),
                             client_certs=("dev-a", "dev-b", "operator"), require_certificates=True).start()
    operator = broker.security(cert="operator")
    watcher = Watcher(broker.address, [TOPICS.all_devices("#")], security=operator)
    agent = AgentProcess(tmp_path / "a", "dev-a", broker.address, "edgefleet", keys.trust_dir,
                         mqtt_toml=broker.mqtt_toml(broker.security(cert="dev-a"))).start()
    dev_b = Client(broker, broker.security(cert="dev-b"))
    try:
        proc = run_cli("publish", str(tiny.bundle), "--device", "dev-a", "--key", str(keys.private),
                       "--json", *broker.cli_options(operator))
        assert proc.returncode == 0, proc.stderr
        watcher.wait_for(TOPICS.reported("dev-a"), is_active(json.loads(proc.stdout)["bundle_id"]), 60)
        dev_b.publish(TOPICS.reported("dev-a"), b'{"forged": true}', retain=True)
        dev_b.publish(TOPICS.telemetry("dev-b"), b'{"control": true}')
        watcher.wait_for(TOPICS.telemetry("dev-b"), lambda m: m.get("control") is True, 10)
        time.sleep(0.5)
        assert all(b"forged" not in p for t, p, _ in watcher.messages if "dev-a" in t)
        no_cert = run_cli("gc", "--dry-run", "--wait", "1", *broker.cli_options(broker.security()))
        assert no_cert.returncode != 0, no_cert.stdout
        assert "client certificate" in no_cert.stderr or "TLS" in no_cert.stderr, no_cert.stderr
    finally:
        dev_b.close()
        watcher.close()
        code = agent.stop()
        broker.stop()
    assert code == 0, agent.log_text()


def test_agent_config_checks_its_tls_and_password_files(tmp_path):
    from edgefleet.agent.config import ConfigError, parse_config

    base = {"device_id": "d", "state_dir": "s", "trust_dir": "t"}
    with pytest.raises(ConfigError, match=r"CA file .*missing\.crt"):
        parse_config({**base, "mqtt": {"tls": True, "ca_file": "missing.crt"}}, base=tmp_path)
    with pytest.raises(ConfigError, match="password_file needs username"):
        parse_config({**base, "mqtt": {"password_file": "pw"}}, base=tmp_path)
    empty = tmp_path / "pw"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        parse_config({**base, "mqtt": {"username": "d", "password_file": "pw"}}, base=tmp_path)
    certs = make_certs(tmp_path / "certs", "127.0.0.1", "d")
    with pytest.raises(ConfigError, match="without its client certificate"):
        parse_config({**base, "mqtt": {"ca_file": str(certs / "ca.crt"), "key_file": str(certs / "d.key")}})
    cfg = parse_config({**base, "mqtt": {"ca_file": "certs/ca.crt", "cert_file": "certs/d.crt",
                                         "key_file": "certs/d.key"}}, base=tmp_path)
    assert cfg.mqtt.security.uses_tls and cfg.mqtt.broker_port == 8883  # a CA alone means TLS
    assert Path(cfg.mqtt.ca_file).is_absolute()
    assert parse_config(base).mqtt.broker_port == 1883


def test_operations_md_shows_the_acl_the_tests_use():
    from tests.secure_broker import DOCS
    from tests.support import ROOT

    rules = [line for line in (DOCS / "edgefleet.acl").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    doc = (ROOT / "docs" / "operations.md").read_text()
    shown = doc.split("The ACL file:\n\n```\n", 1)[1].split("```", 1)[0]
    assert [line for line in shown.splitlines() if line.strip()] == rules


def test_every_command_that_talks_to_the_broker_takes_tls_and_a_login():
    import click

    from edgefleet.cli import main

    ctx = click.Context(main)
    found = []

    def walk(command: click.Command, path: str) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), f"{path} {name}")
            return
        names = {p.name for p in command.params}
        if "broker" in names:
            found.append(path)
            assert {"tls", "ca_file", "client_cert", "client_key", "username", "password_file"} <= names, path

    walk(main, "edgefleet")
    assert {"edgefleet publish", "edgefleet infer", "edgefleet monitor", "edgefleet rollback",
            "edgefleet desired clear", "edgefleet gc"} <= set(found), found

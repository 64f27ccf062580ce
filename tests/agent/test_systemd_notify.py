"""The agent tells systemd how it is (agent/sd_notify.py) on a real AF_UNIX datagram socket:
READY=1 once serving, WATCHDOG=1 at half the interval and only from the main loop,
STATUS= on changes, STOPPING=1 on shutdown; nothing at all without $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from edgefleet.agent import sd_notify
from edgefleet.agent.config import parse_config
from edgefleet.agent.daemon import Agent
from edgefleet.agent.sd_notify import Notifier, socket_address, watchdog_interval_s
from edgefleet.protocol.topics import Topics
from tests.support import AgentProcess, Watcher, is_active, publish_cli


class Listener:
    """systemd's end: a bound datagram socket that keeps every message with its arrival time."""

    def __init__(self, address: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, predicate, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, text in list(self.messages):
                if predicate(text):
                    return text
            time.sleep(0.02)
        raise AssertionError(f"no such notification in {timeout} s; got {self.texts()}")

    def texts(self) -> list[str]:
        return [text for _, text in list(self.messages)]

    def pets(self, since: float = 0.0) -> list[float]:
        return [at for at, text in list(self.messages) if text == "WATCHDOG=1" and at >= since]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener(tmp_path) -> Iterator[Listener]:
    heard = Listener(str(tmp_path / "notify.sock"))
    yield heard
    heard.close()


# --- the protocol ----------------------------------------------------------------------------

def test_abstract_socket_names_start_with_a_nul_byte_and_are_reached():
    name = f"@edgefleet-test-{uuid.uuid4().hex}"
    assert socket_address(name) == "\0" + name[1:]
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    heard = Listener(socket_address(name))
    try:
        notifier = Notifier(name)
        notifier.ready("no model yet, broker connected")
        assert heard.wait_for(lambda t: t.startswith("READY=1")) == \
            "READY=1\nSTATUS=no model yet, broker connected"
    finally:
        heard.close()


def test_nothing_happens_without_notify_socket():
    notifier = Notifier.from_environment({"WATCHDOG_USEC": "1000000"})
    assert not notifier.enabled and notifier.watchdog_s is None
    notifier.tick(0.0, True, "x")
    notifier.pet(100.0)
    notifier.stopping("bye")
    assert not notifier.send("READY=1") and not notifier.ready_sent


def test_watchdog_is_for_this_process_only():
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}, pid=42) == 30.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 30.0
    # a child that inherited the variables must not pet for its parent
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, pid=42) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}, pid=42) is None
    assert watchdog_interval_s({}, pid=42) is None


def test_ready_waits_for_the_broker_only_so_long_then_pets_at_half_the_interval(listener, tmp_path):
    notifier = Notifier(str(tmp_path / "notify.sock"), watchdog_s=10.0)
    notifier.tick(0.0, False, "no model yet, broker localhost:1883 not connected")
    notifier.tick(sd_notify.READY_WAIT_S - 0.1, False, "no model yet, broker localhost:1883 not connected")
    time.sleep(0.2)
    assert listener.texts() == []  # neither READY nor a pet before READY
    notifier.tick(sd_notify.READY_WAIT_S, False, "no model yet, broker localhost:1883 not connected")
    start = sd_notify.READY_WAIT_S
    for step in range(1, 23):  # 11 s of loop turns, 0.5 s apart, one status change
        notifier.tick(start + step / 2, step > 4, "no model yet, broker connected" if step > 4 else
                      "no model yet, broker localhost:1883 not connected")
    listener.wait_for(lambda t: t == "STATUS=no model yet, broker connected")
    time.sleep(0.2)
    # pets at READY, then every 5 s (half of 10); the status only when it changed
    assert listener.texts() == [
        "READY=1\nSTATUS=no model yet, broker localhost:1883 not connected", "WATCHDOG=1",
        "STATUS=no model yet, broker connected", "WATCHDOG=1", "WATCHDOG=1"]


# --- the agent -------------------------------------------------------------------------------

@pytest.mark.slow
def test_agent_process_sends_ready_watchdog_status_and_stopping_in_order(tmp_path, listener, broker,
                                                                         prefix, keys, tiny):
    device = "pi-notify"
    agent = AgentProcess(tmp_path, device, broker.address, prefix, keys.trust_dir)
    topics = Topics(prefix)
    watcher = Watcher(broker.address, [topics.reported(device)])
    try:
        # as systemd starts it: WatchdogSec=1s, so a pet every 0.5 s
        agent.start(env={"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "1000000"})
        ready = listener.wait_for(lambda t: "READY=1" in t)
        assert ready == "READY=1\nSTATUS=no model yet, broker connected"
        sent = publish_cli(tiny.bundle, broker.address, prefix, keys.private, "--device", device)
        watcher.wait_for(topics.reported(device), is_active(sent["bundle_id"]), 60)
        listener.wait_for(lambda t: t == "STATUS=active model tiny-digits v1, broker connected")
        since = time.monotonic()
        time.sleep(2.5)
        pets = listener.pets(since)
        assert 3 <= len(pets) <= 6, pets  # every 0.5 s or a loop turn later: none missing, no flood
        assert agent.stop(signal.SIGTERM) == 0, agent.log_text()
    finally:
        agent.stop()
        watcher.close()
    texts = [t for t in listener.texts() if t != "WATCHDOG=1"]
    assert texts[0] == ready and texts[-1].startswith("STOPPING=1\nSTATUS=stopping")
    assert any(t.startswith("STATUS=no model yet, broker connected, fetching ") for t in texts), texts
    assert texts.index("STATUS=active model tiny-digits v1, broker connected") < len(texts) - 1
    first_pet = listener.messages.index((listener.pets()[0], "WATCHDOG=1"))
    ready_at = next(i for i, (_, t) in enumerate(listener.messages) if "READY=1" in t)
    assert ready_at < first_pet  # no pet before READY
    assert "Traceback" not in agent.log_text(), agent.log_text()


@pytest.mark.slow
def test_a_hung_main_loop_stops_the_watchdog_pets(tmp_path, listener, broker, prefix, keys):
    host, port = broker.address.rsplit(":", 1)
    cfg = parse_config({"device_id": "pi-hang", "state_dir": str(tmp_path / "state"),
                        "trust_dir": str(keys.trust_dir), "serve": {"http": ""},
                        "mqtt": {"host": host, "port": int(port), "prefix": prefix}})
    agent = Agent(cfg)
    agent.systemd = Notifier(str(tmp_path / "notify.sock"), watchdog_s=0.4)
    hang, handle = threading.Event(), agent._handle
    agent._handle = lambda event: hang.wait(30) if event[0] == "hang" else handle(event)
    thread = threading.Thread(target=agent.run, daemon=True)
    thread.start()
    try:
        listener.wait_for(lambda t: "READY=1" in t)
        time.sleep(0.6)
        assert listener.pets(), "no pets from a healthy loop"
        agent._events_put(("hang",))  # the worker blocks; paho's and the API's threads go on
        time.sleep(0.3)
        hung_at = time.monotonic()
        time.sleep(1.5)
        assert listener.pets(hung_at) == [], "a hung agent was kept alive"
        hang.set()
        resumed = time.monotonic()
        listener.wait_for(lambda t: t == "WATCHDOG=1" and bool(listener.pets(resumed)), 5)
    finally:
        hang.set()
        agent.stop()
        thread.join(20)
    assert not thread.is_alive()
    assert listener.texts()[-1].startswith("STOPPING=1")


def test_notify_socket_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", "@x")
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier.from_environment()
    assert notifier.enabled and notifier.address == "\0x" and notifier.watchdog_s == 2.0
    notifier.close()

"""The agent's memory under a burst of large inference requests, with and without the byte
budget of `[serve] max_inflight_mib`, measured side by side in one run (issue 10: twelve
concurrent 8 MB HTTP requests took the agent to 457 MiB, thirty 7.9 MB MQTT ones to 529).

    .venv/bin/python benchmarks/agent_request_memory_bench.py [--write-docs docs/benchmarks.md]

Two `edgefleet agent run` processes serve the committed tiny digits bundle from one private
Mosquitto: one with the default budget (16 MiB), one with a budget too large to matter.
Each gets 12 HTTP requests of 8 MB at once (JSON bodies, one connection each), then 30 MQTT
requests of 7.9 MB published at once; the agent's RSS is sampled every 10 ms and the
answers are counted (the bodies are one long row of numbers, which the model refuses
after parsing them: the parsing is what costs the memory). Needs only the device extras
and a `mosquitto` binary.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from docs_sections import command_line, write_section  # noqa: E402

from tests.support import FIXTURES, AgentProcess, Mosquitto, Watcher, find_mosquitto, is_active  # noqa: E402

HTTP_REQUESTS, MQTT_REQUESTS = 12, 30


def body(size: int) -> bytes:
    numbers = (size - 20) // 4
    return b'{"inputs": [[' + b"0.5," * (numbers - 1) + b"0.5]]}"


class PeakRss:
    """The highest RSS of a process, sampled every 10 ms while the `with` block runs."""

    def __init__(self, pid: int):
        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()

    def __enter__(self) -> PeakRss:
        self.peak = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def http_burst(port: int, payload: bytes) -> list[int]:
    def post(statuses: list[int]) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
            s.sendall(b"POST /v1/infer HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n" % len(payload))
            with contextlib.suppress(OSError):  # answered (busy) and closed before it was all sent
                s.sendall(payload)
            statuses.append(int(s.recv(64).split()[1]))

    statuses: list[int] = []
    threads = [threading.Thread(target=post, args=(statuses,)) for _ in range(HTTP_REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def mqtt_burst(broker: str, prefix: str, device: str, payload: bytes) -> list[dict[str, Any]]:
    from edgefleet.fleet.connection import close, connect
    from edgefleet.protocol.topics import Topics

    topics, answers, done = Topics(prefix), [], threading.Event()
    client = connect(broker, f"burst-{uuid.uuid4().hex[:6]}")

    def on_message(c: Any, userdata: Any, msg: Any) -> None:
        answers.append(json.loads(msg.payload))
        if len(answers) == MQTT_REQUESTS:
            done.set()

    client.on_message = on_message
    client.subscribe(topics.response(device, "infer"), qos=1)
    time.sleep(0.3)
    for i in range(MQTT_REQUESTS):
        request = payload.replace(b'{"inputs"', b'{"transaction": %d, "inputs"' % i, 1)
        client.publish(topics.request(device, "infer"), request, qos=1)
    done.wait(180)
    close(client)
    return answers


def measure(label: str, budget_mib: float, broker: Mosquitto, work: Path, trust: Path) -> dict[str, Any]:
    from tests.support import publish_cli

    device, prefix = f"mem-{uuid.uuid4().hex[:6]}", f"mem{uuid.uuid4().hex[:6]}"
    folder = work / device
    folder.mkdir()
    agent = AgentProcess(folder, device, broker.address, prefix, trust)
    agent.config.write_text(agent.config.read_text().replace(
        "[serve]\n", f"[serve]\nmax_inflight_mib = {budget_mib}\n"))
    agent.start()
    watcher = Watcher(broker.address, [f"{prefix}/devices/{device}/reported"])
    try:
        published = publish_cli(FIXTURES / "tiny-digits.efb", broker.address, prefix,
                                FIXTURES / "test-only-never-trust.key", "--device", device)
        watcher.wait_for(f"{prefix}/devices/{device}/reported", is_active(published["bundle_id"]), 60)
        assert agent.proc is not None
        idle = psutil.Process(agent.proc.pid).memory_info().rss
        with PeakRss(agent.proc.pid) as http_peak:
            statuses = http_burst(agent.http_port, body(8_000_000))
        time.sleep(1)
        with PeakRss(agent.proc.pid) as mqtt_peak:
            answers = mqtt_burst(broker.address, prefix, device, body(7_900_000))
        return {"label": label, "idle": idle / 2**20, "http_peak": http_peak.peak / 2**20,
                "http_busy": statuses.count(503), "http_answered": len(statuses),
                "mqtt_peak": mqtt_peak.peak / 2**20,
                "mqtt_busy": sum(1 for a in answers if a.get("code") == "busy"),
                "mqtt_answered": len(answers)}
    finally:
        watcher.close()
        agent.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-docs", type=Path, help="Write the results as a section of this Markdown.")
    args = parser.parse_args()
    binary = find_mosquitto()
    if binary is None:
        print("needs the mosquitto binary (apt-get install mosquitto)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="edgefleet-request-memory-") as tmp:
        work = Path(tmp)
        trust = work / "trust"
        trust.mkdir()
        (trust / "test.pub").write_bytes((FIXTURES / "test-only-never-trust.pub").read_bytes())
        broker = Mosquitto(binary, work).start()
        try:
            rows = [measure(label, mib, broker, work, trust)
                    for label, mib in (("default budget (16 MiB)", 16.0), ("no budget", 100_000.0))]
        finally:
            broker.stop()
    lines = ["## The agent's memory under large requests (issue 10)", "",
             f"Produced by `{command_line(__file__, args.write_docs)}`: {HTTP_REQUESTS} HTTP requests of "
             f"8 MB at once, then {MQTT_REQUESTS} MQTT requests of 7.9 MB, against the same agent; peak "
             "RSS sampled every 10 ms; both agents in one run.", "",
             "| agent | idle MiB | HTTP burst peak MiB | HTTP busy (503) | MQTT burst peak MiB | "
             "MQTT busy | answered |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        answered = r["http_answered"] + r["mqtt_answered"]
        lines.append(f"| {r['label']} | {r['idle']:.1f} | {r['http_peak']:.1f} | {r['http_busy']} of "
                     f"{r['http_answered']} | {r['mqtt_peak']:.1f} | {r['mqtt_busy']} of "
                     f"{r['mqtt_answered']} | {answered} of {HTTP_REQUESTS + MQTT_REQUESTS} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write_docs:
        write_section(args.write_docs, "agent_request_memory_bench", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Many MQTT clients calling one device: the inference requests per second they get in
total, against one client with the same number of requests in flight on one connection
(issue 10, item 8, the benchmark).

    python benchmarks/mqtt_clients_bench.py [--clients 8] [--requests 400] [--rounds 3]
                                            [--write-docs docs/benchmarks.md]

An `edgefleet agent run` serves the committed tiny digits model (tests/fixtures) through a
private Mosquitto on loopback. Each client is a process of its own (paho-mqtt, QoS 1, Nagle
off as in edgefleet's own clients) that keeps one request in flight per slot and counts the
answers that are its own:

- one connection: one client with --clients requests in flight, answered on the device's
  response topic;
- own reply topics: --clients clients, one request in flight each, each naming its own
  `reply_to`, so each receives only its own answers;
- shared response topic: the same clients without `reply_to` (what every client had to do
  before): every answer reaches every client.

Modes take turns within each round, so the machine's changing speed hits all alike; the
figures are medians over rounds. Needs a `mosquitto` binary and the device extra, not
TensorFlow. Exits 1 when own reply topics get less than 0.8x the one connection's rate.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/support.py: the private broker and the agent process

from docs_sections import command_line, write_section  # noqa: E402  (benchmarks/, the script's own folder)

from tests.support import AgentProcess, Mosquitto, find_mosquitto  # noqa: E402

BAR = 0.8  # own reply topics / one connection, at least
DEVICE = "bench-clients"
FIXTURES = ROOT / "tests" / "fixtures"

# One asker: subscribes, says ready, waits for "go" on stdin, keeps WINDOW requests in flight
# until N of its own answers are in, prints the wall-clock start and end.
CLIENT = textwrap.dedent("""
    import json, sys, threading, time, uuid
    import paho.mqtt.client as mqtt
    from edgefleet.mqtt_options import disable_nagle
    host, port, request, response, reply_to, n, window, body = sys.argv[1:9]
    n, window = int(n), int(window)
    reply_to = None if reply_to == "-" else reply_to
    me = uuid.uuid4().hex[:8]
    slots, done, got = threading.Semaphore(window), threading.Event(), [0]
    def on_message(client, userdata, msg):
        tx = json.loads(msg.payload).get("transaction", "")
        if isinstance(tx, str) and tx.startswith(me):  # on a shared topic, others' answers too
            got[0] += 1
            slots.release()
            if got[0] == n:
                done.set()
    subscribed = threading.Event()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_connect = lambda client, *a: disable_nagle(client)  # as edgefleet's own clients do
    c.connect(host, int(port))
    c.loop_start()
    c.subscribe(response + (f"/{reply_to}" if reply_to else ""), qos=1)
    subscribed.wait(10)
    print("ready", flush=True)
    sys.stdin.readline()
    start, cpu = time.time(), time.process_time()
    for i in range(n):
        slots.acquire()
        fields = {"transaction": f"{me}-{i}", **({"reply_to": reply_to} if reply_to else {})}
        c.publish(request, json.dumps(fields)[:-1] + ", " + body + "}", qos=1)
    ok = done.wait(120)
    print(f"{start} {time.time()} {got[0] if ok else -1} {time.process_time() - cpu}", flush=True)
""")


def _cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run_mode(broker: Mosquitto, agent_pid: int, prefix: str, body: str, clients: int, window: int,
             total: int, own_topic: bool) -> tuple[float, dict[str, float]]:
    """Requests per second over all clients (their answers over the span from the first
    start to the last end), and CPU seconds per 1,000 answers of the clients, the agent and
    the broker."""
    request = f"{prefix}/devices/{DEVICE}/request/infer"
    response = f"{prefix}/devices/{DEVICE}/response/infer"
    procs = []
    for _ in range(clients):
        reply_to = f"c{uuid.uuid4().hex[:8]}" if own_topic else "-"
        procs.append(subprocess.Popen(
            [sys.executable, "-c", CLIENT, broker.host, str(broker.port), request, response, reply_to,
             str(total // clients), str(window), body], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True))
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    assert broker.proc is not None
    before = {"agent": _cpu(agent_pid), "broker": _cpu(broker.proc.pid)}
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    spans, cpu = [], 0.0
    for p in procs:
        out, _ = p.communicate(timeout=180)
        start, end, got, used = out.split()
        if int(got) < 0:
            raise RuntimeError("a client did not get all its answers within 120 s")
        spans.append((float(start), float(end), int(got)))
        cpu += float(used)
    answered = sum(g for _, _, g in spans)
    used = {"clients": cpu, "agent": _cpu(agent_pid) - before["agent"],
            "broker": _cpu(broker.proc.pid) - before["broker"]}
    rate = answered / (max(e for _, e, _ in spans) - min(s for s, _, _ in spans))
    return rate, {k: v / answered * 1000 for k, v in used.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=800, help="per mode and round, over all clients")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-docs", type=Path, help="put the results in this Markdown file")
    args = parser.parse_args()
    binary = find_mosquitto()
    if not binary:
        print("needs a mosquitto binary (apt-get install mosquitto)", file=sys.stderr)
        return 2
    import numpy as np
    import paho.mqtt.client as mqtt

    from edgefleet.fleet.publish import publish_bundle
    from edgefleet.protocol import messages
    from edgefleet.protocol.signing import SigningKey
    from edgefleet.protocol.topics import Topics

    x = np.load(FIXTURES / "tiny-digits-eval.npz")["x"][:1]
    body = f'"inputs_npy": "{messages.encode_array(x)}"'
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        broker = Mosquitto(binary, folder).start()
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        (folder / "agent").mkdir()
        agent = AgentProcess(folder / "agent", DEVICE, broker.address, prefix, FIXTURES).start()
        try:
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
            client.connect(broker.host, broker.port)
            client.loop_start()
            time.sleep(2.0)  # the agent connected and subscribed
            publish_bundle(client, Topics(prefix), FIXTURES / "tiny-digits.efb",
                           SigningKey.load(FIXTURES / "test-only-never-trust.key"), devices=[DEVICE])
            client.loop_stop()
            time.sleep(3.0)  # installed and self-tested (the first round warms up regardless)
            modes = {"one connection": (1, args.clients, False), "own reply topics": (args.clients, 1, True),
                     "shared response topic": (args.clients, 1, False)}
            rates: dict[str, list[float]] = {m: [] for m in modes}
            cpus: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
            assert agent.proc is not None
            for r in range(args.rounds + 1):  # round 0 warms up and is not counted
                for mode, (clients, window, own) in modes.items():
                    rate, cpu = run_mode(broker, agent.proc.pid, prefix, body, clients, window,
                                         args.requests, own)
                    if r:
                        rates[mode].append(rate)
                        cpus[mode].append(cpu)
                    said = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
                    print(f"  round {r}: {mode:22s} {rate:8.0f} requests/s; CPU s per 1,000 answers: {said}",
                          file=sys.stderr)
        finally:
            agent.stop()
            broker.stop()
    median = {m: statistics.median(v) for m, v in rates.items()}
    base = median["one connection"]
    ratio = median["own reply topics"] / base
    verdict = "pass" if ratio >= BAR else "MISSED"
    rows = [f"| {args.clients} requests in flight | requests/s, median of {args.rounds} rounds "
            "| vs one connection | CPU s per 1,000 answers: clients / agent / broker |", "|---|---|---|---|"]
    for mode, (clients, _, _) in modes.items():
        who = "1 client" if clients == 1 else f"{clients} clients"
        cpu = " / ".join(f"{statistics.median(c[k] for c in cpus[mode]):.2f}"
                         for k in ("clients", "agent", "broker"))
        rows.append(f"| {mode} ({who}) | {median[mode]:.0f} | {median[mode] / base:.2f} | {cpu} |")
    def cost(mode: str, *parts: str) -> float:
        return sum(statistics.median(c[k] for c in cpus[mode]) for k in parts)

    one, own = "one connection", "own reply topics"
    device_one, device_own = cost(one, "agent", "broker"), cost(own, "agent", "broker")
    rows += ["", f"Own reply topics / one connection {ratio:.2f} (bar at least {BAR}): {verdict}.",
             "", f"Every process here shares {os.cpu_count()} cores. The device's side, agent and broker, "
             f"spends {device_own:.2f} s per 1,000 answers with own reply topics against {device_one:.2f} "
             f"with one connection (the capacity it leaves: {device_one / device_own:.2f}x); the "
             f"{args.clients} client processes spend {cost(own, 'clients'):.2f} against the one client's "
             f"{cost(one, 'clients'):.2f}."]
    text = "\n".join(rows)
    print(text)
    if args.write_docs:
        quoted = f"`{command_line(__file__, args.write_docs)}`"
        write_section(args.write_docs, "mqtt-clients", f"{quoted}\n\n{text}\n")
    return 0 if ratio >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())

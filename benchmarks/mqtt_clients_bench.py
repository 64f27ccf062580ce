"""Many MQTT clients calling one device: the inference requests per second they get in
total, against one client with the same number of requests in flight on one connection
(issue 10, item 8, the benchmark).

    python benchmarks/mqtt_clients_bench.py [--clients 8] [--requests 800] [--rounds 3]
                                            [--processes 8] [--write-docs docs/benchmarks.md]

An `edgefleet agent run` serves the committed tiny digits model (tests/fixtures) through a
private Mosquitto on loopback. Each client is an MQTT connection of its own (paho-mqtt, QoS 1,
Nagle off as in edgefleet's own clients), in a process of its own unless --processes says
fewer, that keeps one request in flight per slot and counts the answers that are its own:

- one connection: one client with --clients requests in flight, answered on the device's
  response topic;
- own reply topics: --clients clients, one request in flight each, each naming its own
  `reply_to`, so each receives only its own answers;
- shared response topic: the same clients without `reply_to` (what every client had to do
  before): every answer reaches every client.

Each mode runs in two layouts: "shared", everything wherever the kernel puts it, and
"split", the agent and the broker pinned to core 0 and the clients to core 1. On a board the
callers are other machines; here eight Python clients, each woken once per answer, take CPU
from the device that one client does not, so only the split layout has every mode meet the
same device, and the bar is judged on it (on the shared one where there is one core).
Modes and layouts take turns within each round, so the machine's changing speed hits all
alike; the figures are medians over rounds. Needs a `mosquitto` binary and the device
extra, not TensorFlow. Exits 1 when own reply topics get less than 0.8x the one
connection's rate.
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

# One client process: opens a connection per REPLY_TO ("-": none, answers on the shared
# topic), says ready, waits for "go" on stdin, keeps WINDOW requests in flight on each until N
# of its own answers are in, prints the wall-clock start and end and its CPU time. It runs on
# one thread, with paho's external-loop calls and one select over all its connections, sending
# the next request from the callback that took an answer, as an asynchronous client would: a
# thread of ours handing requests to paho's thread costs two thread wake-ups per request.
CLIENT = textwrap.dedent("""
    import json, select, sys, time, uuid
    import paho.mqtt.client as mqtt
    from edgefleet.mqtt_options import disable_nagle
    host, port, request, response, reply_tos, n, window, body = sys.argv[1:9]
    n, window = int(n), int(window)
    class Asker:
        def __init__(self, reply_to):
            self.reply_to = None if reply_to == "-" else reply_to
            self.me, self.sent, self.got, self.subscribed = uuid.uuid4().hex[:8], 0, 0, False
            self.c = c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
            c.on_message = self.on_message
            c.on_subscribe = lambda *a: setattr(self, "subscribed", True)
            c.on_connect = lambda client, *a: disable_nagle(client)  # as edgefleet's own clients do
            c.connect(host, int(port))
            c.subscribe(response + (f"/{self.reply_to}" if self.reply_to else ""), qos=1)
        def ask(self):
            fields = {"transaction": f"{self.me}-{self.sent}",
                      **({"reply_to": self.reply_to} if self.reply_to else {})}
            self.c.publish(request, json.dumps(fields)[:-1] + ", " + body + "}", qos=1)
            self.sent += 1
        def on_message(self, client, userdata, msg):
            tx = json.loads(msg.payload).get("transaction", "")
            if isinstance(tx, str) and tx.startswith(self.me):  # on a shared topic, others' too
                self.got += 1
                if self.sent < n:
                    self.ask()
    askers = [Asker(r) for r in reply_tos.split(",")]
    by_socket = {a.c.socket(): a.c for a in askers}
    def turn(timeout):
        writing = [s for s, c in by_socket.items() if c.want_write()]
        readable, writable, _ = select.select(list(by_socket), writing, [], timeout)
        for s in readable:
            by_socket[s].loop_read()
        for s in writable:
            by_socket[s].loop_write()
    deadline = time.time() + 10
    while not all(a.subscribed for a in askers) and time.time() < deadline:
        turn(0.1)
    print("ready", flush=True)
    sys.stdin.readline()
    start, cpu = time.time(), time.process_time()
    for a in askers:
        for _ in range(min(window, n)):
            a.ask()
    deadline, misc = time.time() + 120, time.time()
    while any(a.got < n for a in askers) and time.time() < deadline:  # else counted as -1
        turn(1.0)
        if time.time() - misc > 1.0:  # keep-alive
            misc = time.time()
            for c in by_socket.values():
                c.loop_misc()
    got = sum(a.got for a in askers)
    end, used = time.time(), time.process_time() - cpu
    print(f"{start} {end} {got if got == n * len(askers) else -1} {used}", flush=True)
""")




def _cpu(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of PID onto CPUS (threads it starts later inherit it)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        os.sched_setaffinity(int(task.name), cpus)


# Where the device (agent and broker) and the clients run. On a board the callers are other
# machines; here they are Python processes on the same two cores, and eight of them, each
# woken once per answer, take CPU from the device that one client with eight in flight does
# not. "Split" gives the device one core and the clients the other in every mode, so each mode
# meets the same device; "shared" lets the kernel place everything.
LAYOUTS = {"shared": (None, None), "split": ({0}, {1})}


def run_mode(broker: Mosquitto, agent_pid: int, prefix: str, body: str, clients: int, window: int,
             total: int, own_topic: bool, layout: str,
             processes: int) -> tuple[float, dict[str, float]]:
    """Requests per second over all clients (their answers over the span from the first
    start to the last end), and CPU seconds per 1,000 answers of the clients, the agent and
    the broker."""
    request = f"{prefix}/devices/{DEVICE}/request/infer"
    response = f"{prefix}/devices/{DEVICE}/response/infer"
    assert broker.proc is not None
    device_cpus, client_cpus = LAYOUTS[layout]
    everywhere = os.sched_getaffinity(0)
    for pid in (agent_pid, broker.proc.pid):
        pin(pid, device_cpus or everywhere)
    reply_tos = [f"c{uuid.uuid4().hex[:8]}" if own_topic else "-" for _ in range(clients)]
    procs = []
    for k in range(processes):
        mine = ",".join(reply_tos[k::processes])
        procs.append(subprocess.Popen(
            [sys.executable, "-c", CLIENT, broker.host, str(broker.port), request, response, mine,
             str(total // clients), str(window), body], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, preexec_fn=lambda: os.sched_setaffinity(0, client_cpus or everywhere)))
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
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
    parser.add_argument("--processes", type=int, default=8, help="client processes the clients share")
    parser.add_argument("--write-docs", type=Path, help="put the results in this Markdown file")
    args = parser.parse_args()
    # the split layout needs two cores of its own
    layouts = ["shared", "split"] if {0, 1} <= os.sched_getaffinity(0) else ["shared"]
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
            runs = [(layout, mode) for layout in layouts for mode in modes]
            rates: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
            cpus: dict[tuple[str, str], list[dict[str, float]]] = {run: [] for run in runs}
            assert agent.proc is not None
            for r in range(args.rounds + 1):  # round 0 warms up and is not counted
                for layout, mode in runs:
                    clients, window, own = modes[mode]
                    rate, cpu = run_mode(broker, agent.proc.pid, prefix, body, clients, window,
                                         args.requests, own, layout, min(clients, args.processes))
                    if r:
                        rates[layout, mode].append(rate)
                        cpus[layout, mode].append(cpu)
                    said = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
                    print(f"  round {r}: {layout:6s} {mode:22s} {rate:8.0f} requests/s; "
                          f"CPU s per 1,000 answers: {said}", file=sys.stderr)
        finally:
            agent.stop()
            broker.stop()
    median = {run: statistics.median(v) for run, v in rates.items()}

    def vs_one(layout: str, mode: str) -> float:
        return median[layout, mode] / median[layout, "one connection"]

    def cost(layout: str, mode: str, *parts: str) -> float:
        return sum(statistics.median(c[k] for c in cpus[layout, mode]) for k in parts)

    judged = "split" if "split" in layouts else "shared"
    ratio = vs_one(judged, "own reply topics")
    verdict = "pass" if ratio >= BAR else "MISSED"
    head = " | ".join(f"{layout}: requests/s | vs one" for layout in layouts)
    rows = [f"| {args.clients} requests in flight | {head} | CPU s per 1,000 answers ({judged}): "
            "clients / agent / broker |", "|---|" + "---|---|" * len(layouts) + "---|"]
    for mode, (clients, _, _) in modes.items():
        who = "1 client" if clients == 1 else f"{clients} clients"
        cells = " | ".join(f"{median[layout, mode]:.0f} | {vs_one(layout, mode):.2f}" for layout in layouts)
        used = " / ".join(f"{cost(judged, mode, k):.2f}" for k in ("clients", "agent", "broker"))
        rows.append(f"| {mode} ({who}) | {cells} | {used} |")
    one, own = "one connection", "own reply topics"
    device_one, device_own = cost(judged, one, "agent", "broker"), cost(judged, own, "agent", "broker")
    rows += ["", f"Medians of {args.rounds} rounds. Shared: agent, broker and clients wherever the kernel "
             f"puts them on this machine's {os.cpu_count()} cores. Split: agent and broker on core 0, "
             "the clients on core 1, so that every mode meets the same device (on a board the callers are "
             "other machines).", "",
             f"Own reply topics / one connection ({judged}) {ratio:.2f} (bar at least {BAR}): {verdict}.", "",
             f"The device's side, agent and broker, spends {device_own:.2f} s per 1,000 answers with own "
             f"reply topics against {device_one:.2f} with one connection (the capacity it leaves: "
             f"{device_one / device_own:.2f}x); the {args.clients} client processes spend "
             f"{cost(judged, own, 'clients'):.2f} against the one client's "
             f"{cost(judged, one, 'clients'):.2f}."]
    text = "\n".join(rows)
    print(text)
    if args.write_docs:
        quoted = f"`{command_line(__file__, args.write_docs)}`"
        write_section(args.write_docs, "mqtt-clients", f"{quoted}\n\n{text}\n")
    return 0 if ratio >= BAR else 1


if __name__ == "__main__":
    sys.exit(main())

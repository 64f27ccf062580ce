"""How long a bundle takes from `edgefleet publish` to the agent's `active`, against the same
bytes sent as one MQTT message through the same broker (issue 10, acceptance, the benchmark).

    .venv/bin/python benchmarks/delivery_bench.py [--mib 10] [--runs 5] [--write-docs docs/benchmarks.md]

Both paths cross the same private Mosquitto (persistence off) on loopback, and each run of one
is followed by a run of the other, so that the machine's changing speed hits both alike:

- one message: the bench publishes the bundle's bytes as one QoS 1 message; a receiver in its
  own process writes them to a file, fsyncs it, hashes it (SHA-256) and answers on a topic of
  its own; the time is from the publish call to that answer;
- delivery: `publish_bundle` (what `edgefleet publish` runs, without the interpreter's start)
  puts the bundle on the broker and sets the device's desired state; an `edgefleet agent run`
  in its own process fetches, checks, stores, self-tests and activates it; the time is from
  the call to the agent's `active` report, minus the self-test stage (loading the model and
  running its golden set, which the one message does not do), by the agent's own stamps.

The bundle: a float32 multilayer perceptron of about --mib MiB of weights, built with Keras
(weights=None, random) and packed by `edgefleet pack`, so its weights are as incompressible
as trained ones. Each run delivers another version of it (the agent skips a bundle it runs).
Needs TensorFlow (the dev environment) and a `mosquitto` binary. Exits 1 when the bar is missed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import edgefleet.converter.tfenv  # noqa: F401  (TensorFlow's environment, before it loads)

# isort: split
import orjson
import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/support.py: the private broker and the agent process

from docs_sections import command_line, write_section  # noqa: E402  (benchmarks/, the script's own folder)

from tests.support import AgentProcess, Mosquitto, find_mosquitto  # noqa: E402

BAR = 1.5  # delivery / one message, at most
DEVICE = "bench-delivery"

# The receiver of the one-message baseline, in its own process as the agent is.
RECEIVER = textwrap.dedent("""
    import hashlib, os, sys
    import paho.mqtt.client as mqtt
    host, port, topic, done, out = sys.argv[1:6]
    def on_message(client, userdata, msg):
        with open(out, "wb") as f:
            f.write(msg.payload)
            f.flush()
            os.fsync(f.fileno())
        client.publish(done, hashlib.sha256(msg.payload).hexdigest(), qos=1)
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    c.on_message = on_message
    c.on_connect = lambda c, *a: (c.subscribe(topic, qos=1), print("ready", flush=True))
    c.connect(host, int(port))
    c.loop_forever()
""")


def build_bundles(folder: Path, mib: float, runs: int, key: Path) -> list[Path]:
    import numpy as np
    import tensorflow as tf

    from edgefleet.converter.pack import pack
    from edgefleet.protocol.bundle import open_bundle, write_bundle
    from edgefleet.protocol.signing import SigningKey, TrustStore

    width = int((mib * 2**20 / 4 / 2) ** 0.5)  # two square-ish layers of float32 weights
    keras = tf.keras
    model = keras.Sequential([keras.Input((width,)), keras.layers.Dense(width, activation="relu"),
                              keras.layers.Dense(width, activation="relu"), keras.layers.Dense(10)])
    tflite = folder / "mlp.tflite"
    tflite.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    data = folder / "inputs.npz"
    np.savez(data, x=np.random.default_rng(0).random((4, width), dtype=np.float32))
    first = folder / "mlp-0.efb"
    pack(tflite, first, key, data_path=data, name="mlp", version="0", force=True)
    signing = SigningKey.load(key)
    bundle = open_bundle(first.read_bytes(), TrustStore.from_folder(key.parent / "trusted"))
    manifest = {k: v for k, v in bundle.manifest.items() if k not in ("format", "files")}
    paths = []
    for i in range(1, runs + 1):  # the same model under another version: another bundle id
        path = folder / f"mlp-{i}.efb"
        write_bundle(path, {**manifest, "version": str(i)}, bundle.files, signing)
        paths.append(path)
    return paths


class Listener:
    """The device's reported state and the receiver's answers, as they arrive, stamped."""

    def __init__(self, address: str, topics: list[str]):
        host, port = address.rsplit(":", 1)
        self.messages: list[tuple[float, str, bytes]] = []
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        self.client.on_message = self._on_message
        subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(t, 1) for t in topics])
        self.client.connect(host, int(port))
        self.client.loop_start()
        subscribed.wait(10)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((time.monotonic(), msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def wait(self, predicate: Any, since: int, timeout: float = 120.0) -> tuple[float, bytes]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for stamp, topic, payload in self.messages[since:]:
                    if predicate(topic, payload):
                        return stamp, payload
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError("no answer within the timeout")


def one_message(client: mqtt.Client, listener: Listener, topic: str, done: str, data: bytes) -> float:
    since = len(listener.messages)
    start = time.monotonic()
    client.publish(topic, data, qos=1)
    stamp, _ = listener.wait(lambda t, _p: t == done, since)
    return stamp - start


def delivery(client: mqtt.Client, listener: Listener, prefix: str, bundle: Path,
             key: Any) -> dict[str, float]:
    from edgefleet.fleet.publish import publish_bundle
    from edgefleet.protocol.topics import Topics

    topics = Topics(prefix)
    since = len(listener.messages)
    start, wall = time.monotonic(), time.time()
    result = publish_bundle(client, topics, bundle, key, devices=[DEVICE])
    published = time.monotonic()

    def active(topic: str, payload: bytes) -> bool:
        body = orjson.loads(payload)
        install = body.get("install") or {}
        if install.get("bundle_id") == result.bundle_id and install.get("state") == "failed":
            raise RuntimeError(f"the agent refused the bundle: {install}")
        serving = (body.get("active") or {}).get("bundle_id")
        return body.get("state") == "active" and serving == result.bundle_id

    stamp, _ = listener.wait(active, since)
    stages: dict[str, float] = {}
    for _stamp, _topic, raw in listener.messages[since:]:  # the agent's own stamps of each stage
        install = orjson.loads(raw).get("install") or {}
        if install.get("bundle_id") == result.bundle_id:
            stages.setdefault(install["state"], install["updated_at"])
            if install.get("chunks_have") and install["chunks_have"] == install.get("chunks_total"):
                stages.setdefault("fetched", install["updated_at"])
    selftest = stages["active"] - stages["self-testing"]
    return {"total": stamp - start - selftest, "publish": published - start, "selftest": selftest,
            "fetched": stages["fetched"] - wall,
            "verify": stages["self-testing"] - stages.get("verifying", stages["self-testing"])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=float, default=10.0, help="size of the model's weights (MiB)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--write-docs", type=Path, help="put the results in this Markdown file")
    args = parser.parse_args()
    binary = find_mosquitto()
    if not binary:
        print("needs a mosquitto binary (apt-get install mosquitto)", file=sys.stderr)
        return 2
    from edgefleet.protocol.signing import SigningKey, generate_keypair

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        private, public = generate_keypair(folder / "keys", "bench")
        (folder / "keys" / "trusted").mkdir()
        public.rename(folder / "keys" / "trusted" / public.name)
        print(f"building a {args.mib:g} MiB bundle ...", file=sys.stderr)
        bundles = build_bundles(folder, args.mib, args.runs, private)
        size = bundles[0].stat().st_size
        broker = Mosquitto(binary, folder).start()
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        raw_topic, done_topic = f"{prefix}/raw/bundle", f"{prefix}/raw/done"
        receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, broker.host, str(broker.port), raw_topic,
                                     done_topic, str(folder / "received.bin")], stdout=subprocess.PIPE,
                                    stderr=subprocess.DEVNULL, text=True)
        (folder / "agent").mkdir()
        agent = AgentProcess(folder / "agent", DEVICE, broker.address, prefix, folder / "keys" / "trusted")
        agent.start()
        try:
            assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
            from edgefleet.protocol.topics import Topics

            listener = Listener(broker.address, [done_topic, Topics(prefix).reported(DEVICE)])
            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
            client.connect(broker.host, broker.port)
            client.loop_start()
            key = SigningKey.load(private)
            time.sleep(2.0)  # the agent connected and subscribed
            raw, ours = [], []
            for bundle in bundles:
                raw.append(one_message(client, listener, raw_topic, done_topic, bundle.read_bytes()))
                ours.append(delivery(client, listener, prefix, bundle, key))
                ms = {k: round(v * 1000, 1) for k, v in ours[-1].items()}
                print(f"  one message {raw[-1] * 1000:7.1f} ms   delivery {ms['total']:7.1f} ms (publish "
                      f"{ms['publish']}, every chunk in at {ms['fetched']}, verify {ms['verify']}, "
                      f"self-test left out {ms['selftest']})", file=sys.stderr)
            client.loop_stop()
            listener.client.loop_stop()
        finally:
            agent.stop()
            receiver.terminate()
            broker.stop()
    raw_ms = statistics.median(raw) * 1000
    ours_ms = statistics.median(r["total"] for r in ours) * 1000
    publish_ms = statistics.median(r["publish"] for r in ours) * 1000
    ratio = ours_ms / raw_ms
    verdict = "pass" if ratio <= BAR else "MISSED"
    rows = [
        f"| path | median of {len(raw)} runs (ms) |", "|---|---|",
        f"| one MQTT message of {size / 2**20:.1f} MiB, written, fsynced and hashed | {raw_ms:.1f} |",
        f"| bundle delivery, publish to `active` minus the self-test | {ours_ms:.1f} |",
        f"| of which `publish_bundle` | {publish_ms:.1f} |",
        "", f"Ratio {ratio:.2f} (bar at most {BAR}): {verdict}.",
    ]
    text = "\n".join(rows)
    print(text)
    if args.write_docs:
        write_section(args.write_docs, "delivery", f"`{command_line(__file__, args.write_docs)}`\n\n{text}\n")
    return 0 if ratio <= BAR else 1


if __name__ == "__main__":
    sys.exit(main())

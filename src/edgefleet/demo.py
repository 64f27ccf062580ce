"""`edgefleet demo`: the whole path on one machine, with real parts.

Trains a small CNN on scikit-learn's digits, converts it to int8, signs it, starts an
embedded broker (amqtt) and an agent in its own process, publishes the bundle, sends
inference requests over HTTP and MQTT, and prints the telemetry the agent reports.
Everything it starts, it stops; its files go to a temporary folder unless --workdir.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from edgefleet.quiet import quiet_native_output

console = Console()
DEVICE = "demo-pi"
PREFIX = "edgefleet-demo"


def step(n: int, text: str) -> float:
    console.print(f"[bold cyan][{n}/8][/] {text}")
    return time.monotonic()


def done(start: float, text: str = "") -> None:
    console.print(f"      [green]done[/] in {time.monotonic() - start:.1f} s {text}".rstrip())


def _top1(answer: dict[str, Any]) -> int:
    (scores,) = answer["top1"].values()
    return int(scores[0])


def _http_infer(port: int, x: np.ndarray) -> dict[str, Any]:
    from io import BytesIO

    buf = BytesIO()
    np.save(buf, x.astype(np.float32))
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/infer", data=buf.getvalue(),
                                 headers={"Content-Type": "application/x-npy"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def _wait_reported(view: Any, predicate: Any, timeout: float, seen: list[str]) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with view.lock:
            device = view.devices.get(DEVICE)
            reported = dict(device.reported) if device and device.reported else None
        if reported:
            state = reported.get("state")
            if state and (not seen or seen[-1] != state):
                seen.append(state)
                console.print(f"      agent state: {state}")
            if predicate(reported):
                return reported
        time.sleep(0.02)
    raise TimeoutError(f"the agent did not get there in {timeout:.0f} s (states seen: {seen})")


def run_demo(workdir: Path | None, n_requests: int) -> int:
    from edgefleet.fleet.broker import EmbeddedBroker, free_port
    from edgefleet.fleet.connection import close, connect
    from edgefleet.fleet.infer_client import MqttInferClient
    from edgefleet.fleet.monitor import FleetView, attach, render_table
    from edgefleet.fleet.publish import publish_bundle
    from edgefleet.protocol.signing import SigningKey, generate_keypair
    from edgefleet.protocol.topics import Topics

    with quiet_native_output():  # TensorFlow greets every import with C++ log lines
        from edgefleet.converter.build import convert
        from edgefleet.converter.digits import write_digits_files

    began = time.monotonic()
    folder = workdir or Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    agent_proc: subprocess.Popen[bytes] | None = None
    broker: EmbeddedBroker | None = None
    try:
        t = step(1, "Training a small CNN on scikit-learn's digits (Keras 3)")
        with quiet_native_output():
            paths = write_digits_files(folder / "data")
        done(t, f"-> {paths['model'].relative_to(folder)}")

        t = step(2, "Generating an Ed25519 signing key")
        keys = folder / "keys"
        private, public = generate_keypair(keys)
        trust = folder / "agent" / "trusted"
        trust.mkdir(parents=True, exist_ok=True)
        shutil.copy(public, trust / public.name)
        done(t, f"(key id {SigningKey.load(private).key_id})")

        t = step(3, "Converting to full int8 and packing a signed bundle")
        with quiet_native_output():
            result = convert(paths["model"], paths["calib"], folder / "digits-1.efb", private,
                             eval_path=paths["eval"], name="digits", version="1")
        m = result.manifest["metrics"]
        done(t)
        console.print(f"      model.tflite {m['model_size_bytes']:,} bytes (float32 "
                      f"{m['float_size_bytes']:,} bytes)")
        console.print(f"      top-1 on {m['eval_samples']} held-out digits: float "
                      f"{100 * m['float_top1']:.2f}%, int8 {100 * m['quantized_top1']:.2f}%")

        t = step(4, "Starting an embedded MQTT broker (amqtt) and the agent in its own process")
        broker = EmbeddedBroker().start()
        http_port = free_port()
        config = folder / "agent" / "edgefleet.agent.toml"
        config.write_text(
            f'device_id = "{DEVICE}"\nstate_dir = "{folder / "agent" / "state"}"\n'
            f'trust_dir = "{trust}"\n[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
            f'prefix = "{PREFIX}"\n[serve]\nhttp = "127.0.0.1:{http_port}"\n'
            "[telemetry]\ninterval_s = 1.0\n")
        log = (folder / "agent" / "edgefleet.agent.log").open("wb")
        agent_proc = subprocess.Popen([sys.executable, "-m", "edgefleet", "agent", "run",
                                       "--config", str(config)], stdout=log, stderr=subprocess.STDOUT)
        topics = Topics(PREFIX)
        client = connect(broker.address, "demo")
        view = FleetView(topics)
        attach(client, view)
        seen: list[str] = []
        _wait_reported(view, lambda r: True, 30, seen)
        done(t)
        console.print(f"      broker {broker.address}, agent pid {agent_proc.pid}, "
                      f"local API 127.0.0.1:{http_port}")

        t = step(5, "Publishing the bundle as retained chunks and setting the desired state")
        pub = publish_bundle(client, topics, result.bundle_path, SigningKey.load(private), [DEVICE])
        done(t, f"({pub.bundle_id}, {pub.bundle_bytes:,} bytes, {pub.chunks} chunk(s))")

        t = step(6, "Agent: download, verify hashes and signature, golden self-test, activate")
        reported = _wait_reported(
            view, lambda r: (r.get("active") or {}).get("bundle_id") == pub.bundle_id, 60, seen)
        st = reported["active"]["selftest"]
        rt = reported["active"]["runtime"]
        done(t)
        console.print(f"      self-test {100 * st['top1_agreement']:.0f}% agreement on "
                      f"{st['samples']} samples, every output within tolerance; {rt['name']} "
                      f"{rt['version']} on {reported['active']['delegate']['active']}")

        t = step(7, f"Sending {n_requests} inference requests (half over HTTP, half over MQTT)")
        data = np.load(paths["eval"])
        x, y = data["x"], data["y"]
        idx = np.arange(n_requests) % len(x)
        half = n_requests // 2
        # the CNN has one output, of class scores: its top-1 is the answer
        http_top1 = [_top1(_http_infer(http_port, x[i])) for i in idx[:half]]
        mqtt_infer = MqttInferClient(client, topics, DEVICE)
        mqtt_top1 = [_top1(mqtt_infer.infer(x[i])) for i in idx[half:]]
        answers = np.array(http_top1 + mqtt_top1)
        done(t, f"(top-1 {100 * np.mean(answers == y[idx]):.1f}% against the labels)")

        t = step(8, "Telemetry from the agent")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with view.lock:
                tel = view.devices[DEVICE].telemetry
            if tel and tel["inference"]["count_total"] >= n_requests:
                break
            time.sleep(0.2)
        console.print(render_table(view))
        console.print(_figures(view.snapshot()["raw"][DEVICE]["telemetry"]))
        close(client)
        console.print(f"[bold green]demo finished in {time.monotonic() - began:.0f} s[/]; "
                      f"files in {folder}" if workdir else
                      f"[bold green]demo finished in {time.monotonic() - began:.0f} s[/]")
        return 0
    except Exception as exc:
        console.print(f"[bold red]demo failed:[/] {type(exc).__name__}: {exc}")
        log_path = folder / "agent" / "edgefleet.agent.log"
        if log_path.exists():
            console.print(f"agent log ({log_path}):\n{log_path.read_text()[-3000:]}")
        return 1
    finally:
        if agent_proc is not None and agent_proc.poll() is None:
            agent_proc.send_signal(signal.SIGTERM)
            try:
                agent_proc.wait(15)
            except subprocess.TimeoutExpired:
                agent_proc.kill()
        if broker is not None:
            broker.stop()
        if workdir is None:
            shutil.rmtree(folder, ignore_errors=True)


def _ms(value: float | None) -> str:
    return f"{value:.3f} ms" if value is not None else "-"


def _figures(tel: dict[str, Any] | None) -> Table:
    table = Table(title="telemetry (as the agent measured it)")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("how it was measured")
    if not tel:
        table.add_row("telemetry", "none received", "")
        return table
    inf, sysm = tel["inference"], tel["system"]
    cold = inf.get("cold_start") or {}
    rows = [
        ("inferences", str(inf["count_total"]), "counter in the agent"),
        ("errors", str(inf["errors_total"]), "requests refused or failed"),
        ("latency p50", f"{inf['latency_p50_ms']:.3f} ms", "interpreter invoke, last "
         f"{inf['latency_samples']} inferences"),
        ("latency p95", f"{inf['latency_p95_ms']:.3f} ms", ""),
        ("latency p99", f"{inf['latency_p99_ms']:.3f} ms", ""),
        ("model load", _ms(cold.get("load_ms")), "interpreter, delegates and tensors"),
        ("first inference", _ms(cold.get("first_inference_ms")),
         "first invoke after loading (in the self-test)"),
        ("process CPU", f"{sysm['process_cpu_percent']:.1f} %", "os.times, since last report"),
        ("resident memory", f"{sysm['rss_bytes'] / 2**20:.1f} MiB", "/proc/self/statm"),
        ("temperature", f"{sysm['temperature_c']:.1f} °C" if sysm["temperature_c"] is not None
         else "-", sysm["temperature_source"] or "no thermal zone on this machine"),
        ("runtime", f"{tel['runtime']['name']} {tel['runtime']['version']}", ""),
        ("delegate", tel["delegate"]["active"], "; ".join(tel["delegate"]["notes"])),
    ]
    for row in rows:
        table.add_row(*row)
    return table

"""The agent's steady-state memory and idle CPU against a bare Python process that imports
ai-edge-litert, paho-mqtt and NumPy and loads the same model, measured side by side in one
run and checked against issue 9's bars (within 8 MiB of RSS; idle CPU at most 0.5 % of
one core).

    .venv/bin/python benchmarks/agent_footprint_bench.py [--python .venvs/device/bin/python]
                                                          [--write-docs docs/benchmarks.md]

The model is the digits CNN, full int8 (trained and converted here, so this needs
TensorFlow); both processes run with `--python` (default: the device-only environment that
scripts/test builds, as on a board, else this interpreter). The agent serves the bundle
from a private Mosquitto with the default telemetry interval (10 s); both are left idle
for a settling period, then sampled for the measuring period: RSS (the median of one
sample a second) and CPU time over the period.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import edgefleet.converter.tfenv  # noqa: F401  (TensorFlow's environment, before it loads)

# isort: split
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests/support.py: the private broker and the agent process

from agent_overhead_bench import signing_keys  # noqa: E402  (benchmarks/, the script's own folder)
from docs_sections import command_line, write_section  # noqa: E402

from tests.support import AgentProcess, Mosquitto, Watcher, find_mosquitto, is_active, publish_cli  # noqa: E402

RSS_BAR_MIB, CPU_BAR_PERCENT = 8.0, 0.5
BARE = """
import sys, time
import numpy, paho.mqtt.client
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_content=open(sys.argv[1], "rb").read())
interpreter.allocate_tensors()
print("ready", flush=True)
time.sleep(3600)
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def sample(pid: int, settle_s: float, measure_s: float) -> tuple[float, float]:
    """(median RSS in MiB, CPU in % of one core) of process PID after SETTLE_S, over MEASURE_S."""
    process = psutil.Process(pid)
    time.sleep(settle_s)
    before = process.cpu_times()
    start = time.monotonic()
    rss = []
    while time.monotonic() - start < measure_s:
        rss.append(process.memory_info().rss / 2**20)
        time.sleep(1.0)
    after = process.cpu_times()
    cpu = (after.user + after.system - before.user - before.system) / (time.monotonic() - start) * 100
    return statistics.median(rss), max(cpu, 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    device = ROOT / ".venvs" / "device" / "bin" / "python"
    parser.add_argument("--python", default=str(device) if device.exists() else sys.executable,
                        help="The interpreter both processes run with.")
    parser.add_argument("--settle", type=float, default=15.0, help="Seconds idle before sampling.")
    parser.add_argument("--measure", type=float, default=60.0, help="Seconds of sampling.")
    parser.add_argument("--write-docs", type=Path, help="Write the results as a section of this Markdown.")
    args = parser.parse_args()
    binary = find_mosquitto()
    if binary is None:
        log("needs the mosquitto binary (apt-get install mosquitto)")
        return 2
    from edgefleet.converter.build import convert
    from edgefleet.converter.digits import write_digits_files
    from edgefleet.protocol.bundle import check_contents

    with tempfile.TemporaryDirectory(prefix="edgefleet-footprint-") as tmp:
        work = Path(tmp)
        private, trust = signing_keys(work)
        paths = write_digits_files(work / "digits")
        bundle = work / "digits.efb"
        log("converting the digits CNN to int8")
        convert(paths["model"], paths["calib"], bundle, private, mode="int8", target="generic-x86_64",
                chart=False, measure_latency=False, progress=lambda m: None)
        model = work / "digits.tflite"
        model.write_bytes(check_contents(bundle.read_bytes()).model_bytes)
        broker = Mosquitto(binary, work).start()
        agent = AgentProcess(work, "footprint", broker.address, "fp", trust, python=args.python)
        # the tests' agent reports every second: a board's default is every 10 s
        agent.config.write_text(agent.config.read_text().replace("interval_s = 1.0", "interval_s = 10.0"))
        agent.start()
        watcher = Watcher(broker.address, ["fp/devices/footprint/reported"])
        bare = subprocess.Popen([args.python, "-c", BARE, str(model)], stdout=subprocess.PIPE, text=True)
        try:
            published = publish_cli(bundle, broker.address, "fp", private, "--device", "footprint")
            watcher.wait_for("fp/devices/footprint/reported", is_active(published["bundle_id"]), 60)
            assert bare.stdout is not None and bare.stdout.readline().strip() == "ready"
            log(f"sampling both for {args.settle + args.measure:.0f} s")
            agent_rss, agent_cpu = sample(agent.proc.pid, args.settle, args.measure)  # type: ignore[union-attr]
            bare_rss, bare_cpu = sample(bare.pid, 0.0, min(10.0, args.measure))
        finally:
            bare.kill()
            watcher.close()
            agent.stop()
            broker.stop()
    command = command_line(__file__, args.write_docs)
    rss_ok, cpu_ok = agent_rss - bare_rss <= RSS_BAR_MIB, agent_cpu <= CPU_BAR_PERCENT
    text = "\n".join([
        "## The agent's memory and idle CPU (issue 9)", "",
        f"Produced by `{command}`: the digits CNN (int8) served by `edgefleet agent run` from a private "
        f"Mosquitto, idle, against a bare process that imports ai-edge-litert, paho-mqtt and NumPy and "
        f"loads the same model; {Path(args.python).parent.parent.name} environment; RSS the median of one "
        f"sample a second over {args.measure:.0f} s after {args.settle:.0f} s idle; CPU over the same "
        "period, in % of one core.", "",
        "| figure | agent | bare process | difference | bar | |", "|---|---:|---:|---:|---|---|",
        f"| RSS MiB | {agent_rss:.1f} | {bare_rss:.1f} | {agent_rss - bare_rss:+.1f} | <= {RSS_BAR_MIB} MiB "
        f"| {'pass' if rss_ok else 'MISSED'} |",
        f"| idle CPU % of one core | {agent_cpu:.2f} | {bare_cpu:.2f} | | <= {CPU_BAR_PERCENT} % "
        f"| {'pass' if cpu_ok else 'MISSED'} |", ""])
    print(text)
    if args.write_docs:
        write_section(args.write_docs, "agent_footprint_bench", text)
    return 0 if rss_ok and cpu_ok else 1


if __name__ == "__main__":
    sys.exit(main())

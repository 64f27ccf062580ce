"""The figures behind the agent's choice of libraries (docs/runtime.md): the resident memory
each candidate adds to a process that already holds what every agent needs (NumPy,
paho-mqtt, ai-edge-litert), and the time of the per-request work where a faster library
replaced the standard one. One run, side by side.

    .venv/bin/python benchmarks/agent_choices_bench.py [--python .venvs/device/bin/python]
                                                       [--write-docs docs/benchmarks.md]

Memory: each import in a fresh process (`--python`, default the device-only environment
that scripts/test builds), RSS after the import less RSS before it. Time: the median of 7
rounds of 200 calls each, in this process.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import subprocess
import sys
import timeit
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from docs_sections import command_line, write_section  # noqa: E402

# (what it does, the library the agent does not use, the one it uses)
IMPORTS = [
    ("Ed25519 signatures", "cryptography.hazmat.primitives.asymmetric.ed25519", "nacl.signing"),
    ("its own CPU and memory figures", "psutil", "edgefleet.agent.procstat"),
    ("the local HTTP API", "http.server", "httptools"),
    ("JSON", "json", "orjson"),
    ("base64", "base64", "pybase64"),
]
PROBE = """
import importlib, sys
def rss():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024
import numpy, paho.mqtt.client, ai_edge_litert.interpreter
before = rss()
importlib.import_module(sys.argv[1])
print(rss() - before)
"""


def import_mib(python: str, module: str) -> str:
    out = subprocess.run([python, "-c", PROBE, module], capture_output=True, text=True, check=False)
    return f"{float(out.stdout):.2f}" if out.returncode == 0 else "not installed"


def per_call_us(fn: object) -> float:
    return statistics.median(timeit.repeat(fn, number=200, repeat=7)) / 200 * 1e6  # type: ignore[arg-type]


def timings() -> list[tuple[str, str, float, str, float]]:
    import orjson
    import pybase64

    from edgefleet.protocol import messages

    rng = np.random.default_rng(0)
    scores = rng.random(1000, dtype=np.float32)
    image = rng.random((96, 96, 3), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, image)
    npy = buf.getvalue()
    b64 = base64.b64encode(npy).decode()
    text = json.dumps({"inputs": image.tolist()}).encode()  # what agent_overhead_bench sends
    pairs = [
        ("answer with 1,000 class scores",
         "json.dumps(.tolist())", lambda: json.dumps(scores.tolist()),
         "orjson (NumPy arrays)", lambda: orjson.dumps(scores, option=orjson.OPT_SERIALIZE_NUMPY)),
        ("inputs_npy of a 96x96x3 image",
         "base64.b64decode", lambda: base64.b64decode(b64, validate=True),
         "pybase64.b64decode", lambda: pybase64.b64decode(b64, validate=True)),
        (f"JSON body of a 96x96x3 image ({len(text) // 1000} kB of text)",
         "json.loads", lambda: json.loads(text),
         "orjson.loads", lambda: orjson.loads(text)),
        (".npy body of a 96x96x3 image",
         "np.load", lambda: np.load(io.BytesIO(npy)),
         "messages.decode_npy", lambda: messages.decode_npy(npy)),
    ]
    return [(what, old, per_call_us(old_fn), new, per_call_us(new_fn))
            for what, old, old_fn, new, new_fn in pairs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    device = ROOT / ".venvs" / "device" / "bin" / "python"
    parser.add_argument("--python", default=str(device) if device.exists() else sys.executable,
                        help="The interpreter the imports are measured in.")
    parser.add_argument("--write-docs", type=Path, help="Write the results as a section of this Markdown.")
    args = parser.parse_args()
    lines = ["## What the agent's libraries cost (issue 9)", "",
             f"Produced by `{command_line(__file__, args.write_docs)}`: RSS each import adds to a fresh "
             "process that holds NumPy, paho-mqtt and ai-edge-litert "
             f"({Path(args.python).parent.parent.name} environment), and the median time of one call "
             "(7 rounds of 200).", "",
             "| for | not used | MiB | used | MiB |", "|---|---|---:|---|---:|"]
    for what, old, new in IMPORTS:
        lines.append(f"| {what} | `{old}` | {import_mib(args.python, old)} | `{new}` "
                     f"| {import_mib(args.python, new)} |")
    lines += ["", "| per request | not used | us | used | us |", "|---|---|---:|---|---:|"]
    for what, old, old_us, new, new_us in timings():
        lines.append(f"| {what} | `{old}` | {old_us:.1f} | `{new}` | {new_us:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write_docs:
        write_section(args.write_docs, "agent_choices_bench", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

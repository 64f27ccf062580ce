"""Which of LiteRT's two APIs runs a model faster on this board, measured in a child
process: `python -m edgefleet.api_probe THREADS < model.tflite` prints
{"p50_ms": {"Interpreter": .., "CompiledModel": ..}}.

A child, because loading CompiledModel maps LiteRT's accelerator registry into the
process for good, even after the model is dropped (docs/runtime.md): the agent pays for
it only when it will serve with CompiledModel.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

TIMEOUT_S = 60.0


def probe(model_bytes: bytes, num_threads: int | None) -> dict[str, Any]:
    """The probe's figures, or {"error": why} (the agent then stays on the Interpreter)."""
    try:
        done = subprocess.run([sys.executable, "-m", "edgefleet.api_probe", str(num_threads or 0)],
                              input=model_bytes, capture_output=True, timeout=TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"error": f"the API probe did not finish: {exc}"}
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        return {"error": f"the API probe failed (exit {done.returncode}): {tail[0]}"}
    try:
        result = json.loads(done.stdout)
    except ValueError:
        return {"error": "the API probe printed no JSON"}
    return result if isinstance(result, dict) and "p50_ms" in result else {"error": "unexpected probe output"}


def main() -> None:
    from edgefleet.engines import CompiledEngine, compare
    from edgefleet.runtime import TFLiteModel

    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    data = sys.stdin.buffer.read()
    model = TFLiteModel(data, runtime="ai-edge-litert", num_threads=threads or None)
    compiled = CompiledEngine(data, "cpu", threads or None)
    p50 = compare([model.engine, compiled], model.inputs, model.outputs)
    json.dump({"p50_ms": p50}, sys.stdout)


if __name__ == "__main__":
    main()

"""`edgefleet agent bench` against `litert-benchmark` (shipped with ai-edge-litert) on the same
models and thread count, alternated in one run, checked against issue 9's bar (p50 within
10 %), like with like (`agent bench --api compiled` runs LiteRT's CompiledModel API, as
litert-benchmark does); and LiteRT's two APIs compared on this machine (the agent serves
with the `Interpreter`).

    .venv/bin/python benchmarks/agent_bench_vs_litert.py [--write-docs docs/benchmarks.md] [--runs N]

Models: the digits CNN and MobileNetV2 0.35/96 (1000 classes, weights=None), full int8, as
in agent_overhead_bench.py. Each tool runs ROUNDS times per model, alternating, in its own
process; the figure is the median of the rounds' medians. Needs TensorFlow for the
conversions. Exits 1 when a bar is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from agent_overhead_bench import build_models, log  # benchmarks/, the script's own folder
from docs_sections import command_line, write_section

BAR = 0.10  # |agent bench p50 / litert-benchmark p50 - 1|
RESOLUTION_MS = 0.01  # litert-benchmark rounds every figure to two decimals of a millisecond
ROUNDS = 3


def agreement(ours: float, theirs: float) -> str:
    """`pass` within the bar; where litert-benchmark's two decimals cannot show 10 %, the
    same figure at its resolution (its 0.01 stands for anything from 0.005 to 0.015)."""
    if theirs and abs(ours / theirs - 1) <= BAR:
        return "pass"
    if theirs < RESOLUTION_MS / BAR and round(ours, 2) == round(theirs, 2):
        return f"pass at litert's resolution ({RESOLUTION_MS} ms)"
    return "MISSED"


def _agent(model: Path, runs: int, threads: int, api: str) -> float:
    out = subprocess.run([sys.executable, "-m", "edgefleet", "agent", "bench", str(model),
                          "--runs", str(runs), "--threads", str(threads), "--api", api, "--json"],
                         capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout)["latency"]["median_ms"])


def _litert(model: Path, runs: int, threads: int, work: Path) -> float:
    result = work / "litert.json"
    tool = Path(sys.executable).parent / "litert-benchmark"
    subprocess.run([str(tool), "--model", str(model), "--num_runs", str(runs), "--warmup_runs", "10",
                    "--num_threads", str(threads), "--result_json", str(result)],
                   capture_output=True, text=True, check=True)
    return float(json.loads(result.read_text())["latency"]["median_ms"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write-docs", type=Path, help="Write the results as a section of this Markdown.")
    parser.add_argument("--runs", type=int, default=500, help="Timed runs per tool and round (default 500).")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    from edgefleet.agent.bench import model_bytes
    from edgefleet.protocol.signing import generate_keypair

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgefleet-bench-vs-litert-") as tmp:
        work = Path(tmp)
        private, _ = generate_keypair(work / "keys")
        for name, bundle in build_models(work, private).items():
            model = work / f"{bundle.stem}.tflite"  # litert-benchmark takes a .tflite
            model.write_bytes(model_bytes(bundle))
            compiled, interpreter, theirs = [], [], []
            for _ in range(ROUNDS):
                log(f"{name}: edgefleet agent bench (both APIs), litert-benchmark")
                compiled.append(_agent(model, args.runs, args.threads, "compiled"))
                interpreter.append(_agent(model, args.runs, args.threads, "interpreter"))
                theirs.append(_litert(model, args.runs, args.threads, work))
            rows.append((name, *(statistics.median(t) for t in (compiled, theirs, interpreter))))
    command = command_line(__file__, args.write_docs)
    lines = ["## `edgefleet agent bench` against `litert-benchmark` (issue 9)", "",
             f"Produced by `{command}`: {args.runs} timed runs after 10 warm-up runs, {args.threads} "
             f"thread(s), each tool {ROUNDS} times per model alternately in fresh processes; medians of "
             "the rounds' medians. The bar compares like with like: `agent bench --api compiled` times "
             "LiteRT's `CompiledModel.run_by_name` as litert-benchmark does. The last column is what the "
             "agent itself runs, `Interpreter.invoke()`, against CompiledModel on this machine. "
             "litert-benchmark prints two decimals of a millisecond (its JSON too), so below 0.1 ms it "
             "cannot show a 10 % difference: there the agent's figure passes if it rounds to the "
             "same two decimals, and the table says so.", "",
             "| model | agent bench --api compiled p50 ms | litert-benchmark p50 ms | ratio | bar | "
             "| agent bench --api interpreter p50 ms | Interpreter / CompiledModel |",
             "|---|---:|---:|---:|---|---|---:|---:|"]
    missed = []
    for name, ours, theirs, interpreter in rows:
        ratio = ours / theirs if theirs else float("inf")
        verdict = agreement(ours, theirs)
        missed += [] if verdict != "MISSED" else [name]
        lines.append(f"| {name} | {ours:.3f} | {theirs:.3f} | {ratio:.3f} | within {BAR:.0%} "
                     f"| {verdict} | {interpreter:.3f} | {interpreter / ours:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write_docs:
        write_section(args.write_docs, "agent_bench_vs_litert", text)
    if missed:
        log(f"bars missed: {missed}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The Edge TPU compiler's own verdict: `edgetpu_compiler` run on a model when it is installed,
and its log parsed. Pure Python (a subprocess and the log's text), like the prediction of
:mod:`converter.targets.edgetpu`, which this verdict replaces when there is one.

Verified only against the documented log format: Coral's apt repository is not reachable from
the machine this was written on, so the tests drive a stand-in `edgetpu_compiler` script that
prints a log as documented (coral.ai/docs/edgetpu/compiler/) and as published in compiler runs
(e.g. google-coral/edgetpu#60, #490):

  Edge TPU Compiler version 16.0.384591198
  ...
  Number of Edge TPU subgraphs: 1
  Total number of operations: 93
  Operation log: model2_edgetpu.log
  ...
  Number of operations that will run on Edge TPU: 83
  Number of operations that will run on CPU: 10

  Operator                       Count      Status

  ADD                            10         Mapped to Edge TPU
  LOGISTIC                       1          More than one subgraph is not supported

When every op maps, the compiler prints no "will run on" lines; the totals then come from
"Total number of operations" and the table.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_ROW = re.compile(r"^([A-Z][A-Z0-9_]*|[a-z][a-z0-9_\-]*)\s+(\d+)\s+(\S.*?)\s*$")


@dataclass
class CompilerResult:
    ok: bool
    version: str | None
    ops_on_edgetpu: int | None
    ops_on_cpu: int | None
    total_ops: int | None
    edgetpu_subgraphs: int | None
    table: list[dict[str, Any]]  # {"op", "count", "status", "mapped"}
    output_model: str | None
    log: str

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "version": self.version, "ops_on_edgetpu": self.ops_on_edgetpu,
                "ops_on_cpu": self.ops_on_cpu, "total_ops": self.total_ops,
                "edgetpu_subgraphs": self.edgetpu_subgraphs, "table": self.table,
                "output_model": self.output_model,
                "note": "parsed from edgetpu_compiler's log; the parser is verified against the "
                        "documented log format only"}


def _int_after(label: str, text: str) -> int | None:
    m = re.search(re.escape(label) + r"\s*:\s*(\d+)", text)
    return int(m.group(1)) if m else None


def parse_compiler_log(text: str) -> CompilerResult:
    version = re.search(r"Edge TPU Compiler version\s+(\S+)", text)
    output = re.search(r"Output model:\s*(\S.*)", text)
    table: list[dict[str, Any]] = []
    in_table = False
    for line in text.splitlines():
        if re.match(r"^\s*Operator\s+Count\s+Status\s*$", line):
            in_table = True
            continue
        if not in_table or not line.strip():
            continue
        m = _ROW.match(line.strip())
        if not m:
            in_table = False
            continue
        status = m.group(3)
        table.append({"op": m.group(1), "count": int(m.group(2)), "status": status,
                      "mapped": status.startswith("Mapped to Edge TPU")})
    on_tpu = _int_after("Number of operations that will run on Edge TPU", text)
    on_cpu = _int_after("Number of operations that will run on CPU", text)
    total = _int_after("Total number of operations", text)
    if table and on_tpu is None:
        on_tpu = sum(r["count"] for r in table if r["mapped"])
        on_cpu = sum(r["count"] for r in table if not r["mapped"])
    ok = "compiled successfully" in text.lower() or bool(table)
    return CompilerResult(ok=ok, version=version.group(1) if version else None, ops_on_edgetpu=on_tpu,
                          ops_on_cpu=on_cpu, total_ops=total,
                          edgetpu_subgraphs=_int_after("Number of Edge TPU subgraphs", text), table=table,
                          output_model=output.group(1).strip() if output else None, log=text)


def run_compiler(path: str | os.PathLike[str], timeout: float = 300.0,
                 out_dir: str | os.PathLike[str] | None = None) -> CompilerResult | None:
    """Run `edgetpu_compiler -s -o OUTDIR model.tflite` and parse its log; None when not installed."""
    binary = shutil.which("edgetpu_compiler")
    if binary is None:
        return None
    with tempfile.TemporaryDirectory(prefix="edgetpu-") as tmp:
        target = Path(out_dir) if out_dir is not None else Path(tmp)
        target.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run([binary, "-s", "-o", str(target), str(path)], capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return CompilerResult(False, None, None, None, None, None, [], None,
                                  f"edgetpu_compiler timed out after {timeout:g} s")
        text = proc.stdout + (("\n" + proc.stderr) if proc.stderr else "")
        result = parse_compiler_log(text)
        if proc.returncode != 0:
            result.ok = False
        if out_dir is None:
            result.output_model = None  # it was written to a temporary folder, now gone
        return result

"""Several benchmark scripts write into one docs/benchmarks.md: each owns the section between
its own pair of HTML comments and leaves the rest of the file as it is, so rerunning one
script never drops another's figures.
"""

from __future__ import annotations

import re
from pathlib import Path

_HEADER = (
    "# Benchmarks\n\n"
    "Each section below is written by the command it names, from one run of that command; "
    "rerun it to check the figures. The machine is shared and noisy: compare latencies "
    "within one table, not across runs or sections.\n"
)


def write_section(path: Path, name: str, text: str) -> None:
    """Replace (or append) the section called `name` in `path` with `text`."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    block = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    if begin not in old:
        # a file written before sections existed holds one script's output only: start over
        old = _HEADER if "<!-- " not in old else old
        path.write_text(old.rstrip() + "\n\n" + block)
        return
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.DOTALL)
    path.write_text(pattern.sub(lambda _: block, old, count=1))


def command_line(script: str, docs: Path | None) -> str:
    """How SCRIPT (its __file__) was run, as its section quotes it."""
    return f"python benchmarks/{Path(script).name}" + (f" --write-docs {docs}" if docs else "")

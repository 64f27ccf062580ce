"""Progress bars (rich) for the long steps of the converter: calibration, fine-tuning,
distillation. Library code reports (task, done, total); this draws it."""

from __future__ import annotations

from types import TracebackType
from typing import Any


class ProgressBars:
    """One bar per task name, created on its first update, and step lines above them.

    Enter it before muting native output (edgefleet.quiet): it keeps a duplicate of the
    terminal's stderr, so bars and steps still show while TensorFlow is silenced.
    """

    def __init__(self, enabled: bool):
        self._enabled = enabled
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressBars:
        if self._enabled:
            import os

            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(file=os.fdopen(os.dup(2), "w"), stderr=True)
            self._progress = Progress(TextColumn("  {task.description}"), BarColumn(),
                                      MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                                      transient=True)
            self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress.console.file.close()

    def step(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(f"  {message}", highlight=False, markup=False, soft_wrap=True)

    def update(self, task: str, done: int, total: int) -> None:
        if self._progress is None:
            return
        if task not in self._tasks:
            self._tasks[task] = self._progress.add_task(task, total=total)
        self._progress.update(self._tasks[task], completed=done, total=total)

"""A rollout's state on disk: one JSON file per rollout in a folder (default
~/.local/state/edgefleet/rollouts), written whole and renamed into place after every change,
so that an operator process killed at any moment leaves the last decision and a restarted
one (`edgefleet rollout resume`) carries on from it. `pause`, `resume` and `abort` from
another terminal write a request into the same file, under a lock, for the running process
to act on.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PHASES = ("installing", "baking", "rolling-back", "paused", "done", "rolled-back", "aborted")
FINISHED = ("done", "rolled-back", "aborted")
REQUESTS = ("pause", "resume", "abort")


def default_folder() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edgefleet" / "rollouts"


@dataclass
class RolloutState:
    id: str
    bundle: dict[str, Any]  # bundle_id, name, version, sha256, path
    group: str
    prefix: str
    stages: list[float]  # cumulative shares of the group's devices: [0.1, 0.5, 1.0]
    gate: str
    bake_s: float
    devices: list[str]  # the group's devices in rollout order, canaries first
    baseline: dict[str, dict[str, Any]]  # device -> bundle_id and figures of the version it ran
    stage: int = 0
    phase: str = "installing"
    touched: list[str] = field(default_factory=list)  # told to run the new bundle
    stage_started_at: float | None = None
    bake_started_at: float | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    request: str | None = None  # pause | resume | abort, from another process
    paused_phase: str | None = None
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    def stage_size(self, stage: int | None = None) -> int:
        """How many of the devices the stage covers (each stage includes the earlier ones)."""
        share = self.stages[self.stage if stage is None else stage]
        return max(1, min(len(self.devices), math.ceil(share * len(self.devices) - 1e-9)))

    def decide(self, decision: str, reason: str, figures: dict[str, Any] | None = None) -> None:
        self.decisions.append({"at": time.time(), "stage": self.stage, "stage_share": self.stages[self.stage],
                               "decision": decision, "reason": reason, "figures": figures or {}})

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED


class RolloutStore:
    def __init__(self, folder: Path | None = None):
        self.folder = folder or default_folder()

    def path(self, rollout_id: str) -> Path:
        if not rollout_id or "/" in rollout_id or rollout_id.startswith("."):
            raise KeyError(f"no rollout {rollout_id!r}")
        return self.folder / f"{rollout_id}.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def save(self, state: RolloutState) -> None:
        """Write STATE whole, keeping a request another process wrote since it was read."""
        with self._locked():
            on_disk = self._read(state.id)
            if on_disk is not None and on_disk.get("request") and state.request is None:
                state.request = on_disk["request"]
            state.updated_at = time.time()
            tmp = self.path(state.id).with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(state), indent=1))
            os.replace(tmp, self.path(state.id))

    def _read(self, rollout_id: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.path(rollout_id).read_text())
        except FileNotFoundError:
            return None

    def load(self, rollout_id: str) -> RolloutState:
        data = self._read(rollout_id)
        if data is None:
            raise KeyError(f"no rollout {rollout_id!r} in {self.folder} "
                           "('edgefleet rollout list' shows them)")
        return RolloutState(**data)

    def request(self, rollout_id: str, what: str) -> RolloutState:
        """Ask the process running ROLLOUT_ID to pause, resume or abort."""
        assert what in REQUESTS
        with self._locked():
            data = self._read(rollout_id)
            if data is None:
                raise KeyError(f"no rollout {rollout_id!r} in {self.folder}")
            data["request"] = what
            tmp = self.path(rollout_id).with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path(rollout_id))
        return RolloutState(**data)

    def take_request(self, state: RolloutState) -> str | None:
        """The request waiting for STATE's rollout, cleared from the file."""
        with self._locked():
            data = self._read(state.id)
            what = (data or {}).get("request")
            if what:
                data["request"] = None  # type: ignore[index]
                tmp = self.path(state.id).with_suffix(".tmp")
                tmp.write_text(json.dumps(data, indent=1))
                os.replace(tmp, self.path(state.id))
        state.request = None
        return what

    def all(self) -> list[RolloutState]:
        if not self.folder.is_dir():
            return []
        states = [self.load(p.stem) for p in self.folder.glob("*.json")]
        return sorted(states, key=lambda s: s.created_at)

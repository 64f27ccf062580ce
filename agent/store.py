"""The agent's files: partial downloads, installed bundles, and which one is active.

Every write is atomic (temporary file, fsync, rename, fsync of the folder), so a
power cut leaves either the old file or the new one, never half of one.

    <state_dir>/downloads/<bundle_id>/manifest.json   transfer manifest being fetched
    <state_dir>/downloads/<bundle_id>/bundle.part    the bundle, chunk by chunk (agent/partial.py)
    <state_dir>/downloads/<bundle_id>/chunks.have    which chunks bundle.part holds
    <state_dir>/bundles/<bundle_id>.efb              installed, verified bundles
    <state_dir>/active.json                          {"active", "previous", "history", "set_at", ...}
    <state_dir>/desired.json                         the newest desired state per source (ordering.py)
    <state_dir>/spool/                               messages kept while the broker is away (spool.py)
    <state_dir>/lock                                 held by the running agent (its pid)
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from edgefleet.agent.durable import atomic_write, fsync_dir
from edgefleet.agent.partial import PartialDownload
from edgefleet.protocol.delivery import TransferManifest
from edgefleet.protocol.topics import check_id


class Store:
    def __init__(self, root: str | Path, lock: bool = False, keep_previous: int = 1):
        """LOCK: hold `<state_dir>/lock` while this Store lives, so that a second agent given
        the same state_dir stops at start-up (OSError) instead of both writing into it.
        KEEP_PREVIOUS: installed bundles kept besides the active one, newest first (rollback)."""
        self.root = Path(root)
        self.keep_previous = keep_previous
        self.downloads = self.root / "downloads"
        self.bundles = self.root / "bundles"
        self._lock_fd: int | None = None
        for folder in (self.downloads, self.bundles):
            folder.mkdir(parents=True, exist_ok=True)
        if lock:
            self._lock()
        self._tidy()

    def _lock(self) -> None:
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released by the kernel when we die
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OSError(f"another agent (pid {holder}) uses {self.root}; give each agent its own "
                          "state_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # downloads
    def _download_dir(self, bundle_id: str) -> Path:
        return self.downloads / check_id("bundle", bundle_id)

    def save_transfer_manifest(self, bundle_id: str, payload: bytes) -> None:
        atomic_write(self._download_dir(bundle_id) / "manifest.json", payload)

    def partial(self, m: TransferManifest) -> PartialDownload:
        """The partial download of M's bundle, with what an earlier attempt left in it."""
        return PartialDownload(self._download_dir(m.bundle_id), m)

    def discard_download(self, bundle_id: str) -> None:
        shutil.rmtree(self._download_dir(bundle_id), ignore_errors=True)

    def discard_downloads(self, keep: str | None) -> None:
        """Every partial download but KEEP's (no one wants them now: they would fill the disk)."""
        for folder in self.downloads.iterdir():
            if folder.name != keep:
                shutil.rmtree(folder, ignore_errors=True)

    def _tidy(self) -> None:
        """A download of a bundle that is installed is one whose clean-up a crash or a power
        cut interrupted after activation: it is not needed again."""
        for folder in self.downloads.iterdir():
            if (self.bundles / f"{folder.name}.efb").exists():
                shutil.rmtree(folder, ignore_errors=True)

    # installed bundles
    def bundle_path(self, bundle_id: str) -> Path:
        return self.bundles / f"{check_id('bundle', bundle_id)}.efb"

    def install(self, bundle_id: str, data: bytes) -> None:
        atomic_write(self.bundle_path(bundle_id), data)

    def adopt(self, bundle_id: str, source: Path) -> None:
        """Move a finished download (synced already) into place instead of writing it again."""
        target = self.bundle_path(bundle_id)
        os.replace(source, target)
        for folder in {source.parent, target.parent}:
            fsync_dir(folder)

    def installed(self, bundle_id: str) -> bytes | None:
        try:
            return self.bundle_path(bundle_id).read_bytes()
        except OSError:
            return None

    def remove_bundle(self, bundle_id: str) -> None:
        self.bundle_path(bundle_id).unlink(missing_ok=True)

    # which bundle is active
    def _read_record(self, name: str) -> dict[str, Any]:
        """A JSON object the agent wrote into the state folder; {} when it is missing or damaged."""
        try:
            record = json.loads((self.root / name).read_text())
            return record if isinstance(record, dict) else {}
        except (OSError, ValueError):
            return {}

    def active_record(self) -> dict[str, Any]:
        return self._read_record("active.json")

    def history(self) -> list[str]:
        """The installed bundles, the active one first, then the ones before it, newest first."""
        record = self.active_record()
        listed = record.get("history") or [record.get("active"), record.get("previous")]  # older records
        return [h for h in listed if isinstance(h, str)]

    def _record(self, history: list[str], set_at: Any) -> dict[str, Any]:
        history = list(dict.fromkeys(history))[: 1 + self.keep_previous]
        record = {"active": history[0], "previous": history[1] if len(history) > 1 else None,
                  "history": history, "activated_at": time.time(), "set_at": set_at}
        atomic_write(self.root / "active.json", json.dumps(record).encode())
        self._prune(keep=set(history))
        return record

    def set_active(self, bundle_id: str, set_at: float = 0.0) -> dict[str, Any]:
        """SET_AT: when the desired state that asked for BUNDLE_ID was set (ordering.py).
        Re-activating the active bundle keeps the ones before it as they were."""
        return self._record([bundle_id, *self.history()], set_at)

    def fall_back_to(self, bundle_id: str) -> None:
        """The active bundle is unusable (or its key revoked): BUNDLE_ID, one before it,
        becomes active; the ones between are no rollback target."""
        history = self.history()
        older = history[history.index(bundle_id) + 1:] if bundle_id in history else []
        # the desired state behind the broken one still orders what may come next (ordering.py)
        self._record([bundle_id, *older], self.active_record().get("set_at", 0.0))

    # the desired states accepted (agent/ordering.py)
    def desired_record(self) -> dict[str, Any]:
        return self._read_record("desired.json")

    def save_desired_record(self, record: dict[str, Any]) -> None:
        atomic_write(self.root / "desired.json", json.dumps(record).encode())

    def _prune(self, keep: set[str]) -> None:
        """Keep the bundles of the history, for rollback; drop the others."""
        for path in self.bundles.glob("*.efb"):
            if path.stem not in keep:
                path.unlink(missing_ok=True)

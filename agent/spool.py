"""The offline spool: telemetry and reported states taken while the broker is away wait
on disk, bounded in bytes and age (the oldest go first, counted), and are sent in order,
marked `"replayed": true`, once the broker is back.

    <state_dir>/spool/<sequence>.json   {"topic", "spooled_at", "payload"}, one message each

A message leaves the spool once the broker has acknowledged it (QoS 1): a link that
drops during the replay sends it again on the next connection (at least once, as MQTT
QoS 1 is). Runs on the agent's worker thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from edgefleet.agent.durable import atomic_write

log = logging.getLogger("edgefleet.agent")
Publish = Callable[[str, bytes], Any]  # returns paho's MQTTMessageInfo, or None when offline


class Spool:
    def __init__(self, folder: Path, max_bytes: int, max_age_s: float, wall: Callable[[], float]):
        self.folder, self.max_bytes, self.max_age_s, self._wall = folder, max_bytes, max_age_s, wall
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dropped = self.replayed = 0  # since the agent started
        self._sent: list[tuple[Any, Path]] = []  # handed to paho, waiting for the broker's ack
        files = self._files()
        self._next = int(files[-1].stem) + 1 if files else 0

    def _files(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("*.json") if p.stem.isdigit())

    @property
    def queued(self) -> int:
        return len(self._files())

    def stats(self) -> dict[str, int]:
        return {"queued": self.queued, "dropped_total": self.dropped, "replayed_total": self.replayed}

    def add(self, topic: str, payload: bytes) -> None:
        """Keep PAYLOAD (a JSON object) for TOPIC until the broker is back; a disk that refuses
        it costs that one message, counted as dropped."""
        if self.max_bytes <= 0:
            self.dropped += 1
            return
        record = orjson.dumps({"topic": topic, "spooled_at": self._wall(), "payload": orjson.loads(payload)})
        try:
            atomic_write(self.folder / f"{self._next:012d}.json", record)
        except OSError as exc:
            log.warning("cannot spool a message for %s: %s", topic, exc)
            self.dropped += 1
            return
        self._next += 1
        self._trim()

    def _trim(self) -> None:
        """Oldest first: past max_age_s, then while the spool holds more than max_bytes."""
        files = self._files()
        sizes = {p: p.stat().st_size for p in files}
        total, oldest_kept = sum(sizes.values()), self._wall() - self.max_age_s
        for path in files:
            if total <= self.max_bytes and self._spooled_at(path) >= oldest_kept:
                break
            total -= sizes[path]
            path.unlink(missing_ok=True)
            self.dropped += 1

    @staticmethod
    def _spooled_at(path: Path) -> float:
        try:
            return float(orjson.loads(path.read_bytes())["spooled_at"])
        except (OSError, ValueError, KeyError, TypeError):
            return float("-inf")  # unreadable: the first to go

    def replay(self, publish: Publish) -> int:
        """Hand every spooled message to PUBLISH, oldest first, marked as replayed; how many."""
        self._trim()
        waiting = {path for _, path in self._sent}
        count = 0
        for path in self._files():
            if path in waiting:
                continue
            try:
                record = orjson.loads(path.read_bytes())
                payload = {**record["payload"], "replayed": True, "spooled_at": record["spooled_at"]}
                topic = str(record["topic"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("dropping unreadable spooled message %s: %s", path.name, exc)
                path.unlink(missing_ok=True)
                self.dropped += 1
                continue
            info = publish(topic, orjson.dumps(payload))
            if info is None:  # offline again: the rest waits for the next connection
                break
            self._sent.append((info, path))
            count += 1
        return count

    def tick(self) -> None:
        """Remove what the broker has acknowledged."""
        still = []
        for info, path in self._sent:
            if info.is_published():
                path.unlink(missing_ok=True)
                self.replayed += 1
            else:
                still.append((info, path))
        self._sent = still

    def disconnected(self) -> None:
        """Messages not acknowledged stay on disk and go again on the next connection."""
        self._sent = []

"""The agent's half of "no downgrade, no replay" (docs/protocol.md).

It keeps, on disk, when the newest desired state accepted from each source (the device's
own topic, each group's) was set, so that a desired state put back on the broker by a
client without the signing key is refused, after a restart too. Before anything
is fetched or installed, a bundle older than the one that runs is refused unless the
desired state is a rollback that was set after the one that installed the running bundle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import datetime, timezone
from typing import Any

from edgefleet.agent.store import Store
from edgefleet.protocol.desired import BundleRef, Desired, downgrade, parse_desired
from edgefleet.protocol.messages import MessageError
from edgefleet.protocol.signing import TrustStore

log = logging.getLogger("edgefleet.agent")


def _when(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):  # parse_desired bounds it; an old desired.json may not
        return f"{t!r} s since 1970"


class Ordering:
    def __init__(self, store: Store, trust: Callable[[], TrustStore], device_id: str,
                 previous: Callable[[], BundleRef | None]):
        """PREVIOUS: the bundle this device ran before the active one, if it keeps it."""
        self.store, self._trust, self.device_id, self._previous = store, trust, device_id, previous
        # source -> {"set_at" of the newest accepted, "resolved": the bundle a rollback to the
        # previous one came to mean here, so that the same message delivered again means the same}
        self.record: dict[str, Any] = store.desired_record()

    def _parse(self, source: str, payload: bytes) -> Desired:
        kind, target = ("device", self.device_id) if source == "device" else ("group", source[len("group:"):])
        return parse_desired(payload, self._trust(), kind, target)

    def accept(self, source: str, payload: bytes) -> Desired:
        """The desired state PAYLOAD, from SOURCE ("device" or "group:<name>"), once checked
        and recorded; MessageError when it is malformed, unsigned or a replay."""
        desired = self._parse(source, payload)
        entry = self.record.get(source)
        entry = entry if isinstance(entry, dict) else {}
        last = entry.get("set_at")
        if not payload:  # the retained message was cleared: the last one accepted still orders the next
            return desired
        if isinstance(last, (int, float)) and desired.set_at < last:
            raise MessageError(
                f"set at {_when(desired.set_at)}, before the desired state accepted from this topic "
                f"({_when(last)}): an old desired state put back, refused as a replay (if it is new, "
                "the clock of the machine that published it is behind: set it right and publish again)")
        resolved = None
        if desired.previous:
            known = entry.get("resolved") if desired.set_at == last else None
            ref = BundleRef(**known) if isinstance(known, dict) else self._previous()
            if ref is None:
                raise MessageError("a rollback to the previous bundle, but this device keeps none (it has "
                                   "run one bundle only, or [delivery] keep_previous = 0): publish the "
                                   "bundle to go back to with --rollback")
            desired, resolved = replace(desired, bundle=ref), asdict(ref)
        new = {"set_at": desired.set_at, "resolved": resolved}
        if new != entry:
            self.record[source] = new
            try:
                self.store.save_desired_record(self.record)
            except OSError as exc:  # held in memory: still refused until the agent restarts
                log.warning("cannot record the desired state in %s: %s", self.store.root, exc)
        return desired

    def refusal(self, want: Desired, running: tuple[str, str] | None, active: dict[str, Any]) -> str | None:
        """Why WANT must not replace the RUNNING (name, version) (ACTIVE: the store's active record)."""
        if running is None or want.bundle is None:
            return None
        older = downgrade(running, (want.bundle.name, want.bundle.version))
        if older is None:
            return None
        if not want.rollback:
            return f"{older}: a downgrade, refused (to go back on purpose: edgefleet publish --rollback)"
        behind = active.get("set_at")
        if isinstance(behind, (int, float)) and want.set_at <= behind:
            return (f"{older}, and this rollback was set at {_when(want.set_at)}, before the desired "
                    f"state that installed it ({_when(behind)}): an old rollback put back, refused")
        return None

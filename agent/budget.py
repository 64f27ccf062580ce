"""How many bytes of inference requests the agent holds at once, over HTTP and MQTT.

A request costs several times its size while it is parsed (a JSON body becomes Python
numbers, then an array), so a dozen large ones at once would take hundreds of MiB: a
request that would pass the budget is answered `busy` (HTTP 503) at once instead, before
its body is read where that is possible.
"""

from __future__ import annotations

import threading


class ByteBudget:
    def __init__(self, limit: int):
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()
        self.refused_total = 0

    def take(self, size: int) -> bool:
        """Reserve SIZE bytes; False (and nothing reserved) when the budget cannot hold them."""
        with self._lock:
            if self._used + size > self.limit:
                self.refused_total += 1
                return False
            self._used += size
            return True

    def give(self, size: int) -> None:
        with self._lock:
            self._used = max(0, self._used - size)

    @property
    def used(self) -> int:
        return self._used

    def busy_message(self, size: int) -> str:
        return (f"busy: {self._used} of {self.limit} bytes of requests are being answered; this one "
                f"({size} bytes) would pass [serve] max_inflight_mib: retry later")

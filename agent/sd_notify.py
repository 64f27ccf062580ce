"""Tell systemd how the agent is: READY, WATCHDOG, STATUS and STOPPING (sd_notify(3)).

Written here by hand because the protocol is a few lines: one datagram of `KEY=VALUE`
lines to the AF_UNIX socket named in $NOTIFY_SOCKET. PyPI's `sdnotify` (0.3.2) has no
watchdog timing nor $WATCHDOG_PID check and hides every error behind a bare except;
`systemd-python` has no wheels and needs libsystemd's headers and a C compiler on the board.

Everything here is a no-op when $NOTIFY_SOCKET is unset (the agent run by hand or by
the tests). A failed send is logged once and never stops the agent: systemd going away
is no reason for a board to stop serving.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("edgefleet.agent")
# READY waits this long for the broker, then goes without it: the agent serves from disk and
# through its local API with no broker at all, so a broker outage must not fail its start.
READY_WAIT_S = 10.0


def socket_address(name: str) -> str:
    """$NOTIFY_SOCKET as `sendto` takes it: '@name' is an abstract socket, '\\0name'."""
    return "\0" + name[1:] if name.startswith("@") else name


def watchdog_interval_s(environ: Mapping[str, str], pid: int) -> float | None:
    """The watchdog timeout systemd expects pets within, or None when it expects none of
    this process ($WATCHDOG_PID names another process: a parent that exec'd us is fine,
    a child that inherited the variables is not)."""
    usec, owner = environ.get("WATCHDOG_USEC", ""), environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if owner and (not owner.isdigit() or int(owner) != pid):
        return None
    return int(usec) / 1e6


class Notifier:
    """The agent's side of the protocol. Only the agent's main loop calls it (see
    Agent.run): a pet from any other thread would keep a hung agent alive."""

    def __init__(self, address: str | None, watchdog_s: float | None = None):
        self.address = socket_address(address) if address else None
        self.watchdog_s = watchdog_s if self.address else None
        self.ready_sent = False
        self._status: str | None = None
        self._next_pet = 0.0
        self._ready_by: float | None = None
        self._warned = False
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            # never block the main loop on a busy manager: a READY, STATUS or pet that
            # could not go is sent again on the loop's next turn
            self._sock.setblocking(False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        environ = os.environ if environ is None else environ
        return cls(environ.get("NOTIFY_SOCKET") or None,
                   watchdog_interval_s(environ, os.getpid() if pid is None else pid))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *assignments: str) -> bool:
        """One datagram holding every assignment, so that READY and its STATUS arrive together."""
        if self._sock is None or self.address is None or not assignments:
            return False
        try:
            self._sock.sendto("\n".join(assignments).encode(), self.address)
            return True
        except OSError as exc:
            if not self._warned:  # once: a gone socket would otherwise log on every turn
                log.warning("cannot notify systemd on %r: %s", self.address, exc)
                self._warned = True
            return False

    def tick(self, now: float, online: bool, status: str) -> None:
        """One turn of the agent's main loop: READY once serving (online, or READY_WAIT_S
        after the first turn), then STATUS when it changes and the watchdog's pet."""
        if self._ready_by is None:
            self._ready_by = now + READY_WAIT_S
        if not self.ready_sent:
            if online or now >= self._ready_by:
                self.ready(status)
        else:
            self.status(status)
        self.pet(now)

    def ready(self, status: str) -> None:
        self._status = status
        self.ready_sent = self.send("READY=1", f"STATUS={status}") or self.ready_sent

    def status(self, status: str) -> None:
        """Sent only when it changes: `systemctl status` shows the latest."""
        if status != self._status and self.send(f"STATUS={status}"):
            self._status = status

    def pet(self, now: float) -> None:
        """WATCHDOG=1 at half the interval (as sd_watchdog_enabled(3) advises), from
        READY on: before it, TimeoutStartSec= is what guards the start."""
        if self.watchdog_s is None or not self.ready_sent or now < self._next_pet:
            return
        if self.send("WATCHDOG=1"):
            self._next_pet = now + self.watchdog_s / 2

    def stopping(self, status: str) -> None:
        self._status = status
        self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

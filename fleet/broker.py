"""An embedded MQTT broker (amqtt, pure Python) for the zero-install demo.

Production fleets run Mosquitto or a clustered broker; this one lives in a
background thread of the calling process and goes away with it.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    def __init__(self, host: str = "127.0.0.1", port: int | None = None):
        self.host, self.port = host, port or free_port(host)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _run(self) -> None:
        from amqtt.broker import Broker

        for name in ("amqtt", "transitions"):  # their INFO lines would drown the demo's output
            logging.getLogger(name).setLevel(logging.WARNING)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": self.address}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def start() -> None:  # amqtt's Broker wants a running loop when it is made
            self._broker = Broker(config)
            await self._broker.start()

        try:
            self._loop.run_until_complete(start())
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._broker.shutdown())
        self._loop.close()

    def start(self, timeout: float = 15.0) -> EmbeddedBroker:
        self._thread.start()
        if not self._ready.wait(timeout) or self._error:
            raise RuntimeError(f"embedded broker did not start on {self.address}: {self._error}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

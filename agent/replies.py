"""Where an MQTT inference answer goes: the topic the asker named, so that many clients can
call one device without each receiving everyone's answers (docs/protocol.md).

- MQTT 5 (`[mqtt] protocol = "5"`): the request's Response Topic property, which must lie
  in the device's own response sub-tree, and its Correlation Data, sent back as it came;
- any version: the request's `reply_to` field, levels below `<prefix>/devices/<id>/response/infer`;
- else `<prefix>/devices/<id>/response/infer` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


@dataclass(frozen=True)
class Route:
    topic: str | None = None  # MQTT 5's Response Topic, checked
    correlation: bytes | None = None  # MQTT 5's Correlation Data
    refused: str | None = None  # why the Response Topic asked for cannot be used


DEFAULT_ROUTE = Route()


class Replies:
    def __init__(self, base: str, tree: str, send: Callable[[str, bytes, Any], Any]):
        """BASE: the default response topic; TREE: the sub-tree answers may go to; SEND(topic,
        payload, properties) publishes."""
        self.base, self.tree, self._send = base, tree.rstrip("/") + "/", send

    def route(self, response_topic: str | None, correlation: bytes | None) -> Route:
        if response_topic is None:
            return Route(correlation=correlation)
        if not response_topic.startswith(self.tree) or any(c in response_topic for c in "+#") \
                or "//" in response_topic or response_topic.endswith("/"):
            return Route(correlation=correlation, refused=(
                f"response topic {response_topic[:120]!r} is outside this device's {self.tree}# : answered "
                f"on {self.base} instead"))
        return Route(response_topic, correlation)

    def answer(self, body: bytes, route: Route, reply_to: str | None) -> None:
        topic = route.topic or (f"{self.base}/{reply_to}" if reply_to else self.base)
        properties = None
        if route.correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = route.correlation
        self._send(topic, body, properties)

"""Socket options for our MQTT connections."""

from __future__ import annotations

import socket

import paho.mqtt.client as mqtt


def disable_nagle(client: mqtt.Client) -> None:
    """Send small packets at once. With Nagle's algorithm on, a PUBACK followed by a
    response PUBLISH waits for the peer's delayed ACK: ~40 ms per hop, measured at
    ~90 ms per request/response round trip here. paho-mqtt leaves the option off."""
    sock = client.socket()
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

"""Ask a device for inferences over MQTT (request/response with a transaction id)."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from edgefleet.fleet.connection import subscribe_and_wait
from edgefleet.protocol import messages
from edgefleet.protocol.topics import Topics


class InferenceFailed(Exception):
    """The device answered with an error (CODE `busy`: retry later), or did not answer."""

    def __init__(self, message: str, code: str | None = None):
        super().__init__(message)
        self.code = code


class MqttInferClient:
    def __init__(self, client: mqtt.Client, topics: Topics, device_id: str):
        self._client, self._topics, self._device_id = client, topics, device_id
        self._pending: dict[str, Future[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        response = topics.response(device_id, "infer")
        client.message_callback_add(response, self._on_response)
        subscribe_and_wait(client, [(response, 1)])

    def _on_response(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        tx = body.get("transaction") if isinstance(body, dict) else None
        with self._lock:
            future = self._pending.pop(str(tx), None) if tx is not None else None
        if future is not None:
            future.set_result(body)

    def infer(self, inputs: np.ndarray, timeout: float = 10.0) -> dict[str, Any]:
        """The `data` of the device's answer; raises InferenceFailed with its error."""
        tx = uuid.uuid4().hex
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            self._pending[tx] = future
        # .npy keeps the caller's dtype: a uint8 image reaches a uint8 model as it is
        payload = messages.dumps({"transaction": tx, "inputs_npy": messages.encode_array(np.asarray(inputs))})
        self._client.publish(self._topics.request(self._device_id, "infer"), payload, qos=1)
        try:
            body = future.result(timeout)
        except FutureTimeout:  # not the builtin TimeoutError before Python 3.11
            with self._lock:
                self._pending.pop(tx, None)
            raise InferenceFailed(f"no answer from device {self._device_id} within {timeout} s") from None
        if body.get("status") != "ok":
            raise InferenceFailed(str(body.get("error")), code=body.get("code"))
        return body["data"]

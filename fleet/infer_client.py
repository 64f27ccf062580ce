"""Ask a device for inferences over MQTT (request/response with a transaction id, answered
on a response topic of this client's own)."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
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
        # answers come to a topic of this client's own (reply_to), not the one every asker hears
        self.reply_to = f"c{uuid.uuid4().hex[:16]}"
        response = f"{topics.response(device_id, 'infer')}/{self.reply_to}"
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

    def infer(self, inputs: np.ndarray | dict[str, np.ndarray], timeout: float = 10.0) -> dict[str, Any]:
        """The `data` of the device's answer (every output by name); raises InferenceFailed
        with its error. INPUTS: one array for a one-input model, or arrays by input name."""
        tx = uuid.uuid4().hex
        future: Future[dict[str, Any]] = Future()
        with self._lock:
            self._pending[tx] = future
        # .npy and .npz keep the caller's dtypes: a uint8 image reaches a uint8 model as it is
        encoded = ({"inputs_npz": messages.encode_arrays({k: np.asarray(v) for k, v in inputs.items()})}
                   if isinstance(inputs, dict) else {"inputs_npy": messages.encode_array(np.asarray(inputs))})
        payload = messages.dumps({"transaction": tx, "reply_to": self.reply_to, **encoded})
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


def read_inputs(path: Path) -> np.ndarray | dict[str, np.ndarray]:
    """Inputs from a file: a .npy array (one-input models) or a .npz of arrays by input
    name (`x` alone for a one-input model, as the converter's data files have it)."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable .npy or .npz file: {exc}") from None
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:
        arrays = {name: loaded[name] for name in loaded.files}
    if not arrays:
        raise ValueError(f"{path} holds no arrays")
    if "x" in arrays and set(arrays) <= {"x", "y"}:  # the converter's data files: x, and labels y
        return arrays["x"]
    return arrays


def answer_text(answer: dict[str, Any]) -> str:
    """A device's answer for people: each output's shape, and top-1 where it holds class scores."""
    latencies = answer.get("latency_ms") or []
    shown = ", ".join(f"{ms:.3f}" for ms in latencies[:8]) + (" ..." if len(latencies) > 8 else "")
    lines = [f"{answer['bundle_id']}: {len(latencies)} sample(s), invoke {shown} ms"]
    top1 = answer.get("top1") or {}
    for name, value in (answer.get("outputs") or {}).items():
        array = np.asarray(value, np.float32)
        per_sample = "x".join(map(str, array.shape[1:])) or "1"
        if name in top1:
            lines.append(f"  {name} ({per_sample} per sample): top-1 {top1[name]}")
        else:
            lines.append(f"  {name} ({per_sample} per sample): min {array.min():.4g}, max {array.max():.4g}, "
                         f"mean {array.mean():.4g}")
    return "\n".join(lines)

"""The inference service: the model that serves now, and the requests it answers
(the local API calls `infer`, MQTT requests go through a small bounded pool).

Activation is one reference swap: a request takes the serving model once and runs on
it, so a request in flight finishes on the model it started on and a swap never drops
one.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edgefleet.agent.installer import ServingModel
from edgefleet.agent.local_api import NoModelError
from edgefleet.protocol import messages
from edgefleet.runtime import InputError
from edgefleet.tensors import Inputs

log = logging.getLogger("edgefleet.agent")
# The caller's transaction id, read without parsing a body of up to 8 MiB on the network
# thread: only for the `busy` answer, when the agent is already overloaded.
_TRANSACTION = re.compile(rb'"transaction"\s*:\s*(?:"([A-Za-z0-9._:-]{1,128})"|(\d{1,20}))')


class InferenceService:
    def __init__(self, answer: Callable[[bytes], None], workers: int = 2, max_pending: int = 32):
        self._answer = answer  # publishes a response payload
        self.serving: ServingModel | None = None
        self.max_pending = max_pending
        self._slots = threading.BoundedSemaphore(max_pending)  # queued + running MQTT requests
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mqtt-infer")
        self.busy_total = 0

    def activate(self, serving: ServingModel) -> None:
        self.serving = serving

    def infer(self, inputs: Inputs) -> dict[str, Any]:
        """Every output by name, real-valued; `top1` for the outputs of class scores."""
        serving = self.serving
        if serving is None:
            raise NoModelError("no model is active yet; publish one with 'edgefleet publish'")
        model = serving.model
        if isinstance(inputs, dict) and set(inputs) == {"x"} and len(model.inputs) == 1:
            inputs = inputs["x"]  # the converter's data convention: `x` for a one-input model
        try:
            outputs, latencies = model.run(inputs)
        except InputError:
            serving.stats.record_error("input")
            raise
        except Exception:
            serving.stats.record_error("runtime")
            raise
        serving.stats.record(latencies)  # counted for the model that answered, even mid-swap
        return {"bundle_id": serving.bundle_id,
                "outputs": {name: value.tolist() for name, value in outputs.items()},
                "top1": {name: outputs[name].reshape(len(outputs[name]), -1).argmax(-1).tolist()
                         for name in serving.class_outputs},
                "latency_ms": [round(s * 1000, 4) for s in latencies]}

    def model_info(self) -> dict[str, Any] | None:
        serving = self.serving
        if serving is None:
            return None
        m = serving.model
        return {**serving.info(), "inputs": [s.as_dict() for s in m.inputs],
                "outputs": [s.as_dict() for s in m.outputs], "runtime": serving.runtime_info(),
                "delegate": m.delegate.as_dict(), "selftest": serving.selftest.as_dict()}

    # MQTT requests (called on paho's network thread: never block it)
    def submit(self, payload: bytes) -> None:
        if not self._slots.acquire(blocking=False):
            self.busy_total += 1
            serving = self.serving
            if serving is not None:
                serving.stats.record_error("busy")
            found = _TRANSACTION.search(payload[:4096])
            tx = (found.group(1) or found.group(2)).decode() if found else None
            self._answer(messages.response_payload(
                tx, error=f"busy: {self.max_pending} requests are waiting; retry later", code="busy"))
            return
        try:
            self._pool.submit(self._answer_request, payload)
        except RuntimeError:  # the pool is shut down: the agent is stopping
            self._slots.release()

    def _answer_request(self, payload: bytes) -> None:
        try:
            self._answer(self._respond(payload))
        finally:
            self._slots.release()

    def _respond(self, payload: bytes) -> bytes:
        transaction = None
        try:
            transaction, inputs = messages.parse_infer_request(payload)
            return messages.response_payload(transaction, self.infer(inputs))
        except messages.MessageError as exc:
            return messages.response_payload(exc.transaction or transaction, error=str(exc))
        except (InputError, NoModelError) as exc:
            return messages.response_payload(transaction, error=str(exc))
        except Exception as exc:  # a handler that throws still answers
            log.exception("MQTT inference failed")
            return messages.response_payload(transaction, error=f"inference failed: {exc}")

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

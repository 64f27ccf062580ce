"""The inference service: the model that serves now, and the requests it answers
(the local API calls `infer`; MQTT requests go through a small bounded pool, or are
answered on paho's thread when the model answers within INLINE_S).

Activation is one reference swap: a request takes the serving model once and runs on
it, so a request in flight finishes on the model it started on and a swap never drops
one.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edgefleet.agent import heap
from edgefleet.agent.budget import ByteBudget
from edgefleet.agent.installer import ServingModel
from edgefleet.agent.local_api import NoModelError
from edgefleet.agent.replies import DEFAULT_ROUTE, Route
from edgefleet.protocol import messages
from edgefleet.runtime import InputError
from edgefleet.tensors import Inputs

log = logging.getLogger("edgefleet.agent")
# MQTT requests answered faster than this skip the worker pool: paho's thread is held up
# for as long (its keep-alive is a minute, a download's chunk timeout seconds), and one
# model's invokes run one at a time anyway, so the pool adds thread wake-ups and nothing else
INLINE_S = 0.002
INLINE_BYTES = 1 << 20  # and so do only requests that parse in well under that
UNKNOWN = float("inf")
# The caller's transaction id, read without parsing a body of up to 8 MiB on the network
# thread: only for the `busy` answer, when the agent is already overloaded.
_TRANSACTION = re.compile(rb'"transaction"\s*:\s*(?:"([A-Za-z0-9._:-]{1,128})"|(\d{1,20}))')
_REPLY_TO = re.compile(rb'"reply_to"\s*:\s*"([A-Za-z0-9._/-]{1,600})"')
Answer = Callable[[bytes, Route, "str | None"], None]  # body, where MQTT 5 asked, reply_to


class InferenceService:
    def __init__(self, answer: Answer, max_pending: int = 32,
                 max_bytes: int = 16 * 2**20, workers: int = 2):
        self._answer = answer  # publishes a response payload where it was asked for (replies.py)
        self.serving: ServingModel | None = None
        self.max_pending = max_pending
        self.budget = ByteBudget(max_bytes)  # shared with the local API
        self._slots = threading.BoundedSemaphore(max_pending)  # queued + running MQTT requests
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mqtt-infer")
        self.busy_total = 0
        self._count_lock = threading.Lock()
        self._queued = 0  # MQTT requests handed to the pool and not answered yet
        self._recent_s = UNKNOWN  # a moving average of the time an MQTT answer takes

    def activate(self, serving: ServingModel | None) -> None:
        """SERVING answers from now on (None: no model serves)."""
        self.serving = serving
        self._recent_s = UNKNOWN  # the pool until the new model shows its speed
        heap.give_back()  # the install's buffers and the model it replaced are garbage now

    def infer(self, inputs: Inputs) -> dict[str, Any]:
        """Every output by name (real-valued arrays); `top1` for the outputs of class scores."""
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
                "outputs": outputs,  # arrays: messages.dumps writes them as nested lists
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
    def submit(self, payload: bytes, route: Route = DEFAULT_ROUTE) -> None:
        if route.refused:
            self._quick_answer(payload, route, route.refused)
            return
        if not self._slots.acquire(blocking=False):
            self._busy(payload, route, f"busy: {self.max_pending} requests are waiting; retry later")
            return
        if not self.budget.take(len(payload)):
            self._slots.release()
            self._busy(payload, route, self.budget.busy_message(len(payload)))
            return
        if self._queued == 0 and self._recent_s < INLINE_S and len(payload) <= INLINE_BYTES:
            # Handing a request to a worker and its answer back to paho's thread wakes two
            # threads, which costs more than a model that answers in a millisecond or two
            # (docs/benchmarks.md): such requests are answered here, while nothing is queued.
            self._answer_request(payload, route)
            return
        with self._count_lock:
            self._queued += 1
        try:
            self._pool.submit(self._answer_request, payload, route, True)
        except RuntimeError:  # the pool is shut down: the agent is stopping
            with self._count_lock:
                self._queued -= 1
            self.budget.give(len(payload))
            self._slots.release()

    def _busy(self, payload: bytes, route: Route, reason: str) -> None:
        self.busy_total += 1
        serving = self.serving
        if serving is not None:
            serving.stats.record_error("busy")
        self._quick_answer(payload, route, reason, "busy")

    def _quick_answer(self, payload: bytes, route: Route, reason: str, code: str | None = None) -> None:
        """An error answer without parsing the request (on paho's thread): its transaction and
        reply_to read from its first bytes."""
        head = payload[:4096]
        found, reply = _TRANSACTION.search(head), _REPLY_TO.search(head)
        tx: messages.Transaction | None = None
        if found:
            tx = found.group(1).decode() if found.group(1) else int(found.group(2))
        try:
            reply_to = messages.check_reply_to(reply.group(1).decode()) if reply else None
        except messages.MessageError:
            reply_to = None
        self._answer(messages.response_payload(tx, error=reason, code=code), route, reply_to)

    def _answer_request(self, payload: bytes, route: Route, queued: bool = False) -> None:
        start = time.perf_counter()
        try:
            body, reply_to = self._respond(payload)
            self._answer(body, route, reply_to)
        finally:
            self.budget.give(len(payload))
            elapsed = time.perf_counter() - start
            with self._count_lock:
                known = self._recent_s != UNKNOWN
                self._recent_s = 0.8 * self._recent_s + 0.2 * elapsed if known else elapsed
                self._queued -= queued
            self._slots.release()

    def _respond(self, payload: bytes) -> tuple[bytes, str | None]:
        """The answer and the reply_to it goes to (None: the device's response topic)."""
        transaction: messages.Transaction | None = None
        reply_to: str | None = None
        try:
            transaction, inputs, reply_to = messages.parse_request(payload)
            return messages.response_payload(transaction, self.infer(inputs)), reply_to
        except messages.MessageError as exc:
            tx = exc.transaction if exc.transaction is not None else transaction
            return messages.response_payload(tx, error=str(exc)), exc.reply_to
        except (InputError, NoModelError) as exc:
            return messages.response_payload(transaction, error=str(exc)), reply_to
        except Exception as exc:  # a handler that throws still answers
            log.exception("MQTT inference failed")
            return messages.response_payload(transaction, error=f"inference failed: {exc}"), reply_to

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

"""Where MQTT requests are answered: on paho's thread while the model answers within two
milliseconds and nothing is queued, in the worker pool otherwise."""

from __future__ import annotations

import json
import threading
import time

from edgefleet.agent.inference import INLINE_S, InferenceService
from edgefleet.agent.installer import ServingModel
from edgefleet.agent.selftest import run_selftest
from edgefleet.protocol import messages
from edgefleet.protocol.bundle import open_bundle
from edgefleet.protocol.signing import TrustStore
from edgefleet.runtime import TFLiteModel


def _wait(answers: list, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(answers) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    assert len(answers) >= count


def test_fast_answers_skip_the_pool_and_slow_ones_and_new_models_use_it(keys, tiny):
    bundle = open_bundle(tiny.bundle.read_bytes(), TrustStore.from_folder(keys.trust_dir))
    model = TFLiteModel(bundle.model_bytes)
    answers: list[tuple[str, dict]] = []
    slow = threading.Event()

    def answer(body: bytes, *where: object) -> None:  # where: the route and reply_to (replies.py)
        if slow.is_set():
            time.sleep(0.015)  # e.g. a large answer on a slow link: the pool takes over
        answers.append((threading.current_thread().name, json.loads(body)))

    service = InferenceService(answer)
    service.activate(ServingModel("b1", bundle, model, time.time(), run_selftest(model, bundle)))
    request = messages.dumps({"transaction": "t", "inputs": tiny.x[0].tolist()})
    here = threading.current_thread().name
    try:
        service.submit(request)  # the model's speed is not known yet: the pool
        _wait(answers, 1)
        # until the moving average shows the model answers within INLINE_S: the first answers of
        # a model include its warm-up, and a loaded machine can stretch one of them past 2 ms
        deadline = time.monotonic() + 20
        while service._recent_s >= INLINE_S and time.monotonic() < deadline:
            service.submit(request)
            _wait(answers, len(answers) + 1)
        assert service._recent_s < INLINE_S, f"the tiny model never answered within {INLINE_S * 1000} ms"
        start = len(answers)
        for _ in range(5):
            service.submit(request)
        assert [name for name, _ in answers[start:]] == [here] * 5  # answered before submit returned
        assert all(a["status"] == "ok" and a["data"]["bundle_id"] == "b1" for _, a in answers)
        slow.set()
        service.submit(request)  # answered here, slowly: from now on the pool
        for _ in range(3):
            service.submit(request)
        _wait(answers, start + 9)
        assert answers[start + 5][0] == here and all(name != here for name, _ in answers[start + 6:])
        slow.clear()
        service.activate(ServingModel("b2", bundle, model, time.time(), run_selftest(model, bundle)))
        service.submit(request)  # a new model: the pool again until it shows its speed
        _wait(answers, start + 10)
        assert answers[start + 9][0] != here and answers[start + 9][1]["data"]["bundle_id"] == "b2"
    finally:
        service.shutdown()

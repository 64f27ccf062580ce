"""Limits on what callers can make the agent do: the HTTP body limit holds whatever
Content-Length says, and MQTT inference requests queue in a bounded pool that answers
`busy` when it is full."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time

from edgefleet.agent.inference import InferenceService
from edgefleet.agent.local_api import LocalApi, start_local_api
from edgefleet.protocol import messages


def _raw_post(port: int, headers: str, body: bytes) -> tuple[int, dict, float]:
    """Send a request by hand (urllib refuses a negative Content-Length); return status,
    body and how many bytes of BODY the server had read when it answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"POST /v1/infer HTTP/1.1\r\nHost: x\r\n{headers}\r\n".encode())
        sent = 0
        s.setblocking(False)
        while sent < len(body):  # stop sending as soon as the server has answered
            try:
                sent += s.send(body[sent:sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break
            except BlockingIOError:
                pass
        s.setblocking(True)
        if sent == len(body):
            with contextlib.suppress(OSError):  # the server may have answered and closed already
                s.shutdown(socket.SHUT_WR)
        response = b""
        while b"\r\n\r\n" not in response or len(response.split(b"\r\n\r\n", 1)[1]) < _length(response):
            chunk = s.recv(65536)
            if not chunk:
                break
            response += chunk
    head, _, payload = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(payload), sent


def _length(response: bytes) -> int:
    for line in response.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_negative_content_length_is_refused_before_the_body_is_read():
    calls: list[object] = []
    server, bound = start_local_api("127.0.0.1:0", LocalApi(lambda x: calls.append(x) or {}, lambda: None))
    try:
        port = int(bound.rsplit(":", 1)[1])
        body = b'{"inputs": [' + b"0," * (5 * 1024 * 1024) + b"0]}"  # 10 MiB, above the 8 MiB limit
        headers = "Content-Type: application/json\r\nContent-Length: -1\r\n"
        status, answer, sent = _raw_post(port, headers, body)
        assert sent < len(body)  # answered before the body was all sent: it was not read
        assert status == 411, answer
        assert "Content-Length" in answer["error"]
        assert calls == []  # nothing reached the model
        status, answer, _ = _raw_post(port, "Content-Type: application/json\r\nContent-Length: x\r\n", b"{}")
        assert status == 411
    finally:
        server.shutdown()
        server.server_close()


def test_mqtt_requests_beyond_the_pending_limit_are_answered_busy_at_once():
    release = threading.Event()
    answers: list[dict] = []
    lock = threading.Lock()

    def answer(body: bytes, *where: object) -> None:  # where: the route and reply_to (replies.py)
        parsed = json.loads(body)
        if parsed.get("code") != "busy":
            release.wait(30)  # the pool's workers stay busy until the test lets them go
        with lock:
            answers.append(parsed)

    service = InferenceService(answer, workers=2, max_pending=4)
    try:
        for i in range(10):
            service.submit(messages.dumps({"transaction": f"t{i}", "inputs": [[0.0]]}))
        with lock:
            busy = [a for a in answers if a.get("code") == "busy"]
        # 2 running + 2 queued; the other 6 were answered on the spot, with their transaction
        assert sorted(a["transaction"] for a in busy) == [f"t{i}" for i in range(4, 10)]
        assert all(a["status"] == "error" and "busy" in a["error"] for a in busy)
        assert service.busy_total == 6
        release.set()
        deadline = time.monotonic() + 10
        while len(answers) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        with lock:
            served = [a for a in answers if a.get("code") != "busy"]
        assert sorted(a["transaction"] for a in served) == ["t0", "t1", "t2", "t3"]
        assert all("no model is active" in a["error"] for a in served)
        # the slots came back: a new request is taken, not refused
        service.submit(messages.dumps({"transaction": "again", "inputs": [[0.0]]}))
        deadline = time.monotonic() + 10
        while len(answers) < 11 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert answers[-1]["transaction"] == "again" and answers[-1].get("code") != "busy"
    finally:
        release.set()
        service.shutdown()


def test_http_requests_past_the_byte_budget_are_busy_before_their_body_is_read():
    """Twelve 8 MB requests at once took the agent to 457 MiB (issue 10): a budget of bytes
    held at once answers the ones that would pass it 503 at once."""
    from edgefleet.agent.budget import ByteBudget

    release = threading.Event()
    budget = ByteBudget(8 * 2**20)

    def infer(x):
        release.wait(30)  # the first request holds its bytes until the test lets it go
        return {"ok": True}

    server, bound = start_local_api("127.0.0.1:0", LocalApi(infer, lambda: None, budget))
    port = int(bound.rsplit(":", 1)[1])
    body = b'{"inputs": [' + b"0," * (3 * 1024 * 1024) + b"0]}"  # 6 MiB: two do not fit
    headers = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    first: list[tuple] = []
    holder = threading.Thread(target=lambda: first.append(_raw_post(port, headers, body)))
    try:
        holder.start()
        deadline = time.monotonic() + 10
        while budget.used < len(body) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert budget.used == len(body)
        status, answer, sent = _raw_post(port, headers, body)
        assert status == 503 and "busy" in answer["error"] and "max_inflight_mib" in answer["error"]
        assert sent < len(body)  # refused on its headers
        release.set()
        holder.join(30)
        assert first[0][0] == 200 and budget.used == 0  # the first one's bytes came back
        status, _, _ = _raw_post(port, headers, body)
        assert status == 200 and budget.used == 0
    finally:
        release.set()
        server.shutdown()
        server.server_close()


def test_mqtt_requests_past_the_byte_budget_are_answered_busy():
    release = threading.Event()
    answers: list[dict] = []

    def answer(body: bytes, *where: object) -> None:  # where: the route and reply_to (replies.py)
        parsed = json.loads(body)
        if parsed.get("code") != "busy":
            release.wait(30)
        answers.append(parsed)

    service = InferenceService(answer, max_pending=32, max_bytes=8 * 2**20)
    big = messages.dumps({"transaction": 1, "inputs": [[0.0] * 1_000_000]})  # 4 MB: two fit in 8 MiB
    try:
        service.submit(big)  # held by the pool (the model's speed is not known yet)
        service.submit(big)  # together they fit 8 MiB
        service.submit(messages.dumps({"transaction": 3, "inputs": [[0.0] * 1_000_000]}))
        busy = [a for a in answers if a.get("code") == "busy"]
        assert [a["transaction"] for a in busy] == [3] and "max_inflight_mib" in busy[0]["error"]
        release.set()
        deadline = time.monotonic() + 10
        while len(answers) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(answers) == 3 and service.budget.used == 0
    finally:
        release.set()
        service.shutdown()

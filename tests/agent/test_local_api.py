"""The local HTTP API over a unix socket, with a real model behind it."""

from __future__ import annotations

import http.client
import json
import socket

import numpy as np
import pytest

from edgefleet.agent.local_api import LocalApi, NoModelError, start_local_api
from edgefleet.protocol.bundle import open_bundle
from edgefleet.protocol.signing import TrustStore
from edgefleet.runtime import TFLiteModel


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost")
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


def _request(path: str, method: str, url: str, body: bytes | None = None,
             ctype: str = "application/json") -> tuple[int, dict]:
    conn = UnixConnection(path)
    conn.request(method, url, body=body, headers={"Content-Type": ctype} if body is not None else {})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


@pytest.fixture
def model(keys, tiny) -> TFLiteModel:
    bundle = open_bundle(tiny.bundle.read_bytes(), TrustStore.from_folder(keys.trust_dir))
    return TFLiteModel(bundle.model_bytes)


def test_unix_socket_serves_json_and_npy(tmp_path, model, tiny):
    def infer(x):
        out, lat = model.predict(x)
        return {"top1": out.argmax(-1).tolist(), "latency_ms": [v * 1000 for v in lat]}

    sock = tmp_path / "run" / "edgefleet.agent.sock"
    server, bound = start_local_api(f"unix:{sock}", LocalApi(infer, lambda: {"bundle_id": "b"}))
    try:
        assert bound == f"unix:{sock}"
        x = tiny.x[:4]
        status, answer = _request(str(sock), "POST", "/v1/infer", json.dumps({"inputs": x.tolist()}).encode())
        assert status == 200 and len(answer["top1"]) == 4
        import io

        buf = io.BytesIO()
        np.save(buf, x)
        status, npy_answer = _request(str(sock), "POST", "/v1/infer", buf.getvalue(), "application/x-npy")
        assert status == 200 and npy_answer["top1"] == answer["top1"]
        assert _request(str(sock), "GET", "/v1/health") == (200, {"status": "ok", "bundle_id": "b"})
        status, err = _request(str(sock), "POST", "/v1/infer", b'{"inputs": [[1, 2]]}')
        assert status == 400 and "input shape" in err["error"]
        assert _request(str(sock), "GET", "/nope")[0] == 404
    finally:
        server.shutdown()
        server.server_close()


def test_no_model_yet_is_503(tmp_path):
    def infer(x):
        raise NoModelError("no model is active yet")

    server, bound = start_local_api("127.0.0.1:0", LocalApi(infer, lambda: None))
    try:
        host, port = bound.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port))
        conn.request("POST", "/v1/infer", body=b'{"inputs": [1]}',
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 503 and "no model" in json.loads(resp.read())["error"]
        conn.request("GET", "/v1/model")
        assert conn.getresponse().status == 503
    finally:
        server.shutdown()
        server.server_close()


def test_nan_inputs_and_an_existing_file_at_the_socket_path_are_refused(tmp_path, model):
    def infer(x):
        out, _ = model.predict(x)
        return {"top1": out.argmax(-1).tolist()}

    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    with pytest.raises(OSError, match="not a socket"):
        start_local_api(f"unix:{precious}", LocalApi(infer, lambda: None))
    assert precious.read_text() == "keep me"

    sock = tmp_path / "edgefleet.agent.sock"
    server, _ = start_local_api(f"unix:{sock}", LocalApi(infer, lambda: None))
    try:
        with pytest.raises(OSError, match="another process is serving"):
            start_local_api(f"unix:{sock}", LocalApi(infer, lambda: None))
        x = np.full((1, 8, 8, 1), np.nan, np.float32)
        wrong_shape = json.dumps({"inputs": [[1.0] * 8] * 8}).encode()
        status, answer = _request(str(sock), "POST", "/v1/infer", wrong_shape)
        assert status == 400 and "input shape" in answer["error"]
        import io

        buf = io.BytesIO()
        np.save(buf, x)
        status, answer = _request(str(sock), "POST", "/v1/infer", buf.getvalue(), "application/x-npy")
        assert status == 400 and "NaN" in answer["error"]
    finally:
        server.shutdown()
        server.server_close()
    assert not sock.exists()  # removed on a clean stop


def _exchange(port: int, data: bytes, answers: int) -> list[tuple[int, dict, bytes]]:
    """Write DATA in one piece and read ANSWERS responses (status, body, head) off the socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        buf, out = b"", []
        while len(out) < answers:
            while b"\r\n\r\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    return out
                buf += chunk
            head, _, buf = buf.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            while len(buf) < length:
                buf += s.recv(65536)
            out.append((int(head.split()[1]), json.loads(buf[:length]), head))
            buf = buf[length:]
    return out


def test_pipelined_requests_unknown_methods_and_garbage_get_their_own_answers(model, tiny):
    def infer(x):
        out, _ = model.predict(x)
        return {"top1": out.argmax(-1).tolist()}

    server, bound = start_local_api("127.0.0.1:0", LocalApi(infer, lambda: {"bundle_id": "b"}))
    port = int(bound.rsplit(":", 1)[1])
    try:
        body = json.dumps({"inputs": tiny.x[:2].tolist()}).encode()
        post = (b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body)
        three = _exchange(port, post + b"GET /v1/health?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n" + post, 3)
        assert [status for status, _, _ in three] == [200, 200, 200]
        assert three[0][1] == three[2][1] and len(three[0][1]["top1"]) == 2
        assert three[1][1]["status"] == "ok"
        put = b"PUT /v1/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        (status, answer, _), = _exchange(port, put, 1)
        assert status == 405 and "GET or POST" in answer["error"]
        (status, answer, head), = _exchange(port, b"HELLO\r\n\r\n", 1)
        assert status == 400 and "not an HTTP/1.1 request" in answer["error"]
        assert b"Connection: close" in head
        (status, answer, _), = _exchange(port, b"POST /v1/infer HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}", 1)
        assert status == 400 and "inputs" in answer["error"]  # HTTP/1.0: answered, then closed
    finally:
        server.shutdown()
        server.server_close()


def test_a_chunked_body_past_the_limit_is_refused_before_it_is_all_read(monkeypatch):
    from edgefleet.agent import local_api

    monkeypatch.setattr(local_api, "MAX_BODY_BYTES", 100_000)
    calls: list[object] = []
    server, bound = start_local_api("127.0.0.1:0", LocalApi(lambda x: calls.append(x) or {}, lambda: None))
    port = int(bound.rsplit(":", 1)[1])
    try:
        chunk = b"%x\r\n" % 60_000 + b"1" * 60_000 + b"\r\n"
        head = b"POST /v1/infer HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        (status, answer, _), = _exchange(port, head + chunk * 2, 1)
        assert status == 413 and "100000" in answer["error"] and calls == []
        small = head + b"2\r\n{}\r\n0\r\n\r\n"  # a chunked body within the limit is served
        (status, answer, _), = _exchange(port, small, 1)
        assert status == 400 and "inputs" in answer["error"]
    finally:
        server.shutdown()
        server.server_close()


def test_beyond_loopback_only_when_asked_for_and_then_with_a_token(tmp_path):
    """Binding the API to the board's network used to happen silently, unauthenticated (issue 10)."""
    from edgefleet.agent.config import ConfigError, parse_config

    base = {"device_id": "d", "state_dir": "s", "trust_dir": "t"}
    for address in ("0.0.0.0:8470", "192.168.1.5:8470", "board.local:8470"):
        with pytest.raises(ConfigError, match="allow_remote"):
            parse_config({**base, "serve": {"http": address}})
    with pytest.raises(ConfigError, match="allow_remote needs token_file"):
        parse_config({**base, "serve": {"http": "0.0.0.0:8470", "allow_remote": True}})
    for address in ("127.0.0.1:8470", "localhost:8470", "[::1]:8470", "unix:/run/a.sock", ""):
        parse_config({**base, "serve": {"http": address}})
    (tmp_path / "token").write_text("0123456789abcdef0123456789abcdef\n")
    cfg = parse_config({**base, "serve": {"http": "0.0.0.0:0", "allow_remote": True, "token_file": "token"}},
                       base=tmp_path)
    assert cfg.serve.token_file == str(tmp_path / "token")

    server, bound = start_local_api("0.0.0.0:0", LocalApi(lambda x: {"ok": True}, lambda: None),
                                    cfg.serve.token_file)
    port = int(bound.rsplit(":", 1)[1])
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("GET", "/v1/health")
        resp = conn.getresponse()
        assert resp.status == 401 and "Bearer" in json.loads(resp.read())["error"]
        for token, status in (("wrong-token-wrong-token", 401), ("0123456789abcdef0123456789abcdef", 200)):
            conn = http.client.HTTPConnection("127.0.0.1", port)
            conn.request("POST", "/v1/infer", body=b'{"inputs": [1]}',
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
            assert conn.getresponse().status == status
    finally:
        server.shutdown()
        server.server_close()
    (tmp_path / "short").write_text("abc")
    with pytest.raises(ValueError, match="at least 16"):
        start_local_api("127.0.0.1:0", LocalApi(lambda x: {}, lambda: None), str(tmp_path / "short"))

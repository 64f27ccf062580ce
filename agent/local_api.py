"""The local inference API: HTTP on 127.0.0.1 or on a unix socket, for applications
on the same board. Bodies are JSON (`{"inputs": [...]}`) or a raw .npy array.

    GET  /v1/health   {"status": "ok", "bundle_id": ...}
    GET  /v1/model    active model: name, version, tensors, runtime, delegate
    POST /v1/infer    JSON {"inputs": [...] | {name: [...]}}, a raw .npy (one-input models)
                      or a raw .npz (arrays by input name)
                      -> {"bundle_id", "outputs": {name: ...}, "top1": {name: ...}, "latency_ms"}
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, NamedTuple

import httptools

from edgefleet.agent.budget import ByteBudget
from edgefleet.agent.config import is_loopback
from edgefleet.protocol import messages
from edgefleet.protocol.limits import MAX_INFER_REQUEST_BYTES
from edgefleet.runtime import InputError

log = logging.getLogger(__name__)
MAX_BODY_BYTES = MAX_INFER_REQUEST_BYTES
NPY_TYPES = ("application/x-npy", "application/octet-stream")
NPZ_TYPE = "application/x-npz"


class NoModelError(Exception):
    """No model is active yet."""


class LocalApi:
    """Callbacks the handler needs from the agent."""

    def __init__(self, infer: Callable[[messages.Requested], dict[str, Any]],
                 model_info: Callable[[], dict[str, Any] | None], budget: ByteBudget | None = None):
        self.infer = infer
        self.model_info = model_info
        self.budget = budget or ByteBudget(16 * 2**20)  # the agent shares its own with MQTT


class _Abort(Exception):
    """Stop reading a request and answer it with STATUS, then close the connection."""

    def __init__(self, status: int, error: str):
        super().__init__(error)
        self.status, self.error = status, error


class _Message(NamedTuple):
    method: str
    path: str
    ctype: str
    body: bytes
    keep_alive: bool
    taken: int  # bytes of the budget it holds until it is answered


class _Request:
    """httptools' callbacks for one connection: the request being read, and those complete."""

    def __init__(self, budget: ByteBudget, token: bytes | None) -> None:
        self.parser: Any = None  # the parser these callbacks belong to
        self.budget, self._bearer = budget, token and b"Bearer " + token
        self.taken = 0  # bytes of the budget the request being read holds
        self.done: list[_Message] = []  # read whole, not answered yet
        self._begin()

    def _begin(self) -> None:
        self.url, self.ctype, self.length, self.authorization = b"", "application/json", None, b""
        self.body: list[bytes] = []
        self.size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.ctype = value.decode("latin-1").split(";")[0].strip()
        elif name == b"content-length":
            self.length = int(value)  # httptools has checked it: digits only
        elif name == b"authorization":
            self.authorization = value

    def on_headers_complete(self) -> None:
        if self._bearer and not hmac.compare_digest(self.authorization, self._bearer):
            raise _Abort(HTTPStatus.UNAUTHORIZED, "this API needs 'Authorization: Bearer <token>', the "
                         "token in the agent's [serve] token_file")
        if self.length is not None and self.length > MAX_BODY_BYTES:
            raise _Abort(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body above {MAX_BODY_BYTES} bytes")
        if self.length:
            self._take(self.length)  # before the body is read

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > MAX_BODY_BYTES:  # a chunked body has no length up front
            raise _Abort(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body above {MAX_BODY_BYTES} bytes")
        if self.length is None:
            self._take(len(body))
        self.body.append(body)

    def _take(self, size: int) -> None:
        if not self.budget.take(size):
            raise _Abort(HTTPStatus.SERVICE_UNAVAILABLE, self.budget.busy_message(size))
        self.taken += size

    def on_message_complete(self) -> None:
        path = self.url.decode("latin-1").split("?", 1)[0]
        method = self.parser.get_method().decode("latin-1")
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        keep_alive = self.parser.should_keep_alive()
        self.done.append(_Message(method, path, self.ctype, body, keep_alive, self.taken))
        self.taken = 0
        self._begin()

    def release(self) -> None:
        """Give back what the request being read and any not yet answered hold."""
        self.budget.give(self.taken + sum(message.taken for message in self.done))
        self.taken = 0
        self.done.clear()


def _response(status: int, body: dict[str, Any], keep_alive: bool = True) -> bytes:
    data = messages.dumps(body)
    head = (f"HTTP/1.1 {int(status)} {HTTPStatus(status).phrase}\r\nServer: edgefleet-agent\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            + ("" if keep_alive else "Connection: close\r\n") + "\r\n")
    return head.encode() + data  # one write: no delayed ACK between head and body


class _Server:
    """HTTP/1.1 with keep-alive, a thread per connection, parsed by httptools (llhttp, the
    parser of Node.js): http.server parses headers with the email package, slowly, and
    costs more memory (benchmarks/agent_choices_bench.py)."""

    IDLE_S = 75.0  # a kept-alive connection with nothing to say is closed, as nginx does

    def __init__(self, sock: socket.socket, api: LocalApi, unix_path: Path | None = None,
                 token: bytes | None = None):
        self.socket, self.api, self.unix_path, self._token = sock, api, unix_path, token
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stopping = False

    def serve_forever(self) -> None:
        while not self._stopping:
            try:
                conn, _ = self.socket.accept()
            except OSError as exc:
                if self._stopping:  # shutdown() closed the listening socket
                    return
                # out of file descriptors, or a client gone before it was accepted: keep serving
                log.warning("local API: accept failed (%s); retrying", exc)
                time.sleep(0.1)
                continue
            with self._lock:
                self._connections.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="local-api-conn", daemon=True).start()

    def shutdown(self) -> None:
        """Stop accepting and hang up on every open connection."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_RDWR)  # wakes accept()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def server_close(self) -> None:
        self.socket.close()
        if self.unix_path is not None:
            self.unix_path.unlink(missing_ok=True)

    def _serve(self, conn: socket.socket) -> None:
        request = _Request(self.api.budget, self._token)
        parser = request.parser = httptools.HttpRequestParser(request)
        if conn.family != socket.AF_UNIX:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(self.IDLE_S)
        try:
            while True:
                data = conn.recv(262144)
                if not data:
                    return
                try:
                    parser.feed_data(data)
                except (httptools.HttpParserCallbackError, httptools.HttpParserError) as exc:
                    abort = exc.__context__ if isinstance(exc.__context__, _Abort) else _bad_request(exc)
                    conn.sendall(_response(abort.status, {"error": abort.error}, keep_alive=False))
                    return
                while request.done:
                    message = request.done.pop(0)
                    try:
                        status, answer = self._answer(message)
                    finally:
                        self.api.budget.give(message.taken)
                    conn.sendall(_response(status, answer, message.keep_alive))
                    if not message.keep_alive:
                        return
        except OSError as exc:  # a client that hangs up or goes quiet is normal
            log.debug("http client went away: %s", exc)
        finally:
            request.release()
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _answer(self, message: _Message) -> tuple[int, dict[str, Any]]:
        method, path, ctype, body = message.method, message.path, message.ctype, message.body
        if method == "GET":
            return self._get(path)
        if method != "POST":
            return HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{method} is not served; GET or POST"}
        if path != "/v1/infer":
            return HTTPStatus.NOT_FOUND, {"error": "POST goes to /v1/infer"}
        try:
            if ctype == NPZ_TYPE:
                inputs: messages.Requested = messages.decode_npz(body)
            elif ctype in NPY_TYPES:
                inputs = messages.decode_npy(body)
            else:
                inputs = messages.inputs_from_json(messages._json_object(body, "request body"))
            return HTTPStatus.OK, self.api.infer(inputs)
        except (messages.MessageError, InputError) as exc:
            return HTTPStatus.BAD_REQUEST, {"error": str(exc)}
        except NoModelError as exc:
            return HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)}
        except Exception as exc:  # a failing request must not take the server down
            log.exception("inference failed")
            return HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"inference failed: {exc}"}

    def _get(self, path: str) -> tuple[int, dict[str, Any]]:
        info = self.api.model_info()
        if path == "/v1/health":
            return HTTPStatus.OK, {"status": "ok", "bundle_id": info and info["bundle_id"]}
        if path == "/v1/model":
            if info is None:
                return HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no model is active yet"}
            return HTTPStatus.OK, info
        return HTTPStatus.NOT_FOUND, {"error": f"no such path {path}; try /v1/health, /v1/model, "
                                      "POST /v1/infer"}


def _bad_request(exc: Exception) -> _Abort:
    if "Content-Length" in str(exc):
        return _Abort(HTTPStatus.LENGTH_REQUIRED,
                      f"Content-Length is required (a number of bytes, 0 or more): {exc}")
    return _Abort(HTTPStatus.BAD_REQUEST, f"not an HTTP/1.1 request: {exc}")


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket left by an agent that died; refuse anything else at PATH."""
    if not path.exists() and not path.is_symlink():
        return
    if not stat.S_ISSOCK(path.lstat().st_mode):
        raise OSError(f"{path} exists and is not a socket; it is not removed")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody answers: stale
            return
    raise OSError(f"another process is serving on {path}")


def read_token(path: str) -> bytes | None:
    if not path:
        return None
    token = Path(path).read_bytes().strip()
    if len(token) < 16:
        raise ValueError(f"token_file {path} holds {len(token)} characters; put at least 16 in it "
                         "(openssl rand -hex 32)")
    return token


def start_local_api(address: str, api: LocalApi, token_file: str = "") -> tuple[_Server, str]:
    """Serve in a background thread; returns the server and the address it really bound.
    With TOKEN_FILE, every request must carry its token (`Authorization: Bearer ...`)."""
    token = read_token(token_file)
    if address.startswith("unix:"):
        path = Path(address[5:])
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(path))
        os.chmod(path, 0o660)
        server, bound = _Server(sock, api, path, token), f"unix:{path}"
    else:
        host, _, port = address.rpartition(":")
        sock = socket.create_server((host, int(port)), reuse_port=False)
        server = _Server(sock, api, token=token)
        bound_host, bound_port = sock.getsockname()[:2]
        if not is_loopback(bound_host):
            log.warning("the local API serves %s beyond this board; every request needs the token", address)
        bound = f"{bound_host}:{bound_port}"
    sock.listen(64)
    threading.Thread(target=server.serve_forever, name="local-api", daemon=True).start()
    return server, bound

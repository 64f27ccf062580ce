"""The local inference API: HTTP on 127.0.0.1 or on a unix socket, for applications
on the same board. Bodies are JSON (`{"inputs": [...]}`) or a raw .npy array.

    GET  /v1/health   {"status": "ok", "bundle_id": ...}
    GET  /v1/model    active model: name, version, tensors, runtime, delegate
    POST /v1/infer    JSON {"inputs": [...] | {name: [...]}}, a raw .npy (one-input models)
                      or a raw .npz (arrays by input name)
                      -> {"bundle_id", "outputs": {name: ...}, "top1": {name: ...}, "latency_ms"}
"""

from __future__ import annotations

import json
import logging
import os
import socket
import socketserver
import stat
import sys
import threading
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

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
                 model_info: Callable[[], dict[str, Any] | None]):
        self.infer = infer
        self.model_info = model_info


def _handler(api: LocalApi, tcp: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "edgefleet-agent"
        protocol_version = "HTTP/1.1"
        # headers and body go out as two writes; with Nagle on, a keep-alive client
        # waits for the delayed ACK (~40 ms) on every request (TCP only: unix sockets
        # have no such option)
        disable_nagle_algorithm = tcp

        def address_string(self) -> str:  # unix sockets have no peer address
            return str(self.client_address[0]) if self.client_address else "unix"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http %s " + format, self.address_string(), *args)

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            info = api.model_info()
            if self.path == "/v1/health":
                self._send(HTTPStatus.OK, {"status": "ok", "bundle_id": info and info["bundle_id"]})
            elif self.path == "/v1/model":
                if info is None:
                    self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "no model is active yet"})
                else:
                    self._send(HTTPStatus.OK, info)
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no such path {self.path}; "
                                                  "try /v1/health, /v1/model, POST /v1/infer"})

        def do_POST(self) -> None:
            if self.path != "/v1/infer":
                self._send(HTTPStatus.NOT_FOUND, {"error": "POST goes to /v1/infer"})
                return
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                length = -1
            if length < 0:  # rfile.read(-1) would read until EOF, past the size limit
                self._send(HTTPStatus.LENGTH_REQUIRED,
                           {"error": "Content-Length is required (a number of bytes, 0 or more)"})
                self.close_connection = True
                return
            if length > MAX_BODY_BYTES:
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           {"error": f"body above {MAX_BODY_BYTES} bytes"})
                self.close_connection = True
                return
            body = self.rfile.read(length)
            ctype = self.headers.get("Content-Type", "application/json").split(";")[0].strip()
            try:
                if ctype == NPZ_TYPE:
                    inputs: messages.Requested = messages.decode_npz(body)
                elif ctype in NPY_TYPES:
                    inputs = messages.decode_npy(body)
                else:
                    inputs = messages.inputs_from_json(messages._json_object(body, "request body"))
                result = api.infer(inputs)
            except (messages.MessageError, InputError) as exc:
                self._send(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            except NoModelError as exc:
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
            except Exception as exc:  # a failing request must not take the server down
                log.exception("inference failed")
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"inference failed: {exc}"})
            else:
                self._send(HTTPStatus.OK, result)

    return Handler


class _QuietErrors:
    """A client that hangs up mid-request is normal; anything else is logged, not printed."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError):
            log.debug("http client %s went away: %s", client_address, exc)
        else:
            log.exception("http request from %s failed", client_address)


class _TCPHTTPServer(_QuietErrors, ThreadingHTTPServer):
    daemon_threads = True


class _UnixHTTPServer(_QuietErrors, socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def server_close(self) -> None:
        super().server_close()
        Path(self.server_address).unlink(missing_ok=True)  # type: ignore[arg-type]


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


def start_local_api(address: str, api: LocalApi) -> tuple[socketserver.BaseServer, str]:
    """Serve in a background thread; returns the server and the address it really bound."""
    server: socketserver.BaseServer
    unix = address.startswith("unix:")
    handler = _handler(api, tcp=not unix)
    if unix:
        path = Path(address[5:])
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale_socket(path)
        server = _UnixHTTPServer(str(path), handler)
        os.chmod(path, 0o660)
        bound = f"unix:{path}"
    else:
        host, _, port = address.rpartition(":")
        server = _TCPHTTPServer((host, int(port)), handler)
        bound = f"{server.server_address[0]}:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, name="local-api", daemon=True).start()
    return server, bound

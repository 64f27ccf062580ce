"""Payloads of every MQTT message: builders and strict parsers (see docs/protocol.md).

Inbound payloads are untrusted: a parser either returns clean values or raises
MessageError with a reason that can be sent back to the sender.
"""

from __future__ import annotations

import functools
import io
import math
import time
from typing import Any, NamedTuple

import numpy as np
import orjson
import pybase64
from numpy.lib import format as npy_format

from edgefleet.protocol.limits import MAX_INFER_REQUEST_BYTES
from edgefleet.protocol.topics import is_id

REPORTED = "edgefleet.reported/1"
TELEMETRY = "edgefleet.telemetry/2"
STATUS_ONLINE, STATUS_OFFLINE, STATUS_STOPPED = "online", "offline", "stopped"


Transaction = str | int  # the caller's id for a request, echoed as it came
MAX_TRANSACTION_CHARS = 256


class MessageError(ValueError):
    """An inbound payload is malformed; the message says what is wrong.

    `transaction` is the caller's id and `reply_to` where they asked to be answered, when
    these could be read, so the answer still reaches them.
    """

    def __init__(self, message: str, transaction: Transaction | None = None, reply_to: str | None = None):
        super().__init__(message)
        self.transaction, self.reply_to = transaction, reply_to


def _as_json(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):  # one orjson does not write itself (not C-contiguous)
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def dumps(obj: Any) -> bytes:
    """Compact JSON; NumPy arrays as nested lists. orjson, because json.dumps takes twenty
    times as long for an ImageNet model's class scores (benchmarks/agent_choices_bench.py);
    a NaN or infinite number is written as null, which every JSON reader takes."""
    return orjson.dumps(obj, default=_as_json, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


def _json_object(payload: bytes, what: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(payload)  # UTF-8 only, nesting at most 1,024 deep
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MessageError(f"{what} must be a JSON object")
    return obj


def status_payload(state: str, stamped: bool = True, instance: str | None = None,
                   since: float | None = None) -> bytes:
    """`{"state", "ts", "instance"}`; the last will is not STAMPED: the broker sends it later,
    when it notices the device has gone, so any time in it would be the connect time (it says
    so as SINCE instead). INSTANCE: the agent process's own id, so that another agent with the
    same device id shows."""
    body: dict[str, Any] = {"state": state, "ts": time.time()} if stamped else {"state": state}
    if instance:
        body["instance"] = instance
    if since is not None:
        body["since"] = since
    return dumps(body)


def encode_array(array: np.ndarray) -> str:
    """An array as base64 of its .npy bytes (exact dtype and shape)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return pybase64.b64encode(buf.getvalue()).decode()


def encode_arrays(arrays: dict[str, np.ndarray]) -> str:
    """Arrays by name as base64 of their .npz bytes (exact dtypes and shapes)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return pybase64.b64encode(buf.getvalue()).decode()


@functools.lru_cache(maxsize=32)
def _npy_header(header: bytes) -> tuple[tuple[int, ...], bool, np.dtype]:
    """NumPy's own reading of a .npy header, once per distinct header: a client sends the
    same one with every request, and np.load parses it again each time
    (benchmarks/agent_choices_bench.py)."""
    f = io.BytesIO(header)
    version = npy_format.read_magic(f)
    read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if f.tell() != len(header):
        raise ValueError("the header's length field does not match the header")
    if dtype.hasobject:
        raise ValueError("arrays of Python objects are refused (they would need unpickling)")
    return shape, fortran, dtype


def decode_npy(data: bytes) -> np.ndarray:
    """The array in .npy bytes (np.save output), read-only, without a copy; never unpickles."""
    if not data.startswith(b"\x93NUMPY") or len(data) < 12:
        raise MessageError("the body is not a .npy array (no NumPy header); send np.save output, "
                           "or JSON with Content-Type application/json")
    try:
        # the header's length: 2 bytes in version 1, 4 in versions 2 and 3 (NEP 1)
        size = 2 if data[6] == 1 else 4
        end = 8 + size + int.from_bytes(data[8:8 + size], "little")
        shape, fortran, dtype = _npy_header(data[:end])
        count = math.prod(shape)
        array = np.frombuffer(data, dtype=dtype, count=count, offset=end)
        return array.reshape(shape, order="F" if fortran else "C")
    except (ValueError, OSError, EOFError, OverflowError) as exc:
        raise MessageError(f"not a readable .npy array: {exc}") from None


def decode_npz(data: bytes) -> dict[str, np.ndarray]:
    """Arrays by input name from .npz bytes (np.savez output); never unpickles."""
    if not data.startswith(b"PK"):
        raise MessageError("the body is not a .npz file (no zip header); send np.savez output")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except Exception as exc:  # a damaged zip can raise from deep inside zipfile or zlib
        raise MessageError(f"not a readable .npz file: {type(exc).__name__}: {exc}") from None
    if not arrays:
        raise MessageError("the .npz file holds no arrays")
    return arrays


Requested = np.ndarray | dict[str, np.ndarray]  # one array (one-input models) or arrays by input name


MAX_REPLY_TO_LEVELS = 4


class InferRequest(NamedTuple):
    transaction: Transaction | None
    inputs: Requested
    reply_to: str | None  # levels below the device's response topic to answer on


def check_reply_to(value: Any) -> str:
    """A reply_to suffix: 1-4 levels of id characters, so that no answer can leave the
    device's own response sub-tree (no '+', '#', '..' or empty level)."""
    if not isinstance(value, str):
        raise MessageError(f"reply_to must be a string, not {type(value).__name__}")
    levels = value.split("/")
    if len(levels) > MAX_REPLY_TO_LEVELS or not all(is_id(level) for level in levels):
        raise MessageError(f"reply_to {value[:80]!r} must be 1-{MAX_REPLY_TO_LEVELS} levels of letters, "
                           "digits, '.', '_' or '-' (each starting with a letter or digit): the answer "
                           "goes to <prefix>/devices/<id>/response/infer/<reply_to>")
    return value


def parse_request(payload: bytes) -> InferRequest:
    """The request `{"transaction": .., "reply_to": "..", "inputs": [...] | {name: [...]},
    "inputs_npy": b64 | "inputs_npz": b64}`."""
    if len(payload) > MAX_INFER_REQUEST_BYTES:
        raise MessageError(f"request larger than {MAX_INFER_REQUEST_BYTES} bytes")
    obj = _json_object(payload, "inference request")
    tx = _transaction(obj)
    try:
        reply_to = check_reply_to(obj["reply_to"]) if obj.get("reply_to") is not None else None
    except MessageError as exc:  # answered on the device's own response topic
        raise MessageError(str(exc), tx) from None
    try:
        return InferRequest(tx, inputs_from_json(obj), reply_to)
    except MessageError as exc:
        raise MessageError(str(exc), tx, reply_to) from None


def _transaction(obj: dict[str, Any]) -> Transaction | None:
    tx = obj.get("transaction")
    if tx is not None and (isinstance(tx, bool) or not isinstance(tx, (str, int))):
        raise MessageError(f"transaction must be a string or an integer, not {type(tx).__name__}")
    if isinstance(tx, str) and len(tx) > MAX_TRANSACTION_CHARS:
        raise MessageError(f"transaction longer than {MAX_TRANSACTION_CHARS} characters")
    return tx


def _b64(obj: dict[str, Any], key: str) -> bytes:
    if not isinstance(obj[key], str):
        raise MessageError(f"{key} must be a base64 string")
    try:
        return pybase64.b64decode(obj[key], validate=True)  # SIMD (benchmarks/agent_choices_bench.py)
    except ValueError:
        raise MessageError(f"{key} is not valid base64") from None


def _numbers(value: Any, what: str) -> np.ndarray:
    if value is None:
        raise MessageError(f"{what} is null; give a nested list of numbers")
    try:
        # a number beyond float32 becomes inf, which the input check refuses by name (tensors.py):
        # NumPy's overflow warning would only reach the agent's log (found by test_fuzz_payloads.py)
        with np.errstate(over="ignore"):
            return np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError, RecursionError):
        raise MessageError(f"{what} must be a rectangular nested list of numbers") from None


def inputs_from_json(obj: dict[str, Any]) -> Requested:
    if "inputs_npy" in obj:
        return decode_npy(_b64(obj, "inputs_npy"))
    if "inputs_npz" in obj:
        return decode_npz(_b64(obj, "inputs_npz"))
    if "inputs" not in obj:
        raise MessageError("request needs 'inputs' (a nested list, or nested lists by input name), "
                           "'inputs_npy' (base64 .npy) or 'inputs_npz' (base64 .npz, arrays by input name)")
    inputs = obj["inputs"]
    if isinstance(inputs, dict):
        if not inputs or not all(isinstance(k, str) for k in inputs):
            raise MessageError("inputs by name must map each input's name to a nested list")
        return {name: _numbers(value, f"inputs[{name!r}]") for name, value in inputs.items()}
    return _numbers(inputs, "inputs")


def response_payload(transaction: Transaction | None, data: Any = None, error: str | None = None,
                     code: str | None = None) -> bytes:
    """zigbee2mqtt-style answer: {status, data, error, transaction}; CODE names an error
    a client handles by itself (`busy`: retry later)."""
    body: dict[str, Any] = {"status": "error" if error else "ok", "data": data if not error else None}
    if error:
        body["error"] = error
    if code:
        body["code"] = code
    if transaction is not None:
        body["transaction"] = transaction
    return dumps(body)

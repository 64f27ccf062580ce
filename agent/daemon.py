"""The agent daemon: follow the desired state, fetch and verify bundles, self-test,
activate atomically, serve inference, report state and telemetry.

Threads: paho's network loop only queues work; one worker thread owns install
state (so no install step races another); inference runs on the caller's thread
(HTTP) or a small pool (MQTT) against whichever model is active when it starts, so
a swap never drops a request in flight.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from edgefleet import __version__
from edgefleet.agent.config import AgentConfig
from edgefleet.agent.local_api import LocalApi, NoModelError, start_local_api
from edgefleet.agent.selftest import SelfTestResult, run_selftest
from edgefleet.agent.store import Store
from edgefleet.agent.telemetry import InferenceStats, SystemSampler, telemetry_payload
from edgefleet.devices.board import board_model, board_profile
from edgefleet.mqtt_options import disable_nagle
from edgefleet.protocol import messages
from edgefleet.protocol.bundle import Bundle, BundleError, open_bundle, sha256_hex
from edgefleet.protocol.delivery import (
    DeliveryError,
    TransferManifest,
    bundle_id_for,
    parse_transfer_manifest,
)
from edgefleet.protocol.signing import SignatureError, TrustStore
from edgefleet.runtime import InputError, RuntimeLoadError, TFLiteModel, find_runtime

log = logging.getLogger("edgefleet.agent")
QOS = 1
REPORT_EVERY_S = 1.0  # at most one progress report a second while downloading


class AgentStartError(Exception):
    """The agent cannot start; the message says what to change."""


@dataclass
class ServingModel:
    bundle_id: str
    bundle: Bundle
    model: TFLiteModel
    activated_at: float
    selftest: SelfTestResult

    def info(self) -> dict[str, Any]:
        return {"bundle_id": self.bundle_id, "name": self.bundle.name,
                "version": self.bundle.version, "activated_at": self.activated_at}


@dataclass
class Transfer:
    """One bundle being fetched, chunk by chunk."""

    bundle_id: str
    token: tuple[str, float]
    manifest: TransferManifest | None = None
    pending: deque[int] = field(default_factory=deque)  # not yet asked for
    requested: dict[int, float] = field(default_factory=dict)  # chunk -> when subscribed
    bad: dict[int, int] = field(default_factory=dict)
    have: int = 0
    started_at: float = field(default_factory=time.monotonic)


class Agent:
    def __init__(self, config: AgentConfig):
        self.cfg = config
        self.topics = config.topics
        self.device_id = config.device_id
        try:
            self.store = Store(config.state_dir)
        except OSError as exc:
            raise AgentStartError(f"state_dir {config.state_dir} cannot be used: {exc}") from None
        self.stats = InferenceStats()
        self.system = SystemSampler()
        self.serving: ServingModel | None = None
        self.install: dict[str, Any] | None = None
        self.last_error: dict[str, Any] | None = None
        self.desired_device = messages.Desired(None)
        self.desired_groups: dict[str, messages.Desired] = {}
        self.desired_source: str | None = None
        self.transfer: Transfer | None = None
        self.failed_tokens: set[tuple[str, float]] = set()
        self.local_api_address: str | None = None
        self.board = board_model()
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._stop = threading.Event()
        self._infer_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mqtt-infer")
        self._last_report = 0.0
        self._report_due = False
        self._http_server: Any = None
        self.client = self._make_client()

    # MQTT plumbing (network thread: queue only)
    def _make_client(self) -> mqtt.Client:
        client_id = self.cfg.mqtt.client_id or f"edgefleet-agent-{self.device_id}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv311, clean_session=True)
        client.will_set(self.topics.status(self.device_id),
                        messages.status_payload(messages.STATUS_OFFLINE), qos=QOS, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            log.error("broker %s:%s refused the connection: %s", self.cfg.mqtt.host,
                      self.cfg.mqtt.port, reason_code)
            return
        disable_nagle(client)
        log.info("connected to broker %s:%s", self.cfg.mqtt.host, self.cfg.mqtt.port)
        self._events.put(("connected",))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        log.warning("cannot reach the broker at %s:%s; retrying (the local API keeps serving)",
                    self.cfg.mqtt.host, self.cfg.mqtt.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        if not self._stop.is_set():
            log.warning("lost the broker (%s); reconnecting, downloads resume from disk", reason_code)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.topics.request(self.device_id, "infer"):
            self._infer_pool.submit(self._answer_infer, bytes(msg.payload))
        else:
            self._events.put(("message", msg.topic, bytes(msg.payload)))

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        # Offline, paho would queue without bound; reported state is sent afresh on
        # reconnection, and a bounded telemetry spool is planned (docs/architecture.md).
        if self.client.is_connected():
            self.client.publish(topic, payload, qos=QOS, retain=retain)

    # life cycle
    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (or stop())."""
        try:
            find_runtime(self.cfg.runtime.runtime)
        except RuntimeLoadError as exc:
            raise AgentStartError(f"[runtime] runtime = {self.cfg.runtime.runtime!r}: {exc}") from None
        if not self.cfg.trust_dir.is_dir():
            log.warning("trust_dir %s does not exist: every bundle will be refused until it holds "
                        "the publisher's .pub key", self.cfg.trust_dir)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        self._load_active_from_disk()
        if self.cfg.serve.http:
            api = LocalApi(self.infer, self.model_info)
            try:
                self._http_server, self.local_api_address = start_local_api(self.cfg.serve.http, api)
            except (OSError, ValueError) as exc:
                raise AgentStartError(
                    f"cannot serve the local API on {self.cfg.serve.http}: {exc}; choose another "
                    "address in [serve] http, or \"\" to turn it off") from None
            log.info("local inference API on %s", self.local_api_address)
        self.client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, self.cfg.mqtt.keepalive)
        self.client.loop_start()
        next_telemetry = time.monotonic() + self.cfg.telemetry.interval_s
        try:
            while not self._stop.is_set():
                try:
                    event = self._events.get(timeout=0.2)
                except queue.Empty:
                    event = None
                try:
                    if event is not None:
                        self._handle(event)
                    self._check_transfer_timeouts()
                    self._flush_reported()
                    if time.monotonic() >= next_telemetry:
                        next_telemetry = time.monotonic() + self.cfg.telemetry.interval_s
                        self._publish_telemetry()
                except Exception as exc:  # the daemon outlives any one bad event
                    log.exception("error while handling %s", event and event[:2])
                    t = self.transfer
                    if t is not None and event is not None and event[0] == "message" \
                            and event[1].startswith(f"{self.topics.prefix}/bundles/{t.bundle_id}/"):
                        self._fail(t.token, "download", f"unexpected error: {type(exc).__name__}: {exc}")
        finally:
            self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    def _shutdown(self) -> None:
        log.info("stopping")
        if self.client.is_connected():
            info = self.client.publish(self.topics.status(self.device_id),
                                       messages.status_payload(messages.STATUS_STOPPED),
                                       qos=QOS, retain=True)
            info.wait_for_publish(timeout=5)
            self.client.disconnect()
        self.client.loop_stop()
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
        self._infer_pool.shutdown(wait=True)

    def _handle(self, event: tuple[Any, ...]) -> None:
        if event[0] == "connected":
            self._subscribe_all()
            self._publish_reported(force=True)
            self._publish(self.topics.status(self.device_id),
                          messages.status_payload(messages.STATUS_ONLINE), retain=True)
            return
        _, topic, payload = event
        if topic == self.topics.device_desired(self.device_id):
            self._set_desired(payload, None)
        elif topic.startswith(f"{self.topics.prefix}/groups/"):
            group = topic.split("/")[-2]
            if group in self.cfg.groups:
                self._set_desired(payload, group)
        elif self.transfer and topic == self.topics.bundle_manifest(self.transfer.bundle_id):
            self._on_transfer_manifest(payload)
        elif self.transfer and topic.startswith(self.topics.bundle_chunk(self.transfer.bundle_id, 0)[:-1]):
            self._on_chunk(topic, payload)

    def _subscribe_all(self) -> None:
        subs = [self.topics.device_desired(self.device_id)]
        subs += [self.topics.group_desired(g) for g in self.cfg.groups]
        if self.cfg.serve.mqtt:
            subs.append(self.topics.request(self.device_id, "infer"))
        self.client.subscribe([(t, QOS) for t in subs])
        t = self.transfer
        if t is not None:  # clean session: the broker forgot our subscriptions
            if t.manifest is None:
                self.client.subscribe(self.topics.bundle_manifest(t.bundle_id), QOS)
            for index in t.requested:
                t.requested[index] = time.monotonic()
                self.client.subscribe(self.topics.bundle_chunk(t.bundle_id, index), QOS)

    # desired state
    def _set_desired(self, payload: bytes, group: str | None) -> None:
        try:
            desired = messages.parse_desired(payload)
        except messages.MessageError as exc:
            where = f"group {group}" if group else "device"
            self._record_error(None, "desired", f"{where} desired state ignored: {exc}")
            return
        if group is None:
            self.desired_device = desired
        else:
            self.desired_groups[group] = desired
        self._reconcile()

    def _effective_desired(self) -> tuple[messages.Desired, str | None]:
        if self.desired_device.bundle_id:
            return self.desired_device, "device"
        for g in self.cfg.groups:  # the first listed group wins
            d = self.desired_groups.get(g)
            if d and d.bundle_id:
                return d, f"group:{g}"
        return messages.Desired(None), None

    def _reconcile(self) -> None:
        want, self.desired_source = self._effective_desired()
        bundle_id = want.bundle_id
        if bundle_id is None or (self.serving and self.serving.bundle_id == bundle_id):
            # nothing to install (any earlier failure stays in last_error)
            self._abort_transfer()
            self.install = None
            self._publish_reported(force=True)
            return
        if self.transfer and self.transfer.bundle_id == bundle_id:
            return
        token = (bundle_id, want.set_at)
        if token in self.failed_tokens:
            self._publish_reported(force=True)
            return
        self._abort_transfer()
        installed = self.store.installed(bundle_id)
        if installed is not None:  # e.g. a rollback to the previous version
            try:
                bundle = open_bundle(installed, self._trust())
            except (BundleError, SignatureError) as exc:
                # a damaged copy on disk must not block the good one on the broker
                log.warning("stored copy of %s is unusable (%s); downloading it again", bundle_id, exc)
                self.store.remove_bundle(bundle_id)
            else:
                self._install(bundle_id, token, installed, stored=bundle)
                return
        self.transfer = Transfer(bundle_id=bundle_id, token=token)
        self._set_install(bundle_id, "downloading", progress=0.0)
        self.client.subscribe(self.topics.bundle_manifest(bundle_id), QOS)
        log.info("fetching bundle %s", bundle_id)

    def _abort_transfer(self) -> None:
        t, self.transfer = self.transfer, None
        if t is None:
            return
        topics = [self.topics.bundle_manifest(t.bundle_id)]
        topics += [self.topics.bundle_chunk(t.bundle_id, i) for i in t.requested]
        self.client.unsubscribe(topics)
        self.store.discard_download(t.bundle_id)  # no one wants it now; it would only fill the disk

    # delivery
    def _on_transfer_manifest(self, payload: bytes) -> None:
        t = self.transfer
        assert t is not None
        if t.manifest is not None or not payload:
            return
        try:
            m = parse_transfer_manifest(payload, self._trust(), t.bundle_id)
        except (DeliveryError, SignatureError) as exc:
            self._fail(t.token, "manifest", str(exc))
            return
        self.client.unsubscribe(self.topics.bundle_manifest(t.bundle_id))
        t.manifest = m
        self.store.save_transfer_manifest(t.bundle_id, payload)
        missing = self.store.missing_chunks(m)
        t.have = m.chunk_count - len(missing)
        t.pending = deque(missing)
        log.info("bundle %s: %d chunk(s), %d already on disk", t.bundle_id, m.chunk_count, t.have)
        self._request_more()
        self._progress()

    def _request_more(self) -> None:
        t = self.transfer
        assert t is not None and t.manifest is not None
        while t.pending and len(t.requested) < self.cfg.delivery.window:
            index = t.pending.popleft()
            t.requested[index] = time.monotonic()
            self.client.subscribe(self.topics.bundle_chunk(t.bundle_id, index), QOS)
        if not t.pending and not t.requested:
            self._finish_transfer()

    def _on_chunk(self, topic: str, payload: bytes) -> None:
        t = self.transfer
        assert t is not None
        try:
            index = int(topic.rsplit("/", 1)[1])
        except ValueError:
            return
        if t.manifest is None or index not in t.requested:
            return  # a late duplicate of a chunk we already have
        if not t.manifest.chunk_ok(index, payload):
            t.bad[index] = t.bad.get(index, 0) + 1
            log.warning("bundle %s chunk %d failed its SHA-256 check (%d time(s))",
                        t.bundle_id, index, t.bad[index])
            if t.bad[index] >= self.cfg.delivery.max_bad_chunks:
                self._fail(t.token, "download",
                           f"chunk {index} failed its SHA-256 check {t.bad[index]} times; the copy "
                           "on the broker is damaged: publish the bundle again")
                return
            # fetch it again shortly: resubscribing makes the broker resend the retained copy
            self.client.unsubscribe(topic)
            t.requested[index] = time.monotonic() - self.cfg.delivery.chunk_timeout_s + 1.0
            return
        self.store.write_chunk(t.manifest, index, payload)
        self.client.unsubscribe(topic)
        del t.requested[index]
        t.have += 1
        self._progress()
        self._request_more()

    def _check_transfer_timeouts(self) -> None:
        t = self.transfer
        if t is None:
            return
        now = time.monotonic()
        if t.manifest is None:
            waited = now - t.started_at
            if waited > self.cfg.delivery.manifest_timeout_s:
                self._fail(t.token, "manifest",
                           f"no manifest for {t.bundle_id} on the broker after {waited:.0f} s: publish the "
                           "bundle (edgefleet publish) and set the desired state again")
            return
        for index, since in list(t.requested.items()):
            if now - since > self.cfg.delivery.chunk_timeout_s:
                topic = self.topics.bundle_chunk(t.bundle_id, index)
                log.info("bundle %s chunk %d not received; asking again", t.bundle_id, index)
                self.client.unsubscribe(topic)
                self.client.subscribe(topic, QOS)
                t.requested[index] = now

    def _progress(self) -> None:
        t = self.transfer
        if t is None or t.manifest is None:
            return
        total = t.manifest.chunk_count
        self._set_install(t.bundle_id, "downloading", progress=round(t.have / total, 4),
                          chunks_have=t.have, chunks_total=total, force=t.have == total)

    def _finish_transfer(self) -> None:
        t = self.transfer
        assert t is not None and t.manifest is not None
        try:
            data = self.store.assemble(t.manifest)
        except (OSError, ValueError) as exc:
            self.store.discard_download(t.bundle_id)
            self._fail(t.token, "download", str(exc))
            return
        self.transfer = None
        self._install(t.bundle_id, t.token, data)
        self.store.discard_download(t.bundle_id)

    # verify, self-test, activate
    def _install(self, bundle_id: str, token: tuple[str, float], data: bytes,
                 stored: Bundle | None = None) -> None:
        """Verify, self-test and activate DATA. STORED: DATA came from the store and was
        opened there already, so it is neither opened nor written again."""
        self._set_install(bundle_id, "verifying", force=True)
        try:
            bundle = stored or open_bundle(data, self._trust())
            expected = bundle_id_for(bundle.name, bundle.version, sha256_hex(data))
            if expected != bundle_id:
                raise BundleError(f"bundle content is {expected}, not {bundle_id}")
        except (BundleError, SignatureError) as exc:
            self._fail(token, "verify", str(exc))
            return
        if stored is None:
            self.store.install(bundle_id, data)
        self._set_install(bundle_id, "self-testing", force=True)
        try:
            serving = self._load(bundle_id, bundle)
        except RuntimeLoadError as exc:
            self._fail(token, "self-test", str(exc), drop=bundle_id)
            return
        if not serving.selftest.passed:
            self._fail(token, "self-test", f"golden self-test failed: {serving.selftest.reason}",
                       drop=bundle_id)
            return
        self.store.set_active(bundle_id)
        self.serving = serving  # one reference swap: requests in flight keep the old model
        self.last_error = None
        log.info("bundle %s active (self-test %.0f%% agreement on %d samples)", bundle_id,
                 100 * serving.selftest.top1_agreement, serving.selftest.samples)
        self._set_install(bundle_id, "active", progress=1.0, force=True)

    def _load(self, bundle_id: str, bundle: Bundle) -> ServingModel:
        rt = self.cfg.runtime
        model = TFLiteModel(bundle.model_bytes, runtime=rt.runtime, delegate=rt.delegate,
                            num_threads=rt.num_threads or None, delegate_options=rt.delegate_options,
                            allow_cpu_fallback=rt.allow_cpu_fallback)
        result = run_selftest(model, bundle)  # its first invoke is the model's cold start
        return ServingModel(bundle_id, bundle, model, time.time(), result)

    def _load_active_from_disk(self) -> None:
        """Serve what was active before a restart; fall back to the previous bundle."""
        record = self.store.active_record()
        for key in ("active", "previous"):
            bundle_id = record.get(key)
            data = self.store.installed(bundle_id) if isinstance(bundle_id, str) else None
            if data is None:
                continue
            try:
                bundle = open_bundle(data, self._trust())
            except (BundleError, SignatureError) as exc:
                # damaged on disk: remove it, so that publishing it again downloads a good copy
                self.store.remove_bundle(bundle_id)
                self._record_error(bundle_id, "startup", f"stored bundle unusable, removed: {exc}")
                continue
            try:
                serving = self._load(bundle_id, bundle)
            except RuntimeLoadError as exc:
                self._record_error(bundle_id, "startup", f"stored bundle does not load: {exc}")
                continue
            if serving.selftest.passed:
                self.serving = serving
                if key == "previous":
                    self.store.fall_back_to(bundle_id)
                log.info("serving %s from disk", bundle_id)
                return
            self._record_error(bundle_id, "startup", f"self-test failed: {serving.selftest.reason}")

    def _fail(self, token: tuple[str, float], stage: str, reason: str, drop: str | None = None) -> None:
        bundle_id = token[0]
        log.error("bundle %s refused at %s: %s", bundle_id, stage, reason)
        self.failed_tokens.add(token)
        if self.transfer and self.transfer.bundle_id == bundle_id:
            self._abort_transfer()
        if drop and not (self.serving and self.serving.bundle_id == drop):
            self.store.remove_bundle(drop)
        self._record_error(bundle_id, stage, reason, publish=False)
        self._set_install(bundle_id, "failed", stage=stage, reason=reason, force=True)

    def _trust(self) -> TrustStore:
        # read on every use, so keys added to or removed from the folder apply at once
        return TrustStore.from_folder(self.cfg.trust_dir)

    # inference
    def infer(self, inputs: np.ndarray) -> dict[str, Any]:
        serving = self.serving
        if serving is None:
            raise NoModelError("no model is active yet; publish one with 'edgefleet publish'")
        try:
            outputs, latencies = serving.model.predict(inputs)
        except InputError:
            self.stats.record_error()
            raise
        self.stats.record(latencies)
        return {"bundle_id": serving.bundle_id, "outputs": outputs.tolist(),
                "top1": outputs.argmax(-1).tolist(),
                "latency_ms": [round(s * 1000, 4) for s in latencies]}

    def _answer_infer(self, payload: bytes) -> None:
        transaction = None
        try:
            transaction, inputs = messages.parse_infer_request(payload)
            body = messages.response_payload(transaction, self.infer(inputs))
        except messages.MessageError as exc:
            body = messages.response_payload(exc.transaction or transaction, error=str(exc))
        except (InputError, NoModelError) as exc:
            body = messages.response_payload(transaction, error=str(exc))
        except Exception as exc:  # a handler that throws still answers
            log.exception("MQTT inference failed")
            body = messages.response_payload(transaction, error=f"inference failed: {exc}")
        self._publish(self.topics.response(self.device_id, "infer"), body)

    def model_info(self) -> dict[str, Any] | None:
        serving = self.serving
        if serving is None:
            return None
        m = serving.model
        return {**serving.info(), "inputs": [s.as_dict() for s in m.inputs],
                "outputs": [s.as_dict() for s in m.outputs],
                "runtime": {"name": m.runtime.name, "version": m.runtime.version},
                "delegate": m.delegate.as_dict(), "selftest": serving.selftest.as_dict()}

    # reporting
    def _record_error(self, bundle_id: str | None, stage: str, reason: str, publish: bool = True) -> None:
        self.last_error = {"bundle_id": bundle_id, "stage": stage, "reason": reason, "at": time.time()}
        if publish:
            log.error("%s", reason)
            self._publish_reported(force=True)

    def _set_install(self, bundle_id: str, state: str, force: bool = False, **extra: Any) -> None:
        self.install = {"bundle_id": bundle_id, "state": state, "updated_at": time.time(), **extra}
        self._publish_reported(force=force)

    def _publish_reported(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < REPORT_EVERY_S:
            self._report_due = True  # sent by _flush_reported once the second is over
            return
        self._last_report = now
        self._report_due = False
        self._publish(self.topics.reported(self.device_id), self.reported_payload(), retain=True)

    def _flush_reported(self) -> None:
        if self._report_due and time.monotonic() - self._last_report >= REPORT_EVERY_S:
            self._publish_reported(force=True)

    def reported_payload(self) -> bytes:
        serving = self.serving
        install = self.install
        busy = install and install["state"] in ("downloading", "verifying", "self-testing")
        state = install["state"] if busy or (install and install["state"] == "failed") else (
            "active" if serving else "idle")
        want, _ = self._effective_desired()
        active = None
        if serving:
            active = {**serving.info(), "selftest": serving.selftest.as_dict(),
                      "runtime": {"name": serving.model.runtime.name,
                                  "version": serving.model.runtime.version},
                      "delegate": serving.model.delegate.as_dict()}
        return messages.dumps({
            "schema": messages.REPORTED, "device_id": self.device_id, "ts": time.time(),
            "state": state, "active": active, "install": install,
            "desired": {"bundle_id": want.bundle_id, "source": self.desired_source},
            "previous": self.store.active_record().get("previous"),
            "last_error": self.last_error,
            "agent": {"version": __version__, "board": self.board,
                      "profile": board_profile(self.board), "local_api": self.local_api_address},
        })

    def _publish_telemetry(self) -> None:
        serving = self.serving
        inference = self.stats.snapshot()
        model = runtime = delegate = None
        if serving:
            model = serving.info()
            runtime = {"name": serving.model.runtime.name, "version": serving.model.runtime.version}
            delegate = serving.model.delegate.as_dict()
            cold = serving.model.cold_start_seconds
            inference["cold_start_ms"] = round(cold * 1000, 4) if cold is not None else None
        payload = telemetry_payload(self.device_id, self.cfg.telemetry.interval_s, model, runtime,
                                    delegate, inference, self.system.sample())
        self._publish(self.topics.telemetry(self.device_id), payload)

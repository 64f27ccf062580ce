"""The agent daemon: follow the desired state, fetch and verify bundles, self-test,
activate atomically, serve inference, report state and telemetry.

This module wires the parts (each does one job: docs/architecture.md) and owns the worker loop.

Threads (docs/architecture.md): one worker, the one that calls `run()`, owns all install state.
"""

from __future__ import annotations

import logging
import platform
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgefleet import __version__, compat
from edgefleet.agent import transfer as tx
from edgefleet.agent.admission import manifest_refusal
from edgefleet.agent.config import AgentConfig
from edgefleet.agent.fetcher import Fetcher, Token
from edgefleet.agent.inference import InferenceService
from edgefleet.agent.installer import Installer, InstallFailed
from edgefleet.agent.link import ClientFactory, MqttLink, paho_client
from edgefleet.agent.local_api import LocalApi, start_local_api
from edgefleet.agent.ordering import Ordering
from edgefleet.agent.partial import Downloaded
from edgefleet.agent.placement import Placement
from edgefleet.agent.power import board_profiles, board_setup
from edgefleet.agent.replies import Replies
from edgefleet.agent.reporter import Context, Reporter, telemetry
from edgefleet.agent.sd_notify import Notifier
from edgefleet.agent.spool import Spool
from edgefleet.agent.store import Store
from edgefleet.agent.telemetry import SystemSampler
from edgefleet.protocol import messages
from edgefleet.protocol.bundle import Bundle
from edgefleet.protocol.delivery import TransferManifest
from edgefleet.protocol.desired import Desired
from edgefleet.protocol.signing import SignatureError, TrustStore
from edgefleet.runtime import RuntimeLoadError, find_runtime

log = logging.getLogger("edgefleet.agent")


class AgentStartError(Exception):
    """The agent cannot start; the message says what to change."""


@dataclass(frozen=True)
class Clock:
    """Injected so that tests can drive timeouts without waiting for them."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time


class Agent:
    def __init__(self, config: AgentConfig, client_factory: ClientFactory = paho_client,
                 clock: Clock | None = None):
        self.cfg, self.topics, self.device_id = config, config.topics, config.device_id
        self.clock = clock or Clock()
        try:
            self.store = Store(config.state_dir, lock=True, keep_previous=config.delivery.keep_previous)
        except OSError as exc:
            raise AgentStartError(f"state_dir {config.state_dir} cannot be used: {exc}") from None
        self.board, self.power = board_setup(config.board)  # detected; sensors or the estimate
        placement = Placement(config.runtime, board_profiles(config.board, self.board))
        self.runtime_id = ("unknown", "0")  # found in run()
        self.installer = Installer(self.store, self._trust, placement, self.clock.wall,
                                   config.trust.on_revoked, self._compat)
        self.system = SystemSampler()
        replies = Replies(self.topics.response(self.device_id, "infer"),
                          self.topics.response(self.device_id, ""),
                          lambda topic, body, props: self.link.send(topic, body, properties=props))
        self.inference = InferenceService(replies.answer, config.serve.mqtt_max_pending,
                                          config.serve.max_inflight_bytes)
        self.request_topic = self.topics.request(self.device_id, "infer")
        def on_request(body: bytes, topic: str | None, corr: bytes | None) -> None:
            self.inference.submit(body, replies.route(topic, corr))

        self.link = MqttLink(config.mqtt, self.topics, self.device_id, self._events_put, on_request,
                             request_topics=[self.request_topic], client_factory=client_factory)
        self.spool = Spool(self.store.root / "spool", int(config.spool.max_mib * 2**20),
                           config.spool.max_age_s, self.clock.wall)
        reported = self.topics.reported(self.device_id)
        self.reporter = Reporter(self.device_id, lambda body: self._send(reported, body, retain=True),
                                 self._context, self.clock.monotonic, self.clock.wall)
        self.ordering = Ordering(self.store, self._trust, self.device_id, self.installer.previous_ref)
        self.desired: dict[str, Desired] = {}  # by source: "device", "group:<name>"
        self.desired_source: str | None = None
        limits = tx.Limits(config.delivery.window, config.delivery.chunk_timeout_s,
                           config.delivery.max_bad_chunks, config.delivery.manifest_timeout_s)
        self.fetch = Fetcher(self.link, self.topics, self.store, self.reporter, self._trust,
                             self._manifest_refusal, limits,
                             self.clock.monotonic, self._downloaded, self._fail)
        self.failed_tokens: set[Token] = set()
        self.local_api_address: str | None = None
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._stop = threading.Event()
        self._http_server: Any = None
        self.systemd = Notifier.from_environment()  # a no-op unless systemd started the agent
        self._greeted = False  # the broker has been told we are online at least once

    @property
    def serving(self) -> Any:
        return self.inference.serving

    def _events_put(self, event: tuple[Any, ...]) -> None:
        self._events.put(event)

    # life cycle
    def run(self) -> None:
        """Serve until SIGTERM/SIGINT (or stop())."""
        try:
            runtime = find_runtime(self.cfg.runtime.runtime)
            self.runtime_id = (runtime.name, runtime.version)
        except RuntimeLoadError as exc:
            raise AgentStartError(f"[runtime] runtime = {self.cfg.runtime.runtime!r}: {exc}") from None
        if not self.cfg.trust_dir.is_dir():
            log.warning("trust_dir %s does not exist: every bundle will be refused until it holds "
                        "the publisher's .pub key", self.cfg.trust_dir)
        if self.cfg.trust.allow_unsigned:
            log.warning("[trust] allow_unsigned = true: unsigned bundles and desired states are "
                        "taken (a development setting; every reported and telemetry message says so)")
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.stop())
        self._restore()
        if self.cfg.serve.http:
            api = LocalApi(self.inference.infer, self.inference.model_info, self.inference.budget)
            try:
                self._http_server, self.local_api_address = start_local_api(self.cfg.serve.http, api,
                                                                            self.cfg.serve.token_file)
            except (OSError, ValueError) as exc:
                raise AgentStartError(
                    f"cannot serve the local API on {self.cfg.serve.http}: {exc}; choose another "
                    "address in [serve] http, or \"\" to turn it off") from None
            log.info("local inference API on %s", self.local_api_address)
        self.link.start()
        next_telemetry = self.clock.monotonic() + self.cfg.telemetry.interval_s
        try:
            while not self._stop.is_set():
                try:
                    event = self._events.get(timeout=0.2)
                except queue.Empty:
                    event = None
                try:
                    if event is not None:
                        self._handle(event)
                    self.fetch.tick()
                    self.reporter.flush()
                    self.spool.tick()
                    self.power.sample()
                    if self.clock.monotonic() >= next_telemetry:
                        next_telemetry = self.clock.monotonic() + self.cfg.telemetry.interval_s
                        self._check_revoked()  # the trust folder may have changed
                        self._send(self.topics.telemetry(self.device_id),
                                   telemetry(self.device_id, self.cfg.telemetry.interval_s, self.serving,
                                             self.system, self.power, self._agent_state()))
                except Exception as exc:  # the daemon outlives any one bad event
                    log.exception("error while handling %s", event and event[:2])
                    token = self.fetch.token
                    if token is not None and event is not None and event[0] == "message" \
                            and self.fetch.owns(event[1]):
                        self.fetch.abort(keep_download=True)
                        self._fail(token, "download", f"unexpected error: {type(exc).__name__}: {exc}")
                if self.systemd.enabled:  # only this loop pets the watchdog: a hung loop gets restarted
                    self.systemd.tick(self.clock.monotonic(), self._greeted, self._status())
        finally:
            self._shutdown()

    def stop(self) -> None:
        self._stop.set()

    def _shutdown(self) -> None:
        """Every step runs whatever the one before it did (a socket left behind blocks the next start)."""
        log.info("stopping")
        self.systemd.stopping("stopping: saying 'stopped' to the broker")
        try:
            self.link.stop()
        finally:
            try:
                if self._http_server is not None:
                    self._http_server.shutdown()
                    self._http_server.server_close()
            finally:
                self.inference.shutdown()
                self.store.close()

    def _restore(self) -> None:
        serving, problems = self.installer.restore()
        for problem in problems:
            self.reporter.record_error(problem.bundle_id, "startup", problem.reason)
        if serving is not None:
            self.inference.activate(serving)
            log.info("serving %s from disk", serving.bundle_id)
            self._check_revoked()  # a key revoked while the agent was stopped

    # events
    def _handle(self, event: tuple[Any, ...]) -> None:
        if event[0] == "connected":
            self._subscribe_all()
            if self.link.clash:  # said while the broker lets us talk (link.py)
                self.reporter.record_error(None, "identity", self.link.clash, publish=False)
            self.spool.disconnected()  # what the last session did not get acknowledged goes again
            if replayed := self.spool.replay(self.link.send):  # before the state of now
                log.info("replaying %d message(s) spooled while the broker was away", replayed)
            self.reporter.report(force=True)
            self.link.publish(self.topics.status(self.device_id),
                              messages.status_payload(messages.STATUS_ONLINE, instance=self.link.instance),
                              retain=True)
            self._greeted = True
            return
        _, topic, payload = event
        if topic == self.topics.device_desired(self.device_id):
            self._set_desired(payload, "device")
        elif topic.startswith(f"{self.topics.prefix}/groups/"):
            group = topic.split("/")[-2]
            if group in self.cfg.groups:
                self._set_desired(payload, f"group:{group}")
        elif self.fetch.owns(topic):
            self.fetch.on_message(topic, payload)

    def _subscribe_all(self) -> None:
        subs = [self.topics.device_desired(self.device_id)]
        subs += [self.topics.group_desired(g) for g in self.cfg.groups]
        if self.cfg.serve.mqtt:
            subs.append(self.request_topic)
        self.link.subscribe(subs)
        self.fetch.reconnected()

    # desired state
    def _set_desired(self, payload: bytes, source: str) -> None:
        try:
            self.desired[source] = self.ordering.accept(source, payload)
        except messages.MessageError as exc:  # what was accepted before stays
            where = source.replace(":", " ")
            self.reporter.record_error(None, "desired", f"{where} desired state ignored: {exc}")
            return
        self._reconcile()

    def _effective_desired(self) -> tuple[Desired, str | None]:
        # the device's own wins, then the groups in the order the config lists them
        for source in ["device", *(f"group:{g}" for g in self.cfg.groups)]:
            d = self.desired.get(source)
            if d and d.bundle_id:
                return d, source
        return Desired(), None

    def _reconcile(self) -> None:
        want, self.desired_source = self._effective_desired()
        bundle_id = want.bundle_id
        if bundle_id is None or (self.serving and self.serving.bundle_id == bundle_id):
            # nothing to install (any earlier failure stays in last_error), nor to resume
            self.fetch.abort()
            self.store.discard_downloads(keep=None)
            self.reporter.clear_install()
            self.reporter.report(force=True)
            return
        if self.fetch.bundle_id == bundle_id:
            return
        token = (bundle_id, want.set_at)
        if token in self.failed_tokens:
            self.reporter.report(force=True)
            return
        running = (self.serving.bundle.name, self.serving.bundle.version) if self.serving else None
        # before anything is fetched; the model that runs stays
        if refused := self.ordering.refusal(want, running, self.store.active_record()):
            self.fetch.abort(keep_download=True)
            self._fail(token, "desired", refused)
            return
        self.fetch.abort()
        self.store.discard_downloads(keep=bundle_id)  # what another desired state left
        stored = self.installer.stored_bundle(bundle_id)
        if stored is not None:  # e.g. a rollback to the previous version
            self._install(token, stored[0], stored[1])
            return
        self.fetch.start(token)

    def _downloaded(self, token: Token, download: Downloaded) -> None:
        self._install(token, download.data, download=download)

    # verify, self-test, activate
    def _install(self, token: Token, data: bytes, stored: Bundle | None = None,
                 download: Downloaded | None = None) -> None:
        bundle_id = token[0]
        try:
            serving = self.installer.install(bundle_id, data, stored, download,
                                             on_stage=lambda stage: self._stage(bundle_id, stage),
                                             set_at=token[1])
        except InstallFailed as exc:
            self._fail(token, exc.stage, exc.reason)
            return
        except OSError as exc:  # any other disk failure ends the install, never leaves it hanging
            self._fail(token, "install", f"{type(exc).__name__}: {exc}")
            return
        self.inference.activate(serving)  # one reference swap: requests in flight keep the old model
        self.reporter.last_error = None
        log.info("bundle %s active (signed by key %s, self-test %s)", bundle_id, serving.bundle.signed_by,
                 serving.selftest.summary())
        self.reporter.set_install(bundle_id, "active", progress=1.0, force=True)

    def _stage(self, bundle_id: str, stage: str) -> None:
        self.reporter.set_install(bundle_id, stage, force=True)
        self.systemd.pet(self.clock.monotonic())  # the loop is busy installing, not hung

    def _fail(self, token: Token, stage: str, reason: str) -> None:
        bundle_id = token[0]
        log.error("bundle %s refused at %s: %s", bundle_id, stage, reason)
        self.failed_tokens.add(token)
        if self.fetch.bundle_id == bundle_id:
            self.fetch.abort(keep_download=True)  # re-setting the desired state resumes it
        self.reporter.record_error(bundle_id, stage, reason, publish=False)
        self.reporter.set_install(bundle_id, "failed", stage=stage, reason=reason, force=True)

    def _check_revoked(self) -> None:
        """Report, and by [trust] on_revoked stop serving, an active bundle whose key was
        revoked after it was installed."""
        s = self.serving
        if s is None:
            return
        try:
            revoked = self._trust().revoked.get(s.bundle.signed_by)
        except SignatureError as exc:  # an unreadable revocation list: said, nothing changed
            self.reporter.record_error(s.bundle_id, "trust", str(exc))
            return
        if revoked == s.revoked:
            return
        s.revoked = revoked
        if revoked is None:
            self.reporter.report(force=True)
            return
        reason = f"the active bundle {s.bundle_id} is signed by key {s.bundle.signed_by}, which is revoked " \
                 f"({revoked})"
        if self.cfg.trust.on_revoked == "deactivate":
            fallback, problems = self.installer.fall_back()
            self.inference.activate(fallback)
            now = f"now serving {fallback.bundle_id}" if fallback else "no model serves now"
            why = "; ".join(f"{p.bundle_id}: {p.reason}" for p in problems)
            reason += f"; deactivated ([trust] on_revoked): {now}" + (f" ({why})" if why else "")
        self.reporter.record_error(s.bundle_id, "trust", reason)

    def _manifest_refusal(self, m: TransferManifest) -> str | None:
        """Why the signed manifest M must not be fetched (admission.py, compat, placement)."""
        return (manifest_refusal(m, self.cfg.delivery, self._effective_desired()[0].bundle)
                or self._compat(m.requires) or self.installer.placement.refusal({"target": m.target}))

    def _compat(self, requires: dict[str, Any]) -> str | None:
        """Why a bundle that REQUIRES this (edgefleet.compat) cannot run here."""
        reason = compat.refusal(requires, self.runtime_id, platform.python_version(), np.__version__)
        return f"not for this device: {reason}" if reason else None

    # helpers
    def _send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish, or keep in the spool while the broker is away (replayed not retained: the
        state of now is sent afresh on reconnection)."""
        if not self.link.publish(topic, payload, retain=retain):
            self.spool.add(topic, payload)

    def _agent_state(self) -> dict[str, Any]:
        """What every reported and telemetry message says of the agent itself."""
        return {"trust": {"allow_unsigned": self.cfg.trust.allow_unsigned}, "spool": self.spool.stats()}

    def _trust(self) -> TrustStore:
        # read on every use, so keys added to or removed from the folder apply at once
        return TrustStore.from_folder(self.cfg.trust_dir, self.cfg.trust.allow_unsigned)

    def _status(self) -> str:
        """systemd's STATUS= line, which `systemctl status edgefleet-agent` shows."""
        s, m = self.serving, self.cfg.mqtt
        model = f"active model {s.bundle.name} v{s.bundle.version}" if s else "no model yet"
        broker = "broker connected" if self.link.connected else f"broker {m.host}:{m.port} not connected"
        broker = self.link.clash or broker
        return f"{model}, {broker}" + (f", fetching {self.fetch.bundle_id}" if self.fetch.bundle_id else "")

    def _context(self) -> Context:
        want, _ = self._effective_desired()
        try:
            previous = self.store.active_record().get("previous")
        except OSError:
            previous = None
        board = {"board": self.board.model, "profile": self.cfg.board.profile or self.board.profile,
                 "detected": self.board.as_dict(), "power_source": self.power.label}
        return Context(self.serving, want.bundle_id, self.desired_source, previous,
                       {"version": __version__, **board, "groups": list(self.cfg.groups),
                        "local_api": self.local_api_address,
                        "allow_unsigned": self.cfg.trust.allow_unsigned, "spool": self.spool.stats()},
                       want.signed_by or None)

"""Fetching one bundle from the broker: carries out what the transfer state machine
(transfer.py) asks for against the MQTT link and the partial file (partial.py), and hands
the finished bundle, or the reason it failed, back to the daemon.

Runs on the daemon's worker thread only, like everything that touches install state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edgefleet.agent import transfer as tx
from edgefleet.agent.link import MqttLink
from edgefleet.agent.partial import Downloaded, PartialDownload
from edgefleet.agent.reporter import Reporter
from edgefleet.agent.store import Store
from edgefleet.protocol.delivery import DeliveryError, TransferManifest, parse_transfer_manifest
from edgefleet.protocol.signing import SignatureError, TrustStore
from edgefleet.protocol.topics import Topics

log = logging.getLogger("edgefleet.agent")
Token = tuple[str, float]  # (bundle id, set_at): one request of the operator's


class Fetcher:
    def __init__(self, link: MqttLink, topics: Topics, store: Store, reporter: Reporter,
                 trust: Callable[[], TrustStore], refusal: Callable[[TransferManifest], str | None],
                 limits: tx.Limits, monotonic: Callable[[], float],
                 on_done: Callable[[Token, Downloaded], None], on_failed: Callable[[Token, str, str], None]):
        self.link, self.topics, self.store, self.reporter = link, topics, store, reporter
        self._trust, self._refusal, self.limits, self._now = trust, refusal, limits, monotonic
        self._on_done, self._on_failed = on_done, on_failed
        self.transfer: tx.Transfer | None = None
        self.token: Token | None = None
        self.partial: PartialDownload | None = None

    @property
    def bundle_id(self) -> str | None:
        return self.transfer.bundle_id if self.transfer else None

    def start(self, token: Token) -> None:
        log.info("fetching bundle %s", token[0])
        self.transfer, self.token = tx.Transfer(token[0], self.limits), token
        self.reporter.set_install(token[0], "downloading", progress=0.0)
        self._apply(self.transfer.start(self._now()))

    def abort(self, keep_download: bool = False) -> None:
        """Stop fetching; KEEP_DOWNLOAD: what is on disk stays for the next attempt."""
        t = self.transfer
        if t is None:
            return
        self._apply(t.abort())
        self._close(sync=keep_download)
        self.transfer = self.token = None
        if not keep_download:  # no one wants it now; it would only fill the disk
            self.store.discard_download(t.bundle_id)

    def owns(self, topic: str) -> bool:
        return self.transfer is not None and topic.startswith(f"{self.topics.prefix}/bundles/"
                                                              f"{self.transfer.bundle_id}/")

    def on_message(self, topic: str, payload: bytes) -> None:
        t = self.transfer
        if t is None:
            return
        if topic == self.topics.bundle_manifest(t.bundle_id):
            self._on_manifest(t, payload)
        elif topic.startswith(self.topics.bundle_chunks(t.bundle_id)):
            try:
                index = int(topic.rsplit("/", 1)[1])
            except ValueError:
                return
            self._apply(t.chunk_received(index, payload, self._now()))

    def tick(self) -> None:
        if self.partial is not None and self.partial.due():
            try:
                self.partial.sync()
            except OSError as exc:
                self._apply(self.transfer.write_failed(None, str(exc)) if self.transfer else [])
        if self.transfer is not None:
            self._apply(self.transfer.tick(self._now()))

    def reconnected(self) -> None:
        if self.transfer is not None:
            self._apply(self.transfer.reconnected(self._now()))

    def _on_manifest(self, t: tx.Transfer, payload: bytes) -> None:
        if t.manifest is not None or not payload:
            return
        try:
            m = parse_transfer_manifest(payload, self._trust(), t.bundle_id)
        except (DeliveryError, SignatureError) as exc:
            self._apply(t.manifest_refused(str(exc)))
            return
        if refused := self._refusal(m):  # before any chunk is fetched
            self._apply(t.manifest_refused(refused))
            return
        try:
            self.store.save_transfer_manifest(t.bundle_id, payload)
            self.partial = self.store.partial(m)
        except OSError as exc:
            self._apply(t.manifest_refused(f"no room for the bundle ({m.bundle_size:,} bytes) in "
                                           f"{self.store.downloads}, refused before any chunk was "
                                           f"fetched: {exc}", stage="download"))
            return
        log.info("bundle %s: %d chunk(s), %d already on disk", t.bundle_id, m.chunk_count,
                 len(self.partial.present))
        self._apply(t.manifest_accepted(m, set(self.partial.present), self._now()))

    def _apply(self, actions: list[tx.Action]) -> None:
        """Carry out what the transfer state machine asks for, in order."""
        t, token = self.transfer, self.token
        if t is None or token is None:
            return
        for action in actions:
            if isinstance(action, tx.Subscribe):
                self.link.subscribe(self._topics(t.bundle_id, action.chunks, action.manifest))
            elif isinstance(action, tx.Unsubscribe):
                self.link.unsubscribe(self._topics(t.bundle_id, action.chunks, action.manifest))
            elif isinstance(action, tx.WriteChunk):
                assert self.partial is not None
                try:
                    self.partial.write(action.index, action.data)
                except (OSError, ValueError) as exc:
                    self._apply(t.write_failed(action.index, str(exc)))
                    return
            elif isinstance(action, tx.Progress):
                self.reporter.set_install(t.bundle_id, "downloading",
                                          progress=round(action.have / action.total, 4),
                                          chunks_have=action.have, chunks_total=action.total,
                                          chunks_resumed=t.resumed_from, chunks_refetched=t.refetched,
                                          force=action.have == action.total)
            elif isinstance(action, tx.Complete):
                self._finish(t, token)
            elif isinstance(action, tx.Failed):
                self._close(sync=True)
                self.transfer = self.token = None  # the download stays: setting it again resumes
                self._on_failed(token, action.stage, action.reason)

    def _finish(self, t: tx.Transfer, token: Token) -> None:
        partial = self.partial
        assert partial is not None
        self.transfer = self.token = None
        try:
            download = partial.finish()
        except (OSError, ValueError) as exc:
            self._close(sync=False)
            self.store.discard_download(t.bundle_id)
            self._on_failed(token, "download", str(exc))
            return
        self._close(sync=False)
        self._on_done(token, download)
        self.store.discard_download(t.bundle_id)

    def _close(self, sync: bool) -> None:
        partial, self.partial = self.partial, None
        if partial is None:
            return
        try:
            if sync:
                partial.sync()  # what arrived is kept for the next attempt
        except OSError as exc:
            log.warning("could not record the chunks of %s on disk: %s", partial.m.bundle_id, exc)
        finally:
            partial.close()

    def _topics(self, bundle_id: str, chunks: tuple[int, ...], manifest: bool) -> list[str]:
        topics = [self.topics.bundle_manifest(bundle_id)] if manifest else []
        return topics + [self.topics.bundle_chunk(bundle_id, i) for i in chunks]

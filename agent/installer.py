"""Verify, self-test, activate: turn the bytes of a bundle into the model that serves.

Every way an install can fail ends in `InstallFailed` with the stage and a reason an
operator can act on; that includes any `OSError` (a full disk, a read-only store), so
that `reported` never stays at `verifying` or `self-testing`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from edgefleet.agent.partial import Downloaded
from edgefleet.agent.placement import Placement
from edgefleet.agent.selftest import SelfTestResult, run_selftest
from edgefleet.agent.store import Store
from edgefleet.agent.telemetry import ModelStats
from edgefleet.compat import requires_of
from edgefleet.protocol.bundle import Bundle, BundleError, check_contents, open_bundle, sha256_hex
from edgefleet.protocol.delivery import bundle_id_for
from edgefleet.protocol.desired import BundleRef
from edgefleet.protocol.signing import SignatureError, TrustStore
from edgefleet.runtime import RuntimeLoadError, TFLiteModel

log = logging.getLogger("edgefleet.agent")


class InstallFailed(Exception):
    def __init__(self, stage: str, reason: str):
        super().__init__(reason)
        self.stage, self.reason = stage, reason


@dataclass
class ServingModel:
    bundle_id: str
    bundle: Bundle
    model: TFLiteModel
    activated_at: float
    selftest: SelfTestResult
    stats: ModelStats = field(default_factory=ModelStats)  # this activation's own figures
    revoked: str | None = None  # why the key that signed it is revoked, if it is

    @cached_property  # read on every request
    def class_outputs(self) -> list[str]:
        """The outputs that hold class scores (they get a top-1), as the converter declared
        them in the golden set; a bundle of golden format 1 had one output, of class scores."""
        declared = ((self.bundle.manifest.get("selftest") or {}).get("outputs") or {})
        if declared:
            return [s.name for s in self.model.outputs if (declared.get(s.name) or {}).get("class_scores")]
        first = self.model.outputs[0]
        return [first.name] if len(first.sample_shape) == 1 and first.sample_shape[0] >= 2 else []

    def info(self) -> dict[str, Any]:
        return {"bundle_id": self.bundle_id, "name": self.bundle.name, "version": self.bundle.version,
                "activated_at": self.activated_at, "signed_by": self.bundle.signed_by,
                "revoked": self.revoked}

    def runtime_info(self) -> dict[str, Any]:
        """Engine, API and version: what serves this model (the API as measured, see engines.py)."""
        m = self.model
        return {"name": m.runtime.name, "version": m.runtime.version, "api": m.api,
                "api_choice": m.api_choice}


@dataclass(frozen=True)
class StartupProblem:
    bundle_id: str
    reason: str


class Installer:
    def __init__(self, store: Store, trust: Callable[[], TrustStore], placement: Placement,
                 clock: Callable[[], float] = time.time, on_revoked: str = "report",
                 compat: Callable[[dict[str, Any]], str | None] = lambda requires: None):
        """ON_REVOKED: what a stored bundle whose key was revoked since gets: "report" (it
        serves, reported) or "deactivate" (it does not serve; kept on disk). COMPAT: why a
        bundle's `requires` cannot run here (edgefleet.compat), or None."""
        self.store, self._trust, self.placement, self._clock = store, trust, placement, clock
        self.on_revoked, self._compat = on_revoked, compat

    def load(self, bundle_id: str, bundle: Bundle) -> ServingModel:
        """Load on the first accelerator of the placement's plan that takes it (refused:
        RuntimeLoadError) and run the golden self-test (its first invoke is the cold start)."""
        model = self.placement.load(bundle.model_bytes, bundle.manifest)
        return ServingModel(bundle_id, bundle, model, self._clock(), run_selftest(model, bundle))

    def install(self, bundle_id: str, data: bytes, stored: Bundle | None = None,
                download: Downloaded | None = None,
                on_stage: Callable[[str], None] = lambda stage: None, set_at: float = 0.0) -> ServingModel:
        """Verify, store, self-test and activate DATA; return the model to serve.

        STORED: DATA came from the store and was opened there already, so it is neither
        opened nor written again. DOWNLOAD: DATA is a finished download, hashed already,
        whose file is moved into the store instead of written again. A bundle that fails
        its self-test is removed again. SET_AT: when the desired state that asked for it was
        set, recorded with it (agent/ordering.py).
        """
        on_stage("verifying")
        try:
            bundle = stored or open_bundle(data, self._trust())
            digest = download.sha256 if download else sha256_hex(data)
            expected = bundle_id_for(bundle.name, bundle.version, digest)
            if expected != bundle_id:
                raise BundleError(f"bundle content is {expected}, not {bundle_id}")
        except (BundleError, SignatureError) as exc:
            raise InstallFailed("verify", str(exc)) from None
        if reason := self._compat(requires_of(bundle.manifest)):  # an older publisher did not say
            raise InstallFailed("verify", reason)
        if stored is None:
            try:
                if download:
                    self.store.adopt(bundle_id, download.path)
                else:
                    self.store.install(bundle_id, data)
            except OSError as exc:
                raise InstallFailed("install", f"cannot store the bundle in {self.store.bundles}: "
                                    f"{exc}") from None
        on_stage("self-testing")
        try:
            serving = self.load(bundle_id, bundle)
        except RuntimeLoadError as exc:
            self._drop(bundle_id)
            raise InstallFailed("self-test", str(exc)) from None
        if not serving.selftest.passed:
            self._drop(bundle_id)
            raise InstallFailed("self-test", f"golden self-test failed: {serving.selftest.reason}")
        try:
            self.store.set_active(bundle_id, set_at)
        except OSError as exc:
            raise InstallFailed("activate", f"cannot record the active bundle in {self.store.root}: "
                                f"{exc}") from None
        return serving

    def restore(self) -> tuple[ServingModel | None, list[StartupProblem]]:
        """What was active before a restart, checked again; else the previous bundle.

        A stored bundle that is damaged is removed, so that publishing it again downloads
        a good copy.
        """
        return self._first_usable(self.store.history())

    def fall_back(self) -> tuple[ServingModel | None, list[StartupProblem]]:
        """A bundle installed before the active one (whose key was revoked), the newest that
        checks out."""
        return self._first_usable(self.store.history()[1:])

    def _first_usable(self, bundle_ids: list[str]) -> tuple[ServingModel | None, list[StartupProblem]]:
        problems: list[StartupProblem] = []
        active = self.store.active_record().get("active")
        for bundle_id in bundle_ids:
            data = self.store.installed(bundle_id)
            if data is None:
                continue
            try:
                bundle, revoked = self._open_stored(data)
            except (BundleError, SignatureError) as exc:
                self.store.remove_bundle(bundle_id)
                problems.append(StartupProblem(bundle_id, f"stored bundle unusable, removed: {exc}"))
                continue
            if revoked and self.on_revoked == "deactivate":
                problems.append(StartupProblem(bundle_id, f"not served: signed by key {bundle.signed_by}, "
                                               f"which is revoked ({revoked}); [trust] on_revoked = "
                                               "\"deactivate\""))
                continue
            try:
                serving = self.load(bundle_id, bundle)
            except RuntimeLoadError as exc:
                problems.append(StartupProblem(bundle_id, f"stored bundle does not load: {exc}"))
                continue
            if not serving.selftest.passed:
                problems.append(StartupProblem(bundle_id, f"self-test failed: {serving.selftest.reason}"))
                continue
            if bundle_id != active:
                try:
                    self.store.fall_back_to(bundle_id)
                except OSError as exc:
                    problems.append(StartupProblem(bundle_id, f"cannot record the fallback: {exc}"))
            return serving, problems
        return None, problems

    def _open_stored(self, data: bytes) -> tuple[Bundle, str | None]:
        """A stored bundle checked completely, and why its key is revoked if it is: a key
        revoked after the install does not make the bundle damaged."""
        trust = self._trust()
        bundle = open_bundle(data, trust.without_revocations())
        return bundle, trust.revoked.get(bundle.signed_by)

    def previous_ref(self) -> BundleRef | None:
        """The bundle installed before the active one, if it is still on disk and opens."""
        history = self.store.history()
        data = self.store.installed(history[1]) if len(history) > 1 else None
        if data is None:
            return None
        try:
            bundle = check_contents(data)  # its signature is checked when it is installed again
        except BundleError:
            return None
        return BundleRef(bundle.name, bundle.version, sha256_hex(data))

    def stored_bundle(self, bundle_id: str) -> tuple[bytes, Bundle] | None:
        """An installed copy of BUNDLE_ID that still checks out (a rollback needs no download);
        a damaged copy is removed so that the good one on the broker is fetched."""
        data = self.store.installed(bundle_id)
        if data is None:
            return None
        try:
            bundle, revoked = self._open_stored(data)
        except (BundleError, SignatureError) as exc:
            log.warning("stored copy of %s is unusable (%s); downloading it again", bundle_id, exc)
            self.store.remove_bundle(bundle_id)
            return None
        if revoked:  # installing it again from the broker is refused at verify, with the reason
            return None
        return data, bundle

    def _drop(self, bundle_id: str) -> None:
        active = self.store.active_record().get("active")
        if active != bundle_id:
            self.store.remove_bundle(bundle_id)

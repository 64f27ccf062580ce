"""Where a bundle's model runs on this device: the accelerator chain of the board's
profiles, narrowed by the agent's config and by what the bundle was converted for
(edgefleet.accelerators), and the two refusals an operator can ask for:

- `target_mismatch = "refuse"` (the default): a bundle for an accelerator this device
  lacks is refused from its transfer manifest, before a chunk is downloaded (and from its
  own manifest where the publisher did not say); "warn" installs it with a warning;
- `require_accelerator = true`: a model that would run on the CPU is not activated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgefleet import accelerators as acc
from edgefleet.accelerators import Accelerator, ChainError, Plan
from edgefleet.agent.config import RuntimeSettings
from edgefleet.devices.profiles import Profile
from edgefleet.runtime import RuntimeLoadError, TFLiteModel


class Placement:
    def __init__(self, runtime: RuntimeSettings, profiles: list[Profile]):
        """PROFILES as agent.power.board_profiles gives them, the board's first; the
        accelerators found beside it (a Coral USB) are tried before the board's own."""
        self.runtime = runtime
        try:
            entries = (entry for p in reversed(profiles) for entry in p.accelerator.chain_entries())
            board = acc.board_chain(entries)
            self.chain: list[Accelerator] = acc.configured_chain(
                board, runtime.delegate, runtime.delegate_library, runtime.delegate_options,
                runtime.allow_cpu_fallback)
        except ChainError as exc:
            raise RuntimeLoadError(f"[runtime]: {exc}") from None

    def plan(self, manifest: Mapping[str, Any]) -> Plan:
        delegate, profile = acc.target_of(manifest)
        return acc.plan(self.chain, delegate, profile)

    def refusal(self, manifest: Mapping[str, Any]) -> str | None:
        """Why a bundle with this (transfer or bundle) manifest is refused before it is
        loaded, or None. A manifest that does not say what it targets is never refused here."""
        chosen = self.plan(manifest)
        return self._refusal(chosen) or self._library_refusal(chosen, acc.target_of(manifest)[0])

    def _refusal(self, chosen: Plan) -> str | None:
        mismatch = chosen.mismatch
        if mismatch and self.runtime.target_mismatch == "refuse":
            return (f"target mismatch: {mismatch}; publish a bundle converted for this board "
                    f"(edgefleet inspect --profiles) or set [runtime] target_mismatch = \"warn\"")
        return None

    def _library_refusal(self, chosen: Plan, target: str | None) -> str | None:
        """The target's delegate library is not on this device, and nothing else may run the
        model: the chain holds nothing after it, or require_accelerator is set. (Whether a
        model was compiled for the Edge TPU alone shows only in its ops, after the download.)"""
        found = next((a for a in chosen.chain if a.name == target), None)
        if found is None or found.kind != acc.DELEGATE or acc.library_found(found.library):
            return None
        others = [a.name for a in chosen.chain if a is not found]
        if others and not self.runtime.require_accelerator:
            return None  # it falls back, reported as such
        why = "require_accelerator is set" if others else "this device tries nothing else"
        return (f"the bundle targets {target}, whose delegate library {found.library} is not on this device, "
                f"and {why}: install the library (or set [runtime] delegate_library to where it is)")

    def load(self, model_bytes: bytes, manifest: Mapping[str, Any]) -> TFLiteModel:
        """The model on the first accelerator of the plan that takes it. Raises
        RuntimeLoadError for a refused mismatch, no accelerator that loads it, or (under
        require_accelerator) a model that ends on the CPU."""
        rt, chosen = self.runtime, self.plan(manifest)
        refused = self._refusal(chosen)
        if refused:
            raise RuntimeLoadError(refused)
        model = TFLiteModel(model_bytes, runtime=rt.runtime, num_threads=rt.num_threads or None,
                            chain=chosen.chain, api=rt.api, skipped=chosen.skipped)
        if chosen.mismatch:
            model.delegate.notes.append(f"warning: {chosen.mismatch}")
        if rt.require_accelerator and model.delegate.on_cpu:
            why = model.delegate.fallback_reason or "no accelerator in the chain " + ", ".join(
                a.name for a in chosen.chain)
            raise RuntimeLoadError(f"require_accelerator: the model would run on the CPU "
                                   f"({model.delegate.active} took it; {why})")
        return model

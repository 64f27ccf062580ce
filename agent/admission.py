"""What a signed transfer manifest must show before the agent fetches a chunk of its bundle:
that it fits the device's limits and is the bundle the desired state names. (What it needs
of the device is edgefleet.compat's; where it runs, placement.py's.)"""

from __future__ import annotations

from edgefleet.agent.config import DeliverySettings
from edgefleet.protocol.delivery import TransferManifest
from edgefleet.protocol.desired import BundleRef


def manifest_refusal(m: TransferManifest, limits: DeliverySettings, want: BundleRef | None) -> str | None:
    if m.bundle_size > limits.max_bundle_mib * 2**20:
        return (f"the bundle is {m.bundle_size:,} bytes, over this device's [delivery] max_bundle_mib "
                f"({limits.max_bundle_mib:g} MiB): refused before any chunk was fetched")
    if m.chunk_count > limits.max_chunks:
        return (f"the bundle comes in {m.chunk_count:,} chunks, over this device's [delivery] max_chunks "
                f"({limits.max_chunks:,}): refused before any chunk was fetched; publish it with a larger "
                "--chunk-size")
    if want and (m.name, m.version, m.bundle_sha256) != (want.name, want.version, want.sha256):
        return (f"the manifest is for {m.name} {m.version} ({m.bundle_sha256[:12]}), the desired "
                f"state names {want.name} {want.version} ({want.sha256[:12]})")
    return None

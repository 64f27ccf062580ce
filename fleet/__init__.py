"""Host-side fleet operations: publish bundles, set desired state, monitor devices."""

__all__ = ["broker", "connection", "infer_client", "monitor", "publish"]

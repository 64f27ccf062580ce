"""The wire contract every part of edgefleet speaks: topic names (`topics`), message
payloads (`messages`), the signed desired state and the version rule (`desired`), the
signed transfer manifest and chunking (`delivery`), the bundle format (`bundle`) and
Ed25519 signing (`signing`). See docs/protocol.md.

Standard library, numpy, orjson, PyNaCl and packaging only: the agent, the converter and
the fleet tools all import it, and it imports none of them.
"""

__all__ = ["bundle", "delivery", "desired", "messages", "signing", "topics"]

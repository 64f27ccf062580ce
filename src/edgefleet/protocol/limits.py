"""Sizes every part agrees on. Standard library only, so that the command line can
state them (and range-check its options) on an install without the device extra."""

from __future__ import annotations

DEFAULT_CHUNK_SIZE = 64 * 1024
# Below every common broker limit (AWS IoT Core 128 KB) with room for MQTT headers.
MAX_CHUNK_SIZE = 120 * 1024
MIN_CHUNK_SIZE = 1024
# An inference request over MQTT or HTTP, base64 included.
MAX_INFER_REQUEST_BYTES = 8 * 1024 * 1024

"""edgefleet: convert models for edge boards, ship them over MQTT, run and observe them.

One import name for the whole project. The parts install beneath it, each for one role:

- ``edgefleet.protocol``: the wire contract (topics, messages, transfer manifest,
  bundle format, signing) that every other part speaks;
- ``edgefleet.runtime`` and ``edgefleet.tflite_graph``: the TFLite runtime wrapper and
  the TensorFlow-free flatbuffer reader, shared by the agent, the converter and
  ``edgefleet inspect``;
- ``edgefleet.agent``: the on-device daemon (``edgefleet[device]``);
- ``edgefleet.converter``: model optimisation on a workstation (``edgefleet[converter]``);
- ``edgefleet.devices``: board knowledge;
- ``edgefleet.fleet``: publishing, monitoring and the MQTT inference client
  (``edgefleet[fleet]``);
- ``edgefleet.cli``: the ``edgefleet`` command.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]

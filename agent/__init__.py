"""edgefleet agent: the on-device daemon and the wire contract every other part speaks.

Nothing in this package may import TensorFlow, directly or indirectly: a board
installs ``edgefleet[device]`` only.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]

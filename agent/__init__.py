"""edgefleet agent: the on-device daemon.

Nothing in this package may import TensorFlow, directly or indirectly: a board
installs ``edgefleet[device]`` only. The wire contract it speaks lives in
``edgefleet.protocol``.
"""

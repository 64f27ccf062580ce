"""edgefleet: the command line that ties the converter, the agent and the fleet tools together."""

from agent import __version__

__all__ = ["__version__"]

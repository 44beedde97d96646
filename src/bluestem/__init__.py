"""bluestem: experiment orchestration for pixelated (4D) STEM on Bluesky/ophyd.

Importing bluestem has no side effects: no RunEngine, server, subscription or global
configuration is created at import time.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bluestem")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]

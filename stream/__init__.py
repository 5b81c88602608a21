"""stream: a Kafka stream processor with a pool of worker processes for numpy transforms."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stream")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+source"

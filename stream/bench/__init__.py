"""`stream bench`: the service against baselines, in one run on one broker."""

from stream.bench.report import chart, save, table
from stream.bench.runner import bench

__all__ = ["bench", "chart", "save", "table"]

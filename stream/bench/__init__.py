"""`stream bench`: the service against baselines, in one run on one broker."""

from stream.bench.runner import bench, chart, save, table

__all__ = ["bench", "chart", "save", "table"]

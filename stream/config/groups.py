"""The sections of ``--help``, in the order they are shown. Each option names its
section with ``opt(..., group=...)``; options with no group are the command's own and
come first."""

from __future__ import annotations

CONNECTION = "connection and security"
PROCESSING = "processing"
ENRICHMENT = "enrichment (lookups before the transform)"
FLOW = "flow control"
WINDOWS = "windows (aggregation per key over time)"
SINKS = "sinks"
OBSERVABILITY = "observability"
GROUPS = (CONNECTION, PROCESSING, ENRICHMENT, FLOW, WINDOWS, SINKS, OBSERVABILITY)

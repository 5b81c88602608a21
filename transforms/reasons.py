"""Why a record became a dead letter: one enumeration for every place that says so
(the worker's batch core here, the pool, the engine's routing, the metrics).

The value is the ``stream.error.reason`` header and the ``reason`` label of the
dead-letter metrics. Transforms may name reasons of their own (``BadRecord(reason,
...)``); the header keeps what they said, and the metric label is bounded to the
known reasons plus ``other``, so a transform cannot create unbounded series.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # the record as it came in
    NULL_KEY = "null_key"
    EMPTY = "empty"
    TOO_LARGE = "too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    BAD_FRAMING = "bad_framing"  # not the Schema Registry wire format
    UNKNOWN_SCHEMA = "unknown_schema"  # the registry has no schema with its id
    DECODE_ERROR = "decode_error"  # the body does not decode with its schema
    # the built-in transforms
    SCHEMA = "schema"
    INVALID_VALUE = "invalid_value"
    LIMIT = "limit"
    SINGULAR_MATRIX = "singular_matrix"
    TRANSFORM_ERROR = "transform_error"
    # the output
    ENCODE_ERROR = "encode_error"
    OUTPUT_TOO_LARGE = "output_too_large"
    OUTPUT_REFUSED = "output_refused"
    ENRICH_FAILED = "enrich_failed"  # a lookup of the enrichment stage failed for good
    ENRICH_REFUSED = "enrich_refused"  # its values would change the lookup's path, or overlong
    SINK_REFUSED = "sink_refused"  # a row the database refused
    # windows
    LATE = "late"  # every window of its event time had closed (past the grace period)
    # the worker pool
    WORKER_CRASH = "worker_crash"
    WORKER_TIMEOUT = "worker_timeout"
    # anything a user transform named that is not above (metric label only)
    OTHER = "other"
    # the record's schema id, as the registry answered for it
    SCHEMA_REFUSED = "schema_refused"  # a lasting refusal for the id (403, 422, not a schema)


KNOWN = frozenset(r.value for r in Reason)


def label(reason: str) -> str:
    """The metric label for a reason: itself if known, else ``other``."""
    return reason if reason in KNOWN else Reason.OTHER.value

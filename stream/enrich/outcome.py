"""What one lookup attempt gives, what a finished lookup gives, and a batch's result."""

from __future__ import annotations

from dataclasses import dataclass

from stream.worker import BatchResult

ENRICH_FAILED = "enrich_failed"  # the dead-letter reason of a record whose lookup failed for good
ENRICH_REFUSED = "enrich_refused"  # ...of a record whose values would steer its lookup


@dataclass(frozen=True, slots=True)
class Found:
    """The answer, JSON bytes, to merge into the record under the enrichment field."""

    body: bytes
    label: str = "ok"


@dataclass(frozen=True, slots=True)
class Missing:
    """Nothing to look up (HTTP 404, or the coroutine returned None)."""

    message: str
    label: str = "not_found"


@dataclass(frozen=True, slots=True)
class Failed:
    """The lookup failed for good: the record becomes a dead letter."""

    message: str
    label: str = "error"


@dataclass(frozen=True, slots=True)
class Refused:
    """No lookup for this record: its values would change the URL's path shape or make
    it too long (the record becomes a dead letter, reason ``enrich_refused``)."""

    message: str


@dataclass(frozen=True, slots=True)
class Retry:
    """This attempt failed in a way another attempt may not (timeout, 5xx, 429, refused)."""

    message: str
    label: str
    retry_after: float | None = None  # seconds the server asked us to wait


Outcome = Found | Missing | Failed
Attempt = Found | Missing | Failed | Retry

ENTRY_OVERHEAD = 400  # bytes of Python objects around a cached answer (measured: ~330)


def weight(key: object, outcome: Outcome) -> int:
    """Bytes a cache entry of ``outcome`` under ``key`` (a URL) holds, about."""
    size = len(outcome.body) if isinstance(outcome, Found) else len(outcome.message)
    return ENTRY_OVERHEAD + size + (len(key) if isinstance(key, str) else 0)


@dataclass(frozen=True, slots=True)
class EnrichResult:
    """Per record of a batch: the JSON to merge, or None (nothing to merge: the lookup found
    nothing and ``--enrich-missing pass``, or the worker will reject the record anyway, or it
    failed); ``errors`` names the records whose lookup failed, as ``(index, reason,
    message)`` like ``BatchResult.errors``; ``nbytes``: the bytes of the distinct answers
    it holds (records of one URL share one answer)."""

    enrichment: list[bytes | None]
    errors: list[tuple[int, str, str]]
    nbytes: int = 0

    @property
    def any(self) -> bool:
        """Is there anything for the workers to merge? (If not, send them no enrichment.)"""
        return any(e is not None for e in self.enrichment)

    def combine(self, batch: BatchResult, values: list[bytes | None]) -> BatchResult:
        """The worker's result for the same batch, with the failed lookups as the errors of
        their records (their outputs dropped)."""
        if not self.errors:
            return batch
        failed = {index for index, _, _ in self.errors}
        outputs = [None if i in failed else out for i, out in enumerate(batch.materialize(values))]
        errors = sorted(self.errors + [e for e in batch.errors if e[0] not in failed])
        return BatchResult(outputs, errors, batch.seconds, batch.pid)

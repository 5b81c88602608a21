"""Options of ``stream run`` that are each valid but cannot work together: every start
with them would fail the same way later (a crash loop), so they stop the start with one
line naming both options (a :class:`~stream.options.ConfigError`, exit 2). Plain code,
no I/O; :class:`stream.config.run.RunSettings` calls it once its own checks pass."""

from __future__ import annotations

from stream.config.service import MAX_TRANSACTION_TIMEOUT, MIN_TRANSACTION_TIMEOUT, FlowOptions
from stream.options import ConfigError


def check_contradictions(settings: FlowOptions, sinks: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` for the first pair of options that contradict each
    other; ``sinks`` are the sinks results go to (``RunSettings.sinks``)."""
    _check_transaction_interval(settings)
    _check_topics(settings, writes_kafka="kafka" in sinks)


def _check_transaction_interval(settings: FlowOptions) -> None:
    """Exactly-once: the broker aborts a transaction open longer than the transaction
    timeout (``FlowOptions.transaction_timeout``). A quiet partition's transaction stays
    open for the whole --transaction-interval, and a revoke or a shutdown may add a drain
    before it commits, so the interval may use at most half the timeout; longer, every
    quiet partition's transaction is aborted, fenced and rewound until --delivery-timeout
    ends the process."""
    if settings.guarantee != "exactly-once":
        return
    interval, timeout = settings.transaction_interval, settings.transaction_timeout
    if interval > timeout / 2:
        longest = MAX_TRANSACTION_TIMEOUT / 2
        way_out = f"at most {timeout / 2:g}s"
        if interval <= longest:
            way_out += f", or --drain-timeout at least {interval:g}s"
        raise ConfigError(
            f"--transaction-interval {interval:g}s is more than half the transaction "
            f"timeout ({timeout:g}s: twice --drain-timeout, from {MIN_TRANSACTION_TIMEOUT:g}s "
            f"to {MAX_TRANSACTION_TIMEOUT:g}s), and the broker aborts a transaction open "
            f"longer than that: give --transaction-interval {way_out}"
        )


def _check_topics(settings: FlowOptions, *, writes_kafka: bool) -> None:
    """A topic the service writes is not the one it reads: outputs or dead letters would
    be read again, without end; dead letters are not mixed with results."""
    source = settings.input_topic
    dead = settings.dead_letter_topic
    if dead == source:  # only when given: the default is <input topic>.dlq
        raise ConfigError(
            f"--dlq-topic is --input-topic ({source!r}): every dead letter would be read, "
            "and fail, again without end"
        )
    if not writes_kafka:
        return
    if settings.output_topic == source:
        raise ConfigError(
            f"--output-topic is --input-topic ({source!r}): every output would be read "
            "and transformed again, without end"
        )
    if dead == settings.output_topic:
        raise ConfigError(
            f"--output-topic is the dead-letter topic ({dead!r}, --dlq-topic or by default "
            "<input topic>.dlq): dead letters would be mixed with the results"
        )

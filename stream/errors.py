"""One root for every error the service reports, grouped by what the caller does.

``StreamError.exit_code`` is what the CLI exits with after printing the error's one
line: 2 for bad usage (options, config), 1 for an environment that does not let the
service run (no broker, refused credentials, missing topics, a port in use, a fatal
delivery failure). Errors that the engine handles itself (a fenced producer, a
refused record) have their own branch and never reach the CLI.
"""

from __future__ import annotations

EXIT_RUNTIME = 1  # the environment did not let the command run
EXIT_USAGE = 2  # bad options or configuration: nothing was started


class StreamError(Exception):
    """The root: printed as one line by the CLI, which exits with ``exit_code``."""

    exit_code = EXIT_RUNTIME


class UsageError(StreamError):
    """A bad option value or combination: nothing was started."""

    exit_code = EXIT_USAGE


class EnvironmentFailure(StreamError):
    """The service cannot start or go on in this environment; retrying as-is cannot help."""


class BrokerUnavailable(EnvironmentFailure):
    """No broker answered at the bootstrap address within the connect timeout."""


class AuthenticationFailed(EnvironmentFailure):
    """The broker refused the SASL credentials or mechanism: it is there and said no."""


class TLSFailed(EnvironmentFailure):
    """The TLS handshake failed: the broker's certificate was not accepted (CA, host
    name), or the broker did not accept ours."""


class MissingTopics(EnvironmentFailure):
    """Topics the service needs do not exist (and may not be created by it)."""


class NotAuthorized(EnvironmentFailure):
    """The broker refused an operation for want of an ACL (create a topic, start a
    transactional producer, write a topic)."""


class PortUnavailable(EnvironmentFailure):
    """The metrics and health server cannot bind its address."""


class PoolError(EnvironmentFailure):
    """The worker pool cannot run work (its workers fail to start, or it was closed)."""


class FatalError(EnvironmentFailure):
    """The service cannot go on safely; it stops without committing past unfinished work."""


# ---- the Kafka edge's errors, as the engine sees them (it never sees aiokafka's) ----------


class KafkaFailure(StreamError):
    """A Kafka operation failed; ``retriable`` says whether trying again may succeed."""

    retriable = True


class OwnershipLost(KafkaFailure):
    """A transactional producer was fenced (another owner started with its id) or its
    transaction timed out: drop the producer without aborting, start a new one, re-read
    the committed offset, go on."""


class ProducerBroken(KafkaFailure):
    """The producer's sequence for a partition broke (after a refused batch, aiokafka
    neither resets it nor bumps its epoch): what it sent since was not written. Only a
    new producer helps; the records can be sent again."""


class UnknownTopic(KafkaFailure):
    """The broker's metadata has no such topic (it does not exist, or this client may not
    see it), still after the client's metadata wait."""


class RecordRefused(KafkaFailure):
    """The broker refused records for good (too large, invalid, not authorised to
    write): they become dead letters; ``error`` is the broker's error name."""

    retriable = False

    def __init__(self, error: str, message: str = "") -> None:
        super().__init__(message or error)
        self.error = error

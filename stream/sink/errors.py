"""The sink's errors, grouped by what the caller does with them. Messages are one line and
never hold the DSN or its password."""

from __future__ import annotations

from stream.errors import EnvironmentFailure, OwnershipLost


class SinkError(EnvironmentFailure):
    """The sink cannot go on: the CLI prints the message and exits 1."""


class SinkUnavailable(SinkError):
    """The database does not answer (at start, or longer than the retry deadline)."""


class SinkAuthError(SinkError):
    """The database refused the credentials or the database name."""


class SchemaError(SinkError):
    """Tables are missing or do not have the sink's columns; the message names them."""


class SinkFenced(OwnershipLost):
    """A newer owner claimed the partition's stored offset: this write is refused whole
    (its rows too), and the partition is rewound like a fenced producer's."""

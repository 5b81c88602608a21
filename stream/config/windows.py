"""``stream run``'s windows: aggregate each key's readings over time windows
(:mod:`stream.windows`), the state kept in a changelog topic, exactly once. Off unless
``--window`` is given; the checks that need other groups' options are in
:mod:`stream.config.run`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from stream.config.groups import WINDOWS
from stream.config.service import ObservabilityOptions
from stream.options import choice, opt, positive_int
from stream.windows.extract import KAFKA_TIME, WindowInput
from stream.windows.spec import AGGREGATES, WindowSpec, parse_aggregates, parse_duration

Emit = Literal["close", "update"]
# The window options other than --window, as their fields: each needs --window.
NEEDS_WINDOW = ("grace", "aggregate", "value_field", "event_time", "idle_close", "emit")


def _window(text: str) -> str:
    WindowSpec.parse(text)
    return text.strip()


def _grace(text: str) -> str:
    parse_duration(text, what="grace", allow_zero=True)
    return text.strip()


def _idle(text: str) -> str:
    parse_duration(text, what="idle close")
    return text.strip()


def _aggregates(text: str) -> str:
    return ",".join(parse_aggregates(text))


def _field(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


@dataclass(frozen=True, slots=True)
class WindowOptions(ObservabilityOptions):
    """``stream run``: windowed aggregation per key."""

    window: str = opt(
        "",
        "aggregate per key over time windows: tumbling:SIZE or hopping:SIZE/ADVANCE "
        "(as tumbling:60s or hopping:5m/1m; aligned to the epoch); needs --guarantee "
        "exactly-once (default: none, one output per record)",
        _window,
        "SHAPE",
        group=WINDOWS,
    )
    grace: str = opt(
        "0s",
        "how long after its end a window still takes late records (closes at end + grace "
        "of stream time)",
        _grace,
        "DURATION",
        group=WINDOWS,
    )
    aggregate: str = opt(
        ",".join(AGGREGATES),
        f"aggregates each window outputs, comma-separated, of {', '.join(AGGREGATES)} "
        "(std: the population standard deviation), or package.module:name of your own "
        "(see stream/windows/README.md)",
        _aggregates,
        "NAMES",
        group=WINDOWS,
    )
    value_field: str = opt(
        "values",
        "the field holding a record's readings: a number or an array of numbers",
        _field,
        "FIELD",
        group=WINDOWS,
    )
    event_time: str = opt(
        KAFKA_TIME,
        "a record's time: a field holding seconds since the epoch, or kafka for the "
        "record's timestamp",
        _field,
        "FIELD",
        group=WINDOWS,
    )
    idle_close: str = opt(
        "",
        "when a partition has read to its end and nothing came for this long, its stream "
        "time moves on with the wall clock, so windows close on quiet input (default: off)",
        _idle,
        "DURATION",
        group=WINDOWS,
    )
    emit: Emit = opt(
        "close",
        "close: one output per window, when it closes; update: also the window's value "
        "after each batch that changed it",
        choice(*get_args(Emit)),
        group=WINDOWS,
    )
    max_windows: int = opt(
        10_000_000,
        "most windows open in this instance; reaching it stops the service with one line "
        "(about 50 bytes of memory a window)",
        positive_int,
        "N",
        group=WINDOWS,
    )

    @property
    def window_spec(self) -> WindowSpec | None:
        """The windows asked for, or None (a stateless run)."""
        return WindowSpec.parse(self.window, self.grace) if self.window else None

    @property
    def window_input(self) -> WindowInput | None:
        """Where workers find readings and event times, or None (a stateless run)."""
        if not self.window:
            return None
        custom = tuple(name for name in self.aggregates if ":" in name)
        return WindowInput(self.value_field, self.event_time, custom)

    @property
    def aggregates(self) -> tuple[str, ...]:
        return parse_aggregates(self.aggregate)

    @property
    def idle_close_ms(self) -> int | None:
        return parse_duration(self.idle_close, what="idle close") if self.idle_close else None

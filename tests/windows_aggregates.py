"""Aggregates of one's own for the windows tests (``--aggregate tests.windows_aggregates:rms``)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from stream.windows.custom import Column, aggregate


@aggregate(sumsq=Column(np.add, np.square))
def rms(c: Mapping[str, NDArray[np.float64]]) -> NDArray[np.float64]:
    """The root mean square of the window's readings."""
    return np.sqrt(c["sumsq"] / c["count"])


@aggregate(prod=Column(np.multiply))
def product(c: Mapping[str, NDArray[np.float64]]) -> NDArray[np.float64]:
    """The product of the window's readings."""
    return c["prod"]


not_an_aggregate = 42

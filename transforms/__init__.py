"""Pure, CPU-bound record transforms run by the stream processor's worker processes.

Importing this package registers the built-in transforms (see :mod:`transforms.builtin`).
"""

from transforms import builtin
from transforms.base import (
    LIMITS,
    BadRecord,
    BatchFn,
    Limits,
    Transform,
    UnknownTransformError,
    available,
    record_transform,
    register,
    resolve,
    set_limits,
)

__all__ = [
    "LIMITS",
    "BadRecord",
    "BatchFn",
    "Limits",
    "Transform",
    "UnknownTransformError",
    "available",
    "builtin",
    "record_transform",
    "register",
    "resolve",
    "set_limits",
]

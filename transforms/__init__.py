"""Pure, CPU-bound record transforms run by the stream processor's worker processes.

Importing this package registers the built-in transforms (see :mod:`transforms.builtin`).
"""

from transforms import builtin
from transforms.base import (
    BadRecord,
    BatchFn,
    Transform,
    UnknownTransformError,
    available,
    record_transform,
    register,
    resolve,
)

__all__ = [
    "BadRecord",
    "BatchFn",
    "Transform",
    "UnknownTransformError",
    "available",
    "builtin",
    "record_transform",
    "register",
    "resolve",
]

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
    output_schema,
    record_transform,
    register,
    resolve,
    set_limits,
)
from transforms.schema import FieldType, RecordField, RecordSchema, fields

__all__ = [
    "LIMITS",
    "BadRecord",
    "BatchFn",
    "FieldType",
    "Limits",
    "RecordField",
    "RecordSchema",
    "Transform",
    "UnknownTransformError",
    "available",
    "builtin",
    "fields",
    "output_schema",
    "record_transform",
    "register",
    "resolve",
    "set_limits",
]

"""Shared machinery for transforms: the per-record failure type, the registry and ``resolve``.

A *batch function* (:data:`BatchFn`) takes a batch of decoded JSON values and returns a list of
the same length whose item ``i`` is either the JSON-serialisable output for record ``i`` or a
:class:`BadRecord` describing why record ``i`` was rejected.  Batch functions should not raise
for a bad record; they put a :class:`BadRecord` in its slot instead.

This module is pure: no I/O, no logging configuration, no asyncio.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from transforms.messages import MAX_MESSAGE_CHARS, bounded
from transforms.reasons import Reason
from transforms.schema import RecordSchema

__all__ = [
    "MAX_MESSAGE_CHARS",
    "BadRecord",
    "BatchFn",
    "Transform",
    "UnknownTransformError",
    "available",
    "output_schema",
    "record_transform",
    "register",
    "resolve",
]

BatchFn = Callable[[Sequence[Any]], list[Any]]
"""A batch of decoded JSON values in, a list of the same length out (outputs or BadRecords)."""

_PER_RECORD_ATTR: Final = "__stream_per_record__"
_OUTPUT_SCHEMA_ATTR: Final = "__stream_output_schema__"


class BadRecord(Exception):
    """A failure confined to one record.

    ``reason`` is a short, low-cardinality snake_case code suitable as a metric label (for
    example ``"schema"``, ``"invalid_value"``, ``"limit"``, ``"singular_matrix"``,
    ``"transform_error"``); ``message`` is human-readable detail, at most
    :data:`MAX_MESSAGE_CHARS` characters.
    """

    reason: str
    message: str

    def __init__(self, reason: str, message: str) -> None:
        message = bounded(message)
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[BadRecord], tuple[str, str]]:
        return (type(self), (self.reason, self.message))

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}"


class UnknownTransformError(ValueError):
    """``resolve`` could not turn a spec into a transform (unknown name, bad import path...)."""


@dataclass(frozen=True, slots=True)
class Transform:
    """A named batch function."""

    name: str
    description: str
    fn: BatchFn
    # True when a valid record's output is the record itself, byte for byte: the worker
    # then validates the record but neither re-encodes it nor ships it back.
    passthrough: bool = False
    # The shape of each output: its Avro or Protobuf schema, and the typed columns of the
    # database sink's table. None: JSON output only, into the sink's generic table (a
    # passthrough transform's output has its input's schema).
    output: RecordSchema | None = None


_REGISTRY: dict[str, Transform] = {}


def register(
    name: str,
    description: str,
    *,
    passthrough: bool = False,
    output: RecordSchema | None = None,
) -> Callable[[BatchFn], BatchFn]:
    """Decorator adding a built-in batch function to the registry under ``name``.

    Raises ``ValueError`` if ``name`` is empty, contains ``':'`` (reserved for import paths),
    or is already registered.
    """
    if not name or ":" in name or name != name.strip():
        raise ValueError(f"invalid transform name {name!r}")
    if name in _REGISTRY:
        raise ValueError(f"transform {name!r} is already registered")
    summary = _first_line(description)

    def decorate(fn: BatchFn) -> BatchFn:
        if name in _REGISTRY:
            raise ValueError(f"transform {name!r} is already registered")
        _REGISTRY[name] = Transform(
            name=name, description=summary, fn=fn, passthrough=passthrough, output=output
        )
        return fn

    return decorate


@dataclass(slots=True)
class Limits:
    """Input limits the built-in transforms enforce (a record over one is a bad record)."""

    max_array_length: int = 100_000  # sensor ``values``; also caps a matrix's rows


LIMITS = Limits()


def set_limits(max_array_length: int) -> None:
    """Set the limits for this process (a worker calls it once, from the service's config)."""
    if max_array_length < 1:
        raise ValueError("max_array_length must be at least 1")
    LIMITS.max_array_length = max_array_length


def available() -> list[Transform]:
    """The built-in transforms, sorted by name."""
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def record_transform(fn: Callable[[Any], Any]) -> BatchFn:
    """Wrap a per-record function into a batch function.

    An exception raised by ``fn`` for one record becomes ``BadRecord(Reason.TRANSFORM_ERROR, ...)``
    in that record's slot; a :class:`BadRecord` raised (or returned) by ``fn`` is kept as is.
    ``BaseException``s that are not ``Exception``s (``KeyboardInterrupt``...) propagate.
    """

    def batch(records: Sequence[Any]) -> list[Any]:
        out: list[Any] = []
        for record in records:
            try:
                out.append(fn(record))
            except BadRecord as exc:
                out.append(exc)
            except Exception as exc:  # noqa: BLE001 - isolating arbitrary user code is the point
                out.append(BadRecord(Reason.TRANSFORM_ERROR, f"{type(exc).__name__}: {exc}"))
        return out

    for attr in ("__module__", "__name__", "__qualname__", "__doc__"):
        try:
            setattr(batch, attr, getattr(fn, attr))
        except (AttributeError, TypeError):
            continue
    return batch


def output_schema(schema: RecordSchema) -> Callable[[Any], Any]:
    """Declare the output schema of a user transform, next to the function::

        @output_schema(RecordSchema("Total", fields(("id", "string"), ("total", "double"))))
        def totals(records): ...

    Without one, the transform's output can only be JSON (``--output-format json``), and
    the database sink stores it in its generic ``(key, value jsonb)`` table; with one, the
    sink's table has a column per field.
    """

    def decorate(fn: Any) -> Any:
        setattr(fn, _OUTPUT_SCHEMA_ATTR, schema)
        return fn

    return decorate


def _first_line(text: str | None) -> str:
    """The first non-blank line of ``text``, stripped; ``""`` if there is none."""
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def _one_line(text: str) -> str:
    return bounded(" ".join(text.split()), 300)


def _known_names() -> str:
    return ", ".join(sorted(_REGISTRY)) or "(none)"


def resolve(spec: str) -> Transform:
    """Turn a spec into a :class:`Transform`.

    ``spec`` is either a registered name (``"sensor-features"``) or an import path
    ``"package.module:function"`` (dotted attributes such as ``"pkg.mod:Class.method"`` are
    allowed).  The imported object is used as a batch function, unless it has the attribute
    ``__stream_per_record__ = True``, in which case it is wrapped with :func:`record_transform`.
    Its description is the first line of its docstring, or ``""``.

    Raises :class:`UnknownTransformError` (a ``ValueError``) with a one-line message for an
    unknown name, a module that cannot be imported, a missing attribute or a non-callable.
    """
    spec = spec.strip()
    if ":" not in spec:
        found = _REGISTRY.get(spec)
        if found is None:
            raise UnknownTransformError(
                f"unknown transform {spec!r}: known transforms are {_known_names()}; "
                "or give an import path 'package.module:function'"
            )
        return found

    module_name, _, attr_path = spec.partition(":")
    module_name, attr_path = module_name.strip(), attr_path.strip()
    if not module_name or not attr_path:
        raise UnknownTransformError(
            f"invalid transform import path {spec!r}: expected 'package.module:function'"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure means "cannot resolve"
        raise UnknownTransformError(
            f"cannot import module {module_name!r} for transform {spec!r}: "
            f"{_one_line(f'{type(exc).__name__}: {exc}')}"
        ) from exc

    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UnknownTransformError(
                f"module {module_name!r} has no attribute {attr_path!r} (transform {spec!r})"
            ) from None
    if not callable(obj):
        raise UnknownTransformError(
            f"{spec!r} is a {type(obj).__name__}, not a callable batch function"
        )

    description = _first_line(inspect.getdoc(obj))
    fn: BatchFn = record_transform(obj) if getattr(obj, _PER_RECORD_ATTR, False) is True else obj
    declared = getattr(obj, _OUTPUT_SCHEMA_ATTR, None)
    if declared is not None and not isinstance(declared, RecordSchema):
        raise UnknownTransformError(
            f"{spec!r}: its output schema is a {type(declared).__name__}, not a RecordSchema"
        )
    return Transform(name=spec, description=description, fn=fn, output=declared)

"""The ``--enrich-url`` template: ``http://meta:8080/sensors/{sensor_id}``.

Placeholders name top-level fields of the JSON record, or ``{key}`` for the Kafka key
(decoded as UTF-8). Values are URL-quoted whole (a ``/`` in a sensor id stays inside
its path segment). Pure: no I/O. The options (``--enrich-url``) and the enrichment
stage both use it.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

KEY = "key"
# Text that quote() would leave as it is (RFC 3986 unreserved): skip quote(), a few µs.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch


class TemplateError(ValueError):
    """The template is malformed, or a record lacks what it needs (the message says which)."""


@dataclass(frozen=True, slots=True)
class UrlTemplate:
    text: str
    parts: tuple[tuple[str, str | None], ...]  # (literal text, then a placeholder or None)

    @classmethod
    def parse(cls, text: str) -> UrlTemplate:
        scheme = urlsplit(text).scheme
        if scheme not in ("http", "https"):
            raise TemplateError(f"expected an http:// or https:// URL, got {text!r}")
        parts: list[tuple[str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise TemplateError(f"bad placeholder in {text!r}: {exc}") from None
        for literal, name, spec, conversion in parsed:
            if name is not None:
                if not name.isidentifier():
                    raise TemplateError(
                        f"placeholder {{{name}}} in {text!r} is not a field name "
                        "(use {field} or {key})"
                    )
                if spec or conversion:
                    raise TemplateError(f"placeholder {{{name}}} in {text!r} takes no format")
            parts.append((literal, name))
        return cls(text, tuple(parts))

    @property
    def fields(self) -> frozenset[str]:
        """Record fields the template reads (``key`` excluded)."""
        return frozenset(n for _, n in self.parts if n is not None and n != KEY)

    @property
    def needs_record(self) -> bool:
        """False when the URL depends on the key alone: no record needs decoding."""
        return bool(self.fields)

    def render(self, key: bytes | None, record: Mapping[str, Any] | None) -> str:
        """The URL for one record; TemplateError names what is missing or unusable."""
        return self.fill(self.texts(key, record))

    def texts(self, key: bytes | None, record: Mapping[str, Any] | None) -> tuple[str, ...]:
        """The text of each placeholder, in order, unquoted: records with the same texts
        have the same URL. TemplateError names what is missing or unusable."""
        out: list[str] = []
        for _, name in self.parts:
            if name is None:
                continue
            if name == KEY:
                out.append(_key_text(key))
                continue
            if record is None:
                raise TemplateError(f"the record is not a JSON object, so it has no {name!r}")
            if name not in record:
                raise TemplateError(f"the record has no field {name!r} for the enrichment URL")
            out.append(_field_text(name, record[name]))
        return tuple(out)

    def fill(self, texts: tuple[str, ...]) -> str:
        """The URL whose placeholders have these texts (from ``texts``), quoted."""
        out: list[str] = []
        values = iter(texts)
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                out.append(_quote(next(values)))
        return "".join(out)


def _quote(text: str) -> str:
    return text if _UNRESERVED(text) else quote(text, safe="")


def _key_text(key: bytes | None) -> str:
    if key is None:
        raise TemplateError("the record has no key for {key} in the enrichment URL")
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError:
        raise TemplateError("the record's key is not UTF-8 text") from None


def _field_text(name: str, value: Any) -> str:
    if type(value) is str:
        return value
    if isinstance(value, bool) or value is None or isinstance(value, dict | list):
        raise TemplateError(
            f"field {name!r} is {type(value).__name__ if value is not None else 'null'}, "
            "not a string or number, so it cannot go into the enrichment URL"
        )
    return str(value)

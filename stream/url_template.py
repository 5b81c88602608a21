"""The ``--enrich-url`` template: ``http://meta:8080/sensors/{sensor_id}``.

Placeholders name top-level fields of the JSON record, or ``{key}`` for the Kafka key
(decoded as UTF-8). Values are URL-quoted whole (a ``/`` in a sensor id stays inside
its path segment). Pure: no I/O. The options (``--enrich-url``) and the enrichment
stage both use it.

A record never steers the request: placeholders may stand in the path, the query or
the fragment, never in the scheme or the host (a template that puts one there is
refused when parsed); a value that would make a path segment ``.``, ``..`` or empty
(which HTTP clients and servers fold into another path, ``%2E`` included) or the URL
longer than ``max_length`` raises ``UnsafeValue``. Credentials written in the template
(the user information, and the values of query parameters named like a token, key,
password or secret) are ``secrets``: ``redact`` hides them in any text that leaves.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote, unquote, urlsplit

KEY = "key"
MAX_LENGTH = 2048  # characters of a URL, by default (what every proxy and server takes)
HIDDEN = "***"
# Query parameters whose values are credentials (matched in the lowercased name).
SECRET_WORDS = ("token", "key", "pass", "pwd", "secret", "auth", "sig", "credential")
# Text that quote() would leave as it is (RFC 3986 unreserved): skip quote(), a few µs.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch
_FOLDED = frozenset(("", ".", ".."))  # path segments a client or server folds away

Segment = tuple[str | int, ...]  # a path segment: literal text (unquoted), or a text's index


class TemplateError(ValueError):
    """The template is malformed, or a record lacks what it needs (the message says which)."""


class UnsafeValue(TemplateError):
    """A record's value would change the path's shape, or make the URL too long: the
    record is refused, not looked up."""


@dataclass(frozen=True, slots=True, repr=False)
class UrlTemplate:
    text: str  # may hold credentials: see ``redact``
    parts: tuple[tuple[str, str | None], ...]  # (literal text, then a placeholder or None)
    alone: tuple[int, ...] = ()  # placeholders that are a whole path segment (by index)
    mixed: tuple[Segment, ...] = ()  # other path segments that hold a placeholder
    secrets: tuple[str, ...] = ()  # longest first
    max_length: int = MAX_LENGTH

    def __repr__(self) -> str:
        return f"UrlTemplate({self.shown!r})"

    @classmethod
    def parse(cls, text: str, max_length: int = MAX_LENGTH) -> UrlTemplate:
        split = urlsplit(text)
        secrets = _secrets(split.netloc, split.query)
        shown = repr(_redact(text, secrets))
        if split.scheme not in ("http", "https"):
            raise TemplateError(f"expected an http:// or https:// URL, got {shown}")
        parts: list[tuple[str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise TemplateError(f"bad placeholder in {shown}: {exc}") from None
        for literal, name, spec, conversion in parsed:
            if name is not None:
                if not name.isidentifier():
                    raise TemplateError(
                        f"placeholder {{{name}}} in {shown} is not a field name "
                        "(use {field} or {key})"
                    )
                if spec or conversion:
                    raise TemplateError(f"placeholder {{{name}}} in {shown} takes no format")
            parts.append((literal, name))
        segments = _path_segments(parts, shown)
        literal_length = sum(len(literal) for literal, _ in parts)
        if literal_length > max_length:
            raise TemplateError(f"{shown} is longer than {max_length} characters without values")
        alone = tuple(s[0] for s in segments if len(s) == 1 and isinstance(s[0], int))
        mixed = tuple(s for s in segments if len(s) > 1)
        return cls(text, tuple(parts), alone, mixed, secrets, max_length)

    @property
    def fields(self) -> frozenset[str]:
        """Record fields the template reads (``key`` excluded)."""
        return frozenset(n for _, n in self.parts if n is not None and n != KEY)

    @property
    def needs_record(self) -> bool:
        """False when the URL depends on the key alone: no record needs decoding."""
        return bool(self.fields)

    @property
    def shown(self) -> str:
        """The template as it may be shown: credentials hidden."""
        return self.redact(self.text)

    def redact(self, text: str) -> str:
        """``text`` with every credential of the template (as written, quoted or not)
        replaced by ``***``."""
        return _redact(text, self.secrets)

    def render(self, key: bytes | None, record: Mapping[str, Any] | None) -> str:
        """The URL for one record; TemplateError names what is missing or unusable."""
        return self.fill(self.texts(key, record))

    def texts(self, key: bytes | None, record: Mapping[str, Any] | None) -> tuple[str, ...]:
        """The text of each placeholder, in order, unquoted: records with the same texts
        have the same URL. TemplateError names what is missing or unusable; UnsafeValue
        says which value would change the path's shape or make the URL too long."""
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
        texts = tuple(out)
        for index in self.alone:  # the usual case, per record: a set look-up each
            if texts[index] in _FOLDED:
                self._refuse((index,), texts[index])
        if self.mixed:
            self._check_mixed(texts)
        if len(texts) == 1:
            if len(texts[0]) > self.max_length:
                self._overlong()
        elif sum(map(len, texts)) > self.max_length:
            self._overlong()
        return texts

    def fill(self, texts: tuple[str, ...]) -> str:
        """The URL whose placeholders have these texts (from ``texts``), quoted;
        UnsafeValue when it is longer than ``max_length``."""
        out: list[str] = []
        values = iter(texts)
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                out.append(_quote(next(values)))
        url = "".join(out)
        if len(url) > self.max_length:
            raise UnsafeValue(
                f"the enrichment URL would be {len(url)} characters, over {self.max_length} "
                "(--enrich-max-url-length)"
            )
        return url

    def _check_mixed(self, texts: tuple[str, ...]) -> None:
        """UnsafeValue if a segment of literal text and placeholders would fold away."""
        for segment in self.mixed:
            whole = "".join(texts[i] if isinstance(i, int) else i for i in segment)
            if whole in _FOLDED:
                self._refuse(segment, whole)

    def _refuse(self, segment: Segment, whole: str) -> NoReturn:
        names = [self._name(i) for i in segment if isinstance(i, int)]
        raise UnsafeValue(
            f"{'field ' if names[0] != KEY else ''}{', '.join(map(repr, names))} would "
            f"make a path segment of the enrichment URL {whole!r}, which changes "
            "the path's shape"
        )

    def _overlong(self) -> NoReturn:
        """The values alone are too long (quoting only lengthens them; ``fill`` checks
        the quoted URL)."""
        raise UnsafeValue(
            f"the values for the enrichment URL are over {self.max_length} characters "
            "(--enrich-max-url-length)"
        )

    def _name(self, index: int) -> str:
        names = [n for _, n in self.parts if n is not None]
        return names[index]


def _path_segments(parts: list[tuple[str, str | None]], shown: str) -> tuple[Segment, ...]:
    """The path segments that hold a placeholder, as literal text (unquoted, as a server
    reads it) and placeholder indexes; TemplateError for a placeholder in the scheme or
    the host (a record would choose the origin)."""
    zone = "authority"
    after_scheme = False
    index = 0
    segment: list[str | int] = []
    found: list[Segment] = []

    def close() -> None:
        if any(isinstance(item, int) for item in segment):
            found.append(tuple(unquote(i) if isinstance(i, str) else i for i in segment))
        segment.clear()

    for literal, name in parts:
        text = literal
        if zone == "authority":
            if not after_scheme:
                text = text.partition("://")[2]
                after_scheme = True
            cut = min((p for p in (text.find(c) for c in "/?#") if p >= 0), default=-1)
            if cut < 0:
                if name is not None:
                    raise TemplateError(
                        f"placeholder {{{name}}} in {shown} is in the scheme or host: a record "
                        "must not choose where the lookup goes (put it in the path or query)"
                    )
                continue
            zone, text = "path", text[cut:]
        for char in text:
            if zone == "path" and char in "?#":
                close()
                zone = "query" if char == "?" else "fragment"
            elif zone == "query" and char == "#":
                zone = "fragment"
            elif zone == "path" and char == "/":
                close()
            elif zone == "path":
                if segment and isinstance(segment[-1], str):
                    segment[-1] += char
                else:
                    segment.append(char)
        if name is not None:
            if zone == "path":
                segment.append(index)
            index += 1
    if zone == "path":
        close()
    return tuple(found)


def _secrets(netloc: str, query: str) -> tuple[str, ...]:
    """Credential texts of a template: its user information (whole, and the password),
    and the literal values of query parameters named like a credential."""
    found: set[str] = set()
    userinfo, at, _ = netloc.rpartition("@")
    if at and userinfo:
        found.add(userinfo)
        password = userinfo.partition(":")[2]
        if password:
            found.add(password)
    for name, value in parse_qsl(query, keep_blank_values=True):
        if value and "{" not in value and any(w in name.lower() for w in SECRET_WORDS):
            found.add(value)
    variants = {form for s in found for form in (s, unquote(s), quote(unquote(s), safe=""))}
    return tuple(sorted((v for v in variants if v), key=len, reverse=True))


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, HIDDEN)
    return text


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

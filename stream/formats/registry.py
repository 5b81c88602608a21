"""A small synchronous Schema Registry client (Confluent-compatible API).

Used inside worker processes (a blocking HTTP call there stalls nothing but that
worker) and once at start-up to register output schemas. Schemas by id are cached
for the life of the process: an id never changes its schema. What the registry says
about an id is sorted by what the caller does with it:

- an outage (connection refused, timeouts, HTTP 5xx, 429 and 408) is retried with
  exponential backoff up to a deadline, then raised as :class:`RegistryUnavailable`
  (the batch waits and runs again; no record is blamed);
- our credentials refused (HTTP 401, 407), a redirect (never followed: the credentials
  would go with it) and TLS failures are a :class:`RegistryError` (not about any id:
  the batch waits too);
- a 404 for an id is :class:`SchemaNotFound`, and any other permanent answer for an id
  (another 4xx, a body that is not a schema, one over ``max_answer_bytes``) is
  :class:`SchemaRefused`: that id's records are dead letters. Both are remembered for
  ``remember_for`` seconds (at most ``_REMEMBERED`` ids), so a stream of records with an
  id from another environment costs one request per worker and period, not one per
  record.

Answers are read in chunks, refused past ``max_answer_bytes`` (never buffered whole)
and past ``timeout`` seconds in all.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.client import HTTPException
from typing import Any, Literal, cast

from stream.errors import EnvironmentFailure
from transforms.messages import bounded

log = logging.getLogger(__name__)

SchemaType = Literal["AVRO", "PROTOBUF", "JSON"]
_CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(EnvironmentFailure):
    """The registry refused a request (or cannot be used); one line, never a secret."""


class RegistryUnavailable(RegistryError):
    """The registry did not answer, or answered 5xx/429, until the retry deadline."""


class SchemaNotFound(RegistryError):
    """The registry has no schema with this id (HTTP 404)."""


class SchemaRefused(RegistryError):
    """A lasting answer that is not a schema: a 4xx other than 401, 404, 407, 408,
    409 and 429, a body that is not a schema (or not JSON), or one over the size
    limit. Asking again will not help."""


class IncompatibleSchema(RegistryError):
    """The subject's compatibility rules reject the schema (HTTP 409)."""


@dataclass(frozen=True, slots=True)
class RegistryConfig:
    """Where the registry is and how to reach it. Picklable: it travels to the workers."""

    url: str
    username: str = ""
    password: str = field(default="", repr=False)
    cafile: str = ""
    timeout: float = 5.0  # seconds for one HTTP request, its answer read in full
    retry_for: float = 10.0  # seconds of retries before RegistryUnavailable
    remember_for: float = 30.0  # seconds an id's 404 or refusal is answered from memory
    max_answer_bytes: int = 4 << 20  # a longer answer is refused, not read

    def endpoint(self, path: str) -> str:
        return self.url.rstrip("/") + path


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    schema_id: int
    schema_type: SchemaType
    text: str


@dataclass(slots=True)
class Backoff:
    """Exponential backoff with a deadline; pure (the clock is injected)."""

    clock: Callable[[], float]
    retry_for: float
    initial: float = 0.1
    maximum: float = 2.0
    _deadline: float = 0.0
    _next: float = 0.0

    def __post_init__(self) -> None:
        self._deadline = self.clock() + self.retry_for
        self._next = self.initial

    def delay(self) -> float | None:
        """Seconds to wait before the next try, or None when the deadline has passed."""
        left = self._deadline - self.clock()
        if left <= 0:
            return None
        wait = min(self._next, left)
        self._next = min(self._next * 2, self.maximum)
        return wait


_MESSAGE_CHARS = 300  # of the registry's error message, in our one line
_REMEMBERED = 10_000  # ids whose negative answer is kept; past that the oldest go
_CHUNK = 64 << 10
_ERROR_BODY = 4096  # bytes of an error answer read for its message


def _transient(status: int) -> bool:
    return status >= 500 or status in (408, 429)


def _read(answer: Any, limit: int, deadline: float, clock: Callable[[], float]) -> bytes | None:
    """The body, read in chunks; None when it is longer than ``limit`` (the rest is not
    read). RegistryUnavailable when reading goes past ``deadline``."""
    chunks: list[bytes] = []
    size = 0
    while chunk := answer.read1(_CHUNK):
        size += len(chunk)
        if size > limit:
            return None
        if clock() > deadline:
            raise RegistryUnavailable("schema registry: the answer took too long to read")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass(slots=True)
class Remembered:
    """Negative answers by id for a while; pure (the clock is injected), bounded."""

    clock: Callable[[], float]
    keep_for: float
    limit: int = _REMEMBERED
    _until: dict[int, tuple[float, RegistryError]] = field(default_factory=dict)

    def get(self, key: int) -> RegistryError | None:
        """The answer remembered for ``key`` (a new exception each time), if still fresh."""
        found = self._until.get(key)
        if found is None:
            return None
        until, error = found
        if self.clock() >= until:
            del self._until[key]
            return None
        return type(error)(str(error))

    def put(self, key: int, error: RegistryError) -> None:
        if self.keep_for <= 0:
            return
        if len(self._until) >= self.limit:
            now = self.clock()
            for stale in [k for k, (until, _) in self._until.items() if until <= now]:
                del self._until[stale]
            while len(self._until) >= self.limit:
                del self._until[next(iter(self._until))]  # the oldest
        self._until[key] = (self.clock() + self.keep_for, error)


def _message(body: bytes) -> str:
    """The registry's error message (its ``message`` field), bounded for one line."""
    try:
        data = json.loads(body)
    except ValueError:
        return bounded(body[:_MESSAGE_CHARS].decode("utf-8", "replace").strip(), _MESSAGE_CHARS)
    if isinstance(data, dict) and "message" in data:
        return bounded(" ".join(str(data["message"]).split()), _MESSAGE_CHARS)
    return bounded(str(data), _MESSAGE_CHARS)


class RegistryClient:
    """Schemas by id (cached), and registration of a subject's schema."""

    def __init__(
        self,
        config: RegistryConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self._clock = clock
        self._sleep = sleep
        self._cache: dict[int, RegisteredSchema] = {}
        self._refused = Remembered(clock, config.remember_for)
        self.fetches = 0  # HTTP lookups of schemas by id (the cache's misses)
        context = None
        if config.url.startswith("https:"):
            context = ssl.create_default_context(cafile=config.cafile or None)
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=context), _NoRedirect()
        )
        self._headers = {"Accept": _CONTENT_TYPE}
        if config.username:
            token = base64.b64encode(f"{config.username}:{config.password}".encode()).decode()
            self._headers["Authorization"] = f"Basic {token}"

    def schema(self, schema_id: int) -> RegisteredSchema:
        """The schema with this id, fetched once per process. SchemaNotFound and
        SchemaRefused are remembered for ``remember_for`` seconds."""
        found = self._cache.get(schema_id)
        if found is not None:
            return found
        remembered = self._refused.get(schema_id)
        if remembered is not None:
            raise remembered
        what = f"schema id {schema_id}"
        self.fetches += 1
        try:
            data = self._request("GET", f"/schemas/ids/{schema_id}", what=what)
            text, schema_type = data.get("schema"), data.get("schemaType", "AVRO")
            if not isinstance(text, str) or not isinstance(schema_type, str):
                raise SchemaRefused(f"schema registry: {what}: the answer holds no schema")
        except (SchemaNotFound, SchemaRefused) as exc:
            self._refused.put(schema_id, exc)
            raise
        found = RegisteredSchema(schema_id, cast(SchemaType, schema_type), text)
        self._cache[schema_id] = found
        return found

    def register(self, subject: str, text: str, schema_type: SchemaType) -> int:
        """Register (or find) ``text`` under ``subject``; its id. IncompatibleSchema on 409."""
        body = {"schema": text}
        if schema_type != "AVRO":
            body["schemaType"] = schema_type
        quoted = urllib.parse.quote(subject, safe="")
        data = self._request(
            "POST", f"/subjects/{quoted}/versions", body, what=f"subject {subject}"
        )
        if not isinstance(data.get("id"), int):
            raise SchemaRefused(f"schema registry: subject {subject}: the answer holds no id")
        schema_id = int(data["id"])
        self._cache.setdefault(schema_id, RegisteredSchema(schema_id, schema_type, text))
        return schema_id

    def subjects(self) -> list[Any]:
        """The registry's subjects (``GET /subjects``): a Confluent-compatible registry
        answers a JSON list. SchemaNotFound or SchemaRefused when it answers otherwise."""
        found: list[Any] = self._request("GET", "/subjects", what="subjects", expect=list)
        return found

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        what: str,
        expect: type = dict,
    ) -> Any:
        backoff = Backoff(self._clock, self.config.retry_for)
        while True:
            try:
                return self._once(method, path, body, what, expect)
            except RegistryUnavailable as exc:
                wait = backoff.delay()
                if wait is None:
                    raise RegistryUnavailable(
                        f"{exc} (retried for {self.config.retry_for:g}s)"
                    ) from None
                log.debug("schema registry: %s; retrying in %.2fs", exc, wait)
                self._sleep(wait)

    def _once(
        self, method: str, path: str, body: dict[str, Any] | None, what: str, expect: type
    ) -> Any:
        headers = dict(self._headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = _CONTENT_TYPE
        request = urllib.request.Request(  # noqa: S310 - the URL's scheme is checked in config
            self.config.endpoint(path), data=data, headers=headers, method=method
        )
        where = f"schema registry: {what}"
        started = self._clock()
        try:
            with self._opener.open(request, timeout=self.config.timeout) as answer:
                limit = self.config.max_answer_bytes
                raw = _read(answer, limit, started + self.config.timeout, self._clock)
        except urllib.error.HTTPError as error:
            status, text = error.code, _message(_error_body(error))
            error.close()
            if _transient(status):
                raise RegistryUnavailable(f"{where}: HTTP {status} {text}") from None
            if status == 404:
                raise SchemaNotFound(f"{where}: not found (HTTP 404)") from None
            if status == 409:
                raise IncompatibleSchema(f"{where}: HTTP 409 {text}") from None
            if status in (401, 407):
                raise RegistryError(f"{where}: HTTP {status}: credentials refused") from None
            if 300 <= status < 400:
                raise RegistryError(
                    f"{where}: HTTP {status}: a redirect, not followed (our credentials would "
                    "go with it); give --schema-registry-url the address it points to"
                ) from None
            raise SchemaRefused(f"{where}: HTTP {status} {text}") from None
        except ssl.SSLError as exc:
            raise RegistryError(f"schema registry: TLS failed: {exc.reason}") from None
        except (TimeoutError, urllib.error.URLError, ConnectionError, HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ssl.SSLError):
                raise RegistryError(f"schema registry: TLS failed: {reason.reason}") from None
            raise RegistryUnavailable(f"schema registry unreachable: {reason}") from None
        if raw is None:
            raise SchemaRefused(f"{where}: an answer over {self.config.max_answer_bytes} bytes")
        try:
            payload = json.loads(raw)
        except ValueError:
            raise SchemaRefused(f"{where}: not a JSON answer ({_message(raw)})") from None
        if not isinstance(payload, expect):
            shape = "object" if expect is dict else "list"
            raise SchemaRefused(f"{where}: not a JSON {shape}")
        return payload


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are answers, not followed: urllib would send our Authorization header
    to wherever they point, any origin, https or not."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _error_body(error: urllib.error.HTTPError) -> bytes:
    """The start of an error answer, for its message (never more than 4 KiB read)."""
    try:
        return error.read(_ERROR_BODY)
    except (OSError, ValueError, AttributeError):
        return b""


class StaticSchemas:
    """Schemas by id held in memory: the registry client's ``schema`` without a registry
    (for the format benchmark and unit tests)."""

    def __init__(self, *schemas: RegisteredSchema) -> None:
        self.by_id = {s.schema_id: s for s in schemas}
        self.lookups = 0

    def schema(self, schema_id: int) -> RegisteredSchema:
        self.lookups += 1
        found = self.by_id.get(schema_id)
        if found is None:
            raise SchemaNotFound(f"schema registry: schema id {schema_id}: not found")
        return found

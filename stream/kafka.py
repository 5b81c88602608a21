"""The one module that speaks to Kafka (aiokafka): clients, topics, errors.

Everything else in the service sees plain callables and these few types.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition

from stream.config import ConfigError, KafkaSettings, RunSettings, flag_name, read_secret_file

__all__ = [
    "AuthenticationFailed",
    "BrokerUnavailable",
    "KafkaError",
    "MissingTopics",
    "TLSFailed",
    "TopicPartition",
    "admin_client",
    "client_options",
    "create_topics",
    "describe_topics",
    "make_consumer",
    "make_producer",
    "require_topics",
    "ssl_context",
    "start_client",
]

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """No broker answered at the bootstrap address within the connect timeout."""


class MissingTopics(RuntimeError):
    """Topics the service needs do not exist."""


class AuthenticationFailed(BrokerUnavailable):
    """The broker refused the SASL credentials or mechanism (retrying cannot help)."""


class TLSFailed(BrokerUnavailable):
    """The TLS handshake failed: the broker's certificate was not accepted (CA, host
    name), or the broker did not accept ours (retrying cannot help)."""


# --- what every client is made with -----------------------------------------------------------


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """The address, identity and security arguments every aiokafka client here is made
    with (consumers, producers, admin clients take the same ones)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.uses_sasl:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password_value()
    if settings.uses_ssl:
        options["ssl_context"] = ssl_context(settings)
    return options


class _NoKeyPassword(Exception):
    pass


def _no_key_password() -> str:
    # Without a password callback OpenSSL would prompt on the terminal for an encrypted key.
    raise _NoKeyPassword


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """TLS for the brokers: verify their certificates against --ssl-cafile (or the system's
    CAs) and, unless turned off, their host names; present our certificate if given."""
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=settings.ssl_cafile or None)
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError(
            f"--ssl-cafile: {settings.ssl_cafile!r} holds no usable PEM CA certificate "
            f"({_ssl_reason(exc)})"
        ) from None
    context.check_hostname = settings.ssl_check_hostname
    if settings.ssl_certfile:
        what = f"--ssl-certfile {settings.ssl_certfile!r}"
        if settings.ssl_keyfile:
            what += f" and --ssl-keyfile {settings.ssl_keyfile!r}"
        password = settings.ssl_key_password_value()
        try:
            context.load_cert_chain(
                settings.ssl_certfile,
                settings.ssl_keyfile or None,
                password if password is not None else _no_key_password,
            )
        except _NoKeyPassword:
            raise ConfigError(
                f"the private key in {what} is encrypted: give --ssl-key-password or "
                "--ssl-key-password-file"
            ) from None
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(
                f"cannot load the client certificate and private key from {what}: a wrong key "
                f"password, no key, or a key of another certificate ({_ssl_reason(exc)})"
            ) from None
    return context


def _ssl_reason(exc: BaseException) -> str:
    """OpenSSL's words without the source location: "[SSL: X] what happened"."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else str(exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text) or type(exc).__name__


# --- starting a client: retry while the broker is away, fail at once when it refuses us ---------


class _Capture:
    """The exceptions aiokafka logged while one client started (it logs them and raises
    a bare "Unable to bootstrap")."""

    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.active = True


_capture: ContextVar[_Capture | None] = ContextVar("stream_kafka_capture", default=None)


class _CaptureHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        capture = _capture.get()
        if capture is None or not capture.active:
            return
        args = record.args.values() if isinstance(record.args, Mapping) else record.args or ()
        found = [a for a in args if isinstance(a, BaseException)]
        if record.exc_info and record.exc_info[1] is not None:
            found.append(record.exc_info[1])
        for error in found:
            capture.errors.extend(_chain(error))
        del capture.errors[:-32]


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """An exception and its causes: a closed connection's error carries the TLS alert."""
    for _ in range(8):
        if error is None:
            return
        yield error
        error = error.__cause__ or error.__context__


class _Quiet:
    lock = threading.Lock()
    depth = 0
    level = logging.NOTSET
    propagate = True
    handler = _CaptureHandler(logging.DEBUG)


@contextmanager
def _quiet_aiokafka() -> Iterator[_Capture]:
    """While we retry the first connection, aiokafka's per-attempt errors are noise: the
    caller reports the outcome in one line. They are kept (not printed) for that line.
    Nests: clients may start concurrently."""
    logger = logging.getLogger("aiokafka")
    with _Quiet.lock:
        if _Quiet.depth == 0:
            _Quiet.level, _Quiet.propagate = logger.level, logger.propagate
            logger.setLevel(logging.WARNING)
            logger.propagate = False
            logger.addHandler(_Quiet.handler)
        _Quiet.depth += 1
    capture = _Capture()
    token = _capture.set(capture)
    try:
        yield capture
    finally:
        capture.active = False
        _capture.reset(token)
        with _Quiet.lock:
            _Quiet.depth -= 1
            if _Quiet.depth == 0:
                logger.removeHandler(_Quiet.handler)
                logger.setLevel(_Quiet.level)
                logger.propagate = _Quiet.propagate


async def start_client(client: Any, settings: KafkaSettings) -> None:
    """Start an aiokafka client, retrying until the connect timeout; one clear error.

    Refused credentials or a failed TLS handshake end the wait at once
    (``AuthenticationFailed``, ``TLSFailed``): the broker is there and said no."""
    with _quiet_aiokafka() as capture:
        await _start_client(client, settings, capture)


_REFUSALS = (
    SaslAuthenticationFailed,
    AuthenticationFailedError,
    UnsupportedSaslMechanismError,
    ssl.SSLError,
)


async def _start_client(client: Any, settings: KafkaSettings, capture: _Capture) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.connect_timeout
    while True:
        try:
            await asyncio.wait_for(client.start(), max(0.1, deadline - loop.time()))
            return
        except (KafkaConnectionError, TimeoutError, *_REFUSALS) as exc:
            logged = list(capture.errors)  # what went wrong underneath "Unable to bootstrap"
            capture.errors.clear()
            refused = _refusal([*logged, *_chain(exc)], settings)
            if refused is None and loop.time() < deadline:
                await asyncio.sleep(0.5)
                continue
            await _quiet_close(client)
            if refused is not None:
                raise refused from None
            raise BrokerUnavailable(
                _redact(
                    f"no Kafka broker answered at {settings.bootstrap_servers} within "
                    f"{settings.connect_timeout:g}s ({type(exc).__name__}"
                    f"{_last_error(logged, settings)})",
                    settings,
                )
            ) from None


def _last_error(logged: list[BaseException], settings: KafkaSettings) -> str:
    if not logged:
        return ""
    last = logged[-1]
    text = f"; last error: {_describe(last)}"
    closed = isinstance(last, (ConnectionResetError, asyncio.IncompleteReadError))
    if closed or (isinstance(last, KafkaConnectionError) and "closed" in str(last)):
        text += (
            f"; the broker closed the connection: does --security-protocol "
            f"{settings.security_protocol} match its listener?"
        )
    return text


def _refusal(errors: list[BaseException], settings: KafkaSettings) -> BrokerUnavailable | None:
    """The one-line error for a broker that refused us, if one did."""
    servers = settings.bootstrap_servers
    for error in errors:
        if isinstance(error, (SaslAuthenticationFailed, AuthenticationFailedError)):
            text = (
                f"authentication failed for user {settings.sasl_username!r} "
                f"({settings.sasl_mechanism}) at {servers}: {_describe(error)}"
            )
            return AuthenticationFailed(_redact(text, settings))
        if isinstance(error, UnsupportedSaslMechanismError):
            text = f"SASL mechanism {settings.sasl_mechanism} refused at {servers}: "
            return AuthenticationFailed(_redact(text + _describe(error), settings))
        if isinstance(error, ssl.SSLCertVerificationError):
            reason = _ssl_reason(error)
            if "mismatch" in reason:
                hint = "connect by a host name the certificate is for, or see --ssl-check-hostname"
            else:
                hint = "is --ssl-cafile the CA that signed it?"
            text = f"SSL: the broker's certificate at {servers} was not accepted: {reason} ({hint})"
            return TLSFailed(_redact(text, settings))
        if isinstance(error, ssl.SSLError):
            text = f"SSL handshake with the broker at {servers} failed: {_ssl_reason(error)}"
            if "certificate" in text.lower() and settings.ssl_certfile:
                text += f" (did it accept {flag_name('ssl_certfile')}?)"
            return TLSFailed(_redact(text, settings))
    return None


def _describe(error: BaseException) -> str:
    """An exception's message without aiokafka's "ClassName: " prefix, on one line."""
    if isinstance(error, ssl.SSLError):
        return _ssl_reason(error)
    first = error.args[0] if error.args else None
    text = first if isinstance(first, str) and first else str(error) or type(error).__name__
    return " ".join(text.split())


def _redact(text: str, settings: KafkaSettings) -> str:
    """Belt and braces: no message of ours carries a secret, even if a library echoes one."""
    secrets = [settings.sasl_password, settings.ssl_key_password]
    for option, path in (
        ("sasl_password_file", settings.sasl_password_file),
        ("ssl_key_password_file", settings.ssl_key_password_file),
    ):
        if path:
            with suppress(ConfigError):
                secrets.append(read_secret_file(option, path))
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return " ".join(text.split())


async def _quiet_close(client: Any) -> None:
    closer = getattr(client, "close", None) or client.stop
    try:
        await closer()
    except (KafkaError, OSError) as exc:
        log.debug("closing a client that never started: %s", exc)


def make_consumer(settings: RunSettings) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **client_options(settings),
        group_id=settings.group_id,
        enable_auto_commit=False,
        auto_offset_reset=settings.auto_offset_reset,
        max_poll_records=settings.max_inflight_records,
        fetch_max_bytes=settings.fetch_max_bytes,
        max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
        session_timeout_ms=settings.session_timeout_ms,
        heartbeat_interval_ms=max(1000, settings.session_timeout_ms // 10),
        # The loop calls getmany() several times a second even when paused, so this
        # only fires if the loop itself is stuck.
        max_poll_interval_ms=max(300_000, int(settings.drain_timeout * 2000)),
        rebalance_timeout_ms=max(60_000, int(settings.drain_timeout * 2000)),
        isolation_level="read_committed",
    )


def make_producer(
    settings: KafkaSettings, *, linger_ms: int = 5, delivery_timeout: float = 120.0
) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_options(settings),
        # aiokafka has no delivery.timeout.ms: a batch expires after request_timeout_ms.
        request_timeout_ms=int(delivery_timeout * 1000),
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
        compression_type=None,
    )


Record = tuple[bytes | None, bytes, list[tuple[str, bytes]] | None]  # key, value, headers


@lru_cache(maxsize=1 << 16)
def _partition_for(key: bytes, partitions: int) -> int:
    """The Java client's default partitioner (murmur2), so keys land where any client puts them."""
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions


async def send_records(
    producer: AIOKafkaProducer, topic: str, records: Sequence[Record]
) -> list[Any]:
    """Produce records in order, batched per partition; returns one future per batch.

    One ``BatchBuilder`` per partition instead of one ``send()`` per record: the
    records of a key keep their order (one partition, appended in order), and the
    caller waits on a few batch futures rather than a future per record.
    """
    if not records:
        return []
    partitions = sorted(await producer.partitions_for(topic))
    count = len(partitions)
    grouped: dict[int, list[Record]] = {}
    for record in records:
        key = record[0]
        index = _partition_for(key, count) if key is not None else random.randrange(count)
        grouped.setdefault(partitions[index], []).append(record)
    futures = []
    for partition, items in grouped.items():
        batch = producer.create_batch()
        for key, value, headers in items:
            if batch.append(key=key, value=value, timestamp=None, headers=headers or []) is None:
                futures.append(await _enqueue(producer, batch, topic, partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers or [])
        futures.append(await _enqueue(producer, batch, topic, partition))
    return futures


async def _enqueue(producer: AIOKafkaProducer, batch: Any, topic: str, partition: int) -> Any:
    """Queue a batch, waiting for room while the broker is away (up to the delivery
    timeout). A batch that was not queued was not sent, so trying again duplicates
    nothing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + producer._request_timeout_ms / 1000
    while True:
        try:
            return await producer.send_batch(batch, topic, partition=partition)
        except KafkaTimeoutError:
            if loop.time() >= deadline:
                raise
            log.warning("the producer cannot queue a batch for %s[%d]; waiting", topic, partition)
            await asyncio.sleep(1.0)


def make_transactional_producer(settings: RunSettings, transactional_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **client_options(settings),
        acks="all",
        enable_idempotence=True,
        transactional_id=transactional_id,
        request_timeout_ms=int(settings.delivery_timeout * 1000),
        transaction_timeout_ms=max(60_000, int(settings.drain_timeout * 2000)),
        linger_ms=settings.linger_ms,
        max_batch_size=256 * 1024,
        max_request_size=8 * 1024 * 1024,
    )


def subscribe(
    consumer: AIOKafkaConsumer,
    topic: str,
    on_assigned: Callable[[set[TopicPartition]], Awaitable[None]],
    on_revoked: Callable[[set[TopicPartition]], Awaitable[None]],
) -> None:
    class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
        async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
            await on_revoked(set(revoked))

        async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            await on_assigned(set(assigned))

    consumer.subscribe([topic], listener=_Listener())


@asynccontextmanager
async def admin_client(settings: KafkaSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await start_client(admin, settings)
    try:
        yield admin
    finally:
        await admin.close()


def all_topics(settings: KafkaSettings) -> list[str]:
    return [settings.input_topic, settings.output_topic, settings.dead_letter_topic]


async def create_topics(
    settings: KafkaSettings, partitions: int, replication_factor: int
) -> dict[str, str]:
    """Create the input, output and dead-letter topics; returns topic -> 'created'|'exists'."""
    result: dict[str, str] = {}
    async with admin_client(settings) as admin:
        existing = set(await admin.list_topics())
        for topic in all_topics(settings):
            if topic in existing:
                result[topic] = "exists"
                continue
            try:
                await admin.create_topics(
                    [
                        NewTopic(
                            topic, num_partitions=partitions, replication_factor=replication_factor
                        )
                    ]
                )
                result[topic] = "created"
            except TopicAlreadyExistsError:
                result[topic] = "exists"
    return result


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    partitions: int
    end_offsets: dict[int, int]


async def describe_topics(settings: KafkaSettings) -> list[TopicInfo | str]:
    """Partitions and end offsets of our topics; a str for a topic that does not exist."""
    topics = all_topics(settings)
    async with admin_client(settings) as admin:
        described = await admin.describe_topics(topics)
    partitions: dict[str, list[int]] = {}
    for entry in described:
        if entry.get("error_code", 0) == 0:
            partitions[entry["topic"]] = sorted(p["partition"] for p in entry["partitions"])
    consumer = AIOKafkaConsumer(**client_options(settings))
    await start_client(consumer, settings)
    try:
        tps = [TopicPartition(t, p) for t, parts in partitions.items() for p in parts]
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    out: list[TopicInfo | str] = []
    for topic in topics:
        if topic not in partitions:
            out.append(topic)
            continue
        offsets = {tp.partition: o for tp, o in ends.items() if tp.topic == topic}
        out.append(TopicInfo(topic, len(partitions[topic]), offsets))
    return out


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed this partition
    end: int
    lag: int  # end - committed (or end - log start when nothing is committed)


async def group_lag(settings: KafkaSettings, group_id: str) -> list[PartitionLag]:
    """A consumer group's committed offset, end offset and lag per input partition."""
    topic = settings.input_topic
    async with admin_client(settings) as admin:
        described = await admin.describe_topics([topic])
        offsets = await admin.list_consumer_group_offsets(group_id)
    entry = described[0] if described else {}
    if entry.get("error_code", 0) != 0 or not entry.get("partitions"):
        raise MissingTopics(f"topic {topic} does not exist")
    tps = [TopicPartition(topic, p["partition"]) for p in entry["partitions"]]
    consumer = AIOKafkaConsumer(**client_options(settings))
    await start_client(consumer, settings)
    try:
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
    finally:
        await consumer.stop()
    rows = []
    for tp in sorted(tps):
        meta = offsets.get(tp)
        committed = meta.offset if meta is not None and meta.offset >= 0 else None
        base = committed if committed is not None else starts[tp]
        rows.append(PartitionLag(topic, tp.partition, committed, ends[tp], max(0, ends[tp] - base)))
    return rows


async def require_topics(client: AIOKafkaConsumer, topics: list[str]) -> None:
    existing = await client.topics()
    missing = [t for t in topics if t not in existing]
    if missing:
        raise MissingTopics(
            f"topic(s) {', '.join(missing)} do not exist; create them with "
            "`stream topics create` (same --input-topic/--output-topic/--dlq-topic)"
        )


# ---- used by the benchmark --------------------------------------------------------------------


def new_topic(name: str, partitions: int, replication: int, configs: dict[str, str]) -> NewTopic:
    return NewTopic(
        name, num_partitions=partitions, replication_factor=replication, topic_configs=configs
    )


async def partitions_of(settings: KafkaSettings, topic: str) -> list[TopicPartition]:
    async with admin_client(settings) as admin:
        described = await admin.describe_topics([topic])
    parts = described[0].get("partitions", []) if described else []
    return [TopicPartition(topic, p["partition"]) for p in sorted(parts, key=_partition_id)]


def _partition_id(entry: dict[str, Any]) -> int:
    number: int = entry["partition"]
    return number


async def topic_end_offsets(settings: KafkaSettings, topic: str) -> dict[int, int]:
    tps = await partitions_of(settings, topic)
    consumer = AIOKafkaConsumer(**client_options(settings))
    await start_client(consumer, settings)
    try:
        ends = await consumer.end_offsets(tps) if tps else {}
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def read_all(settings: KafkaSettings, topic: str, limit: int | None = None) -> list[Any]:
    """Every committed record of a topic, up to its current end (or ``limit`` records)."""
    tps = await partitions_of(settings, topic)
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await start_client(consumer, settings)
    records: list[Any] = []
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining and (limit is None or len(records) < limit):
            fetched = await consumer.getmany(*remaining, timeout_ms=1000)
            if not fetched:
                # Only transaction markers or aborted records may be left.
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
                continue
            for tp, part in fetched.items():
                records.extend(part)
                if part[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return records if limit is None else records[:limit]

"""Starting a client: retry while the broker is away, fail at once when it refuses us.

aiokafka logs the real reason a connection failed and raises a bare "Unable to
bootstrap"; here the logged errors are captured (not printed) and turned into one
line: no broker, refused credentials, a failed TLS handshake.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any

from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from stream.config import ConfigError, KafkaSettings, flag_name, read_secret_file
from stream.errors import AuthenticationFailed, BrokerUnavailable, EnvironmentFailure, TLSFailed
from stream.kafka.options import ssl_reason

log = logging.getLogger(__name__)


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


def _refusal(errors: list[BaseException], settings: KafkaSettings) -> EnvironmentFailure | None:
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
            reason = ssl_reason(error)
            if "mismatch" in reason:
                hint = "connect by a host name the certificate is for, or see --ssl-check-hostname"
            else:
                hint = "is --ssl-cafile the CA that signed it?"
            text = f"SSL: the broker's certificate at {servers} was not accepted: {reason} ({hint})"
            return TLSFailed(_redact(text, settings))
        if isinstance(error, ssl.SSLError):
            text = f"SSL handshake with the broker at {servers} failed: {ssl_reason(error)}"
            if "certificate" in text.lower() and settings.ssl_certfile:
                text += f" (did it accept {flag_name('ssl_certfile')}?)"
            return TLSFailed(_redact(text, settings))
    return None


def _describe(error: BaseException) -> str:
    """An exception's message without aiokafka's "ClassName: " prefix, on one line."""
    if isinstance(error, ssl.SSLError):
        return ssl_reason(error)
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

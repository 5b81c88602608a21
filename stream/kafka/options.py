"""What every aiokafka client here is made with: address, identity, SASL and TLS."""

from __future__ import annotations

import re
import ssl
from typing import Any

from aiokafka.helpers import create_ssl_context

from stream.config import ConfigError, KafkaSettings


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
            f"({ssl_reason(exc)})"
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
                f"password, no key, or a key of another certificate ({ssl_reason(exc)})"
            ) from None
    return context


def ssl_reason(exc: BaseException) -> str:
    """OpenSSL's words without the source location: "[SSL: X] what happened"."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    text = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else str(exc)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text) or type(exc).__name__

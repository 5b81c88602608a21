"""Security options: SASL and TLS settings, secrets kept out of help, repr and errors, and
the TLS context the Kafka clients get (checked against a real TLS server, no broker).

The certificates are made here with the `openssl` command; ``make_pki`` is also used by
the integration tests, which run a real SASL_SSL broker with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import ssl
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from stream.cli import main
from stream.config import (
    BenchSettings,
    ConfigError,
    KafkaSettings,
    LagSettings,
    ProduceSettings,
    RunSettings,
    TopicsSettings,
    env_name,
    flag_name,
    load,
)
from stream.errors import EnvironmentFailure
from stream.kafka import (
    AuthenticationFailed,
    BrokerUnavailable,
    TLSFailed,
    client_options,
    ssl_context,
    start_client,
)
from tests.pki import Pki, make_pki

COMMANDS = [
    ("run", RunSettings),
    ("produce", ProduceSettings),
    ("topics", TopicsSettings),
    ("lag", LagSettings),
    ("bench", BenchSettings),
]
SECURITY_OPTIONS = [
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password",
    "sasl_password_file",
    "ssl_cafile",
    "ssl_certfile",
    "ssl_keyfile",
    "ssl_key_password",
    "ssl_key_password_file",
    "ssl_check_hostname",
]
PASSWORD = "Pa55-w0rd_that-is-unique"  # noqa: S105 - a test value
KEY_PASSWORD = "key-pa55_unique"  # noqa: S105


@pytest.fixture(autouse=True)
def _clean_process_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """No STREAM_* from the real environment; undo what main() does to sys.path."""
    for name in list(os.environ):
        if name.startswith("STREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "120")
    monkeypatch.setattr(sys, "path", list(sys.path))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def secret_file(tmp_path: Path, text: str, name: str = "password") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def config_error(cls: type[Any], **environ: str) -> str:
    """The one-line ConfigError that loading ``cls`` from these STREAM_* variables gives."""
    with pytest.raises(ConfigError) as caught:
        load(cls, {}, environ={env_name(k): v for k, v in environ.items()}).resolve()
    message = str(caught.value)
    assert message
    assert "\n" not in message
    return message


# --- the options --------------------------------------------------------------------------------


def test_defaults_are_plaintext_without_credentials() -> None:
    settings = load(RunSettings, {}, environ={})
    assert settings.security_protocol == "PLAINTEXT"
    assert settings.sasl_mechanism == "SCRAM-SHA-512"
    assert settings.ssl_check_hostname is True
    assert not settings.uses_sasl
    assert not settings.uses_ssl
    options = client_options(settings)
    assert options == {
        "bootstrap_servers": "localhost:9092",
        "client_id": "stream",
        "security_protocol": "PLAINTEXT",
    }


@pytest.mark.parametrize(("command", "cls"), COMMANDS)
def test_every_subcommand_has_the_security_options(
    command: str, cls: type[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    flat = " ".join(capsys.readouterr().out.split())
    for name in SECURITY_OPTIONS:
        assert hasattr(cls, name)
        assert flag_name(name) in flat, name
        assert f"[env: {env_name(name)}]" in flat, name
    assert "{PLAINTEXT,SSL,SASL_PLAINTEXT,SASL_SSL}" in flat
    assert "{PLAIN,SCRAM-SHA-256,SCRAM-SHA-512}" in flat


def test_options_from_flags_environment_and_config_file(tmp_path: Path, pki: Pki) -> None:
    password_file = secret_file(tmp_path, PASSWORD + "\n")
    config = tmp_path / "stream.toml"
    config.write_text(
        f'security-protocol = "SASL_SSL"\nssl_cafile = "{pki.ca}"\nssl-check-hostname = false\n',
        encoding="utf-8",
    )
    settings = load(
        ProduceSettings,
        {"sasl_mechanism": "SCRAM-SHA-256"},
        environ={"STREAM_SASL_USERNAME": "alice", "STREAM_SASL_PASSWORD_FILE": password_file},
        config_file=str(config),
    )
    assert settings.security_protocol == "SASL_SSL"
    assert settings.sasl_mechanism == "SCRAM-SHA-256"
    assert settings.sasl_username == "alice"
    assert settings.ssl_cafile == str(pki.ca)
    assert settings.ssl_check_hostname is False
    assert settings.sasl_password_value() == PASSWORD


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("security_protocol", "TLS"),
        ("security_protocol", "sasl_ssl"),
        ("sasl_mechanism", "GSSAPI"),
        ("sasl_mechanism", "SCRAM-SHA-1"),
        ("ssl_check_hostname", "perhaps"),
    ],
)
def test_bad_choices_name_the_option(name: str, value: str) -> None:
    message = config_error(RunSettings, **{name: value})
    assert flag_name(name) in message
    assert env_name(name) in message


@pytest.mark.parametrize(
    ("environ", "words"),
    [
        ({"security_protocol": "SASL_SSL", "sasl_password": PASSWORD}, "needs --sasl-username"),
        ({"security_protocol": "SASL_PLAINTEXT", "sasl_username": "a"}, "needs --sasl-password"),
        ({"sasl_username": "alice"}, "--sasl-username given, but --security-protocol PLAINTEXT"),
        ({"security_protocol": "SSL", "sasl_password": PASSWORD}, "does not use SASL"),
        ({"ssl_key_password": KEY_PASSWORD}, "--ssl-key-password given"),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_username": "a",
                "sasl_password": PASSWORD,
                "ssl_cafile": "ca.pem",
            },
            "--ssl-cafile given, but --security-protocol SASL_PLAINTEXT does not use TLS",
        ),
        ({"security_protocol": "SSL", "ssl_keyfile": "key.pem"}, "needs --ssl-certfile"),
        ({"security_protocol": "SSL", "ssl_key_password": KEY_PASSWORD}, "needs --ssl-certfile"),
    ],
)
def test_options_that_do_not_fit_together(environ: dict[str, str], words: str) -> None:
    message = config_error(RunSettings, **environ)
    assert words in message
    assert PASSWORD not in message
    assert KEY_PASSWORD not in message


def test_password_and_password_file_together_is_an_error(tmp_path: Path) -> None:
    message = config_error(
        ProduceSettings,
        security_protocol="SASL_SSL",
        sasl_username="alice",
        sasl_password=PASSWORD,
        sasl_password_file=secret_file(tmp_path, "other"),
    )
    assert message == "give --sasl-password or --sasl-password-file, not both"


def test_key_password_and_key_password_file_together_is_an_error(tmp_path: Path, pki: Pki) -> None:
    message = config_error(
        ProduceSettings,
        security_protocol="SSL",
        ssl_certfile=str(pki.client_cert),
        ssl_keyfile=str(pki.client_key),
        ssl_key_password=KEY_PASSWORD,
        ssl_key_password_file=secret_file(tmp_path, "other"),
    )
    assert message == "give --ssl-key-password or --ssl-key-password-file, not both"


@pytest.mark.parametrize(
    "name", ["ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password_file"]
)
def test_missing_files_are_named(tmp_path: Path, pki: Pki, name: str) -> None:
    environ = {
        "security_protocol": "SSL",
        "ssl_certfile": str(pki.client_cert),
        name: str(tmp_path / "nope.pem"),
    }
    message = config_error(TopicsSettings, **environ)
    assert message.startswith(f"{flag_name(name)}: ")
    assert str(tmp_path / "nope.pem") in message
    assert "does not exist" in message


def test_a_directory_is_not_a_file(tmp_path: Path) -> None:
    message = config_error(RunSettings, security_protocol="SSL", ssl_cafile=str(tmp_path))
    assert message == f"--ssl-cafile: {str(tmp_path)!r} is not a file"


# --- secrets from files -----------------------------------------------------------------------


@pytest.mark.parametrize("text", [PASSWORD, PASSWORD + "\n", PASSWORD + "\r\n", PASSWORD + "\n\n"])
def test_password_file_without_its_final_line_break(tmp_path: Path, text: str) -> None:
    settings = ProduceSettings(
        security_protocol="SASL_SSL",
        sasl_username="alice",
        sasl_password_file=secret_file(tmp_path, text),
    )
    assert settings.sasl_password_value() == PASSWORD
    assert client_options(settings)["sasl_plain_password"] == PASSWORD


def test_password_file_keeps_spaces_that_belong_to_the_password(tmp_path: Path) -> None:
    settings = ProduceSettings(
        security_protocol="SASL_SSL",
        sasl_username="alice",
        sasl_password_file=secret_file(tmp_path, " spaced out \n"),
    )
    assert settings.sasl_password_value() == " spaced out "


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "is empty"),
        ("\n", "is empty"),
        (f"{PASSWORD}\nsecond line\n", "holds more than one line"),
    ],
)
def test_bad_password_files(tmp_path: Path, text: str, words: str) -> None:
    path = secret_file(tmp_path, text)
    message = config_error(
        ProduceSettings, security_protocol="SASL_SSL", sasl_username="a", sasl_password_file=path
    )
    assert message == f"--sasl-password-file: {path!r} {words}"
    assert PASSWORD not in message


def test_password_file_that_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "binary"
    path.write_bytes(b"\xff\xfe\x00secret")
    message = config_error(
        ProduceSettings,
        security_protocol="SASL_SSL",
        sasl_username="a",
        sasl_password_file=str(path),
    )
    assert "not UTF-8" in message
    assert "secret" not in message


def test_password_file_is_read_again_for_each_client(tmp_path: Path) -> None:
    """A rotated secret is picked up by the next client made, without a restart of the
    settings."""
    path = secret_file(tmp_path, "first\n")
    settings = ProduceSettings(
        security_protocol="SASL_PLAINTEXT", sasl_username="a", sasl_password_file=path
    )
    assert client_options(settings)["sasl_plain_password"] == "first"  # noqa: S105
    Path(path).write_text("second\n", encoding="utf-8")
    assert client_options(settings)["sasl_plain_password"] == "second"  # noqa: S105


def test_the_password_is_not_stripped_or_quoted_when_given_directly() -> None:
    settings = load(
        ProduceSettings,
        {"sasl_password": " with spaces "},
        environ={"STREAM_SECURITY_PROTOCOL": "SASL_SSL", "STREAM_SASL_USERNAME": "alice"},
    )
    assert settings.sasl_password_value() == " with spaces "
    message = config_error(
        ProduceSettings, security_protocol="SASL_SSL", sasl_username="a", sasl_password=""
    )
    assert message == "--sasl-password (from STREAM_SASL_PASSWORD): must not be empty; got ***"


# --- secrets never shown ------------------------------------------------------------------------


@pytest.mark.parametrize(("command", "cls"), COMMANDS)
def test_help_never_shows_a_secret(
    command: str,
    cls: type[Any],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("STREAM_SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("STREAM_SSL_KEY_PASSWORD", KEY_PASSWORD)
    config = tmp_path / "stream.toml"
    config.write_text(f'sasl_password = "{PASSWORD}"\n', encoding="utf-8")
    with pytest.raises(SystemExit) as caught:
        main([command, "--config", str(config), "--sasl-password", PASSWORD, "--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "--sasl-password PASSWORD" in out
    assert PASSWORD not in out
    assert KEY_PASSWORD not in out


@pytest.mark.parametrize(("_command", "cls"), COMMANDS)
def test_repr_and_str_of_settings_hide_secrets(_command: str, cls: type[Any], pki: Pki) -> None:
    settings = cls(
        security_protocol="SASL_SSL",
        sasl_username="alice",
        sasl_password=PASSWORD,
        ssl_certfile=str(pki.client_cert),
        ssl_keyfile=str(pki.client_key),
        ssl_key_password=KEY_PASSWORD,
    )
    for text in (repr(settings), str(settings), f"{settings}", format(settings)):
        assert PASSWORD not in text
        assert KEY_PASSWORD not in text
        assert "sasl_username='alice'" in text  # not secret: shown
        assert "sasl_password=" not in text
        assert "ssl_key_password=" not in text
    assert settings.sasl_password == PASSWORD  # hidden, not lost


def test_the_secret_fields_are_marked_secret() -> None:
    secret = {f.name for f in dataclasses.fields(KafkaSettings) if f.metadata.get("secret")}
    assert secret == {"sasl_password", "ssl_key_password"}


def test_config_errors_never_carry_the_password(tmp_path: Path) -> None:
    # A bad value elsewhere while the password is set in every source.
    config = tmp_path / "stream.toml"
    config.write_text(f'sasl_password = "{PASSWORD}"\nconnect_timeout = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load(
            ProduceSettings,
            {"sasl_password": PASSWORD},
            environ={"STREAM_SASL_PASSWORD": PASSWORD},
            config_file=str(config),
        )
    assert PASSWORD not in str(caught.value)
    # ... and a cross-field error about the password.
    with pytest.raises(ConfigError) as caught:
        load(ProduceSettings, {"sasl_password": PASSWORD}, environ={})
    assert "--sasl-password given" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_cli_prints_one_line_without_the_secret(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_SASL_PASSWORD", PASSWORD)
    code = main(["produce", "--security-protocol", "SASL_SSL"])
    captured = capsys.readouterr()
    assert code == 2
    assert (
        captured.err
        == "stream produce: error: --security-protocol SASL_SSL needs --sasl-username\n"
    )
    assert PASSWORD not in captured.err + captured.out


# --- the TLS context ------------------------------------------------------------------------


def test_ssl_context_verifies_the_broker_with_the_ca_file(pki: Pki) -> None:
    settings = KafkaSettings(security_protocol="SSL", ssl_cafile=str(pki.ca))
    options = client_options(settings)
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    subjects = [ca["subject"] for ca in context.get_ca_certs()]
    assert subjects == [((("commonName", "stream test ca"),),)]
    assert "sasl_plain_password" not in options
    assert options["security_protocol"] == "SSL"


def test_ssl_context_without_hostname_checking_still_verifies_the_ca(pki: Pki) -> None:
    settings = load(
        KafkaSettings,
        {},
        environ={
            "STREAM_SECURITY_PROTOCOL": "SSL",
            "STREAM_SSL_CAFILE": str(pki.ca),
            "STREAM_SSL_CHECK_HOSTNAME": "false",
        },
    )
    context = ssl_context(settings)
    assert context.check_hostname is False
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_sasl_ssl_client_options(tmp_path: Path, pki: Pki) -> None:
    settings = RunSettings(
        bootstrap_servers="broker:9094",
        client_id="me",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="alice",
        sasl_password_file=secret_file(tmp_path, PASSWORD + "\n"),
        ssl_cafile=str(pki.ca),
        ssl_certfile=str(pki.client_cert),
        ssl_keyfile=str(pki.client_key),
        ssl_key_password_file=secret_file(tmp_path, pki.client_key_password + "\n", "keypw"),
    )
    options = client_options(settings)
    assert {k: v for k, v in options.items() if k != "ssl_context"} == {
        "bootstrap_servers": "broker:9094",
        "client_id": "me",
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "alice",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(options["ssl_context"], ssl.SSLContext)


def test_sasl_plaintext_has_no_tls() -> None:
    settings = ProduceSettings(
        security_protocol="SASL_PLAINTEXT", sasl_username="alice", sasl_password=PASSWORD
    )
    options = client_options(settings)
    assert "ssl_context" not in options
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"


def test_encrypted_key_without_a_password_is_a_config_error_not_a_prompt(pki: Pki) -> None:
    settings = KafkaSettings(
        security_protocol="SSL",
        ssl_cafile=str(pki.ca),
        ssl_certfile=str(pki.client_cert),
        ssl_keyfile=str(pki.client_key),
    )
    with pytest.raises(ConfigError) as caught:
        ssl_context(settings)
    assert "is encrypted: give --ssl-key-password or --ssl-key-password-file" in str(caught.value)


def test_wrong_key_password_is_a_config_error_without_the_password(pki: Pki) -> None:
    settings = KafkaSettings(
        security_protocol="SSL",
        ssl_certfile=str(pki.client_cert),
        ssl_keyfile=str(pki.client_key),
        ssl_key_password=KEY_PASSWORD,
    )
    with pytest.raises(ConfigError) as caught:
        ssl_context(settings)
    message = str(caught.value)
    assert "cannot load the client certificate and private key" in message
    assert str(pki.client_key) in message
    assert KEY_PASSWORD not in message


def test_a_key_of_another_certificate(pki: Pki) -> None:
    settings = KafkaSettings(
        security_protocol="SSL", ssl_certfile=str(pki.client_cert), ssl_keyfile=str(pki.rogue_key)
    )
    with pytest.raises(ConfigError, match="KEY_VALUES_MISMATCH"):
        ssl_context(settings)


def test_a_ca_file_that_holds_no_certificate(tmp_path: Path) -> None:
    settings = KafkaSettings(
        security_protocol="SSL", ssl_cafile=secret_file(tmp_path, "not a certificate\n", "x.pem")
    )
    with pytest.raises(ConfigError, match=r"^--ssl-cafile: .* holds no usable PEM CA certificate"):
        ssl_context(settings)


# --- hostname checking and refusals against a real TLS server (not Kafka) --------------------


@contextlib.asynccontextmanager
async def tls_server(pki: Pki) -> AsyncIterator[int]:
    """A TLS server on 127.0.0.1 with the certificate for ``localhost``; it closes every
    connection after the handshake. Yields its port."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)

    async def handle(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    loop = asyncio.get_running_loop()
    quiet = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, _context: None)  # failed handshakes: expected
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()
        loop.set_exception_handler(quiet)


async def handshake(settings: KafkaSettings, host: str, port: int) -> None:
    _reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context(settings))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def test_hostname_checking(pki: Pki) -> None:
    checking = KafkaSettings(security_protocol="SSL", ssl_cafile=str(pki.ca))
    not_checking = KafkaSettings(
        security_protocol="SSL", ssl_cafile=str(pki.ca), ssl_check_hostname=False
    )
    async with tls_server(pki) as port:
        await handshake(checking, "localhost", port)  # the name in the certificate
        with pytest.raises(ssl.SSLCertVerificationError, match=r"not valid for '127\.0\.0\.1'"):
            await handshake(checking, "127.0.0.1", port)  # an address it does not list
        await handshake(not_checking, "127.0.0.1", port)


async def test_an_unrelated_ca_is_refused_even_without_hostname_checking(pki: Pki) -> None:
    settings = KafkaSettings(
        security_protocol="SSL", ssl_cafile=str(pki.other_ca), ssl_check_hostname=False
    )
    async with tls_server(pki) as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            await handshake(settings, "localhost", port)


@pytest.mark.parametrize(
    ("host", "ca", "words"),
    [
        ("localhost", "other_ca", "unable to get local issuer certificate"),
        ("127.0.0.1", "ca", "IP address mismatch, certificate is not valid for '127.0.0.1'"),
    ],
)
async def test_start_client_fails_at_once_on_a_refused_certificate(
    pki: Pki, host: str, ca: str, words: str
) -> None:
    """No retrying until --connect-timeout: one TLSFailed (an environment failure, so the
    CLI prints one line and exits 1; not "broker unavailable": the broker answered)."""
    async with tls_server(pki) as port:
        settings = ProduceSettings(
            bootstrap_servers=f"{host}:{port}",
            connect_timeout=20,
            security_protocol="SASL_SSL",
            sasl_username="alice",
            sasl_password=PASSWORD,
            ssl_cafile=str(getattr(pki, ca)),
        )
        producer = AIOKafkaProducer(**client_options(settings))
        started = time.monotonic()
        with pytest.raises(TLSFailed) as caught:
            await start_client(producer, settings)
        assert time.monotonic() - started < 5
    message = str(caught.value)
    assert not isinstance(caught.value, BrokerUnavailable)
    assert caught.value.exit_code == 1
    assert message.startswith(f"SSL: the broker's certificate at {host}:{port} was not accepted")
    assert words in message
    assert "\n" not in message
    assert PASSWORD not in message


def test_refusals_are_environment_failures_not_broker_unavailable() -> None:
    """A broker that refused us was there: the error says so, and the CLI exits 1."""
    for refusal in (AuthenticationFailed, TLSFailed):
        assert issubclass(refusal, EnvironmentFailure)
        assert not issubclass(refusal, BrokerUnavailable)
        assert refusal("x").exit_code == 1

"""SASL_SSL for real: a broker of this module's own (deploy/kafka/broker.sh with its SASL_SSL
listener) with a SCRAM user, a PLAIN user and a certificate made here with openssl. The
`stream` command connects with the right credentials and is refused, in one line and at
once, with wrong ones; secrets never show up in what it prints."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from stream.config import TopicsSettings
from stream.kafka import client_options, start_client
from tests.broker import free_ports, script
from tests.helpers import ROOT, STREAM, Service, Topics, start_service
from tests.pki import Pki, make_pki

pytestmark = pytest.mark.broker

SCRAM_USER = "alice"
PLAIN_USER = "carol"


@dataclass(frozen=True)
class SecureBroker:
    pki: Pki
    port: int  # SASL_SSL, advertised as localhost (the name in the server certificate)
    plaintext_port: int
    scram_password: str
    plain_password: str
    secrets_dir: Path

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    def password_file(self, password: str) -> str:
        path = self.secrets_dir / f"pw-{uuid.uuid4().hex[:8]}"
        path.write_text(password + "\n", encoding="utf-8")
        path.chmod(0o600)
        return str(path)

    def options(
        self, user: str = SCRAM_USER, mechanism: str = "SCRAM-SHA-512", ca: Path | None = None
    ) -> list[str]:
        """The flags of a SASL_SSL connection (the password goes separately)."""
        return [
            "--security-protocol",
            "SASL_SSL",
            "--sasl-mechanism",
            mechanism,
            "--sasl-username",
            user,
            "--ssl-cafile",
            str(ca or self.pki.ca),
        ]

    def settings(self, topics: Topics) -> TopicsSettings:
        """The same connection for the test's own aiokafka clients."""
        return TopicsSettings(
            bootstrap_servers=self.bootstrap,
            input_topic=topics.input,
            output_topic=topics.output,
            dlq_topic=topics.dlq,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=SCRAM_USER,
            sasl_password_file=self.password_file(self.scram_password),
            ssl_cafile=str(self.pki.ca),
        )


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    base = tmp_path_factory.mktemp("secure-broker")
    pki = make_pki(base / "pki")
    # Generated, so nothing here can pass by accident; "pw" first, so no value starts with "-".
    scram_password = "pw" + secrets.token_urlsafe(12)
    plain_password = "pw" + secrets.token_urlsafe(12)
    port, plaintext_port, controller_port = free_ports(3)
    secrets_dir = base / "secrets"
    secrets_dir.mkdir(mode=0o700)
    env = {
        "KAFKA_PORT": str(plaintext_port),
        "KAFKA_CONTROLLER_PORT": str(controller_port),
        "KAFKA_RUN_DIR": str(base / "broker"),  # its own, throwaway state (SCRAM users too)
        "KAFKA_HEAP": "512m",
        "KAFKA_SASL_SSL_PORT": str(port),
        "KAFKA_SSL_KEYSTORE": str(pki.server_p12),
        "KAFKA_SSL_KEYSTORE_PASSWORD": pki.p12_password,
        # Client certificates are asked for, not required: checked when one is presented.
        "KAFKA_SSL_CLIENT_AUTH": "requested",
        "KAFKA_SSL_TRUSTSTORE": str(pki.ca),
        "KAFKA_SSL_TRUSTSTORE_TYPE": "PEM",
        "KAFKA_SCRAM_USERS": f"{SCRAM_USER}:{scram_password}",
        "KAFKA_PLAIN_USERS": f"{PLAIN_USER}:{plain_password}",
    }
    started = script("start", env=env)
    if started.returncode != 0:
        script("stop", env=env)
        raise RuntimeError(f"the SASL_SSL test broker did not start:\n{started.stderr}")
    try:
        yield SecureBroker(pki, port, plaintext_port, scram_password, plain_password, secrets_dir)
    finally:
        script("stop", env=env)
        shutil.rmtree(base / "broker", ignore_errors=True)


@pytest.fixture
def topics(secure_broker: SecureBroker) -> Topics:
    """Names only: the tests create them with `stream topics create` over SASL_SSL."""
    name = f"sec-{uuid.uuid4().hex[:10]}"
    return Topics(
        secure_broker.bootstrap, f"{name}-in", f"{name}-out", f"{name}-in.dlq", f"g-{name}", 2
    )


def stream(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """The `stream` command, without any STREAM_* of the test's own environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAM_")}
    return subprocess.run(
        [STREAM, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**clean, **(env or {})},
        check=False,
    )


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def refused(
    secure_broker: SecureBroker, command: list[str], env: dict[str, str] | None = None
) -> str:
    """Run a command that must fail at once (well within its --connect-timeout of 60s) with
    exit code 1 and one line on stderr, which it returns. No secret may be in its output."""
    started = time.monotonic()
    done = stream(*command, "--connect-timeout", "60", env=env)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    assert elapsed < 20, f"took {elapsed:.1f}s: it retried instead of failing at once"
    line = one_line(done.stderr)
    assert done.stdout == ""
    for secret in (secure_broker.scram_password, secure_broker.plain_password):
        assert secret not in done.stderr
    return line


async def read_all(settings: TopicsSettings, topic: str, expect: int) -> list[Any]:
    """Every record of a topic over SASL_SSL, once ``expect`` arrived (60s at most)."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(settings),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
    )
    await start_client(consumer, settings)
    records: list[Any] = []
    try:
        deadline = time.monotonic() + 60
        while len(records) < expect and time.monotonic() < deadline:
            for part in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def topic_options(topics: Topics) -> list[str]:
    return [
        "--input-topic",
        topics.input,
        "--output-topic",
        topics.output,
        "--dlq-topic",
        topics.dlq,
    ]


def create_topics(secure_broker: SecureBroker, topics: Topics) -> None:
    password_file = secure_broker.password_file(secure_broker.scram_password)
    done = stream(
        "topics",
        "create",
        "--bootstrap-servers",
        secure_broker.bootstrap,
        *secure_broker.options(),
        "--sasl-password-file",
        password_file,
        *topic_options(topics),
        "--partitions",
        str(topics.partitions),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{topics.input}: created",
        f"{topics.output}: created",
        f"{topics.dlq}: created",
    ]


# --- the right credentials ----------------------------------------------------------------------


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
async def test_topics_produce_run_and_lag_over_sasl_ssl_with_scram(
    secure_broker: SecureBroker, topics: Topics, services: list[Service], guarantee: str
) -> None:
    """Every client of the service over SASL_SSL: admin, consumer, producer (or, for
    exactly-once, a transactional producer per partition), and the ones of `stream lag`."""
    create_topics(secure_broker, topics)

    # The password from the environment this time.
    produced = stream(
        "produce",
        "--bootstrap-servers",
        secure_broker.bootstrap,
        *secure_broker.options(),
        "--input-topic",
        topics.input,
        "--count",
        "100",
        "--keys",
        "8",
        "--quiet",
        env={"STREAM_SASL_PASSWORD": secure_broker.scram_password},
    )
    assert produced.returncode == 0, produced.stderr
    assert produced.stdout.startswith(f"sent 100 sensor events (8 keys, seed 0) to {topics.input}")

    # ... and from a file for the service, which logs at debug level: no secret in it.
    password_file = secure_broker.password_file(secure_broker.scram_password)
    service = start_service(
        topics,
        *secure_broker.options(),
        "--sasl-password-file",
        password_file,
        "--workers",
        "1",
        "--guarantee",
        guarantee,
        "--log-level",
        "debug",
    )
    services.append(service)
    service.wait_for("started")

    settings = secure_broker.settings(topics)
    outputs = await read_all(settings, topics.output, 100)
    values = [orjson.loads(r.value) for r in outputs]
    assert len(values) == 100
    assert len({(v["sensor_id"], v["seq"]) for v in values}) == 100  # each input once
    assert {v["sensor_id"] for v in values} == {f"sensor-{k:04d}" for k in range(8)}
    assert all(r.key.decode() == v["sensor_id"] for r, v in zip(outputs, values, strict=True))
    assert all("mean" in v and "std" in v for v in values)  # sensor-features results

    # `stream lag` (admin client and a consumer) and `stream topics describe` over SASL_SSL.
    lag: dict[str, Any] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = stream(
            "lag",
            "--bootstrap-servers",
            secure_broker.bootstrap,
            *secure_broker.options(),
            "--sasl-password-file",
            password_file,
            "--input-topic",
            topics.input,
            "--group-id",
            topics.group,
            "--json",
        )
        assert done.returncode == 0, done.stderr
        lag = orjson.loads(done.stdout)
        if lag["total_lag"] == 0 and all(p["committed"] is not None for p in lag["partitions"]):
            break
        await asyncio.sleep(0.5)
    assert lag["total_lag"] == 0, lag
    assert sum(p["end"] for p in lag["partitions"]) == 100

    described = stream(
        "topics",
        "describe",
        "--bootstrap-servers",
        secure_broker.bootstrap,
        *secure_broker.options(),
        *topic_options(topics),
        env={"STREAM_SASL_PASSWORD_FILE": password_file},
    )
    assert described.returncode == 0, described.stderr
    assert f"{topics.input}: 2 partitions" in described.stdout
    assert f"{topics.output}: 2 partitions" in described.stdout

    assert service.terminate() == 0
    log = service.log()
    assert secure_broker.scram_password not in log
    assert "started" in log


@pytest.mark.parametrize(
    ("user", "mechanism"),
    [(SCRAM_USER, "SCRAM-SHA-256"), (SCRAM_USER, "SCRAM-SHA-512"), (PLAIN_USER, "PLAIN")],
)
async def test_each_mechanism_authenticates(
    secure_broker: SecureBroker, topics: Topics, user: str, mechanism: str
) -> None:
    create_topics(secure_broker, topics)
    password = secure_broker.plain_password if user == PLAIN_USER else secure_broker.scram_password
    done = stream(
        "produce",
        "--bootstrap-servers",
        secure_broker.bootstrap,
        *secure_broker.options(user, mechanism),
        "--sasl-password-file",
        secure_broker.password_file(password),
        "--input-topic",
        topics.input,
        "--count",
        "20",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sent 20 ")
    assert password not in done.stdout + done.stderr
    assert len(await read_all(secure_broker.settings(topics), topics.input, 20)) == 20


async def test_the_plaintext_listener_still_works(
    secure_broker: SecureBroker, topics: Topics
) -> None:
    """The SASL_SSL listener is an extra one: the broker's PLAINTEXT listener is as before."""
    plaintext = f"127.0.0.1:{secure_broker.plaintext_port}"
    done = stream("topics", "create", "--bootstrap-servers", plaintext, *topic_options(topics))
    assert done.returncode == 0, done.stderr
    done = stream(
        "produce", "--bootstrap-servers", plaintext, "--input-topic", topics.input, "--count", "5"
    )
    assert done.returncode == 0, done.stderr
    # What went in over PLAINTEXT comes out over SASL_SSL: one broker, two listeners.
    assert len(await read_all(secure_broker.settings(topics), topics.input, 5)) == 5


# --- refused: wrong credentials, wrong CA, wrong host name ------------------------------------


@pytest.mark.parametrize(
    ("user", "mechanism"),
    [
        (SCRAM_USER, "SCRAM-SHA-512"),
        (SCRAM_USER, "SCRAM-SHA-256"),
        (PLAIN_USER, "PLAIN"),
        ("nobody", "SCRAM-SHA-512"),
        (PLAIN_USER, "SCRAM-SHA-512"),  # a PLAIN user has no SCRAM credentials
    ],
)
def test_wrong_password_is_refused_at_once_in_one_line(
    secure_broker: SecureBroker, topics: Topics, user: str, mechanism: str
) -> None:
    wrong = "wrong-" + secrets.token_urlsafe(8)
    line = refused(
        secure_broker,
        [
            "produce",
            "--bootstrap-servers",
            secure_broker.bootstrap,
            *secure_broker.options(user, mechanism),
            "--input-topic",
            topics.input,
        ],
        env={"STREAM_SASL_PASSWORD": wrong},
    )
    assert line.startswith(
        f"stream produce: error: authentication failed for user '{user}' ({mechanism}) at "
        f"{secure_broker.bootstrap}: "
    )
    assert wrong not in line


def test_the_service_is_refused_in_one_line_too(
    secure_broker: SecureBroker, topics: Topics
) -> None:
    create_topics(secure_broker, topics)
    wrong = "wrong-" + secrets.token_urlsafe(8)
    started = time.monotonic()
    done = stream(
        "run",
        "--bootstrap-servers",
        secure_broker.bootstrap,
        *secure_broker.options(),
        "--sasl-password-file",
        secure_broker.password_file(wrong),
        *topic_options(topics),
        "--group-id",
        topics.group,
        "--workers",
        "1",
        "--metrics-port",
        "0",
        "--connect-timeout",
        "60",
    )
    assert time.monotonic() - started < 30
    assert done.returncode == 1, done.stderr
    assert wrong not in done.stderr
    assert secure_broker.scram_password not in done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("stream run: error: authentication failed for user 'alice'"), done.stderr
    assert "Traceback" not in done.stderr


def test_an_unrelated_ca_is_refused_in_one_line(
    secure_broker: SecureBroker, topics: Topics
) -> None:
    line = refused(
        secure_broker,
        [
            "produce",
            "--bootstrap-servers",
            secure_broker.bootstrap,
            *secure_broker.options(ca=secure_broker.pki.other_ca),
            "--input-topic",
            topics.input,
        ],
        env={"STREAM_SASL_PASSWORD": secure_broker.scram_password},
    )
    assert line.startswith(
        f"stream produce: error: SSL: the broker's certificate at {secure_broker.bootstrap} "
        "was not accepted: "
    )
    assert "certificate" in line.split("not accepted: ", 1)[1]
    assert "--ssl-cafile" in line


def test_hostname_checking(secure_broker: SecureBroker, topics: Topics) -> None:
    """The certificate is for `localhost` only. By IP address the client refuses the broker
    while it checks host names; without the check it connects (the CA is still checked),
    and then talks to the advertised `localhost`."""
    create_topics(secure_broker, topics)
    by_address = f"127.0.0.1:{secure_broker.port}"

    def command(ca: Path | None = None) -> list[str]:
        return [
            "produce",
            "--bootstrap-servers",
            by_address,
            *secure_broker.options(ca=ca),
            "--input-topic",
            topics.input,
            "--count",
            "3",
        ]

    env = {"STREAM_SASL_PASSWORD": secure_broker.scram_password}
    line = refused(secure_broker, command(), env=env)
    assert line.startswith(
        f"stream produce: error: SSL: the broker's certificate at {by_address} was not accepted: "
    )
    assert "mismatch, certificate is not valid for '127.0.0.1'" in line
    assert line.endswith(
        "(connect by a host name the certificate is for, or see --ssl-check-hostname)"
    )
    not_checking = {**env, "STREAM_SSL_CHECK_HOSTNAME": "false"}
    done = stream(*command(), env=not_checking)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("sent 3 ")
    # Not checking host names is not trusting anyone: an unrelated CA is still refused.
    line = refused(secure_broker, command(ca=secure_broker.pki.other_ca), env=not_checking)
    assert "was not accepted: self-signed certificate in certificate chain" in line


# --- TLS client certificates ---------------------------------------------------------------------


def test_client_certificate_with_an_encrypted_key(
    secure_broker: SecureBroker, topics: Topics
) -> None:
    pki = secure_broker.pki
    create_topics(secure_broker, topics)
    key_password_file = secure_broker.password_file(pki.client_key_password)
    done = stream(
        "produce",
        "--bootstrap-servers",
        secure_broker.bootstrap,
        *secure_broker.options(),
        "--input-topic",
        topics.input,
        "--ssl-certfile",
        str(pki.client_cert),
        "--ssl-keyfile",
        str(pki.client_key),
        "--ssl-key-password-file",
        key_password_file,
        "--count",
        "5",
        env={"STREAM_SASL_PASSWORD": secure_broker.scram_password},
    )
    assert done.returncode == 0, done.stderr
    assert pki.client_key_password not in done.stdout + done.stderr


def test_a_client_certificate_the_broker_does_not_trust_is_refused(
    secure_broker: SecureBroker, topics: Topics
) -> None:
    pki = secure_broker.pki
    line = refused(
        secure_broker,
        [
            "produce",
            "--bootstrap-servers",
            secure_broker.bootstrap,
            *secure_broker.options(),
            "--input-topic",
            topics.input,
            "--ssl-certfile",
            str(pki.rogue_cert),
            "--ssl-keyfile",
            str(pki.rogue_key),
        ],
        env={"STREAM_SASL_PASSWORD": secure_broker.scram_password},
    )
    assert line.startswith(
        f"stream produce: error: SSL handshake with the broker at {secure_broker.bootstrap} "
        "failed: "
    )
    assert "certificate" in line.lower()
    assert "--ssl-certfile" in line


# --- the broker script's own checks ------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"KAFKA_SASL_SSL_PORT": "1"}, "needs KAFKA_SSL_KEYSTORE and KAFKA_SSL_KEYSTORE_PASSWORD"),
        (
            {
                "KAFKA_SASL_SSL_PORT": "1",
                "KAFKA_SSL_KEYSTORE": "/nonexistent.p12",
                "KAFKA_SSL_KEYSTORE_PASSWORD": "x",
            },
            "KAFKA_SSL_KEYSTORE: no such file: /nonexistent.p12",
        ),
        ({"KAFKA_SASL_SSL_PORT": "2"}, "must differ from KAFKA_PORT"),
        ({"KAFKA_SCRAM_USERS": "alice"}, "KAFKA_SCRAM_USERS: expected name:password"),
        ({"KAFKA_PLAIN_USERS": 'a:b"c'}, 'may not contain " or'),
    ],
)
def test_broker_script_refuses_a_half_configured_listener(
    tmp_path: Path, env: dict[str, str], words: str
) -> None:
    """Checked before anything starts (ports 1 to 4 are never opened)."""
    keystore = tmp_path / "server.p12"
    keystore.write_bytes(b"")
    given = {
        "KAFKA_SSL_KEYSTORE": str(keystore),
        "KAFKA_SSL_KEYSTORE_PASSWORD": "x",
        "KAFKA_SASL_SSL_PORT": "3",
    }
    if "KAFKA_SASL_SSL_PORT" in env:
        given = {}
    done = script(
        "start",
        env={
            **given,
            **env,
            "KAFKA_PORT": "2",
            "KAFKA_CONTROLLER_PORT": "4",
            "KAFKA_RUN_DIR": str(tmp_path / "never"),
        },
    )
    assert done.returncode == 2, done.stderr
    assert words in done.stderr
    assert not (tmp_path / "never").exists()

"""Basic auth and TLS to the Schema Registry, for real: an HTTPS server of the test's own
(certificate from a CA made here with openssl) that checks the credentials and forwards
to the real registry. The worker-side client must use the CA file, send the password,
fail with one line (never the password) when either is wrong, and not retry those."""

from __future__ import annotations

import base64
import http.server
import json
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream.config import RunSettings
from stream.formats.avro import schema_text
from stream.formats.registry import RegistryClient, RegistryConfig, RegistryError
from stream.formats.setup import prepare, registry_config
from transforms import resolve
from transforms.builtin import SENSOR_READING_SCHEMA

USER = "registry-user"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate it signs for 127.0.0.1 and localhost."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
            "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr", cwd=folder)  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.pem",
            cwd=folder)  # fmt: skip
    return folder / "ca.pem", folder / "server.pem", folder / "server.key"


@dataclass
class Gateway:
    url: str
    cafile: str
    password: str
    requests: list[str]


@pytest.fixture(scope="module")
def gateway(
    schema_registry_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("registry-tls")
    ca, cert, key = make_certificates(folder)
    password = base64.b64encode(folder.name.encode()).decode() + "-pw"
    expected = "Basic " + base64.b64encode(f"{USER}:{password}".encode()).decode()
    upstream = schema_registry_url
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _forward(self) -> None:
            seen.append(f"{self.command} {self.path}")
            if self.headers.get("Authorization") != expected:
                self._answer(401, b'{"message": "Unauthorized", "error_code": 401}')
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
            request = urllib.request.Request(  # noqa: S310 - the test's own registry
                upstream + self.path, data=body, method=self.command, headers=headers
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
                    self._answer(answer.status, answer.read())
            except urllib.error.HTTPError as error:
                self._answer(error.code, error.read())

        def _answer(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _forward

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        yield Gateway(f"https://127.0.0.1:{port}", str(ca), password, seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def config(gateway: Gateway, **changes: str) -> RegistryConfig:
    values = {"url": gateway.url, "username": USER, "password": gateway.password}
    values["cafile"] = gateway.cafile
    values.update(changes)
    return RegistryConfig(**values, retry_for=5.0)  # type: ignore[arg-type]


def test_basic_auth_over_tls_with_a_private_ca(gateway: Gateway) -> None:
    client = RegistryClient(config(gateway))
    text = schema_text(SENSOR_READING_SCHEMA)
    schema_id = client.register("auth-test-value", text, "AVRO")
    fresh = RegistryClient(config(gateway))
    assert json.loads(fresh.schema(schema_id).text) == json.loads(text)
    fresh.schema(schema_id)
    assert fresh.fetches == 1  # cached by id


def test_run_settings_reach_the_registry_with_a_password_file(
    gateway: Gateway, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text(gateway.password + "\n")
    settings = RunSettings(
        output_format="avro",
        schema_registry_url=gateway.url,
        schema_registry_username=USER,
        schema_registry_password_file=str(secret),
        schema_registry_cafile=gateway.cafile,
        output_topic="auth-out",
    )
    assert registry_config(settings).password == gateway.password
    spec = prepare(settings, resolve("sensor-features"))
    assert spec.output_schema_id > 0
    assert "POST /subjects/auth-out-value/versions" in gateway.requests


def test_a_wrong_password_fails_at_once_in_one_line(gateway: Gateway) -> None:
    wrong = gateway.password + "-wrong"
    client = RegistryClient(config(gateway, password=wrong))
    before = len(gateway.requests)
    with pytest.raises(RegistryError) as caught:
        client.schema(1)
    message = str(caught.value)
    assert "401" in message
    assert "\n" not in message
    assert wrong not in message
    assert len(gateway.requests) == before + 1  # refused credentials are not retried


def test_an_untrusted_certificate_is_refused(gateway: Gateway) -> None:
    client = RegistryClient(config(gateway, cafile=""))  # the system's CAs
    with pytest.raises(RegistryError, match="TLS failed") as caught:
        client.schema(1)
    assert gateway.password not in str(caught.value)

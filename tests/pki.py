"""Certificates made here with openssl for the TLS tests: a CA, a server certificate for
``localhost``, a client certificate with an encrypted key, and the same made by an
unrelated CA. Used by the options' unit tests and by the SASL_SSL broker tests."""

from __future__ import annotations

import dataclasses
import secrets
import subprocess
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for ``localhost`` only (no IP address), a client
    certificate with an encrypted key, and the same made by an unrelated CA."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    server_p12: Path
    p12_password: str
    client_cert: Path
    client_key: Path  # encrypted with client_key_password
    client_key_password: str
    other_ca: Path
    rogue_cert: Path  # a client certificate signed by other_ca
    rogue_key: Path


def _openssl(directory: Path, *args: str) -> None:
    done = subprocess.run(
        ["openssl", *args], cwd=directory, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{done.stderr}")


def _ca(directory: Path, name: str) -> None:
    _openssl(
        directory,
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
        "-subj", f"/CN=stream test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def _signed(
    directory: Path, name: str, ca: str, subject: str, ext: str, *, key_password: str | None
) -> None:
    """``name``.crt signed by ``ca`` for ``name``.key (encrypted if a password is given)."""
    key = ["-nodes"]
    if key_password is not None:
        (directory / f"{name}.pass").write_text(key_password, encoding="utf-8")
        key = ["-passout", f"file:{name}.pass"]
    _openssl(
        directory,
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", *key,
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(ext, encoding="utf-8")
    _openssl(
        directory,
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
        "-set_serial", str(secrets.randbits(63)), "-days", "2", "-out", f"{name}.crt",
        "-extfile", f"{name}.ext",
    )  # fmt: skip


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    _ca(directory, "ca")
    _ca(directory, "other-ca")
    common = "basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\n"
    common += "authorityKeyIdentifier=keyid\nkeyUsage=critical,digitalSignature\n"
    server_ext = common + "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n"
    client_ext = common + "extendedKeyUsage=clientAuth\n"
    _signed(directory, "server", "ca", "/CN=localhost", server_ext, key_password=None)
    client_password = secrets.token_urlsafe(12)
    _signed(directory, "client", "ca", "/CN=alice", client_ext, key_password=client_password)
    _signed(directory, "rogue", "other-ca", "/CN=alice", client_ext, key_password=None)
    p12_password = secrets.token_urlsafe(12)
    (directory / "p12.pass").write_text(p12_password, encoding="utf-8")
    _openssl(
        directory,
        "pkcs12", "-export", "-in", "server.crt", "-inkey", "server.key",
        "-certfile", "ca.crt", "-name", "server", "-out", "server.p12",
        "-passout", "file:p12.pass",
    )  # fmt: skip
    return Pki(
        dir=directory,
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        server_p12=directory / "server.p12",
        p12_password=p12_password,
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        client_key_password=client_password,
        other_ca=directory / "other-ca.crt",
        rogue_cert=directory / "rogue.crt",
        rogue_key=directory / "rogue.key",
    )

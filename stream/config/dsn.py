"""What is wrong with a PostgreSQL DSN, found before any connection: the URL form the
sink's driver (asyncpg) reads, checked the way it parses it. A malformed DSN is a
configuration error, one line saying what is wrong; without this check the driver either
tried to connect to a wrong address and the service reported the server "unreachable",
or it failed with a traceback.

Plain code, no I/O. The answers never quote the DSN, nor a part of it that could hold
its password (an unescaped ``@`` moves the password into the host part)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

SCHEMES = ("postgresql", "postgres")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
SSL_NEGOTIATIONS = ("postgres", "direct")
TLS_VERSIONS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
# libpq options the driver does not read: it would send them to the server as settings,
# which refuses them ("unrecognized configuration parameter").
LIBPQ_ONLY = frozenset(
    {
        "connect_timeout",
        "options",
        "fallback_application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "sslcompression",
        "sslsni",
        "sslcertmode",
        "requirepeer",
        "require_auth",
        "channel_binding",
        "gssencmode",
        "gssdelegation",
        "service",
        "load_balance_hosts",
        "hostaddr",
        "replication",
    }
)
ESCAPE = " (percent-encode @ : / ? # in a user name or password: %40 %3A %2F %3F %23)"
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.%\w]+\](?::(?P<port>[^:]*))?")
_BAD_HOST_CHARS = re.compile(r"[\s/?#\[\]@]")


def dsn_problem(dsn: str) -> str | None:
    """What is wrong with ``dsn`` as a PostgreSQL connection URL (None: nothing)."""
    if not dsn.strip():
        return "it is empty"
    scheme = dsn.partition("://")[0] if "://" in dsn else ""
    if scheme not in SCHEMES:
        return (
            "it is not a PostgreSQL URL: it must start with postgresql:// "
            "(postgresql://user:password@host:port/database; key=value DSNs are not read)"
        )
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "it is not a valid URL (an unclosed [ of an IPv6 host?)"
    if parts.fragment:
        return f"it holds a # outside its query{ESCAPE}"
    auth, _, hosts = parts.netloc.rpartition("@")
    if "@" in auth:
        return f"it holds more than one @ before its host{ESCAPE}"
    if auth and not auth.partition(":")[0]:
        return "its user name is empty (a password without a user)"
    problem = _hosts_problem(hosts) if hosts else None
    if problem:
        return problem + ESCAPE
    return _query_problem(parts.query, hosts)


def _hosts_problem(hosts: str) -> str | None:
    """The host list: host[:port] entries, comma-separated; IPv6 hosts in brackets."""
    for spec in hosts.split(","):
        if not spec:
            return "its host list has an empty entry (two commas, or one at an end)"
        if spec.startswith("["):
            match = _IPV6.fullmatch(spec)
            if match is None:
                return "an IPv6 host is not [address] or [address]:port"
            port = match.group("port")
        else:
            host, _, port = spec.partition(":")
            if not host:
                return "a host is empty (nothing before its :port)"
            if _BAD_HOST_CHARS.search(unquote(host)):
                return "a host name holds a space or one of / ? # [ ] @"
        if port is not None and port != "" and not _is_port(port):
            return "a port is not a number from 1 to 65535"
    return None


def _query_problem(query: str, hosts: str) -> str | None:
    """The query's parameters the driver reads itself, and libpq's it does not read."""
    if not query:
        return None
    try:
        params = {k: v[-1] for k, v in parse_qs(query, strict_parsing=True).items()}
    except ValueError:
        return "its query is not name=value pairs joined by &"
    for name in sorted(params):
        if name in LIBPQ_ONLY:
            hint = " (use --connect-timeout)" if name == "connect_timeout" else ""
            return f"its parameter {name} is libpq's and not read by the driver (asyncpg){hint}"
    choices = {
        "sslmode": SSL_MODES,
        "target_session_attrs": SESSION_ATTRS,
        "sslnegotiation": SSL_NEGOTIATIONS,
        "ssl_min_protocol_version": TLS_VERSIONS,
        "ssl_max_protocol_version": TLS_VERSIONS,
    }
    for name, allowed in choices.items():
        if name in params and params[name] not in allowed:
            return f"its {name} is not one of {', '.join(allowed)}"
    ports = params.get("port")
    if ports is not None:
        given = ports.split(",")
        if not all(_is_port(p) for p in given):
            return "its port parameter is not numbers from 1 to 65535, comma-separated"
        named = params.get("host")
        if named and not hosts and len(given) != len(named.split(",")):
            return f"its port parameter gives {len(given)} ports for {len(named.split(','))} hosts"
    return None


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 65535

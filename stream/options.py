"""The generic option machinery: declare an option, parse its value, name its flag and
environment variable, read a config file, and build a settings object from all sources.

The declarations themselves (which options each command has) live in
:mod:`stream.config`. Precedence: flag > environment > config file (TOML,
``--config``/``STREAM_CONFIG``) > default.

Environment names: a command's settings class may set ``COMMAND`` (a ``ClassVar``);
the options it declares itself then read ``STREAM_<COMMAND>_<OPTION>``
(``STREAM_PRODUCE_COUNT``), so two commands never share a variable by accident.
Inherited options (the shared Kafka connection) and options declared with
``shared=True`` keep ``STREAM_<OPTION>``. ``HIDDEN`` (a ``ClassVar``) names inherited
fields a command does not use: they keep their defaults and are not options of it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import field
from pathlib import Path
from typing import Any, TypeVar

from stream.errors import UsageError

ENV_PREFIX = "STREAM_"


class ConfigError(UsageError, ValueError):
    """A bad option value; the CLI prints it as one line and exits 2."""


# --- value parsers: str (from a flag, env var or file) -> typed value ---------------------


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


def parse_float(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("expected a number") from None
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def positive_int(text: str) -> int:
    value = parse_int(text)
    if value < 1:
        raise ValueError("must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = parse_int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def positive_float(text: str) -> float:
    value = parse_float(text)
    if not value > 0:
        raise ValueError("must be more than 0")
    return value


def non_negative_float(text: str) -> float:
    value = parse_float(text)
    if not value >= 0:
        raise ValueError("must be 0 or more")
    return value


def port(text: str) -> int:
    value = parse_int(text)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number from 0 to 65535")
    return value


_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2}
_SIZE_UNITS |= {"mib": 1024**2, "g": 1024**3, "gb": 1024**3, "gib": 1024**3}


def size(text: str) -> int:
    """A byte size: 1048576, 1MiB, 512k."""
    raw = text.strip().lower().replace(" ", "")
    number = raw.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = raw[len(number) :]
    if unit not in _SIZE_UNITS or not number:
        raise ValueError("expected a byte size such as 1048576, 512KiB or 4MiB")
    try:
        value = int(float(number) * _SIZE_UNITS[unit])
    except (ValueError, OverflowError):  # "1.5.5", "1e400" (inf)
        raise ValueError("expected a byte size such as 1048576, 512KiB or 4MiB") from None
    if value < 1:
        raise ValueError("must be at least 1 byte")
    return value


def format_size(value: int) -> str:
    """The shortest exact spelling that ``size`` reads back: 1MiB, 512KiB, 1000."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= factor and value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def text(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value.strip()


def boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def secret(value: str) -> str:
    """A password as given: not stripped (spaces may belong to it), not empty. Errors never
    quote it."""
    if not value:
        raise ValueError("must not be empty")
    return value


def choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return value

    parse.choices = choices  # type: ignore[attr-defined]
    return parse


# --- declaring options ----------------------------------------------------------------------

T = TypeVar("T")


def opt(
    default: T,
    help: str,
    parse: Callable[[str], object] = text,
    metavar: str | None = None,
    *,
    secret: bool = False,
    group: str = "",
    shared: bool = False,
) -> T:
    """Declare one option: its default, help text and parser; returns the dataclass field
    (typed as its default, so the field keeps its type). A secret's value is never shown:
    not in --help, not in errors from ``load``, not in the settings' repr.
    ``group`` heads the option's section in --help (empty: the command's own options);
    ``shared`` keeps ``STREAM_<OPTION>`` for an option that means the same in every
    command that has it."""
    meta = {
        "help": help,
        "parse": parse,
        "metavar": metavar,
        "secret": secret,
        "group": group,
        "shared": shared,
    }
    return field(default=default, metadata=meta, repr=not secret)


def shown_default(f: dataclasses.Field[Any]) -> str:
    """The default as --help shows it: sizes as sizes, booleans as on/off; "" when there
    is nothing worth showing (a secret, an empty text, or help that says it already)."""
    meta = f.metadata
    default: Any = f.default
    if meta["secret"] or "(default:" in meta["help"] or default in ("", None):
        return ""
    if meta["parse"] is size:
        return format_size(int(default))
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(default)


def read_secret_file(option: str, path: str) -> str:
    """The secret in a file (say, a mounted Kubernetes Secret), without the line breaks at
    its end. Errors name the option and the file, never the content."""
    try:
        content = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{flag_name(option)}: no such file {path!r}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{flag_name(option)}: {path!r} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{flag_name(option)}: cannot read {path!r}: {exc.strerror}") from None
    value = content.rstrip("\r\n")
    if not value:
        raise ConfigError(f"{flag_name(option)}: {path!r} is empty")
    if "\n" in value or "\r" in value:
        raise ConfigError(f"{flag_name(option)}: {path!r} holds more than one line")
    return value


# --- names ----------------------------------------------------------------------------------


def option_fields(cls: type[Any]) -> list[dataclasses.Field[Any]]:
    """The options of a settings class (inherited ones it hides left out)."""
    hidden: frozenset[str] = getattr(cls, "HIDDEN", frozenset())
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata and f.name not in hidden]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _inherited(cls: type[Any]) -> set[str]:
    names: set[str] = set()
    for base in cls.__mro__[1:]:
        if dataclasses.is_dataclass(base):
            names |= {f.name for f in dataclasses.fields(base)}
    return names


def option_env(cls: type[Any], name: str) -> str:
    """The environment variable of option ``name`` of ``cls`` (see the module's notes)."""
    command: str = getattr(cls, "COMMAND", "")
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    if not command or by_name[name].metadata.get("shared") or name in _inherited(cls):
        return env_name(name)
    return env_name(f"{command}_{name}")


# --- loading --------------------------------------------------------------------------------

_KNOWN: list[type[Any]] = []


def known_settings(*classes: type[Any]) -> None:
    """Declare every command's settings class, so a config file shared by several commands
    may hold options of the others, and only a really unknown key is an error."""
    _KNOWN.extend(c for c in classes if c not in _KNOWN)


def read_config_file(path: str) -> dict[str, Any]:
    """A TOML file of options; keys as in the flags, with - or _; may sit under [stream]."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path!r} cannot be read: {exc}") from None
    section = data.get("stream", data)
    if not isinstance(section, dict):
        raise ConfigError(f"config file {path!r}: [stream] must be a table")
    return {str(k).replace("-", "_"): v for k, v in section.items()}


S = TypeVar("S")


def load(
    cls: type[S],
    flags: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> S:
    """Build ``cls`` from flags (already strings), environment and config file. Checks that
    need no I/O run here; files named by options are read by the settings' ``resolve()``."""
    environ = os.environ if environ is None else environ
    path = config_file or environ.get(env_name("config")) or ""
    from_file = read_config_file(path) if path else {}
    fields = option_fields(cls)
    known = {f.name for f in fields}
    unknown = sorted(set(from_file) - known)
    if unknown and path:
        all_options = {f.name for c in (cls, *_KNOWN) for f in dataclasses.fields(c)}
        really_unknown = [k for k in unknown if k not in all_options]
        if really_unknown:
            raise ConfigError(
                f"config file {path!r}: unknown option(s) {', '.join(really_unknown)}"
            )
    values: dict[str, Any] = {}
    for f in fields:
        parse = f.metadata["parse"]
        env = option_env(cls, f.name)
        if f.name in flags:
            raw, source = flags[f.name], flag_name(f.name)
        elif env in environ:
            raw, source = environ[env], env
        elif f.name in from_file:
            raw, source = from_file[f.name], f"{f.name} in {path}"
        else:
            continue
        try:
            values[f.name] = parse(raw if isinstance(raw, str) else str(raw).lower())
        except ValueError as exc:
            shown = "***" if f.metadata["secret"] else repr(raw)
            raise ConfigError(f"{flag_name(f.name)} (from {source}): {exc}; got {shown}") from None
    return cls(**values)

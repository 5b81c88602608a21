"""The command line's grammar: one subcommand per command, each settings class's options
as flags (one --help section per option group), and the settings a subcommand's flags,
the environment and a config file give. No command runs here."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from difflib import get_close_matches
from typing import Any, NoReturn, TypeVar

from stream import __version__
from stream.config import (
    GROUPS,
    BenchSettings,
    DbSettings,
    LagSettings,
    ProduceSettings,
    ReadSettings,
    RunSettings,
    TopicsSettings,
    TrySettings,
)
from stream.config.lookup_demo import LookupDemoSettings
from stream.errors import EXIT_USAGE
from stream.options import env_name, flag_name, load, option_env, option_fields, shown_default

S = TypeVar("S")


class _Parser(argparse.ArgumentParser):
    """No abbreviations (``--bootstrap-server`` is not ``--bootstrap-servers``), one-line
    errors, and a subcommand's unknown option reported by the subcommand's own parser
    (``stream run: error: ...``) with the closest option it has."""

    def __init__(self, *args: Any, command: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.command = command

    def error(self, message: str) -> NoReturn:
        """One line, not argparse's usage block."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if not self.command:
            self._options_before_the_command(list(sys.argv[1:] if args is None else args))
            return super().parse_known_args(args, namespace)
        given = list(args or [])
        for arg in given:
            if arg == "--":
                break
            name = arg.split("=", 1)[0]
            if name.startswith("--") and name not in self._option_string_actions:
                self.error(unknown_option(name, list(self._option_string_actions)))
        parsed, extras = super().parse_known_args(given, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def _options_before_the_command(self, given: list[str]) -> None:
        """``stream --bootstrap-servers h run``: say where the option goes."""
        first = given[0].split("=", 1)[0] if given else ""
        if not first.startswith("-") or first in self._option_string_actions:
            return
        commands = next(
            (a.choices for a in self._actions if isinstance(a, argparse._SubParsersAction)), {}
        )
        command = next((arg for arg in given if arg in commands), "COMMAND")
        self.error(f"{first}: options go after the command (stream {command} {first} ...)")


def unknown_option(name: str, options: Sequence[str]) -> str:
    """What to say of an option that does not exist: the one it abbreviates, or the
    closest spelling, if any."""
    longer = [o for o in options if o.startswith(name)]
    close = longer if len(longer) == 1 else get_close_matches(name, options, n=1, cutoff=0.75)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown option {name}{hint}"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _add_options(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """The options of ``cls`` as flags, one --help section per group."""
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"TOML file of options (env: {env_name('config')})",
    )
    fields = option_fields(cls)
    named = [g for g in GROUPS if any(f.metadata["group"] == g for f in fields)]
    sections: dict[str, argparse._ArgumentGroup] = {}
    if any(not f.metadata["group"] for f in fields):
        sections[""] = parser.add_argument_group(f"{parser.prog} options")
    for name in named:
        sections[name] = parser.add_argument_group(name)
    for f in fields:
        _add_option(sections[f.metadata["group"]], cls, f)


def _add_option(
    section: argparse._ArgumentGroup, cls: type[Any], f: dataclasses.Field[Any]
) -> None:
    meta = f.metadata
    default = shown_default(f)
    shown = f" (default: {default})" if default else ""
    help_text = f"{meta['help']}{shown} [env: {option_env(cls, f.name)}]"
    choices = getattr(meta["parse"], "choices", None)
    if f.type == "bool":
        # --flag and --no-flag, so a flag can also undo the environment or config file.
        yes, no = flag_name(f.name), "--no-" + flag_name(f.name)[2:]
        pair = section.add_mutually_exclusive_group()
        pair.add_argument(
            yes,
            dest=f.name,
            action="store_const",
            const="true",
            default=argparse.SUPPRESS,
            help=f"{help_text}; {no} turns it off",
        )
        pair.add_argument(
            no,
            dest=f.name,
            action="store_const",
            const="false",
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
        return
    section.add_argument(
        flag_name(f.name),
        dest=f.name,
        metavar=meta["metavar"] or ("{" + ",".join(choices) + "}" if choices else None),
        default=argparse.SUPPRESS,
        help=help_text,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stream",
        description="A Kafka stream processor: input topic -> worker processes -> output topic.",
        epilog="Every option also reads STREAM_<OPTION>; precedence: flag > environment > "
        "--config file > default.",
    )
    parser.add_argument("--version", action="version", version=f"stream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    commands: list[tuple[str, str, type[Any]]] = [
        ("run", "run the service until SIGTERM/SIGINT", RunSettings),
        (
            "produce",
            "send demo events (or JSON lines from a file) to the input topic",
            ProduceSettings,
        ),
        (
            "read",
            "print a topic's records, one a line (dead letters with their reasons)",
            ReadSettings,
        ),
        ("topics", "create or describe the input, output and dead-letter topics", TopicsSettings),
        (
            "lag",
            "a consumer group's committed offset, end offset and lag per partition",
            LagSettings,
        ),
        (
            "bench",
            "benchmark the service against baselines on the configured broker",
            BenchSettings,
        ),
        (
            "try",
            "run JSON lines or an Avro container file through a transform, in this process "
            "(no broker)",
            TrySettings,
        ),
        ("db", "create the PostgreSQL sink's tables (idempotent)", DbSettings),
        ("lookup-demo", "serve a demo lookup service to try --enrich-url", LookupDemoSettings),
    ]
    for name, help_text, settings in commands:
        argument = {"topics": " {create,describe}", "db": " {init}", "read": " TOPIC"}
        usage = f"stream {name}{argument.get(name, '')} [options]"
        command = sub.add_parser(
            name, help=help_text, formatter_class=_Formatter, usage=usage, command=True
        )
        if name == "topics":
            command.add_argument("action", choices=["create", "describe"])
        if name == "db":
            command.add_argument("action", choices=["init"])
        if name == "read":
            command.add_argument("topic", metavar="TOPIC", help="the topic to read")
        _add_options(command, settings)

    sub.add_parser("transforms", help="list the built-in transforms", command=True)
    return parser


def settings_from(cls: type[S], args: argparse.Namespace) -> S:
    """The command's settings from its flags, the environment and the config file, resolved
    (files named by options checked and read) when the class has that step."""
    given = {f.name: getattr(args, f.name) for f in option_fields(cls) if hasattr(args, f.name)}
    settings = load(cls, given, config_file=getattr(args, "config", None))
    resolve = getattr(settings, "resolve", None)
    return resolve() if resolve is not None else settings
